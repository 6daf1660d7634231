/*
 * jail.h: the file system a clone's QEMU sees.  In a mount namespace of
 * its own, the root is a small tmpfs holding /usr (read-only), the
 * loader's cache, /dev/null, /dev/urandom and /dev/kvm, and a /proc of
 * QEMU's own PID namespace (it reaches its sealed RAM, kernel and initrd
 * as /proc/self/fd/N), and nothing else: no template file, no tenant's
 * directory, no vmcgi state.  Entered with pivot_root, the old root
 * detached.
 */
#ifndef VMCGI_JAIL_H
#define VMCGI_JAIL_H

#include <limits.h>

#define JAIL_MAX_BINDS 16

struct jail_bind {
	char	 path[PATH_MAX];	/* the same outside and inside */
	int	 rdonly;
	int	 exec;		/* a file that may be exec'd (QEMU) */
};

/*
 * Filled in the parent (it allocates nothing and calls nothing unsafe in
 * the child).  root is an empty directory to mount the tmpfs on; each
 * VM's mount namespace has its own mount there.
 */
struct jail {
	char		 root[PATH_MAX];
	struct jail_bind binds[JAIL_MAX_BINDS];
	int		 nbinds;
};

/* Make the empty directory under state_dir.  0, or -1 with a log line. */
int	jail_setup(const char *state_dir, char *root, size_t len);

/* Add a file or directory to bind; 0, or -ENAMETOOLONG / -ENOSPC. */
int	jail_add(struct jail *j, const char *path, int rdonly, int exec);

/*
 * In the child, in its PID namespace, after unshare(CLONE_NEWNS), before
 * exec: build the root and pivot into it.  Only system calls; returns 0
 * or -1 with errno.
 */
int	jail_enter(const struct jail *j);

#endif
