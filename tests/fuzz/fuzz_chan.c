/*
 * fuzz_chan.c: the host end of the agent channel.  The fuzzer's bytes are
 * what a hostile guest writes: chan_fill reads them in pieces, chan_next
 * frames them, and STDOUT goes through response_stdout in cgi mode to a
 * real FastCGI stream, whose other end is drained.  EXIT ends the run as
 * request.c's req_answer would.
 *
 * The first input byte picks the piece size and the output mode, so the
 * reader sees messages split everywhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "chan.h"
#include "fcgiguard.h"
#include "proto.h"
#include "response.h"

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* BEGIN_REQUEST (responder, keep-conn), empty PARAMS, empty STDIN. */
static const uint8_t fuzz_request[] = {
	1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0,
	1, 4, 0, 1, 0, 0, 0, 0,
	1, 5, 0, 1, 0, 0, 0, 0,
};

struct fuzz_run {
	FCGX_Request	 req;
	struct response	 resp;
	struct chan	 chan;
	int		 web;	/* our end of the FastCGI socket */
	int		 wr;	/* the guest's end of the channel */
	const uint8_t	*data;
	size_t		 left;
	size_t		 piece;
	int		 done;
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	if (FCGX_Init() != 0) {
		fprintf(stderr, "fuzz_chan: FCGX_Init failed\n");
		exit(1);
	}
	return 0;
}

static void
fuzz_fail(const char *call)
{
	perror(call);
	abort();
}

static void
fuzz_drain(int fd)
{
	char buf[65536];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* A FastCGI request on a socketpair, accepted as worker.c does. */
static void
fuzz_web_open(struct fuzz_run *r, int cgi)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		fuzz_fail("socketpair");
	if (write(sv[0], fuzz_request, sizeof(fuzz_request)) !=
	    (ssize_t)sizeof(fuzz_request))
		fuzz_fail("write fuzz_request");
	FCGX_InitRequest(&r->req, -1, 0);
	fcgiguard_start(sv[1]);
	r->req.ipcFd = sv[1];
	r->req.keepConnection = 1;
	r->req.detached = 1;
	if (FCGX_Accept_r(&r->req) != 0)
		fuzz_fail("FCGX_Accept_r");
	r->web = sv[0];
	response_init(&r->resp, &r->req, "0123456789abcdef", cgi);
}

static void
fuzz_web_close(struct fuzz_run *r)
{
	response_free(&r->resp);
	if (r->req.ipcFd >= 0 && r->req.in != NULL)
		FCGX_Finish_r(&r->req);
	if (r->req.ipcFd >= 0)
		close(r->req.ipcFd);
	fuzz_drain(r->web);
	close(r->web);
}

/* One message, handled as req_on_message does; 1 when the run is over. */
static int
fuzz_message(struct fuzz_run *r, const struct proto_hdr *hdr,
    const uint8_t *p)
{
	int rc;

	switch (hdr->type) {
	case PROTO_STDOUT:
		rc = response_stdout(&r->resp, "text/plain", (const char *)p,
		    hdr->len);
		fuzz_drain(r->web);
		if (rc == -EPROTO)
			response_error(&r->resp, 502, "malformed", NULL);
		return rc < 0;
	case PROTO_STDERR:
	case PROTO_READY:
		return 0;
	case PROTO_EXIT:
		if (hdr->len == sizeof(struct proto_exit) &&
		    r->resp.status == 0 && response_pending(&r->resp) == 0)
			response_success(&r->resp);
		else if (r->resp.status != 0)
			response_abort(&r->resp);
		else
			response_error(&r->resp, 502, "failed", NULL);
		return 1;
	default:
		return 1;
	}
}

/* Pass the next piece of input to the channel; close it at the end. */
static void
fuzz_feed(struct fuzz_run *r)
{
	size_t n = r->left < r->piece ? r->left : r->piece;
	ssize_t w;

	if (r->wr < 0)
		return;
	w = n > 0 ? write(r->wr, r->data, n) : 0;
	if (w < 0 && errno != EAGAIN)
		fuzz_fail("write channel");
	if (w > 0) {
		r->data += w;
		r->left -= (size_t)w;
	}
	if (r->left == 0) {
		close(r->wr);
		r->wr = -1;
	}
}

static void
fuzz_loop(struct fuzz_run *r)
{
	struct proto_hdr hdr;
	const uint8_t *p;
	int rc = 0;

	while (!r->done) {
		fuzz_feed(r);
		chan_fill(&r->chan);
		while (!r->done && (rc = chan_next(&r->chan, &hdr, &p)) == 1)
			r->done = fuzz_message(r, &hdr, p);
		if (rc < 0 || r->chan.eof)
			r->done = 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_run r;
	int pfd[2];

	if (size < 1)
		return 0;
	memset(&r, 0, sizeof(r));
	r.piece = 1 + (size_t)(data[0] >> 1) * 521;
	r.data = data + 1;
	r.left = size - 1;
	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0)
		fuzz_fail("pipe2");
	r.wr = pfd[1];
	if (chan_init(&r.chan, pfd[0]) < 0)
		fuzz_fail("chan_init");
	fuzz_web_open(&r, !(data[0] & 1));
	fuzz_loop(&r);
	chan_free(&r.chan);
	if (r.wr >= 0)
		close(r.wr);
	fuzz_web_close(&r);
	return 0;
}
