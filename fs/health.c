/*
 * health.c -- watching the disks of a mounted pool.
 *
 * A disk fails in one of two ways while the pool is mounted.  Either I/O
 * to it errors (the store notices, stops using the disk at once and calls
 * fs_health_disk_failed), or it silently stops being the disk we opened:
 * its directory removed or renamed away, replaced by an empty directory
 * or by another pool's disk, or its permissions taken away.  Linux keeps
 * open files working after their directory is removed, so the second
 * kind would go unnoticed by the data path; a watcher thread therefore
 * checks every in-service disk once a second: the directory is still
 * there, is the same directory (device and inode), its owner still has
 * some permission (root ignores modes, so "chmod 000" must be checked
 * explicitly to mean anything), and it holds this member's superblock.
 *
 * Either way the disk is recorded failed in the pool superblock (member
 * state FAILED, committed to the other disks), so that a restart does
 * not trust a disk that missed writes, and every volume is told how much
 * redundancy it has left, loudly.  The same thread notices a failed disk
 * that comes back with its own superblock and starts its resync, and at
 * mount it records disks that are missing and resumes the repairs and
 * resyncs the pool left unfinished.  All pool catalogue changes happen
 * under fs->pool_lock taken exclusively, as pool/pool.h asks.
 *
 * A full disk is neither failed nor healthy in the usual sense: writes
 * that need new space on it get ENOSPC, while everything else works.  The
 * store reports each ENOSPC (fs_health_disk_full); the disk is then shown
 * "full" by `spacectl status`, with the volumes whose layout can no
 * longer place new data, until the watcher's statvfs sees space come
 * back (at least FULL_CLEAR_BYTES more than the least it had while full,
 * and no new ENOSPC in the meantime).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "fs/fs.h"
#include "pool/catalog.h"
#include "fs/jobs.h"
#include "pool/drl.h"
#include "pool/journal.h"

#define HEALTH_PERIOD_MS 1000
#define FULL_CLEAR_BYTES (1ull << 20)
#define FREE_UNKNOWN	 UINT64_MAX

/* One disk's space, as ENOSPC answers and statvfs tell it. */
struct disk_space {
	bool full, logged;
	bool failed_full;      /* failed for want of space (pool/store.c settle) */
	uint64_t enospc, seen; /* answers so far; as of the last check */
	int64_t last_enospc;
	uint64_t free, free_at_full; /* FREE_UNKNOWN until measured */
};

struct fs_health {
	pthread_t thread;
	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t cv;
	bool stop;
	uint64_t pending; /* disks failed under I/O, still to record */
	char why[POOL_MAX_DISKS][POOL_MSG_MAX];
	dev_t dev[POOL_MAX_DISKS]; /* identity of each in-service directory */
	ino_t ino[POOL_MAX_DISKS];
	struct disk_space space[POOL_MAX_DISKS];
};

static uint32_t nvolumes(struct fs *fs)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	return n;
}

/* Every volume's store stops using the disk.  One failing while it was
 * being rebuilt holds only the files the rebuild reached: its return
 * must rebuild it whole, not just the regions the dirty-region log says
 * it missed (which say nothing of the files still to rebuild). */
static void stores_fail(struct fs *fs, uint32_t disk)
{
	uint32_t n = nvolumes(fs);
	char why[64];

	/* the member's state, not the store's: a store that met the failure
	 * itself has marked the disk failed already */
	pthread_rwlock_rdlock(&fs->pool_lock);
	bool rebuilding =
	    disk < fs->pool->ndisks && fs->pool->sb->member[disk].state == POOL_MEMBER_REPAIRING;
	pthread_rwlock_unlock(&fs->pool_lock);
	snprintf(why, sizeof(why), "disk %u failed while being rebuilt", disk);
	for (uint32_t i = 0; i < n; i++) {
		/* with several nodes only owned volumes have a store open here */
		if (!fs_vol_hold_local(fs->vol[i]))
			continue;
		struct fs_volume *v = fs->vol[i];
		if (v->drl && rebuilding)
			pool_drl_stale_all(v->drl, why);
		pool_store_disk_set(fs->vol[i]->store, disk, POOL_STORE_DISK_FAILED);
		if (fs->vol[i]->journal)
			pool_journal_disk_failed(fs->vol[i]->journal, disk);
		fs_vol_leave(fs->vol[i]);
	}
}

void fs_health_disk_failed(struct fs *fs, uint32_t disk, const char *why)
{
	struct fs_health *h = fs->health;

	stores_fail(fs, disk);
	if (!h || disk >= POOL_MAX_DISKS)
		return;
	pthread_mutex_lock(&h->mu);
	if (!(h->pending & (1ull << disk)))
		snprintf(h->why[disk], sizeof(h->why[disk]), "%s", why);
	if (strstr(why, strerror(ENOSPC)))
		h->space[disk].failed_full = true;
	h->pending |= 1ull << disk;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

void fs_health_disk_full(struct fs *fs, uint32_t disk)
{
	struct fs_health *h = fs->health;

	if (!h || disk >= POOL_MAX_DISKS)
		return;
	/* Free space at the ENOSPC itself (rare: one statvfs is cheap here).
	 * Measured later, it may already include space the failure gave back
	 * (a metadata replica dropped for want of space frees its files), and
	 * "space came back" would then never be seen. */
	uint64_t size, avail;
	int known = pool_disk_space(fs->pool, disk, &size, &avail) == 0;
	pthread_mutex_lock(&h->mu);
	struct disk_space *sp = &h->space[disk];
	if (!sp->full)
		sp->free_at_full = FREE_UNKNOWN;
	if (known && (sp->free_at_full == FREE_UNKNOWN || avail < sp->free_at_full))
		sp->free_at_full = avail;
	sp->full = true;
	sp->enospc++;
	sp->last_enospc = (int64_t)time(NULL);
	pthread_mutex_unlock(&h->mu);
}

void fs_health_space(struct fs *fs, uint32_t disk, struct fs_disk_space *out)
{
	struct fs_health *h = fs->health;

	memset(out, 0, sizeof(*out));
	if (!h || disk >= POOL_MAX_DISKS)
		return;
	pthread_mutex_lock(&h->mu);
	const struct disk_space *sp = &h->space[disk];
	out->full = sp->full;
	out->enospc = sp->enospc;
	out->last_enospc = sp->last_enospc;
	out->have_free = sp->free != FREE_UNKNOWN;
	out->free = out->have_free ? sp->free : 0;
	pthread_mutex_unlock(&h->mu);
}

void fs_health_cannot_allocate(struct fs *fs, const struct layout_geom *g, char *why, size_t size)
{
	struct pool *p = fs->pool;
	uint32_t usable = 0, nfull = 0;
	char list[POOL_MAX_DISKS * 6] = "";

	why[0] = '\0';
	for (uint32_t d = 0; d < p->ndisks; d++) {
		struct fs_disk_space sp;
		if (!pool_disk_in_service(p, d))
			continue;
		fs_health_space(fs, d, &sp);
		if (!sp.full) {
			usable++;
			continue;
		}
		size_t off = strlen(list);
		snprintf(list + off, sizeof(list) - off, "%sd%u", nfull++ ? "," : "", d);
	}
	if (nfull && usable < layout_positions(g))
		snprintf(why, size, "disk%s %s full", nfull > 1 ? "s" : "", list);
}

/* statvfs of every disk; a full disk whose space came back is full no
 * more.  No lock held across statvfs: a slow disk must not stall I/O. */
static void watch_space(struct fs *fs)
{
	struct fs_health *h = fs->health;
	uint32_t n;

	pthread_rwlock_rdlock(&fs->pool_lock);
	n = fs->pool->ndisks;
	pthread_rwlock_unlock(&fs->pool_lock);
	for (uint32_t d = 0; d < n && d < POOL_MAX_DISKS; d++) {
		uint64_t size, avail;
		int known = pool_disk_space(fs->pool, d, &size, &avail) == 0;
		const char *path = fs->pool->disk[d].path;
		pthread_mutex_lock(&h->mu);
		struct disk_space *sp = &h->space[d];
		bool news = sp->enospc != sp->seen, was_logged = sp->logged;
		sp->seen = sp->enospc;
		sp->free = known ? avail : FREE_UNKNOWN;
		/* The lowest free space seen while full: a first reading may
		 * still be pool_disk_space's cached figure from before the disk
		 * filled, and clearing against it would never happen. */
		if (sp->full && known &&
		    (sp->free_at_full == FREE_UNKNOWN || avail < sp->free_at_full))
			sp->free_at_full = avail;
		bool cleared = sp->full && known && !news && sp->free_at_full != FREE_UNKNOWN &&
			       avail >= sp->free_at_full + FULL_CLEAR_BYTES;
		if (cleared)
			sp->full = sp->logged = false;
		else if (sp->full)
			sp->logged = true;
		bool now_logged = sp->logged;
		pthread_mutex_unlock(&h->mu);
		if (now_logged && !was_logged)
			fs_log("DISK FULL: disk %u (%s): chunk writes get ENOSPC; %" PRIu64
			       " bytes free",
			       d, path, known ? avail : 0);
		if (cleared)
			fs_log("disk %u (%s) has space again: %" PRIu64 " bytes free", d, path,
			       avail);
	}
}

/* One line per volume that is not healthy: what it can still survive. */
static void report_volumes(struct fs *fs)
{
	struct pool *p = fs->pool;

	pthread_rwlock_rdlock(&fs->pool_lock);
	for (uint32_t i = 0; i < p->sb->nvolumes; i++) {
		const struct pool_sb_volume *v = &p->sb->volume[i];
		const char *h = pool_volume_health(p, v);
		char who[1024] = "";
		uint32_t bad = 0;
		if (!strcmp(h, "healthy"))
			continue;
		for (uint32_t d = 0; d < p->ndisks; d++) {
			enum pool_disk_state s = p->disk[d].state;
			if (s == POOL_DISK_HEALTHY || s == POOL_DISK_RETIRED ||
			    pool_disk_is_journal(p, d)) /* no file data there */
				continue;
			bad++;
			size_t off = strlen(who);
			snprintf(who + off, sizeof(who) - off, "%s disk %u %s (%s)",
				 bad > 1 ? ";" : "", d, p->disk[d].path, pool_disk_state_name(s));
		}
		if (!strcmp(h, "offline"))
			fs_log("VOLUME %s OFFLINE: %u disks out, it survives %u; files on them "
			       "give EIO until the disks return:%s",
			       v->name, bad, layout_redundancy(&v->geom), who);
		else
			fs_log("volume %s DEGRADED: %u of %u tolerated disk failures used:%s",
			       v->name, bad, layout_redundancy(&v->geom), who);
	}
	pthread_rwlock_unlock(&fs->pool_lock);
}

/* Make a failure durable: member FAILED in the superblock. */
static void record_failure(struct fs *fs, uint32_t disk, const char *why)
{
	char err[POOL_MSG_MAX * 2];
	int rc = 0, changed = 0;
	struct pool_catalog_lock l;

	/* with several nodes, on the newest superblock under the cluster's
	 * catalogue lock (fs/catalog.c); if another node holds it too long,
	 * on ours as before */
	if (fs_catalog_begin(fs, &l, err, sizeof(err)) < 0) {
		fs_log("disk %u: %s; recording the failure without it", disk, err);
		l.n = 0;
		pthread_rwlock_wrlock(&fs->pool_lock);
	}
	struct pool *p = fs->pool;
	if (disk < p->ndisks && p->sb->member[disk].state != POOL_MEMBER_FAILED) {
		changed = 1;
		rc = pool_disk_fail(p, disk, why, err, sizeof(err));
	}
	const char *path = disk < p->ndisks ? p->disk[disk].path : "?";
	if (changed)
		fs_log("DISK FAILED: disk %u (%s): %s", disk, path, why);
	if (rc < 0)
		fs_log("cannot record disk %u as failed in the pool: %s", disk, err);
	fs_catalog_end(fs, &l);
	if (changed) {
		fs_jobs_disk_failed(fs, disk);
		report_volumes(fs);
	}
}

static void take_pending(struct fs *fs)
{
	struct fs_health *h = fs->health;
	char why[POOL_MSG_MAX];

	for (uint32_t d = 0; d < POOL_MAX_DISKS; d++) {
		pthread_mutex_lock(&h->mu);
		int hit = (h->pending >> d) & 1;
		h->pending &= ~(1ull << d);
		snprintf(why, sizeof(why), "%s", h->why[d]);
		pthread_mutex_unlock(&h->mu);
		if (hit)
			record_failure(fs, d, why);
	}
}

/* Remember which directory each in-service disk is. */
static void baseline(struct fs *fs, uint32_t d)
{
	struct fs_health *h = fs->health;
	struct stat st;

	h->dev[d] = 0;
	h->ino[d] = 0;
	if (stat(fs->pool->disk[d].path, &st) == 0) {
		h->dev[d] = st.st_dev;
		h->ino[d] = st.st_ino;
	}
}

void fs_health_rebaseline(struct fs *fs, uint32_t disk)
{
	if (fs->health && disk < POOL_MAX_DISKS) {
		pthread_mutex_lock(&fs->health->mu);
		baseline(fs, disk);
		pthread_mutex_unlock(&fs->health->mu);
	}
}

/* Check every in-service disk; fail those that are not what we opened. */
static void probe_all(struct fs *fs)
{
	struct fs_health *h = fs->health;
	char why[POOL_MAX_DISKS][POOL_MSG_MAX];
	uint64_t bad = 0;

	pthread_rwlock_rdlock(&fs->pool_lock);
	for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
		if (!pool_disk_in_service(fs->pool, d))
			continue;
		pthread_mutex_lock(&h->mu);
		dev_t dev = h->dev[d];
		ino_t ino = h->ino[d];
		pthread_mutex_unlock(&h->mu);
		if (pool_disk_probe(fs->pool, d, dev, ino, why[d], sizeof(why[d])) < 0)
			bad |= 1ull << d;
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	for (uint32_t d = 0; d < POOL_MAX_DISKS; d++) {
		if (!(bad & (1ull << d)))
			continue;
		stores_fail(fs, d);
		record_failure(fs, d, why[d]);
	}
}

/* The disk was failed for want of space and is full still (ENOSPC seen,
 * no space freed since). */
static bool failed_full(struct fs *fs, uint32_t d)
{
	struct fs_health *h = fs->health;

	pthread_mutex_lock(&h->mu);
	bool full = d < POOL_MAX_DISKS && h->space[d].failed_full && h->space[d].full;
	pthread_mutex_unlock(&h->mu);
	return full;
}

/* A failed or stale disk whose directory holds its own superblock again
 * has come back: resync it (only what it missed, when the dirty-region
 * logs know; everything otherwise).  Not a disk failed because a write could
 * not make its stripes consistent for want of space (pool/store.c
 * settle) while it is still full: the resync's writes would fail the same
 * way, again every second; it comes back once it has space again. */
static void watch_returns(struct fs *fs)
{
	char why[POOL_MSG_MAX];
	uint64_t back = 0;

	pthread_rwlock_rdlock(&fs->pool_lock);
	for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
		enum pool_disk_state s = fs->pool->disk[d].state;
		if (s != POOL_DISK_FAILED && s != POOL_DISK_STALE && s != POOL_DISK_MISSING)
			continue;
		if (fs_jobs_busy(fs, d) || failed_full(fs, d))
			continue;
		if (pool_disk_probe(fs->pool, d, 0, 0, why, sizeof(why)) == 0)
			back |= 1ull << d;
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	for (uint32_t d = 0; d < POOL_MAX_DISKS; d++)
		if (back & (1ull << d)) {
			pthread_mutex_lock(&fs->health->mu);
			fs->health->space[d].failed_full = false;
			pthread_mutex_unlock(&fs->health->mu);
			fs_log("disk %u (%s) is back; resyncing what it missed", d,
			       fs->pool->disk[d].path);
			fs_jobs_start_resync(fs, d);
		}
}

static void *health_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_health *h = fs->health;

	for (;;) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += HEALTH_PERIOD_MS / 1000;
		pthread_mutex_lock(&h->mu);
		if (!h->stop && !h->pending)
			pthread_cond_timedwait(&h->cv, &h->mu, &ts);
		bool stop = h->stop;
		pthread_mutex_unlock(&h->mu);
		if (stop)
			break;
		take_pending(fs);
		probe_all(fs);
		watch_space(fs);
		if (!fs->opt.read_only)
			watch_returns(fs);
		fs_jobs_tick(fs);
	}
	return NULL;
}

/* Disks found out of service at mount and still recorded active: record
 * them failed, so a later mount does not trust them either. */
static void record_mount_failures(struct fs *fs)
{
	struct pool *p = fs->pool;
	int any = 0;

	for (uint32_t d = 0; d < p->ndisks; d++) {
		enum pool_disk_state s = p->disk[d].state;
		if (pool_disk_in_service(p, d))
			continue;
		any = 1;
		if (s == POOL_DISK_STALE || p->sb->member[d].state == POOL_MEMBER_FAILED ||
		    fs->opt.read_only)
			continue;
		record_failure(fs, d, p->disk[d].msg);
	}
	if (any) {
		fs_log("POOL '%s' MOUNTED DEGRADED: not every disk is in service",
		       p->sb->pool_name);
		report_volumes(fs);
	}
}

int fs_health_start(struct fs *fs)
{
	struct fs_health *h = calloc(1, sizeof(*h));
	int rc;

	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	fs->health = h;
	for (uint32_t d = 0; d < fs->pool->ndisks; d++)
		baseline(fs, d);
	rc = fs_jobs_init(fs);
	if (rc == 0) {
		record_mount_failures(fs);
		fs_jobs_resume(fs);
		rc = -pthread_create(&h->thread, NULL, health_main, fs);
	}
	if (rc < 0) {
		fs_jobs_stop(fs);
		fs->health = NULL;
		pthread_mutex_destroy(&h->mu);
		pthread_cond_destroy(&h->cv);
		free(h);
	}
	return rc;
}

void fs_health_stop(struct fs *fs)
{
	struct fs_health *h = fs->health;

	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = true;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->thread, NULL);
	fs_jobs_stop(fs);
	fs->health = NULL;
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

/* ---- the store's hooks ------------------------------------------------------ */

static void hook_disk_failed(void *arg, uint32_t disk, const char *why)
{
	struct fs_volume *v = arg;

	fs_health_disk_failed(v->fs, disk, why);
}

static int hook_may_write(void *arg)
{
	return fs_vol_may_write(arg);
}

static int hook_write_begin(void *arg, uint64_t id, uint64_t off, uint64_t len, uint64_t absent)
{
	struct fs_volume *v = arg;
	int rc = fs_vol_may_write(v); /* fenced: not even the dirty mark */

	if (rc < 0)
		return rc;
	return v->drl ? pool_drl_begin(v->drl, id, off, len, absent) : 0;
}

static void hook_write_end(void *arg, uint64_t id, uint64_t off, uint64_t len)
{
	struct fs_volume *v = arg;

	if (v->drl)
		pool_drl_end(v->drl, id, off, len);
}

static void hook_disk_full(void *arg, uint32_t disk)
{
	struct fs_volume *v = arg;

	fs_health_disk_full(v->fs, disk);
}

static const struct pool_store_hooks volume_hooks = {
    .disk_failed = hook_disk_failed,
    .disk_full = hook_disk_full,
    .write_begin = hook_write_begin,
    .write_end = hook_write_end,
    .may_write = hook_may_write,
};

const struct pool_store_hooks *fs_volume_hooks(void)
{
	return &volume_hooks;
}
