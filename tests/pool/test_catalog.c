/*
 * test_catalog.c -- the catalogue shared by running nodes, and drain marks.
 *
 * Two struct pool opened on the same disks stand for two nodes: a volume
 * one creates is adopted by the other's reload (and the stamp says the
 * files moved); a commit made after a reload builds on the other's; the
 * catalogue lock held by one keeps the other out (-EBUSY, naming the
 * file) and is free again once dropped.  Drain marks: set on all disks,
 * read back; a mark left on a minority of disks does not count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool/catalog.h"
#include "pool/owner.h"
#include "pool/pool.h"

struct fix {
	char root[64];
	char disk[3][96];
	const char *paths[3];
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	char err[512];

	snprintf(f->root, sizeof(f->root), "/tmp/test_catalog.XXXXXX");
	if (!mkdtemp(f->root))
		return -1;
	for (int i = 0; i < 3; i++) {
		snprintf(f->disk[i], sizeof(f->disk[i]), "%s/d%d", f->root, i);
		mkdir(f->disk[i], 0755);
		f->paths[i] = f->disk[i];
	}
	if (pool_create("lab", f->paths, 3, 0, err, sizeof(err)) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->root);
	int rc = system(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

static void test_reload(void **state)
{
	struct fix *f = *state;
	struct pool *a, *b;
	struct layout_geom g = {
	    .kind = LAYOUT_MIRROR, .copies = 2, .columns = 1, .interleave = 65536};
	char err[512];
	bool changed;

	assert_int_equal(pool_open(f->disk[0], 0, &a, err, sizeof(err)), 0);
	assert_int_equal(pool_open(f->disk[1], 0, &b, err, sizeof(err)), 0);
	uint64_t stamp = pool_catalog_stamp(b);
	assert_int_equal(pool_catalog_reload(b, &changed, err, sizeof(err)), 0);
	assert_false(changed);
	assert_int_equal(pool_volume_create(a, "one", &g, 1, err, sizeof(err)), 0);
	assert_true(pool_catalog_stamp(b) != stamp);
	assert_null(pool_volume_find(b, "one"));
	assert_int_equal(pool_catalog_reload(b, &changed, err, sizeof(err)), 0);
	assert_true(changed);
	assert_non_null(pool_volume_find(b, "one"));
	assert_int_equal(b->sb->generation, a->sb->generation);
	/* b's next change builds on a's: both volumes, a generation more */
	assert_int_equal(pool_volume_create(b, "two", &g, 1, err, sizeof(err)), 0);
	assert_int_equal(pool_catalog_reload(a, &changed, err, sizeof(err)), 0);
	assert_true(changed);
	assert_non_null(pool_volume_find(a, "one"));
	assert_non_null(pool_volume_find(a, "two"));
	assert_true(pool_volume_find(a, "one")->id != pool_volume_find(a, "two")->id);
	pool_close(a);
	pool_close(b);
	/* and a fresh open agrees */
	assert_int_equal(pool_open(f->disk[2], 0, &a, err, sizeof(err)), 0);
	assert_int_equal(a->sb->nvolumes, 2);
	pool_close(a);
}

static void test_lock(void **state)
{
	struct fix *f = *state;
	struct pool *a, *b;
	struct pool_catalog_lock la, lb;
	char err[512] = "";

	assert_int_equal(pool_open(f->disk[0], 0, &a, err, sizeof(err)), 0);
	assert_int_equal(pool_open(f->disk[0], 0, &b, err, sizeof(err)), 0);
	assert_int_equal(pool_catalog_lock(a, &la, err, sizeof(err)), 0);
	assert_int_equal(la.n, 3);
	assert_int_equal(pool_catalog_lock(b, &lb, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "catalog.lock"));
	assert_int_equal(lb.n, 0);
	pool_catalog_unlock(&la);
	assert_int_equal(pool_catalog_lock(b, &lb, err, sizeof(err)), 0);
	pool_catalog_unlock(&lb);
	pool_close(a);
	pool_close(b);
}

static void test_drain(void **state)
{
	struct fix *f = *state;
	char err[512], path[160];

	assert_false(pool_drain_read(f->paths, 3, "n2"));
	assert_int_equal(pool_drain_write(f->paths, 3, "n2", true, err, sizeof(err)), 0);
	assert_true(pool_drain_read(f->paths, 3, "n2"));
	assert_false(pool_drain_read(f->paths, 3, "n1"));
	/* a resume two disks saw: the mark left on one is outvoted */
	assert_int_equal(pool_drain_write(f->paths, 2, "n2", false, err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/drain/n2", f->disk[2]);
	assert_int_equal(access(path, F_OK), 0);
	assert_false(pool_drain_read(f->paths, 3, "n2"));
	assert_int_equal(pool_drain_write(f->paths, 3, "../x", true, err, sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
