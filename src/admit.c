/*
 * admit.c: one lock and one condition variable for all slots.  Waiters
 * are few (bounded per tenant) and every release wakes them all to re-check
 * their own limits; simpler than a queue per limit and fair enough, since
 * the tenant bound keeps one tenant from filling the wait list.
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "admit.h"
#include "clock.h"
#include "log.h"

int
admit_init(struct admit *l, const struct config *cfg)
{
	pthread_condattr_t ca;
	uint64_t pooled = 0;
	size_t i;

	l->cfg = cfg;
	l->vms = 0;
	l->mem = 0;
	for (i = 0; i < cfg->ntmpls; i++)
		pooled += (uint64_t)cfg->tmpls[i].pool_size *
		    cfg->tmpls[i].memory;
	l->mem_max = cfg->max_guest_memory - pooled;	/* config checked */
	l->t_running = calloc(cfg->ntenants + 1, sizeof(unsigned));
	l->t_waiting = calloc(cfg->ntenants + 1, sizeof(unsigned));
	l->h_running = calloc(cfg->nhandlers + 1, sizeof(unsigned));
	if (!l->t_running || !l->t_waiting || !l->h_running) {
		log_warn("calloc admit");
		return -1;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->freed, &ca);
	pthread_condattr_destroy(&ca);
	return 0;
}

/* NULL if h may start now, else the name of the limit in the way. */
static const char *
admit_blocked(const struct admit *l, const struct handler *h)
{
	size_t t = (size_t)(h->tenant - l->cfg->tenants);
	size_t i = (size_t)(h - l->cfg->handlers);

	if (l->vms >= l->cfg->max_vms)
		return "max_vms";
	if (l->mem + h->tmpl->memory > l->mem_max)
		return "max_guest_memory";
	if (h->tenant->max_concurrent &&
	    l->t_running[t] >= h->tenant->max_concurrent)
		return "tenant max_concurrent";
	if (h->max_concurrent && l->h_running[i] >= h->max_concurrent)
		return "handler max_concurrent";
	return NULL;
}

/* How many of a tenant's events may wait: as many as may run. */
static unsigned
admit_queue_max(const struct admit *l, const struct handler *h)
{
	if (h->tenant->max_concurrent)
		return h->tenant->max_concurrent;
	return l->cfg->max_vms;
}

int
admit_acquire(struct admit *l, const struct handler *h, const char **why)
{
	size_t t = (size_t)(h->tenant - l->cfg->tenants);
	size_t i = (size_t)(h - l->cfg->handlers);
	struct timespec until;
	int rc = 0;

	clock_deadline(&until, CLOCK_MONOTONIC, l->cfg->queue_timeout_ms);
	pthread_mutex_lock(&l->lock);
	*why = admit_blocked(l, h);
	if (*why != NULL && l->t_waiting[t] >= admit_queue_max(l, h))
		rc = -EBUSY;
	if (*why != NULL && rc == 0) {
		l->t_waiting[t]++;
		while ((*why = admit_blocked(l, h)) != NULL && rc == 0)
			if (pthread_cond_timedwait(&l->freed, &l->lock,
			    &until) == ETIMEDOUT)
				rc = -ETIMEDOUT;
		if (*why == NULL)
			rc = 0;
		l->t_waiting[t]--;
	}
	if (rc == 0) {
		l->vms++;
		l->mem += h->tmpl->memory;
		l->t_running[t]++;
		l->h_running[i]++;
	}
	pthread_mutex_unlock(&l->lock);
	return rc;
}

void
admit_release(struct admit *l, const struct handler *h)
{
	size_t t = (size_t)(h->tenant - l->cfg->tenants);
	size_t i = (size_t)(h - l->cfg->handlers);

	pthread_mutex_lock(&l->lock);
	l->vms--;
	l->mem -= h->tmpl->memory;
	l->t_running[t]--;
	l->h_running[i]--;
	pthread_cond_broadcast(&l->freed);
	pthread_mutex_unlock(&l->lock);
}
