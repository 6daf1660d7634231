/*
 * fuzz_route.c: route_match with a fixed configuration and the fuzzer's
 * bytes as the path.  Beyond memory errors, a match must be exactly
 * PREFIX/TENANT/HANDLER for the handler it returned.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "route.h"

#define FUZZ_CONFIG "tests/fuzz/fuzz.ini"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct config fuzz_cfg;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[512];

	(void)argc, (void)argv;
	if (config_load(FUZZ_CONFIG, &fuzz_cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_route: %s (run from the top directory)\n",
		    err);
		exit(1);
	}
	return 0;
}

static void
fuzz_check_match(const char *path, const struct handler *h)
{
	char want[ROUTE_PATH_MAX + 2];

	if (h == NULL)
		abort();
	snprintf(want, sizeof(want), "%s/%s/%s", fuzz_cfg.prefix,
	    h->tenant->name, h->name);
	if (strcmp(path, want) != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct handler *h = NULL;
	char *path;

	path = malloc(size + 1);
	if (path == NULL)
		return 0;
	memcpy(path, data, size);
	path[size] = '\0';
	switch (route_match(&fuzz_cfg, path, &h)) {
	case ROUTE_OK:
		fuzz_check_match(path, h);
		break;
	case ROUTE_BAD_REQUEST:
	case ROUTE_NOT_FOUND:
		break;
	default:
		abort();
	}
	free(path);
	return 0;
}
