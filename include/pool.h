/*
 * pool.h: the warm pool of a template: clones restored ahead of time and
 * left paused, so that taking one costs a resume, not a restore.
 */
#ifndef VMCGI_POOL_H
#define VMCGI_POOL_H

#include <pthread.h>
#include <stdatomic.h>

#include "vm.h"

struct pool_slot {
	struct vm	 vm;
	long		 born_ms;	/* when its state was loaded */
};

struct pool {
	struct snapshot		*snap;
	unsigned		 size;	/* target number of idle clones */
	unsigned		 max_age_ms;
	int			 warm; /* warm clones up before pooling */
	pthread_mutex_t		 lock;
	pthread_cond_t		 wake; /* refiller: a take, or stop */
	struct pool_slot	*idle;		/* oldest first */
	unsigned		 nidle;
	unsigned		 failures;	/* restores failed in a row */
	int			 stopping;
	int			 rebuilt; /* the one rebuild was tried */
	atomic_int		 broken;	/* and failed: answer 503 */
	int			 running; /* the refiller thread exists */
	pthread_t		 thread;
};

/*
 * Start the refiller thread, which also rebuilds the template once if
 * its clones keep failing.  0, or -1 with a log line.
 */
int	pool_start(struct pool *p, struct snapshot *snap,
	    unsigned size, unsigned max_age_ms, int warm);

/*
 * A running clone for one event: an idle one resumed, or, when the pool
 * is empty, one restored now.  Blocks up to timeout_ms.  *pooled tells
 * which.  0, or -1 with a message in err and nothing left running.
 */
int	pool_take(struct pool *p, struct vm *vm, int *pooled, int timeout_ms,
	    char *err, size_t errlen);

/* Stop the refiller and destroy the idle clones. */
void	pool_stop(struct pool *p);

#endif /* VMCGI_POOL_H */
