/*
 * internal.h -- what plan.c needs from codec.c beyond the public API.
 *
 * The public codec calls work on whole slots with every parity present.
 * The planner computes parity straight into the caller's write buffers,
 * where a failed parity position has no buffer and a missing data column
 * is folded into the parity arithmetic instead of being materialised,
 * because layout/ allocates nothing per request.  For that it needs the
 * raw ISA-L tables of single parity rows and the decode matrices.
 *
 * ISA-L lays tables out row after row (32 * k bytes per output row), so
 * the tables of rows r..r+n-1 start at tables + r * 32 * k.  With
 * m <= 2 every subset of rows plan.c asks for is contiguous.
 */
#ifndef SPACEFS_LAYOUT_INTERNAL_H
#define SPACEFS_LAYOUT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "layout/layout.h"

/* Most sources one ISA-L call of ours takes: k survivors plus up to k new
 * data columns (plan.c's rebuild formula). */
#define LAYOUT_EC_MAX_SRC (2 * LAYOUT_MAX_COLUMNS)
#define LAYOUT_EC_TBL	  32u /* bytes of ISA-L table per coefficient */

/* G[j][d]: coefficient of data column d in parity j. */
uint8_t layout_codec_coef(const struct layout_codec *c, uint32_t j, uint32_t d);
/* Encode tables of parity rows j.. (32 * k bytes per row). */
const uint8_t *layout_codec_enc_tables(const struct layout_codec *c, uint32_t j);
/* Decode matrix for erasure bitmask `erased` (1..m slots): one row of k
 * coefficients per erased slot, in ascending slot order, applied to the
 * first k slots not in `erased`, ascending.  *rows and *tbls (ISA-L
 * tables of those rows) stay valid as long as the codec.  -EINVAL for a
 * bad mask. */
int layout_codec_decode_matrix(struct layout_codec *c, uint32_t erased, const uint8_t **rows,
			       const uint8_t **tbls);

/* ec_encode_data for any size_t len (ISA-L takes int); len 0 is a no-op. */
void layout_ec_encode(size_t len, uint32_t nsrc, uint32_t rows, const uint8_t *tbls,
		      uint8_t *const *src, uint8_t *const *dst);
/* ec_encode_data_update likewise: dst[r] ^= row r's coefficient of
 * source `vec` times src, for rows 0..rows-1 of `tbls` (k sources). */
void layout_ec_update(size_t len, uint32_t k, uint32_t rows, uint32_t vec, const uint8_t *tbls,
		      const uint8_t *src, uint8_t *const *dst);

#endif /* SPACEFS_LAYOUT_INTERNAL_H */
