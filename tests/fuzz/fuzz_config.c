/*
 * fuzz_config.c: config_load on a file holding the fuzzer's bytes, then
 * config_free; LeakSanitizer sees anything either leaves behind.
 *
 * The file sits in a scratch directory holding what the seeds name
 * (guest/vmlinuz, guest/initrd.img, tenants/acme, tenants/octo), so inputs
 * get past the existence checks into the cross-section validation.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[] = "/tmp/vmcgi-fuzz-config.XXXXXX";
static char fuzz_path[sizeof(fuzz_dir) + 16];

static void
fuzz_make(const char *rel, int dir)
{
	char p[sizeof(fuzz_dir) + 64];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", fuzz_dir, rel);
	if (dir ? mkdir(p, 0755) < 0 :
	    (fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) < 0 ||
	    close(fd) < 0) {
		fprintf(stderr, "fuzz_config: create \"%s\": %s\n", p,
		    strerror(errno));
		exit(1);
	}
}

static void
fuzz_cleanup(void)
{
	static const char *const files[] = { "fuzz.ini", "guest/vmlinuz",
	    "guest/initrd.img", "tenants/acme", "tenants/octo", "tenants",
	    "guest", "" };
	char p[sizeof(fuzz_dir) + 64];
	size_t i;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", fuzz_dir, files[i]);
		remove(p);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	if (mkdtemp(fuzz_dir) == NULL) {
		perror("fuzz_config: mkdtemp");
		exit(1);
	}
	atexit(fuzz_cleanup);
	fuzz_make("guest", 1);
	fuzz_make("guest/vmlinuz", 0);
	fuzz_make("guest/initrd.img", 0);
	fuzz_make("tenants", 1);
	fuzz_make("tenants/acme", 1);
	fuzz_make("tenants/octo", 1);
	snprintf(fuzz_path, sizeof(fuzz_path), "%s/fuzz.ini", fuzz_dir);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg;
	char err[512];
	FILE *f;

	f = fopen(fuzz_path, "we");
	if (f == NULL || (size > 0 && fwrite(data, size, 1, f) != 1) ||
	    fclose(f) != 0) {
		perror("fuzz_config: write fuzz.ini");
		abort();
	}
	if (config_load(fuzz_path, &cfg, err, sizeof(err)) == 0)
		config_free(&cfg);
	else if (memchr(err, '\0', sizeof(err)) == NULL)
		abort();	/* the message must be a string */
	return 0;
}
