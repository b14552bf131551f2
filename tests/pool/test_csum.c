/*
 * test_csum.c -- checksum sidecars through shared mappings (pool/csum.c).
 *
 * What must hold: stores reach the file (a reader through the file
 * descriptor, like a daemon after kill -9 or a remount, sees them);
 * checksums past the end of the sidecar read as 0, also after the file
 * was grown by another path; a sidecar cut short behind the mapping is
 * read and written with pread/pwrite instead of killing the process; and
 * a SIGBUS that is not a sidecar access still kills it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/csum.h"

struct env {
	char path[64];
	int fd;
	pthread_mutex_t mu;
	struct pool_csum_map m;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	snprintf(e->path, sizeof(e->path), "/var/tmp/spacefs-csum-XXXXXX");
	e->fd = mkstemp(e->path);
	assert_true(e->fd >= 0);
	pthread_mutex_init(&e->mu, NULL);
	assert_int_equal(pool_csum_map(&e->m, e->fd), 0);
	assert_non_null(e->m.base);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	pool_csum_unmap(&e->m);
	close(e->fd);
	unlink(e->path);
	pthread_mutex_destroy(&e->mu);
	free(e);
	return 0;
}

static void test_store_reaches_file(void **state)
{
	struct env *e = *state;
	uint32_t in[3] = {0x11111111, 0x22222222, 0x33333333}, out[8], disk[3];
	struct stat st;

	assert_int_equal(pool_csum_load(&e->m, e->fd, &e->mu, 0, 8, out), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(out[i], 0);
	assert_int_equal(pool_csum_store(&e->m, e->fd, &e->mu, 5, 3, in), 0);
	assert_int_equal(fstat(e->fd, &st), 0);
	assert_true((uint64_t)st.st_size >= 8 * 4);
	assert_int_equal(st.st_size, 4096); /* grown ahead, by a page while small */
	assert_int_equal(pread(e->fd, disk, sizeof(disk), 5 * 4), (ssize_t)sizeof(disk));
	assert_memory_equal(disk, in, sizeof(in));
	assert_int_equal(pool_csum_load(&e->m, e->fd, &e->mu, 4, 4, out), 0);
	assert_int_equal(out[0], 0);
	assert_memory_equal(out + 1, in, sizeof(in));
}

static void test_grown_elsewhere(void **state)
{
	struct env *e = *state;
	uint64_t blk = POOL_CSUM_GROW / 4 + 100; /* past the first step */
	uint32_t v = 0xabcdef01, out[2];

	assert_int_equal(pool_csum_store(&e->m, e->fd, &e->mu, 0, 1, &v), 0);
	assert_int_equal(pwrite(e->fd, &v, 4, (off_t)(blk * 4)), 4);
	assert_int_equal(pool_csum_load(&e->m, e->fd, &e->mu, blk, 2, out), 0);
	assert_int_equal(out[0], v);
	assert_int_equal(out[1], 0); /* past the end: never written */
}

static void test_cut_short_falls_back(void **state)
{
	struct env *e = *state;
	uint32_t v = 7, out;

	/* cmocka puts its own SIGBUS handler in for every test: map again
	 * here, which puts ours back in front of it. */
	pool_csum_unmap(&e->m);
	assert_int_equal(pool_csum_map(&e->m, e->fd), 0);
	assert_int_equal(pool_csum_store(&e->m, e->fd, &e->mu, 1000, 1, &v), 0);
	assert_int_equal(ftruncate(e->fd, 0), 0); /* behind the map's back */
	/* The map believes the old size: the page is gone, the access
	 * faults and is done again with pread (zeros past the end)... */
	out = 1;
	assert_int_equal(pool_csum_load(&e->m, e->fd, &e->mu, 1000, 1, &out), 0);
	assert_int_equal(out, 0);
	/* ...and it re-read the size, so a store grows the file again. */
	assert_int_equal(pool_csum_store(&e->m, e->fd, &e->mu, 1000, 1, &v), 0);
	assert_int_equal(pool_csum_load(&e->m, e->fd, &e->mu, 1000, 1, &out), 0);
	assert_int_equal(out, v);
	/* A store that faults (the size told wrongly) is done with pwrite. */
	assert_int_equal(ftruncate(e->fd, 0), 0);
	pool_csum_resized(&e->m, 1 << 20);
	v = 9;
	assert_int_equal(pool_csum_store(&e->m, e->fd, &e->mu, 2000, 1, &v), 0);
	assert_int_equal(pread(e->fd, &out, 4, 2000 * 4), 4);
	assert_int_equal(out, v);
}

static void test_window(void **state)
{
	struct env *e = *state;

	assert_true(pool_csum_covers(&e->m, 0, 1));
	assert_true(pool_csum_covers(&e->m, POOL_CSUM_WINDOW / 4 - 1, 1));
	assert_false(pool_csum_covers(&e->m, POOL_CSUM_WINDOW / 4 - 1, 2));
	assert_false(pool_csum_covers(&e->m, UINT64_MAX - 1, 4));
}

/* This program, for test_foreign_sigbus_kills to exec (argv[0]: under
 * valgrind /proc/self/exe is the tool, not the test). */
static const char *self_path;

/* The child of test_foreign_sigbus_kills, run as its own program: it maps
 * the sidecar, touches a page of another mapping past the end of the file
 * and must die of SIGBUS.  Exec'd rather than only forked so that under
 * valgrind (which does not follow exec by default) the fault is the
 * kernel's: memcheck turns a fatal SIGBUS into a minute of re-faulting. */
static int foreign_sigbus_child(const char *path)
{
	struct pool_csum_map m;
	int fd = open(path, O_RDWR);

	signal(SIGBUS, SIG_DFL); /* not a sanitizer's, which would report and exit */
	if (fd < 0 || pool_csum_map(&m, fd) < 0)
		return 3;
	volatile uint8_t *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED || ftruncate(fd, 0) < 0)
		return 3;
	uint8_t x = p[0]; /* SIGBUS: past the end */
	(void)x;
	return 0;
}

/* A SIGBUS outside a guarded access is not swallowed. */
static void test_foreign_sigbus_kills(void **state)
{
	struct env *e = *state;
	int status;

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(self_path, self_path, "--foreign-sigbus", e->path, (char *)NULL);
		_exit(4);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGBUS);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--foreign-sigbus") == 0)
		return foreign_sigbus_child(argv[2]);
	self_path = argv[0];
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_store_reaches_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_grown_elsewhere, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cut_short_falls_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_window, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_foreign_sigbus_kills, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
