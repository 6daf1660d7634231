/*
 * response.c: FastCGI output.  libfcgi buffers 8 KB of stdout, so every
 * piece of handler output is flushed at once: streaming is the point.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "response.h"

struct reason {
	int		 status;
	const char	*text;
};

static const struct reason reasons[] = {
	{ 200, "OK" }, { 201, "Created" }, { 202, "Accepted" },
	{ 204, "No Content" }, { 301, "Moved Permanently" }, { 302, "Found" },
	{ 303, "See Other" }, { 304, "Not Modified" },
	{ 400, "Bad Request" }, { 401, "Unauthorized" }, { 403, "Forbidden" },
	{ 404, "Not Found" }, { 405, "Method Not Allowed" },
	{ 409, "Conflict" }, { 413, "Content Too Large" },
	{ 422, "Unprocessable Content" }, { 429, "Too Many Requests" },
	{ 500, "Internal Server Error" }, { 502, "Bad Gateway" },
	{ 503, "Service Unavailable" }, { 504, "Gateway Timeout" },
};

const char *
response_reason(int status)
{
	size_t i;

	for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].status == status)
			return reasons[i].text;
	return "Status";
}

void
response_init(struct response *r, FCGX_Request *fcgi, const char *id,
    int cgi)
{
	memset(r, 0, sizeof(*r));
	r->fcgi = fcgi;
	r->id = id;
	r->cgi = cgi;
}

void
response_free(struct response *r)
{
	free(r->cgi_buf);
	r->cgi_buf = NULL;
	free(r->held);
	r->held = NULL;
}

/*
 * Writes block while the web server does not read; past the request's
 * deadline they must fail instead, or a client that stops reading would
 * keep the worker and the VM past the handler's timeout.
 */
static void
response_send_deadline(struct response *r)
{
	struct timespec now;
	struct timeval tv;
	long left;

	if (r->deadline_ms == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	left = r->deadline_ms - (now.tv_sec * 1000L + now.tv_nsec / 1000000);
	if (left < 1)
		left = 1;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	setsockopt(r->fcgi->ipcFd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int
response_put(struct response *r, const char *p, size_t n)
{
	if (r->client_gone)
		return -EPIPE;
	response_send_deadline(r);
	errno = 0;
	if (n > 0 && FCGX_PutStr(p, (int)n, r->fcgi->out) != (int)n)
		r->client_gone = 1;
	if (!r->client_gone && FCGX_FFlush(r->fcgi->out) < 0)
		r->client_gone = 1;
	if (r->client_gone)
		r->stalled = errno == EAGAIN || errno == EWOULDBLOCK;
	return r->client_gone ? -EPIPE : 0;
}

/*
 * Build the status line and headers (without the blank line that ends
 * them) in a buffer sized to fit; the caller owns it.
 */
static char *
response_build_head(struct response *r, int status, const char *ctype,
    const char *extra)
{
	char *head;

	if (asprintf(&head, "Status: %d %s\r\nX-Request-Id: %s\r\n%s%s%s%s",
	    status, response_reason(status), r->id,
	    ctype ? "Content-Type: " : "", ctype ? ctype : "",
	    ctype ? "\r\n" : "", extra ? extra : "") < 0)
		return NULL;
	return head;
}

static int
response_head(struct response *r, int status, const char *ctype,
    const char *extra)
{
	char *head;
	int rc;

	head = response_build_head(r, status, ctype, extra);
	if (head == NULL)
		return -ENOMEM;
	r->status = status;
	rc = response_put(r, head, strlen(head));
	free(head);
	return rc;
}

void
response_error(struct response *r, int status, const char *msg,
    const char *extra_header)
{
	char body[512];
	int n;

	if (r->status != 0)
		return;
	n = snprintf(body, sizeof(body), "{\"error\": \"%s\", "
	    "\"request_id\": \"%s\"}\n", msg, r->id);
	if (n < 0 || (size_t)n >= sizeof(body))
		n = 0;
	if (response_head(r, status, "application/json",
	    extra_header) == 0 && response_put(r, "\r\n", 2) == 0)
		response_put(r, body, (size_t)n);
	r->body_bytes = (size_t)n;
}

void
response_success(struct response *r)
{
	char *held = r->held;

	if (r->status != 0)
		return;
	if (held != NULL) {
		r->held = NULL;
		r->status = atoi(held + 8);	/* "Status: NNN" */
		if (response_put(r, held, strlen(held)) == 0)
			response_put(r, "\r\n", 2);
		free(held);
	} else if (response_head(r, 204, NULL, NULL) == 0)
		response_put(r, "\r\n", 2);
}

void
response_abort(struct response *r)
{
	/*
	 * A bare end of stream is not enough: nginx without fastcgi_buffering
	 * takes it for a complete response and ends the chunked body cleanly.
	 * A record with an impossible version number is a protocol error for
	 * any FastCGI client; nginx then drops the client connection without
	 * the last chunk, so the client can tell the response is incomplete.
	 */
	static const unsigned char poison[8] = { 0 };

	FCGX_FFlush(r->fcgi->out);
	if (write(r->fcgi->ipcFd, poison, sizeof(poison)) < 0)
		r->client_gone = 1;	/* then there is no one to tell */
	shutdown(r->fcgi->ipcFd, SHUT_RDWR);
	r->aborted = 1;
}

void
response_close_fcgi(FCGX_Request *req)
{
	if (req->ipcFd >= 0 && req->in != NULL)
		FCGX_Finish_r(req);
	if (req->ipcFd >= 0)
		close(req->ipcFd);
	req->ipcFd = -1;
}

void
response_finish(struct response *r)
{
	response_close_fcgi(r->fcgi);
}

size_t
response_pending(const struct response *r)
{
	return r->cgi_len;
}

/*
 * What a handler's CGI header block may not carry.  Refused (502): headers
 * that make the web server act inside its own trust domain, such as
 * nginx's internal redirect to any location (another tenant's handler
 * included) or lighttpd's and Apache's file sending, and a local redirect
 * (a Location that is a path, which RFC 3875 has the server follow
 * itself).  Dropped: framing headers, which would let the web server end a
 * response on the handler's word rather than on its exit.
 */
static const char *const cgi_refused[] = {
	"X-Accel-", "X-Sendfile", "X-Lighttpd-", "X-LiteSpeed-",
};
static const char *const cgi_dropped[] = {
	"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
	"X-Request-Id", "Trailer", "Upgrade",
};

static int
cgi_name_in(const char *line, size_t colon, const char *const *list,
    size_t n, int prefix)
{
	size_t i, len;

	for (i = 0; i < n; i++) {
		len = strlen(list[i]);
		if ((prefix ? colon >= len : colon == len) &&
		    strncasecmp(line, list[i], len) == 0)
			return 1;
	}
	return 0;
}

/* A header name is an RFC 9110 token; a value has no control bytes. */
static int
cgi_line_valid(const char *line, size_t len, size_t *colon)
{
	size_t i;

	for (i = 0; i < len && line[i] != ':'; i++)
		if (!isalnum((unsigned char)line[i]) && line[i] != '-' &&
		    line[i] != '_')
			return 0;
	if (i == 0 || i == len)
		return 0;
	*colon = i;
	for (i++; i < len; i++)
		if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
			return 0;
	return 1;
}

static int
cgi_status(const char *v, size_t n)
{
	int s;

	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	if (n < 3 || !isdigit((unsigned char)v[0]) ||
	    !isdigit((unsigned char)v[1]) || !isdigit((unsigned char)v[2]) ||
	    (n > 3 && v[3] != ' '))
		return -1;
	s = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
	return s >= 200 && s <= 599 ? s : -1;
}

/*
 * Turn a complete header block (hdr, len bytes, up to but not including
 * the blank line) into our FastCGI head.  -EPROTO if any line is bad.
 */
/* Statuses with no body: the web server ends them at the header. */
static int
cgi_bodiless(int status)
{
	return status == 204 || status == 304;
}

/*
 * Turn a complete header block (hdr, len bytes, up to but not including
 * the blank line) into our FastCGI head.  -EPROTO if any line is bad or
 * refused.  A bodiless status is held until the handler exits 0, since the
 * web server would answer it to the client at once.
 */
static int
cgi_emit(struct response *r, const char *hdr, size_t len,
    const char *content_type)
{
	char *out;
	size_t olen = 0, colon, ll;
	const char *line = hdr, *end = hdr + len, *nl;
	int status = 0, have_ctype = 0, have_location = 0, rc = 0;

	out = malloc(2 * len + 64);	/* "\n" may become "\r\n" */
	if (out == NULL)
		return -ENOMEM;
	while (rc == 0 && line < end) {
		nl = memchr(line, '\n', (size_t)(end - line));
		ll = (size_t)((nl ? nl : end) - line);
		if (ll > 0 && line[ll - 1] == '\r')
			ll--;
		if (!cgi_line_valid(line, ll, &colon) ||
		    cgi_name_in(line, colon, cgi_refused,
		    sizeof(cgi_refused) / sizeof(cgi_refused[0]), 1))
			rc = -EPROTO;
		else if (colon == 6 && strncasecmp(line, "Status", 6) == 0) {
			status = cgi_status(line + 7, ll - 7);
			if (status < 0)
				rc = -EPROTO;
		} else if (!cgi_name_in(line, colon, cgi_dropped,
		    sizeof(cgi_dropped) / sizeof(cgi_dropped[0]), 0)) {
			have_ctype |= colon == 12 &&
			    strncasecmp(line, "Content-Type", 12) == 0;
			if (colon == 8 &&
			    strncasecmp(line, "Location", 8) == 0) {
				have_location = 1;
				/* Within this line: the block holds more. */
				if (memmem(line, ll, "://", 3) == NULL)
					rc = -EPROTO; /* a local redirect */
			}
			memcpy(out + olen, line, ll);
			olen += ll;
			out[olen++] = '\r';
			out[olen++] = '\n';
		}
		line = nl ? nl + 1 : end;
	}
	out[olen] = '\0';
	if (status == 0)
		status = have_location ? 302 : 200;
	if (rc == 0 && cgi_bodiless(status)) {
		r->held = response_build_head(r, status, NULL, out);
		rc = r->held ? 0 : -ENOMEM;
	} else if (rc == 0) {
		rc = response_head(r, status, have_ctype ? NULL : content_type,
		    out);
		if (rc == 0)
			rc = response_put(r, "\r\n", 2);
	}
	free(out);
	return rc;
}

/* Where the blank line ending the header block starts, or NULL. */
static const char *
cgi_find_end(const char *p, size_t n, size_t *seplen)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] != '\n')
			continue;
		if (i + 1 < n && p[i + 1] == '\n') {
			*seplen = 2;
			return p + i;
		}
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
			*seplen = 3;
			return p + i;
		}
	}
	return NULL;
}

static int
response_cgi(struct response *r, const char *content_type, const char *p,
    size_t n)
{
	const char *end;
	size_t seplen, hlen, rest;
	char *nb;
	int rc;

	if (r->cgi_len + n > RESPONSE_CGI_HEADER_MAX + 65536)
		n = RESPONSE_CGI_HEADER_MAX + 65536 - r->cgi_len;
	nb = realloc(r->cgi_buf, r->cgi_len + n + 1);
	if (nb == NULL)
		return -ENOMEM;
	r->cgi_buf = nb;
	memcpy(r->cgi_buf + r->cgi_len, p, n);
	r->cgi_len += n;
	end = cgi_find_end(r->cgi_buf, r->cgi_len, &seplen);
	if (end == NULL)
		return r->cgi_len > RESPONSE_CGI_HEADER_MAX ? -EPROTO : 0;
	hlen = (size_t)(end - r->cgi_buf);
	if (hlen > RESPONSE_CGI_HEADER_MAX)
		return -EPROTO;
	rc = cgi_emit(r, r->cgi_buf, hlen + 1, content_type);
	if (rc < 0)
		return rc;
	rest = r->cgi_len - hlen - seplen;
	if (r->held == NULL) {
		r->body_bytes += rest;
		rc = response_put(r, end + seplen, rest);
	}
	free(r->cgi_buf);
	r->cgi_buf = NULL;
	r->cgi_len = 0;
	return rc;
}

int
response_stdout(struct response *r, const char *content_type, const char *p,
    size_t n)
{
	int rc;

	if (r->held != NULL)
		return 0;	/* a bodiless status: the body goes nowhere */
	if (r->status == 0 && r->cgi)
		return response_cgi(r, content_type, p, n);
	if (r->status == 0) {
		rc = response_head(r, 200, content_type, NULL);
		if (rc == 0)
			rc = response_put(r, "\r\n", 2);
		if (rc < 0)
			return rc;
	}
	r->body_bytes += n;
	return response_put(r, p, n);
}
