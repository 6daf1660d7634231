/*
 * codecache.c: one slot per handler, holding the script a guest compiled
 * and the code it sent back.  A slot is matched on the whole script, not
 * a hash of it: the guest checks the code against the script's hash too,
 * but that hash (CPython's, with a fixed key) is no proof against a
 * tenant, and a slot only ever serves its own handler anyway.
 *
 * Workers of the FastCGI process share the cache under one mutex; a get
 * copies out, so no worker reads a slot another replaces.  Past the total
 * limit, the slots used least recently make room, so that a handler that
 * changed its script, or one called for the first time, is never shut
 * out by handlers nobody calls any more.  Eviction only costs speed: an
 * evicted handler's next event compiles again.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codecache.h"

struct slot {
	char		*script;
	size_t		 slen;
	uint8_t		*code;
	size_t		 clen;
	uint64_t	 used;	/* clock at the last get or put */
};

struct codecache {
	pthread_mutex_t	 lock;
	struct slot	*slots;
	size_t		 nslots;
	size_t		 total;	/* bytes held, scripts and code */
	uint64_t	 clock;	/* ticks once per get or put */
};

struct codecache *
codecache_new(size_t nhandlers)
{
	struct codecache *cc;

	if ((cc = calloc(1, sizeof(*cc))) == NULL)
		return NULL;
	if ((cc->slots = calloc(nhandlers ? nhandlers : 1,
	    sizeof(*cc->slots))) == NULL) {
		free(cc);
		return NULL;
	}
	cc->nslots = nhandlers;
	pthread_mutex_init(&cc->lock, NULL);
	return cc;
}

static void
slot_clear(struct codecache *cc, struct slot *s)
{
	cc->total -= s->slen + s->clen;
	free(s->script);
	free(s->code);
	memset(s, 0, sizeof(*s));
}

void
codecache_free(struct codecache *cc)
{
	size_t i;

	if (cc == NULL)
		return;
	for (i = 0; i < cc->nslots; i++)
		slot_clear(cc, &cc->slots[i]);
	pthread_mutex_destroy(&cc->lock);
	free(cc->slots);
	free(cc);
}

size_t
codecache_get(struct codecache *cc, size_t h, const char *script,
    size_t slen, uint8_t **code)
{
	struct slot *s;
	size_t n = 0;

	*code = NULL;
	if (h >= cc->nslots)
		return 0;
	pthread_mutex_lock(&cc->lock);
	s = &cc->slots[h];
	if (s->code != NULL && s->slen == slen &&
	    memcmp(s->script, script, slen) == 0 &&
	    (*code = malloc(s->clen)) != NULL) {
		memcpy(*code, s->code, s->clen);
		n = s->clen;
		s->used = ++cc->clock;
	}
	pthread_mutex_unlock(&cc->lock);
	return n;
}

/*
 * Empties the slots used least recently, never keep, until need more
 * bytes fit under the total.  Returns 0, or -EFBIG if they cannot.
 */
static int
slot_make_room(struct codecache *cc, size_t keep, size_t need)
{
	struct slot *old;
	size_t i;

	while (cc->total + need > CODECACHE_MAX_TOTAL) {
		old = NULL;
		for (i = 0; i < cc->nslots; i++) {
			if (i != keep && cc->slots[i].code != NULL &&
			    (old == NULL || cc->slots[i].used < old->used))
				old = &cc->slots[i];
		}
		if (old == NULL)
			return -EFBIG;
		slot_clear(cc, old);
	}
	return 0;
}

int
codecache_put(struct codecache *cc, size_t h, const char *script,
    size_t slen, const uint8_t *code, size_t clen)
{
	char *ns = NULL;
	uint8_t *nc = NULL;
	struct slot *s;
	int rc = 0;

	if (h >= cc->nslots)
		return -EFBIG;
	if (slen > CODECACHE_MAX_SCRIPT || clen == 0) {
		pthread_mutex_lock(&cc->lock);
		slot_clear(cc, &cc->slots[h]);
		pthread_mutex_unlock(&cc->lock);
		return -EFBIG;
	}
	if ((ns = malloc(slen ? slen : 1)) == NULL ||
	    (nc = malloc(clen)) == NULL) {
		free(ns);
		return -ENOMEM;
	}
	memcpy(ns, script, slen);
	memcpy(nc, code, clen);
	pthread_mutex_lock(&cc->lock);
	s = &cc->slots[h];
	/* What h held is of no use for another script either way. */
	slot_clear(cc, s);
	if ((rc = slot_make_room(cc, h, slen + clen)) == 0) {
		s->script = ns;
		s->slen = slen;
		s->code = nc;
		s->clen = clen;
		s->used = ++cc->clock;
		cc->total += slen + clen;
		ns = NULL;
		nc = NULL;
	}
	pthread_mutex_unlock(&cc->lock);
	free(ns);
	free(nc);
	return rc;
}
