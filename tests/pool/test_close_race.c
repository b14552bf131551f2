/*
 * test_close_race.c -- closing an AIO engine or a store while the threads
 * that used it exit (issue 10, item 1).
 *
 * A daemon closes a volume's store on every owner move.  Threads that ran
 * requests on it earlier (redirect-serving threads, FUSE workers) may
 * exit at that very moment.  Per-thread AIO contexts and scratch sets
 * with pthread-key destructors made that a double free: the destructor
 * ran on a context pool_aio_free had just freed.  Here several threads
 * each run a batch (a store write), then all exit at once, released by
 * the same barrier that lets the main thread close the engine or store;
 * many rounds, so the exits overlap the close.  Run under ASan or
 * valgrind (tests/run does both) any use after free shows; data written
 * before the close must read back after a reopen.
 */
#include <fcntl.h>
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

#include "layout/layout.h"
#include "pool/aio.h"
#include "pool/store.h"

#define NTHREADS 6
#define ROUNDS	 25
#define NDISKS	 4
#define BLK	 4096u

struct round {
	pthread_barrier_t go; /* the workers' batches are done: close now */
	struct pool_aio *aio;
	struct pool_store *s;
	struct layout_geom g;
	int fd;
	int rc[NTHREADS];
	int idx;
	pthread_mutex_t mu;
};

static int next_idx(struct round *r)
{
	pthread_mutex_lock(&r->mu);
	int i = r->idx++;
	pthread_mutex_unlock(&r->mu);
	return i;
}

static void *aio_worker(void *arg)
{
	struct round *r = arg;
	int i = next_idx(r);
	char buf[512];
	struct pool_aio_req q = {.fd = r->fd, .op = POOL_AIO_READ, .buf = buf, .len = sizeof(buf)};

	r->rc[i] = pool_aio_run(r->aio, &q, 1) == 0 && q.result == (ssize_t)sizeof(buf) ? 0 : -1;
	pthread_barrier_wait(&r->go);
	return NULL; /* exits while the main thread frees the engine */
}

static void test_aio_free_while_threads_exit(void **state)
{
	char path[] = "/var/tmp/spacefs-race-XXXXXX";
	int fd = mkstemp(path);
	char zero[512] = {0};

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, zero, sizeof(zero)), (ssize_t)sizeof(zero));
	for (int round = 0; round < ROUNDS; round++) {
		struct round r = {.fd = fd};
		pthread_t th[NTHREADS];
		pthread_mutex_init(&r.mu, NULL);
		assert_int_equal(pool_aio_new(&r.aio), 0);
		pthread_barrier_init(&r.go, NULL, NTHREADS + 1);
		for (int i = 0; i < NTHREADS; i++)
			assert_int_equal(pthread_create(&th[i], NULL, aio_worker, &r), 0);
		pthread_barrier_wait(&r.go);
		pool_aio_free(r.aio);
		for (int i = 0; i < NTHREADS; i++) {
			pthread_join(th[i], NULL);
			assert_int_equal(r.rc[i], 0);
		}
		pthread_barrier_destroy(&r.go);
		pthread_mutex_destroy(&r.mu);
	}
	close(fd);
}

static struct pool_file_map file_map(const struct layout_geom *g, uint64_t id)
{
	struct pool_file_map f = {.id = id, .npos = layout_positions(g)};

	for (uint32_t p = 0; p < f.npos; p++)
		f.disk[p] = (uint8_t)((p + id) % NDISKS);
	return f;
}

static void fill(uint8_t *b, uint64_t id)
{
	for (uint32_t j = 0; j < BLK; j++)
		b[j] = (uint8_t)(id * 131 + j * 7);
}

static void *store_worker(void *arg)
{
	struct round *r = arg;
	int i = next_idx(r);
	struct pool_file_map f = file_map(&r->g, (uint64_t)i + 1);
	uint8_t *b = malloc(BLK);

	fill(b, f.id);
	r->rc[i] = pool_store_write(r->s, &f, 0, BLK, b) == BLK ? 0 : -1;
	free(b);
	pthread_barrier_wait(&r->go);
	return NULL; /* exits while the main thread closes the store */
}

static void test_store_close_while_threads_exit(void **state)
{
	char base[] = "/var/tmp/spacefs-race-XXXXXX";
	char dir[NDISKS][64];
	const char *paths[NDISKS];
	struct layout_geom g = {.kind = LAYOUT_PARITY,
				.copies = 1,
				.parity = 1,
				.columns = NDISKS,
				.interleave = 16384};
	char err[256];

	(void)state;
	assert_non_null(mkdtemp(base));
	for (int i = 0; i < NDISKS; i++) {
		snprintf(dir[i], sizeof(dir[i]), "%s/d%d", base, i);
		assert_int_equal(mkdir(dir[i], 0700), 0);
		paths[i] = dir[i];
	}
	assert_int_equal(layout_geom_check(&g), 0);
	struct pool_store_config cfg = {
	    .volume = "v", .disk_path = paths, .ndisks = NDISKS, .geom = g, .integrity = 1};
	for (int round = 0; round < ROUNDS; round++) {
		struct round r = {.g = g};
		pthread_t th[NTHREADS];
		pthread_mutex_init(&r.mu, NULL);
		assert_int_equal(pool_store_open(&cfg, &r.s, err, sizeof(err)), 0);
		pthread_barrier_init(&r.go, NULL, NTHREADS + 1);
		for (int i = 0; i < NTHREADS; i++)
			assert_int_equal(pthread_create(&th[i], NULL, store_worker, &r), 0);
		pthread_barrier_wait(&r.go);
		pool_store_close(r.s);
		for (int i = 0; i < NTHREADS; i++) {
			pthread_join(th[i], NULL);
			assert_int_equal(r.rc[i], 0);
		}
		pthread_barrier_destroy(&r.go);
		pthread_mutex_destroy(&r.mu);
	}
	/* what the last round wrote is on disk */
	struct pool_store *s;
	uint8_t *want = malloc(BLK), *got = malloc(BLK);
	assert_int_equal(pool_store_open(&cfg, &s, err, sizeof(err)), 0);
	for (uint64_t id = 1; id <= NTHREADS; id++) {
		struct pool_file_map f = file_map(&g, id);
		fill(want, id);
		assert_int_equal(pool_store_read(s, &f, 0, BLK, got), BLK);
		assert_memory_equal(got, want, BLK);
	}
	pool_store_close(s);
	free(want);
	free(got);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_aio_free_while_threads_exit),
	    cmocka_unit_test(test_store_close_while_threads_exit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
