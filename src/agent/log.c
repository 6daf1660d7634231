/*
 * log.c: the agent's messages, on the console it inherited from /init.
 * The host keeps the template's console; clones usually discard theirs.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"

static void
log_vput(int err, const char *fmt, va_list ap)
{
	fputs("vmcgi-agent: ", stderr);
	vfprintf(stderr, fmt, ap);
	if (err)
		fprintf(stderr, ": %s", strerror(err));
	fputc('\n', stderr);
}

/* Logs fmt followed by the text of the current errno, which it keeps. */
void
log_warn(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vput(saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vput(0, fmt, ap);
	va_end(ap);
	errno = saved;
}
