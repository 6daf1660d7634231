/*
 * chan.h: the host end of the agent channel: framing of proto.h messages
 * over a non-blocking stream socket, with a bounded input buffer and an
 * output queue that never blocks the caller.
 */
#ifndef VMCGI_CHAN_H
#define VMCGI_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct chan {
	int		 fd;
	uint8_t		*in;	/* sizeof(hdr) + PROTO_MAX_PAYLOAD */
	size_t		 inlen;
	size_t		 consumed;	/* bytes of the last message */
	uint8_t		*out;
	size_t		 outlen;
	size_t		 outoff;
	size_t		 outcap;
	int		 eof;
};

/* 0 or -ENOMEM.  Takes ownership of fd, which must be non-blocking. */
int	chan_init(struct chan *c, int fd);
void	chan_free(struct chan *c);

/* Append one message to the output queue; 0 or -ENOMEM / -E2BIG. */
int	chan_queue(struct chan *c, uint32_t type, const void *p, size_t len);

/* Bytes still queued for the guest. */
size_t	chan_pending(const struct chan *c);

/* Write what the socket takes now; 0 or -errno. */
int	chan_flush(struct chan *c);

/* Read what the socket has now; 0, or -EPIPE at end of stream, -errno. */
int	chan_fill(struct chan *c);

/*
 * The next complete message, if any: returns 1 and sets *hdr and *payload
 * (valid until the next call), 0 if none is complete yet, -EPROTO on a
 * header that breaks proto.h's limits.
 */
int	chan_next(struct chan *c, struct proto_hdr *hdr,
	    const uint8_t **payload);

/*
 * Handing a channel to another process (broker.c): the bytes read past the
 * last message returned, which the other side preloads.  The output queue
 * must be empty by then.
 */
size_t	chan_unread(const struct chan *c, const uint8_t **p);
int	chan_preload(struct chan *c, const uint8_t *p, size_t n);
#define CHAN_MAX_UNREAD (sizeof(struct proto_hdr) + PROTO_MAX_PAYLOAD)

#endif /* VMCGI_CHAN_H */
