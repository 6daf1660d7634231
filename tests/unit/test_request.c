/*
 * test_request.c: recorded nginx FastCGI requests (tests/fuzz/corpus/fcgi)
 * through request_check, every refusal vmcgi makes before a VM.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "check.h"
#include "config.h"
#include "fcgiguard.h"
#include "log.h"
#include "worker.h"

static struct config cfg;
static struct server srv;

/* The status line vmcgi answered the recorded request in file with. */
static int
answer(const char *file, char *status, size_t n)
{
	char in[65536], out[65536], *s;
	FCGX_Request req;
	ssize_t len, got;
	int sv[2];
	FILE *f;

	status[0] = '\0';
	if ((f = fopen(file, "re")) == NULL)
		return -1;
	len = (ssize_t)fread(in, 1, sizeof(in), f);
	fclose(f);
	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
	if (write(sv[0], in, (size_t)len) != len)
		return -1;
	shutdown(sv[0], SHUT_WR);
	FCGX_InitRequest(&req, -1, 0);
	fcgiguard_start(sv[1]);
	req.ipcFd = sv[1];
	req.keepConnection = 1;
	req.detached = 1;
	if (FCGX_Accept_r(&req) == 0) {
		request_check(&srv, &req);
		FCGX_Finish_r(&req);
	}
	if (req.ipcFd >= 0)
		close(req.ipcFd);
	got = recv(sv[0], out, sizeof(out) - 1, MSG_DONTWAIT);
	close(sv[0]);
	out[got > 0 ? got : 0] = '\0';
	/* The head is in the first STDOUT record, after its 8 bytes. */
	s = got > 8 ? out + 8 : out;
	snprintf(status, n, "%.*s", (int)strcspn(s, "\r"), s);
	return 0;
}

static void
expect(const char *name, const char *want)
{
	char file[256], status[128];

	snprintf(file, sizeof(file), "tests/fuzz/corpus/fcgi/%s", name);
	answer(file, status, sizeof(status));
	CHECK(strcmp(status, want) == 0, "%s: \"%s\" (want \"%s\")", name,
	    status, want);
}

int
main(void)
{
	char err[512];

	log_init("test_request", LOG_LVL_ERROR);
	if (config_load("tests/fuzz/fuzz.ini", &cfg, err, sizeof(err)) < 0) {
		printf("Bail out! %s\n", err);
		return 1;
	}
	srv.cfg = &cfg;
	FCGX_Init();
	expect("post-json.bin", "Status: 204 No Content");
	expect("get-query.bin", "Status: 204 No Content");
	expect("put-5k.bin", "Status: 405 Method Not Allowed");
	expect("post-chunked.bin", "Status: 204 No Content");
	expect("delete-normalized.bin", "Status: 404 Not Found");
	expect("post-404-oddheader.bin", "Status: 404 Not Found");
	config_free(&cfg);
	return check_done();
}
