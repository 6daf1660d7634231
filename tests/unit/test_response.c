/*
 * test_response.c: CGI header blocks from a handler, as response_stdout
 * turns them into the FastCGI answer.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "check.h"
#include "fcgiguard.h"
#include "response.h"

/* BEGIN_REQUEST (responder, keep-conn), empty PARAMS, empty STDIN. */
static const unsigned char begin[] = {
	1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0,
	1, 4, 0, 1, 0, 0, 0, 0,
	1, 5, 0, 1, 0, 0, 0, 0,
};

/*
 * Handler stdout p in cgi mode; returns response_stdout's result and the
 * status committed in *status.
 */
static int
cgi(const char *p, int *status)
{
	struct response r;
	FCGX_Request req;
	int sv[2], rc = -1000;

	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
	if (write(sv[0], begin, sizeof(begin)) != (ssize_t)sizeof(begin))
		return rc;
	FCGX_InitRequest(&req, -1, 0);
	fcgiguard_start(sv[1]);
	req.ipcFd = sv[1];
	req.keepConnection = 1;
	req.detached = 1;
	if (FCGX_Accept_r(&req) == 0) {
		response_init(&r, &req, "0123456789abcdef", 1);
		rc = response_stdout(&r, "text/plain", p, strlen(p));
		*status = r.status;
		response_free(&r);
		FCGX_Finish_r(&req);
	}
	close(sv[1]);
	close(sv[0]);
	return rc;
}

int
main(void)
{
	int status = 0, rc;

	FCGX_Init();
	rc = cgi("Location: https://example.org/\n\nx", &status);
	CHECK(rc == 0 && status == 302, "absolute Location: 302 (%d, %d)",
	    rc, status);
	/* Found by tests/fuzz/fuzz_chan: the check read past the line. */
	rc = cgi("Location: /local\nX-Link: https://example.org/\n\n",
	    &status);
	CHECK(rc == -EPROTO, "local Location with a URL further down is "
	    "refused (%d)", rc);
	rc = cgi("X-A: b\nLocation: /etc\n\n", &status);
	CHECK(rc == -EPROTO, "local Location as the last line is refused "
	    "(%d)", rc);
	rc = cgi("Status: 201\r\nContent-Type: text/plain\r\n\r\nok", &status);
	CHECK(rc == 0 && status == 201, "Status 201 (%d, %d)", rc, status);
	return check_done();
}
