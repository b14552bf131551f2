/*
 * metabench_create.c -- the timed part of bench/metabench: create N empty
 * files in one directory, as fast as the filesystem lets one or several
 * threads, and print the seconds it took.
 *
 *     metabench-create DIR N [THREADS]
 *
 * Each file is open(O_CREAT | O_EXCL | O_WRONLY) then close(), which is what
 * `touch` of a new name costs minus its utimensat: on FUSE, LOOKUP (the name
 * is new) and CREATE, then RELEASE at close.  With THREADS > 1 the names are
 * dealt out round-robin, so the creators hit the same directory at once (the
 * case group commit in pool/meta.c is for).  The driver is in C rather than
 * Python so that ext4's figure, the baseline of every ratio, is the
 * filesystem's cost and not the interpreter's.
 *
 * Output: one line, the wall seconds ("0.612").  Errors: one line naming the
 * file, exit 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

struct job {
	const char *dir;
	long n, first, step;
	int err;
	char why[600];
};

static void *create_files(void *arg)
{
	struct job *j = arg;
	char path[512];

	for (long i = j->first; i < j->n; i += j->step) {
		snprintf(path, sizeof(path), "%s/f%07ld", j->dir, i);
		int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0 || close(fd) < 0) {
			j->err = errno;
			snprintf(j->why, sizeof(j->why), "%s: %s", path, strerror(errno));
			return NULL;
		}
	}
	return NULL;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct job job[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	long n, nthreads = 1;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: metabench-create DIR N [THREADS]\n");
		return 2;
	}
	n = strtol(argv[2], NULL, 10);
	if (argc == 4)
		nthreads = strtol(argv[3], NULL, 10);
	if (n <= 0 || n > 10000000 || nthreads <= 0 || nthreads > MAX_THREADS) {
		fprintf(stderr, "metabench-create: N must be 1..10000000, THREADS 1..%d\n",
			MAX_THREADS);
		return 2;
	}
	double t0 = now();
	for (long i = 0; i < nthreads; i++) {
		job[i] = (struct job){.dir = argv[1], .n = n, .first = i, .step = nthreads};
		if (pthread_create(&th[i], NULL, create_files, &job[i]) != 0) {
			fprintf(stderr, "metabench-create: cannot start thread %ld\n", i);
			return 1;
		}
	}
	int failed = 0;
	for (long i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		if (job[i].err && !failed++)
			fprintf(stderr, "metabench-create: creating %s\n", job[i].why);
	}
	if (failed)
		return 1;
	printf("%.3f\n", now() - t0);
	return 0;
}
