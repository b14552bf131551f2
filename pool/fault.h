/*
 * fault.h -- fault injection for crash tests: end the daemon at a chosen
 * moment, as a power cut does.
 *
 * kill -9 cannot tear a stripe: chunk writes already handed to the
 * kernel complete after the process is gone.  A power cut can: some of
 * a stripe's chunk writes reach the disks and some do not.  To test what
 * the parity journal is for, the daemon itself must stop half way
 * through a stripe update, so it honours SPACEFS_FAULT (read by fs/ when
 * a volume's store opens; unset, nothing below costs more than a branch
 * per partial-stripe parity write).  It is compiled into every build,
 * not only a test build, because the integration tests run against the
 * build that is shipped (with ASan): a separate test build would test
 * other code.  The variable is named in docs/OPERATIONS.md as a test
 * tool; set by mistake it ends the daemon at the named event, nothing
 * else (the data it leaves is what a power cut leaves).
 *
 * Spec: KIND:N, the fault fires at the Nth event of that kind counted
 * per volume (N >= 1):
 *   tear:N    the Nth partial-stripe parity update issues only its first
 *             chunk write (and that chunk's checksums), waits for it, and
 *             the process ends with _exit(99): data updated, parity not.
 *   jtear:N   the Nth journal append writes the first half of its batch to
 *             the first journal copy only, then _exit(99).
 *   replay:N  journal replay ends the process after N records applied.
 *   jmove:N   moving journal copies while open (pool_journal_set_copies)
 *             passes 4 points per move: 1 the new copy files created, no
 *             header yet; 2 the new epoch's header durable on the first
 *             copy only; 3 on every copy, the copies left not removed
 *             yet; 4 removed.  _exit(99) at the Nth point.
 *   wbhold:MS not a crash: the write-back flusher (pool/wback.h) waits MS
 *             ms before each batch, so tests can read and kill -9 with
 *             records acknowledged but not yet in place.
 *   cklog:N   not a crash: from the Nth group append of checkpoint block
 *             records (fs/ckpt.c) on, every one fails with EIO before
 *             writing anything, as if every replica of the checkpoint
 *             log were lost, so tests see what each waiting writer is
 *             answered and what a remount finds.
 *   fill:N    not a crash: from the Nth creation of a checkpoint layer's
 *             fill file (fs/ckpt.c, "Slots") on, every one fails with
 *             EIO, so tests see first writes go on at their offsets.
 *   jsync:N   not a crash: the Nth sync of a parity journal's checkpoint
 *             (fs/volume.c journal_sync) fails with EIO, once, as a disk's
 *             cache flush that failed, so tests see what a replay whose
 *             checkpoint cannot finish leaves.
 *   iretire:MS not a crash: an attribute write-back (fs/inode.c: a
 *             retire's, when the kernel forgets an inode whose cached
 *             attributes are newer than the store's, or the flusher's
 *             batch) waits MS ms between taking its copy and committing
 *             it, so tests can use and forget the file meanwhile.
 */
#ifndef SPACEFS_POOL_FAULT_H
#define SPACEFS_POOL_FAULT_H

#include <stddef.h>
#include <stdint.h>

enum pool_fault_kind {
	POOL_FAULT_NONE = 0,
	POOL_FAULT_TEAR,
	POOL_FAULT_JTEAR,
	POOL_FAULT_REPLAY,
	POOL_FAULT_WBHOLD, /* not a crash: the write-back flusher waits `at` ms before each batch */
	POOL_FAULT_CKLOG, /* not a crash: checkpoint block-record appends fail from the `at`th on */
	POOL_FAULT_JMOVE,
	POOL_FAULT_FILL,    /* not a crash: fill file creations fail from the `at`th on */
	POOL_FAULT_JSYNC,   /* not a crash: the `at`th journal checkpoint sync fails */
	POOL_FAULT_IRETIRE, /* not a crash: attribute write-backs wait `at` ms */
};

struct pool_fault {
	enum pool_fault_kind kind;
	uint64_t at;	       /* fire at this event (1-based) */
	_Atomic uint64_t seen; /* events of `kind` so far */
};

/* Parse spec (NULL or "" is no fault) into *f.  -EINVAL with *err naming
 * the bad spec. */
int pool_fault_parse(const char *spec, struct pool_fault *f, char *err, size_t errlen);
/* One event of `kind` happens: 1 if it is the one the fault is armed for
 * (once), else 0.  f may be NULL. */
int pool_fault_hit(struct pool_fault *f, enum pool_fault_kind kind);
/* One event of `kind` happens: 1 if it is the one the fault is armed for
 * or a later one, else 0.  f may be NULL. */
int pool_fault_from(struct pool_fault *f, enum pool_fault_kind kind);
/* End the process now, after one log line naming `what`. */
_Noreturn void pool_fault_die(const char *volume, const char *what);

#endif /* SPACEFS_POOL_FAULT_H */
