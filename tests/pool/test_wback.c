/*
 * test_wback.c -- the write-back index and flusher (pool/wback.c).
 *
 * Write-back only keeps its promise if a read sees exactly the newest
 * journaled bytes of every block until they are in place, if the flusher
 * puts exactly those bytes in place (each block once, however many
 * records wrote it: the gathering that makes small parity writes cheap),
 * if every record is reported done once in place, and if a full cache
 * makes writers wait instead of failing or growing.  The "disk" here is
 * memory: one chunk per position, written by the apply callback, which
 * also counts what it is given.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/wback.h"

#define B	 POOL_JOURNAL_BLOCK
#define IL	 (4 * B) /* interleave: 4 rows */
#define NPOS	 4
#define NSTRIPES 8

struct env {
	uint8_t chunk[NPOS][NSTRIPES * IL];
	int applies;	     /* apply calls */
	uint64_t pieces;     /* pieces given to apply */
	uint64_t bytes;	     /* bytes given to apply */
	uint64_t done;	     /* records reported done */
	uint64_t stripes[8]; /* pieces of each stripe, over all calls */
	int fail;	     /* apply calls still to fail with -EIO */
	int held;	     /* the last hold(on) */
	int holds;	     /* hold calls */
	struct pool_wb *wb;
};

static int apply(void *arg, const struct pool_file_map *f, const struct pool_journal_piece *p,
		 uint32_t n)
{
	struct env *e = arg;

	assert_int_equal(f->npos, NPOS);
	e->applies++;
	if (e->fail > 0) {
		e->fail--;
		return -EIO; /* a disk away: nothing written */
	}
	for (uint32_t i = 0; i < n; i++) {
		assert_true(p[i].pos < NPOS);
		assert_true(p[i].off / IL < NSTRIPES);
		assert_true(p[i].off % IL + p[i].len <= IL);
		/* stripes in ascending order */
		assert_true(i == 0 || p[i].off / IL >= p[i - 1].off / IL);
		e->stripes[p[i].off / IL]++;
		memcpy(e->chunk[p[i].pos] + p[i].off, p[i].buf, p[i].len);
		e->pieces++;
		e->bytes += p[i].len;
	}
	return 0;
}

static void done(void *arg, size_t n)
{
	((struct env *)arg)->done += n;
}

static void hold(void *arg, int on)
{
	struct env *e = arg;
	e->held = on;
	e->holds++;
}

static const struct pool_file_map map = {.id = 7, .npos = NPOS, .disk = {0, 1, 2, 3}};

/* malloc of this program's objects and pool/'s (linked with
 * -Wl,--wrap=malloc, tests/pool/meson.build): the call that finds
 * fail_malloc at 0 returns NULL; -1: none fails. */
static int fail_malloc = -1;
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n)
{
	if (fail_malloc >= 0 && fail_malloc-- == 0)
		return NULL;
	return __real_malloc(n);
}

static struct env *env_new(uint64_t limit, int thread)
{
	struct env *e = calloc(1, sizeof(*e));
	struct pool_wb_config c = {.volume = "t",
				   .limit = limit,
				   .interleave = IL,
				   .apply = apply,
				   .done = done,
				   .hold = hold,
				   .arg = e,
				   .no_thread = !thread};
	assert_non_null(e);
	assert_int_equal(pool_wb_new(&c, &e->wb), 0);
	return e;
}

static void env_free(struct env *e)
{
	pool_wb_free(e->wb);
	free(e);
}

/* Log one record of stripe st: blocks at (pos, row) filled with byte v. */
static void add(struct env *e, uint64_t st, const uint32_t (*pr)[2], uint32_t n, uint8_t v)
{
	struct pool_journal_piece p[8];
	static uint8_t buf[8][B];

	for (uint32_t i = 0; i < n; i++) {
		memset(buf[i], v, B);
		p[i] = (struct pool_journal_piece){
		    .pos = pr[i][0], .len = B, .off = st * IL + pr[i][1] * B, .buf = buf[i]};
	}
	struct pool_journal_rec r = {.file_id = map.id, .stripe = st, .npiece = n, .piece = p};
	assert_int_equal(pool_wb_add(e->wb, &map, &r, 1), 0);
}

/* The byte a read of (pos, block at chunk offset off) sees: overlay over
 * the "disk". */
static uint8_t seen(struct env *e, uint32_t pos, uint64_t off)
{
	uint8_t b[B];

	memcpy(b, e->chunk[pos] + off, B);
	pool_wb_overlay(e->wb, map.id, pos, off, B, b);
	for (uint32_t i = 1; i < B; i++)
		assert_int_equal(b[i], b[0]);
	return b[0];
}

static void test_overlay_newest(void **state)
{
	(void)state;
	struct env *e = env_new(1 << 20, 0);
	const uint32_t a[2][2] = {{0, 1}, {3, 1}}; /* data pos 0 row 1, parity pos 3 */
	const uint32_t b[2][2] = {{1, 1}, {3, 1}}; /* data pos 1 row 1, same parity */

	memset(e->chunk, 0xEE, sizeof(e->chunk));
	add(e, 2, a, 2, 0x11);
	add(e, 2, b, 2, 0x22);
	assert_int_equal(seen(e, 0, 2 * IL + B), 0x11);
	assert_int_equal(seen(e, 1, 2 * IL + B), 0x22);
	assert_int_equal(seen(e, 3, 2 * IL + B), 0x22); /* the newer parity */
	assert_int_equal(seen(e, 2, 2 * IL + B), 0xEE); /* untouched: the disk */
	assert_int_equal(seen(e, 0, 1 * IL + B), 0xEE); /* other stripe */
	/* a read spanning blocks overlays only those in the index */
	uint8_t two[2 * B];
	memset(two, 0xEE, sizeof(two));
	assert_int_equal(pool_wb_overlay(e->wb, map.id, 0, 2 * IL, 2 * B, two), 1);
	assert_int_equal(two[0], 0xEE);
	assert_int_equal(two[B], 0x11);
	/* another file's blocks are not this one's */
	assert_int_equal(pool_wb_overlay(e->wb, map.id + 1, 0, 2 * IL + B, B, two), 0);
	env_free(e);
}

static void test_gather_one_stripe(void **state)
{
	(void)state;
	struct env *e = env_new(1 << 20, 0);

	/* ten records on stripe 5, every one rewriting parity row 0, and
	 * data rows 0..3 of position 0 and 1 (rows 0 and 1 twice) */
	for (uint32_t i = 0; i < 10; i++) {
		const uint32_t pr[2][2] = {{i % 2, i % 4}, {3, 0}};
		add(e, 5, pr, 2, (uint8_t)(0x30 + i));
	}
	assert_int_equal(pool_wb_flush(e->wb), 10);
	assert_int_equal(e->done, 10);
	assert_int_equal(e->applies, 1); /* one stripe write */
	assert_int_equal(e->stripes[5], 5);
	/* blocks: pos 0 rows 0,2; pos 1 rows 1,3; parity row 0: 5 blocks,
	 * written once each; no two adjacent in a position: 5 pieces */
	assert_int_equal(e->bytes, 5 * B);
	assert_int_equal(e->pieces, 5);
	/* the newest bytes of each block */
	assert_int_equal(e->chunk[3][5 * IL], 0x39);
	assert_int_equal(e->chunk[0][5 * IL + 0 * B], 0x38); /* i = 0, 4, 8 */
	assert_int_equal(e->chunk[0][5 * IL + 2 * B], 0x36); /* i = 2, 6 */
	assert_int_equal(e->chunk[1][5 * IL + 1 * B], 0x39); /* i = 1, 5, 9 */
	assert_int_equal(e->chunk[1][5 * IL + 3 * B], 0x37); /* i = 3, 7 */
	struct pool_wb_stats st;
	pool_wb_stats(e->wb, &st);
	assert_int_equal(st.applied, 10);
	assert_int_equal(st.held, 0);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.written, 5 * B);
	assert_int_equal(st.superseded, 15 * B); /* 20 blocks logged, 5 written */
	/* nothing left in the index: reads see the disk */
	uint8_t b[B];
	assert_int_equal(pool_wb_overlay(e->wb, map.id, 3, 5 * IL, B, b), 0);
	env_free(e);
}

/* Position 0, rows 1 and 2 of one record, row 3 of another: one piece;
 * another stripe: in the same submission. */
static void test_gather_runs(void **state)
{
	(void)state;
	struct env *e = env_new(1 << 20, 0);
	const uint32_t a[2][2] = {{0, 1}, {0, 2}};
	const uint32_t b[1][2] = {{0, 3}};

	add(e, 0, a, 2, 1);
	add(e, 0, b, 1, 2);
	add(e, 3, b, 1, 3);
	assert_int_equal(pool_wb_flush(e->wb), 3);
	assert_int_equal(e->applies, 1); /* one submission: stripes 0 and 3 */
	assert_int_equal(e->stripes[0], 1);
	assert_int_equal(e->stripes[3], 1);
	assert_int_equal(e->pieces, 2);
	assert_int_equal(e->bytes, 4 * B);
	assert_int_equal(e->chunk[0][3 * B], 2);
	assert_int_equal(e->chunk[0][3 * IL + 3 * B], 3);
	env_free(e);
}

struct writer {
	struct env *e;
	int finished;
};

static void *write_one(void *arg)
{
	struct writer *w = arg;
	const uint32_t pr[2][2] = {{2, 2}, {3, 2}};

	add(w->e, 6, pr, 2, 0x77);
	__atomic_store_n(&w->finished, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* A full cache makes the writer wait until the flusher made room. */
static void test_backpressure(void **state)
{
	(void)state;
	struct env *e = env_new(4 * B, 0);
	const uint32_t pr[2][2] = {{0, 0}, {3, 0}};
	struct writer w = {.e = e};
	pthread_t th;

	add(e, 1, pr, 2, 1);
	add(e, 2, pr, 2, 2); /* 4 blocks: full */
	assert_int_equal(pthread_create(&th, NULL, write_one, &w), 0);
	/* until the writer waits for room (a fixed sleep lost the race under
	 * valgrind on a loaded machine: the flush made room first) */
	struct pool_wb_stats ws = {0};
	for (int i = 0; i < 10000 && ws.waits == 0; i++) {
		usleep(1000);
		pool_wb_stats(e->wb, &ws);
	}
	assert_int_equal(ws.waits, 1);
	assert_int_equal(__atomic_load_n(&w.finished, __ATOMIC_SEQ_CST), 0);
	assert_int_equal(pool_wb_flush(e->wb), 2); /* makes room */
	pthread_join(th, NULL);
	assert_int_equal(w.finished, 1);
	struct pool_wb_stats st;
	pool_wb_stats(e->wb, &st);
	assert_int_equal(st.waits, 1);
	assert_true(st.held <= 4 * B);
	assert_int_equal(seen(e, 3, 6 * IL + 2 * B), 0x77);
	assert_int_equal(pool_wb_flush(e->wb), 1);
	assert_int_equal(e->done, 3);
	env_free(e);
}

/* With the flusher thread: drain puts everything in place. */
static void test_thread_drain(void **state)
{
	(void)state;
	struct env *e = env_new(64 * B, 1);

	for (uint32_t i = 0; i < 200; i++) {
		const uint32_t pr[2][2] = {{i % 3, i % 4}, {3, i % 4}};
		add(e, i % NSTRIPES, pr, 2, (uint8_t)i);
	}
	pool_wb_drain(e->wb);
	assert_int_equal(__atomic_load_n(&e->done, __ATOMIC_SEQ_CST), 200);
	/* the last writer of parity row r of stripe s: i = the largest with
	 * i % 8 == s and i % 4 == r */
	for (uint32_t s = 0; s < NSTRIPES; s++)
		for (uint32_t r = 0; r < 4; r++) {
			int last = -1;
			for (uint32_t i = 0; i < 200; i++)
				if (i % NSTRIPES == s && i % 4 == r)
					last = (int)i;
			if (last >= 0)
				assert_int_equal(e->chunk[3][s * IL + r * B], (uint8_t)last);
		}
	env_free(e);
}

/* A round that cannot be written (a disk away) keeps its records: reads
 * still see them, the journal is told to hold them before it hears they
 * are done, they are tried again, and once written the hold ends; done
 * is reported once per record. */
static void test_failed_apply(void **state)
{
	(void)state;
	struct env *e = env_new(1 << 20, 0);
	const uint32_t pr[2][2] = {{1, 2}, {3, 2}};

	memset(e->chunk, 0xEE, sizeof(e->chunk));
	add(e, 4, pr, 2, 0x44);
	e->fail = 2;
	assert_int_equal(pool_wb_flush(e->wb), 0);    /* nothing applied */
	assert_int_equal(pool_wb_drain(e->wb), -EIO); /* tried again: still not */
	assert_int_equal(e->held, 1);
	assert_int_equal(e->done, 1); /* held, so the journal may count it done */
	assert_int_equal(e->chunk[1][4 * IL + 2 * B], 0xEE);
	assert_int_equal(seen(e, 1, 4 * IL + 2 * B), 0x44); /* still read */
	struct pool_wb_stats st;
	pool_wb_stats(e->wb, &st);
	assert_int_equal(st.queued, 1);
	/* the disk is back */
	add(e, 5, pr, 2, 0x55);
	assert_int_equal(pool_wb_flush(e->wb), 2);
	assert_int_equal(pool_wb_drain(e->wb), 0);
	assert_int_equal(e->held, 0);
	assert_int_equal(e->holds, 3); /* on at each failed try, off once */
	assert_int_equal(e->done, 2);  /* the retried record is not reported twice */
	assert_int_equal(e->chunk[1][4 * IL + 2 * B], 0x44);
	assert_int_equal(e->chunk[3][5 * IL + 2 * B], 0x55);
	env_free(e);
}

/* Review found: an index entry that could not be allocated left its
 * block out of the index while the record was queued anyway; the flusher
 * then skipped the block (it gathers through the index) and reported the
 * record done, so an acknowledged write was never put in place, and reads
 * did not see it either.  Now every allocation comes before the record is
 * queued: a failure queues nothing and says so. */
static void test_add_nomem(void **state)
{
	(void)state;
	struct env *e = env_new(1 << 20, 0);
	const uint32_t pr[2][2] = {{0, 1}, {3, 1}};
	struct pool_journal_piece p[2];
	uint8_t buf[2][B];
	struct pool_wb_stats st;

	memset(e->chunk, 0xEE, sizeof(e->chunk));
	for (uint32_t i = 0; i < 2; i++) {
		memset(buf[i], 0x66, B);
		p[i] = (struct pool_journal_piece){
		    .pos = pr[i][0], .len = B, .off = 6 * IL + pr[i][1] * B, .buf = buf[i]};
	}
	struct pool_journal_rec r = {.file_id = map.id, .stripe = 6, .npiece = 2, .piece = p};
	/* the record's copy, then one index entry per block */
	for (int k = 0; k < 3; k++) {
		fail_malloc = k;
		assert_int_equal(pool_wb_add(e->wb, &map, &r, 1), -ENOMEM);
		fail_malloc = -1;
		pool_wb_stats(e->wb, &st);
		assert_int_equal(st.queued, 0);
		assert_int_equal(st.held, 0);
		assert_int_equal(seen(e, 0, 6 * IL + B), 0xEE);
	}
	assert_int_equal(pool_wb_add(e->wb, &map, &r, 1), 0);
	assert_int_equal(seen(e, 0, 6 * IL + B), 0x66);
	/* over blocks already in the index: the entries made ahead go unused
	 * (and are freed: the leak checkers see it) */
	memset(buf, 0x77, sizeof(buf));
	assert_int_equal(pool_wb_add(e->wb, &map, &r, 1), 0);
	assert_int_equal(pool_wb_drain(e->wb), 0);
	assert_int_equal(e->done, 2);
	assert_int_equal(e->chunk[0][6 * IL + B], 0x77);
	assert_int_equal(e->chunk[3][6 * IL + B], 0x77);
	env_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_overlay_newest), cmocka_unit_test(test_gather_one_stripe),
	    cmocka_unit_test(test_gather_runs),	   cmocka_unit_test(test_backpressure),
	    cmocka_unit_test(test_thread_drain),   cmocka_unit_test(test_failed_apply),
	    cmocka_unit_test(test_add_nomem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
