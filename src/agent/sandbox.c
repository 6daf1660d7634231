/*
 * sandbox.c: the cgroups (v2) a handler runs in, which guest/init makes.
 * A handler is born in one, so that whatever it forks, however it
 * detaches, can be found and killed in one step at the end.
 */
#define _GNU_SOURCE

#include <sys/syscall.h>

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <linux/sched.h>	/* struct clone_args */

#include "agent.h"

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
