/*
 * fcgiguard.c: a record-framing watch on what libfcgi reads, so that it
 * parses only the record sequence nginx sends, with no parameter length
 * past FCGIGUARD_PARAM_MAX; see fcgiguard.h.
 *
 * Each worker thread reads one connection at a time, so the framing state
 * is per thread, started afresh for every accepted connection.
 */
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "fcgiguard.h"

#define FCGIGUARD_HDR 8			/* FCGI_HEADER_LEN */
#define FCGIGUARD_BEGIN 1		/* FCGI_BEGIN_REQUEST */
#define FCGIGUARD_PARAMS 4		/* FCGI_PARAMS */
#define FCGIGUARD_STDIN 5		/* FCGI_STDIN */
#define FCGIGUARD_PARAM_MAX (1 << 20)	/* vmcgi refuses 16 KB anyway */

struct fcgiguard {
	int		fd;
	uint8_t		hdr[FCGIGUARD_HDR];
	size_t		hlen;	/* header bytes seen so far */
	size_t		content;	/* content bytes still to pass */
	size_t		padding;
	enum {
		FCGIGUARD_AT_BEGIN,
		FCGIGUARD_AT_PARAMS,
		FCGIGUARD_AT_STDIN,
	}		stage;
	unsigned	id;		/* of the BEGIN_REQUEST */
	int		params;	/* the content is its FCGI_PARAMS */
	uint8_t		lens[8]; /* a name-value pair's two lengths */
	size_t		nlens;
	uint64_t	pair;	/* name and value bytes still to pass */
	int		refused;
};

static __thread struct fcgiguard fcgiguard = { .fd = -1 };

void
fcgiguard_start(int fd)
{
	fcgiguard = (struct fcgiguard){ .fd = fd };
}

/* A length of 1 or 4 bytes at p (FastCGI 3.4); *n is its size. */
static uint32_t
fcgiguard_len(const uint8_t *p, size_t *n)
{
	*n = p[0] & 0x80 ? 4 : 1;
	if (*n == 1)
		return p[0];
	return (uint32_t)(p[0] & 0x7f) << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/*
 * One byte of PARAMS content: collect the two lengths of each pair and
 * pass its bytes.  -1 on a length libfcgi cannot be trusted with.
 */
static int
fcgiguard_param(struct fcgiguard *g, uint8_t b)
{
	size_t n1, n2;
	uint32_t name, value;

	if (g->pair > 0) {
		g->pair--;
		return 0;
	}
	g->lens[g->nlens++] = b;
	name = fcgiguard_len(g->lens, &n1);
	if (g->nlens < n1 + 1)
		return 0;
	value = fcgiguard_len(g->lens + n1, &n2);
	if (g->nlens < n1 + n2)
		return 0;
	g->nlens = 0;
	if (name > FCGIGUARD_PARAM_MAX || value > FCGIGUARD_PARAM_MAX)
		return -1;
	g->pair = (uint64_t)name + value;
	return 0;
}

/*
 * A complete record header: 0 if it comes where nginx would send it,
 * BEGIN_REQUEST, PARAMS up to an empty one, then STDIN, all of one id;
 * -1 otherwise.  libfcgi's own framing differs from the protocol's
 * around anything else (it ends the parameters early on a record of
 * another type and reads on from that header, and drops the padding of
 * the records after which it switches streams), so nothing else passes.
 */
static int
fcgiguard_header(struct fcgiguard *g)
{
	unsigned type = g->hdr[1], id = (unsigned)(g->hdr[2] << 8 | g->hdr[3]);

	if (g->hdr[0] != 1 || id == 0)
		return -1;
	g->content = (size_t)(g->hdr[4] << 8 | g->hdr[5]);
	g->padding = g->hdr[6];
	g->params = 0;
	if (g->stage == FCGIGUARD_AT_BEGIN && type == FCGIGUARD_BEGIN) {
		g->id = id;
		g->stage = FCGIGUARD_AT_PARAMS;
		g->padding = 0;
	} else if (g->stage == FCGIGUARD_AT_PARAMS &&
	    type == FCGIGUARD_PARAMS && id == g->id) {
		g->params = 1;
		if (g->content == 0) {
			g->stage = FCGIGUARD_AT_STDIN;
			g->padding = 0;
		}
	} else if (g->stage != FCGIGUARD_AT_STDIN ||
	    type != FCGIGUARD_STDIN || id != g->id)
		return -1;
	return 0;
}

/* Follow the framing over n new bytes; -1 at what must not pass. */
static int
fcgiguard_scan(struct fcgiguard *g, const uint8_t *p, size_t n)
{
	for (; n > 0; p++, n--) {
		if (g->content > 0) {
			g->content--;
			if (g->params && fcgiguard_param(g, *p) < 0)
				return -1;
			continue;
		}
		if (g->padding > 0) {
			g->padding--;
			continue;
		}
		g->hdr[g->hlen++] = *p;
		if (g->hlen < FCGIGUARD_HDR)
			continue;
		g->hlen = 0;
		if (fcgiguard_header(g) < 0)
			return -1;
	}
	return 0;
}

int
OS_Read(int fd, char *buf, size_t len)
{
	struct fcgiguard *g = &fcgiguard;
	ssize_t n;

	if (g->fd != fd)
		fcgiguard_start(fd);
	if (g->refused) {
		errno = EPROTO;
		return -1;
	}
	n = read(fd, buf, len);
	if (n > 0 && fcgiguard_scan(g, (const uint8_t *)buf, (size_t)n) < 0) {
		g->refused = 1;
		errno = EPROTO;
		return -1;
	}
	return (int)n;
}
