/*
 * test_plan.c -- write and read plans, checked against brute force and a model.
 *
 * Two independent checks of the planner:
 *
 *   Cost: for every parity geometry up to 8 columns, every 4 KiB-aligned
 *   range of a stripe (all of them at 16 KiB interleave, a random sample
 *   at 64 KiB) and every failure mask within the redundancy, the bytes
 *   RMW and RCW would read are counted here block by block from first
 *   principles, and the plan must pick the cheaper possible one (RCW on a
 *   tie, REBUILD if neither is possible) and read exactly that much.
 *
 *   Model: every geometry (simple, mirror 2 and 3, parity 1 and 2, every
 *   column count up to 8, 16 KiB and 64 KiB) gets simulated chunk files
 *   and a flat reference buffer.  Sessions of random writes and reads run
 *   with a random failure mask within the redundancy -- the failed
 *   positions' chunks are filled with garbage, as a lost disk would be --
 *   so degraded writes and degraded reads are exercised.  Every read must
 *   return the reference bytes.  At the end of a session the failed
 *   positions are rebuilt from the others and every stripe must hold the
 *   reference data with parity equal to a fresh encode (mirror copies
 *   equal), which proves the degraded writes kept it recoverable.
 *
 * Fixed seeds (LAYOUT_SEED overrides); failures print seed and geometry.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layout/layout.h"

#define DEFAULT_SEED 0x5eed0003u
#define BLK	     LAYOUT_BLOCK
#define MAX_GEOMS    128
#define NSTRIPES     4u /* stripes of a model file */
#define SESSIONS     4
#define OPS	     24 /* writes and reads per session, each */

/* ---- helpers ------------------------------------------------------------ */

struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * UINT64_C(2685821657736338717);
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

static uint32_t test_seed(void)
{
	const char *e = getenv("LAYOUT_SEED");

	return e ? (uint32_t)strtoul(e, NULL, 0) : DEFAULT_SEED;
}

static void rng_init(struct rng *r, uint32_t seed)
{
	r->s = (uint64_t)seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
}

static void describe(const struct layout_geom *g, char *buf, size_t n)
{
	snprintf(buf, n, "%s copies %u parity %u columns %u interleave %u",
		 layout_kind_name(g->kind), g->copies, g->parity, g->columns, g->interleave);
}

/* `ctx` is printed on failure: seed, geometry and what was being done. */
struct ctx {
	uint32_t seed;
	const struct layout_geom *g;
	uint64_t stripe, failed;
	uint32_t off, len;
};

#define CHECK(cond, c)                                                                             \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			char d_[128];                                                              \
			describe((c)->g, d_, sizeof(d_));                                          \
			fail_msg("%s failed (seed 0x%x, %s, stripe %llu off %u len %u failed "     \
				 "0x%llx)",                                                        \
				 #cond, (unsigned)(c)->seed, d_, (unsigned long long)(c)->stripe,  \
				 (c)->off, (c)->len, (unsigned long long)(c)->failed);             \
		}                                                                                  \
	} while (0)

static size_t all_geoms(struct layout_geom *out, int parity_only)
{
	static const uint32_t il[] = {16 * 1024, 64 * 1024};
	size_t n = 0;

	for (size_t i = 0; i < 2; i++) {
		for (uint32_t c = 1; c <= 8; c++) {
			if (!parity_only) {
				out[n++] = (struct layout_geom){LAYOUT_SIMPLE, 1, 0, c, il[i]};
				out[n++] = (struct layout_geom){LAYOUT_MIRROR, 2, 0, c, il[i]};
				out[n++] = (struct layout_geom){LAYOUT_MIRROR, 3, 0, c, il[i]};
			}
			for (uint32_t m = 1; m <= 2; m++) {
				if (c >= m + 2)
					out[n++] =
					    (struct layout_geom){LAYOUT_PARITY, 1, m, c, il[i]};
			}
		}
	}
	return n;
}

/* Position of a slot, from layout.h's formula (typed again on purpose). */
static uint32_t slot_pos(const struct layout_geom *g, uint64_t s, uint32_t slot, uint32_t copy)
{
	uint32_t k = layout_data_columns(g), n = g->columns, m = g->parity, pd;

	if (g->kind != LAYOUT_PARITY)
		return copy * k + slot;
	pd = (n - 1) - (uint32_t)(s % n);
	return slot >= k ? (pd + slot - k) % n : (pd + m + slot) % n;
}

static uint64_t random_failed(struct rng *r, uint32_t npos, uint32_t max)
{
	uint32_t want = (uint32_t)rng_below(r, max + 1);
	uint64_t f = 0;

	while ((uint32_t)__builtin_popcountll(f) < want)
		f |= UINT64_C(1) << rng_below(r, npos);
	return f;
}

/* Every I/O of a list is inside the interleave, on a live position that
 * holds the slot it claims; the lengths add up. */
static void check_ios(const struct ctx *c, const struct layout_io *io, uint32_t n, uint64_t bytes)
{
	uint64_t sum = 0;

	CHECK(n <= LAYOUT_PLAN_MAX_IO, c);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t slot, copy;

		CHECK(io[i].len > 0 && io[i].col_off + io[i].len <= c->g->interleave, c);
		CHECK(io[i].pos < layout_positions(c->g), c);
		CHECK(!((c->failed >> io[i].pos) & 1), c);
		layout_pos_slot(c->g, c->stripe, io[i].pos, &slot, &copy);
		CHECK(slot == io[i].slot, c);
		sum += io[i].len;
	}
	CHECK(sum == bytes, c);
}

/* ---- brute-force costs -------------------------------------------------- */

#define NONE UINT64_MAX

struct costs {
	uint64_t rmw, rcw, rebuild; /* NONE if impossible */
	uint64_t write;
};

/* Count, block by block, what each write strategy must read. */
static void brute_costs(const struct ctx *c, struct costs *out)
{
	const struct layout_geom *g = c->g;
	uint32_t k = layout_data_columns(g), m = g->parity, rows = g->interleave / BLK;
	uint32_t b0 = c->off / BLK, b1 = (c->off + c->len) / BLK;
	uint64_t nlp = 0, nlive = 0, written = 0, live_written = 0, touched = 0, rcw = 0;
	int rmw_ok = 1, rcw_ok = 1;
	uint8_t live[LAYOUT_MAX_COLUMNS];

	for (uint32_t s = 0; s < k + m; s++) {
		live[s] = !((c->failed >> slot_pos(g, c->stripe, s, 0)) & 1);
		nlive += live[s];
		nlp += s >= k && live[s];
	}
	for (uint32_t r = 0; r < rows; r++) {
		int t = 0;

		for (uint32_t d = 0; d < k; d++) {
			uint32_t b = d * rows + r;

			t |= b >= b0 && b < b1;
		}
		touched += t;
		for (uint32_t d = 0; d < k && t; d++) {
			uint32_t b = d * rows + r;
			int w = b >= b0 && b < b1;

			written += w;
			live_written += w && live[d];
			rmw_ok &= !w || live[d];
			rcw_ok &= w || live[d];
			rcw += !w;
		}
	}
	out->rmw = nlp == 0 ? 0 : rmw_ok ? (written + nlp * touched) * BLK : NONE;
	out->rcw = rcw_ok ? rcw * BLK : NONE;
	out->rebuild = nlive * touched * BLK;
	out->write = (live_written + nlp * touched) * BLK;
}

static void check_write_plan(const struct ctx *c, const struct layout_write_plan *p)
{
	const struct layout_geom *g = c->g;
	struct costs k;
	enum layout_write_mode want;
	uint64_t want_read;

	check_ios(c, p->read, p->nread, p->read_bytes);
	check_ios(c, p->write, p->nwrite, p->write_bytes);
	CHECK(p->stripe == c->stripe && p->off == c->off && p->len == c->len, c);
	if (g->kind != LAYOUT_PARITY) {
		CHECK(p->mode == LAYOUT_WRITE_DIRECT && p->nread == 0, c);
		return;
	}
	brute_costs(c, &k);
	if (c->off == 0 && c->len == layout_stripe_bytes(g)) {
		want = LAYOUT_WRITE_FULL;
		want_read = 0;
	} else if (k.rcw != NONE && k.rcw <= k.rmw) {
		want = LAYOUT_WRITE_RCW;
		want_read = k.rcw;
	} else if (k.rmw != NONE) {
		want = LAYOUT_WRITE_RMW;
		want_read = k.rmw;
	} else {
		want = LAYOUT_WRITE_REBUILD;
		want_read = k.rebuild;
	}
	CHECK(p->mode == want, c);
	CHECK(p->read_bytes == want_read, c);
	/* Never more than the cheaper possible of RMW and RCW. */
	CHECK(want == LAYOUT_WRITE_REBUILD || p->read_bytes <= (k.rmw < k.rcw ? k.rmw : k.rcw), c);
	CHECK(p->write_bytes == k.write, c);
}

/* ---- targeted plans ----------------------------------------------------- */

static void test_plan_invalid(void **state)
{
	struct layout_geom g = {LAYOUT_PARITY, 1, 1, 5, 65536};
	struct layout_geom bad = {LAYOUT_PARITY, 1, 1, 2, 65536};
	struct layout_write_plan w;
	struct layout_read_plan r;
	(void)state;

	assert_int_equal(layout_plan_write(&g, 0, 512, 4096, 0, &w), -EINVAL);
	assert_int_equal(layout_plan_write(&g, 0, 0, 100, 0, &w), -EINVAL);
	assert_int_equal(layout_plan_write(&g, 0, 0, 0, 0, &w), -EINVAL);
	assert_int_equal(layout_plan_write(&g, 0, 4096, 4 * 65536, 0, &w), -EINVAL);
	assert_int_equal(layout_plan_write(&bad, 0, 0, 4096, 0, &w), -EINVAL);
	assert_int_equal(layout_plan_read(&g, 0, 1, 4 * 65536, 0, 0, &r), -EINVAL);
	assert_int_equal(layout_plan_read(&g, 0, 7, 0, 0, 0, &r), 0);
	assert_int_equal(r.nread, 0);
	assert_int_equal(layout_plan_assemble(NULL, &g, &r, NULL, NULL), 0);
}

static void test_plan_direct(void **state)
{
	struct layout_geom s = {LAYOUT_SIMPLE, 1, 0, 4, 65536};
	struct layout_geom m = {LAYOUT_MIRROR, 2, 0, 3, 65536};
	struct layout_write_plan p;
	(void)state;

	/* Simple: a failed position matters only if touched. */
	assert_int_equal(layout_plan_write(&s, 9, 65536, 8192, 1u << 0, &p), 0);
	assert_int_equal(p.mode, LAYOUT_WRITE_DIRECT);
	assert_int_equal(p.nwrite, 1);
	assert_true(p.write[0].pos == 1 && p.write[0].col_off == 0 && p.write[0].len == 8192);
	assert_int_equal(layout_plan_write(&s, 9, 65536, 8192, 1u << 1, &p), -EIO);

	/* Mirror 2 x 3: column 1 is on positions 1 and 4. */
	assert_int_equal(layout_plan_write(&m, 0, 65536, 4096, 0, &p), 0);
	assert_int_equal(p.nwrite, 2);
	assert_int_equal(p.write_bytes, 8192);
	assert_int_equal(layout_plan_write(&m, 0, 65536, 4096, 1u << 1, &p), 0);
	assert_int_equal(p.nwrite, 1);
	assert_int_equal(p.write[0].pos, 4);
	assert_int_equal(layout_plan_write(&m, 0, 65536, 4096, (1u << 1) | (1u << 4), &p), -EIO);
	/* Two failures in different columns still leave a copy of each. */
	assert_int_equal(layout_plan_write(&m, 0, 0, 3 * 65536, (1u << 0) | (1u << 4), &p), 0);
	assert_int_equal(p.nwrite, 4);
}

static void test_plan_parity_limits(void **state)
{
	struct layout_geom g1 = {LAYOUT_PARITY, 1, 1, 5, 65536};
	struct layout_geom g2 = {LAYOUT_PARITY, 1, 2, 6, 65536};
	struct layout_write_plan p;
	struct layout_read_plan r;
	(void)state;

	assert_int_equal(layout_plan_write(&g1, 0, 0, 4096, 0x3, &p), -EIO);
	assert_int_equal(layout_plan_write(&g2, 0, 0, 4096, 0x7, &p), -EIO);
	assert_int_equal(layout_plan_write(&g2, 0, 0, 4096, 0x6, &p), 0);
	/* Bits past the file's positions are not positions. */
	assert_int_equal(layout_plan_write(&g1, 0, 0, 4096, UINT64_C(1) << 40, &p), 0);
	/* Reads: past the redundancy, live columns still read... */
	assert_int_equal(layout_plan_read(&g1, 0, 0, 4096, 0x6, 0, &r), 0);
	assert_int_equal(r.degraded, 0);
	/* ...a missing one cannot be rebuilt. */
	assert_int_equal(layout_plan_read(&g1, 0, 0, 4096, 0x3, 0, &r), -EIO);
}

/* A write that crosses from the bottom of column 0 into the top of column
 * 1 touches two disjoint row ranges, and the plan reads only those. */
static void test_plan_two_bands(void **state)
{
	struct layout_geom g = {LAYOUT_PARITY, 1, 1, 5, 65536};
	struct layout_write_plan p;
	(void)state;

	assert_int_equal(layout_plan_write(&g, 0, 65536 - 4096, 8192, 0, &p), 0);
	assert_int_equal(p.mode, LAYOUT_WRITE_RMW);
	assert_int_equal(p.read_bytes, 4 * 4096); /* 2 old data + 2 parity pieces */
	assert_int_equal(p.nread, 4);
	assert_int_equal(p.write_bytes, 4 * 4096);
}

/* RMW for one block, RCW for most of a stripe, REBUILD when the failed
 * column is written but not wholly. */
static void test_plan_modes(void **state)
{
	struct layout_geom g = {LAYOUT_PARITY, 1, 1, 5, 65536}; /* 4 + 1, stripe 0 */
	struct layout_write_plan p;
	(void)state;

	assert_int_equal(layout_plan_write(&g, 0, 0, 4096, 0, &p), 0);
	assert_int_equal(p.mode, LAYOUT_WRITE_RMW);
	assert_int_equal(layout_plan_write(&g, 0, 0, 3 * 65536, 0, &p), 0);
	assert_int_equal(p.mode, LAYOUT_WRITE_RCW);
	assert_int_equal(p.read_bytes, 65536);
	assert_int_equal(layout_plan_write(&g, 0, 0, 4 * 65536, 0x1, &p), 0);
	assert_int_equal(p.mode, LAYOUT_WRITE_FULL);
	assert_int_equal(p.nread, 0);
	assert_int_equal(p.nwrite, 4);
	/* Column 0 (position 0) failed; write covers its second half and
	 * columns 1-2: RMW lacks old column 0, RCW lacks its first half. */
	assert_int_equal(layout_plan_write(&g, 0, 32768, 3 * 65536 - 32768, 0x1, &p), 0);
	assert_int_equal(p.mode, LAYOUT_WRITE_REBUILD);
	assert_int_equal(p.read_bytes, 4 * 65536); /* 4 live slots, all rows */
}

static void test_plan_read_mirror_pick(void **state)
{
	struct layout_geom g = {LAYOUT_MIRROR, 3, 0, 4, 16384};
	struct layout_read_plan r;
	(void)state;

	for (uint32_t pick = 0; pick < 6; pick++) {
		assert_int_equal(layout_plan_read(&g, 5, 0, 4 * 16384, 0, pick, &r), 0);
		assert_int_equal(r.nread, 4);
		for (uint32_t c = 0; c < 4; c++)
			assert_int_equal(r.read[c].pos, ((pick + c) % 3) * 4 + c);
	}
	/* Column 1's preferred copy (pick 0: copy 1, position 5) failed:
	 * the next live copy, copy 2. */
	assert_int_equal(layout_plan_read(&g, 5, 16384, 100, 1u << 5, 0, &r), 0);
	assert_int_equal(r.read[0].pos, 9);
	assert_int_equal(layout_plan_read(&g, 5, 16384, 100, 0x222, 0, &r), -EIO);
}

static void test_plan_needs_codec(void **state)
{
	struct layout_geom g = {LAYOUT_PARITY, 1, 1, 5, 16384};
	struct layout_write_plan p;
	struct layout_read_plan r;
	uint8_t src[4096], buf[LAYOUT_PLAN_MAX_IO][4096], *bp[LAYOUT_PLAN_MAX_IO];
	(void)state;

	memset(src, 1, sizeof(src));
	for (uint32_t i = 0; i < LAYOUT_PLAN_MAX_IO; i++)
		bp[i] = buf[i];
	assert_int_equal(layout_plan_write(&g, 0, 0, 4096, 0, &p), 0);
	assert_int_equal(layout_plan_finish(NULL, &g, &p, src, bp, bp), -EINVAL);
	assert_int_equal(layout_plan_read(&g, 0, 0, 4096, 0x1, 0, &r), 0);
	assert_int_equal(r.degraded, 1);
	assert_int_equal(r.nread, 4);
	assert_int_equal(layout_plan_assemble(NULL, &g, &r, bp, src), -EINVAL);
}

/* ---- brute-force cost check over many ranges ---------------------------- */

static void cost_case(struct ctx *c)
{
	struct layout_write_plan p;
	int rc = layout_plan_write(c->g, c->stripe, c->off, c->len, c->failed, &p);

	CHECK(rc == 0, c);
	check_write_plan(c, &p);
}

static void cost_geometry(const struct layout_geom *g, uint32_t seed)
{
	uint32_t n = g->columns, m = g->parity, blocks = (uint32_t)(layout_stripe_bytes(g) / BLK);
	int exhaustive = g->interleave == 16384;
	struct ctx c = {.seed = seed, .g = g};
	struct rng r;

	rng_init(&r, seed);
	/* Every failure mask of at most m positions. */
	for (uint32_t a = 0; a <= n; a++) {
		for (uint32_t b = a; b <= n; b++) {
			uint32_t nf = (a < n) + (b < n && b != a);

			if ((a == n && b != n) || nf > m)
				continue;
			c.failed = (a < n ? 1u << a : 0) | (b < n ? 1u << b : 0);
			c.stripe = rng_below(&r, 2 * n);
			if (exhaustive) {
				for (uint32_t o = 0; o < blocks; o++) {
					for (uint32_t l = 1; o + l <= blocks; l++) {
						c.off = o * BLK, c.len = l * BLK;
						cost_case(&c);
					}
				}
				continue;
			}
			for (int i = 0; i < 150; i++) {
				uint32_t o = (uint32_t)rng_below(&r, blocks);
				uint32_t l = 1 + (uint32_t)rng_below(
						     &r, i % 2 ? blocks - o
							       : (blocks - o < 8 ? blocks - o : 8));

				c.off = o * BLK, c.len = l * BLK;
				cost_case(&c);
			}
		}
	}
}

static void test_plan_costs(void **state)
{
	struct layout_geom g[MAX_GEOMS];
	size_t n = all_geoms(g, 1);
	(void)state;

	for (size_t i = 0; i < n; i++)
		cost_geometry(&g[i], test_seed() + (uint32_t)i);
}

/* ---- model -------------------------------------------------------------- */

struct model {
	struct ctx c;
	const struct layout_geom *g;
	struct layout_codec *codec;
	struct rng r;
	uint32_t k, m, npos, il;
	uint64_t sb, file_bytes;
	uint8_t *chunk[LAYOUT_MAX_POSITIONS]; /* NSTRIPES * il bytes each */
	uint8_t *ref;			      /* the file as it should read */
	uint64_t failed;
	uint64_t modes[LAYOUT_WRITE_REBUILD + 1], degraded_reads;
};

static uint8_t *chunk_at(struct model *md, uint32_t pos, uint64_t stripe, uint32_t col_off)
{
	return md->chunk[pos] + stripe * md->il + col_off;
}

/* Buffers of exactly the I/O lengths, so ASan and valgrind see overruns. */
static void alloc_bufs(const struct layout_io *io, uint32_t n, uint8_t **buf)
{
	for (uint32_t i = 0; i < n; i++)
		buf[i] = malloc(io[i].len);
}

static void free_bufs(uint32_t n, uint8_t **buf)
{
	for (uint32_t i = 0; i < n; i++)
		free(buf[i]);
}

static void model_write_stripe(struct model *md, uint64_t stripe, uint32_t off, uint32_t len,
			       const uint8_t *src)
{
	struct layout_write_plan *p = malloc(sizeof(*p));
	uint8_t *rbuf[LAYOUT_PLAN_MAX_IO], *wbuf[LAYOUT_PLAN_MAX_IO];
	struct ctx *c = &md->c;

	c->stripe = stripe, c->off = off, c->len = len, c->failed = md->failed;
	CHECK(layout_plan_write(md->g, stripe, off, len, md->failed, p) == 0, c);
	check_write_plan(c, p);
	md->modes[p->mode]++;
	alloc_bufs(p->read, p->nread, rbuf);
	alloc_bufs(p->write, p->nwrite, wbuf);
	for (uint32_t i = 0; i < p->nread; i++)
		memcpy(rbuf[i], chunk_at(md, p->read[i].pos, stripe, p->read[i].col_off),
		       p->read[i].len);
	CHECK(layout_plan_finish(md->codec, md->g, p, src, rbuf, wbuf) == 0, c);
	for (uint32_t i = 0; i < p->nwrite; i++)
		memcpy(chunk_at(md, p->write[i].pos, stripe, p->write[i].col_off), wbuf[i],
		       p->write[i].len);
	free_bufs(p->nread, rbuf);
	free_bufs(p->nwrite, wbuf);
	free(p);
}

static void model_read_stripe(struct model *md, uint64_t stripe, uint32_t off, uint32_t len,
			      uint8_t *dst)
{
	struct layout_read_plan *p = malloc(sizeof(*p));
	uint8_t *rbuf[LAYOUT_PLAN_MAX_IO];
	struct ctx *c = &md->c;

	c->stripe = stripe, c->off = off, c->len = len, c->failed = md->failed;
	CHECK(layout_plan_read(md->g, stripe, off, len, md->failed, (uint32_t)rng_next(&md->r),
			       p) == 0,
	      c);
	check_ios(c, p->read, p->nread, p->read_bytes);
	CHECK(p->degraded || p->read_bytes == len, c);
	md->degraded_reads += (uint64_t)p->degraded;
	alloc_bufs(p->read, p->nread, rbuf);
	for (uint32_t i = 0; i < p->nread; i++)
		memcpy(rbuf[i], chunk_at(md, p->read[i].pos, stripe, p->read[i].col_off),
		       p->read[i].len);
	CHECK(layout_plan_assemble(md->codec, md->g, p, rbuf, dst) == 0, c);
	free_bufs(p->nread, rbuf);
	free(p);
}

/* What pool/ does: one plan per stripe of the range. */
static void model_write(struct model *md, uint64_t off, uint64_t len)
{
	uint8_t *src = malloc(len);

	for (uint64_t i = 0; i < len; i++)
		src[i] = (uint8_t)rng_next(&md->r);
	for (uint64_t done = 0; done < len;) {
		uint64_t o = off + done, so = o % md->sb;
		uint64_t n = md->sb - so < len - done ? md->sb - so : len - done;

		model_write_stripe(md, o / md->sb, (uint32_t)so, (uint32_t)n, src + done);
		done += n;
	}
	memcpy(md->ref + off, src, len);
	free(src);
}

static void model_read(struct model *md, uint64_t off, uint64_t len)
{
	uint8_t *dst = malloc(len);

	for (uint64_t done = 0; done < len;) {
		uint64_t o = off + done, so = o % md->sb;
		uint64_t n = md->sb - so < len - done ? md->sb - so : len - done;

		model_read_stripe(md, o / md->sb, (uint32_t)so, (uint32_t)n, dst + done);
		done += n;
	}
	md->c.off = (uint32_t)off, md->c.len = (uint32_t)len;
	CHECK(memcmp(dst, md->ref + off, len) == 0, &md->c);
	free(dst);
}

/* Put back what the failed positions should hold, from the others. */
static void model_repair(struct model *md)
{
	for (uint64_t s = 0; s < NSTRIPES; s++) {
		uint8_t *blocks[LAYOUT_MAX_COLUMNS];
		uint32_t erased[LAYOUT_MAX_PARITY], ne = 0;

		for (uint32_t pos = 0; pos < md->npos; pos++) {
			uint32_t slot, copy;

			if (!((md->failed >> pos) & 1))
				continue;
			layout_pos_slot(md->g, s, pos, &slot, &copy);
			if (md->g->kind == LAYOUT_PARITY) {
				erased[ne++] = slot;
				continue;
			}
			for (uint32_t c2 = 0; c2 < md->g->copies; c2++) {
				uint32_t other = slot_pos(md->g, s, slot, c2);

				if (!((md->failed >> other) & 1)) {
					memcpy(chunk_at(md, pos, s, 0), chunk_at(md, other, s, 0),
					       md->il);
					break;
				}
			}
		}
		if (ne == 0)
			continue;
		for (uint32_t slot = 0; slot < md->k + md->m; slot++)
			blocks[slot] = chunk_at(md, slot_pos(md->g, s, slot, 0), s, 0);
		CHECK(layout_codec_decode(md->codec, md->il, blocks, erased, ne) == 0, &md->c);
	}
	md->failed = 0;
}

/* Every stripe holds the reference data on every copy, and parity equals
 * a fresh encode of the data. */
static void model_verify(struct model *md)
{
	uint8_t *par[LAYOUT_MAX_PARITY];

	for (uint32_t j = 0; j < md->m; j++)
		par[j] = malloc(md->il);
	for (uint64_t s = 0; s < NSTRIPES; s++) {
		uint8_t *data[LAYOUT_MAX_COLUMNS];

		md->c.stripe = s;
		for (uint32_t d = 0; d < md->k; d++) {
			for (uint32_t cp = 0; cp < md->g->copies; cp++) {
				uint8_t *at = chunk_at(md, slot_pos(md->g, s, d, cp), s, 0);

				CHECK(memcmp(at, md->ref + s * md->sb + d * md->il, md->il) == 0,
				      &md->c);
			}
			data[d] = chunk_at(md, slot_pos(md->g, s, d, 0), s, 0);
		}
		if (md->m == 0)
			continue;
		layout_codec_encode(md->codec, md->il, data, par);
		for (uint32_t j = 0; j < md->m; j++)
			CHECK(memcmp(par[j], chunk_at(md, slot_pos(md->g, s, md->k + j, 0), s, 0),
				     md->il) == 0,
			      &md->c);
	}
	for (uint32_t j = 0; j < md->m; j++)
		free(par[j]);
}

static void model_session(struct model *md)
{
	uint64_t blocks = md->file_bytes / BLK, sblocks = md->sb / BLK;

	md->failed = random_failed(&md->r, md->npos, layout_redundancy(md->g));
	for (uint32_t pos = 0; pos < md->npos; pos++) {
		if ((md->failed >> pos) & 1)
			memset(md->chunk[pos], 0xdb, NSTRIPES * md->il); /* the disk is lost */
	}
	for (int op = 0; op < OPS; op++) {
		uint64_t kind = rng_below(&md->r, 4), o, l;

		if (kind == 0) { /* whole stripes */
			o = rng_below(&md->r, NSTRIPES - 1) * sblocks;
			l = sblocks * (1 + rng_below(&md->r, 2));
		} else { /* small or large, crossing stripes */
			o = rng_below(&md->r, blocks);
			l = 1 + rng_below(&md->r, kind == 1 ? 4 : 2 * sblocks);
			l = l > blocks - o ? blocks - o : l;
		}
		model_write(md, o * BLK, l * BLK);

		o = rng_below(&md->r, md->file_bytes);
		l = 1 + rng_below(&md->r, op % 2 ? 100 : md->sb + md->sb / 2);
		model_read(md, o, l > md->file_bytes - o ? md->file_bytes - o : l);
	}
	model_read(md, 0, md->file_bytes);
	model_repair(md);
	model_verify(md);
}

static void model_run(const struct layout_geom *g, uint32_t seed, uint64_t *modes,
		      uint64_t *degraded)
{
	struct model md = {.g = g, .c = {.seed = seed, .g = g}};

	rng_init(&md.r, seed);
	md.k = layout_data_columns(g);
	md.m = g->parity;
	md.npos = layout_positions(g);
	md.il = g->interleave;
	md.sb = layout_stripe_bytes(g);
	md.file_bytes = NSTRIPES * md.sb;
	if (g->kind == LAYOUT_PARITY)
		assert_int_equal(layout_codec_new(md.k, md.m, &md.codec), 0);
	for (uint32_t p = 0; p < md.npos; p++)
		md.chunk[p] = calloc(1, NSTRIPES * md.il); /* zeros: a consistent stripe */
	md.ref = calloc(1, md.file_bytes);
	for (int s = 0; s < SESSIONS; s++)
		model_session(&md);
	for (int i = 0; i <= LAYOUT_WRITE_REBUILD; i++)
		modes[i] += md.modes[i];
	*degraded += md.degraded_reads;
	for (uint32_t p = 0; p < md.npos; p++)
		free(md.chunk[p]);
	free(md.ref);
	layout_codec_free(md.codec);
}

static void test_plan_model(void **state)
{
	struct layout_geom g[MAX_GEOMS];
	size_t n = all_geoms(g, 0);
	uint64_t modes[LAYOUT_WRITE_REBUILD + 1] = {0}, degraded = 0;
	(void)state;

	for (size_t i = 0; i < n; i++)
		model_run(&g[i], test_seed() + (uint32_t)i, modes, &degraded);
	print_message("# writes: direct %llu full %llu rmw %llu rcw %llu rebuild %llu; "
		      "degraded reads %llu\n",
		      (unsigned long long)modes[LAYOUT_WRITE_DIRECT],
		      (unsigned long long)modes[LAYOUT_WRITE_FULL],
		      (unsigned long long)modes[LAYOUT_WRITE_RMW],
		      (unsigned long long)modes[LAYOUT_WRITE_RCW],
		      (unsigned long long)modes[LAYOUT_WRITE_REBUILD],
		      (unsigned long long)degraded);
	/* The random mix must have reached every path, or it proves little. */
	for (int i = LAYOUT_WRITE_DIRECT; i <= LAYOUT_WRITE_REBUILD; i++)
		assert_true(modes[i] > 0);
	assert_true(degraded > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_invalid),       cmocka_unit_test(test_plan_direct),
	    cmocka_unit_test(test_plan_parity_limits), cmocka_unit_test(test_plan_two_bands),
	    cmocka_unit_test(test_plan_modes),	       cmocka_unit_test(test_plan_read_mirror_pick),
	    cmocka_unit_test(test_plan_needs_codec),   cmocka_unit_test(test_plan_costs),
	    cmocka_unit_test(test_plan_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
