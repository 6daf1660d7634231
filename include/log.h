/*
 * log.h: vmcgi's messages, on the err(3) model.
 *
 * The plain variants append strerror(errno); the x variants do not.  Lines
 * go to stderr with a level and, for a request, its id, so one grep for an
 * id shows everything that happened to that event.
 */
#ifndef VMCGI_LOG_H
#define VMCGI_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

void	log_init(const char *progname, enum log_level level);
void	log_set_level(enum log_level level);
int	log_level_parse(const char *s, enum log_level *out);

void	log_warn(const char *fmt, ...) LOG_PRINTF(1, 2);
void	log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);
void	log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void	log_debug(const char *fmt, ...) LOG_PRINTF(1, 2);

/* Print and exit(1); only main and start-up code call these. */
#define LOG_NORETURN __attribute__((noreturn))

void	fatal(const char *fmt, ...) LOG_PRINTF(1, 2) LOG_NORETURN;
void	fatalx(const char *fmt, ...) LOG_PRINTF(1, 2) LOG_NORETURN;

/* Request-scoped lines carry "req=ID". */
void	log_req(enum log_level lvl, const char *id, const char *fmt, ...)
	    LOG_PRINTF(3, 4);

#endif /* VMCGI_LOG_H */
