/*
 * crc.c -- CRC-32C block checksums.
 *
 * spacefs checksums every 4 KiB block with the standard CRC-32C
 * (Castagnoli polynomial, as iSCSI, ext4 and btrfs use), computed by
 * ISA-L's crc32_iscsi, which uses the SSE4.2 crc32 instruction where the
 * CPU has it.  ISA-L's function neither pre- nor post-inverts, so the
 * standard value is ~crc32_iscsi(buf, len, ~0): check value of
 * "123456789" is 0xE3069283 (tests/layout/test_crc.c pins it).
 */
#include <assert.h>
#include <limits.h>

#include <isa-l/crc.h>

#include "layout/layout.h"

uint32_t layout_crc32c(const void *buf, size_t len)
{
	uint32_t crc = ~0u;
	const unsigned char *p = buf;

	/* crc32_iscsi takes an int length; feed huge buffers in pieces. */
	while (len > 0) {
		int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;
		crc = crc32_iscsi((unsigned char *)p, n, crc);
		p += n;
		len -= (size_t)n;
	}
	return ~crc;
}

void layout_crc_blocks(const void *buf, size_t len, uint32_t *out)
{
	const unsigned char *p = buf;

	assert(len % LAYOUT_BLOCK == 0);
	for (size_t i = 0; i < len / LAYOUT_BLOCK; i++)
		out[i] = layout_crc32c(p + i * LAYOUT_BLOCK, LAYOUT_BLOCK);
}
