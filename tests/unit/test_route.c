/*
 * test_route.c: which paths reach which handler, and which never reach
 * anything.
 */
#include <string.h>

#include "check.h"
#include "config.h"
#include "route.h"

static struct config cfg;

static void
expect(const char *path, enum route_result want, const char *handler)
{
	struct handler *h = NULL;
	enum route_result got;

	got = route_match(&cfg, path, &h);
	CHECK(got == want && (handler == NULL ||
	    (h != NULL && strcmp(h->name, handler) == 0)),
	    "route \"%s\" -> %d (want %d)", path ? path : "(null)", got, want);
}

int
main(void)
{
	char err[512], longpath[2048];

	if (config_load("tests/unit/configs/good.ini", &cfg, err,
	    sizeof(err)) < 0) {
		printf("Bail out! %s\n", err);
		return 1;
	}
	expect("/hooks/acme/checkout", ROUTE_OK, "checkout");
	expect("/hooks/octo/push", ROUTE_OK, "push");
	expect("/hooks/acme/push", ROUTE_NOT_FOUND, NULL);
	expect("/hooks/nobody/checkout", ROUTE_NOT_FOUND, NULL);
	expect("/hooks/acme", ROUTE_NOT_FOUND, NULL);
	expect("/hooks/acme/", ROUTE_NOT_FOUND, NULL);
	expect("/hooks/acme/checkout/", ROUTE_NOT_FOUND, NULL);
	expect("/hooks/acme/checkout/x", ROUTE_NOT_FOUND, NULL);
	expect("/hooks//acme/checkout", ROUTE_NOT_FOUND, NULL);
	expect("/hooksx/acme/checkout", ROUTE_NOT_FOUND, NULL);
	expect("/other/acme/checkout", ROUTE_NOT_FOUND, NULL);
	expect("/hooks/ACME/checkout", ROUTE_NOT_FOUND, NULL);
	expect("/hooks/acme/../octo/push", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/acme/..", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/./acme/checkout", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/acme%2fcheckout", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/acme/check out", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/acme/check\tout", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/acme/check\\out", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/acme/ch\xc3\xa9" "ck", ROUTE_BAD_REQUEST, NULL);
	expect("/hooks/acme/check\x7f", ROUTE_BAD_REQUEST, NULL);
	expect("hooks/acme/checkout", ROUTE_BAD_REQUEST, NULL);
	expect("", ROUTE_BAD_REQUEST, NULL);
	expect(NULL, ROUTE_BAD_REQUEST, NULL);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	expect(longpath, ROUTE_BAD_REQUEST, NULL);
	config_free(&cfg);
	return check_done();
}
