/*
 * pool.c: one refiller thread per template keeps `size` clones loaded and
 * paused.  A take pops the oldest and wakes the refiller; the refiller
 * restores outside the lock, so a take never waits behind a restore.
 *
 * A paused clone has run no guest code since the template was stopped:
 * its clock and RNG are set when it is taken (vm_resume), and one that
 * waited longer than max_age is replaced anyway, so nothing a long wait
 * could leave behind (a QEMU that went bad, a stale state file) is served.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "pool.h"

#define POOL_LOAD_TIMEOUT_MS 30000
#define POOL_BACKOFF_MAX_MS 30000
#define POOL_REBUILD_AFTER 3
#define POOL_RESUME_TIMEOUT_MS 5000	/* under TCG it takes about 5 ms */

/* Pop the oldest idle clone into *out; the lock is held. */
static void
pool_pop(struct pool *p, struct pool_slot *out)
{
	*out = p->idle[0];
	memmove(&p->idle[0], &p->idle[1], (p->nidle - 1) * sizeof(*p->idle));
	p->nidle--;
}

/* Destroy idle clones older than max_age; the lock is held, dropped. */
static void
pool_recycle(struct pool *p, long now)
{
	struct pool_slot old;

	while (p->nidle > 0 && now - p->idle[0].born_ms >= p->max_age_ms) {
		pool_pop(p, &old);
		pthread_mutex_unlock(&p->lock);
		log_debug("template %s: recycling a clone idle for %ld ms",
		    p->snap->tmpl->name, now - old.born_ms);
		vm_destroy(&old.vm);
		pthread_mutex_lock(&p->lock);
	}
}

/* Load one clone and add it; the lock is held, dropped meanwhile. */
static void
pool_refill_one(struct pool *p)
{
	struct pool_slot slot;
	struct timespec until;
	char err[1024];
	long backoff;
	int rc;

	pthread_mutex_unlock(&p->lock);
	rc = vm_load(p->snap, &slot.vm, 1, POOL_LOAD_TIMEOUT_MS, err,
	    sizeof(err));
	if (rc == 0 && p->warm)
		rc = vm_warm(&slot.vm, POOL_LOAD_TIMEOUT_MS, err, sizeof(err));
	slot.born_ms = clock_now_ms();
	pthread_mutex_lock(&p->lock);
	if (rc == 0 && !p->stopping && p->nidle < p->size) {
		p->idle[p->nidle++] = slot;
		p->failures = 0;
		p->rebuilt = 0;	/* later failures may rebuild */
		return;
	}
	if (rc == 0) {
		pthread_mutex_unlock(&p->lock);
		vm_destroy(&slot.vm);
		pthread_mutex_lock(&p->lock);
		return;
	}
	p->failures++;
	log_warnx("template %s: pool restore failed (%u in a row): %s",
	    p->snap->tmpl->name, p->failures, err);
	if (p->failures >= POOL_REBUILD_AFTER)
		return;		/* pool_main rebuilds, or gives up */
	backoff = 250L << (p->failures < 8 ? p->failures : 8);
	if (backoff > POOL_BACKOFF_MAX_MS)
		backoff = POOL_BACKOFF_MAX_MS;
	clock_deadline(&until, CLOCK_MONOTONIC, backoff);
	while (!p->stopping && pthread_cond_timedwait(&p->wake, &p->lock,
	    &until) != ETIMEDOUT)
		;
}

/*
 * Clones that keep failing mean the snapshot itself went bad (a state file
 * damaged on disk, say): boot the template again, once.  If that fails
 * too, or its clones fail as well before one works, the template is
 * broken and its handlers answer 503 until vmcgi is restarted.  Once a
 * clone of the new snapshot works, a later run of failures may rebuild
 * again.  The lock is held, dropped meanwhile.
 */
static void
pool_rebuild(struct pool *p)
{
	char err[1024];
	int rc;

	p->rebuilt = 1;
	pthread_mutex_unlock(&p->lock);
	log_warnx("template %s: %u restores failed in a row: booting it "
	    "again", p->snap->tmpl->name, p->failures);
	rc = snapshot_rebuild(p->snap, err, sizeof(err));
	if (rc == 0)
		log_info("template %s: booted again in %u ms",
		    p->snap->tmpl->name, p->snap->boot_ms);
	else
		log_warnx("template %s: rebuild failed, its handlers answer "
		    "503: %s", p->snap->tmpl->name, err);
	pthread_mutex_lock(&p->lock);
	p->failures = 0;
	if (rc < 0)
		atomic_store(&p->broken, 1);
}

static void *
pool_main(void *arg)
{
	struct pool *p = arg;
	struct timespec until;
	long now, wait;

	pthread_mutex_lock(&p->lock);
	while (!p->stopping) {
		now = clock_now_ms();
		pool_recycle(p, now);
		if (p->stopping)
			break;
		if (p->failures >= POOL_REBUILD_AFTER && !p->rebuilt) {
			pool_rebuild(p);
			continue;
		}
		if (p->failures >= POOL_REBUILD_AFTER &&
		    !atomic_load(&p->broken)) {
			log_warnx("template %s: its clones still fail after "
			    "the rebuild: its handlers answer 503",
			    p->snap->tmpl->name);
			atomic_store(&p->broken, 1);
		}
		if (atomic_load(&p->broken)) {
			pthread_cond_wait(&p->wake, &p->lock);
			continue;
		}
		if (p->nidle < p->size) {
			pool_refill_one(p);
			continue;
		}
		if (p->size == 0) {
			pthread_cond_wait(&p->wake, &p->lock);
			continue;
		}
		wait = p->idle[0].born_ms + p->max_age_ms - now;
		clock_deadline(&until, CLOCK_MONOTONIC, wait > 0 ? wait : 1);
		pthread_cond_timedwait(&p->wake, &p->lock, &until);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int
pool_start(struct pool *p, struct snapshot *snap, unsigned size,
    unsigned max_age_ms, int warm)
{
	pthread_condattr_t ca;
	int rc;

	memset(p, 0, sizeof(*p));
	p->snap = snap;
	p->size = size;
	p->max_age_ms = max_age_ms;
	p->warm = warm;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->wake, &ca);
	pthread_condattr_destroy(&ca);
	p->idle = calloc(size + 1, sizeof(*p->idle));
	if (p->idle == NULL) {
		log_warn("calloc pool of %u", size);
		return -1;
	}
	/*
	 * QEMU children die with the thread that forked them
	 * (PR_SET_PDEATHSIG), so idle clones belong to this long-lived
	 * thread, not to a worker.
	 */
	rc = pthread_create(&p->thread, NULL, pool_main, p);
	if (rc != 0) {
		errno = rc;
		log_warn("pthread_create pool %s", snap->tmpl->name);
		return -1;
	}
	p->running = 1;
	return 0;
}

int
pool_take(struct pool *p, struct vm *vm, int *pooled, int timeout_ms,
    char *err, size_t errlen)
{
	struct pool_slot slot;
	int got = 0;

	if (atomic_load(&p->broken)) {
		snprintf(err, errlen, "template %s is broken: its rebuild "
		    "failed", p->snap->tmpl->name);
		return -1;
	}
	pthread_mutex_lock(&p->lock);
	if (p->nidle > 0) {
		pool_pop(p, &slot);
		got = 1;
		pthread_cond_signal(&p->wake);
	}
	pthread_mutex_unlock(&p->lock);
	if (got) {
		*vm = slot.vm;
		/*
		 * A pooled clone answers in milliseconds; one that does not
		 * within POOL_RESUME_TIMEOUT_MS is given up for a restore
		 * rather than hold the event for the whole timeout.
		 */
		if (vm_resume(vm, timeout_ms < POOL_RESUME_TIMEOUT_MS ?
		    timeout_ms : POOL_RESUME_TIMEOUT_MS, err, errlen) == 0) {
			*pooled = 1;
			return 0;
		}
		log_warnx("template %s: pooled clone failed to resume, "
		    "restoring another: %s", p->snap->tmpl->name, err);
	}
	*pooled = 0;
	if (vm_load(p->snap, vm, 0, timeout_ms, err, errlen) == 0 &&
	    vm_resume(vm, timeout_ms, err, errlen) == 0) {
		pthread_mutex_lock(&p->lock);
		p->failures = 0;
		p->rebuilt = 0;
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	pthread_mutex_lock(&p->lock);
	p->failures++;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
	return -1;
}

void
pool_stop(struct pool *p)
{
	struct pool_slot slot;

	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	if (p->running)
		pthread_join(p->thread, NULL);
	p->running = 0;
	while (p->nidle > 0) {
		pool_pop(p, &slot);
		vm_destroy(&slot.vm);
	}
	free(p->idle);
	p->idle = NULL;
}
