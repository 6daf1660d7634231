/*
 * log.c: formatted messages to stderr, one write per line so lines from
 * concurrent workers never interleave.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_prog = "vmcgi";
static enum log_level log_min = LOG_LVL_INFO;

static const char *const log_names[] = { "debug", "info", "warn", "error" };

void
log_init(const char *progname, enum log_level level)
{
	log_prog = progname;
	log_min = level;
}

void
log_set_level(enum log_level level)
{
	log_min = level;
}

int
log_level_parse(const char *s, enum log_level *out)
{
	size_t i;

	for (i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
		if (strcmp(s, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

/*
 * Format one line: time, program, level, optional request id, message and,
 * when errnum is not zero, its text.  Writes it with a single write(2).
 */
static void
log_vline(enum log_level lvl, const char *id, int errnum, const char *fmt,
    va_list ap)
{
	char line[2048], stamp[32];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	if (lvl < log_min)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line, sizeof(line), "%s.%03ldZ %s %s: ", stamp,
	    ts.tv_nsec / 1000000, log_prog, log_names[lvl]);
	n = r < 0 ? 0 : (size_t)r;
	if (id != NULL && n < sizeof(line)) {
		r = snprintf(line + n, sizeof(line) - n, "req=%s ", id);
		n += r < 0 ? 0 : (size_t)r;
	}
	if (n < sizeof(line)) {
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		n += r < 0 ? 0 : (size_t)r;
	}
	if (errnum != 0 && n < sizeof(line)) {
		r = snprintf(line + n, sizeof(line) - n, ": %s",
		    strerror(errnum));
		n += r < 0 ? 0 : (size_t)r;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0)
		return;	/* nowhere left to report it */
}

#define LOG_FORWARD(lvl, id, errnum)			\
	do {						\
		va_list ap;				\
		va_start(ap, fmt);			\
		log_vline(lvl, id, errnum, fmt, ap);	\
		va_end(ap);				\
	} while (0)

void
log_warn(const char *fmt, ...)
{
	int saved = errno;

	LOG_FORWARD(LOG_LVL_WARN, NULL, saved);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	LOG_FORWARD(LOG_LVL_WARN, NULL, 0);
}

void
log_info(const char *fmt, ...)
{
	LOG_FORWARD(LOG_LVL_INFO, NULL, 0);
}

void
log_debug(const char *fmt, ...)
{
	LOG_FORWARD(LOG_LVL_DEBUG, NULL, 0);
}

void
log_req(enum log_level lvl, const char *id, const char *fmt, ...)
{
	LOG_FORWARD(lvl, id, 0);
}

void
fatal(const char *fmt, ...)
{
	int saved = errno;

	LOG_FORWARD(LOG_LVL_ERROR, NULL, saved);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	LOG_FORWARD(LOG_LVL_ERROR, NULL, 0);
	exit(1);
}
