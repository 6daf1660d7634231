/*
 * worker.h: the FastCGI side: the listening socket and the worker threads
 * that each serve one request at a time.
 */
#ifndef VMCGI_WORKER_H
#define VMCGI_WORKER_H

#include <pthread.h>
#include <stdatomic.h>

#include <fcgiapp.h>

#include "config.h"
#include "admit.h"
#include "broker.h"
#include "codecache.h"
#include "pool.h"
#include "vm.h"

/* One worker thread of the FastCGI process. */
struct worker {
	struct server		*srv;
	int			 broker;	/* its channel (broker.h) */
	pthread_t		 thread;
};

/*
 * The privileged process uses snaps, pools, admit and brokers; the FastCGI
 * process the rest.
 */
struct server {
	const struct config	*cfg;
	struct snapshot		*snaps;	/* one per cfg->tmpls[] */
	struct pool		*pools;	/* one per cfg->tmpls[] */
	struct admit		 admit;
	struct broker		*brokers;	/* one per worker */
	struct codecache	*code;	/* NULL: code_cache = no */
	pid_t			 fastcgi;	/* the FastCGI process */
	int			 listen_fd;
	int			 stop_rd;	/* readable once stopping */
	int			 stop_wr;
	struct worker		*workers;
	unsigned		 nthreads;
	pthread_t		 overflow; /* answers 503 when all are busy */
	atomic_uint		 busy; /* workers holding a connection */
	atomic_long		 freed_ms; /* when a worker last came free */
};

/* Create the socket named by cfg->listen; fd or -1 with a log line. */
int	worker_listen(const struct config *cfg);

/*
 * Start cfg->workers threads, worker i talking to the privileged process
 * on brokers[i]; 0 or -1 with a log line.
 */
int	worker_start(struct server *srv, const int *brokers);

/*
 * Stop accepting, let requests in flight finish, join the threads.
 * Waits at most grace_ms; returns 0 if every thread ended in time.
 */
int	worker_stop(struct server *srv, unsigned grace_ms);

/* Bound every read and write on connection fd to ms. */
void	worker_timeouts(int fd, unsigned ms);

/* Serve one accepted FastCGI request; in request.c. */
void	request_serve(struct server *srv, int broker, FCGX_Request *fcgi);

/*
 * Every check request_serve makes before a VM (parameters, route, method,
 * body), answering a refusal as it would; an event that passes gets 204
 * and no VM.  For the fuzzer; in request.c.
 */
void	request_check(struct server *srv, FCGX_Request *fcgi);

/* Answer 503 with Retry-After: every worker is busy.  In request.c. */
void	request_refuse_busy(struct server *srv, FCGX_Request *fcgi);

#endif /* VMCGI_WORKER_H */
