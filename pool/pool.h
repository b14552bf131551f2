/*
 * pool.h -- a pool of disks: finding its members, deciding which copy of
 * the superblock is the truth, the volume catalogue, placement.
 *
 * A pool is opened from any one member directory (SOURCE): its superblock
 * names the others by their last-known paths, and every copy found is
 * weighed by the mount rule (docs/FORMAT.md): the pool takes the highest
 * generation held by a majority of its members, or refuses ("incomplete"),
 * naming the disks that are missing or damaged.  Disks that disagree are
 * named and kept out: stale (an older generation), damaged (unreadable
 * copy), foreign (another pool's, or another member's, superblock) or
 * missing.  Only healthy disks are written and placed on.
 *
 * Changes to the catalogue go through pool_commit(): the generation goes
 * up by one and the new superblock is written to every healthy disk.
 *
 * Thread-safety: pool_place(), pool_disk_space() and
 * pool_volume_capacity() may be called from any number of threads.  The
 * catalogue functions (pool_volume_create/delete, pool_commit) change
 * p->sb and the disk states, and must not run concurrently with anything
 * else on the same pool (fs/ takes a rwlock: placement shared, catalogue
 * exclusive); pointers returned by pool_volume_find() stay valid until
 * the next catalogue change.
 *
 * Errors: 0 or a negative errno; functions taking `err` leave a one-line
 * message "<what>: <why>" there on failure.
 */
#ifndef SPACEFS_POOL_POOL_H
#define SPACEFS_POOL_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout/layout.h"
#include "pool/superblock.h"

#define POOL_MSG_MAX 512

enum pool_disk_state {
	POOL_DISK_HEALTHY = 0, /* holds the chosen generation */
	POOL_DISK_MISSING,     /* directory or superblock not found */
	POOL_DISK_DAMAGED,     /* superblock unreadable (checksum, truncated...) */
	POOL_DISK_FOREIGN,     /* another pool's or another member's superblock */
	POOL_DISK_STALE,       /* this pool's, but not the chosen generation */
	POOL_DISK_FAILED,      /* failed: I/O errors, gone, or recorded failed */
	POOL_DISK_REPAIRING,   /* a replacement being rebuilt (member REPAIRING) */
	POOL_DISK_RETIRED,     /* being emptied (member RETIRED): read, not placed on */
};

/* Runtime view of one member, indexed like p->sb->member[]. */
struct pool_disk {
	enum pool_disk_state state;
	char path[POOL_PATH_MAX]; /* where it was found, else its last-known path */
	uint64_t generation;	  /* of the copy found; 0 if none was readable */
	char msg[POOL_MSG_MAX];	  /* why it is not healthy; "" when healthy */
	dev_t dev;		  /* st_dev of the directory, 0 if not found */
	int fresh;		  /* added or replaced: no superblock of ours yet */
};

struct pool_space {
	uint64_t size, free; /* statvfs, bytes */
	uint32_t share;	     /* healthy disks on the same filesystem (>= 1) */
	int ok;		     /* statvfs succeeded */
};

struct pool {
	struct pool_sb *sb; /* the committed state; read-only outside pool.c */
	uint32_t ndisks;    /* == sb->nmembers */
	struct pool_disk disk[POOL_MAX_DISKS];
	int incomplete; /* opened with POOL_OPEN_INSPECT and no majority: read-only */

	pthread_mutex_t lock; /* guards everything below */
	uint32_t place_rotor; /* breaks placement ties so small files spread */
	int64_t space_when;   /* CLOCK_MONOTONIC ns of the last space refresh */
	struct pool_space space[POOL_MAX_DISKS];
};

/* pool_open() flags. */
#define POOL_OPEN_INSPECT                                                                          \
	1u /* without a majority, open read-only on the                                            \
	      highest generation instead of refusing                                               \
	      (for `spacectl status`) */

/* Make a new pool of n disk directories: validates every path first
 * (exists, is a directory, not listed twice even through another path, no
 * disk inside another, empty and not in a pool unless `force`), then
 * writes generation 1 to every disk.  Nothing is written if any check
 * fails. */
int pool_create(const char *name, const char *const *paths, uint32_t n, int force, char *err,
		size_t errlen);
/* Same, every disk with the given model (NULL: none). */
int pool_create_model(const char *name, const char *const *paths, uint32_t n, int force,
		      const struct pool_diskmodel *model, char *err, size_t errlen);

/* Open the pool SOURCE belongs to, reading every member at its last-known
 * path, and apply the mount rule.  Disks not healthy are described in
 * p->disk[i].msg; the caller decides whether to print them.  Errors:
 * SOURCE's own superblock error (pool_sb_read: -ENOENT, -EBADMSG, ...),
 * -ENXIO when no generation has a majority ("incomplete"; the message
 * names every disk not holding the newest generation), -ENOMEM. */
int pool_open(const char *source, unsigned flags, struct pool **out, char *err, size_t errlen);
/* Same, also looking at `extra` directories: a member found there by its
 * disk UUID is used in place of its last-known path (moved disks). */
int pool_open_paths(const char *source, const char *const *extra, uint32_t nextra, unsigned flags,
		    struct pool **out, char *err, size_t errlen);
void pool_close(struct pool *p);

/* Write p->sb as generation+1 to every healthy disk.  A disk whose write
 * fails becomes FAILED.  -EIO if fewer than a majority of the members
 * took it (the change may or may not survive a restart), -EROFS on an
 * incomplete pool. */
int pool_commit(struct pool *p, char *err, size_t errlen);

const char *pool_disk_state_name(enum pool_disk_state s); /* "healthy", ... */
uint32_t pool_healthy_disks(const struct pool *p);
/* "healthy", "degraded" (mounted, some disk not healthy) or "incomplete". */
const char *pool_health(const struct pool *p);

/* statvfs of disk idx: total and available bytes.  -errno. */
int pool_disk_space(struct pool *p, uint32_t idx, uint64_t *size, uint64_t *free);

/* Choose npos distinct healthy disks for a new file's positions into
 * disk_out[0..npos): most free space first (free space counted in whole
 * GiB, split among disks sharing a filesystem), ties broken by a counter
 * that rotates with every call.  -ENOSPC if fewer than npos disks are
 * healthy. */
int pool_place(struct pool *p, uint32_t npos, uint8_t *disk_out);

/* Add a volume: validates name and geometry against the pool, picks its
 * metadata disks, commits, then creates <disk>/vol/<name> on the healthy
 * disks (best effort: pool/meta and pool/store create it as needed). */
int pool_volume_create(struct pool *p, const char *name, const struct layout_geom *g, int integrity,
		       char *err, size_t errlen);
/* 0 if a journal of `mib` MiB (0: the default) holds the largest append
 * of a parity volume of geometry g (two partial-stripe records), else
 * -EINVAL naming the size needed.  Other layouts: 0. */
int pool_journal_fits(const struct layout_geom *g, uint32_t mib, char *err, size_t errlen);
/* The parity journal settings of volume `name` (parity volumes only):
 * mode POOL_VOLUME_JOURNAL_*, size in MiB (0: the default).  Commits; a
 * mounted daemon applies them when it next opens the volume. */
int pool_volume_set_journal(struct pool *p, const char *name, uint32_t mode, uint32_t mib,
			    char *err, size_t errlen);
/* Remove a volume: marks it deleting and commits, removes <disk>/vol/<name>
 * from every reachable disk, then drops it from the catalogue and commits.
 * If interrupted, the volume stays "deleting" and the call can be repeated. */
int pool_volume_delete(struct pool *p, const char *name, char *err, size_t errlen);
const struct pool_sb_volume *pool_volume_find(const struct pool *p, const char *name);
/* "healthy", "degraded" (disk failures within the redundancy), "offline"
 * (beyond it, or no metadata disk healthy) or "deleting". */
const char *pool_volume_health(const struct pool *p, const struct pool_sb_volume *v);
/* Estimated bytes of new file data the volume can still take
 * (docs/FORMAT.md, "Capacity estimate"). */
int pool_volume_capacity(struct pool *p, const struct pool_sb_volume *v, uint64_t *usable);

/* The capacity estimate's core, exposed for tests: the most raw bytes that
 * files spanning npos distinct disks can take from disks with the given
 * free bytes (each file puts equal bytes on each of its positions). */
uint64_t pool_capacity_raw(const uint64_t *free, uint32_t n, uint32_t npos);

/* Why g cannot be used for a volume of this pool (geometry rules and the
 * number of disks), as "<why>" in err; 0 if it can. */
int pool_geom_fit(const struct pool *p, const struct layout_geom *g, char *err, size_t errlen);

/* ---- disk failures, replacement (pool/pool.c, "disk states") ---- */

/* pool_place() when too few disks are healthy: the healthy disks first,
 * then at most `tolerate` positions on disks out of service (the file is
 * born degraded; a repair or resync fills those positions).  -ENOSPC if
 * that is not enough. */
int pool_place_degraded(struct pool *p, uint32_t npos, uint32_t tolerate, uint8_t *disk_out);
/* In service: gets commits and data (healthy, repairing, retired). */
int pool_disk_in_service(const struct pool *p, uint32_t idx);
/* Disk idx failed: record it (member FAILED) and commit.  `why` is kept
 * as the disk's message. */
int pool_disk_fail(struct pool *p, uint32_t idx, const char *why, char *err, size_t errlen);
/* Put disk idx (stale, failed, repairing or retired) back in service as
 * `st` (HEALTHY, REPAIRING or RETIRED) and commit; the disk gets the new
 * superblock too. */
int pool_disk_restore(struct pool *p, uint32_t idx, enum pool_disk_state st, char *err,
		      size_t errlen);
/* Replace member idx by the directory `path` (empty, in no pool): a new
 * disk UUID at the same index, state REPAIRING, committed (the new disk
 * gets a superblock).  Every placement stays valid: a rebuild fills the
 * new disk's positions. */
int pool_disk_replace(struct pool *p, uint32_t idx, const char *path, char *err, size_t errlen);
/* Add the directory `path` as a new member (healthy, empty). */
int pool_disk_add(struct pool *p, const char *path, char *err, size_t errlen);
/* Same, with a usage: POOL_USAGE_JOURNAL makes a journal disk, which
 * holds the parity journals (fs/volume.c picks their copies) and is never
 * placed on: no chunk, no metadata replica.  The superblock then becomes
 * version 3 (pool/superblock.h). */
int pool_disk_add_usage(struct pool *p, const char *path, enum pool_member_usage usage, char *err,
			size_t errlen);
/* 1 if member idx is a journal disk. */
int pool_disk_is_journal(const struct pool *p, uint32_t idx);
/* Members that may hold data (every one but the journal disks). */
uint32_t pool_data_disks(const struct pool *p);
/* Give disk idx the emulated-disk model m (pool/diskmodel.h) and commit.
 * A mounted daemon also updates its disk queue (fs/ctl.c "disk-model"). */
int pool_disk_set_model(struct pool *p, uint32_t idx, const struct pool_diskmodel *m, char *err,
			size_t errlen);
/* The member index of a disk given as an index or a path; -ENOENT. */
int pool_disk_find(const struct pool *p, const char *what, uint32_t *idx);
/* Why a directory cannot serve (gone, replaced, permissions 000, not this
 * member's superblock), as "<why>" in err; 0 if it looks intact.  dev and
 * ino (when not 0) must match the directory's. */
int pool_disk_probe(const struct pool *p, uint32_t idx, dev_t dev, ino_t ino, char *err,
		    size_t errlen);

/* ---- directory durability (pool/pool.c) ---- */
/* fsync directory dir, so the names created in it survive a power cut:
 * 0 or -errno. */
int pool_fsync_dir(const char *dir);
/* fsync the directory that holds path ("." for a name without one):
 * 0 or -errno. */
int pool_fsync_parent(const char *path);

#endif /* SPACEFS_POOL_POOL_H */
