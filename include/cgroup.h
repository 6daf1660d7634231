/*
 * cgroup.h: a cgroup per QEMU process, so that a VM that runs away (its
 * memory, its threads) is stopped by the kernel before it hurts the host.
 * Works with cgroup v2 and with v1's memory, pids and cpu controllers,
 * which is what this project's machines mount.
 */
#ifndef VMCGI_CGROUP_H
#define VMCGI_CGROUP_H

#include <limits.h>
#include <stdint.h>

#define CGROUP_MAX_DIRS 3	/* v1: memory, pids, cpu */

struct vm_cgroup {
	char	dirs[CGROUP_MAX_DIRS][PATH_MAX];
	int	ndirs;
};

/*
 * Find where vmcgi may create cgroups (below its own).  0, or -1 with a
 * reason in why: VMs then run without cgroups, which the caller logs.
 */
int	cgroup_init(char *why, size_t whylen);

/*
 * Create a cgroup for one VM with these limits: memory, threads and, where
 * the host lets vmcgi, cpus CPUs' worth of time.  0 or -errno.
 */
int	cgroup_create(struct vm_cgroup *cg, uint64_t mem_bytes,
	    unsigned pids, unsigned cpus);

/* In a forked child, before exec: move the caller in.  Async-safe. */
int	cgroup_enter(const struct vm_cgroup *cg);

/* After the VM's process is reaped: remove its cgroup. */
void	cgroup_remove(struct vm_cgroup *cg);

/* At exit, once every VM is reaped: remove vmcgi's own cgroup dirs. */
void	cgroup_cleanup(void);

#endif /* VMCGI_CGROUP_H */
