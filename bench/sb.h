/*
 * sb.h -- spacebench's pure parts: self-describing blocks, the write log,
 * latency histograms and a seeded random generator.
 *
 * None of this does I/O, so the unit tests (tests/bench) exercise it on
 * memory buffers.  The on-disk formats below are spacebench's own
 * contract; every integer is little-endian.
 *
 * Block (written by `spacebench write`, checked by `spacebench verify`):
 * a block is `bs` bytes (a multiple of SB_SECTOR); every 4 KiB sector of
 * it opens with a 32-byte header and is filled after it with bytes
 * derived from (run id, offset, generation):
 *     0  u32 magic  SB_BLOCK_MAGIC
 *     4  u32 crc    CRC-32C of the whole sector with this field zero
 *     8  u64 run id (one per `spacebench write` run)
 *    16  u64 offset of this sector in the file
 *    24  u64 generation (the write's sequence number, 1, 2, ...)
 * A sector whose CRC fails is "corrupt"; sectors of one block carrying
 * different generations make it "torn".
 *
 * Log (written by `spacebench write --log`, read by verify): a 64-byte
 * header, then 32-byte records, each with its own CRC:
 *   header:  0 char[8] "SPCBLOG1"; 8 u32 version (2; 1 is still read);
 *           12 u32 bs; 16 u64 file size; 24 u64 run id; 32..59 zero;
 *           60 u32 crc (CRC-32C of bytes 0..59)
 *   record:  0 u32 type; 4 u32 crc (of the record with this field zero);
 *            8 u64 offset; 16 u64 generation; 24 u64 aux
 *   types:   SUBMIT (about to be issued), ACK (completed, acknowledged),
 *            FSYNC (every ACK before it is on stable storage; aux = the
 *            number of ACKs so far), END (clean end; aux = ACK count),
 *            PRIOR (version 2: what one 4 KiB sector held before this
 *            run first wrote its block; offset = the sector's, generation
 *            0, aux = CRC-32C of its 4096 bytes as read).  Before the
 *            first SUBMIT on a block come one PRIOR per sector of it, in
 *            ascending order, so that after a crash a block whose write
 *            was in flight may be recognised holding what it held before
 *            (an earlier run's data, the file's previous bytes, zeros).
 *   A version 1 log has no PRIOR records: content from before the run is
 *   then unknown, and only zeros are taken for it.
 */
#ifndef SPACEFS_BENCH_SB_H
#define SPACEFS_BENCH_SB_H

#include <stddef.h>
#include <stdint.h>

#define SB_SECTOR	 4096u
#define SB_BLOCK_MAGIC	 0x4b4c4253u /* "SBLK" */
#define SB_HDR_BYTES	 32u
#define SB_MAX_BS	 (1u << 20)
#define SB_MAX_FILE	 (1ull << 44)
#define SB_LOG_MAGIC	 "SPCBLOG1"
#define SB_LOG_VERSION	 2u /* written; 1 and 2 are read */
#define SB_LOG_HDR_BYTES 64u
#define SB_LOG_REC_BYTES 32u

/* ---- little-endian fields ---- */

static inline void sb_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void sb_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t sb_get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t sb_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* ---- random numbers: xoshiro-like, state in the caller's struct ---- */

struct sb_rng {
	uint64_t s;
};

void sb_rng_seed(struct sb_rng *r, uint64_t seed);
uint64_t sb_rng_next(struct sb_rng *r);
/* Uniform in [0, n), n > 0. */
uint64_t sb_rng_below(struct sb_rng *r, uint64_t n);

/* ---- self-describing blocks ---- */

/* Fill `bs` bytes at buf for (run, offset, gen). */
void sb_block_fill(void *buf, uint32_t bs, uint64_t run, uint64_t offset, uint64_t gen);

enum sb_verdict {
	SB_OK = 0,
	SB_LOST,      /* reads as zeros (hole) where an acknowledged write was */
	SB_TORN,      /* sectors of one block from different writes (or zeros) */
	SB_CORRUPT,   /* a sector's magic or CRC is wrong */
	SB_MISPLACED, /* a valid sector that belongs to another offset or run */
	SB_STALE,     /* a valid older generation than the one acknowledged */
	SB_INFLIGHT,  /* allowed: a write in flight (or, durable-only, not yet
			 fsync'd) and the block holds, wholly or in some
			 sectors, the content from before it */
	SB_NVERDICT
};

const char *sb_verdict_name(enum sb_verdict v);

/* What the log says about one block: generations (0 = none). */
struct sb_expect {
	uint64_t acked;	    /* last acknowledged */
	uint64_t durable;   /* last acknowledged before a completed fsync */
	uint64_t submitted; /* last submitted (>= acked; > acked if in flight) */
};

/* The CRC-32C a PRIOR record carries for one 4 KiB sector. */
uint32_t sb_prior_crc(const void *sector);

/* Check the `bs` bytes read at `offset` against `e`.  The block must hold
 * the generation e->submitted (ok), or, while a newer write may be
 * missing, older content that was legitimately there (in flight): with
 * durable_only any generation from e->durable (after a power cut only
 * fsync'd data must be there), otherwise from e->acked; and when no write
 * on the block is owed, the content from before the run, sector by
 * sector: the CRCs in prior[bs / SB_SECTOR], or zeros when prior is NULL
 * (a version 1 log).  Anything else is a problem.  *found gets the
 * generation seen (0 if none or mixed). */
enum sb_verdict sb_block_check(const void *buf, uint32_t bs, uint64_t run, uint64_t offset,
			       const struct sb_expect *e, const uint32_t *prior, int durable_only,
			       uint64_t *found);

/* ---- the write log ---- */

enum sb_rec_type {
	SB_REC_SUBMIT = 1,
	SB_REC_ACK = 2,
	SB_REC_FSYNC = 3,
	SB_REC_END = 4,
	SB_REC_PRIOR = 5, /* version 2 */
};

struct sb_log_hdr {
	uint32_t version; /* 0 when encoding: SB_LOG_VERSION */
	uint32_t bs;
	uint64_t file_size;
	uint64_t run;
};

void sb_log_hdr_encode(const struct sb_log_hdr *h, uint8_t out[SB_LOG_HDR_BYTES]);
void sb_log_rec_encode(uint32_t type, uint64_t offset, uint64_t gen, uint64_t aux,
		       uint8_t out[SB_LOG_REC_BYTES]);

/* A parsed log: one sb_expect per block of the file. */
struct sb_log {
	struct sb_log_hdr hdr;
	uint64_t nblocks;
	struct sb_expect *blk;
	uint32_t *prior; /* per 4 KiB sector (version 2), else NULL */
	uint64_t submits, acks, fsyncs;
	int ended; /* an END record was seen: the writer finished cleanly */
};

/* Parse and validate a whole log held in memory (magic, version, header
 * and record CRCs, types, bounds, alignment, generation order, every ACK
 * matching a SUBMIT, in version 2 every block's PRIOR records complete
 * before its first SUBMIT).  On error returns -EINVAL with one line in err
 * naming the byte offset; name is used in messages. */
int sb_log_parse(const void *data, size_t len, const char *name, struct sb_log *log, char *err,
		 size_t errlen);
void sb_log_free(struct sb_log *log);

/* ---- latency histogram: log-linear buckets, relative error < 1/128 ---- */

#define SB_HIST_SUB	64u
#define SB_HIST_BUCKETS (SB_HIST_SUB * 59u)

struct sb_hist {
	uint64_t n, sum, max;
	uint64_t count[SB_HIST_BUCKETS];
};

void sb_hist_add(struct sb_hist *h, uint64_t v);
void sb_hist_merge(struct sb_hist *dst, const struct sb_hist *src);
/* The p-th percentile (0 < p <= 100) of the values added; 0 when empty. */
uint64_t sb_hist_percentile(const struct sb_hist *h, double p);
unsigned sb_hist_bucket(uint64_t v);
uint64_t sb_hist_value(unsigned bucket);

/* ---- size parsing: "4K", "256M", "2G", plain bytes ---- */

int sb_parse_size(const char *s, uint64_t *out);

#endif /* SPACEFS_BENCH_SB_H */
