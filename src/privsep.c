/*
 * privsep.c: the FastCGI process gives up everything it does not need.
 * It is forked from the privileged process before any thread exists, so it
 * starts with one thread and a copy of the loaded configuration; it keeps
 * only its listening socket, its broker channels and stderr, becomes the
 * configured user, and installs an allowlist of the system calls FastCGI
 * serving makes.  Any other call ends it with a line saying which
 * (SIGSYS), except opening files, which fails with EACCES.
 */
#include <sys/prctl.h>

#include <errno.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <seccomp.h>

#include "log.h"
#include "privsep.h"

/*
 * Everything the workers, libfcgi, glibc's allocator and threads use, and
 * nothing that creates files, processes, sockets or mappings of files.
 */
static const char *const privsep_allowed[] = {
	"read", "readv", "write", "writev", "pread64", "close", "fstat",
	"newfstatat", "poll", "ppoll", "select", "pselect6",
	"accept", "accept4", "recvfrom", "recvmsg", "sendto", "sendmsg",
	"shutdown", "getsockopt", "setsockopt", "getsockname", "getpeername",
	"fcntl", "pipe2", "futex", "mmap", "munmap", "mprotect", "mremap",
	"brk", "madvise", "clock_gettime", "clock_nanosleep", "nanosleep",
	"gettimeofday", "getrandom", "rt_sigprocmask", "rt_sigaction",
	"rt_sigreturn", "rt_sigtimedwait", "sigaltstack", "restart_syscall",
	"exit", "exit_group", "getpid", "gettid", "tgkill", "set_robust_list",
	"rseq", "sched_yield", "sched_getaffinity", "getuid", "geteuid",
	"getgid", "getegid",
};

/* write(2) of a number; async-signal-safe. */
static void
privsep_say(const char *a, long n, const char *b)
{
	char buf[24];
	int i = sizeof(buf);
	int neg = n < 0;

	if (neg)
		n = -n;
	do {
		buf[--i] = (char)('0' + n % 10);
		n /= 10;
	} while (n > 0 && i > 1);
	if (neg)
		buf[--i] = '-';
	(void)!write(2, a, strlen(a));
	(void)!write(2, buf + i, sizeof(buf) - (size_t)i);
	(void)!write(2, b, strlen(b));
}

static void
privsep_sigsys(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	privsep_say("vmcgi: the FastCGI process made system call ",
	    si->si_syscall, ", which its filter refuses: exiting\n");
	_exit(70);
}

static int
privsep_filter(void)
{
	scmp_filter_ctx f;
	size_t i;
	int nr, rc = -ENOMEM;

	if ((f = seccomp_init(SCMP_ACT_TRAP)) == NULL)
		return rc;
	for (i = 0; i < sizeof(privsep_allowed) / sizeof(*privsep_allowed);
	    i++) {
		nr = seccomp_syscall_resolve_name(privsep_allowed[i]);
		if (nr == __NR_SCMP_ERROR)
			continue;	/* not on this architecture */
		if ((rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 0)) < 0)
			goto out;
	}
	/*
	 * Threads, not processes.  glibc tries clone3 first, whose flags a
	 * filter cannot see: ENOSYS sends it to clone.
	 */
	if ((rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
	    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))) < 0 ||
	    (rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS),
	    SCMP_SYS(clone3), 0)) < 0)
		goto out;
	/*
	 * No seeking: stderr may be the privileged process's log file, whose
	 * earlier lines must stay as written.
	 */
	if ((rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(ESPIPE),
	    SCMP_SYS(lseek), 0)) < 0)
		goto out;
	/* Nothing here opens files; a library that tries gets an error. */
	if ((rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open),
	    0)) < 0 ||
	    (rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES),
	    SCMP_SYS(openat), 0)) < 0 ||
	    (rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES),
	    SCMP_SYS(openat2), 0)) < 0)
		goto out;
	rc = seccomp_load(f);
out:
	seccomp_release(f);
	return rc;
}

/* Close every descriptor from 3 up that is not in keep. */
static void
privsep_close(const int *keep, int nkeep)
{
	long max = sysconf(_SC_OPEN_MAX);
	int fd, k;

	for (fd = 3; fd < max; fd++) {
		for (k = 0; k < nkeep && keep[k] != fd; k++)
			;
		if (k == nkeep)
			close(fd);
	}
}

void
privsep_drop(const struct config *cfg, pid_t parent, const int *keep,
    int nkeep)
{
	struct sigaction sa;
	int rc;

	privsep_close(keep, nkeep);
	if (setgroups(0, NULL) < 0)
		fatal("setgroups 0");
	if (setresgid(cfg->user_gid, cfg->user_gid, cfg->user_gid) < 0)
		fatal("setresgid %lu", (unsigned long)cfg->user_gid);
	if (setresuid(cfg->user_uid, cfg->user_uid, cfg->user_uid) < 0)
		fatal("setresuid %lu", (unsigned long)cfg->user_uid);
	/* After the uid change, which clears it. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		fatal("prctl PR_SET_PDEATHSIG");
	if (getppid() != parent)
		fatalx("the privileged process is gone");
	if (prctl(PR_SET_NAME, "vmcgi-fastcgi") < 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_DUMPABLE, 0) < 0)
		fatal("prctl");
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = privsep_sigsys;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		fatal("sigaction SIGSYS");
	if ((rc = privsep_filter()) < 0)
		fatalx("seccomp filter of the FastCGI process: %s",
		    strerror(-rc));
}
