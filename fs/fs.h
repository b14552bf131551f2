/*
 * fs.h -- the spacefs FUSE daemon's shared state.
 *
 * The daemon is laid out like libfuse's passthrough_hp: main.c parses the
 * command line and runs the session; ops.c holds one function per FUSE
 * low-level operation; inode.c keeps the in-memory inode table (lookup
 * counts, open counts, cached attributes of regular files and their lazy
 * write-back); ctl.c serves the control socket spacectl talks to.
 *
 * Inode numbers.  The mount's root (FUSE_ROOT_ID) is synthetic: it lists
 * the volumes.  Every other inode number is (volume id << 48) | volume
 * inode, so numbers are stable across remounts (the volume id is kept in
 * the pool catalogue, the volume inode in the metadata store) and fs/ can
 * route any request to its volume without a lookup.
 *
 * Where a FUSE write becomes chunk I/O: ops.c fs_op_write_buf ->
 * pool_store_write (pool/store.c) -> layout_plan_write (layout/plan.c) ->
 * pool_aio_run (pool/aio.c, one io_submit).
 */
#ifndef SPACEFS_FS_H
#define SPACEFS_FS_H

#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout/layout.h"
#include "pool/meta.h"
#include "pool/pool.h"
#include "pool/store.h"

#define FS_VOL_SHIFT   48
#define FS_VINO_MASK   ((1ull << FS_VOL_SHIFT) - 1)
#define FS_MAX_VOLUMES 256
#define FS_ITABLE_SIZE 4096 /* hash buckets of the inode table */

/* What the command line asked for (fs/main.c documents each). */
struct fs_options {
	char *source;
	char *mountpoint;
	char *node;
	char *log; /* log file when daemonized (default: syslog) */
	unsigned threads;
	unsigned max_background; /* the kernel's limit of requests in flight */
	unsigned flush_interval; /* seconds between attribute write-backs */
	double attr_timeout;
	double entry_timeout;
	int writeback_cache;
	int direct_io;
	int no_odirect; /* buffered chunk I/O even where O_DIRECT works */
	int read_only;
	int foreground;
	int debug;
	int allow_other;
	int default_permissions;
	int show_help;
	int show_version;
	/* several nodes (fs/node.c): all set when listen= is given */
	char *listen;	  /* ADDR:PORT of this node's redirect server */
	double heartbeat; /* seconds between lease renewals (default 1) */
	double lease;	  /* seconds a lease lasts (default 5) */
	int ro_others;	  /* volumes owned elsewhere are read-only here */
	char *metrics;	  /* ADDR:PORT of the Prometheus listener (fs/metrics.c) */
};

/* One mounted volume: a namespace with its own layout. */
struct fs_volume {
	uint32_t id; /* catalogue volume id, the high bits of inode numbers */
	char name[POOL_NAME_MAX + 1];
	struct layout_geom geom;
	int integrity;
	struct pool_meta *meta;
	struct pool_store *store;
	atomic_uint_fast64_t ops, read_bytes, write_bytes;
	/* checkpoint log BLKS records (fs/ckpt.c): appended, in how many
	 * write batches, and the writers' total wait for them, ns */
	atomic_uint_fast64_t ckpt_recs, ckpt_appends, ckpt_wait_ns;
	struct fs_vnode *vn;	      /* ownership state; NULL with one node (fs/node.c) */
	pthread_mutex_t wb_lock;      /* orders attribute write-backs (fs/inode.c) */
	struct fs *fs;		      /* back pointer, for the store's hooks */
	struct pool_drl *drl;	      /* dirty-region log (pool/drl.h); NULL if none */
	struct pool_journal *journal; /* parity journal (pool/journal.h); NULL if none */
	int journal_place_err;	      /* fs_volume_journal_place: the error it logged last */
	struct pool_wb *wb;	      /* its write-back flusher (pool/wback.h); NULL if none */
	struct pool_fault fault;      /* SPACEFS_FAULT, for crash tests (pool/fault.h) */
	struct fs_ckpt *ckpt;	      /* checkpoints (fs/ckpt.c); NULL if none */
	uint32_t journal_mode;	      /* POOL_VOLUME_JOURNAL_* as opened */
	/* Deleted from the catalogue (fs/catalog.c): stores closed, no longer
	 * listed or found by name or id; the struct stays until unmount, as
	 * inodes and requests in flight may still point at it. */
	atomic_int gone;
};

/* An inode some kernel reference or open file holds. */
struct fs_inode {
	uint64_t ino; /* FUSE inode number */
	struct fs_volume *vol;
	struct fs_inode *hnext;
	uint64_t nlookup; /* kernel references; under the table lock */
	uint32_t nopen;	  /* open file handles; under the table lock */
	uint32_t nremote; /* other nodes' handles opened here as owner; table lock */
	uint32_t nref;	  /* transient holds (fs_inode_get/peek ... put); table lock */
	bool retiring;	  /* being written back or purged after its last hold */
	bool purged;	  /* its data and metadata are gone */

	pthread_mutex_t lock;	  /* guards attr and dirty */
	pthread_rwlock_t io_lock; /* shared: read/write; exclusive: size cuts */
	struct pool_inode attr;	  /* for regular files the authoritative copy */
	bool dirty;		  /* attr differs from the metadata store */
};

/* The /dev/fuse channel (fs/chan.c): what the kernel asked, counted. */
#define FS_CHAN_OPS 64 /* opcodes counted one by one; others count as op 0 */
struct fs_chan {
	atomic_uint_fast64_t by_op[FS_CHAN_OPS]; /* every request the kernel sent, by opcode */
	atomic_uint_fast64_t init_unique;	 /* the INIT request awaiting its reply */
	uint64_t offered;			 /* the kernel's INIT flags */
	bool killpriv_v2;			 /* agreed: the daemon clears set-id bits */
	bool direct_io_mmap;			 /* agreed: FUSE direct I/O files map shared */
	unsigned max_background;		 /* asked for in the INIT reply */
};

/* Regular files this daemon made that nothing has written, reserved or
 * cut since (fs/inode.c, fs_empty_*): they hold no block on any disk, so
 * their st_blocks is 0 without a stat() of each chunk file.  Open
 * addressing on FUSE inode numbers (0 free, 1 deleted: neither is a file's
 * number); zeroed memory is an empty set, as for itable_lock. */
struct fs_empty_set {
	pthread_mutex_t lock;
	uint64_t *slot;
	size_t cap, used, live; /* used counts deleted slots too */
};

struct fs {
	struct fs_options opt;
	struct fs_chan chan;
	struct pool *pool;
	struct fuse_session *se;
	struct fs_volume *vol[FS_MAX_VOLUMES];
	uint32_t nvol;
	pthread_mutex_t vol_lock; /* guards vol[] growth (volume create online) */
	/* pool/pool.c wants catalogue changes alone: placement and capacity
	 * take this shared, an online volume create exclusive. */
	pthread_rwlock_t pool_lock;

	pthread_mutex_t itable_lock;
	struct fs_inode *itable[FS_ITABLE_SIZE];
	/* Inodes retired (freed after their write-back), counted under
	 * itable_lock: the count after the latest retire of an inode hashing
	 * to each slot.  A lookup that read the store before such a retire
	 * may hold older attributes than the store now has
	 * (fs_inode_install_read reads them again). */
	uint64_t retired;
	uint64_t retired_at[256];
	struct fs_empty_set empty;

	pthread_t flusher;
	pthread_mutex_t flush_lock;
	pthread_cond_t flush_cond;
	bool stopping;

	struct fs_ctl *ctl;
	struct fs_node *node; /* NULL unless several nodes (listen=) */
	uint64_t started_ns;
	struct fs_health *health;   /* disk health watcher (fs/health.c) */
	struct fs_jobs *jobs;	    /* repair and scrub jobs (fs/jobs.c) */
	struct fs_metrics *metrics; /* -o metrics= HTTP listener (fs/metrics.c) */
	int run_lock;		    /* pool/runlock.c: held until the process ends */
	/* set once fuse_daemonize has forked: threads may be started now */
	atomic_bool daemonized;
	/* the session's operations: inner_ops behind .checkpoints (fs/ckpt_ops.c) */
	struct fuse_lowlevel_ops ops;
	const struct fuse_lowlevel_ops *inner_ops;
	/* Emulated disks (pool/diskmodel.h): one queue per possible disk
	 * index, made at mount with each member's model (none for indexes
	 * not in use), shared by every volume's store, freed at exit. */
	struct pool_diskq *diskq[POOL_MAX_DISKS];
	/* The catalogue as applied to vol[] (fs/catalog.c); cat_lock orders
	 * the polls and changes that apply it. */
	pthread_mutex_t cat_lock;
	uint64_t cat_stamp, cat_applied;
	/* members as last applied: what changed goes to the owned stores */
	uint8_t cat_uuid[POOL_MAX_DISKS][POOL_UUID_LEN];
	uint32_t cat_mstate[POOL_MAX_DISKS];
	uint32_t cat_nmem;
};

/* ---- inode numbers ---- */
static inline uint64_t fs_ino_make(const struct fs_volume *v, uint64_t vino)
{
	return ((uint64_t)v->id << FS_VOL_SHIFT) | vino;
}
static inline uint64_t fs_ino_vino(uint64_t ino)
{
	return ino & FS_VINO_MASK;
}
static inline uint32_t fs_ino_volid(uint64_t ino)
{
	return (uint32_t)(ino >> FS_VOL_SHIFT);
}

/* ---- volumes (fs/volume.c) ---- */
int fs_volume_open(struct fs *fs, const struct pool_sb_volume *pv, char *err, size_t errlen);
void fs_volume_close(struct fs_volume *v);
/* Move the volume's journal copies where they belong now, if they are not
 * there (fs/volume.c; the health watcher's tick). */
void fs_volume_journal_place(struct fs *fs, struct fs_volume *v);
int fs_volume_attach(struct fs *fs, struct fs_volume *v, const struct pool_sb_volume *pv, char *err,
		     size_t errlen);
void fs_volume_detach(struct fs_volume *v);
struct fs_volume *fs_volume_by_id(struct fs *fs, uint32_t id);
struct fs_volume *fs_volume_by_name(struct fs *fs, const char *name);
int64_t fs_now_ns(void);  /* CLOCK_REALTIME, for file times */
int64_t fs_mono_ns(void); /* CLOCK_MONOTONIC, for leases, rates, timeouts */
/* One line "spacefs: ..." on stderr (the daemon's log), flushed at once. */
void fs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the catalogue with several nodes (fs/catalog.c) ---- */
struct pool_catalog_lock;
/* Before changing the catalogue: with several nodes, take the cluster's
 * catalogue lock and adopt what others committed; then fs->pool_lock
 * exclusively.  fs_catalog_end undoes both and wakes the node thread,
 * which applies the change here (or call fs_catalog_apply, holding no
 * volume's lock). */
int fs_catalog_begin(struct fs *fs, struct pool_catalog_lock *l, char *err, size_t errlen);
void fs_catalog_end(struct fs *fs, struct pool_catalog_lock *l);
/* With the heartbeat: reload the catalogue if another node committed, and
 * open new volumes / retire deleted ones.  Never fails (logs). */
void fs_catalog_poll(struct fs *fs);
void fs_catalog_apply(struct fs *fs);
/* "volume-delete NAME" with several nodes; *err says why not. */
int fs_catalog_delete(struct fs *fs, const char *name, char *err, size_t errlen);
static inline bool fs_volume_gone(struct fs_volume *v)
{
	return atomic_load(&v->gone) != 0;
}

/* ---- inode table (fs/inode.c) ----
 * Invariant: nobody touches a struct fs_inode without a count on it.  The
 * kernel's are nlookup, open handles' nopen (other nodes' handles, counted
 * apart: nremote); code that just needs the inode for a while takes a
 * hold: fs_inode_get, fs_inode_install and fs_inode_peek return one,
 * fs_inode_put gives it back.  An inode with no count left is written
 * back (or purged if unlinked) and freed. */
/* Find or load the inode, take `nlookup` kernel references on it, and a
 * hold.  -ENOENT if the volume or inode does not exist. */
int fs_inode_get(struct fs *fs, uint64_t ino, uint64_t nlookup, struct fs_inode **out);
/* Same, from attributes a that need no reload (a new inode, an owner's
 * copy). */
struct fs_inode *fs_inode_install(struct fs *fs, struct fs_volume *v, const struct pool_inode *a,
				  uint64_t nlookup);
/* Same, from attributes a read from the metadata store after
 * fs_inode_epoch returned `epoch`: if the inode is not cached and a retire
 * wrote attributes back since, they are read again (a could be older). */
uint64_t fs_inode_epoch(struct fs *fs);
struct fs_inode *fs_inode_install_read(struct fs *fs, struct fs_volume *v,
				       const struct pool_inode *a, uint64_t nlookup,
				       uint64_t epoch);
/* The inode if it is in the table, with a hold; NULL if not. */
struct fs_inode *fs_inode_peek(struct fs *fs, uint64_t ino);
/* Give back a hold taken by get, install or peek. */
void fs_inode_put(struct fs *fs, struct fs_inode *in);
void fs_inode_forget(struct fs *fs, struct fs_inode *in, uint64_t n);
void fs_inode_open(struct fs *fs, struct fs_inode *in);
void fs_inode_release(struct fs *fs, struct fs_inode *in);
/* The same for a handle another node's client opened through this node as
 * the volume's owner (fs/serve.c), counted apart from nopen: a peer's
 * release may be for an open a previous owner counted, and must never
 * take one of this node's own.  Such a release (no count here) does
 * nothing. */
void fs_inode_open_remote(struct fs *fs, struct fs_inode *in);
void fs_inode_release_remote(struct fs *fs, struct fs_inode *in);
/* Current attributes (cached for regular files, from the store otherwise). */
int fs_inode_attr(struct fs *fs, struct fs_inode *in, struct pool_inode *out);
/* After a namespace change the store made to an inode (nlink, ctime),
 * refresh a cached copy without losing unwritten size/mtime changes. */
void fs_inode_refresh_links(struct fs *fs, struct fs_volume *v, const struct pool_inode *a);
/* If nobody references an unlinked inode any more, remove its data. */
void fs_inode_reap_if_unused(struct fs *fs, struct fs_volume *v, const struct pool_inode *a);
/* Stamp ctime (and mtime if asked) now, in the cache for a cached
 * regular file, else in the metadata store. */
int fs_inode_touch(struct fs *fs, struct fs_volume *v, uint64_t vino, bool mtime);
/* Write one inode's cached attributes back (fsync) or all of them. */
int fs_inode_flush(struct fs *fs, struct fs_inode *in);
int fs_inode_flush_all(struct fs *fs);
/* Drop every inode at unmount (flushing, purging unlinked ones). */
void fs_inode_table_clear(struct fs *fs);
/* Files known to hold no blocks (struct fs_empty_set): note a file just
 * created, ask, and drop one before anything may allocate for it
 * (fs_empty_drop before every store write, truncate, punch, reserve). */
void fs_empty_note(struct fs *fs, uint64_t ino);
bool fs_empty_known(struct fs *fs, uint64_t ino);
void fs_empty_drop(struct fs *fs, uint64_t ino);
void fs_file_map(const struct fs_inode *in, struct pool_file_map *map);
/* Size of a file as the daemon knows it (cached attributes, which run
 * ahead of the metadata store); -ENOENT if not in the table. */
int fs_inode_cached_size(struct fs *fs, uint64_t ino, uint64_t *size);
void fs_attr_to_stat(const struct pool_inode *a, uint64_t ino, struct stat *st);

int fs_flusher_start(struct fs *fs);
void fs_flusher_stop(struct fs *fs);

/* ---- FUSE operations (fs/ops.c) ---- */
extern const struct fuse_lowlevel_ops fs_ops;
/* Pieces of them the owner also runs for other nodes' requests (fs/serve.c). */
int fs_apply_setattr(struct pool_inode *a, const struct stat *attr, int to_set);
int fs_set_size(struct fs_inode *in, uint64_t size);
int fs_zero_range(struct fs_inode *in, uint64_t off, uint64_t end);
void fs_falloc_attrs(struct fs_inode *in, uint64_t end, int mode);
int fs_do_fallocate(struct fs_inode *in, int mode, uint64_t off, uint64_t len);
/* SEEK_DATA / SEEK_HOLE from off on an open file, as this daemon (the
 * volume's owner) knows it: checkpoint layers, then the chunk files'
 * holes.  0 with *at, or -ENXIO (no data / off past the end) or another
 * negative errno.  The owner runs this for other nodes too (fs/serve.c). */
int fs_do_lseek(struct fs_inode *in, uint64_t off, int whence, uint64_t *at);
int fs_sync_inode(struct fs *fs, struct fs_inode *in);
size_t fs_add_entry(fuse_req_t req, char *buf, size_t left, const char *name,
		    struct fuse_entry_param *e, off_t next, bool plus);
size_t fs_add_dots(fuse_req_t req, char *buf, size_t size, off_t off, fuse_ino_t ino,
		   fuse_ino_t parent, bool plus, off_t *next);
int fs_do_unlink(struct fs *fs, struct fs_volume *v, uint64_t parent, const char *name);
int fs_do_rmdir(struct fs *fs, struct fs_volume *v, uint64_t parent, const char *name);
int fs_do_rename(struct fs *fs, struct fs_volume *v, uint64_t parent, const char *name,
		 uint64_t newparent, const char *newname, unsigned int flags);
int fs_check_xattr_name(const char *name);
void fs_pool_space(struct fs *fs, struct fs_volume *v, uint64_t *size, uint64_t *avail);
int fs_new_inode(struct fs *fs, struct fs_volume *v, uint64_t parent_vino, mode_t mode, dev_t rdev,
		 uid_t uid, gid_t gid, struct pool_inode *a);

/* ---- several nodes (fs/node.c, fs/route.c; fs/node.h has the rest) ---- */
/* True if this node serves v from its own stores now; the ownership is
 * then held shared until fs_vol_leave(v).  Always true with one node. */
bool fs_vol_enter_local(struct fs_volume *v);
void fs_vol_leave(struct fs_volume *v);
/* Same, even while a state change waits (last-reference write-back). */
bool fs_vol_hold_local(struct fs_volume *v);
/* Data fencing (fs/node.c): 0 if this node may still submit chunk writes
 * to v (one node, or the owner before its lease deadline), else
 * -EREMCHG (FS_NOT_OWNER), logged once per lost lease. */
int fs_vol_may_write(struct fs_volume *v);
int fs_node_volume_init(struct fs *fs, struct fs_volume *v, const struct pool_sb_volume *pv,
			char *err, size_t errlen);
void fs_node_volume_free(struct fs_volume *v);
int fs_node_fence(struct fs *fs, struct fs_volume *v, char *err, size_t errlen);
/* The FUSE operations with several nodes: fs_ops, routed per volume. */
extern const struct fuse_lowlevel_ops fs_route_ops;
/* A local write, truncate or fallocate that meets the data fence (its
 * lease ran out while it ran: FS_NOT_OWNER from the store) is not
 * answered with an error when route.c can send it to the next owner:
 * with fs_route_resend_ok set by route.c around the local call,
 * fs_route_fenced sets fs_route_resend, ops.c leaves the request
 * unanswered, and route.c's ROUTE routes it again. */
extern __thread bool fs_route_resend_ok, fs_route_resend;
static inline bool fs_route_fenced(int rc)
{
	if (rc != -EREMCHG || !fs_route_resend_ok)
		return false;
	fs_route_resend = true; /* not answered: route.c sends it on */
	return true;
}
/* Write one volume's dirty cached attributes back; reload them after
 * this node took the volume over. */
int fs_inode_flush_volume(struct fs *fs, struct fs_volume *v);
void fs_inode_reload_volume(struct fs *fs, struct fs_volume *v);

/* ---- disk health (fs/health.c) and jobs (fs/jobs.c) ---- */
/* Start watching the disks: records disks found failed at mount, starts
 * the repairs and resyncs the pool needs, checks every disk each second. */
int fs_health_start(struct fs *fs);
void fs_health_stop(struct fs *fs);
/* The store hook: disk failed under I/O (any thread). */
void fs_health_disk_failed(struct fs *fs, uint32_t disk, const char *why);
/* The store hook: a chunk write to disk got ENOSPC (any thread).  The
 * disk counts as full until the watcher's statvfs shows space again. */
void fs_health_disk_full(struct fs *fs, uint32_t disk);
/* What the daemon knows of a disk's space, for `spacectl status`. */
struct fs_disk_space {
	bool full;	     /* ENOSPC seen, space not back since */
	uint64_t enospc;     /* ENOSPC answers since mount */
	int64_t last_enospc; /* when the last came (epoch seconds; 0: never) */
	bool have_free;	     /* free is known (statvfs worked) */
	uint64_t free;	     /* bytes available, at the last check */
};
void fs_health_space(struct fs *fs, uint32_t disk, struct fs_disk_space *out);
/* Why volume v cannot place new chunk data ("disk d1 full", "disks d1,d3
 * full") into why, or "" if it can: fewer in-service disks that are not
 * full than a file of its layout spans.  Caller holds fs->pool_lock. */
void fs_health_cannot_allocate(struct fs *fs, const struct layout_geom *g, char *why, size_t size);
/* Store hooks of a volume (fs/health.c). */
const struct pool_store_hooks *fs_volume_hooks(void);
/* Control commands of fs/ctl.c that touch disks or jobs: one request, a
 * reply "ok\n..." or "error: ...\n" in a malloc'd string. */
char *fs_jobs_request(struct fs *fs, int argc, char **argv);
int fs_jobs_handles(const char *request); /* is it one of those? */
/* The jobs as a JSON array, malloc'd ("[]" if none). */
char *fs_jobs_json(struct fs *fs);
int fs_jobs_init(struct fs *fs);
void fs_jobs_stop(struct fs *fs);

/* ---- the /dev/fuse channel (fs/chan.c) ---- */
/* Route the session's requests and replies through fs/chan.c (after
 * fuse_session_mount). */
int fs_chan_attach(struct fs *fs);
/* The request this thread runs asked the daemon to clear set-id bits. */
bool fs_chan_kill_suidgid(void);
/* mode with the bits such a request clears for the calling user. */
mode_t fs_chan_killed_mode(fuse_req_t req, mode_t mode, gid_t file_gid);
/* The request counters as a JSON object; its length or -ENOSPC. */
int fs_chan_json(struct fs *fs, char *buf, size_t len);

/* ---- control socket (fs/ctl.c) ---- */
int fs_ctl_start(struct fs *fs, char *err, size_t errlen);
void fs_ctl_stop(struct fs *fs);

/* ---- metrics (fs/metrics.c) ---- */
/* The counters in the Prometheus text format, malloc'd; NULL if out of
 * memory.  Served by the ctl "metrics" request and -o metrics=. */
char *fs_metrics_text(struct fs *fs);
/* Accept connections on lfd and hand each to serve (which must not close
 * it) until stop_fd becomes readable: the control socket's and the metrics
 * listener's thread body (fs/ctl.c). */
void fs_accept_loop(struct fs *fs, int lfd, int stop_fd, void (*serve)(struct fs *, int));
/* -o metrics=ADDR:PORT: bind before mounting (a clear error, nothing
 * mounted), start serving once daemonized, stop before unmount. */
int fs_metrics_open(struct fs *fs, char *err, size_t errlen);
int fs_metrics_start(struct fs *fs, char *err, size_t errlen);
void fs_metrics_stop(struct fs *fs);

#endif /* SPACEFS_FS_H */
