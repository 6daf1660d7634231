/*
 * broker.c: both ends of the channel between the FastCGI process and the
 * privileged one (see broker.h).  The privileged end treats every message
 * as hostile: a FastCGI process that sends anything but the two fixed
 * messages, in order, is killed, and the VM it held with it.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/openat2.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"
#include "log.h"
#include "worker.h"

#define BROKER_RESTORE_TIMEOUT_MS 30000
#define BROKER_FLUSH_TIMEOUT_MS 2000
#define BROKER_EXIT_GRACE_MS 2000

int
broker_valid(const struct broker_msg *m, ssize_t len, int held,
    size_t nhandlers)
{
	size_t i;

	if (len != (ssize_t)sizeof(*m))
		return 0;
	if (m->type == BROKER_DONE)
		return held;
	if (m->type != BROKER_TAKE || held || m->handler >= nhandlers)
		return 0;
	for (i = 0; i < BROKER_ID_LEN - 1; i++)
		if (!((m->id[i] >= '0' && m->id[i] <= '9') ||
		    (m->id[i] >= 'a' && m->id[i] <= 'f')))
			return 0;
	return m->id[BROKER_ID_LEN - 1] == '\0';
}

/*
 * The script, opened inside the tenant's directory only: openat2 with
 * RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS refuses "..", absolute paths and
 * every symlink, whatever the file system holds.  The descriptor, or -1
 * with a reason in why.
 */
static int
broker_open_script(const struct handler *h, char *why, size_t whylen)
{
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
		    RESOLVE_NO_MAGICLINKS,
	};
	struct stat st;
	int dfd, fd = -1, err = 0;

	dfd = open(h->tenant->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		err = errno;
	else if ((fd = (int)syscall(SYS_openat2, dfd, h->script, &how,
	    sizeof(how))) < 0)
		err = errno;
	else if (fstat(fd, &st) < 0)
		err = errno;
	else if (!S_ISREG(st.st_mode))
		err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
	else if (st.st_size > PROTO_MAX_SCRIPT)
		err = EFBIG;
	if (dfd >= 0)
		close(dfd);
	if (err == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	snprintf(why, whylen, "open \"%s/%s\": %s", h->tenant->dir, h->script,
	    strerror(err));
	return -1;
}

/* Write what the channel still queues for the guest, before handing it. */
static int
broker_flush(struct vm *vm)
{
	long deadline = clock_now_ms() + BROKER_FLUSH_TIMEOUT_MS;
	struct pollfd pfd = { .fd = vm->chan.fd, .events = POLLOUT };
	int rc;

	while (chan_pending(&vm->chan) > 0) {
		if ((rc = chan_flush(&vm->chan)) < 0)
			return rc;
		if (chan_pending(&vm->chan) == 0)
			break;
		if (clock_now_ms() >= deadline)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

static int
broker_send(int fd, struct broker_reply *r, const void *extra, size_t n,
    const int *fds, int nfds)
{
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	struct iovec iov[2] = {
		{ .iov_base = r, .iov_len = sizeof(*r) },
		{ .iov_base = (void *)extra, .iov_len = n },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n ? 2 : 1 };
	struct cmsghdr *c;

	r->nunread = (uint32_t)n;
	if (nfds > 0) {
		memset(&cm, 0, sizeof(cm));
		msg.msg_control = cm.buf;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	if (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

/* TAKE: script, admission, clone, in that order.  1 if a VM is held. */
static int
broker_serve_take(struct broker *b, const struct broker_msg *m,
    struct vm *vm, const struct handler **held)
{
	struct server *srv = b->srv;
	const struct handler *h = &srv->cfg->handlers[m->handler];
	struct broker_reply r;
	const uint8_t *unread;
	const char *why = NULL;
	char err[1024];
	int pooled = 0, script, fds[2], rc;
	size_t n;

	memset(&r, 0, sizeof(r));
	script = broker_open_script(h, r.why, sizeof(r.why));
	if (script < 0) {
		r.status = BROKER_NO_SCRIPT;
		return broker_send(b->fd, &r, NULL, 0, NULL, 0) < 0 ? -1 : 0;
	}
	rc = admit_acquire(&srv->admit, h, &why);
	if (rc < 0) {
		close(script);
		r.status = rc == -EBUSY ? BROKER_BUSY : BROKER_WAITED;
		snprintf(r.why, sizeof(r.why), "%s", why);
		return broker_send(b->fd, &r, NULL, 0, NULL, 0) < 0 ? -1 : 0;
	}
	rc = pool_take(&srv->pools[h->tmpl - srv->cfg->tmpls], vm, &pooled,
	    BROKER_RESTORE_TIMEOUT_MS, err, sizeof(err));
	if (rc == 0 && (rc = broker_flush(vm)) < 0) {
		snprintf(err, sizeof(err), "write to the agent: %s",
		    strerror(-rc));
		vm_destroy(vm);
	}
	if (rc < 0) {
		close(script);
		admit_release(&srv->admit, h);
		log_req(LOG_LVL_ERROR, m->id, "template %s: restore: %s",
		    h->tmpl->name, err);
		r.status = BROKER_NO_VM;
		snprintf(r.why, sizeof(r.why), "%.255s", err);
		return broker_send(b->fd, &r, NULL, 0, NULL, 0) < 0 ? -1 : 0;
	}
	r.status = BROKER_OK;
	r.pooled = (uint32_t)pooled;
	r.load_ms = vm->load_ms;
	r.resume_ms = vm->resume_ms;
	n = chan_unread(&vm->chan, &unread);
	fds[0] = vm->chan.fd;
	fds[1] = script;
	rc = broker_send(b->fd, &r, unread, n, fds, 2);
	close(script);
	/* The FastCGI side speaks to the agent now; QEMU stays ours. */
	chan_free(&vm->chan);
	*held = h;
	if (rc < 0) {
		vm_destroy(vm);
		admit_release(&srv->admit, h);
		*held = NULL;
		return -1;
	}
	return 1;
}

static void *
broker_main(void *arg)
{
	struct broker *b = arg;
	struct server *srv = b->srv;
	const struct handler *held = NULL;
	struct pollfd ended = { .fd = b->peer, .events = POLLIN };
	struct broker_reply r;
	struct broker_msg m;
	struct vm vm;
	ssize_t n;
	int grace = 0;

	memset(&vm, 0, sizeof(vm));
	vm.pid = -1;
	vm.chan.fd = vm.qmp.fd = vm.errfd = -1;
	for (;;) {
		n = recv(b->fd, &m, sizeof(m), MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		/*
		 * 0 is the end of the stream, or an empty message, which
		 * SOCK_SEQPACKET cannot tell apart: either way this channel
		 * is done, and the kill below says whether it was early.
		 */
		if (n <= 0) {
			grace = BROKER_EXIT_GRACE_MS;
			break;
		}
		if (!broker_valid(&m, n, held != NULL, srv->cfg->nhandlers)) {
			log_warnx("broker: a malformed message from the "
			    "FastCGI process (%zd bytes, type %u)", n,
			    n >= 4 ? m.type : 0);
			break;
		}
		if (m.type == BROKER_TAKE) {
			if (broker_serve_take(b, &m, &vm, &held) < 0)
				break;
			continue;
		}
		vm_destroy(&vm);
		admit_release(&srv->admit, held);
		held = NULL;
		memset(&r, 0, sizeof(r));
		r.status = BROKER_DONE_OK;
		if (broker_send(b->fd, &r, NULL, 0, NULL, 0) < 0)
			break;
	}
	if (held != NULL) {
		vm_destroy(&vm);
		admit_release(&srv->admit, held);
	}
	/*
	 * A FastCGI process closes its channels only by ending (its
	 * descriptors close a moment before its exit shows on the pidfd).
	 * One still alive after that moment, or one that sent a malformed
	 * message, lied or broke its channel: it goes, and vmcgi with it,
	 * rather than serve on with a worker that can never get a VM.  The
	 * pidfd cannot reach another process that took its pid.
	 */
	if (poll(&ended, 1, grace) == 0) {	/* readable once it exited */
		log_warnx("broker: channel %d ended while the FastCGI process "
		    "lived: killing it", b->index);
		syscall(SYS_pidfd_send_signal, b->peer, SIGKILL, NULL, 0);
	}
	close(b->fd);
	b->fd = -1;
	return NULL;
}

int
broker_start(struct broker *b)
{
	int rc = pthread_create(&b->thread, NULL, broker_main, b);

	if (rc != 0) {
		errno = rc;
		log_warn("pthread_create broker");
		return -1;
	}
	return 0;
}

void
broker_join(struct broker *b)
{
	pthread_join(b->thread, NULL);
}

/* One reply, with up to two descriptors; its length, or -errno. */
static ssize_t
broker_recv(int fd, struct broker_reply *r, uint8_t *extra, size_t cap,
    int fds[2], int *nfds)
{
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	struct iovec iov[2] = {
		{ .iov_base = r, .iov_len = sizeof(*r) },
		{ .iov_base = extra, .iov_len = cap },
	};
	struct msghdr msg = {
		.msg_iov = iov, .msg_iovlen = 2,
		.msg_control = cm.buf, .msg_controllen = sizeof(cm.buf),
	};
	struct cmsghdr *c;
	ssize_t n;
	size_t k;

	*nfds = 0;
	do {
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int got;

			memcpy(&got, CMSG_DATA(c) + i * sizeof(int),
			    sizeof(int));
			if (*nfds < 2)
				fds[(*nfds)++] = got;
			else
				close(got);
		}
	}
	if (n == 0)
		return -EPIPE;
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return -EPROTO;
	return n;
}

int
broker_take(int fd, uint32_t handler, const char *id, struct vm *vm,
    int *pooled, int *script, char *why, size_t whylen)
{
	static __thread uint8_t unread[CHAN_MAX_UNREAD];
	struct broker_msg m;
	struct broker_reply r;
	int fds[2], nfds, rc;
	ssize_t n;

	memset(&m, 0, sizeof(m));
	m.type = BROKER_TAKE;
	m.handler = handler;
	snprintf(m.id, sizeof(m.id), "%s", id);
	if (send(fd, &m, sizeof(m), MSG_NOSIGNAL) < 0) {
		rc = -errno;
		snprintf(why, whylen, "send to the privileged process: %s",
		    strerror(errno));
		return rc;
	}
	n = broker_recv(fd, &r, unread, sizeof(unread), fds, &nfds);
	if (n < (ssize_t)sizeof(r) || r.nunread != n - sizeof(r) ||
	    r.status > BROKER_NO_VM || (r.status == BROKER_OK) != (nfds == 2)) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		snprintf(why, whylen, "privileged process: %s", n < 0 ?
		    strerror((int)-n) : "a malformed reply");
		return n < 0 ? (int)n : -EPROTO;
	}
	r.why[sizeof(r.why) - 1] = '\0';
	snprintf(why, whylen, "%s", r.why);
	if (r.status != BROKER_OK)
		return (int)r.status;
	if (chan_init(&vm->chan, fds[0]) < 0 ||
	    chan_preload(&vm->chan, unread, r.nunread) < 0) {
		chan_free(&vm->chan);
		close(fds[1]);
		broker_done(fd, vm);
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	*script = fds[1];
	*pooled = (int)r.pooled;
	vm->load_ms = r.load_ms;
	vm->resume_ms = r.resume_ms;
	return BROKER_OK;
}

int
broker_done(int fd, struct vm *vm)
{
	struct broker_msg m;
	struct broker_reply r;
	int fds[2], nfds;
	ssize_t n;

	if (vm->chan.in != NULL || vm->chan.fd >= 0)
		chan_free(&vm->chan);
	memset(&m, 0, sizeof(m));
	m.type = BROKER_DONE;
	if (send(fd, &m, sizeof(m), MSG_NOSIGNAL) < 0)
		return -errno;
	n = broker_recv(fd, &r, NULL, 0, fds, &nfds);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (n < 0)
		return (int)n;
	if (n != sizeof(r) || r.status != BROKER_DONE_OK)
		return -EPROTO;
	return 0;
}
