/*
 * test_fcgiguard.c: FastCGI byte streams that once reached libfcgi's
 * management record parser, fed to FCGX_Accept_r as worker.c does.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "check.h"
#include "fcgiguard.h"

/* Found by tests/fuzz/fuzz_fcgi: GET_VALUES whose lengths overflow. */
static const uint8_t get_values_overflow[] = {
	0x01, 0x09, 0x00, 0x00, 0x00, 0xd2, 0xd2, 0xd2,
	0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xd2,
	0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0x00,
	0x30, 0x60, 0x00, 0x00, 0x00,
};

/* BEGIN_REQUEST; PARAMS with SCRIPT_NAME=/h/a/b; end of PARAMS. */
static const uint8_t begin_params[] = {
	1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0,
	1, 4, 0, 1, 0, 19, 5, 0,
	11, 6, 'S', 'C', 'R', 'I', 'P', 'T', '_', 'N', 'A', 'M', 'E',
	'/', 'h', '/', 'a', '/', 'b', 0, 0, 0, 0, 0,
	1, 4, 0, 1, 0, 0, 0, 0,
};

/* Found by tests/fuzz/fuzz_fcgi: a PARAMS pair whose lengths overflow. */
static const uint8_t params_overflow[] = {
	1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0,
	1, 4, 0, 1, 0, 16, 0, 0,
	0xf5, 0xfa, 0xac, 0xba, 0xad, 0xa9, 0xba, 0xaf,
	'S', 'C', 'R', 'I', 'P', 'T', '_', 'N',
	1, 4, 0, 1, 0, 0, 0, 0,
};

/* An unknown management record (libfcgi leaks on it), then STDIN. */
static const uint8_t mgmt_then_stdin[] = {
	1, 11, 0, 0, 0, 0, 0, 0,
	1, 5, 0, 1, 0, 2, 6, 0, 'h', 'i', 0, 0, 0, 0, 0, 0,
	1, 5, 0, 1, 0, 0, 0, 0,
};

static const uint8_t stdin_end[] = {
	1, 5, 0, 1, 0, 2, 6, 0, 'h', 'i', 0, 0, 0, 0, 0, 0,
	1, 5, 0, 1, 0, 0, 0, 0,
};

/*
 * Accept a request made of a and b on a socketpair; the body read into
 * body.  Returns what FCGX_Accept_r returned.
 */
static int
accept_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
    char *body, size_t bodylen, char *script, size_t scriptlen)
{
	FCGX_Request req;
	const char *v;
	int sv[2], rc, n;

	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
	if (write(sv[0], a, alen) != (ssize_t)alen ||
	    (blen > 0 && write(sv[0], b, blen) != (ssize_t)blen))
		return -1000;
	shutdown(sv[0], SHUT_WR);
	FCGX_InitRequest(&req, -1, 0);
	fcgiguard_start(sv[1]);
	req.ipcFd = sv[1];
	req.keepConnection = 1;
	req.detached = 1;
	rc = FCGX_Accept_r(&req);
	body[0] = script[0] = '\0';
	if (rc == 0) {
		v = FCGX_GetParam("SCRIPT_NAME", req.envp);
		snprintf(script, scriptlen, "%s", v ? v : "");
		n = FCGX_GetStr(body, (int)bodylen - 1, req.in);
		body[n > 0 ? n : 0] = '\0';
		FCGX_Finish_r(&req);
	}
	if (req.ipcFd >= 0)
		close(req.ipcFd);
	close(sv[0]);
	return rc;
}

/* A recorded stream that must be refused; found by fuzz_fcgi. */
static void
expect_refused(const char *name)
{
	char file[256], in[65536], body[64], script[64];
	size_t len = 0;
	FILE *f;
	int rc = -1000;

	snprintf(file, sizeof(file), "tests/fuzz/corpus/fcgi/%s", name);
	if ((f = fopen(file, "re")) != NULL) {
		len = fread(in, 1, sizeof(in), f);
		fclose(f);
		rc = accept_bytes((const uint8_t *)in, len, NULL, 0, body,
		    sizeof(body), script, sizeof(script));
	}
	CHECK(len > 0 && rc < 0 && rc != -1000, "%s refused (%d)", name, rc);
}

int
main(void)
{
	char body[64], script[64];
	int rc;

	FCGX_Init();
	rc = accept_bytes(get_values_overflow, sizeof(get_values_overflow),
	    NULL, 0, body, sizeof(body), script, sizeof(script));
	CHECK(rc < 0, "GET_VALUES with overflowing lengths refused (%d)", rc);

	rc = accept_bytes(params_overflow, sizeof(params_overflow), stdin_end,
	    sizeof(stdin_end), body, sizeof(body), script, sizeof(script));
	CHECK(rc < 0, "PARAMS pair with overflowing lengths refused (%d)", rc);

	rc = accept_bytes(begin_params, sizeof(begin_params), stdin_end,
	    sizeof(stdin_end), body, sizeof(body), script, sizeof(script));
	CHECK(rc == 0 && strcmp(script, "/h/a/b") == 0 &&
	    strcmp(body, "hi") == 0, "plain request passes (%d, \"%s\", "
	    "\"%s\")", rc, script, body);

	rc = accept_bytes(begin_params, sizeof(begin_params), mgmt_then_stdin,
	    sizeof(mgmt_then_stdin), body, sizeof(body), script,
	    sizeof(script));
	/* Refused in Accept, or in the body read if it came later. */
	CHECK(body[0] == '\0', "management record after the parameters "
	    "refuses the connection (%d, \"%s\")", rc, body);

	rc = accept_bytes(get_values_overflow, 5, NULL, 0, body,
	    sizeof(body), script, sizeof(script));
	CHECK(rc < 0, "a partial header is an error, not a hang (%d)", rc);
	/* libfcgi drops BEGIN_REQUEST padding and resyncs after errors. */
	expect_refused("regress-begin-padding.bin");
	expect_refused("regress-resync-leak.bin");
	expect_refused("regress-other-id.bin");
	return check_done();
}
