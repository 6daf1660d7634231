/*
 * vmcgi: a FastCGI responder that runs each webhook event's handler in a
 * fresh microVM restored from a snapshot.
 */
#include <dirent.h>
#include <errno.h>
#include <fcgiapp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "accel.h"
#include "cgroup.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "pool.h"
#include "privsep.h"
#include "vm.h"
#include "worker.h"

#define DEFAULT_CONFIG "/etc/vmcgi/vmcgi.ini"

/*
 * How long shutdown waits for requests in flight beyond the longest
 * handler timeout: a restore and the host's grace period.
 */
#define SHUTDOWN_SLACK_MS 40000

static void
usage(void)
{
	fprintf(stderr, "usage: vmcgi [-t] [-c config]\n"
	    "  -c config  configuration file (default %s)\n"
	    "  -t         check the configuration and exit\n", DEFAULT_CONFIG);
	exit(2);
}

/*
 * libfcgi closes connections with select(2), which breaks on descriptors
 * past FD_SETSIZE (CVE-2012-6687): keep every descriptor below it.
 */
static void
limit_descriptors(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		fatal("getrlimit RLIMIT_NOFILE");
	if (rl.rlim_cur > FD_SETSIZE || rl.rlim_cur == RLIM_INFINITY) {
		rl.rlim_cur = FD_SETSIZE;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			fatal("setrlimit RLIMIT_NOFILE %d", FD_SETSIZE);
	}
}

static void
block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGCHLD);	/* the FastCGI process's end */
	if (pthread_sigmask(SIG_BLOCK, set, NULL) != 0)
		fatalx("pthread_sigmask failed");
	signal(SIGPIPE, SIG_IGN);	/* client aborts are write errors */
}

/*
 * Clones' uids must be theirs alone on the host: a process already running
 * with one is most likely another vmcgi given the same vm_uids, and the
 * two would share per-user kernel limits (RLIMIT_NPROC among them).
 */
static void
warn_shared_uids(const struct config *cfg)
{
	char path[64], line[256];
	unsigned long uid;
	struct dirent *e;
	FILE *f;
	DIR *d;

	if ((d = opendir("/proc")) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%.16s/status", e->d_name);
		if ((f = fopen(path, "re")) == NULL)
			continue;
		uid = 0;
		while (fgets(line, sizeof(line), f) != NULL)
			if (sscanf(line, "Uid: %lu", &uid) == 1)
				break;
		fclose(f);
		if (uid >= cfg->vm_uid_first && uid <= cfg->vm_uid_last) {
			log_warnx("process %s runs as uid %lu, in vm_uids: "
			    "does another vmcgi use the same range? Give "
			    "each its own", e->d_name, uid);
			break;
		}
	}
	closedir(d);
}

/*
 * Only the FastCGI process runs libfcgi: this one may use all the
 * descriptors it is allowed (each live VM holds a few).
 */
static void
more_descriptors(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_warn("setrlimit RLIMIT_NOFILE %llu",
		    (unsigned long long)rl.rlim_max);
}

static void
setup_cgroups(void)
{
	char why[512];

	if (cgroup_init(why, sizeof(why)) == 0) {
		vm_use_cgroups();
		log_info("cgroups: one per VM (guest memory plus overhead, "
		    "threads)");
	} else
		log_warnx("cgroups: VMs run without memory and thread "
		    "limits: %s", why);
}

static struct snapshot *
prepare_templates(const struct config *cfg)
{
	struct snapshot *snaps;
	const char *accel;
	char why[256], err[1024];
	unsigned long tsc_khz = 0;
	size_t i;

	if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST)
		fatal("mkdir \"%s\"", cfg->state_dir);
	snaps = calloc(cfg->ntmpls, sizeof(*snaps));
	if (snaps == NULL)
		fatal("calloc");
	for (i = 0; i < cfg->ntmpls; i++) {
		const struct tmpl *t = &cfg->tmpls[i];

		accel = accel_choose(t->accel, why, sizeof(why));
		if (accel == NULL)
			fatalx("template %s: accel kvm unusable: %s", t->name,
			    why);
		log_info("template %s: accelerator %s (%s)", t->name, accel,
		    why);
		if (strcmp(accel, "tcg") == 0 && tsc_khz == 0) {
			tsc_khz = accel_tsc_khz();
			log_info("host TSC: %lu kHz", tsc_khz);
		}
		if (snapshot_prepare(&snaps[i], cfg, t, accel, tsc_khz, err,
		    sizeof(err)) < 0)
			fatalx("template %s: %s", t->name, err);
		if (snaps[i].reused)
			log_info("template %s: reusing snapshot \"%s\"",
			    t->name, snaps[i].state_path);
		else
			log_info("template %s: booted in %u ms, snapshot "
			    "\"%s\"", t->name, snaps[i].boot_ms,
			    snaps[i].state_path);
	}
	return snaps;
}

static void
start_pools(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	size_t i;

	srv->pools = calloc(cfg->ntmpls, sizeof(*srv->pools));
	if (srv->pools == NULL)
		fatal("calloc");
	for (i = 0; i < cfg->ntmpls; i++) {
		const struct tmpl *t = &cfg->tmpls[i];

		if (pool_start(&srv->pools[i], &srv->snaps[i], t->pool_size,
		    t->pool_max_age_ms, t->pool_warm) < 0)
			fatalx("template %s: cannot start its pool", t->name);
		log_info("template %s: warm pool of %u clones, recycled after "
		    "%u s", t->name, t->pool_size, t->pool_max_age_ms / 1000);
	}
}

/* After the workers: a pooled clone dies with the pool's thread. */
static void
stop_pools(struct server *srv)
{
	size_t i;

	for (i = 0; i < srv->cfg->ntmpls; i++)
		pool_stop(&srv->pools[i]);
}

static unsigned
longest_timeout(const struct config *cfg)
{
	unsigned ms = 0;
	size_t i;

	for (i = 0; i < cfg->nhandlers; i++)
		if (cfg->handlers[i].timeout_ms > ms)
			ms = cfg->handlers[i].timeout_ms;
	return ms;
}

/*
 * The FastCGI process: serve until SIGTERM or SIGINT, let requests in
 * flight finish, exit.  Its status is its exit code.
 */
static int
fastcgi_main(struct server *srv, const int *brokers)
{
	sigset_t set;
	int sig = 0;

	block_signals(&set);
	if (srv->cfg->code_cache &&
	    (srv->code = codecache_new(srv->cfg->nhandlers)) == NULL)
		log_warn("codecache_new: no compiled scripts kept");
	if (worker_start(srv, brokers) < 0)
		return 1;
	while (sig != SIGTERM && sig != SIGINT)
		if (sigwait(&set, &sig) != 0)
			return 1;
	if (worker_stop(srv, longest_timeout(srv->cfg) + SHUTDOWN_SLACK_MS) < 0)
		log_warnx("requests still running at the deadline");
	else
		codecache_free(srv->code);
	return 0;
}

/*
 * Split in two, before any thread exists: the child becomes the FastCGI
 * process (the listening socket, one broker channel per worker, no
 * privilege); this process keeps the other ends and every VM.
 */
static void
fastcgi_fork(struct server *srv)
{
	unsigned n = srv->cfg->workers, i;
	pid_t parent = getpid(), pid;
	int *theirs, sp[2], pidfd;

	srv->brokers = calloc(n, sizeof(*srv->brokers));
	theirs = calloc(n + 1, sizeof(int));
	if (srv->brokers == NULL || theirs == NULL)
		fatal("calloc %u channels", n);
	for (i = 0; i < n; i++) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
		    sp) < 0)
			fatal("socketpair for worker %u", i);
		srv->brokers[i].srv = srv;
		srv->brokers[i].fd = sp[0];
		theirs[i] = sp[1];
	}
	theirs[n] = srv->listen_fd;
	if ((pid = fork()) < 0)
		fatal("fork the FastCGI process");
	if (pid == 0) {
		privsep_drop(srv->cfg, parent, theirs, (int)n + 1);
		exit(fastcgi_main(srv, theirs));
	}
	/* Shared by the brokers, to kill this process and no other. */
	if ((pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
		fatal("pidfd_open %d", (int)pid);
	for (i = 0; i < n; i++) {
		close(theirs[i]);
		srv->brokers[i].peer = pidfd;
		srv->brokers[i].index = (int)i;
	}
	free(theirs);
	close(srv->listen_fd);
	srv->listen_fd = -1;
	srv->fastcgi = pid;
}

/* Wait up to ms for pid to exit; 1 if it did (reaped), 0 if not. */
static int
reap_within(pid_t pid, unsigned ms)
{
	long end = clock_now_ms() + (long)ms, left;
	struct timespec ts;
	sigset_t chld;
	int status;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	while (waitpid(pid, &status, WNOHANG) != pid) {
		if ((left = end - clock_now_ms()) <= 0)
			return 0;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000L;
		/* Any child's end wakes this. */
		sigtimedwait(&chld, NULL, &ts);
	}
	return 1;
}

static const char *
status_text(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "exit %d", WEXITSTATUS(status));
	return buf;
}

int
main(int argc, char *argv[])
{
	const char *path = DEFAULT_CONFIG;
	struct server srv = { .listen_fd = -1 };
	struct config cfg;
	char err[1024], how[64];
	sigset_t set;
	int ch, test = 0, sig = 0, status, died = 0;
	unsigned i;

	while ((ch = getopt(argc, argv, "c:th")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	log_init("vmcgi", LOG_LVL_INFO);
	if (config_load(path, &cfg, err, sizeof(err)) < 0)
		fatalx("%s", err);
	if (test) {
		fprintf(stderr, "vmcgi: configuration \"%s\" is valid: %zu "
		    "templates, %zu tenants, %zu handlers\n", path,
		    cfg.ntmpls, cfg.ntenants, cfg.nhandlers);
		config_free(&cfg);
		return 0;
	}
	log_set_level(cfg.log_level);
	limit_descriptors();
	srv.cfg = &cfg;
	/*
	 * Signals still kill us here: a SIGTERM during a template's boot
	 * ends vmcgi at once, and the parent-death signal ends that QEMU.
	 */
	setup_cgroups();
	if (vm_filter_init() != 0)
		fatalx("cannot build the seccomp filter for QEMU");
	vm_use_uids(cfg.vm_uid_first, cfg.vm_uid_last);
	warn_shared_uids(&cfg);
	srv.snaps = prepare_templates(&cfg);
	block_signals(&set);
	if (admit_init(&srv.admit, &cfg) < 0)
		fatalx("cannot set up admission limits");
	if (FCGX_Init() != 0)
		fatalx("FCGX_Init failed");
	srv.listen_fd = worker_listen(&cfg);
	if (srv.listen_fd < 0)
		fatalx("cannot listen on \"%s\"", cfg.listen);
	fastcgi_fork(&srv);
	more_descriptors();
	for (i = 0; i < cfg.workers; i++)
		if (broker_start(&srv.brokers[i]) < 0)
			fatalx("cannot start the broker threads");
	start_pools(&srv);
	log_info("listening on \"%s\" with %u workers as %s (pid %d), %zu "
	    "handlers", cfg.listen, cfg.workers, cfg.user, (int)srv.fastcgi,
	    cfg.nhandlers);
	while (sig != SIGTERM && sig != SIGINT) {
		if (sigwait(&set, &sig) != 0)
			fatalx("sigwait failed");
		if (sig == SIGHUP)
			log_info("SIGHUP ignored: restart vmcgi to reload");
		if (sig == SIGCHLD &&
		    waitpid(srv.fastcgi, &status, WNOHANG) == srv.fastcgi) {
			log_warnx("the FastCGI process %d ended (%s): "
			    "stopping", (int)srv.fastcgi,
			    status_text(status, how, sizeof(how)));
			died = 1;
			break;
		}
	}
	if (!died)
		log_info("signal %d: stopping; requests in flight finish",
		    sig);
	/* New connections are refused now rather than left in the backlog. */
	if (cfg.listen[0] == '/')
		unlink(cfg.listen);
	if (!died) {
		kill(srv.fastcgi, SIGTERM);
		if (!reap_within(srv.fastcgi, longest_timeout(&cfg) +
		    SHUTDOWN_SLACK_MS)) {
			log_warnx("requests still running at the deadline: "
			    "killing their VMs");
			kill(srv.fastcgi, SIGKILL);
			waitpid(srv.fastcgi, &status, 0);
		}
	}
	/* Their channels are closed now: each ends, its VM destroyed. */
	for (i = 0; i < cfg.workers; i++)
		broker_join(&srv.brokers[i]);
	stop_pools(&srv);
	vm_kill_all();
	cgroup_cleanup();
	log_info("stopped");
	return died;
}
