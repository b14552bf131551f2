/*
 * geom.c -- layout geometry: what a valid layout is and what follows from it.
 *
 * A volume's layout is five numbers (kind, copies, parity, columns,
 * interleave) written once into the pool catalogue and never changed, so
 * every other part of spacefs trusts them only after layout_geom_check
 * has said yes.  The rules mirror Storage Spaces: "columns" counts the
 * disks one stripe spans for parity (data and parity together) but the
 * data columns for simple and mirror, each of which mirror keeps on
 * `copies` disks.  Everything else here -- data columns, positions,
 * redundancy, efficiency -- is derived from those numbers by one line of
 * arithmetic each, so that no caller re-derives them and gets it wrong.
 *
 * Defaults follow Storage Spaces too: as many columns as the disks allow
 * up to 8, interleave 256 KiB.  More columns than 8 rarely pay: a wider
 * stripe makes every partial-stripe parity write read more.  One
 * exception, for parity: the data columns are a power of two (the most
 * the disks allow), so that stripes are 512 KiB or 1 MiB and the write
 * sizes applications use -- and FUSE's 1 MiB requests -- fill whole
 * stripes, which encode without reading.  Over all 6 disks of a pool, 5+1
 * columns made 1.25 MiB stripes that no 1 MiB write ever filled: every
 * sequential write paid read-modify-write.  The price is capacity: 4+1
 * keeps 80% of the raw space where 5+1 kept 83%.
 */
#include <assert.h>
#include <errno.h>
#include <strings.h>

#include "layout/layout.h"

#define DEFAULT_MAX_COLUMNS 8u
#define DEFAULT_INTERLEAVE  (256u * 1024)

static int is_pow2(uint32_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

static int kind_valid(enum layout_kind kind)
{
	return kind == LAYOUT_SIMPLE || kind == LAYOUT_MIRROR || kind == LAYOUT_PARITY;
}

/* copies and parity must say exactly what the kind means: no "mirror with
 * parity 1" that a later reader could interpret two ways. */
static int redundancy_valid(const struct layout_geom *g)
{
	switch (g->kind) {
	case LAYOUT_SIMPLE:
		return g->copies == 1 && g->parity == 0;
	case LAYOUT_MIRROR:
		return (g->copies == 2 || g->copies == 3) && g->parity == 0;
	case LAYOUT_PARITY:
		return g->copies == 1 && (g->parity == 1 || g->parity == 2);
	}
	return 0;
}

int layout_geom_check(const struct layout_geom *g)
{
	if (!kind_valid(g->kind) || !redundancy_valid(g))
		return -EINVAL;
	if (g->columns < 1 || g->columns > LAYOUT_MAX_COLUMNS)
		return -EINVAL;
	/* k >= 2: with one data column parity is just a slower mirror. */
	if (g->kind == LAYOUT_PARITY && g->columns < g->parity + 2)
		return -EINVAL;
	if ((uint64_t)g->columns * g->copies > LAYOUT_MAX_POSITIONS)
		return -EINVAL;
	if (!is_pow2(g->interleave) || g->interleave < LAYOUT_MIN_INTERLEAVE ||
	    g->interleave > LAYOUT_MAX_INTERLEAVE)
		return -EINVAL;
	return 0;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

int layout_geom_default(struct layout_geom *g, enum layout_kind kind, uint32_t copies,
			uint32_t parity, uint32_t ndisks)
{
	struct layout_geom d = {.kind = kind, .copies = 1, .interleave = DEFAULT_INTERLEAVE};

	/* 0 means "the kind's default"; anything else is checked below. */
	if (kind == LAYOUT_MIRROR)
		d.copies = copies ? copies : 2;
	else if (copies > 1)
		return -EINVAL;
	if (kind == LAYOUT_PARITY)
		d.parity = parity ? parity : 1;
	else if (parity != 0)
		return -EINVAL;

	if (kind == LAYOUT_MIRROR)
		d.columns = min_u32(ndisks / d.copies, DEFAULT_MAX_COLUMNS);
	else
		d.columns = min_u32(ndisks, DEFAULT_MAX_COLUMNS);
	if (kind == LAYOUT_PARITY && d.columns > d.parity + 2) {
		uint32_t k = 2;
		while (k * 2 <= d.columns - d.parity)
			k *= 2;
		d.columns = k + d.parity; /* full stripes: see the top */
	}

	/* Too few disks shows up as too few columns. */
	if (layout_geom_check(&d) != 0)
		return -EINVAL;
	*g = d;
	return 0;
}

const char *layout_kind_name(enum layout_kind kind)
{
	switch (kind) {
	case LAYOUT_SIMPLE:
		return "simple";
	case LAYOUT_MIRROR:
		return "mirror";
	case LAYOUT_PARITY:
		return "parity";
	}
	return "invalid";
}

int layout_kind_parse(const char *s, enum layout_kind *kind)
{
	static const enum layout_kind all[] = {LAYOUT_SIMPLE, LAYOUT_MIRROR, LAYOUT_PARITY};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcasecmp(s, layout_kind_name(all[i])) == 0) {
			*kind = all[i];
			return 0;
		}
	}
	return -EINVAL;
}

uint32_t layout_data_columns(const struct layout_geom *g)
{
	return g->kind == LAYOUT_PARITY ? g->columns - g->parity : g->columns;
}

uint32_t layout_positions(const struct layout_geom *g)
{
	return g->columns * g->copies;
}

uint32_t layout_redundancy(const struct layout_geom *g)
{
	switch (g->kind) {
	case LAYOUT_MIRROR:
		return g->copies - 1;
	case LAYOUT_PARITY:
		return g->parity;
	case LAYOUT_SIMPLE:
		break;
	}
	return 0;
}

uint64_t layout_stripe_bytes(const struct layout_geom *g)
{
	return (uint64_t)layout_data_columns(g) * g->interleave;
}

/* Not reduced for parity: 6/8 says "6 data of 8 columns", which is what
 * a user compares with the column count. */
void layout_efficiency(const struct layout_geom *g, uint32_t *num, uint32_t *den)
{
	if (g->kind == LAYOUT_PARITY) {
		*num = layout_data_columns(g);
		*den = g->columns;
	} else {
		*num = 1;
		*den = g->copies;
	}
	assert(*den > 0 && *num <= *den);
}
