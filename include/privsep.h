/*
 * privsep.h: the FastCGI process's fall to no privilege (docs/security.md,
 * "Privilege separation").
 */
#ifndef VMCGI_PRIVSEP_H
#define VMCGI_PRIVSEP_H

#include <sys/types.h>

#include "config.h"

/*
 * In the freshly forked FastCGI process, still single-threaded: close all
 * but stdio and keep[], become cfg->user, die with parent, no new
 * privileges, seccomp allowlist.  Exits on any failure.
 */
void	privsep_drop(const struct config *cfg, pid_t parent,
	    const int *keep, int nkeep);

#endif /* VMCGI_PRIVSEP_H */
