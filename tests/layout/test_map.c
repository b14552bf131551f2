/*
 * test_map.c -- geometry rules and the byte -> position mapping.
 *
 * The mapping is the on-disk format, so it is checked three ways: against
 * formulas re-typed here from layout.h, against a hand-drawn table for
 * 4+1 and 4+2 (the pictures in docs/LAYOUT.md), and by round trips:
 * random file ranges are scattered into simulated chunk files through
 * layout_map, every byte is checked to sit where the formula says, and
 * the ranges are gathered back.  Every layout and every column count up
 * to 8 is covered, at interleaves 16 KiB and 64 KiB.
 *
 * Random cases use fixed seeds (LAYOUT_SEED overrides); a failure prints
 * the seed and the geometry.
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

#define DEFAULT_SEED 0x5eed0001u
#define NSTRIPES     3u	   /* stripes of each simulated file */
#define SAMPLES	     2000u /* bytes checked against the formula per range */

/* ---- helpers ------------------------------------------------------------ */

struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	/* xorshift64*: plenty for test data, and the same everywhere. */
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

#define CHECK(cond, seed, g)                                                                       \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			char d_[128];                                                              \
			describe((g), d_, sizeof(d_));                                             \
			fail_msg("%s failed (seed 0x%x, %s)", #cond, (unsigned)(seed), d_);        \
		}                                                                                  \
	} while (0)

/* Every valid geometry with up to 8 columns at 16 KiB and 64 KiB. */
static size_t all_geoms(struct layout_geom *out)
{
	static const uint32_t il[] = {16 * 1024, 64 * 1024};
	size_t n = 0;

	for (size_t i = 0; i < 2; i++) {
		for (uint32_t c = 1; c <= 8; c++) {
			out[n++] = (struct layout_geom){LAYOUT_SIMPLE, 1, 0, c, il[i]};
			out[n++] = (struct layout_geom){LAYOUT_MIRROR, 2, 0, c, il[i]};
			out[n++] = (struct layout_geom){LAYOUT_MIRROR, 3, 0, c, il[i]};
			for (uint32_t m = 1; m <= 2; m++) {
				if (c >= m + 2)
					out[n++] =
					    (struct layout_geom){LAYOUT_PARITY, 1, m, c, il[i]};
			}
		}
	}
	return n;
}

#define MAX_GEOMS 128

/* layout.h's placement formulas, typed again on purpose. */
static uint32_t expected_pos(const struct layout_geom *g, uint64_t s, uint32_t slot, uint32_t copy)
{
	uint32_t k = layout_data_columns(g), n = g->columns, m = g->parity, pd;

	if (g->kind == LAYOUT_SIMPLE)
		return slot;
	if (g->kind == LAYOUT_MIRROR)
		return copy * k + slot;
	pd = (n - 1) - (uint32_t)(s % n);
	return slot >= k ? (pd + slot - k) % n : (pd + m + slot) % n;
}

/* ---- geometry ----------------------------------------------------------- */

static void test_geom_check(void **state)
{
	struct layout_geom g[MAX_GEOMS];
	size_t n = all_geoms(g);
	(void)state;

	for (size_t i = 0; i < n; i++)
		CHECK(layout_geom_check(&g[i]) == 0, 0, &g[i]);

	const struct layout_geom bad[] = {
	    {0, 1, 0, 4, 65536},		 /* no kind */
	    {LAYOUT_SIMPLE, 2, 0, 4, 65536},	 /* simple with copies */
	    {LAYOUT_SIMPLE, 1, 1, 4, 65536},	 /* simple with parity */
	    {LAYOUT_MIRROR, 1, 0, 4, 65536},	 /* mirror of one copy */
	    {LAYOUT_MIRROR, 4, 0, 4, 65536},	 /* too many copies */
	    {LAYOUT_MIRROR, 2, 1, 4, 65536},	 /* mirror with parity */
	    {LAYOUT_PARITY, 1, 0, 4, 65536},	 /* parity without parity */
	    {LAYOUT_PARITY, 1, 3, 8, 65536},	 /* m = 3 */
	    {LAYOUT_PARITY, 2, 1, 4, 65536},	 /* parity with copies */
	    {LAYOUT_PARITY, 1, 1, 2, 65536},	 /* k = 1 */
	    {LAYOUT_PARITY, 1, 2, 3, 65536},	 /* k = 1 */
	    {LAYOUT_PARITY, 1, 2, 17, 65536},	 /* too many columns */
	    {LAYOUT_SIMPLE, 1, 0, 0, 65536},	 /* no columns */
	    {LAYOUT_SIMPLE, 1, 0, 17, 65536},	 /* too many columns */
	    {LAYOUT_SIMPLE, 1, 0, 4, 8192},	 /* interleave too small */
	    {LAYOUT_SIMPLE, 1, 0, 4, 2u << 20},	 /* interleave too big */
	    {LAYOUT_SIMPLE, 1, 0, 4, 3 * 16384}, /* not a power of two */
	    {LAYOUT_SIMPLE, 1, 0, 4, 0},	 /* no interleave */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(layout_geom_check(&bad[i]) == -EINVAL, 0, &bad[i]);

	/* The extremes are valid. */
	const struct layout_geom edge[] = {
	    {LAYOUT_MIRROR, 3, 0, 16, 16384},
	    {LAYOUT_PARITY, 1, 2, 16, 1u << 20},
	    {LAYOUT_PARITY, 1, 1, 3, 16384},
	};
	for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++)
		CHECK(layout_geom_check(&edge[i]) == 0, 0, &edge[i]);
}

static void expect_default(enum layout_kind kind, uint32_t copies, uint32_t parity, uint32_t ndisks,
			   int rc, uint32_t columns, uint32_t want_copies, uint32_t want_parity)
{
	struct layout_geom g;

	memset(&g, 0xaa, sizeof(g));
	assert_int_equal(layout_geom_default(&g, kind, copies, parity, ndisks), rc);
	if (rc != 0)
		return;
	assert_int_equal(g.kind, kind);
	assert_int_equal(g.columns, columns);
	assert_int_equal(g.copies, want_copies);
	assert_int_equal(g.parity, want_parity);
	assert_int_equal(g.interleave, 256 * 1024);
	assert_int_equal(layout_geom_check(&g), 0);
}

static void test_geom_default(void **state)
{
	(void)state;
	expect_default(LAYOUT_SIMPLE, 0, 0, 0, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_SIMPLE, 0, 0, 1, 0, 1, 1, 0);
	expect_default(LAYOUT_SIMPLE, 1, 0, 5, 0, 5, 1, 0);
	expect_default(LAYOUT_SIMPLE, 0, 0, 20, 0, 8, 1, 0);
	expect_default(LAYOUT_SIMPLE, 2, 0, 4, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_SIMPLE, 0, 1, 4, -EINVAL, 0, 0, 0);

	expect_default(LAYOUT_MIRROR, 0, 0, 1, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_MIRROR, 0, 0, 2, 0, 1, 2, 0);
	expect_default(LAYOUT_MIRROR, 0, 0, 5, 0, 2, 2, 0);
	expect_default(LAYOUT_MIRROR, 2, 0, 40, 0, 8, 2, 0);
	expect_default(LAYOUT_MIRROR, 3, 0, 2, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_MIRROR, 3, 0, 7, 0, 2, 3, 0);
	expect_default(LAYOUT_MIRROR, 3, 0, 24, 0, 8, 3, 0);
	expect_default(LAYOUT_MIRROR, 4, 0, 24, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_MIRROR, 0, 1, 24, -EINVAL, 0, 0, 0);

	expect_default(LAYOUT_PARITY, 0, 0, 2, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_PARITY, 0, 0, 3, 0, 3, 1, 1);
	/* parity: data columns a power of two, so 1 MiB writes fill stripes */
	expect_default(LAYOUT_PARITY, 0, 0, 4, 0, 3, 1, 1);
	expect_default(LAYOUT_PARITY, 0, 0, 5, 0, 5, 1, 1);
	expect_default(LAYOUT_PARITY, 0, 1, 6, 0, 5, 1, 1);
	expect_default(LAYOUT_PARITY, 0, 0, 12, 0, 5, 1, 1);
	expect_default(LAYOUT_PARITY, 0, 2, 4, 0, 4, 1, 2);
	expect_default(LAYOUT_PARITY, 0, 2, 5, 0, 4, 1, 2);
	expect_default(LAYOUT_PARITY, 0, 2, 6, 0, 6, 1, 2);
	expect_default(LAYOUT_PARITY, 0, 2, 12, 0, 6, 1, 2);
	expect_default(LAYOUT_PARITY, 0, 2, 3, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_PARITY, 0, 2, 4, 0, 4, 1, 2);
	expect_default(LAYOUT_PARITY, 1, 2, 9, 0, 6, 1, 2);
	expect_default(LAYOUT_PARITY, 0, 3, 9, -EINVAL, 0, 0, 0);
	expect_default(LAYOUT_PARITY, 2, 1, 9, -EINVAL, 0, 0, 0);

	expect_default((enum layout_kind)7, 0, 0, 8, -EINVAL, 0, 0, 0);
}

static void test_kind_names(void **state)
{
	static const enum layout_kind all[] = {LAYOUT_SIMPLE, LAYOUT_MIRROR, LAYOUT_PARITY};
	enum layout_kind k = 0;
	(void)state;

	assert_string_equal(layout_kind_name(LAYOUT_SIMPLE), "simple");
	assert_string_equal(layout_kind_name(LAYOUT_MIRROR), "mirror");
	assert_string_equal(layout_kind_name(LAYOUT_PARITY), "parity");
	assert_non_null(layout_kind_name((enum layout_kind)0));
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(layout_kind_parse(layout_kind_name(all[i]), &k), 0);
		assert_int_equal(k, all[i]);
	}
	assert_int_equal(layout_kind_parse("Mirror", &k), 0);
	assert_int_equal(k, LAYOUT_MIRROR);
	assert_int_equal(layout_kind_parse("raid5", &k), -EINVAL);
	assert_int_equal(layout_kind_parse("", &k), -EINVAL);
	assert_int_equal(layout_kind_parse("mirrors", &k), -EINVAL);
}

static void test_derived(void **state)
{
	struct layout_geom s = {LAYOUT_SIMPLE, 1, 0, 5, 65536};
	struct layout_geom m = {LAYOUT_MIRROR, 3, 0, 4, 16384};
	struct layout_geom p = {LAYOUT_PARITY, 1, 2, 8, 262144};
	uint32_t num, den;
	(void)state;

	assert_int_equal(layout_data_columns(&s), 5);
	assert_int_equal(layout_positions(&s), 5);
	assert_int_equal(layout_redundancy(&s), 0);
	assert_int_equal(layout_stripe_bytes(&s), 5 * 65536);
	layout_efficiency(&s, &num, &den);
	assert_true(num == 1 && den == 1);

	assert_int_equal(layout_data_columns(&m), 4);
	assert_int_equal(layout_positions(&m), 12);
	assert_int_equal(layout_redundancy(&m), 2);
	assert_int_equal(layout_stripe_bytes(&m), 4 * 16384);
	layout_efficiency(&m, &num, &den);
	assert_true(num == 1 && den == 3);

	assert_int_equal(layout_data_columns(&p), 6);
	assert_int_equal(layout_positions(&p), 8);
	assert_int_equal(layout_redundancy(&p), 2);
	assert_int_equal(layout_stripe_bytes(&p), 6 * 262144);
	layout_efficiency(&p, &num, &den);
	assert_true(num == 6 && den == 8);
}

/* ---- placement ---------------------------------------------------------- */

/* Position of parity 0 ("P"), parity 1 ("Q") and data d for the first
 * stripes, as drawn in docs/LAYOUT.md.  Row s lists what each position
 * holds: 'P', 'Q' or the data column digit. */
static void check_table(const struct layout_geom *g, const char *const *rows, size_t nrows)
{
	uint32_t k = layout_data_columns(g);

	for (size_t s = 0; s < nrows; s++) {
		for (uint32_t pos = 0; pos < g->columns; pos++) {
			uint32_t slot, copy;
			char want = rows[s][pos], got;

			layout_pos_slot(g, s, pos, &slot, &copy);
			got = slot < k ? (char)('0' + slot) : (slot == k ? 'P' : 'Q');
			if (got != want)
				fail_msg("stripe %zu position %u: got %c, want %c", s, pos, got,
					 want);
		}
	}
}

static void test_rotation_pictures(void **state)
{
	static const char *const p41[] = {"0123P", "123P0", "23P01", "3P012", "P0123", "0123P"};
	static const char *const p42[] = {"Q0123P", "0123PQ", "123PQ0", "23PQ01",
					  "3PQ012", "PQ0123", "Q0123P"};
	struct layout_geom g41 = {LAYOUT_PARITY, 1, 1, 5, 65536};
	struct layout_geom g42 = {LAYOUT_PARITY, 1, 2, 6, 65536};
	(void)state;

	check_table(&g41, p41, sizeof(p41) / sizeof(p41[0]));
	check_table(&g42, p42, sizeof(p42) / sizeof(p42[0]));
}

/* Per stripe: the formula holds, (slot, copy) -> position is a bijection
 * onto 0..positions-1, and pos_slot inverts it.  Over n stripes every
 * position carries each parity exactly once. */
static void check_placement(const struct layout_geom *g)
{
	uint32_t k = layout_data_columns(g), npos = layout_positions(g);
	uint32_t nslot = g->kind == LAYOUT_PARITY ? g->columns : k;
	uint32_t parity_count[LAYOUT_MAX_POSITIONS][LAYOUT_MAX_PARITY] = {{0}};
	uint64_t nstripes = 3 * (uint64_t)g->columns + 1;

	for (uint64_t s = 0; s < nstripes; s++) {
		uint64_t seen = 0;

		for (uint32_t slot = 0; slot < nslot; slot++) {
			for (uint32_t copy = 0; copy < g->copies; copy++) {
				uint32_t pos = layout_slot_pos(g, s, slot, copy), s2, c2;

				CHECK(pos == expected_pos(g, s, slot, copy), s, g);
				CHECK(pos < npos && !(seen & (UINT64_C(1) << pos)), s, g);
				seen |= UINT64_C(1) << pos;
				layout_pos_slot(g, s, pos, &s2, &c2);
				CHECK(s2 == slot && c2 == copy, s, g);
				if (slot >= k && s < g->columns)
					parity_count[pos][slot - k]++;
			}
		}
		CHECK(seen == (npos == 64 ? ~UINT64_C(0) : (UINT64_C(1) << npos) - 1), s, g);
	}
	for (uint32_t pos = 0; pos < npos && g->kind == LAYOUT_PARITY; pos++) {
		for (uint32_t j = 0; j < g->parity; j++)
			CHECK(parity_count[pos][j] == 1, pos, g);
	}
}

static void test_placement_all(void **state)
{
	struct layout_geom g[MAX_GEOMS];
	size_t n = all_geoms(g);
	(void)state;

	for (size_t i = 0; i < n; i++)
		check_placement(&g[i]);
	/* The widest geometries too. */
	check_placement(&(struct layout_geom){LAYOUT_MIRROR, 3, 0, 16, 16384});
	check_placement(&(struct layout_geom){LAYOUT_PARITY, 1, 2, 16, 16384});
	check_placement(&(struct layout_geom){LAYOUT_PARITY, 1, 1, 16, 16384});
}

/* ---- layout_map --------------------------------------------------------- */

static void test_map_edges(void **state)
{
	struct layout_geom g = {LAYOUT_PARITY, 1, 1, 5, 16384}; /* k = 4 */
	struct layout_extent e[8];
	(void)state;

	assert_int_equal(layout_map(&g, 12345, 0, e, 8), 0);
	/* One byte. */
	assert_int_equal(layout_map(&g, 16384 * 5 + 7, 1, e, 8), 1);
	assert_int_equal(e[0].stripe, 1);
	assert_int_equal(e[0].col, 1);
	assert_int_equal(e[0].col_off, 7);
	assert_int_equal(e[0].len, 1);
	assert_int_equal(e[0].chunk_off, 16384 + 7);
	assert_int_equal(e[0].buf_off, 0);
	/* Across a stripe boundary: column 3 of stripe 0, column 0 of 1. */
	assert_int_equal(layout_map(&g, 4 * 16384 - 10, 20, e, 8), 2);
	assert_true(e[0].stripe == 0 && e[0].col == 3 && e[0].col_off == 16374 && e[0].len == 10);
	assert_true(e[1].stripe == 1 && e[1].col == 0 && e[1].col_off == 0 && e[1].len == 10);
	assert_int_equal(e[1].chunk_off, 16384);
	assert_int_equal(e[1].buf_off, 10);
	/* Too small an array: the full count, only `max` written. */
	memset(e, 0xee, sizeof(e));
	assert_int_equal(layout_map(&g, 0, 10 * 16384, e, 3), 10);
	assert_int_equal(e[2].col, 2);
	assert_int_equal(e[3].stripe, UINT64_C(0xeeeeeeeeeeeeeeee));
	assert_int_equal(layout_map(&g, 1, 10 * 16384, NULL, 0), 11);
	/* Far into a huge file. */
	assert_int_equal(layout_map(&g, (UINT64_C(1) << 40) + 3, 16384, e, 8), 2);
	assert_int_equal(e[0].stripe, (UINT64_C(1) << 40) / (4 * 16384));
}

struct sim {
	const struct layout_geom *g;
	uint32_t k, npos;
	uint64_t file_bytes, chunk_bytes;
	uint8_t *chunk[LAYOUT_MAX_POSITIONS];
	uint8_t *data, *back;
};

static void sim_init(struct sim *s, const struct layout_geom *g)
{
	memset(s, 0, sizeof(*s));
	s->g = g;
	s->k = layout_data_columns(g);
	s->npos = layout_positions(g);
	s->file_bytes = NSTRIPES * layout_stripe_bytes(g);
	s->chunk_bytes = (uint64_t)NSTRIPES * g->interleave;
	for (uint32_t p = 0; p < s->npos; p++)
		s->chunk[p] = calloc(1, s->chunk_bytes);
	s->data = malloc(s->file_bytes);
	s->back = malloc(s->file_bytes);
}

static void sim_free(struct sim *s)
{
	for (uint32_t p = 0; p < s->npos; p++)
		free(s->chunk[p]);
	free(s->data);
	free(s->back);
}

/* Scatter [off, off+len) of s->data, then check each byte independently
 * and gather it back through a second map. */
static void roundtrip(struct sim *s, struct rng *r, uint64_t off, uint64_t len, uint32_t seed)
{
	const struct layout_geom *g = s->g;
	size_t max = (size_t)(len / g->interleave + 2), n;
	struct layout_extent *e = calloc(max, sizeof(*e));
	uint64_t il = g->interleave, next = 0;

	n = layout_map(g, off, len, e, max);
	CHECK(n <= max, seed, g);
	for (size_t i = 0; i < n; i++) {
		CHECK(e[i].buf_off == next && e[i].len > 0, seed, g);
		CHECK(e[i].col < s->k && e[i].col_off + e[i].len <= il, seed, g);
		CHECK(e[i].chunk_off == e[i].stripe * il + e[i].col_off, seed, g);
		CHECK((e[i].stripe * s->k + e[i].col) * il + e[i].col_off == off + next, seed, g);
		next += e[i].len;
		for (uint32_t c = 0; c < g->copies; c++) {
			uint32_t pos = layout_slot_pos(g, e[i].stripe, e[i].col, c);

			memcpy(s->chunk[pos] + e[i].chunk_off, s->data + off + e[i].buf_off,
			       e[i].len);
		}
	}
	CHECK(next == len, seed, g);

	/* Byte by byte from the formula alone: both ends and random bytes. */
	for (uint32_t i = 0; i < 2 + SAMPLES; i++) {
		uint64_t o = i == 0 ? off : i == 1 ? off + len - 1 : off + rng_below(r, len);
		uint64_t unit = o / il, st = unit / s->k;
		uint32_t col = (uint32_t)(unit % s->k);

		for (uint32_t c = 0; c < g->copies; c++) {
			uint32_t pos = expected_pos(g, st, col, c);

			CHECK(s->chunk[pos][st * il + o % il] == s->data[o], seed, g);
		}
	}

	memset(s->back, 0, len);
	for (size_t i = n; i-- > 0;) { /* gather in reverse order, from the last copy */
		uint32_t pos = layout_slot_pos(g, e[i].stripe, e[i].col, g->copies - 1);

		memcpy(s->back + e[i].buf_off, s->chunk[pos] + e[i].chunk_off, e[i].len);
	}
	CHECK(memcmp(s->back, s->data + off, len) == 0, seed, g);
	free(e);
}

static void check_roundtrips(const struct layout_geom *g, uint32_t seed)
{
	struct sim s;
	struct rng r;

	rng_init(&r, seed);
	sim_init(&s, g);
	for (uint64_t i = 0; i < s.file_bytes; i++)
		s.data[i] = (uint8_t)rng_next(&r);
	/* The whole file, then random ranges, some tiny, some unaligned. */
	roundtrip(&s, &r, 0, s.file_bytes, seed);
	for (int i = 0; i < 12; i++) {
		uint64_t off = rng_below(&r, s.file_bytes);
		uint64_t room = s.file_bytes - off;
		uint64_t len = 1 + rng_below(&r, i % 3 == 0 ? (room < 64 ? room : 64) : room);

		if (i % 4 == 1)
			off -= off % 4096;
		len = len > s.file_bytes - off ? s.file_bytes - off : len;
		roundtrip(&s, &r, off, len, seed);
	}
	sim_free(&s);
}

static void test_map_roundtrip_all(void **state)
{
	struct layout_geom g[MAX_GEOMS];
	size_t n = all_geoms(g);
	uint32_t seed = test_seed();
	(void)state;

	for (size_t i = 0; i < n; i++)
		check_roundtrips(&g[i], seed + (uint32_t)i);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_geom_check),	      cmocka_unit_test(test_geom_default),
	    cmocka_unit_test(test_kind_names),	      cmocka_unit_test(test_derived),
	    cmocka_unit_test(test_rotation_pictures), cmocka_unit_test(test_placement_all),
	    cmocka_unit_test(test_map_edges),	      cmocka_unit_test(test_map_roundtrip_all),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
