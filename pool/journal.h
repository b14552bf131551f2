/*
 * journal.h -- the parity journal of one volume: closes the write hole.
 *
 * A partial-stripe parity update writes data and parity in place.  A
 * power cut between the two leaves parity that disagrees with the data;
 * if a disk is then lost, the lost column is rebuilt from the stale
 * parity into bytes nobody wrote, in blocks no write touched.  So before
 * the store touches a stripe in place, the journal holds the stripe's new
 * pieces -- every chunk write of the update, data and parity, as the
 * store is about to issue them -- durably, in `ncopies` files on distinct
 * disks (the volume's redundancy + 1), each record checksummed.  Replay
 * at mount rewrites them in place: whatever subset of the update reached
 * the disks, afterwards every touched row holds the new data and parity
 * computed from it, and untouched columns are what they were, so the
 * stripe is consistent, also when a disk is missing.  (md's partial
 * parity log writes less, but needs the parity disk present and holds
 * one copy; see docs/ARCHITECTURE.md.)
 *
 * Write-through: the store calls pool_journal_log (returns when the
 * records are written on every copy that works: O_DIRECT completed, or
 * with `flush` durable through a power cut), writes in place, then
 * pool_journal_done.  Write-back (pool/wback.h): the flusher calls
 * pool_journal_done once the records are in place.  Concurrent writers
 * share one write per copy (group commit: the first waiter writes
 * everyone's records).  pool_journal_sync (fsync) flushes the copies.
 *
 * Records are only replayed in the epoch they were written in.  An epoch
 * ends at a checkpoint: wait until no record is in flight, make every
 * chunk durable (the caller's sync callback, syncfs), then write a new
 * file header whose base sequence number is the next record's.  A
 * checkpoint happens when the journal is full, when the caller asks
 * (periodically, and at a clean close), after replay, and before any
 * write that changes a stripe holding records of this epoch without a
 * record of its own (pool_journal_barrier): otherwise replaying the old
 * record would undo that newer write.
 *
 * A copy whose disk fails is dropped (pool_journal_disk_failed); the
 * owner then moves the copies to where they belong now at a checkpoint
 * (pool_journal_set_copies), and again when a disk comes back, so the
 * journal is back at `ncopies` without a remount.
 *
 * On disk: docs/FORMAT.md, "Parity journal".  Thread-safe.
 */
#ifndef SPACEFS_POOL_JOURNAL_H
#define SPACEFS_POOL_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pool/fault.h"

#define POOL_JOURNAL_BLOCK	4096u
#define POOL_JOURNAL_MAX_COPIES 3u
/* Files one journal opens: its copies, and up to this many more that are
 * only read for replay (cfg.nwrite). */
#define POOL_JOURNAL_MAX_FILES	 8u
#define POOL_JOURNAL_MAX_PIECES	 250u /* pieces one record can hold */
#define POOL_JOURNAL_DEFAULT_MIB 256u
#define POOL_JOURNAL_MIN_MIB	 8u
#define POOL_JOURNAL_MAX_MIB	 65536u

/* One chunk write: `len` bytes (a multiple of 4 KiB) at byte `off` of the
 * chunk of stripe position `pos`. */
struct pool_journal_piece {
	uint32_t pos;
	uint32_t len;
	uint64_t off;
	const uint8_t *buf;
};

/* One partial-stripe update of file `file_id`, stripe `stripe`. */
struct pool_journal_rec {
	uint64_t seq; /* set by the journal */
	uint64_t file_id;
	uint64_t stripe;
	uint32_t npiece;
	const struct pool_journal_piece *piece;
};

struct pool_journal_config {
	const char *volume; /* for messages */
	uint64_t volume_id;
	/* the journal file of each copy, on distinct disks; NULL entries
	 * (disks out of service) are skipped */
	const char *const *path;
	const uint32_t *disk; /* pool disk index of each path (NULL: unknown) */
	uint32_t npath;
	/* path[0..nwrite) are the copies (at most POOL_JOURNAL_MAX_COPIES);
	 * path[nwrite..npath) are older copies that moved elsewhere (a journal
	 * disk added, failed or back): read, never created or written, so
	 * replay finds the current epoch wherever it was written; after the
	 * replay's checkpoint they hold nothing to replay.  0: all are
	 * copies. */
	uint32_t nwrite;
	uint64_t size; /* bytes per copy, a multiple of 4 KiB */
	/* 1: every append durable through a power cut before it returns
	 * (O_DSYNC: a device cache flush per group commit); 0: on the device
	 * (O_DIRECT, completed), as a chunk write is, durable after
	 * pool_journal_sync -- the order journal-then-chunks then holds
	 * against a process or kernel crash, and against a power cut on
	 * devices without a volatile write cache (docs/OPERATIONS.md). */
	int flush;
	int no_direct; /* 1: never O_DIRECT */
	/* Make every chunk write completed so far durable (checkpoint). */
	int (*sync)(void *arg);
	void *arg;
	struct pool_fault *fault; /* NULL: none */
	/* Data fencing (pool/store.h may_write): asked before every append
	 * is submitted; an error fails the append and every later one (the
	 * node no longer owns the volume).  NULL: no fence. */
	int (*may_write)(void *arg);
	void *fence_arg;
};

struct pool_journal;

/* Counters for `spacectl status`. */
struct pool_journal_stats {
	uint64_t size;	  /* bytes per copy */
	uint64_t used;	  /* bytes of records in the current epoch */
	uint32_t copies;  /* copies in service */
	uint64_t records; /* records logged since open */
	uint64_t commits; /* group commits (writes + fdatasync rounds) */
	uint64_t bytes;	  /* record bytes logged since open (per copy) */
	uint64_t checkpoints;
	uint64_t replayed; /* records replayed at open */
	uint64_t damaged;  /* records found damaged in every copy at replay */
	/* replay progress: 1 while replaying, and the journal bytes read so
	 * far (replayed counts the records); where the epoch ends is only
	 * known when replay finds it, so `size` is the bound shown */
	uint32_t replaying;
	uint64_t replay_bytes;
	/* each copy: its pool disk (-1: unknown), in service, record bytes
	 * written to it since open (header blocks not counted) */
	uint32_t ncopyslot;
	struct {
		int64_t disk;
		int in_service;
		uint64_t bytes;
	} copy[POOL_JOURNAL_MAX_COPIES];
};

/* Open (creating missing files, sized `size`) the journal's copies.  Fails
 * only if no copy can be opened.  Does not replay: call
 * pool_journal_replay before the first write. */
int pool_journal_open(const struct pool_journal_config *cfg, struct pool_journal **out, char *err,
		      size_t errlen);
/* Close; with `clean` a checkpoint first (nothing left to replay). */
void pool_journal_close(struct pool_journal *j, int clean);

/* Apply one record in place (replay).  0, or a negative errno that stops
 * the replay. */
typedef int (*pool_journal_apply_fn)(void *arg, const struct pool_journal_rec *r);
/* Replay every intact record of the current epoch in order through
 * apply, then checkpoint.  A record damaged in one copy is read from
 * another; damaged in every copy it is named in one log line, counted,
 * and not replayed (the dirty-region log resyncs its stripe).  0 or a
 * negative errno. */
int pool_journal_replay(struct pool_journal *j, pool_journal_apply_fn apply, void *arg);

/* Append records r[0..n) and return once they are durable on every copy
 * in service (or a negative errno: no copy took them).  *seq gets the
 * last record's sequence number, for pool_journal_done.  Blocks while the
 * journal is full until a checkpoint makes room. */
int pool_journal_log(struct pool_journal *j, struct pool_journal_rec *r, size_t n);
/* Make every append so far durable through a power cut (fsync of a
 * file: what write-back acknowledged may only be in the journal).  0 or
 * -EIO (no copy left). */
int pool_journal_sync(struct pool_journal *j);
/* on 1: some records reported done are not in place after all (write-back
 * could not write them): no checkpoint until hold(0) -- one returns
 * -EAGAIN, and a journal full then fails appends -- and a close leaves the
 * epoch for the next open's replay. */
void pool_journal_hold(struct pool_journal *j, int on);
/* The in-place writes of n records logged by one pool_journal_log call
 * have completed. */
void pool_journal_done(struct pool_journal *j, size_t n);
/* Before changing stripes [first, last] of file_id in place without a
 * record: if any has a record in this epoch, checkpoint (0 or errno). */
int pool_journal_barrier(struct pool_journal *j, uint64_t file_id, uint64_t first, uint64_t last);
/* Checkpoint now if at least `min_used` bytes of records are in the
 * epoch (0: whenever there is any). */
int pool_journal_checkpoint(struct pool_journal *j, uint64_t min_used);
void pool_journal_stats(struct pool_journal *j, struct pool_journal_stats *out);
/* Pool disk `disk` failed: stop writing the copy on it (the others carry
 * the redundancy until pool_journal_set_copies places it again).  The
 * last copy is kept: without one, nothing could be journaled and every
 * partial-stripe write would fail. */
void pool_journal_disk_failed(struct pool_journal *j, uint32_t disk);
/* Move the copies, while open, to path[0..n) on pool disks disk[0..n)
 * (distinct, n <= POOL_JOURNAL_MAX_COPIES): the placement the next open
 * would compute, after a disk failed or came back.  Applied at a
 * checkpoint -- every record of the ending epoch in place and durable,
 * none in flight -- so a new copy needs no record copied: it is created
 * (its directory fsynced), and gets the new epoch's header with the copies
 * kept; then the copies no longer wanted are closed, and the files of
 * those that were in service removed (their records are in place; a copy
 * whose disk failed is left alone, a later open removes it if it is
 * back).  A kill -9 at any point leaves the current epoch's header on
 * every copy that can hold its records, old or new, and the next open
 * reads every journal file on the disks in service, so it replays all.
 *
 * Forces that checkpoint now, waiting at most wait_ms (0: as long as it
 * takes) for the records in flight to be put in place (appends wait
 * meanwhile); with wait_ms > 0, only if no record is in flight at all
 * (else -EAGAIN: the next checkpoint of any kind applies it).  0: the
 * copies are there (also when they already were); -EAGAIN: not yet
 * (records still in flight, held ones, a copy that cannot be opened, or
 * a new set that took the header on too few copies -- then not tried
 * again for 30 s): the next checkpoint of any kind applies it, or call
 * again; -EINVAL, -EIO (no copy works), or the fence's refusal. */
int pool_journal_set_copies(struct pool_journal *j, const char *const *path, const uint32_t *disk,
			    uint32_t n, uint32_t wait_ms);
/* 1 if the copies in service are exactly path[0..n) on disk[0..n). */
int pool_journal_placed(struct pool_journal *j, const char *const *path, const uint32_t *disk,
			uint32_t n);

/* Record bytes of an update with pieces p[0..n) (header block + data). */
uint64_t pool_journal_rec_bytes(const struct pool_journal_piece *p, uint32_t n);

#endif /* SPACEFS_POOL_JOURNAL_H */
