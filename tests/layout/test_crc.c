/*
 * test_crc.c -- the block checksum is standard CRC-32C.
 *
 * The values are the published ones (RFC 3720 appendix B.4 and the CRC
 * catalogue's check value), so a checksum written by spacefs can be
 * verified by any other CRC-32C implementation.  A bitwise reference
 * here covers random lengths and alignments, and layout_crc_blocks must
 * agree with one layout_crc32c call per block.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layout/layout.h"

#define DEFAULT_SEED 0x5eed0004u

static uint32_t test_seed(void)
{
	const char *e = getenv("LAYOUT_SEED");

	return e ? (uint32_t)strtoul(e, NULL, 0) : DEFAULT_SEED;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

/* Bit at a time, reflected polynomial 0x82F63B78. */
static uint32_t crc32c_reference(const uint8_t *p, size_t n)
{
	uint32_t crc = ~0u;

	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
	}
	return ~crc;
}

static void test_crc_check_value(void **state)
{
	(void)state;
	assert_int_equal(layout_crc32c("123456789", 9), 0xE3069283u);
	assert_int_equal(layout_crc32c("", 0), 0);
}

static void test_crc_rfc3720(void **state)
{
	uint8_t buf[32];
	(void)state;

	memset(buf, 0, sizeof(buf));
	assert_int_equal(layout_crc32c(buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(layout_crc32c(buf, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(layout_crc32c(buf, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	assert_int_equal(layout_crc32c(buf, 32), 0x113FDB5Cu);
}

static void test_crc_reference(void **state)
{
	uint32_t seed = test_seed();
	uint64_t s = seed;
	uint8_t *buf = malloc(9000);
	(void)state;

	for (size_t i = 0; i < 9000; i++)
		buf[i] = (uint8_t)rng_next(&s);
	for (int i = 0; i < 300; i++) {
		size_t off = rng_next(&s) % 64, len = rng_next(&s) % (9000 - 64);

		if (layout_crc32c(buf + off, len) != crc32c_reference(buf + off, len))
			fail_msg("off %zu len %zu (seed 0x%x)", off, len, seed);
	}
	free(buf);
}

static void test_crc_blocks(void **state)
{
	enum { NBLK = 5 };
	uint8_t *buf = malloc(NBLK * LAYOUT_BLOCK);
	uint32_t out[NBLK + 1];
	uint64_t s = test_seed();
	(void)state;

	for (size_t i = 0; i < NBLK * LAYOUT_BLOCK; i++)
		buf[i] = (uint8_t)rng_next(&s);
	memset(buf + 2 * LAYOUT_BLOCK, 0, LAYOUT_BLOCK);
	out[NBLK] = 0xdeadbeef;
	layout_crc_blocks(buf, NBLK * LAYOUT_BLOCK, out);
	for (int i = 0; i < NBLK; i++)
		assert_int_equal(out[i], layout_crc32c(buf + i * LAYOUT_BLOCK, LAYOUT_BLOCK));
	assert_int_equal(out[NBLK], 0xdeadbeef); /* one value per block, no more */
	assert_int_not_equal(out[0], out[1]);
	layout_crc_blocks(buf, 0, out);
	assert_int_equal(out[0], layout_crc32c(buf, LAYOUT_BLOCK));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc_check_value),
	    cmocka_unit_test(test_crc_rfc3720),
	    cmocka_unit_test(test_crc_reference),
	    cmocka_unit_test(test_crc_blocks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
