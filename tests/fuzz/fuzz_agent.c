/*
 * fuzz_agent.c: the guest end of the agent channel, up to the point where
 * the agent would fork the handler.  The fuzzer's bytes are what a hostile
 * host writes after a restore: the agent's chan_fill reads them, and the
 * loop of agent.c's agent_setup takes HELLO (found with chan_find_hello),
 * SCRIPT, CODE, ENV and RUN through setup_message.  A job that reaches
 * RUN is judged by the zygote's parser of the "#!" line and environment.
 *
 * The clock and RNG are left alone: the HELLO step is a stub that only
 * checks what agent_hello_apply would be given.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/agent/agent.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* chan_find_hello promised a sane time; hold it to that. */
static int
fuzz_apply(const struct proto_hello *h)
{
	if (h->sec <= 0 || h->nsec < 0 || h->nsec >= 1000000000)
		abort();
	return 0;
}

static void
fuzz_job_free(struct job *job)
{
	size_t i;

	for (i = 0; i < job->j_nenv; i++)
		free(job->j_env[i]);
	buf_free(&job->j_script);
	buf_free(&job->j_code);
}

/* agent_setup without the poll: 1 on RUN, 0 for more, -errno. */
static int
fuzz_setup(struct chan *c, struct job *job, enum agent_state *st)
{
	struct msg m;
	int rc;

	for (;;) {
		if (*st == AGENT_BOOTED)
			rc = chan_find_hello(c, &m);
		else
			rc = chan_next(c, &m);
		if (rc <= 0)
			return rc;
		rc = setup_message(c, job, st, &m, fuzz_apply);
		chan_done(c, &m);
		if (rc != 0)
			return rc;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum agent_state st = AGENT_BOOTED;
	struct chan c;
	struct job job;
	int pfd[2], rc = 0;
	size_t off = 0;
	ssize_t w;

	memset(&c, 0, sizeof(c));
	memset(&job, 0, sizeof(job));
	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0) {
		perror("pipe2");
		abort();
	}
	c.c_fd = pfd[0];
	while (rc == 0 && (off < size || c.c_in.b_len > 0)) {
		w = off < size ? write(pfd[1], data + off, size - off) : 0;
		off += w > 0 ? (size_t)w : 0;
		if (chan_fill(&c) <= 0 && off == size)
			break;
		rc = fuzz_setup(&c, &job, &st);
	}
	if (rc == 0)
		rc = fuzz_setup(&c, &job, &st);
	if (rc == 1)
		zygote_wanted(&job);
	close(pfd[0]);
	close(pfd[1]);
	buf_free(&c.c_in);
	buf_free(&c.c_out);
	fuzz_job_free(&job);
	return 0;
}
