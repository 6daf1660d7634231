/*
 * denylist.h: a seccomp filter that makes the named system calls fail
 * with EPERM and allows the rest, built once as BPF so that a child
 * between fork and exec installs it with one prctl.  libseccomp's own
 * seccomp_load generates the program and allocates memory: neither fits
 * a child of a threaded vmcgi, and under TCG the agent would pay for the
 * generation in every event.  Shared by vmcgi (QEMU) and the agent
 * (handlers); header-only because the two are separate programs.
 */
#ifndef VMCGI_DENYLIST_H
#define VMCGI_DENYLIST_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/filter.h>
#include <seccomp.h>

/*
 * Fills prog with the filter; names unknown on this architecture are
 * skipped.  System calls of another architecture (i386 through int 0x80
 * on x86_64) kill the caller.  Returns 0 or -errno.
 */
static inline int
denylist_build(const char *const *names, size_t n, struct sock_fprog *prog)
{
	scmp_filter_ctx ctx;
	char tmp[8192];
	ssize_t got = -1;
	size_t i;
	int p[2], rc = 0, nr;

	if ((ctx = seccomp_init(SCMP_ACT_ALLOW)) == NULL)
		return -ENOMEM;
	/*
	 * A binary tree of system call numbers, not a list: every call the
	 * process makes runs the filter, in the guest under TCG too.
	 */
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	for (i = 0; rc == 0 && i < n; i++) {
		nr = seccomp_syscall_resolve_name(names[i]);
		if (nr != __NR_SCMP_ERROR)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM),
			    nr, 0);
	}
	/* A few hundred bytes of BPF: a pipe takes it whole. */
	if (rc == 0 && pipe2(p, O_CLOEXEC) == -1)
		rc = -errno;
	else if (rc == 0) {
		rc = seccomp_export_bpf(ctx, p[1]);
		close(p[1]);
		if (rc == 0)
			got = read(p[0], tmp, sizeof(tmp));
		close(p[0]);
	}
	seccomp_release(ctx);
	if (rc != 0)
		return rc;
	if (got <= 0 || got % sizeof(struct sock_filter) != 0)
		return -EIO;
	if ((prog->filter = malloc(got)) == NULL)
		return -ENOMEM;
	memcpy(prog->filter, tmp, got);
	prog->len = got / sizeof(struct sock_filter);
	return 0;
}

#endif
