/*
 * test_codecache.c: a handler's compiled script is given back only for
 * the very same script bytes, only to that handler, and within limits;
 * past the total, the entries used least recently make room.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codecache.h"

/* The code kept for handler h and script s as a string, or "". */
static char *
got(struct codecache *cc, size_t h, const char *s)
{
	static char out[64];
	uint8_t *code;
	size_t n;

	n = codecache_get(cc, h, s, strlen(s), &code);
	out[0] = '\0';
	if (n > 0 && n < sizeof(out)) {
		memcpy(out, code, n);
		out[n] = '\0';
	}
	free(code);
	return out;
}

static int
put(struct codecache *cc, size_t h, const char *s, const char *code)
{
	return codecache_put(cc, h, s, strlen(s), (const uint8_t *)code,
	    strlen(code));
}

int
main(void)
{
	struct codecache *cc = codecache_new(3);
	char *big;

	CHECK(cc != NULL, "codecache_new(3)");
	CHECK(strcmp(got(cc, 0, "print(1)"), "") == 0, "empty at first");
	CHECK(put(cc, 0, "print(1)", "C1") == 0, "put handler 0");
	CHECK(strcmp(got(cc, 0, "print(1)"), "C1") == 0, "same bytes: given");
	CHECK(strcmp(got(cc, 0, "print(2)"), "") == 0,
	    "same length, other bytes: not given");
	CHECK(strcmp(got(cc, 0, "print(1) "), "") == 0,
	    "one byte more: not given");
	CHECK(strcmp(got(cc, 1, "print(1)"), "") == 0,
	    "another handler with the same script: not given");
	CHECK(put(cc, 0, "print(2)", "C2") == 0 &&
	    strcmp(got(cc, 0, "print(2)"), "C2") == 0 &&
	    strcmp(got(cc, 0, "print(1)"), "") == 0,
	    "a new script replaces the old one");
	CHECK(put(cc, 2, "", "C0") == 0 && strcmp(got(cc, 2, ""), "C0") == 0,
	    "an empty script");
	CHECK(put(cc, 3, "x", "C") == -EFBIG && strcmp(got(cc, 3, "x"), "")
	    == 0, "handler out of range refused");
	CHECK(put(cc, 1, "x", "") == -EFBIG, "empty code refused");
	big = malloc(CODECACHE_MAX_SCRIPT + 2);
	memset(big, 'a', CODECACHE_MAX_SCRIPT + 1);
	big[CODECACHE_MAX_SCRIPT + 1] = '\0';
	CHECK(put(cc, 1, "x", "C1") == 0 && put(cc, 1, big, "C") == -EFBIG &&
	    strcmp(got(cc, 1, "x"), "") == 0,
	    "script over %d bytes refused, the handler's old entry dropped",
	    CODECACHE_MAX_SCRIPT);
	big[CODECACHE_MAX_SCRIPT] = '\0';
	CHECK(put(cc, 1, big, "CB") == 0 && strcmp(got(cc, 1, big), "CB") ==
	    0, "script of %d bytes kept", CODECACHE_MAX_SCRIPT);
	codecache_free(cc);

	/*
	 * Full scripts in every slot: the total holds fit of them.  Past
	 * it, the least recently used go, and a get counts as a use.
	 */
	cc = codecache_new(300);
	{
		size_t fit = CODECACHE_MAX_TOTAL / (CODECACHE_MAX_SCRIPT + 1);
		size_t h, held = 0;
		int ok = 1;

		for (h = 0; h < fit; h++)
			ok = ok && put(cc, h, big, "C") == 0;
		CHECK(ok && strcmp(got(cc, 0, big), "C") == 0,
		    "%zu full slots kept", fit);
		/* Slot 0 was just used: slot 1 is the oldest now. */
		CHECK(put(cc, fit, big, "C") == 0 &&
		    strcmp(got(cc, fit, big), "C") == 0 &&
		    strcmp(got(cc, 1, big), "") == 0 &&
		    strcmp(got(cc, 0, big), "C") == 0,
		    "one more: the least recently used (1) made room, not 0");
		for (h = fit + 1; h < 300; h++)
			ok = ok && put(cc, h, big, "C") == 0;
		for (h = 0; h < 300; h++)
			held += got(cc, h, big)[0] != '\0';
		CHECK(ok && held == fit && strcmp(got(cc, 299, big), "C") == 0,
		    "300 puts all kept in turn, %zu held at the end", held);
	}
	free(big);
	codecache_free(cc);
	return check_done();
}
