/*
 * sandbox.c: the walls around a handler inside the guest.  The cgroups
 * (v2) it runs in, which guest/init makes: a handler is born in one, so
 * that whatever it forks, however it detaches, is held to the group's
 * limits and can be killed in one step at the end.  And what it carries
 * across execve: resource limits and a seccomp filter.
 */
#define _GNU_SOURCE

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/sched.h>	/* struct clone_args */
#include <linux/seccomp.h>

#include "agent.h"
#include "denylist.h"

#define SANDBOX_PIDS_MAX "256"		/* a fork bomb stops here */
#define SANDBOX_MEM_PERCENT 75		/* of the guest's MemTotal */
#define SANDBOX_NOFILE 1024
#define SANDBOX_NPROC 256	/* as pids.max: only handlers use their uid */
#define SANDBOX_FSIZE (64UL << 20)	/* /tmp holds 64 MB anyway */

/* The common list, and io_uring: QEMU may use it, a handler need not. */
static const char *const sandbox_denied[] = {
	DENYLIST_COMMON,
	"io_uring_setup", "io_uring_enter", "io_uring_register",
};

/* Built once, before the snapshot. */
static struct sock_fprog sandbox_prog;

/*
 * fork(2), with the child born in the given cgroup (made by guest/init),
 * where everything it forks stays: only root could move it out.  Moving
 * a process there after the fork took 10-25 ms under TCG (the kernel's
 * cgroup migration waits for an RCU grace period); clone3's
 * CLONE_INTO_CGROUP does not migrate.  The agent has one thread, so the
 * child may run C library code after a raw clone.  Returns as fork does.
 */
pid_t
sandbox_fork(const char *cgroup)
{
	struct clone_args ca;
	pid_t pid;
	int cgfd;

	if ((cgfd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	memset(&ca, 0, sizeof(ca));
	ca.flags = CLONE_INTO_CGROUP;
	ca.exit_signal = SIGCHLD;
	ca.cgroup = (uint64_t)cgfd;
	pid = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid != 0)
		close(cgfd);
	return pid;
}

/*
 * Whether any process is left in the cgroup: one read, where walking /proc
 * for the handler's uid took 15-30 ms under TCG.  Returns 1 also when
 * that cannot be told.
 */
static int
sandbox_populated(const char *cgroup)
{
	char path[64], b[128];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/cgroup.events", cgroup);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 1;
	n = read(fd, b, sizeof(b) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	b[n] = '\0';
	return strstr(b, "populated 0\n") == NULL;
}

/*
 * Kills everything in the cgroup however it detached (setsid, double
 * fork, another uid).  The kernel's cgroup.kill walks the group under a
 * lock and marks it, so a fork loop cannot outrun it.  Skipped when the
 * group is already empty.
 */
void
sandbox_empty(const char *cgroup)
{
	char path[64];
	int fd;

	if (!sandbox_populated(cgroup))
		return;
	snprintf(path, sizeof(path), "%s/cgroup.kill", cgroup);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd == -1 || write(fd, "1", 1) != 1)
		log_warn("write %s", path);
	if (fd != -1)
		close(fd);
}

/* Writes value to the file at dir/name.  Returns 0 or -errno, logged. */
static int
sandbox_write(const char *dir, const char *name, const char *value)
{
	char path[96];
	size_t n = strlen(value);
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) == -1 ||
	    write(fd, value, n) != (ssize_t)n)
		rc = -errno;
	if (fd != -1)
		close(fd);
	if (rc != 0)
		log_warnx("write %s \"%s\": %s", path, value, strerror(-rc));
	return rc;
}

/* The guest's memory in bytes, from /proc/meminfo, or 0. */
static unsigned long long
sandbox_memtotal(void)
{
	unsigned long long kb = 0;
	char line[128];
	FILE *f;

	if ((f = fopen("/proc/meminfo", "re")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

int
sandbox_init(void)
{
	unsigned long long mem = sandbox_memtotal();
	char max[32];
	int rc;

	rc = denylist_build(sandbox_denied, nitems(sandbox_denied),
	    &sandbox_prog);
	if (rc != 0) {
		log_warnx("seccomp filter for handlers: %s", strerror(-rc));
		return rc;
	}
	if ((rc = sandbox_write("/sys/fs/cgroup", "cgroup.subtree_control",
	    "+pids +memory")) != 0)
		return rc;
	if (mem == 0) {
		log_warnx("no MemTotal in /proc/meminfo");
		return -EIO;
	}
	snprintf(max, sizeof(max), "%llu", mem / 100 * SANDBOX_MEM_PERCENT);
	if ((rc = sandbox_write(AGENT_CG_SANDBOX, "pids.max",
	    SANDBOX_PIDS_MAX)) != 0 ||
	    (rc = sandbox_write(AGENT_CG_SANDBOX, "memory.max", max)) != 0 ||
	    (rc = sandbox_write(AGENT_CG_SANDBOX, "memory.oom.group",
	    "1")) != 0)
		return rc;
	return 0;
}

int
sandbox_enter(void)
{
	struct rlimit nofile = { SANDBOX_NOFILE, SANDBOX_NOFILE };
	struct rlimit fsize = { SANDBOX_FSIZE, SANDBOX_FSIZE };
	struct rlimit nproc = { SANDBOX_NPROC, SANDBOX_NPROC };
	struct rlimit core = { 0, 0 };

	if (setrlimit(RLIMIT_NOFILE, &nofile) == -1 ||
	    setrlimit(RLIMIT_NPROC, &nproc) == -1 ||
	    setrlimit(RLIMIT_FSIZE, &fsize) == -1 ||
	    setrlimit(RLIMIT_CORE, &core) == -1)
		return -errno;
	/* Without capabilities a filter needs no_new_privs. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return -errno;
	if (sandbox_prog.len == 0)
		return -EINVAL;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sandbox_prog) == -1)
		return -errno;
	return 0;
}
