/*
 * setup.c: the host's setup messages, HELLO to RUN, checked and collected
 * into a job.  Kept apart from agent.c's system calls so that the fuzzer
 * can drive it: the one step with side effects, setting the clock and RNG,
 * is the caller's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/*
 * Answers a HELLO.  Only the first one of a clone sets anything; the host
 * resends until it hears READY, and the copies just get READY again.
 */
static int
setup_hello(struct chan *c, enum agent_state *st, const struct msg *m,
    setup_apply_fn apply)
{
	struct proto_hello h;
	struct proto_ready r;
	int rc;

	if (m->m_len != sizeof(h) || *st > AGENT_GREETED)
		return -EPROTO;
	memcpy(&h, m->m_data, sizeof(h));
	if (*st == AGENT_BOOTED) {
		if ((rc = apply(&h)) != 0)
			return rc;
		*st = AGENT_GREETED;
	}
	explicit_bzero(h.entropy, sizeof(h.entropy));
	r.nonce = h.nonce;
	return chan_send(c, PROTO_READY, &r, sizeof(r));
}

static int
setup_name_char(uint8_t ch, int first)
{
	if (ch == '_' || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z'))
		return 1;
	return !first && ch >= '0' && ch <= '9';
}

/* A valid entry is NAME=value, NAME as in POSIX, with no NUL anywhere. */
static int
setup_env_valid(const uint8_t *p, size_t n)
{
	size_t i;

	if (n == 0 || memchr(p, '\0', n) != NULL)
		return 0;
	for (i = 0; i < n && p[i] != '='; i++) {
		if (!setup_name_char(p[i], i == 0))
			return 0;
	}
	return i > 0 && i < n;
}

/* Stores one ENV entry as a C string.  Returns 0, -EPROTO or -ENOMEM. */
static int
setup_env(struct job *job, const struct msg *m)
{
	char *s;

	if (job->j_nenv >= PROTO_MAX_ENV ||
	    !setup_env_valid(m->m_data, m->m_len))
		return -EPROTO;
	if ((s = malloc(m->m_len + 1)) == NULL)
		return -ENOMEM;
	memcpy(s, m->m_data, m->m_len);
	s[m->m_len] = '\0';
	job->j_env[job->j_nenv++] = s;
	job->j_env[job->j_nenv] = NULL;
	return 0;
}

static int
setup_run(struct job *job, const struct msg *m)
{
	if (m->m_len != sizeof(job->j_run))
		return -EPROTO;
	memcpy(&job->j_run, m->m_data, sizeof(job->j_run));
	if (job->j_run.flags != 0)
		return -EPROTO;
	return 1;
}

/*
 * Takes one setup message in the order HELLO+ SCRIPT* CODE? ENV* RUN; apply
 * sets the clock and RNG from the first HELLO.  Returns 0 to go on, 1 on
 * RUN, -EPROTO on anything out of place, or another -errno.  Never
 * blocks; the only side effects are apply and the READY queued on c.
 */
int
setup_message(struct chan *c, struct job *job, enum agent_state *st,
    const struct msg *m, setup_apply_fn apply)
{
	switch (m->m_type) {
	case PROTO_HELLO:
		return setup_hello(c, st, m, apply);
	case PROTO_SCRIPT:
		if (*st != AGENT_GREETED && *st != AGENT_SCRIPT)
			return -EPROTO;
		if (job->j_script.b_len + m->m_len > PROTO_MAX_SCRIPT)
			return -EPROTO;
		*st = AGENT_SCRIPT;
		return buf_append(&job->j_script, m->m_data, m->m_len);
	case PROTO_CODE:
		/* Once, after the script it was compiled from. */
		if (*st != AGENT_SCRIPT || m->m_len == 0)
			return -EPROTO;
		*st = AGENT_CODE;
		return buf_append(&job->j_code, m->m_data, m->m_len);
	case PROTO_ENV:
		if (*st == AGENT_BOOTED)
			return -EPROTO;
		*st = AGENT_ENV;
		return setup_env(job, m);
	case PROTO_RUN:
		if (*st == AGENT_BOOTED)
			return -EPROTO;
		return setup_run(job, m);
	default:
		return -EPROTO;
	}
}
