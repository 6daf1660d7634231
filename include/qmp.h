/*
 * qmp.h: the few QEMU Machine Protocol exchanges vmcgi needs, over a
 * socketpair whose other end QEMU got as its monitor.
 */
#ifndef VMCGI_QMP_H
#define VMCGI_QMP_H

#include <stddef.h>

struct qmp {
	int	fd;
	size_t	len;
	char	buf[8192];
};

/* Read the greeting and negotiate; 0 or -errno.  Blocks up to timeout. */
int	qmp_open(struct qmp *q, int fd, int timeout_ms);

/*
 * Send one command (a complete JSON object) and wait for its answer,
 * skipping events.  Returns 0 on "return", -EIO on "error" (the answer is
 * copied to reply), or -errno.  Blocks up to timeout_ms.
 */
int	qmp_call(struct qmp *q, const char *cmd, char *reply,
	    size_t replylen, int timeout_ms);

/*
 * Hand fd to QEMU as name (QMP "getfd", the descriptor riding along as
 * SCM_RIGHTS).  0, -EIO or -errno.
 */
int	qmp_send_fd(struct qmp *q, const char *name, int fd, int timeout_ms);

#endif /* VMCGI_QMP_H */
