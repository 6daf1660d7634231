/*
 * worker.c: the listening socket and the worker threads.
 *
 * Workers accept connections themselves (poll on the socket and on a stop
 * pipe) and hand each one to libfcgi, so a stop request never waits behind
 * a blocking accept() inside the library, and every accepted descriptor is
 * close-on-exec before any QEMU is forked.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fcgiguard.h"
#include "log.h"
#include "response.h"
#include "worker.h"

#define WORKER_BACKLOG 128
#define WORKER_OVERFLOW_TIMEOUT_MS 2000
#define WORKER_OVERFLOW_GRACE_MS 500

static int
worker_listen_unix(const struct config *cfg)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *path = cfg->listen;
	char dir[sizeof(sun.sun_path)], *slash;
	struct stat st;
	int fd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			log_warn("mkdir \"%s\"", dir);
	}
	/* A socket left by an earlier run is ours to replace; a file is not. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		log_warn("socket AF_UNIX");
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		log_warn("bind \"%s\"", path);
		close(fd);
		return -1;
	}
	if (chown(path, cfg->listen_uid, cfg->listen_gid) < 0 ||
	    chmod(path, cfg->listen_mode) < 0) {
		log_warn("chown/chmod \"%s\" to %u:%u %04o", path,
		    (unsigned)cfg->listen_uid, (unsigned)cfg->listen_gid,
		    (unsigned)cfg->listen_mode);
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

static int
worker_listen_tcp(const struct config *cfg)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai;
	char host[256], *colon;
	int fd, one = 1, rc;

	snprintf(host, sizeof(host), "%s", cfg->listen);
	colon = strrchr(host, ':');
	*colon = '\0';
	if (host[0] == '[' && colon[-1] == ']') {
		colon[-1] = '\0';
		memmove(host, host + 1, strlen(host));
	}
	rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0) {
		log_warnx("getaddrinfo \"%s\": %s", cfg->listen,
		    gai_strerror(rc));
		return -1;
	}
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
	    SOCK_NONBLOCK, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof(one)) < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		log_warn("bind \"%s\"", cfg->listen);
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

int
worker_listen(const struct config *cfg)
{
	int fd;

	if (cfg->listen[0] == '/')
		fd = worker_listen_unix(cfg);
	else
		fd = worker_listen_tcp(cfg);
	if (fd >= 0 && listen(fd, WORKER_BACKLOG) < 0) {
		log_warn("listen \"%s\"", cfg->listen);
		close(fd);
		fd = -1;
	}
	return fd;
}

/*
 * A peer that stops sending mid-record, or stops reading our answer,
 * would hold a worker for ever: every read and write on the connection
 * gives up after ms (libfcgi then sees an error).  The request loop
 * narrows the send timeout to its own deadline.
 */
void
worker_timeouts(int fd, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000,
	    .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		log_warn("setsockopt SO_RCVTIMEO/SO_SNDTIMEO %u ms", ms);
}

/* The next connection, or -1 once the server is stopping. */
static int
worker_accept(struct server *srv)
{
	struct pollfd pfd[2] = {
		{ .fd = srv->listen_fd, .events = POLLIN },
		{ .fd = srv->stop_rd, .events = POLLIN },
	};
	int fd;

	for (;;) {
		if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
			log_warn("poll listen socket");
			return -1;
		}
		if (pfd[1].revents != 0)
			return -1;
		if (pfd[0].revents == 0)
			continue;
		fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			worker_timeouts(fd, srv->cfg->read_timeout_ms);
			return fd;
		}
		if (errno != EAGAIN && errno != EINTR &&
		    errno != ECONNABORTED) {
			log_warn("accept4");
			usleep(100000); /* EMFILE and the like: back off */
		}
	}
}


static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	FCGX_Request req;
	int fd, rc;

	/*
	 * listen_sock -1: should libfcgi reject a connection's records, it
	 * closes it and its retry accept() fails at once instead of
	 * blocking on our socket.
	 */
	FCGX_InitRequest(&req, -1, 0);
	while ((fd = worker_accept(srv)) >= 0) {
		fcgiguard_start(fd);
		req.ipcFd = fd;
		req.keepConnection = 1; /* so Accept keeps the fd we set */
		/*
		 * Not "detached", libfcgi lingers up to 2 s per close reading
		 * what the peer still sends; vmcgi drains bodies itself.
		 */
		req.detached = 1;
		atomic_fetch_add(&srv->busy, 1);
		rc = FCGX_Accept_r(&req);
		if (rc < 0)
			log_warnx("FastCGI connection refused: malformed "
			    "records, early close or read_timeout (%d)", rc);
		else
			request_serve(srv, w->broker, &req);
		response_close_fcgi(&req);
		atomic_store(&srv->freed_ms, clock_now_ms());
		atomic_fetch_sub(&srv->busy, 1);
	}
	return NULL;
}

/*
 * While every worker is busy, new connections would wait unseen in the
 * listen backlog until the web server times out.  This thread answers
 * them at once with 503 and Retry-After instead, so a sender retries.
 */
static void *
worker_overflow(void *arg)
{
	struct server *srv = arg;
	struct pollfd pfd[2] = {
		{ .fd = srv->listen_fd, .events = POLLIN },
		{ .fd = srv->stop_rd, .events = POLLIN },
	};
	FCGX_Request req;
	long since = 0, now;
	int fd;

	FCGX_InitRequest(&req, -1, 0);
	for (;;) {
		if (poll(pfd, 2, 100) < 0 && errno != EINTR)
			break;
		if (pfd[1].revents != 0)
			break;
		if (pfd[0].revents == 0) {
			since = 0;	/* the workers keep up */
			continue;
		}
		/*
		 * Refuse only once connections have been waiting while no
		 * worker came free for a while.  Under a steady load some
		 * connection is always waiting, each for a moment only: the
		 * wait alone would refuse at the first instant all are busy.
		 */
		now = clock_now_ms();
		if (since == 0)
			since = now;
		if (atomic_load(&srv->busy) < srv->nthreads ||
		    now - since < WORKER_OVERFLOW_GRACE_MS ||
		    now - atomic_load(&srv->freed_ms) <
		    WORKER_OVERFLOW_GRACE_MS) {
			usleep(5000);
			continue;
		}
		since = 0;
		fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		worker_timeouts(fd, WORKER_OVERFLOW_TIMEOUT_MS);
		fcgiguard_start(fd);
		req.ipcFd = fd;
		req.keepConnection = 1;
		req.detached = 1;
		if (FCGX_Accept_r(&req) == 0)
			request_refuse_busy(srv, &req);
		response_close_fcgi(&req);
	}
	return NULL;
}

int
worker_start(struct server *srv, const int *brokers)
{
	int p[2], rc;
	unsigned i;

	if (pipe2(p, O_CLOEXEC) < 0) {
		log_warn("pipe2");
		return -1;
	}
	srv->stop_rd = p[0];
	srv->stop_wr = p[1];
	srv->workers = calloc(srv->cfg->workers, sizeof(*srv->workers));
	if (srv->workers == NULL) {
		log_warn("calloc %u workers", srv->cfg->workers);
		return -1;
	}
	for (i = 0; i < srv->cfg->workers; i++) {
		srv->workers[i].srv = srv;
		srv->workers[i].broker = brokers[i];
		rc = pthread_create(&srv->workers[i].thread, NULL, worker_main,
		    &srv->workers[i]);
		if (rc != 0) {
			errno = rc;
			log_warn("pthread_create worker %u", i);
			return -1;
		}
		srv->nthreads++;
	}
	rc = pthread_create(&srv->overflow, NULL, worker_overflow, srv);
	if (rc != 0) {
		errno = rc;
		log_warn("pthread_create overflow");
		return -1;
	}
	return 0;
}

int
worker_stop(struct server *srv, unsigned grace_ms)
{
	struct timespec until;
	unsigned i;
	int late = 0;

	if (write(srv->stop_wr, "x", 1) != 1)
		log_warn("write stop pipe");
	pthread_join(srv->overflow, NULL);
	clock_deadline(&until, CLOCK_REALTIME, grace_ms);
	for (i = 0; i < srv->nthreads; i++)
		if (pthread_timedjoin_np(srv->workers[i].thread, NULL,
		    &until) != 0)
			late = 1;
	return late ? -1 : 0;
}
