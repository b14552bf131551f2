/*
 * superblock.h -- the `spacefs.pool` file kept on every disk of a pool.
 *
 * One file per disk holds the whole pool description: the pool's identity,
 * this disk's identity and index, the member list, the volume catalogue
 * and a generation number, closed by a CRC-32C.  Every member holds the
 * same content except for the two "this disk" fields; pool/pool.c decides
 * which copies are current (docs/FORMAT.md, "Mount rule").
 *
 * The byte layout is fixed and little endian; docs/FORMAT.md gives every
 * offset.  struct pool_sb is its decoded, validated form: code outside
 * this module never sees raw bytes, and nothing in a pool_sb returned by
 * pool_sb_decode() or pool_sb_read() needs checking again.
 *
 * Errors: negative errno plus a one-line message "<file>: <problem>":
 *   -ENOENT        no such file (the directory is not a pool member)
 *   -EMEDIUMTYPE   not a spacefs pool file (wrong magic, empty, text...)
 *   -EPROTONOSUPPORT  a format version newer than this program's
 *   -EBADMSG       damaged: truncated, wrong size or checksum mismatch
 *   -EUCLEAN       the checksum holds but a field is out of bounds
 *                  (written by a buggy or hostile program)
 *   other          the errno of a failed system call
 */
#ifndef SPACEFS_POOL_SUPERBLOCK_H
#define SPACEFS_POOL_SUPERBLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "layout/layout.h"
#include "pool/diskmodel.h"

#define POOL_SB_FILE "spacefs.pool"
/* The newest format this program reads.  Version 2 adds the disk model
 * table; a pool whose disks all have model none is still written as
 * version 1, byte for byte as before, so older spacefs can read it.
 * Version 3 adds each member's usage (data or journal) in a field of the
 * model record that version 2 keeps zero; it is written only while some
 * member is a journal disk, so an older spacefs refuses such a pool
 * ("newer version") instead of placing data on its journal disks. */
#define POOL_SB_VERSION	 3u
#define POOL_MAX_DISKS	 64u   /* members of one pool */
#define POOL_MAX_VOLUMES 64u   /* volumes of one pool */
#define POOL_NAME_MAX	 64u   /* pool and volume names, without the NUL */
#define POOL_PATH_MAX	 4096u /* member paths, with the NUL */
#define POOL_META_DISKS	 3u    /* metadata disks of a volume, at most */
#define POOL_UUID_LEN	 16u

/* Byte sizes of the on-disk pieces (docs/FORMAT.md). */
#define POOL_SB_HEADER_SIZE 256u
#define POOL_SB_MEMBER_SIZE (24u + POOL_PATH_MAX)
#define POOL_SB_VOLUME_SIZE 128u
#define POOL_SB_MODEL_SIZE  48u /* version 2: one per member, after the volumes */
/* "data" or "journal"; NULL for a value out of range. */
#define POOL_USAGE_NAME(u)                                                                         \
	((u) == POOL_USAGE_DATA ? "data" : (u) == POOL_USAGE_JOURNAL ? "journal" : NULL)
#define POOL_SB_MAX_SIZE                                                                           \
	(POOL_SB_HEADER_SIZE + POOL_MAX_DISKS * (POOL_SB_MEMBER_SIZE + POOL_SB_MODEL_SIZE) +       \
	 POOL_MAX_VOLUMES * POOL_SB_VOLUME_SIZE + 4u)

/* What the pool's committed state says about a member: ACTIVE; FAILED
 * (out of service: it missed writes; a repair or resync brings it back);
 * RETIRED (being emptied before removal, still read); REPAIRING (a
 * replacement being rebuilt: written, read only where rebuilt). */
enum pool_member_state {
	POOL_MEMBER_ACTIVE = 1,
	POOL_MEMBER_FAILED = 2,
	POOL_MEMBER_RETIRED = 3,
	POOL_MEMBER_REPAIRING = 4,
};

enum pool_volume_state {
	POOL_VOLUME_ONLINE = 1,
	POOL_VOLUME_DELETING = 2, /* catalogued only until its files are gone */
};

/* What a member holds: file data and metadata (the default), or only the
 * parity journals of the pool's parity volumes (`disk add --usage
 * journal`, Storage Spaces' -Usage Journal): never placed on. */
enum pool_member_usage {
	POOL_USAGE_DATA = 0,
	POOL_USAGE_JOURNAL = 1,
	POOL_USAGE_MAX = POOL_USAGE_JOURNAL,
};

struct pool_sb_member {
	uint8_t uuid[POOL_UUID_LEN];
	uint32_t index; /* == its place in the member array */
	enum pool_member_state state;
	enum pool_member_usage usage; /* version 3; DATA in older versions */
	char path[POOL_PATH_MAX];     /* last-known absolute path */
	struct pool_diskmodel model;  /* emulated disk; kind NONE by default */
};

/* Parity journal modes, as stored (0 is the default, so superblocks
 * written before the journal existed read as "on"). */
enum pool_volume_journal {
	POOL_VOLUME_JOURNAL_ON = 0, /* write-through */
	POOL_VOLUME_JOURNAL_OFF = 1,
	POOL_VOLUME_JOURNAL_WB = 2, /* write-back (pool/wback.h) */
	POOL_VOLUME_JOURNAL_MAX = POOL_VOLUME_JOURNAL_WB,
};

struct pool_sb_volume {
	char name[POOL_NAME_MAX + 1];
	uint64_t id;	 /* unique in the pool, never reused */
	int64_t created; /* seconds since the epoch */
	struct layout_geom geom;
	uint32_t integrity; /* 1: CRC-32C per 4 KiB block */
	/* parity journal (pool/journal.h): POOL_VOLUME_JOURNAL_*, and bytes
	 * per copy in MiB (0: POOL_JOURNAL_DEFAULT_MIB); both 0 unless parity */
	uint32_t journal;
	uint32_t journal_mib;
	enum pool_volume_state state;
	uint32_t nmeta; /* metadata disks, 1..POOL_META_DISKS */
	uint8_t meta[POOL_META_DISKS];
};

/* Decoded superblock.  About 270 KiB: allocate it, never on the stack. */
struct pool_sb {
	uint32_t version; /* as read; encoding picks 1, 2 or 3 from the content */
	uint64_t generation;
	uint8_t pool_uuid[POOL_UUID_LEN];
	char pool_name[POOL_NAME_MAX + 1];
	int64_t created;		  /* seconds since the epoch */
	uint64_t next_volume_id;	  /* > every volume id ever handed out */
	uint8_t disk_uuid[POOL_UUID_LEN]; /* the disk holding this copy ... */
	uint32_t disk_index;		  /* ... and its member index */
	uint32_t nmembers;
	struct pool_sb_member member[POOL_MAX_DISKS];
	uint32_t nvolumes;
	struct pool_sb_volume volume[POOL_MAX_VOLUMES];
};

/* 0 if `name` is a valid pool or volume name: 1..64 of [A-Za-z0-9._-],
 * not starting with '.'.  Else -EINVAL and *why says what is wrong. */
int pool_name_check(const char *name, const char **why);

/* Check every invariant decode checks, on an in-memory superblock.  The
 * message names `name` (a file path or "superblock"). */
int pool_sb_validate(const struct pool_sb *sb, const char *name, char *err, size_t errlen);

/* Bytes pool_sb_encode() writes for sb. */
size_t pool_sb_size(const struct pool_sb *sb);
/* Encode a valid sb into the pool_sb_size(sb) bytes at buf.  -EINVAL if
 * sb is invalid (a bug in the caller; *err says which field), -ENOSPC if
 * len is too small. */
int pool_sb_encode(const struct pool_sb *sb, void *buf, size_t len, char *err, size_t errlen);
/* Decode and validate len bytes read from the file `name`. */
int pool_sb_decode(const void *buf, size_t len, const char *name, struct pool_sb *out, char *err,
		   size_t errlen);

/* Read and decode <dir>/spacefs.pool. */
int pool_sb_read(const char *dir, struct pool_sb *out, char *err, size_t errlen);
/* Replace <dir>/spacefs.pool atomically: temp file in dir, fsync, rename,
 * fsync dir.  Either the old or the new file survives a crash. */
int pool_sb_write(const char *dir, const struct pool_sb *sb, char *err, size_t errlen);

/* CRC-32C of the content every member shares (everything but disk_uuid
 * and disk_index) into *out, to tell copies of one generation apart.
 * sb must be valid.  -ENOMEM. */
int pool_sb_digest(const struct pool_sb *sb, uint32_t *out);

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into out (37 bytes). */
void pool_uuid_format(const uint8_t uuid[POOL_UUID_LEN], char out[37]);
/* A random (version 4) UUID. */
int pool_uuid_generate(uint8_t uuid[POOL_UUID_LEN]);

#endif /* SPACEFS_POOL_SUPERBLOCK_H */
