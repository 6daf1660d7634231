/*
 * vm.h: QEMU microvm processes: the template booted once and snapshotted,
 * and the clones restored from that snapshot, one per event.
 */
#ifndef VMCGI_VM_H
#define VMCGI_VM_H

#include <pthread.h>
#include <sys/types.h>

#include "cgroup.h"
#include "jail.h"
#include "chan.h"
#include "config.h"
#include "qmp.h"

/* A template's snapshot on disk, ready to be cloned. */
struct snapshot {
	const struct tmpl *tmpl;
	const char	*qemu;
	char		*mem_path; /* guest RAM, mapped private by clones */
	char		*state_path; /* device state, migration stream */
	char		*stamp_path;	/* what they were made from */
	pthread_rwlock_t files;		/* held to rename the pair */
	const char	*accel;		/* "kvm" or "tcg" */
	char		*cmdline;	/* guest kernel command line */
	struct jail	*jail;		/* what a clone's QEMU sees */
	/*
	 * Sealed copies (memfd, no write possible by anyone) of the RAM
	 * file, kernel and initrd, made when the snapshot is ready: a clone
	 * gets these, never a path on disk, so a QEMU taken over by its
	 * guest cannot change what later clones of other tenants start
	 * from.  Replaced under files by a rebuild.
	 */
	int		 sealed[3];
	int		 kvm_gid;	/* -1: no group needed for kvm */
	int		 reused; /* 1 if an earlier run's snapshot fit */
	unsigned	 boot_ms;	/* cold boot to ready, if booted now */
};

/* One live clone. */
struct vm {
	pid_t		 pid;
	struct chan	 chan;
	struct qmp	 qmp;
	int		 errfd;	/* QEMU's stderr, non-blocking */
	struct vm_cgroup cg;		/* ndirs 0: none */
	uid_t		 uid;		/* 0 for the template */
	unsigned	 load_ms;	/* spawn to state loaded */
	unsigned	 resume_ms;	/* cont to guest READY */
};

/*
 * Make sure a snapshot of t exists and matches its inputs: reuse the one in
 * cfg->state_dir if its stamp fits, else cold boot the template and
 * snapshot it.  Blocks for the boot.  0, or -1 with a message in err.
 */
int	snapshot_prepare(struct snapshot *s, const struct config *cfg,
	    const struct tmpl *t, const char *accel, unsigned long tsc_khz,
	    char *err, size_t errlen);
void	snapshot_free(struct snapshot *s);

/*
 * Cold boot the template again and replace its snapshot, for clones that
 * keep failing.  Clones alive keep their old RAM file (a rename leaves the
 * inode).  Blocks for the boot.  0, or -1 with a message in err.
 */
int	snapshot_rebuild(struct snapshot *s, char *err, size_t errlen);

/*
 * Start a clone of s and load its state; it stays paused, holding no CPU.
 * With background set (the pool's refills) QEMU runs at nice
 * VM_NICE_BACKGROUND until vm_resume, so that loading and warming clones
 * ahead of time never takes CPU from events running now.  Blocks up to
 * timeout_ms.  0, or -1 with a message in err and nothing left running.
 */
#define VM_NICE_BACKGROUND 10	/* CFS weight 110 against 1024 */
int	vm_load(struct snapshot *s, struct vm *vm, int background,
	    int timeout_ms, char *err, size_t errlen);

/*
 * Let a loaded clone run a fixed warm-up command in its guest (no tenant
 * input), then stop it again, so that the guest code an event needs is
 * already translated in this QEMU process (under TCG a fresh process
 * translates everything anew).  Blocks up to timeout_ms.  0, or -1 with a
 * message in err and the clone destroyed.
 */
int	vm_warm(struct vm *vm, int timeout_ms, char *err, size_t errlen);

/*
 * Let a loaded clone run and complete the HELLO / READY handshake: its
 * clock and RNG are set now, at take, not when it was loaded.  Blocks up
 * to timeout_ms.  0, or -1 with a message in err and the clone destroyed.
 */
int	vm_resume(struct vm *vm, int timeout_ms, char *err, size_t errlen);

/*
 * Build the seccomp filter every QEMU gets on top of its own -sandbox.
 * Call once at start-up, before any VM.  0, or -errno with a log line.
 */
int	vm_filter_init(void);

/* Kill the clone's QEMU, reap it, close everything.  Idempotent. */
void	vm_destroy(struct vm *vm);

/* Copy up to len-1 bytes QEMU wrote to stderr into buf; returns length. */
size_t	vm_stderr(struct vm *vm, char *buf, size_t len);

/*
 * Put every QEMU started from now on in a cgroup of its own (guest memory
 * plus QEMU's overhead, a thread limit).  Call once at start-up, after
 * cgroup_init succeeded.
 */
void	vm_use_cgroups(void);

/*
 * Every clone's QEMU runs as a uid (and gid) of its own from first to
 * last, no two live VMs alike.  Call once at start-up.
 */
void	vm_use_uids(uid_t first, uid_t last);

/* Kill every QEMU this process still has; for shutdown.  Async-safe. */
void	vm_kill_all(void);

#endif /* VMCGI_VM_H */
