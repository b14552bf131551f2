/*
 * wback.h -- write-back mode of the parity journal: what is journaled but
 * not yet in place, and the flusher that puts it there.
 *
 * In write-back mode a partial-stripe parity update is acknowledged as
 * soon as its journal record (the new data and parity pieces, as the
 * write-through path would write them in place) is durable.  The pieces
 * are then kept here, in memory, until a background thread -- the
 * flusher -- has written them in place:
 *
 *  - an index maps every 4 KiB block of every unapplied piece (file,
 *    stripe position, chunk block) to its newest bytes, so every chunk
 *    read of the store (application reads, the read half of a later
 *    read-modify-write, degraded reconstruction, scrub) sees the state
 *    the journal describes, not the older bytes still on disk;
 *  - the flusher takes everything queued at once and gathers it by
 *    stripe: each block is written once, with its newest bytes, however
 *    many records touched it (ten 4 KiB writes to one stripe cost one
 *    parity write, not ten), and it never reads: the pieces were
 *    computed when the records were made;
 *  - the bytes held are bounded (`limit`): a writer waits for the
 *    flusher when they are full (back-pressure, never an error).
 *
 * The flusher does not take the data path's stripe locks (writers may wait
 * for it while holding them: journal full, memory full, a barrier).  It
 * takes a lock of its own per stripe ("flush lock") while it writes a
 * stripe and drops the stripe's blocks from the index; a chunk read takes
 * the same lock shared around its disk reads and the overlay, so it sees
 * either the blocks in the index or the disk after the flusher has
 * finished with them, never a half-written stripe.  Nothing waits for the
 * flusher while holding a flush lock, so the two cannot deadlock.
 *
 * A record leaves the journal (pool_journal_done, through `done`) only
 * once it is in place; a crash before that replays it at the next open.
 *
 * Thread-safe.  docs/ARCHITECTURE.md, "Write-back".
 */
#ifndef SPACEFS_POOL_WBACK_H
#define SPACEFS_POOL_WBACK_H

#include <stddef.h>
#include <stdint.h>

#include "pool/journal.h"
#include "pool/stripelock.h"
#include "pool/store.h"

struct pool_wb_config {
	const char *volume;  /* for messages */
	uint64_t limit;	     /* bytes of unapplied pieces held at most */
	uint32_t interleave; /* bytes per column per stripe */
	/* Write pieces p[0..n) of file f in place, in one submission: several
	 * stripes, in ascending order, each piece inside one interleave
	 * (their flush locks are held).  0 or a negative errno. */
	int (*apply)(void *arg, const struct pool_file_map *f, const struct pool_journal_piece *p,
		     uint32_t n);
	/* n records are in place (or held, below): done with them. */
	void (*done)(void *arg, size_t n);
	/* on 1: records could not be written in place (a disk away); they
	 * are kept and tried again every second, and the journal must keep
	 * them until hold(0) (no checkpoint; a close leaves them for the
	 * replay at the next open).  NULL: none. */
	void (*hold)(void *arg, int on);
	void *arg;
	int no_thread; /* 1: no flusher thread (unit tests call pool_wb_flush) */
	/* 1: the flusher starts at pool_wb_start, not at once (a daemon about
	 * to fork: a thread started before fuse_daemonize stays in the parent) */
	int defer_thread;
	uint32_t hold_ms; /* tests (SPACEFS_FAULT=wbhold:MS): wait this long before each batch */
};

struct pool_wb_stats {
	uint64_t held;	     /* bytes of unapplied pieces in memory */
	uint64_t limit;	     /* ... at most */
	uint64_t queued;     /* records not yet applied */
	uint64_t applied;    /* records applied since open */
	uint64_t written;    /* bytes written in place by the flusher */
	uint64_t superseded; /* bytes not written: a newer record had them */
	uint64_t stripes;    /* stripe writes (gathered groups) */
	uint64_t rate;	     /* records applied per second, last second or so */
	uint64_t waits;	     /* writers that waited for room */
};

struct pool_wb;

int pool_wb_new(const struct pool_wb_config *cfg, struct pool_wb **out);
/* Start the flusher thread if it is not running (defer_thread); 0 or
 * -EAGAIN. */
int pool_wb_start(struct pool_wb *wb);
/* Apply everything queued (what cannot be written stays in the
 * journal), stop the flusher, free. */
void pool_wb_free(struct pool_wb *wb);

/* Keep copies of the pieces of records r[0..n) (logged, durable) of file
 * f until they are applied, every block of them in the read index.
 * Waits while the held bytes are at the limit.  0, or -ENOMEM with
 * nothing queued. */
int pool_wb_add(struct pool_wb *wb, const struct pool_file_map *f, const struct pool_journal_rec *r,
		size_t n);

/* A chunk read of stripes [first, last] of file id: take the flush lock
 * shared (set), read, overlay every piece read, then end. */
void pool_wb_read_begin(struct pool_wb *wb, uint64_t id, uint64_t first, uint64_t last,
			struct stripelock_set *set);
/* Copy the unapplied blocks of [off, off + len) of position pos of file
 * id into buf (buf holds the chunk bytes at off).  Returns the blocks
 * copied. */
size_t pool_wb_overlay(struct pool_wb *wb, uint64_t id, uint32_t pos, uint64_t off, uint32_t len,
		       uint8_t *buf);
void pool_wb_read_end(struct pool_wb *wb, const struct stripelock_set *set);

/* Apply one batch (everything queued now); returns the records applied.
 * The flusher thread's loop; unit tests call it directly. */
size_t pool_wb_flush(struct pool_wb *wb);
/* Wait until everything queued so far is in place: 0, or -EIO if some
 * of it cannot be written now (held: see pool_wb_config.hold). */
int pool_wb_drain(struct pool_wb *wb);
void pool_wb_stats(struct pool_wb *wb, struct pool_wb_stats *out);

#endif /* SPACEFS_POOL_WBACK_H */
