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
 * (corrupt) or sectors from different writes (torn).  The filler after
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
	static const char *const names[SB_NVERDICT] = {"ok",	  "lost",      "torn",
						       "corrupt", "misplaced", "stale"};
	return v < SB_NVERDICT ? names[v] : "?";
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* What one block's sectors hold, before judging it. */
struct scan {
	uint32_t zero, bad, foreign, good;
	uint64_t gen_min, gen_max;
};

static void scan_sector(const uint8_t *sec, uint64_t run, uint64_t offset, struct scan *s)
{
	if (all_zero(sec, SB_SECTOR)) {
		s->zero++;
		return;
	}
	if (sb_get32(sec) != SB_BLOCK_MAGIC || sb_get32(sec + 4) != sector_crc(sec)) {
		s->bad++;
		return;
	}
	if (sb_get64(sec + 8) != run || sb_get64(sec + 16) != offset) {
		s->foreign++;
		return;
	}
	uint64_t g = sb_get64(sec + 24);
	if (!s->good || g < s->gen_min)
		s->gen_min = g;
	if (!s->good || g > s->gen_max)
		s->gen_max = g;
	s->good++;
}

static enum sb_verdict judge_gen(uint64_t g, const struct sb_expect *e, int durable_only)
{
	uint64_t need = durable_only ? e->durable : e->acked;

	if (g > e->submitted)
		return SB_MISPLACED; /* a generation never issued here */
	if (g == e->acked || (g >= need && g <= e->submitted))
		return SB_OK;
	return SB_STALE;
}

enum sb_verdict sb_block_check(const void *buf, uint32_t bs, uint64_t run, uint64_t offset,
			       const struct sb_expect *e, int durable_only, uint64_t *found)
{
	struct scan s = {0};
	uint32_t n = bs / SB_SECTOR;
	uint64_t need = durable_only ? e->durable : e->acked;

	for (uint32_t i = 0; i < n; i++)
		scan_sector((const uint8_t *)buf + (size_t)i * SB_SECTOR, run,
			    offset + (uint64_t)i * SB_SECTOR, &s);
	*found = (s.good == n && s.gen_min == s.gen_max) ? s.gen_min : 0;
	if (s.bad)
		return SB_CORRUPT;
	if (s.foreign)
		return SB_MISPLACED;
	if (s.zero == n)
		return need ? SB_LOST : SB_OK;
	if (s.zero || s.gen_min != s.gen_max)
		return SB_TORN;
	return judge_gen(s.gen_min, e, durable_only);
}
