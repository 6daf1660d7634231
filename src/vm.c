/*
 * vm.c: QEMU microvm processes.
 *
 * The template boots once with its RAM in a shared memory-backend-file, so
 * that RAM is already on disk when QEMU migrates the device state (the
 * "x-ignore-shared" capability skips shared RAM).  A clone maps the same
 * file private (copy on write) and loads the device state from the state
 * file: it resumes where the template stopped, in the agent's read().
 *
 * Every QEMU gets its agent channel and its monitor as inherited ends of
 * socketpairs (fd 3 and 4) and its state file as fd 5, so no socket path
 * or temporary file exists for anyone else to reach.  A clone gets its
 * RAM, kernel and initrd as sealed memfds too (fd 6, 7 and 8), opened by
 * QEMU through its own /proc/self/fd: nothing of them is on a path it
 * could write, and they cannot change between snapshot and clone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/sched.h>
#include <linux/seccomp.h>

#include "clock.h"
#include "denylist.h"
#include "log.h"
#include "vm.h"

#define VM_CMDLINE "console=ttyS0 quiet panic=-1 rdinit=/init"
/* Under TCG: see accel_tsc_khz(); tsc=reliable keeps the TSC clocksource. */
#define VM_CMDLINE_TCG " tsc_early_khz=%lu tsc=reliable clocksource=tsc"
#define VM_MAX_ARGS 64
/* Bumped whenever vm_args changes what a snapshot depends on. */
#define VM_ARGS_VERSION 4
/* Beside guest RAM a TCG QEMU holds its translation cache and more. */
#define VM_TB_SIZE_MB 128
#define VM_OVERHEAD_BYTES (256ULL << 20)
#define VM_MAX_THREADS 128
#define VM_MAX_FILES 256	/* a TCG clone uses about 30 */
#define VM_FD_CHAN 3
#define VM_FD_QMP 4
#define VM_FD_STATE 5
/* Then kernel 7 and initrd 8: snapshot.sealed, in that order. */
#define VM_FD_RAM 6
#define VM_NFDS 6		/* 3 to 8 */
#define VM_HELLO_RESEND_MS 100
#define VM_QMP_TIMEOUT_MS 10000
#define VM_MAX_LIVE 1024

static int vm_cgroups;
static int vm_self_pidfd = -1;	/* children ask it if vmcgi lives */

/*
 * Our filter under QEMU's own -sandbox: calls QEMU never makes here, each
 * EPERM, so that a guest that breaks out into QEMU cannot reach the
 * kernel code behind them even where -sandbox lets them through (mounts
 * and namespaces, ptrace, bpf, perf, userfaultfd, keyrings, modules,
 * kexec, reboot, the clock, swap).  Installed before QEMU's exec, which
 * it must allow.
 */
static const char *const vm_denied[] = { DENYLIST_COMMON };
static struct sock_fprog vm_filter;

int
vm_filter_init(void)
{
	int rc;

	rc = denylist_build(vm_denied, sizeof(vm_denied) / sizeof(*vm_denied),
	    &vm_filter);
	if (rc != 0) {
		log_warnx("seccomp filter for QEMU: %s", strerror(-rc));
		return rc;
	}
	vm_self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (vm_self_pidfd < 0) {
		rc = -errno;
		log_warn("pidfd_open %d", (int)getpid());
	}
	return rc;
}

void
vm_use_cgroups(void)
{
	vm_cgroups = 1;
}

/* Live QEMU pids, so shutdown can kill what a stuck worker still holds. */
static pthread_mutex_t vm_live_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile pid_t vm_live[VM_MAX_LIVE];

/*
 * The uids of live clones (under vm_live_lock).  Handed out round the
 * range, so a uid just freed is the last to come back.
 */
static uid_t vm_uid_first, vm_uid_count, vm_uid_next;
static uid_t vm_uid_used[VM_MAX_LIVE];

void
vm_use_uids(uid_t first, uid_t last)
{
	vm_uid_first = first;
	vm_uid_count = last - first + 1;
}

/* A uid no live VM has, or 0 when the range is used up. */
static uid_t
vm_uid_take(void)
{
	uid_t uid = 0, cand, tries;
	size_t i, slot = VM_MAX_LIVE;

	pthread_mutex_lock(&vm_live_lock);
	for (tries = 0; uid == 0 && tries < vm_uid_count; tries++) {
		cand = vm_uid_first + vm_uid_next++ % vm_uid_count;
		for (i = 0; i < VM_MAX_LIVE; i++) {
			if (vm_uid_used[i] == cand)
				break;
			if (vm_uid_used[i] == 0 && slot == VM_MAX_LIVE)
				slot = i;
		}
		if (i == VM_MAX_LIVE && slot < VM_MAX_LIVE)
			uid = vm_uid_used[slot] = cand;
	}
	pthread_mutex_unlock(&vm_live_lock);
	return uid;
}

static void
vm_uid_put(uid_t uid)
{
	size_t i;

	pthread_mutex_lock(&vm_live_lock);
	for (i = 0; uid != 0 && i < VM_MAX_LIVE; i++) {
		if (vm_uid_used[i] == uid) {
			vm_uid_used[i] = 0;
			break;
		}
	}
	pthread_mutex_unlock(&vm_live_lock);
}

static void
vm_live_set(pid_t old, pid_t new)
{
	size_t i;

	pthread_mutex_lock(&vm_live_lock);
	for (i = 0; i < VM_MAX_LIVE; i++) {
		if (vm_live[i] == old) {
			vm_live[i] = new;
			break;
		}
	}
	pthread_mutex_unlock(&vm_live_lock);
}

void
vm_kill_all(void)
{
	size_t i;

	for (i = 0; i < VM_MAX_LIVE; i++)
		if (vm_live[i] > 0)
			kill(vm_live[i], SIGKILL);
}

struct argv {
	char	*v[VM_MAX_ARGS + 1];
	size_t	 n;
};

static void
argv_add(struct argv *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
argv_add(struct argv *a, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	if (a->n == VM_MAX_ARGS)
		abort();	/* a programming error: the list is fixed */
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static void
argv_free(struct argv *a)
{
	while (a->n > 0)
		free(a->v[--a->n]);
}

/* The command line both the template and its clones share. */
static void
vm_args(struct argv *a, const struct snapshot *s, int clone)
{
	const struct tmpl *t = s->tmpl;
	unsigned long long mb = (unsigned long long)(t->memory >> 20);

	argv_add(a, "%s", s->qemu);
	argv_add(a, "-nodefaults");
	argv_add(a, "-no-user-config");
	argv_add(a, "-display");
	argv_add(a, "none");
	argv_add(a, "-M");
	/*
	 * No KSM merging of guest pages across VMs (a timing side channel
	 * between tenants), and no guest memory in a QEMU core dump.
	 */
	argv_add(a, "microvm,memory-backend=ram,mem-merge=off,"
	    "dump-guest-core=off");
	argv_add(a, "-accel");
	if (strcmp(s->accel, "tcg") == 0)	/* bounded, for the cgroup */
		argv_add(a, "tcg,tb-size=%d", VM_TB_SIZE_MB);
	else
		argv_add(a, "%s", s->accel);
	/*
	 * Under TCG, QEMU's baseline model: with "max" the guest's glibc and
	 * kernel take AVX2 and XSAVE paths that TCG emulates slowly (python3
	 * checkout 40.5 -> 38.0 ms, shell 22.7 -> 20.8 ms in bench/ab.py).
	 */
	argv_add(a, "-cpu");
	argv_add(a, "%s", strcmp(s->accel, "kvm") == 0 ? "host" : "qemu64");
	argv_add(a, "-smp");
	argv_add(a, "%u", t->vcpus);
	argv_add(a, "-m");
	argv_add(a, "%lluM", mb);
	argv_add(a, "-object");
	if (clone)
		argv_add(a, "memory-backend-file,id=ram,size=%lluM,"
		    "mem-path=/proc/self/fd/%d,share=off", mb, VM_FD_RAM);
	else
		argv_add(a, "memory-backend-file,id=ram,size=%lluM,"
		    "mem-path=%s,share=on", mb, s->mem_path);
	argv_add(a, "-kernel");
	if (clone)
		argv_add(a, "/proc/self/fd/%d", VM_FD_RAM + 1);
	else
		argv_add(a, "%s", t->kernel);
	argv_add(a, "-initrd");
	if (clone)
		argv_add(a, "/proc/self/fd/%d", VM_FD_RAM + 2);
	else
		argv_add(a, "%s", t->initrd);
	argv_add(a, "-append");
	argv_add(a, "%s", s->cmdline);
	argv_add(a, "-serial");
	if (clone)
		argv_add(a, "null");
	else
		argv_add(a, "file:%s.console", s->state_path);
	argv_add(a, "-device");
	argv_add(a, "virtio-serial-device");
	argv_add(a, "-chardev");
	argv_add(a, "socket,id=agent,fd=%d", VM_FD_CHAN);
	argv_add(a, "-device");
	argv_add(a, "virtserialport,chardev=agent,name=%s", PROTO_PORT_NAME);
	argv_add(a, "-chardev");
	argv_add(a, "socket,id=qmp,fd=%d", VM_FD_QMP);
	argv_add(a, "-mon");
	argv_add(a, "chardev=qmp,mode=control");
	argv_add(a, "-nic");
	argv_add(a, "none");
	argv_add(a, "-no-reboot");
	/*
	 * QEMU's own seccomp filter: no exec of helpers, no privilege or
	 * scheduling changes, no obsolete system calls.  A guest that breaks
	 * out into QEMU finds these closed.
	 */
	argv_add(a, "-sandbox");
	argv_add(a, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,"
	    "resourcecontrol=deny");
	if (clone) {
		argv_add(a, "-incoming");
		argv_add(a, "defer");
	}
}

static char *const vm_no_env[] = { NULL };

/* What a QEMU child is given: the parent fills it, the child only reads. */
struct vm_exec {
	char		**argv;
	int		  fds[VM_NFDS];	/* to fd 3 + i; -1: none */
	int		  errfd;	/* QEMU's stderr; -1: a pipe */
	int		  nice;
	const struct jail *jail;	/* NULL: the template, not jailed */
	uid_t		  uid;		/* 0: root (the template) */
	int		  kvm_gid;	/* -1: none needed */
	uint64_t	  guest_mem;	/* for the cgroup's limits */
	unsigned	  vcpus;
};

/*
 * In the child, between clone and exec of a threaded vmcgi: system calls
 * only (glibc's own state still describes the parent's threads).  Moves
 * the descriptors to 3 to 8 and closes everything else, so no FastCGI
 * connection of another worker leaks into QEMU.
 */
static void
vm_child(const struct vm_exec *x, const struct vm_cgroup *cg)
{
	struct pollfd self = { .fd = vm_self_pidfd, .events = POLLIN };
	struct rlimit nocore = { 0, 0 };
	struct rlimit nofile = { VM_MAX_FILES, VM_MAX_FILES };
	struct rlimit nproc = { VM_MAX_THREADS, VM_MAX_THREADS };
	int fds[VM_NFDS], i, null;
	gid_t kvm = (gid_t)x->kvm_gid;
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	/* The template's RAM and console files: tenant memory, ours alone. */
	umask(077);
	/*
	 * A crashing QEMU must not write tenant memory to a core file; and a
	 * guest that breaks out into QEMU finds a network namespace with not
	 * even a loopback up, and no host IPC objects.
	 */
	if (setrlimit(RLIMIT_CORE, &nocore) < 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
	    (x->jail != NULL ? CLONE_NEWNS : 0)) < 0 ||
	    cgroup_enter(cg) < 0)
		_exit(126);
	/*
	 * A process group of its own, so that vm_resume can set the priority
	 * of all of QEMU's threads at once (PRIO_PGRP reaches every thread).
	 */
	if (setpgid(0, 0) < 0 || setpriority(PRIO_PROCESS, 0, x->nice) < 0)
		_exit(126);
	for (i = 0; i < VM_NFDS; i++)
		if ((fds[i] = x->fds[i]) >= 0 &&
		    (fds[i] = fcntl(fds[i], F_DUPFD, 100)) < 0)
			_exit(126);
	null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
	    dup2(x->errfd >= 0 ? x->errfd : null, 2) < 0)
		_exit(126);
	for (i = 0; i < VM_NFDS; i++) {
		if (fds[i] < 0)
			close(VM_FD_CHAN + i);
		else if (dup2(fds[i], VM_FD_CHAN + i) < 0)
			_exit(126);
	}
	close_range(VM_FD_CHAN + VM_NFDS, ~0U, 0);
	if (x->jail != NULL && jail_enter(x->jail) < 0)
		_exit(125);
	/*
	 * Its own uid, no capability left.  Raw calls: glibc's wrappers
	 * would signal the threads this copy of vmcgi does not have.  As
	 * the uid is this VM's alone, RLIMIT_NPROC bounds its threads; a
	 * clone writes no file (its RAM is sealed, its serial port null).
	 */
	if (x->uid != 0 &&
	    (setrlimit(RLIMIT_NOFILE, &nofile) < 0 ||
	    setrlimit(RLIMIT_NPROC, &nproc) < 0 ||
	    setrlimit(RLIMIT_FSIZE, &nocore) < 0 ||
	    syscall(SYS_setgroups, x->kvm_gid >= 0 ? 1 : 0, &kvm) < 0 ||
	    syscall(SYS_setresgid, x->uid, x->uid, x->uid) < 0 ||
	    syscall(SYS_setresuid, x->uid, x->uid, x->uid) < 0))
		_exit(124);
	/*
	 * The death signal, armed after the uid change, which would clear
	 * it.  Whether vmcgi died before is asked of its pidfd: in a PID
	 * namespace of its own getppid() is 0.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || poll(&self, 1, 0) != 0)
		_exit(126);
	/* Last: it refuses unshare, which the steps above use. */
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &vm_filter) < 0)
		_exit(126);
	/* Nothing of vmcgi's environment: QEMU needs none of it. */
	execve(x->argv[0], x->argv, vm_no_env);
	_exit(127);
}

/*
 * Start QEMU as x says, as PID 1 of a PID namespace of its own (it sees
 * no other process; killing it ends the namespace).  Fills x->fds[0..1]
 * with the far ends of the channel and monitor socketpairs.  On success
 * fills vm->pid, vm->chan, vm->qmp.fd and vm->errfd and returns 0; else
 * -errno, nothing running.
 */
static int
vm_spawn(struct vm *vm, struct vm_exec *x)
{
	int chan[2] = { -1, -1 }, qmp[2] = { -1, -1 }, errp[2] = { -1, -1 };
	int rc = 0;

	/* CPU: each vCPU's thread, and one for QEMU's main loop and I/O. */
	if (vm_cgroups && (rc = cgroup_create(&vm->cg, x->guest_mem +
	    VM_OVERHEAD_BYTES, VM_MAX_THREADS, x->vcpus + 1)) < 0) {
		log_warnx("cgroup for a VM: %s", strerror(-rc));
		return rc;
	}

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qmp) < 0 ||
	    (x->errfd < 0 && pipe2(errp, O_CLOEXEC | O_NONBLOCK) < 0)) {
		rc = -errno;
		goto fail;
	}
	x->fds[VM_FD_CHAN - 3] = chan[1];
	x->fds[VM_FD_QMP - 3] = qmp[1];
	if (x->errfd < 0)
		x->errfd = errp[1];
	/* fork(), plus CLONE_NEWPID: the child runs on a copy of this stack */
	vm->pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, NULL,
	    NULL, NULL, 0UL);
	if (vm->pid < 0) {
		rc = -errno;
		goto fail;
	}
	if (vm->pid == 0)
		vm_child(x, &vm->cg);
	vm_live_set(0, vm->pid);
	close(chan[1]);
	close(qmp[1]);
	if (errp[1] >= 0)
		close(errp[1]);
	fcntl(chan[0], F_SETFL, O_NONBLOCK);
	vm->errfd = errp[0];
	vm->qmp.fd = qmp[0];
	if (chan_init(&vm->chan, chan[0]) < 0) {
		vm_destroy(vm);
		return -ENOMEM;
	}
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (chan[i] >= 0)
			close(chan[i]);
		if (qmp[i] >= 0)
			close(qmp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	vm->pid = -1;
	cgroup_remove(&vm->cg);
	return rc;
}

void
vm_destroy(struct vm *vm)
{
	int status;

	if (vm->pid > 0) {
		kill(vm->pid, SIGKILL);
		while (waitpid(vm->pid, &status, 0) < 0 && errno == EINTR)
			;
		vm_live_set(vm->pid, 0);
		vm->pid = -1;
	}
	/* Only now, with QEMU reaped, may another VM get its uid. */
	vm_uid_put(vm->uid);
	vm->uid = 0;
	cgroup_remove(&vm->cg);
	if (vm->chan.in != NULL || vm->chan.fd >= 0)
		chan_free(&vm->chan);
	if (vm->qmp.fd >= 0)
		close(vm->qmp.fd);
	vm->qmp.fd = -1;
	if (vm->errfd >= 0)
		close(vm->errfd);
	vm->errfd = -1;
}

size_t
vm_stderr(struct vm *vm, char *buf, size_t len)
{
	ssize_t n;
	size_t got = 0;

	if (vm->errfd < 0 || len == 0)
		return 0;
	while (got < len - 1) {
		n = read(vm->errfd, buf + got, len - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	while (got > 0 && buf[got - 1] == '\n')
		buf[--got] = '\0';
	return got;
}

static void
vm_init(struct vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->pid = -1;
	vm->chan.fd = -1;
	vm->qmp.fd = -1;
	vm->errfd = -1;
}

/*
 * Wait for the next message from the guest until deadline.  1 with *hdr
 * and *payload set, 0 at the deadline, -errno on a dead or lying channel.
 * Whatever is queued for the guest is written meanwhile.
 */
static int
vm_wait_msg(struct vm *vm, struct proto_hdr *hdr, const uint8_t **payload,
    long deadline)
{
	struct pollfd pfd = { .fd = vm->chan.fd };
	long left;
	int rc;

	for (;;) {
		rc = chan_next(&vm->chan, hdr, payload);
		if (rc != 0)
			return rc;
		left = deadline - clock_now_ms();
		if (left <= 0)
			return 0;
		pfd.events = POLLIN | (chan_pending(&vm->chan) ? POLLOUT : 0);
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			return -errno;
		if ((pfd.revents & POLLOUT) && (rc = chan_flush(&vm->chan)) < 0)
			return rc;
		if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) &&
		    (rc = chan_fill(&vm->chan)) < 0 && rc != -EPIPE)
			return rc;
		if (rc == -EPIPE && chan_next(&vm->chan, hdr, payload) == 0)
			return -EPIPE;
	}
}

/*
 * Send msg (type, first field a nonce) every VM_HELLO_RESEND_MS until the
 * guest answers want with the same nonce: the first bytes after a restore
 * can be lost.  A HELLO carries the host clock, refreshed on each resend.
 * 0, -ETIMEDOUT or -errno.
 */
static int
vm_until_answer(struct vm *vm, uint32_t type, void *msg, size_t len,
    uint32_t want, long deadline)
{
	struct proto_hello *hello = msg;
	struct proto_hdr hdr;
	const uint8_t *p;
	struct timespec now;
	long next = 0;
	int rc;

	for (;;) {
		if (clock_now_ms() >= next) {
			if (type == PROTO_HELLO) {
				clock_gettime(CLOCK_REALTIME, &now);
				hello->sec = now.tv_sec;
				hello->nsec = now.tv_nsec;
			}
			rc = chan_queue(&vm->chan, type, msg, len);
			if (rc < 0)
				return rc;
			next = clock_now_ms() + VM_HELLO_RESEND_MS;
		}
		rc = vm_wait_msg(vm, &hdr, &p,
		    next < deadline ? next : deadline);
		if (rc < 0)
			return rc;
		if (rc == 0 && clock_now_ms() >= deadline)
			return -ETIMEDOUT;
		/* others (the boot's READY 0, resends' answers) are stale */
		if (rc == 1 && hdr.type == want &&
		    hdr.len == sizeof(struct proto_ready) &&
		    memcmp(p, msg, sizeof(uint64_t)) == 0)
			return 0;
	}
}

static int
vm_nonce(uint64_t *nonce)
{
	if (getrandom(nonce, sizeof(*nonce), 0) < 0)
		return -errno;
	*nonce |= 1;	/* 0 is the template's boot READY */
	return 0;
}

static int
vm_hello(struct vm *vm, long deadline)
{
	struct proto_hello hello;
	int rc;

	memset(&hello, 0, sizeof(hello));
	if ((rc = vm_nonce(&hello.nonce)) < 0)
		return rc;
	if (getrandom(hello.entropy, sizeof(hello.entropy), 0) < 0)
		return -errno;
	rc = vm_until_answer(vm, PROTO_HELLO, &hello, sizeof(hello),
	    PROTO_READY, deadline);
	explicit_bzero(hello.entropy, sizeof(hello.entropy));
	return rc;
}

static int
vm_fail(struct vm *vm, char *err, size_t errlen, const char *what, int rc)
{
	char qerr[512];

	if (vm_stderr(vm, qerr, sizeof(qerr)) > 0)
		snprintf(err, errlen, "%s: %s (qemu: %s)", what,
		    strerror(-rc), qerr);
	else
		snprintf(err, errlen, "%s: %s", what, strerror(-rc));
	vm_destroy(vm);
	return -1;
}

/* Poll query-migrate until the migration, either way, completed. */
static int
vm_migrate_wait(struct vm *vm, long deadline, unsigned poll_ms)
{
	char reply[4096];
	int rc;

	while (clock_now_ms() < deadline) {
		rc = qmp_call(&vm->qmp, "{\"execute\":\"query-migrate\"}",
		    reply, sizeof(reply), VM_QMP_TIMEOUT_MS);
		if (rc < 0)
			return rc;
		if (strstr(reply, "\"status\": \"completed\"") != NULL)
			return 0;
		if (strstr(reply, "\"status\": \"failed\"") != NULL)
			return -EIO;
		usleep(poll_ms * 1000);
	}
	return -ETIMEDOUT;
}

int
vm_load(struct snapshot *s, struct vm *vm, int background, int timeout_ms,
    char *err, size_t errlen)
{
	long start = clock_now_ms(), deadline = start + timeout_ms;
	struct argv a = { .n = 0 };
	struct vm_exec x = {
		.errfd = -1,
		.nice = background ? VM_NICE_BACKGROUND : 0,
		.jail = s->jail,
		.kvm_gid = s->kvm_gid,
		.guest_mem = s->tmpl->memory,
		.vcpus = s->tmpl->vcpus,
	};
	char cmd[128];
	int statefd, rc;

	vm_init(vm);
	if (vm_uid_count > 0 && (vm->uid = vm_uid_take()) == 0) {
		snprintf(err, errlen, "no uid left: all %u of vm_uids are "
		    "live VMs'", (unsigned)vm_uid_count);
		return -1;
	}
	x.uid = vm->uid;
	/*
	 * Read-locked until QEMU greets on QMP, by which time it has opened
	 * the state and sealed files: a rebuild replaces them only between.
	 */
	pthread_rwlock_rdlock(&s->files);
	statefd = open(s->state_path, O_RDONLY | O_CLOEXEC);
	if (statefd < 0) {
		pthread_rwlock_unlock(&s->files);
		snprintf(err, errlen, "open \"%s\": %s", s->state_path,
		    strerror(errno));
		vm_uid_put(vm->uid);
		vm->uid = 0;
		return -1;
	}
	x.fds[VM_FD_STATE - 3] = statefd;
	for (int i = 0; i < 3; i++)
		x.fds[VM_FD_RAM - 3 + i] = s->sealed[i];
	vm_args(&a, s, 1);
	x.argv = a.v;
	rc = vm_spawn(vm, &x);
	argv_free(&a);
	close(statefd);
	if (rc == 0)
		rc = qmp_open(&vm->qmp, vm->qmp.fd, timeout_ms);
	pthread_rwlock_unlock(&s->files);
	if (rc < 0)
		return vm_fail(vm, err, errlen, vm->pid > 0 ? "qmp greeting" :
		    "fork qemu", rc);
	rc = qmp_call(&vm->qmp, "{\"execute\":\"migrate-set-capabilities\","
	    "\"arguments\":{\"capabilities\":[{\"capability\":"
	    "\"x-ignore-shared\",\"state\":true}]}}", NULL, 0, timeout_ms);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "qmp migrate-set-capabilities",
		    rc);
	snprintf(cmd, sizeof(cmd), "{\"execute\":\"migrate-incoming\","
	    "\"arguments\":{\"uri\":\"fd:%d\"}}", VM_FD_STATE);
	rc = qmp_call(&vm->qmp, cmd, NULL, 0, timeout_ms);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "qmp migrate-incoming", rc);
	rc = vm_migrate_wait(vm, deadline, 1);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "load state", rc);
	vm->load_ms = (unsigned)(clock_now_ms() - start);
	return 0;
}

int
vm_warm(struct vm *vm, int timeout_ms, char *err, size_t errlen)
{
	long deadline = clock_now_ms() + timeout_ms;
	struct proto_ready warm;
	int rc;

	rc = qmp_call(&vm->qmp, "{\"execute\":\"cont\"}", NULL, 0,
	    timeout_ms);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "qmp cont (warm-up)", rc);
	if ((rc = vm_nonce(&warm.nonce)) == 0)
		rc = vm_until_answer(vm, PROTO_WARM, &warm, sizeof(warm),
		    PROTO_WARMED, deadline);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "agent warm-up", rc);
	rc = qmp_call(&vm->qmp, "{\"execute\":\"stop\"}", NULL, 0,
	    timeout_ms);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "qmp stop (warm-up)", rc);
	return 0;
}

int
vm_resume(struct vm *vm, int timeout_ms, char *err, size_t errlen)
{
	long start = clock_now_ms(), deadline = start + timeout_ms;
	int rc;

	/* A pooled clone was loaded and warmed in the background. */
	if (setpriority(PRIO_PGRP, vm->pid, 0) < 0)
		log_warn("setpriority QEMU %d", (int)vm->pid);
	/* The template was stopped when saved, so the clone starts paused. */
	rc = qmp_call(&vm->qmp, "{\"execute\":\"cont\"}", NULL, 0,
	    timeout_ms);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "qmp cont", rc);
	rc = vm_hello(vm, deadline);
	if (rc < 0)
		return vm_fail(vm, err, errlen, "agent hello", rc);
	vm->resume_ms = (unsigned)(clock_now_ms() - start);
	return 0;
}

/* Boot the template, wait for the agent, save its state, quit. */
static int
snapshot_boot(struct snapshot *s, char *err, size_t errlen)
{
	long start = clock_now_ms();
	long deadline = start + s->tmpl->boot_timeout_ms;
	struct argv a = { .n = 0 };
	struct proto_hdr hdr;
	const uint8_t *p;
	char cmd[128], reply[512] = "", *logpath;
	struct vm_exec x = {
		.kvm_gid = -1,
		.guest_mem = s->tmpl->memory,
		.vcpus = s->tmpl->vcpus,
	};
	struct vm vm;
	int statefd, logfd, rc;

	for (int i = 0; i < VM_NFDS; i++)
		x.fds[i] = -1;

	vm_init(&vm);
	if (asprintf(&logpath, "%s.log", s->state_path) < 0)
		abort();
	logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	statefd = open(s->state_path, O_WRONLY | O_CREAT | O_TRUNC |
	    O_CLOEXEC, 0600);
	if (logfd < 0 || statefd < 0) {
		snprintf(err, errlen, "open \"%s\": %s", statefd < 0 ?
		    s->state_path : logpath, strerror(errno));
		free(logpath);
		if (logfd >= 0)
			close(logfd);
		if (statefd >= 0)
			close(statefd);
		return -1;
	}
	vm_args(&a, s, 0);
	/* No jail: the template runs before any tenant input exists. */
	x.argv = a.v;
	x.errfd = logfd;
	rc = vm_spawn(&vm, &x);
	argv_free(&a);
	close(logfd);
	if (rc < 0) {
		free(logpath);
		close(statefd);
		return vm_fail(&vm, err, errlen, "fork qemu", rc);
	}
	log_info("template %s: booting (%s, log \"%s\")", s->tmpl->name,
	    s->accel, logpath);
	free(logpath);
	rc = qmp_open(&vm.qmp, vm.qmp.fd, VM_QMP_TIMEOUT_MS);
	if (rc < 0) {
		close(statefd);
		return vm_fail(&vm, err, errlen, "qmp greeting", rc);
	}
	do {
		rc = vm_wait_msg(&vm, &hdr, &p, deadline);
	} while (rc == 1 && hdr.type != PROTO_READY);
	if (rc <= 0) {
		close(statefd);
		return vm_fail(&vm, err, errlen, "wait for agent READY",
		    rc == 0 ? -ETIMEDOUT : rc);
	}
	s->boot_ms = (unsigned)(clock_now_ms() - start);
	rc = qmp_call(&vm.qmp, "{\"execute\":\"stop\"}", reply,
	    sizeof(reply), VM_QMP_TIMEOUT_MS);
	if (rc == 0)
		rc = qmp_call(&vm.qmp, "{\"execute\":"
		    "\"migrate-set-capabilities\",\"arguments\":"
		    "{\"capabilities\":[{\"capability\":\"x-ignore-shared\","
		    "\"state\":true}]}}", reply, sizeof(reply),
		    VM_QMP_TIMEOUT_MS);
	/* QEMU 7.2 takes only a named descriptor for an outgoing "fd:". */
	if (rc == 0)
		rc = qmp_send_fd(&vm.qmp, "state", statefd, VM_QMP_TIMEOUT_MS);
	close(statefd);
	snprintf(cmd, sizeof(cmd), "{\"execute\":\"migrate\","
	    "\"arguments\":{\"uri\":\"fd:state\"}}");
	if (rc == 0)
		rc = qmp_call(&vm.qmp, cmd, reply, sizeof(reply),
		    VM_QMP_TIMEOUT_MS);
	if (rc == 0)
		rc = vm_migrate_wait(&vm, clock_now_ms() + VM_QMP_TIMEOUT_MS,
		    10);
	if (rc == -EIO) {
		snprintf(err, errlen, "snapshot: qmp: %s", reply);
		vm_destroy(&vm);
		return -1;
	}
	if (rc < 0)
		return vm_fail(&vm, err, errlen, "snapshot", rc);
	/* Never resume the template: its RAM file now belongs to clones. */
	vm_destroy(&vm);
	return 0;
}

/*
 * QEMU's own words on a failed boot are in the template's log file;
 * append their last line to err, which otherwise says only what vmcgi saw
 * (a closed monitor, a timeout).
 */
static void
snapshot_log_tail(const struct snapshot *s, char *err, size_t errlen)
{
	char path[4096], tail[512], *line;
	ssize_t n;
	off_t size;
	int fd;

	snprintf(path, sizeof(path), "%s.log", s->state_path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	n = pread(fd, tail, sizeof(tail) - 1, size > (off_t)sizeof(tail) - 1 ?
	    size - (off_t)sizeof(tail) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	tail[n] = '\0';
	while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r'))
		tail[--n] = '\0';
	line = strrchr(tail, '\n');
	line = line ? line + 1 : tail;
	if (*line != '\0')
		snprintf(err + strlen(err), errlen - strlen(err),
		    " (qemu: %s; log \"%s\")", line, path);
}

/* What a snapshot was made from; a different stamp means boot again. */
static int
snapshot_stamp(const struct snapshot *s, char *buf, size_t len)
{
	const char *files[3] = { s->qemu, s->tmpl->kernel, s->tmpl->initrd };
	struct stat st[3];
	int i;

	for (i = 0; i < 3; i++) {
		if (stat(files[i], &st[i]) < 0) {
			snprintf(buf, len, "stat \"%s\": %s", files[i],
			    strerror(errno));
			return -1;
		}
	}
	snprintf(buf, len, "vmcgi-snapshot %d\nqemu %s %lld %lld\n"
	    "kernel %s %lld %lld\ninitrd %s %lld %lld\nmemory %llu\n"
	    "vcpus %u\naccel %s\ncmdline %s\n",
	    VM_ARGS_VERSION,
	    files[0], (long long)st[0].st_size, (long long)st[0].st_mtime,
	    files[1], (long long)st[1].st_size, (long long)st[1].st_mtime,
	    files[2], (long long)st[2].st_size, (long long)st[2].st_mtime,
	    (unsigned long long)s->tmpl->memory, s->tmpl->vcpus, s->accel,
	    s->cmdline);
	return 0;
}

static int
snapshot_stamp_matches(const char *path, const char *want)
{
	char have[4096];
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, have, sizeof(have) - 1);
	close(fd);
	if (n < 0)
		return 0;
	have[n] = '\0';
	return strcmp(have, want) == 0;
}

static int
snapshot_write_stamp(const char *path, const char *stamp)
{
	size_t len = strlen(stamp);
	int fd, rc = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, stamp, len) != (ssize_t)len || fsync(fd) < 0)
		rc = errno ? -errno : -EIO;
	close(fd);
	return rc;
}

/*
 * What a clone's QEMU may see: /usr (QEMU, its libraries and firmware),
 * the loader's cache, the devices QEMU opens and a /proc of its own PID
 * namespace (its RAM, kernel and initrd come as sealed descriptors).
 * Under KVM, QEMU's uid needs the group of /dev/kvm unless anyone may
 * use it.  0, or -1 with a message in err.
 */
static int
snapshot_jail(struct snapshot *s, const struct config *cfg, char *err,
    size_t errlen)
{
	struct stat st;
	struct jail *j;
	int rc = 0;

	if ((j = calloc(1, sizeof(*j))) == NULL)
		abort();
	if (jail_setup(cfg->state_dir, j->root, sizeof(j->root)) < 0) {
		free(j);
		snprintf(err, errlen, "cannot make the jail directory");
		return -1;
	}
	rc |= jail_add(j, "/usr", 1, 0);
	if (access("/etc/ld.so.cache", R_OK) == 0)
		rc |= jail_add(j, "/etc/ld.so.cache", 1, 0);
	if (strncmp(s->qemu, "/usr/", 5) != 0)
		rc |= jail_add(j, s->qemu, 1, 1);
	rc |= jail_add(j, "/dev/null", 0, 0);
	rc |= jail_add(j, "/dev/urandom", 0, 0);
	s->kvm_gid = -1;
	if (strcmp(s->accel, "kvm") == 0) {
		rc |= jail_add(j, "/dev/kvm", 0, 0);
		if (stat("/dev/kvm", &st) == 0 && (st.st_mode & 06) != 06) {
			if ((st.st_mode & 060) != 060) {
				free(j);
				snprintf(err, errlen, "/dev/kvm (mode %04o) "
				    "is not open to its group, so QEMU, "
				    "running as a uid of vm_uids, cannot use "
				    "it", (unsigned)(st.st_mode & 07777));
				return -1;
			}
			s->kvm_gid = (int)st.st_gid;
		}
	}
	if (rc != 0) {
		free(j);
		snprintf(err, errlen, "a path for the jail is relative or "
		    "too long");
		return -1;
	}
	s->jail = j;
	return 0;
}

/*
 * Copy path into a memfd named name and seal it against any write, growth
 * or shrinking, for good.  Only the file's data is copied: guest pages
 * never touched stay holes and read as zeros.  0 and *out, or -1 with a
 * message in err.
 */
static int
seal_copy(const char *path, const char *name, int *out, char *err,
    size_t errlen)
{
	enum { CHUNK = 1 << 20 };
	const char *what = "open";
	char *buf = NULL;
	struct stat st;
	off_t data, hole, off;
	ssize_t n;
	int in, mfd = -1;

	if ((in = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		goto fail;
	what = "memfd_create";
	if (fstat(in, &st) < 0 || (mfd = memfd_create(name, MFD_CLOEXEC |
	    MFD_ALLOW_SEALING)) < 0)
		goto fail;
	what = "ftruncate";
	if (ftruncate(mfd, st.st_size) < 0)
		goto fail;
	if ((buf = malloc(CHUNK)) == NULL)
		abort();
	what = "copy";
	for (data = 0; data < st.st_size; data = hole) {
		if ((data = lseek(in, data, SEEK_DATA)) < 0) {
			if (errno == ENXIO)
				break;	/* only a hole up to the end */
			goto fail;
		}
		if ((hole = lseek(in, data, SEEK_HOLE)) < 0)
			goto fail;
		for (off = data; off < hole; off += n) {
			n = pread(in, buf, hole - off < CHUNK ?
			    (size_t)(hole - off) : CHUNK, off);
			if (n <= 0 || pwrite(mfd, buf, (size_t)n, off) != n) {
				if (n == 0 || errno == 0)
					errno = EIO;
				goto fail;
			}
		}
	}
	what = "seal";
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK |
	    F_SEAL_GROW | F_SEAL_WRITE) < 0)
		goto fail;
	free(buf);
	close(in);
	*out = mfd;
	return 0;
fail:
	snprintf(err, errlen, "%s \"%s\": %s", what, path, strerror(errno));
	free(buf);
	if (in >= 0)
		close(in);
	if (mfd >= 0)
		close(mfd);
	return -1;
}

/* Sealed copies of the RAM file at mem_path, the kernel and the initrd. */
static int
snapshot_seal(const struct snapshot *s, const char *mem_path, int fds[3],
    char *err, size_t errlen)
{
	static const char *const what[3] = { "ram", "kernel", "initrd" };
	const char *paths[3] = { mem_path, s->tmpl->kernel, s->tmpl->initrd };
	char name[64];
	int i, k;

	for (i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "vmcgi-%.32s-%s", s->tmpl->name,
		    what[i]);
		if (seal_copy(paths[i], name, &fds[i], err, errlen) < 0) {
			for (k = 0; k < i; k++)
				close(fds[k]);
			return -1;
		}
	}
	return 0;
}

/*
 * The files are replaced by rename, never rewritten in place, so that a
 * vmcgi started later finds a consistent pair; clones alive keep the
 * sealed copies they were started from.
 */
int
snapshot_rebuild(struct snapshot *s, char *err, size_t errlen)
{
	struct snapshot b = *s;
	char stamp[4096];
	int fresh[3], i, rc;

	if (snapshot_stamp(s, stamp, sizeof(stamp)) < 0) {
		snprintf(err, errlen, "%s", stamp);
		return -1;
	}
	unlink(s->stamp_path);
	if (asprintf(&b.mem_path, "%s.new", s->mem_path) < 0 ||
	    asprintf(&b.state_path, "%s.new", s->state_path) < 0)
		abort();
	unlink(b.mem_path);
	rc = snapshot_boot(&b, err, errlen);
	if (rc < 0)
		snapshot_log_tail(&b, err, errlen);
	if (rc == 0)
		rc = snapshot_seal(s, b.mem_path, fresh, err, errlen);
	/* No clone may get one file of the old pair and one of the new. */
	pthread_rwlock_wrlock(&s->files);
	if (rc == 0 && (rename(b.mem_path, s->mem_path) < 0 ||
	    rename(b.state_path, s->state_path) < 0)) {
		snprintf(err, errlen, "rename \"%s\": %s", b.mem_path,
		    strerror(errno));
		for (i = 0; i < 3; i++)
			close(fresh[i]);
		rc = -1;
	}
	for (i = 0; rc == 0 && i < 3; i++) {
		if (s->sealed[i] >= 0)
			close(s->sealed[i]);
		s->sealed[i] = fresh[i];
	}
	pthread_rwlock_unlock(&s->files);
	if (rc == 0 && (rc = snapshot_write_stamp(s->stamp_path, stamp)) < 0)
		snprintf(err, errlen, "write \"%s\": %s", s->stamp_path,
		    strerror(-rc));
	s->boot_ms = b.boot_ms;
	free(b.mem_path);
	free(b.state_path);
	return rc < 0 ? -1 : 0;
}

int
snapshot_prepare(struct snapshot *s, const struct config *cfg,
    const struct tmpl *t, const char *accel, unsigned long tsc_khz,
    char *err, size_t errlen)
{
	char stamp[4096];
	int rc;

	memset(s, 0, sizeof(*s));
	s->tmpl = t;
	s->qemu = cfg->qemu;
	s->accel = accel;
	pthread_rwlock_init(&s->files, NULL);
	s->sealed[0] = s->sealed[1] = s->sealed[2] = -1;
	if (strcmp(accel, "tcg") == 0 && tsc_khz > 0)
		rc = asprintf(&s->cmdline, VM_CMDLINE VM_CMDLINE_TCG, tsc_khz);
	else
		rc = asprintf(&s->cmdline, VM_CMDLINE);
	if (rc < 0 ||
	    asprintf(&s->stamp_path, "%s/%s.stamp", cfg->state_dir,
	    t->name) < 0 ||
	    asprintf(&s->mem_path, "%s/%s.mem", cfg->state_dir, t->name) < 0 ||
	    asprintf(&s->state_path, "%s/%s.state", cfg->state_dir,
	    t->name) < 0)
		abort();
	if (snapshot_stamp(s, stamp, sizeof(stamp)) < 0) {
		snprintf(err, errlen, "%s", stamp);
		return -1;
	}
	if (snapshot_jail(s, cfg, err, errlen) < 0)
		return -1;
	if (snapshot_stamp_matches(s->stamp_path, stamp) &&
	    access(s->mem_path, R_OK) == 0 &&
	    access(s->state_path, R_OK) == 0) {
		s->reused = 1;
		return snapshot_seal(s, s->mem_path, s->sealed, err, errlen);
	}
	return snapshot_rebuild(s, err, errlen);
}

void
snapshot_free(struct snapshot *s)
{
	for (int i = 0; i < 3; i++)
		if (s->sealed[i] >= 0)
			close(s->sealed[i]);
	free(s->jail);
	free(s->mem_path);
	free(s->state_path);
	free(s->stamp_path);
	free(s->cmdline);
	pthread_rwlock_destroy(&s->files);
	memset(s, 0, sizeof(*s));
}
