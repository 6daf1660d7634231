/*
 * test_codecache.c: a handler's compiled script is given back only for
 * the very same script bytes, only to that handler, and within limits.
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
	CHECK(put(cc, 1, big, "C") == -EFBIG, "script over %d bytes refused",
	    CODECACHE_MAX_SCRIPT);
	big[CODECACHE_MAX_SCRIPT] = '\0';
	CHECK(put(cc, 1, big, "CB") == 0 && strcmp(got(cc, 1, big), "CB") ==
	    0, "script of %d bytes kept", CODECACHE_MAX_SCRIPT);
	codecache_free(cc);

	/* Full scripts in every slot: the total stops them, not memory. */
	cc = codecache_new(300);
	{
		size_t h = 0;

		while (h < 300 && put(cc, h, big, "C") == 0)
			h++;
		CHECK(h == CODECACHE_MAX_TOTAL / (CODECACHE_MAX_SCRIPT + 1),
		    "%zu full slots kept, then -EFBIG", h);
		CHECK(strcmp(got(cc, 0, big), "C") == 0 &&
		    strcmp(got(cc, h, big), "") == 0,
		    "what was kept is still given");
	}
	free(big);
	codecache_free(cc);
	return check_done();
}
