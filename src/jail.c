/*
 * jail.c: the root a clone's QEMU sees (see jail.h).  The child half runs
 * between fork and exec of a threaded vmcgi: system calls and plain
 * string copies only.
 */

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "jail.h"
#include "log.h"

int
jail_setup(const char *state_dir, char *root, size_t len)
{
	if ((size_t)snprintf(root, len, "%s/jail", state_dir) >= len) {
		log_warnx("jail: \"%s/jail\" is too long", state_dir);
		return -1;
	}
	if (mkdir(root, 0700) < 0 && errno != EEXIST) {
		log_warn("mkdir \"%s\"", root);
		return -1;
	}
	return 0;
}

int
jail_add(struct jail *j, const char *path, int rdonly, int exec)
{
	if (j->nbinds >= JAIL_MAX_BINDS)
		return -ENOSPC;
	if (path[0] != '/' || strlen(path) >= sizeof(j->binds[0].path))
		return -ENAMETOOLONG;
	strcpy(j->binds[j->nbinds].path, path);
	j->binds[j->nbinds].rdonly = rdonly;
	j->binds[j->nbinds].exec = exec;
	j->nbinds++;
	return 0;
}

/* Joins the jail's root and path into buf (of PATH_MAX * 2). */
static void
jail_join(char *buf, const char *root, const char *path)
{
	size_t n = strlen(root);

	memcpy(buf, root, n);
	strcpy(buf + n, path);
}

/* mkdir -p of every parent of path; path is modified and restored. */
static int
jail_parents(char *path)
{
	char *p;

	for (p = strchr(path + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return 0;
}

/*
 * Binds one file, directory or device at the same path inside.  Files
 * and directories are read-only where asked; nothing is setuid; only
 * devices keep device semantics, only directories (/usr) may exec.
 */
static int
jail_bind_one(const char *root, const struct jail_bind *b)
{
	char dst[PATH_MAX * 2];
	unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID;
	struct stat st;
	int fd;

	if (stat(b->path, &st) < 0)
		return -1;
	jail_join(dst, root, b->path);
	if (jail_parents(dst) < 0)
		return -1;
	if (S_ISDIR(st.st_mode)) {
		if (mkdir(dst, 0755) < 0 && errno != EEXIST)
			return -1;
		flags |= MS_NODEV;
	} else {
		if ((fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0)
			return -1;
		close(fd);
		flags |= (b->exec ? 0 : MS_NOEXEC) |
		    (S_ISCHR(st.st_mode) ? 0 : MS_NODEV);
	}
	if (b->rdonly)
		flags |= MS_RDONLY;
	if (mount(b->path, dst, NULL, MS_BIND, NULL) < 0 ||
	    mount(NULL, dst, NULL, flags, NULL) < 0)
		return -1;
	return 0;
}

int
jail_enter(const struct jail *j)
{
	static const char *const links[][2] = {
		{ "/bin", "usr/bin" }, { "/sbin", "usr/sbin" },
		{ "/lib", "usr/lib" }, { "/lib64", "usr/lib64" },
	};
	char path[PATH_MAX * 2];
	size_t i;
	int k;

	/* Nothing mounted here may show outside, or the other way. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -1;
	if (mount("vmcgi-jail", j->root, "tmpfs", MS_NOSUID | MS_NODEV |
	    MS_NOEXEC, "mode=0755,size=64k") < 0)
		return -1;
	for (i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		jail_join(path, j->root, links[i][0]);
		if (symlink(links[i][1], path) < 0)
			return -1;
	}
	for (k = 0; k < j->nbinds; k++)
		if (jail_bind_one(j->root, &j->binds[k]) < 0)
			return -1;
	/*
	 * QEMU opens its sealed RAM, kernel and initrd as /proc/self/fd/N.
	 * This proc belongs to QEMU's own PID namespace, where it is alone,
	 * and shows only process directories (subset=pid): no /proc/sys,
	 * no kernel symbols, no other process.
	 */
	jail_join(path, j->root, "/proc");
	if (mkdir(path, 0555) < 0 || mount("proc", path, "proc", MS_NOSUID |
	    MS_NODEV | MS_NOEXEC | MS_RDONLY, "subset=pid,hidepid=invisible")
	    < 0)
		return -1;
	jail_join(path, j->root, "/.old");
	if (mkdir(path, 0700) < 0 ||
	    syscall(SYS_pivot_root, j->root, path) < 0 || chdir("/") < 0 ||
	    umount2("/.old", MNT_DETACH) < 0 || rmdir("/.old") < 0)
		return -1;
	return mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID |
	    MS_NODEV | MS_NOEXEC, NULL);
}
