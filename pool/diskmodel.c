/*
 * diskmodel.c -- service times of emulated disks, and each disk's queue.
 *
 * The maths is deliberately small, so a reader can check a benchmark's
 * figure by hand (docs/BENCHMARKS.md, "Emulated disks"):
 *
 *   HDD    seek(d) = a + b * sqrt(d), d the distance in full strokes.
 *          a is the data sheet's track-to-track seek; b is fitted so that
 *          the average over uniformly random pairs of places (E[sqrt d] =
 *          8/15) is the data sheet's average seek.  The full stroke comes
 *          out at a + b, close to what data sheets give where they do.
 *          A request pays seek(d) + half a rotation + bytes/MB/s, unless it
 *          goes on from the previous request on the disk (same chunk file,
 *          starting within 2 MiB of where that one ended: see access_of):
 *          then it pays the transfer only; and a request for the very spot
 *          the previous one started at pays a full rotation.
 *   FLASH  occupancy max(1/IOPS, bytes/MB/s) (the throughput ceiling),
 *          and each request lasts at least latency + bytes/MB/s.
 *
 * Where on the platter a request lands: the emulated disk is taken to be
 * full and aged, each 1 MiB extent of each chunk file at a pseudo-random
 * place (a hash of the file and extent).  So random I/O sees the data
 * sheet's average seek whatever the size of the test file, which is what
 * a data sheet's random IOPS describe; a lab pool's few GiB spread over a
 * whole emulated 4 TB platter would otherwise seek almost nowhere.
 *
 * The queue (struct pool_diskq) is a virtual clock: busy_until is when
 * the disk finishes what it was already given.  A request admitted at
 * `now` starts at max(now, busy_until) and moves busy_until on by its
 * occupancy, so requests of one disk are served one after the other in
 * the order they came (a single actuator, whatever the queue depth), and
 * disks, each with its own clock, work in parallel.  Nothing here sleeps
 * or spins: pool/aio.c waits for the deadline admit() returns.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool/diskmodel.h"

#define NS_PER_US 1000ull
#define NS_PER_S  1000000000ull
#define EXTENT	  (1ull << 20) /* placement unit on the emulated platter */
#define NEAR	  (2ull << 20) /* a stream's requests may arrive this far apart */
#define SQRT_MEAN (8.0 / 15.0) /* E[sqrt |x - y|] for x, y uniform on [0, 1] */

static const char *const preset_name[POOL_DISKMODEL_NPRESETS] = {
    [POOL_DISKMODEL_CUSTOM] = "custom",	 [POOL_DISKMODEL_HDD7200] = "hdd-7200",
    [POOL_DISKMODEL_HDD15K] = "hdd-15k", [POOL_DISKMODEL_SSD_SATA] = "ssd-sata",
    [POOL_DISKMODEL_NVME] = "nvme",
};

/* The presets: docs/BENCHMARKS.md names the data sheet of every figure. */
static const struct pool_diskmodel presets[POOL_DISKMODEL_NPRESETS] = {
    [POOL_DISKMODEL_HDD7200] = {.kind = POOL_DISKMODEL_HDD,
				.preset = POOL_DISKMODEL_HDD7200,
				.rpm = 7200,
				.seek_min_us = 300,
				.seek_avg_us = 7800,
				.read_mbps = 200,
				.write_mbps = 200},
    [POOL_DISKMODEL_HDD15K] = {.kind = POOL_DISKMODEL_HDD,
			       .preset = POOL_DISKMODEL_HDD15K,
			       .rpm = 15000,
			       .seek_min_us = 200,
			       .seek_avg_us = 3000,
			       .read_mbps = 200,
			       .write_mbps = 200},
    [POOL_DISKMODEL_SSD_SATA] = {.kind = POOL_DISKMODEL_FLASH,
				 .preset = POOL_DISKMODEL_SSD_SATA,
				 .read_lat_us = 110,
				 .write_lat_us = 52,
				 .read_mbps = 500,
				 .write_mbps = 490,
				 .read_iops = 72000,
				 .write_iops = 33000},
    [POOL_DISKMODEL_NVME] = {.kind = POOL_DISKMODEL_FLASH,
			     .preset = POOL_DISKMODEL_NVME,
			     .read_lat_us = 85,
			     .write_lat_us = 20,
			     .read_mbps = 3200,
			     .write_mbps = 1050,
			     .read_iops = 490000,
			     .write_iops = 38000},
};

int pool_diskmodel_preset(const char *name, struct pool_diskmodel *out)
{
	if (!strcmp(name, "none")) {
		memset(out, 0, sizeof(*out));
		return 0;
	}
	for (int i = 1; i < POOL_DISKMODEL_NPRESETS; i++) {
		if (!strcmp(name, preset_name[i])) {
			*out = presets[i];
			return 0;
		}
	}
	return -EINVAL;
}

int pool_diskmodel_custom(uint32_t iops, uint32_t mbps, uint32_t latency_us,
			  struct pool_diskmodel *out, const char **why)
{
	struct pool_diskmodel m = {.kind = POOL_DISKMODEL_FLASH,
				   .preset = POOL_DISKMODEL_CUSTOM,
				   .read_lat_us = latency_us,
				   .write_lat_us = latency_us,
				   .read_mbps = mbps,
				   .write_mbps = mbps,
				   .read_iops = iops,
				   .write_iops = iops};
	int rc = pool_diskmodel_check(&m, why);

	if (rc == 0)
		*out = m;
	return rc;
}

static int check_hdd(const struct pool_diskmodel *m, const char **why)
{
	if (m->rpm < 1000 || m->rpm > 30000)
		*why = "rpm must be 1000..30000";
	else if (m->seek_avg_us < 1 || m->seek_avg_us > 100000)
		*why = "average seek must be 1 us..100 ms";
	else if (m->seek_min_us > m->seek_avg_us)
		*why = "track-to-track seek is longer than the average seek";
	else if (m->read_mbps < 1 || m->read_mbps > 100000 || m->write_mbps < 1 ||
		 m->write_mbps > 100000)
		*why = "MB/s must be 1..100000";
	else if (m->read_lat_us || m->write_lat_us || m->read_iops || m->write_iops)
		*why = "an HDD model has no latency or IOPS figures";
	return *why ? -EINVAL : 0;
}

static int check_flash(const struct pool_diskmodel *m, const char **why)
{
	if (m->read_iops < 1 || m->read_iops > 100000000 || m->write_iops < 1 ||
	    m->write_iops > 100000000)
		*why = "IOPS must be 1..100000000";
	else if (m->read_mbps < 1 || m->read_mbps > 100000 || m->write_mbps < 1 ||
		 m->write_mbps > 100000)
		*why = "MB/s must be 1..100000";
	else if (m->read_lat_us > 10000000 || m->write_lat_us > 10000000)
		*why = "latency must be at most 10 s";
	else if (m->rpm || m->seek_min_us || m->seek_avg_us)
		*why = "a flash model has no rpm or seek figures";
	return *why ? -EINVAL : 0;
}

int pool_diskmodel_check(const struct pool_diskmodel *m, const char **why)
{
	static const struct pool_diskmodel zero;

	*why = NULL;
	if (m->preset >= POOL_DISKMODEL_NPRESETS) {
		*why = "unknown preset";
		return -EINVAL;
	}
	switch (m->kind) {
	case POOL_DISKMODEL_NONE:
		if (memcmp(m, &zero, sizeof(zero)))
			*why = "model none has figures";
		return *why ? -EINVAL : 0;
	case POOL_DISKMODEL_HDD:
		return check_hdd(m, why);
	case POOL_DISKMODEL_FLASH:
		return check_flash(m, why);
	default:
		*why = "unknown model kind";
		return -EINVAL;
	}
}

const char *pool_diskmodel_name(const struct pool_diskmodel *m)
{
	if (m->kind == POOL_DISKMODEL_NONE)
		return "none";
	return m->preset < POOL_DISKMODEL_NPRESETS ? preset_name[m->preset] : "custom";
}

void pool_diskmodel_describe(const struct pool_diskmodel *m, char *buf, size_t len)
{
	if (m->kind == POOL_DISKMODEL_HDD)
		snprintf(buf, len, "%u rpm, seek %.2f/%.1f ms, %u/%u MB/s", m->rpm,
			 m->seek_min_us / 1000.0, m->seek_avg_us / 1000.0, m->read_mbps,
			 m->write_mbps);
	else if (m->kind == POOL_DISKMODEL_FLASH)
		snprintf(buf, len, "%u/%u IOPS, %u/%u MB/s, %u/%u us", m->read_iops, m->write_iops,
			 m->read_mbps, m->write_mbps, m->read_lat_us, m->write_lat_us);
	else if (len)
		buf[0] = '\0';
}

/* ---- the maths ------------------------------------------------------------------ */

static uint64_t xfer_ns(const struct pool_diskmodel *m, int write, uint64_t len)
{
	uint32_t mbps = write ? m->write_mbps : m->read_mbps;

	return mbps ? len * 1000 / mbps : 0; /* bytes / (MB/s) = us; * 1000 = ns */
}

uint64_t pool_diskmodel_seek_ns(const struct pool_diskmodel *m, double dist)
{
	double a = m->seek_min_us, b = (m->seek_avg_us - a) / SQRT_MEAN;

	if (dist < 0)
		dist = 0;
	if (dist > 1)
		dist = 1;
	return (uint64_t)((a + b * sqrt(dist)) * (double)NS_PER_US);
}

static uint64_t half_rotation_ns(const struct pool_diskmodel *m)
{
	return m->rpm ? 30ull * NS_PER_S / m->rpm : 0; /* 60 s / rpm / 2 */
}

void pool_diskmodel_service(const struct pool_diskmodel *m, int write, uint64_t len,
			    enum pool_diskmodel_access access, double dist, uint64_t *occupy_ns,
			    uint64_t *min_ns)
{
	uint64_t x = xfer_ns(m, write, len);

	if (m->kind == POOL_DISKMODEL_HDD) {
		*occupy_ns = x;
		if (access == POOL_DISKMODEL_RANDOM)
			*occupy_ns += pool_diskmodel_seek_ns(m, dist) + half_rotation_ns(m);
		else if (access == POOL_DISKMODEL_SAME_SPOT)
			*occupy_ns += 2 * half_rotation_ns(m);
		*min_ns = *occupy_ns;
	} else if (m->kind == POOL_DISKMODEL_FLASH) {
		uint32_t iops = write ? m->write_iops : m->read_iops;
		uint64_t slot = iops ? NS_PER_S / iops : 0;
		*occupy_ns = slot > x ? slot : x;
		*min_ns = (uint64_t)(write ? m->write_lat_us : m->read_lat_us) * NS_PER_US + x;
	} else {
		*occupy_ns = *min_ns = 0;
	}
}

uint64_t pool_diskmodel_expect_ns(const struct pool_diskmodel *m, int write, uint64_t len,
				  int sequential)
{
	uint64_t occ, min;

	if (m->kind == POOL_DISKMODEL_HDD && !sequential) {
		/* the average seek by construction of the curve */
		return xfer_ns(m, write, len) + (uint64_t)m->seek_avg_us * NS_PER_US +
		       half_rotation_ns(m);
	}
	pool_diskmodel_service(m, write, len,
			       sequential ? POOL_DISKMODEL_SEQUENTIAL : POOL_DISKMODEL_RANDOM, 0,
			       &occ, &min);
	return occ;
}

/* ---- the queue ------------------------------------------------------------------ */

uint64_t pool_diskq_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

int pool_diskq_new(const struct pool_diskmodel *m, uint64_t now_ns, struct pool_diskq **out)
{
	struct pool_diskq *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->mu, NULL);
	q->m = *m;
	q->last_fd = -1;
	q->since_ns = now_ns;
	atomic_store(&q->on, m->kind != POOL_DISKMODEL_NONE);
	*out = q;
	return 0;
}

void pool_diskq_free(struct pool_diskq *q)
{
	if (!q)
		return;
	pthread_mutex_destroy(&q->mu);
	free(q);
}

void pool_diskq_set(struct pool_diskq *q, const struct pool_diskmodel *m)
{
	pthread_mutex_lock(&q->mu);
	q->m = *m;
	atomic_store(&q->on, m->kind != POOL_DISKMODEL_NONE);
	pthread_mutex_unlock(&q->mu);
}

/* Where the extent holding byte `off` of the file behind fd lies on the
 * platter, 0..1: a splitmix64 hash, so places look uniformly random. */
static double place(int fd, uint64_t off)
{
	uint64_t z = ((uint64_t)(uint32_t)fd << 40) ^ (off / EXTENT);

	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* Sequential: the same file, starting within NEAR of where the previous
 * request ended.  Not only exactly there: a stream split into several
 * requests in flight at once reaches the queue in any order, and a real
 * drive's command queue and track cache serve such a stream as one.  The
 * same spot again (a parity update writing the block it just read) waits
 * for the platter to come round. */
static enum pool_diskmodel_access access_of(const struct pool_diskq *q, int fd, uint64_t off)
{
	if (fd != q->last_fd)
		return POOL_DISKMODEL_RANDOM;
	if (off == q->last_off)
		return POOL_DISKMODEL_SAME_SPOT;
	uint64_t gap = off > q->last_end ? off - q->last_end : q->last_end - off;
	return gap <= NEAR ? POOL_DISKMODEL_SEQUENTIAL : POOL_DISKMODEL_RANDOM;
}

uint64_t pool_diskq_admit(struct pool_diskq *q, uint64_t now_ns, int fd, int write, uint64_t off,
			  uint64_t len)
{
	uint64_t occ, min, start, done;
	double where = place(fd, off);

	pthread_mutex_lock(&q->mu);
	enum pool_diskmodel_access a = access_of(q, fd, off);
	double dist = where > q->last_place ? where - q->last_place : q->last_place - where;
	pool_diskmodel_service(&q->m, write, len, a, dist, &occ, &min);
	start = q->busy_until > now_ns ? q->busy_until : now_ns;
	q->busy_until = start + occ;
	q->busy_ns += occ;
	q->ios++;
	q->last_fd = fd;
	q->last_off = off;
	q->last_end = off + len;
	q->last_place = where;
	pthread_mutex_unlock(&q->mu);
	done = start + occ;
	return done > now_ns + min ? done : now_ns + min;
}

void pool_diskq_stats(struct pool_diskq *q, uint64_t now_ns, struct pool_diskq_stats *out)
{
	pthread_mutex_lock(&q->mu);
	out->m = q->m;
	out->busy_ns = q->busy_ns;
	out->ios = q->ios;
	out->elapsed_ns = now_ns > q->since_ns ? now_ns - q->since_ns : 0;
	pthread_mutex_unlock(&q->mu);
}
