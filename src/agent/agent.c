/*
 * agent.c: PID 1 of the vmcgi guest.
 *
 * Boots to the point where the host snapshots the VM (READY with nonce 0
 * sent, blocked on the channel), then, in each clone restored from that
 * snapshot, takes the host's clock and entropy, the handler script, its
 * environment and RUN, runs the handler once and reports its output and
 * end.  See include/proto.h for the messages.
 */
#define _GNU_SOURCE		/* pipe2 */
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>

#include <linux/random.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

/* Same layout as the kernel's struct rand_pool_info with its buffer. */
struct agent_entropy {
	int ae_bits;
	int ae_size;
	uint8_t ae_buf[sizeof(((struct proto_hello *)0)->entropy)];
};

static int agent_sigfd = -1;
static int agent_random = -1;

/*
 * Makes sure descriptors 0 to 2 are open, so no pipe or port ever lands
 * there and gets clobbered when a handler's stdio is set up.
 */
static void
agent_stdfds(void)
{
	int fd;

	while ((fd = open("/dev/null", O_RDWR)) != -1 && fd <= 2)
		;
	if (fd > 2)
		close(fd);
}

/*
 * Makes the agent the last thing the guest's OOM killer picks: a handler
 * that eats the guest's memory must die, not the agent reporting it.
 */
static void
agent_oom_protect(void)
{
	int fd;

	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd == -1 || write(fd, "-1000", 5) != 5)
		log_warn("write /proc/self/oom_score_adj");
	if (fd != -1)
		close(fd);
}

/*
 * SIGCHLD arrives on a signalfd so that the poll loops see it; SIGPIPE is
 * ignored so a handler closing its stdin turns into EPIPE.  Returns the
 * signalfd or -1.
 */
static int
agent_signals(void)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1) {
		log_warn("sigprocmask");
		return -1;
	}
	signal(SIGPIPE, SIG_IGN);
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd == -1)
		log_warn("signalfd");
	return fd;
}

/*
 * Reaps every exited child without blocking, as PID 1 must.  Returns 1
 * and stores the status if pid was among them, else 0.
 */
int
agent_reap(pid_t pid, int *status)
{
	struct signalfd_siginfo si;
	pid_t p;
	int st, found = 0;

	while (read(agent_sigfd, &si, sizeof(si)) == sizeof(si))
		;
	while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
		if (p == pid && status != NULL) {
			*status = st;
			found = 1;
		}
	}
	return found;
}

/*
 * Waits for channel input, flushing output and reaping children meanwhile.
 * Returns 0 when something may have arrived, -errno if the port broke.
 * Blocks.
 */
static int
agent_poll(struct chan *c)
{
	struct pollfd pfd[2];
	int rc;

	pfd[0].fd = c->c_fd;
	pfd[0].events = POLLIN | (c->c_out.b_len > 0 ? POLLOUT : 0);
	pfd[1].fd = agent_sigfd;
	pfd[1].events = POLLIN;
	if (poll(pfd, nitems(pfd), -1) == -1)
		return errno == EINTR ? 0 : -errno;
	if (pfd[1].revents)
		agent_reap(-1, NULL);
	if ((pfd[0].revents & POLLOUT) && (rc = chan_flush(c)) < 0)
		return rc;
	if (pfd[0].revents & POLLIN)
		return (rc = chan_fill(c)) < 0 ? rc : 0;
	if (pfd[0].revents & (POLLHUP | POLLERR)) {
		/* The host side is reconnecting, or gone: do not spin. */
		poll(NULL, 0, 10);
	}
	return 0;
}

/*
 * Sets the wall clock and reseeds the kernel RNG from a HELLO.  Every
 * clone resumes with the template's clock and RNG state, so both must be
 * fresh before any handler runs.  Returns 0 or -errno.
 */
static int
agent_hello_apply(const struct proto_hello *h)
{
	struct agent_entropy ae;
	struct timespec ts;

	ts.tv_sec = h->sec;
	ts.tv_nsec = h->nsec;
	if (clock_settime(CLOCK_REALTIME, &ts) == -1) {
		log_warn("clock_settime %lld", (long long)h->sec);
		return -errno;
	}
	ae.ae_bits = 8 * sizeof(ae.ae_buf);
	ae.ae_size = sizeof(ae.ae_buf);
	memcpy(ae.ae_buf, h->entropy, sizeof(ae.ae_buf));
	if (ioctl(agent_random, RNDADDENTROPY, &ae) == -1) {
		log_warn("ioctl RNDADDENTROPY");
		return -errno;
	}
	explicit_bzero(&ae, sizeof(ae));
	/*
	 * Credited entropy alone does not rekey an initialized crng until
	 * its next scheduled reseed; clones would hand out the template's
	 * stream until then.
	 */
	if (ioctl(agent_random, RNDRESEEDCRNG) == -1) {
		log_warn("ioctl RNDRESEEDCRNG");
		return -errno;
	}
	return 0;
}

/*
 * The calls a HELLO makes, run once in the pool's warm-up, so that this
 * QEMU has translated the kernel's code for them before the take rather
 * than during it: the clock is set to what it reads, and the WARM's
 * nonce is mixed into the RNG, credited with nothing, before a reseed.
 * Neither weakens the HELLO at take time, which sets the clock from the
 * host and reseeds from its 64 fresh bytes as before.  Failures are only
 * logged: the HELLO reports its own.
 */
static void
agent_hello_warm(uint64_t nonce)
{
	struct agent_entropy ae;
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		log_warn("clock_gettime (warm-up)");
	else if (clock_settime(CLOCK_REALTIME, &ts) == -1)
		log_warn("clock_settime %lld (warm-up)", (long long)ts.tv_sec);
	memset(&ae, 0, sizeof(ae));
	ae.ae_size = sizeof(ae.ae_buf);
	memcpy(ae.ae_buf, &nonce, sizeof(nonce));
	if (ioctl(agent_random, RNDADDENTROPY, &ae) == -1)
		log_warn("ioctl RNDADDENTROPY (warm-up)");
	if (ioctl(agent_random, RNDRESEEDCRNG) == -1)
		log_warn("ioctl RNDRESEEDCRNG (warm-up)");
}

/* WARM: warm up once per nonce; a resent WARM is only answered. */
static int
agent_warm(struct chan *c, const struct msg *m)
{
	static uint64_t done;
	struct proto_ready r;

	if (m->m_len != sizeof(r))
		return -EPROTO;
	memcpy(&r, m->m_data, sizeof(r));
	if (r.nonce != done) {
		agent_hello_warm(r.nonce);
		handler_warm();
		zygote_warm();
		done = r.nonce;
	}
	return chan_send(c, PROTO_WARMED, &r, sizeof(r));
}

/*
 * Reads setup messages until RUN.  Returns 0 on RUN or -errno; blocks, and
 * this is where the template sits when the host snapshots it.
 */
static int
agent_setup(struct chan *c, struct job *job)
{
	enum agent_state st = AGENT_BOOTED;
	struct msg m;
	int rc;

	for (;;) {
		if (st == AGENT_BOOTED)
			rc = chan_find_hello(c, &m);
		else
			rc = chan_next(c, &m);
		if (rc == 0 && (rc = chan_flush(c)) == 0)
			rc = agent_poll(c);
		if (rc == 0)
			continue;
		if (rc < 0)
			return rc;
		if (st == AGENT_BOOTED && m.m_type == PROTO_WARM) {
			rc = agent_warm(c, &m);
			chan_done(c, &m);
			if (rc < 0)
				return rc;
			continue;
		}
		rc = setup_message(c, job, &st, &m, agent_hello_apply);
		chan_done(c, &m);
		if (rc != 0)
			return rc > 0 ? 0 : rc;
	}
}

/*
 * Where the agent ends up after its one event, or after the host broke the
 * protocol: it keeps flushing what it queued, discards input and reaps,
 * until the host destroys the VM.  PID 1 must not exit.  Never returns.
 */
void
agent_idle(struct chan *c, int sigfd)
{
	struct pollfd pfd[2];

	for (;;) {
		pfd[0].fd = c->c_fd;
		pfd[0].events = POLLIN | (c->c_out.b_len > 0 ? POLLOUT : 0);
		pfd[1].fd = sigfd;
		pfd[1].events = POLLIN;
		if (poll(pfd, nitems(pfd), -1) == -1)
			continue;
		if (pfd[1].revents)
			agent_reap(-1, NULL);
		if (pfd[0].revents & POLLOUT)
			chan_flush(c);
		if (pfd[0].revents & POLLIN && chan_fill(c) > 0)
			buf_consume(&c->c_in, c->c_in.b_len);
		else if (pfd[0].revents & (POLLHUP | POLLERR | POLLNVAL))
			poll(NULL, 0, 100);
	}
}

/*
 * Sends READY(0) and waits until the port took it: the host snapshots
 * the template as soon as it reads it.  Returns 0 or -errno.
 */
static int
agent_ready(struct chan *c)
{
	struct proto_ready r = { 0 };
	struct pollfd pfd;
	int rc;

	if ((rc = chan_send(c, PROTO_READY, &r, sizeof(r))) != 0)
		return rc;
	while (c->c_out.b_len > 0) {
		if ((rc = chan_flush(c)) < 0)
			return rc;
		pfd.fd = c->c_fd;
		pfd.events = POLLOUT;
		if (c->c_out.b_len > 0)
			poll(&pfd, 1, 100);
	}
	return 0;
}

int
main(void)
{
	struct job job;
	struct chan chan;
	int rc;

	memset(&job, 0, sizeof(job));
	agent_stdfds();
	agent_oom_protect();
	/*
	 * Without these the guest cannot serve at all; exiting PID 1 panics
	 * the kernel, which with panic=-1 and -no-reboot ends QEMU at once,
	 * the loudest and quickest failure the host can see.
	 */
	if ((agent_sigfd = agent_signals()) == -1)
		exit(1);
	agent_random = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (agent_random == -1) {
		log_warn("open \"/dev/urandom\"");
		exit(1);
	}
	/* Handlers run inside these limits or not at all. */
	if (sandbox_init() != 0)
		exit(1);
	/*
	 * The zygote starts while the port is looked for.  Without it the
	 * guest still serves, exec'ing every handler, so it is not fatal.
	 */
	zygote_start();
	if (chan_open(&chan) != 0)
		exit(1);
	zygote_ready();
	if (agent_ready(&chan) != 0)
		exit(1);

	rc = agent_setup(&chan, &job);
	if (rc == 0)
		rc = handler_run(&chan, &job, agent_sigfd);
	else {
		struct proto_exit e = { PROTO_FAILED, -rc, 0, 0 };

		log_warnx("setup failed: %s", strerror(-rc));
		chan_send(&chan, PROTO_EXIT, &e, sizeof(e));
	}
	agent_idle(&chan, agent_sigfd);
}
