/*
 * route.h: from the path the web server sent to a registered handler.
 */
#ifndef VMCGI_ROUTE_H
#define VMCGI_ROUTE_H

#include "config.h"

#define ROUTE_PATH_MAX 1024

enum route_result {
	ROUTE_OK = 0,
	ROUTE_BAD_REQUEST,	/* odd bytes, "..", over-long: 400 */
	ROUTE_NOT_FOUND,	/* well-formed but not registered: 404 */
};

/*
 * Match path against PREFIX/TENANT/HANDLER and look the handler up.
 * Never touches the file system.  On ROUTE_OK, *out is set.
 */
enum route_result route_match(const struct config *cfg, const char *path,
		    struct handler **out);

#endif /* VMCGI_ROUTE_H */
