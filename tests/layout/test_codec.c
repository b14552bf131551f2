/*
 * test_codec.c -- Reed-Solomon encode, update and decode.
 *
 * Encode is checked against a byte-at-a-time GF(2^8) reference built
 * from the same Cauchy matrix, at lengths around ISA-L's vector widths
 * (its kernels switch paths at 16, 32 and 64 bytes).  Decode is checked
 * by erasing every combination of up to m slots -- data and parity --
 * of every k + m up to 16, with the erased buffers poisoned.  A delta
 * update must equal a full re-encode.  A threaded test hammers the decode
 * cache from cold.
 *
 * Fixed seeds (LAYOUT_SEED overrides); failures print seed and shape.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <isa-l/erasure_code.h>

#include "layout/layout.h"

#define DEFAULT_SEED 0x5eed0002u
#define MAXN	     LAYOUT_MAX_COLUMNS

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

static uint32_t test_seed(void)
{
	const char *e = getenv("LAYOUT_SEED");

	return e ? (uint32_t)strtoul(e, NULL, 0) : DEFAULT_SEED;
}

static void rng_init(struct rng *r, uint32_t seed)
{
	r->s = (uint64_t)seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
}

static void fill(struct rng *r, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rng_next(r);
}

#define CHECK(cond, seed, k, m, len)                                                               \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fail_msg("%s failed (seed 0x%x, k %u m %u len %zu)", #cond,                \
				 (unsigned)(seed), (unsigned)(k), (unsigned)(m), (size_t)(len));   \
	} while (0)

/* k + m buffers of len bytes, one allocation each so ASan and valgrind
 * see any overrun. */
struct stripe {
	uint32_t k, m;
	size_t len;
	uint8_t *b[MAXN];   /* working slots */
	uint8_t *ref[MAXN]; /* known-good copy */
};

static void stripe_alloc(struct stripe *s, uint32_t k, uint32_t m, size_t len)
{
	s->k = k;
	s->m = m;
	s->len = len;
	for (uint32_t i = 0; i < k + m; i++) {
		s->b[i] = malloc(len ? len : 1);
		s->ref[i] = malloc(len ? len : 1);
	}
}

static void stripe_free(struct stripe *s)
{
	for (uint32_t i = 0; i < s->k + s->m; i++) {
		free(s->b[i]);
		free(s->ref[i]);
	}
}

static void stripe_save(struct stripe *s)
{
	for (uint32_t i = 0; i < s->k + s->m; i++)
		memcpy(s->ref[i], s->b[i], s->len);
}

static int stripe_same(const struct stripe *s)
{
	for (uint32_t i = 0; i < s->k + s->m; i++) {
		if (memcmp(s->ref[i], s->b[i], s->len) != 0)
			return 0;
	}
	return 1;
}

/* parity = G * data, one byte at a time with gf_mul. */
static void reference_encode(uint32_t k, uint32_t m, size_t len, uint8_t *const *data,
			     uint8_t **parity)
{
	uint8_t a[MAXN * MAXN];

	gf_gen_cauchy1_matrix(a, (int)(k + m), (int)k);
	for (uint32_t j = 0; j < m; j++) {
		for (size_t x = 0; x < len; x++) {
			uint8_t v = 0;

			for (uint32_t d = 0; d < k; d++)
				v ^= gf_mul(a[(k + j) * k + d], data[d][x]);
			parity[j][x] = v;
		}
	}
}

/* ---- tests -------------------------------------------------------------- */

static void test_codec_new(void **state)
{
	struct layout_codec *c = NULL;
	(void)state;

	assert_int_equal(layout_codec_new(1, 1, &c), -EINVAL);
	assert_int_equal(layout_codec_new(4, 0, &c), -EINVAL);
	assert_int_equal(layout_codec_new(4, 3, &c), -EINVAL);
	assert_int_equal(layout_codec_new(15, 2, &c), -EINVAL);
	assert_int_equal(layout_codec_new(16, 1, &c), -EINVAL);
	assert_null(c);
	assert_int_equal(layout_codec_new(14, 2, &c), 0);
	assert_int_equal(layout_codec_k(c), 14);
	assert_int_equal(layout_codec_m(c), 2);
	layout_codec_free(c);
	assert_int_equal(layout_codec_new(2, 1, &c), 0);
	layout_codec_free(c);
	layout_codec_free(NULL);
}

static const size_t odd_lens[] = {1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 4096, 4096 + 17};
#define NODD (sizeof(odd_lens) / sizeof(odd_lens[0]))

static void test_encode_reference(void **state)
{
	uint32_t seed = test_seed();
	struct rng r;
	(void)state;

	rng_init(&r, seed);
	for (uint32_t m = 1; m <= 2; m++) {
		for (uint32_t k = 2; k + m <= MAXN; k++) {
			struct layout_codec *c;

			assert_int_equal(layout_codec_new(k, m, &c), 0);
			for (size_t li = 0; li < NODD; li++) {
				struct stripe s;
				size_t len = odd_lens[li];

				stripe_alloc(&s, k, m, len);
				for (uint32_t d = 0; d < k; d++)
					fill(&r, s.b[d], len);
				layout_codec_encode(c, len, s.b, s.b + k);
				reference_encode(k, m, len, s.b, s.ref + k);
				for (uint32_t j = 0; j < m; j++)
					CHECK(memcmp(s.b[k + j], s.ref[k + j], len) == 0, seed, k,
					      m, len);
				stripe_free(&s);
			}
			layout_codec_free(c);
		}
	}
}

/* Decode every erasure combination of up to m slots, each erased buffer
 * poisoned first; the erased list is passed in both orders. */
static void check_erasures(struct layout_codec *c, struct stripe *s, struct rng *r, uint32_t seed)
{
	uint32_t n = s->k + s->m;

	for (uint32_t a = 0; a < n; a++) {
		for (uint32_t b = a; b < n; b++) {
			uint32_t er[2] = {b, a}, ne = a == b ? 1 : 2;

			if (ne > s->m)
				continue;
			for (uint32_t i = 0; i < ne; i++)
				fill(r, s->b[er[i]], s->len);
			CHECK(layout_codec_decode(c, s->len, s->b, er, ne) == 0, seed, s->k, s->m,
			      s->len);
			CHECK(stripe_same(s), seed, s->k, s->m, s->len);
		}
	}
}

static void test_decode_all_erasures(void **state)
{
	uint32_t seed = test_seed();
	struct rng r;
	(void)state;

	rng_init(&r, seed);
	for (uint32_t m = 1; m <= 2; m++) {
		for (uint32_t k = 2; k + m <= MAXN; k++) {
			/* Columns up to 8 at both test interleaves; wider at odd lengths. */
			size_t lens[] = {16384, 65536, 33, 4096 + 17};
			size_t first = k + m <= 8 ? 0 : 2;
			struct layout_codec *c;

			assert_int_equal(layout_codec_new(k, m, &c), 0);
			for (size_t li = first; li < 4; li++) {
				struct stripe s;

				stripe_alloc(&s, k, m, lens[li]);
				for (uint32_t d = 0; d < k; d++)
					fill(&r, s.b[d], s.len);
				layout_codec_encode(c, s.len, s.b, s.b + k);
				stripe_save(&s);
				check_erasures(c, &s, &r, seed);
				stripe_free(&s);
			}
			layout_codec_free(c);
		}
	}
}

static void test_decode_invalid(void **state)
{
	struct layout_codec *c;
	struct stripe s;
	uint32_t er[3];
	(void)state;

	assert_int_equal(layout_codec_new(4, 2, &c), 0);
	stripe_alloc(&s, 4, 2, 64);
	er[0] = 0, er[1] = 1, er[2] = 2;
	assert_int_equal(layout_codec_decode(c, 64, s.b, er, 3), -EINVAL);
	er[1] = 0;
	assert_int_equal(layout_codec_decode(c, 64, s.b, er, 2), -EINVAL);
	er[0] = 6;
	assert_int_equal(layout_codec_decode(c, 64, s.b, er, 1), -EINVAL);
	assert_int_equal(layout_codec_decode(c, 64, s.b, er, 0), 0);
	stripe_free(&s);
	layout_codec_free(c);
}

/* parity ^= G * (old ^ new) over a piece of one column equals encoding
 * the new data from scratch. */
static void test_update_equals_encode(void **state)
{
	uint32_t seed = test_seed();
	struct rng r;
	(void)state;

	rng_init(&r, seed);
	for (uint32_t m = 1; m <= 2; m++) {
		for (uint32_t k = 2; k + m <= MAXN; k++) {
			struct layout_codec *c;
			size_t len = k + m <= 8 ? 16384 : 4096;
			struct stripe s;
			uint8_t *delta = malloc(len), *par[LAYOUT_MAX_PARITY];

			assert_int_equal(layout_codec_new(k, m, &c), 0);
			stripe_alloc(&s, k, m, len);
			for (uint32_t d = 0; d < k; d++)
				fill(&r, s.b[d], len);
			layout_codec_encode(c, len, s.b, s.b + k);
			for (uint32_t round = 0; round < 2 * k; round++) {
				uint32_t col = round % k;
				size_t a = rng_next(&r) % len, b = a + 1 + rng_next(&r) % (len - a);

				if (round == 0)
					a = 0, b = len;
				memset(delta, 0, len);
				fill(&r, delta + a, b - a); /* new = old ^ delta on [a, b) */
				for (size_t x = a; x < b; x++)
					s.b[col][x] ^= delta[x];
				for (uint32_t j = 0; j < m; j++)
					par[j] = s.b[k + j] + a;
				layout_codec_update(c, b - a, col, delta + a, par);
				reference_encode(k, m, len, s.b, s.ref + k);
				for (uint32_t j = 0; j < m; j++)
					CHECK(memcmp(s.b[k + j], s.ref[k + j], len) == 0, seed, k,
					      m, b - a);
			}
			free(delta);
			stripe_free(&s);
			layout_codec_free(c);
		}
	}
}

/* Lengths around the vector widths for update too. */
static void test_update_odd_lengths(void **state)
{
	uint32_t seed = test_seed();
	struct layout_codec *c;
	struct rng r;
	(void)state;

	rng_init(&r, seed);
	assert_int_equal(layout_codec_new(5, 2, &c), 0);
	for (size_t li = 0; li < NODD; li++) {
		size_t len = odd_lens[li];
		struct stripe s;
		uint8_t *delta = malloc(len);

		stripe_alloc(&s, 5, 2, len);
		for (uint32_t d = 0; d < 5; d++)
			fill(&r, s.b[d], len);
		layout_codec_encode(c, len, s.b, s.b + 5);
		fill(&r, delta, len);
		for (size_t x = 0; x < len; x++)
			s.b[3][x] ^= delta[x];
		layout_codec_update(c, len, 3, delta, s.b + 5);
		reference_encode(5, 2, len, s.b, s.ref + 5);
		CHECK(memcmp(s.b[5], s.ref[5], len) == 0 && memcmp(s.b[6], s.ref[6], len) == 0,
		      seed, 5, 2, len);
		free(delta);
		stripe_free(&s);
	}
	layout_codec_free(c);
}

/* ---- threads ------------------------------------------------------------ */

struct worker {
	struct layout_codec *c;
	uint32_t seed;
	int failures;
};

static void *decode_worker(void *arg)
{
	struct worker *w = arg;
	uint32_t k = layout_codec_k(w->c), m = layout_codec_m(w->c), n = k + m;
	struct stripe s;
	struct rng r;

	rng_init(&r, w->seed);
	stripe_alloc(&s, k, m, 4096);
	for (uint32_t d = 0; d < k; d++)
		fill(&r, s.b[d], s.len);
	layout_codec_encode(w->c, s.len, s.b, s.b + k);
	stripe_save(&s);
	for (int i = 0; i < 300; i++) {
		uint32_t er[2] = {(uint32_t)(rng_next(&r) % n), (uint32_t)(rng_next(&r) % n)};
		uint32_t ne = er[0] == er[1] ? 1 : 2;

		for (uint32_t e = 0; e < ne; e++)
			memset(s.b[er[e]], 0x5a, s.len);
		if (layout_codec_decode(w->c, s.len, s.b, er, ne) != 0 || !stripe_same(&s))
			w->failures++;
	}
	stripe_free(&s);
	return NULL;
}

static void test_decode_threads(void **state)
{
	enum { NTHREADS = 4 };
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS];
	struct layout_codec *c;
	(void)state;

	assert_int_equal(layout_codec_new(12, 2, &c), 0); /* cold cache, 105 patterns */
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){c, test_seed() + (uint32_t)i, 0};
		assert_int_equal(pthread_create(&t[i], NULL, decode_worker, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(t[i], NULL);
		CHECK(w[i].failures == 0, w[i].seed, 12, 2, 4096);
	}
	layout_codec_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec_new),
	    cmocka_unit_test(test_encode_reference),
	    cmocka_unit_test(test_decode_all_erasures),
	    cmocka_unit_test(test_decode_invalid),
	    cmocka_unit_test(test_update_equals_encode),
	    cmocka_unit_test(test_update_odd_lengths),
	    cmocka_unit_test(test_decode_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
