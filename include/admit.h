/*
 * admit.h: admission of events to VMs.  A request takes a slot before its
 * VM starts and gives it back once the VM is gone; a slot counts against
 * the host (VMs serving, guest memory), its tenant and its handler.
 */
#ifndef VMCGI_ADMIT_H
#define VMCGI_ADMIT_H

#include <pthread.h>
#include <stdint.h>

#include "config.h"

struct admit {
	const struct config	*cfg;
	pthread_mutex_t		 lock;
	pthread_cond_t		 freed;
	unsigned		 vms;		/* serving now */
	uint64_t		 mem;		/* their guest memory */
	uint64_t		 mem_max; /* what is left beside the pools */
	unsigned		*t_running;	/* per cfg->tenants[] */
	unsigned		*t_waiting;
	unsigned		*h_running;	/* per cfg->handlers[] */
};

int	admit_init(struct admit *l, const struct config *cfg);

/*
 * Take a slot for an event of h, waiting up to cfg->queue_timeout_ms.
 * Returns 0, or -EBUSY at once when as many of the tenant's events already
 * wait as may run (a flood queues no further), or -ETIMEDOUT.  *why names
 * the limit that stood in the way.  Blocks.
 */
int	admit_acquire(struct admit *l, const struct handler *h,
	    const char **why);
void	admit_release(struct admit *l, const struct handler *h);

#endif /* VMCGI_ADMIT_H */
