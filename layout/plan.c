/*
 * plan.c -- what to read, compute and write for one stripe of one request.
 *
 * pool/ turns a file request into one plan per stripe, issues the plan's
 * reads all at once, calls back here to compute the buffers to write,
 * and issues the writes all at once.  Keeping the decisions here, away
 * from the I/O, lets the tests check every one of them against a model.
 *
 * Rows and bands.  Inside a stripe every column has `interleave` rows
 * (byte offsets); parity is computed row by row, so a write to the data
 * range [off, off + len) concerns only the rows it touches.  Those rows
 * form one interval -- or two, when the range just crosses from the
 * bottom of one column into the top of the next without the two pieces
 * sharing a row.  Each interval is a "band": within it every column is
 * either written over one sub-interval or not at all, and bands are
 * independent of each other.  Treating the two-piece case as one
 * interval would make a small unaligned write read whole columns.
 *
 * Writes.  Simple and mirror write each piece to every live copy
 * (DIRECT).  Parity has four ways to keep parity right:
 *   FULL     the whole stripe: encode, read nothing;
 *   RMW      read old data of the written pieces and the live parities
 *            over the band, add G * (old ^ new) to the parity;
 *   RCW      read what is not written of every data column over the band
 *            (0, 1 or 2 pieces a column) and encode afresh;
 *   REBUILD  when a failure rules out both: read every live slot over the
 *            band and compute parity from them and the new data.
 * The planner counts the bytes RMW and RCW would read, exactly, and
 * takes the smaller (RCW on a tie: it leaves no room for a stale parity
 * to propagate).  RMW needs the old data of every written column; RCW
 * needs every unwritten piece.  With every parity failed there is no
 * parity to maintain and RMW degenerates to plain data writes.
 *
 * Buffers.  layout/ allocates nothing per request, so finish computes
 * straight into the caller's write buffers and finds its inputs by
 * looking up which read covers which rows of which slot.  A missing data
 * column is never materialised: REBUILD folds the decode into the parity
 * coefficients (new parity = G * new data, where each unwritten column's
 * old data is the decode matrix applied to the survivors), and a degraded
 * read decodes straight into the caller's destination.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "layout/internal.h"
#include "layout/layout.h"

#define IMPOSSIBLE UINT64_MAX

/* Rows [lo, hi) of every column, and the data columns c0..c1 that the
 * range has bytes in within those rows (every one of them has some). */
struct band {
	uint32_t lo, hi;
	uint32_t c0, c1;
};

/* Everything about the stripe a plan needs, computed once. */
struct stripe {
	const struct layout_geom *g;
	uint64_t stripe;
	uint64_t failed; /* positions, masked to the file's */
	uint32_t k, m, n, il;
	uint32_t off, len; /* the range inside the stripe's data */
	uint32_t nband;
	struct band band[2];
};

/* ---- geometry of a range inside a stripe ------------------------------- */

static uint32_t make_bands(uint32_t il, uint32_t off, uint32_t len, struct band b[2])
{
	uint32_t end = off + len, c0 = off / il, c1 = (end - 1) / il;
	uint32_t first = off % il, last = end - c1 * il; /* last in (0, il] */

	assert(len > 0);
	if (c0 == c1) {
		b[0] = (struct band){first, last, c0, c0};
		return 1;
	}
	if (c1 == c0 + 1 && last < first) {
		b[0] = (struct band){first, il, c0, c0};
		b[1] = (struct band){0, last, c1, c1};
		return 2;
	}
	b[0] = (struct band){0, il, c0, c1};
	return 1;
}

/* Rows [*lo, *hi) of column c that the range covers inside band b;
 * returns how many (0, with *lo = *hi = b->hi, if none). */
static uint32_t piece(const struct stripe *x, const struct band *b, uint32_t c, uint32_t *lo,
		      uint32_t *hi)
{
	uint64_t base = (uint64_t)c * x->il;
	uint64_t s = base + b->lo > x->off ? base + b->lo : x->off;
	uint64_t e = base + b->hi < (uint64_t)x->off + x->len ? base + b->hi : x->off + x->len;

	if (s >= e) {
		*lo = *hi = b->hi;
		return 0;
	}
	*lo = (uint32_t)(s - base);
	*hi = (uint32_t)(e - base);
	return *hi - *lo;
}

static int stripe_init(struct stripe *x, const struct layout_geom *g, uint64_t stripe, uint32_t off,
		       uint32_t len, uint64_t failed)
{
	uint32_t npos = layout_positions(g);

	if (layout_geom_check(g) != 0 || (uint64_t)off + len > layout_stripe_bytes(g))
		return -EINVAL;
	*x = (struct stripe){.g = g, .stripe = stripe, .off = off, .len = len};
	x->failed = npos >= 64 ? failed : failed & ((UINT64_C(1) << npos) - 1);
	x->k = layout_data_columns(g);
	x->m = g->parity;
	x->n = x->k + x->m;
	x->il = g->interleave;
	x->nband = len ? make_bands(x->il, off, len, x->band) : 0;
	return 0;
}

static uint32_t pos_of(const struct stripe *x, uint32_t slot, uint32_t copy)
{
	return layout_slot_pos(x->g, x->stripe, slot, copy);
}

static int live(const struct stripe *x, uint32_t slot, uint32_t copy)
{
	return !((x->failed >> pos_of(x, slot, copy)) & 1);
}

static uint32_t live_parities(const struct stripe *x)
{
	uint32_t n = 0;

	for (uint32_t j = 0; j < x->m; j++)
		n += (uint32_t)live(x, x->k + j, 0);
	return n;
}

static void add_io(struct layout_io *io, uint32_t *n, uint64_t *bytes, uint32_t pos, uint32_t slot,
		   uint32_t lo, uint32_t hi)
{
	if (hi <= lo)
		return;
	assert(*n < LAYOUT_PLAN_MAX_IO);
	io[(*n)++] = (struct layout_io){.pos = pos, .slot = slot, .col_off = lo, .len = hi - lo};
	*bytes += hi - lo;
}

static void add_read(struct layout_write_plan *p, const struct stripe *x, uint32_t slot,
		     uint32_t lo, uint32_t hi)
{
	add_io(p->read, &p->nread, &p->read_bytes, pos_of(x, slot, 0), slot, lo, hi);
}

static void add_write(struct layout_write_plan *p, uint32_t pos, uint32_t slot, uint32_t lo,
		      uint32_t hi)
{
	add_io(p->write, &p->nwrite, &p->write_bytes, pos, slot, lo, hi);
}

/* ---- write planning ----------------------------------------------------- */

/* Simple and mirror: every piece to every live copy. */
static int plan_direct(const struct stripe *x, struct layout_write_plan *p)
{
	p->mode = LAYOUT_WRITE_DIRECT;
	for (uint32_t i = 0; i < x->nband; i++) {
		const struct band *b = &x->band[i];

		for (uint32_t c = b->c0; c <= b->c1; c++) {
			uint32_t lo, hi, nlive = 0;

			piece(x, b, c, &lo, &hi);
			for (uint32_t copy = 0; copy < x->g->copies; copy++) {
				if (!live(x, c, copy))
					continue;
				add_write(p, pos_of(x, c, copy), c, lo, hi);
				nlive++;
			}
			if (nlive == 0)
				return -EIO;
		}
	}
	return 0;
}

static uint64_t rmw_cost(const struct stripe *x)
{
	uint64_t nlp = live_parities(x), cost = 0;

	if (nlp == 0)
		return 0; /* nothing to keep up to date */
	for (uint32_t i = 0; i < x->nband; i++) {
		const struct band *b = &x->band[i];

		for (uint32_t c = b->c0; c <= b->c1; c++) {
			uint32_t lo, hi;

			if (!live(x, c, 0))
				return IMPOSSIBLE;
			cost += piece(x, b, c, &lo, &hi);
		}
		cost += nlp * (b->hi - b->lo);
	}
	return cost;
}

static uint64_t rcw_cost(const struct stripe *x)
{
	uint64_t cost = 0;

	for (uint32_t i = 0; i < x->nband; i++) {
		const struct band *b = &x->band[i];

		for (uint32_t d = 0; d < x->k; d++) {
			uint32_t lo, hi, need = b->hi - b->lo - piece(x, b, d, &lo, &hi);

			if (need > 0 && !live(x, d, 0))
				return IMPOSSIBLE;
			cost += need;
		}
	}
	return cost;
}

static enum layout_write_mode choose_mode(const struct stripe *x)
{
	uint64_t rmw, rcw;

	if (x->off == 0 && x->len == layout_stripe_bytes(x->g))
		return LAYOUT_WRITE_FULL;
	rmw = rmw_cost(x);
	rcw = rcw_cost(x);
	if (rcw != IMPOSSIBLE && rcw <= rmw)
		return LAYOUT_WRITE_RCW;
	if (rmw != IMPOSSIBLE)
		return LAYOUT_WRITE_RMW;
	return LAYOUT_WRITE_REBUILD;
}

static void band_reads(const struct stripe *x, const struct band *b, struct layout_write_plan *p)
{
	uint32_t lo, hi;

	switch (p->mode) {
	case LAYOUT_WRITE_RMW:
		if (live_parities(x) == 0)
			return;
		for (uint32_t c = b->c0; c <= b->c1; c++) {
			piece(x, b, c, &lo, &hi);
			add_read(p, x, c, lo, hi);
		}
		for (uint32_t j = 0; j < x->m; j++) {
			if (live(x, x->k + j, 0))
				add_read(p, x, x->k + j, b->lo, b->hi);
		}
		return;
	case LAYOUT_WRITE_RCW:
		for (uint32_t d = 0; d < x->k; d++) {
			piece(x, b, d, &lo, &hi);
			add_read(p, x, d, b->lo, lo);
			add_read(p, x, d, hi, b->hi);
		}
		return;
	case LAYOUT_WRITE_REBUILD:
		for (uint32_t s = 0; s < x->n; s++) {
			if (live(x, s, 0))
				add_read(p, x, s, b->lo, b->hi);
		}
		return;
	default:
		return; /* FULL reads nothing */
	}
}

static void band_writes(const struct stripe *x, const struct band *b, struct layout_write_plan *p)
{
	for (uint32_t c = b->c0; c <= b->c1; c++) {
		uint32_t lo, hi;

		piece(x, b, c, &lo, &hi);
		if (live(x, c, 0))
			add_write(p, pos_of(x, c, 0), c, lo, hi);
	}
	for (uint32_t j = 0; j < x->m; j++) {
		if (live(x, x->k + j, 0))
			add_write(p, pos_of(x, x->k + j, 0), x->k + j, b->lo, b->hi);
	}
}

static int plan_parity(const struct stripe *x, struct layout_write_plan *p)
{
	if ((uint32_t)__builtin_popcountll(x->failed) > x->m)
		return -EIO;
	p->mode = choose_mode(x);
	for (uint32_t i = 0; i < x->nband; i++) {
		band_reads(x, &x->band[i], p);
		band_writes(x, &x->band[i], p);
	}
	assert(p->mode != LAYOUT_WRITE_RMW || p->read_bytes == rmw_cost(x));
	assert(p->mode != LAYOUT_WRITE_RCW || p->read_bytes == rcw_cost(x));
	return 0;
}

int layout_plan_write(const struct layout_geom *g, uint64_t stripe, uint32_t off, uint32_t len,
		      uint64_t failed, struct layout_write_plan *p)
{
	struct stripe x;
	int rc;

	if (off % LAYOUT_BLOCK != 0 || len % LAYOUT_BLOCK != 0 || len == 0)
		return -EINVAL;
	rc = stripe_init(&x, g, stripe, off, len, failed);
	if (rc != 0)
		return rc;
	p->stripe = stripe;
	p->off = off;
	p->len = len;
	p->nread = p->nwrite = 0;
	p->read_bytes = p->write_bytes = 0;
	if (g->kind == LAYOUT_PARITY)
		return plan_parity(&x, p);
	return plan_direct(&x, p);
}

/* ---- write finishing ---------------------------------------------------- */

/* Rows [lo, hi) of `slot` inside the buffers of an I/O list, or NULL if no
 * single I/O covers them. */
static uint8_t *find(const struct layout_io *io, uint32_t n, uint8_t *const *buf, uint32_t slot,
		     uint32_t lo, uint32_t hi)
{
	for (uint32_t i = 0; i < n; i++) {
		if (io[i].slot == slot && io[i].col_off <= lo && hi <= io[i].col_off + io[i].len)
			return buf[i] + (lo - io[i].col_off);
	}
	return NULL;
}

/* The new data of column c at row `row`.  ISA-L takes sources as
 * non-const pointers but never writes them. */
static uint8_t *new_data(const struct stripe *x, const uint8_t *src, uint32_t c, uint32_t row)
{
	return (uint8_t *)src + ((uint64_t)c * x->il + row - x->off);
}

/* Write buffers of the live parities over rows [lo, hi) into out[]; the
 * count is returned and *first is the first one's parity row.  With
 * m <= 2 the live rows are contiguous, as ISA-L's row tables need. */
static uint32_t parity_outs(const struct stripe *x, const struct layout_write_plan *p,
			    uint8_t *const *wbuf, uint32_t lo, uint32_t hi, uint8_t **out,
			    uint32_t *first)
{
	uint32_t nr = 0;

	*first = 0;
	for (uint32_t j = 0; j < x->m; j++) {
		uint8_t *b = find(p->write, p->nwrite, wbuf, x->k + j, lo, hi);

		if (b == NULL)
			continue;
		if (nr == 0)
			*first = j;
		out[nr++] = b;
	}
	assert(nr == 0 || *first + nr <= x->m);
	return nr;
}

/* Cut the band where some column's written piece starts or ends, so each
 * sub-interval is, for every column, all written or all not.  Returns the
 * number of cut points (sorted, distinct, first b->lo, last b->hi). */
static uint32_t band_cuts(const struct stripe *x, const struct band *b, uint32_t *cut)
{
	uint32_t n = 0, u = 1;

	cut[n++] = b->lo;
	cut[n++] = b->hi;
	for (uint32_t c = b->c0; c <= b->c1; c++) {
		uint32_t lo, hi;

		piece(x, b, c, &lo, &hi);
		cut[n++] = lo;
		cut[n++] = hi;
	}
	for (uint32_t i = 1; i < n; i++) { /* insertion sort, n <= 34 */
		for (uint32_t j = i; j > 0 && cut[j - 1] > cut[j]; j--) {
			uint32_t t = cut[j];

			cut[j] = cut[j - 1];
			cut[j - 1] = t;
		}
	}
	for (uint32_t i = 1; i < n; i++) {
		if (cut[i] != cut[u - 1])
			cut[u++] = cut[i];
	}
	return u;
}

static int written(const struct stripe *x, const struct band *b, uint32_t c, uint32_t lo,
		   uint32_t hi)
{
	uint32_t plo, phi;

	return piece(x, b, c, &plo, &phi) > 0 && plo <= lo && hi <= phi;
}

struct finish {
	const struct stripe *x;
	struct layout_codec *codec;
	const struct layout_write_plan *p;
	const uint8_t *src;
	uint8_t *const *rbuf;
	uint8_t *const *wbuf;
};

/* FULL and RCW over rows [lo, hi): encode new data and unwritten old. */
static int encode_rows(const struct finish *f, const struct band *b, uint32_t lo, uint32_t hi)
{
	const struct stripe *x = f->x;
	uint8_t *data[LAYOUT_MAX_COLUMNS], *out[LAYOUT_MAX_PARITY];
	uint32_t first, nr = parity_outs(x, f->p, f->wbuf, lo, hi, out, &first);

	if (nr == 0)
		return 0;
	for (uint32_t d = 0; d < x->k; d++) {
		if (written(x, b, d, lo, hi))
			data[d] = new_data(x, f->src, d, lo);
		else
			data[d] = find(f->p->read, f->p->nread, f->rbuf, d, lo, hi);
		if (data[d] == NULL)
			return -EIO;
	}
	layout_ec_encode(hi - lo, x->k, nr, layout_codec_enc_tables(f->codec, first), data, out);
	return 0;
}

/* RMW over a band: parity = old parity + G * old + G * new, column by
 * column (GF addition is XOR, so that is old parity + G * (old ^ new)
 * without a scratch buffer for the delta). */
static int update_band(const struct finish *f, const struct band *b)
{
	const struct stripe *x = f->x;
	uint8_t *out[LAYOUT_MAX_PARITY], *at[LAYOUT_MAX_PARITY];
	uint32_t first, nr = parity_outs(x, f->p, f->wbuf, b->lo, b->hi, out, &first);
	const uint8_t *tbls = nr ? layout_codec_enc_tables(f->codec, first) : NULL;

	for (uint32_t r = 0; r < nr; r++) {
		uint8_t *old =
		    find(f->p->read, f->p->nread, f->rbuf, x->k + first + r, b->lo, b->hi);

		if (old == NULL)
			return -EIO;
		memcpy(out[r], old, b->hi - b->lo);
	}
	for (uint32_t c = b->c0; c <= b->c1 && nr > 0; c++) {
		uint32_t lo, hi;
		uint8_t *old;

		piece(x, b, c, &lo, &hi);
		old = find(f->p->read, f->p->nread, f->rbuf, c, lo, hi);
		if (old == NULL)
			return -EIO;
		for (uint32_t r = 0; r < nr; r++)
			at[r] = out[r] + (lo - b->lo);
		layout_ec_update(hi - lo, x->k, nr, c, tbls, old, at);
		layout_ec_update(hi - lo, x->k, nr, c, tbls, new_data(x, f->src, c, lo), at);
	}
	return 0;
}

/* Row j of the rebuild matrix (see below): k survivor coefficients, then
 * one per written column in column order. */
static void rebuild_coefs(const struct layout_codec *codec, uint32_t j, uint32_t wmask,
			  uint8_t old[][LAYOUT_MAX_COLUMNS], uint8_t *a)
{
	uint32_t k = layout_codec_k(codec), nw = 0;

	for (uint32_t i = 0; i < k; i++) {
		uint8_t v = 0;

		for (uint32_t d = 0; d < k; d++) {
			if (!(wmask & (1u << d)))
				v ^= gf_mul(layout_codec_coef(codec, j, d), old[d][i]);
		}
		a[i] = v;
	}
	for (uint32_t d = 0; d < k; d++) {
		if (wmask & (1u << d))
			a[k + nw++] = layout_codec_coef(codec, j, d);
	}
}

/*
 * REBUILD over rows [lo, hi).  With S the first k slots read and D the
 * decode matrix for the others, old data column d is sum_i D'[d][i] S_i
 * (D' = D's row for an erased column, a unit vector for a survivor), so
 *   new parity_j = sum_{d written} G[j][d] new_d
 *                + sum_i (sum_{d not written} G[j][d] D'[d][i]) S_i,
 * one ISA-L pass over k + (written columns) sources and no scratch.
 */
static int rebuild_rows(const struct finish *f, const struct band *b, uint32_t lo, uint32_t hi)
{
	const struct stripe *x = f->x;
	uint8_t *srcs[LAYOUT_EC_MAX_SRC], *out[LAYOUT_MAX_PARITY];
	uint8_t old[LAYOUT_MAX_COLUMNS][LAYOUT_MAX_COLUMNS] = {{0}}; /* D' */
	uint8_t a[LAYOUT_MAX_PARITY * LAYOUT_EC_MAX_SRC];
	uint8_t tbls[LAYOUT_EC_TBL * LAYOUT_MAX_PARITY * LAYOUT_EC_MAX_SRC];
	uint32_t first, nr = parity_outs(x, f->p, f->wbuf, lo, hi, out, &first);
	uint32_t ns = 0, erased = 0, wmask = 0;
	const uint8_t *rows, *dtbls;

	if (nr == 0)
		return 0;
	for (uint32_t s = 0; s < x->n; s++) {
		uint8_t *buf = ns < x->k ? find(f->p->read, f->p->nread, f->rbuf, s, lo, hi) : NULL;

		if (buf == NULL) {
			erased |= 1u << s;
			continue;
		}
		if (s < x->k)
			old[s][ns] = 1;
		srcs[ns++] = buf;
	}
	if (ns < x->k || layout_codec_decode_matrix(f->codec, erased, &rows, &dtbls) != 0)
		return -EIO;
	for (uint32_t s = 0, r = 0; s < x->n; s++) {
		if (!(erased & (1u << s)))
			continue;
		if (s < x->k)
			memcpy(old[s], rows + r * x->k, x->k);
		r++;
	}
	for (uint32_t d = 0; d < x->k; d++) {
		if (written(x, b, d, lo, hi)) {
			wmask |= 1u << d;
			srcs[ns++] = new_data(x, f->src, d, lo);
		}
	}
	for (uint32_t r = 0; r < nr; r++)
		rebuild_coefs(f->codec, first + r, wmask, old, a + r * ns);
	ec_init_tables((int)ns, (int)nr, a, tbls);
	layout_ec_encode(hi - lo, ns, nr, tbls, srcs, out);
	return 0;
}

static int finish_band(const struct finish *f, const struct band *b)
{
	uint32_t cut[2 + 2 * LAYOUT_MAX_COLUMNS];
	uint32_t ncut;
	int rc = 0;

	if (f->p->mode == LAYOUT_WRITE_RMW)
		return update_band(f, b);
	ncut = band_cuts(f->x, b, cut);
	for (uint32_t i = 0; i + 1 < ncut && rc == 0; i++) {
		if (f->p->mode == LAYOUT_WRITE_REBUILD)
			rc = rebuild_rows(f, b, cut[i], cut[i + 1]);
		else
			rc = encode_rows(f, b, cut[i], cut[i + 1]);
	}
	return rc;
}

static int codec_fits(const struct layout_codec *codec, const struct stripe *x)
{
	return codec != NULL && layout_codec_k(codec) == x->k && layout_codec_m(codec) == x->m;
}

int layout_plan_finish(struct layout_codec *codec, const struct layout_geom *g,
		       const struct layout_write_plan *p, const uint8_t *src, uint8_t *const *rbuf,
		       uint8_t *const *wbuf)
{
	struct stripe x;
	struct finish f = {&x, codec, p, src, rbuf, wbuf};
	int rc = stripe_init(&x, g, p->stripe, p->off, p->len, 0);

	if (rc != 0)
		return rc;
	for (uint32_t i = 0; i < p->nwrite; i++) {
		const struct layout_io *w = &p->write[i];

		if (w->slot < x.k)
			memcpy(wbuf[i], new_data(&x, src, w->slot, w->col_off), w->len);
	}
	if (g->kind != LAYOUT_PARITY)
		return 0;
	if (!codec_fits(codec, &x))
		return -EINVAL;
	for (uint32_t i = 0; i < x.nband && rc == 0; i++)
		rc = finish_band(&f, &x.band[i]);
	return rc;
}

/* ---- reads -------------------------------------------------------------- */

static int read_band_copies(const struct stripe *x, const struct band *b, uint32_t pick,
			    struct layout_read_plan *p)
{
	uint32_t copies = x->g->copies;

	for (uint32_t c = b->c0; c <= b->c1; c++) {
		uint32_t lo, hi, t;

		piece(x, b, c, &lo, &hi);
		for (t = 0; t < copies; t++) {
			uint32_t copy = (pick + c + t) % copies;

			if (live(x, c, copy)) {
				add_io(p->read, &p->nread, &p->read_bytes, pos_of(x, c, copy), c,
				       lo, hi);
				break;
			}
		}
		if (t == copies)
			return -EIO;
	}
	return 0;
}

/*
 * A parity band with a needed column missing: read k live slots -- the
 * needed live columns first, as they are read anyway -- over the rows
 * the missing columns need, widened to the needed rows of each.
 */
static int read_band_degraded(const struct stripe *x, const struct band *b, uint32_t missing,
			      struct layout_read_plan *p)
{
	uint32_t dlo = b->hi, dhi = b->lo, chosen = 0, cnt = 0, lo, hi;

	for (uint32_t c = b->c0; c <= b->c1; c++) {
		piece(x, b, c, &lo, &hi);
		if (missing & (1u << c)) {
			dlo = lo < dlo ? lo : dlo;
			dhi = hi > dhi ? hi : dhi;
		} else {
			chosen |= 1u << c;
			cnt++;
		}
	}
	for (uint32_t s = 0; s < x->n && cnt < x->k; s++) {
		if (!(chosen & (1u << s)) && live(x, s, 0)) {
			chosen |= 1u << s;
			cnt++;
		}
	}
	if (cnt < x->k)
		return -EIO;
	p->degraded = 1;
	for (uint32_t s = 0; s < x->n; s++) {
		if (!(chosen & (1u << s)))
			continue;
		lo = dlo;
		hi = dhi;
		if (s >= b->c0 && s <= b->c1) {
			uint32_t plo, phi;

			piece(x, b, s, &plo, &phi);
			lo = plo < lo ? plo : lo;
			hi = phi > hi ? phi : hi;
		}
		add_io(p->read, &p->nread, &p->read_bytes, pos_of(x, s, 0), s, lo, hi);
	}
	return 0;
}

static int read_band_parity(const struct stripe *x, const struct band *b,
			    struct layout_read_plan *p)
{
	uint32_t missing = 0;

	for (uint32_t c = b->c0; c <= b->c1; c++) {
		if (!live(x, c, 0))
			missing |= 1u << c;
	}
	if (missing != 0)
		return read_band_degraded(x, b, missing, p);
	for (uint32_t c = b->c0; c <= b->c1; c++) {
		uint32_t lo, hi;

		piece(x, b, c, &lo, &hi);
		add_io(p->read, &p->nread, &p->read_bytes, pos_of(x, c, 0), c, lo, hi);
	}
	return 0;
}

int layout_plan_read(const struct layout_geom *g, uint64_t stripe, uint32_t off, uint32_t len,
		     uint64_t failed, uint32_t pick, struct layout_read_plan *p)
{
	struct stripe x;
	int rc = stripe_init(&x, g, stripe, off, len, failed);

	if (rc != 0)
		return rc;
	p->stripe = stripe;
	p->off = off;
	p->len = len;
	p->degraded = 0;
	p->nread = 0;
	p->read_bytes = 0;
	for (uint32_t i = 0; i < x.nband && rc == 0; i++) {
		if (g->kind == LAYOUT_PARITY)
			rc = read_band_parity(&x, &x.band[i], p);
		else
			rc = read_band_copies(&x, &x.band[i], pick, p);
	}
	return rc;
}

/* Rebuild rows [lo, hi) of data column c from the first k slots read
 * over them, straight into out. */
static int decode_into(struct layout_codec *codec, const struct stripe *x,
		       const struct layout_read_plan *p, uint8_t *const *rbuf, uint32_t c,
		       uint32_t lo, uint32_t hi, uint8_t *out)
{
	uint8_t *srcs[LAYOUT_MAX_COLUMNS];
	uint32_t ns = 0, erased = 0, row;
	const uint8_t *rows, *tbls;

	if (!codec_fits(codec, x))
		return -EINVAL;
	for (uint32_t s = 0; s < x->n; s++) {
		uint8_t *buf = ns < x->k ? find(p->read, p->nread, rbuf, s, lo, hi) : NULL;

		if (buf != NULL)
			srcs[ns++] = buf;
		else
			erased |= 1u << s;
	}
	if (ns < x->k || !(erased & (1u << c)) ||
	    layout_codec_decode_matrix(codec, erased, &rows, &tbls) != 0)
		return -EIO;
	row = (uint32_t)__builtin_popcount(erased & ((1u << c) - 1));
	layout_ec_encode(hi - lo, x->k, 1, tbls + row * LAYOUT_EC_TBL * x->k, srcs, &out);
	return 0;
}

int layout_plan_assemble(struct layout_codec *codec, const struct layout_geom *g,
			 const struct layout_read_plan *p, uint8_t *const *rbuf, uint8_t *dst)
{
	struct stripe x;
	int rc = stripe_init(&x, g, p->stripe, p->off, p->len, 0);

	if (rc != 0)
		return rc;
	for (uint32_t i = 0; i < x.nband && rc == 0; i++) {
		const struct band *b = &x.band[i];

		for (uint32_t c = b->c0; c <= b->c1 && rc == 0; c++) {
			uint32_t lo, hi;
			uint8_t *out, *buf;

			piece(&x, b, c, &lo, &hi);
			out = dst + ((uint64_t)c * x.il + lo - x.off);
			buf = find(p->read, p->nread, rbuf, c, lo, hi);
			if (buf != NULL)
				memcpy(out, buf, hi - lo);
			else if (g->kind == LAYOUT_PARITY)
				rc = decode_into(codec, &x, p, rbuf, c, lo, hi, out);
			else
				rc = -EIO;
		}
	}
	return rc;
}
