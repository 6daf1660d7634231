/*
 * chan.c: message framing on the host side of the agent channel.  The
 * guest is untrusted: a length over PROTO_MAX_PAYLOAD or an unknown type
 * is a protocol error, reported to the caller, who ends that VM.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chan.h"

#define CHAN_INCAP (sizeof(struct proto_hdr) + PROTO_MAX_PAYLOAD)

int
chan_init(struct chan *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->in = malloc(CHAN_INCAP);
	if (c->in == NULL)
		return -ENOMEM;
	return 0;
}

void
chan_free(struct chan *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

int
chan_queue(struct chan *c, uint32_t type, const void *p, size_t len)
{
	struct proto_hdr h = { .type = type, .len = (uint32_t)len };
	size_t need;
	uint8_t *n;

	if (len > PROTO_MAX_PAYLOAD)
		return -E2BIG;
	if (c->outoff > 0 && c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	need = c->outlen + sizeof(h) + len;
	if (need > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 4096;

		while (cap < need)
			cap *= 2;
		n = realloc(c->out, cap);
		if (n == NULL)
			return -ENOMEM;
		c->out = n;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, &h, sizeof(h));
	if (len > 0)
		memcpy(c->out + c->outlen + sizeof(h), p, len);
	c->outlen = need;
	return 0;
}

size_t
chan_pending(const struct chan *c)
{
	return c->outlen - c->outoff;
}

int
chan_flush(struct chan *c)
{
	ssize_t n;

	while (c->outoff < c->outlen) {
		n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0)
			return -errno;
		c->outoff += (size_t)n;
	}
	return 0;
}

int
chan_fill(struct chan *c)
{
	ssize_t n;

	if (c->consumed > 0) {
		memmove(c->in, c->in + c->consumed, c->inlen - c->consumed);
		c->inlen -= c->consumed;
		c->consumed = 0;
	}
	while (c->inlen < CHAN_INCAP) {
		n = read(c->fd, c->in + c->inlen, CHAN_INCAP - c->inlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0)
			return -errno;
		if (n == 0) {
			c->eof = 1;
			return -EPIPE;
		}
		c->inlen += (size_t)n;
	}
	return 0;
}

int
chan_next(struct chan *c, struct proto_hdr *hdr, const uint8_t **payload)
{
	size_t avail;

	if (c->consumed > 0) {
		memmove(c->in, c->in + c->consumed, c->inlen - c->consumed);
		c->inlen -= c->consumed;
		c->consumed = 0;
	}
	avail = c->inlen;
	if (avail < sizeof(*hdr))
		return 0;
	memcpy(hdr, c->in, sizeof(*hdr));
	if (hdr->len > PROTO_MAX_PAYLOAD || hdr->type < PROTO_HELLO ||
	    hdr->type > PROTO_TYPE_MAX)
		return -EPROTO;
	if (avail < sizeof(*hdr) + hdr->len)
		return 0;
	*payload = c->in + sizeof(*hdr);
	c->consumed = sizeof(*hdr) + hdr->len;
	return 1;
}

size_t
chan_unread(const struct chan *c, const uint8_t **p)
{
	*p = c->in + c->consumed;
	return c->inlen - c->consumed;
}

int
chan_preload(struct chan *c, const uint8_t *p, size_t n)
{
	if (n > CHAN_INCAP - c->inlen)
		return -E2BIG;
	memcpy(c->in + c->inlen, p, n);
	c->inlen += n;
	return 0;
}
