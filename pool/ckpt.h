/*
 * ckpt.h -- checkpoint bookkeeping below the file system: the per-layer
 * granule maps of differencing data and the checkpoint log that makes
 * them durable (pool/ckpt.c).  fs/ckpt.c builds checkpoints on top.
 *
 * A layer map holds 2 bits per 64 KiB granule of a file: NONE (look in
 * the layer below), DATA (the whole granule is in this layer's hidden
 * file, at the same offset) or ZERO (the granule reads as zeros here:
 * cut by a truncate or punched).  Gets are atomic loads and sets atomic
 * stores of the byte: one setter at a time (the caller's lock) may run
 * beside any number of getters, within the reserved range.
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
 * (temp file, fsync, rename) with a compacted set of records.
 */
#ifndef SPACEFS_POOL_CKPT_H
#define SPACEFS_POOL_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define POOL_CKPT_GRANULE     (64u << 10)
#define POOL_CKPT_MAX_REPLICA 8

enum { POOL_CKPT_NONE = 0, POOL_CKPT_DATA = 1, POOL_CKPT_ZERO = 2 };

struct pool_ckpt_map {
	uint8_t *bits;	/* 2 bits per granule */
	uint64_t ngran; /* granules the array covers (beyond: NONE) */
	uint64_t ndata; /* granules not NONE */
};

int pool_ckpt_map_get(const struct pool_ckpt_map *m, uint64_t g);
/* Set granules [g, g+n) to state; -ENOMEM. */
int pool_ckpt_map_set(struct pool_ckpt_map *m, uint64_t g, uint64_t n, int state);
/* Cover granules [0, n) without growing later (a set within them never
 * reallocates, so readers may look while one setter writes); -ENOMEM. */
int pool_ckpt_map_reserve(struct pool_ckpt_map *m, uint64_t n);
/* First granule >= g whose state is not NONE, or UINT64_MAX. */
uint64_t pool_ckpt_map_next(const struct pool_ckpt_map *m, uint64_t g);
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
int pool_ckpt_log_sync(struct pool_ckpt_log *l);
/* Encode one record at the end of *buf (grown with realloc). */
int pool_ckpt_log_encode(char **buf, size_t *len, size_t *cap, uint32_t type, const void *p,
			 uint32_t plen, uint64_t seq);
/* Replace every replica with buf (records made by pool_ckpt_log_encode;
 * sequences continue from the last one). */
int pool_ckpt_log_reset(struct pool_ckpt_log *l, const char *buf, size_t len);
uint64_t pool_ckpt_log_seq(struct pool_ckpt_log *l);

#endif /* SPACEFS_POOL_CKPT_H */
