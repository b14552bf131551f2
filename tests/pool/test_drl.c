/*
 * test_drl.c -- the dirty-region log (pool/drl.c).
 *
 * The log is only useful if what it says survives a crash and if it
 * never says "clean" too early, so these tests check: marks are on disk
 * when begin returns (a reopen sees them, as after kill -9); regions are
 * cleared only after the sync callback ran and only once idle; missed
 * masks grow and clear per disk; replicas merge; a torn slot or a damaged
 * header is handled (ignored, or everything assumed dirty); a full table
 * sets the overflow flag; a clear never undoes a mark made while it ran.
 *
 * Linked with -Wl,--wrap=pthread_mutex_unlock (meson.build): the wrapper
 * below runs a hook right after the log's next unlock, which puts a
 * write exactly between two steps of a clear, deterministically.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/drl.h"

#define R POOL_DRL_REGION

struct env {
	char root[64];
	char dir[2][128];
	const char *dirs[2];
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	snprintf(e->root, sizeof(e->root), "/var/tmp/spacefs-drl-XXXXXX");
	assert_non_null(mkdtemp(e->root));
	for (int i = 0; i < 2; i++) {
		snprintf(e->dir[i], sizeof(e->dir[i]), "%s/r%d", e->root, i);
		assert_int_equal(mkdir(e->dir[i], 0700), 0);
		e->dirs[i] = e->dir[i];
	}
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	nftw(e->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(e);
	return 0;
}

static struct pool_drl *open_drl(struct env *e, uint32_t n)
{
	struct pool_drl *d = NULL;
	char err[256];

	assert_int_equal(pool_drl_open(e->dirs, n, "vol", &d, err, sizeof(err)), 0);
	return d;
}

static size_t list(struct pool_drl *d, struct pool_drl_entry **out)
{
	size_t n;

	assert_int_equal(pool_drl_list(d, out, &n), 0);
	return n;
}

int __real_pthread_mutex_unlock(pthread_mutex_t *m);
int __wrap_pthread_mutex_unlock(pthread_mutex_t *m);

static void (*after_unlock)(void); /* run once, after the next unlock */

int __wrap_pthread_mutex_unlock(pthread_mutex_t *m)
{
	int rc = __real_pthread_mutex_unlock(m);
	void (*fn)(void) = after_unlock;

	after_unlock = NULL;
	if (fn)
		fn();
	return rc;
}

static int synced;
static int count_sync(void *arg)
{
	(void)arg;
	synced++;
	return 0;
}

/* Marks are durable at once: a reopen without close (a crash) sees them. */
static void test_mark_survives_crash(void **state)
{
	struct env *e = *state;
	struct pool_drl *d = open_drl(e, 2);
	struct pool_drl_entry *v;

	assert_int_equal(pool_drl_begin(d, 7, R - 10, 20, 0), 0); /* spans regions 0 and 1 */
	assert_int_equal(pool_drl_begin(d, 9, 5 * R, 4096, 1u << 3), 0);
	/* no pool_drl_close: the daemon died */
	struct pool_drl *d2 = open_drl(e, 2);
	size_t n = list(d2, &v);
	assert_int_equal(n, 3);
	assert_true(v[0].id == 7 && v[0].region == 0 && v[0].dirty);
	assert_true(v[1].id == 7 && v[1].region == 1 && v[1].dirty);
	assert_true(v[2].id == 9 && v[2].region == 5 && v[2].missed == 1u << 3);
	free(v);
	pool_drl_close(d2, 0);
	pool_drl_close(d, 0);
}

/* Cleared only once idle for a whole pass, and only after sync ran. */
static void test_lazy_clean(void **state)
{
	struct env *e = *state;
	struct pool_drl *d = open_drl(e, 1);
	struct pool_drl_entry *v;

	synced = 0;
	assert_int_equal(pool_drl_begin(d, 1, 0, 4096, 0), 0);
	assert_int_equal(pool_drl_clean(d, count_sync, NULL), 0);
	assert_int_equal(list(d, &v), 1); /* in flight: stays */
	free(v);
	pool_drl_end(d, 1, 0, 4096);
	assert_int_equal(pool_drl_clean(d, count_sync, NULL), 0); /* first idle pass */
	assert_int_equal(list(d, &v), 1);
	free(v);
	assert_int_equal(synced, 0);
	assert_int_equal(pool_drl_clean(d, count_sync, NULL), 0); /* idle a whole pass */
	assert_int_equal(synced, 1);
	assert_int_equal(list(d, &v), 0);
	free(v);
	pool_drl_close(d, 0);
	d = open_drl(e, 1);
	assert_int_equal(list(d, &v), 0); /* cleared on disk too */
	free(v);
	pool_drl_close(d, 0);
}

/* A clean close clears dirty marks and keeps missed ones. */
static void test_close_keeps_missed(void **state)
{
	struct env *e = *state;
	struct pool_drl *d = open_drl(e, 2);
	struct pool_drl_entry *v;

	assert_int_equal(pool_drl_begin(d, 3, 0, 100, 0), 0);
	assert_int_equal(pool_drl_begin(d, 4, 0, 100, (1u << 1) | (1u << 2)), 0);
	pool_drl_end(d, 3, 0, 100);
	pool_drl_end(d, 4, 0, 100);
	pool_drl_close(d, 1);
	d = open_drl(e, 2);
	assert_int_equal(list(d, &v), 1);
	assert_true(v[0].id == 4 && !v[0].dirty && v[0].missed == ((1u << 1) | (1u << 2)));
	free(v);
	assert_int_equal(pool_drl_clear_missed(d, 4, 0, 1), 0);
	assert_int_equal(list(d, &v), 1);
	assert_int_equal(v[0].missed, 1u << 2);
	free(v);
	assert_int_equal(pool_drl_clear_missed(d, 4, 0, 2), 0);
	assert_int_equal(list(d, &v), 0);
	free(v);
	pool_drl_close(d, 1);
}

/* Replicas merge: a region on either counts. */
static void test_merge(void **state)
{
	struct env *e = *state;
	struct pool_drl *d = open_drl(e, 1); /* replica 0 only */
	struct pool_drl_entry *v;

	assert_int_equal(pool_drl_begin(d, 11, 0, 1, 0), 0);
	pool_drl_close(d, 0);
	const char *other[1] = {e->dir[1]};
	char err[256];
	assert_int_equal(pool_drl_open(other, 1, "vol", &d, err, sizeof(err)), 0);
	assert_int_equal(pool_drl_begin(d, 12, 0, 1, 0), 0);
	pool_drl_close(d, 0);
	d = open_drl(e, 2);
	assert_int_equal(list(d, &v), 2);
	free(v);
	pool_drl_close(d, 0);
}

/* A torn slot is ignored; a damaged header means "assume everything". */
static void test_damage(void **state)
{
	struct env *e = *state;
	struct pool_drl *d = open_drl(e, 1);
	struct pool_drl_entry *v;
	char path[256];

	assert_int_equal(pool_drl_begin(d, 21, 0, 1, 0), 0);
	assert_int_equal(pool_drl_begin(d, 22, 0, 1, 0), 0);
	pool_drl_close(d, 0);
	snprintf(path, sizeof(path), "%s/drl", e->dir[0]);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t junk = 0x5a;
	assert_int_equal(pwrite(fd, &junk, 1, 4096 + 3), 1); /* slot 0 torn */
	close(fd);
	d = open_drl(e, 1);
	assert_int_equal(list(d, &v), 1);
	assert_int_equal(v[0].id, 22);
	free(v);
	assert_int_equal(pool_drl_overflowed(d), 0);
	pool_drl_close(d, 0);
	fd = open(path, O_RDWR);
	assert_int_equal(pwrite(fd, &junk, 1, 100), 1); /* header damaged */
	close(fd);
	d = open_drl(e, 1);
	assert_int_equal(pool_drl_overflowed(d), 1);
	pool_drl_clear_overflow(d);
	pool_drl_close(d, 0);
	d = open_drl(e, 1);
	assert_int_equal(pool_drl_overflowed(d), 0);
	pool_drl_close(d, 0);
}

/* More regions than slots: the overflow flag, durably. */
static void test_overflow(void **state)
{
	struct env *e = *state;
	struct pool_drl *d = open_drl(e, 1);

	for (uint64_t i = 0; i < POOL_DRL_SLOTS + 2; i++)
		assert_int_equal(pool_drl_begin(d, 1000 + i, 0, 1, 0), 0);
	assert_int_equal(pool_drl_overflowed(d), 1);
	pool_drl_close(d, 0);
	d = open_drl(e, 1);
	assert_int_equal(pool_drl_overflowed(d), 1);
	pool_drl_close(d, 0);
}

static struct pool_drl *race_d;

/* A write to region 0 of file 4 (5) skipping disk 2 (3) starts. */
static void write_4(void)
{
	assert_int_equal(pool_drl_begin(race_d, 4, 0, 100, 1u << 2), 0);
}

static void write_5(void)
{
	assert_int_equal(pool_drl_begin(race_d, 5, 0, 100, 1u << 3), 0);
}

static void check_marks(struct pool_drl *d, int dirty)
{
	struct pool_drl_entry *v;

	assert_int_equal(list(d, &v), 2);
	assert_true(v[0].id == 4 && v[0].missed == 1u << 2 && v[0].dirty == dirty);
	assert_true(v[1].id == 5 && v[1].missed == 1u << 3 && v[1].dirty == dirty);
	free(v);
}

/* A resync clears disk 1's missed bit (or a dirty mark) while the volume
 * serves; a write lands right after the clear has looked at the region:
 * the write's missed bit and dirty mark must survive, in memory and on
 * disk, or disk 2's return (a crash) would skip the region. */
static void test_clear_keeps_new_marks(void **state)
{
	struct env *e = *state;
	struct pool_drl *d = open_drl(e, 2);

	assert_int_equal(pool_drl_begin(d, 4, 0, 100, 1u << 1), 0);
	pool_drl_end(d, 4, 0, 100);
	assert_int_equal(pool_drl_begin(d, 5, 0, 100, 0), 0);
	pool_drl_end(d, 5, 0, 100);
	race_d = d;
	after_unlock = write_4;
	assert_int_equal(pool_drl_clear_missed(d, 4, 0, 1), 0);
	assert_null(after_unlock); /* the write ran */
	after_unlock = write_5;
	assert_int_equal(pool_drl_clear_dirty(d, 5, 0), 0);
	assert_null(after_unlock);
	check_marks(d, 1);
	struct pool_drl *d2 = open_drl(e, 2); /* as after a crash now */
	check_marks(d2, 1);
	pool_drl_close(d2, 0);
	pool_drl_close(d, 0); /* d2 rewrote the replicas: d writes nothing more */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_mark_survives_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lazy_clean, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_keeps_missed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_merge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_overflow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clear_keeps_new_marks, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
