/*
 * check.h: a minimal TAP producer for vmcgi's unit tests.
 */
#ifndef VMCGI_CHECK_H
#define VMCGI_CHECK_H

#include <stdio.h>

static int check_n, check_failed;

#define CHECK(cond, ...)						\
	do {								\
		check_n++;						\
		if (cond) {						\
			printf("ok %d - ", check_n);			\
		} else {						\
			check_failed++;					\
			printf("not ok %d - %s:%d: ", check_n,		\
			    __FILE__, __LINE__);			\
		}							\
		printf(__VA_ARGS__);					\
		printf("\n");						\
	} while (0)

static inline int
check_done(void)
{
	printf("1..%d\n", check_n);
	return check_failed ? 1 : 0;
}

#endif /* VMCGI_CHECK_H */
