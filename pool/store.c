/*
 * store.c -- the data path: file byte ranges to chunk-file I/O.
 *
 * A file of a volume is striped over `positions` disks; each position has
 * one sparse chunk file on its disk (store.h gives the names).  A request
 * on [off, off+len) of a file runs in three steps, the same for every
 * layout:
 *
 *   1. lock and plan.  The request's stripes are locked in the stripe
 *      lock table (exclusive to write, shared to read).  layout/ plans
 *      each stripe: which chunk ranges to read, what to compute, which to
 *      write.  The planning is pure; this file only carries plans out.
 *   2. read.  Every chunk read of every stripe of the request goes to the
 *      kernel in ONE io_submit (pool/aio.c), with the checksum ranges that
 *      cover them.  Each block read is checked against its CRC-32C before
 *      anything uses it -- including old data and parity read for a parity
 *      update, so a rotten block cannot poison the parity.
 *   3. compute and write.  layout/ computes parity (ISA-L); checksums of
 *      every block about to be written are computed here; then every chunk
 *      write and checksum write of the request goes out in one more
 *      io_submit.
 *
 * A read has steps 1 and 2 (and a copy or decode out of the read
 * buffers).  A write that is not 4 KiB aligned first reads its edge blocks
 * (under the locks it already holds) and merges the caller's bytes in, so
 * every chunk I/O is whole 4 KiB blocks: O_DIRECT can do it, and each
 * block's checksum covers exactly what is on disk.
 *
 * Copies are avoided: a write hands the caller's buffer itself to the
 * kernel for every data piece (every mirror copy too; only parity gets
 * buffers of its own), and a plain read lands straight in the caller's
 * buffer, when the range and (for O_DIRECT) the buffer are 4 KiB aligned.
 * Otherwise a bounce buffer takes one copy.  All per-request arrays
 * (plans, I/O requests, buffers, checksums) come from a scratch set that
 * a request borrows from the store's free list and gives back when it
 * ends; each set grows to the largest request it served and is reused, so
 * the hot path does not allocate.  The store owns the sets (no per-thread
 * data: see store_scratch_get).  O_DIRECT chunk files are grown ahead
 * of the data (store_chunk_reserve), because extending O_DIRECT writes are
 * synchronous on ext4.
 *
 * The store is three files: this one (requests, the two I/O phases,
 * punch, truncate, sync, disk states, open and close), pool/fdcache.c
 * (chunk files and the cache of their descriptors, per (file, position),
 * referenced while a request uses them) and pool/check.c (scrub, repair,
 * rebuild and resync of whole stripes, self-heal after a bad read, moving
 * a position for disk retire).  pool/store_priv.h holds what they share;
 * pool/sparse.c works on chunk files through store_int.h's narrow view.
 *
 * Checksum sidecars ("<chunk>.crc", 4 bytes per block) are read and
 * written as memory through a shared mapping of each cached chunk's
 * sidecar (pool/csum.h), not with a pread or pwrite per request: a
 * buffered pwrite of 4 bytes inside every io_submit (the kernel runs
 * buffered AIO synchronously there, with the sidecar's inode lock and a
 * timestamp update) cost more than the 4 KiB O_DIRECT data write beside
 * it (issue 11: 4 KiB random writes on simple ran 1.6-1.8x faster
 * without it).
 * The stores land in the page cache just as the pwrite's bytes did: they
 * survive a kill -9 of the daemon, the kernel writes them back in
 * batches, fsync and syncfs flush them.  Checksums past a mapping's
 * window, and chunks held outside the cache, still go through the
 * buffered pread/pwrite inside the phase's io_submit.  Checksum I/O is
 * coalesced per position: one span per read phase, one run of
 * contiguous blocks per write.  In a write the checksums are stored after
 * the data writes completed; data and checksums are not ordered on disk,
 * and after a crash the dirty-region log (pool/drl.c, cleared only after
 * a syncfs, which writes the mapped pages too) re-derives checksums of
 * the regions that were being written.
 */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool/journal.h"
#include "pool/pool.h"
#include "pool/wback.h"
#include "pool/store_int.h"
#include "pool/store_priv.h"

void store_log(const struct pool_store *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n = snprintf(line, sizeof(line), "spacefs: volume %s: ", s->volume);

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = strlen(line);
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0) {
		/* nowhere left to complain */
	}
}

void store_count(_Atomic uint64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static void scratch_release(struct scratch *t)
{
	free(t->wp);
	free(t->rp);
	free(t->pdst);
	free(t->alias);
	free(t->cio);
	free(t->ptr);
	free(t->req);
	free(t->crc);
	free(t->run);
	free(t->buf);
	free(t->src);
	free(t);
}

/* Borrow a scratch set for one request; give it back with store_scratch_put.
 * The store keeps idle sets on a free list (as many as requests ever ran
 * at once) and frees them in pool_store_close, after its users drained.
 * Not per-thread (a pthread key with a thread-exit destructor): such a
 * destructor could run on a set that pool_store_close had just freed, when
 * a store closes on an owner move while a redirect-serving thread exits,
 * and a key per store opened on every move would use up PTHREAD_KEYS_MAX.
 * Nested requests (a heal inside a read) simply borrow a second set. */
struct scratch *store_scratch_get(struct pool_store *s)
{
	struct scratch *t;

	pthread_mutex_lock(&s->scratch_mu);
	t = s->scratch_idle;
	if (t)
		s->scratch_idle = t->next;
	s->scratch_busy++;
	pthread_mutex_unlock(&s->scratch_mu);
	if (!t && !(t = calloc(1, sizeof(*t)))) {
		pthread_mutex_lock(&s->scratch_mu);
		s->scratch_busy--;
		pthread_mutex_unlock(&s->scratch_mu);
	}
	return t;
}

void store_scratch_put(struct pool_store *s, struct scratch *t)
{
	pthread_mutex_lock(&s->scratch_mu);
	t->next = s->scratch_idle;
	s->scratch_idle = t;
	s->scratch_busy--;
	pthread_mutex_unlock(&s->scratch_mu);
}

/* pool_store_close: no request runs any more. */
static void scratch_free_all(struct pool_store *s)
{
	pthread_mutex_lock(&s->scratch_mu);
	assert(s->scratch_busy == 0);
	while (s->scratch_idle) {
		struct scratch *t = s->scratch_idle;
		s->scratch_idle = t->next;
		scratch_release(t);
	}
	pthread_mutex_unlock(&s->scratch_mu);
}

/* Grow an array to hold n elements; contents need not survive. */
int store_grow(void *pp, size_t *cap, size_t n, size_t elem)
{
	void **p = pp;

	if (n <= *cap)
		return 0;
	size_t c = *cap * 2 > n ? *cap * 2 : n;
	void *q = malloc(c * elem);
	if (!q)
		return -ENOMEM;
	free(*p);
	*p = q;
	*cap = c;
	return 0;
}

static int grow_aligned(uint8_t **p, size_t *cap, size_t n)
{
	void *q;

	if (n <= *cap)
		return 0;
	size_t c = *cap * 2 > n ? *cap * 2 : n;
	c = (c + BLK - 1) & ~(BLK - 1);
	if (posix_memalign(&q, BLK, c))
		return -ENOMEM;
	free(*p);
	*p = q;
	*cap = c;
	return 0;
}

/* ---- one request ----------------------------------------------------------- */

/*
 * Lock units.  Two writes to different blocks of one simple or mirror
 * stripe have nothing to order: each writes its own blocks (every copy)
 * and their checksums, and reads nothing of the other's.  Keyed by
 * stripe, 32 random 4 KiB writes in flight on a 256 MiB file met a held
 * lock about one time in six (1.5 MiB stripes): a futex sleep, a wake-up
 * and a request that waited a whole chunk write for nothing -- most of
 * the daemon's futex calls under that load (issue 11).  So there the key
 * is a 64 KiB piece of the file (at most one interleave, which it
 * divides: a stripe is a whole number of units), and the table has
 * STORE_LOCK_SLOTS slots.  Writes to the same blocks still exclude each
 * other and readers of them, so mirror copies land in the same order and
 * a reader never sees a block beside a checksum of another version.
 * Parity keeps one unit per stripe: a parity update reads and rewrites
 * the stripe's parity, which every data block of the stripe shares.
 */
#define STORE_LOCK_SLOTS    4096u
#define STORE_LOCK_UNIT_MAX (64u << 10)

static uint64_t lock_unit_of(const struct pool_store *s)
{
	if (s->g.kind == LAYOUT_PARITY)
		return s->stripe_bytes;
	return s->g.interleave < STORE_LOCK_UNIT_MAX ? s->g.interleave : STORE_LOCK_UNIT_MAX;
}

static void lock_units(struct pool_store *s, uint64_t id, uint64_t u0, uint64_t u1, int excl,
		       struct stripelock_set *set)
{
	/* More units than slots (or past 2^64): the whole table. */
	if (u1 - u0 >= STORE_LOCK_SLOTS)
		u0 = 0, u1 = STORE_LOCK_SLOTS;
	stripelock_lock(s->locks, id, u0, u1, excl, set);
}

void store_lock_stripes(struct pool_store *s, uint64_t id, uint64_t first, uint64_t last, int excl,
			struct stripelock_set *set)
{
	uint64_t k = s->stripe_bytes / s->lock_unit;

	if (last >= UINT64_MAX / k - 1)
		lock_units(s, id, 0, UINT64_MAX, excl, set);
	else
		lock_units(s, id, first * k, last * k + k - 1, excl, set);
}

void store_lock_bytes(struct pool_store *s, uint64_t id, uint64_t off, uint64_t end, int excl,
		      struct stripelock_set *set)
{
	lock_units(s, id, off / s->lock_unit, (end - 1) / s->lock_unit, excl, set);
}

void store_unlock(struct pool_store *s, const struct stripelock_set *set)
{
	stripelock_unlock(s->locks, set);
}

enum pool_store_disk_state store_dstate(const struct store_disk *d)
{
	return (enum pool_store_disk_state)atomic_load_explicit(&d->state, memory_order_acquire);
}

void store_rq_init(struct rq *q, struct pool_store *s, struct scratch *t,
		   const struct pool_file_map *f)
{
	q->s = s;
	q->t = t;
	q->f = f;
	q->have = 0;
	q->failed = q->rebuild = q->extra = q->bad = q->csum_bad = q->wfail = 0;
	q->badblk = NULL;
	q->stored = NULL;
	for (uint32_t p = 0; p < f->npos; p++) {
		enum pool_store_disk_state st = store_dstate(&s->disk[f->disk[p]]);
		if (st == POOL_STORE_DISK_FAILED)
			q->failed |= 1ull << p;
		else if (st == POOL_STORE_DISK_REBUILDING)
			q->rebuild |= 1ull << p;
	}
}

/* The planner's mask for one stripe.  A position on a REBUILDING disk is
 * live once the rebuild cursor has passed it: files below the cursor's
 * file, stripes below its stripe.  The cursor moves under the stripe lock
 * of the stripe just rebuilt, and callers hold that lock, so the answer
 * cannot change under a request.  Monotone in the stripe. */
uint64_t store_rq_mask(const struct rq *q, uint64_t stripe)
{
	uint64_t m = q->failed | q->extra;

	for (uint32_t p = 0; p < q->f->npos; p++) {
		if (!(q->rebuild & (1ull << p)))
			continue;
		const struct store_disk *d = &q->s->disk[q->f->disk[p]];
		uint64_t id = atomic_load_explicit(&d->rb_id, memory_order_acquire);
		uint64_t st = atomic_load_explicit(&d->rb_stripe, memory_order_acquire);
		if (!(q->f->id < id || (q->f->id == id && stripe < st)))
			m |= 1ull << p;
	}
	return m;
}

/* Pool disk mask of the positions in planner mask m. */
static uint64_t disks_of(const struct rq *q, uint64_t m)
{
	uint64_t d = 0;

	for (uint32_t p = 0; p < q->f->npos; p++)
		if (m & (1ull << p))
			d |= 1ull << q->f->disk[p];
	return d;
}

static void disk_fail(struct pool_store *s, uint32_t disk, const char *why);
static int disk_intact(struct pool_store *s, uint32_t disk);

/* Errors that say the disk is gone or broken, not that it is full. */
static int fatal_error(int err)
{
	switch (-err) {
	case ENOSPC:
	case EDQUOT:
	case ENOMEM:
	case EMFILE:
	case ENFILE:
	case EFBIG:
	case EAGAIN:
	case EINTR:
	case ENAMETOOLONG:
		return 0;
	}
	return err < 0;
}

/* Make sure position pos is held; for a write, with existing files. */
int store_rq_ref(struct rq *q, uint32_t pos, int create)
{
	struct chunk_ref *r = &q->ref[pos];
	uint64_t bit = 1ull << pos;

	if (q->have & bit) {
		if (!create || (r->fd >= 0 && (!q->s->integrity || r->crcfd >= 0)))
			return 0;
		store_chunk_put(q->s, r); /* held for reading only: upgrade */
		q->have &= ~bit;
	}
	uint32_t disk = q->f->disk[pos];
	int rc = store_chunk_get(q->s, q->f->id, pos, disk, create, r);
	/* A missing chunk is a hole only if the disk is still the one we
	 * opened: an emptied or replaced directory has no chunks either. */
	if (rc == 0 && r->fd < 0 && !disk_intact(q->s, disk)) {
		store_chunk_put(q->s, r);
		rc = -EIO;
	}
	if (rc < 0) {
		*r = (struct chunk_ref){.e = NULL, .fd = -1, .crcfd = -1};
		store_log(q->s, "file %016" PRIx64 ": cannot open chunk %u on disk %s: %s",
			  q->f->id, pos, q->s->disk[disk].path, strerror(-rc));
		if (fatal_error(rc)) {
			char why[128];
			snprintf(why, sizeof(why), "cannot open a chunk file: %s", strerror(-rc));
			disk_fail(q->s, disk, why);
			q->bad |= bit;
		}
		return rc;
	}
	q->have |= bit;
	return 0;
}

void store_rq_end(struct rq *q)
{
	for (uint32_t p = 0; p < q->f->npos; p++)
		if (q->have & (1ull << p))
			store_chunk_put(q->s, &q->ref[p]);
	q->have = 0;
}

static struct store_disk *pos_disk(const struct rq *q, uint32_t pos)
{
	return &q->s->disk[q->f->disk[pos]];
}

/* ---- checksums ------------------------------------------------------------- */

int store_all_zero(const uint8_t *p, size_t len)
{
	return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

/* Stored 0 means "never written": a hole, which reads as zeros. */
int store_block_ok(const uint8_t *b, uint32_t stored, uint32_t *computed)
{
	if (stored == 0 && store_all_zero(b, BLK)) {
		*computed = 0;
		return 1;
	}
	*computed = layout_crc32c(b, BLK);
	return *computed == stored;
}

/* Check every block of the data reads against the sidecar spans read with
 * them (span of position p starts at block lo[p], at crc[base[p]]). */
static int verify_reads(struct rq *q, const struct cio *c, size_t n, const uint64_t *lo,
			const size_t *base)
{
	const uint32_t *crc = q->t->crc;
	size_t at = 0;
	int rc = 0;

	for (size_t i = 0; i < n; i++, at += c[i - 1].len / BLK) {
		if (q->ref[c[i].pos].fd < 0)
			continue; /* no chunk file: zeros, nothing to check */
		if (q->badblk && q->badblk[at])
			continue; /* its read failed */
		uint64_t b0 = c[i].off / BLK;
		for (uint32_t b = 0; b < c[i].len / BLK; b++) {
			uint32_t stored = le32toh(crc[base[c[i].pos] + (b0 + b - lo[c[i].pos])]);
			uint32_t got;
			if (q->stored)
				q->stored[at + b] = stored;
			if (store_block_ok(c[i].buf + b * BLK, stored, &got))
				continue;
			struct store_disk *d = pos_disk(q, c[i].pos);
			q->bad |= 1ull << c[i].pos;
			q->csum_bad |= 1ull << c[i].pos;
			if (q->badblk)
				q->badblk[at + b] = BAD_CSUM;
			store_count(&d->c.csum_errors, 1);
			store_log(q->s,
				  "checksum mismatch: file %016" PRIx64 " disk %s position %u "
				  "chunk offset %" PRIu64 " (stored %08x, computed %08x)",
				  q->f->id, d->path, c[i].pos, (b0 + b) * BLK, stored, got);
			rc = q->badblk ? 0 : -EIO;
		}
	}
	return rc;
}

/* ---- the two I/O phases ---------------------------------------------------- */

static void io_error(struct rq *q, const char *what, uint32_t pos, uint64_t off, int err)
{
	struct store_disk *d = pos_disk(q, pos);
	char why[128];

	store_count(&d->c.errors, 1);
	if ((err == -ENOSPC || err == -EDQUOT) && q->s->hooks.disk_full)
		q->s->hooks.disk_full(q->s->hooks.arg, q->f->disk[pos]);
	store_log(q->s,
		  "file %016" PRIx64 ": %s error on disk %s position %u chunk offset %" PRIu64
		  ": %s",
		  q->f->id, what, d->path, pos, off, strerror(-err));
	if (fatal_error(err)) {
		q->bad |= 1ull << pos;
		snprintf(why, sizeof(why), "%s error: %s", what, strerror(-err));
		disk_fail(q->s, q->f->disk[pos], why);
	}
}

/* The checksum span each position needs for a read phase: blocks
 * [lo[p], hi[p]), landing at scratch crc[base[p]]. */
struct spans {
	uint64_t mask;
	uint64_t lo[LAYOUT_MAX_POSITIONS], hi[LAYOUT_MAX_POSITIONS];
	size_t base[LAYOUT_MAX_POSITIONS];
	uint32_t pos[LAYOUT_MAX_POSITIONS]; /* position of the i-th span request */
	uint32_t n;
};

/* Positions without a chunk file need no span: their zeros pass. */
static int crc_spans(struct rq *q, const struct cio *c, size_t n, struct spans *sp)
{
	size_t ncrc = 0;

	sp->mask = 0;
	sp->n = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t p = c[i].pos;
		uint64_t b0 = c[i].off / BLK, b1 = (c[i].off + c[i].len) / BLK;
		if (q->ref[p].fd < 0)
			continue;
		if (!(sp->mask & (1ull << p))) {
			sp->mask |= 1ull << p;
			sp->lo[p] = b0;
			sp->hi[p] = b1;
		}
		sp->lo[p] = b0 < sp->lo[p] ? b0 : sp->lo[p];
		sp->hi[p] = b1 > sp->hi[p] ? b1 : sp->hi[p];
	}
	for (uint32_t p = 0; p < q->f->npos; p++) {
		if (sp->mask & (1ull << p)) {
			sp->base[p] = ncrc;
			ncrc += sp->hi[p] - sp->lo[p];
			sp->pos[sp->n++] = p;
		}
	}
	return store_grow(&q->t->crc, &q->t->crc_cap, ncrc, sizeof(*q->t->crc));
}

/* Count the completed reads, log the failed ones. */
static int reads_done(struct rq *q, const struct cio *c, size_t n, const struct spans *sp)
{
	const struct pool_aio_req *req = q->t->req;
	size_t at = 0;
	int rc = 0;

	for (size_t i = 0; i < n; i++, at += c[i - 1].len / BLK) {
		struct store_disk *d = pos_disk(q, c[i].pos);
		if (req[i].fd < 0)
			continue; /* no chunk file: zeros, no I/O */
		if (req[i].result < 0) {
			io_error(q, "read", c[i].pos, c[i].off, (int)req[i].result);
			rc = -EIO;
			if (q->badblk)
				memset(q->badblk + at, BAD_IO, c[i].len / BLK);
			continue;
		}
		store_count(&d->c.reads, 1);
		store_count(&d->c.read_bytes, c[i].len);
	}
	for (uint32_t j = 0; j < sp->n; j++) {
		if (req[n + j].result < 0) {
			io_error(q, "checksum read", sp->pos[j], req[n + j].off,
				 (int)req[n + j].result);
			rc = -EIO;
			at = 0;
			for (size_t i = 0; q->badblk && i < n; at += c[i].len / BLK, i++)
				if (c[i].pos == sp->pos[j])
					memset(q->badblk + at, BAD_IO, c[i].len / BLK);
		}
	}
	return q->badblk ? 0 : rc;
}

/* Read every c[i] (and, with integrity, the checksums covering them) in
 * one submission; verify.  Missing chunk files read as zeros. */
static int phase_read_disk(struct rq *q, struct cio *c, size_t n)
{
	struct scratch *t = q->t;
	struct spans sp; /* only mask and n are read unless filled */
	int rc;

	sp.mask = 0;
	sp.n = 0;
	for (size_t i = 0, at = 0; i < n; at += c[i].len / BLK, i++) {
		rc = store_rq_ref(q, c[i].pos, 0);
		if (rc < 0 && !q->badblk)
			return rc;
		if (rc < 0) /* check mode: the position's blocks are bad */
			memset(q->badblk + at, BAD_IO, c[i].len / BLK);
	}
	if (q->s->integrity && crc_spans(q, c, n, &sp) < 0)
		return -ENOMEM;
	if (store_grow(&t->req, &t->req_cap, n + sp.n, sizeof(*t->req)))
		return -ENOMEM;

	for (size_t i = 0; i < n; i++)
		t->req[i] = (struct pool_aio_req){.fd = q->ref[c[i].pos].fd,
						  .op = POOL_AIO_READ,
						  .buf = c[i].buf,
						  .len = c[i].len,
						  .off = c[i].off,
						  .dq = pos_disk(q, c[i].pos)->dq,
						  .direct = pos_disk(q, c[i].pos)->direct};
	uint64_t mapped = 0; /* spans read from the sidecar's mapping */
	for (uint32_t j = 0; j < sp.n; j++) {
		uint32_t p = sp.pos[j];
		const struct chunk_ref *r = &q->ref[p];
		if (r->map && pool_csum_covers(r->map, sp.lo[p], sp.hi[p] - sp.lo[p]))
			mapped |= 1ull << j;
		t->req[n + j] = (struct pool_aio_req){.fd = (mapped >> j) & 1 ? -1 : r->crcfd,
						      .op = POOL_AIO_READ,
						      .buf = t->crc + sp.base[p],
						      .len = (sp.hi[p] - sp.lo[p]) * CRC_BYTES,
						      .off = sp.lo[p] * CRC_BYTES};
	}
	uint64_t t0 = pool_lat_now_us();
	pool_aio_run(q->s->aio, t->req, n + sp.n);
	for (size_t i = 0; i < n; i++)
		if (t->req[i].fd >= 0 && t->req[i].result >= 0)
			pool_lat_record(&pos_disk(q, c[i].pos)->c.lat, t0);
	for (uint32_t j = 0; mapped && j < sp.n; j++) {
		uint32_t p = sp.pos[j];
		struct pool_aio_req *r = &t->req[n + j];
		if (!((mapped >> j) & 1))
			continue;
		int e = pool_csum_load(q->ref[p].map, q->ref[p].crcfd, &q->s->size_mu, sp.lo[p],
				       sp.hi[p] - sp.lo[p], t->crc + sp.base[p]);
		r->result = e < 0 ? e : (long)r->len;
	}

	rc = reads_done(q, c, n, &sp);
	if (rc < 0 || !q->s->integrity)
		return rc;
	return verify_reads(q, c, n, sp.lo, sp.base);
}

/* The chunk reads c[0..n), as the journal describes the chunks: in
 * write-back mode blocks journaled but not yet in place (pool/wback.h)
 * replace what the disk holds, under the stripes' flush locks, so the
 * flusher cannot be half-way through one of them meanwhile. */
int store_phase_read(struct rq *q, struct cio *c, size_t n)
{
	struct pool_wb *wb = atomic_load(&q->s->wb);

	if (!wb || n == 0)
		return phase_read_disk(q, c, n);
	uint64_t first = UINT64_MAX, last = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t a = c[i].off / q->s->g.interleave;
		uint64_t b = (c[i].off + c[i].len - 1) / q->s->g.interleave;
		first = a < first ? a : first;
		last = b > last ? b : last;
	}
	struct stripelock_set set;
	pool_wb_read_begin(wb, q->f->id, first, last, &set);
	int rc = phase_read_disk(q, c, n);
	for (size_t i = 0; rc >= 0 && i < n; i++)
		pool_wb_overlay(wb, q->f->id, c[i].pos, c[i].off, c[i].len, c[i].buf);
	pool_wb_read_end(wb, &set);
	return rc;
}

/* Group the writes' checksums into runs of contiguous blocks per position
 * and compute them.  Returns the number of runs or -ENOMEM. */
static ssize_t crc_runs(struct rq *q, struct cio *c, size_t n)
{
	struct scratch *t = q->t;
	int32_t last[LAYOUT_MAX_POSITIONS];
	size_t nrun = 0, ncrc = 0;

	if (store_grow(&t->run, &t->run_cap, n, sizeof(*t->run)))
		return -ENOMEM;
	for (uint32_t p = 0; p < q->f->npos; p++)
		last[p] = -1;
	for (size_t i = 0; i < n; i++) {
		uint64_t b = c[i].off / BLK;
		int32_t ri = last[c[i].pos];
		if (ri >= 0 && t->run[ri].blk + t->run[ri].nblk == b) {
			c[i].at = t->run[ri].nblk;
		} else {
			ri = (int32_t)nrun++;
			t->run[ri] = (struct crc_run){.pos = c[i].pos, .blk = b, .nblk = 0};
			c[i].at = 0;
			last[c[i].pos] = ri;
		}
		c[i].run = (uint32_t)ri;
		t->run[ri].nblk += (uint32_t)(c[i].len / BLK);
	}
	for (size_t ri = 0; ri < nrun; ri++) {
		t->run[ri].base = ncrc;
		ncrc += t->run[ri].nblk;
	}
	if (store_grow(&t->crc, &t->crc_cap, ncrc, sizeof(*t->crc)))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uint32_t *out = t->crc + t->run[c[i].run].base + c[i].at;
		/* Mirror copies of a piece come one after the other from the
		 * same buffer: checksum it once. */
		if (i > 0 && c[i].buf == c[i - 1].buf && c[i].len == c[i - 1].len) {
			memcpy(out, t->crc + t->run[c[i - 1].run].base + c[i - 1].at,
			       c[i].len / BLK * sizeof(*out));
			continue;
		}
		layout_crc_blocks(c[i].buf, c[i].len, out);
#if __BYTE_ORDER == __BIG_ENDIAN
		for (uint32_t b = 0; b < c[i].len / BLK; b++)
			out[b] = htole32(out[b]);
#endif
	}
	return (ssize_t)nrun;
}

/* Write every c[i] and its checksums in one submission. */
int store_phase_write(struct rq *q, struct cio *c, size_t n)
{
	struct scratch *t = q->t;
	ssize_t nrun = 0;
	int rc;

	uint64_t end[LAYOUT_MAX_POSITIONS] = {0};
	for (size_t i = 0; i < n; i++) {
		rc = store_rq_ref(q, c[i].pos, 1);
		if (rc < 0)
			return rc;
		if (c[i].off + c[i].len > end[c[i].pos])
			end[c[i].pos] = c[i].off + c[i].len;
	}
	for (uint32_t p = 0; p < q->f->npos; p++)
		if (end[p] && pos_disk(q, p)->direct)
			store_chunk_reserve(q->s, &q->ref[p], end[p]);
	if (q->s->integrity) {
		nrun = crc_runs(q, c, n);
		if (nrun < 0)
			return (int)nrun;
	}
	size_t nreq = n + (size_t)nrun;
	if (store_grow(&t->req, &t->req_cap, nreq, sizeof(*t->req)))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		t->req[i] = (struct pool_aio_req){.fd = q->ref[c[i].pos].fd,
						  .op = POOL_AIO_WRITE,
						  .buf = c[i].buf,
						  .len = c[i].len,
						  .off = c[i].off,
						  .dq = pos_disk(q, c[i].pos)->dq,
						  .direct = pos_disk(q, c[i].pos)->direct};
	for (ssize_t ri = 0; ri < nrun; ri++) {
		const struct crc_run *run = &t->run[ri];
		t->req[n + (size_t)ri] = (struct pool_aio_req){.fd = q->ref[run->pos].crcfd,
							       .op = POOL_AIO_WRITE,
							       .buf = t->crc + run->base,
							       .len = run->nblk * CRC_BYTES,
							       .off = run->blk * CRC_BYTES};
	}
	/* Runs that fit their sidecar's mapping are stored after the data
	 * writes, as memory (pool/csum.h); the others are written with it. */
	for (ssize_t ri = 0; ri < nrun; ri++) {
		const struct crc_run *run = &t->run[ri];
		const struct chunk_ref *r = &q->ref[run->pos];
		if (r->map && pool_csum_covers(r->map, run->blk, run->nblk))
			t->req[n + (size_t)ri].fd = -1;
	}
	/* Data fencing (store.h): the last word before the kernel has it. */
	if (q->s->hooks.may_write && (rc = q->s->hooks.may_write(q->s->hooks.arg)) < 0)
		return rc;
	uint64_t t0 = pool_lat_now_us();
	pool_aio_run(q->s->aio, t->req, nreq);
	uint64_t failed = 0; /* positions whose data did not land: keep their old checksums */
	for (size_t i = 0; i < n; i++)
		if (t->req[i].result < 0 || (size_t)t->req[i].result != t->req[i].len)
			failed |= 1ull << c[i].pos;
	/* Checksums stored as memory land the moment they are stored, so the
	 * fence must be asked again: a node stalled after its data writes
	 * completed must not, once it runs again, overwrite the checksums the
	 * next owner wrote meanwhile.  Its data landed before its deadline (the
	 * check above); the caller's request fails and is redone by the owner. */
	if (nrun && q->s->hooks.may_write && (rc = q->s->hooks.may_write(q->s->hooks.arg)) < 0)
		return rc;
	for (ssize_t ri = 0; ri < nrun; ri++) {
		const struct crc_run *run = &t->run[ri];
		struct pool_aio_req *r = &t->req[n + (size_t)ri];
		if (r->fd >= 0)
			continue;
		if (failed & (1ull << run->pos)) {
			r->result = (long)r->len; /* the data write's error speaks for it */
			continue;
		}
		int e = pool_csum_store(q->ref[run->pos].map, q->ref[run->pos].crcfd,
					&q->s->size_mu, run->blk, run->nblk, t->crc + run->base);
		r->result = e < 0 ? e : (long)r->len;
	}

	rc = 0;
	for (size_t i = 0; i < nreq; i++) {
		const struct pool_aio_req *r = &t->req[i];
		uint32_t pos = i < n ? c[i].pos : t->run[i - n].pos;
		if (r->result >= 0 && (size_t)r->result == r->len) {
			if (i < n) {
				store_count(&pos_disk(q, pos)->c.writes, 1);
				store_count(&pos_disk(q, pos)->c.write_bytes, r->len);
				pool_lat_record(&pos_disk(q, pos)->c.lat, t0);
			}
			continue;
		}
		int err = r->result < 0 ? (int)r->result : -ENOSPC; /* short write */
		io_error(q, i < n ? "write" : "checksum write", pos, r->off, err);
		q->wfail |= 1ull << pos;
		if (rc == 0) /* a full disk or a file too big is the caller's to know */
			rc = err == -ENOSPC || err == -EFBIG ? err : -EIO;
	}
	return rc;
}

/* ---- planning a request ---------------------------------------------------- */

/* The part [*so, *so + *sl) of stripe st that [off, end) covers. */
static void stripe_part(const struct pool_store *s, uint64_t st, uint64_t off, uint64_t end,
			uint32_t *so, uint32_t *sl)
{
	uint64_t s0 = st * s->stripe_bytes;
	uint64_t a = off > s0 ? off : s0;
	uint64_t b = end < s0 + s->stripe_bytes ? end : s0 + s->stripe_bytes;

	*so = (uint32_t)(a - s0);
	*sl = (uint32_t)(b - a);
}

/* Can a buffer go to the kernel as it is (O_DIRECT wants alignment)? */
static int aligned_for_io(const struct pool_store *s, const void *p)
{
	return !s->any_direct || ((uintptr_t)p & (BLK - 1)) == 0;
}

/* Offset of io's bytes inside the plan's range [off, off+len), or -1 if
 * io is not a plain data piece of it. */
static int64_t io_rel(const struct pool_store *s, uint32_t off, uint32_t len,
		      const struct layout_io *io)
{
	if (io->slot >= s->k)
		return -1;
	uint64_t a = (uint64_t)io->slot * s->g.interleave + io->col_off;
	if (a < off || a + io->len > (uint64_t)off + len)
		return -1;
	return (int64_t)(a - off);
}

/* A read plan that only fetches the data, each piece once: its reads can
 * land in the destination directly and need no assembling. */
static int read_plan_direct(const struct pool_store *s, const struct layout_read_plan *p)
{
	uint64_t slots = 0, sum = 0;

	if (p->degraded)
		return 0;
	for (uint32_t j = 0; j < p->nread; j++) {
		if (io_rel(s, p->off, p->len, &p->read[j]) < 0 || (slots >> p->read[j].slot) & 1)
			return 0;
		slots |= 1ull << p->read[j].slot;
		sum += p->read[j].len;
	}
	return sum == p->len;
}

/* A block-aligned range and where its bytes go (read) or come from. */
struct seg {
	uint64_t off, len;
	uint8_t *buf;
};

static size_t count_stripes(const struct pool_store *s, const struct seg *g, size_t n)
{
	size_t total = 0;

	for (size_t i = 0; i < n; i++)
		total +=
		    (g[i].off + g[i].len - 1) / s->stripe_bytes - g[i].off / s->stripe_bytes + 1;
	return total;
}

static int plan_reads(struct rq *q, const struct seg *sg, size_t nseg, size_t nst)
{
	struct pool_store *s = q->s;
	struct scratch *t = q->t;
	size_t i = 0;

	for (size_t g = 0; g < nseg; g++) {
		uint64_t end = sg[g].off + sg[g].len;
		for (uint64_t st = sg[g].off / s->stripe_bytes; st * s->stripe_bytes < end; st++) {
			uint32_t so, sl;
			stripe_part(s, st, sg[g].off, end, &so, &sl);
			int rc = layout_plan_read(&s->g, st, so, sl, store_rq_mask(q, st),
						  t->pick++, &t->rp[i]);
			if (rc < 0)
				return rc;
			t->pdst[i] = sg[g].buf + (st * s->stripe_bytes + so - sg[g].off);
			t->alias[i] = (uint8_t)read_plan_direct(s, &t->rp[i]);
			i++;
		}
	}
	assert(i == nst);
	return 0;
}

/* Read the block-aligned segments (locks held by the caller). */
static int read_core(struct rq *q, const struct seg *sg, size_t nseg)
{
	struct pool_store *s = q->s;
	struct scratch *t = q->t;
	size_t nst = count_stripes(s, sg, nseg), nr = 0, bytes = 0;
	int rc;

	if (store_grow(&t->rp, &t->rp_cap, nst, sizeof(*t->rp)) ||
	    store_grow(&t->pdst, &t->pdst_cap, nst, sizeof(*t->pdst)) ||
	    store_grow(&t->alias, &t->alias_cap, nst, 1))
		return -ENOMEM;
	rc = plan_reads(q, sg, nseg, nst);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < nst; i++) {
		nr += t->rp[i].nread;
		if (!t->alias[i])
			bytes += t->rp[i].read_bytes;
	}
	if (store_grow(&t->cio, &t->cio_cap, nr, sizeof(*t->cio)) ||
	    store_grow(&t->ptr, &t->ptr_cap, nr, sizeof(*t->ptr)) ||
	    grow_aligned(&t->buf, &t->buf_cap, bytes))
		return -ENOMEM;

	uint8_t *carve = t->buf;
	size_t r = 0;
	for (size_t i = 0; i < nst; i++) {
		const struct layout_read_plan *p = &t->rp[i];
		for (uint32_t j = 0; j < p->nread; j++, r++) {
			const struct layout_io *io = &p->read[j];
			uint8_t *b = carve;
			if (t->alias[i])
				b = t->pdst[i] + io_rel(s, p->off, p->len, io);
			else
				carve += io->len;
			t->ptr[r] = b;
			t->cio[r] = (struct cio){.pos = io->pos,
						 .len = io->len,
						 .buf = b,
						 .off = p->stripe * s->g.interleave + io->col_off};
		}
	}
	rc = store_phase_read(q, t->cio, nr);
	if (rc < 0)
		return rc;

	r = 0;
	for (size_t i = 0; i < nst; i++) {
		const struct layout_read_plan *p = &t->rp[i];
		if (!t->alias[i]) {
			rc = layout_plan_assemble(s->codec, &s->g, p, t->ptr + r, t->pdst[i]);
			if (rc < 0)
				return rc;
		}
		r += p->nread;
	}
	return 0;
}

/* Buffer bytes plan p's writes need: none for the data pieces when the
 * source can be handed to the kernel as it is (src_ok), else all. */
static size_t write_buf_bytes(const struct pool_store *s, const struct layout_write_plan *p,
			      int src_ok)
{
	size_t bytes = 0;

	for (uint32_t j = 0; j < p->nwrite; j++)
		if (!src_ok || io_rel(s, p->off, p->len, &p->write[j]) < 0)
			bytes += p->write[j].len;
	return bytes;
}

/*
 * Lay out plan p's writes as c[0..nwrite) and compute what must be
 * computed.  Data pieces go to the kernel straight from the source (when
 * src_ok): copying them into buffers of their own, as layout_plan_finish
 * does for every write it is given, was a third of the CPU time of a
 * sequential parity write.  So the plan's write list is trimmed, in
 * place, to the writes whose bytes must be computed (parity, or data when
 * the source is unaligned) before finish sees it; finish fills exactly
 * the writes it is handed.  Simple and mirror plans then have nothing
 * left to compute.  (The roundtrip tests check every parity chunk on
 * disk against a fresh encode, so a planner that needed the full list
 * would not go unnoticed.)
 */
static int finish_plan(struct rq *q, struct layout_write_plan *p, const uint8_t *psrc, int src_ok,
		       uint8_t **carve, struct cio *c, uint8_t **wbuf, uint8_t *const *rbuf)
{
	struct pool_store *s = q->s;
	uint32_t keep = 0;

	for (uint32_t j = 0; j < p->nwrite; j++) {
		const struct layout_io *io = &p->write[j];
		int64_t rel = src_ok ? io_rel(s, p->off, p->len, io) : -1;
		uint8_t *b = rel >= 0 ? (uint8_t *)psrc + rel : *carve;

		c[j] = (struct cio){.pos = io->pos,
				    .len = io->len,
				    .buf = b,
				    .off = p->stripe * s->g.interleave + io->col_off};
		if (rel >= 0)
			continue;
		*carve += io->len;
		p->write[keep] = *io;
		wbuf[keep++] = b;
	}
	if (keep == 0)
		return 0;
	p->nwrite = keep;
	return layout_plan_finish(s->codec, &s->g, p, psrc, rbuf, wbuf);
}

/* ---- the parity journal ---------------------------------------------------- */

/* The crash-test fault "tear" (pool/fault.h): issue only the first chunk
 * write of the partial-stripe update whose writes are c[0..n) and end the
 * process, as a power cut between the data and the parity write would.
 * The log line names the data disks of the stripe left unwritten: the
 * disks whose loss shows the write hole. */
static _Noreturn void tear(struct rq *q, const struct cio *c, size_t n, uint64_t stripe)
{
	const struct pool_store *s = q->s;
	uint64_t written = 0;
	char list[256] = "", what[512];
	size_t at = 0;

	for (size_t i = 0; i < n; i++)
		written |= 1ull << c[i].pos;
	for (uint32_t p = 0; p < q->f->npos; p++) {
		uint32_t slot, copy;
		layout_pos_slot(&s->g, stripe, p, &slot, &copy);
		if (slot < s->k && !(written & (1ull << p)) && at < sizeof(list) - 8)
			at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%u", at ? "," : "",
					       q->f->disk[p]);
	}
	store_phase_write(q, (struct cio *)c, 1);
	snprintf(what, sizeof(what),
		 "tear: file %016" PRIx64 " stripe %" PRIu64
		 ": issued 1 of %zu chunk writes (disk %u); data disks not written: %s",
		 q->f->id, stripe, n, q->f->disk[c[0].pos], list);
	pool_fault_die(s->volume, what);
}

/*
 * Write-back acknowledges before the in-place writes, so their space must
 * be there first: a full disk is the writer's ENOSPC now, not a write the
 * flusher cannot make after the acknowledgement.  Creates the chunk files
 * of the pieces of rec[0..nrec) and allocates their blocks (the size is
 * left to the write).  0, -ENOSPC, or another negative errno.
 *
 * Most pieces land on blocks that are already allocated (a VM disk is
 * rewritten far more than it grows), and fallocate is no cheap way to
 * find that out: ext4 takes the chunk file's inode lock exclusively and
 * waits for every direct I/O in flight on it (inode_dio_wait), so 32
 * writers each calling it queued behind one another and behind the
 * flusher's writes.  One SEEK_HOLE (shared lock, the extent cache) says
 * whether the piece has a hole; only then is it allocated.  Ranges that
 * fallocate reserved but nothing wrote yet count as holes here (unwritten
 * extents), so they are allocated again: slower, still right.  Only on
 * disks whose SEEK_HOLE was seen to find a hole (probe_holes).
 */
static int piece_allocated(int fd, uint64_t off, uint32_t len)
{
	off_t hole = lseek(fd, (off_t)off, SEEK_HOLE);
	return hole >= 0 && (uint64_t)hole >= off + len;
}

static int wb_reserve(struct rq *q, const struct pool_journal_rec *rec, size_t nrec)
{
	for (size_t x = 0; x < nrec; x++) {
		uint64_t dead = store_rq_mask(q, rec[x].stripe);
		for (uint32_t i = 0; i < rec[x].npiece; i++) {
			const struct pool_journal_piece *p = &rec[x].piece[i];
			if (dead & (1ull << p->pos))
				continue;
			int rc = store_rq_ref(q, p->pos, 1);
			if (rc < 0)
				return rc;
			if (pos_disk(q, p->pos)->holes &&
			    piece_allocated(q->ref[p->pos].fd, p->off, p->len))
				continue;
			if (fallocate(q->ref[p->pos].fd, FALLOC_FL_KEEP_SIZE, (off_t)p->off,
				      (off_t)p->len) < 0 &&
			    (errno == ENOSPC || errno == EDQUOT))
				return -ENOSPC; /* other errors: the write will tell */
		}
	}
	return 0;
}

/*
 * A write whose records are in the journal failed, and what it wrote in
 * place was undone or settled (store.c settle): its records must not be
 * replayed after a crash.  Replayed, a record would put back what the
 * write did not do, beside later records of the same stripe computed
 * without it: a stripe whose parity disagrees with its data, with no
 * dirty mark left to resync it.  A journal checkpoint over its stripes
 * (the barrier: only if one has a record in this epoch) ends them.
 */
static void journal_forget(struct rq *q, uint64_t first, uint64_t last)
{
	struct pool_journal *j = atomic_load(&q->s->journal);
	int rc =
	    j && q->s->g.kind == LAYOUT_PARITY ? pool_journal_barrier(j, q->f->id, first, last) : 0;

	if (rc < 0)
		store_log(q->s,
			  "file %016" PRIx64 " stripes %" PRIu64 "-%" PRIu64
			  ": journal checkpoint after a failed write: %s (a replay may apply it)",
			  q->f->id, first, last, strerror(-rc));
}

/*
 * Write-back: the records rec[0..nrec) are durable in the journal; hand
 * their pieces to the flusher (pool/wback.h) instead of writing them, and
 * write only the whole stripes of c[0..nw) in place (they skip the
 * journal, as in write-through).  The request is acknowledged now.
 */
static int write_back(struct rq *q, struct cio *c, size_t nw, const struct pool_journal_rec *rec,
		      size_t nrec)
{
	struct pool_store *s = q->s;
	size_t keep = 0;
	int rc = pool_wb_add(atomic_load(&s->wb), q->f, rec, nrec);

	if (rc < 0) {
		/* No memory for the copies: the write fails, not applied.
		 * Writing it in place instead would go under older records of
		 * the same blocks not applied yet: reads would still see theirs,
		 * and the flusher would then write them over it.  Its records
		 * leave the journal (journal_forget). */
		pool_journal_done(atomic_load(&s->journal), nrec);
		journal_forget(q, rec[0].stripe, rec[nrec - 1].stripe);
		return rc;
	}
	for (size_t i = 0; i < nw; i++) {
		uint64_t st = c[i].off / s->g.interleave;
		int journaled = 0;
		for (size_t x = 0; x < nrec; x++)
			journaled |= rec[x].stripe == st;
		if (!journaled)
			c[keep++] = c[i];
	}
	return keep ? store_phase_write(q, c, keep) : 0;
}

/*
 * Write c[0..nw), the chunk writes of nst stripe plans, parity layout.
 * Every stripe the request covers only in part is recorded in the journal
 * first (its data and parity pieces exactly as they are about to be
 * written), so a crash cannot leave it inconsistent.  Whole stripes skip
 * the journal: every block of theirs is being written, so none that the
 * request does not touch can be left wrong; but a whole-stripe write over
 * a stripe that has a record in this epoch must not be undone by a replay
 * of that older record: the barrier checkpoints first (rare; it comes
 * before logging, which counts this request's records in flight).
 */
static int write_journaled(struct rq *q, struct cio *c, size_t nw, size_t nst)
{
	struct pool_store *s = q->s;
	struct scratch *t = q->t;
	struct pool_journal *j = atomic_load(&s->journal);
	struct pool_journal_piece piece[2][LAYOUT_MAX_POSITIONS];
	struct pool_journal_rec rec[2];
	size_t nrec = 0, first = 0, w = 0;
	uint64_t full_lo = UINT64_MAX, full_hi = 0;
	int rc;

	for (size_t i = 0; i < nst; i++) {
		const struct layout_write_plan *p = &t->wp[i];
		size_t n = 0;
		while (w + n < nw && c[w + n].off / s->g.interleave == p->stripe)
			n++;
		if (p->len == s->stripe_bytes) {
			full_lo = full_lo < p->stripe ? full_lo : p->stripe;
			full_hi = p->stripe;
		} else if (n > 0) {
			/* A request is one contiguous range: at most its first and
			 * last stripes are partial, each one piece per position. */
			if (nrec == 2 || n > LAYOUT_MAX_POSITIONS)
				return -EINVAL;
			if (nrec == 0)
				first = w;
			size_t x = nrec++;
			for (size_t k = 0; k < n; k++)
				piece[x][k] =
				    (struct pool_journal_piece){.pos = c[w + k].pos,
								.len = (uint32_t)c[w + k].len,
								.off = c[w + k].off,
								.buf = c[w + k].buf};
			rec[x] = (struct pool_journal_rec){.file_id = q->f->id,
							   .stripe = p->stripe,
							   .npiece = (uint32_t)n,
							   .piece = piece[x]};
		}
		w += n;
	}
	if (j && full_lo <= full_hi &&
	    (rc = pool_journal_barrier(j, q->f->id, full_lo, full_hi)) < 0)
		return rc;
	if (j && nrec > 0 && atomic_load(&s->wb) && (rc = wb_reserve(q, rec, nrec)) < 0)
		return rc;
	if (j && nrec > 0 && (rc = pool_journal_log(j, rec, nrec)) < 0) {
		store_log(s, "file %016" PRIx64 ": journal write failed: %s", q->f->id,
			  strerror(-rc));
		return -EIO;
	}
	struct pool_wb *wb = j ? atomic_load(&s->wb) : NULL;
	if (wb && nrec > 0)
		return write_back(q, c, nw, rec, nrec);
	if (nrec > 0 && pool_fault_hit(s->fault, POOL_FAULT_TEAR))
		tear(q, c + first, rec[0].npiece, rec[0].stripe);
	rc = store_phase_write(q, c, nw);
	if (j && nrec > 0)
		pool_journal_done(j, nrec);
	return rc;
}

void pool_store_set_journal(struct pool_store *s, struct pool_journal *j)
{
	atomic_store(&s->journal, j);
}

void pool_store_set_wb(struct pool_store *s, struct pool_wb *wb)
{
	atomic_store(&s->wb, wb);
}

/*
 * Journal records are written in place long after their writer marked
 * its range dirty (write_begin), with the disks out then: by the
 * write-back flusher, and by the replay at mount or takeover, which may
 * run with disks away that were in service at the crash.  Disks out now:
 * past the layout's redundancy in any stripe of p[0..np) nothing is
 * written (-EIO: the flusher holds the records and tries again; a replay
 * fails, so the volume stays offline and the journal keeps them for a
 * mount with the disks back); within it, the dirty-region log must know
 * which disks miss the range before the write skips them (1: begun, the
 * caller ends it), or a disk that returns would not be resynced and would
 * serve the blocks it missed, with checksums that match them, and
 * disagree with the parity written without it.  0: no disk out.
 */
static int mark_absent(struct rq *q, const struct pool_journal_piece *p, uint32_t np, uint64_t *off,
		       uint64_t *len)
{
	struct pool_store *s = q->s;
	uint64_t skip = 0, lo = UINT64_MAX, hi = 0;

	for (uint32_t i = 0; i < np; i++) {
		uint64_t st = p[i].off / s->g.interleave, dead = store_rq_mask(q, st);
		if ((uint32_t)__builtin_popcountll(dead) > s->g.parity)
			return -EIO;
		skip |= disks_of(q, dead);
		lo = st < lo ? st : lo;
		hi = st > hi ? st : hi;
	}
	if (!skip || !s->hooks.write_begin)
		return 0;
	*off = lo * s->stripe_bytes;
	*len = (hi - lo + 1) * s->stripe_bytes;
	int rc = s->hooks.write_begin(s->hooks.arg, q->f->id, *off, *len, skip);
	return rc < 0 ? rc : 1;
}

/* Write pieces p[0..np) of file f in place, in one submission: journal
 * replay (one record: stripe `lock` >= 0 is locked; nothing else runs)
 * and the write-back flusher (lock < 0: it holds the stripes' flush
 * locks instead; pieces of several stripes in ascending order; where a
 * write-back update can be torn by the crash-test fault).  Positions
 * whose disks are out of service are left out (mark_absent tells the
 * dirty-region log first): the parity written covers them. */
static int apply_pieces(struct pool_store *s, const struct pool_file_map *f,
			const struct pool_journal_piece *p, uint32_t np, int64_t lock)
{
	struct stripelock_set set;
	struct rq q;
	int rc = store_check_file(s, f);

	if (rc < 0)
		return rc;
	struct cio *c = calloc(np ? np : 1, sizeof(*c));
	struct scratch *t = c ? store_scratch_get(s) : NULL;
	if (!t) {
		free(c);
		return -ENOMEM;
	}
	for (uint32_t tries = 0; tries < LAYOUT_MAX_COPIES + 1; tries++) {
		size_t n = 0, first_n = 0;
		uint64_t moff = 0, mlen = 0;
		store_rq_init(&q, s, t, f);
		int marked = mark_absent(&q, p, np, &moff, &mlen);
		if (marked < 0) {
			store_rq_end(&q);
			rc = marked;
			break;
		}
		if (lock >= 0)
			store_lock_stripes(s, f->id, (uint64_t)lock, (uint64_t)lock, 1, &set);
		rc = 0;
		for (uint32_t i = 0; i < np && rc == 0; i++) {
			uint64_t st = p[i].off / s->g.interleave;
			if (p[i].pos >= f->npos ||
			    p[i].off % s->g.interleave + p[i].len > s->g.interleave ||
			    (lock >= 0 && st != (uint64_t)lock))
				rc = -EINVAL; /* the record does not fit this volume's files */
			else if (!(store_rq_mask(&q, st) & (1ull << p[i].pos)))
				c[n++] = (struct cio){.pos = p[i].pos,
						      .len = p[i].len,
						      .buf = (uint8_t *)p[i].buf,
						      .off = p[i].off};
			if (rc == 0 && st == p[0].off / s->g.interleave)
				first_n = n;
		}
		if (rc == 0 && first_n > 1 && lock < 0 && pool_fault_hit(s->fault, POOL_FAULT_TEAR))
			tear(&q, c, first_n, p[0].off / s->g.interleave);
		if (rc == 0 && n > 0)
			rc = store_phase_write(&q, c, n);
		if (lock >= 0)
			store_unlock(s, &set);
		if (marked && s->hooks.write_end)
			s->hooks.write_end(s->hooks.arg, f->id, moff, mlen);
		store_rq_end(&q);
		/* a disk that failed under this write is out of service now:
		 * write again without it (the parity covers its column) */
		if (rc != -EIO)
			break;
	}
	store_scratch_put(s, t);
	free(c);
	return rc;
}

void pool_store_wb_drain(struct pool_store *s)
{
	struct pool_wb *wb = atomic_load(&s->wb);
	if (wb)
		pool_wb_drain(wb);
}

int pool_store_wb_apply(void *store, const struct pool_file_map *f,
			const struct pool_journal_piece *p, uint32_t n)
{
	return apply_pieces(store, f, p, n, -1);
}

int pool_store_replay(struct pool_store *s, const struct pool_file_map *f,
		      const struct pool_journal_rec *r)
{
	return apply_pieces(s, f, r->piece, r->npiece, (int64_t)r->stripe);
}

/* Write the block-aligned [off, off+len) from src (locks held). */
static int write_core(struct rq *q, uint64_t off, uint64_t len, const uint8_t *src)
{
	struct pool_store *s = q->s;
	struct scratch *t = q->t;
	struct seg whole = {.off = off, .len = len};
	size_t nst = count_stripes(s, &whole, 1), nr = 0, nw = 0, bytes = 0;
	int src_ok = aligned_for_io(s, src);
	int rc;

	if (store_grow(&t->wp, &t->wp_cap, nst, sizeof(*t->wp)))
		return -ENOMEM;
	for (size_t i = 0; i < nst; i++) {
		uint64_t st = off / s->stripe_bytes + i;
		uint32_t so, sl;
		stripe_part(s, st, off, off + len, &so, &sl);
		rc = layout_plan_write(&s->g, st, so, sl, store_rq_mask(q, st), &t->wp[i]);
		if (rc < 0)
			return rc;
		nr += t->wp[i].nread;
		nw += t->wp[i].nwrite;
		bytes += t->wp[i].read_bytes + write_buf_bytes(s, &t->wp[i], src_ok);
	}
	if (store_grow(&t->cio, &t->cio_cap, nr + nw, sizeof(*t->cio)) ||
	    store_grow(&t->ptr, &t->ptr_cap, nr + nw, sizeof(*t->ptr)) ||
	    grow_aligned(&t->buf, &t->buf_cap, bytes))
		return -ENOMEM;

	/* Reads first (parity updates), all stripes in one go. */
	uint8_t *carve = t->buf;
	size_t r = 0;
	for (size_t i = 0; i < nst; i++) {
		const struct layout_write_plan *p = &t->wp[i];
		for (uint32_t j = 0; j < p->nread; j++, r++) {
			const struct layout_io *io = &p->read[j];
			t->ptr[r] = carve;
			t->cio[r] = (struct cio){.pos = io->pos,
						 .len = io->len,
						 .buf = carve,
						 .off = p->stripe * s->g.interleave + io->col_off};
			carve += io->len;
		}
	}
	if (nr > 0) {
		rc = store_phase_read(q, t->cio, nr);
		if (rc < 0)
			return rc;
	}

	/* Compute what to write. */
	size_t w = nr;
	r = 0;
	for (size_t i = 0; i < nst; i++) {
		struct layout_write_plan *p = &t->wp[i];
		const uint8_t *psrc = src + (p->stripe * s->stripe_bytes + p->off - off);
		uint32_t nwrite = p->nwrite, nread = p->nread;
		rc = finish_plan(q, p, psrc, src_ok, &carve, t->cio + w, t->ptr + w, t->ptr + r);
		if (rc < 0)
			return rc;
		r += nread;
		w += nwrite;
	}
	assert(w == nr + nw);
	if (s->g.kind == LAYOUT_PARITY && (atomic_load(&s->journal) || s->fault))
		return write_journaled(q, t->cio + nr, nw, nst);
	return store_phase_write(q, t->cio + nr, nw);
}

/* ---- public requests ------------------------------------------------------- */

int store_check_file(const struct pool_store *s, const struct pool_file_map *f)
{
	if (f->npos != s->npos)
		return -EINVAL;
	for (uint32_t p = 0; p < f->npos; p++)
		if (f->disk[p] >= s->ndisks)
			return -EINVAL;
	return 0; /* positions on absent disks are failed: see store_rq_init */
}

/* Is position p usable for housekeeping (punch, truncate, sync)? */
static int pos_live(const struct rq *q, uint32_t p)
{
	return !(q->failed & (1ull << p)) && pos_disk(q, p)->dir;
}

/* How many times a request is retried with the positions that failed
 * left out: enough to step over every failure the layouts tolerate. */
#define MAX_TRIES (LAYOUT_MAX_COPIES + 1)

static uint64_t piece_bytes(const struct pool_store *s)
{
	uint64_t n = PIECE_BYTES / s->stripe_bytes;

	return (n ? n : 1) * s->stripe_bytes;
}

static int read_piece(struct pool_store *s, struct scratch *t, const struct pool_file_map *f,
		      uint64_t off, size_t len, uint8_t *buf)
{
	uint64_t aoff = off & ~(BLK - 1), aend = (off + len + BLK - 1) & ~(BLK - 1);
	int direct = aoff == off && aend == off + len && aligned_for_io(s, buf);
	struct stripelock_set set;
	struct rq q;
	int rc;

	if (!direct && grow_aligned(&t->src, &t->src_cap, aend - aoff))
		return -ENOMEM;
	struct seg sg = {.off = aoff, .len = aend - aoff, .buf = direct ? buf : t->src};
	uint64_t extra = 0, csum = 0;

	/* A position that fails (I/O error: its disk is now failed; bad
	 * checksum: just this block) is left out and the read tried again,
	 * served from the other copies or decoded from parity. */
	for (int tries = 1;; tries++) {
		store_rq_init(&q, s, t, f);
		q.extra = extra;
		store_lock_bytes(s, f->id, aoff, aend, 0, &set);
		rc = read_core(&q, &sg, 1);
		store_unlock(s, &set);
		store_rq_end(&q);
		if (rc >= 0 || tries >= (int)MAX_TRIES || !(q.bad & ~extra))
			break;
		extra |= q.bad;
		csum |= q.csum_bad;
	}
	if (rc == 0 && !direct)
		memcpy(buf, t->src + (off - aoff), len);
	if (rc == 0 && csum)
		store_heal(s, f, aoff, aend, csum);
	return rc;
}

/* Widen an unaligned write to whole blocks: read the edge blocks into the
 * bounce buffer and lay the caller's bytes over them. */
static int widen(struct rq *q, uint64_t off, size_t len, const uint8_t *buf, uint64_t aoff,
		 uint64_t aend)
{
	struct scratch *t = q->t;
	struct seg sg[2];
	size_t n = 0;

	if (grow_aligned(&t->src, &t->src_cap, aend - aoff))
		return -ENOMEM;
	if (off != aoff)
		sg[n++] = (struct seg){.off = aoff, .len = BLK, .buf = t->src};
	if (off + len != aend && (n == 0 || aend - BLK != aoff))
		sg[n++] = (struct seg){
		    .off = aend - BLK, .len = BLK, .buf = t->src + (aend - BLK - aoff)};
	if (n > 0) {
		int rc = read_core(q, sg, n);
		if (rc < 0)
			return rc;
	}
	memcpy(t->src + (off - aoff), buf, len);
	return 0;
}

/*
 * A write that failed on some positions without failing their disks (a
 * full disk, a file too big, a short write) may have landed on the
 * others: new parity beside a column's old data, or mirror copies that
 * differ.  Every block still matches its checksum, so nothing would
 * notice until a disk is lost and the stale parity rebuilds wrong bytes
 * in blocks the write never touched.  So before the stripe locks go, the
 * stripes are resynced from what is on disk, the failed positions taken
 * as they are (they may refuse writes still): the request fails with its
 * errno, the stripes are consistent.  If even that fails, their disks are
 * failed, so nothing trusts them; write_piece records the range for their
 * return.
 */
static void settle(struct rq *q, uint64_t aoff, uint64_t aend)
{
	struct pool_store *s = q->s;
	struct rq now;
	char why[128];
	int rc = -EIO;

	store_rq_init(&now, s, q->t, q->f); /* disk states now; holds nothing */
	uint64_t dead = store_rq_mask(&now, (aend - 1) / s->stripe_bytes);
	uint64_t torn = q->wfail & ~dead;
	if (!torn || s->g.kind == LAYOUT_SIMPLE)
		return;
	/* A degraded parity stripe cannot be settled: the missing columns
	 * are known only through the parity the write just changed. */
	if (s->g.kind == LAYOUT_MIRROR || !dead)
		rc = store_settle(s, q->f, aoff, aend, &torn);
	if (rc == 0)
		return;
	snprintf(why, sizeof(why), "a failed write left stripes that cannot be resynced: %s",
		 strerror(-rc));
	for (uint32_t p = 0; p < q->f->npos; p++)
		if (torn >> p & 1)
			disk_fail(s, q->f->disk[p], why);
}

/* One try of write_piece, under the stripe locks of [aoff, aend). */
static int write_try(struct rq *q, uint64_t off, size_t len, const uint8_t *buf, uint64_t aoff,
		     uint64_t aend, int bounce)
{
	struct stripelock_set set;
	int rc;

	store_lock_bytes(q->s, q->f->id, aoff, aend, 1, &set);
	rc = bounce ? widen(q, off, len, buf, aoff, aend) : 0;
	if (rc == 0)
		rc = write_core(q, aoff, aend - aoff, bounce ? q->t->src : buf);
	if (rc < 0 && q->wfail) {
		settle(q, aoff, aend);
		journal_forget(q, aoff / q->s->stripe_bytes, (aend - 1) / q->s->stripe_bytes);
	}
	store_unlock(q->s, &set);
	return rc;
}

static int write_piece(struct pool_store *s, struct scratch *t, const struct pool_file_map *f,
		       uint64_t off, size_t len, const uint8_t *buf)
{
	uint64_t aoff = off & ~(BLK - 1), aend = (off + len + BLK - 1) & ~(BLK - 1);
	int whole = aoff == off && aend == off + len;
	/* An unaligned source costs one copy either way; parity makes it
	 * inside layout_plan_finish, without a bounce buffer. */
	int bounce = !whole || (s->g.kind != LAYOUT_PARITY && !aligned_for_io(s, buf));
	uint64_t last = (aend - 1) / s->stripe_bytes;
	uint64_t extra = 0, healed = 0, absent = 0;
	struct rq q;
	int rc = 0, begun = 0; /* write_begin calls that worked: one write_end each */

	for (int tries = 1;; tries++) {
		store_rq_init(&q, s, t, f);
		/* Disks this write may skip, recorded before it (store_rq_mask is
		 * monotone in the stripe; see write_begin in store.h).  Only
		 * failed disks are skipped: q.extra repeats positions whose
		 * disks failed on an earlier try. */
		uint64_t skip = disks_of(&q, store_rq_mask(&q, last));
		q.extra = extra;
		if (s->hooks.write_begin && (tries == 1 || (skip & ~absent))) {
			rc = s->hooks.write_begin(s->hooks.arg, f->id, aoff, aend - aoff, skip);
			if (rc < 0) {
				store_rq_end(&q);
				break;
			}
			begun++;
		}
		absent |= skip;
		rc = write_try(&q, off, len, buf, aoff, aend, bounce);
		store_rq_end(&q);
		if (rc >= 0 || tries >= (int)MAX_TRIES || !(q.bad & ~extra))
			break;
		/* A position that gave an I/O error has a failed disk now: the
		 * retry leaves it out.  One that gave a bad checksum in the
		 * write's reads (an edge block, old data or parity) must still
		 * be written, every block of it: left out, its other blocks
		 * would keep old data under valid checksums, which reads and
		 * the heal then trust.  So its stripes are healed from
		 * redundancy first and the write tried again in full; if the
		 * heal could not help, the block is lost: -EIO. */
		if (q.csum_bad & healed)
			break;
		if (q.csum_bad)
			store_heal(s, f, aoff, aend, q.csum_bad);
		healed |= q.csum_bad;
		extra |= q.bad & ~q.csum_bad;
	}
	/* A disk that failed during the write missed it (or, after a failed
	 * write, may not hold what its stripes now say): say so before the
	 * write is acknowledged or its failure answered. */
	if (s->hooks.write_begin && begun) {
		store_rq_init(&q, s, t, f);
		uint64_t now = disks_of(&q, q.failed);
		int e = now & ~absent
			    ? s->hooks.write_begin(s->hooks.arg, f->id, aoff, aend - aoff, now)
			    : 0;
		begun += e == 0 && (now & ~absent);
		rc = rc == 0 ? e : rc;
	}
	for (; s->hooks.write_end && begun > 0; begun--)
		s->hooks.write_end(s->hooks.arg, f->id, aoff, aend - aoff);
	return rc;
}

typedef int (*piece_fn)(struct pool_store *s, struct scratch *t, const struct pool_file_map *f,
			uint64_t off, size_t len, uint8_t *buf);

static ssize_t in_pieces(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
			 size_t len, uint8_t *buf, piece_fn fn)
{
	int rc = store_check_file(s, f);

	if (rc < 0)
		return rc;
	if (len == 0)
		return 0;
	if (off + len < off || len > SSIZE_MAX)
		return -EFBIG;
	struct scratch *t = store_scratch_get(s);
	if (!t)
		return -ENOMEM;

	uint64_t pb = piece_bytes(s);
	for (size_t done = 0; done < len && rc == 0;) {
		uint64_t o = off + done;
		uint64_t n = (o / pb + 1) * pb - o;
		if (n > len - done)
			n = len - done;
		rc = fn(s, t, f, o, n, buf + done);
		done += n;
	}
	store_scratch_put(s, t);
	return rc < 0 ? rc : (ssize_t)len;
}

static int write_piece_fn(struct pool_store *s, struct scratch *t, const struct pool_file_map *f,
			  uint64_t off, size_t len, uint8_t *buf)
{
	return write_piece(s, t, f, off, len, buf);
}

ssize_t pool_store_read(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
			size_t len, void *buf)
{
	return in_pieces(s, f, off, len, buf, read_piece);
}

ssize_t pool_store_write(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
			 size_t len, const void *buf)
{
	/* in_pieces is shared with reads; a write never stores through buf. */
	return in_pieces(s, f, off, len, (uint8_t *)buf, write_piece_fn);
}

/* Zero [off, off+len) through the normal path (parity stays right),
 * skipping what is a hole already (pool/sparse.c). */
static int write_zeros(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
		       uint64_t len)
{
	return pool_store_zero(s, f, off, len, s->zeros, s->stripe_bytes);
}

/* Let go of chunk bytes [off, off+len) of one position and their
 * checksums.  -EOPNOTSUPP if the disk's filesystem cannot punch. */
static int punch_chunk(struct rq *q, uint32_t pos, uint64_t off, uint64_t len)
{
	struct chunk_ref *r = &q->ref[pos];
	int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	int rc = store_rq_ref(q, pos, 0);

	if (rc < 0 || r->fd < 0)
		return rc;
	if (fallocate(r->fd, mode, (off_t)off, (off_t)len) < 0)
		return -errno;
	/* Partial pages of the sidecar are zeroed by the punch: CRC 0 is
	 * "never written", which is what a hole is. */
	if (r->crcfd >= 0 && fallocate(r->crcfd, mode, (off_t)(off / BLK * CRC_BYTES),
				       (off_t)(len / BLK * CRC_BYTES)) < 0)
		return -errno;
	return 0;
}

/* Release whole stripes [first, last) on every position. */
static int punch_stripes(struct pool_store *s, const struct pool_file_map *f, uint64_t first,
			 uint64_t last)
{
	struct scratch *t = store_scratch_get(s);
	struct stripelock_set set;
	struct rq q;
	int rc = 0;

	if (!t)
		return -ENOMEM;
	store_rq_init(&q, s, t, f);
	if (s->hooks.write_begin) {
		rc = s->hooks.write_begin(s->hooks.arg, f->id, first * s->stripe_bytes,
					  (last - first) * s->stripe_bytes,
					  disks_of(&q, store_rq_mask(&q, last - 1)));
		if (rc < 0) {
			store_scratch_put(s, t);
			return rc;
		}
	}
	store_lock_stripes(s, f->id, first, last - 1, 1, &set);
	for (uint32_t p = 0; p < f->npos && rc == 0; p++) {
		if (!pos_live(&q, p) || (store_rq_mask(&q, last - 1) & (1ull << p)))
			continue;
		rc = punch_chunk(&q, p, first * s->g.interleave, (last - first) * s->g.interleave);
		if (rc < 0 && rc != -EOPNOTSUPP)
			io_error(&q, "punch", p, first * s->g.interleave, rc);
	}
	store_unlock(s, &set);
	store_rq_end(&q);
	store_scratch_put(s, t);
	if (s->hooks.write_end)
		s->hooks.write_end(s->hooks.arg, f->id, first * s->stripe_bytes,
				   (last - first) * s->stripe_bytes);
	if (rc == -EOPNOTSUPP) /* the filesystem cannot: write the zeros */
		return write_zeros(s, f, first * s->stripe_bytes, (last - first) * s->stripe_bytes);
	return rc < 0 ? -EIO : 0;
}

int pool_store_punch(struct pool_store *s, const struct pool_file_map *f, uint64_t off,
		     uint64_t len)
{
	uint64_t sb = s->stripe_bytes, end = off + len;
	uint64_t first = (off + sb - 1) / sb, last = end / sb; /* whole stripes */
	int rc = store_check_file(s, f);

	if (rc < 0 || len == 0)
		return rc;
	if (end < off)
		return -EINVAL;
	struct pool_journal *j = atomic_load(&s->journal);
	if (j && (rc = pool_journal_barrier(j, f->id, off / sb, (end - 1) / sb)) < 0)
		return rc; /* a replay must not bring back what the punch removes */
	if (first >= last)
		return write_zeros(s, f, off, len);
	rc = write_zeros(s, f, off, first * sb - off);
	if (rc == 0)
		rc = punch_stripes(s, f, first, last);
	if (rc == 0)
		rc = write_zeros(s, f, last * sb, end - last * sb);
	return rc;
}

/* Cut one position's chunk (and sidecar) to `size` bytes if longer. */
static int shorten_chunk(struct rq *q, uint32_t pos, uint64_t size)
{
	struct chunk_ref *r = &q->ref[pos];
	struct stat st;
	int rc = store_rq_ref(q, pos, 0);

	if (rc < 0 || r->fd < 0)
		return rc;
	pthread_mutex_lock(&q->s->size_mu); /* see store_chunk_reserve */
	rc = fstat(r->fd, &st);
	if (rc == 0 && (uint64_t)st.st_size > size)
		rc = ftruncate(r->fd, (off_t)size);
	if (rc == 0 && r->e)
		atomic_store_explicit(&r->e->size, size, memory_order_relaxed);
	pthread_mutex_unlock(&q->s->size_mu);
	if (rc < 0)
		return -errno;
	if (r->crcfd < 0)
		return 0;
	uint64_t csize = (size + BLK - 1) / BLK * CRC_BYTES;
	rc = 0;
	pthread_mutex_lock(&q->s->size_mu); /* the mapping's size too (pool/csum.h) */
	if (fstat(r->crcfd, &st) < 0)
		rc = -errno;
	else if ((uint64_t)st.st_size > csize && ftruncate(r->crcfd, (off_t)csize) < 0)
		rc = -errno;
	else if ((uint64_t)st.st_size > csize && r->map)
		pool_csum_resized(r->map, csize);
	pthread_mutex_unlock(&q->s->size_mu);
	return rc;
}

/* Shorten the chunks of positions in `pos` (a planner mask) that are in
 * service to `keep` stripes, under the stripe locks [keep, last]. */
static int cut_positions(struct pool_store *s, const struct pool_file_map *f, uint64_t keep,
			 uint64_t last, uint64_t pos)
{
	struct scratch *t = store_scratch_get(s);
	struct stripelock_set set;
	struct rq q;
	int rc = 0;

	if (!t)
		return -ENOMEM;
	store_rq_init(&q, s, t, f);
	store_lock_stripes(s, f->id, keep, last > keep ? last : keep, 1, &set);
	for (uint32_t p = 0; p < f->npos && rc == 0; p++) {
		if (!(pos & (1ull << p)) || !pos_live(&q, p))
			continue;
		rc = shorten_chunk(&q, p, keep * s->g.interleave);
		if (rc < 0)
			io_error(&q, "truncate", p, keep * s->g.interleave, rc);
	}
	store_unlock(s, &set);
	store_rq_end(&q);
	store_scratch_put(s, t);
	return rc < 0 ? -EIO : 0;
}

/* Pool disks of the file's positions out of service now. */
static uint64_t disks_out(struct pool_store *s, const struct pool_file_map *f)
{
	struct rq q;
	uint64_t out = 0;

	store_rq_init(&q, s, NULL, f);
	for (uint32_t p = 0; p < f->npos; p++)
		if (!pos_live(&q, p))
			out |= 1ull << f->disk[p];
	return out;
}

int pool_store_truncate(struct pool_store *s, const struct pool_file_map *f, uint64_t old_size,
			uint64_t new_size)
{
	uint64_t sb = s->stripe_bytes;
	int rc = store_check_file(s, f);

	if (rc < 0 || new_size >= old_size)
		return rc;
	struct pool_journal *j = atomic_load(&s->journal);
	if (j && (rc = pool_journal_barrier(j, f->id, new_size / sb, UINT64_MAX)) < 0)
		return rc; /* a replay must not bring back what the cut removes */
	/* The last stripe keeps its bytes past new_size on disk: zero them,
	 * parity included.  Bytes past old_size are zeros already (every
	 * truncate leaves them so), which saves allocating chunk space for
	 * columns the file never reached. */
	if (new_size % sb) {
		uint64_t stop = (new_size / sb + 1) * sb;
		uint64_t old_end = (old_size + BLK - 1) & ~(BLK - 1);
		if (old_end < stop)
			stop = old_end;
		rc = write_zeros(s, f, new_size, stop - new_size);
		if (rc < 0)
			return rc;
	}

	uint64_t keep = (new_size + sb - 1) / sb; /* stripes that stay */
	uint64_t last = (old_size - 1) / sb, absent = disks_out(s, f);
	/* A disk out of service keeps its long chunks, checksums valid: the
	 * old bytes would show again once the file grows back over them.
	 * Like a write, the cut tells the dirty-region log which disks miss
	 * it, before it happens; their resync rewrites the regions inside
	 * the file and cuts what lies past its end (pool_store_cut). */
	if (keep <= last && absent && s->hooks.write_begin) {
		rc = s->hooks.write_begin(s->hooks.arg, f->id, keep * sb, old_size - keep * sb,
					  absent);
		if (rc < 0)
			return rc;
	}
	rc = cut_positions(s, f, keep, last, UINT64_MAX);
	if (keep <= last && absent && s->hooks.write_end)
		s->hooks.write_end(s->hooks.arg, f->id, keep * sb, old_size - keep * sb);
	return rc;
}

int pool_store_cut(struct pool_store *s, const struct pool_file_map *f, uint64_t size,
		   uint64_t disks)
{
	uint64_t sb = s->stripe_bytes, keep = (size + sb - 1) / sb, pos = 0;
	int rc = store_check_file(s, f);

	if (rc < 0)
		return rc;
	struct pool_journal *j = atomic_load(&s->journal);
	if (j && (rc = pool_journal_barrier(j, f->id, keep, UINT64_MAX)) < 0)
		return rc; /* as in pool_store_truncate */
	for (uint32_t p = 0; p < f->npos; p++)
		if (disks & (1ull << f->disk[p]))
			pos |= 1ull << p;
	return pos ? cut_positions(s, f, keep, keep, pos) : 0;
}

/* A chunk file created since the last sync is only durable once its name
 * is (and its hash subdirectory's, in data/). */
static int sync_chunk_dirs(const struct pool_store *s, uint32_t disk, uint64_t id)
{
	char dir[PATH_MAX];
	int n = snprintf(dir, sizeof(dir), "%s/%02x", s->disk[disk].dir, (unsigned)(id % 256));

	if (n < 0 || (size_t)n >= sizeof(dir))
		return -ENAMETOOLONG;
	int rc = pool_fsync_dir(dir);
	return rc == 0 ? pool_fsync_dir(s->disk[disk].dir) : rc;
}

int pool_store_sync(struct pool_store *s, const struct pool_file_map *f)
{
	struct scratch *t;
	struct rq q;
	int rc = store_check_file(s, f);

	if (rc < 0)
		return rc;
	/* Acknowledged writes may be only in the parity journal (write-back),
	 * whose appends are not flushed one by one. */
	struct pool_journal *j = atomic_load(&s->journal);
	if (j && pool_journal_sync(j) < 0)
		return -EIO;
	t = store_scratch_get(s);
	if (!t)
		return -ENOMEM;
	store_rq_init(&q, s, t, f);
	for (uint32_t p = 0; p < f->npos; p++) {
		if (!pos_live(&q, p))
			continue;
		int e = store_rq_ref(&q, p, 0);
		struct chunk_ref *r = &q.ref[p];
		if (e == 0 && r->fd >= 0 && fdatasync(r->fd) < 0)
			e = -errno;
		if (e == 0 && r->crcfd >= 0 && fdatasync(r->crcfd) < 0)
			e = -errno;
		if (e == 0 && r->fd >= 0)
			e = sync_chunk_dirs(s, f->disk[p], f->id);
		if (e < 0) {
			io_error(&q, "sync", p, 0, e);
			rc = -EIO;
		}
	}
	store_rq_end(&q);
	store_scratch_put(s, t);
	return rc;
}

int pool_store_remove(struct pool_store *s, const struct pool_file_map *f)
{
	char path[PATH_MAX];
	int rc = store_check_file(s, f);

	if (rc < 0)
		return rc;
	struct pool_journal *j = atomic_load(&s->journal);
	if (j && (rc = pool_journal_barrier(j, f->id, 0, UINT64_MAX)) < 0)
		return rc; /* no replay may recreate the file's chunks */
	for (uint32_t p = 0; p < f->npos; p++) {
		uint32_t disk = f->disk[p];
		store_chunk_drop(s, f->id, p, disk);
		if (!s->disk[disk].dir || store_dstate(&s->disk[disk]) == POOL_STORE_DISK_FAILED)
			continue; /* its chunks go with the disk */
		for (int crc = 0; crc < 2; crc++) {
			int e = store_chunk_path(s, disk, f->id, p, crc, path, sizeof(path));
			if (e == 0 && unlink(path) < 0 && errno != ENOENT)
				e = -errno;
			if (e < 0) {
				store_log(s, "file %016" PRIx64 ": cannot remove %s: %s", f->id,
					  path, strerror(-e));
				rc = e;
			}
		}
	}
	return rc;
}

int pool_store_allocated(struct pool_store *s, const struct pool_file_map *f, uint64_t *bytes)
{
	char path[PATH_MAX];
	struct stat st;
	int rc = store_check_file(s, f);

	*bytes = 0;
	if (rc < 0)
		return rc;
	for (uint32_t p = 0; p < f->npos; p++) {
		if (!s->disk[f->disk[p]].dir ||
		    store_dstate(&s->disk[f->disk[p]]) == POOL_STORE_DISK_FAILED)
			continue;
		rc = store_chunk_path(s, f->disk[p], f->id, p, 0, path, sizeof(path));
		if (rc < 0)
			return rc;
		if (stat(path, &st) == 0)
			*bytes += (uint64_t)st.st_blocks * 512;
	}
	return 0;
}

/* Once per filesystem: disks that share one (directories of one test
 * disk, as in the lab) would each flush the whole of it again. */
int pool_store_syncfs(struct pool_store *s)
{
	dev_t done[64]; /* more filesystems than that: the rest synced each time */
	uint32_t ndone = 0;
	int rc = 0;

	for (uint32_t i = 0; i < s->ndisks; i++) {
		struct store_disk *d = &s->disk[i];
		struct stat st;
		int seen = 0;
		if (!d->dir || store_dstate(d) == POOL_STORE_DISK_FAILED)
			continue;
		int fd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0 && fstat(fd, &st) == 0) {
			for (uint32_t j = 0; j < ndone && !seen; j++)
				seen = done[j] == st.st_dev;
			if (!seen && ndone < 64)
				done[ndone++] = st.st_dev;
		}
		if (fd < 0 || (!seen && syncfs(fd) < 0))
			rc = -errno;
		if (fd >= 0)
			close(fd);
	}
	return rc;
}

void pool_store_stats(struct pool_store *s, uint32_t disk, struct pool_disk_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (disk >= s->ndisks)
		return;
	const struct disk_counters *c = &s->disk[disk].c;
	out->reads = atomic_load_explicit(&c->reads, memory_order_relaxed);
	out->writes = atomic_load_explicit(&c->writes, memory_order_relaxed);
	out->read_bytes = atomic_load_explicit(&c->read_bytes, memory_order_relaxed);
	out->write_bytes = atomic_load_explicit(&c->write_bytes, memory_order_relaxed);
	out->errors = atomic_load_explicit(&c->errors, memory_order_relaxed);
	out->csum_errors = atomic_load_explicit(&c->csum_errors, memory_order_relaxed);
	pool_lat_snapshot(&c->lat, out->lat, &out->lat_sum_us);
}

/* ---- failures: disk states, checking and repairing stripes --------------- */

static void disk_fail(struct pool_store *s, uint32_t disk, const char *why)
{
	struct store_disk *d = &s->disk[disk];
	uint8_t old = atomic_exchange(&d->state, (uint8_t)POOL_STORE_DISK_FAILED);

	if (old == POOL_STORE_DISK_FAILED)
		return;
	store_log(s, "disk %u (%s) FAILED: %s; its positions are served from redundancy", disk,
		  d->path ? d->path : "?", why);
	if (s->hooks.disk_failed)
		s->hooks.disk_failed(s->hooks.arg, disk, why);
}

/* Is the disk's data directory still the one we opened?  A directory
 * removed, renamed away or replaced by an empty one has no chunk files
 * either, so a missing chunk there must not read as a hole. */
static int disk_intact(struct pool_store *s, uint32_t disk)
{
	struct store_disk *d = &s->disk[disk];
	struct stat st;

	if (!d->dir)
		return 0;
	if (stat(d->dir, &st) == 0 && st.st_dev == d->dev && st.st_ino == d->ino)
		return 1;
	disk_fail(s, disk, "its data directory is gone or was replaced");
	return 0;
}

void pool_store_disk_set(struct pool_store *s, uint32_t disk, enum pool_store_disk_state st)
{
	if (disk >= s->ndisks)
		return;
	struct store_disk *d = &s->disk[disk];
	if (st == POOL_STORE_DISK_REBUILDING) {
		atomic_store_explicit(&d->rb_stripe, 0, memory_order_release);
		atomic_store_explicit(&d->rb_id, 0, memory_order_release);
	}
	if (st != POOL_STORE_DISK_FAILED && !d->dir)
		return; /* an absent disk stays failed until replaced */
	atomic_store_explicit(&d->state, (uint8_t)st, memory_order_release);
}

enum pool_store_disk_state pool_store_disk_get(struct pool_store *s, uint32_t disk)
{
	return disk < s->ndisks ? store_dstate(&s->disk[disk]) : POOL_STORE_DISK_FAILED;
}

/* The cursor only moves forward; stripe first to 0 when the file changes,
 * so a reader never pairs a new file with an old stripe. */
void pool_store_rebuild_cursor(struct pool_store *s, uint32_t disk, uint64_t id, uint64_t stripe)
{
	if (disk >= s->ndisks)
		return;
	struct store_disk *d = &s->disk[disk];
	if (atomic_load_explicit(&d->rb_id, memory_order_relaxed) != id) {
		atomic_store_explicit(&d->rb_stripe, 0, memory_order_release);
		atomic_store_explicit(&d->rb_id, id, memory_order_release);
	}
	atomic_store_explicit(&d->rb_stripe, stripe, memory_order_release);
}

uint64_t pool_store_stripes(const struct pool_store *s, uint64_t size)
{
	return (size + s->stripe_bytes - 1) / s->stripe_bytes;
}

uint64_t pool_store_stripes_on_disk(struct pool_store *s, const struct pool_file_map *f)
{
	char path[PATH_MAX];
	uint64_t most = 0;
	struct stat st;

	for (uint32_t p = 0; p < f->npos && p < s->npos; p++) {
		uint32_t disk = f->disk[p];
		if (disk >= s->ndisks || store_dstate(&s->disk[disk]) == POOL_STORE_DISK_FAILED)
			continue;
		if (store_chunk_path(s, disk, f->id, p, 0, path, sizeof(path)) == 0 &&
		    stat(path, &st) == 0 && (uint64_t)st.st_size > most)
			most = (uint64_t)st.st_size;
	}
	return (most + s->g.interleave - 1) / s->g.interleave;
}

uint64_t pool_store_healed(struct pool_store *s, uint32_t disk)
{
	return disk < s->ndisks ? atomic_load(&s->disk[disk].c.healed) : 0;
}
/* ---- open and close -------------------------------------------------------- */

static int mkdir_one(const char *path)
{
	return mkdir(path, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

/* Does O_DIRECT work in dir?  Open, write, read back and delete a probe
 * file; *why says what failed. */
static int probe_direct(const char *dir, char *why, size_t whylen)
{
	char path[PATH_MAX];
	void *buf = NULL, *back = NULL;
	int ok = 0;

	int n = snprintf(path, sizeof(path), "%s/.direct-probe.%d.%d", dir, (int)getpid(),
			 (int)gettid());
	if (n < 0 || (size_t)n >= sizeof(path)) {
		snprintf(why, whylen, "path too long");
		return 0;
	}
	int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(why, whylen, "open: %s", strerror(errno));
		return 0;
	}
	if (posix_memalign(&buf, BLK, BLK) || posix_memalign(&back, BLK, BLK)) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	memset(buf, 0x5a, BLK);
	if (pwrite(fd, buf, BLK, 0) != (ssize_t)BLK) {
		snprintf(why, whylen, "write: %s", strerror(errno));
		goto out;
	}
	if (pread(fd, back, BLK, 0) != (ssize_t)BLK || memcmp(buf, back, BLK)) {
		snprintf(why, whylen, "read back: %s", strerror(errno));
		goto out;
	}
	ok = 1;
out:
	close(fd);
	unlink(path);
	free(buf);
	free(back);
	return ok;
}

/* Does SEEK_HOLE in dir see holes?  A filesystem without it (the
 * kernel's generic lseek, some FUSE ones) calls everything below the end
 * of a file data, which would let write-back skip reserving a hole
 * (wb_reserve).  A probe file with data at 0 and 64 KiB and a hole
 * between.  Not synced: it runs at every open of every disk, and a
 * filesystem that called not-yet-allocated dirty blocks holes would only
 * fail the probe (then every piece is reserved, as before the probe). */
static int probe_holes(const char *dir)
{
	char path[PATH_MAX];
	uint8_t buf[BLK];
	int ok = 0;

	int n =
	    snprintf(path, sizeof(path), "%s/.hole-probe.%d.%d", dir, (int)getpid(), (int)gettid());
	if (n < 0 || (size_t)n >= sizeof(path))
		return 0;
	int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return 0;
	memset(buf, 0x5a, sizeof(buf));
	if (pwrite(fd, buf, BLK, 0) == (ssize_t)BLK &&
	    pwrite(fd, buf, BLK, 16 * BLK) == (ssize_t)BLK)
		ok = lseek(fd, 0, SEEK_HOLE) == (off_t)BLK;
	close(fd);
	unlink(path);
	return ok;
}

/* Make <disk>/vol/<volume>/data and decide O_DIRECT for one disk. */
static int disk_open(struct pool_store *s, const struct pool_store_config *cfg, uint32_t i,
		     char *err, size_t errlen)
{
	struct store_disk *d = &s->disk[i];
	char vol[PATH_MAX], why[256];
	int rc;

	if (!cfg->disk_path[i]) { /* absent disk: failed until replaced */
		atomic_store(&d->state, (uint8_t)POOL_STORE_DISK_FAILED);
		return 0;
	}
	d->path = strdup(cfg->disk_path[i]);
	if (!d->path) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(vol, sizeof(vol), "%s/vol", d->path);
	rc = mkdir_one(vol);
	if (rc == 0) {
		snprintf(vol, sizeof(vol), "%s/vol/%s", d->path, cfg->volume);
		rc = mkdir_one(vol);
	}
	if (rc == 0 && asprintf(&d->dir, "%s/data", vol) < 0) {
		d->dir = NULL;
		rc = -ENOMEM;
	}
	if (rc == 0)
		rc = mkdir_one(d->dir);
	struct stat st;
	if (rc == 0 && stat(d->dir, &st) < 0)
		rc = -errno;
	if (rc < 0) {
		snprintf(err, errlen, "disk %s: cannot create %s: %s", d->path, vol, strerror(-rc));
		return rc;
	}
	d->dev = st.st_dev;
	d->ino = st.st_ino;
	if (!cfg->no_direct) {
		d->direct = probe_direct(vol, why, sizeof(why));
		if (!d->direct)
			store_log(s, "disk %s: O_DIRECT not usable (%s), using buffered I/O",
				  d->path, why);
	}
	s->any_direct |= d->direct;
	/* only write-back (parity volumes) asks (wb_reserve) */
	d->holes = s->g.kind == LAYOUT_PARITY && probe_holes(vol);
	return 0;
}

static void bury(struct pool_store *s, char *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&s->grave_mu);
	char **g = realloc(s->grave, (s->ngrave + 1) * sizeof(*g));
	if (g) {
		s->grave = g;
		s->grave[s->ngrave++] = p;
	} /* else: leak it rather than free it under a reader */
	pthread_mutex_unlock(&s->grave_mu);
}

int pool_store_disk_replace(struct pool_store *s, uint32_t disk, const char *path, char *err,
			    size_t errlen)
{
	if (disk >= s->ndisks)
		return -EINVAL;
	struct store_disk *d = &s->disk[disk];
	const char **paths = calloc(s->ndisks, sizeof(*paths));
	if (!paths)
		return -ENOMEM;
	paths[disk] = path;
	struct pool_store_config cfg = {
	    .volume = s->volume, .disk_path = paths, .ndisks = s->ndisks};

	atomic_store(&d->state, (uint8_t)POOL_STORE_DISK_FAILED);
	store_fdcache_drop_disk(s, disk);
	bury(s, d->dir);
	bury(s, d->path);
	d->dir = NULL;
	d->path = NULL;
	int rc = disk_open(s, &cfg, disk, err, errlen);
	free(paths);
	if (rc < 0)
		return rc;
	pool_store_disk_set(s, disk, POOL_STORE_DISK_REBUILDING);
	return 0;
}

/* Zeroed memory aligned for the cache-line aligned members (calloc only
 * promises 16 bytes). */
static void *zalloc_aligned(size_t n)
{
	void *p;

	if (posix_memalign(&p, 64, n))
		return NULL;
	return memset(p, 0, n);
}

static int valid_name(const char *v)
{
	return v && *v && !strchr(v, '/') && strcmp(v, ".") && strcmp(v, "..");
}

int pool_store_open(const struct pool_store_config *cfg, struct pool_store **out, char *err,
		    size_t errlen)
{
	struct pool_store *s;
	int rc;

	if (errlen > 0)
		err[0] = '\0';
	if (!valid_name(cfg->volume) || cfg->ndisks == 0 || cfg->ndisks > 256 ||
	    layout_geom_check(&cfg->geom) < 0) {
		snprintf(err, errlen, "bad store configuration (volume, disks or layout)");
		return -EINVAL;
	}
	s = zalloc_aligned(sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->g = cfg->geom;
	s->k = layout_data_columns(&s->g);
	s->npos = layout_positions(&s->g);
	s->stripe_bytes = layout_stripe_bytes(&s->g);
	s->lock_unit = lock_unit_of(s);
	s->integrity = cfg->integrity;
	s->ndisks = cfg->ndisks;
	if (cfg->hooks)
		s->hooks = *cfg->hooks;
	s->fault = cfg->fault && cfg->fault->kind == POOL_FAULT_TEAR ? cfg->fault : NULL;
	pthread_mutex_init(&s->grave_mu, NULL);
	pthread_mutex_init(&s->scratch_mu, NULL);
	pthread_mutex_init(&s->size_mu, NULL);
	s->volume = strdup(cfg->volume);
	s->disk = zalloc_aligned(cfg->ndisks * sizeof(*s->disk));
	rc = !s->volume || !s->disk ? -ENOMEM : 0;
	if (rc < 0) {
		free(s->volume);
		free(s->disk);
		pthread_mutex_destroy(&s->scratch_mu);
		pthread_mutex_destroy(&s->size_mu);
		free(s);
		snprintf(err, errlen, "out of memory");
		return rc;
	}

	for (uint32_t i = 0; i < cfg->ndisks && rc == 0; i++) {
		rc = disk_open(s, cfg, i, err, errlen);
		s->disk[i].dq = cfg->diskq ? cfg->diskq[i] : NULL; /* kept across replace */
	}
	if (rc == 0 && s->g.kind == LAYOUT_PARITY)
		rc = layout_codec_new(s->k, s->g.parity, &s->codec);
	if (rc == 0)
		rc = pool_aio_new(&s->aio);
	if (rc == 0)
		rc = stripelock_new(STORE_LOCK_SLOTS, &s->locks);
	if (rc == 0)
		rc = store_fdcache_init(s);
	if (rc == 0) {
		s->zeros_len = s->stripe_bytes;
		s->zeros = mmap(NULL, s->zeros_len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (s->zeros == MAP_FAILED) {
			s->zeros = NULL;
			rc = -ENOMEM;
		}
	}
	if (rc < 0) {
		if (!err[0] || rc == -ENOMEM)
			snprintf(err, errlen, "cannot open the data path of volume %s: %s",
				 cfg->volume, strerror(-rc));
		pool_store_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

void pool_store_close(struct pool_store *s)
{
	if (!s)
		return;
	scratch_free_all(s);
	pthread_mutex_destroy(&s->scratch_mu);
	pthread_mutex_destroy(&s->size_mu);
	store_fdcache_free(s);
	pool_aio_free(s->aio);
	stripelock_free(s->locks);
	layout_codec_free(s->codec);
	if (s->zeros)
		munmap(s->zeros, s->zeros_len);
	for (uint32_t i = 0; i < s->ndisks; i++) {
		free(s->disk[i].dir);
		free(s->disk[i].path);
	}
	for (size_t i = 0; i < s->ngrave; i++)
		free(s->grave[i]);
	free(s->grave);
	pthread_mutex_destroy(&s->grave_mu);
	free(s->disk);
	free(s->volume);
	free(s);
}

/* ---- a view for other pool/ modules (store_int.h) ------------------------- */

struct pool_chunks {
	struct rq q;
	struct stripelock_set set;
	int locked;
};

int pool_chunks_begin(struct pool_store *s, const struct pool_file_map *f, struct pool_chunks **out)
{
	struct pool_chunks *c;
	int rc = store_check_file(s, f);

	if (rc < 0)
		return rc;
	if (!(c = calloc(1, sizeof(*c))))
		return -ENOMEM;
	struct scratch *t = store_scratch_get(s);
	if (!t) {
		free(c);
		return -ENOMEM;
	}
	store_rq_init(&c->q, s, t, f);
	*out = c;
	return 0;
}

void pool_chunks_end(struct pool_chunks *c)
{
	if (c->locked)
		store_unlock(c->q.s, &c->set);
	store_rq_end(&c->q);
	store_scratch_put(c->q.s, c->q.t);
	free(c);
}

const struct layout_geom *pool_chunks_geom(const struct pool_chunks *c)
{
	return &c->q.s->g;
}

uint64_t pool_chunks_dead(struct pool_chunks *c, uint64_t stripe)
{
	uint64_t m = store_rq_mask(&c->q, stripe) | c->q.bad;

	for (uint32_t p = 0; p < c->q.f->npos; p++)
		if (!pos_live(&c->q, p))
			m |= 1ull << p;
	return m;
}

int pool_chunks_fd(struct pool_chunks *c, uint32_t pos, int create, int *fd, int *crcfd)
{
	int rc = store_rq_ref(&c->q, pos, create);

	if (rc < 0)
		return rc;
	*fd = c->q.ref[pos].fd;
	*crcfd = c->q.ref[pos].crcfd;
	return *fd < 0 ? -ENOENT : 0;
}

int pool_chunks_fallocate(struct pool_chunks *c, uint32_t pos, int mode, uint64_t off, uint64_t len)
{
	uint64_t coff = off / BLK * CRC_BYTES, clen = (len + BLK - 1) / BLK * CRC_BYTES;
	int fd, crcfd, rc = pool_chunks_fd(c, pos, 1, &fd, &crcfd);

	if (rc < 0)
		return rc;
	pthread_mutex_lock(&c->q.s->size_mu); /* see store_chunk_reserve */
	if (fallocate(fd, mode, (off_t)off, (off_t)len) < 0 ||
	    (crcfd >= 0 && fallocate(crcfd, mode, (off_t)coff, (off_t)clen) < 0))
		rc = -errno;
	pthread_mutex_unlock(&c->q.s->size_mu);
	return rc;
}

void pool_chunks_lock(struct pool_chunks *c, uint64_t first, uint64_t last)
{
	assert(!c->locked);
	store_lock_stripes(c->q.s, c->q.f->id, first, last, 1, &c->set);
	c->locked = 1;
}
