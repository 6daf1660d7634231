/*
 * route.c: the only way from a request path to code that runs.  A path
 * either names a registered handler exactly or is refused; nothing in it is
 * ever joined to a file system path.
 */
#include <string.h>

#include "route.h"

/* Bytes that have no business in a handler path once nginx decoded it. */
static int
route_byte_odd(unsigned char c)
{
	return c <= 0x20 || c >= 0x7f || c == '%' || c == '\\';
}

static enum route_result
route_check_bytes(const char *path)
{
	const char *p;

	for (p = path; *p != '\0'; p++)
		if (route_byte_odd((unsigned char)*p))
			return ROUTE_BAD_REQUEST;
	for (p = path; (p = strstr(p, "/..")) != NULL; p += 3)
		if (p[3] == '/' || p[3] == '\0')
			return ROUTE_BAD_REQUEST;
	for (p = path; (p = strstr(p, "/.")) != NULL; p += 2)
		if (p[2] == '/' || p[2] == '\0')
			return ROUTE_BAD_REQUEST;
	return ROUTE_OK;
}

enum route_result
route_match(const struct config *cfg, const char *path, struct handler **out)
{
	char tenant[CONFIG_NAME_MAX + 1], name[CONFIG_NAME_MAX + 1];
	size_t plen = strlen(cfg->prefix), tlen, nlen;
	const char *rest, *slash;
	enum route_result rc;

	if (path == NULL || path[0] != '/' ||
	    strnlen(path, ROUTE_PATH_MAX + 1) > ROUTE_PATH_MAX)
		return ROUTE_BAD_REQUEST;
	rc = route_check_bytes(path);
	if (rc != ROUTE_OK)
		return rc;
	if (strncmp(path, cfg->prefix, plen) != 0 || path[plen] != '/')
		return ROUTE_NOT_FOUND;
	rest = path + plen + 1;
	slash = strchr(rest, '/');
	if (slash == NULL || strchr(slash + 1, '/') != NULL)
		return ROUTE_NOT_FOUND;
	tlen = (size_t)(slash - rest);
	nlen = strlen(slash + 1);
	if (!config_name_valid(rest, tlen) ||
	    !config_name_valid(slash + 1, nlen))
		return ROUTE_NOT_FOUND;
	memcpy(tenant, rest, tlen);
	tenant[tlen] = '\0';
	memcpy(name, slash + 1, nlen);
	name[nlen] = '\0';
	*out = config_handler(cfg, tenant, name);
	return *out != NULL ? ROUTE_OK : ROUTE_NOT_FOUND;
}
