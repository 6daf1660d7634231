/*
 * handler.c: runs the one handler of a VM and relays its stdio.
 *
 * The handler runs as AGENT_UID in its own session with pipes for stdin,
 * stdout and stderr.  One poll loop moves request body bytes into its
 * stdin and its output to the host, each as far as the other end takes
 * it, so a handler that writes before it reads, or never reads, or floods
 * stderr, blocks nobody.
 */
#define _GNU_SOURCE		/* pipe2 */

#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define RUN_STDIN_MAX (16 * 1024 * 1024)	/* body bytes held for stdin */
#define RUN_OUTQ_HIGH (256 * 1024)	/* stop reading output above */
#define RUN_READ_MAX (32 * 1024)	/* payload of one STDOUT/STDERR */

enum { RUN_CHAN, RUN_SIG, RUN_IN, RUN_OUT, RUN_ERR, RUN_STAT, RUN_NFDS };

struct run {
	struct chan *r_chan;
	struct job *r_job;
	int r_sigfd;
	pid_t r_pid;
	int r_in;		/* write end of its stdin; -1 once closed */
	int r_out;		/* read ends of its stdout and stderr */
	int r_err;
	int r_stat;		/* a zygote handler's status pipe, or -1 */
	int r_hup;		/* the host hung up: stop reading the port */
	struct buf r_stdin;	/* body bytes it has not read yet */
	int r_eof;		/* STDIN_EOF received */
	int r_reaped;
	int r_emptied;		/* its cgroup was killed */
	int r_status;
	const char *r_cgroup;	/* what to empty at the end */
	uint64_t r_start;	/* CLOCK_MONOTONIC, ms */
	uint64_t r_end;
	uint64_t r_deadline;
};

/* What a child reports through its error pipe when a step fails. */
struct run_failure {
	char rf_step[48];
	int rf_errno;
};

static uint64_t
run_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
run_close(int *fdp)
{
	if (*fdp != -1)
		close(*fdp);
	*fdp = -1;
}

/*
 * Writes the script where the handler can read and exec it but not change
 * it.  Returns 0 or -errno; *step names the call that failed.
 */
static int
run_write_script(const struct buf *script, const char **step)
{
	size_t off = 0;
	ssize_t w;
	int fd;

	*step = "mkdir " AGENT_SCRIPT_DIR;
	if (mkdir(AGENT_SCRIPT_DIR, 0755) == -1 && errno != EEXIST)
		return -errno;
	*step = "open " AGENT_SCRIPT_PATH;
	fd = open(AGENT_SCRIPT_PATH, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0755);
	if (fd == -1)
		return -errno;
	*step = "write " AGENT_SCRIPT_PATH;
	while (off < script->b_len) {
		w = write(fd, script->b_data + script->b_off + off,
		    script->b_len - off);
		if (w == -1 && errno != EINTR) {
			close(fd);
			return -errno;
		}
		off += w > 0 ? (size_t)w : 0;
	}
	*step = "fchmod " AGENT_SCRIPT_PATH;
	if (fchmod(fd, 0755) == -1) {
		close(fd);
		return -errno;
	}
	/* An fd open for writing at execve time would give ETXTBSY. */
	*step = "close " AGENT_SCRIPT_PATH;
	return close(fd) == -1 ? -errno : 0;
}

static void __attribute__((noreturn))
run_child_fail(int errfd, const char *step)
{
	struct run_failure rf;

	memset(&rf, 0, sizeof(rf));
	rf.rf_errno = errno;
	snprintf(rf.rf_step, sizeof(rf.rf_step), "%s", step);
	if (write(errfd, &rf, sizeof(rf)) == -1)
		_exit(126);
	_exit(127);
}

/*
 * In the child: stdio on the pipes, a session of its own, the OOM killer's
 * first pick, then the handler's uid with no supplementary groups and only
 * the host's environment.  Never returns; a failing step goes to errfd.
 */
static void __attribute__((noreturn))
run_child(const struct job *job, const int fds[3], int errfd)
{
	char *argv[] = { AGENT_SCRIPT_PATH, NULL };
	sigset_t none;
	int i, fd;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (setsid() == -1)
		run_child_fail(errfd, "setsid");
	for (i = 0; i < 3; i++) {
		if (dup2(fds[i], i) == -1)
			run_child_fail(errfd, "dup2");
	}
	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd == -1 || write(fd, "1000", 4) != 4)
		run_child_fail(errfd, "write /proc/self/oom_score_adj");
	close(fd);
	if (chdir("/tmp") == -1)
		run_child_fail(errfd, "chdir /tmp");
	if (setgroups(0, NULL) == -1)
		run_child_fail(errfd, "setgroups");
	if (setgid(AGENT_GID) == -1)
		run_child_fail(errfd, "setgid");
	if (setuid(AGENT_UID) == -1)
		run_child_fail(errfd, "setuid");
	if ((errno = -sandbox_enter()) != 0)
		run_child_fail(errfd, "rlimits and seccomp");
	execve(AGENT_SCRIPT_PATH, argv, (char **)job->j_env);
	run_child_fail(errfd, "execve " AGENT_SCRIPT_PATH);
}

/*
 * Creates the three stdio pipes; the agent's ends are non-blocking.
 * child[] gets the handler's ends.  Returns 0 or -errno.
 */
static int
run_pipes(struct run *r, int child[3])
{
	int in[2], out[2], err[2];

	if (pipe2(in, O_CLOEXEC) == -1)
		return -errno;
	if (pipe2(out, O_CLOEXEC) == -1) {
		close(in[0]);
		close(in[1]);
		return -errno;
	}
	if (pipe2(err, O_CLOEXEC) == -1) {
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		return -errno;
	}
	child[0] = in[0];
	child[1] = out[1];
	child[2] = err[1];
	r->r_in = in[1];
	r->r_out = out[0];
	r->r_err = err[0];
	fcntl(r->r_in, F_SETFL, O_NONBLOCK);
	fcntl(r->r_out, F_SETFL, O_NONBLOCK);
	fcntl(r->r_err, F_SETFL, O_NONBLOCK);
	return 0;
}

/*
 * Forks the handler and waits until it has exec'd or failed.  Returns 0,
 * or -errno with rf naming the failed step.
 */
static int
run_spawn(struct run *r, struct run_failure *rf)
{
	int child[3], ep[2], i, rc;
	ssize_t n;

	snprintf(rf->rf_step, sizeof(rf->rf_step), "pipe2");
	if ((rc = run_pipes(r, child)) != 0)
		return rc;
	if (pipe2(ep, O_CLOEXEC) == -1)
		return -errno;
	r->r_start = run_now();
	if ((r->r_pid = sandbox_fork(AGENT_CG_RUN)) == -1) {
		snprintf(rf->rf_step, sizeof(rf->rf_step), "clone3");
		rc = -errno;
	} else if (r->r_pid == 0)
		run_child(r->r_job, child, ep[1]);
	for (i = 0; i < 3; i++)
		close(child[i]);
	close(ep[1]);
	if (r->r_pid == -1) {
		close(ep[0]);
		return rc;
	}
	/* EOF: execve succeeded and closed the CLOEXEC write end. */
	do
		n = read(ep[0], rf, sizeof(*rf));
	while (n == -1 && errno == EINTR);
	close(ep[0]);
	if (n != sizeof(*rf))
		return 0;
	rf->rf_step[sizeof(rf->rf_step) - 1] = '\0';
	return rf->rf_errno > 0 ? -rf->rf_errno : -EIO;
}

/*
 * The pool's warm-up of the exec path: a fixed script written, spawned and
 * waited for exactly as an event's handler is (tmpfs file, clone3 into
 * the cgroup, setuid, binfmt_script, busybox sh, pipes), so that this
 * clone's QEMU has translated those guest paths before an event needs
 * them.  No tenant input exists yet; the file goes away again.
 */
void
handler_warm(void)
{
	static const char script[] = "#!/bin/sh\necho\n";
	struct run_failure rf;
	const char *step;
	struct job job;
	struct run r;
	char tmp[64];
	int st;

	memset(&job, 0, sizeof(job));
	memset(&r, 0, sizeof(r));
	r.r_job = &job;
	r.r_in = r.r_out = r.r_err = r.r_stat = -1;
	if (buf_append(&job.j_script, script, sizeof(script) - 1) == 0 &&
	    run_write_script(&job.j_script, &step) == 0 &&
	    run_spawn(&r, &rf) == 0) {
		run_close(&r.r_in);
		fcntl(r.r_out, F_SETFL, 0);
		while (read(r.r_out, tmp, sizeof(tmp)) > 0)
			;
		while (waitpid(r.r_pid, &st, 0) == -1 && errno == EINTR)
			;
	}
	run_close(&r.r_in);
	run_close(&r.r_out);
	run_close(&r.r_err);
	buf_free(&job.j_script);
	unlink(AGENT_SCRIPT_PATH);
	rmdir(AGENT_SCRIPT_DIR);
}

/*
 * Has the zygote fork a python3 handler.  Returns 1 if it runs, or 0 if
 * the job is not one for the zygote or the zygote failed (logged); the
 * handler has then not run and the caller execs it.
 */
static int
run_zygote(struct run *r)
{
	struct buf code = { 0 };
	int child[3], st[2], i, rc;

	if (run_pipes(r, child) != 0)
		return 0;
	if (pipe2(st, O_CLOEXEC | O_NONBLOCK) == -1) {
		for (i = 0; i < 3; i++)
			close(child[i]);
		goto exec;
	}
	r->r_start = run_now();
	rc = zygote_spawn(r->r_job, child, st[1], &r->r_pid, &code);
	for (i = 0; i < 3; i++)
		close(child[i]);
	close(st[1]);
	r->r_stat = st[0];
	/* Ahead of any output: the host keeps it for the next event. */
	if (rc == 1 && code.b_len > 0 &&
	    chan_send(r->r_chan, PROTO_CODE, buf_head(&code), code.b_len) != 0)
		log_warnx("zygote: code of %zu bytes not sent", code.b_len);
	buf_free(&code);
	if (rc == 1) {
		/* The zygote became the handler: empty its group too. */
		r->r_cgroup = AGENT_CG_SANDBOX;
		return 1;
	}
	if (rc < 0)
		log_warnx("zygote failed (%s): exec'ing the handler",
		    strerror(-rc));
	run_close(&r->r_stat);
exec:
	run_close(&r->r_in);
	run_close(&r->r_out);
	run_close(&r->r_err);
	return 0;
}

static int
run_exit(struct run *r, uint32_t kind, int32_t code)
{
	struct proto_exit e;
	uint64_t end = r->r_reaped ? r->r_end : run_now();

	e.kind = kind;
	e.code = code;
	e.elapsed_ms = r->r_start ? end - r->r_start : 0;
	e.pad = 0;
	return chan_send(r->r_chan, PROTO_EXIT, &e, sizeof(e));
}

/* Reports a failure to start the handler: its text on stderr, then EXIT. */
static int
run_failed(struct run *r, const char *step, int err)
{
	char text[160];
	int n;

	n = snprintf(text, sizeof(text), "vmcgi-agent: %s: %s\n", step,
	    strerror(err));
	log_warnx("%s: %s", step, strerror(err));
	chan_send(r->r_chan, PROTO_STDERR, text, n);
	return run_exit(r, PROTO_FAILED, err);
}

/* Feeds buffered body bytes to the handler's stdin, as far as it takes. */
static void
run_feed(struct run *r)
{
	ssize_t w;

	while (r->r_in != -1 && r->r_stdin.b_len > 0) {
		w = write(r->r_in, buf_head(&r->r_stdin), r->r_stdin.b_len);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && errno == EAGAIN)
			return;
		if (w == -1) {
			/* EPIPE: it closed its stdin; the rest is moot. */
			run_close(&r->r_in);
			break;
		}
		buf_consume(&r->r_stdin, w);
	}
	if (r->r_in == -1)
		buf_consume(&r->r_stdin, r->r_stdin.b_len);
	else if (r->r_eof && r->r_stdin.b_len == 0)
		run_close(&r->r_in);
}

/* Takes one host message during the run.  Returns 0 or -EPROTO. */
static int
run_message(struct run *r, const struct msg *m)
{
	switch (m->m_type) {
	case PROTO_STDIN:
		if (r->r_eof)
			return -EPROTO;
		if (r->r_in == -1)
			return 0;
		return buf_append(&r->r_stdin, m->m_data, m->m_len);
	case PROTO_STDIN_EOF:
		if (r->r_eof || m->m_len != 0)
			return -EPROTO;
		r->r_eof = 1;
		return 0;
	default:
		return -EPROTO;
	}
}

/*
 * Handles the whole messages in the input queue, including any that came
 * in the same read as RUN.  Returns 0 or -errno.
 */
static int
run_messages(struct run *r)
{
	struct msg m;
	int rc;

	while ((rc = chan_next(r->r_chan, &m)) == 1) {
		rc = run_message(r, &m);
		chan_done(r->r_chan, &m);
		if (rc != 0)
			return rc;
	}
	if (rc < 0)
		return rc;
	run_feed(r);
	return 0;
}

/* Reads and handles what the port has.  Returns 0 or -errno. */
static int
run_on_chan(struct run *r)
{
	int rc;

	if ((rc = chan_fill(r->r_chan)) < 0)
		return rc;
	return run_messages(r);
}

/* Relays one read of the handler's stdout or stderr.  Returns 0 or -errno. */
static int
run_on_output(struct run *r, int *fdp, uint32_t type)
{
	uint8_t tmp[RUN_READ_MAX];
	ssize_t n;

	n = read(*fdp, tmp, sizeof(tmp));
	if (n == -1 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		run_close(fdp);
		return 0;
	}
	return chan_send(r->r_chan, type, tmp, n);
}

/* The handler itself is gone; what it left is dealt with in run_loop. */
static void
run_ended(struct run *r)
{
	r->r_reaped = 1;
	r->r_end = run_now();
	run_close(&r->r_in);
	buf_consume(&r->r_stdin, r->r_stdin.b_len);
}

static void
run_on_child(struct run *r)
{
	int st;

	/* Reaps, always: a SIGCHLD left unread would keep poll returning. */
	if (!agent_reap(r->r_pid, &st) || r->r_reaped)
		return;
	r->r_status = st;
	run_ended(r);
}

/*
 * A zygote handler's exit status, written just before it exits.  Anything
 * but one status in range is ignored, and the exit itself counts then.
 * The script could write here itself; it would only end itself early.
 */
static void
run_on_status(struct run *r)
{
	int32_t code;
	ssize_t n;

	n = read(r->r_stat, &code, sizeof(code));
	if (n == -1 && (errno == EINTR || errno == EAGAIN))
		return;
	run_close(&r->r_stat);
	if (r->r_reaped || n != sizeof(code) || code < 0 || code > 255)
		return;
	r->r_status = code << 8;	/* as waitpid reports an exit */
	run_ended(r);
}

static void
run_pollfds(struct run *r, struct pollfd *pfd)
{
	struct chan *c = r->r_chan;
	int outq_ok = c->c_out.b_len < RUN_OUTQ_HIGH;

	memset(pfd, 0, RUN_NFDS * sizeof(*pfd));
	pfd[RUN_CHAN].fd = r->r_hup ? -1 : c->c_fd;
	if (r->r_stdin.b_len < RUN_STDIN_MAX)
		pfd[RUN_CHAN].events |= POLLIN;
	if (c->c_out.b_len > 0)
		pfd[RUN_CHAN].events |= POLLOUT;
	pfd[RUN_SIG].fd = r->r_sigfd;
	pfd[RUN_SIG].events = POLLIN;
	pfd[RUN_IN].fd = r->r_stdin.b_len > 0 ? r->r_in : -1;
	pfd[RUN_IN].events = POLLOUT;
	pfd[RUN_OUT].fd = outq_ok ? r->r_out : -1;
	pfd[RUN_OUT].events = POLLIN;
	pfd[RUN_ERR].fd = outq_ok ? r->r_err : -1;
	pfd[RUN_ERR].events = POLLIN;
	pfd[RUN_STAT].fd = r->r_stat;
	pfd[RUN_STAT].events = POLLIN;
}

/* Handles what poll reported.  Returns 0 or -errno (-EPROTO: bad host). */
static int
run_events(struct run *r, const struct pollfd *pfd)
{
	short ce = pfd[RUN_CHAN].revents;
	int rc = 0;

	if (pfd[RUN_SIG].revents)
		run_on_child(r);
	if (pfd[RUN_STAT].revents)
		run_on_status(r);
	if (ce & POLLOUT)
		rc = chan_flush(r->r_chan);
	if (rc == 0 && (ce & POLLIN))
		rc = run_on_chan(r);
	else if (ce & (POLLHUP | POLLERR))
		r->r_hup = 1;
	if (rc < 0)
		return rc;
	if (pfd[RUN_IN].revents)
		run_feed(r);
	if (pfd[RUN_OUT].revents &&
	    (rc = run_on_output(r, &r->r_out, PROTO_STDOUT)) < 0)
		return rc;
	if (pfd[RUN_ERR].revents &&
	    (rc = run_on_output(r, &r->r_err, PROTO_STDERR)) < 0)
		return rc;
	return 0;
}

/*
 * Relays until the handler has exited and its output reached EOF, or the
 * deadline passed.  Returns 0, 1 on timeout, or -errno.  Blocks.
 */
static int
run_loop(struct run *r)
{
	struct pollfd pfd[RUN_NFDS];
	uint64_t now;
	int rc;

	while (!r->r_reaped || r->r_out != -1 || r->r_err != -1) {
		if ((now = run_now()) >= r->r_deadline)
			return 1;
		run_pollfds(r, pfd);
		if (poll(pfd, RUN_NFDS, r->r_deadline - now) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("poll");
			return -errno;
		}
		if ((rc = run_events(r, pfd)) != 0)
			return rc;
		/*
		 * Whatever holds its stdout or stderr once the handler is
		 * gone is killed, so that they reach EOF.  If nothing does,
		 * the kill waits until EXIT is out: under TCG it cost 4-10 ms,
		 * the processes it kills taking the vCPU from the agent.
		 */
		if (r->r_reaped && !r->r_emptied &&
		    (r->r_out != -1 || r->r_err != -1)) {
			sandbox_empty(r->r_cgroup);
			r->r_emptied = 1;
		}
	}
	return 0;
}

/* Queues EXIT for how the run ended; it follows all output queued. */
static int
run_report(struct run *r, int rc)
{
	int st = r->r_status;

	if (rc == 1 && !r->r_reaped)
		return run_exit(r, PROTO_TIMEDOUT, 0);
	if (rc < 0 && !r->r_reaped) {
		log_warnx("run stopped: %s", strerror(-rc));
		return run_exit(r, PROTO_FAILED, -rc);
	}
	if (WIFSIGNALED(st))
		return run_exit(r, PROTO_SIGNALED, WTERMSIG(st));
	return run_exit(r, PROTO_EXITED, WEXITSTATUS(st));
}

/*
 * Runs the job's handler to its end and queues its output and EXIT on c.
 * Returns 0, or -EPROTO if the host broke the protocol (the handler is
 * killed all the same).  Blocks for up to the job's timeout.
 */
int
handler_run(struct chan *c, struct job *job, int sigfd)
{
	struct run_failure rf;
	const char *step;
	struct run r;
	int rc;

	memset(&r, 0, sizeof(r));
	r.r_chan = c;
	r.r_job = job;
	r.r_sigfd = sigfd;
	r.r_in = r.r_out = r.r_err = r.r_stat = -1;
	r.r_cgroup = AGENT_CG_RUN;
	if ((rc = run_write_script(&job->j_script, &step)) != 0)
		return run_failed(&r, step, -rc);
	if (!run_zygote(&r) && (rc = run_spawn(&r, &rf)) != 0)
		return run_failed(&r, rf.rf_step, -rc);
	r.r_deadline = r.r_start + job->j_run.timeout_ms;

	if ((rc = run_messages(&r)) == 0)
		rc = run_loop(&r);
	if (rc != 0 && !r.r_reaped && !r.r_emptied) {
		sandbox_empty(r.r_cgroup);
		r.r_emptied = 1;
	}
	run_close(&r.r_in);
	run_close(&r.r_out);
	run_close(&r.r_err);
	run_close(&r.r_stat);
	buf_free(&r.r_stdin);
	run_report(&r, rc);
	/* Nothing of the handler may outlive EXIT by more than this. */
	if (!r.r_emptied) {
		chan_flush(c);
		sandbox_empty(r.r_cgroup);
	}
	return rc == -EPROTO ? rc : 0;
}
