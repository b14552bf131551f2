/*
 * store.h -- one volume's file data on the pool's disks: the data path.
 *
 * fs/ hands this module a file (its id and the disk chosen for each stripe
 * position) and a byte range; the store asks layout/ for a plan per stripe,
 * submits every chunk I/O of the request to the kernel in one io_submit
 * (libaio, per-thread context), computes parity and checksums through
 * layout/, and returns.  It owns the chunk file descriptors, the stripe
 * lock table and the per-disk I/O counters.
 *
 * On disk (docs/FORMAT.md): the chunk of position p of file id f on disk
 * D is  D/vol/<volume>/data/<f % 256 as %02x>/<f as %016x>.<p>
 * and, with integrity on, its checksums are in the sibling file
 * "<same>.crc": 4 bytes (CRC-32C, little endian) per 4 KiB block of the
 * chunk, at offset (chunk_off / 4096) * 4.  A stored checksum of 0 means
 * "never written": such a block must read as zeros (or have CRC 0).
 * Chunk files are created on first write to their position and are
 * sparse; a missing chunk file reads as zeros.
 *
 * Chunk files are opened with O_DIRECT when the disk's filesystem accepts
 * it (probed once per disk at open), buffered otherwise.  Every chunk I/O
 * is 4 KiB aligned: writes not aligned to 4 KiB are widened by reading
 * the edge blocks first under the same stripe lock.
 *
 * Concurrency: all functions are thread-safe.  Writes to one stripe are
 * serialised by the stripe lock table (hash of file id and stripe); reads
 * take the same locks shared, so a read never sees half a stripe.
 *
 * Errors: negative errno.  A checksum mismatch is -EIO and a log line
 * naming volume, file id, disk path, position and chunk offset.
 */
#ifndef SPACEFS_POOL_STORE_H
#define SPACEFS_POOL_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout/layout.h"
#include "pool/fault.h"
#include "pool/lathist.h"

struct pool_store;

/* Where one file lives: its id (== inode number) and the pool disk index
 * (into the disk array given to pool_store_open) of each stripe position. */
struct pool_file_map {
	uint64_t id;
	uint32_t npos;
	uint8_t disk[LAYOUT_MAX_POSITIONS];
};

/* I/O counters of one disk, for `spacectl status` and the benchmark's
 * chunk-I/Os-per-write figures. */
struct pool_disk_stats {
	uint64_t reads, writes; /* chunk I/Os completed */
	uint64_t read_bytes, write_bytes;
	uint64_t errors;      /* I/O errors */
	uint64_t csum_errors; /* checksum mismatches found on read */
	/* completed chunk I/Os by latency (pool/lathist.h buckets), and the
	 * sum of their latencies */
	uint64_t lat[POOL_LAT_BUCKETS];
	uint64_t lat_sum_us;
};

/* What the store tells its owner (fs/), and asks of it.  Every member
 * may be NULL.  Called from I/O threads: must not block for long, and
 * must not call back into the store's write path. */
struct pool_store_hooks {
	void *arg;
	/* Disk `disk` gave an I/O error, or its directory is no longer the
	 * one opened: the store has already stopped using it (failed). */
	void (*disk_failed)(void *arg, uint32_t disk, const char *why);
	/* A chunk write to `disk` failed with ENOSPC or EDQUOT (the disk is
	 * not failed for it: a full disk is the admin's to know). */
	void (*disk_full)(void *arg, uint32_t disk);
	/* Before chunk writes to [off, off+len) of file `id`: make the range
	 * durably dirty (dirty-region log).  `absent` is the mask of pool
	 * disk indexes holding positions of the file that this write skips
	 * (failed disks), so a disk that returns resyncs the range.  0 or a
	 * negative errno (the write then fails). */
	int (*write_begin)(void *arg, uint64_t id, uint64_t off, uint64_t len, uint64_t absent);
	/* The chunk writes of a write_begin range have completed. */
	void (*write_end)(void *arg, uint64_t id, uint64_t off, uint64_t len);
	/* Data fencing with several nodes: asked right before each submission
	 * of chunk writes (and by write_begin's caller, earlier).  0: go on;
	 * a negative errno: this node may no longer write the volume (its
	 * lease ran out), so nothing of the batch is submitted and the write
	 * fails with that errno -- never counted as a disk error.  NULL: no
	 * fencing (one node). */
	int (*may_write)(void *arg);
};

/* How the store treats one disk. */
enum pool_store_disk_state {
	POOL_STORE_DISK_OK = 0,
	POOL_STORE_DISK_FAILED,	    /* neither read nor written */
	POOL_STORE_DISK_REBUILDING, /* live only behind the rebuild cursor */
};

struct pool_store_config {
	const char *volume; /* volume name (for paths and messages) */
	/* pool disk directories, by disk index; NULL: the disk is failed */
	const char *const *disk_path;
	uint32_t ndisks;
	struct layout_geom geom;
	int integrity; /* 1: CRC-32C per 4 KiB block, checked on every read */
	int no_direct; /* 1: never use O_DIRECT (tests, tmpfs) */
	const struct pool_store_hooks *hooks; /* NULL: none */
	/* Emulated disks, by disk index (pool/diskmodel.h); NULL, or NULL
	 * entries: the disk's own speed.  The queues outlive the store. */
	struct pool_diskq *const *diskq;
	struct pool_fault *fault; /* crash-test fault (pool/fault.h); NULL: none */
};

/* Open the data path of a volume.  Creates <disk>/vol/<volume>/data on the
 * disks as needed.  *err gets a one-line message on failure. */
int pool_store_open(const struct pool_store_config *cfg, struct pool_store **out, char *err,
		    size_t errlen);
void pool_store_close(struct pool_store *s);

/* Read [off, off+len) of the file's data into buf.  Holes read as zeros.
 * Returns len or a negative errno; the caller clips to the file size. */
ssize_t pool_store_read(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
			size_t len, void *buf);
/* Write buf to [off, off+len).  Returns len or a negative errno.  After
 * an error the range may read old or new data, but the same from every
 * copy and rebuild: a write that failed on some positions only (ENOSPC,
 * EFBIG, a short write) is settled before it returns (store.c settle). */
ssize_t pool_store_write(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
			 size_t len, const void *buf);
/* Make [off, off+len) read as zeros and release its space where a whole
 * stripe is covered (partial stripes are written with zeros so parity
 * stays right). */
int pool_store_punch(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
		     uint64_t len);
/* The file is cut from old_size to new_size (< old_size): zero the tail of
 * the last stripe past new_size and shorten the chunk files.  Growing needs
 * no call: unwritten space reads as zeros.  Positions on disks out of
 * service are skipped, the cut range first recorded as missed by those
 * disks (write_begin), as a write's is. */
int pool_store_truncate(struct pool_store *s, const struct pool_file_map *f, uint64_t old_size,
			uint64_t new_size);
/* A disk back in service that missed a cut (a resync of a region that
 * reaches past the file's end): shorten the chunks of the file's
 * positions on `disks` (pool disk index mask) to those of a file of
 * `size` bytes.  The caller keeps writes off the file meanwhile. */
int pool_store_cut(struct pool_store *s, const struct pool_file_map *f, uint64_t size,
		   uint64_t disks);
/* fdatasync every chunk and checksum file of the file that exists. */
int pool_store_sync(struct pool_store *s, const struct pool_file_map *f);
/* Delete the file's chunk files (the file is gone from the namespace). */
int pool_store_remove(struct pool_store *s, const struct pool_file_map *f);
/* Bytes allocated on disk for the file's data chunks, all positions, for
 * st_blocks. */
int pool_store_allocated(struct pool_store *s, const struct pool_file_map *f, uint64_t *bytes);
/* ---- the parity journal (pool/journal.h) ---- */

struct pool_journal;
struct pool_journal_rec;
/* From now on partial-stripe parity updates are journaled in j before
 * they touch a stripe in place (NULL: not any more).  Set before the
 * first write, or with no write in flight. */
void pool_store_set_journal(struct pool_store *s, struct pool_journal *j);
/* Write-back (pool/wback.h): from now on a journaled partial-stripe update
 * is acknowledged once logged and handed to wb, whose flusher applies it
 * with pool_store_wb_apply; every chunk read sees wb's unapplied blocks.
 * Set after the journal, cleared (NULL) before it, with no request in
 * flight. */
struct pool_wb;
void pool_store_set_wb(struct pool_store *s, struct pool_wb *wb);
/* pool_wb_config.apply: write pieces p[0..n) (stripes in ascending order)
 * in place in one submission (the flusher; no stripe lock of the data
 * path is taken). */
/* Wait until write-back has put everything acknowledged in place (before
 * looking at the chunk files' allocation); nothing without write-back. */
void pool_store_wb_drain(struct pool_store *s);
struct pool_journal_piece;
int pool_store_wb_apply(void *store, const struct pool_file_map *f,
			const struct pool_journal_piece *p, uint32_t n);
/* Replay: write record r's pieces in place for file f (positions on
 * disks out of service are skipped), with fresh checksums.  0 or a
 * negative errno. */
int pool_store_replay(struct pool_store *s, const struct pool_file_map *f,
		      const struct pool_journal_rec *r);

/* ---- holes and reservations (pool/sparse.c) ---- */

/* lseek(2) SEEK_DATA or SEEK_HOLE (whence) from `off` in a file of `size`
 * bytes (the size as the daemon knows it now), exact to the 4 KiB block,
 * degraded too (a block that cannot be told apart is data).  0 and *out,
 * -ENXIO for off past the end or no data after it, -EINVAL for another
 * whence. */
int pool_store_seek(struct pool_store *s, const struct pool_file_map *f, uint64_t size, int64_t off,
		    int whence, uint64_t *out);
/* Reserve the chunk space a write of [off, off+len) needs, on every live
 * copy and parity column and their checksum sidecars, so the write cannot
 * fail with ENOSPC.  Reserved blocks read as zeros and are holes to
 * SEEK_DATA, as on the disks' filesystems.  -ENOSPC when the disks are
 * full (what was reserved stays), -EOPNOTSUPP when a disk's filesystem
 * cannot. */
int pool_store_reserve(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
		       uint64_t len);

/* syncfs(2) every disk in service: all chunk data written so far is on
 * stable storage (the dirty-region log clears regions after this). */
int pool_store_syncfs(struct pool_store *s);
/* Snapshot of disk `disk`'s counters for this volume. */
void pool_store_stats(struct pool_store *s, uint32_t disk, struct pool_disk_stats *out);

/* ---- failures, repair and scrub (pool/store.c, disk states; pool/check.c) ---- */

/* Set how the store treats disk `disk`.  REBUILDING starts with the
 * cursor at (0, 0): nothing of the disk is live until the rebuild moves
 * the cursor past it. */
void pool_store_disk_set(struct pool_store *s, uint32_t disk, enum pool_store_disk_state st);
enum pool_store_disk_state pool_store_disk_get(struct pool_store *s, uint32_t disk);
/* Point disk `disk` at a new directory (a replacement at the same pool
 * index): creates its data directory, probes O_DIRECT, forgets every
 * cached chunk of the old one, and leaves the disk REBUILDING. */
int pool_store_disk_replace(struct pool_store *s, uint32_t disk, const char *path, char *err,
			    size_t errlen);
/* Positions of file `id` on a REBUILDING disk are live for files below
 * `id`, and for stripes below `stripe` of file `id` itself. */
void pool_store_rebuild_cursor(struct pool_store *s, uint32_t disk, uint64_t id, uint64_t stripe);

/* Checking and repairing stripes (scrub, repair, resync, self-healing).
 * REPAIR: rewrite bad, mismatched and target blocks.  RESYNC: after a
 * crash, trust data as read and re-derive checksums, parity and mirror
 * copies.  REBUILD: with targets, read only what rebuilding them needs
 * (mirror: the copies of their columns). */
#define POOL_CHECK_REPAIR  1u
#define POOL_CHECK_RESYNC  2u
#define POOL_CHECK_REBUILD 4u
struct pool_check_stats {
	uint64_t blocks;	/* 4 KiB blocks checked (data and parity, every copy) */
	uint64_t repaired;	/* blocks found bad or inconsistent and rewritten */
	uint64_t bad;		/* blocks found bad or inconsistent (repaired or not) */
	uint64_t unrecoverable; /* blocks that could not be reconstructed */
	uint64_t rebuilt_bytes; /* bytes written to target disks */
};
/* Check stripes [first, first+n) of the file: read every live position,
 * verify checksums, compare mirror copies and parity with data; with
 * POOL_CHECK_REPAIR rewrite in place (under the stripe locks) what is
 * bad, and rebuild every position on a disk of `targets` (pool disk
 * index mask) from the others.  Stats are added to *st.  0, or a negative
 * errno for an error that stopped the check (not for bad blocks). */
int pool_store_check(struct pool_store *s, const struct pool_file_map *f, uint64_t first,
		     uint64_t n, unsigned flags, uint64_t targets, struct pool_check_stats *st);
/* Stripes the file's chunk files reach on the live disks (their sizes;
 * O_DIRECT chunks are grown ahead, so this may pass the file's end). */
uint64_t pool_store_stripes_on_disk(struct pool_store *s, const struct pool_file_map *f);
/* Stripes a file of `size` bytes has. */
uint64_t pool_store_stripes(const struct pool_store *s, uint64_t size);
/* Copy position pos of the file (chunk and checksums, holes kept) to
 * disk `to`, durably.  The caller keeps every I/O off the file, then
 * records the new placement and calls pool_store_forget_position on the
 * old map.  *err names the file on failure. */
int pool_store_copy_position(struct pool_store *s, const struct pool_file_map *f, uint32_t pos,
			     uint32_t to, char *err, size_t errlen);
/* Remove position pos's chunk files from the disk the map names. */
int pool_store_forget_position(struct pool_store *s, const struct pool_file_map *f, uint32_t pos);
/* Blocks served from redundancy and rewritten by self-healing reads
 * (per disk: counted on the disk whose block was bad). */
uint64_t pool_store_healed(struct pool_store *s, uint32_t disk);

#endif /* SPACEFS_POOL_STORE_H */
