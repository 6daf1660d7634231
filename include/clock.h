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

#endif /* VMCGI_CLOCK_H */
