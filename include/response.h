/*
 * response.h: what vmcgi writes back to the web server for one request.
 *
 * The status is committed with the first byte written: after that only
 * body bytes follow, and a failure can only abort the response.
 */
#ifndef VMCGI_RESPONSE_H
#define VMCGI_RESPONSE_H

#include <stddef.h>

#include <fcgiapp.h>

#define RESPONSE_CGI_HEADER_MAX 8192

struct response {
	FCGX_Request	*fcgi;
	const char	*id;		/* request id, for X-Request-Id */
	int		 status;	/* 0 until committed */
	int		 aborted; /* connection cut without END_REQUEST */
	int		 client_gone; /* a write to the web server failed */
	int		 stalled;	/* ... because it stopped reading */
	long		 deadline_ms;	/* CLOCK_MONOTONIC; 0: none */
	size_t		 body_bytes;
	/* output=cgi: the header block collected so far */
	int		 cgi;
	char		*cgi_buf;
	size_t		 cgi_len;
	char		*held; /* a bodiless status, sent at exit 0 */
};

void	response_init(struct response *r, FCGX_Request *fcgi,
	    const char *id, int cgi);
void	response_free(struct response *r);

/* A complete JSON error answer; only before anything was committed. */
void	response_error(struct response *r, int status, const char *msg,
	    const char *extra_header);

/*
 * The handler exited 0.  If nothing was committed, send what it asked for
 * and was held (a bodiless CGI status), or else 204 No Content.
 */
void	response_success(struct response *r);

/*
 * Handler stdout.  In body mode the first call commits 200 with
 * content_type.  In cgi mode bytes are held until the header block is
 * complete.  Returns 0, -EPROTO on a malformed CGI header block (nothing
 * was sent: the caller answers 502), or -EPIPE when the web server went
 * away.
 */
int	response_stdout(struct response *r, const char *content_type,
	    const char *p, size_t n);

/*
 * The handler failed after output went out: cut the connection without
 * FCGI_END_REQUEST so the client sees an incomplete response.
 */
void	response_abort(struct response *r);

/*
 * Ends the request towards the web server (FCGI_END_REQUEST unless
 * aborted) and closes the connection, so the client has its whole answer
 * while vmcgi still tears the VM down.  Nothing may be written after it.
 */
void	response_finish(struct response *r);

/* The same for a bare FastCGI request; a no-op once it was done. */
void	response_close_fcgi(FCGX_Request *req);

/* Bytes of an unfinished CGI header block still held. */
size_t	response_pending(const struct response *r);

/* The reason phrase for a status code. */
const char *response_reason(int status);

#endif /* VMCGI_RESPONSE_H */
