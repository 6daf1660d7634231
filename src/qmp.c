/*
 * qmp.c: a line-oriented QMP client.  QEMU answers each command with one
 * line holding "return" or "error"; asynchronous events are lines holding
 * "event" and are skipped.  No JSON parser is needed for that.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "qmp.h"

/* Next complete line into line; 0, or -ETIMEDOUT, -EPIPE, -E2BIG. */
static int
qmp_line(struct qmp *q, char *line, size_t linelen, long deadline)
{
	struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
	char *nl;
	ssize_t n;
	size_t used;

	for (;;) {
		nl = memchr(q->buf, '\n', q->len);
		if (nl != NULL) {
			used = (size_t)(nl - q->buf) + 1;
			if (used > linelen)
				return -E2BIG;
			memcpy(line, q->buf, used - 1);
			line[used - 1] = '\0';
			memmove(q->buf, q->buf + used, q->len - used);
			q->len -= used;
			return 0;
		}
		if (q->len == sizeof(q->buf))
			return -E2BIG;
		if (clock_now_ms() >= deadline)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, (int)(deadline - clock_now_ms())) <= 0)
			continue;
		n = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
		if (n == 0)
			return -EPIPE;
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (n > 0)
			q->len += (size_t)n;
	}
}

static int
qmp_write(struct qmp *q, const char *cmd)
{
	size_t len = strlen(cmd), off = 0;
	ssize_t n;

	while (off < len) {
		n = write(q->fd, cmd + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		off += (size_t)n;
	}
	return write(q->fd, "\n", 1) == 1 ? 0 : -EPIPE;
}

int
qmp_call(struct qmp *q, const char *cmd, char *reply, size_t replylen,
    int timeout_ms)
{
	long deadline = clock_now_ms() + timeout_ms;
	char line[4096];
	int rc;

	rc = qmp_write(q, cmd);
	if (rc < 0)
		return rc;
	for (;;) {
		rc = qmp_line(q, line, sizeof(line), deadline);
		if (rc < 0)
			return rc;
		if (strstr(line, "\"event\"") != NULL)
			continue;
		if (reply != NULL && replylen > 0) {
			strncpy(reply, line, replylen - 1);
			reply[replylen - 1] = '\0';
		}
		if (strncmp(line, "{\"return\"", 9) == 0)
			return 0;
		if (strncmp(line, "{\"error\"", 8) == 0)
			return -EIO;
	}
}

int
qmp_open(struct qmp *q, int fd, int timeout_ms)
{
	char line[4096];
	int rc;

	q->fd = fd;
	q->len = 0;
	rc = qmp_line(q, line, sizeof(line), clock_now_ms() + timeout_ms);
	if (rc < 0)
		return rc;
	if (strncmp(line, "{\"QMP\"", 6) != 0)
		return -EPROTO;
	return qmp_call(q, "{\"execute\":\"qmp_capabilities\"}", NULL, 0,
	    timeout_ms);
}

int
qmp_send_fd(struct qmp *q, const char *name, int fd, int timeout_ms)
{
	char cmd[256], ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *cm;
	char line[4096];
	long deadline = clock_now_ms() + timeout_ms;
	int n, rc;

	n = snprintf(cmd, sizeof(cmd), "{\"execute\":\"getfd\","
	    "\"arguments\":{\"fdname\":\"%s\"}}\n", name);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return -E2BIG;
	iov.iov_base = cmd;
	iov.iov_len = (size_t)n;
	memset(ctl, 0, sizeof(ctl));
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(q->fd, &msg, MSG_NOSIGNAL) != n)
		return errno ? -errno : -EIO;
	for (;;) {
		rc = qmp_line(q, line, sizeof(line), deadline);
		if (rc < 0)
			return rc;
		if (strstr(line, "\"event\"") != NULL)
			continue;
		return strncmp(line, "{\"return\"", 9) == 0 ? 0 : -EIO;
	}
}
