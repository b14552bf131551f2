/*
 * codec.c -- Reed-Solomon parity over GF(2^8) with ISA-L.
 *
 * A stripe of k data columns and m parity columns is one codeword per
 * byte offset: slot i of the stripe holds row i of E * data, where E is
 * the (k + m) x k matrix from gf_gen_cauchy1_matrix -- identity on top
 * (the data is stored as is) and a Cauchy block below (the parity).
 * Every k x k submatrix of E is invertible, so any k slots recover the
 * other m.
 *
 * ISA-L does the byte crunching.  It wants each coefficient expanded
 * into a 32-byte table (ec_init_tables); the encode tables are built once
 * per codec.  Decoding needs a matrix per erasure pattern: take the k x k
 * submatrix of the first k surviving slots, invert it, and the rows that
 * rebuild an erased slot are the inverse's row for a data column, or the
 * parity row times the inverse for a parity column.  Inverting and
 * expanding cost a few microseconds, a lot next to decoding 4 KiB, so the
 * result is kept per erasure bitmask.  With m <= 2 there are at most
 * n + n(n-1)/2 patterns (136 for n = 16), so the cache is a flat array
 * indexed by the pattern's rank: no eviction, no hashing, and an entry
 * never changes once filled, which is what lets callers use its tables
 * after dropping the lock.
 *
 * A partial-stripe write does not re-encode: parity is linear, so
 * parity_j ^= E[k+j][col] * (old ^ new) brings it up to date
 * (ec_encode_data_update).
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "layout/internal.h"
#include "layout/layout.h"

/* ISA-L lengths are int; stay far below INT_MAX per call. */
#define EC_CHUNK ((size_t)1 << 30)

struct decode_entry {
	uint8_t tbls[LAYOUT_EC_TBL * LAYOUT_MAX_PARITY * LAYOUT_MAX_COLUMNS]
	    __attribute__((aligned(64)));
	uint8_t rows[LAYOUT_MAX_PARITY * LAYOUT_MAX_COLUMNS];
	int ready; /* set once under the lock, never cleared */
};

struct layout_codec {
	uint8_t enc_tbls[LAYOUT_EC_TBL * LAYOUT_MAX_PARITY * LAYOUT_MAX_COLUMNS]
	    __attribute__((aligned(64)));
	uint8_t matrix[LAYOUT_MAX_COLUMNS * LAYOUT_MAX_COLUMNS]; /* E, (k + m) x k */
	uint32_t k, m;
	pthread_mutex_t lock; /* guards cache[].ready and filling an entry */
	uint32_t ncache;
	struct decode_entry cache[];
};

static uint32_t cache_size(uint32_t n, uint32_t m)
{
	return m == 1 ? n : n + n * (n - 1) / 2;
}

int layout_codec_new(uint32_t k, uint32_t m, struct layout_codec **out)
{
	struct layout_codec *c;
	uint32_t n = k + m, ncache;
	void *mem;

	if (k < 2 || m < 1 || m > LAYOUT_MAX_PARITY || n > LAYOUT_MAX_COLUMNS)
		return -EINVAL;
	ncache = cache_size(n, m);
	if (posix_memalign(&mem, 64, sizeof(*c) + ncache * sizeof(c->cache[0])) != 0)
		return -ENOMEM;
	c = mem;
	memset(c, 0, sizeof(*c) + ncache * sizeof(c->cache[0]));
	c->k = k;
	c->m = m;
	c->ncache = ncache;
	if (pthread_mutex_init(&c->lock, NULL) != 0) {
		free(c);
		return -ENOMEM;
	}
	gf_gen_cauchy1_matrix(c->matrix, (int)n, (int)k);
	ec_init_tables((int)k, (int)m, c->matrix + k * k, c->enc_tbls);
	*out = c;
	return 0;
}

void layout_codec_free(struct layout_codec *c)
{
	if (c == NULL)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c);
}

uint32_t layout_codec_k(const struct layout_codec *c)
{
	return c->k;
}

uint32_t layout_codec_m(const struct layout_codec *c)
{
	return c->m;
}

uint8_t layout_codec_coef(const struct layout_codec *c, uint32_t j, uint32_t d)
{
	assert(j < c->m && d < c->k);
	return c->matrix[(c->k + j) * c->k + d];
}

const uint8_t *layout_codec_enc_tables(const struct layout_codec *c, uint32_t j)
{
	assert(j < c->m);
	return c->enc_tbls + j * LAYOUT_EC_TBL * c->k;
}

/* ---- ISA-L calls for any length ---------------------------------------- */

void layout_ec_encode(size_t len, uint32_t nsrc, uint32_t rows, const uint8_t *tbls,
		      uint8_t *const *src, uint8_t *const *dst)
{
	uint8_t *s[LAYOUT_EC_MAX_SRC], *d[LAYOUT_MAX_PARITY];

	assert(nsrc <= LAYOUT_EC_MAX_SRC && rows <= LAYOUT_MAX_PARITY);
	for (size_t done = 0; done < len; done += EC_CHUNK) {
		size_t n = len - done < EC_CHUNK ? len - done : EC_CHUNK;

		for (uint32_t i = 0; i < nsrc; i++)
			s[i] = src[i] + done;
		for (uint32_t r = 0; r < rows; r++)
			d[r] = dst[r] + done;
		ec_encode_data((int)n, (int)nsrc, (int)rows, (uint8_t *)tbls, s, d);
	}
}

void layout_ec_update(size_t len, uint32_t k, uint32_t rows, uint32_t vec, const uint8_t *tbls,
		      const uint8_t *src, uint8_t *const *dst)
{
	uint8_t *d[LAYOUT_MAX_PARITY];

	assert(vec < k && rows <= LAYOUT_MAX_PARITY);
	for (size_t done = 0; done < len; done += EC_CHUNK) {
		size_t n = len - done < EC_CHUNK ? len - done : EC_CHUNK;

		for (uint32_t r = 0; r < rows; r++)
			d[r] = dst[r] + done;
		ec_encode_data_update((int)n, (int)k, (int)rows, (int)vec, (uint8_t *)tbls,
				      (uint8_t *)src + done, d);
	}
}

/* ---- encode and update -------------------------------------------------- */

void layout_codec_encode(const struct layout_codec *c, size_t len, uint8_t *const *data,
			 uint8_t *const *parity)
{
	layout_ec_encode(len, c->k, c->m, c->enc_tbls, data, parity);
}

void layout_codec_update(const struct layout_codec *c, size_t len, uint32_t col,
			 const uint8_t *delta, uint8_t *const *parity)
{
	assert(col < c->k);
	layout_ec_update(len, c->k, c->m, col, c->enc_tbls, delta, parity);
}

/* ---- decode ------------------------------------------------------------- */

/* Rank of an erasure pattern of 1 or 2 slots among all such patterns:
 * singles first (by slot), then pairs a < b in lexicographic order. */
static uint32_t pattern_index(uint32_t n, uint32_t erased)
{
	uint32_t a = (uint32_t)__builtin_ctz(erased), b, rest = erased & (erased - 1);

	if (rest == 0)
		return a;
	b = (uint32_t)__builtin_ctz(rest);
	return n + a * (2 * n - a - 1) / 2 + (b - a - 1);
}

/* Fill e for pattern `erased`: see the essay at the top. */
static int decode_fill(const struct layout_codec *c, uint32_t erased, struct decode_entry *e)
{
	uint32_t k = c->k, n = c->k + c->m, i = 0, r = 0;
	uint8_t sub[LAYOUT_MAX_COLUMNS * LAYOUT_MAX_COLUMNS];
	uint8_t inv[LAYOUT_MAX_COLUMNS * LAYOUT_MAX_COLUMNS];

	for (uint32_t s = 0; s < n && i < k; s++) {
		if (!(erased & (1u << s)))
			memcpy(sub + k * i++, c->matrix + k * s, k);
	}
	assert(i == k);
	if (gf_invert_matrix(sub, inv, (int)k) != 0)
		return -EIO; /* cannot happen with a Cauchy matrix */

	for (uint32_t s = 0; s < n; s++) {
		if (!(erased & (1u << s)))
			continue;
		for (uint32_t col = 0; col < k; col++) {
			uint8_t v = 0;

			if (s < k) {
				v = inv[s * k + col];
			} else {
				for (uint32_t j = 0; j < k; j++)
					v ^= gf_mul(c->matrix[s * k + j], inv[j * k + col]);
			}
			e->rows[r * k + col] = v;
		}
		r++;
	}
	ec_init_tables((int)k, (int)r, e->rows, e->tbls);
	return 0;
}

int layout_codec_decode_matrix(struct layout_codec *c, uint32_t erased, const uint8_t **rows,
			       const uint8_t **tbls)
{
	uint32_t n = c->k + c->m, cnt = (uint32_t)__builtin_popcount(erased);
	struct decode_entry *e;
	int rc = 0;

	if (cnt == 0 || cnt > c->m || (erased >> n) != 0)
		return -EINVAL;
	e = &c->cache[pattern_index(n, erased)];
	assert(pattern_index(n, erased) < c->ncache);

	pthread_mutex_lock(&c->lock);
	if (!e->ready) {
		rc = decode_fill(c, erased, e);
		e->ready = rc == 0;
	}
	pthread_mutex_unlock(&c->lock);
	if (rc != 0)
		return rc;
	/* Safe without the lock: a ready entry is never written again. */
	*rows = e->rows;
	*tbls = e->tbls;
	return 0;
}

static int erasure_mask(uint32_t n, const uint32_t *erased, uint32_t nerased, uint32_t *mask)
{
	*mask = 0;
	for (uint32_t i = 0; i < nerased; i++) {
		if (erased[i] >= n || (*mask & (1u << erased[i])))
			return -EINVAL;
		*mask |= 1u << erased[i];
	}
	return 0;
}

int layout_codec_decode(struct layout_codec *c, size_t len, uint8_t *const *blocks,
			const uint32_t *erased, uint32_t nerased)
{
	uint32_t k = c->k, n = c->k + c->m, mask, ns = 0, nd = 0;
	uint8_t *src[LAYOUT_MAX_COLUMNS], *dst[LAYOUT_MAX_PARITY];
	const uint8_t *rows, *tbls;
	int rc;

	if (nerased > c->m || erasure_mask(n, erased, nerased, &mask) != 0)
		return -EINVAL;
	if (nerased == 0)
		return 0;
	rc = layout_codec_decode_matrix(c, mask, &rows, &tbls);
	if (rc != 0)
		return rc;
	/* Sources and outputs in ascending slot order, as the matrix wants. */
	for (uint32_t s = 0; s < n; s++) {
		if (mask & (1u << s))
			dst[nd++] = blocks[s];
		else if (ns < k)
			src[ns++] = blocks[s];
	}
	layout_ec_encode(len, k, nd, tbls, src, dst);
	return 0;
}
