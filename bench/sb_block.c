/*
 * sb_block.c -- self-describing blocks for the write/verify mode.
 *
 * A crash or fault test must tell, for every block of a file, whether it
 * holds exactly what was acknowledged.  Comparing against a saved copy
 * says "different" but not why; a block that names itself says much more.
 * Every 4 KiB sector written by `spacebench write` carries the run id,
 * its own offset, the generation of the write and a CRC-32C, so a reader
 * needs only the log of generations to classify a block: the expected
 * generation (ok), an older one (stale), another offset's data
 * (misplaced), zeros where data was acknowledged (lost), a failed CRC
 * (corrupt) or sectors from different writes (torn).  A block whose write
 * was in flight at a crash may legitimately hold, wholly or sector by
 * sector, what it held before (the last acknowledged write, or, from the
 * PRIOR CRCs of the log, an earlier run's block or the file's previous
 * bytes): "in-flight-old", counted but allowed.  The filler after
 * the header is derived from the header so that a sector cannot pass its
 * CRC by being mostly zero.
 */
#include <string.h>

#include "bench/sb.h"
#include "layout/layout.h"

void sb_rng_seed(struct sb_rng *r, uint64_t seed)
{
	r->s = seed ? seed : 0x9e3779b97f4a7c15ull;
}

/* splitmix64: small, fast, good enough for offsets and fillers. */
uint64_t sb_rng_next(struct sb_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t sb_rng_below(struct sb_rng *r, uint64_t n)
{
	return n ? sb_rng_next(r) % n : 0;
}

/* CRC-32C of the sector with its crc field taken as zero. */
static uint32_t sector_crc(const uint8_t *sec)
{
	uint8_t tmp[SB_SECTOR];

	memcpy(tmp, sec, SB_SECTOR);
	sb_put32(tmp + 4, 0);
	return layout_crc32c(tmp, SB_SECTOR);
}

static void sector_fill(uint8_t *sec, uint64_t run, uint64_t offset, uint64_t gen)
{
	struct sb_rng r;

	sb_rng_seed(&r, run ^ (offset * 0x100000001b3ull) ^ (gen << 17));
	for (uint32_t i = SB_HDR_BYTES; i < SB_SECTOR; i += 8)
		sb_put64(sec + i, sb_rng_next(&r));
	sb_put32(sec, SB_BLOCK_MAGIC);
	sb_put32(sec + 4, 0);
	sb_put64(sec + 8, run);
	sb_put64(sec + 16, offset);
	sb_put64(sec + 24, gen);
	sb_put32(sec + 4, sector_crc(sec));
}

void sb_block_fill(void *buf, uint32_t bs, uint64_t run, uint64_t offset, uint64_t gen)
{
	for (uint32_t i = 0; i < bs; i += SB_SECTOR)
		sector_fill((uint8_t *)buf + i, run, offset + i, gen);
}

const char *sb_verdict_name(enum sb_verdict v)
{
	static const char *const names[SB_NVERDICT] = {
	    "ok", "lost", "torn", "corrupt", "misplaced", "stale", "in-flight-old"};
	return v < SB_NVERDICT ? names[v] : "?";
}

uint32_t sb_prior_crc(const void *sector)
{
	return layout_crc32c(sector, SB_SECTOR);
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* What one sector holds, judged alone.  The first three are allowed. */
enum sec_kind {
	SEC_NEW,    /* this run's, this offset, a generation that may be here */
	SEC_PRIOR,  /* the content from before the run, where that may be */
	SEC_ZERO,   /* zeros, where content from before the run may be (v1) */
	SEC_OLDGEN, /* this run's, an older generation than owed */
	SEC_OLD,    /* the content from before the run (or zeros), not owed */
	SEC_BAD,    /* magic or CRC wrong */
	SEC_FOREIGN /* a valid sector of another offset or run, or of a
		       generation never issued here */
};

/* The rules of one block: generations [floor, submitted] may be there;
 * content from before the run too when floor is 0. */
struct rules {
	uint64_t run, floor, submitted;
};

static enum sec_kind other_kind(const uint8_t *sec, uint32_t prior, int have_prior,
				const struct rules *r, enum sec_kind raw)
{
	int old_ok = r->floor == 0;

	if (have_prior && sb_prior_crc(sec) == prior)
		return old_ok ? SEC_PRIOR : SEC_OLD;
	if (raw == SEC_ZERO && !have_prior)
		return old_ok ? SEC_ZERO : SEC_OLD;
	if (raw == SEC_ZERO)
		return SEC_OLD; /* zeros where other bytes were: reads as lost */
	return raw;
}

static enum sec_kind sector_kind(const uint8_t *sec, uint64_t offset, uint32_t prior,
				 int have_prior, const struct rules *r, uint64_t *gen)
{
	enum sec_kind raw;

	*gen = 0;
	if (all_zero(sec, SB_SECTOR))
		raw = SEC_ZERO;
	else if (sb_get32(sec) != SB_BLOCK_MAGIC || sb_get32(sec + 4) != sector_crc(sec))
		raw = SEC_BAD;
	else if (sb_get64(sec + 8) != r->run || sb_get64(sec + 16) != offset)
		raw = SEC_FOREIGN;
	else {
		*gen = sb_get64(sec + 24);
		if (*gen >= r->floor && *gen <= r->submitted && *gen)
			return SEC_NEW;
		raw = *gen > r->submitted ? SEC_FOREIGN : SEC_OLDGEN;
	}
	return other_kind(sec, prior, have_prior, r, raw);
}

/* What one block's sectors hold, before judging it. */
struct scan {
	uint32_t n[SEC_FOREIGN + 1];
	uint64_t gen_min, gen_max; /* over SEC_NEW and SEC_OLDGEN sectors */
	uint32_t with_gen;
};

static enum sb_verdict judge(const struct scan *s, uint32_t n, const struct sb_expect *e)
{
	uint32_t allowed = s->n[SEC_NEW] + s->n[SEC_PRIOR] + s->n[SEC_ZERO];
	int one_gen = s->with_gen == n && s->gen_min == s->gen_max;

	if (s->n[SEC_BAD])
		return SB_CORRUPT;
	if (s->n[SEC_FOREIGN])
		return SB_MISPLACED;
	if (allowed == n) /* a mix of allowed contents is a write in flight */
		return one_gen && s->gen_min == e->submitted ? SB_OK : SB_INFLIGHT;
	if (s->n[SEC_OLD] == n || one_gen)
		return SB_STALE; /* wholly older content than owed */
	return SB_TORN;
}

enum sb_verdict sb_block_check(const void *buf, uint32_t bs, uint64_t run, uint64_t offset,
			       const struct sb_expect *e, const uint32_t *prior, int durable_only,
			       uint64_t *found)
{
	struct rules r = {run, durable_only ? e->durable : e->acked, e->submitted};
	struct scan s = {0};
	uint32_t n = bs / SB_SECTOR, zeros = 0;

	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *sec = (const uint8_t *)buf + (size_t)i * SB_SECTOR;
		uint64_t g;
		enum sec_kind k = sector_kind(sec, offset + (uint64_t)i * SB_SECTOR,
					      prior ? prior[i] : 0, prior != NULL, &r, &g);
		s.n[k]++;
		zeros += k == SEC_OLD && all_zero(sec, SB_SECTOR);
		if (k == SEC_NEW || k == SEC_OLDGEN) {
			if (!s.with_gen || g < s.gen_min)
				s.gen_min = g;
			if (!s.with_gen || g > s.gen_max)
				s.gen_max = g;
			s.with_gen++;
		}
	}
	*found = (s.with_gen == n && s.gen_min == s.gen_max) ? s.gen_min : 0;
	if (zeros == n)
		return SB_LOST;
	return judge(&s, n, e);
}
