/*
 * config.h: vmcgi's configuration, loaded once from an INI file.
 *
 * The loaded tree is immutable after config_load returns, so worker threads
 * read it without locks.
 */
#ifndef VMCGI_CONFIG_H
#define VMCGI_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "log.h"

#define CONFIG_NAME_MAX 64
#define CONFIG_METHODS_MAX 8

enum accel_kind { ACCEL_AUTO, ACCEL_KVM, ACCEL_TCG };

struct tmpl {
	char		 name[CONFIG_NAME_MAX + 1];
	char		*kernel;
	char		*initrd;
	uint64_t	 memory;		/* bytes */
	unsigned	 vcpus;
	enum accel_kind	 accel;
	unsigned	 boot_timeout_ms;
	unsigned	 pool_size;		/* idle clones kept ready */
	unsigned	 pool_max_age_ms;	/* recycled after this */
	int		 pool_warm; /* warm clones up before pooling */
};

struct tenant {
	char		 name[CONFIG_NAME_MAX + 1];
	char		*dir;
	unsigned	 max_concurrent;	/* 0: only the host limits */
};

struct handler {
	char		 name[CONFIG_NAME_MAX + 1];
	struct tenant	*tenant;
	struct tmpl	*tmpl;
	char		*script;	/* relative to tenant->dir */
	unsigned	 timeout_ms;
	uint64_t	 max_body;
	char		*content_type;
	int		 cgi_output;	/* stdout starts with headers */
	char		*methods[CONFIG_METHODS_MAX];
	size_t		 nmethods;
	char		*allow;	/* "POST, PUT" for 405s */
	unsigned	 max_concurrent;	/* 0: only tenant and host */
};

struct config {
	char		*path;
	char		*listen;		/* "/path" or "host:port" */
	uid_t		 listen_uid;
	gid_t		 listen_gid;
	mode_t		 listen_mode;
	unsigned	 workers;
	char		*prefix;
	char		*state_dir;
	char		*qemu;
	size_t		 stderr_limit;
	enum log_level	 log_level;
	unsigned	 max_vms;		/* serving at once */
	uint64_t	 max_guest_memory; /* live VMs' guest RAM, bytes */
	unsigned	 queue_timeout_ms; /* wait for a slot, then 503 */
	unsigned	 retry_after;		/* seconds, in 503s */
	unsigned	 read_timeout_ms;	/* idle FastCGI reads */
	char		*user;	/* the FastCGI process runs as */
	uid_t		 user_uid;
	gid_t		 user_gid;
	uid_t		 vm_uid_first;	/* a uid per clone's QEMU */
	uid_t		 vm_uid_last;
	int		 code_cache;	/* keep compiled scripts */

	struct tmpl	*tmpls;
	size_t		 ntmpls;
	struct tenant	*tenants;
	size_t		 ntenants;
	struct handler	*handlers;
	size_t		 nhandlers;
};

/*
 * Load and validate path.  Returns 0 and fills *cfg, or -1 with a message
 * naming the file, section and key in err.  Never exits.
 */
int	config_load(const char *path, struct config *cfg, char *err,
	    size_t errlen);
void	config_free(struct config *cfg);

/* Look-ups by name; NULL when absent. */
struct handler	*config_handler(const struct config *cfg,
		    const char *tenant, const char *name);
int		 config_name_valid(const char *s, size_t len);

/* Value parsers shared with tests; 0 on success, -1 on a bad value. */
int	config_parse_size(const char *s, uint64_t *out);
int	config_parse_duration(const char *s, unsigned *ms);

#endif /* VMCGI_CONFIG_H */
