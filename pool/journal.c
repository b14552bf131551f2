/*
 * journal.c -- the parity journal of one volume (see journal.h for what
 * it is for, docs/FORMAT.md for the bytes).
 *
 * Each copy is one preallocated-by-size (sparse) file: a 4 KiB header,
 * then records appended one after the other from offset 4096.  Every copy
 * gets the same bytes at the same offsets, so replay can take each record
 * from whichever copy holds it intact.  A record is a 4 KiB header block
 * (sequence number, volume, file, stripe, piece list, two CRC-32Cs: one
 * over the header block, one over the data) and the pieces' bytes; a
 * torn or rotten record fails a CRC and is never applied.
 *
 * Epochs instead of a ring: records are only ever appended, and the
 * journal starts over (a new header naming the first sequence number of
 * the new epoch) after a checkpoint has made every in-place write
 * durable.  Replay reads from offset 4096 while it finds the next
 * sequence number in order; anything older there is a previous epoch's.
 * That costs a checkpoint (syncfs of the volume's disks) per journal-full
 * of records, instead of tracking which records of a ring were applied.
 *
 * Group commit: writers append their encoded records to a shared batch
 * under the mutex; the first one waiting becomes the leader, takes the
 * batch, writes it to every copy (and with cfg.flush makes it durable)
 * with the mutex released, and wakes everyone whose records it carried.
 * Records that arrive meanwhile form the next batch.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "layout/layout.h"
#include "pool/aio.h"
#include "pool/journal.h"
#include "pool/pool.h"

#define BLK POOL_JOURNAL_BLOCK
/* Group commits in flight at once: a writer whose records are not being
 * written yet starts the next batch instead of waiting for the current
 * one when fewer than this many are (one append's latency, not one and a
 * half; measured in docs/BENCHMARKS.md). */
#define FLIGHT 2

static const uint8_t file_magic[8] = {'S', 'P', 'F', 'S', 'J', 'R', 'N', 'L'};
static const uint8_t rec_magic[8] = {'S', 'P', 'F', 'S', 'J', 'R', 'E', 'C'};
#define VERSION 1u

/* File header offsets. */
enum {
	F_MAGIC = 0,
	F_VERSION = 8,
	F_COPY = 12,
	F_VOLUME = 16,
	F_SIZE = 24,
	F_BASE = 32,
	F_CRC = BLK - 4,
};

/* Record header offsets. */
enum {
	R_MAGIC = 0,
	R_VERSION = 8,
	R_NPIECE = 12,
	R_SEQ = 16,
	R_VOLUME = 24,
	R_FILE = 32,
	R_STRIPE = 40,
	R_BYTES = 48, /* u64: whole record, header block included */
	R_DATA_CRC = 56,
	R_PIECES = 64, /* 16 bytes each: u32 pos, u32 len, u64 chunk offset */
	R_CRC = BLK - 4,
};

_Static_assert(R_PIECES + 16 * POOL_JOURNAL_MAX_PIECES <= R_CRC, "piece list overflows");

struct copy {
	int fd;		     /* -1: out of service */
	_Atomic int dropped; /* its disk failed: not written any more (fd closed at close) */
	int64_t disk;	     /* pool disk index, -1: unknown */
	int dsync;	     /* opened O_DIRECT (and O_DSYNC with cfg.flush): written by libaio */
	int readonly;	     /* an older copy, read for replay only (cfg.nwrite) */
	_Atomic uint64_t written; /* record bytes written to it */
	char path[4096];
	uint64_t fsize; /* bytes of the file as opened */
	uint64_t base;	/* header's base sequence number, 0: no valid header */
};

struct key {
	uint64_t id, stripe; /* id 0: empty slot */
};

struct pool_journal {
	struct pool_journal_config cfg;
	char volume[128];
	struct copy copy[POOL_JOURNAL_MAX_FILES]; /* the copies first, then read-only ones */
	_Atomic uint32_t ncopy;			  /* copies in service */
	struct pool_aio *aio;			  /* writes every copy at once (O_DSYNC copies) */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t base;	   /* first sequence number of the epoch */
	uint64_t next_seq; /* next record's */
	uint64_t durable;  /* records up to this one are on disk */
	uint64_t head;	   /* file offset the next batch goes to */
	uint8_t *batch, *spare;
	size_t batch_len, batch_cap, spare_cap;
	/* batches being written, in file order: a batch's records are durable
	 * once it and every batch before it are written (replay stops at the
	 * first record missing) */
	struct {
		uint64_t last; /* its last sequence number */
		int done;
	} flight[FLIGHT];
	uint32_t fl_first, nflight;
	uint64_t sent; /* records up to this one are in a batch being written */
	int ckpt;
	int dead;	   /* every copy failed */
	uint64_t inflight; /* records logged, in-place writes not done */
	int hold;	   /* pool_journal_hold: no checkpoint */

	struct key *set; /* stripes with records in this epoch */
	size_t set_n, set_cap;
	int set_lost; /* an entry could not be added: every barrier checkpoints */

	struct pool_journal_stats st;

	/* pool_journal_set_copies: where the copies go at the next
	 * checkpoint (set: not applied yet; gen: bumped by every new
	 * placement, so an apply that raced a newer one leaves it set) */
	struct {
		int set;
		uint32_t gen, n;
		int64_t disk[POOL_JOURNAL_MAX_COPIES];
		char path[POOL_JOURNAL_MAX_COPIES][4096];
		uint64_t failed_ms; /* a copy of it could not be opened then */
		uint32_t failed_gen;
		uint64_t gaveup_ms; /* a move of failed_gen was given up then */
	} want;
	/* Disks whose copy failed a write (copy_fail) at err_ms: a move back
	 * onto one is not forced for a while (a full disk would fail the
	 * reopened copy again, a forced checkpoint every second). */
	_Atomic uint64_t err_mask, err_ms;
	/* The copy list: pool_journal_sync reads it with no mutex held (an
	 * fdatasync must not stall appends); a move replaces it under the
	 * write lock, so no fd is closed under a sync.  Leaders need not take
	 * it: a move happens inside a checkpoint, when none runs. */
	pthread_rwlock_t cl;
};

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void jlog(const struct pool_journal *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void jlog(const struct pool_journal *j, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "spacefs: volume %s: journal: %s\n", j->volume, line);
	fflush(stderr);
}

static int grow_aligned(uint8_t **p, size_t *cap, size_t n)
{
	if (n <= *cap)
		return 0;
	size_t c = *cap ? *cap : 64 * BLK;
	while (c < n)
		c *= 2;
	void *q;
	if (posix_memalign(&q, BLK, c))
		return -ENOMEM;
	if (*p && *cap)
		memcpy(q, *p, *cap);
	free(*p);
	*p = q;
	*cap = c;
	return 0;
}

/* ---- the set of stripes with records in this epoch ------------------------- */

static size_t key_slot(const struct pool_journal *j, uint64_t id, uint64_t stripe)
{
	uint64_t h = id * 0x9e3779b97f4a7c15ull ^ (stripe + 0x632be59bd9b4e019ull);
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (size_t)(h & (j->set_cap - 1));
}

static int set_has(const struct pool_journal *j, uint64_t id, uint64_t stripe)
{
	if (!j->set_cap)
		return 0;
	for (size_t i = key_slot(j, id, stripe);; i = (i + 1) & (j->set_cap - 1)) {
		if (j->set[i].id == 0)
			return 0;
		if (j->set[i].id == id && j->set[i].stripe == stripe)
			return 1;
	}
}

static int set_add(struct pool_journal *j, uint64_t id, uint64_t stripe);

static int set_grow(struct pool_journal *j)
{
	struct key *old = j->set;
	size_t oldcap = j->set_cap;
	size_t cap = oldcap ? 2 * oldcap : 1024;
	struct key *n = calloc(cap, sizeof(*n));

	if (!n)
		return -ENOMEM;
	j->set = n;
	j->set_cap = cap;
	j->set_n = 0;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].id)
			set_add(j, old[i].id, old[i].stripe);
	free(old);
	return 0;
}

static int set_add(struct pool_journal *j, uint64_t id, uint64_t stripe)
{
	if ((j->set_n + 1) * 2 > j->set_cap && set_grow(j) < 0)
		return -ENOMEM;
	size_t i = key_slot(j, id, stripe);
	while (j->set[i].id && !(j->set[i].id == id && j->set[i].stripe == stripe))
		i = (i + 1) & (j->set_cap - 1);
	if (!j->set[i].id) {
		j->set[i] = (struct key){id, stripe};
		j->set_n++;
	}
	return 0;
}

static void set_clear(struct pool_journal *j)
{
	if (j->set_cap)
		memset(j->set, 0, j->set_cap * sizeof(*j->set));
	j->set_n = 0;
	j->set_lost = 0;
}

static int set_any(const struct pool_journal *j, uint64_t id, uint64_t first, uint64_t last)
{
	if (j->set_lost)
		return 1;
	if (j->set_n == 0)
		return 0;
	if (last - first < 64) {
		for (uint64_t s = first;; s++) {
			if (set_has(j, id, s))
				return 1;
			if (s == last)
				return 0;
		}
	}
	for (size_t i = 0; i < j->set_cap; i++)
		if (j->set[i].id == id && j->set[i].stripe >= first && j->set[i].stripe <= last)
			return 1;
	return 0;
}

/* ---- copies ---------------------------------------------------------------- */

static int usable(const struct copy *c)
{
	return c->fd >= 0 && !c->dropped;
}

/* Take copy c out of service (once, whoever gets there first: a failed
 * write of the leader, or its disk's failure reported by the daemon).
 * The descriptor stays open until close: the leader may be using it. */
static int copy_drop(struct pool_journal *j, struct copy *c)
{
	int was = 0;

	if (!atomic_compare_exchange_strong(&c->dropped, &was, 1))
		return 0;
	atomic_fetch_sub(&j->ncopy, 1);
	return 1;
}

static uint64_t mono_ms(void);

static void copy_fail(struct pool_journal *j, struct copy *c, const char *what, int err)
{
	if (c->disk >= 0 && c->disk < 64) {
		atomic_fetch_or(&j->err_mask, 1ull << c->disk);
		atomic_store(&j->err_ms, mono_ms());
	}
	if (copy_drop(j, c))
		jlog(j, "copy %s failed (%s: %s); %u cop%s left in service", c->path, what,
		     strerror(err), (unsigned)j->ncopy, j->ncopy == 1 ? "y" : "ies");
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int pread_all(int fd, uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) { /* past the end: a sparse tail reads as zeros */
			memset(p, 0, len);
			return 0;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Write b[0..len) at off to every copy in service (with cfg.flush:
 * durable through a power cut, O_DSYNC or fdatasync; without: on the
 * device, as a chunk write is, made durable by pool_journal_sync).  0 if
 * at least one copy has it. */
static int write_copies(struct pool_journal *j, const uint8_t *b, size_t len, uint64_t off)
{
	struct pool_aio_req req[POOL_JOURNAL_MAX_FILES];
	struct copy *rc_of[POOL_JOURNAL_MAX_FILES];
	size_t n = 0;

	/* O_DIRECT copies: one submission for all of them (with O_DSYNC each
	 * write is durable when it completes: no fdatasync round per copy). */
	for (uint32_t i = 0; j->aio && i < POOL_JOURNAL_MAX_FILES; i++) {
		struct copy *c = &j->copy[i];
		if (!usable(c) || !c->dsync)
			continue;
		rc_of[n] = c;
		req[n++] = (struct pool_aio_req){
		    .fd = c->fd, .op = POOL_AIO_WRITE, .buf = (void *)b, .len = len, .off = off};
	}
	if (n > 0) {
		pool_aio_run(j->aio, req, n);
		for (size_t i = 0; i < n; i++)
			if (req[i].result < 0 || (size_t)req[i].result != len)
				copy_fail(j, rc_of[i], "write",
					  req[i].result < 0 ? (int)-req[i].result : EIO);
			else
				atomic_fetch_add(&rc_of[i]->written, len);
	}
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		if (j->aio && j->copy[i].dsync)
			continue;
		struct copy *c = &j->copy[i];
		if (!usable(c))
			continue;
		int rc = pwrite_all(c->fd, b, len, off);
		if (rc < 0)
			copy_fail(j, c, "write", -rc);
		else
			atomic_fetch_add(&c->written, len);
	}
	for (uint32_t i = 0; j->cfg.flush && i < POOL_JOURNAL_MAX_FILES; i++) {
		struct copy *c = &j->copy[i];
		if (usable(c) && !(j->aio && c->dsync) && fdatasync(c->fd) < 0)
			copy_fail(j, c, "fdatasync", errno);
	}
	return j->ncopy > 0 ? 0 : -EIO;
}

int pool_journal_sync(struct pool_journal *j)
{
	if (j->cfg.flush)
		return 0; /* every append was durable already */
	pthread_rwlock_rdlock(&j->cl);
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		struct copy *c = &j->copy[i];
		if (usable(c) && fdatasync(c->fd) < 0)
			copy_fail(j, c, "fdatasync", errno);
	}
	pthread_rwlock_unlock(&j->cl);
	return j->ncopy > 0 ? 0 : -EIO;
}

static void move_point(struct pool_journal *j, const char *what)
{
	if (pool_fault_hit(j->cfg.fault, POOL_FAULT_JMOVE))
		pool_fault_die(j->volume, what);
}

/* moving: a move is under way (fault point 2 after the first copy) */
static int write_headers(struct pool_journal *j, uint64_t base, int moving)
{
	uint8_t *h;

	if (posix_memalign((void **)&h, BLK, BLK))
		return -ENOMEM;
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		struct copy *c = &j->copy[i];
		if (!usable(c))
			continue;
		memset(h, 0, BLK);
		memcpy(h + F_MAGIC, file_magic, 8);
		put32(h + F_VERSION, VERSION);
		put32(h + F_COPY, i);
		put64(h + F_VOLUME, j->cfg.volume_id);
		put64(h + F_SIZE, j->cfg.size);
		put64(h + F_BASE, base);
		put32(h + F_CRC, layout_crc32c(h, F_CRC));
		int w = pwrite_all(c->fd, h, BLK, 0);
		if (w == 0 && fdatasync(c->fd) < 0)
			w = -errno;
		if (w < 0)
			copy_fail(j, c, "header write", -w);
		else
			c->base = base;
		if (w == 0 && moving) {
			moving = 0; /* the first copy written */
			move_point(j, "journal move: new epoch header on the first copy only");
		}
	}
	free(h);
	return j->ncopy == 0 ? -EIO : 0;
}

/* The copy's header: its base sequence number, or 0 (damaged, foreign,
 * or a new file), naming what is wrong unless the file is new. */
static uint64_t read_header(struct pool_journal *j, struct copy *c, uint8_t *h)
{
	if (pread_all(c->fd, h, BLK, 0) < 0)
		return 0;
	int blank = 1;
	for (size_t i = 0; i < BLK && blank; i++)
		blank = h[i] == 0;
	if (blank)
		return 0;
	const char *why = NULL;
	if (memcmp(h + F_MAGIC, file_magic, 8) != 0)
		why = "bad magic";
	else if (get32(h + F_CRC) != layout_crc32c(h, F_CRC))
		why = "header CRC mismatch";
	else if (get32(h + F_VERSION) != VERSION)
		why = "unknown version";
	else if (get64(h + F_VOLUME) != j->cfg.volume_id)
		why = "another volume's journal";
	else if (get64(h + F_BASE) == 0)
		why = "base sequence number 0";
	if (why) {
		jlog(j, "copy %s: header damaged (%s, bytes 0-4095): copy not used for replay",
		     c->path, why);
		return 0;
	}
	return get64(h + F_BASE);
}

/* An older copy, read for replay only: never created, resized or written. */
static int open_readonly(struct copy *c, const char *path)
{
	struct stat st;

	snprintf(c->path, sizeof(c->path), "%s", path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	c->fd = fd;
	c->fsize = (uint64_t)st.st_size;
	c->readonly = 1;
	c->dropped = 1; /* never written: usable() skips it */
	return 0;
}

static int open_copy(struct pool_journal *j, struct copy *c, const char *path)
{
	struct stat st;
	int fd = -1, existed = stat(path, &st) == 0;

	snprintf(c->path, sizeof(c->path), "%s", path);
	if (!j->cfg.no_direct)
		fd = open(path,
			  O_RDWR | O_CREAT | O_CLOEXEC | O_DIRECT | (j->cfg.flush ? O_DSYNC : 0),
			  0600);
	c->dsync = fd >= 0;
	if (fd < 0)
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 ||
	    ((uint64_t)st.st_size < j->cfg.size && ftruncate(fd, (off_t)j->cfg.size) < 0)) {
		int e = errno;
		close(fd);
		return -e;
	}
	c->fd = fd;
	c->fsize = (uint64_t)st.st_size > j->cfg.size ? (uint64_t)st.st_size : j->cfg.size;
	if (!existed)
		(void)pool_fsync_parent(path); /* a new copy's name must survive a power cut */
	/* Allocate the whole journal now, so an append never meets a full
	 * disk: a pool whose disks fill up (or a file's fallocate
	 * reservation, which promises writes that cannot fail) must not
	 * lose its journal copies to ENOSPC.  Allocated blocks are kept
	 * (ranges already allocated cost nothing).  A filesystem that cannot
	 * preallocate still works, sparse, and says so. */
	if (fallocate(fd, 0, 0, (off_t)c->fsize) < 0)
		jlog(j,
		     "copy %s: cannot preallocate %" PRIu64
		     " bytes (%s): appends may fail if the disk fills",
		     c->path, c->fsize, strerror(errno));
	return 0;
}

int pool_journal_open(const struct pool_journal_config *cfg, struct pool_journal **out, char *err,
		      size_t errlen)
{
	struct pool_journal *j = calloc(1, sizeof(*j));
	uint8_t *h = NULL;

	if (!j || posix_memalign((void **)&h, BLK, BLK)) {
		free(j);
		return -ENOMEM;
	}
	j->cfg = *cfg;
	snprintf(j->volume, sizeof(j->volume), "%s", cfg->volume);
	j->cfg.volume = j->volume;
	pthread_mutex_init(&j->mu, NULL);
	/* writers first: a steady stream of syncs (readers) must not hold
	 * off a move forever */
	pthread_rwlockattr_t rwa;
	pthread_rwlockattr_init(&rwa);
	pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&j->cl, &rwa);
	pthread_rwlockattr_destroy(&rwa);
	/* timed waits (a forced checkpoint) must not move with the wall clock */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pool_aio_new(&j->aio) < 0)
		j->aio = NULL; /* then every copy is written with pwrite + fdatasync */
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++)
		j->copy[i].fd = -1;
	if (cfg->size < 2 * BLK || cfg->size % BLK) {
		snprintf(err, errlen,
			 "volume %s: journal size %" PRIu64 " is not a multiple of 4 KiB >= 8 KiB",
			 cfg->volume, cfg->size);
		free(h);
		pool_journal_close(j, 0);
		return -EINVAL;
	}
	uint32_t slot = 0, nwrite = cfg->nwrite ? cfg->nwrite : cfg->npath;
	for (uint32_t i = 0; i < cfg->npath && slot < POOL_JOURNAL_MAX_FILES; i++) {
		if (!cfg->path[i] || (i < nwrite && slot >= POOL_JOURNAL_MAX_COPIES))
			continue;
		j->copy[slot].disk = cfg->disk ? (int64_t)cfg->disk[i] : -1;
		int rc = i < nwrite ? open_copy(j, &j->copy[slot], cfg->path[i])
				    : open_readonly(&j->copy[slot], cfg->path[i]);
		if (rc < 0) {
			jlog(j, "cannot open %scopy %s: %s", i < nwrite ? "" : "older ",
			     cfg->path[i], strerror(-rc));
			continue;
		}
		j->ncopy += i < nwrite;
		slot++;
	}
	if (j->ncopy == 0) {
		snprintf(err, errlen, "volume %s: journal: no copy could be opened", cfg->volume);
		free(h);
		pool_journal_close(j, 0);
		return -EIO;
	}
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		struct copy *c = &j->copy[i];
		if (c->fd >= 0)
			c->base = read_header(j, c, h);
		if (c->base > j->base)
			j->base = c->base;
	}
	free(h);
	j->st.size = cfg->size;
	if (j->base == 0) { /* a new journal (or no readable header: nothing to replay) */
		j->base = 1;
		int rc = write_headers(j, 1, 0);
		if (rc < 0) {
			snprintf(err, errlen, "volume %s: journal: cannot write headers: %s",
				 cfg->volume, strerror(-rc));
			pool_journal_close(j, 0);
			return rc;
		}
	}
	j->next_seq = j->base;
	j->durable = j->base - 1;
	j->sent = j->durable;
	j->head = BLK;
	*out = j;
	return 0;
}

/* ---- checkpoint ------------------------------------------------------------ */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* With j->mu held: are the copies in service exactly path[0..n) on
 * disk[0..n)?  Older copies (read-only) do not count. */
static int placed_locked(const struct pool_journal *j, const char *const *path, const int64_t *disk,
			 uint32_t n)
{
	uint32_t live = 0;

	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++)
		live += usable(&j->copy[i]) && !j->copy[i].readonly;
	if (live != n)
		return 0;
	for (uint32_t k = 0; k < n; k++) {
		int found = 0;
		for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES && !found; i++) {
			const struct copy *c = &j->copy[i];
			found = usable(c) && !c->readonly && c->disk == disk[k] &&
				strcmp(c->path, path[k]) == 0;
		}
		if (!found)
			return 0;
	}
	return 1;
}

/* A move under way (placement_apply .. placement_finish): the copy
 * table as it was, and where each entry of the staged one came from. */
struct move {
	struct copy old[POOL_JOURNAL_MAX_FILES]; /* j->copy before the move */
	int from[POOL_JOURNAL_MAX_FILES];	 /* staged i is old[from[i]]; -1: new */
	int created[POOL_JOURNAL_MAX_FILES];	 /* staged i: its file did not exist */
	uint32_t k, n, gen;   /* staged 0..k: the new set (of n wanted); then old ones */
	uint32_t live_before; /* copies in service before the move */
	char gone[POOL_JOURNAL_MAX_FILES][4096]; /* files to remove once it is done */
	uint32_t ngone;
};

/* Inside a checkpoint (every record of the ending epoch in place and
 * durable, nothing in flight, j->mu not held): stage the placement
 * pool_journal_set_copies asked for.  A copy already where it should be
 * is kept as it is; the others are opened (created) now and get the new
 * epoch's header from write_headers, so they need nothing copied.  The
 * old copies in service stay in the staged table (after the new set),
 * written too, so that a new set that takes the header on fewer copies
 * than the journal has now can be given up without losing redundancy
 * (placement_finish).  0, or -EIO / -ENOMEM when no wanted copy could
 * be opened (then nothing changes). */
static int placement_apply(struct pool_journal *j, struct move *mv)
{
	struct copy *nc = calloc(POOL_JOURNAL_MAX_FILES, sizeof(*nc));
	int kept[POOL_JOURNAL_MAX_FILES] = {0};
	char(*path)[4096] = malloc(POOL_JOURNAL_MAX_COPIES * sizeof(*path));
	int64_t disk[POOL_JOURNAL_MAX_COPIES];
	uint32_t n, k = 0;

	if (!nc || !path) {
		free(nc);
		free(path);
		return -ENOMEM;
	}
	pthread_mutex_lock(&j->mu);
	n = j->want.n;
	mv->gen = j->want.gen;
	memcpy(disk, j->want.disk, sizeof(disk));
	memcpy(path, j->want.path, POOL_JOURNAL_MAX_COPIES * sizeof(*path));
	pthread_mutex_unlock(&j->mu);
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		nc[i].fd = -1;
		mv->from[i] = -1;
	}
	for (uint32_t w = 0; w < n; w++) {
		uint32_t s = 0;
		struct stat st;
		while (s < POOL_JOURNAL_MAX_FILES &&
		       !(usable(&j->copy[s]) && !j->copy[s].readonly &&
			 j->copy[s].disk == disk[w] && strcmp(j->copy[s].path, path[w]) == 0))
			s++;
		if (s < POOL_JOURNAL_MAX_FILES) { /* already there: kept as it is */
			mv->created[k] = 0;
			mv->from[k++] = (int)s; /* taken below, under the lock */
			kept[s] = 1;
			continue;
		}
		mv->from[k] = -1;
		mv->created[k] = stat(path[w], &st) < 0;
		nc[k].disk = disk[w];
		int rc = open_copy(j, &nc[k], path[w]);
		if (rc < 0) {
			nc[k].fd = -1;
			jlog(j, "cannot open copy %s on disk %" PRId64 ": %s (tried again later)",
			     path[w], disk[w], strerror(-rc));
			continue;
		}
		k++;
	}
	free(path);
	move_point(j, "journal move: new copies created, no header yet");
	pthread_mutex_lock(&j->mu);
	if (j->want.gen == mv->gen && k < n) {
		j->want.failed_ms = mono_ms();
		j->want.failed_gen = mv->gen;
	}
	pthread_mutex_unlock(&j->mu);
	if (k == 0) {
		free(nc);
		return -EIO;
	}

	pthread_rwlock_wrlock(&j->cl);
	pthread_mutex_lock(&j->mu);
	memcpy(mv->old, j->copy, sizeof(mv->old));
	mv->live_before = 0;
	uint32_t m = k;
	for (uint32_t s = 0; s < POOL_JOURNAL_MAX_FILES; s++) {
		const struct copy *c = &j->copy[s];
		mv->live_before += usable(c) && !c->readonly;
		if (!kept[s] && usable(c) && !c->readonly && m < POOL_JOURNAL_MAX_FILES) {
			mv->from[m] = (int)s;
			mv->created[m++] = 0;
		}
	}
	/* taken now: pool_journal_disk_failed (under j->mu) may have dropped
	 * one meanwhile */
	uint32_t live = 0;
	for (uint32_t i = 0; i < m; i++) {
		if (mv->from[i] >= 0)
			memcpy(&nc[i], &j->copy[mv->from[i]], sizeof(*nc));
		live += usable(&nc[i]);
	}
	memcpy(j->copy, nc, POOL_JOURNAL_MAX_FILES * sizeof(*nc));
	atomic_store(&j->ncopy, live);
	pthread_mutex_unlock(&j->mu);
	pthread_rwlock_unlock(&j->cl);
	mv->k = k;
	mv->n = n;
	free(nc);
	return 0;
}

/* After write_headers on the staged table (or without it: headers < 0,
 * the fence refused): keep the new set if at least min(n, copies in
 * service before) of it took the new header -- or no fewer than the old
 * set did -- then close the old copies and list the files of those that
 * were in service in mv->gone; else give the move up: the new copies
 * are closed (and removed if this move created them, unless unlink is 0),
 * the old ones stay, and the move is tried again later.  1: moved. */
static int placement_finish(struct pool_journal *j, struct move *mv, int headers, int may_unlink)
{
	uint32_t newok = 0, oldok = 0, n = mv->n, k = mv->k;
	struct copy *c = j->copy;
	uint32_t need = n < mv->live_before ? n : mv->live_before;
	int closefd[2 * POOL_JOURNAL_MAX_FILES], nclose = 0;
	char was[64] = "", now[64] = "";

	pthread_rwlock_wrlock(&j->cl);
	pthread_mutex_lock(&j->mu);
	/* the old set's entries learn what the staged ones went through (a
	 * header written, a copy dropped); new[i] = the staged entry i */
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		if (c[i].fd < 0)
			continue;
		if (i < k)
			newok += usable(&c[i]);
		if (mv->from[i] >= 0) {
			oldok += usable(&c[i]);
			memcpy(&mv->old[mv->from[i]], &c[i], sizeof(c[i]));
		}
	}
	/* the new set is kept if it carries the journal as well as the old
	 * one did (or the old one fared no better) */
	int keep = headers == 0 && newok > 0 && (newok >= need || newok >= oldok);
	mv->ngone = 0;
	if (keep) {
		for (uint32_t i = 0; i < k; i++)
			snprintf(now + strlen(now), sizeof(now) - strlen(now), "%s%" PRId64,
				 i ? "," : "", j->copy[i].disk);
		int staged_old[POOL_JOURNAL_MAX_FILES] = {0};
		for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++)
			if (i < k && mv->from[i] >= 0)
				staged_old[mv->from[i]] = 1; /* kept: stays open */
		for (uint32_t s = 0; s < POOL_JOURNAL_MAX_FILES; s++) {
			const struct copy *o = &mv->old[s];
			if (o->fd < 0 || staged_old[s])
				continue;
			if (!o->readonly && strlen(was) + 24 < sizeof(was))
				snprintf(was + strlen(was), sizeof(was) - strlen(was),
					 "%s%" PRId64 "%s", was[0] ? "," : "", o->disk,
					 usable(o) ? "" : "(out)");
			int same = 0; /* a path reopened in place is not removed */
			for (uint32_t i = 0; i < k; i++)
				same |= strcmp(c[i].path, o->path) == 0;
			if (usable(o) && !o->readonly && !same)
				snprintf(mv->gone[mv->ngone++], 4096, "%s", o->path);
			closefd[nclose++] = o->fd;
		}
		for (uint32_t i = k; i < POOL_JOURNAL_MAX_FILES; i++) {
			memset(&j->copy[i], 0, sizeof(j->copy[i]));
			j->copy[i].fd = -1;
		}
		if (j->want.gen == mv->gen)
			j->want.set = 0; /* applied (what could not be opened: tried again later) */
	} else {
		/* the old table back */
		for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++)
			if (c[i].fd >= 0 && mv->from[i] < 0)
				closefd[nclose++] = c[i].fd;
		for (uint32_t i = 0; i < k; i++)
			if (mv->from[i] < 0 && mv->created[i] && may_unlink)
				snprintf(mv->gone[mv->ngone++], 4096, "%s", c[i].path);
		memcpy(j->copy, mv->old, sizeof(mv->old));
		/* not tried again for a while, not even at a natural
		 * checkpoint: each try creates and removes whole journals */
		j->want.failed_ms = j->want.gaveup_ms = mono_ms();
		j->want.failed_gen = mv->gen;
	}
	uint32_t live = 0;
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++)
		live += usable(&j->copy[i]);
	atomic_store(&j->ncopy, live);
	pthread_mutex_unlock(&j->mu);
	pthread_rwlock_unlock(&j->cl);
	for (int i = 0; i < nclose; i++)
		close(closefd[i]);
	if (keep)
		jlog(j, "copies moved at a checkpoint: now on disk%s %s (%u of %u wanted)%s%s",
		     k > 1 ? "s" : "", now, newok, n, was[0] ? "; no longer on " : "", was);
	else if (headers == 0)
		jlog(j,
		     "copies not moved: %u of %u new copies took the header, %u needed; the "
		     "%u in service stay (tried again later)",
		     newok, k, need, live);
	return keep;
}

/* 0 if this node may still write to the volume's disks (the fence), else
 * the refusal, logged naming what it stopped. */
static int fence_ok(struct pool_journal *j, const char *what)
{
	int rc = j->cfg.may_write ? j->cfg.may_write(j->cfg.fence_arg) : 0;
	if (rc < 0)
		jlog(j, "%s refused by the fence: %s", what, strerror(-rc));
	return rc;
}

/* With j->mu held; returns with it held.  Waits out a checkpoint in
 * progress instead of starting a second one.  wait_ms > 0: give up
 * (-EAGAIN) if the records in flight are not all in place by then, so
 * appends are held up that long at most. */
static int checkpoint_locked(struct pool_journal *j, uint32_t wait_ms)
{
	while (j->ckpt) {
		/* A checkpoint that gave up (a forced one timing out, a failed
		 * sync, the fence refusing) starts no epoch: a barrier that
		 * took it as done would write a full stripe unjournaled with
		 * the stripe's old record still in the epoch, and a crash would
		 * replay that record over the newer data.  So only one that
		 * completed counts; else this caller runs its own. */
		uint64_t done = j->st.checkpoints;
		while (j->ckpt)
			pthread_cond_wait(&j->cv, &j->mu);
		if (j->dead)
			return -EIO;
		if (j->st.checkpoints != done)
			return 0;
	}
	if (j->hold)
		return -EAGAIN; /* records not in place must stay */
	j->ckpt = 1;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until); /* j->cv waits on it */
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while ((j->nflight || j->batch_len || j->inflight) && !j->hold) {
		if (!wait_ms) {
			pthread_cond_wait(&j->cv, &j->mu);
		} else if (pthread_cond_timedwait(&j->cv, &j->mu, &until) == ETIMEDOUT &&
			   (j->nflight || j->batch_len || j->inflight)) {
			j->ckpt = 0;
			pthread_cond_broadcast(&j->cv);
			return -EAGAIN;
		}
	}
	/* Write-back records reported done but not in place after all (a disk
	 * away): hold(1) comes before their done, so this is where a checkpoint
	 * that began before it learns of them.  The epoch must keep them. */
	if (j->hold) {
		j->ckpt = 0;
		pthread_cond_broadcast(&j->cv);
		return -EAGAIN;
	}
	uint64_t base = j->next_seq;
	int move = j->want.set && !(j->want.failed_gen == j->want.gen && j->want.gaveup_ms &&
				    mono_ms() - j->want.gaveup_ms < 30000);
	pthread_mutex_unlock(&j->mu);
	struct move *mv = NULL;
	int rc = j->cfg.sync ? j->cfg.sync(j->cfg.arg) : 0;
	if (rc < 0)
		jlog(j, "checkpoint: syncing the volume's disks failed: %s", strerror(-rc));
	if (rc == 0 && (rc = fence_ok(j, "checkpoint")) < 0)
		move = 0;
	/* A move: the ending epoch is in place and durable, so the new
	 * copies start empty with the new header, like the others. */
	if (rc == 0 && move && (!(mv = malloc(sizeof(*mv))) || placement_apply(j, mv) < 0))
		move = 0; /* the old copies stay; the move is tried again */
	/* the fence again: opening the copies took a while */
	if (rc == 0 && move && (rc = fence_ok(j, "journal move")) < 0) {
		placement_finish(j, mv, rc, 0);
		move = 0;
	}
	if (rc == 0)
		rc = write_headers(j, base, move);
	if (move && rc == 0) {
		move_point(j, "journal move: headers written, old copies not removed");
		int moved = placement_finish(j, mv, rc, 1);
		/* The copies a move left: their records are in place and the
		 * new epoch's header is durable on the copies that replace
		 * them, so nothing can need them; removed so a later open
		 * never takes one for the journal (as it removes older copies
		 * after its replay).  A move given up removes the files it
		 * created.  Not once the fence refuses: this node may no
		 * longer write to the volume's disks. */
		if (mv->ngone && fence_ok(j, "removing old journal copies") == 0)
			for (uint32_t i = 0; i < mv->ngone; i++)
				if (unlink(mv->gone[i]) == 0 && moved)
					jlog(j, "copy %s no longer needed: removed", mv->gone[i]);
		if (moved)
			move_point(j, "journal move: done");
	} else if (move) {
		placement_finish(j, mv, rc, 0); /* no header anywhere: the old copies stay */
	}
	free(mv);
	pthread_mutex_lock(&j->mu);
	if (rc == 0) {
		j->base = base;
		j->head = BLK;
		set_clear(j);
		j->st.checkpoints++;
	} else if (j->ncopy == 0) {
		j->dead = 1;
	}
	j->ckpt = 0;
	pthread_cond_broadcast(&j->cv);
	return rc;
}

int pool_journal_placed(struct pool_journal *j, const char *const *path, const uint32_t *disk,
			uint32_t n)
{
	int64_t d[POOL_JOURNAL_MAX_COPIES];

	if (n > POOL_JOURNAL_MAX_COPIES)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		d[i] = disk[i];
	pthread_mutex_lock(&j->mu);
	int r = placed_locked(j, path, d, n);
	pthread_mutex_unlock(&j->mu);
	return r;
}

int pool_journal_set_copies(struct pool_journal *j, const char *const *path, const uint32_t *disk,
			    uint32_t n, uint32_t wait_ms)
{
	int64_t d[POOL_JOURNAL_MAX_COPIES];
	int rc;

	if (n == 0 || n > POOL_JOURNAL_MAX_COPIES)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		if (!path[i] || strlen(path[i]) >= sizeof(j->want.path[i]))
			return -EINVAL;
		d[i] = disk[i];
		for (uint32_t k = 0; k < i; k++)
			if (d[k] == d[i])
				return -EINVAL; /* copies on distinct disks */
	}
	pthread_mutex_lock(&j->mu);
	if (placed_locked(j, path, d, n)) {
		j->want.set = 0;
		pthread_mutex_unlock(&j->mu);
		return 0;
	}
	int same = j->want.n == n;
	for (uint32_t i = 0; same && i < n; i++)
		same = j->want.disk[i] == d[i] && strcmp(j->want.path[i], path[i]) == 0;
	if (!same) {
		j->want.n = n;
		j->want.gen++;
		for (uint32_t i = 0; i < n; i++) {
			j->want.disk[i] = d[i];
			snprintf(j->want.path[i], sizeof(j->want.path[i]), "%s", path[i]);
		}
	}
	j->want.set = 1;
	/* a copy of this placement could not be opened lately, or a wanted
	 * disk's copy failed a write: the next natural checkpoint tries
	 * again, but no forced one for a while */
	uint64_t now = mono_ms(), wanted = 0;
	for (uint32_t i = 0; i < n; i++)
		wanted |= d[i] < 64 ? 1ull << d[i] : 0;
	int backoff =
	    (j->want.failed_gen == j->want.gen && j->want.failed_ms &&
	     now - j->want.failed_ms < 30000) ||
	    ((atomic_load(&j->err_mask) & wanted) && now - atomic_load(&j->err_ms) < 30000);
	/* a forced attempt only when nothing is in flight: under load it
	 * would hold appends up wait_ms each tick; the next natural
	 * checkpoint (journal a quarter full, a barrier) applies it then */
	if (wait_ms && (j->nflight || j->batch_len || j->inflight || j->ckpt))
		backoff = 1;
	if (j->dead || backoff) {
		rc = j->dead ? -EIO : -EAGAIN;
		pthread_mutex_unlock(&j->mu);
		return rc;
	}
	rc = checkpoint_locked(j, wait_ms);
	if (rc == 0 || rc == -EAGAIN)
		rc = placed_locked(j, path, d, n) ? 0 : -EAGAIN;
	pthread_mutex_unlock(&j->mu);
	return rc;
}

int pool_journal_checkpoint(struct pool_journal *j, uint64_t min_used)
{
	int rc = 0;

	pthread_mutex_lock(&j->mu);
	uint64_t used = j->head - BLK + j->batch_len;
	if (used > 0 && used >= min_used && !j->dead)
		rc = checkpoint_locked(j, 0);
	pthread_mutex_unlock(&j->mu);
	return rc;
}

int pool_journal_barrier(struct pool_journal *j, uint64_t file_id, uint64_t first, uint64_t last)
{
	int rc = 0;

	pthread_mutex_lock(&j->mu);
	if (set_any(j, file_id, first, last))
		rc = checkpoint_locked(j, 0);
	pthread_mutex_unlock(&j->mu);
	return rc;
}

/* ---- appending ------------------------------------------------------------- */

uint64_t pool_journal_rec_bytes(const struct pool_journal_piece *p, uint32_t n)
{
	uint64_t b = BLK;

	for (uint32_t i = 0; i < n; i++)
		b += p[i].len;
	return b;
}

static void encode(const struct pool_journal *j, const struct pool_journal_rec *r, uint8_t *out)
{
	uint64_t bytes = pool_journal_rec_bytes(r->piece, r->npiece);
	uint8_t *d = out + BLK;

	memset(out, 0, BLK);
	memcpy(out + R_MAGIC, rec_magic, 8);
	put32(out + R_VERSION, VERSION);
	put32(out + R_NPIECE, r->npiece);
	put64(out + R_SEQ, r->seq);
	put64(out + R_VOLUME, j->cfg.volume_id);
	put64(out + R_FILE, r->file_id);
	put64(out + R_STRIPE, r->stripe);
	put64(out + R_BYTES, bytes);
	for (uint32_t i = 0; i < r->npiece; i++) {
		uint8_t *e = out + R_PIECES + 16 * i;
		put32(e, r->piece[i].pos);
		put32(e + 4, r->piece[i].len);
		put64(e + 8, r->piece[i].off);
		memcpy(d, r->piece[i].buf, r->piece[i].len);
		d += r->piece[i].len;
	}
	put32(out + R_DATA_CRC, layout_crc32c(out + BLK, bytes - BLK));
	put32(out + R_CRC, layout_crc32c(out, R_CRC));
}

/* A leader: write the batch to every copy (mutex released meanwhile). */
static void lead(struct pool_journal *j)
{
	uint32_t slot = (j->fl_first + j->nflight++) % FLIGHT;
	j->flight[slot].last = j->next_seq - 1;
	j->flight[slot].done = 0;
	j->sent = j->next_seq - 1;
	uint8_t *b = j->batch;
	size_t len = j->batch_len, cap = j->batch_cap;
	uint64_t off = j->head;
	j->batch = j->spare;
	j->batch_cap = j->spare_cap;
	j->batch_len = 0;
	j->spare = NULL;
	j->spare_cap = 0;
	j->head += len;
	pthread_mutex_unlock(&j->mu);

	if (pool_fault_hit(j->cfg.fault, POOL_FAULT_JTEAR)) {
		size_t half = len / 2 / BLK * BLK;
		for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++)
			if (j->copy[i].fd >= 0 && !j->copy[i].readonly) {
				pwrite_all(j->copy[i].fd, b, half ? half : BLK, off);
				fdatasync(j->copy[i].fd);
				break;
			}
		pool_fault_die(j->volume, "journal append torn (first half, first copy only)");
	}
	int rc = j->cfg.may_write ? j->cfg.may_write(j->cfg.fence_arg) : 0;
	if (rc < 0)
		jlog(j, "append refused by the fence (%s): no more appends from this node",
		     strerror(-rc));
	else
		rc = write_copies(j, b, len, off);

	pthread_mutex_lock(&j->mu);
	if (rc < 0)
		j->dead = 1;
	j->flight[slot].done = 1;
	while (j->nflight && j->flight[j->fl_first].done) { /* in file order */
		if (!j->dead) /* dead: nothing in flight counts as written */
			j->durable = j->flight[j->fl_first].last;
		j->fl_first = (j->fl_first + 1) % FLIGHT;
		j->nflight--;
	}
	j->st.commits++;
	if (!j->spare) { /* keep the buffer for a later batch */
		j->spare = b;
		j->spare_cap = cap;
	} else {
		free(b);
	}
	pthread_cond_broadcast(&j->cv);
}

int pool_journal_log(struct pool_journal *j, struct pool_journal_rec *r, size_t n)
{
	uint64_t need = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		if (r[i].npiece > POOL_JOURNAL_MAX_PIECES)
			return -E2BIG;
		need += pool_journal_rec_bytes(r[i].piece, r[i].npiece);
	}
	pthread_mutex_lock(&j->mu);
	for (;;) {
		while (j->ckpt)
			pthread_cond_wait(&j->cv, &j->mu);
		if (j->dead) {
			pthread_mutex_unlock(&j->mu);
			return -EIO;
		}
		if (need > j->cfg.size - BLK) {
			pthread_mutex_unlock(&j->mu);
			jlog(j,
			     "an update of %" PRIu64 " bytes does not fit a journal of %" PRIu64
			     " bytes",
			     need, j->cfg.size);
			return -EFBIG;
		}
		if (j->head + j->batch_len + need <= j->cfg.size)
			break;
		rc = checkpoint_locked(j, 0); /* full: back-pressure, not an error */
		if (rc < 0) {
			pthread_mutex_unlock(&j->mu);
			return rc;
		}
	}
	if (grow_aligned(&j->batch, &j->batch_cap, j->batch_len + need) < 0) {
		pthread_mutex_unlock(&j->mu);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		r[i].seq = j->next_seq++;
		encode(j, &r[i], j->batch + j->batch_len);
		j->batch_len += pool_journal_rec_bytes(r[i].piece, r[i].npiece);
		if (set_add(j, r[i].file_id, r[i].stripe) < 0)
			j->set_lost = 1; /* a barrier must not miss this stripe */
	}
	j->inflight += n;
	j->st.records += n;
	j->st.bytes += need;
	uint64_t mine = j->next_seq - 1;
	while (j->durable < mine && !j->dead) {
		if (j->sent < mine && j->nflight < FLIGHT)
			lead(j);
		else
			pthread_cond_wait(&j->cv, &j->mu);
	}
	rc = j->durable >= mine ? 0 : -EIO;
	if (rc < 0) {
		j->inflight -= n;
		pthread_cond_broadcast(&j->cv);
	}
	pthread_mutex_unlock(&j->mu);
	return rc;
}

void pool_journal_hold(struct pool_journal *j, int on)
{
	pthread_mutex_lock(&j->mu);
	if (on && !j->hold)
		jlog(j, "records not yet in place are held: no checkpoint until they are");
	else if (!on && j->hold)
		jlog(j, "every held record is in place: checkpoints resume");
	j->hold = on;
	pthread_cond_broadcast(&j->cv); /* a checkpoint waiting must see it */
	pthread_mutex_unlock(&j->mu);
}

void pool_journal_done(struct pool_journal *j, size_t n)
{
	pthread_mutex_lock(&j->mu);
	j->inflight -= n;
	if (j->inflight == 0)
		pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

void pool_journal_disk_failed(struct pool_journal *j, uint32_t disk)
{
	pthread_mutex_lock(&j->mu);
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		struct copy *c = &j->copy[i];
		if (!usable(c) || c->disk != (int64_t)disk || j->ncopy <= 1 || !copy_drop(j, c))
			continue;
		jlog(j, "copy %s: its disk %u failed; %u cop%s left in service", c->path, disk,
		     (unsigned)j->ncopy, j->ncopy == 1 ? "y" : "ies");
	}
	pthread_mutex_unlock(&j->mu);
}

void pool_journal_stats(struct pool_journal *j, struct pool_journal_stats *out)
{
	pthread_mutex_lock(&j->mu);
	*out = j->st;
	out->used = j->head - BLK + j->batch_len;
	out->copies = j->ncopy;
	out->ncopyslot = 0;
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		const struct copy *c = &j->copy[i];
		if (c->fd < 0 || c->readonly || out->ncopyslot >= POOL_JOURNAL_MAX_COPIES)
			continue;
		out->copy[out->ncopyslot].disk = c->disk;
		out->copy[out->ncopyslot].in_service = usable(c);
		out->copy[out->ncopyslot].bytes = atomic_load(&c->written);
		out->ncopyslot++;
	}
	pthread_mutex_unlock(&j->mu);
}

/* ---- replay ---------------------------------------------------------------- */

/* Is h a sound header of record `seq` that fits a file of fsize bytes at
 * off?  Its data is checked separately. */
static int header_ok(const struct pool_journal *j, const uint8_t *h, uint64_t seq, uint64_t off,
		     uint64_t fsize)
{
	if (memcmp(h + R_MAGIC, rec_magic, 8) != 0 || get32(h + R_CRC) != layout_crc32c(h, R_CRC))
		return 0;
	if (get32(h + R_VERSION) != VERSION || get64(h + R_SEQ) != seq ||
	    get64(h + R_VOLUME) != j->cfg.volume_id)
		return 0;
	uint32_t np = get32(h + R_NPIECE);
	uint64_t bytes = get64(h + R_BYTES), sum = BLK;
	if (np > POOL_JOURNAL_MAX_PIECES || bytes % BLK || bytes > fsize - off)
		return 0;
	for (uint32_t i = 0; i < np; i++) {
		uint32_t len = get32(h + R_PIECES + 16 * i + 4);
		if (len == 0 || len % BLK)
			return 0;
		sum += len;
	}
	return sum == bytes;
}

struct replay {
	uint8_t *buf;
	size_t cap;
	struct pool_journal_piece piece[POOL_JOURNAL_MAX_PIECES];
};

/* Find record `seq` at off: 1 with it decoded into *r (its data in
 * rp->buf), 0 when no copy has its header (the end of the epoch), -1 when
 * its header is sound somewhere but its data is damaged in every copy
 * (*skip gets its size), or a negative errno below -1... never: read
 * errors count as damage. */
static int find_record(struct pool_journal *j, struct replay *rp, uint64_t seq, uint64_t off,
		       struct pool_journal_rec *r, uint64_t *skip)
{
	int seen = 0;

	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++) {
		struct copy *c = &j->copy[i];
		if (c->fd < 0 || c->base != j->base || off + BLK > c->fsize)
			continue;
		if (grow_aligned(&rp->buf, &rp->cap, BLK) < 0 ||
		    pread_all(c->fd, rp->buf, BLK, off) < 0 ||
		    !header_ok(j, rp->buf, seq, off, c->fsize))
			continue;
		uint64_t bytes = get64(rp->buf + R_BYTES);
		seen = 1;
		*skip = bytes;
		if (grow_aligned(&rp->buf, &rp->cap, bytes) < 0 ||
		    pread_all(c->fd, rp->buf, bytes, off) < 0 ||
		    !header_ok(j, rp->buf, seq, off, c->fsize))
			continue;
		if (get32(rp->buf + R_DATA_CRC) != layout_crc32c(rp->buf + BLK, bytes - BLK)) {
			jlog(j,
			     "copy %s: record %" PRIu64 " at byte %" PRIu64
			     " fails its data CRC; trying another copy",
			     c->path, seq, off);
			continue;
		}
		const uint8_t *d = rp->buf + BLK;
		r->seq = seq;
		r->file_id = get64(rp->buf + R_FILE);
		r->stripe = get64(rp->buf + R_STRIPE);
		r->npiece = get32(rp->buf + R_NPIECE);
		for (uint32_t p = 0; p < r->npiece; p++) {
			const uint8_t *e = rp->buf + R_PIECES + 16 * p;
			rp->piece[p] = (struct pool_journal_piece){
			    .pos = get32(e), .len = get32(e + 4), .off = get64(e + 8), .buf = d};
			d += rp->piece[p].len;
		}
		r->piece = rp->piece;
		return 1;
	}
	return seen ? -1 : 0;
}

/* Progress of a replay: in the status, and a log line every few seconds
 * (a long replay at mount must not look like a hang). */
static void replay_progress(struct pool_journal *j, uint64_t applied, uint64_t off,
			    uint64_t *last_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;

	pthread_mutex_lock(&j->mu);
	j->st.replaying = 1;
	j->st.replayed = applied;
	j->st.replay_bytes = off - BLK;
	pthread_mutex_unlock(&j->mu);
	if (*last_ms == 0)
		*last_ms = now;
	if (now - *last_ms >= 2000) {
		*last_ms = now;
		jlog(j, "replaying: %" PRIu64 " record(s), %" PRIu64 " MiB of %" PRIu64 " MiB read",
		     applied, (off - BLK) >> 20, j->cfg.size >> 20);
	}
}

int pool_journal_replay(struct pool_journal *j, pool_journal_apply_fn apply, void *arg)
{
	struct replay rp = {0};
	uint64_t seq = j->base, off = BLK, applied = 0, last_ms = 0;
	int rc = 0;

	for (;;) {
		replay_progress(j, applied, off, &last_ms);
		struct pool_journal_rec r;
		uint64_t skip = 0;
		int found = find_record(j, &rp, seq, off, &r, &skip);
		if (found == 0)
			break;
		if (found < 0) {
			jlog(j,
			     "record %" PRIu64 " at byte %" PRIu64
			     " is damaged in every copy: not replayed (its stripe is resynced "
			     "from the dirty-region log)",
			     seq, off);
			j->st.damaged++;
		} else {
			rc = apply(arg, &r);
			if (rc < 0) {
				jlog(j,
				     "replaying record %" PRIu64 " (file %" PRIu64
				     " stripe %" PRIu64 ") failed: %s",
				     seq, r.file_id, r.stripe, strerror(-rc));
				break;
			}
			applied++;
			if (pool_fault_hit(j->cfg.fault, POOL_FAULT_REPLAY))
				pool_fault_die(j->volume, "journal replay interrupted");
		}
		off += skip;
		seq++;
	}
	free(rp.buf);
	if (rc < 0)
		return rc;
	if (applied || j->st.damaged)
		jlog(j, "replayed %" PRIu64 " record(s), %" PRIu64 " damaged", applied,
		     j->st.damaged);
	pthread_mutex_lock(&j->mu);
	j->st.replayed = applied;
	j->st.replaying = 0;
	/* The new epoch's numbers start past any record a batch written
	 * after the gap may have left behind the end found (batches are
	 * written concurrently): such a record must never be taken for one
	 * of the new epoch. */
	j->next_seq = seq + j->cfg.size / BLK;
	j->durable = j->next_seq - 1;
	j->sent = j->durable;
	j->head = off; /* the checkpoint below starts a new epoch */
	rc = checkpoint_locked(j, 0);
	pthread_mutex_unlock(&j->mu);
	return rc;
}

void pool_journal_close(struct pool_journal *j, int clean)
{
	if (!j)
		return;
	if (clean && !j->dead && !j->hold && j->ncopy > 0)
		pool_journal_checkpoint(j, 0);
	for (uint32_t i = 0; i < POOL_JOURNAL_MAX_FILES; i++)
		if (j->copy[i].fd >= 0)
			close(j->copy[i].fd);
	if (j->aio)
		pool_aio_free(j->aio);
	free(j->batch);
	free(j->spare);
	free(j->set);
	pthread_mutex_destroy(&j->mu);
	pthread_rwlock_destroy(&j->cl);
	pthread_cond_destroy(&j->cv);
	free(j);
}
