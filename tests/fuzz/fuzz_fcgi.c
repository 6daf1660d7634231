/*
 * fuzz_fcgi.c: the fuzzer's bytes as one FastCGI connection, handed to
 * libfcgi the way src/worker.c does (our own descriptor, kept, detached),
 * then vmcgi's checks before any VM: parameter limits, route, method,
 * body and CONTENT_LENGTH, and the answer's head.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "config.h"
#include "fcgiguard.h"
#include "log.h"
#include "worker.h"

#define FUZZ_CONFIG "tests/fuzz/fuzz.ini"
#define FUZZ_INPUT_MAX 65536	/* fits a socket buffer: no writer thread */

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct config fuzz_cfg;
static struct server fuzz_srv;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[512];

	(void)argc, (void)argv;
	log_init("fuzz_fcgi", LOG_LVL_ERROR);
	if (config_load(FUZZ_CONFIG, &fuzz_cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_fcgi: %s (run from the top directory)\n",
		    err);
		exit(1);
	}
	if (FCGX_Init() != 0) {
		fprintf(stderr, "fuzz_fcgi: FCGX_Init failed\n");
		exit(1);
	}
	fuzz_srv.cfg = &fuzz_cfg;
	return 0;
}

/* Read what vmcgi answered, so its writes never wait on us. */
static void
fuzz_drain(int fd)
{
	char buf[65536];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* As worker_main and worker_finish do with an accepted connection. */
static void
fuzz_serve(int fd)
{
	FCGX_Request req;

	FCGX_InitRequest(&req, -1, 0);
	fcgiguard_start(fd);
	req.ipcFd = fd;
	req.keepConnection = 1;
	req.detached = 1;
	if (FCGX_Accept_r(&req) == 0)
		request_check(&fuzz_srv, &req);
	if (req.ipcFd >= 0 && req.in != NULL)
		FCGX_Finish_r(&req);
	if (req.ipcFd >= 0)
		close(req.ipcFd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];

	if (size > FUZZ_INPUT_MAX)
		return -1;	/* keep it out of the corpus */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("fuzz_fcgi: socketpair");
		abort();
	}
	/* A stuck read or write is a finding, not a hang of the run. */
	worker_timeouts(sv[1], 2000);
	if (size > 0 && write(sv[0], data, size) != (ssize_t)size) {
		perror("fuzz_fcgi: write");
		abort();
	}
	shutdown(sv[0], SHUT_WR);
	fuzz_serve(sv[1]);
	fuzz_drain(sv[0]);
	close(sv[0]);
	return 0;
}
