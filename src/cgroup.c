/*
 * cgroup.c: one cgroup per VM below vmcgi's own, named after vmcgi's pid
 * and a counter.  With cgroup v2 (a cgroup2 file system at
 * /sys/fs/cgroup) one directory carries memory.max, pids.max and cpu.max;
 * with v1 the memory, pids and cpu hierarchies get a directory each.  The
 * CPU limit is optional (a host may not delegate it); the other two are
 * not.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "cgroup.h"
#include "log.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP2_MAGIC 0x63677270

static int cgroup_v2;
static int cgroup_cpu;		/* v2: the cpu controller is ours too */
static char cgroup_base[CGROUP_MAX_DIRS][PATH_MAX];	/* vmcgi-PID dirs */
static int cgroup_nbase;
static atomic_uint cgroup_seq;

/* Our own path in hierarchy ctrl ("" for v2), from /proc/self/cgroup. */
static int
cgroup_self(const char *ctrl, char *path, size_t len)
{
	char line[PATH_MAX + 64], *p, *q;
	FILE *f;
	int found = -1;

	f = fopen("/proc/self/cgroup", "re");
	if (f == NULL)
		return -1;
	while (found < 0 && fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		p = strchr(line, ':');
		q = p ? strchr(p + 1, ':') : NULL;
		if (q == NULL)
			continue;
		*q = '\0';
		if (ctrl[0] == '\0' ? p[1] == '\0' : strcmp(p + 1, ctrl) == 0) {
			snprintf(path, len, "%s", q + 1);
			found = 0;
		}
	}
	fclose(f);
	return found;
}

static int
cgroup_write(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX + 32];
	ssize_t n;
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, value, strlen(value));
	if (n != (ssize_t)strlen(value))
		rc = n < 0 ? -errno : -EIO;
	close(fd);
	return rc;
}

/*
 * A vmcgi killed outright leaves its (empty) cgroup directories behind;
 * remove those of vmcgi processes that no longer exist, in dir.
 */
static void
cgroup_sweep(const char *dir)
{
	char path[PATH_MAX], sub[PATH_MAX];
	struct dirent *e, *v;
	DIR *d, *vd;
	long pid;

	d = opendir(dir);
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "vmcgi-", 6) != 0)
			continue;
		pid = strtol(e->d_name + 6, NULL, 10);
		if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >=
		    (int)sizeof(path) || (vd = opendir(path)) == NULL)
			continue;
		while ((v = readdir(vd)) != NULL)
			if (strncmp(v->d_name, "vm-", 3) == 0 &&
			    snprintf(sub, sizeof(sub), "%s/%s", path,
			    v->d_name) < (int)sizeof(sub))
				rmdir(sub);
		closedir(vd);
		if (rmdir(path) == 0)
			log_info("cgroups: removed \"%s\", left by a vmcgi "
			    "that is gone", path);
	}
	closedir(d);
}

/* Make base (mount/own/vmcgi-PID) for one hierarchy; 0 or -1 with why. */
static int
cgroup_add_base(const char *mount, const char *ctrl, char *why,
    size_t whylen)
{
	char self[PATH_MAX];
	char *base = cgroup_base[cgroup_nbase];

	if (cgroup_self(ctrl, self, sizeof(self)) < 0) {
		snprintf(why, whylen, "no %s line in /proc/self/cgroup",
		    ctrl[0] ? ctrl : "cgroup2");
		return -1;
	}
	if (cgroup_v2) {
		char own[PATH_MAX + 16];

		/* best effort: the parent must hand the controllers down */
		if (snprintf(own, sizeof(own), "%s%s", mount, self) <
		    (int)sizeof(own)) {
			cgroup_write(own, "cgroup.subtree_control",
			    "+memory +pids");
			cgroup_write(own, "cgroup.subtree_control", "+cpu");
		}
	}
	if (snprintf(base, PATH_MAX, "%s%s", mount,
	    strcmp(self, "/") == 0 ? "" : self) < PATH_MAX)
		cgroup_sweep(base);
	if (snprintf(base, PATH_MAX, "%s%s/vmcgi-%d", mount,
	    strcmp(self, "/") == 0 ? "" : self, (int)getpid()) >= PATH_MAX) {
		snprintf(why, whylen, "cgroup path of \"%s\" too long", self);
		return -1;
	}
	if (mkdir(base, 0755) < 0 && errno != EEXIST) {
		snprintf(why, whylen, "mkdir \"%s\": %s", base,
		    strerror(errno));
		return -1;
	}
	/* v2: children may only use controllers the parent hands down. */
	if (cgroup_v2 && cgroup_write(base, "cgroup.subtree_control",
	    "+memory +pids") < 0) {
		snprintf(why, whylen, "enable memory and pids in \"%s\": %s",
		    base, strerror(errno));
		rmdir(base);
		return -1;
	}
	if (cgroup_v2)
		cgroup_cpu = cgroup_write(base, "cgroup.subtree_control",
		    "+cpu") == 0;
	cgroup_nbase++;
	return 0;
}

int
cgroup_init(char *why, size_t whylen)
{
	struct statfs sfs;

	if (statfs(CGROUP_ROOT, &sfs) < 0) {
		snprintf(why, whylen, "statfs \"%s\": %s", CGROUP_ROOT,
		    strerror(errno));
		return -1;
	}
	cgroup_v2 = sfs.f_type == CGROUP2_MAGIC;
	if (cgroup_v2)
		return cgroup_add_base(CGROUP_ROOT, "", why, whylen);
	if (cgroup_add_base(CGROUP_ROOT "/memory", "memory", why,
	    whylen) < 0 ||
	    cgroup_add_base(CGROUP_ROOT "/pids", "pids", why, whylen) < 0)
		return -1;
	if (cgroup_add_base(CGROUP_ROOT "/cpu", "cpu", why, whylen) < 0)
		log_warnx("cgroups: VMs run without a CPU limit: %s", why);
	else
		cgroup_cpu = 1;
	return 0;
}

int
cgroup_create(struct vm_cgroup *cg, uint64_t mem_bytes, unsigned pids,
    unsigned cpus)
{
	char mem[32], npids[16], quota[32];
	unsigned seq = atomic_fetch_add(&cgroup_seq, 1);
	int i, rc = 0;

	cg->ndirs = 0;
	snprintf(mem, sizeof(mem), "%llu", (unsigned long long)mem_bytes);
	snprintf(npids, sizeof(npids), "%u", pids);
	/* Per period of 100 ms, as the kernel's default period. */
	snprintf(quota, sizeof(quota), "%llu", (unsigned long long)cpus *
	    100000);
	for (i = 0; i < cgroup_nbase && rc == 0; i++) {
		char *d = cg->dirs[cg->ndirs];

		if (snprintf(d, PATH_MAX, "%s/vm-%u", cgroup_base[i],
		    seq) >= PATH_MAX) {
			rc = -ENAMETOOLONG;
			break;
		}
		if (mkdir(d, 0755) < 0) {
			rc = -errno;
			break;
		}
		cg->ndirs++;
		if (cgroup_v2) {
			rc = cgroup_write(d, "memory.max", mem);
			if (rc == 0)
				rc = cgroup_write(d, "memory.swap.max", "0");
			if (rc == -ENOENT)
				rc = 0;	/* no swap accounting: no swap */
			if (rc == 0)
				rc = cgroup_write(d, "pids.max", npids);
			if (rc == 0 && cgroup_cpu) {
				char max[48];

				snprintf(max, sizeof(max), "%s 100000", quota);
				rc = cgroup_write(d, "cpu.max", max);
			}
		} else if (strstr(cgroup_base[i], "/memory/") != NULL)
			rc = cgroup_write(d, "memory.limit_in_bytes", mem);
		else if (strstr(cgroup_base[i], "/cpu/") != NULL)
			rc = cgroup_write(d, "cpu.cfs_quota_us", quota);
		else
			rc = cgroup_write(d, "pids.max", npids);
	}
	if (rc < 0)
		cgroup_remove(cg);
	return rc;
}

int
cgroup_enter(const struct vm_cgroup *cg)
{
	int i, fd;

	for (i = 0; i < cg->ndirs; i++) {
		char path[PATH_MAX + 16];
		size_t n = strlen(cg->dirs[i]);

		/* no snprintf: this runs between fork and exec */
		memcpy(path, cg->dirs[i], n);
		memcpy(path + n, "/cgroup.procs", sizeof("/cgroup.procs"));
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		if (write(fd, "0", 1) != 1) {
			close(fd);
			return -1;
		}
		close(fd);
	}
	return 0;
}

void
cgroup_remove(struct vm_cgroup *cg)
{
	while (cg->ndirs > 0) {
		cg->ndirs--;
		if (rmdir(cg->dirs[cg->ndirs]) < 0 && errno != ENOENT)
			log_warn("rmdir \"%s\"", cg->dirs[cg->ndirs]);
	}
}

void
cgroup_cleanup(void)
{
	while (cgroup_nbase > 0) {
		cgroup_nbase--;
		if (rmdir(cgroup_base[cgroup_nbase]) < 0 && errno != ENOENT)
			log_warn("rmdir \"%s\"", cgroup_base[cgroup_nbase]);
	}
}
