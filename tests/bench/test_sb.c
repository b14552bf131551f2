/*
 * test_sb.c -- spacebench's pure parts: block verdicts, the log reader,
 * percentiles.
 *
 * verify is only as good as its verdicts, so every verdict is produced
 * here from a hand-made block (a flipped byte, sectors from two writes,
 * another offset's data, an older write, zeros) and must come out named
 * right.  The log reader must refuse every kind of damage with a message
 * naming the byte, and must derive acknowledged and fsync'd generations
 * exactly.  Percentiles are checked against known distributions within
 * the histogram's stated error (1/128).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench/sb.h"

#define RUN 0x1234567890abcdefull

static void test_block_roundtrip(void **state)
{
	static uint8_t buf[3 * SB_SECTOR];
	struct sb_expect e = {.acked = 7, .durable = 7, .submitted = 7};
	uint64_t found;

	(void)state;
	sb_block_fill(buf, sizeof(buf), RUN, 3 * 12288, 7);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, 3 * 12288, &e, NULL, 0, &found),
			 SB_OK);
	assert_int_equal(found, 7);
}

static void test_block_corrupt(void **state)
{
	static uint8_t buf[SB_SECTOR];
	struct sb_expect e = {.acked = 2, .durable = 0, .submitted = 2};
	uint64_t found;

	(void)state;
	for (unsigned pos = 0; pos < SB_SECTOR; pos += 509) {
		sb_block_fill(buf, SB_SECTOR, RUN, 0, 2);
		buf[pos] ^= 0x40;
		assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN, 0, &e, NULL, 0, &found),
				 SB_CORRUPT);
	}
}

static void test_block_torn_and_lost(void **state)
{
	static uint8_t buf[2 * SB_SECTOR];
	struct sb_expect e = {.acked = 5, .durable = 5, .submitted = 5};
	uint64_t found;

	(void)state;
	sb_block_fill(buf, sizeof(buf), RUN, 8192, 5);
	sb_block_fill(buf + SB_SECTOR, SB_SECTOR, RUN, 8192 + SB_SECTOR, 4);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, 8192, &e, NULL, 0, &found), SB_TORN);
	memset(buf + SB_SECTOR, 0, SB_SECTOR);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, 8192, &e, NULL, 0, &found), SB_TORN);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, 8192, &e, NULL, 0, &found), SB_LOST);
	/* nothing owed yet (a first write in flight): zeros may be there */
	e.acked = e.durable = 0;
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, 8192, &e, NULL, 0, &found),
			 SB_INFLIGHT);
}

static void test_block_misplaced_and_stale(void **state)
{
	static uint8_t buf[SB_SECTOR];
	struct sb_expect e = {.acked = 9, .durable = 3, .submitted = 9};
	uint64_t found;

	(void)state;
	sb_block_fill(buf, SB_SECTOR, RUN, 4096, 9);
	assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN, 8192, &e, NULL, 0, &found),
			 SB_MISPLACED);
	assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN + 1, 4096, &e, NULL, 0, &found),
			 SB_MISPLACED);
	sb_block_fill(buf, SB_SECTOR, RUN, 4096, 3);
	assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN, 4096, &e, NULL, 0, &found), SB_STALE);
	assert_int_equal(found, 3);
	/* after a power cut only the fsync'd generation (3) is owed: older
	 * than acknowledged, but allowed */
	assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN, 4096, &e, NULL, 1, &found),
			 SB_INFLIGHT);
	sb_block_fill(buf, SB_SECTOR, RUN, 4096, 2);
	assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN, 4096, &e, NULL, 1, &found), SB_STALE);
	/* an in-flight write (submitted 10, acked 9) may or may not be there */
	e.submitted = 10;
	sb_block_fill(buf, SB_SECTOR, RUN, 4096, 10);
	assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN, 4096, &e, NULL, 0, &found), SB_OK);
	sb_block_fill(buf, SB_SECTOR, RUN, 4096, 11);
	assert_int_equal(sb_block_check(buf, SB_SECTOR, RUN, 4096, &e, NULL, 0, &found),
			 SB_MISPLACED);
}

/* A block whose write was in flight may hold what it held before the run
 * (here another run's block and some other bytes), wholly or in some
 * sectors; bytes never written to it are still problems. */
static void test_block_inflight_old(void **state)
{
	static uint8_t buf[2 * SB_SECTOR], before[2 * SB_SECTOR];
	struct sb_expect e = {.acked = 0, .durable = 0, .submitted = 8};
	uint32_t prior[2];
	uint64_t found;
	const uint64_t off = 16384;

	(void)state;
	sb_block_fill(before, SB_SECTOR, RUN + 1, off, 3); /* an earlier run's */
	memset(before + SB_SECTOR, 0xa5, SB_SECTOR);	   /* the file's old bytes */
	prior[0] = sb_prior_crc(before);
	prior[1] = sb_prior_crc(before + SB_SECTOR);
	memcpy(buf, before, sizeof(buf));
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_INFLIGHT);
	/* without the prior CRCs (a version 1 log) these were false problems */
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, NULL, 0, &found),
			 SB_CORRUPT);
	/* torn in flight: one sector new, one as before */
	sb_block_fill(buf, SB_SECTOR, RUN, off, 8);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_INFLIGHT);
	sb_block_fill(buf, sizeof(buf), RUN, off, 8);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found), SB_OK);
	/* bytes never written to the block */
	memcpy(buf, before, sizeof(buf));
	buf[SB_SECTOR + 77] ^= 1;
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_CORRUPT);
	sb_block_fill(buf, sizeof(buf), RUN + 1, off, 4);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_MISPLACED);
	sb_block_fill(buf, sizeof(buf), RUN, off, 9);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_MISPLACED);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found), SB_LOST);
	/* once acknowledged, the old content is stale, not allowed */
	e.acked = 8;
	memcpy(buf, before, sizeof(buf));
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_STALE);
	/* ... unless not fsync'd, after a power cut */
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 1, &found),
			 SB_INFLIGHT);
	/* a second write in flight: the acknowledged one, or the new one */
	e.submitted = 12;
	sb_block_fill(buf, sizeof(buf), RUN, off, 8);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_INFLIGHT);
	assert_int_equal(found, 8);
	sb_block_fill(buf + SB_SECTOR, SB_SECTOR, RUN, off + SB_SECTOR, 12);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found),
			 SB_INFLIGHT);
	memcpy(buf, before, SB_SECTOR);
	assert_int_equal(sb_block_check(buf, sizeof(buf), RUN, off, &e, prior, 0, &found), SB_TORN);
}

/* ---- the log ---- */

struct logbuf {
	uint8_t b[SB_LOG_HDR_BYTES + 64 * SB_LOG_REC_BYTES];
	size_t len;
};

static void lb_init_v(struct logbuf *l, uint32_t version, uint32_t bs, uint64_t size)
{
	struct sb_log_hdr h = {.version = version, .bs = bs, .file_size = size, .run = RUN};
	sb_log_hdr_encode(&h, l->b);
	l->len = SB_LOG_HDR_BYTES;
}

static void lb_init(struct logbuf *l, uint32_t bs, uint64_t size)
{
	lb_init_v(l, 1, bs, size);
}

static void lb_rec_aux(struct logbuf *l, uint32_t type, uint64_t off, uint64_t gen, uint64_t aux)
{
	sb_log_rec_encode(type, off, gen, aux, l->b + l->len);
	l->len += SB_LOG_REC_BYTES;
}

static void lb_rec(struct logbuf *l, uint32_t type, uint64_t off, uint64_t gen)
{
	lb_rec_aux(l, type, off, gen, 0);
}

static void good_log(struct logbuf *l)
{
	lb_init(l, 4096, 16 * 4096);
	lb_rec(l, SB_REC_SUBMIT, 0, 1);
	lb_rec(l, SB_REC_SUBMIT, 4096, 2);
	lb_rec(l, SB_REC_ACK, 4096, 2);
	lb_rec(l, SB_REC_ACK, 0, 1);
	lb_rec(l, SB_REC_FSYNC, 0, 0);
	lb_rec(l, SB_REC_SUBMIT, 0, 3);
	lb_rec(l, SB_REC_ACK, 0, 3);
	lb_rec(l, SB_REC_SUBMIT, 8192, 4); /* in flight at the end */
}

static void test_log_parse(void **state)
{
	struct logbuf l;
	struct sb_log log;
	char err[256];

	(void)state;
	good_log(&l);
	assert_int_equal(sb_log_parse(l.b, l.len, "t", &log, err, sizeof(err)), 0);
	assert_int_equal(log.nblocks, 16);
	assert_int_equal(log.blk[0].acked, 3);
	assert_int_equal(log.blk[0].durable, 1);
	assert_int_equal(log.blk[1].acked, 2);
	assert_int_equal(log.blk[1].durable, 2);
	assert_int_equal(log.blk[2].submitted, 4);
	assert_int_equal(log.blk[2].acked, 0);
	assert_int_equal(log.submits, 4);
	assert_int_equal(log.acks, 3);
	assert_false(log.ended);
	sb_log_free(&log);
}

static void expect_bad(struct logbuf *l, const char *needle)
{
	struct sb_log log;
	char err[256] = "";

	assert_int_equal(sb_log_parse(l->b, l->len, "t", &log, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("error '%s' lacks '%s'", err, needle);
}

static void test_log_damage(void **state)
{
	struct logbuf l;

	(void)state;
	good_log(&l);
	l.b[0] = 'X';
	expect_bad(&l, "bad magic");
	good_log(&l);
	l.b[12] ^= 1;
	expect_bad(&l, "header CRC");
	good_log(&l);
	l.b[SB_LOG_HDR_BYTES + 2 * SB_LOG_REC_BYTES + 9] ^= 1;
	expect_bad(&l, "record CRC mismatch at byte 128");
	good_log(&l);
	l.len -= 5;
	expect_bad(&l, "truncated record");
	lb_init(&l, 4096, 16 * 4096);
	lb_rec(&l, SB_REC_SUBMIT, 16 * 4096, 1);
	expect_bad(&l, "out of range");
	lb_init(&l, 4096, 16 * 4096);
	lb_rec(&l, SB_REC_SUBMIT, 100, 1);
	expect_bad(&l, "out of range");
	lb_init(&l, 4096, 16 * 4096);
	lb_rec(&l, SB_REC_ACK, 0, 1);
	expect_bad(&l, "not submitted");
	lb_init(&l, 4096, 16 * 4096);
	lb_rec(&l, SB_REC_SUBMIT, 0, 2);
	lb_rec(&l, SB_REC_ACK, 0, 2);
	lb_rec(&l, SB_REC_SUBMIT, 4096, 2);
	expect_bad(&l, "does not rise");
	lb_init(&l, 4096, 16 * 4096);
	lb_rec(&l, 9, 0, 1);
	expect_bad(&l, "unknown record type");
	lb_init(&l, 6000, 16 * 4096);
	expect_bad(&l, "block size");
}

/* Version 2: PRIOR records, complete and in order before a block's first
 * SUBMIT; version 1 still read; an unknown version refused. */
static void good_log_v2(struct logbuf *l)
{
	lb_init_v(l, 2, 8192, 4 * 8192);
	lb_rec_aux(l, SB_REC_PRIOR, 8192, 0, 0x11);
	lb_rec_aux(l, SB_REC_PRIOR, 8192 + 4096, 0, 0x22);
	lb_rec(l, SB_REC_SUBMIT, 8192, 1);
	lb_rec(l, SB_REC_ACK, 8192, 1);
	lb_rec(l, SB_REC_SUBMIT, 8192, 2);
}

static void test_log_prior(void **state)
{
	struct logbuf l;
	struct sb_log log;
	char err[256];

	(void)state;
	good_log_v2(&l);
	assert_int_equal(sb_log_parse(l.b, l.len, "t", &log, err, sizeof(err)), 0);
	assert_int_equal(log.hdr.version, 2);
	assert_non_null(log.prior);
	assert_int_equal(log.prior[2], 0x11);
	assert_int_equal(log.prior[3], 0x22);
	assert_int_equal(log.blk[1].submitted, 2);
	sb_log_free(&log);
	good_log(&l); /* version 1 */
	assert_int_equal(sb_log_parse(l.b, l.len, "t", &log, err, sizeof(err)), 0);
	assert_null(log.prior);
	sb_log_free(&log);

	lb_init_v(&l, 2, 8192, 4 * 8192);
	lb_rec_aux(&l, SB_REC_PRIOR, 8192, 0, 1);
	lb_rec(&l, SB_REC_SUBMIT, 8192, 1);
	expect_bad(&l, "not every sector's PRIOR");
	good_log_v2(&l);
	lb_rec_aux(&l, SB_REC_PRIOR, 8192, 0, 1);
	expect_bad(&l, "after the block's first SUBMIT");
	lb_init_v(&l, 2, 8192, 4 * 8192);
	lb_rec_aux(&l, SB_REC_PRIOR, 4096, 0, 1);
	expect_bad(&l, "out of sector order");
	lb_init_v(&l, 2, 8192, 4 * 8192);
	lb_rec_aux(&l, SB_REC_PRIOR, 0, 5, 1);
	expect_bad(&l, "non-zero generation");
	lb_init_v(&l, 2, 8192, 4 * 8192);
	lb_rec_aux(&l, SB_REC_PRIOR, 4 * 8192, 0, 1);
	expect_bad(&l, "PRIOR offset 32768 out of range at byte 64");
	lb_init(&l, 8192, 4 * 8192);
	lb_rec_aux(&l, SB_REC_PRIOR, 0, 0, 1);
	expect_bad(&l, "unknown record type 5");
	lb_init_v(&l, 3, 8192, 4 * 8192);
	expect_bad(&l, "version 3 (byte 8), this spacebench reads versions 1 to 2");
}

/* ---- percentiles ---- */

static void near(uint64_t got, uint64_t want)
{
	uint64_t d = got > want ? got - want : want - got;
	if (d * 128 > want + 128)
		fail_msg("got %llu, want %llu within 1/128", (unsigned long long)got,
			 (unsigned long long)want);
}

static void test_percentiles(void **state)
{
	struct sb_hist *h = calloc(1, sizeof(*h));

	(void)state;
	assert_non_null(h);
	assert_int_equal(sb_hist_percentile(h, 50), 0);
	for (uint64_t v = 1; v <= 100000; v++)
		sb_hist_add(h, v * 1000); /* 1 us .. 100 ms */
	near(sb_hist_percentile(h, 50), 50000000);
	near(sb_hist_percentile(h, 99), 99000000);
	near(sb_hist_percentile(h, 99.9), 99900000);
	near(sb_hist_percentile(h, 100), 100000000);
	assert_true(sb_hist_percentile(h, 100) <= h->max);
	memset(h, 0, sizeof(*h));
	for (int i = 0; i < 999; i++)
		sb_hist_add(h, 100);
	sb_hist_add(h, 5000000); /* one slow I/O in 1000 */
	assert_int_equal(sb_hist_percentile(h, 99.9), 100);
	near(sb_hist_percentile(h, 99.95), 5000000);
	for (uint64_t v = 0; v < 1000000; v = v * 3 + 1)
		near(sb_hist_value(sb_hist_bucket(v)), v);
	free(h);
}

static void test_parse_size(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(sb_parse_size("4K", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(sb_parse_size("256MiB", &v), 0);
	assert_int_equal(v, 256u << 20);
	assert_int_equal(sb_parse_size("2g", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(sb_parse_size("123", &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(sb_parse_size("-1", &v), -EINVAL);
	assert_int_equal(sb_parse_size("4Q", &v), -EINVAL);
	assert_int_equal(sb_parse_size("", &v), -EINVAL);
	assert_int_equal(sb_parse_size("99999999999T", &v), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_block_roundtrip),
	    cmocka_unit_test(test_block_corrupt),
	    cmocka_unit_test(test_block_torn_and_lost),
	    cmocka_unit_test(test_block_misplaced_and_stale),
	    cmocka_unit_test(test_block_inflight_old),
	    cmocka_unit_test(test_log_parse),
	    cmocka_unit_test(test_log_damage),
	    cmocka_unit_test(test_log_prior),
	    cmocka_unit_test(test_percentiles),
	    cmocka_unit_test(test_parse_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
