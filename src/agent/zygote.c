/*
 * zygote.c: python3 handlers forked from an interpreter that the template
 * started (guest/zygote.py), instead of a python3 exec'd per event, whose
 * start-up costs about a second under TCG.
 *
 * The zygote runs as the handler user with an empty environment and holds
 * the other end of a socketpair on its fd 3.  Once ready it sends a reply
 * of zeros.  A request, in host byte order:
 *
 *   struct zyg_hdr, sent with SCM_RIGHTS: the handler's stdin, stdout,
 *   stderr, the read end of a "go" pipe and the write end of a "status"
 *   pipe;
 *   zh_len bytes of NUL-terminated strings: sys.executable, argv[0], the
 *   interpreter flag ("" or "-u"), the script path, then the ENV entries;
 *   zh_code bytes of the script compiled, from the host's CODE, if any.
 *
 * The zygote itself becomes the handler: a clone serves one event, so
 * there is no interpreter to keep, and a fork (two, to make the handler a
 * child of PID 1) cost 15-35 ms under TCG.  It sets itself up to look
 * like `python3 SCRIPT`, reads the script and compiles it (or takes the
 * code it was given, if it was compiled from these very bytes), and
 * answers with a struct zyg_reply: its pid, or an errno.  If it compiled
 * the script, zr_code bytes of the code follow, which the agent passes
 * on to the host as CODE; no tenant code has run yet when they are
 * written.  It runs the script when a byte comes down the go pipe and
 * exits without running it on EOF.  Once the script is done and stdio
 * flushed and closed, it lowers its priority, writes its exit status
 * (int32) to the status pipe and exits.  The agent, woken at once, sends
 * EXIT while the kernel still tears the interpreter's memory down
 * (10-15 ms under TCG) in a VM that is destroyed next.
 *
 * Before that, a pooled clone may send one warm-up request:
 * ZYG_WARM_MAGIC, fixed strings (ZYG_WARM_STRINGS), no code, the same
 * five descriptors (go and status unused).  The zygote runs a fixed
 * snippet (guest/zygote.py) itself, set up with those strings as a
 * handler would be, puts its own stdio back and answers a
 * zyg_reply of pid 0 and 0 or an errno; it then waits for the real request
 * as before.
 */
#define _GNU_SOURCE		/* pipe2 */

#include <sys/socket.h>
#include <sys/time.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define ZYG_MAGIC 0x315A5956		/* "VYZ1" */
#define ZYG_WARM_MAGIC 0x315A5957	/* "WYZ1" */
#define ZYG_WARM_MS 10000	/* the snippet, cold, under TCG: ~1 s */
#define ZYG_WARM_BODY "{\"id\": \"evt_warm\", \"type\": \"warm.up\", " \
	"\"data\": {\"amount\": 1200, \"items\": [1, 2, 3]}}"
/*
 * The warm-up's strings, laid out as zyg_strings lays out an event's, so
 * that the zygote's way through a request is the one an event takes.
 */
#define ZYG_WARM_STRINGS "/usr/bin/python3\0/usr/bin/python3\0\0" \
	"/tmp/<warm-up>\0REQUEST_METHOD=POST\0CONTENT_TYPE=application/json\0" \
	"CONTENT_LENGTH=88\0HTTP_USER_AGENT=vmcgi-warm-up\0" \
	"GATEWAY_INTERFACE=CGI/1.1\0PATH=/usr/local/bin:/usr/bin:/bin\0" \
	"VMCGI_TENANT=warm\0VMCGI_HANDLER=up\0"
#define ZYG_PYTHON "/usr/bin/python3"
#define ZYG_SCRIPT "/usr/lib/vmcgi/zygote.py"
#define ZYG_FD 3			/* the socket, in the zygote */
#define ZYG_READY_MS 60000		/* python3 start under TCG: ~2 s */
#define ZYG_REPLY_MS 5000		/* set-up; then compile (below) */
#define ZYG_LINE_MAX 256		/* the kernel's BINPRM_BUF_SIZE */
#define ZYG_NAME_MAX 64

struct zyg_hdr {
	uint32_t zh_magic;
	uint32_t zh_len;
	uint32_t zh_code;
};

struct zyg_reply {
	int32_t zr_pid;
	int32_t zr_err;
	uint32_t zr_code;	/* bytes of compiled code that follow */
};

/* How python3 would have been started: sys.executable and sys.orig_argv. */
struct zyg_interp {
	char zi_exe[ZYG_NAME_MAX];
	char zi_argv0[ZYG_NAME_MAX];
	char zi_flag[ZYG_NAME_MAX];
};

static int zyg_fd = -1;
static pid_t zyg_pid = -1;

/*
 * In the forked child: the zygote gets the handler's credentials and OOM
 * score (its handlers inherit them), /dev/null for stdin and stdout, the
 * agent's console for its own errors, and an empty environment, so what
 * it reads at start-up matches a handler that is given none of LANG,
 * LC_ALL, LC_CTYPE or PYTHON*.  Never returns.
 */
static void __attribute__((noreturn))
zyg_child(int sock)
{
	char *argv[] = { ZYG_PYTHON, ZYG_SCRIPT, NULL };
	char *envp[] = { NULL };
	sigset_t none;
	int fd;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	setsid();
	if ((fd = open("/dev/null", O_RDWR)) == -1 || dup2(fd, 0) == -1 ||
	    dup2(fd, 1) == -1)
		log_warn("zygote: /dev/null on stdin and stdout");
	if (sock == ZYG_FD)
		fcntl(sock, F_SETFD, 0);
	else if (dup2(sock, ZYG_FD) == -1)
		log_warn("zygote: dup2 %d", sock);
	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd == -1 || write(fd, "1000", 4) != 4)
		log_warn("zygote: write /proc/self/oom_score_adj");
	if (chdir("/tmp") == -1)
		log_warn("zygote: chdir /tmp");
	if (setgroups(0, NULL) == -1 || setgid(AGENT_GID) == -1 ||
	    setuid(AGENT_UID) == -1) {
		log_warn("zygote: dropping to uid %d", AGENT_UID);
		_exit(127);
	}
	if ((errno = -sandbox_enter()) != 0) {
		log_warn("zygote: rlimits and seccomp");
		_exit(127);
	}
	execve(ZYG_PYTHON, argv, envp);
	log_warn("zygote: execve \"%s\"", ZYG_PYTHON);
	_exit(127);
}

/*
 * Forks the zygote; zygote_ready then waits for it.  Returns 0 or -errno,
 * logged.  Call before the template's READY(0): the snapshot must hold it.
 */
int
zygote_start(void)
{
	struct timeval tv = { ZYG_REPLY_MS / 1000, 0 };
	int sv[2];

	if (access(ZYG_SCRIPT, R_OK) == -1) {
		log_warn("zygote: access \"%s\"", ZYG_SCRIPT);
		return -errno;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		log_warn("zygote: socketpair");
		return -errno;
	}
	if ((zyg_pid = sandbox_fork(AGENT_CG_ZYGOTE)) == -1) {
		log_warn("zygote: clone3");
		close(sv[0]);
		close(sv[1]);
		return -errno;
	}
	if (zyg_pid == 0)
		zyg_child(sv[1]);
	close(sv[1]);
	zyg_fd = sv[0];
	/* A request is sent blocking; this bounds a stuck zygote. */
	if (setsockopt(zyg_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1)
		log_warn("zygote: setsockopt SO_SNDTIMEO");
	return 0;
}

/* Drops the zygote: it exits on EOF, or is killed if it may be stuck. */
static void
zyg_stop(int kill_it)
{
	if (zyg_fd != -1)
		close(zyg_fd);
	if (kill_it && zyg_pid > 0)
		kill(zyg_pid, SIGKILL);
	zyg_fd = -1;
	zyg_pid = -1;
}

static uint64_t
zyg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Reads len bytes from the zygote by end (zyg_now's clock).  Returns 0,
 * -ETIMEDOUT, -EPIPE or -errno.
 */
static int
zyg_read(void *p, size_t len, uint64_t end)
{
	struct pollfd pfd = { zyg_fd, POLLIN, 0 };
	size_t got = 0;
	uint64_t now;
	ssize_t n;
	int rc;

	while (got < len) {
		if ((now = zyg_now()) >= end)
			return -ETIMEDOUT;
		rc = poll(&pfd, 1, end - now);
		if (rc == -1 && errno != EINTR)
			return -errno;
		if (rc <= 0)
			continue;
		n = read(zyg_fd, (char *)p + got, len - got);
		if (n == 0)
			return -EPIPE;
		if (n == -1 && errno != EINTR && errno != EAGAIN)
			return -errno;
		got += n > 0 ? (size_t)n : 0;
	}
	return 0;
}

/* Reads one reply within ms.  Returns 0, -ETIMEDOUT, -EPIPE or -errno. */
static int
zyg_read_reply(struct zyg_reply *rep, int ms)
{
	return zyg_read(rep, sizeof(*rep), zyg_now() + ms);
}

/*
 * Waits until the zygote has imported its modules and sits waiting for a
 * request.  Returns 0, or -errno with the zygote dropped (logged): every
 * handler is then exec'd.  Blocks for up to ZYG_READY_MS.
 */
int
zygote_ready(void)
{
	struct zyg_reply rep;
	int rc;

	if (zyg_fd == -1)
		return -ENOENT;
	if ((rc = zyg_read_reply(&rep, ZYG_READY_MS)) == 0 &&
	    (rep.zr_pid != 0 || rep.zr_err != 0 || rep.zr_code != 0))
		rc = -EPROTO;
	if (rc != 0) {
		log_warnx("zygote: not ready: %s", strerror(-rc));
		zyg_stop(1);
	}
	return rc;
}

/* Copies [p, e) into dst of size n.  Returns 0 if it did not fit. */
static int
zyg_copy(char *dst, size_t n, const char *p, const char *e)
{
	if ((size_t)(e - p) >= n)
		return 0;
	memcpy(dst, p, e - p);
	dst[e - p] = '\0';
	return 1;
}

/*
 * Splits the script's first line as the kernel's binfmt_script does: an
 * interpreter, then at most one argument, which is the rest of the line
 * without its surrounding blanks.  Returns 1, or 0 if it has no "#!"
 * line the kernel would take whole.
 */
static int
zyg_shebang(const struct buf *script, char *interp, char *arg)
{
	size_t n = script->b_len < ZYG_LINE_MAX ? script->b_len : ZYG_LINE_MAX;
	const char *p, *end, *q;

	/* No SCRIPT at all leaves no buffer: NULL + 0 is undefined. */
	if (n < 2)
		return 0;
	p = (const char *)buf_head(script);
	if (p[0] != '#' || p[1] != '!')
		return 0;
	if ((end = memchr(p, '\n', n)) == NULL)
		return 0;
	for (p += 2; p < end && (*p == ' ' || *p == '\t'); p++)
		;
	for (q = p; q < end && *q != ' ' && *q != '\t'; q++)
		;
	if (!zyg_copy(interp, ZYG_NAME_MAX, p, q))
		return 0;
	for (p = q; p < end && (*p == ' ' || *p == '\t'); p++)
		;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	return zyg_copy(arg, ZYG_NAME_MAX, p, end);
}

static int
zyg_is_python(const char *name)
{
	return strcmp(name, "python3") == 0 || strcmp(name, "python3.11") == 0;
}

/* Returns the value of NAME in the job's environment, or NULL. */
static const char *
zyg_getenv(const struct job *job, const char *name)
{
	size_t i, n = strlen(name);

	for (i = 0; i < job->j_nenv; i++) {
		if (strncmp(job->j_env[i], name, n) == 0 &&
		    job->j_env[i][n] == '=')
			return job->j_env[i] + n + 1;
	}
	return NULL;
}

/*
 * For "#!/usr/bin/env python3": the file execvp would find along the
 * job's PATH (glibc's default without one) must be the image's python3,
 * and every directory before it absolute, so that sys.executable, which
 * python3 finds along the same PATH, is known.  Returns 1 or 0.
 */
static int
zyg_env_lookup(const struct job *job, struct zyg_interp *zi)
{
	const char *path = zyg_getenv(job, "PATH"), *p, *e;
	char cand[ZYG_NAME_MAX * 2];

	/* python3 leaves sys.executable empty when there is no PATH. */
	if (path == NULL)
		return access("/bin/python3", F_OK) == -1;
	for (p = path; *p != '\0'; p = *e ? e + 1 : e) {
		e = strchrnul(p, ':');
		if (*p != '/' || e - p >= ZYG_NAME_MAX)
			return 0;
		snprintf(cand, sizeof(cand), "%.*s/%s", (int)(e - p), p,
		    zi->zi_argv0);
		if (access(cand, X_OK) == -1)
			continue;
		if (strncmp(p, "/usr/bin", e - p) != 0 || e - p != 8)
			return 0;
		/* argv0 is python3 or python3.11: it fits. */
		strcpy(zi->zi_exe, "/usr/bin/");
		strcat(zi->zi_exe, zi->zi_argv0);
		return 1;
	}
	return 0;
}

/* Picks how python3 is asked for in the first line.  Returns 1 or 0. */
static int
zyg_interp(const struct job *job, struct zyg_interp *zi)
{
	char interp[ZYG_NAME_MAX], arg[ZYG_NAME_MAX];

	memset(zi, 0, sizeof(*zi));
	if (!zyg_shebang(&job->j_script, interp, arg))
		return 0;
	if (strncmp(interp, "/usr/bin/", 9) == 0 &&
	    zyg_is_python(interp + 9)) {
		/* -u is the one flag that changes nothing but stdio. */
		if (arg[0] != '\0' && strcmp(arg, "-u") != 0)
			return 0;
		strcpy(zi->zi_exe, interp);
		strcpy(zi->zi_argv0, interp);
		strcpy(zi->zi_flag, arg);
		return 1;
	}
	if (strcmp(interp, "/usr/bin/env") != 0 || !zyg_is_python(arg))
		return 0;
	strcpy(zi->zi_argv0, arg);
	return zyg_env_lookup(job, zi);
}

/*
 * The zygote started with an empty environment.  Entries python3 reads
 * while it starts (the locale, PYTHON*) would make it start differently,
 * and it keeps only the first of a duplicated name.  Returns 1 if none.
 */
static int
zyg_env_ok(const struct job *job)
{
	static const char *const startup[] = { "LANG", "LC_ALL", "LC_CTYPE" };
	size_t i, j, n;
	const char *e;

	for (i = 0; i < job->j_nenv; i++) {
		e = job->j_env[i];
		n = strcspn(e, "=");
		if (strncmp(e, "PYTHON", 6) == 0)
			return 0;
		for (j = 0; j < nitems(startup); j++) {
			if (strlen(startup[j]) == n &&
			    strncmp(e, startup[j], n) == 0)
				return 0;
		}
		for (j = 0; j < i; j++) {
			if (strncmp(job->j_env[j], e, n + 1) == 0)
				return 0;
		}
	}
	return 1;
}

static int
zyg_wanted(const struct job *job, struct zyg_interp *zi)
{
	const struct buf *s = &job->j_script;

	/* python3 refuses a NUL in a source file with its own message. */
	if (s->b_len > 0 && memchr(buf_head(s), '\0', s->b_len) != NULL)
		return 0;
	return zyg_interp(job, zi) && zyg_env_ok(job);
}

/*
 * Whether zygote_spawn would hand job to the zygote.  Only reads the job
 * (and probes PATH with access); the fuzzer calls it on what RUN left.
 */
int
zygote_wanted(const struct job *job)
{
	struct zyg_interp zi;

	return zyg_wanted(job, &zi);
}

static int
zyg_strings(const struct job *job, const struct zyg_interp *zi,
    struct buf *b)
{
	const char *s[] = { zi->zi_exe, zi->zi_argv0, zi->zi_flag,
	    AGENT_SCRIPT_PATH };
	size_t i;
	int rc = 0;

	for (i = 0; rc == 0 && i < nitems(s); i++)
		rc = buf_append(b, s[i], strlen(s[i]) + 1);
	for (i = 0; rc == 0 && i < job->j_nenv; i++)
		rc = buf_append(b, job->j_env[i], strlen(job->j_env[i]) + 1);
	return rc;
}

/* Sends the header with the four descriptors.  Returns 0 or -errno. */
static int
zyg_send_hdr(const struct zyg_hdr *h, const int fds[3], int go, int st)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(5 * sizeof(int))];
	} cm;
	struct iovec iov = { (void *)h, sizeof(*h) };
	struct msghdr mh;
	struct cmsghdr *c;
	int all[5] = { fds[0], fds[1], fds[2], go, st };
	ssize_t n;

	memset(&mh, 0, sizeof(mh));
	memset(&cm, 0, sizeof(cm));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.b;
	mh.msg_controllen = sizeof(cm.b);
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(all));
	memcpy(CMSG_DATA(c), all, sizeof(all));
	n = sendmsg(zyg_fd, &mh, MSG_NOSIGNAL);
	if (n == -1)
		return -errno;
	return n == sizeof(*h) ? 0 : -EIO;
}

/* Sends len bytes.  Returns 0 or -errno; blocks up to SO_SNDTIMEO. */
static int
zyg_send_all(const uint8_t *p, size_t len)
{
	size_t off = 0;
	ssize_t n;

	while (off < len) {
		n = send(zyg_fd, p + off, len - off, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -errno;
		off += n;
	}
	return 0;
}

/* Sends one request.  Returns 0 or -errno; blocks up to SO_SNDTIMEO. */
static int
zyg_send(const struct job *job, const struct zyg_interp *zi,
    const int fds[3], int go, int st)
{
	struct buf b = { 0 };
	struct zyg_hdr h;
	int rc;

	if ((rc = zyg_strings(job, zi, &b)) != 0)
		goto out;
	h.zh_magic = ZYG_MAGIC;
	h.zh_len = b.b_len;
	h.zh_code = job->j_code.b_len;
	if ((rc = zyg_send_hdr(&h, fds, go, st)) == 0)
		rc = zyg_send_all(buf_head(&b), b.b_len);
	if (rc == 0)
		rc = zyg_send_all(buf_head(&job->j_code), job->j_code.b_len);
out:
	buf_free(&b);
	return rc;
}

/*
 * Asks the zygote for the handler process and waits for its pid, and for
 * the code it compiled, if any, into code.  Returns 0 or -errno, logged.
 * The zygote compiles the script before it answers: that is bounded by
 * the handler's timeout, as python3's own compile would be, and by
 * ZYG_REPLY_MS for a short one.
 */
static int
zyg_request(const struct job *job, const struct zyg_interp *zi,
    const int fds[3], int go, int st, pid_t *pid, struct buf *code)
{
	static uint8_t tmp[PROTO_MAX_PAYLOAD];
	uint32_t ms = job->j_run.timeout_ms;
	struct zyg_reply rep;
	uint64_t end;
	int rc;

	if ((rc = zyg_send(job, zi, fds, go, st)) != 0) {
		log_warnx("zygote: sendmsg: %s", strerror(-rc));
		return rc;
	}
	end = zyg_now() + (ms > ZYG_REPLY_MS ? ms : ZYG_REPLY_MS);
	if ((rc = zyg_read(&rep, sizeof(rep), end)) != 0) {
		log_warnx("zygote: reply: %s", strerror(-rc));
		return rc;
	}
	if (rep.zr_pid <= 0) {
		rc = rep.zr_err > 0 ? -rep.zr_err : -EIO;
		log_warnx("zygote: no handler: %s", strerror(-rc));
		return rc;
	}
	*pid = rep.zr_pid;
	if (rep.zr_code > PROTO_MAX_PAYLOAD) {
		log_warnx("zygote: %u bytes of code", rep.zr_code);
		return -EPROTO;
	}
	if (rep.zr_code > 0 && (rc = zyg_read(tmp, rep.zr_code, end)) == 0)
		rc = buf_append(code, tmp, rep.zr_code);
	if (rc != 0)
		log_warnx("zygote: code: %s", strerror(-rc));
	return rc;
}

/*
 * Starts the job's handler from the zygote if its first line asks for
 * python3 in a way the zygote reproduces exactly (see zyg_interp and
 * zyg_env_ok).  fds are the handler's stdin, stdout and stderr, st the
 * write end of its status pipe; the caller keeps and closes them.
 * Returns 1 with *pid set (a child of PID 1, already running its script),
 * 0 if the job is not one for the zygote, or -errno if the zygote failed
 * (logged): the handler has not run and the caller execs it instead.  A
 * zygote that failed is killed.
 */
int
zygote_spawn(const struct job *job, const int fds[3], int st, pid_t *pid,
    struct buf *code)
{
	struct zyg_interp zi;
	int go[2], rc;

	/*
	 * A zygote not wanted is left blocked in its read: told to exit, it
	 * would tear its interpreter down on the one vCPU the handler uses,
	 * and the VM ends after this event anyway.
	 */
	if (zyg_fd == -1 || !zyg_wanted(job, &zi))
		return 0;
	if (pipe2(go, O_CLOEXEC) == -1) {
		log_warn("zygote: pipe2");
		zyg_stop(1);
		return -errno;
	}
	rc = zyg_request(job, &zi, fds, go[0], st, pid, code);
	close(go[0]);
	/* EOF on go, not a byte, makes a handler that exists exit unrun. */
	if (rc == 0 && write(go[1], "g", 1) != 1) {
		rc = -errno;
		log_warn("zygote: write (go)");
	}
	close(go[1]);
	zyg_stop(rc != 0);
	return rc == 0 ? 1 : rc;
}

/* Reads fd to EOF, discarding, for up to ms.  Returns 0 or -errno. */
static int
zyg_drain(int fd, int ms)
{
	uint64_t end = zyg_now() + ms, now;
	struct pollfd pfd = { fd, POLLIN, 0 };
	char tmp[512];
	ssize_t n;

	for (;;) {
		if ((now = zyg_now()) >= end)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, end - now) == -1 && errno != EINTR)
			return -errno;
		n = read(fd, tmp, sizeof(tmp));
		if (n == 0)
			return 0;
		if (n == -1 && errno != EINTR && errno != EAGAIN)
			return -errno;
	}
}

/*
 * Sends the warm-up request with the child's stdin (holding the fixed
 * body), stdout and stderr, then reads the output to EOF and the reply.
 * Returns 0 or -errno; *step names what failed.
 */
static int
zyg_warm_io(int null, const char **step)
{
	struct zyg_hdr h = { ZYG_WARM_MAGIC, sizeof(ZYG_WARM_STRINGS) - 1, 0 };
	const size_t len = sizeof(ZYG_WARM_BODY) - 1;
	int in[2], out[2], fds[3], rc;

	*step = "pipe2";
	if (pipe2(in, O_CLOEXEC) == -1)
		return -errno;
	if (pipe2(out, O_CLOEXEC) == -1) {
		rc = -errno;
		close(in[0]);
		close(in[1]);
		return rc;
	}
	/* Far less than a pipe holds: the write cannot block. */
	rc = write(in[1], ZYG_WARM_BODY, len) == (ssize_t)len ? 0 : -EIO;
	close(in[1]);
	fds[0] = in[0];
	fds[1] = out[1];
	fds[2] = null;
	*step = "sendmsg";
	if (rc == 0)
		rc = zyg_send_hdr(&h, fds, null, null);
	if (rc == 0)
		rc = zyg_send_all((const uint8_t *)ZYG_WARM_STRINGS, h.zh_len);
	close(in[0]);
	close(out[1]);
	if (rc == 0) {
		*step = "read (output)";
		rc = zyg_drain(out[0], ZYG_WARM_MS);
	}
	close(out[0]);
	return rc;
}

/*
 * Has the zygote run a fixed snippet the way a handler runs, with no
 * tenant input, so that this clone's QEMU has translated the python paths
 * of a handler (compile, json, hmac, datetime, stdio on pipes) and the
 * zygote has faulted in the memory a handler writes, before an event
 * needs them.  Returns 0 or -errno, logged; if the zygote broke, it is
 * dropped and handlers are exec'd.  Blocks up to about 2 * ZYG_WARM_MS.
 */
int
zygote_warm(void)
{
	struct zyg_reply rep;
	const char *step;
	int null, rc;

	if (zyg_fd == -1)
		return -ENOENT;
	if ((null = open("/dev/null", O_RDWR | O_CLOEXEC)) == -1) {
		log_warn("zygote warm-up: open /dev/null");
		return -errno;
	}
	rc = zyg_warm_io(null, &step);
	close(null);
	if (rc == 0) {
		step = "reply";
		rc = zyg_read_reply(&rep, ZYG_WARM_MS);
		if (rc == 0 && rep.zr_code != 0)
			rc = -EPROTO;
	}
	if (rc != 0) {
		log_warnx("zygote warm-up: %s: %s", step, strerror(-rc));
		zyg_stop(1);
		return rc;
	}
	if (rep.zr_err != 0) {
		log_warnx("zygote warm-up: snippet: %s", strerror(rep.zr_err));
		return -rep.zr_err;
	}
	return 0;
}
