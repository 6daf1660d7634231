/*
 * fcgiguard.h: what vmcgi keeps libfcgi from reading.
 *
 * libfcgi 2.4.2 (Debian's 2.4.2-2+deb12u1 included) aborts the whole
 * process on a name-value pair, in FCGI_PARAMS or in an FCGI_GET_VALUES
 * management record, whose two lengths add up past INT_MAX (its Malloc
 * asserts), and leaks memory on every other management record.  A web
 * server sends neither: vmcgi refuses a connection at the first record
 * out of nginx's sequence (BEGIN_REQUEST, PARAMS, empty PARAMS, STDIN, one
 * request id) or parameter length over 1 MB, before libfcgi parses it.
 */
#ifndef VMCGI_FCGIGUARD_H
#define VMCGI_FCGIGUARD_H

#include <stddef.h>

/*
 * The calling thread starts reading a new connection on fd; libfcgi's
 * next reads of fd are checked record by record from its first byte.
 */
void	fcgiguard_start(int fd);

/*
 * libfcgi's own read function, replaced: libfcgi calls it through its
 * PLT, so this definition in the executable wins.  Returns what read(2)
 * returns, or -1 with EPROTO once fd sent a management record.
 */
int	OS_Read(int fd, char *buf, size_t len);

#endif /* VMCGI_FCGIGUARD_H */
