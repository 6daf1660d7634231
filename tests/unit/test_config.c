/*
 * test_config.c: loading a good configuration, and refusing bad ones with
 * the file, section and key named.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static void
test_good(void)
{
	struct config c;
	struct handler *h;
	char err[512], cwd[4096];

	CHECK(config_load("tests/unit/configs/good.ini", &c, err,
	    sizeof(err)) == 0, "good.ini loads");
	CHECK(c.workers == 3 && c.listen_mode == 0600 &&
	    c.stderr_limit == 2048 && c.log_level == LOG_LVL_DEBUG,
	    "global values");
	/* Absolute, whatever the working directory: QEMU runs in "/". */
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL &&
	    strncmp(c.state_dir, cwd, strlen(cwd)) == 0 &&
	    strcmp(c.state_dir + strlen(cwd), "/tests/unit/configs/state") ==
	    0, "relative state_dir resolved against the file: %s",
	    c.state_dir);
	CHECK(c.ntmpls == 1 && c.tmpls[0].memory == (128 << 20) &&
	    c.tmpls[0].accel == ACCEL_TCG &&
	    c.tmpls[0].boot_timeout_ms == 90000 &&
	    c.tmpls[0].pool_size == 3 && c.tmpls[0].pool_max_age_ms == 30000,
	    "template values");
	h = config_handler(&c, "acme", "checkout");
	CHECK(h != NULL && h->timeout_ms == 1500 && h->max_body == 262144 &&
	    strcmp(h->content_type, "application/json") == 0 &&
	    h->nmethods == 2 && strcmp(h->allow, "POST, PUT") == 0 &&
	    !h->cgi_output && h->tmpl == &c.tmpls[0], "acme/checkout values");
	h = config_handler(&c, "octo", "push");
	CHECK(h != NULL && h->cgi_output && h->timeout_ms == 10000 &&
	    h->max_body == (1 << 20) && strcmp(h->allow, "POST") == 0 &&
	    strcmp(h->tenant->dir, "/tmp") == 0,
	    "octo/push defaults");
	CHECK(config_handler(&c, "octo", "checkout") == NULL,
	    "handlers belong to their tenant");
	CHECK(c.user != NULL && strcmp(c.user, "nobody") == 0 &&
	    c.user_uid != 0, "user default: nobody");
	CHECK(c.code_cache == 1, "code_cache default: yes");
	CHECK(c.vm_uid_first == 0x70000000 && c.vm_uid_last == 0x7000ffff,
	    "vm_uids default: %lu-%lu", (unsigned long)c.vm_uid_first,
	    (unsigned long)c.vm_uid_last);
	config_free(&c);
}

/*
 * A directory with the files BASE names (k, i, d/), where each bad
 * configuration is written, so that only the mistake it holds is wrong.
 */
static char unit_dir[] = "/tmp/vmcgi-unit-XXXXXX";

static void
unit_dir_make(void)
{
	char p[64];
	FILE *f;

	if (mkdtemp(unit_dir) == NULL)
		abort();
	snprintf(p, sizeof(p), "%s/k", unit_dir);
	f = fopen(p, "w");
	if (f != NULL)
		fclose(f);
	snprintf(p, sizeof(p), "%s/i", unit_dir);
	f = fopen(p, "w");
	if (f != NULL)
		fclose(f);
	snprintf(p, sizeof(p), "%s/d", unit_dir);
	mkdir(p, 0700);
}

static void
unit_dir_remove(void)
{
	char p[64];

	snprintf(p, sizeof(p), "%s/k", unit_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/i", unit_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/d", unit_dir);
	rmdir(p);
	rmdir(unit_dir);
}

/* Write text to a file, load it, and expect an error containing want. */
static void
expect_error(const char *text, const char *want)
{
	char path[80], err[512] = "";
	struct config c;
	FILE *f;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/cfg-XXXXXX", unit_dir);
	fd = mkstemp(path);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (f == NULL) {
		CHECK(0, "mkstemp");
		return;
	}
	fputs(text, f);
	fclose(f);
	rc = config_load(path, &c, err, sizeof(err));
	unlink(path);
	CHECK(rc < 0 && strstr(err, want) != NULL && strstr(err, path),
	    "refused with \"%s\": got \"%s\"", want, err);
	if (rc == 0)
		config_free(&c);
}

#define BASE "[template t]\nkernel = k\ninitrd = i\n[tenant a]\ndir = d\n"

static void
test_bad(void)
{
	expect_error(BASE "[handler a/h]\nscript = s\ntimout = 5s\n",
	    "[handler a/h] timout: unknown key");
	expect_error(BASE "[handler a/h]\nscript = s\ntimeout = soon\n",
	    "[handler a/h] timeout: \"soon\"");
	expect_error(BASE "[handler a/h]\nscript = s\nmax_body = 5X\n",
	    "[handler a/h] max_body");
	expect_error(BASE "[handler a/h]\nscript = ../b/s\n",
	    "[handler a/h] script");
	expect_error(BASE "[handler a/h]\nscript = /etc/passwd\n",
	    "[handler a/h] script");
	expect_error(BASE "[handler a/h]\nscript = s\noutput = html\n",
	    "[handler a/h] output");
	expect_error(BASE "[handler b/h]\nscript = s\n",
	    "[handler b/h]: no [tenant b]");
	expect_error(BASE "[handler a/h]\nscript = s\ntemplate = x\n",
	    "[handler a/h] template: no [template x]");
	expect_error(BASE "[handler a/h]\ntimeout = 5s\n",
	    "[handler a/h] script: missing");
	expect_error(BASE "[handler a/h]\nscript = s\n[handler a/h]\n",
	    "defined twice");
	expect_error(BASE "[handler a/h]\nscript = s\nScript = t\n",
	    "\"handler a/h:script\" defined twice");
	expect_error(BASE "[handler a/h]\nscript = s\n[frobnicate]\nx = 1\n",
	    "[frobnicate]: unknown section");
	expect_error(BASE "[handler a.h]\nscript = s\n",
	    "is not TENANT/NAME");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\nworkers = 0\n",
	    "[vmcgi] workers");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "listen_mode = 9\n", "[vmcgi] listen_mode");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\nlisten = nope\n",
	    "[vmcgi] listen");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "listen_owner = no-such-user-here\n", "no such user");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\nprefix = x\n",
	    "[vmcgi] prefix");
	expect_error("[template t]\nkernel = k\n[tenant a]\ndir = d\n"
	    "[handler a/h]\nscript = s\n", "[template t] initrd: missing");
	expect_error("[template t]\nkernel = k\ninitrd = i\nmemory = 1M\n",
	    "[template t] memory");
	expect_error("[template t]\nkernel = k\ninitrd = i\naccel = hvf\n",
	    "[template t] accel");
	expect_error(BASE, "no [handler TENANT/NAME] section");
	expect_error("[template t]\nkernel = nope\ninitrd = i\n",
	    "[template t] kernel: \"");
	expect_error("[template t]\nkernel = d\ninitrd = i\n",
	    "is not a regular file");
	expect_error(BASE "[tenant b]\ndir = k\n", "is not a directory");
	expect_error("stray = 1\n" BASE, "line 1: a key before any");
	expect_error(BASE "[tenant a:b]\ndir = d\n", "cannot hold ':'");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "listen = 127.0.0.1:99999\n", "[vmcgi] listen");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "listen = :80\n", "[vmcgi] listen");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "prefix = /ho oks\n", "[vmcgi] prefix");
	expect_error("[template t]\nkernel = k\ninitrd = i\npool_size = 65\n",
	    "[template t] pool_size");
	expect_error("[template t]\nkernel = k\ninitrd = i\n"
	    "pool_max_age = 10ms\n", "[template t] pool_max_age");
	expect_error(BASE "[tenant Bad!]\ndir = d\n", "not a valid name");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = 0-100\n", "not a range of uids");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = 200-100\n", "not a range of uids");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = 100000-3000000000\n", "not a range of uids");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = 100000\n", "is not FIRST-LAST");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = 100000-x\n", "is not FIRST-LAST");
	/* Each live VM its own: two cannot hold a pool of 3 and more. */
	expect_error("[template t]\nkernel = k\ninitrd = i\npool_size = 3\n"
	    "[tenant a]\ndir = d\n[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = 1879048192-1879048193\n", "cannot give each live VM");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "user = root\n", "must hold no privilege");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "user = 0\n", "must hold no privilege");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = -5-10\n", "is not FIRST-LAST");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "user = no-such-user-here\n", "no user \"no-such-user-here\"");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "workers = 257\n", "[vmcgi] workers");
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "code_cache = on\n", "[vmcgi] code_cache: \"on\" is not yes or no");
	/* root's group and account are in 0-10: vmcgi refuses to share. */
	expect_error(BASE "[handler a/h]\nscript = s\n[vmcgi]\n"
	    "vm_uids = 1-100000\n", "of user");
}

static void
test_values(void)
{
	uint64_t n;
	unsigned ms;

	CHECK(config_parse_size("1K", &n) == 0 && n == 1024, "1K");
	CHECK(config_parse_size("3m", &n) == 0 && n == 3 << 20, "3m");
	CHECK(config_parse_size("0", &n) == 0 && n == 0, "0");
	CHECK(config_parse_size("-1", &n) < 0, "-1 refused");
	CHECK(config_parse_size("1T", &n) < 0, "1T refused");
	CHECK(config_parse_size("99999999999999999999", &n) < 0,
	    "overflow refused");
	CHECK(config_parse_duration("250ms", &ms) == 0 && ms == 250, "250ms");
	CHECK(config_parse_duration("2m", &ms) == 0 && ms == 120000, "2m");
	CHECK(config_parse_duration("7", &ms) == 0 && ms == 7000, "7");
	CHECK(config_parse_duration("7h", &ms) < 0, "7h refused");
	CHECK(config_parse_duration("", &ms) < 0, "empty refused");
	CHECK(config_name_valid("acme-1_x", 8), "name ok");
	CHECK(!config_name_valid("-acme", 5), "leading dash refused");
	CHECK(!config_name_valid("a.b", 3), "dot refused");
}

int
main(void)
{
	unit_dir_make();
	test_good();
	test_bad();
	unit_dir_remove();
	test_values();
	return check_done();
}
