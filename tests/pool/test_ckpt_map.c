/*
 * test_ckpt_map.c -- the checkpoint layer maps (pool/ckpt.c): granule
 * states, the 4 KiB block masks of PART granules (marks add blocks, a
 * full mask turns DATA, NONE and ZERO clear the mask so a later PART
 * starts empty), counts, next(), growth across mask leaves, refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "pool/ckpt.h"

static void test_mark(void **state)
{
	struct pool_ckpt_map m = {0};

	(void)state;
	assert_int_equal(pool_ckpt_map_get(&m, 5), POOL_CKPT_NONE);
	assert_int_equal(pool_ckpt_map_blocks(&m, 5), 0);
	assert_int_equal(pool_ckpt_map_mark(&m, 5, 1u << 2), 0);
	assert_int_equal(pool_ckpt_map_get(&m, 5), POOL_CKPT_PART);
	assert_int_equal(pool_ckpt_map_blocks(&m, 5), 1u << 2);
	assert_int_equal(m.ndata, 1);
	assert_int_equal(pool_ckpt_map_mark(&m, 5, 0x00f0), 0);
	assert_int_equal(pool_ckpt_map_blocks(&m, 5), 0x00f4);
	assert_int_equal(m.ndata, 1);
	/* neighbours in the same byte of states are untouched */
	assert_int_equal(pool_ckpt_map_get(&m, 4), POOL_CKPT_NONE);
	assert_int_equal(pool_ckpt_map_get(&m, 6), POOL_CKPT_NONE);
	assert_int_equal(pool_ckpt_map_next(&m, 0), 5);
	assert_int_equal(pool_ckpt_map_next(&m, 6), UINT64_MAX);
	/* the rest of the blocks: DATA */
	assert_int_equal(pool_ckpt_map_mark(&m, 5, 0xff0b), 0);
	assert_int_equal(pool_ckpt_map_get(&m, 5), POOL_CKPT_DATA);
	assert_int_equal(pool_ckpt_map_blocks(&m, 5), POOL_CKPT_FULL);
	assert_int_equal(pool_ckpt_map_mark(&m, 5, 1), -EINVAL);
	assert_int_equal(m.ndata, 1);
	pool_ckpt_map_free(&m);
}

static void test_set_clears(void **state)
{
	struct pool_ckpt_map m = {0};

	(void)state;
	assert_int_equal(pool_ckpt_map_mark(&m, 9, 0x0101), 0);
	assert_int_equal(pool_ckpt_map_set(&m, 9, 1, POOL_CKPT_ZERO), 0);
	assert_int_equal(pool_ckpt_map_blocks(&m, 9), 0);
	assert_int_equal(pool_ckpt_map_mark(&m, 9, 1), -EINVAL); /* ZERO: copied up whole */
	assert_int_equal(pool_ckpt_map_set(&m, 9, 1, POOL_CKPT_NONE), 0);
	assert_int_equal(m.ndata, 0);
	assert_int_equal(pool_ckpt_map_mark(&m, 9, 0x8000), 0);
	assert_int_equal(pool_ckpt_map_blocks(&m, 9), 0x8000); /* not 0x8101 */
	/* DATA over PART (a whole-granule write): whole */
	assert_int_equal(pool_ckpt_map_set(&m, 9, 1, POOL_CKPT_DATA), 0);
	assert_int_equal(pool_ckpt_map_blocks(&m, 9), POOL_CKPT_FULL);
	assert_int_equal(pool_ckpt_map_set(&m, 9, 1, POOL_CKPT_PART), -EINVAL);
	assert_int_equal(pool_ckpt_map_set(&m, 9, 1, 7), -EINVAL);
	assert_int_equal(pool_ckpt_map_mark(&m, 10, 0), -EINVAL);
	pool_ckpt_map_free(&m);
}

static void test_leaves(void **state)
{
	struct pool_ckpt_map m = {0};
	uint64_t far = 5ull * POOL_CKPT_LEAF + 17;

	(void)state;
	assert_int_equal(pool_ckpt_map_reserve(&m, 10), 0);
	assert_int_equal(pool_ckpt_map_mark(&m, 3, 0x0f00), 0);
	/* past the reserved end: grows the states and the leaf array */
	assert_int_equal(pool_ckpt_map_mark(&m, far, 0x0002), 0);
	assert_true(m.ngran > far);
	assert_int_equal(pool_ckpt_map_blocks(&m, 3), 0x0f00);
	assert_int_equal(pool_ckpt_map_blocks(&m, far), 0x0002);
	assert_int_equal(pool_ckpt_map_blocks(&m, far - POOL_CKPT_LEAF), 0);
	assert_int_equal(pool_ckpt_map_next(&m, 4), far);
	assert_int_equal(pool_ckpt_map_set(&m, 100, 3000, POOL_CKPT_DATA), 0);
	assert_int_equal(m.ndata, 3002);
	assert_int_equal(pool_ckpt_map_blocks(&m, 3099), POOL_CKPT_FULL);
	assert_int_equal(pool_ckpt_map_get(&m, 3100), POOL_CKPT_NONE);
	pool_ckpt_map_free(&m);
	assert_null(m.bits);
	assert_null(m.masks);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mark),
	    cmocka_unit_test(test_set_clears),
	    cmocka_unit_test(test_leaves),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
