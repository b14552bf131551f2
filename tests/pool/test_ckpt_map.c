/*
 * test_ckpt_map.c -- the checkpoint layer maps (pool/ckpt.c): granule
 * states, the 4 KiB block masks of PART granules (marks add blocks, a
 * full mask turns DATA, NONE and ZERO clear the mask so a later PART
 * starts empty), counts, next(), growth across mask leaves, refusals;
 * and the log's batched append (pool_ckpt_log_append_n, the group commit
 * of block records): records in order with consecutive sequence numbers on
 * every replica, appends after it, a torn batch read back as its valid
 * prefix.  Slots: marks with slots give the blocks consecutive ones in
 * block order, marks without keep those set before, a granule with slots
 * stays PART when full, DATA/ZERO/NONE clear them and a granule made
 * PART again starts without.  The log's flush in two halves
 * (pool_ckpt_log_sync_begin/_end, so that fsync does not hold the log's
 * lock across the device flush): the files flushed are those the
 * records went to when a compaction replaces them between the steps, no
 * descriptor left open, a failed flush drops its replica unless a reset
 * replaced it meanwhile, an older file's failed flush does not hide a
 * newer one's, a second flush in flight does not count a file whose
 * flush failed in the first, and a _begin that gets one descriptor of
 * two fails with nothing held.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The end scrub and repair walk a layer to: one past its last granule
 * that is not NONE, whatever the state, in any of a byte's 4 granules. */
static void test_end(void **state)
{
	struct pool_ckpt_map m = {0};

	(void)state;
	assert_int_equal(pool_ckpt_map_end(&m), 0);
	assert_int_equal(pool_ckpt_map_reserve(&m, 5000), 0);
	assert_int_equal(pool_ckpt_map_end(&m), 0); /* room is not data */
	for (uint64_t g = 0; g < 8; g++) {
		assert_int_equal(pool_ckpt_map_set(&m, 3, 1, POOL_CKPT_DATA), 0);
		assert_int_equal(pool_ckpt_map_mark(&m, 100 + g, 1), 0);
		assert_int_equal(pool_ckpt_map_end(&m), 101 + g);
		assert_int_equal(pool_ckpt_map_set(&m, 100 + g, 1, POOL_CKPT_NONE), 0);
		assert_int_equal(pool_ckpt_map_end(&m), 4);
	}
	assert_int_equal(pool_ckpt_map_set(&m, 4999, 1, POOL_CKPT_ZERO), 0);
	assert_int_equal(pool_ckpt_map_end(&m), 5000);
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

struct seen {
	uint32_t n;
	uint32_t type[16];
	uint64_t val[16];
};

static int collect(void *arg, uint32_t type, const void *p, uint32_t len)
{
	struct seen *s = arg;

	assert_int_equal(len, sizeof(uint64_t));
	assert_true(s->n < 16);
	s->type[s->n] = type;
	memcpy(&s->val[s->n], p, sizeof(uint64_t));
	s->n++;
	return 0;
}

static void replay_dir(const char *dir, struct seen *s)
{
	const char *dirs[1] = {dir};
	struct pool_ckpt_log *l;
	char err[256];

	memset(s, 0, sizeof(*s));
	assert_int_equal(pool_ckpt_log_open(dirs, 1, &l, err, sizeof(err)), 0);
	assert_int_equal(pool_ckpt_log_replay(l, collect, s), 0);
	pool_ckpt_log_close(l);
}

/* Two log replica directories, a and b, in a new temporary directory. */
static void replicas_make(char *base, char *d0, char *d1, size_t n)
{
	assert_non_null(mkdtemp(base));
	snprintf(d0, n, "%s/a", base);
	snprintf(d1, n, "%s/b", base);
	assert_int_equal(mkdir(d0, 0700), 0);
	assert_int_equal(mkdir(d1, 0700), 0);
}

static void replicas_remove(const char *base, const char *const *dirs)
{
	char path[80];

	for (int r = 0; r < 2; r++) {
		snprintf(path, sizeof(path), "%s/ckpt", dirs[r]);
		unlink(path);
		rmdir(dirs[r]);
	}
	rmdir(base);
}

static void test_log_batch(void **state)
{
	char base[] = "/tmp/test_ckpt_log.XXXXXX", d0[64], d1[64], path[80];
	const char *dirs[2] = {d0, d1};
	uint64_t one = 7, five[5] = {10, 11, 12, 13, 14}, after = 99;
	struct pool_ckpt_log *l;
	struct seen s;
	char err[256];
	struct stat st;

	(void)state;
	replicas_make(base, d0, d1, sizeof(d0));
	assert_int_equal(pool_ckpt_log_open(dirs, 2, &l, err, sizeof(err)), 0);
	assert_int_equal(pool_ckpt_log_append(l, 3, &one, sizeof(one)), 0);
	assert_int_equal(pool_ckpt_log_append_n(l, 10, five, sizeof(five[0]), 5), 0);
	assert_int_equal(pool_ckpt_log_seq(l), 6);
	assert_int_equal(pool_ckpt_log_append_n(l, 10, five, sizeof(five[0]), 0), 0);
	assert_int_equal(pool_ckpt_log_append(l, 4, &after, sizeof(after)), 0);
	assert_int_equal(pool_ckpt_log_seq(l), 7);
	pool_ckpt_log_close(l);
	for (int r = 0; r < 2; r++) { /* each replica holds all seven, in order */
		replay_dir(dirs[r], &s);
		assert_int_equal(s.n, 7);
		assert_int_equal(s.type[0], 3);
		assert_int_equal(s.val[0], 7);
		for (int i = 0; i < 5; i++) {
			assert_int_equal(s.type[1 + i], 10);
			assert_int_equal(s.val[1 + i], 10 + i);
		}
		assert_int_equal(s.type[6], 4);
		assert_int_equal(s.val[6], 99);
	}
	/* a crash tore the batch: cut the file inside its fourth record
	 * (records of an 8-byte payload are 32 bytes): the first three of
	 * the batch stay, the rest and everything after are gone */
	snprintf(path, sizeof(path), "%s/ckpt", d0);
	assert_int_equal(truncate(path, 32 * 4 + 10), 0);
	replay_dir(d0, &s);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.val[3], 12);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 32 * 4); /* rewritten as the valid prefix */
	replicas_remove(base, dirs);
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Records of replica directory dir, replayed alone. */
static uint32_t records_in(const char *dir)
{
	struct seen s;

	replay_dir(dir, &s);
	return s.n;
}

static ino_t ino_of_fd(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_ino;
}

static ino_t ino_of(const char *dir)
{
	char path[80];
	struct stat st;

	snprintf(path, sizeof(path), "%s/ckpt", dir);
	assert_int_equal(stat(path, &st), 0);
	return st.st_ino;
}

/* Make descriptor fd one that fdatasync refuses (a pipe's). */
static void unflushable(int fd)
{
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(dup2(p[1], fd), fd);
	close(p[0]);
	close(p[1]);
}

static void test_log_sync_halves(void **state)
{
	char base[] = "/tmp/test_ckpt_log.XXXXXX", d0[64], d1[64], *img = NULL;
	const char *dirs[2] = {d0, d1};
	uint64_t a = 1, b = 2, c = 3;
	struct pool_ckpt_log *l;
	struct pool_ckpt_log_flush f, g;
	struct rlimit lim, low;
	size_t len = 0, cap = 0;
	char err[256];

	(void)state;
	replicas_make(base, d0, d1, sizeof(d0));
	assert_int_equal(pool_ckpt_log_open(dirs, 2, &l, err, sizeof(err)), 0);
	assert_int_equal(pool_ckpt_log_append(l, 3, &a, sizeof(a)), 0);
	int fds = open_fds();
	assert_int_equal(pool_ckpt_log_sync_begin(l, &f), 0);
	assert_int_equal(f.n, 2);
	/* between the steps: an append, then a compaction replacing both
	 * replicas with one record; the flush goes to the files the records
	 * before it went to */
	assert_int_equal(pool_ckpt_log_append(l, 4, &b, sizeof(b)), 0);
	assert_int_equal(pool_ckpt_log_encode(&img, &len, &cap, 5, &c, sizeof(c), 3), 0);
	assert_int_equal(pool_ckpt_log_reset(l, img, len), 0);
	for (int r = 0; r < 2; r++)
		assert_true(ino_of_fd(f.fd[r]) != ino_of(dirs[r]));
	assert_int_equal(pool_ckpt_log_sync_end(l, &f), 0);
	assert_int_equal(open_fds(), fds);
	assert_int_equal(records_in(d0), 1);
	/* a failed flush of a file a reset replaced since: the new file is
	 * kept (one good replica is enough for success) */
	assert_int_equal(pool_ckpt_log_sync_begin(l, &f), 0);
	unflushable(f.fd[1]);
	assert_int_equal(pool_ckpt_log_reset(l, img, len), 0);
	assert_int_equal(pool_ckpt_log_sync_end(l, &f), 0);
	assert_int_equal(pool_ckpt_log_sync_begin(l, &f), 0);
	assert_int_equal(f.n, 2);
	assert_int_equal(pool_ckpt_log_replicas(l), 2);
	assert_int_equal(pool_ckpt_log_sync_end(l, &f), 0);
	/* fsyncs on both sides of a compaction, both failing replica b, the
	 * newer first: the older file's failure must not hide the newer
	 * one's, whose next flush the kernel would answer with success */
	assert_int_equal(pool_ckpt_log_sync_begin(l, &f), 0);
	assert_int_equal(pool_ckpt_log_reset(l, img, len), 0);
	assert_int_equal(pool_ckpt_log_sync_begin(l, &g), 0);
	unflushable(f.fd[1]);
	unflushable(g.fd[1]);
	assert_int_equal(pool_ckpt_log_sync_end(l, &g), 0);
	assert_int_equal(pool_ckpt_log_sync_end(l, &f), 0);
	assert_int_equal(pool_ckpt_log_sync_begin(l, &f), 0);
	assert_int_equal(f.n, 1); /* b dropped */
	assert_int_equal(pool_ckpt_log_sync_end(l, &f), 0);
	assert_int_equal(pool_ckpt_log_replicas(l), 1);
	pool_ckpt_log_close(l);
	assert_int_equal(pool_ckpt_log_open(dirs, 2, &l, err, sizeof(err)), 0);
	fds = open_fds();
	/* two fsyncs in flight: the first one's flush of replica a fails,
	 * the second one's of replica b; the second must not count a as
	 * flushed although its own flush of that file now succeeds (the
	 * kernel told the first one only) */
	assert_int_equal(pool_ckpt_log_sync_begin(l, &f), 0);
	assert_int_equal(pool_ckpt_log_sync_begin(l, &g), 0);
	unflushable(f.fd[0]);
	unflushable(g.fd[1]);
	assert_int_equal(pool_ckpt_log_sync_end(l, &f), 0);
	assert_true(pool_ckpt_log_sync_end(l, &g) < 0);
	assert_int_equal(open_fds(), fds);
	/* both replicas failed a flush: dropped, nothing left to flush */
	assert_int_equal(pool_ckpt_log_sync_begin(l, &f), -EIO);
	assert_int_equal(f.n, 0);
	assert_int_equal(open_fds(), fds - 2);
	assert_int_equal(pool_ckpt_log_replicas(l), 0);
	assert_int_equal(pool_ckpt_log_sync(l), -EIO);
	assert_int_equal(pool_ckpt_log_append(l, 6, &a, sizeof(a)), -EIO);
	pool_ckpt_log_close(l);
	free(img);
	/* no descriptor to be had for the second replica: _begin fails and
	 * holds nothing (the first one's, taken, is given back) */
	assert_int_equal(pool_ckpt_log_open(dirs, 2, &l, err, sizeof(err)), 0);
	fds = open_fds();
	int k = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free descriptor */
	assert_true(k >= 0);
	close(k);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &lim), 0);
	low = lim;
	low.rlim_cur = (rlim_t)k + 1;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	int rc = pool_ckpt_log_sync_begin(l, &f);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	assert_int_equal(rc, -EMFILE);
	assert_int_equal(open_fds(), fds);
	assert_int_equal(pool_ckpt_log_sync(l), 0); /* the caller's fallback */
	pool_ckpt_log_close(l);
	replicas_remove(base, dirs);
}

static void test_slots(void **state)
{
	struct pool_ckpt_map m = {0};

	(void)state;
	assert_false(pool_ckpt_map_slotted(&m, 3));
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 0), POOL_CKPT_NOSLOT);
	assert_int_equal(pool_ckpt_map_mark_slots(&m, 3, 0x0014, 100), 0); /* blocks 2, 4 */
	assert_true(pool_ckpt_map_slotted(&m, 3));
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 2), 100);
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 4), 101);
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 3), POOL_CKPT_NOSLOT);
	assert_int_equal(pool_ckpt_map_mark(&m, 3, 0x0008), 0); /* block 3 at its offset */
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 3), POOL_CKPT_NOSLOT);
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 2), 100);
	/* every block in: still PART, its slots kept */
	assert_int_equal(pool_ckpt_map_mark_slots(&m, 3, 0xffe3, 7), 0);
	assert_int_equal(pool_ckpt_map_get(&m, 3), POOL_CKPT_PART);
	assert_int_equal(pool_ckpt_map_blocks(&m, 3), POOL_CKPT_FULL);
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 0), 7);
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 5), 9);
	assert_int_equal(pool_ckpt_map_slot(&m, 3, 15), 19);
	/* without slots a full mask still turns DATA */
	assert_int_equal(pool_ckpt_map_mark(&m, 4, POOL_CKPT_FULL), 0);
	assert_int_equal(pool_ckpt_map_get(&m, 4), POOL_CKPT_DATA);
	/* a whole-granule write: DATA, slots gone; then PART anew: none */
	assert_int_equal(pool_ckpt_map_set(&m, 3, 1, POOL_CKPT_DATA), 0);
	assert_false(pool_ckpt_map_slotted(&m, 3));
	assert_int_equal(pool_ckpt_map_set(&m, 3, 1, POOL_CKPT_NONE), 0);
	assert_int_equal(pool_ckpt_map_mark(&m, 3, 1), 0);
	assert_false(pool_ckpt_map_slotted(&m, 3));
	assert_int_equal(pool_ckpt_map_mark_slots(&m, 3, 2, 5), 0);
	assert_int_equal(pool_ckpt_map_set(&m, 3, 1, POOL_CKPT_ZERO), 0);
	assert_false(pool_ckpt_map_slotted(&m, 3));
	/* far granule (another leaf), and slots past the 32-bit range */
	assert_int_equal(pool_ckpt_map_mark_slots(&m, 5000, 1, 42), 0);
	assert_int_equal(pool_ckpt_map_slot(&m, 5000, 0), 42);
	assert_int_equal(pool_ckpt_map_mark_slots(&m, 6, 3, POOL_CKPT_NOSLOT - 1), -EFBIG);
	pool_ckpt_map_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mark),
	    cmocka_unit_test(test_set_clears),
	    cmocka_unit_test(test_end),
	    cmocka_unit_test(test_leaves),
	    cmocka_unit_test(test_slots),
	    cmocka_unit_test(test_log_batch),
	    cmocka_unit_test(test_log_sync_halves),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
