/*
 * test_privsep.c: the FastCGI process's fall to no privilege, in a forked
 * child as vmcgi does it (needs root, as vmcgi does), and the privileged
 * side's check of what that process may send.
 */
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "check.h"
#include "privsep.h"

/*
 * Fork, drop as vmcgi does, run try in the child; the child's wait status
 * and what it wrote to a pipe (its stderr too) come back.
 */
static int
in_child(void (*try)(void), char *out, size_t len)
{
	struct config c;
	struct passwd *pw = getpwnam("nobody");
	pid_t parent = getpid(), pid;
	int p[2], status = -1;
	ssize_t n;
	size_t got = 0;

	memset(&c, 0, sizeof(c));
	c.user_uid = pw ? pw->pw_uid : 65534;
	c.user_gid = pw ? pw->pw_gid : 65534;
	if (pipe(p) < 0)
		return -1;
	fflush(stdout);
	if ((pid = fork()) == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		privsep_drop(&c, parent, NULL, 0);
		try();
		_exit(0);
	}
	close(p[1]);
	while (got < len - 1 && (n = read(p[0], out + got,
	    len - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(p[0]);
	waitpid(pid, &status, 0);
	return status;
}

static void
try_identity(void)
{
	char buf[256];
	int fd, err, open3;

	fd = open("/etc/hostname", O_RDONLY);
	err = fd < 0 ? errno : 0;
	open3 = fcntl(3, F_GETFD) >= 0;
	snprintf(buf, sizeof(buf), "uid=%d euid=%d gid=%d open=%d/%d "
	    "fds3+=%d\n", (int)getuid(), (int)geteuid(), (int)getgid(), fd,
	    err, open3);
	(void)!write(1, buf, strlen(buf));
}

static void
try_socket(void)
{
	socket(AF_INET, SOCK_STREAM, 0);
	(void)!write(1, "socket returned\n", 16);
}

static void
try_fork(void)
{
	/* A process, not a thread: not in the filter. */
	syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0UL);
	(void)!write(1, "clone returned\n", 15);
}

static void
try_exec(void)
{
	char *argv[] = { "/bin/true", NULL };

	execv(argv[0], argv);
	(void)!write(1, "exec returned\n", 14);
}

static void
test_drop(void)
{
	char out[512], want[128];
	struct passwd *pw = getpwnam("nobody");
	int st, keep;

	if (geteuid() != 0) {
		CHECK(1, "# skipped: privsep needs root");
		return;
	}
	keep = open("/dev/null", O_RDONLY);	/* fd 3: must be closed */
	st = in_child(try_identity, out, sizeof(out));
	snprintf(want, sizeof(want), "uid=%d euid=%d gid=%d open=-1/%d "
	    "fds3+=0\n", (int)pw->pw_uid, (int)pw->pw_uid, (int)pw->pw_gid,
	    EACCES);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
	    strcmp(out, want) == 0, "unprivileged, opens nothing, inherits "
	    "no descriptor: %s", out);
	close(keep);
	st = in_child(try_socket, out, sizeof(out));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 70 &&
	    strstr(out, "system call 41,") != NULL &&
	    strstr(out, "returned") == NULL, "socket(2) ends it: %s", out);
	st = in_child(try_fork, out, sizeof(out));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 70 &&
	    strstr(out, "returned") == NULL, "fork ends it: %s", out);
	st = in_child(try_exec, out, sizeof(out));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 70 &&
	    strstr(out, "returned") == NULL, "execve ends it: %s", out);
}

static void
test_valid(void)
{
	struct broker_msg m;

	memset(&m, 0, sizeof(m));
	m.type = BROKER_TAKE;
	m.handler = 2;
	memcpy(m.id, "0123456789abcdef", BROKER_ID_LEN);
	CHECK(broker_valid(&m, sizeof(m), 0, 3), "a TAKE");
	CHECK(!broker_valid(&m, sizeof(m), 1, 3), "no TAKE while holding");
	CHECK(!broker_valid(&m, sizeof(m) - 1, 0, 3), "short");
	CHECK(!broker_valid(&m, sizeof(m) + 1, 0, 3), "long");
	CHECK(!broker_valid(&m, sizeof(m), 0, 2), "handler out of range");
	m.id[3] = '/';
	CHECK(!broker_valid(&m, sizeof(m), 0, 3), "id not hex");
	m.id[3] = '3';
	m.id[16] = 'x';
	CHECK(!broker_valid(&m, sizeof(m), 0, 3), "id not terminated");
	m.type = BROKER_DONE;
	CHECK(broker_valid(&m, sizeof(m), 1, 3), "a DONE");
	CHECK(!broker_valid(&m, sizeof(m), 0, 3), "no DONE without a VM");
	m.type = 7;
	CHECK(!broker_valid(&m, sizeof(m), 1, 3), "unknown type");
}

int
main(void)
{
	test_valid();
	test_drop();
	return check_done();
}
