/*
 * volume.c -- bringing one volume of the pool into the daemon.
 *
 * A volume is a metadata store (replicated on the volume's metadata disks)
 * plus a chunk store (its data on every disk).  Opening one also reaps
 * orphans: files unlinked while open when the previous daemon died, whose
 * inodes (nlink 0) and chunk files are still there.
 *
 * Volumes are only ever added to vol[] while mounted (`spacectl volume
 * create` through the control socket, or another node's, fs/catalog.c),
 * never removed: a deleted one is only marked gone, so vol[] entries below
 * nvol stay valid without a lock once read.  Lookups by id or name skip
 * gone volumes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/fs.h"
#include "fs/jobs.h"
#include "pool/drl.h"
#include "pool/journal.h"
#include "pool/wback.h"

int64_t fs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int64_t fs_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

void fs_log(const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "spacefs: %s\n", line);
	fflush(stderr);
}

struct fs_volume *fs_volume_by_id(struct fs *fs, uint32_t id)
{
	struct fs_volume *found = NULL;

	pthread_mutex_lock(&fs->vol_lock);
	for (uint32_t i = 0; i < fs->nvol && !found; i++)
		if (fs->vol[i]->id == id && !fs_volume_gone(fs->vol[i]))
			found = fs->vol[i];
	pthread_mutex_unlock(&fs->vol_lock);
	return found;
}

struct fs_volume *fs_volume_by_name(struct fs *fs, const char *name)
{
	struct fs_volume *found = NULL;

	pthread_mutex_lock(&fs->vol_lock);
	for (uint32_t i = 0; i < fs->nvol && !found; i++)
		if (strcmp(fs->vol[i]->name, name) == 0 && !fs_volume_gone(fs->vol[i]))
			found = fs->vol[i];
	pthread_mutex_unlock(&fs->vol_lock);
	return found;
}

struct orphans {
	struct pool_inode *in;
	size_t n, cap;
};

static int collect_orphan(void *arg, const struct pool_inode *in)
{
	struct orphans *o = arg;

	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 16;
		struct pool_inode *p = realloc(o->in, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		o->in = p;
		o->cap = cap;
	}
	o->in[o->n++] = *in;
	return 0;
}

/* Collect first, remove after: the store's iteration holds its lock. */
static int purge_orphans(struct fs_volume *v)
{
	struct orphans o = {0};
	int rc = pool_meta_orphans(v->meta, collect_orphan, &o);
	size_t kept = 0;

	for (size_t i = 0; rc == 0 && i < o.n; i++) {
		const struct pool_inode *in = &o.in[i];
		if (fs_ckpt_holds(v, in->ino)) {
			kept++; /* a checkpoint still reads it */
			continue;
		}
		if (S_ISREG(in->mode) && in->npos > 0) {
			struct pool_file_map map = {.id = in->ino, .npos = in->npos};
			memcpy(map.disk, in->disk, sizeof(map.disk));
			rc = pool_store_remove(v->store, &map);
		}
		if (rc == 0)
			rc = pool_meta_purge(v->meta, in->ino);
	}
	if (o.n > kept)
		fprintf(stderr,
			"spacefs: volume %s: removed %zu files unlinked while open before "
			"an unclean shutdown\n",
			v->name, o.n - kept);
	free(o.in);
	return rc;
}

static int open_meta(struct fs *fs, struct fs_volume *v, const struct pool_sb_volume *pv, char *err,
		     size_t errlen)
{
	const char *dirs[POOL_META_MAX_REPLICAS];
	char paths[POOL_META_MAX_REPLICAS][4096];
	uint32_t n = 0;

	for (uint32_t i = 0; i < pv->nmeta && n < POOL_META_MAX_REPLICAS; i++) {
		if (pv->meta[i] >= fs->pool->ndisks ||
		    fs->pool->disk[pv->meta[i]].state != POOL_DISK_HEALTHY)
			continue;
		const char *disk = fs->pool->disk[pv->meta[i]].path;
		snprintf(paths[n], sizeof(paths[n]), "%s/vol/%s", disk, pv->name);
		dirs[n] = paths[n];
		n++;
	}
	if (n == 0) {
		snprintf(err, errlen, "volume %s: none of its metadata disks is available",
			 pv->name);
		return -EIO;
	}
	return pool_meta_open(dirs, n, 0, 0, &v->meta, err, errlen);
}

static int open_store(struct fs *fs, struct fs_volume *v, char *err, size_t errlen)
{
	/* Room for every disk the pool may ever have (disks added online);
	 * disks out of service are absent: failed for the store. */
	uint32_t nd = POOL_MAX_DISKS;
	const char **paths = calloc(nd, sizeof(*paths));
	struct pool_store_hooks hooks = *fs_volume_hooks();
	int rc;

	if (!paths)
		return -ENOMEM;
	hooks.arg = v;
	for (uint32_t i = 0; i < fs->pool->ndisks; i++)
		if (pool_disk_in_service(fs->pool, i))
			paths[i] = fs->pool->disk[i].path;
	struct pool_store_config cfg = {
	    .hooks = &hooks,
	    .volume = v->name,
	    .disk_path = paths,
	    .ndisks = nd,
	    .geom = v->geom,
	    .integrity = v->integrity,
	    .no_direct = fs->opt.no_odirect,
	    .diskq = fs->diskq,
	    .fault = &v->fault,
	};
	rc = pool_store_open(&cfg, &v->store, err, errlen);
	free(paths);
	for (uint32_t i = 0; rc == 0 && i < fs->pool->ndisks; i++)
		if (fs->pool->disk[i].state == POOL_DISK_REPAIRING)
			pool_store_disk_set(v->store, i, POOL_STORE_DISK_REBUILDING);
	return rc;
}

/* The dirty-region log, on the volume's metadata disks in service. */
static int open_drl(struct fs *fs, struct fs_volume *v, const struct pool_sb_volume *pv, char *err,
		    size_t errlen)
{
	const char *dirs[POOL_META_DISKS];
	char paths[POOL_META_DISKS][POOL_PATH_MAX + 80];
	uint32_t n = 0;

	for (uint32_t i = 0; i < pv->nmeta; i++) {
		if (pv->meta[i] >= fs->pool->ndisks || !pool_disk_in_service(fs->pool, pv->meta[i]))
			continue;
		snprintf(paths[n], sizeof(paths[n]), "%s/vol/%s", fs->pool->disk[pv->meta[i]].path,
			 pv->name);
		dirs[n] = paths[n];
		n++;
	}
	if (fs->opt.read_only)
		return 0; /* nothing is written: nothing to log */
	int rc = pool_drl_open(dirs, n, pv->name, &v->drl, err, errlen);
	/* checkpoints: their log lives beside the dirty-region log */
	return rc ? rc : fs_ckpt_attach(v, dirs, n, err, errlen);
}

static int journal_sync(void *arg)
{
	struct fs_volume *v = arg;
	if (pool_fault_hit(&v->fault, POOL_FAULT_JSYNC))
		return -EIO;
	return pool_store_syncfs(v->store);
}

/* Replay one journal record: the file's map is taken from the metadata
 * as it is now (a file deleted since has nothing to restore). */
static int journal_apply(void *arg, const struct pool_journal_rec *r)
{
	struct fs_volume *v = arg;
	struct pool_inode in;
	int rc = pool_meta_get(v->meta, r->file_id, &in);

	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	struct pool_file_map map = {.id = in.ino, .npos = in.npos};
	memcpy(map.disk, in.disk, sizeof(map.disk));
	if (map.npos == 0)
		return 0;
	return pool_store_replay(v->store, &map, r);
}

/* Data fencing (fs/node.c): a journal append is a write to the volume like
 * a chunk write; a node that lost the volume must not append after the
 * next owner replayed the journal. */
static int journal_may_write(void *arg)
{
	return fs_vol_may_write(arg);
}

static void wb_done(void *arg, size_t n)
{
	struct fs_volume *v = arg;
	pool_journal_done(v->journal, n);
}

static void wb_hold(void *arg, int on)
{
	struct fs_volume *v = arg;
	pool_journal_hold(v->journal, on);
}

static int wb_apply(void *arg, const struct pool_file_map *f, const struct pool_journal_piece *p,
		    uint32_t n)
{
	struct fs_volume *v = arg;
	return pool_store_wb_apply(v->store, f, p, n);
}

/* Write-back mode: unapplied pieces are held in memory up to a quarter of
 * the journal, at most 64 MiB (docs/OPERATIONS.md, "Parity journal"). */
static int open_wb(struct fs_volume *v, const struct pool_sb_volume *pv, uint64_t jsize, char *err,
		   size_t errlen)
{
	uint64_t limit = jsize / 4 < (64ull << 20) ? jsize / 4 : (64ull << 20);
	struct pool_wb_config wc = {
	    .volume = pv->name,
	    .limit = limit,
	    .interleave = pv->geom.interleave,
	    .apply = wb_apply,
	    .done = wb_done,
	    .hold = wb_hold,
	    .arg = v,
	    .hold_ms = v->fault.kind == POOL_FAULT_WBHOLD ? (uint32_t)v->fault.at : 0,
	    /* before fuse_daemonize: fs/main.c starts it in the child */
	    .defer_thread = !atomic_load(&v->fs->daemonized),
	};
	int rc = pool_wb_new(&wc, &v->wb);
	if (rc < 0) {
		snprintf(err, errlen, "volume %s: cannot start the journal's flusher: %s", pv->name,
			 strerror(-rc));
		return rc;
	}
	pool_store_set_wb(v->store, v->wb);
	return 0;
}

/* mkdir dir; if this created it, fsync its parent, so the directory (and
 * the journal about to be created in it) survives a power cut.  0 (also
 * when it existed) or -errno; a directory whose parent cannot be synced is
 * removed again, so that the next try creates and syncs it again. */
static int mkdir_durable(const char *dir)
{
	if (mkdir(dir, 0755) < 0)
		return errno == EEXIST ? 0 : -errno;
	int rc = pool_fsync_parent(dir);
	if (rc < 0)
		rmdir(dir);
	return rc;
}

/* <disk>/vol/<volume>: a journal disk added after the volume was created
 * has none yet.  0, or -errno with the directory that failed in what:
 * the copy cannot be opened there. */
static int journal_dir(const char *disk, const char *volume, char *what, size_t len)
{
	snprintf(what, len, "%.*s/vol", POOL_PATH_MAX, disk);
	int rc = mkdir_durable(what);
	if (rc == 0) {
		snprintf(what, len, "%.*s/vol/%.64s", POOL_PATH_MAX, disk, volume);
		rc = mkdir_durable(what);
	}
	return rc;
}

/* Every disk that may hold a copy of pv's journal, in order of
 * preference: the pool's journal disks (from the one the volume id picks,
 * so volumes spread over them), the volume's metadata disks, then the
 * other data disks (from the one the id picks).  Returns how many. */
static uint32_t journal_candidates(const struct pool *p, const struct pool_sb_volume *pv,
				   uint32_t *cand)
{
	uint32_t nc = 0;
	uint64_t seen = 0;

	for (uint32_t k = 0; k < p->ndisks; k++) { /* journal disks, rotated */
		uint32_t i = (uint32_t)((pv->id + k) % p->ndisks);
		if (pool_disk_is_journal(p, i))
			cand[nc++] = i, seen |= 1ull << i;
	}
	for (uint32_t i = 0; i < pv->nmeta; i++)
		if (pv->meta[i] < p->ndisks && !(seen >> pv->meta[i] & 1))
			cand[nc++] = pv->meta[i], seen |= 1ull << pv->meta[i];
	for (uint32_t k = 0; k < p->ndisks; k++) { /* the other data disks */
		uint32_t i = (uint32_t)((pv->id + k) % p->ndisks);
		if (!(seen >> i & 1))
			cand[nc++] = i, seen |= 1ull << i;
	}
	return nc;
}

/* Where the journal of volume pv keeps its copies (docs/ARCHITECTURE.md,
 * "Journal disks"), as the pool is now: parity + 1 copies on distinct
 * disks, so it survives as many lost disks as the volume.  The journal
 * disks in service come first, then the volume's metadata disks fill what
 * is missing (one journal disk takes one copy off the data disks, parity
 * + 1 of them take all), then, if too few of those are in service, other
 * data disks, healthy ones before retired or repairing ones.  A failed or
 * retired journal disk is passed over.  The same
 * rule at open (journal_paths) and while open (fs_volume_journal_place),
 * so a volume's copies go where its next open looks first.  Fills
 * disks[0..) and returns the number of copies. */
static uint32_t journal_place(const struct pool *p, const struct pool_sb_volume *pv,
			      uint32_t *disks)
{
	uint32_t want = pv->geom.parity + 1, nw = 0, cand[POOL_MAX_DISKS];
	uint32_t nc = journal_candidates(p, pv, cand);
	uint64_t taken = 0;

	if (want > POOL_JOURNAL_MAX_COPIES)
		want = POOL_JOURNAL_MAX_COPIES;
	uint64_t meta = 0;
	for (uint32_t i = 0; i < pv->nmeta; i++)
		if (pv->meta[i] < p->ndisks)
			meta |= 1ull << pv->meta[i];
	/* pass 0: journal disks healthy (not failed, retired, repairing);
	 * 1: the metadata disks in service (as ever); 2: other data disks
	 * healthy; 3: only then a retired or repairing one (a copy there
	 * moves again once it is out or rebuilt) */
	for (uint32_t pass = 0; pass < 4; pass++) {
		for (uint32_t c = 0; c < nc && nw < want; c++) {
			uint32_t d = cand[c];
			int jd = pool_disk_is_journal(p, d), md = !jd && (meta >> d & 1);
			int ok = pass == 0   ? jd && p->disk[d].state == POOL_DISK_HEALTHY
				 : pass == 1 ? md && pool_disk_in_service(p, d)
				 : pass == 2
				     ? !jd && !md && p->disk[d].state == POOL_DISK_HEALTHY &&
					   pool_disk_in_service(p, d)
				     : !jd && !md && pool_disk_in_service(p, d);
			if ((taken >> d & 1) || !ok)
				continue;
			taken |= 1ull << d;
			disks[nw++] = d;
		}
	}
	return nw;
}

/* The journal files of pv at open: the copies (journal_place), then every
 * other disk in service that still has one (a journal disk added, back or
 * not picked; a disk no longer needed; a copy moved while open and not
 * removed before a crash), read only by the replay, so records are found
 * wherever they were written.  Returns the number of copies; *n the
 * number of paths. */
static uint32_t journal_paths(struct fs *fs, const struct pool_sb_volume *pv,
			      char (*buf)[POOL_PATH_MAX + 96], const char **paths, uint32_t *disks,
			      uint32_t *n)
{
	struct pool *p = fs->pool;
	uint32_t nw = journal_place(p, pv, disks), cand[POOL_MAX_DISKS];
	uint32_t nc = journal_candidates(p, pv, cand);
	uint64_t taken = 0;
	struct stat st;

	for (uint32_t i = 0; i < nw; i++)
		taken |= 1ull << disks[i];
	/* older copies elsewhere, read by the replay only */
	uint32_t no = nw, skipped = 0;
	char extra[POOL_PATH_MAX + 96];
	for (uint32_t c = 0; c < nc; c++) {
		uint32_t d = cand[c];
		if ((taken >> d & 1) || !pool_disk_in_service(p, d))
			continue;
		taken |= 1ull << d;
		char *f = no < POOL_JOURNAL_MAX_FILES ? buf[no] : extra;
		snprintf(f, sizeof(extra), "%s/vol/%s/journal", p->disk[d].path, pv->name);
		if (stat(f, &st) < 0)
			continue;
		if (no < POOL_JOURNAL_MAX_FILES)
			disks[no++] = d;
		else
			skipped++;
	}
	if (skipped) /* past the slots: neither read nor removed, so named */
		fs_log("volume %s: %u journal file%s on other disks beyond the %u read "
		       "(neither replayed nor removed)",
		       pv->name, skipped, skipped == 1 ? "" : "s", POOL_JOURNAL_MAX_FILES);
	for (uint32_t i = 0; i < no; i++) {
		char dir[POOL_PATH_MAX + 96];
		int rc =
		    i < nw ? journal_dir(p->disk[disks[i]].path, pv->name, dir, sizeof(dir)) : 0;
		snprintf(buf[i], sizeof(buf[i]), "%s/vol/%s/journal", p->disk[disks[i]].path,
			 pv->name);
		paths[i] = buf[i];
		if (rc < 0) { /* as a copy that cannot be opened: skipped */
			fs_log("volume %s: journal copy on disk %u not opened: directory %s: %s",
			       pv->name, disks[i], dir, strerror(-rc));
			paths[i] = NULL;
		}
	}
	*n = no;
	return nw;
}

/* While the volume is open (the health watcher's tick, every second): if
 * its journal's copies are not where journal_place says -- a copy's disk
 * failed, or a disk came back, was replaced or added -- move them at a
 * checkpoint (pool_journal_set_copies), so the journal is back at parity +
 * 1 copies without a remount.  Appends wait at most 200 ms for the
 * checkpoint; records still in flight then (write-back not applied yet)
 * leave the move to the next tick or checkpoint. */
void fs_volume_journal_place(struct fs *fs, struct fs_volume *v)
{
	char buf[POOL_JOURNAL_MAX_COPIES][POOL_PATH_MAX + 96];
	char dpath[POOL_JOURNAL_MAX_COPIES][POOL_PATH_MAX];
	const char *paths[POOL_JOURNAL_MAX_COPIES];
	uint32_t disks[POOL_MAX_DISKS], nw = 0;

	if (!v->journal)
		return;
	pthread_rwlock_rdlock(&fs->pool_lock);
	const struct pool_sb_volume *pv = pool_volume_find(fs->pool, v->name);
	if (pv)
		nw = journal_place(fs->pool, pv, disks);
	for (uint32_t i = 0; i < nw; i++) {
		snprintf(dpath[i], sizeof(dpath[i]), "%s", fs->pool->disk[disks[i]].path);
		snprintf(buf[i], sizeof(buf[i]), "%s/vol/%s/journal", dpath[i], v->name);
		paths[i] = buf[i];
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	/* no disk in service: the copy kept is all there is */
	if (nw == 0 || pool_journal_placed(v->journal, paths, disks, nw))
		return;
	int rc = 0;
	char dir[POOL_PATH_MAX + 96];
	for (uint32_t i = 0; i < nw && rc == 0; i++) /* <disk>/vol/<volume> for a new copy */
		rc = journal_dir(dpath[i], v->name, dir, sizeof(dir));
	if (rc < 0) { /* the next tick tries again */
		if (v->journal_place_err != rc)
			fs_log("volume %s: journal copies not moved: directory %s: %s (tried again "
			       "every second)",
			       v->name, dir, strerror(-rc));
		v->journal_place_err = rc;
		return;
	}
	rc = pool_journal_set_copies(v->journal, paths, disks, nw, 200);
	/* -EAGAIN: the next tick; -EIO: every copy failed, which the journal
	 * said once already.  Anything else once, not a line a second. */
	if (rc < 0 && rc != -EAGAIN && rc != -EIO && v->journal_place_err != rc)
		fs_log("volume %s: journal copies cannot be moved: %s", v->name, strerror(-rc));
	if (rc != -EAGAIN)
		v->journal_place_err = rc;
}

/* The parity journal (docs/FORMAT.md, "Parity journal"), its copies where
 * journal_paths says.  Replayed here, before anything else writes the
 * volume; with the journal turned off, a journal left over is replayed
 * once and then left alone. */
static int open_journal(struct fs *fs, struct fs_volume *v, const struct pool_sb_volume *pv,
			char *err, size_t errlen)
{
	const char *paths[POOL_JOURNAL_MAX_FILES];
	uint32_t disks[POOL_JOURNAL_MAX_FILES];
	char buf[POOL_JOURNAL_MAX_FILES][POOL_PATH_MAX + 96];
	uint32_t n = 0, want = pv->geom.parity + 1;
	struct stat st;

	v->journal_mode = pv->journal;
	if (pv->geom.kind != LAYOUT_PARITY || fs->opt.read_only)
		return 0;
	uint32_t nw = journal_paths(fs, pv, buf, paths, disks, &n);
	int exists = 0;
	for (uint32_t i = 0; i < n; i++)
		exists |= paths[i] && stat(paths[i], &st) == 0;
	if (pv->journal == POOL_VOLUME_JOURNAL_OFF && !exists)
		return 0;
	if (nw == 0) {
		snprintf(err, errlen, "volume %s: no disk in service for its journal", pv->name);
		return -EIO;
	}
	if (nw < want)
		fs_log("volume %s: journal kept in %u of %u copies (its disks are out of service)",
		       pv->name, nw, want);
	uint32_t mib = pv->journal_mib ? pv->journal_mib : POOL_JOURNAL_DEFAULT_MIB;
	struct pool_journal_config cfg = {
	    .volume = pv->name,
	    .volume_id = pv->id,
	    .path = paths,
	    .disk = disks,
	    .npath = n,
	    .nwrite = nw,
	    .size = (uint64_t)mib << 20,
	    .no_direct = fs->opt.no_odirect,
	    .sync = journal_sync,
	    .arg = v,
	    .fault = &v->fault,
	    .may_write = journal_may_write,
	    .fence_arg = v,
	};
	int rc = pool_journal_open(&cfg, &v->journal, err, errlen);
	if (rc == 0 && (rc = pool_journal_replay(v->journal, journal_apply, v)) < 0) {
		snprintf(err, errlen,
			 "volume %s: journal replay failed: %s (the journal keeps its records: "
			 "mount again once the disks it needs are back)",
			 pv->name, strerror(-rc));
		/* As a crash would leave it: the next open replays it all again.
		 * A clean close would checkpoint, and a sync that works now would
		 * end the epoch with records whose replay did not finish. */
		pool_journal_close(v->journal, 0);
		v->journal = NULL;
	}
	if (rc == 0 && pv->journal == POOL_VOLUME_JOURNAL_OFF) {
		pool_journal_close(v->journal, 1);
		v->journal = NULL;
		for (uint32_t i = 0; i < n; i++)
			if (paths[i])
				unlink(paths[i]); /* replayed: nothing left to keep */
	}
	/* Older copies: replayed and superseded by the new epoch.  Removed, so
	 * that one can never be taken for the journal if the copies are lost. */
	char on[64] = "";
	for (uint32_t i = 0; i < nw && strlen(on) + 8 < sizeof(on); i++)
		snprintf(on + strlen(on), sizeof(on) - strlen(on), "%s%u", i ? "," : "", disks[i]);
	for (uint32_t i = nw; rc == 0 && v->journal && i < n; i++)
		if (unlink(paths[i]) == 0)
			fs_log("volume %s: older journal copy %s replayed and removed (the copies "
			       "are on disks %s now)",
			       pv->name, paths[i], on);
	if (rc == 0 && v->journal)
		pool_store_set_journal(v->store, v->journal);
	if (rc == 0 && v->journal && pv->journal == POOL_VOLUME_JOURNAL_WB)
		rc = open_wb(v, pv, cfg.size, err, errlen);
	return rc;
}

static void detach(struct fs_volume *v, bool clean);

/* A replacement recorded as being rebuilt but not found at this mount
 * holds only the files its rebuild reached: when it returns it must be
 * rebuilt whole (fs/health.c stores_fail says why). */
static void stale_unrebuilt(struct fs *fs, struct fs_volume *v)
{
	for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
		if (fs->pool->sb->member[d].state != POOL_MEMBER_REPAIRING ||
		    pool_disk_in_service(fs->pool, d))
			continue;
		char why[64];
		snprintf(why, sizeof(why), "disk %u, being rebuilt, is away", d);
		pool_drl_stale_all(v->drl, why);
	}
}

/* Open the volume's stores (metadata replicas, chunk store, dirty-region
 * log, parity journal), replay the journal, reap orphans and resync what
 * an unclean stop left dirty: at mount, or when this node becomes the
 * volume's owner. */
int fs_volume_attach(struct fs *fs, struct fs_volume *v, const struct pool_sb_volume *pv, char *err,
		     size_t errlen)
{
	int rc = pool_fault_parse(getenv("SPACEFS_FAULT"), &v->fault, err, errlen);

	if (rc == 0)
		rc = open_meta(fs, v, pv, err, errlen);
	if (rc == 0)
		rc = open_store(fs, v, err, errlen);
	if (rc == 0 && v->vn)
		rc = fs_node_fence(fs, v, err, errlen); /* before anything is written */
	else if (rc == 0 && (rc = pool_meta_exclusive(v->meta)) < 0)
		snprintf(err, errlen, "volume %s: cannot lock its metadata replicas: %s", v->name,
			 strerror(-rc));
	if (rc == 0)
		rc = open_drl(fs, v, pv, err, errlen);
	if (rc == 0 && v->drl)
		stale_unrebuilt(fs, v);
	if (rc == 0)
		rc = open_journal(fs, v, pv, err, errlen);
	if (rc == 0)
		rc = purge_orphans(v);
	if (rc == 0 && (rc = fs_volume_resync(fs, v)) < 0)
		snprintf(err, errlen, "volume %s: resync of dirty regions failed: %s", v->name,
			 strerror(-rc));
	if (rc < 0)
		detach(v, false);
	return rc;
}

/* Close the stores (unmount, or another node owns the volume now).  A
 * clean close: every chunk on disk, every dirty mark cleared. */
void fs_volume_detach(struct fs_volume *v)
{
	detach(v, true);
}

/* With `clean` false (an open that failed half way: a replay that could
 * not finish, a resync that failed) the dirty-region log keeps its dirty
 * marks whatever the sync does: the regions a crash left torn were not
 * resynced, and a sync that works (it skips disks that are out) proves
 * nothing about them. */
static void detach(struct fs_volume *v, bool clean)
{
	fs_ckpt_detach(v); /* stops the merge worker before the stores go */
	if (v->wb) {	   /* everything acknowledged in place first */
		pool_wb_drain(v->wb);
		pool_store_set_wb(v->store, NULL);
		pool_wb_free(v->wb);
		v->wb = NULL;
	}
	if (v->journal) {
		pool_store_set_journal(v->store, NULL);
		pool_journal_close(v->journal, 1);
	}
	v->journal = NULL;
	if (v->drl)
		pool_drl_close(v->drl, clean && v->store && pool_store_syncfs(v->store) == 0);
	if (v->store)
		pool_store_close(v->store);
	if (v->meta)
		pool_meta_close(v->meta);
	v->drl = NULL;
	v->store = NULL;
	v->meta = NULL;
}

int fs_volume_open(struct fs *fs, const struct pool_sb_volume *pv, char *err, size_t errlen)
{
	struct fs_volume *v = calloc(1, sizeof(*v));
	int rc = 0;

	if (!v)
		return -ENOMEM;
	pthread_mutex_init(&v->wb_lock, NULL);
	if (pv->id == 0 || pv->id >= (1u << 16)) {
		snprintf(err, errlen, "volume %s: id %llu out of range", pv->name,
			 (unsigned long long)pv->id);
		free(v);
		return -EINVAL;
	}
	v->id = (uint32_t)pv->id;
	v->fs = fs;
	snprintf(v->name, sizeof(v->name), "%s", pv->name);
	v->geom = pv->geom;
	v->integrity = pv->integrity;
	if (fs->opt.listen) /* several nodes: the stores open when this node owns it */
		rc = fs_node_volume_init(fs, v, pv, err, errlen);
	else
		rc = fs_volume_attach(fs, v, pv, err, errlen);
	pthread_mutex_lock(&fs->vol_lock);
	if (rc == 0 && fs->nvol == FS_MAX_VOLUMES) {
		snprintf(err, errlen, "volume %s: more than %d volumes", v->name, FS_MAX_VOLUMES);
		rc = -ENOSPC;
	}
	if (rc == 0)
		fs->vol[fs->nvol++] = v;
	pthread_mutex_unlock(&fs->vol_lock);
	if (rc < 0)
		fs_volume_close(v);
	return rc;
}

void fs_volume_close(struct fs_volume *v)
{
	fs_volume_detach(v);
	fs_node_volume_free(v);
	pthread_mutex_destroy(&v->wb_lock);
	free(v);
}
