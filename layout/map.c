/*
 * map.c -- where a file's bytes live: stripe, column, position, chunk offset.
 *
 * A file's data is cut into interleave-sized units laid out row by row:
 * unit u is data column u % k of stripe u / k.  Every position (disk) of
 * the file has one chunk file, and stripe s occupies bytes
 * [s * interleave, (s + 1) * interleave) of every chunk, so the chunk
 * offset of a byte never depends on which position holds it.  That keeps
 * every chunk file the same size, keeps sparse holes aligned across the
 * positions, and makes rebuilding a position a plain walk over offsets.
 *
 * Which position holds which slot is the one decision that cannot change
 * once a byte has been written, so the formulas below are copied from
 * layout.h verbatim and pinned by tests/layout/test_map.c:
 *
 *   simple:  data column d           -> position d
 *   mirror:  data column d, copy c   -> position c * k + d
 *   parity:  n = k + m, pd = (n - 1) - (s % n)
 *            parity j                -> position (pd + j) % n
 *            data column d           -> position (pd + m + d) % n
 *
 * Parity walks backwards one position per stripe and the data columns
 * follow it round the ring (md's left-symmetric), so every position
 * takes 1/n of the parity writes and a sequential read touches every
 * disk.
 */
#include <assert.h>

#include "layout/layout.h"

/* pd: the position of parity 0 in stripe s. */
static uint32_t parity_base(uint32_t n, uint64_t stripe)
{
	return (n - 1) - (uint32_t)(stripe % n);
}

uint32_t layout_slot_pos(const struct layout_geom *g, uint64_t stripe, uint32_t slot, uint32_t copy)
{
	uint32_t k = layout_data_columns(g);

	assert(copy < g->copies);
	switch (g->kind) {
	case LAYOUT_MIRROR:
		assert(slot < k);
		return copy * k + slot;
	case LAYOUT_PARITY: {
		uint32_t n = g->columns, m = g->parity, pd = parity_base(n, stripe);

		assert(slot < n);
		if (slot >= k)
			return (pd + (slot - k)) % n;
		return (pd + m + slot) % n;
	}
	case LAYOUT_SIMPLE:
		break;
	}
	assert(slot < k);
	return slot;
}

void layout_pos_slot(const struct layout_geom *g, uint64_t stripe, uint32_t pos, uint32_t *slot,
		     uint32_t *copy)
{
	uint32_t k = layout_data_columns(g);

	assert(pos < layout_positions(g));
	*copy = 0;
	switch (g->kind) {
	case LAYOUT_MIRROR:
		*slot = pos % k;
		*copy = pos / k;
		return;
	case LAYOUT_PARITY: {
		uint32_t n = g->columns, m = g->parity;
		/* r: distance round the ring from parity 0. */
		uint32_t r = (pos + n - parity_base(n, stripe)) % n;

		*slot = r < m ? k + r : r - m;
		return;
	}
	case LAYOUT_SIMPLE:
		break;
	}
	*slot = pos;
}

/*
 * The count is computed, not walked, so a caller can size its array for a
 * huge range with one call (max 0) and a too-small array costs nothing.
 */
size_t layout_map(const struct layout_geom *g, uint64_t off, uint64_t len,
		  struct layout_extent *out, size_t max)
{
	uint64_t il = g->interleave, k = layout_data_columns(g);
	size_t need, i;

	if (len == 0)
		return 0;
	need = (size_t)((off + len - 1) / il - off / il + 1);
	for (i = 0; i < need && i < max; i++) {
		uint64_t unit = off / il;
		uint32_t col_off = (uint32_t)(off % il);
		uint64_t n = il - col_off < len ? il - col_off : len;

		out[i] = (struct layout_extent){
		    .stripe = unit / k,
		    .col = (uint32_t)(unit % k),
		    .col_off = col_off,
		    .len = (uint32_t)n,
		    .chunk_off = unit / k * il + col_off,
		    .buf_off = i == 0 ? 0 : out[i - 1].buf_off + out[i - 1].len,
		};
		off += n;
		len -= n;
	}
	return need;
}
