/*
 * drl.h -- the dirty-region log of one volume.
 *
 * Storage Spaces' dirty region tracking, md's write-intent bitmap: before
 * the first write to a region (a file id and a 64 MiB range of the file,
 * POOL_DRL_REGION) the region is recorded dirty, durably, on every
 * metadata disk of the volume; it is cleared lazily once the chunk files
 * are synced and no write to it is in flight.  An unclean mount then
 * resyncs only the dirty regions (mirror copies, parity, checksums).
 *
 * The same record carries the "missed" mask: the pool disks holding a
 * position of the file that a write to the region skipped (failed
 * disks).  A disk that comes back resyncs exactly the regions whose
 * missed mask names it, then the bit is cleared.
 *
 * On disk (docs/FORMAT.md, "Dirty-region log"): <dir>/drl on each
 * replica directory (<disk>/vol/<volume>), a 4 KiB header and fixed
 * 32-byte slots, each slot written in place with O_DSYNC.  A table that
 * runs out of slots sets the overflow flag: then every region counts as
 * dirty and every returning disk as wholly stale.
 *
 * Thread-safe: one mutex; the durable write of a newly dirty region is
 * done under it (rare: once per region until it is cleared).
 */
#ifndef SPACEFS_POOL_DRL_H
#define SPACEFS_POOL_DRL_H

#include <stddef.h>
#include <stdint.h>

#define POOL_DRL_REGION	  (64ull << 20) /* bytes of a file per region */
#define POOL_DRL_SLOTS	  16384u	/* regions the log can hold */
#define POOL_DRL_MAX_DIRS 8u

struct pool_drl;

struct pool_drl_entry {
	uint64_t id;	 /* file id (inode number) */
	uint64_t region; /* file bytes [region * POOL_DRL_REGION, +POOL_DRL_REGION) */
	uint64_t missed; /* pool disk index mask */
	int dirty;
};

/* Open the log on the replica directories: every readable replica is
 * merged (a region dirty or missed on any counts), then every replica is
 * rewritten with the merged table.  A replica that is damaged is named
 * on stderr and rewritten.  Fails only if no replica can be written. */
int pool_drl_open(const char *const *dirs, uint32_t ndirs, const char *volume,
		  struct pool_drl **out, char *err, size_t errlen);
/* Close; with `clean` (the caller has synced every chunk file) every
 * dirty mark is cleared first, missed marks are kept. */
void pool_drl_close(struct pool_drl *d, int clean);

/* A write to [off, off+len) of file id skipping the disks in `absent`
 * is about to start: make its regions durably dirty (and missed by
 * `absent`).  0 or -EIO when no replica took it.  Every begin that
 * returned 0 is followed by one end; a failed one by none (the regions
 * stay dirty, cleared once no write is in flight). */
int pool_drl_begin(struct pool_drl *d, uint64_t id, uint64_t off, uint64_t len, uint64_t absent);
/* That write is done. */
void pool_drl_end(struct pool_drl *d, uint64_t id, uint64_t off, uint64_t len);

/* Lazy clearing: regions with no write in flight and none since the
 * previous call are synced by sync(arg) and then marked clean. */
int pool_drl_clean(struct pool_drl *d, int (*sync)(void *arg), void *arg);

/* Snapshot of the log, sorted by (id, region); *out is malloc'd. */
int pool_drl_list(struct pool_drl *d, struct pool_drl_entry **out, size_t *n);
/* After a resync: clear the dirty mark, or disk's missed bit. */
int pool_drl_clear_dirty(struct pool_drl *d, uint64_t id, uint64_t region);
int pool_drl_clear_missed(struct pool_drl *d, uint64_t id, uint64_t region, uint32_t disk);
/* Nothing is known any more, as after an overflow: a disk failed half
 * way through its rebuild holds the files its rebuild reached and not the
 * others, which no region records; `why` is logged once.  0 or -EIO. */
int pool_drl_stale_all(struct pool_drl *d, const char *why);
/* The table overflowed at some point: nothing is known (see above). */
int pool_drl_overflowed(struct pool_drl *d);
void pool_drl_clear_overflow(struct pool_drl *d);

#endif /* SPACEFS_POOL_DRL_H */
