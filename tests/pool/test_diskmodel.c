/*
 * test_diskmodel.c -- the emulated disks' maths and queues.
 *
 * The model is what every benchmark figure on modelled disks is compared
 * against, so its numbers are pinned here by hand-computed values: the
 * seek curve's ends and average, what a sequential and a random request
 * cost, and how a disk's queue serialises requests (one actuator) while
 * two disks overlap.  No clocks: the queue takes "now" as an argument
 * (but for the last test, which runs batches through pool/aio.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/aio.h"
#include "pool/diskmodel.h"

#define MS 1000000ull
#define US 1000ull

static struct pool_diskmodel preset(const char *name)
{
	struct pool_diskmodel m;

	assert_int_equal(pool_diskmodel_preset(name, &m), 0);
	return m;
}

static void assert_near(double got, double want, double rel)
{
	if (got < want * (1 - rel) || got > want * (1 + rel))
		fail_msg("got %.1f, want %.1f within %.1f%%", got, want, rel * 100);
}

static void test_presets(void **state)
{
	static const char *const names[] = {"none", "hdd-7200", "hdd-15k", "ssd-sata", "nvme"};
	struct pool_diskmodel m;
	const char *why;

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		m = preset(names[i]);
		assert_int_equal(pool_diskmodel_check(&m, &why), 0);
		assert_string_equal(pool_diskmodel_name(&m), names[i]);
	}
	assert_int_equal(pool_diskmodel_preset("floppy", &m), -EINVAL);
	assert_int_equal(preset("none").kind, POOL_DISKMODEL_NONE);
	assert_int_equal(preset("hdd-7200").rpm, 7200);

	assert_int_equal(pool_diskmodel_custom(5000, 300, 200, &m, &why), 0);
	assert_string_equal(pool_diskmodel_name(&m), "custom");
	assert_int_equal(m.write_iops, 5000);
	assert_int_equal(pool_diskmodel_custom(0, 300, 200, &m, &why), -EINVAL);
	assert_non_null(why);
	assert_int_equal(pool_diskmodel_custom(10, 0, 200, &m, &why), -EINVAL);

	m = preset("hdd-7200");
	m.seek_min_us = m.seek_avg_us + 1;
	assert_int_equal(pool_diskmodel_check(&m, &why), -EINVAL);
	m = preset("hdd-7200");
	m.read_iops = 5; /* an HDD has no IOPS figure */
	assert_int_equal(pool_diskmodel_check(&m, &why), -EINVAL);
	m = preset("none");
	m.rpm = 1;
	assert_int_equal(pool_diskmodel_check(&m, &why), -EINVAL);
}

/* settle + k sqrt(d): track-to-track at 0, the data sheet's average over
 * uniformly random pairs of places, a + b at full stroke. */
static void test_seek_curve(void **state)
{
	struct pool_diskmodel m = preset("hdd-7200");
	double sum = 0;
	uint64_t s = 88172645463325252ull;
	const int n = 200000;

	(void)state;
	assert_int_equal(pool_diskmodel_seek_ns(&m, 0), m.seek_min_us * US);
	/* b = (7.8 - 0.3) / (8/15) = 14.0625 ms: full stroke 14.36 ms */
	assert_near((double)pool_diskmodel_seek_ns(&m, 1), 14362500, 0.001);
	assert_true(pool_diskmodel_seek_ns(&m, 0.1) < pool_diskmodel_seek_ns(&m, 0.5));
	for (int i = 0; i < n; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		double x = (double)(s >> 11) / 9007199254740992.0;
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		double y = (double)(s >> 11) / 9007199254740992.0;
		sum += (double)pool_diskmodel_seek_ns(&m, x > y ? x - y : y - x);
	}
	assert_near(sum / n, m.seek_avg_us * (double)US, 0.01);
}

/* Sequential requests pay the transfer only; random ones a seek and half
 * a rotation too.  Flash: occupancy is the IOPS slot or the transfer. */
static void test_service(void **state)
{
	struct pool_diskmodel h = preset("hdd-7200"), f = preset("ssd-sata");
	uint64_t occ, min;

	(void)state;
	pool_diskmodel_service(&h, 0, 4096, POOL_DISKMODEL_SEQUENTIAL, 0.5, &occ, &min);
	assert_int_equal(occ, 4096 * 1000 / 200); /* 20.48 us at 200 MB/s */
	assert_int_equal(min, occ);
	pool_diskmodel_service(&h, 1, 1 << 20, POOL_DISKMODEL_SEQUENTIAL, 0, &occ, &min);
	assert_int_equal(occ, (1u << 20) * 1000ull / 200); /* 5.24 ms per MiB */
	pool_diskmodel_service(&h, 0, 4096, POOL_DISKMODEL_RANDOM, 0, &occ, &min);
	assert_int_equal(occ, 300 * US + 4166666 + 20480); /* t2t + half turn + xfer */
	pool_diskmodel_service(&h, 1, 4096, POOL_DISKMODEL_SAME_SPOT, 0, &occ, &min);
	assert_int_equal(occ, 2 * 4166666 + 20480); /* a full turn + xfer */
	/* the benchmark's figure for random 4 KiB: average seek + half turn */
	assert_int_equal(pool_diskmodel_expect_ns(&h, 0, 4096, 0), 7800 * US + 4166666 + 20480);
	assert_int_equal(pool_diskmodel_expect_ns(&h, 0, 4096, 1), 20480);

	pool_diskmodel_service(&f, 0, 4096, POOL_DISKMODEL_RANDOM, 0.7, &occ, &min);
	assert_int_equal(occ, 1000000000ull / 72000); /* the IOPS slot: 13.9 us */
	assert_int_equal(min, 110 * US + 4096 * 1000 / 500);
	pool_diskmodel_service(&f, 1, 1 << 20, POOL_DISKMODEL_RANDOM, 0, &occ, &min);
	assert_int_equal(occ, (1u << 20) * 1000ull / 490); /* bandwidth-bound */
	assert_int_equal(pool_diskmodel_expect_ns(&f, 1, 4096, 0), 1000000000ull / 33000);

	struct pool_diskmodel none = preset("none");
	pool_diskmodel_service(&none, 0, 4096, POOL_DISKMODEL_RANDOM, 0.5, &occ, &min);
	assert_int_equal(occ + min, 0);
}

/* One actuator: requests given at the same moment finish one after the
 * other, each its own service later; a second disk runs in parallel. */
static void test_queue_serialises(void **state)
{
	struct pool_diskmodel h = preset("hdd-7200");
	struct pool_diskq *a, *b;
	struct pool_diskq_stats st;
	uint64_t t0 = 1000 * MS, prev = t0, sum = 0;

	(void)state;
	assert_int_equal(pool_diskq_new(&h, t0, &a), 0);
	assert_int_equal(pool_diskq_new(&h, t0, &b), 0);
	assert_true(pool_diskq_on(a));
	for (int i = 0; i < 8; i++) {
		uint64_t done = pool_diskq_admit(a, t0, 10, 0, (uint64_t)i * (64 << 20), 4096);
		uint64_t svc = done - prev;
		/* each random request costs at least t2t + half a turn, at
		 * most a full stroke + half a turn */
		assert_true(svc >= 300 * US + 4166666);
		assert_true(svc <= 14362500 + 4166666 + 20480 + 1);
		sum += svc;
		prev = done;
	}
	/* disk b is idle: its first request does not wait for disk a */
	uint64_t done_b = pool_diskq_admit(b, t0, 11, 1, 0, 4096);
	assert_true(done_b - t0 <= 14362500 + 4166666 + 20480 + 1);
	pool_diskq_stats(a, t0 + 2000 * MS, &st);
	assert_int_equal(st.ios, 8);
	assert_int_equal(st.busy_ns, sum);
	assert_int_equal(st.elapsed_ns, 2000 * MS);
	assert_string_equal(pool_diskmodel_name(&st.m), "hdd-7200");

	/* a request arriving after the disk went idle starts at once */
	uint64_t later = prev + 50 * MS;
	uint64_t done = pool_diskq_admit(a, later, 10, 0, 3 << 20, 4096);
	assert_true(done - later <= 14362500 + 4166666 + 20480 + 1);
	/* and the next one right behind it, sequential: transfer only */
	assert_int_equal(pool_diskq_admit(a, later, 10, 0, (3 << 20) + 4096, 4096), done + 20480);
	uint64_t d2 = done + 20480;
	/* a stream's requests out of order: still transfer only */
	assert_int_equal(pool_diskq_admit(a, later, 10, 0, (3 << 20) + 65536, 4096), d2 + 20480);
	assert_int_equal(pool_diskq_admit(a, later, 10, 0, (3 << 20) + 8192, 4096), d2 + 40960);
	/* writing the block just read: a full rotation */
	uint64_t d3 = d2 + 40960 + 2 * 4166666 + 20480;
	assert_int_equal(pool_diskq_admit(a, later, 10, 1, (3 << 20) + 8192, 4096), d3);
	/* near, but another file: a seek and half a turn */
	assert_true(pool_diskq_admit(a, later, 12, 0, (3 << 20) + 12288, 4096) >=
		    d3 + 300 * US + 4166666 + 20480);
	pool_diskq_free(a);
	pool_diskq_free(b);
}

/* Random 4 KiB requests back to back on one HDD average the data
 * sheet's figure: what bench/diskmodel-check expects from fio. */
static void test_queue_random_average(void **state)
{
	struct pool_diskmodel h = preset("hdd-7200");
	struct pool_diskq *q;
	uint64_t t0 = 5 * MS, done = 0, s = 0x2545F4914F6CDD1Dull;
	const int n = 20000;

	(void)state;
	assert_int_equal(pool_diskq_new(&h, t0, &q), 0);
	for (int i = 0; i < n; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		uint64_t off = (s % (1ull << 30)) & ~4095ull; /* a 1 GiB file */
		done = pool_diskq_admit(q, t0, 7, (int)(s & 1), off, 4096);
	}
	assert_near((double)(done - t0) / n, (double)pool_diskmodel_expect_ns(&h, 0, 4096, 0),
		    0.02);
	pool_diskq_free(q);
}

/* Flash: one request at a time takes latency + transfer; many at once
 * are bound by the IOPS ceiling, not by the latency. */
static void test_queue_flash(void **state)
{
	struct pool_diskmodel f = preset("nvme");
	struct pool_diskq *q;
	uint64_t t0 = 7 * MS, done = 0;

	(void)state;
	assert_int_equal(pool_diskq_new(&f, t0, &q), 0);
	done = pool_diskq_admit(q, t0, 3, 0, 0, 4096);
	assert_int_equal(done - t0, 85 * US + 4096 * 1000 / 3200);
	/* QD 1: the next request comes when this one is done */
	uint64_t t1 = done;
	assert_int_equal(pool_diskq_admit(q, t1, 3, 0, 1 << 30, 4096) - t1, 85 * US + 1280);
	/* 49,000 reads at once: 0.1 s at 490,000 IOPS, latency hidden */
	uint64_t t2 = t1 + 10 * MS;
	for (int i = 0; i < 49000; i++)
		done = pool_diskq_admit(q, t2, 3, 0, (uint64_t)i << 12, 4096);
	assert_near((double)(done - t2), 100 * MS, 0.01);

	/* switching the model keeps the queue; none turns the test off */
	struct pool_diskmodel none = {0};
	pool_diskq_set(q, &none);
	assert_false(pool_diskq_on(q));
	assert_false(pool_diskq_on(NULL));
	pool_diskq_free(q);
}

/* A stand-in for io_uring_enter (pool_aio_test_enter): its first call
 * fails as a ring made by another thread would (EEXIST: a thread id
 * reused), taking nothing; later ones are the system call. */
static int eexist_calls;

static int eexist_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
	if (eexist_calls++ == 0) {
		errno = EEXIST;
		return -1;
	}
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

/* A batch the ring refuses (EEXIST) and libaio then runs is admitted to
 * the emulated disk once, not once per engine tried: the disk counts two
 * I/Os for a batch of two, and the data lands. */
static void test_aio_admits_once(void **state)
{
	struct pool_diskmodel f = preset("nvme");
	struct pool_diskq *q;
	struct pool_diskq_stats st;
	struct pool_aio *e;
	char path[] = "/var/tmp/spacefs-dm-XXXXXX";
	int fd = mkstemp(path);
	char buf[2][4096], back[4096];

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(pool_diskq_new(&f, pool_diskq_now(), &q), 0);
	assert_int_equal(pool_aio_new(&e), 0);
	pool_aio_test_enter(e, eexist_enter);
	struct pool_aio_req r[2];
	for (int i = 0; i < 2; i++) {
		memset(buf[i], 'a' + i, sizeof(buf[i]));
		r[i] = (struct pool_aio_req){.fd = fd,
					     .op = POOL_AIO_WRITE,
					     .buf = buf[i],
					     .len = sizeof(buf[i]),
					     .off = (uint64_t)i * 4096,
					     .dq = q,
					     .direct = 1};
	}
	assert_int_equal(pool_aio_run(e, r, 2), 0);
	assert_int_equal(r[0].result, 4096);
	assert_int_equal(r[1].result, 4096);
	pool_diskq_stats(q, pool_diskq_now(), &st);
	assert_int_equal(st.ios, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pread(fd, back, sizeof(back), i * 4096), sizeof(back));
		assert_memory_equal(back, buf[i], sizeof(back));
	}
	/* no ring (SPACEFS_AIO=libaio, or the kernel refuses it): the test
	 * above went through libaio alone and proves less */
	int ring = eexist_calls > 0;
	/* the next batch: a fresh ring of this thread, admitted once too */
	assert_int_equal(pool_aio_run(e, r, 2), 0);
	pool_diskq_stats(q, pool_diskq_now(), &st);
	assert_int_equal(st.ios, 4);
	if (ring)
		assert_true(eexist_calls >= 2);
	pool_aio_free(e);
	pool_diskq_free(q);
	close(fd);
	if (!ring)
		skip();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_presets),
	    cmocka_unit_test(test_seek_curve),
	    cmocka_unit_test(test_service),
	    cmocka_unit_test(test_queue_serialises),
	    cmocka_unit_test(test_queue_random_average),
	    cmocka_unit_test(test_queue_flash),
	    cmocka_unit_test(test_aio_admits_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
