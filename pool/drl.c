/*
 * drl.c -- the dirty-region log: which file ranges may be inconsistent.
 *
 * Why it exists.  A write to a mirror or parity volume touches several
 * chunk files, and a crash can land between them: one copy new, the other
 * old; data new, parity old; a block new, its checksum old.  Finding such
 * stripes by reading the whole volume after every crash would cost hours
 * on a real pool, so, like Storage Spaces' dirty region tracking and md's
 * write-intent bitmap, we write down which regions *may* be inconsistent
 * before writing them, and resync only those after a crash.  The price is
 * one small synchronous write the first time a region is written after it
 * was last cleared; a region stays dirty while it is being written, and
 * is cleared lazily once its chunk files have been synced and it has been
 * idle for a cleaning period, so a busy region costs nothing more.
 *
 * The same records remember, per region, which disks a write skipped
 * because they were failed: a disk that returns only needs those regions.
 *
 * How.  The table lives in memory (a hash over slots) and on disk as an
 * array of 32-byte slots, slot i of the file mirroring in-memory slot i;
 * a change rewrites one slot in place with O_DSYNC on every replica (the
 * volume's metadata disks).  A slot is written whole in one pwrite of 32
 * bytes, within one sector, and carries its own CRC: a torn slot is
 * ignored, which is safe because a slot only becomes dirty before the
 * data writes it covers start, and only becomes clean after they are on
 * disk.  Opening merges every replica (a region counts if any replica
 * has it) and rewrites them all, compacted.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/layout.h"
#include "pool/drl.h"
#include "pool/pool.h"

#define DRL_MAGIC      "SPFSDRL1"
#define DRL_VERSION    1u
#define DRL_HDR	       4096u
#define DRL_SLOT       32u
#define DRL_F_DIRTY    1u
#define DRL_F_USED     0x80000000u
#define DRL_H_OVERFLOW 1u
#define DRL_BUCKETS    4096u

struct slot {
	uint64_t id, region, missed;
	uint8_t dirty, used;
	uint32_t inflight; /* writes in progress */
	uint64_t seq;	   /* bumped by every write */
	uint64_t seen;	   /* seq at the previous cleaning pass */
	int32_t next;	   /* hash chain or free list */
};

struct replica {
	char path[4200];
	int fd; /* -1: dropped */
};

struct pool_drl {
	pthread_mutex_t mu;
	char *volume;
	struct replica r[POOL_DRL_MAX_DIRS];
	uint32_t nr;
	uint32_t overflow;
	struct slot *s; /* POOL_DRL_SLOTS */
	int32_t bucket[DRL_BUCKETS];
	int32_t free;
};

/* ---- encoding ------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

static void encode_slot(const struct slot *e, uint8_t out[DRL_SLOT])
{
	memset(out, 0, DRL_SLOT);
	if (!e->used)
		return;
	put64(out, e->id);
	put64(out + 8, e->region);
	put64(out + 16, e->missed);
	put32(out + 24, DRL_F_USED | (e->dirty ? DRL_F_DIRTY : 0));
	put32(out + 28, layout_crc32c(out, 28));
}

/* 1 and *e filled for a valid used slot, 0 for a free or torn one. */
static int decode_slot(const uint8_t in[DRL_SLOT], struct slot *e)
{
	uint32_t flags = get32(in + 24);

	if (!(flags & DRL_F_USED) || get32(in + 28) != layout_crc32c(in, 28))
		return 0;
	if (flags & ~(DRL_F_USED | DRL_F_DIRTY))
		return 0;
	memset(e, 0, sizeof(*e));
	e->id = get64(in);
	e->region = get64(in + 8);
	e->missed = get64(in + 16);
	e->dirty = (flags & DRL_F_DIRTY) != 0;
	e->used = 1;
	return e->dirty || e->missed;
}

static void encode_header(uint32_t flags, uint8_t out[DRL_HDR])
{
	memset(out, 0, DRL_HDR);
	memcpy(out, DRL_MAGIC, 8);
	put32(out + 8, DRL_VERSION);
	put32(out + 12, DRL_SLOT);
	put32(out + 16, POOL_DRL_SLOTS);
	put32(out + 20, flags);
	put64(out + 24, POOL_DRL_REGION);
	put32(out + DRL_HDR - 4, layout_crc32c(out, DRL_HDR - 4));
}

static int decode_header(const uint8_t in[DRL_HDR], uint32_t *flags, char *why, size_t n)
{
	if (memcmp(in, DRL_MAGIC, 8)) {
		snprintf(why, n, "not a dirty-region log (bad magic)");
		return -EMEDIUMTYPE;
	}
	if (get32(in + DRL_HDR - 4) != layout_crc32c(in, DRL_HDR - 4)) {
		snprintf(why, n, "header checksum mismatch");
		return -EBADMSG;
	}
	if (get32(in + 8) != DRL_VERSION || get32(in + 12) != DRL_SLOT ||
	    get32(in + 16) != POOL_DRL_SLOTS || get64(in + 24) != POOL_DRL_REGION ||
	    (get32(in + 20) & ~DRL_H_OVERFLOW)) {
		snprintf(why, n, "unsupported version, slot size, slot count or region size");
		return -EPROTONOSUPPORT;
	}
	*flags = get32(in + 20);
	return 0;
}

/* ---- the table --------------------------------------------------------- */

static uint32_t hash_of(uint64_t id, uint64_t region)
{
	uint64_t x = id * 0x9e3779b97f4a7c15ull ^ (region + 0x632be59bd9b4e019ull);
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	return (uint32_t)(x >> 40) % DRL_BUCKETS;
}

static struct slot *find(struct pool_drl *d, uint64_t id, uint64_t region)
{
	for (int32_t i = d->bucket[hash_of(id, region)]; i >= 0; i = d->s[i].next)
		if (d->s[i].id == id && d->s[i].region == region)
			return &d->s[i];
	return NULL;
}

static struct slot *insert(struct pool_drl *d, uint64_t id, uint64_t region)
{
	if (d->free < 0)
		return NULL;
	int32_t i = d->free;
	struct slot *e = &d->s[i];
	d->free = e->next;
	uint32_t b = hash_of(id, region);
	*e = (struct slot){.id = id, .region = region, .used = 1, .next = d->bucket[b]};
	d->bucket[b] = i;
	return e;
}

static void remove_slot(struct pool_drl *d, struct slot *e)
{
	int32_t idx = (int32_t)(e - d->s);

	for (int32_t *l = &d->bucket[hash_of(e->id, e->region)]; *l >= 0; l = &d->s[*l].next) {
		if (*l == idx) {
			*l = e->next;
			break;
		}
	}
	memset(e, 0, sizeof(*e));
	e->next = d->free;
	d->free = idx;
}

static void table_init(struct pool_drl *d)
{
	for (uint32_t b = 0; b < DRL_BUCKETS; b++)
		d->bucket[b] = -1;
	for (uint32_t i = 0; i < POOL_DRL_SLOTS; i++)
		d->s[i].next = i + 1 < POOL_DRL_SLOTS ? (int32_t)(i + 1) : -1;
	d->free = 0;
}

/* ---- replicas ------------------------------------------------------------ */

static void drop(struct pool_drl *d, struct replica *r, const char *what, int err)
{
	fprintf(stderr, "spacefs: volume %s: dirty-region log %s: %s: %s; not used any more\n",
		d->volume, r->path, what, strerror(err));
	close(r->fd);
	r->fd = -1;
}

static int live_replicas(const struct pool_drl *d)
{
	int n = 0;

	for (uint32_t i = 0; i < d->nr; i++)
		n += d->r[i].fd >= 0;
	return n;
}

/* Write bytes at off on every live replica (O_DSYNC: durable on return). */
static int write_all(struct pool_drl *d, const void *buf, size_t len, off_t off)
{
	for (uint32_t i = 0; i < d->nr; i++) {
		struct replica *r = &d->r[i];
		if (r->fd < 0)
			continue;
		ssize_t w = pwrite(r->fd, buf, len, off);
		if (w != (ssize_t)len)
			drop(d, r, "write", w < 0 ? errno : ENOSPC);
	}
	return live_replicas(d) ? 0 : -EIO;
}

static int persist(struct pool_drl *d, const struct slot *e)
{
	uint8_t buf[DRL_SLOT];

	encode_slot(e, buf);
	return write_all(d, buf, DRL_SLOT, (off_t)(DRL_HDR + (size_t)(e - d->s) * DRL_SLOT));
}

static int persist_header(struct pool_drl *d)
{
	uint8_t *h = calloc(1, DRL_HDR);
	int rc;

	if (!h)
		return -ENOMEM;
	encode_header(d->overflow, h);
	rc = write_all(d, h, DRL_HDR, 0);
	free(h);
	return rc;
}

/* Merge one replica's file into the table. */
static void load_one(struct pool_drl *d, const char *path)
{
	size_t size = DRL_HDR + (size_t)POOL_DRL_SLOTS * DRL_SLOT;
	uint8_t *buf = malloc(size);
	char why[128];
	uint32_t flags;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || !buf) {
		if (fd >= 0 || errno != ENOENT)
			fprintf(stderr, "spacefs: volume %s: dirty-region log %s: %s\n", d->volume,
				path, strerror(fd < 0 ? errno : ENOMEM));
		if (fd >= 0)
			close(fd);
		free(buf);
		return;
	}
	ssize_t got = pread(fd, buf, size, 0);
	close(fd);
	if (got < (ssize_t)DRL_HDR || decode_header(buf, &flags, why, sizeof(why)) < 0) {
		if (got < (ssize_t)DRL_HDR)
			snprintf(why, sizeof(why), "truncated (%zd bytes)", got);
		fprintf(stderr,
			"spacefs: volume %s: dirty-region log %s is unusable: %s; "
			"rewritten from the other replicas, and the volume is resynced in full\n",
			d->volume, path, why);
		d->overflow = 1; /* what it knew is lost: assume everything */
		free(buf);
		return;
	}
	d->overflow |= flags & DRL_H_OVERFLOW;
	size_t nslots = ((size_t)got - DRL_HDR) / DRL_SLOT;
	for (size_t i = 0; i < nslots; i++) {
		struct slot in;
		if (!decode_slot(buf + DRL_HDR + i * DRL_SLOT, &in))
			continue;
		struct slot *e = find(d, in.id, in.region);
		if (!e)
			e = insert(d, in.id, in.region);
		if (!e) {
			d->overflow = 1;
			break;
		}
		e->dirty |= in.dirty;
		e->missed |= in.missed;
	}
	free(buf);
}

/* Write the merged table to a fresh file and rename it over the old. */
static int rewrite_one(struct pool_drl *d, struct replica *r)
{
	char tmp[sizeof(r->path) + 8];
	size_t size = DRL_HDR + (size_t)POOL_DRL_SLOTS * DRL_SLOT;
	uint8_t *buf = calloc(1, size);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s.tmp", r->path);
	encode_header(d->overflow, buf);
	for (uint32_t i = 0; i < POOL_DRL_SLOTS; i++)
		encode_slot(&d->s[i], buf + DRL_HDR + (size_t)i * DRL_SLOT);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || pwrite(fd, buf, size, 0) != (ssize_t)size || fsync(fd) < 0 ||
	    rename(tmp, r->path) < 0)
		rc = -errno ? -errno : -EIO;
	/* the marks of this mount go to the new file: until the directory is
	 * synced, a power cut can bring the old name back without them */
	if (rc == 0)
		rc = pool_fsync_parent(r->path);
	if (fd >= 0)
		close(fd);
	free(buf);
	if (rc == 0) {
		r->fd = open(r->path, O_RDWR | O_DSYNC | O_CLOEXEC);
		rc = r->fd < 0 ? -errno : 0;
	}
	if (rc < 0) {
		fprintf(stderr, "spacefs: volume %s: dirty-region log %s: cannot write: %s\n",
			d->volume, r->path, strerror(-rc));
		r->fd = -1;
	}
	return rc;
}

int pool_drl_open(const char *const *dirs, uint32_t ndirs, const char *volume,
		  struct pool_drl **out, char *err, size_t errlen)
{
	struct pool_drl *d = calloc(1, sizeof(*d));

	if (!d || !(d->s = calloc(POOL_DRL_SLOTS, sizeof(*d->s))) ||
	    !(d->volume = strdup(volume))) {
		if (d)
			free(d->s);
		free(d);
		snprintf(err, errlen, "volume %s: dirty-region log: out of memory", volume);
		return -ENOMEM;
	}
	pthread_mutex_init(&d->mu, NULL);
	table_init(d);
	for (uint32_t i = 0; i < ndirs && d->nr < POOL_DRL_MAX_DIRS; i++) {
		struct replica *r = &d->r[d->nr++];
		snprintf(r->path, sizeof(r->path), "%s/drl", dirs[i]);
		r->fd = -1;
		load_one(d, r->path);
	}
	for (uint32_t i = 0; i < d->nr; i++)
		rewrite_one(d, &d->r[i]);
	if (live_replicas(d) == 0) {
		snprintf(err, errlen, "volume %s: no dirty-region log replica can be written",
			 volume);
		pool_drl_close(d, 0);
		return -EIO;
	}
	*out = d;
	return 0;
}

void pool_drl_close(struct pool_drl *d, int clean)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->mu);
	for (uint32_t i = 0; clean && i < POOL_DRL_SLOTS; i++) {
		struct slot *e = &d->s[i];
		if (!e->used || !e->dirty)
			continue;
		e->dirty = 0;
		if (!e->missed)
			remove_slot(d, e);
		persist(d, e);
	}
	pthread_mutex_unlock(&d->mu);
	for (uint32_t i = 0; i < d->nr; i++)
		if (d->r[i].fd >= 0)
			close(d->r[i].fd);
	pthread_mutex_destroy(&d->mu);
	free(d->s);
	free(d->volume);
	free(d);
}

/* ---- marking --------------------------------------------------------------- */

static int overflow(struct pool_drl *d)
{
	if (!d->overflow) {
		d->overflow = 1;
		fprintf(stderr,
			"spacefs: volume %s: dirty-region log full (%u regions): the next unclean "
			"mount or returning disk resyncs everything\n",
			d->volume, POOL_DRL_SLOTS);
		return persist_header(d);
	}
	return 0;
}

static int begin_region(struct pool_drl *d, uint64_t id, uint64_t region, uint64_t absent)
{
	struct slot *e = find(d, id, region);
	int rc = 0;

	if (!e)
		e = insert(d, id, region);
	if (!e)
		return overflow(d); /* untracked: the overflow flag covers it */
	if (!e->dirty || (e->missed & absent) != absent) {
		e->dirty = 1;
		e->missed |= absent;
		rc = persist(d, e);
	}
	if (rc == 0) { /* a begin that failed has no end to come */
		e->inflight++;
		e->seq++;
	}
	return rc;
}

static void end_regions(struct pool_drl *d, uint64_t id, uint64_t r0, uint64_t r1)
{
	for (uint64_t r = r0; r <= r1; r++) {
		struct slot *e = find(d, id, r);
		if (e && e->inflight > 0)
			e->inflight--;
	}
}

int pool_drl_begin(struct pool_drl *d, uint64_t id, uint64_t off, uint64_t len, uint64_t absent)
{
	uint64_t r0 = off / POOL_DRL_REGION, r1 = (off + (len ? len : 1) - 1) / POOL_DRL_REGION;
	uint64_t r = r0;
	int rc = 0;

	pthread_mutex_lock(&d->mu);
	for (; r <= r1 && rc == 0; r++)
		rc = begin_region(d, id, r, absent);
	if (rc < 0 && r - 1 > r0) /* the regions begun before the one that failed */
		end_regions(d, id, r0, r - 2);
	pthread_mutex_unlock(&d->mu);
	return rc;
}

void pool_drl_end(struct pool_drl *d, uint64_t id, uint64_t off, uint64_t len)
{
	uint64_t r0 = off / POOL_DRL_REGION, r1 = (off + (len ? len : 1) - 1) / POOL_DRL_REGION;

	pthread_mutex_lock(&d->mu);
	end_regions(d, id, r0, r1);
	pthread_mutex_unlock(&d->mu);
}

/* ---- clearing --------------------------------------------------------------- */

/* Dirty regions idle since the last pass: seq unchanged, nothing in
 * flight.  Marks them (seen = seq + 2^63 never collides with a seq). */
static size_t idle_regions(struct pool_drl *d, uint64_t *seqs)
{
	size_t n = 0;

	for (uint32_t i = 0; i < POOL_DRL_SLOTS; i++) {
		struct slot *e = &d->s[i];
		seqs[i] = UINT64_MAX;
		if (!e->used || !e->dirty || e->inflight)
			continue;
		if (e->seen == e->seq) {
			seqs[i] = e->seq;
			n++;
		}
		e->seen = e->seq;
	}
	return n;
}

int pool_drl_clean(struct pool_drl *d, int (*sync)(void *arg), void *arg)
{
	uint64_t *seqs = malloc(POOL_DRL_SLOTS * sizeof(*seqs));
	int rc = 0;

	if (!seqs)
		return -ENOMEM;
	pthread_mutex_lock(&d->mu);
	size_t n = idle_regions(d, seqs);
	pthread_mutex_unlock(&d->mu);
	if (n > 0)
		rc = sync(arg); /* the regions' chunk data reaches the disks */
	pthread_mutex_lock(&d->mu);
	for (uint32_t i = 0; rc == 0 && n > 0 && i < POOL_DRL_SLOTS; i++) {
		struct slot *e = &d->s[i];
		if (seqs[i] == UINT64_MAX || !e->used || e->seq != seqs[i] || e->inflight)
			continue;
		e->dirty = 0;
		if (!e->missed)
			remove_slot(d, e);
		persist(d, e);
	}
	pthread_mutex_unlock(&d->mu);
	free(seqs);
	return rc;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct pool_drl_entry *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->region < y->region ? -1 : x->region > y->region;
}

int pool_drl_list(struct pool_drl *d, struct pool_drl_entry **out, size_t *n)
{
	struct pool_drl_entry *v = malloc(POOL_DRL_SLOTS * sizeof(*v));
	size_t k = 0;

	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&d->mu);
	for (uint32_t i = 0; i < POOL_DRL_SLOTS; i++) {
		const struct slot *e = &d->s[i];
		if (e->used)
			v[k++] = (struct pool_drl_entry){.id = e->id,
							 .region = e->region,
							 .missed = e->missed,
							 .dirty = e->dirty};
	}
	pthread_mutex_unlock(&d->mu);
	qsort(v, k, sizeof(*v), entry_cmp);
	*out = v;
	*n = k;
	return 0;
}

/* Clear the dirty mark (`dirty`, unless a write is in flight) and the
 * missed bits `bits` of a region, computing the new value from the entry
 * as it is under the same hold of the mutex as the store: a write that
 * marks the region meanwhile (begin_region) must not have its dirty mark
 * or its missed bits written back over by an older snapshot, or a crash
 * or a returning disk would skip the region. */
static int clear(struct pool_drl *d, uint64_t id, uint64_t region, int dirty, uint64_t bits)
{
	int rc = 0;

	pthread_mutex_lock(&d->mu);
	struct slot *e = find(d, id, region);
	uint8_t nd = e ? e->dirty : 0;
	if (e && dirty && !e->inflight)
		nd = 0; /* with a write in flight it stays dirty */
	uint64_t nm = e ? e->missed & ~bits : 0;
	if (e && (e->dirty != nd || e->missed != nm)) {
		e->dirty = nd;
		e->missed = nm;
		if (!e->dirty && !e->missed && !e->inflight)
			remove_slot(d, e);
		rc = persist(d, e);
	}
	pthread_mutex_unlock(&d->mu);
	return rc;
}

int pool_drl_clear_dirty(struct pool_drl *d, uint64_t id, uint64_t region)
{
	return clear(d, id, region, 1, 0);
}

int pool_drl_clear_missed(struct pool_drl *d, uint64_t id, uint64_t region, uint32_t disk)
{
	return clear(d, id, region, 0, 1ull << disk);
}

int pool_drl_stale_all(struct pool_drl *d, const char *why)
{
	pthread_mutex_lock(&d->mu);
	int was = (int)d->overflow, rc = 0;
	d->overflow = 1;
	if (!was) {
		fprintf(
		    stderr,
		    "spacefs: volume %s: %s: the dirty-region log counts every region as missed "
		    "(a returning disk is resynced whole)\n",
		    d->volume, why);
		rc = persist_header(d);
	}
	pthread_mutex_unlock(&d->mu);
	return rc;
}

int pool_drl_overflowed(struct pool_drl *d)
{
	pthread_mutex_lock(&d->mu);
	int o = (int)d->overflow;
	pthread_mutex_unlock(&d->mu);
	return o;
}

void pool_drl_clear_overflow(struct pool_drl *d)
{
	pthread_mutex_lock(&d->mu);
	if (d->overflow) {
		d->overflow = 0;
		persist_header(d);
	}
	pthread_mutex_unlock(&d->mu);
}
