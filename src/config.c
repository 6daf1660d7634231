/*
 * config.c: read the INI file with iniparser, check every section and key
 * against the tables below, and build the immutable struct config.
 *
 * Unknown keys are errors, not warnings: a misspelt "timout" silently left
 * at its default would be a handler with no limit the operator meant.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <iniparser/iniparser.h>

#include "config.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct loader {
	struct config	*cfg;
	dictionary	*ini;
	char		*dir; /* of the config file, for relative paths */
	const char	*section;
	const char	*key;
	char		*err;
	size_t		 errlen;
};

typedef int (*key_setter)(struct loader *, void *, const char *);

struct key_rule {
	const char	*key;
	key_setter	 set;
	int		 required;
};

static int
load_error(struct loader *l, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (l->key != NULL)
		snprintf(l->err, l->errlen, "%s: [%s] %s: %s", l->cfg->path,
		    l->section, l->key, msg);
	else if (l->section != NULL)
		snprintf(l->err, l->errlen, "%s: [%s]: %s", l->cfg->path,
		    l->section, msg);
	else
		snprintf(l->err, l->errlen, "%s: %s", l->cfg->path, msg);
	return -1;
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		abort(); /* start-up only: no memory is not recoverable */
	return p;
}

int
config_name_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > CONFIG_NAME_MAX)
		return 0;
	if (!islower((unsigned char)s[0]) && !isdigit((unsigned char)s[0]))
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(islower(c) || isdigit(c) || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int
config_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;
	int shift = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift != 0)
		end++;
	if (*end != '\0' || v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

int
config_parse_duration(const char *s, unsigned *ms)
{
	unsigned long long v, mul = 1000;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "m") == 0)
		mul = 60000;
	else if (strcmp(end, "s") != 0 && *end != '\0')
		return -1;
	if (v > UINT_MAX / mul)
		return -1;
	*ms = (unsigned)(v * mul);
	return 0;
}

/* A path from the file, made absolute against the file's directory. */
static char *
load_path(struct loader *l, const char *v)
{
	char *p;

	if (v[0] == '/')
		return xstrdup(v);
	if (asprintf(&p, "%s/%s", l->dir, v) < 0)
		abort();
	return p;
}

static int
set_uint(struct loader *l, const char *v, unsigned lo, unsigned hi,
    unsigned *out)
{
	unsigned long n;
	char *end;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (!isdigit((unsigned char)*v) || *end != '\0' || errno != 0 ||
	    n < lo || n > hi)
		return load_error(l, "\"%s\" is not a number from %u to %u",
		    v, lo, hi);
	*out = (unsigned)n;
	return 0;
}

static int
set_yes_no(struct loader *l, const char *v, int *out)
{
	if (strcmp(v, "yes") == 0)
		*out = 1;
	else if (strcmp(v, "no") == 0)
		*out = 0;
	else
		return load_error(l, "\"%s\" is not yes or no", v);
	return 0;
}

/* [vmcgi] */

static int
g_listen(struct loader *l, void *o, const char *v)
{
	struct config *c = o;

	const char *colon = strrchr(v, ':');
	unsigned port;

	if (v[0] != '/' && (colon == NULL || colon == v ||
	    set_uint(l, colon + 1, 1, 65535, &port) < 0))
		return load_error(l, "\"%s\" is neither /path nor HOST:PORT "
		    "with a port from 1 to 65535", v);
	if (v[0] == '/' && strlen(v) >= 108)
		return load_error(l, "socket path \"%s\" is too long", v);
	free(c->listen);
	c->listen = xstrdup(v);
	return 0;
}

static int
g_owner(struct loader *l, void *o, const char *v)
{
	struct config *c = o;
	struct passwd *pw;
	unsigned id;

	if (isdigit((unsigned char)v[0]))
		return set_uint(l, v, 0, 0x7fffffff, &id) ? -1 :
		    (c->listen_uid = id, 0);
	pw = getpwnam(v);
	if (pw == NULL)
		return load_error(l, "no such user \"%s\"", v);
	c->listen_uid = pw->pw_uid;
	return 0;
}

static int
g_group(struct loader *l, void *o, const char *v)
{
	struct config *c = o;
	struct group *gr;
	unsigned id;

	if (isdigit((unsigned char)v[0]))
		return set_uint(l, v, 0, 0x7fffffff, &id) ? -1 :
		    (c->listen_gid = id, 0);
	gr = getgrnam(v);
	if (gr == NULL)
		return load_error(l, "no such group \"%s\"", v);
	c->listen_gid = gr->gr_gid;
	return 0;
}

static int
g_mode(struct loader *l, void *o, const char *v)
{
	struct config *c = o;
	unsigned long m;
	char *end;

	m = strtoul(v, &end, 8);
	if (*v == '\0' || *end != '\0' || m > 0777)
		return load_error(l, "\"%s\" is not an octal mode", v);
	c->listen_mode = (mode_t)m;
	return 0;
}

static int
g_workers(struct loader *l, void *o, const char *v)
{
	return set_uint(l, v, 1, 256, &((struct config *)o)->workers);
}

static int
g_prefix(struct loader *l, void *o, const char *v)
{
	struct config *c = o;
	size_t n = strlen(v);

	if (v[0] != '/' || (n > 1 && v[n - 1] == '/') || strstr(v, "//") ||
	    strstr(v, "/.") || n > 256 ||
	    strspn(v, "/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789_-.") != n)
		return load_error(l, "\"%s\" is not a path like /hooks", v);
	free(c->prefix);
	c->prefix = xstrdup(n == 1 ? "" : v);
	return 0;
}

static int
g_state_dir(struct loader *l, void *o, const char *v)
{
	struct config *c = o;

	/* The RAM file under it is named in a QEMU option. */
	if (strchr(v, ',') != NULL)
		return load_error(l, "state_dir \"%s\": QEMU cannot take a "
		    "',' in a file name", v);
	free(c->state_dir);
	c->state_dir = load_path(l, v);
	return 0;
}

static int
g_qemu(struct loader *l, void *o, const char *v)
{
	struct config *c = o;

	free(c->qemu);
	c->qemu = load_path(l, v);
	return 0;
}

static int
g_stderr_limit(struct loader *l, void *o, const char *v)
{
	uint64_t n;

	if (config_parse_size(v, &n) < 0 || n > (1 << 20))
		return load_error(l, "\"%s\" is not a size up to 1M", v);
	((struct config *)o)->stderr_limit = (size_t)n;
	return 0;
}

static int
g_log_level(struct loader *l, void *o, const char *v)
{
	if (log_level_parse(v, &((struct config *)o)->log_level) < 0)
		return load_error(l, "\"%s\" is not debug, info, warn or error",
		    v);
	return 0;
}

static int
g_max_vms(struct loader *l, void *o, const char *v)
{
	return set_uint(l, v, 1, 4096, &((struct config *)o)->max_vms);
}

static int
g_max_guest_memory(struct loader *l, void *o, const char *v)
{
	uint64_t n;

	if (config_parse_size(v, &n) < 0 || n < (64 << 20))
		return load_error(l, "\"%s\" is not a size of 64M or more", v);
	((struct config *)o)->max_guest_memory = n;
	return 0;
}

static int
g_queue_timeout(struct loader *l, void *o, const char *v)
{
	unsigned ms;

	if (config_parse_duration(v, &ms) < 0 || ms > 600000)
		return load_error(l, "\"%s\" is not a duration up to 10m", v);
	((struct config *)o)->queue_timeout_ms = ms;
	return 0;
}

static int
g_read_timeout(struct loader *l, void *o, const char *v)
{
	unsigned ms;

	if (config_parse_duration(v, &ms) < 0 || ms < 100 || ms > 3600000)
		return load_error(l, "\"%s\" is not a duration from 100ms to "
		    "60m", v);
	((struct config *)o)->read_timeout_ms = ms;
	return 0;
}

static int
g_retry_after(struct loader *l, void *o, const char *v)
{
	return set_uint(l, v, 1, 3600, &((struct config *)o)->retry_after);
}

/* The FastCGI process's user: anyone but root. */
static int
g_user(struct loader *l, void *o, const char *v)
{
	struct config *c = o;
	struct passwd *pw;

	errno = 0;
	pw = getpwnam(v);
	/* A uid, as listen_owner takes, if no user has that name. */
	if (pw == NULL && v[0] != '\0' && strspn(v, "0123456789") ==
	    strlen(v) && strlen(v) < 11)
		pw = getpwuid((uid_t)strtoul(v, NULL, 10));
	if (pw == NULL)
		return load_error(l, "no user \"%s\"%s%s", v,
		    errno ? ": " : "", errno ? strerror(errno) : "");
	if (pw->pw_uid == 0 || pw->pw_gid == 0)
		return load_error(l, "\"%s\" is root's uid or gid: the "
		    "FastCGI process must hold no privilege", v);
	free(c->user);
	c->user = xstrdup(v);
	c->user_uid = pw->pw_uid;
	c->user_gid = pw->pw_gid;
	return 0;
}

/* "FIRST-LAST": the uids (and gids) clones' QEMUs run as. */
static int
g_vm_uids(struct loader *l, void *o, const char *v)
{
	struct config *c = o;
	unsigned long first, last;
	char *end, *end2;

	errno = 0;
	if (!isdigit((unsigned char)v[0]))
		goto bad;
	first = strtoul(v, &end, 10);
	if (*end != '-' || !isdigit((unsigned char)end[1]) || errno != 0)
		goto bad;
	last = strtoul(end + 1, &end2, 10);
	if (*end2 != '\0' || errno != 0)
		goto bad;
	/* 0 is root; from 2^31 on, some tools take a uid for negative. */
	if (first == 0 || last < first || last > 0x7fffffffUL)
		return load_error(l, "%lu-%lu is not a range of uids from 1 to "
		    "2147483647", first, last);
	c->vm_uid_first = (uid_t)first;
	c->vm_uid_last = (uid_t)last;
	return 0;
bad:
	return load_error(l, "\"%s\" is not FIRST-LAST (two uids)", v);
}

static int
g_code_cache(struct loader *l, void *o, const char *v)
{
	return set_yes_no(l, v, &((struct config *)o)->code_cache);
}

static const struct key_rule global_rules[] = {
	{ "listen", g_listen, 0 },
	{ "listen_owner", g_owner, 0 },
	{ "listen_group", g_group, 0 },
	{ "listen_mode", g_mode, 0 },
	{ "workers", g_workers, 0 },
	{ "prefix", g_prefix, 0 },
	{ "state_dir", g_state_dir, 0 },
	{ "qemu", g_qemu, 0 },
	{ "stderr_limit", g_stderr_limit, 0 },
	{ "log_level", g_log_level, 0 },
	{ "max_vms", g_max_vms, 0 },
	{ "max_guest_memory", g_max_guest_memory, 0 },
	{ "queue_timeout", g_queue_timeout, 0 },
	{ "retry_after", g_retry_after, 0 },
	{ "read_timeout", g_read_timeout, 0 },
	{ "vm_uids", g_vm_uids, 0 },
	{ "user", g_user, 0 },
	{ "code_cache", g_code_cache, 0 },
};

/* [template NAME] */

/* A path from the file that must name something readable of that type. */
static int
load_existing(struct loader *l, const char *v, int dir, char **out)
{
	struct stat st;
	char *p = load_path(l, v);

	if (stat(p, &st) < 0 || access(p, R_OK) < 0) {
		load_error(l, "\"%s\": %s", p, strerror(errno));
		free(p);
		return -1;
	}
	if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
		load_error(l, "\"%s\" is not a %s", p, dir ? "directory" :
		    "regular file");
		free(p);
		return -1;
	}
	*out = p;
	return 0;
}

/* QEMU's option syntax takes a ',' for the next option: refuse it. */
static int
load_qemu_path(struct loader *l, const char *v, char **out)
{
	if (strchr(v, ',') != NULL)
		return load_error(l, "\"%s\": QEMU cannot take a ',' in a "
		    "file name", v);
	return load_existing(l, v, 0, out);
}

static int
t_kernel(struct loader *l, void *o, const char *v)
{
	return load_qemu_path(l, v, &((struct tmpl *)o)->kernel);
}

static int
t_initrd(struct loader *l, void *o, const char *v)
{
	return load_qemu_path(l, v, &((struct tmpl *)o)->initrd);
}

static int
t_memory(struct loader *l, void *o, const char *v)
{
	uint64_t n;

	if (config_parse_size(v, &n) < 0 || n < (64 << 20) ||
	    n > (64ULL << 30) || n % (1 << 20) != 0)
		return load_error(l, "\"%s\" is not whole megabytes from 64M "
		    "to 64G", v);
	((struct tmpl *)o)->memory = n;
	return 0;
}

static int
t_vcpus(struct loader *l, void *o, const char *v)
{
	return set_uint(l, v, 1, 16, &((struct tmpl *)o)->vcpus);
}

static int
t_accel(struct loader *l, void *o, const char *v)
{
	struct tmpl *t = o;

	if (strcmp(v, "auto") == 0)
		t->accel = ACCEL_AUTO;
	else if (strcmp(v, "kvm") == 0)
		t->accel = ACCEL_KVM;
	else if (strcmp(v, "tcg") == 0)
		t->accel = ACCEL_TCG;
	else
		return load_error(l, "\"%s\" is not auto, kvm or tcg", v);
	return 0;
}

static int
t_boot_timeout(struct loader *l, void *o, const char *v)
{
	unsigned ms;

	if (config_parse_duration(v, &ms) < 0 || ms < 1000)
		return load_error(l, "\"%s\" is not a duration of 1s or more",
		    v);
	((struct tmpl *)o)->boot_timeout_ms = ms;
	return 0;
}

static int
t_pool_size(struct loader *l, void *o, const char *v)
{
	return set_uint(l, v, 0, 64, &((struct tmpl *)o)->pool_size);
}

static int
t_pool_max_age(struct loader *l, void *o, const char *v)
{
	unsigned ms;

	if (config_parse_duration(v, &ms) < 0 || ms < 1000)
		return load_error(l, "\"%s\" is not a duration of 1s or more",
		    v);
	((struct tmpl *)o)->pool_max_age_ms = ms;
	return 0;
}

static int
t_pool_warm(struct loader *l, void *o, const char *v)
{
	return set_yes_no(l, v, &((struct tmpl *)o)->pool_warm);
}

static const struct key_rule tmpl_rules[] = {
	{ "kernel", t_kernel, 1 },
	{ "initrd", t_initrd, 1 },
	{ "memory", t_memory, 0 },
	{ "vcpus", t_vcpus, 0 },
	{ "accel", t_accel, 0 },
	{ "boot_timeout", t_boot_timeout, 0 },
	{ "pool_size", t_pool_size, 0 },
	{ "pool_max_age", t_pool_max_age, 0 },
	{ "pool_warm", t_pool_warm, 0 },
};

/* [tenant NAME] */

static int
n_dir(struct loader *l, void *o, const char *v)
{
	return load_existing(l, v, 1, &((struct tenant *)o)->dir);
}

static int
n_max_concurrent(struct loader *l, void *o, const char *v)
{
	return set_uint(l, v, 1, 4096, &((struct tenant *)o)->max_concurrent);
}

static const struct key_rule tenant_rules[] = {
	{ "dir", n_dir, 1 },
	{ "max_concurrent", n_max_concurrent, 0 },
};

/* [handler TENANT/NAME] */

static int
h_script(struct loader *l, void *o, const char *v)
{
	const char *p = v;
	size_t n;

	if (v[0] == '/' || v[0] == '\0' || strlen(v) > 255)
		return load_error(l, "\"%s\" must be a relative path inside "
		    "the tenant's dir", v);
	while (*p != '\0') {
		n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return load_error(l, "\"%s\" has an empty, . or .. "
			    "component", v);
		p += n;
		if (*p == '/')
			p++;
	}
	((struct handler *)o)->script = xstrdup(v);
	return 0;
}

static int
h_template(struct loader *l, void *o, const char *v)
{
	struct handler *h = o;
	size_t i;

	for (i = 0; i < l->cfg->ntmpls; i++) {
		if (strcmp(l->cfg->tmpls[i].name, v) == 0) {
			h->tmpl = &l->cfg->tmpls[i];
			return 0;
		}
	}
	return load_error(l, "no [template %s]", v);
}

static int
h_timeout(struct loader *l, void *o, const char *v)
{
	unsigned ms;

	if (config_parse_duration(v, &ms) < 0 || ms < 100 || ms > 3600000)
		return load_error(l, "\"%s\" is not a duration from 100ms to "
		    "60m", v);
	((struct handler *)o)->timeout_ms = ms;
	return 0;
}

static int
h_max_body(struct loader *l, void *o, const char *v)
{
	uint64_t n;

	if (config_parse_size(v, &n) < 0 || n > (1ULL << 30))
		return load_error(l, "\"%s\" is not a size up to 1G", v);
	((struct handler *)o)->max_body = n;
	return 0;
}

static int
h_content_type(struct loader *l, void *o, const char *v)
{
	const char *p;

	for (p = v; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			return load_error(l, "\"%s\" has a control or "
			    "non-ASCII byte", v);
	if (*v == '\0' || strchr(v, '/') == NULL || strlen(v) > 255)
		return load_error(l, "\"%.64s\" is not a media type of up to "
		    "255 bytes", v);
	free(((struct handler *)o)->content_type);
	((struct handler *)o)->content_type = xstrdup(v);
	return 0;
}

static int
h_output(struct loader *l, void *o, const char *v)
{
	struct handler *h = o;

	if (strcmp(v, "body") == 0)
		h->cgi_output = 0;
	else if (strcmp(v, "cgi") == 0)
		h->cgi_output = 1;
	else
		return load_error(l, "\"%s\" is not body or cgi", v);
	return 0;
}

static int
h_add_method(struct loader *l, struct handler *h, const char *m, size_t n)
{
	size_t i;
	char *s;

	if (n == 0 || n > 16)
		return load_error(l, "empty or overlong method");
	for (i = 0; i < n; i++)
		if (!isalpha((unsigned char)m[i]))
			return load_error(l, "method \"%.*s\" is not a word",
			    (int)n, m);
	if (h->nmethods == CONFIG_METHODS_MAX)
		return load_error(l, "more than %d methods",
		    CONFIG_METHODS_MAX);
	s = strndup(m, n);
	if (s == NULL)
		abort();
	for (i = 0; i < n; i++)
		s[i] = (char)toupper((unsigned char)s[i]);
	h->methods[h->nmethods++] = s;
	return 0;
}

static void
h_free_methods(struct handler *h)
{
	while (h->nmethods > 0)
		free(h->methods[--h->nmethods]);
	free(h->allow);
	h->allow = NULL;
}

static int
h_methods(struct loader *l, void *o, const char *v)
{
	struct handler *h = o;
	const char *p = v;
	size_t n, i, len = 0;

	h_free_methods(h);
	while (*p != '\0') {
		p += strspn(p, " \t,");
		n = strcspn(p, " \t,");
		if (n == 0)
			break;
		if (h_add_method(l, h, p, n) < 0)
			return -1;
		p += n;
	}
	if (h->nmethods == 0)
		return load_error(l, "no method in \"%s\"", v);
	for (i = 0; i < h->nmethods; i++)
		len += strlen(h->methods[i]) + 2;
	h->allow = calloc(1, len + 1);
	if (h->allow == NULL)
		abort();
	for (i = 0; i < h->nmethods; i++) {
		if (i > 0)
			strcat(h->allow, ", ");
		strcat(h->allow, h->methods[i]);
	}
	return 0;
}

static int
h_max_concurrent(struct loader *l, void *o, const char *v)
{
	return set_uint(l, v, 1, 4096, &((struct handler *)o)->max_concurrent);
}

static const struct key_rule handler_rules[] = {
	{ "script", h_script, 1 },
	{ "template", h_template, 0 },
	{ "timeout", h_timeout, 0 },
	{ "max_body", h_max_body, 0 },
	{ "content_type", h_content_type, 0 },
	{ "output", h_output, 0 },
	{ "methods", h_methods, 0 },
	{ "max_concurrent", h_max_concurrent, 0 },
};

/*
 * Apply rules to every key of the current section.  iniparser returns keys
 * as "section:key"; the part after the section is matched exactly.
 */
static int
load_keys(struct loader *l, const struct key_rule *rules, size_t nrules,
    void *obj)
{
	const char **keys;
	size_t i, j, slen = strlen(l->section);
	int nkeys, rc = 0;
	int seen[16] = { 0 };

	nkeys = iniparser_getsecnkeys(l->ini, l->section);
	keys = nkeys > 0 ? calloc((size_t)nkeys, sizeof(*keys)) : NULL;
	if (nkeys > 0 && keys == NULL)
		abort();
	if (nkeys > 0)
		iniparser_getseckeys(l->ini, l->section, keys);
	for (i = 0; rc == 0 && i < (size_t)nkeys; i++) {
		const char *val = iniparser_getstring(l->ini, keys[i], NULL);

		l->key = keys[i] + slen + 1;
		for (j = 0; j < nrules; j++)
			if (strcmp(rules[j].key, l->key) == 0)
				break;
		if (j == nrules)
			rc = load_error(l, "unknown key");
		else if (val == NULL || val[0] == '\0')
			rc = load_error(l, "empty value");
		else {
			seen[j] = 1;
			rc = rules[j].set(l, obj, val);
		}
	}
	free(keys);
	for (j = 0; rc == 0 && j < nrules; j++) {
		if (rules[j].required && !seen[j]) {
			l->key = rules[j].key;
			rc = load_error(l, "missing; it is required");
		}
	}
	l->key = NULL;
	return rc;
}

static void
config_defaults(struct config *c)
{
	c->listen = xstrdup("/run/vmcgi/vmcgi.sock");
	c->listen_uid = getuid();
	c->listen_gid = getgid();
	c->listen_mode = 0660;
	c->workers = 16;
	c->prefix = xstrdup("/hooks");
	c->state_dir = xstrdup("/var/lib/vmcgi");
	c->qemu = xstrdup("/usr/bin/qemu-system-x86_64");
	c->stderr_limit = 4096;
	c->log_level = LOG_LVL_INFO;
	c->queue_timeout_ms = 2000;
	c->retry_after = 5;
	c->read_timeout_ms = 30000;
	/* Above every range systemd hands out, below 2^31. */
	c->vm_uid_first = 0x70000000;
	c->vm_uid_last = 0x7000ffff;
	c->code_cache = 1;
	/* c->user: resolved in config_finish unless set. */
}

/*
 * A uid of the range that is some account's, or some group's gid, would
 * let that account reach a QEMU (signals, /proc) or QEMU its files.
 */
static int
config_uids_free(struct loader *l)
{
	struct config *c = l->cfg;
	struct passwd *pw;
	struct group *gr;
	int rc = 0;

	l->section = "vmcgi";
	l->key = "vm_uids";
	setpwent();
	while (rc == 0 && (pw = getpwent()) != NULL)
		if (pw->pw_uid >= c->vm_uid_first &&
		    pw->pw_uid <= c->vm_uid_last)
			rc = load_error(l, "uid %lu of user %s is in the range",
			    (unsigned long)pw->pw_uid, pw->pw_name);
	endpwent();
	setgrent();
	while (rc == 0 && (gr = getgrent()) != NULL)
		if (gr->gr_gid >= c->vm_uid_first &&
		    gr->gr_gid <= c->vm_uid_last)
			rc = load_error(l, "gid %lu of group %s is in the "
			    "range", (unsigned long)gr->gr_gid, gr->gr_name);
	endgrent();
	return rc;
}

/*
 * Host limits left unset follow from the rest: as many VMs as workers, and
 * guest memory up to the machine's physical memory.
 */
static int
config_finish(struct loader *l)
{
	struct config *c = l->cfg;
	uint64_t pooled = 0, clones;
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	size_t i;

	if (c->max_vms == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		c->max_vms = c->workers;
		if (cpus > 0 && (unsigned long)cpus * 4 < c->max_vms)
			c->max_vms = (unsigned)cpus * 4;
	}
	if (c->max_guest_memory == 0 && pages > 0 && psize > 0)
		c->max_guest_memory = (uint64_t)pages * (uint64_t)psize;
	if (c->user == NULL) {
		l->section = "vmcgi";
		l->key = "user";
		if (g_user(l, c, "nobody") < 0)
			return -1;
	}
	clones = c->max_vms;
	for (i = 0; i < c->ntmpls; i++) {
		pooled += (uint64_t)c->tmpls[i].pool_size * c->tmpls[i].memory;
		/* and one being refilled */
		clones += c->tmpls[i].pool_size + 1;
	}
	if ((uint64_t)c->vm_uid_last - c->vm_uid_first + 1 < clones) {
		l->section = "vmcgi";
		l->key = "vm_uids";
		return load_error(l, "%lu uids cannot give each live VM its "
		    "own: up to %llu can live at once (max_vms, the pools "
		    "and one refill per template)",
		    (unsigned long)(c->vm_uid_last - c->vm_uid_first + 1),
		    (unsigned long long)clones);
	}
	if (config_uids_free(l) < 0)
		return -1;
	for (i = 0; i < c->ntmpls; i++) {
		if (pooled + c->tmpls[i].memory > c->max_guest_memory) {
			l->section = "vmcgi";
			l->key = "max_guest_memory";
			return load_error(l, "%llu MB cannot hold the pools "
			    "(%llu MB) and one more VM of template %s",
			    (unsigned long long)(c->max_guest_memory >> 20),
			    (unsigned long long)(pooled >> 20),
			    c->tmpls[i].name);
		}
	}
	return 0;
}

/* The name after "kind " in a section title, or NULL if it is not that kind. */
static const char *
section_name(const char *sec, const char *kind)
{
	size_t n = strlen(kind);

	if (strncmp(sec, kind, n) != 0 || sec[n] != ' ')
		return NULL;
	sec += n;
	while (*sec == ' ')
		sec++;
	return sec;
}

static int
load_template(struct loader *l, const char *name)
{
	struct config *c = l->cfg;
	struct tmpl *t;
	size_t i;

	if (!config_name_valid(name, strlen(name)))
		return load_error(l, "\"%s\" is not a valid name", name);
	for (i = 0; i < c->ntmpls; i++)
		if (strcmp(c->tmpls[i].name, name) == 0)
			return load_error(l, "defined twice");
	t = &c->tmpls[c->ntmpls++];
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->memory = 256 << 20;
	t->vcpus = 1;
	t->accel = ACCEL_AUTO;
	t->boot_timeout_ms = 120000;
	t->pool_size = 2;
	t->pool_max_age_ms = 600000;
	t->pool_warm = 1;
	return load_keys(l, tmpl_rules, NELEMS(tmpl_rules), t);
}

static struct tenant *
find_tenant(const struct config *c, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < c->ntenants; i++)
		if (strlen(c->tenants[i].name) == len &&
		    memcmp(c->tenants[i].name, name, len) == 0)
			return &c->tenants[i];
	return NULL;
}

static int
load_tenant(struct loader *l, const char *name)
{
	struct config *c = l->cfg;
	struct tenant *t;

	if (!config_name_valid(name, strlen(name)))
		return load_error(l, "\"%s\" is not a valid name", name);
	if (find_tenant(c, name, strlen(name)) != NULL)
		return load_error(l, "defined twice");
	t = &c->tenants[c->ntenants++];
	snprintf(t->name, sizeof(t->name), "%s", name);
	return load_keys(l, tenant_rules, NELEMS(tenant_rules), t);
}

static int
load_handler(struct loader *l, const char *id)
{
	struct config *c = l->cfg;
	const char *slash = strchr(id, '/');
	struct handler *h;

	if (slash == NULL || !config_name_valid(id, (size_t)(slash - id)) ||
	    !config_name_valid(slash + 1, strlen(slash + 1)))
		return load_error(l, "\"%s\" is not TENANT/NAME", id);
	h = &c->handlers[c->nhandlers++];
	snprintf(h->name, sizeof(h->name), "%s", slash + 1);
	h->tenant = find_tenant(c, id, (size_t)(slash - id));
	if (h->tenant == NULL)
		return load_error(l, "no [tenant %.*s]", (int)(slash - id), id);
	if (config_handler(c, h->tenant->name, h->name) != h)
		return load_error(l, "defined twice");
	h->timeout_ms = 10000;
	h->max_body = 1 << 20;
	h->content_type = xstrdup("application/octet-stream");
	if (h_methods(l, h, "POST") < 0)
		return -1;
	if (c->ntmpls == 1)
		h->tmpl = &c->tmpls[0];
	if (load_keys(l, handler_rules, NELEMS(handler_rules), h) < 0)
		return -1;
	if (h->tmpl == NULL)
		return load_error(l, "no template key and more than one (or "
		    "no) [template]");
	return 0;
}

/*
 * One pass per kind, in dependency order: handlers name tenants and
 * templates, so those must exist first.
 */
static int
load_sections(struct loader *l, int pass)
{
	int i, n = iniparser_getnsec(l->ini);
	const char *name;

	for (i = 0; i < n; i++) {
		l->section = iniparser_getsecname(l->ini, i);
		if (strcmp(l->section, "vmcgi") == 0) {
			if (pass == 0 && load_keys(l, global_rules,
			    NELEMS(global_rules), l->cfg) < 0)
				return -1;
		} else if ((name = section_name(l->section, "template"))) {
			if (pass == 0 && load_template(l, name) < 0)
				return -1;
		} else if ((name = section_name(l->section, "tenant"))) {
			if (pass == 0 && load_tenant(l, name) < 0)
				return -1;
		} else if ((name = section_name(l->section, "handler"))) {
			if (pass == 1 && load_handler(l, name) < 0)
				return -1;
		} else if (pass == 0)
			return load_error(l, "unknown section; expected vmcgi, "
			    "template NAME, tenant NAME or handler "
			    "TENANT/NAME");
	}
	l->section = NULL;
	return 0;
}

/*
 * iniparser reports syntax errors through a callback with no context; keep
 * the last one so config_load can name it.
 */
static char ini_syntax_err[256];

static int
ini_error_cb(const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(ini_syntax_err, sizeof(ini_syntax_err), fmt, ap);
	va_end(ap);
	n = strlen(ini_syntax_err);
	while (n > 0 && ini_syntax_err[n - 1] == '\n')
		ini_syntax_err[--n] = '\0';
	return 0;
}

/* Lowercased, trimmed copy of s[0..n) into out (size CONFIG_LINE_MAX). */
#define CONFIG_LINE_MAX 1024

static void
config_norm(const char *s, size_t n, char *out)
{
	size_t i, j = 0;

	while (n > 0 && isspace((unsigned char)*s))
		s++, n--;
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	for (i = 0; i < n && j < CONFIG_LINE_MAX - 1; i++)
		out[j++] = (char)tolower((unsigned char)s[i]);
	out[j] = '\0';
}

/*
 * iniparser silently merges a repeated section and keeps the last of a
 * repeated key; both are mistakes an operator wants to hear about, so the
 * file is scanned for them first.
 */
static int
config_scan_duplicates(struct loader *l, FILE *f)
{
	char line[CONFIG_LINE_MAX], name[2 * CONFIG_LINE_MAX + 2];
	char **seen = NULL, *end;
	size_t nseen = 0, cur = 0, i, lineno = 0;
	int rc = 0;

	while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
		const char *p = line + strspn(line, " \t");

		lineno++;
		if (*p == '[' && (end = strchr(p, ']')) != NULL) {
			config_norm(p + 1, (size_t)(end - p - 1), name);
			cur = nseen;
			if (strchr(name, ':') != NULL)
				rc = load_error(l, "line %zu: section \"%s\": "
				    "a name cannot hold ':'", lineno, name);
		} else if (*p != ';' && *p != '#' &&
		    strchr(p, '=') != NULL && nseen == 0) {
			rc = load_error(l, "line %zu: a key before any "
			    "[section]", lineno);
			continue;
		} else if (*p != ';' && *p != '#' &&
		    (end = strchr(p, '=')) != NULL && nseen > 0) {
			char key[CONFIG_LINE_MAX];

			config_norm(p, (size_t)(end - p), key);
			snprintf(name, sizeof(name), "%s:%s", seen[cur - 1],
			    key);
		} else
			continue;
		for (i = 0; i < nseen; i++)
			if (strcmp(seen[i], name) == 0)
				rc = load_error(l, "line %zu: \"%s\" defined "
				    "twice", lineno, name);
		seen = realloc(seen, (nseen + 1) * sizeof(*seen));
		if (seen == NULL)
			abort();
		seen[nseen++] = xstrdup(name);
		if (*p == '[')
			cur = nseen;
	}
	while (nseen > 0)
		free(seen[--nseen]);
	free(seen);
	return rc;
}

static int
config_open(struct loader *l, const char *path)
{
	char *slash;
	FILE *f;
	int n;

	f = fopen(path, "re");
	if (f == NULL)
		return load_error(l, "fopen: %s", strerror(errno));
	n = config_scan_duplicates(l, f);
	fclose(f);
	if (n < 0)
		return -1;
	ini_syntax_err[0] = '\0';
	iniparser_set_error_callback(ini_error_cb);
	l->ini = iniparser_load(path);
	if (l->ini == NULL)
		return load_error(l, "iniparser_load: %s", ini_syntax_err[0] ?
		    ini_syntax_err : "cannot parse");
	if (ini_syntax_err[0] != '\0')
		return load_error(l, "%s", ini_syntax_err);
	l->dir = xstrdup(path);
	slash = strrchr(l->dir, '/');
	if (slash == NULL)
		strcpy(l->dir, ".");
	else if (slash == l->dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	/*
	 * Paths go to QEMU, which runs with "/" as its working directory in
	 * its jail: make them absolute whatever directory vmcgi started in.
	 */
	if ((slash = realpath(l->dir, NULL)) == NULL)
		return load_error(l, "realpath \"%s\": %s", l->dir,
		    strerror(errno));
	free(l->dir);
	l->dir = slash;
	n = iniparser_getnsec(l->ini);
	l->cfg->tmpls = calloc((size_t)n + 1, sizeof(struct tmpl));
	l->cfg->tenants = calloc((size_t)n + 1, sizeof(struct tenant));
	l->cfg->handlers = calloc((size_t)n + 1, sizeof(struct handler));
	if (!l->cfg->tmpls || !l->cfg->tenants || !l->cfg->handlers)
		abort();
	return 0;
}

int
config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
	struct loader l = { .cfg = cfg, .err = err, .errlen = errlen };
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	cfg->path = xstrdup(path);
	config_defaults(cfg);
	rc = config_open(&l, path);
	if (rc == 0)
		rc = load_sections(&l, 0);
	if (rc == 0)
		rc = load_sections(&l, 1);
	if (rc == 0 && cfg->nhandlers == 0)
		rc = load_error(&l, "no [handler TENANT/NAME] section");
	if (rc == 0)
		rc = config_finish(&l);
	if (l.ini != NULL)
		iniparser_freedict(l.ini);
	free(l.dir);
	if (rc < 0)
		config_free(cfg);
	return rc;
}

void
config_free(struct config *c)
{
	size_t i;

	for (i = 0; c->tmpls != NULL && i < c->ntmpls; i++) {
		free(c->tmpls[i].kernel);
		free(c->tmpls[i].initrd);
	}
	for (i = 0; c->tenants != NULL && i < c->ntenants; i++)
		free(c->tenants[i].dir);
	for (i = 0; c->handlers != NULL && i < c->nhandlers; i++) {
		free(c->handlers[i].script);
		free(c->handlers[i].content_type);
		h_free_methods(&c->handlers[i]);
	}
	free(c->tmpls);
	free(c->tenants);
	free(c->handlers);
	free(c->path);
	free(c->listen);
	free(c->prefix);
	free(c->state_dir);
	free(c->qemu);
	free(c->user);
	memset(c, 0, sizeof(*c));
}

struct handler *
config_handler(const struct config *c, const char *tenant, const char *name)
{
	size_t i;

	for (i = 0; i < c->nhandlers; i++) {
		struct handler *h = &c->handlers[i];

		if (h->tenant != NULL && strcmp(h->tenant->name, tenant) == 0 &&
		    strcmp(h->name, name) == 0)
			return h;
	}
	return NULL;
}
