/*
 * clock.h: the monotonic millisecond clock every deadline in vmcgi uses.
 */
#ifndef VMCGI_CLOCK_H
#define VMCGI_CLOCK_H

#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC: immune to the wall clock being set. */
static inline long
clock_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/*
 * The absolute time ms from now on clock id, for pthread_cond_timedwait
 * (a condvar made with that clock) and pthread_timedjoin_np (REALTIME).
 */
static inline void
clock_deadline(struct timespec *ts, clockid_t id, long ms)
{
	clock_gettime(id, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

#endif /* VMCGI_CLOCK_H */
