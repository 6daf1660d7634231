/*
 * agent.h: the vmcgi guest agent, PID 1 of every guest.
 *
 * The agent answers the host over the virtio-serial port named
 * PROTO_PORT_NAME and runs one handler per VM as an unprivileged user.
 */
#ifndef VMCGI_AGENT_H
#define VMCGI_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../include/proto.h"

#define AGENT_UID 1000
#define AGENT_GID 1000
#define AGENT_SCRIPT_DIR "/run/vmcgi"
#define AGENT_SCRIPT_PATH AGENT_SCRIPT_DIR "/handler"
/*
 * cgroups (v2) made by guest/init: an exec'd handler is born in run, the
 * python3 zygote in zygote; limits are set on sandbox, their parent.
 */
#define AGENT_CG_SANDBOX "/sys/fs/cgroup/sandbox"
#define AGENT_CG_RUN AGENT_CG_SANDBOX "/run"
#define AGENT_CG_ZYGOTE AGENT_CG_SANDBOX "/zygote"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/* A byte queue: append at the tail, consume from the head. */
struct buf {
	uint8_t *b_data;
	size_t b_off;		/* first unconsumed byte */
	size_t b_len;		/* unconsumed bytes */
	size_t b_cap;
};

int buf_append(struct buf *, const void *, size_t);
void buf_consume(struct buf *, size_t);
void buf_free(struct buf *);
#define buf_head(b) ((b)->b_data + (b)->b_off)

/* The channel to the host: a non-blocking port plus its two queues. */
struct chan {
	int c_fd;
	struct buf c_in;
	struct buf c_out;
};

/* One message as read; m_data points into c_in until chan_done. */
struct msg {
	uint32_t m_type;
	uint32_t m_len;
	const uint8_t *m_data;
};

int chan_open(struct chan *);
int chan_send(struct chan *, uint32_t, const void *, size_t);
int chan_flush(struct chan *);
int chan_fill(struct chan *);
int chan_next(struct chan *, struct msg *);
int chan_find_hello(struct chan *, struct msg *);
void chan_done(struct chan *, const struct msg *);

/* What the host asked for before RUN. */
struct job {
	struct buf j_script;
	struct buf j_code;	/* CODE from the host, or empty */
	char *j_env[PROTO_MAX_ENV + 1];	/* NULL-terminated */
	size_t j_nenv;
	struct proto_run j_run;
};

/* Where the setup messages are; each state allows the next messages. */
enum agent_state {
	AGENT_BOOTED,		/* READY(0) sent, waiting for a HELLO */
	AGENT_GREETED,		/* clock and RNG set, READY(nonce) sent */
	AGENT_SCRIPT,		/* SCRIPT seen */
	AGENT_CODE,		/* CODE seen: no more SCRIPT */
	AGENT_ENV,		/* ENV seen */
};

typedef int (*setup_apply_fn)(const struct proto_hello *);

int setup_message(struct chan *, struct job *, enum agent_state *,
    const struct msg *, setup_apply_fn);

int handler_run(struct chan *, struct job *, int);
void handler_warm(void);

/* sandbox.c */
pid_t sandbox_fork(const char *);
void sandbox_empty(const char *);
/* Limits on the sandbox cgroup and the filter; 0 or -errno, logged. */
int sandbox_init(void);
/* In a child, after setuid: rlimits, no_new_privs, seccomp; 0 or -errno. */
int sandbox_enter(void);

int zygote_start(void);
int zygote_ready(void);
int zygote_warm(void);
int zygote_spawn(const struct job *, const int[3], int, pid_t *,
    struct buf *);
int zygote_wanted(const struct job *);

int agent_reap(pid_t, int *);
void agent_idle(struct chan *, int);

void log_warn(const char *, ...)
    __attribute__((format(printf, 1, 2)));
void log_warnx(const char *, ...)
    __attribute__((format(printf, 1, 2)));

#endif /* VMCGI_AGENT_H */
