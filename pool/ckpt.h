/*
 * ckpt.h -- checkpoint bookkeeping below the file system: the per-layer
 * granule maps of differencing data and the checkpoint log that makes
 * them durable (pool/ckpt.c).  fs/ckpt.c builds checkpoints on top.
 *
 * A layer map holds 2 bits per 64 KiB granule of a file: NONE (look in
 * the layer below), DATA (the whole granule is in this layer's hidden
 * file, at the same offset), ZERO (the granule reads as zeros here:
 * cut by a truncate or punched) or PART (some of its sixteen 4 KiB
 * blocks are in this layer, the others below).  A PART granule's blocks
 * are a 16-bit mask (bit b: block b is here), kept in leaves of
 * POOL_CKPT_LEAF granules allocated on the first PART granule they
 * hold, so a map costs 2 bits per granule plus 2 bytes per granule only
 * where first writes were partial.  Gets are atomic loads and sets
 * atomic stores: one setter at a time (the caller's lock) may run beside
 * any number of getters, within the reserved range.  A mask only grows
 * while its granule is PART (a full one turns the granule DATA and stays
 * as it is), so a getter that saw PART and then reads the mask sees at
 * least the blocks that were marked when it looked.
 *
 * The log (vol/<volume>/ckpt on each metadata disk in service) is a
 * sequence of records, each
 *     u32 magic "SPCK", u32 type, u32 length, u64 sequence, payload,
 *     u32 CRC-32C of everything before it in the record
 * little endian.  Records are appended to every replica with one
 * write(2) each before the caller goes on (a kill -9 after the call
 * cannot lose them; pool_ckpt_log_sync for power loss).  Opening takes
 * the replica whose last valid record has the highest sequence, cuts a
 * torn tail, and pool_ckpt_log_reset replaces every replica atomically
 * (temp file, fsync, rename, fsync of the directory) with a compacted
 * set of records.
 */
#ifndef SPACEFS_POOL_CKPT_H
#define SPACEFS_POOL_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POOL_CKPT_GRANULE     (64u << 10)
#define POOL_CKPT_BLOCK	      4096u
#define POOL_CKPT_BLOCKS      (POOL_CKPT_GRANULE / POOL_CKPT_BLOCK) /* 16 per granule */
#define POOL_CKPT_FULL	      0xffffu				    /* every block */
#define POOL_CKPT_LEAF	      1024u /* granules per mask leaf (64 MiB of file) */
#define POOL_CKPT_MAX_REPLICA 8

/* Granules a map covers at most: 2^32, 256 TiB of file (its state bits
 * alone take 1 GiB then).  A write past it is EFBIG; a log record naming
 * a granule past it is damaged. */
#define POOL_CKPT_MAX_GRANULES (1ull << 32)

enum { POOL_CKPT_NONE = 0, POOL_CKPT_DATA = 1, POOL_CKPT_ZERO = 2, POOL_CKPT_PART = 3 };

/* A marked block's slot: where in its layer's fill file (fs/ckpt.c) the
 * block is, in 4 KiB blocks; NOSLOT: at its own offset in the layer file. */
#define POOL_CKPT_NOSLOT UINT32_MAX

struct pool_ckpt_map {
	uint8_t *bits;	  /* 2 bits per granule */
	uint16_t **masks; /* ngran / POOL_CKPT_LEAF leaves, NULL until one is PART */
	/* per leaf, NULL until a block of it has a slot: per granule, NULL
	 * until one of its blocks has one, else 16 entries (slot + 1; 0 is
	 * NOSLOT) */
	uint32_t ***slots;
	uint64_t ngran;	  /* granules the array covers (beyond: NONE) */
	uint64_t ndata;	  /* granules not NONE */
};

int pool_ckpt_map_get(const struct pool_ckpt_map *m, uint64_t g);
/* Set granules [g, g+n) to state NONE, DATA or ZERO (-EINVAL for PART:
 * use pool_ckpt_map_mark); NONE and ZERO clear their masks; -ENOMEM,
 * -EFBIG past POOL_CKPT_MAX_GRANULES. */
int pool_ckpt_map_set(struct pool_ckpt_map *m, uint64_t g, uint64_t n, int state);
/* The blocks of granule g in this layer: POOL_CKPT_FULL for DATA, its
 * mask for PART, 0 for NONE and ZERO. */
unsigned pool_ckpt_map_blocks(const struct pool_ckpt_map *m, uint64_t g);
/* Add blocks (a mask) to granule g, which is NONE or PART: it becomes
 * PART, or DATA once every block is in (-EINVAL if it is DATA or ZERO,
 * or mask is 0); -ENOMEM, -EFBIG past POOL_CKPT_MAX_GRANULES. */
int pool_ckpt_map_mark(struct pool_ckpt_map *m, uint64_t g, unsigned mask);
/* Mark blocks `mask` of granule g (NONE or PART) as in their slots:
 * consecutive slots from `slot`, in block order (NOSLOT: at their
 * offsets, and slots of blocks marked before are kept).  The slots are
 * set before the mask, so a getter that sees a block marked finds its
 * slot.  A granule with any slot stays PART when every block is in (its
 * blocks are not at the granule's offsets).  Errors as map_mark. */
int pool_ckpt_map_mark_slots(struct pool_ckpt_map *m, uint64_t g, unsigned mask, uint32_t slot);
/* Block b of granule g: its slot, or NOSLOT (at its offset, or not here).
 * Set to DATA, ZERO or NONE, a granule's slots are cleared. */
uint32_t pool_ckpt_map_slot(const struct pool_ckpt_map *m, uint64_t g, unsigned b);
/* Whether any block of granule g has a slot. */
bool pool_ckpt_map_slotted(const struct pool_ckpt_map *m, uint64_t g);
/* Cover granules [0, n) without growing later (a set within them never
 * reallocates, so readers may look while one setter writes); -ENOMEM,
 * -EFBIG past POOL_CKPT_MAX_GRANULES. */
int pool_ckpt_map_reserve(struct pool_ckpt_map *m, uint64_t n);
/* First granule >= g whose state is not NONE, or UINT64_MAX. */
uint64_t pool_ckpt_map_next(const struct pool_ckpt_map *m, uint64_t g);
/* One past the last granule whose state is not NONE; 0 if none is. */
uint64_t pool_ckpt_map_end(const struct pool_ckpt_map *m);
void pool_ckpt_map_free(struct pool_ckpt_map *m);

struct pool_ckpt_log;

int pool_ckpt_log_open(const char *const *dirs, uint32_t n, struct pool_ckpt_log **out, char *err,
		       size_t errlen);
void pool_ckpt_log_close(struct pool_ckpt_log *l);
/* Call fn for every valid record of the chosen replica, in order; stops
 * at fn's first non-zero return. */
int pool_ckpt_log_replay(struct pool_ckpt_log *l,
			 int (*fn)(void *arg, uint32_t type, const void *p, uint32_t len),
			 void *arg);
int pool_ckpt_log_append(struct pool_ckpt_log *l, uint32_t type, const void *p, uint32_t len);
/* n records of one type and payload length, back to back in recs, in one
 * write per replica. */
int pool_ckpt_log_append_n(struct pool_ckpt_log *l, uint32_t type, const void *recs, uint32_t len,
			   uint32_t n);
/* Flush every replica (power loss).  A replica whose flush fails, now
 * or in an earlier flush of the same file, is dropped, as one whose
 * write fails is: the kernel may have lost appends it had accepted, and
 * it reports that once, to whichever flush looks first.  0 if at least
 * one replica (or none was configured) is flushed, else the error (-EIO
 * when none is left). */
int pool_ckpt_log_sync(struct pool_ckpt_log *l);
/* The same flush in two steps, so that the caller's lock (the one its
 * appends hold) is not held across the device's cache flush: _begin,
 * under that lock, drops replicas an earlier flush found failed and
 * takes a descriptor of every other open one; _end, without it, flushes
 * those and closes them: 0 if one replica flushed and no flush of its
 * current file has failed (flushes run one at a time and the latest
 * file's failure is remembered, so a concurrent flush cannot report
 * success after another saw the error), else the error; such a replica
 * is dropped at the next _begin or pool_ckpt_log_sync.  Every record
 * appended before _begin is durable when _end returns 0: the file
 * flushed is the one those records went to, and a reset between the
 * steps returned only once its replacement and the rename were durable.
 * _begin returns 0 or -errno with nothing held (then flush with
 * pool_ckpt_log_sync under the lock instead; -EIO when every replica is
 * dropped). */
struct pool_ckpt_log_flush {
	uint32_t n;
	int fd[POOL_CKPT_MAX_REPLICA];
	uint32_t replica[POOL_CKPT_MAX_REPLICA], gen[POOL_CKPT_MAX_REPLICA];
};
int pool_ckpt_log_sync_begin(struct pool_ckpt_log *l, struct pool_ckpt_log_flush *f);
int pool_ckpt_log_sync_end(struct pool_ckpt_log *l, struct pool_ckpt_log_flush *f);
/* Encode one record at the end of *buf (grown with realloc). */
int pool_ckpt_log_encode(char **buf, size_t *len, size_t *cap, uint32_t type, const void *p,
			 uint32_t plen, uint64_t seq);
/* Replace every replica with buf (records made by pool_ckpt_log_encode;
 * sequences continue from the last one). */
int pool_ckpt_log_reset(struct pool_ckpt_log *l, const char *buf, size_t len);
uint64_t pool_ckpt_log_seq(struct pool_ckpt_log *l);
/* Replicas still written (not dropped after an error). */
uint32_t pool_ckpt_log_replicas(const struct pool_ckpt_log *l);

#endif /* SPACEFS_POOL_CKPT_H */
