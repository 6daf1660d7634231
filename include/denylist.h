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
 * What neither a handler nor QEMU ever calls here and only widens the
 * kernel they can reach: modules, kexec, reboot, mounts and namespaces,
 * ptrace and other processes' memory, bpf, perf, userfaultfd, keyrings,
 * the clock, swap, accounting, raw I/O ports, file handles.  Most need a
 * capability; the filter keeps the code behind them out of reach of a
 * kernel bug as well.  Each fails with EPERM, as for an unprivileged
 * caller.  The agent adds io_uring for handlers.
 */
#define DENYLIST_COMMON \
	"init_module", "finit_module", "delete_module", "kexec_load", \
	"kexec_file_load", "reboot", "mount", "umount2", "pivot_root", \
	"chroot", "unshare", "setns", "move_mount", "open_tree", "fsopen", \
	"fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace", \
	"process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", \
	"userfaultfd", "keyctl", "add_key", "request_key", "settimeofday", \
	"clock_settime", "clock_adjtime", "adjtimex", "swapon", "swapoff", \
	"acct", "quotactl", "syslog", "iopl", "ioperm", "open_by_handle_at", \
	"name_to_handle_at", "fanotify_init", "lookup_dcookie", \
	"sethostname", "setdomainname", "vhangup"

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
