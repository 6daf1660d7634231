/*
 * buf.c: growable byte queues for the agent's channel and pipes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/*
 * Appends n bytes of p to b, moving the unconsumed bytes to the front or
 * growing the storage as needed.  Returns 0, or -ENOMEM with b unchanged.
 * Never blocks.
 */
int
buf_append(struct buf *b, const void *p, size_t n)
{
	size_t need, cap;
	uint8_t *d;

	if (n == 0)
		return 0;
	if (b->b_off > 0 && b->b_off + b->b_len + n > b->b_cap) {
		memmove(b->b_data, buf_head(b), b->b_len);
		b->b_off = 0;
	}
	need = b->b_len + n;
	if (need > b->b_cap) {
		cap = b->b_cap ? b->b_cap : 4096;
		while (cap < need)
			cap *= 2;
		if ((d = realloc(b->b_data, cap)) == NULL)
			return -ENOMEM;
		b->b_data = d;
		b->b_cap = cap;
	}
	memcpy(b->b_data + b->b_off + b->b_len, p, n);
	b->b_len += n;
	return 0;
}

/* Drops n bytes (at most all of them) from the head of b. */
void
buf_consume(struct buf *b, size_t n)
{
	if (n > b->b_len)
		n = b->b_len;
	b->b_off += n;
	b->b_len -= n;
	if (b->b_len == 0)
		b->b_off = 0;
}

void
buf_free(struct buf *b)
{
	free(b->b_data);
	memset(b, 0, sizeof(*b));
}
