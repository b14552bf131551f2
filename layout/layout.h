/*
 * layout.h -- the pure geometry and coding engine of spacefs.
 *
 * Everything here is arithmetic on byte ranges and buffers: which stripe
 * position (which disk of a file) holds a byte, where parity lives, how to
 * compute parity and rebuild lost positions, and what to read before a
 * partial write.  Nothing here does I/O, allocates per request, or knows
 * about files, FUSE or disks.  pool/ executes the plans made here.
 *
 * Vocabulary (docs/ARCHITECTURE.md has pictures):
 *   k          data columns of a stripe
 *   m          parity columns (parity layout only, 1 or 2)
 *   position   one of the disks a file spans, 0 .. layout_positions()-1.
 *              Each position has one chunk file; byte `chunk_off` of a
 *              position's chunk file belongs to stripe chunk_off/interleave.
 *   slot       codec index of a buffer inside one stripe: data column
 *              0..k-1, parity j at k+j.  The position a slot lives on
 *              rotates stripe by stripe for parity (left-symmetric, as md).
 *   stripe     k * interleave data bytes; stripe s occupies chunk bytes
 *              [s*interleave, (s+1)*interleave) of every position.
 *
 * Position of (stripe s, slot) -- fixed forever, it is the on-disk format:
 *   simple:  data column d                  -> position d
 *   mirror:  data column d, copy c          -> position c*k + d
 *   parity:  n = k + m, pd = (n - 1) - (s % n)
 *            parity j (slot k+j)            -> position (pd + j) % n
 *            data column d                  -> position (pd + m + d) % n
 *
 * Contracts common to all functions: arguments are not NULL unless stated;
 * functions returning int return 0 or a negative errno.
 */
#ifndef SPACEFS_LAYOUT_H
#define SPACEFS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define LAYOUT_BLOCK	      4096u /* checksum and alignment unit */
#define LAYOUT_MAX_COLUMNS    16u   /* Storage Spaces columns, parity included */
#define LAYOUT_MAX_COPIES     3u
#define LAYOUT_MAX_PARITY     2u
#define LAYOUT_MAX_POSITIONS  (LAYOUT_MAX_COLUMNS * LAYOUT_MAX_COPIES)
#define LAYOUT_MIN_INTERLEAVE (16u * 1024)
#define LAYOUT_MAX_INTERLEAVE (1024u * 1024)

enum layout_kind {
	LAYOUT_SIMPLE = 1,
	LAYOUT_MIRROR = 2,
	LAYOUT_PARITY = 3,
};

struct layout_geom {
	enum layout_kind kind;
	uint32_t copies;     /* mirror: 2 or 3; simple and parity: 1 */
	uint32_t parity;     /* parity: m = 1 or 2; simple and mirror: 0 */
	uint32_t columns;    /* as Storage Spaces counts: parity k + m, else data columns */
	uint32_t interleave; /* bytes per column per stripe, power of two 16 KiB..1 MiB */
};

/* ---- geometry ---------------------------------------------------------- */

/* 0 if g is a valid geometry, else -EINVAL.  Parity needs k >= 2. */
int layout_geom_check(const struct layout_geom *g);
/* Fill g for a kind with Storage Spaces defaults given `ndisks`: columns as
 * many as the disks allow up to 8 (parity: data columns a power of two,
 * so stripes are 512 KiB or 1 MiB), interleave 256 KiB.  copies/parity as
 * given (pass 0 for the kind's default: mirror 2, parity 1).  -EINVAL if
 * ndisks cannot hold the layout at all. */
int layout_geom_default(struct layout_geom *g, enum layout_kind kind, uint32_t copies,
			uint32_t parity, uint32_t ndisks);
const char *layout_kind_name(enum layout_kind kind); /* "simple", ... */
int layout_kind_parse(const char *s, enum layout_kind *kind);

uint32_t layout_data_columns(const struct layout_geom *g); /* k */
uint32_t layout_positions(const struct layout_geom *g);	   /* disks a file spans */
uint32_t layout_redundancy(const struct layout_geom *g);   /* failures tolerated */
uint64_t layout_stripe_bytes(const struct layout_geom *g); /* k * interleave */
/* Usable fraction of raw capacity as num/den (mirror 1/copies, parity k/n). */
void layout_efficiency(const struct layout_geom *g, uint32_t *num, uint32_t *den);

/* ---- mapping ----------------------------------------------------------- */

/* Position holding slot `slot` (data column, or k+j for parity j) of
 * stripe `stripe`, copy `copy` (mirror only, else 0). */
uint32_t layout_slot_pos(const struct layout_geom *g, uint64_t stripe, uint32_t slot,
			 uint32_t copy);
/* Inverse: which slot and copy position `pos` holds in stripe `stripe`. */
void layout_pos_slot(const struct layout_geom *g, uint64_t stripe, uint32_t pos, uint32_t *slot,
		     uint32_t *copy);

/* One piece of a file byte range that lives in one data column of one
 * stripe.  The same bytes are at chunk_off of every copy's position. */
struct layout_extent {
	uint64_t stripe;
	uint32_t col;	    /* data column 0..k-1 */
	uint32_t col_off;   /* offset inside the interleave */
	uint32_t len;	    /* never crosses an interleave boundary */
	uint64_t chunk_off; /* stripe * interleave + col_off */
	uint64_t buf_off;   /* offset of this piece from the start of the range */
};

/* Split file range [off, off+len) into extents in file order.  Writes at
 * most `max` extents into out and returns how many the range needs (so a
 * return > max means out was too small).  len 0 gives 0. */
size_t layout_map(const struct layout_geom *g, uint64_t off, uint64_t len,
		  struct layout_extent *out, size_t max);

/* ---- coding (ISA-L Reed-Solomon, Cauchy matrix) ------------------------- */

struct layout_codec; /* immutable after creation except its decode cache */

/* Codec for k data + m parity (1 <= m <= 2, k >= 2, k + m <= LAYOUT_MAX_COLUMNS).
 * -EINVAL on bad k/m, -ENOMEM. */
int layout_codec_new(uint32_t k, uint32_t m, struct layout_codec **out);
void layout_codec_free(struct layout_codec *c);
uint32_t layout_codec_k(const struct layout_codec *c);
uint32_t layout_codec_m(const struct layout_codec *c);

/* parity[j] = sum_i G[j][i] * data[i] over len bytes (full-stripe encode). */
void layout_codec_encode(const struct layout_codec *c, size_t len, uint8_t *const *data,
			 uint8_t *const *parity);
/* Read-modify-write delta: parity[j] ^= G[j][col] * delta, where
 * delta = old_data ^ new_data of column col over len bytes. */
void layout_codec_update(const struct layout_codec *c, size_t len, uint32_t col,
			 const uint8_t *delta, uint8_t *const *parity);
/* Rebuild blocks[erased[i]] (slots, data then parity, k + m buffers of len
 * bytes) from the other blocks.  Erased buffers are outputs; the others
 * must hold valid data.  -EINVAL if nerased > m or a slot is repeated or
 * out of range.  Decode tables are cached per erasure pattern; safe to
 * call from several threads at once. */
int layout_codec_decode(struct layout_codec *c, size_t len, uint8_t *const *blocks,
			const uint32_t *erased, uint32_t nerased);

/* ---- planning ---------------------------------------------------------- */

/* One chunk I/O of a plan: `len` bytes at chunk offset
 * stripe*interleave + col_off of position `pos`, which holds `slot`. */
struct layout_io {
	uint32_t pos;
	uint32_t slot;
	uint32_t col_off;
	uint32_t len;
};

enum layout_write_mode {
	LAYOUT_WRITE_DIRECT = 1, /* simple/mirror: write each copy, no reads */
	LAYOUT_WRITE_FULL,	 /* parity, whole stripe: encode, no reads */
	LAYOUT_WRITE_RMW,	 /* read old data + old parity, apply delta */
	LAYOUT_WRITE_RCW,	 /* read the untouched data, encode afresh */
	LAYOUT_WRITE_REBUILD,	 /* degraded, neither RMW nor RCW possible:
				    read every live slot over the touched rows,
				    decode the missing ones, encode afresh */
};

#define LAYOUT_PLAN_MAX_IO (2 * LAYOUT_MAX_POSITIONS + 2 * LAYOUT_MAX_COLUMNS)

/* Everything one write to one stripe does.  Built by layout_plan_write,
 * carried out by pool/: issue every read (all at once), call
 * layout_plan_finish, issue every write (all at once). */
struct layout_write_plan {
	uint64_t stripe;
	enum layout_write_mode mode;
	uint32_t off; /* the written range inside the stripe's data ... */
	uint32_t len; /* ... in bytes (k * interleave coordinates) */
	uint32_t nread;
	struct layout_io read[LAYOUT_PLAN_MAX_IO];
	uint32_t nwrite;
	struct layout_io write[LAYOUT_PLAN_MAX_IO];
	uint64_t read_bytes;  /* sum of read[].len */
	uint64_t write_bytes; /* sum of write[].len */
};

/* Plan writing `len` bytes at offset `off` inside stripe `stripe`'s data
 * (off + len <= layout_stripe_bytes, both multiples of LAYOUT_BLOCK).
 * `failed` is a bit mask of positions that cannot be read or written;
 * writes to failed positions are left out, reads never touch them.  For
 * parity the plan is FULL when the range is the whole stripe, otherwise
 * whichever of RMW and RCW reads fewer bytes (RCW on a tie) among those
 * possible given `failed`, else REBUILD.  -EIO if failures exceed the redundancy, so the
 * write cannot keep the stripe recoverable: parity with more than m failed
 * positions; simple and mirror when every copy of a column the write
 * touches has failed (failures elsewhere do not stop the write). */
int layout_plan_write(const struct layout_geom *g, uint64_t stripe, uint32_t off, uint32_t len,
		      uint64_t failed, struct layout_write_plan *p);

/* Compute the buffers to write.  `src` holds the p->len new bytes.  rbuf[i]
 * holds what read[i] returned (read[i].len bytes); wbuf[i] (write[i].len
 * bytes) is filled for every write listed in p, and only those: a caller
 * may drop entries from p->write first (pool/store.c drops the data
 * writes it issues straight from the caller's buffer).  codec may be NULL except for parity.
 * -EIO if a position needed to rebuild a missing column is also missing. */
int layout_plan_finish(struct layout_codec *codec, const struct layout_geom *g,
		       const struct layout_write_plan *p, const uint8_t *src, uint8_t *const *rbuf,
		       uint8_t *const *wbuf);

/* Everything one read from one stripe does: the chunk reads and, when a
 * needed data column sits on a failed position, the decode. */
struct layout_read_plan {
	uint64_t stripe;
	uint32_t off; /* range inside the stripe's data */
	uint32_t len;
	int degraded; /* 1 if a decode is needed */
	uint32_t nread;
	struct layout_io read[LAYOUT_PLAN_MAX_IO];
	uint64_t read_bytes;
};

/* Plan reading [off, off+len) of stripe `stripe`'s data (any byte
 * alignment).  Mirror reads pick copy (pick + column) % copies among the
 * live ones, so callers spread load by varying `pick`.  -EIO if the data
 * cannot be had with `failed` positions. */
int layout_plan_read(const struct layout_geom *g, uint64_t stripe, uint32_t off, uint32_t len,
		     uint64_t failed, uint32_t pick, struct layout_read_plan *p);

/* Assemble the p->len bytes into dst from the read buffers, decoding if
 * p->degraded.  codec may be NULL except for degraded parity reads. */
int layout_plan_assemble(struct layout_codec *codec, const struct layout_geom *g,
			 const struct layout_read_plan *p, uint8_t *const *rbuf, uint8_t *dst);

/* ---- checksums --------------------------------------------------------- */

/* Standard CRC-32C (Castagnoli, iSCSI): layout_crc32c("123456789", 9) ==
 * 0xE3069283.  Uses ISA-L crc32_iscsi. */
uint32_t layout_crc32c(const void *buf, size_t len);
/* CRC-32C of each LAYOUT_BLOCK block of buf (len a multiple of it) into out. */
void layout_crc_blocks(const void *buf, size_t len, uint32_t *out);

#endif /* SPACEFS_LAYOUT_H */
