/*
 * request.c: one webhook event, from FastCGI parameters to the handler's
 * exit in its own microVM and the answer to the web server.
 *
 * Everything that can be refused is refused before a VM starts: the route,
 * the method, the parameters, the body size, the script.  Once a clone
 * runs, the request loop multiplexes three things: bytes for the guest
 * (script, environment, body), output from the guest, and the web server's
 * connection, whose hang-up means the client went away.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"
#include "log.h"
#include "proto.h"
#include "response.h"
#include "route.h"
#include "worker.h"

#define REQ_GRACE_MS 2000	/* the agent enforces the timeout first */
#define REQ_PARAMS_MAX 200
#define REQ_PARAM_MAX 16384
#define REQ_PARAMS_TOTAL_MAX (128 * 1024)
#define REQ_DRAIN_MAX (64 << 20)

/* The compiled script (codecache.h), for the log line. */
enum req_code {
	CODE_NONE,
	CODE_GIVEN,	/* kept from an earlier event, sent along */
	CODE_KEPT,	/* compiled by this event's guest, kept */
	CODE_NOT_KEPT,	/* compiled by the guest, not kept */
	CODE_REPLACED,	/* given, refused by the guest, which compiled */
};

static const char *const req_code_names[] = {
	"", " code=given", " code=kept", " code=not-kept", " code=replaced",
};

enum req_end {
	END_NONE,
	END_EXIT,		/* the agent reported an exit */
	END_HOST_TIMEOUT,	/* the guest stopped answering */
	END_GUEST_LOST,	/* channel closed or broke the protocol */
	END_CGI_MALFORMED,
	END_CLIENT_GONE,
};

struct request {
	struct server		*srv;
	int			 broker; /* channel to the privileged side */
	FCGX_Request		*fcgi;
	char			 id[17];
	const struct handler	*h;
	char			*body;
	size_t			 bodylen;
	char			*script;
	size_t			 slen;
	enum req_code		 code;
	struct response		 resp;
	struct vm		 vm;
	char			*errlog; /* handler stderr, bounded */
	size_t			 errlen;
	size_t			 errdropped;
	long			 t0;
	long			 t_first; /* first output byte, or 0 */
	enum req_end		 end;
	int			 pooled; /* the VM came from the pool */
	struct proto_exit	 exit;
	const char		*why;		/* for the log line */
};

/* CGI/1.1 variables a handler may see; HTTP_* are passed as well. */
static const char *const req_pass_env[] = {
	"REQUEST_METHOD", "CONTENT_TYPE", "QUERY_STRING", "SCRIPT_NAME",
	"REQUEST_URI", "DOCUMENT_URI", "SERVER_PROTOCOL", "SERVER_NAME",
	"SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT", "HTTPS",
	"REQUEST_SCHEME",
};

static void
req_make_id(char *id)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[8];
	size_t i;

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		long t = clock_now_ms();

		memcpy(r, &t, sizeof(r));	/* unique enough for a log */
	}
	for (i = 0; i < sizeof(r); i++) {
		id[2 * i] = hex[r[i] >> 4];
		id[2 * i + 1] = hex[r[i] & 15];
	}
	id[16] = '\0';
}

/* Read and drop what is left of the body, so nginx sees a clean answer. */
static void
req_drain(struct request *rq)
{
	char buf[16384];
	size_t total = 0;
	int n;

	while (total < REQ_DRAIN_MAX &&
	    (n = FCGX_GetStr(buf, sizeof(buf), rq->fcgi->in)) > 0)
		total += (size_t)n;
}

static int
req_fail(struct request *rq, int status, const char *msg, const char *extra)
{
	req_drain(rq);
	rq->why = msg;
	response_error(&rq->resp, status, msg, extra);
	return -1;
}

static int
req_check_params(struct request *rq)
{
	size_t n = 0, total = 0, len;
	char **e;

	for (e = rq->fcgi->envp; *e != NULL; e++) {
		len = strlen(*e);
		if (++n > REQ_PARAMS_MAX || len > REQ_PARAM_MAX ||
		    (total += len) > REQ_PARAMS_TOTAL_MAX)
			return req_fail(rq, 400, "request headers too large",
			    NULL);
	}
	return 0;
}

static int
req_route(struct request *rq)
{
	const char *path, *method;
	struct handler *h = NULL;
	char allow[256];
	size_t i;

	path = FCGX_GetParam("SCRIPT_NAME", rq->fcgi->envp);
	if (path == NULL || *path == '\0')
		path = FCGX_GetParam("DOCUMENT_URI", rq->fcgi->envp);
	switch (route_match(rq->srv->cfg, path, &h)) {
	case ROUTE_BAD_REQUEST:
		return req_fail(rq, 400, "bad request path", NULL);
	case ROUTE_NOT_FOUND:
		return req_fail(rq, 404, "no such handler", NULL);
	case ROUTE_OK:
		break;
	}
	rq->h = h;
	method = FCGX_GetParam("REQUEST_METHOD", rq->fcgi->envp);
	for (i = 0; method != NULL && i < h->nmethods; i++)
		if (strcmp(method, h->methods[i]) == 0)
			return 0;
	snprintf(allow, sizeof(allow), "Allow: %s\r\n", h->allow);
	return req_fail(rq, 405, "method not allowed", allow);
}

/* 1 if s is all digits and fits; the value in *v. */
static int
req_parse_length(const char *s, unsigned long long *v)
{
	*v = 0;
	if (*s == '\0' || strlen(s) > 18)
		return 0;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return 0;
		*v = *v * 10 + (unsigned long long)(*s - '0');
	}
	return 1;
}

static int
req_read_body(struct request *rq)
{
	const char *cl = FCGX_GetParam("CONTENT_LENGTH", rq->fcgi->envp);
	size_t max = rq->h->max_body, cap;
	unsigned long long want = 0;
	char *nb;
	int n;

	if (cl != NULL && *cl != '\0' && !req_parse_length(cl, &want))
		return req_fail(rq, 400, "bad CONTENT_LENGTH", NULL);
	if (want > max)
		return req_fail(rq, 413, "request body too large", NULL);
	cap = want > 0 ? (size_t)want + 1 : 16384;
	for (;;) {
		if (rq->bodylen == cap) {
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			if (rq->bodylen == cap)
				return req_fail(rq, 413,
				    "request body too large", NULL);
		}
		nb = realloc(rq->body, cap);
		if (nb == NULL)
			return req_fail(rq, 500, "out of memory", NULL);
		rq->body = nb;
		n = FCGX_GetStr(rq->body + rq->bodylen,
		    (int)(cap - rq->bodylen), rq->fcgi->in);
		if (n <= 0)
			break;
		rq->bodylen += (size_t)n;
	}
	if (rq->bodylen > max)
		return req_fail(rq, 413, "request body too large", NULL);
	if (FCGX_GetError(rq->fcgi->in) != 0) {
		rq->end = END_CLIENT_GONE;
		rq->why = "request body incomplete: the connection failed or "
		    "stalled past read_timeout";
		return -1;
	}
	if (cl != NULL && *cl != '\0' && rq->bodylen != want)
		return req_fail(rq, 400, "body length differs from "
		    "CONTENT_LENGTH", NULL);
	return 0;
}

/*
 * The script, from the descriptor the privileged process opened inside the
 * tenant's directory (broker.c): the FastCGI process opens no file.
 */
static int
req_read_script(struct request *rq, int fd, char **script, size_t *len)
{
	struct stat st;
	ssize_t n;
	int err = 0;

	if (fstat(fd, &st) < 0)
		err = errno;
	else if (!S_ISREG(st.st_mode) || st.st_size > PROTO_MAX_SCRIPT)
		err = EINVAL;
	else if ((*script = malloc((size_t)st.st_size + 1)) == NULL)
		err = ENOMEM;
	else if ((n = pread(fd, *script, (size_t)st.st_size, 0)) !=
	    st.st_size) {
		err = n < 0 ? errno : EIO;
		free(*script);
		*script = NULL;
	}
	*len = err ? 0 : (size_t)st.st_size;
	close(fd);
	if (err == 0)
		return 0;
	log_req(LOG_LVL_ERROR, rq->id, "handler %s/%s: read \"%s\": %s",
	    rq->h->tenant->name, rq->h->name, rq->h->script, strerror(err));
	return req_fail(rq, 500, "handler script unavailable", NULL);
}

/*
 * Whether a FastCGI parameter goes to the handler: CGI/1.1 variables and
 * HTTP_* headers, with a name a shell accepts (the agent refuses others,
 * and nginx with ignore_invalid_headers off can send "HTTP_X.Y").
 */
static int
req_pass(const char *e)
{
	size_t i, n = strcspn(e, "=");

	if (e[n] != '=' || n == 0 || (e[0] >= '0' && e[0] <= '9'))
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)e[i]) && e[i] != '_')
			return 0;
	if (n > 5 && strncmp(e, "HTTP_", 5) == 0)
		return 1;
	for (i = 0; i < sizeof(req_pass_env) / sizeof(req_pass_env[0]); i++)
		if (strlen(req_pass_env[i]) == n &&
		    strncmp(e, req_pass_env[i], n) == 0)
			return 1;
	return 0;
}

/*
 * Whether the variable at e was already given earlier in envp.  nginx's
 * stock fastcgi_params sets SCRIPT_NAME and the recommended snippet sets
 * it again; a handler gets one of each name, the first, which is also
 * the one vmcgi routed on (FCGX_GetParam returns the first).
 */
static int
req_seen(char **envp, char **e)
{
	size_t n = strcspn(*e, "=") + 1;
	char **p;

	for (p = envp; p < e; p++)
		if (strncmp(*p, *e, n) == 0)
			return 1;
	return 0;
}

static int
req_queue_env(struct request *rq, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
req_queue_env(struct request *rq, const char *fmt, ...)
{
	char buf[REQ_PARAM_MAX + 64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -E2BIG;
	return chan_queue(&rq->vm.chan, PROTO_ENV, buf, (size_t)n);
}

/* The handler's index in the configuration, as the broker and cache use. */
static size_t
req_handler_index(const struct request *rq)
{
	return (size_t)(rq->h - rq->srv->cfg->handlers);
}

/* The script's code kept from an earlier event, if any, as CODE. */
static int
req_queue_code(struct request *rq)
{
	struct codecache *cc = rq->srv->code;
	uint8_t *code;
	size_t n;
	int rc;

	if (cc == NULL || (n = codecache_get(cc, req_handler_index(rq),
	    rq->script, rq->slen, &code)) == 0)
		return 0;
	rc = chan_queue(&rq->vm.chan, PROTO_CODE, code, n);
	free(code);
	rq->code = CODE_GIVEN;
	return rc;
}

/* Everything the guest needs, queued in protocol order. */
static int
req_queue_event(struct request *rq)
{
	struct proto_run run = { .timeout_ms = rq->h->timeout_ms };
	struct chan *c = &rq->vm.chan;
	size_t off, n, count = 0;
	char **e;
	int rc = 0;

	for (off = 0; rc == 0 && off < rq->slen; off += n) {
		n = rq->slen - off < PROTO_MAX_PAYLOAD ? rq->slen - off :
		    PROTO_MAX_PAYLOAD;
		rc = chan_queue(c, PROTO_SCRIPT, rq->script + off, n);
	}
	if (rc == 0)
		rc = req_queue_code(rq);
	for (e = rq->fcgi->envp; rc == 0 && *e != NULL; e++) {
		if (req_pass(*e) && !req_seen(rq->fcgi->envp, e) &&
		    count++ < PROTO_MAX_ENV - 8)
			rc = req_queue_env(rq, "%s", *e);
	}
	if (rc == 0)
		rc = req_queue_env(rq, "CONTENT_LENGTH=%zu", rq->bodylen);
	if (rc == 0)
		rc = req_queue_env(rq, "GATEWAY_INTERFACE=CGI/1.1");
	if (rc == 0)
		rc = req_queue_env(rq, "PATH=/usr/local/bin:/usr/bin:/bin");
	if (rc == 0)
		rc = req_queue_env(rq, "VMCGI_TENANT=%s", rq->h->tenant->name);
	if (rc == 0)
		rc = req_queue_env(rq, "VMCGI_HANDLER=%s", rq->h->name);
	if (rc == 0)
		rc = req_queue_env(rq, "VMCGI_REQUEST_ID=%s", rq->id);
	if (rc == 0)
		rc = chan_queue(c, PROTO_RUN, &run, sizeof(run));
	for (off = 0; rc == 0 && off < rq->bodylen; off += n) {
		n = rq->bodylen - off < PROTO_MAX_PAYLOAD ?
		    rq->bodylen - off : PROTO_MAX_PAYLOAD;
		rc = chan_queue(c, PROTO_STDIN, rq->body + off, n);
	}
	if (rc == 0)
		rc = chan_queue(c, PROTO_STDIN_EOF, NULL, 0);
	return rc;
}

static void
req_stderr(struct request *rq, const uint8_t *p, size_t n)
{
	size_t limit = rq->srv->cfg->stderr_limit, take;
	char *nb;

	take = rq->errlen >= limit ? 0 : limit - rq->errlen;
	if (take > n)
		take = n;
	rq->errdropped += n - take;
	if (take == 0)
		return;
	nb = realloc(rq->errlog, rq->errlen + take);
	if (nb == NULL) {
		rq->errdropped += take;
		return;
	}
	rq->errlog = nb;
	memcpy(rq->errlog + rq->errlen, p, take);
	rq->errlen += take;
}

/*
 * CODE: the guest compiled the script, before the handler ran.  At most
 * once per event.  When the event was given code, the guest compiles
 * only if it refused that code (made by another python3, say, after the
 * template was rebuilt from a new image): what it sends then replaces
 * the entry, which would otherwise be refused by every later event.
 * Kept for this handler's next event; what a guest sends here only
 * reaches that handler's guests.  Returns 1 when the request loop is
 * over.
 */
static int
req_on_code(struct request *rq, const uint8_t *p, size_t n)
{
	int given = rq->code == CODE_GIVEN;

	if ((rq->code != CODE_NONE && !given) || n == 0) {
		rq->end = END_GUEST_LOST;
		rq->why = "unexpected CODE from the agent";
		return 1;
	}
	rq->code = CODE_NOT_KEPT;
	if (rq->srv->code != NULL && codecache_put(rq->srv->code,
	    req_handler_index(rq), rq->script, rq->slen, p, n) == 0)
		rq->code = given ? CODE_REPLACED : CODE_KEPT;
	return 0;
}

/* One message from the guest; returns 1 when the request loop is over. */
static int
req_on_message(struct request *rq, const struct proto_hdr *hdr,
    const uint8_t *p)
{
	int rc;

	switch (hdr->type) {
	case PROTO_STDOUT:
		if (rq->t_first == 0)
			rq->t_first = clock_now_ms();
		rc = response_stdout(&rq->resp, rq->h->content_type,
		    (const char *)p, hdr->len);
		if (rc == -EPROTO) {
			rq->end = END_CGI_MALFORMED;
			return 1;
		}
		if (rc < 0) {
			rq->end = END_CLIENT_GONE;
			return 1;
		}
		return 0;
	case PROTO_STDERR:
		req_stderr(rq, p, hdr->len);
		return 0;
	case PROTO_READY:
	case PROTO_WARMED:
		return 0;	/* the answer to a HELLO or WARM sent twice */
	case PROTO_CODE:
		return req_on_code(rq, p, hdr->len);
	case PROTO_EXIT:
		if (hdr->len != sizeof(rq->exit)) {
			rq->end = END_GUEST_LOST;
			rq->why = "bad EXIT message";
			return 1;
		}
		memcpy(&rq->exit, p, sizeof(rq->exit));
		rq->end = END_EXIT;
		return 1;
	default:
		rq->end = END_GUEST_LOST;
		rq->why = "unexpected message from the agent";
		return 1;
	}
}

/*
 * Whether the web server's connection says the client went away: 1 yes,
 * 0 no, -1 cannot tell any more (stop watching).  nginx close()s its
 * FastCGI connection when the client aborts.  On a unix socket a full
 * close shows as POLLHUP, while a peer that only shut down its sending
 * side (allowed once the request is sent) shows as end of input alone.
 * Over TCP both look the same, and nginx never half-closes.
 */
static int
req_client_gone(int fd, short revents)
{
	int domain = AF_UNIX;
	socklen_t len = sizeof(domain);
	char c;
	ssize_t n;

	if (revents & (POLLHUP | POLLERR))
		return 1;
	n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n > 0)
		return -1;	/* bytes we do not expect: ignore them */
	getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
	return domain == AF_UNIX && n == 0 ? -1 : 1;
}

static void
req_loop_until(struct request *rq, long deadline)
{
	struct pollfd pfd[2];
	struct chan *c = &rq->vm.chan;
	struct proto_hdr hdr;
	const uint8_t *p;
	int rc, watch = 1;
	long left;

	while (rq->end == END_NONE) {
		while ((rc = chan_next(c, &hdr, &p)) == 1)
			if (req_on_message(rq, &hdr, p))
				return;
		if (rc < 0) {
			rq->end = END_GUEST_LOST;
			rq->why = "malformed message from the agent";
			return;
		}
		if (c->eof) {
			rq->end = END_GUEST_LOST;
			rq->why = "agent channel closed";
			return;
		}
		left = deadline - clock_now_ms();
		if (left <= 0) {
			rq->end = END_HOST_TIMEOUT;
			return;
		}
		pfd[0] = (struct pollfd){ .fd = c->fd, .events = POLLIN |
		    (chan_pending(c) ? POLLOUT : 0) };
		pfd[1] = (struct pollfd){ .fd = watch ? rq->fcgi->ipcFd : -1,
		    .events = POLLIN | POLLRDHUP };
		if (poll(pfd, 2, (int)left) < 0 && errno != EINTR) {
			rq->end = END_GUEST_LOST;
			rq->why = "poll failed";
			return;
		}
		if (pfd[1].revents != 0) {
			rc = req_client_gone(rq->fcgi->ipcFd, pfd[1].revents);
			if (rc == 1) {
				rq->end = END_CLIENT_GONE;
				return;
			}
			watch = rc == 0;
		}
		if ((pfd[0].revents & POLLOUT) && chan_flush(c) < 0)
			c->eof = 1;
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			chan_fill(c);
	}
}

static void
req_loop(struct request *rq)
{
	long deadline = clock_now_ms() + rq->h->timeout_ms + REQ_GRACE_MS;

	rq->resp.deadline_ms = deadline;
	req_loop_until(rq, deadline);
	if (rq->end == END_CLIENT_GONE && rq->resp.stalled)
		rq->why = "client stopped reading: send timed out";
}

/* Map how the run ended to what the client gets. */
static void
req_answer(struct request *rq)
{
	struct response *r = &rq->resp;
	int committed = r->status != 0, status = 0;
	const char *msg = NULL;

	switch (rq->end) {
	case END_CLIENT_GONE:
		rq->why = rq->why ? rq->why : "client went away";
		return;
	case END_CGI_MALFORMED:
		status = 502, msg = "malformed CGI header from handler";
		break;
	case END_HOST_TIMEOUT:
		status = 504, msg = "handler timed out (guest unresponsive)";
		break;
	case END_GUEST_LOST:
		status = 502, msg = "handler VM failed";
		break;
	case END_EXIT:
	case END_NONE:
		if (rq->exit.kind == PROTO_EXITED && rq->exit.code == 0) {
			if (!committed && response_pending(r) > 0)
				status = 502,
				msg = "malformed CGI header from handler";
			else if (!committed)
				response_success(r);
		} else if (rq->exit.kind == PROTO_TIMEDOUT)
			status = 504, msg = "handler timed out";
		else if (rq->exit.kind == PROTO_FAILED)
			status = 502, msg = "handler could not be started";
		else
			status = 502, msg = "handler failed";
		break;
	}
	if (status == 0)
		return;
	if (!rq->why)
		rq->why = msg;
	if (committed)
		response_abort(r);
	else
		response_error(r, status, msg, NULL);
}

static void
req_log_stderr(struct request *rq)
{
	char *line = rq->errlog, *end, *nl;
	size_t i;

	/* No stderr at all leaves errlog NULL, and NULL + 0 is undefined. */
	end = line != NULL ? line + rq->errlen : NULL;

	for (i = 0; i < rq->errlen; i++)
		if ((unsigned char)rq->errlog[i] < 0x20 &&
		    rq->errlog[i] != '\n')
			rq->errlog[i] = '?';
	while (line != NULL && line < end) {
		nl = memchr(line, '\n', (size_t)(end - line));
		log_req(LOG_LVL_INFO, rq->id, "stderr: %.*s",
		    (int)((nl ? nl : end) - line), line);
		line = nl ? nl + 1 : NULL;
	}
	if (rq->errdropped > 0)
		log_req(LOG_LVL_INFO, rq->id, "stderr: %zu more bytes dropped",
		    rq->errdropped);
}

static void
req_log(struct request *rq)
{
	const struct handler *h = rq->h;
	char code[96] = "-", vmtimes[96] = " vm=none";
	long now = clock_now_ms();
	int status = rq->resp.status;

	if (rq->end == END_EXIT && rq->exit.kind == PROTO_EXITED)
		snprintf(code, sizeof(code), "%d", rq->exit.code);
	else if (rq->end == END_EXIT && rq->exit.kind == PROTO_SIGNALED)
		snprintf(code, sizeof(code), "signal %d", rq->exit.code);
	else if (rq->end == END_EXIT && rq->exit.kind == PROTO_TIMEDOUT)
		snprintf(code, sizeof(code), "timeout");
	else if (rq->end == END_EXIT && rq->exit.kind == PROTO_FAILED)
		snprintf(code, sizeof(code), "agent-failed(%s)",
		    strerror(rq->exit.code));
	if (rq->end == END_CLIENT_GONE)
		status = 499;
	if (rq->vm.resume_ms > 0)
		snprintf(vmtimes, sizeof(vmtimes), " vm=%s load_ms=%u "
		    "resume_ms=%u first_byte_ms=%ld", rq->pooled ? "pool" :
		    "fresh", rq->pooled ? 0 : rq->vm.load_ms, rq->vm.resume_ms,
		    rq->t_first ? rq->t_first - rq->t0 : -1L);
	req_log_stderr(rq);
	log_req(status >= 500 || rq->resp.aborted ? LOG_LVL_WARN :
	    LOG_LVL_INFO, rq->id, "%s%s%s status=%d%s exit=%s ms=%ld%s%s "
	    "bytes=%zu%s%s",
	    h ? h->tenant->name : "-", h ? "/" : "", h ? h->name : "",
	    status, rq->resp.aborted ? " (aborted)" : "", code, now - rq->t0,
	    vmtimes, req_code_names[rq->code], rq->resp.body_bytes,
	    rq->why ? ": " : "", rq->why ? rq->why : "");
}

/* 503 with Retry-After: the sender retries later and loses nothing. */
static void
req_busy(struct request *rq, const char *msg)
{
	char extra[64];

	snprintf(extra, sizeof(extra), "Retry-After: %u\r\n",
	    rq->srv->cfg->retry_after);
	response_error(&rq->resp, 503, msg, extra);
}

/*
 * A VM for this event, with its script, from the privileged process, or
 * the refusal answered: 500 if the script cannot be read, 503 with
 * Retry-After over a limit or without a VM.  0 or -1.
 */
static int
req_take(struct request *rq, char **script, size_t *slen)
{
	const struct handler *h = rq->h;
	char why[512], msg[600];
	int rc, fd = -1;

	rc = broker_take(rq->broker, (uint32_t)req_handler_index(rq),
	    rq->id, &rq->vm, &rq->pooled, &fd, why, sizeof(why));
	switch (rc) {
	case BROKER_OK:
		return req_read_script(rq, fd, script, slen);
	case BROKER_NO_SCRIPT:
		log_req(LOG_LVL_ERROR, rq->id, "handler %s/%s: %s",
		    h->tenant->name, h->name, why);
		return req_fail(rq, 500, "handler script unavailable", NULL);
	case BROKER_BUSY:
	case BROKER_WAITED:
		rq->why = rc == BROKER_BUSY ? "over capacity, queue full" :
		    "over capacity, waited queue_timeout";
		log_req(LOG_LVL_WARN, rq->id, "%s/%s: %s: %s",
		    h->tenant->name, h->name, rq->why, why);
		snprintf(msg, sizeof(msg), "over capacity (%s)", why);
		req_busy(rq, msg);
		return -1;
	default:
		/* The privileged side logged a failed restore itself. */
		if (rc < 0)
			log_req(LOG_LVL_ERROR, rq->id, "template %s: %s",
			    h->tmpl->name, why);
		rq->why = "no VM available";
		req_busy(rq, "no VM available");
		return -1;
	}
}

static void
req_run(struct request *rq)
{
	if (req_take(rq, &rq->script, &rq->slen) < 0) {
		if (rq->vm.chan.fd >= 0)
			broker_done(rq->broker, &rq->vm);
		return;
	}
	if (req_queue_event(rq) < 0) {
		rq->end = END_GUEST_LOST;
		rq->why = "cannot queue the event";
	}
	req_loop(rq);
	/*
	 * The answer does not depend on the VM any more: the client gets it
	 * whole before the kill and reap of QEMU, which take milliseconds.
	 * Not when the web server stopped reading: the last write could
	 * block until the send timeout, and the VM must not wait for it.
	 */
	req_answer(rq);
	if (rq->end != END_CLIENT_GONE && !rq->resp.client_gone)
		response_finish(&rq->resp);
	if (broker_done(rq->broker, &rq->vm) < 0)
		log_req(LOG_LVL_ERROR, rq->id, "the privileged process did "
		    "not confirm the VM's end");
}

/*
 * The refusals that need no VM: parameters, route, method, body.  Returns
 * 0 when the event may run, or -1 once the refusal was answered.
 */
static int
req_prepare(struct request *rq)
{
	if (req_check_params(rq) < 0 || req_route(rq) < 0)
		return -1;
	rq->resp.cgi = rq->h->cgi_output;
	return req_read_body(rq);
}

/*
 * One request, start to log line.  With run 0 an event that passes every
 * check is answered 204 instead of running, so the fuzzer reaches all of
 * the parsing and refusals without QEMU.
 */
static void
req_serve(struct server *srv, int broker, FCGX_Request *fcgi, int run)
{
	struct request rq;

	memset(&rq, 0, sizeof(rq));
	rq.srv = srv;
	rq.broker = broker;
	rq.fcgi = fcgi;
	rq.t0 = clock_now_ms();
	rq.vm.pid = -1;
	rq.vm.chan.fd = -1;
	rq.vm.qmp.fd = -1;
	rq.vm.errfd = -1;
	req_make_id(rq.id);
	response_init(&rq.resp, fcgi, rq.id, 0);
	if (req_prepare(&rq) == 0) {
		if (run)
			req_run(&rq);
		else
			response_success(&rq.resp);
	}
	req_log(&rq);
	response_free(&rq.resp);
	free(rq.body);
	free(rq.script);
	free(rq.errlog);
}

void
request_serve(struct server *srv, int broker, FCGX_Request *fcgi)
{
	req_serve(srv, broker, fcgi, 1);
}

void
request_check(struct server *srv, FCGX_Request *fcgi)
{
	req_serve(srv, -1, fcgi, 0);
}

void
request_refuse_busy(struct server *srv, FCGX_Request *fcgi)
{
	struct request rq;

	memset(&rq, 0, sizeof(rq));
	rq.srv = srv;
	rq.fcgi = fcgi;
	rq.t0 = clock_now_ms();
	req_make_id(rq.id);
	response_init(&rq.resp, fcgi, rq.id, 0);
	req_drain(&rq);
	rq.why = "every worker is busy";
	req_busy(&rq, "server busy");
	log_req(LOG_LVL_WARN, rq.id, "status=503 ms=%ld: every worker is "
	    "busy", clock_now_ms() - rq.t0);
	response_free(&rq.resp);
}
