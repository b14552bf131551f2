/*
 * store_priv.h -- what the store's own files share: pool/store.c (the
 * data path), pool/fdcache.c (chunk files and the descriptor cache) and
 * pool/check.c (checking, resyncing and repairing stripes).
 *
 * Nothing outside those files includes this header: other pool/ modules
 * get the narrow view of store_int.h, fs/ gets store.h.  The structs are
 * here, not opaque, because a request (struct rq) is built by the data
 * path and carried by the check code through the same two I/O phases, and
 * both reach chunk files through the descriptor cache.  The functions
 * declared here are the seams between the files; each file's essay says
 * what it owns.
 */
#ifndef SPACEFS_POOL_STORE_PRIV_H
#define SPACEFS_POOL_STORE_PRIV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout/layout.h"
#include "pool/aio.h"
#include "pool/csum.h"
#include "pool/lathist.h"
#include "pool/store.h"
#include "pool/stripelock.h"

#define BLK	     ((uint64_t)LAYOUT_BLOCK)
#define CRC_BYTES    4u
#define FD_SHARDS    16u
#define FD_CACHE_MAX 4096u /* chunk files kept open, all shards */
#define FD_CACHE_MIN 16u
/* A request larger than this is carried out in pieces, each under its own
 * lock set, so one huge call cannot grow the scratch area without bound.
 * FUSE requests (1 MiB) are always one piece. */
#define PIECE_BYTES (8u << 20)
/* O_DIRECT chunk files are grown ahead of the data in steps this big
 * (see chunk_reserve). */
#define GROW_STEP (16ull << 20)

/* ---- the store ------------------------------------------------------------ */

struct disk_counters {
	_Atomic uint64_t reads, writes, read_bytes, write_bytes, errors, csum_errors, healed;
	struct pool_lat_hist lat; /* completed chunk I/Os (pool/lathist.h) */
};

struct store_disk {
	char *path; /* the disk directory as configured, for messages */
	char *dir;  /* <disk>/vol/<volume>/data; NULL if the disk is absent */
	int direct; /* chunk files opened with O_DIRECT */
	int holes;  /* SEEK_HOLE finds holes here (probe_holes) */
	dev_t dev;  /* of dir, to tell a directory replaced under us */
	ino_t ino;
	/* enum pool_store_disk_state; requests turn it into the planner's
	 * `failed` mask (REBUILDING: see rq_mask). */
	_Atomic uint8_t state;
	_Atomic uint64_t rb_id, rb_stripe; /* rebuild cursor */
	struct pool_diskq *dq;		   /* emulated disk of this index, or NULL (aio.h) */
	struct disk_counters c __attribute__((aligned(64))); /* no false sharing */
};

/* One cached chunk: the data file and its checksum sidecar. */
struct fd_entry {
	uint64_t id;
	uint32_t pos, disk;
	int fd, crcfd;		  /* crcfd -1: no sidecar yet (or integrity off) */
	uint32_t ref;		  /* requests using the descriptors */
	int32_t next;		  /* hash chain, or free list */
	uint8_t used;		  /* slot holds a chunk */
	uint8_t clock;		  /* referenced since the hand last passed */
	uint8_t hashed;		  /* 0: removed from the table, closed at last release */
	_Atomic uint64_t size;	  /* chunk i_size as last seen; a hint (see chunk_reserve) */
	struct pool_csum_map map; /* the sidecar mapped (base NULL: not mapped) */
};

struct fd_shard {
	pthread_mutex_t mu;
	uint32_t cap, nbucket, hand;
	int32_t free; /* free-slot list through next */
	int32_t *bucket;
	struct fd_entry *e;
} __attribute__((aligned(64)));

struct scratch;

struct pool_store {
	char *volume;
	struct layout_geom g;
	uint32_t k, npos;
	uint64_t stripe_bytes;
	int integrity;
	int any_direct;		    /* some disk uses O_DIRECT: aliased buffers must be aligned */
	struct layout_codec *codec; /* parity only */
	struct pool_aio *aio;
	struct stripelock *locks;
	uint64_t lock_unit; /* file bytes per lock-table key (store_lock_bytes) */
	uint8_t *zeros;	    /* stripe_bytes of zeros (untouched anonymous memory) */
	size_t zeros_len;
	uint32_t ndisks;
	struct store_disk *disk;
	struct fd_shard shard[FD_SHARDS];
	pthread_mutex_t scratch_mu; /* guards scratch_idle and scratch_busy */
	struct scratch *scratch_idle;
	size_t scratch_busy;
	pthread_mutex_t size_mu; /* serialises changes of chunk file sizes */
	struct pool_store_hooks hooks;
	pthread_mutex_t grave_mu; /* old disk paths, freed at close (readers may hold them) */
	char **grave;
	size_t ngrave;
	struct pool_journal *_Atomic journal; /* parity journal (pool/journal.h); NULL: none */
	struct pool_wb *_Atomic wb;	      /* its write-back cache (pool/wback.h); NULL: none */
	struct pool_fault *fault;	      /* crash-test fault (pool/fault.h); NULL: none */
};

/* One line on stderr, written at once so lines of threads do not mix. */
/* ---- scratch sets ------------------------------------------------------------ */

/* One chunk I/O of a phase.  run/at: its checksums' place (write phase). */
struct cio {
	uint32_t pos;
	uint32_t len;
	uint64_t off; /* chunk offset */
	uint8_t *buf;
	uint32_t run, at;
};

/* A contiguous range of checksums of one position, written at once. */
struct crc_run {
	uint32_t pos;
	uint32_t nblk;
	uint64_t blk; /* first block */
	size_t base;  /* index into scratch crc[] */
};

struct scratch {
	struct layout_write_plan *wp;
	size_t wp_cap;
	struct layout_read_plan *rp;
	size_t rp_cap;
	uint8_t **pdst; /* read: destination of each plan */
	size_t pdst_cap;
	uint8_t *alias; /* read: plan reads land in pdst directly */
	size_t alias_cap;
	struct cio *cio;
	size_t cio_cap;
	uint8_t **ptr; /* rbuf/wbuf pointer arrays handed to layout/ */
	size_t ptr_cap;
	struct pool_aio_req *req;
	size_t req_cap;
	uint32_t *crc;
	size_t crc_cap;
	struct crc_run *run;
	size_t run_cap;
	uint8_t *buf; /* 4 KiB aligned I/O buffers, carved per phase */
	size_t buf_cap;
	uint8_t *src; /* 4 KiB aligned bounce for the caller's range */
	size_t src_cap;
	uint32_t pick;	      /* mirror read balancing */
	struct scratch *next; /* on the free list */
};

/* A request's hold on one position's descriptors. */
struct chunk_ref {
	struct fd_entry *e; /* NULL: not cached, the ref owns the fds */
	int fd, crcfd;	    /* fd -1: the chunk file does not exist */
	uint32_t shard;
	/* the sidecar's mapping (the entry's), NULL: use pread/pwrite */
	struct pool_csum_map *map;
};

/* What a request holds: the file, the positions it has opened. */
struct rq {
	struct pool_store *s;
	struct scratch *t;
	const struct pool_file_map *f;
	uint64_t failed;   /* planner mask of positions on failed disks */
	uint64_t rebuild;  /* positions on REBUILDING disks (see rq_mask) */
	uint64_t extra;	   /* positions left out by the caller (failed on a first try) */
	uint64_t bad;	   /* positions that gave an I/O error or a bad checksum */
	uint64_t csum_bad; /* positions that gave a bad checksum */
	uint64_t wfail;	   /* positions with a chunk or checksum write that failed */
	uint8_t *badblk;   /* check mode: per-block verdicts of a read phase */
	uint32_t *stored;  /* check mode: per-block stored checksums */
	uint64_t have;	   /* positions with a ref */
	struct chunk_ref ref[LAYOUT_MAX_POSITIONS];
};

/* Check mode's per-block verdicts (rq.badblk): the read failed, so the
 * bytes are unknown, or the bytes were read and disagree with their stored
 * checksum (which a resync may still compare other bytes with). */
#define BAD_IO	 1
#define BAD_CSUM 2

/* ---- seams between the store's files ---- */

/* store.c: helpers every file of the store uses. */

/* One line on stderr, "spacefs: volume V: ...", written at once. */
void store_log(const struct pool_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void store_count(_Atomic uint64_t *c, uint64_t v);
/* Grow an array to hold n elements of elem bytes; contents need not
 * survive.  0 or -ENOMEM. */
int store_grow(void *pp, size_t *cap, size_t n, size_t elem);
int store_all_zero(const uint8_t *p, size_t len);
/* Does block b match its stored checksum?  *computed gets its CRC. */
int store_block_ok(const uint8_t *b, uint32_t stored, uint32_t *computed);
/* 0, or -EINVAL when f does not fit the store (positions, disks). */
int store_check_file(const struct pool_store *s, const struct pool_file_map *f);
enum pool_store_disk_state store_dstate(const struct store_disk *d);

/* store.c: scratch sets, borrowed per request (never NULL-checked twice:
 * store_scratch_get returns NULL only when out of memory). */
struct scratch *store_scratch_get(struct pool_store *s);
void store_scratch_put(struct pool_store *s, struct scratch *t);

/* store.c: a request and its two I/O phases.  store_rq_init takes the
 * disks' states once; store_rq_mask is the planner's failed mask for one
 * stripe (monotone in the stripe); store_rq_ref holds a position's chunk
 * (created for a write); store_rq_end releases every held position.  A
 * phase submits every chunk I/O of c[0..n) (and their checksums) at once;
 * it returns 0 or a negative errno, and marks the positions that failed
 * in q->bad / q->csum_bad. */
/* The stripe lock table (pool/stripelock.c) is keyed by lock units of a
 * file: a whole stripe on parity, whose writes read and rewrite the
 * stripe's parity; a smaller piece on simple and mirror, whose writes
 * touch only the blocks they name (see store_lock_bytes).  Locking stripes
 * [first, last] takes every unit of them, so a stripe lock (check,
 * rebuild, punch, truncate) excludes any request on any part of them. */
void store_lock_stripes(struct pool_store *s, uint64_t id, uint64_t first, uint64_t last, int excl,
			struct stripelock_set *set);
void store_lock_bytes(struct pool_store *s, uint64_t id, uint64_t off, uint64_t end, int excl,
		      struct stripelock_set *set);
void store_unlock(struct pool_store *s, const struct stripelock_set *set);

void store_rq_init(struct rq *q, struct pool_store *s, struct scratch *t,
		   const struct pool_file_map *f);
uint64_t store_rq_mask(const struct rq *q, uint64_t stripe);
int store_rq_ref(struct rq *q, uint32_t pos, int create);
void store_rq_end(struct rq *q);
int store_phase_read(struct rq *q, struct cio *c, size_t n);
int store_phase_write(struct rq *q, struct cio *c, size_t n);

/* fdcache.c: chunk files and the descriptor cache. */
int store_fdcache_init(struct pool_store *s);
void store_fdcache_free(struct pool_store *s);
/* Forget every cached chunk of one disk (it is being replaced). */
void store_fdcache_drop_disk(struct pool_store *s, uint32_t disk);
/* The path of a chunk file (crc: its checksum sidecar) into buf.
 * 0 or -ENAMETOOLONG. */
int store_chunk_path(const struct pool_store *s, uint32_t disk, uint64_t id, uint32_t pos, int crc,
		     char *buf, size_t n);
/* open(2) that makes missing parent directories; an fd or -errno. */
int store_open_mkdir(const char *path, int flags);
/* Hold (file id, position)'s descriptors on `disk` in r.  r->fd is -1
 * when the chunk does not exist and !create.  0 or a negative errno. */
int store_chunk_get(struct pool_store *s, uint64_t id, uint32_t pos, uint32_t disk, int create,
		    struct chunk_ref *r);
void store_chunk_put(struct pool_store *s, struct chunk_ref *r);
/* Close and forget a cached chunk (its files are being removed). */
void store_chunk_drop(struct pool_store *s, uint64_t id, uint32_t pos, uint32_t disk);
/* Grow an O_DIRECT chunk file ahead of a write that ends at `end`. */
void store_chunk_reserve(struct pool_store *s, struct chunk_ref *r, uint64_t end);

/* check.c: self-heal the stripes of [aoff, aend) after a read met bad
 * blocks (a repair pass over them).  0 or a negative errno. */
int store_heal(struct pool_store *s, const struct pool_file_map *f, uint64_t aoff, uint64_t aend,
	       uint64_t csum_bad);
/* check.c: a write failed on the positions in *torn without failing
 * their disks (ENOSPC, a short write...) and may have landed on the
 * others.  With the stripe locks of [aoff, aend) held, resync its
 * stripes from what is on disk, taking those positions as they are
 * (mirror: the others are rolled back to them; parity: recomputed).
 * *torn gains positions whose repair writes failed.  0 when the stripes
 * are consistent again, else a negative errno. */
int store_settle(struct pool_store *s, const struct pool_file_map *f, uint64_t aoff, uint64_t aend,
		 uint64_t *torn);

#endif /* SPACEFS_POOL_STORE_PRIV_H */
