/*
 * broker.h: what the FastCGI process may ask of the privileged one, over
 * one SOCK_SEQPACKET socketpair per worker thread (docs/security.md,
 * "Privilege separation").
 *
 * The FastCGI process (unprivileged, under a seccomp filter) parses what
 * the web server sends; the privileged process owns the VMs.  A worker
 * asks TAKE for a handler: the privileged side opens the handler's script
 * inside its tenant's directory, takes an admission slot, takes a clone
 * from the pool and hands over the clone's agent channel and the script
 * as descriptors.  DONE gives both back: the VM is killed and reaped and
 * the slot released before the reply.  A channel holds at most one VM.
 * Every message has one fixed size; anything else, or a channel closed
 * while the FastCGI process lives, ends that process (and so vmcgi).
 */
#ifndef VMCGI_BROKER_H
#define VMCGI_BROKER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "vm.h"

#define BROKER_TAKE	1
#define BROKER_DONE	2

#define BROKER_ID_LEN	17	/* a request id and its NUL */

struct broker_msg {
	uint32_t	type;		/* BROKER_TAKE or BROKER_DONE */
	uint32_t	handler;	/* TAKE: index into cfg->handlers */
	char		id[BROKER_ID_LEN]; /* TAKE: for the log lines */
};

enum broker_status {
	BROKER_OK,		/* channel and script descriptors attached */
	BROKER_NO_SCRIPT,	/* the script cannot be read: why says */
	BROKER_BUSY,		/* over a limit, queue full */
	BROKER_WAITED,		/* over a limit for queue_timeout */
	BROKER_NO_VM,		/* no clone could be started */
	BROKER_DONE_OK,		/* the answer to DONE */
};

struct broker_reply {
	uint32_t	status;		/* enum broker_status */
	uint32_t	pooled;
	uint32_t	load_ms;
	uint32_t	resume_ms;
	uint32_t	nunread;	/* channel bytes that follow */
	char		why[256];	/* NUL-terminated */
};

/* The privileged side: one thread per channel.  */
struct broker {
	struct server	*srv;
	int		 fd;
	int		 index;		/* the worker's number */
	int		 peer;	/* pidfd of the FastCGI process */
	pthread_t	 thread;
};

/* Start serving b->fd; 0, or -1 with a log line. */
int	broker_start(struct broker *b);

/* Wait for the thread, which ends when the FastCGI side closed. */
void	broker_join(struct broker *b);

/*
 * Whether m, of len bytes, is a message a channel may send now (held: it
 * holds a VM) for a configuration of nhandlers.  For the thread and the
 * unit tests.
 */
int	broker_valid(const struct broker_msg *m, ssize_t len, int held,
	    size_t nhandlers);

/*
 * The FastCGI side.  TAKE: on BROKER_OK vm->chan is the clone's channel
 * (with what the privileged side had read of it), *script the script's
 * descriptor, and vm's times and *pooled are set.  Returns the status, or
 * -errno when the channel broke (why says so).  Blocks.
 */
int	broker_take(int fd, uint32_t handler, const char *id, struct vm *vm,
	    int *pooled, int *script, char *why, size_t whylen);

/* DONE: the VM is gone and its slot free when this returns; 0 or -errno. */
int	broker_done(int fd, struct vm *vm);

#endif /* VMCGI_BROKER_H */
