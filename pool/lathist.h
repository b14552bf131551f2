/*
 * lathist.h -- a latency histogram cheap enough for the chunk I/O path.
 *
 * Bucket i counts I/Os that took less than 2^i microseconds (and at least
 * 2^(i-1)); the last bucket takes everything slower.  Recording is one
 * clock read per batch, a count-leading-zeros and two relaxed atomic adds,
 * so it can sit where every chunk I/O completes (pool/store.c) without
 * showing in a profile.  Readers (the metrics exporter, fs/metrics.c)
 * snapshot the buckets without a lock: each bucket is exact, the set is
 * only as consistent as any other pair of counters read one after another.
 *
 * The store submits a request's chunk I/Os as one batch and waits for
 * all of them, so the latency recorded for each chunk I/O is the batch's:
 * what the application's request waited for that disk.
 */
#ifndef SPACEFS_POOL_LATHIST_H
#define SPACEFS_POOL_LATHIST_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define POOL_LAT_BUCKETS 24 /* < 1 us ... < 2^22 us (4.2 s), then slower */

struct pool_lat_hist {
	_Atomic uint64_t bucket[POOL_LAT_BUCKETS];
	_Atomic uint64_t sum_us;
};

static inline uint64_t pool_lat_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The bucket of a latency of `us` microseconds. */
static inline unsigned pool_lat_bucket(uint64_t us)
{
	unsigned b = us ? 64u - (unsigned)__builtin_clzll(us) : 0u;

	return b < POOL_LAT_BUCKETS ? b : POOL_LAT_BUCKETS - 1;
}

/* Count one I/O that started at t0 (pool_lat_now_us) and is done now. */
static inline void pool_lat_record(struct pool_lat_hist *h, uint64_t t0)
{
	uint64_t now = pool_lat_now_us(), us = now > t0 ? now - t0 : 0;

	atomic_fetch_add_explicit(&h->bucket[pool_lat_bucket(us)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

static inline void pool_lat_snapshot(const struct pool_lat_hist *h, uint64_t *bucket,
				     uint64_t *sum_us)
{
	for (unsigned i = 0; i < POOL_LAT_BUCKETS; i++)
		bucket[i] = atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
	*sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
}

#endif /* SPACEFS_POOL_LATHIST_H */
