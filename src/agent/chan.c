/*
 * chan.c: the virtio-serial channel to the host, framed as in proto.h.
 *
 * The port is non-blocking: the agent must keep reading request bodies
 * while its own output waits for the host, or a host that writes the whole
 * body before reading would deadlock against it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define CHAN_SYSDIR "/sys/class/virtio-ports"
#define CHAN_WAIT_MS 30000	/* port discovery, slow under TCG */
#define CHAN_READ_MAX (PROTO_MAX_PAYLOAD + sizeof(struct proto_hdr))

/* Reads the one-line sysfs file path into s; returns 0 or -errno. */
static int
chan_read_line(const char *path, char *s, size_t n)
{
	ssize_t r;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -errno;
	r = read(fd, s, n - 1);
	close(fd);
	if (r < 0)
		return -EIO;
	s[r] = '\0';
	s[strcspn(s, "\n")] = '\0';
	return 0;
}

/*
 * Looks once for the port named PROTO_PORT_NAME; on success writes its
 * device path into dev and returns 0, else -ENOENT.
 */
static int
chan_find(char *dev, size_t n)
{
	char path[PATH_MAX], name[64];
	struct dirent *de;
	DIR *d;
	int rc = -ENOENT;

	if ((d = opendir(CHAN_SYSDIR)) == NULL)
		return -ENOENT;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/name", CHAN_SYSDIR,
		    de->d_name);
		if (chan_read_line(path, name, sizeof(name)) != 0)
			continue;
		if (strcmp(name, PROTO_PORT_NAME) != 0)
			continue;
		snprintf(dev, n, "/dev/%s", de->d_name);
		rc = 0;
		break;
	}
	closedir(d);
	return rc;
}

/*
 * Opens the host channel, waiting for the port (and its device node) to
 * appear: virtio_console learns of ports from the host after its probe, so
 * the port may come a little after insmod returned.  Returns 0 or -errno;
 * blocks up to CHAN_WAIT_MS.
 */
int
chan_open(struct chan *c)
{
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	char dev[PATH_MAX];
	int i, fd = -1;

	memset(c, 0, sizeof(*c));
	c->c_fd = -1;
	for (i = 0; i < CHAN_WAIT_MS / 10; i++) {
		if (chan_find(dev, sizeof(dev)) == 0) {
			fd = open(dev, O_RDWR | O_CLOEXEC | O_NONBLOCK);
			if (fd != -1)
				break;
		}
		nanosleep(&pause, NULL);
	}
	if (fd == -1) {
		log_warnx("port \"%s\" not found in %s", PROTO_PORT_NAME,
		    CHAN_SYSDIR);
		return -ENOENT;
	}
	c->c_fd = fd;
	return 0;
}

/*
 * Queues one message; chan_flush sends it.  Returns 0, -EMSGSIZE or
 * -ENOMEM.  Never blocks.
 */
int
chan_send(struct chan *c, uint32_t type, const void *p, size_t n)
{
	struct proto_hdr h;
	int rc;

	if (n > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	h.type = type;
	h.len = n;
	if ((rc = buf_append(&c->c_out, &h, sizeof(h))) != 0)
		return rc;
	return buf_append(&c->c_out, p, n);
}

/*
 * Writes as much of the output queue as the port takes now.  Returns 0
 * (the queue may still hold bytes) or -errno when the port is broken.
 */
int
chan_flush(struct chan *c)
{
	ssize_t w;

	while (c->c_out.b_len > 0) {
		w = write(c->c_fd, buf_head(&c->c_out), c->c_out.b_len);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && errno == EAGAIN)
			return 0;
		if (w == -1)
			return -errno;
		buf_consume(&c->c_out, w);
	}
	return 0;
}

/*
 * Reads what the port has now into the input queue.  Returns the number
 * of bytes read, 0 when nothing came (no data, or the host side is not
 * connected), or -errno.  Never blocks.
 */
int
chan_fill(struct chan *c)
{
	uint8_t tmp[CHAN_READ_MAX];
	ssize_t r;
	int rc;

	do
		r = read(c->c_fd, tmp, sizeof(tmp));
	while (r == -1 && errno == EINTR);
	if (r == -1)
		return errno == EAGAIN ? 0 : -errno;
	if ((rc = buf_append(&c->c_in, tmp, r)) != 0)
		return rc;
	return r;
}

/*
 * Peeks at the next whole message.  Returns 1 with m filled (valid until
 * chan_done), 0 when more bytes are needed, -EPROTO on a length no valid
 * message has.  The type is the caller's to judge.
 */
int
chan_next(struct chan *c, struct msg *m)
{
	struct proto_hdr h;

	if (c->c_in.b_len < sizeof(h))
		return 0;
	memcpy(&h, buf_head(&c->c_in), sizeof(h));
	if (h.len > PROTO_MAX_PAYLOAD)
		return -EPROTO;
	if (c->c_in.b_len - sizeof(h) < h.len)
		return 0;
	m->m_type = h.type;
	m->m_len = h.len;
	m->m_data = buf_head(&c->c_in) + sizeof(h);
	return 1;
}

/*
 * Like chan_next, for the first HELLO after a restore only: bytes sent
 * while the port was reconnecting may be lost, so skip anything that does
 * not start a well-formed HELLO instead of failing.  Returns 1 or 0.
 */
int
chan_find_hello(struct chan *c, struct msg *m)
{
	struct proto_hello hello;
	struct proto_hdr h;

	while (c->c_in.b_len >= sizeof(h)) {
		memcpy(&h, buf_head(&c->c_in), sizeof(h));
		if (h.type == PROTO_WARM &&
		    h.len == sizeof(struct proto_ready))
			return chan_next(c, m) == 1;
		if (h.type == PROTO_HELLO && h.len == sizeof(hello)) {
			if (chan_next(c, m) != 1)
				return 0;
			memcpy(&hello, m->m_data, sizeof(hello));
			if (hello.sec > 0 && hello.nsec >= 0 &&
			    hello.nsec < 1000000000)
				return 1;
		}
		buf_consume(&c->c_in, 1);
	}
	return 0;
}

/* Drops message m, returned by chan_next, from the input queue. */
void
chan_done(struct chan *c, const struct msg *m)
{
	buf_consume(&c->c_in, sizeof(struct proto_hdr) + m->m_len);
}
