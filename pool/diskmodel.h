/*
 * diskmodel.h -- emulated disks: a service-time model per pool disk.
 *
 * A lab pool's disks are directories on one shared device, so every
 * layout competes for that device and the results say little about a
 * JBOD of spindles.  A disk model gives each disk the speed of a real
 * drive: every data chunk I/O of that disk is admitted to the disk's
 * queue (struct pool_diskq), which says when a drive of that kind would
 * have finished it; pool/aio.c delivers the completion no earlier.
 *
 * Two kinds of drive, with the numbers of docs/BENCHMARKS.md ("Emulated
 * disks"):
 *   HDD    one actuator: a request that does not start where the previous
 *          one on the disk ended pays a seek that grows with the distance
 *          (settle + k * sqrt(distance), fitted to the data sheet's
 *          track-to-track and average seek) and half a rotation; every
 *          request pays its transfer at the drive's MB/s.
 *   FLASH  a per-request latency, a bandwidth and an IOPS ceiling: the
 *          device is "occupied" max(1/IOPS, bytes/bandwidth) per request,
 *          and each request takes at least latency + bytes/bandwidth, so
 *          requests overlap (internal parallelism) up to the ceiling.
 *
 * The model (struct pool_diskmodel) is stored with the disk in the pool
 * superblock; the queue is runtime state of the mounted daemon, one per
 * pool disk, shared by every volume on that disk.
 */
#ifndef SPACEFS_POOL_DISKMODEL_H
#define SPACEFS_POOL_DISKMODEL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum pool_diskmodel_kind {
	POOL_DISKMODEL_NONE = 0, /* the directory's own speed (default) */
	POOL_DISKMODEL_HDD = 1,
	POOL_DISKMODEL_FLASH = 2,
};

enum pool_diskmodel_preset {
	POOL_DISKMODEL_CUSTOM = 0, /* --iops/--mbps/--latency, or none */
	POOL_DISKMODEL_HDD7200 = 1,
	POOL_DISKMODEL_HDD15K = 2,
	POOL_DISKMODEL_SSD_SATA = 3,
	POOL_DISKMODEL_NVME = 4,
	POOL_DISKMODEL_NPRESETS,
};

/* A model's parameters, as stored (docs/FORMAT.md, "Disk model record").
 * HDD uses rpm, seek_min_us, seek_avg_us and the MB/s; FLASH the
 * latencies, MB/s and IOPS.  Unused fields are zero.  MB = 10^6 bytes. */
struct pool_diskmodel {
	uint32_t kind;	 /* enum pool_diskmodel_kind */
	uint32_t preset; /* enum pool_diskmodel_preset: the name it goes by */
	uint32_t rpm;
	uint32_t seek_min_us; /* track-to-track */
	uint32_t seek_avg_us; /* average (random distance) */
	uint32_t read_lat_us, write_lat_us;
	uint32_t read_mbps, write_mbps;
	uint32_t read_iops, write_iops;
};

/* The model a preset name stands for ("none", "hdd-7200", "hdd-15k",
 * "ssd-sata", "nvme").  -EINVAL for another name. */
int pool_diskmodel_preset(const char *name, struct pool_diskmodel *out);
/* A custom flash-like model: iops, MB/s and latency for reads and writes
 * alike.  -EINVAL (and *why) if a figure is out of range. */
int pool_diskmodel_custom(uint32_t iops, uint32_t mbps, uint32_t latency_us,
			  struct pool_diskmodel *out, const char **why);
/* 0 if m is a model this program can serve; else -EINVAL and *why. */
int pool_diskmodel_check(const struct pool_diskmodel *m, const char **why);
/* "none", "hdd-7200", ..., "custom". */
const char *pool_diskmodel_name(const struct pool_diskmodel *m);
/* One line of the model's figures, e.g. "7200 rpm, seek 0.8/8.5 ms,
 * 200/200 MB/s" (empty for none). */
void pool_diskmodel_describe(const struct pool_diskmodel *m, char *buf, size_t len);

/* ---- the maths (pure; unit-tested) ---- */

/* Seek time of an HDD model over `dist` (0..1 of a full stroke), ns. */
uint64_t pool_diskmodel_seek_ns(const struct pool_diskmodel *m, double dist);
/* Where a request lands relative to the previous one on its disk. */
enum pool_diskmodel_access {
	POOL_DISKMODEL_RANDOM = 0, /* a seek over `dist`, half a rotation */
	POOL_DISKMODEL_SEQUENTIAL, /* where the stream goes on: transfer only */
	POOL_DISKMODEL_SAME_SPOT,  /* the spot just passed: a full rotation */
};
/* Service of one request on an idle disk: occupy_ns is how long it keeps
 * the disk (the next request cannot start earlier), min_ns how long the
 * request itself takes at least (flash latency; == occupy_ns for HDD).
 * `access` and `dist` matter to an HDD only. */
void pool_diskmodel_service(const struct pool_diskmodel *m, int write, uint64_t len,
			    enum pool_diskmodel_access access, double dist, uint64_t *occupy_ns,
			    uint64_t *min_ns);
/* What a request costs on average when requests come at random places
 * (an HDD's average seek) or as one sequential stream: the figure the
 * benchmark predicts from counted chunk I/Os.  ns of disk time. */
uint64_t pool_diskmodel_expect_ns(const struct pool_diskmodel *m, int write, uint64_t len,
				  int sequential);

/* ---- one disk's queue (runtime) ---- */

struct pool_diskq {
	_Atomic int on; /* model is not none: read without the lock */
	pthread_mutex_t mu;
	struct pool_diskmodel m;
	uint64_t busy_until; /* CLOCK_MONOTONIC ns: the disk is free from then */
	int last_fd;	     /* the previous request: its file ... */
	uint64_t last_off;   /* ... where it started, where it ended ... */
	uint64_t last_end;
	double last_place; /* ... and where on the platter (0..1) */
	uint64_t since_ns; /* counters below start here */
	uint64_t busy_ns;  /* disk time used */
	uint64_t ios;	   /* requests admitted */
};

struct pool_diskq_stats {
	struct pool_diskmodel m;
	uint64_t busy_ns, elapsed_ns, ios;
};

int pool_diskq_new(const struct pool_diskmodel *m, uint64_t now_ns, struct pool_diskq **out);
void pool_diskq_free(struct pool_diskq *q);
/* Change the model (the disk keeps its queue and counters). */
void pool_diskq_set(struct pool_diskq *q, const struct pool_diskmodel *m);
/* Admit one request arriving at now_ns; returns when a drive of the
 * model would complete it (CLOCK_MONOTONIC ns).  Requests of one disk
 * are served in admission order. */
uint64_t pool_diskq_admit(struct pool_diskq *q, uint64_t now_ns, int fd, int write, uint64_t off,
			  uint64_t len);
void pool_diskq_stats(struct pool_diskq *q, uint64_t now_ns, struct pool_diskq_stats *out);

/* The one test on the data path: is this request modelled at all? */
static inline int pool_diskq_on(struct pool_diskq *q)
{
	return q && atomic_load_explicit(&q->on, memory_order_relaxed);
}

/* CLOCK_MONOTONIC now, ns. */
uint64_t pool_diskq_now(void);

#endif /* SPACEFS_POOL_DISKMODEL_H */
