/*
 * main.c -- the spacefs daemon: command line, pool and volumes, session.
 *
 *   spacefs SOURCE MOUNTPOINT [-o opts] [-f] [-d]
 *
 * SOURCE is any member disk of the pool.  The argument order and -o
 * follow the mount-helper convention, so `mount -t fuse.spacefs SOURCE
 * MOUNTPOINT` and fstab lines work once spacefs is installed: mount(8)
 * runs mount.fuse3, which runs `spacefs SOURCE MOUNTPOINT -o opts`.
 *
 * Start-up order matters for clear errors: open the pool (majority rule,
 * pool/pool.c) and every volume (metadata replicas, chunk store) before
 * mounting, so a broken pool fails with one line and nothing mounted.
 * Then mount, daemonize (unless -f), start the attribute flusher and the
 * control socket, and run the multithreaded FUSE loop until unmount.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/fs.h"
#include "fs/node.h"
#include "pool/ctl.h"
#include "pool/wback.h"

#define SPACEFS_VERSION "0.1.0"

#define OPT(t, p, v)                                                                               \
	{                                                                                          \
		t, offsetof(struct fs_options, p), v                                               \
	}
static const struct fuse_opt option_spec[] = {
    OPT("node=%s", node, 0),
    OPT("listen=%s", listen, 0),
    OPT("heartbeat=%lf", heartbeat, 0),
    OPT("lease=%lf", lease, 0),
    OPT("ro-others", ro_others, 1),
    OPT("ro_others", ro_others, 1),
    OPT("log=%s", log, 0),
    OPT("metrics=%s", metrics, 0),
    OPT("threads=%u", threads, 0),
    OPT("max_background=%u", max_background, 0),
    OPT("flush_interval=%u", flush_interval, 0),
    OPT("attr_timeout=%lf", attr_timeout, 0),
    OPT("entry_timeout=%lf", entry_timeout, 0),
    OPT("writeback_cache", writeback_cache, 1),
    OPT("direct_io", direct_io, 1),
    OPT("no_odirect", no_odirect, 1),
    OPT("ro", read_only, 1),
    OPT("allow_other", allow_other, 1),
    OPT("default_permissions", default_permissions, 1),
    OPT("-f", foreground, 1),
    OPT("-d", debug, 1),
    OPT("debug", debug, 1),
    OPT("-h", show_help, 1),
    OPT("--help", show_help, 1),
    OPT("-V", show_version, 1),
    OPT("--version", show_version, 1),
    FUSE_OPT_END,
};

static void usage(const char *prog)
{
	printf("usage: %s SOURCE MOUNTPOINT [-o opt[,opt...]] [-f] [-d]\n"
	       "\n"
	       "Mount the spacefs pool that disk directory SOURCE belongs to at MOUNTPOINT.\n"
	       "Each volume of the pool is a top-level directory of the mount.\n"
	       "\n"
	       "options:\n"
	       "  -f                     stay in the foreground\n"
	       "  -d, -o debug           foreground, and log every FUSE request\n"
	       "  -o node=NAME           this node's name (default: the host name)\n"
	       "  -o listen=ADDR:PORT    several nodes: serve redirected I/O here (IPv4\n"
	       "                         or [IPv6]); volumes are owned one node each\n"
	       "  -o heartbeat=S         several nodes: lease renewal period (default 1)\n"
	       "  -o lease=S             several nodes: lease length (default 5)\n"
	       "  -o ro-others           several nodes: volumes owned by another node are\n"
	       "                         read-only here instead of redirected read-write\n"
	       "  -o log=FILE            log here once daemonized (default: syslog)\n"
	       "  -o metrics=ADDR:PORT   serve Prometheus metrics over HTTP here (IPv4 or\n"
	       "                         [IPv6]); also: spacectl metrics SOURCE\n"
	       "  -o threads=N           FUSE worker threads (default 16)\n"
	       "  -o max_background=N    requests the kernel keeps in flight without\n"
	       "                         waiting, e.g. asynchronous direct I/O (default 64)\n"
	       "  -o ro                  mount read-only\n"
	       "  -o allow_other         let other users use the mount (needed for Samba)\n"
	       "  -o default_permissions let the kernel check permissions\n"
	       "  -o writeback_cache     kernel write-back caching of file data\n"
	       "  -o direct_io           bypass the page cache (benchmarks; no shared mmap)\n"
	       "  -o no_odirect          buffered chunk I/O even where O_DIRECT works\n"
	       "  -o flush_interval=S    seconds between metadata write-backs (default 5)\n"
	       "  -o attr_timeout=S      kernel attribute cache time (default 1.0; 0 with\n"
	       "                         listen=)\n"
	       "  -o entry_timeout=S     kernel name cache time (default 1.0; 0 with listen=)\n"
	       "  -h, --help             this help\n"
	       "  -V, --version          version\n"
	       "\n"
	       "Other -o options are passed to FUSE (see mount.fuse3(8)).\n",
	       prog);
}

/* The two positional arguments: SOURCE then MOUNTPOINT. */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct fs_options *o = data;

	(void)outargs;
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (!o->source) {
		o->source = realpath(arg, NULL);
		if (!o->source) {
			fprintf(stderr, "spacefs: %s: %s\n", arg, strerror(errno));
			return -1;
		}
		return 0;
	}
	if (!o->mountpoint) {
		o->mountpoint = realpath(arg, NULL);
		if (!o->mountpoint) {
			fprintf(stderr, "spacefs: mount point %s: %s\n", arg, strerror(errno));
			return -1;
		}
		return 0;
	}
	fprintf(stderr, "spacefs: unexpected argument '%s'\n", arg);
	return -1;
}

static void set_defaults(struct fs_options *o)
{
	o->threads = 16;
	o->max_background = 64;
	o->flush_interval = 5;
	o->attr_timeout = -1; /* 1.0, or 0 with several nodes */
	o->entry_timeout = -1;
	o->heartbeat = 1.0;
	o->lease = 5.0;
}

/* Several nodes: the kernel must not cache what another node may change. */
static int check_node_options(struct fs_options *o)
{
	double dflt = o->listen ? 0.0 : 1.0;

	if (o->attr_timeout < 0)
		o->attr_timeout = dflt;
	if (o->entry_timeout < 0)
		o->entry_timeout = dflt;
	if (!o->listen)
		return o->ro_others
			   ? (fprintf(stderr, "spacefs: ro-others needs listen=\n"), -EINVAL)
			   : 0;
	if (o->heartbeat < 0.05 || o->heartbeat > 60 || o->lease < 3 * o->heartbeat ||
	    o->lease > 600) {
		fprintf(stderr,
			"spacefs: heartbeat=%g lease=%g: need 0.05 <= heartbeat <= 60 and "
			"3 * heartbeat <= lease <= 600 seconds\n",
			o->heartbeat, o->lease);
		return -EINVAL;
	}
	return 0;
}

static int parse_args(struct fuse_args *args, struct fs_options *o)
{
	set_defaults(o);
	if (fuse_opt_parse(args, o, option_spec, opt_proc) < 0)
		return -EINVAL;
	if (o->show_help || o->show_version)
		return 0;
	if (!o->source || !o->mountpoint) {
		fprintf(stderr, "spacefs: need SOURCE and MOUNTPOINT (spacefs --help)\n");
		return -EINVAL;
	}
	if (o->threads < 1 || o->threads > 256) {
		fprintf(stderr, "spacefs: threads=%u: must be 1..256\n", o->threads);
		return -EINVAL;
	}
	if (o->max_background < 1 || o->max_background > 65535) {
		fprintf(stderr, "spacefs: max_background=%u: must be 1..65535\n",
			o->max_background);
		return -EINVAL;
	}
	if (o->flush_interval < 1 || o->flush_interval > 3600) {
		fprintf(stderr, "spacefs: flush_interval=%u: must be 1..3600 seconds\n",
			o->flush_interval);
		return -EINVAL;
	}
	if (check_node_options(o) < 0)
		return -EINVAL;
	if (!o->node) {
		char host[256] = "node";
		gethostname(host, sizeof(host) - 1);
		o->node = strdup(host);
	}
	/* Options the kernel must see too go back into the FUSE arguments. */
	if (o->debug)
		fuse_opt_add_arg(args, "-odebug");
	if (o->allow_other)
		fuse_opt_add_arg(args, "-oallow_other");
	if (o->default_permissions)
		fuse_opt_add_arg(args, "-odefault_permissions");
	if (o->read_only)
		fuse_opt_add_arg(args, "-oro");
	fuse_opt_add_arg(args, "-osubtype=spacefs");
	return 0;
}

/* Once daemonized stderr is /dev/null; every message of the daemon goes
 * to stderr, so point stderr at the log file, or at syslog through a
 * stdio cookie stream. */
static ssize_t syslog_write(void *cookie, const char *buf, size_t size)
{
	(void)cookie;
	syslog(LOG_NOTICE, "%.*s", (int)size, buf);
	return (ssize_t)size;
}

static void redirect_log(struct fs *fs)
{
	if (fs->opt.foreground || fs->opt.debug)
		return;
	if (fs->opt.log) {
		int fd = open(fs->opt.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			close(fd);
			return;
		}
	}
	openlog("spacefs", LOG_PID, LOG_DAEMON);
	cookie_io_functions_t io = {.write = syslog_write};
	FILE *f = fopencookie(NULL, "w", io);
	if (f) {
		setvbuf(f, NULL, _IOLBF, 0);
		stderr = f;
	}
}

/* A pool mounts without some disks only if the majority rule allows it;
 * say loudly which ones are out. */
static void report_disks(const struct pool *p)
{
	for (uint32_t i = 0; i < p->ndisks; i++)
		if (p->disk[i].state != POOL_DISK_HEALTHY)
			fprintf(stderr, "spacefs: WARNING: disk %u (%s) is %s: %s\n", i,
				p->disk[i].path, pool_disk_state_name(p->disk[i].state),
				p->disk[i].msg);
}

/* The chunk store caches file descriptors, sized from RLIMIT_NOFILE when
 * a volume opens: raise the soft limit to the hard one first. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* A queue for every disk index, with the member's model: volumes' stores
 * point at them, and a disk added online finds its queue ready. */
static int open_diskqs(struct fs *fs)
{
	static const struct pool_diskmodel none;
	uint64_t now = pool_diskq_now();

	for (uint32_t i = 0; i < POOL_MAX_DISKS; i++) {
		const struct pool_diskmodel *m =
		    i < fs->pool->ndisks ? &fs->pool->sb->member[i].model : &none;
		int rc = pool_diskq_new(m, now, &fs->diskq[i]);
		if (rc < 0)
			return rc;
		if (m->kind != POOL_DISKMODEL_NONE) {
			char fig[160];
			pool_diskmodel_describe(m, fig, sizeof(fig));
			fprintf(stderr, "spacefs: disk %u emulates %s (%s)\n", i,
				pool_diskmodel_name(m), fig);
		}
	}
	return 0;
}

static int open_pool(struct fs *fs)
{
	char err[512] = "";
	raise_nofile();
	int rc = pool_open(fs->opt.source, 0, &fs->pool, err, sizeof(err));

	if (rc < 0) {
		fprintf(stderr, "spacefs: %s\n", err[0] ? err : strerror(-rc));
		return rc;
	}
	report_disks(fs->pool);
	/* Nothing of a volume is opened while another daemon of this node
	 * may still be closing it (pool/runlock.c). */
	char uuid[40];
	pool_uuid_format(fs->pool->sb->pool_uuid, uuid);
	rc = pool_runlock_take(uuid, fs->opt.node, POOL_RUNLOCK_WAIT_S, &fs->run_lock, err,
			       sizeof(err));
	if (rc == 1) { /* the daemon we waited for may have changed the pool */
		pool_close(fs->pool);
		fs->pool = NULL;
		rc = pool_open(fs->opt.source, 0, &fs->pool, err, sizeof(err));
	}
	if (rc < 0) {
		fprintf(stderr, "spacefs: %s\n", err);
		return rc;
	}
	rc = open_diskqs(fs);
	if (rc < 0) {
		fprintf(stderr, "spacefs: emulated disks: %s\n", strerror(-rc));
		return rc;
	}
	for (uint32_t i = 0; i < fs->pool->sb->nvolumes; i++) {
		const struct pool_sb_volume *pv = &fs->pool->sb->volume[i];
		if (pv->state != POOL_VOLUME_ONLINE) {
			fprintf(stderr, "spacefs: volume %s is being deleted; not mounted\n",
				pv->name);
			continue;
		}
		rc = fs_volume_open(fs, pv, err, sizeof(err));
		if (rc < 0 && !strcmp(pool_volume_health(fs->pool, pv), "offline")) {
			fprintf(stderr, "spacefs: VOLUME %s OFFLINE, not mounted: %s\n", pv->name,
				err);
			continue; /* past its redundancy: the other volumes still mount */
		}
		if (rc < 0) {
			fprintf(stderr, "spacefs: %s\n", err);
			return rc;
		}
	}
	return 0;
}

static void close_all(struct fs *fs)
{
	fs_node_stop(fs); /* if start-up failed half-way */
	for (uint32_t i = 0; i < fs->nvol; i++)
		fs_volume_close(fs->vol[i]);
	for (uint32_t i = 0; i < POOL_MAX_DISKS; i++) {
		pool_diskq_free(fs->diskq[i]); /* every store using it is closed */
		fs->diskq[i] = NULL;
	}
	if (fs->pool)
		pool_close(fs->pool);
	free(fs->opt.source);
	free(fs->opt.mountpoint);
	free(fs->opt.node);
	free(fs->opt.log);
	free(fs->opt.listen);
	fs_metrics_stop(fs); /* if start-up failed after binding */
	free(fs->opt.metrics);
}

static int run_session(struct fs *fs, struct fuse_args *args)
{
	struct fuse_loop_config *cfg;
	char err[256];
	int rc = 1;

	fs->inner_ops = fs->node ? &fs_route_ops : &fs_ops;
	fs_ckpt_wrap_ops(fs->inner_ops, &fs->ops);
	fs->se = fuse_session_new(args, &fs->ops, sizeof(fs->ops), fs);
	if (!fs->se)
		return 1;
	if (fuse_set_signal_handlers(fs->se) != 0)
		goto destroy;
	if (fuse_session_mount(fs->se, fs->opt.mountpoint) != 0)
		goto remove_handlers;
	if (fs_chan_attach(fs) != 0) {
		fprintf(stderr, "spacefs: cannot hook the FUSE channel\n");
		goto unmount;
	}
	fuse_daemonize(fs->opt.foreground || fs->opt.debug);
	pool_runlock_note_pid(fs->run_lock);
	redirect_log(fs);
	/* Threads of the volumes opened above would have stayed in the parent. */
	pthread_mutex_lock(&fs->vol_lock);
	atomic_store(&fs->daemonized, true);
	for (uint32_t i = 0; i < fs->nvol; i++) {
		if (fs->vol[i] && fs_ckpt_start(fs->vol[i]) < 0)
			fprintf(stderr,
				"spacefs: volume %s: cannot start the checkpoint merge worker\n",
				fs->vol[i]->name);
		if (fs->vol[i] && fs->vol[i]->wb && pool_wb_start(fs->vol[i]->wb) < 0)
			fprintf(stderr,
				"spacefs: volume %s: cannot start the parity journal's flusher\n",
				fs->vol[i]->name);
	}
	pthread_mutex_unlock(&fs->vol_lock);
	if (fs_flusher_start(fs) < 0)
		goto unmount;
	if (fs->node && fs_node_run(fs, err, sizeof(err)) < 0) {
		fprintf(stderr, "spacefs: %s\n", err);
		fs_flusher_stop(fs);
		goto unmount;
	}
	if (fs_health_start(fs) < 0)
		fprintf(stderr, "spacefs: cannot start the disk health watcher\n");
	if (fs_metrics_start(fs, err, sizeof(err)) < 0)
		fprintf(stderr, "spacefs: %s\n", err);
	if (fs_ctl_start(fs, err, sizeof(err)) < 0)
		fprintf(stderr,
			"spacefs: control socket: %s (spacectl cannot reach this daemon, and waits "
			"for it rather than change the pool beside it)\n",
			err);

	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_max_threads(cfg, fs->opt.threads);
	fuse_loop_cfg_set_idle_threads(cfg, fs->opt.threads);
	rc = fuse_session_loop_mt(fs->se, cfg) != 0;
	fuse_loop_cfg_destroy(cfg);

	fs_ctl_stop(fs);
	fs_metrics_stop(fs);
	fs_health_stop(fs);
	fs_flusher_stop(fs);
	fs_node_stop(fs); /* hands owned volumes over */
unmount:
	fuse_session_unmount(fs->se);
remove_handlers:
	fuse_remove_signal_handlers(fs->se);
destroy:
	fuse_session_destroy(fs->se); /* calls destroy: writes back, reaps */
	return rc;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fs fs;
	int rc;

	memset(&fs, 0, sizeof(fs));
	fs.run_lock = -1;
	pthread_mutex_init(&fs.vol_lock, NULL);
	pthread_mutex_init(&fs.cat_lock, NULL);
	pthread_rwlock_init(&fs.pool_lock, NULL);
	pthread_mutex_init(&fs.itable_lock, NULL);
	pthread_mutex_init(&fs.flush_lock, NULL);
	pthread_cond_init(&fs.flush_cond, NULL);
	fs.started_ns = (uint64_t)fs_now_ns();

	if (parse_args(&args, &fs.opt) < 0) {
		fuse_opt_free_args(&args);
		return 1;
	}
	if (fs.opt.show_help || fs.opt.show_version) {
		if (fs.opt.show_help)
			usage(argv[0]);
		else
			printf("spacefs %s (FUSE %s)\n", SPACEFS_VERSION, fuse_pkgversion());
		fuse_opt_free_args(&args);
		return 0;
	}
	rc = open_pool(&fs);
	if (rc == 0 && fs.opt.listen) {
		char err[512] = "";
		rc = fs_node_start(&fs, err, sizeof(err));
		if (rc < 0)
			fprintf(stderr, "spacefs: node %s: %s\n", fs.opt.node,
				err[0] ? err : strerror(-rc));
	}
	if (rc == 0) {
		char err[512];
		rc = fs_metrics_open(&fs, err, sizeof(err));
		if (rc < 0)
			fprintf(stderr, "spacefs: %s\n", err[0] ? err : strerror(-rc));
	}
	if (rc == 0)
		rc = run_session(&fs, &args);
	else
		rc = 1;
	close_all(&fs);
	fuse_opt_free_args(&args);
	return rc;
}
