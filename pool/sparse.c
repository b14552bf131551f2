/*
 * sparse.c -- holes and reservations: SEEK_DATA/SEEK_HOLE, fallocate,
 * and giving back blocks that were zeroed.
 *
 * A spacefs file has no allocation map of its own: its chunk files are
 * sparse, and a block of the file is allocated exactly when the chunk
 * blocks holding it are.  So every question about holes is asked of the
 * chunk files' own filesystems (lseek SEEK_DATA/SEEK_HOLE on a chunk),
 * and mapped back through the layout.  The kernel of the backing disk
 * counts blocks reserved by fallocate but never written ("unwritten
 * extents") as holes, as it does for a local file, so a file here answers
 * the same as the same file on that filesystem would: to the 4 KiB block.
 *
 * Which chunks speak for a block of column c of stripe s:
 *   - the column's copies that are live in that stripe (one for simple
 *     and parity, `copies` for mirror).  The block is data if any of
 *     them has data there: copies agree unless a disk is stale, and then
 *     "data" is the safe answer -- a hole reported where there are bytes
 *     makes `cp --sparse` drop them, data reported over a hole only costs
 *     a read of zeros.
 *   - if no copy of the column is live (parity, degraded): every live
 *     position of the stripe, parity included, at the same chunk offset.
 *     If none of them has data there, the lost block was zeros (parity of
 *     zeros is zeros); if one does, the block may be data and is reported
 *     so.  Exact when the stripe's other blocks are holes, never wrong.
 *   - nothing (more failures than the layout survives): data; a read
 *     will say EIO.
 * Answers are clipped to the file size the caller gives, which must be
 * the size the daemon has in memory (it runs ahead of the metadata).
 *
 * A scan asks each chunk at most once per run of data or hole: every
 * answer of lseek on a chunk is remembered as a known range, so seeking
 * across a long file costs a few system calls per extent, not per stripe.
 * When the trusted positions do not change from stripe to stripe (no
 * rebuild in progress), a search for data also jumps over empty stripes
 * to the next chunk offset any position has data at.
 *
 * fallocate reserves what writing the range would allocate: the data
 * columns' chunk ranges on every copy, and for parity the same rows of the
 * stripe's parity columns, with their checksum sidecars -- so a later
 * write of the range cannot fail with ENOSPC.  Runs are merged per
 * position, so a large range costs one fallocate per position.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool/store_int.h"

#define BLK ((uint64_t)LAYOUT_BLOCK)
#define END UINT64_MAX

/* What is known of one position's chunk: [dlo, dhi) all data, [hlo, hhi)
 * all hole (chunk offsets). */
struct known {
	uint64_t dlo, dhi, hlo, hhi;
};

struct seeker {
	struct pool_chunks *c;
	const struct layout_geom *g;
	uint32_t k, npos;
	uint64_t il, sb;
	struct known kn[LAYOUT_MAX_POSITIONS];
};

/* First chunk offset >= x where position pos has data (data) or a hole
 * (!data); END for none.  A chunk the disk cannot tell about is data. */
static uint64_t chunk_next(struct seeker *sk, uint32_t pos, uint64_t x, int data)
{
	struct known *kn = &sk->kn[pos];
	int fd, crcfd, rc;

	if (x >= kn->dlo && x < kn->dhi)
		return data ? x : kn->dhi;
	if (x >= kn->hlo && x < kn->hhi)
		return data ? kn->hhi : x;
	rc = pool_chunks_fd(sk->c, pos, 0, &fd, &crcfd);
	if (rc == -ENOENT) {
		*kn = (struct known){.hlo = 0, .hhi = END};
		return data ? END : x;
	}
	if (rc < 0)
		return data ? x : END;
	off_t r = lseek(fd, (off_t)x, data ? SEEK_DATA : SEEK_HOLE);
	if (r < 0 && errno == ENXIO) { /* at or past the chunk's end: hole */
		kn->hlo = x;
		kn->hhi = END;
		return data ? END : x;
	}
	if (r < 0)
		return data ? x : END;
	if (data) { /* filesystems answer in their blocks; keep to ours */
		uint64_t d = (uint64_t)r / BLK * BLK;
		kn->hlo = x;
		kn->hhi = d > x ? d : x;
		return kn->hhi;
	}
	uint64_t h = (uint64_t)r > x ? ((uint64_t)r + BLK - 1) / BLK * BLK : x;
	kn->dlo = x;
	kn->dhi = h;
	return h;
}

/* Positions speaking for column col of stripe st (see the top); 0: none,
 * the column counts as data. */
static uint64_t sources(struct seeker *sk, uint64_t st, uint32_t col)
{
	uint64_t dead = pool_chunks_dead(sk->c, st), m = 0;
	uint32_t copies = sk->g->kind == LAYOUT_MIRROR ? sk->g->copies : 1;

	for (uint32_t cp = 0; cp < copies; cp++)
		m |= 1ull << layout_slot_pos(sk->g, st, col, cp);
	if (m & ~dead)
		return m & ~dead;
	if (sk->g->kind != LAYOUT_PARITY || (uint32_t)__builtin_popcountll(dead) > sk->g->parity)
		return 0;
	return ((1ull << sk->npos) - 1) & ~dead; /* npos <= 48 */
}

/* First row >= r (offset inside the column's interleave) of column col
 * of stripe st that is data (data) or a hole; il if none. */
static uint64_t column_next(struct seeker *sk, uint64_t st, uint32_t col, uint64_t r, int data)
{
	uint64_t m = sources(sk, st, col), base = st * sk->il, x = base + r;

	if (!m)
		return data ? r : sk->il;
	if (data) { /* data in any source */
		uint64_t best = END;
		for (uint32_t p = 0; p < sk->npos; p++)
			if (m & (1ull << p)) {
				uint64_t y = chunk_next(sk, p, x, 1);
				best = y < best ? y : best;
			}
		return best < base + sk->il ? best - base : sk->il;
	}
	/* a hole in every source: move x until no source has data at x */
	for (int moved = 1; moved && x < base + sk->il;) {
		moved = 0;
		for (uint32_t p = 0; p < sk->npos && x < base + sk->il; p++) {
			if (!(m & (1ull << p)))
				continue;
			uint64_t y = chunk_next(sk, p, x, 0);
			if (y > x) {
				x = y;
				moved = 1;
			}
		}
	}
	return x < base + sk->il ? x - base : sk->il;
}

/* Stripe of the first chunk data at or after stripe st on any position
 * trusted there; END if none.  Only a lower bound when the trusted set
 * grows with the stripe, so the caller uses it only when it does not. */
static uint64_t next_data_stripe(struct seeker *sk, uint64_t st)
{
	uint64_t dead = pool_chunks_dead(sk->c, st), best = END;

	for (uint32_t p = 0; p < sk->npos; p++) {
		if (dead & (1ull << p))
			continue;
		uint64_t y = chunk_next(sk, p, st * sk->il, 1);
		best = y < best ? y : best;
	}
	return best == END ? END : best / sk->il;
}

static int seek_data(struct seeker *sk, uint64_t size, uint64_t off, uint64_t *out)
{
	int steady = pool_chunks_dead(sk->c, 0) == pool_chunks_dead(sk->c, END);

	while (off < size) {
		uint64_t st = off / sk->sb, in = off % sk->sb;
		for (uint32_t col = (uint32_t)(in / sk->il); col < sk->k; col++) {
			uint64_t r = col == in / sk->il ? in % sk->il : 0;
			uint64_t y = column_next(sk, st, col, r, 1);
			if (y < sk->il) {
				uint64_t at = st * sk->sb + col * sk->il + y;
				*out = at > off ? at : off;
				return *out < size ? 0 : -ENXIO;
			}
		}
		uint64_t next = st + 1;
		if (steady) {
			next = next_data_stripe(sk, st + 1);
			if (next == END)
				return -ENXIO;
		}
		if (next > (size - 1) / sk->sb)
			return -ENXIO;
		off = next * sk->sb;
	}
	return -ENXIO;
}

static int seek_hole(struct seeker *sk, uint64_t size, uint64_t off, uint64_t *out)
{
	while (off < size) {
		uint64_t st = off / sk->sb, in = off % sk->sb;
		for (uint32_t col = (uint32_t)(in / sk->il); col < sk->k; col++) {
			uint64_t r = col == in / sk->il ? in % sk->il : 0;
			uint64_t y = column_next(sk, st, col, r, 0);
			if (y < sk->il) {
				uint64_t at = st * sk->sb + col * sk->il + y;
				at = at > off ? at : off;
				*out = at < size ? at : size;
				return 0;
			}
		}
		off = (st + 1) * sk->sb;
	}
	*out = size; /* the end of the file counts as a hole */
	return 0;
}

int pool_store_seek(struct pool_store *s, const struct pool_file_map *f, uint64_t size, int64_t off,
		    int whence, uint64_t *out)
{
	struct seeker sk = {0};
	int rc;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (off < 0 || (uint64_t)off >= size)
		return -ENXIO;
	/* write-back: data acknowledged but not in place is no hole; the
	 * chunk files' holes tell the truth once it is (seeks are rare) */
	pool_store_wb_drain(s);
	rc = pool_chunks_begin(s, f, &sk.c);
	if (rc < 0)
		return rc;
	sk.g = pool_chunks_geom(sk.c);
	sk.k = layout_data_columns(sk.g);
	sk.npos = layout_positions(sk.g);
	sk.il = sk.g->interleave;
	sk.sb = layout_stripe_bytes(sk.g);
	for (uint32_t p = 0; p < sk.npos; p++)
		sk.kn[p] = (struct known){0};
	if (whence == SEEK_DATA)
		rc = seek_data(&sk, size, (uint64_t)off, out);
	else
		rc = seek_hole(&sk, size, (uint64_t)off, out);
	pool_chunks_end(sk.c);
	return rc;
}

/* ---- reserving --------------------------------------------------------------- */

/* A run of chunk bytes [lo, hi) of one position waiting to be reserved. */
struct run {
	uint64_t lo, hi;
};

static int run_flush(struct pool_chunks *c, uint32_t pos, struct run *r)
{
	int rc = 0;

	if (r->hi > r->lo)
		rc = pool_chunks_fallocate(c, pos, 0, r->lo, r->hi - r->lo);
	r->lo = r->hi = 0;
	return rc;
}

static int run_add(struct pool_chunks *c, uint32_t pos, struct run *r, uint64_t lo, uint64_t len)
{
	int rc = 0;

	if (r->hi > r->lo && lo <= r->hi && lo + len >= r->lo) {
		r->lo = lo < r->lo ? lo : r->lo;
		r->hi = lo + len > r->hi ? lo + len : r->hi;
		return 0;
	}
	rc = run_flush(c, pos, r);
	r->lo = lo;
	r->hi = lo + len;
	return rc;
}

/* Add the chunk ranges one stripe's part [lo, hi) of the file needs. */
static int reserve_stripe(struct pool_chunks *c, uint64_t st, uint64_t lo, uint64_t hi,
			  struct run *runs)
{
	const struct layout_geom *g = pool_chunks_geom(c);
	struct layout_extent ext[LAYOUT_MAX_COLUMNS];
	uint32_t k = layout_data_columns(g), m = g->kind == LAYOUT_PARITY ? g->parity : 0;
	uint32_t copies = g->kind == LAYOUT_MIRROR ? g->copies : 1;
	uint64_t dead = pool_chunks_dead(c, st);
	size_t n = layout_map(g, lo, hi - lo, ext, LAYOUT_MAX_COLUMNS);
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		for (uint32_t slot = 0; slot < 1 + m && rc == 0; slot++) {
			uint32_t sl = slot == 0 ? ext[i].col : k + slot - 1;
			for (uint32_t cp = 0; cp < (slot ? 1 : copies) && rc == 0; cp++) {
				uint32_t pos = layout_slot_pos(g, st, sl, cp);
				if (!(dead & (1ull << pos)))
					rc = run_add(c, pos, &runs[pos], ext[i].chunk_off,
						     ext[i].len);
			}
		}
	}
	return rc;
}

int pool_store_reserve(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
		       uint64_t len)
{
	struct run runs[LAYOUT_MAX_POSITIONS] = {{0}};
	struct pool_chunks *c;
	uint64_t a = off / BLK * BLK, b = (off + len + BLK - 1) / BLK * BLK;
	int rc;

	if (len == 0)
		return 0;
	if (off + len < off)
		return -EINVAL;
	rc = pool_chunks_begin(s, f, &c);
	if (rc < 0)
		return rc;
	const struct layout_geom *g = pool_chunks_geom(c);
	uint64_t sb = layout_stripe_bytes(g);
	uint32_t npos = layout_positions(g);
	for (uint64_t st = a / sb; rc == 0 && st * sb < b; st++) {
		uint64_t lo = st * sb > a ? st * sb : a, hi = (st + 1) * sb < b ? (st + 1) * sb : b;
		rc = reserve_stripe(c, st, lo, hi, runs);
	}
	for (uint32_t p = 0; p < npos; p++) {
		int e = run_flush(c, p, &runs[p]);
		rc = rc < 0 ? rc : e;
	}
	pool_chunks_end(c);
	return rc;
}

/* ---- zeroing ------------------------------------------------------------------ */

/* Give back the whole blocks of [off, off+len)'s data columns, which were
 * just written with zeros.  Best effort: the bytes are right already, a
 * failure only leaves zeros allocated. */
static void release_zeros(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
			  uint64_t len)
{
	const int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	uint64_t a = (off + BLK - 1) / BLK * BLK, b = (off + len) / BLK * BLK;
	struct layout_extent ext[LAYOUT_MAX_COLUMNS];
	struct pool_chunks *c;
	int ok = 1;

	if (a >= b || pool_chunks_begin(s, f, &c) < 0)
		return;
	const struct layout_geom *g = pool_chunks_geom(c);
	uint64_t sb = layout_stripe_bytes(g);
	uint32_t copies = g->kind == LAYOUT_MIRROR ? g->copies : 1;

	pool_chunks_lock(c, a / sb, (b - 1) / sb);
	for (uint64_t st = a / sb; ok && st * sb < b; st++) {
		uint64_t lo = st * sb > a ? st * sb : a, hi = (st + 1) * sb < b ? (st + 1) * sb : b;
		uint64_t dead = pool_chunks_dead(c, st);
		size_t n = layout_map(g, lo, hi - lo, ext, LAYOUT_MAX_COLUMNS);
		for (size_t i = 0; i < n && ok; i++) {
			for (uint32_t cp = 0; cp < copies && ok; cp++) {
				uint32_t pos = layout_slot_pos(g, st, ext[i].col, cp);
				int fd, crcfd;
				if (dead & (1ull << pos) ||
				    pool_chunks_fd(c, pos, 0, &fd, &crcfd) < 0)
					continue;
				ok = fallocate(fd, mode, (off_t)ext[i].chunk_off,
					       (off_t)ext[i].len) == 0;
			}
		}
	}
	pool_chunks_end(c);
}

/* Write zeros over the data run [off, end), a stripe at most per call. */
static int zero_run(struct pool_store *s, const struct pool_file_map *f, uint64_t off, uint64_t end,
		    const uint8_t *zeros, size_t zlen)
{
	for (uint64_t x = off; x < end;) {
		size_t n = end - x < zlen ? (size_t)(end - x) : zlen;
		ssize_t rc = pool_store_write(s, f, x, n, zeros);
		if (rc < 0)
			return (int)rc;
		x += n;
	}
	/* release_zeros punches blocks it takes as written with zeros: in
	 * write-back mode they are only journaled until the flusher has run
	 * (punching first left the older bytes' checksums beside the hole) */
	pool_store_wb_drain(s);
	release_zeros(s, f, off, end - off);
	return 0;
}

int pool_store_zero(struct pool_store *s, const struct pool_file_map *f, uint64_t off, uint64_t len,
		    const uint8_t *zeros, size_t zlen)
{
	uint64_t end = off + len, d, h;

	for (uint64_t x = off; x < end; x = h) {
		int rc = pool_store_seek(s, f, end, (int64_t)x, SEEK_DATA, &d);
		if (rc == -ENXIO)
			break; /* only holes left */
		if (rc < 0)
			d = x; /* cannot tell: zero it all */
		if (rc < 0 || pool_store_seek(s, f, end, (int64_t)d, SEEK_HOLE, &h) < 0)
			h = end;
		rc = zero_run(s, f, d, h, zeros, zlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}
