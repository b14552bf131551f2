/*
 * ckpt.c -- checkpoints: one instant of a set of files, readable while the
 * files keep changing, merged back live (issue 13; docs/ARCHITECTURE.md).
 *
 * Redirect-on-write above the store.  A checkpointed file is a chain of
 * layers: layer 0 is the file's own chunk files (its inode), each later
 * layer a hidden pool file (an inode with no name, pool_meta_create_hidden)
 * holding the granules written after one checkpoint, at the same offsets.
 * Checkpoint k of a file sees layers below the one it created; the live
 * file sees them all, the newest first.  Differencing data is thus plain
 * pool file data: the volume's layout, redundancy, checksums, repair and
 * scrub apply to it unchanged, and pool/store.c knows nothing of this.
 *
 * Granule 64 KiB (POOL_CKPT_GRANULE), redirected by 4 KiB blocks.  The
 * map says per granule whether it is in a layer and, for a granule only
 * partly there (PART), which of its sixteen 4 KiB blocks are: a first
 * write writes only the blocks it touches into the layer (a block it
 * covers only in part is read from below first) and marks them; reads
 * take marked blocks from the layer and the rest from below.  Copying the
 * whole granule up instead cost a 64 KiB read and a 64 KiB write per 4 KiB
 * first write (measured: 0.34x of a plain random write; docs/BENCHMARKS.md).
 * A write covering a whole granule, or one into a ZERO granule, still
 * makes it DATA at once, and a granule whose blocks are all marked is
 * DATA as well.  64 KiB stays the unit of the map (2 bits per granule
 * plus a 16-bit mask only where first writes were partial: a 1 TiB file's
 * map is 4 MiB, its masks at most 32 MiB more) and of the log's records.
 *
 * Slots.  A first write by blocks into a hole of the layer file costs
 * the disks' file system an allocation (ext4 punts such O_DIRECT writes
 * off io_uring's fast path, takes the inode lock exclusive and converts
 * the extent at completion): 0.6x of a plain write, where an overwrite
 * of blocks written before runs about 1.7x faster (docs/BENCHMARKS.md).
 * So each layer taking first writes gets two fill files (hidden files,
 * made as needed) that a thread per volume, the zeroer, writes with
 * zeros ahead of use; a first write takes 4 KiB slots there and
 * overwrites them.  Slots come in generations of FILL_GEN (16 MiB):
 * generation z lives in fill file z & 1, so slot s is at a pure function
 * of s (slot_off) and a BLKS record names just the first slot of its
 * blocks.  First writes take slots only from a generation zeroed whole,
 * the one in use; the zeroer zeroes at most one generation beyond it,
 * which is in the other file.  That is the point of two files: zeros
 * written into a file allocate, and ext4 holds the file's inode lock
 * exclusive across an allocating write, so a zeroer writing the file the
 * first writes overwrite took the whole gain back (0.45-0.50x, measured);
 * beside an allocating writer in another inode, overwrites kept it.
 * Within a generation, slots are taken in lanes (FILL_LANE below) with an
 * atomic cursor each, consecutive ones for the blocks of one write.  The
 * map keeps a slot per marked block of a PART granule (a granule with
 * slots stays PART when all its blocks are in).  Reads, in-place
 * rewrites and folds translate (layer_io); SEEK_DATA/HOLE go by the map
 * only.  When no zeroed slot is ready the write goes to its offsets as
 * before: nobody waits for the zeroer.  Whole-granule writes (copy-ups)
 * stay at their offsets and clear the granule's slots.  Bounds: a layer's
 * fill files hold at most FILL_CAP (1 GiB, both together; then first
 * writes go to their offsets), of which at most two generations (32 MiB)
 * are zeroed and not yet used; the slot tables (pool/ckpt.h) are 64
 * bytes per granule with any slot plus an 8 KiB table per 64 MiB of file
 * holding one: at the cap, at worst (every slot in its own granule),
 * 18 MiB per layer, plus up to 128 MiB of tables for a 1 TiB file
 * written all over (the masks take 32 MiB there).  A fill file's
 * recorded size is set (and made durable) before its generation is
 * handed out, so scrub and repair walk every slot, and replay refuses a
 * slot past it.  When the zeroer cannot make or zero a fill file it
 * gives that layer up (one log line; its writes go to their offsets)
 * rather than retrying.  A log is written as format 3 only while a layer
 * has a fill file; a format 2 log has no slots: every block at its offset.
 *
 * Durability.  A granule's map entry (pool/ckpt.c log record: MAP for
 * whole granules, BLKS for blocks) is appended after its data is written
 * and before the write is answered, so an acknowledged write survives
 * kill -9, and a write cut before its record leaves the lower layers (the
 * checkpoint's view) untouched: its blocks in the layer stay unmarked,
 * are never read, and are rewritten whole (edges from below) by the next
 * write that marks them.  BLKS records of concurrent first writes share
 * appends (group commit, log_blks): each writer still waits for its own.
 *
 * The instant.  Create takes every named file's io_lock exclusive (new
 * writes wait, in-flight ones drain), records sizes and times, appends the
 * checkpoint's records and pushes a layer on each file, then releases:
 * every write is entirely before or after.
 *
 * Merge (= delete) folds the checkpoint's layer into the one below (the
 * file itself for the oldest), a batch of granules at a time under the
 * chain's exclusive lock, while the file serves; granules the live file
 * writes again meanwhile are folded again; then the layer is dropped.
 * Folding is idempotent, so after a crash the merge simply restarts.
 * One merge worker per volume, in request order.
 *
 * First writes.  A first write (copy-up or blocks) runs under the chain's
 * shared lock with the granule claimed (busy[]): those of different
 * granules go in parallel, a second one into the same granule waits, and
 * the granule's map entry changes only after its data and record are
 * down.  Writes into blocks already marked need no claim: they are
 * written in place, like writes into DATA granules.
 *
 * The log grows by a record per copy-up and per fold into an older layer;
 * past a bound the merge worker rewrites it from memory (compact_live),
 * holding off creates and every chain meanwhile.
 *
 * Several nodes.  Checkpoints exist on the volume's owner; another node
 * sends control requests (W_CTL) and the namespace's operations (W_CKPT)
 * to it, answered by the same code as the owner's own.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/fs.h"
#include "fs/jobs.h"
#include "fs/node.h"
#include "fs/text.h"
#include "fs/wire.h"
#include "pool/ckpt.h"

#define G	       ((uint64_t)POOL_CKPT_GRANULE)
#define CK_BIT	       (1ull << 47)
#define CK_MAX	       32 /* checkpoints per volume */
#define CK_NAME_MAX    63
#define CK_HASH	       256
#define MERGE_BATCH    16 /* granules folded per lock hold */
#define CU_MAX	       64 /* copy-ups in flight per file */
#define ROOT_VINO      POOL_META_ROOT
#define CK_FLAG_BACKUP 1u

enum {
	R_NEXT = 1,
	R_CKPT,
	R_NODE,
	R_COMMIT,
	R_MAP,
	R_MERGE,
	R_DROP,
	R_GONE,
	R_FORMAT,
	R_BLKS,
	R_FILL
};
/* Log format: 1 had no FORMAT or BLKS records (whole granules only); 2
 * no FILL records and no slots in BLKS ones (every block at its offset);
 * 3 has them.  A log is written as 3 only while some layer has a fill
 * file (so builds that know only 2 still open volumes without slots),
 * else as 2; an older log is read as it is and rewritten at mount. */
#define CK_FORMAT    3u
#define CK_FORMAT_NO 2u /* what a log without fill files is written as */
/* Fill files (see "Slots" above): a generation is FILL_GEN bytes of
 * slots, zeroed FILL_STEP at a time; a layer holds at most FILL_CAP of
 * fill (both files), past which its first writes go to their offsets. */
#define FILL_GEN  (16u << 20)
#define FILL_STEP (1u << 20)
#define FILL_CAP  (1ull << 30)
/* A step is cut in lanes of FILL_LANE (the store's lock unit of a mirror
 * or simple volume at the 64 KiB interleave): first writes take lanes in
 * turn, each its slots in the lowest step its lane has room in, so
 * concurrent first writes land in different lock units instead of
 * queueing on one stripe lock (handed out in order, the 16 slots of one
 * 64 KiB unit went to 16 writes in flight at once), and the lanes reach
 * a generation's end together.  A lane's unit holds 16 slots, the blocks
 * of one granule, so the slots of one write are always consecutive. */
#define FILL_LANE  (64u << 10)
#define LANE_SLOTS (FILL_LANE / POOL_CKPT_BLOCK)
#define B	  ((uint64_t)POOL_CKPT_BLOCK)
enum { CK_CREATING, CK_READY, CK_MERGING };

struct rec_ckpt {
	uint32_t id, flags;
	int64_t created_ns;
	char name[CK_NAME_MAX + 1];
};
struct rec_node {
	uint32_t ckpt, parent;
	uint64_t base, delta; /* base: volume inode (files); delta: its new layer, 0 if none */
	uint32_t mode, uid, gid, nlink;
	uint64_t size;
	int64_t atime_ns, mtime_ns, ctime_ns;
	char name[POOL_META_NAME_MAX + 1];
};
struct rec_map {
	uint64_t delta, first, count;
	uint32_t state, pad;
};
struct rec_blks { /* blocks (mask bit b: block b) of granule `granule` of a layer */
	uint64_t delta, granule;
	uint32_t mask;
	uint32_t slot1; /* 0: at their offsets; else slot + 1 of the first (format 3) */
};
struct rec_fill { /* layer `delta`'s fill file `which` (0 or 1), generations of gen_kib */
	uint64_t delta, fill;
	uint32_t which, gen_kib;
};
struct rec_format {
	uint32_t version, pad;
};
struct rec_id {
	uint32_t ckpt, pad;
	uint64_t base;
	double rate;
};

struct layer {
	uint32_t owner; /* checkpoint that created it; 0: the file itself */
	uint64_t size;	/* the file's size at that checkpoint's instant */
	struct pool_file_map map;
	struct pool_ckpt_map g;
	struct pool_ckpt_map redo; /* granules changed while being merged */
	bool merging;
	/* slots: the two fill files (id 0: none yet), generation gs slots
	 * (0: no FILL record yet), the generation first writes take slots
	 * in, slots zeroed up to `ready` (whole generations) and taken up to
	 * `next` (the end of the highest step in use) */
	struct pool_file_map fill[2];
	uint32_t gs;
	_Atomic uint32_t use, next, ready;
	_Atomic uint32_t *lanes;  /* per lane: its next slot, counted in the lane */
	_Atomic uint32_t rr;	  /* the lane the next first write starts in */
	_Atomic bool fill_wanted; /* the zeroer has work: a first write found none ready */
	_Atomic bool fill_off;	  /* no more slots: cap reached, or a fill file failed */
	uint32_t zeroed;	  /* the zeroer: slots of generation ready / gs zeroed */
	uint64_t fill_size[2];	  /* the fill files' recorded sizes */
	uint64_t fill_used[2];	  /* replay: bytes of each the BLKS records reach */
};

/* Slot s of a layer with generations of gs slots: generation s / gs, in
 * fill file (s / gs) & 1, where generations take turns, so that the
 * zeroer writes the next generation into the file first writes are not
 * overwriting (ext4 holds a file's inode lock exclusive across an
 * allocating write; docs/BENCHMARKS.md). */
static inline unsigned slot_file(uint32_t gs, uint32_t s)
{
	return (s / gs) & 1;
}

static inline uint64_t slot_off(uint32_t gs, uint32_t s)
{
	return ((uint64_t)(s / gs >> 1) * gs + s % gs) * POOL_CKPT_BLOCK;
}

struct chain {
	uint64_t ino;		/* volume inode of the file */
	pthread_rwlock_t rw;	/* shared: I/O; exclusive: copy-up, layer changes, folds */
	pthread_mutex_t mu;	/* under the shared lock: redo maps, map sets, busy[] */
	pthread_cond_t cu_done; /* a copy-up ended */
	uint64_t busy[CU_MAX];	/* granules being copied up */
	uint32_t nbusy;
	uint32_t n; /* layers, the file itself included */
	struct layer l[CK_MAX + 1];
	bool live_gone;
	struct chain *next;
};

struct node {
	struct rec_node r;
};

struct ckpt {
	uint32_t id, flags;
	int state;
	int64_t created_ns;
	char name[CK_NAME_MAX + 1];
	struct node *node;
	uint32_t nnode, cap;
	double rate;
	_Atomic uint64_t done, total;
	_Atomic int64_t start_ns; /* this merge's start here (status' MB/s) */
	/* a backup's copy, as its spacectl reports it (ckpt-copy) */
	_Atomic uint64_t copy_done, copy_total;
	_Atomic int64_t copy_start_ns, copy_seen_ns;
};

/* Group commit of BLKS records (log_blks): writers queue theirs; one of
 * them, the leader, appends everything queued in one write per replica
 * while the next ones queue behind it. */
#define GC_MAX 64
struct gc_ent {
	struct rec_blks r;
	int rc;
	bool done;
};
struct gcommit {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct gc_ent *q[GC_MAX];
	uint32_t n;
	bool busy; /* a leader is writing */
};

struct fs_ckpt {
	struct fs_volume *v;
	struct pool_ckpt_log *log;
	pthread_mutex_t lock; /* ck[], chains' hash, the log */
	struct ckpt *ck[CK_MAX];
	struct chain *hash[CK_HASH];
	/* lookups on the data path take this shared instead of lock; chains
	 * are added under both and freed only at detach */
	pthread_rwlock_t hlock;
	uint32_t next_id;
	_Atomic uint32_t nchains; /* chains with layers: the data path's fast test */
	/* creates vs live compaction: a create's records and its ck[] entry
	 * must both be in a compacted log or neither */
	pthread_mutex_t cmu;
	uint64_t compact_seq;  /* log sequence after the last compaction */
	uint64_t compact_recs; /* records that compaction wrote */
	uint64_t bound;	       /* records past compact_seq that call for another */
	bool compact_due;
	pthread_t worker;
	bool worker_on, stopping;
	pthread_cond_t wake;
	struct gcommit gc;
	/* the zeroer: fills layers' fill files ahead of their first writes */
	pthread_t zeroer;
	bool zeroer_on, zwork, zstop;
	/* FILL_GEN, FILL_STEP, FILL_CAP, or less (tests); gen 0: no slots */
	uint64_t gen, step, cap;
	uint32_t nlanes; /* step / FILL_LANE */
	uint32_t format; /* the log's format as written: CK_FORMAT_NO until a fill file */
	pthread_mutex_t zmu;
	pthread_cond_t zcv;
};

/* ---- small helpers ---- */

static struct chain *chain_find(struct fs_ckpt *c, uint64_t ino)
{
	for (struct chain *ch = c->hash[ino % CK_HASH]; ch; ch = ch->next)
		if (ch->ino == ino)
			return ch;
	return NULL;
}

static struct chain *chain_get(struct fs_ckpt *c, uint64_t ino)
{
	struct chain *ch = chain_find(c, ino);

	if (ch)
		return ch;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->ino = ino;
	ch->n = 1;
	pthread_rwlock_init(&ch->rw, NULL);
	pthread_mutex_init(&ch->mu, NULL);
	pthread_cond_init(&ch->cu_done, NULL);
	ch->next = c->hash[ino % CK_HASH];
	pthread_rwlock_wrlock(&c->hlock);
	c->hash[ino % CK_HASH] = ch;
	pthread_rwlock_unlock(&c->hlock);
	return ch;
}

static int layer_of(const struct chain *ch, uint32_t owner)
{
	for (uint32_t i = 1; i < ch->n; i++)
		if (ch->l[i].owner == owner)
			return (int)i;
	return -1;
}

static struct ckpt *ck_by_id(struct fs_ckpt *c, uint32_t id)
{
	for (int i = 0; i < CK_MAX; i++)
		if (c->ck[i] && c->ck[i]->id == id)
			return c->ck[i];
	return NULL;
}

static struct ckpt *ck_by_name(struct fs_ckpt *c, const char *name)
{
	for (int i = 0; i < CK_MAX; i++)
		if (c->ck[i] && strcmp(c->ck[i]->name, name) == 0)
			return c->ck[i];
	return NULL;
}

/* The checkpoint with the lowest id above `after` (c->lock held), or
 * NULL: ck[] is in no order (a create takes the first free entry), ids
 * grow with creation and are never reused. */
static struct ckpt *ck_next(struct fs_ckpt *c, uint32_t after)
{
	struct ckpt *k = NULL;

	for (int i = 0; i < CK_MAX; i++)
		if (c->ck[i] && c->ck[i]->id > after && (!k || c->ck[i]->id < k->id))
			k = c->ck[i];
	return k;
}

static void map_from_inode(const struct pool_inode *a, struct pool_file_map *m)
{
	m->id = a->ino;
	m->npos = a->npos;
	memcpy(m->disk, a->disk, sizeof(m->disk));
}

/* After an append (c->lock held): say a failure, or call for compaction
 * once the log has grown past its bound. */
static int log_appended(struct fs_ckpt *c, int rc)
{
	if (rc < 0)
		fs_log("volume %s: checkpoint log append failed: %s", c->v->name, strerror(-rc));
	else if (!c->compact_due &&
		 pool_ckpt_log_seq(c->log) - c->compact_seq > c->bound + 2 * c->compact_recs) {
		c->compact_due = true; /* the merge worker rewrites it */
		pthread_cond_broadcast(&c->wake);
	}
	return rc;
}

static int log_rec(struct fs_ckpt *c, uint32_t type, const void *p, uint32_t len)
{
	return log_appended(c, pool_ckpt_log_append(c->log, type, p, len));
}

static int log_map(struct fs_ckpt *c, uint64_t delta, uint64_t first, uint64_t n, int state)
{
	struct rec_map r = {.delta = delta, .first = first, .count = n, .state = (uint32_t)state};

	pthread_mutex_lock(&c->lock);
	int rc = log_rec(c, R_MAP, &r, sizeof(r));
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Lead one group commit (gc->mu held, and held again on return): take
 * every queued record, append them together under the log's lock, answer
 * their writers.  The leader's own record is among them: it is queued
 * and not done, and only a leader dequeues. */
static void gc_lead(struct fs_ckpt *c)
{
	struct gcommit *gc = &c->gc;
	struct gc_ent *batch[GC_MAX];
	struct rec_blks recs[GC_MAX];
	uint32_t n = gc->n;

	gc->busy = true;
	memcpy(batch, gc->q, n * sizeof(batch[0]));
	gc->n = 0;
	pthread_cond_broadcast(&gc->cv); /* room in the queue again */
	pthread_mutex_unlock(&gc->mu);
	for (uint32_t i = 0; i < n; i++)
		recs[i] = batch[i]->r;
	pthread_mutex_lock(&c->lock);
	int rc = pool_fault_from(&c->v->fault, POOL_FAULT_CKLOG)
		     ? -EIO
		     : pool_ckpt_log_append_n(c->log, R_BLKS, recs, sizeof(recs[0]), n);
	rc = log_appended(c, rc);
	pthread_mutex_unlock(&c->lock);
	atomic_fetch_add(&c->v->ckpt_recs, n);
	atomic_fetch_add(&c->v->ckpt_appends, 1);
	pthread_mutex_lock(&gc->mu);
	for (uint32_t i = 0; i < n; i++) {
		batch[i]->rc = rc;
		batch[i]->done = true;
	}
	gc->busy = false;
	pthread_cond_broadcast(&gc->cv);
}

/* Append a BLKS record and return once it is in the log (or failed).
 * Concurrent first writes share appends (group commit): while one writer
 * writes a batch, the others queue, and the first of them to wake after
 * it writes all that queued meanwhile.  A writer alone appends at once, as
 * before.  Locks: the caller holds its chain (shared for a first write,
 * exclusive for a fold), never c->lock; a leader takes c->lock as every
 * writer did before, and whoever holds c->lock never waits on gc->mu's
 * queue, so no wait cycle is added. */
static int log_blks(struct fs_ckpt *c, uint64_t delta, uint64_t g, unsigned mask, uint32_t slot)
{
	struct gcommit *gc = &c->gc;
	struct gc_ent me = {.r = {.delta = delta,
				  .granule = g,
				  .mask = mask,
				  .slot1 = slot == POOL_CKPT_NOSLOT ? 0 : slot + 1}};
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_mutex_lock(&gc->mu);
	while (gc->n == GC_MAX)
		pthread_cond_wait(&gc->cv, &gc->mu);
	gc->q[gc->n++] = &me;
	while (!me.done) {
		if (!gc->busy)
			gc_lead(c);
		else
			pthread_cond_wait(&gc->cv, &gc->mu);
	}
	pthread_mutex_unlock(&gc->mu);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	atomic_fetch_add(&c->v->ckpt_wait_ns, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
							 (t1.tv_nsec - t0.tv_nsec)));
	return me.rc;
}

/* ---- slots ---- */

static void zeroer_wake(struct fs_ckpt *c)
{
	pthread_mutex_lock(&c->zmu);
	c->zwork = true;
	pthread_cond_signal(&c->zcv);
	pthread_mutex_unlock(&c->zmu);
}

/* Take n consecutive zeroed slots of layer L for a first write, or
 * NOSLOT if not that many are ready (the write then goes to its own
 * offsets: nobody waits for the zeroer).  Slots come from generation
 * L->use only (a lane still in an older one jumps to it), or from the
 * next one once that is zeroed and the lane has no room left in `use`,
 * which then becomes the one in use.  Chain held. */
static uint32_t slot_take(struct fs_ckpt *c, struct layer *L, unsigned n)
{
	uint32_t sps = (uint32_t)(c->step / B), p, q, step, spg, l;

	if (atomic_load(&L->fill_off) || n > LANE_SLOTS)
		return POOL_CKPT_NOSLOT;
	_Atomic uint32_t *lanes = __atomic_load_n(&L->lanes, __ATOMIC_ACQUIRE);
	if (!lanes) { /* no fill file yet (gs is set before lanes are) */
		if (c->gen && !atomic_exchange(&L->fill_wanted, true))
			zeroer_wake(c);
		return POOL_CKPT_NOSLOT;
	}
	spg = L->gs / sps;
	/* lanes in turn: concurrent writes in different lanes, and every lane
	 * about as far as the others when the generation runs out */
	l = atomic_fetch_add(&L->rr, 1) % c->nlanes;
	uint32_t use = atomic_load(&L->use), ready = atomic_load(&L->ready);
	p = atomic_load(&lanes[l]);
	do {
		/* n slots in one unit of the lane: else from the next unit */
		q = p % LANE_SLOTS + n > LANE_SLOTS ? (p / LANE_SLOTS + 1) * LANE_SLOTS : p;
		step = q / LANE_SLOTS;
		if (step / spg < use) { /* behind: the generation in use only */
			step = use * spg;
			q = step * LANE_SLOTS;
		}
		if ((uint64_t)(step + 1) * sps > ready) {
			if ((uint64_t)(step / spg + 1) * L->gs * B > c->cap) {
				/* the zeroer may not go there: no more slots */
				if (!atomic_exchange(&L->fill_off, true))
					fs_log("volume %s: checkpoint layer %" PRIu64
					       ": fill files at their cap (%" PRIu64
					       " KiB); its first writes go to their "
					       "offsets from now on",
					       c->v->name, L->map.id, c->cap >> 10);
			} else if (!atomic_exchange(&L->fill_wanted, true)) {
				zeroer_wake(c);
			}
			return POOL_CKPT_NOSLOT;
		}
	} while (!atomic_compare_exchange_weak(&lanes[l], &p, q + n));
	uint32_t end = (step + 1) * sps, hi = atomic_load(&L->next), gen = step / spg;
	while (hi < end && !atomic_compare_exchange_weak(&L->next, &hi, end))
		;
	bool moved = false;
	while (use < gen && !(moved = atomic_compare_exchange_weak(&L->use, &use, gen)))
		;
	if (moved && !atomic_exchange(&L->fill_wanted, true))
		zeroer_wake(c); /* a new generation in use: the one after it is next */
	return step * sps + l * LANE_SLOTS + q % LANE_SLOTS;
}

/* Lane cursors for layer L (generations of L->gs slots), all starting
 * at the generation after the last slot taken (L->next); use, ready and
 * next there too: the zeroer zeroes from there.  NULL (no more slots for
 * this layer) when out of memory or the generation is not one this
 * mount's steps fit (SPACEFS_CKPT_FILL_KIB changed since), or past the
 * cap. */
static _Atomic uint32_t *lanes_new(const struct fs_ckpt *c, struct layer *L)
{
	uint32_t sps = (uint32_t)(c->step / B);

	if (!c->nlanes || !L->gs || L->gs % sps)
		return NULL;
	uint64_t gen0 = (atomic_load(&L->next) + (uint64_t)L->gs - 1) / L->gs;
	if ((gen0 + 1) * L->gs * B > c->cap || (gen0 + 2) * L->gs >= UINT32_MAX)
		return NULL; /* the fill is at its cap: first writes at offsets */
	_Atomic uint32_t *a = calloc(c->nlanes, sizeof(*a));
	if (!a)
		return NULL;
	for (uint32_t i = 0; i < c->nlanes; i++)
		atomic_store(&a[i], (uint32_t)(gen0 * (L->gs / sps) * LANE_SLOTS));
	atomic_store(&L->use, (uint32_t)gen0);
	atomic_store(&L->next, (uint32_t)(gen0 * L->gs));
	atomic_store(&L->ready, (uint32_t)(gen0 * L->gs));
	L->zeroed = 0;
	return a;
}

/* Read [pos, pos+len) of layer L's data into rbuf, or write it from wbuf
 * (the other NULL): blocks in slots in its fill files, the rest at their
 * offsets in the layer file, a run of consecutive places per store I/O.
 * Chain held. */
static ssize_t layer_io(struct fs_volume *v, const struct layer *L, uint64_t pos, size_t len,
			char *rbuf, const char *wbuf)
{
	uint64_t off = pos, end = pos + len;

	while (pos < end) {
		uint64_t g = pos / G, stop = (g + 1) * G < end ? (g + 1) * G : end;
		const struct pool_file_map *f = &L->map;
		uint64_t at = pos;
		if (pool_ckpt_map_slotted(&L->g, g)) {
			unsigned b = (unsigned)(pos % G / B), e = b + 1;
			uint32_t s = pool_ckpt_map_slot(&L->g, g, b);
			if (s != POOL_CKPT_NOSLOT && !L->gs)
				return -EIO; /* a slot without its fill file */
			while (e < POOL_CKPT_BLOCKS && g * G + e * B < stop) {
				uint32_t t = pool_ckpt_map_slot(&L->g, g, e);
				if (s == POOL_CKPT_NOSLOT ? t != s
							  : t != s + (e - b) || t % L->gs == 0)
					break; /* not the next slot, or in the next generation */
				e++;
			}
			if (g * G + e * B < stop)
				stop = g * G + e * B;
			if (s != POOL_CKPT_NOSLOT) {
				f = &L->fill[slot_file(L->gs, s)];
				if (f->id == 0)
					return -EIO; /* a slot without its fill file */
				at = slot_off(L->gs, s) + pos % B;
			}
		} else { /* a run of granules without slots: one I/O */
			while (stop < end && !pool_ckpt_map_slotted(&L->g, stop / G))
				stop = stop + G < end ? stop + G : end;
		}
		ssize_t n = wbuf ? pool_store_write(v->store, f, at, stop - pos, wbuf + (pos - off))
				 : pool_store_read(v->store, f, at, stop - pos, rbuf + (pos - off));
		if (n < 0)
			return n;
		pos = stop;
	}
	return (ssize_t)len;
}

/* ---- the layered data path ---- */

/* The topmost layer of [1, top] holding any of granule g, and its state
 * there (PART counts as DATA: SEEK_DATA treats such a granule as data);
 * layer 0 (DATA) if none. */
static uint32_t source(const struct chain *ch, uint32_t top, uint64_t g, int *state)
{
	for (uint32_t k = top; k >= 1; k--) {
		int s = pool_ckpt_map_get(&ch->l[k].g, g);
		if (s != POOL_CKPT_NONE) {
			*state = s == POOL_CKPT_PART ? POOL_CKPT_DATA : s;
			return k;
		}
	}
	*state = POOL_CKPT_DATA;
	return 0;
}

/* The layer the 4 KiB block at pos comes from in a view with layers
 * [0, top], its state (DATA or ZERO), and in *fine whether a PART granule
 * was met (the rest of the granule may come from elsewhere: step by
 * blocks). */
static uint32_t source_at(const struct chain *ch, uint32_t top, uint64_t pos, int *state,
			  bool *fine)
{
	uint64_t g = pos / G;
	unsigned bit = 1u << ((pos % G) / B);

	*fine = false;
	for (uint32_t k = top; k >= 1; k--) {
		int s = pool_ckpt_map_get(&ch->l[k].g, g);
		if (s == POOL_CKPT_NONE)
			continue;
		if (s == POOL_CKPT_PART) {
			*fine = true;
			if (!(pool_ckpt_map_blocks(&ch->l[k].g, g) & bit))
				continue;
			s = POOL_CKPT_DATA;
		}
		*state = s;
		return k;
	}
	*state = POOL_CKPT_DATA;
	return 0;
}

static ssize_t view_read(struct fs_volume *v, const struct chain *ch, uint32_t top, uint64_t off,
			 size_t len, char *buf)
{
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		int st, st2;
		bool fine;
		uint32_t src = source_at(ch, top, pos, &st, &fine);
		uint64_t unit = fine ? B : G, run = (pos / unit + 1) * unit;
		while (run < end && source_at(ch, top, run, &st2, &fine) == src && st2 == st) {
			unit = fine ? B : G;
			run = (run / unit + 1) * unit;
		}
		if (run > end)
			run = end;
		if (st == POOL_CKPT_ZERO) {
			memset(buf + (pos - off), 0, run - pos);
		} else {
			ssize_t n =
			    layer_io(v, &ch->l[src], pos, run - pos, buf + (pos - off), NULL);
			if (n < 0)
				return n;
		}
		pos = run;
	}
	return (ssize_t)len;
}

/* Record granules [g, g+n) of layer k as written while it is being
 * merged.  ch->mu held. */
static void note_redo_locked(struct chain *ch, uint32_t k, uint64_t g, uint64_t n)
{
	if (ch->l[k].merging)
		pool_ckpt_map_set(&ch->l[k].redo, g, n, POOL_CKPT_DATA);
}

static void note_redo(struct chain *ch, uint32_t k, uint64_t g, uint64_t n)
{
	if (!ch->l[k].merging)
		return;
	pthread_mutex_lock(&ch->mu);
	note_redo_locked(ch, k, g, n);
	pthread_mutex_unlock(&ch->mu);
}

static bool all_data(const struct chain *ch, uint32_t k, uint64_t off, uint64_t end)
{
	for (uint64_t g = off / G; g * G < end; g++)
		if (pool_ckpt_map_get(&ch->l[k].g, g) != POOL_CKPT_DATA)
			return false;
	return true;
}

/* Claim granule g for a copy-up: false if it became DATA meanwhile (the
 * caller then writes it in place).  Waits while another thread copies the
 * same granule up, so each granule is copied once and no write lands in
 * it before its copy-up. */
static bool cu_claim(struct chain *ch, const struct layer *L, uint64_t g)
{
	pthread_mutex_lock(&ch->mu);
	for (;;) {
		if (pool_ckpt_map_get(&L->g, g) == POOL_CKPT_DATA) {
			pthread_mutex_unlock(&ch->mu);
			return false;
		}
		bool busy = ch->nbusy == CU_MAX;
		for (uint32_t i = 0; !busy && i < ch->nbusy; i++)
			busy = ch->busy[i] == g;
		if (!busy)
			break;
		pthread_cond_wait(&ch->cu_done, &ch->mu);
	}
	ch->busy[ch->nbusy++] = g;
	pthread_mutex_unlock(&ch->mu);
	return true;
}

/* End granule g's claim: after a copy-up (mask POOL_CKPT_FULL) it is
 * DATA in layer k, after a write of blocks those blocks (mask) are added;
 * after a failure (!ok) nothing changes. */
static int cu_release(struct chain *ch, uint32_t k, uint64_t g, bool ok, unsigned mask,
		      uint32_t slot)
{
	int rc = 0;

	pthread_mutex_lock(&ch->mu);
	if (ok && mask == POOL_CKPT_FULL && slot == POOL_CKPT_NOSLOT)
		rc = pool_ckpt_map_set(&ch->l[k].g, g, 1, POOL_CKPT_DATA);
	else if (ok && mask)
		rc = pool_ckpt_map_mark_slots(&ch->l[k].g, g, mask, slot);
	if (ok)
		note_redo_locked(ch, k, g, 1);
	for (uint32_t i = 0; i < ch->nbusy; i++)
		if (ch->busy[i] == g) {
			ch->busy[i] = ch->busy[--ch->nbusy];
			break;
		}
	pthread_cond_broadcast(&ch->cu_done);
	pthread_mutex_unlock(&ch->mu);
	return rc;
}

/* Copy granule g up into layer k with [pos, stop) of it from data: the
 * rest from the layers below (not read when the write covers it all, or
 * when the granule is ZERO here), one store write, then its log record.
 * Granule claimed by the caller. */
static ssize_t copy_up(struct fs_volume *v, struct fs_ckpt *c, struct chain *ch, uint32_t k,
		       uint64_t g, uint64_t pos, uint64_t stop, const char *src, char *gbuf)
{
	struct layer *L = &ch->l[k];
	uint64_t gs = g * G;
	ssize_t n = 0;

	if (pool_ckpt_map_get(&L->g, g) == POOL_CKPT_ZERO)
		memset(gbuf, 0, G);
	else if (pos > gs || stop < gs + G)
		n = view_read(v, ch, k - 1, gs, G, gbuf);
	if (n < 0)
		return n;
	memcpy(gbuf + (pos - gs), src, stop - pos);
	n = pool_store_write(v->store, &L->map, gs, G, gbuf);
	if (n >= 0)
		n = log_map(c, L->map.id, g, 1, POOL_CKPT_DATA);
	return n;
}

/* Mask of the blocks [pos, stop) of granule g touches. */
static unsigned blocks_of(uint64_t g, uint64_t pos, uint64_t stop)
{
	unsigned a = (unsigned)((pos - g * G) / B), z = (unsigned)((stop - 1 - g * G) / B);
	return (unsigned)(((1u << (z + 1)) - 1) & ~((1u << a) - 1));
}

/* Write [pos, stop) of granule g (NONE or PART, claimed by the caller)
 * into layer k by blocks: blocks already marked in place (their slots or
 * offsets), the others whole (a block the write covers in part is read
 * from below first) into consecutive zeroed slots if the fill file has
 * them ready, else at their offsets, then one BLKS record for the blocks
 * newly there.  *added: those; *slot: the first one's slot or NOSLOT. */
static ssize_t write_blocks(struct fs_volume *v, struct fs_ckpt *c, struct chain *ch, uint32_t k,
			    uint64_t g, uint64_t pos, uint64_t stop, const char *src, char *gbuf,
			    unsigned *added, uint32_t *slot)
{
	struct layer *L = &ch->l[k];
	unsigned have = pool_ckpt_map_blocks(&L->g, g), want = blocks_of(g, pos, stop);
	uint64_t gs = g * G;
	uint32_t next;

	*added = 0;
	*slot = POOL_CKPT_NOSLOT;
	/* the first write of a block into a layer file's hole costs ext4 an
	 * allocation (docs/BENCHMARKS.md); a zeroed slot is an overwrite */
	if (want & ~have)
		*slot = slot_take(c, L, (unsigned)__builtin_popcount(want & ~have));
	next = *slot;
	for (unsigned b = (unsigned)((pos - gs) / B); b < POOL_CKPT_BLOCKS && (want >> b & 1);) {
		bool in = have >> b & 1;
		unsigned e = b + 1;
		while (e < POOL_CKPT_BLOCKS && (want >> e & 1) && (bool)(have >> e & 1) == in)
			e++;
		uint64_t a = gs + b * B, z = gs + e * B;
		uint64_t lo = pos > a ? pos : a, hi = stop < z ? stop : z;
		ssize_t n;
		if (in) { /* marked: only the claim holder marks, so it stays */
			n = layer_io(v, L, lo, hi - lo, NULL, src + (lo - pos));
		} else {
			n = 0;
			if (lo > a)
				n = view_read(v, ch, k - 1, a, B, gbuf);
			if (n >= 0 && hi < z && !(lo > a && e - b == 1))
				n = view_read(v, ch, k - 1, z - B, B, gbuf + (z - B - a));
			if (n >= 0) {
				memcpy(gbuf + (lo - a), src + (lo - pos), hi - lo);
				if (next == POOL_CKPT_NOSLOT)
					n = pool_store_write(v->store, &L->map, a, z - a, gbuf);
				else /* one take's slots: one unit, one generation */
					n = pool_store_write(v->store,
							     &L->fill[slot_file(L->gs, next)],
							     slot_off(L->gs, next), z - a, gbuf);
				if (next != POOL_CKPT_NOSLOT)
					next += e - b;
			}
			*added |= ((1u << e) - 1) & ~((1u << b) - 1);
		}
		if (n < 0)
			return n;
		b = e;
	}
	if (*added) {
		int rc = log_blks(c, L->map.id, g, *added, *slot);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Write into layer k (>= 1) of the chain, redirecting the blocks the
 * granules it touches lack (write_blocks), or copying a granule up whole
 * when the write covers it or it is ZERO here.  The chain is held shared
 * (the granules below ch->l[k].g's reserved end) or exclusive: first
 * writes into distinct granules run in parallel, each granule's under its
 * claim, and no file-wide lock is held exclusive across their I/O. */
static ssize_t layer_write(struct fs_volume *v, struct fs_ckpt *c, struct chain *ch, uint32_t k,
			   uint64_t off, size_t len, const char *data)
{
	uint64_t end = off + len, pos = off;
	struct layer *L = &ch->l[k];
	char *gbuf = NULL;

	while (pos < end) {
		uint64_t g = pos / G, gend = (g + 1) * G, stop = gend < end ? gend : end;
		unsigned want = blocks_of(g, pos, stop);
		if (pool_ckpt_map_get(&L->g, g) == POOL_CKPT_PART &&
		    (pool_ckpt_map_blocks(&L->g, g) & want) == want) {
			/* every block it touches is here already */
			ssize_t n = layer_io(v, L, pos, stop - pos, NULL, data + (pos - off));
			if (n < 0) {
				free(gbuf);
				return n;
			}
			note_redo(ch, k, g, 1);
			pos = stop;
			continue;
		}
		if (pool_ckpt_map_get(&L->g, g) == POOL_CKPT_DATA) {
			/* whole run of granules already here: one store write */
			while (stop < end && pool_ckpt_map_get(&L->g, stop / G) == POOL_CKPT_DATA)
				stop = stop + G < end ? stop + G : end;
			ssize_t n = pool_store_write(v->store, &L->map, pos, stop - pos,
						     data + (pos - off));
			if (n < 0) {
				free(gbuf);
				return n;
			}
			note_redo(ch, k, g, (stop - 1) / G - g + 1);
			pos = stop;
			continue;
		}
		if (!gbuf && posix_memalign((void **)&gbuf, 4096, G) != 0)
			return -ENOMEM;
		if (!cu_claim(ch, L, g))
			continue; /* copied up by another write meanwhile */
		/* whole granules and ZERO ones (whose unwritten blocks must read
		 * as zeros, not from below) go up whole; the rest by blocks */
		unsigned added = POOL_CKPT_FULL;
		uint32_t slot = POOL_CKPT_NOSLOT;
		ssize_t n;
		if (pool_ckpt_map_get(&L->g, g) == POOL_CKPT_ZERO || (pos == g * G && stop == gend))
			n = copy_up(v, c, ch, k, g, pos, stop, data + (pos - off), gbuf);
		else
			n = write_blocks(v, c, ch, k, g, pos, stop, data + (pos - off), gbuf,
					 &added, &slot);
		int rc = cu_release(ch, k, g, n >= 0, added, slot);
		if (n < 0 || rc < 0) {
			free(gbuf);
			return n < 0 ? n : rc;
		}
		pos = stop;
	}
	free(gbuf);
	return (ssize_t)len;
}

/* Make [off, end) read as zeros in layer k: whole granules marked ZERO,
 * partial ones written with zeros. */
static int layer_zero(struct fs_volume *v, struct fs_ckpt *c, struct chain *ch, uint32_t k,
		      uint64_t off, uint64_t end)
{
	static const char zeros[POOL_CKPT_GRANULE];
	uint64_t a = (off + G - 1) / G * G, b = end / G * G;

	if (a >= b) { /* within one or two granules */
		for (uint64_t p = off; p < end;) {
			uint64_t e = (p / G + 1) * G < end ? (p / G + 1) * G : end;
			ssize_t n = layer_write(v, c, ch, k, p, e - p, zeros);
			if (n < 0)
				return (int)n;
			p = e;
		}
		return 0;
	}
	if (off < a) {
		ssize_t n = layer_write(v, c, ch, k, off, a - off, zeros);
		if (n < 0)
			return (int)n;
	}
	if (end > b) {
		ssize_t n = layer_write(v, c, ch, k, b, end - b, zeros);
		if (n < 0)
			return (int)n;
	}
	int rc = log_map(c, ch->l[k].map.id, a / G, (b - a) / G, POOL_CKPT_ZERO);
	if (rc == 0) {
		rc = pool_ckpt_map_set(&ch->l[k].g, a / G, (b - a) / G, POOL_CKPT_ZERO);
		note_redo(ch, k, a / G, (b - a) / G);
	}
	return rc;
}

/* The chain of a file if it has layers, with its lock taken (shared or
 * exclusive); NULL otherwise. */
static struct chain *chain_enter(struct fs_volume *v, uint64_t vino, bool excl)
{
	struct fs_ckpt *c = v->ckpt;

	if (!c || atomic_load(&c->nchains) == 0)
		return NULL;
	pthread_rwlock_rdlock(&c->hlock);
	struct chain *ch = chain_find(c, vino);
	pthread_rwlock_unlock(&c->hlock);
	if (!ch)
		return NULL;
	if (excl)
		pthread_rwlock_wrlock(&ch->rw);
	else
		pthread_rwlock_rdlock(&ch->rw);
	if (ch->n > 1)
		return ch;
	pthread_rwlock_unlock(&ch->rw);
	return NULL;
}

/* Whether ino is in chain ch (held): its file (with layers), a layer or a
 * layer's fill file; *end raised to how far a scrub or repair must walk
 * it (see fs_ckpt_walk_end). */
enum { MEMBER_NONE, MEMBER_BASE, MEMBER_DELTA }; /* the file itself; a layer or fill file */

static int member_of(const struct chain *ch, uint64_t ino, uint64_t *end)
{
	int in = ch->n > 1 && ch->ino == ino ? MEMBER_BASE : MEMBER_NONE;

	for (uint32_t k = 1; k < ch->n; k++) {
		const struct layer *L = &ch->l[k];
		if (ch->ino == ino && L->size > *end)
			*end = L->size; /* checkpoint k reads the layers below up to it */
		if (L->map.id == ino) {
			in = MEMBER_DELTA;
			*end = pool_ckpt_map_end(&L->g) * G;
		}
		for (int i = 0; i < 2; i++) /* the zeroed and used end */
			if (__atomic_load_n(&L->fill[i].id, __ATOMIC_ACQUIRE) == ino) {
				in = MEMBER_DELTA;
				*end = __atomic_load_n(&L->fill_size[i], __ATOMIC_RELAXED);
			}
	}
	return in;
}

/* How ino is in a chain (member_of's answer); MEMBER_NONE if in none. */
static int chain_member(struct fs_volume *v, uint64_t ino, uint64_t *end)
{
	struct fs_ckpt *c = v->ckpt;
	int in = MEMBER_NONE;

	*end = 0;
	if (!c || atomic_load(&c->nchains) == 0)
		return false;
	/* bucket heads under hlock; a chain's next never changes once it is
	 * in a bucket (new chains go in front) and chains are freed only at
	 * detach, so the rest is walked without it, each chain's layers
	 * under its own lock (taken after hlock is let go, as chain_enter) */
	for (int h = 0; h < CK_HASH && !in; h++) {
		pthread_rwlock_rdlock(&c->hlock);
		struct chain *ch = c->hash[h];
		pthread_rwlock_unlock(&c->hlock);
		for (; ch && !in; ch = ch->next) {
			pthread_rwlock_rdlock(&ch->rw);
			in = member_of(ch, ino, end);
			pthread_rwlock_unlock(&ch->rw);
		}
	}
	return in;
}

uint64_t fs_ckpt_walk_end(struct fs_volume *v, uint64_t ino)
{
	uint64_t end;

	return chain_member(v, ino, &end) ? end : 0;
}

bool fs_ckpt_in_chain(struct fs_volume *v, uint64_t ino)
{
	uint64_t end;

	return chain_member(v, ino, &end) != MEMBER_NONE;
}

bool fs_ckpt_is_delta(struct fs_volume *v, uint64_t ino)
{
	uint64_t end;

	return chain_member(v, ino, &end) == MEMBER_DELTA;
}

/* Make every record appended so far durable.  The device's cache flush
 * can take tens of milliseconds: not under the log's lock, which every
 * first write's append takes. */
static int log_flush(struct fs_ckpt *c)
{
	struct pool_ckpt_log_flush f;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	int b = pool_ckpt_log_sync_begin(c->log, &f);
	if (b < 0)
		rc = pool_ckpt_log_sync(c->log);
	pthread_mutex_unlock(&c->lock);
	return b < 0 ? rc : pool_ckpt_log_sync_end(c->log, &f);
}

/* Make layer L's data durable: its layer file and its fill files (a
 * layer 0 has none). */
static int layer_sync(struct fs_volume *v, const struct layer *L)
{
	int rc = pool_store_sync(v->store, &L->map);

	for (int i = 0; rc == 0 && i < 2; i++) /* installed under a shared lock */
		if (__atomic_load_n(&L->fill[i].id, __ATOMIC_ACQUIRE))
			rc = pool_store_sync(v->store, &L->fill[i]);
	return rc;
}

int fs_ckpt_sync(struct fs_volume *v, uint64_t vino)
{
	struct chain *ch = chain_enter(v, vino, false);
	int rc = 0;

	if (!ch)
		return 0;
	for (uint32_t k = 1; k < ch->n && rc == 0; k++)
		rc = layer_sync(v, &ch->l[k]);
	pthread_rwlock_unlock(&ch->rw);
	/* the log outlives this request (with nodes, requests hold the
	 * volume shared and release() detaches it exclusively; alone, it is
	 * detached after the FUSE loop has joined its workers) */
	return rc < 0 ? rc : log_flush(v->ckpt);
}

bool fs_ckpt_read(struct fs_inode *in, uint64_t off, size_t len, void *buf, ssize_t *res)
{
	struct chain *ch = chain_enter(in->vol, in->attr.ino, false);

	if (!ch)
		return false;
	*res = view_read(in->vol, ch, ch->n - 1, off, len, buf);
	pthread_rwlock_unlock(&ch->rw);
	return true;
}

bool fs_ckpt_write(struct fs_inode *in, uint64_t off, size_t len, const void *buf, ssize_t *res)
{
	struct fs_volume *v = in->vol;
	struct chain *ch = chain_enter(v, in->attr.ino, false);

	if (!ch)
		return false;
	/* shared, unless the top map must grow (a set past its reserved end
	 * reallocates it under the getters) */
	if (len > 0 && (off + len - 1) / G >= ch->l[ch->n - 1].g.ngran &&
	    !all_data(ch, ch->n - 1, off, off + len)) {
		pthread_rwlock_unlock(&ch->rw);
		ch = chain_enter(v, in->attr.ino, true);
		if (!ch)
			return false;
	}
	*res = layer_write(v, v->ckpt, ch, ch->n - 1, off, len, buf);
	pthread_rwlock_unlock(&ch->rw);
	return true;
}

bool fs_ckpt_zero(struct fs_inode *in, uint64_t off, uint64_t end, int *res)
{
	struct fs_volume *v = in->vol;
	struct chain *ch = chain_enter(v, in->attr.ino, true);

	if (!ch)
		return false;
	*res = off < end ? layer_zero(v, v->ckpt, ch, ch->n - 1, off, end) : 0;
	pthread_rwlock_unlock(&ch->rw);
	return true;
}

/* SEEK_DATA / SEEK_HOLE over a view: a granule from a layer above the
 * file is data (or a hole if ZERO) as a whole; one from the file itself
 * asks its chunk files. */
static int view_seek(struct fs_volume *v, const struct chain *ch, uint32_t top, uint64_t size,
		     uint64_t off, int whence, uint64_t *out)
{
	if (off >= size)
		return -ENXIO;
	for (uint64_t pos = off; pos < size;) {
		int st;
		uint64_t g = pos / G, gend = (g + 1) * G;
		uint32_t src = source(ch, top, g, &st);
		if (src > 0) {
			if ((st == POOL_CKPT_DATA) == (whence == SEEK_DATA)) {
				*out = pos;
				return 0;
			}
			pos = gend;
			continue;
		}
		uint64_t at;
		int rc = pool_store_seek(v->store, &ch->l[0].map, size, (int64_t)pos, whence, &at);
		if (rc == -ENXIO)
			at = size;
		else if (rc < 0)
			return rc;
		if (at < gend) {
			*out = at;
			return 0;
		}
		/* jump to the next granule any layer above has, or to `at` */
		uint64_t next = at / G;
		for (uint32_t k = 1; k <= top; k++) {
			uint64_t n = pool_ckpt_map_next(&ch->l[k].g, g + 1);
			if (n < next)
				next = n;
		}
		pos = next * G > gend ? next * G : gend;
		if (next * G >= at && at > pos)
			pos = at;
	}
	if (whence == SEEK_HOLE) {
		*out = size;
		return 0;
	}
	return -ENXIO;
}

bool fs_ckpt_seek(struct fs_inode *in, uint64_t size, uint64_t off, int whence, uint64_t *out,
		  int *res)
{
	struct chain *ch = chain_enter(in->vol, in->attr.ino, false);

	if (!ch)
		return false;
	*res = view_seek(in->vol, ch, ch->n - 1, size, off, whence, out);
	pthread_rwlock_unlock(&ch->rw);
	return true;
}

bool fs_ckpt_holds(struct fs_volume *v, uint64_t vino)
{
	struct fs_ckpt *c = v->ckpt;
	bool held = false;

	if (!c)
		return false;
	pthread_mutex_lock(&c->lock);
	struct chain *ch = chain_find(c, vino);
	if (ch && ch->n > 1) {
		ch->live_gone = true;
		held = true;
	}
	pthread_mutex_unlock(&c->lock);
	return held;
}

/* ---- create ---- */

static int add_node(struct ckpt *k, uint32_t parent, const char *name, const struct pool_inode *a)
{
	if (k->nnode == k->cap) {
		uint32_t cap = k->cap ? 2 * k->cap : 16;
		struct node *n = realloc(k->node, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		k->node = n;
		k->cap = cap;
	}
	if (k->nnode >= (1u << 24) - 1)
		return -EFBIG;
	struct rec_node *r = &k->node[k->nnode].r;
	memset(r, 0, sizeof(*r));
	r->ckpt = k->id;
	r->parent = parent;
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->base = a->ino;
	r->mode = a->mode;
	r->uid = a->uid;
	r->gid = a->gid;
	r->nlink = a->nlink;
	r->size = a->size;
	r->atime_ns = a->atime_ns;
	r->mtime_ns = a->mtime_ns;
	r->ctime_ns = a->ctime_ns;
	k->nnode++;
	return 0;
}

static int child_node(const struct ckpt *k, uint32_t parent, const char *name)
{
	for (uint32_t i = 1; i < k->nnode; i++)
		if (k->node[i].r.parent == parent && strcmp(k->node[i].r.name, name) == 0)
			return (int)i;
	return -1;
}

struct walk {
	struct ckpt *k;
	uint32_t parent;
	struct pool_inode *dirs;
	uint32_t *dirnode;
	size_t ndirs, cap;
	int rc;
};

static int walk_entry(void *arg, const char *name, const struct pool_inode *in, uint64_t cookie)
{
	struct walk *w = arg;

	(void)cookie;
	if (!S_ISREG(in->mode) && !S_ISDIR(in->mode))
		return 0; /* symlinks and devices are not part of a checkpoint */
	if (child_node(w->k, w->parent, name) >= 0)
		return 0;
	w->rc = add_node(w->k, w->parent, name, in);
	if (w->rc == 0 && S_ISDIR(in->mode)) {
		if (w->ndirs == w->cap) {
			size_t cap = w->cap ? 2 * w->cap : 16;
			struct pool_inode *d = realloc(w->dirs, cap * sizeof(*d));
			uint32_t *dn = realloc(w->dirnode, cap * sizeof(*dn));
			if (d)
				w->dirs = d;
			if (dn)
				w->dirnode = dn;
			if (!d || !dn)
				return w->rc = -ENOMEM;
			w->cap = cap;
		}
		w->dirs[w->ndirs] = *in;
		w->dirnode[w->ndirs++] = w->k->nnode - 1;
	}
	return w->rc;
}

/* Add directory `dino` (node `dnode`) and everything below it. */
static int add_tree(struct fs_volume *v, struct ckpt *k, uint64_t dino, uint32_t dnode)
{
	struct walk w = {.k = k};
	int rc;

	w.dirs = malloc(sizeof(*w.dirs));
	w.dirnode = malloc(sizeof(*w.dirnode));
	if (!w.dirs || !w.dirnode) {
		free(w.dirs);
		free(w.dirnode);
		return -ENOMEM;
	}
	w.cap = 1;
	w.dirs[0].ino = dino;
	w.dirnode[0] = dnode;
	w.ndirs = 1;
	for (size_t i = 0; i < w.ndirs; i++) {
		w.parent = w.dirnode[i];
		rc = pool_meta_readdir(v->meta, w.dirs[i].ino, 0, walk_entry, &w);
		if (rc == 0)
			rc = w.rc;
		if (rc < 0)
			break;
	}
	free(w.dirs);
	free(w.dirnode);
	return rc;
}

/* Add one PATH (relative to the volume root) and its parents. */
static int add_path(struct fs_volume *v, struct ckpt *k, const char *path)
{
	char buf[4096], *save = NULL;
	uint64_t dir = ROOT_VINO;
	uint32_t node = 0;
	struct pool_inode a;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int rc = pool_meta_lookup(v->meta, dir, c, &a);
		if (rc < 0)
			return rc;
		if (!S_ISREG(a.mode) && !S_ISDIR(a.mode))
			return -EINVAL;
		int n = child_node(k, node, c);
		if (n < 0) {
			if ((rc = add_node(k, node, c, &a)) < 0)
				return rc;
			n = (int)k->nnode - 1;
		}
		node = (uint32_t)n;
		dir = a.ino;
		if (S_ISREG(a.mode))
			return save && *save ? -ENOTDIR : 0;
	}
	return add_tree(v, k, dir, node);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* A hidden file to hold the layer a checkpoint pushes on `base`. */
static int new_delta(struct fs_volume *v, const struct pool_inode *base, struct pool_inode *d)
{
	int rc = fs_new_inode(v->fs, v, ROOT_VINO, S_IFREG | 0600, 0, 0, 0, d);

	if (rc == 0) {
		d->size = base->size;
		rc = pool_meta_create_hidden(v->meta, d);
	}
	return rc;
}

/* Take layer li (not the base) out of ch: its maps freed, the layers above
 * moved down.  The slot left past the new top is zeroed: ckpt_free frees
 * every slot's maps, and a stale copy of the moved layer's pointers there
 * was freed twice (unmount after merging a checkpoint below another). */
static void chain_remove(struct chain *ch, uint32_t li)
{
	assert(li > 0 && li < ch->n);
	pool_ckpt_map_free(&ch->l[li].g);
	pool_ckpt_map_free(&ch->l[li].redo);
	free(ch->l[li].lanes);
	memmove(&ch->l[li], &ch->l[li + 1], (ch->n - li - 1) * sizeof(ch->l[0]));
	ch->n--;
	memset(&ch->l[ch->n], 0, sizeof(ch->l[0]));
}

static void drop_delta(struct fs_volume *v, const struct pool_file_map *m)
{
	pool_store_remove(v->store, m);
	int rc = pool_meta_drop_hidden(v->meta, m->id);
	if (rc < 0 && rc != -ENOENT)
		fs_log("volume %s: dropping differencing file %" PRIu64 ": %s", v->name, m->id,
		       strerror(-rc));
}

struct freeze {
	uint64_t ino;
	struct fs_inode *in;
	struct pool_inode delta;
};

static void thaw(struct fs *fs, struct freeze *f, size_t n, bool locked)
{
	for (size_t i = 0; i < n; i++) {
		if (!f[i].in)
			continue;
		if (locked)
			pthread_rwlock_unlock(&f[i].in->io_lock);
		fs_inode_put(fs, f[i].in);
	}
}

/* Append the checkpoint's records and push its layers: the instant. */
static int commit_ckpt(struct fs_ckpt *c, struct ckpt *k, struct freeze *f, size_t nf)
{
	struct rec_ckpt rc_ = {.id = k->id, .flags = k->flags, .created_ns = k->created_ns};
	struct fs_volume *v = c->v;
	int rc;

	snprintf(rc_.name, sizeof(rc_.name), "%s", k->name);
	for (uint32_t i = 0; i < k->nnode; i++) { /* sizes and times of the instant */
		struct rec_node *r = &k->node[i].r;
		for (size_t j = 0; j < nf && S_ISREG(r->mode); j++) {
			if (f[j].ino != r->base)
				continue;
			pthread_mutex_lock(&f[j].in->lock);
			r->size = f[j].in->attr.size;
			r->mtime_ns = f[j].in->attr.mtime_ns;
			r->ctime_ns = f[j].in->attr.ctime_ns;
			r->atime_ns = f[j].in->attr.atime_ns;
			r->mode = f[j].in->attr.mode;
			pthread_mutex_unlock(&f[j].in->lock);
		}
	}
	pthread_mutex_lock(&c->lock);
	rc = log_rec(c, R_NEXT, &c->next_id, sizeof(c->next_id));
	if (rc == 0)
		rc = log_rec(c, R_CKPT, &rc_, sizeof(rc_));
	for (uint32_t i = 0; rc == 0 && i < k->nnode; i++) {
		struct rec_node *r = &k->node[i].r;
		r->delta = 0;
		for (size_t j = 0; j < nf && S_ISREG(r->mode); j++)
			if (f[j].ino == r->base && f[j].delta.ino) {
				/* a file with several names gets one layer */
				bool first = true;
				for (uint32_t q = 0; q < i; q++)
					if (k->node[q].r.base == r->base &&
					    S_ISREG(k->node[q].r.mode))
						first = false;
				if (first)
					r->delta = f[j].delta.ino;
			}
		rc = log_rec(c, R_NODE, r, sizeof(*r));
	}
	if (rc == 0)
		rc = log_rec(c, R_COMMIT, &k->id, sizeof(k->id));
	struct chain **chs = rc == 0 ? calloc(nf + 1, sizeof(*chs)) : NULL;
	if (rc == 0 && !chs)
		rc = -ENOMEM; /* the log has it: the next mount has it right */
	for (size_t j = 0; rc == 0 && j < nf; j++)
		if (!(chs[j] = chain_get(c, f[j].ino)))
			rc = -ENOMEM;
	/* chain locks are never taken under c->lock (the merge takes c->lock
	 * under a chain lock to log) */
	pthread_mutex_unlock(&c->lock);
	for (size_t j = 0; rc == 0 && j < nf; j++) {
		struct chain *ch = chs[j];
		pthread_rwlock_wrlock(&ch->rw);
		if (ch->n == 1) {
			map_from_inode(&f[j].in->attr, &ch->l[0].map);
			atomic_fetch_add(&c->nchains, 1);
		}
		struct layer *L = &ch->l[ch->n++];
		memset(L, 0, sizeof(*L));
		L->owner = k->id;
		L->size = f[j].in->attr.size;
		map_from_inode(&f[j].delta, &L->map);
		/* room for the file as it is: its first writes copy up under
		 * the shared lock (a failure here only costs that) */
		pool_ckpt_map_reserve(&L->g, f[j].in->attr.size / G + 1);
		pthread_rwlock_unlock(&ch->rw);
	}
	free(chs);
	pthread_mutex_lock(&c->lock);
	if (rc == 0) {
		k->state = CK_READY;
		for (int i = 0; i < CK_MAX; i++)
			if (!c->ck[i]) {
				c->ck[i] = k;
				break;
			}
	}
	pthread_mutex_unlock(&c->lock);
	(void)v;
	return rc;
}

static int create_ckpt(struct fs_ckpt *c, const char *name, uint32_t flags, char **paths,
		       int npaths, char *err, size_t errlen)
{
	struct fs_volume *v = c->v;
	struct ckpt *k = calloc(1, sizeof(*k));
	struct pool_inode root;
	struct freeze *f = NULL;
	size_t nf = 0;
	int rc;

	if (!k)
		return -ENOMEM;
	k->flags = flags;
	k->created_ns = fs_now_ns();
	snprintf(k->name, sizeof(k->name), "%s", name);
	pthread_mutex_lock(&c->lock);
	int used = 0;
	for (int i = 0; i < CK_MAX; i++)
		used += c->ck[i] != NULL;
	if (ck_by_name(c, name))
		rc = -EEXIST, snprintf(err, errlen, "checkpoint '%s' exists", name);
	else if (used == CK_MAX)
		rc = -ENOSPC, snprintf(err, errlen, "%d checkpoints already (merge one)", CK_MAX);
	else
		rc = 0, k->id = c->next_id++;
	pthread_mutex_unlock(&c->lock);
	if (rc == 0 && (rc = pool_meta_get(v->meta, ROOT_VINO, &root)) == 0)
		rc = add_node(k, 0, "", &root);
	for (int i = 0; rc == 0 && i < npaths; i++)
		if ((rc = add_path(v, k, paths[i])) < 0)
			snprintf(err, errlen, "%s: %s", paths[i], strerror(-rc));
	if (rc == 0 && npaths == 0)
		rc = add_tree(v, k, ROOT_VINO, 0);
	/* the files, in inode order (the locks' order), each once */
	uint64_t *inos = rc == 0 ? calloc(k->nnode + 1, sizeof(*inos)) : NULL;
	if (rc == 0 && !inos)
		rc = -ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < k->nnode; i++)
		if (S_ISREG(k->node[i].r.mode))
			inos[nf++] = k->node[i].r.base;
	if (rc == 0) {
		qsort(inos, nf, sizeof(*inos), cmp_u64);
		size_t u = 0;
		for (size_t i = 0; i < nf; i++)
			if (u == 0 || inos[u - 1] != inos[i])
				inos[u++] = inos[i];
		nf = u;
		f = calloc(nf + 1, sizeof(*f));
		if (!f)
			rc = -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < nf; i++) {
		f[i].ino = inos[i];
		rc = fs_inode_get(v->fs, fs_ino_make(v, inos[i]), 0, &f[i].in);
		if (rc == 0)
			rc = new_delta(v, &f[i].in->attr, &f[i].delta);
	}
	free(inos);
	if (rc == 0) {
		for (size_t i = 0; i < nf; i++)
			pthread_rwlock_wrlock(&f[i].in->io_lock);
		pthread_mutex_lock(&c->cmu);
		rc = commit_ckpt(c, k, f, nf);
		pthread_mutex_unlock(&c->cmu);
		thaw(v->fs, f, nf, true);
	} else {
		for (size_t i = 0; f && i < nf; i++)
			if (f[i].delta.ino) {
				struct pool_file_map m;
				map_from_inode(&f[i].delta, &m);
				drop_delta(v, &m);
			}
		thaw(v->fs, f, nf, false);
	}
	free(f);
	if (rc < 0) {
		if (!err[0])
			snprintf(err, errlen, "%s", strerror(-rc));
		free(k->node);
		free(k);
	}
	return rc;
}

/* ---- merge ---- */

static void pace(struct ckpt *k, int64_t start, uint64_t bytes)
{
	if (k->rate <= 0)
		return;
	double ahead = (double)bytes / k->rate - (double)(fs_mono_ns() - start) / 1e9;
	if (ahead > 0) {
		struct timespec ts = {.tv_sec = (time_t)ahead,
				      .tv_nsec = (long)((ahead - (double)(time_t)ahead) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

/* Copy the blocks `mask` of granule g from layer L into D, a run of
 * blocks per store I/O (either side in its slots or at the blocks'
 * offsets); buf: one granule. */
static ssize_t copy_blocks(struct fs_volume *v, const struct layer *L, const struct layer *D,
			   uint64_t g, unsigned mask, char *buf)
{
	for (unsigned b = 0; b < POOL_CKPT_BLOCKS;) {
		if (!(mask >> b & 1)) {
			b++;
			continue;
		}
		unsigned e = b + 1;
		while (e < POOL_CKPT_BLOCKS && (mask >> e & 1))
			e++;
		uint64_t a = g * G + b * B, len = (e - b) * B;
		ssize_t n = layer_io(v, L, a, len, buf + b * B, NULL);
		if (n >= 0) /* blocks D has in slots there, the others at a */
			n = layer_io(v, D, a, len, NULL, buf + b * B);
		if (n < 0)
			return n;
		b = e;
	}
	return 0;
}

/* Fold a PART granule g of layer k into layer k-1: its marked blocks go
 * down; below the file itself they become marked there too (a ZERO
 * granule there turns DATA: zeros around them).  Chain held exclusive. */
static int fold_blocks(struct fs_ckpt *c, struct chain *ch, uint32_t k, uint64_t g, char *buf)
{
	struct fs_volume *v = c->v;
	struct layer *L = &ch->l[k], *D = &ch->l[k - 1];
	unsigned mask = pool_ckpt_map_blocks(&L->g, g);
	int dst = k - 1 > 0 ? pool_ckpt_map_get(&D->g, g) : POOL_CKPT_DATA;
	ssize_t n;
	int rc = 0;

	if (dst == POOL_CKPT_ZERO) {
		memset(buf, 0, G);
		for (unsigned b = 0; b < POOL_CKPT_BLOCKS; b++)
			if ((mask >> b & 1) &&
			    (n = layer_io(v, L, g * G + b * B, B, buf + b * B, NULL)) < 0)
				return (int)n;
		n = pool_store_write(v->store, &D->map, g * G, G, buf);
		if (n < 0)
			return (int)n;
		if ((rc = log_map(c, D->map.id, g, 1, POOL_CKPT_DATA)) == 0)
			rc = pool_ckpt_map_set(&D->g, g, 1, POOL_CKPT_DATA);
	} else {
		if ((n = copy_blocks(v, L, D, g, mask, buf)) < 0)
			return (int)n;
		if (dst != POOL_CKPT_DATA &&
		    (rc = log_blks(c, D->map.id, g, mask, POOL_CKPT_NOSLOT)) == 0)
			rc = pool_ckpt_map_mark(&D->g, g, mask);
	}
	if (rc == 0 && k - 1 > 0)
		note_redo(ch, k - 1, g, 1);
	return rc;
}

/* Fold granule g of layer k into layer k-1.  Chain held exclusive. */
static int fold(struct fs_ckpt *c, struct chain *ch, uint32_t k, uint64_t g, char *buf)
{
	struct fs_volume *v = c->v;
	struct layer *L = &ch->l[k], *D = &ch->l[k - 1];
	int st = pool_ckpt_map_get(&L->g, g);
	ssize_t n = 0;

	if (st == POOL_CKPT_NONE)
		return 0;
	if (st == POOL_CKPT_PART)
		return fold_blocks(c, ch, k, g, buf);
	if (st == POOL_CKPT_DATA) {
		n = pool_store_read(v->store, &L->map, g * G, G, buf);
		if (n >= 0)
			n = pool_store_write(v->store, &D->map, g * G, G, buf);
	} else if (k - 1 == 0) {
		n = pool_store_punch(v->store, &D->map, g * G, G);
	}
	if (n < 0)
		return (int)n;
	if (k - 1 > 0) {
		int rc = log_map(c, D->map.id, g, 1, st);
		if (rc == 0)
			rc = pool_ckpt_map_set(&D->g, g, 1, st);
		if (rc < 0)
			return rc;
		note_redo(ch, k - 1, g, 1);
	}
	return 0;
}

/* Layer li of ch (checkpoint k's), folded: the layer below made durable
 * (its fill files too: folds rewrite blocks it has in slots) before the
 * DROP record that drops this one's data, the layer taken out of the
 * chain and its files (layer file, fill files; id 0: none) put in
 * gone[] for drop_files.  Chain held exclusive. */
static int drop_layer(struct fs_ckpt *c, struct ckpt *k, struct chain *ch, uint32_t li,
		      struct pool_file_map gone[3])
{
	struct rec_id d = {.ckpt = k->id, .base = ch->ino};
	const struct layer *L = &ch->l[li];
	int rc = layer_sync(c->v, &ch->l[li - 1]);

	if (rc == 0) {
		pthread_mutex_lock(&c->lock);
		rc = log_rec(c, R_DROP, &d, sizeof(d));
		pthread_mutex_unlock(&c->lock);
	}
	if (rc < 0)
		return rc;
	gone[0] = L->map;
	gone[1] = L->fill[0];
	gone[2] = L->fill[1];
	chain_remove(ch, li);
	return 0;
}

/* Delete a dropped layer's files once the log is durable: the DROP record
 * and, for a merge into an older layer, the MAP and BLKS records of the
 * blocks folded there.  A power cut must not keep the deletes and lose
 * those (the layer would read zeros).  If the flush fails the files stay:
 * the next mount drops them if the record survived, else merges again. */
static int drop_files(struct fs_ckpt *c, const struct pool_file_map gone[3])
{
	int rc = log_flush(c);

	if (rc < 0) {
		fs_log("volume %s: checkpoint log flush failed (%s); merged layer %" PRIu64
		       " kept until the next mount",
		       c->v->name, strerror(-rc), gone[0].id);
		return rc;
	}
	for (int i = 0; i < 3; i++)
		if (gone[i].id)
			drop_delta(c->v, &gone[i]);
	return 0;
}

/* Fold one file's layer of checkpoint k down and drop it. */
static int merge_chain(struct fs_ckpt *c, struct ckpt *k, struct chain *ch, int64_t start)
{
	struct fs_volume *v = c->v;
	struct pool_file_map gone[3];
	char *buf;
	int rc = 0;

	if (posix_memalign((void **)&buf, 4096, G) != 0)
		return -ENOMEM;
	pthread_rwlock_wrlock(&ch->rw);
	int li = layer_of(ch, k->id);
	if (li > 0)
		ch->l[li].merging = true;
	pthread_rwlock_unlock(&ch->rw);
	/* an unmount or owner move (c->stopping) stops between batches: the
	 * next start folds again from the log (idempotent) instead of the
	 * detach waiting for the rest of a large, rate-limited file */
	for (uint64_t g = 0; li > 0 && rc == 0;) {
		if (c->stopping) {
			rc = -EINTR;
			break;
		}
		pthread_rwlock_wrlock(&ch->rw);
		li = layer_of(ch, k->id);
		struct layer *L = &ch->l[li];
		uint32_t done = 0;
		for (; done < MERGE_BATCH && rc == 0; done++) {
			g = pool_ckpt_map_next(&L->g, g);
			if (g == UINT64_MAX)
				break;
			rc = fold(c, ch, (uint32_t)li, g, buf);
			g++;
		}
		if (rc == 0 && g == UINT64_MAX) {
			/* the rest: granules written again while we went */
			pthread_mutex_lock(&ch->mu);
			struct pool_ckpt_map redo = L->redo;
			memset(&L->redo, 0, sizeof(L->redo));
			pthread_mutex_unlock(&ch->mu);
			for (uint64_t r = pool_ckpt_map_next(&redo, 0); rc == 0 && r != UINT64_MAX;
			     r = pool_ckpt_map_next(&redo, r + 1))
				rc = fold(c, ch, (uint32_t)li, r, buf);
			pool_ckpt_map_free(&redo);
			if (rc == 0 && (rc = drop_layer(c, k, ch, (uint32_t)li, gone)) == 0)
				li = 0;
		}
		pthread_rwlock_unlock(&ch->rw);
		if (li == 0 && rc == 0)
			rc = drop_files(c, gone);
		atomic_fetch_add(&k->done, (uint64_t)done * G);
		pace(k, start, atomic_load(&k->done));
	}
	free(buf);
	if (rc < 0)
		return rc;
	/* a file whose last layer went and whose name is gone goes too */
	pthread_rwlock_wrlock(&ch->rw);
	bool purge = ch->n == 1 && ch->live_gone;
	if (ch->n == 1)
		atomic_fetch_sub(&c->nchains, 1);
	struct pool_file_map base = ch->l[0].map;
	ch->live_gone = false;
	pthread_rwlock_unlock(&ch->rw);
	if (purge) {
		pool_store_remove(v->store, &base);
		pool_meta_purge(v->meta, base.id);
	}
	return 0;
}

static int compact(struct fs_ckpt *c);
static void compact_live(struct fs_ckpt *c);

/* ---- the zeroer ---- */

/* Layer `owner` (file `delta`) of ch takes no more slots: one line
 * saying why (`what`, rc), once; first writes go on at their offsets. */
static void fill_give_up(struct fs_ckpt *c, struct chain *ch, uint32_t owner, uint64_t delta,
			 const char *what, int rc)
{
	pthread_rwlock_rdlock(&ch->rw);
	int li = layer_of(ch, owner);
	bool first =
	    li > 0 && ch->l[li].map.id == delta && !atomic_exchange(&ch->l[li].fill_off, true);
	pthread_rwlock_unlock(&ch->rw);
	if (first)
		fs_log("volume %s: checkpointed file %" PRIu64 ": %s: %s; its first writes go to "
		       "their offsets from now on (slower, nothing lost)",
		       c->v->name, ch->ino, what, strerror(-rc));
}

/* Give the top layer `owner` (file `delta`) of ch its fill file `which`:
 * a hidden file, logged and installed under the chain's shared lock, and
 * dropped again if the layer went, is no longer the top, or got one
 * meanwhile.  Shared, not exclusive: first writes hold the chain shared
 * back to back, and an exclusive waiter starved behind them for the
 * whole of a fio run.  That is enough: only this thread installs fill
 * files, a compaction (which logs them) holds every chain exclusive, and
 * a first write reads a fill file only through a slot of a generation
 * handed out after it was installed (the release store of `ready`), or,
 * like fsync, after an acquire load of its id, published last.  The first
 * fill file of a layer fixes its generation (this mount's) and publishes
 * its lanes; the first of the volume's log turns it to format 3.  0, or
 * -errno (the layer then takes no more slots). */
static int fill_create(struct fs_ckpt *c, struct chain *ch, uint32_t owner, uint64_t delta,
		       unsigned which)
{
	struct fs_volume *v = c->v;
	struct pool_inode d;
	struct pool_file_map m;
	int rc = pool_fault_from(&v->fault, POOL_FAULT_FILL)
		     ? -EIO
		     : fs_new_inode(v->fs, v, ROOT_VINO, S_IFREG | 0600, 0, 0, 0, &d);

	if (rc == 0)
		rc = pool_meta_create_hidden(v->meta, &d);
	if (rc < 0) {
		fill_give_up(c, ch, owner, delta, "cannot create a fill file", rc);
		return rc;
	}
	map_from_inode(&d, &m);
	pthread_rwlock_rdlock(&ch->rw);
	int li = layer_of(ch, owner);
	struct layer *L = li > 0 ? &ch->l[li] : NULL;
	bool keep = L && (uint32_t)li == ch->n - 1 && L->map.id == delta && L->fill[which].id == 0;
	if (keep) {
		uint32_t gs = L->gs ? L->gs : (uint32_t)(c->gen / B);
		struct rec_fill r = {
		    .delta = delta, .fill = m.id, .which = which, .gen_kib = gs * 4};
		struct rec_format f = {.version = CK_FORMAT};
		pthread_mutex_lock(&c->lock);
		rc = c->format < CK_FORMAT ? log_rec(c, R_FORMAT, &f, sizeof(f)) : 0;
		if (rc == 0)
			c->format = CK_FORMAT;
		if (rc == 0)
			rc = log_rec(c, R_FILL, &r, sizeof(r));
		pthread_mutex_unlock(&c->lock);
		keep = rc == 0;
		if (keep) {
			uint64_t id = m.id;
			m.id = 0;
			L->fill[which] = m;
			__atomic_store_n(&L->fill[which].id, id, __ATOMIC_RELEASE);
			if (!L->gs) {
				L->gs = gs;
				_Atomic uint32_t *lanes = lanes_new(c, L);
				if (lanes)
					__atomic_store_n(&L->lanes, lanes, __ATOMIC_RELEASE);
				else
					atomic_store(&L->fill_off, true);
			}
			m.id = id;
		}
	}
	pthread_rwlock_unlock(&ch->rw);
	if (!keep)
		drop_delta(v, &m);
	if (rc < 0)
		fill_give_up(c, ch, owner, delta, "cannot log its fill file", rc);
	return rc;
}

/* Record size `size` for fill file `fill` and make it durable: a BLKS
 * record may name a slot below it once the generation is handed out, and
 * replay refuses a slot past its fill file's recorded size. */
static int fill_set_size(struct fs_volume *v, uint64_t fill, uint64_t size)
{
	struct pool_inode a;
	int rc = pool_meta_get(v->meta, fill, &a);

	if (rc == 0 && a.size < size) {
		a.size = size;
		rc = pool_meta_setattr(v->meta, &a);
		if (rc == 0)
			rc = pool_meta_sync(v->meta);
	}
	return rc;
}

/* One step for chain ch's top layer, if a first write wants it: its fill
 * file for the next generation created, or that generation's recorded
 * size set, or FILL_STEP more of it zeroed (the generation handed out to
 * first writes when all of it is).  The zeroer keeps at most one
 * generation zeroed beyond the one in use, in the other fill file.  True
 * if it did something (there may be more). */
static bool zero_step(struct fs_ckpt *c, struct chain *ch, const char *zeros)
{
	struct fs_volume *v = c->v;

	pthread_rwlock_rdlock(&ch->rw);
	struct layer *L = ch->n > 1 ? &ch->l[ch->n - 1] : NULL;
	if (!L || atomic_load(&L->fill_off) || !atomic_load(&L->fill_wanted)) {
		pthread_rwlock_unlock(&ch->rw);
		return false;
	}
	uint32_t owner = L->owner, gs = L->gs;
	uint64_t delta = L->map.id;
	if (!gs) { /* no fill file yet: generation `use` goes in file use & 1 */
		pthread_rwlock_unlock(&ch->rw);
		return fill_create(c, ch, owner, delta, atomic_load(&L->use) & 1) == 0;
	}
	uint32_t z = atomic_load(&L->ready) / gs, sps = (uint32_t)(c->step / B);
	if (z > atomic_load(&L->use) + 1 || (uint64_t)(z + 1) * gs * B > c->cap) {
		/* enough zeroed ahead, or the cap: idle until a first write
		 * moves on (it sets fill_wanted again; look once more after
		 * clearing it, in case one did just now) */
		atomic_store(&L->fill_wanted, false);
		if (z > atomic_load(&L->use) + 1 || (uint64_t)(z + 1) * gs * B > c->cap) {
			pthread_rwlock_unlock(&ch->rw);
			return false;
		}
		atomic_store(&L->fill_wanted, true);
	}
	unsigned f = z & 1;
	if (L->fill[f].id == 0) {
		pthread_rwlock_unlock(&ch->rw);
		return fill_create(c, ch, owner, delta, f) == 0;
	}
	int rc = 0;
	uint64_t end = slot_off(gs, z * gs) + (uint64_t)gs * B;
	if (L->zeroed == 0 && end > L->fill_size[f]) {
		/* repair and scrub walk a file up to its recorded size */
		rc = fill_set_size(v, L->fill[f].id, end);
		if (rc == 0)
			__atomic_store_n(&L->fill_size[f], end, __ATOMIC_RELAXED);
	}
	if (rc == 0) {
		ssize_t n = pool_store_write(v->store, &L->fill[f],
					     slot_off(gs, z * gs + L->zeroed), c->step, zeros);
		rc = n < 0 ? (int)n : 0;
	}
	if (rc == 0 && (L->zeroed += sps) >= gs) {
		L->zeroed = 0;
		atomic_store(&L->ready, (z + 1) * gs); /* the generation is ready */
	}
	pthread_rwlock_unlock(&ch->rw);
	if (rc < 0)
		fill_give_up(c, ch, owner, delta, "zeroing its fill file", rc);
	return rc == 0;
}

/* Chains to look at: a snapshot of the hash (chains are freed only at
 * detach, after this thread is gone). */
static struct chain **zero_chains(struct fs_ckpt *c, size_t *n)
{
	struct chain **a = NULL;
	size_t cap = 0;

	*n = 0;
	pthread_rwlock_rdlock(&c->hlock);
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; ch; ch = ch->next) {
			if (*n == cap) {
				size_t nc = cap ? 2 * cap : 64;
				struct chain **b = realloc(a, nc * sizeof(*b));
				if (!b)
					goto out;
				a = b;
				cap = nc;
			}
			a[(*n)++] = ch;
		}
out:
	pthread_rwlock_unlock(&c->hlock);
	return a;
}

/* The zeroer: writes zeros ahead into the fill files of layers taking
 * first writes by blocks, so that those are overwrites (see "Slots"). */
static void *zero_main(void *arg)
{
	struct fs_ckpt *c = arg;
	char *zeros;

	if (posix_memalign((void **)&zeros, 4096, FILL_STEP) != 0)
		return NULL; /* no slots ever: first writes at their offsets */
	memset(zeros, 0, FILL_STEP);
	pthread_mutex_lock(&c->zmu);
	while (!__atomic_load_n(&c->zstop, __ATOMIC_RELAXED)) {
		if (!c->zwork) {
			pthread_cond_wait(&c->zcv, &c->zmu);
			continue;
		}
		c->zwork = false;
		pthread_mutex_unlock(&c->zmu);
		size_t n;
		struct chain **a = zero_chains(c, &n);
		bool more = false;
		for (size_t i = 0; i < n && !__atomic_load_n(&c->zstop, __ATOMIC_RELAXED); i++)
			more |= zero_step(c, a[i], zeros);
		free(a);
		pthread_mutex_lock(&c->zmu);
		c->zwork |= more;
	}
	pthread_mutex_unlock(&c->zmu);
	free(zeros);
	return NULL;
}

static int merge_ckpt(struct fs_ckpt *c, struct ckpt *k)
{
	int64_t start = fs_mono_ns();
	uint64_t total = 0;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; ch; ch = ch->next) {
			int li = layer_of(ch, k->id);
			if (li > 0)
				total += ch->l[li].g.ndata * G;
		}
	pthread_mutex_unlock(&c->lock);
	atomic_store(&k->total, total);
	atomic_store(&k->done, 0);
	atomic_store(&k->start_ns, start);
	fs_jobs_merge_record(c->v->fs, c->v->name, k->name, k->flags & CK_FLAG_BACKUP, 0, total, 0,
			     k->rate, "running", NULL);
	for (int h = 0; h < CK_HASH && rc == 0; h++) {
		pthread_mutex_lock(&c->lock);
		struct chain *ch = c->hash[h];
		pthread_mutex_unlock(&c->lock);
		for (; ch && rc == 0 && !c->stopping; ch = ch->next) {
			if (layer_of(ch, k->id) > 0)
				rc = merge_chain(c, k, ch, start);
			if (c->compact_due) /* a merge logs a record per granule */
				compact_live(c);
		}
	}
	if (rc < 0 || c->stopping)
		return rc < 0 ? rc : -EINTR;
	pthread_mutex_lock(&c->lock);
	rc = log_rec(c, R_GONE, &k->id, sizeof(k->id));
	bool any = false;
	for (int i = 0; rc == 0 && i < CK_MAX; i++) {
		if (c->ck[i] == k)
			c->ck[i] = NULL;
		any |= c->ck[i] != NULL;
	}
	if (rc == 0 && !any) /* the last one: the log shrinks */
		c->compact_due = true;
	pthread_mutex_unlock(&c->lock);
	if (rc == 0) {
		uint64_t done = atomic_load(&k->done);
		int64_t ms = (fs_mono_ns() - start) / 1000000;
		fs_log("volume %s: checkpoint %s merged (%.1f MiB folded in %.2f s)", c->v->name,
		       k->name, (double)done / 1048576.0, (double)ms / 1e3);
		fs_jobs_merge_record(c->v->fs, c->v->name, k->name, k->flags & CK_FLAG_BACKUP, done,
				     done, ms, k->rate, "done", NULL);
		free(k->node);
		free(k);
	}
	return rc;
}

static void *merge_main(void *arg)
{
	struct fs_ckpt *c = arg;

	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		if (c->compact_due) {
			pthread_mutex_unlock(&c->lock);
			compact_live(c);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		struct ckpt *k = NULL;
		for (int i = 0; i < CK_MAX; i++)
			if (c->ck[i] && c->ck[i]->state == CK_MERGING &&
			    (!k || c->ck[i]->id < k->id))
				k = c->ck[i];
		if (!k) {
			pthread_cond_wait(&c->wake, &c->lock);
			continue;
		}
		pthread_mutex_unlock(&c->lock);
		int rc = merge_ckpt(c, k);
		if (rc < 0 && rc != -EINTR) {
			fs_log("volume %s: merge of checkpoint %s failed: %s; retried in 5 s",
			       c->v->name, k->name, strerror(-rc));
			/* every node's status says so until the retry starts;
			 * not when the volume is changing hands (fenced):
			 * the next owner resumes it */
			char why[160];
			snprintf(why, sizeof(why), "%s; retried in 5 s", strerror(-rc));
			int64_t t0 = atomic_load(&k->start_ns);
			if (rc != -EREMCHG && rc != -EAGAIN)
				fs_jobs_merge_record(
				    c->v->fs, c->v->name, k->name, k->flags & CK_FLAG_BACKUP,
				    atomic_load(&k->done), atomic_load(&k->total),
				    (fs_mono_ns() - t0) / 1000000, k->rate, "failed", why);
			sleep(5);
		}
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static int start_merge(struct fs_ckpt *c, struct ckpt *k, double rate)
{
	struct rec_id r = {.ckpt = k->id, .rate = rate};
	int rc = 0;

	/* caller holds c->lock */
	if (k->state != CK_MERGING) {
		rc = log_rec(c, R_MERGE, &r, sizeof(r));
		if (rc == 0)
			k->state = CK_MERGING;
	}
	k->rate = rate;
	pthread_cond_broadcast(&c->wake);
	return rc;
}

/* ---- load, compact, attach ---- */

struct load {
	struct fs_ckpt *c;
	char *err; /* the reason a record refuses the log */
	size_t errlen;
	uint64_t *drop; /* delta files of dropped layers, removed after load */
	size_t ndrop, cap;
	int rc;
};

static void load_drop(struct load *ld, uint64_t delta)
{
	if (ld->ndrop == ld->cap) {
		size_t cap = ld->cap ? 2 * ld->cap : 16;
		uint64_t *d = realloc(ld->drop, cap * sizeof(*d));
		if (!d)
			return;
		ld->drop = d;
		ld->cap = cap;
	}
	ld->drop[ld->ndrop++] = delta;
}

static struct layer *layer_by_delta(struct fs_ckpt *c, uint64_t delta)
{
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; ch; ch = ch->next)
			for (uint32_t i = 1; i < ch->n; i++)
				if (ch->l[i].map.id == delta)
					return &ch->l[i];
	return NULL;
}

static void remove_layer(struct load *ld, struct chain *ch, uint32_t owner)
{
	int li = layer_of(ch, owner);

	if (li <= 0)
		return;
	load_drop(ld, ch->l[li].map.id);
	for (int i = 0; i < 2; i++)
		if (ch->l[li].fill[i].id)
			load_drop(ld, ch->l[li].fill[i].id);
	chain_remove(ch, (uint32_t)li);
}

/* A MAP or BLKS record whose layer map cannot grow to `ngran` granules:
 * a map of that size needs ngran / 4 bytes, so a record naming a granule
 * far past any file (a damaged record whose CRC still matched, or a bug)
 * ends here; say which one instead of a bare "out of memory". */
static int map_nomem(struct load *ld, const struct fs_ckpt *c, const char *what, uint64_t delta,
		     uint64_t ngran)
{
	snprintf(ld->err, ld->errlen,
		 "volume %s: checkpoint log: %s record of layer %" PRIu64 " needs a map of %" PRIu64
		 " granules (%" PRIu64 " GiB of file): out of memory; damaged record?",
		 c->v->name, what, delta, ngran, ngran / (1u << 14));
	return -ENOMEM;
}

/* Put layer `owner` (file `delta`) into ch in checkpoint-id order: the
 * layers of a file are stacked oldest first, whatever order the log's
 * NODE records come in (earlier builds compacted the log in table
 * order, a newer checkpoint's records before an older one's). */
static int insert_layer(struct chain *ch, uint32_t owner, uint64_t delta, uint64_t size)
{
	uint32_t i = ch->n;

	if (ch->n > CK_MAX)
		return -ENOMEM;
	while (i > 1 && ch->l[i - 1].owner > owner)
		i--;
	memmove(&ch->l[i + 1], &ch->l[i], (ch->n - i) * sizeof(ch->l[0]));
	memset(&ch->l[i], 0, sizeof(ch->l[0]));
	ch->l[i].owner = owner;
	ch->l[i].map.id = delta;
	ch->l[i].size = size;
	ch->n++;
	return 0;
}

/* A NODE record: the checkpoint's node and, for a file with a layer, the
 * layer.  A name with no NUL in its field (a damaged record whose CRC
 * matched) is cut, with one line, instead of being read past. */
static int load_node(struct fs_ckpt *c, const void *p, uint32_t len)
{
	struct rec_node r;
	struct ckpt *k;

	if (len != sizeof(r))
		return 0;
	memcpy(&r, p, sizeof(r));
	if (!(k = ck_by_id(c, r.ckpt)))
		return 0;
	if (!memchr(r.name, '\0', sizeof(r.name))) {
		r.name[sizeof(r.name) - 1] = '\0';
		fs_log("volume %s: checkpoint log: NODE record (checkpoint %u, file %" PRIu64
		       ") has a name with no end; cut to %zu bytes",
		       c->v->name, r.ckpt, r.base, sizeof(r.name) - 1);
	}
	struct pool_inode a = {.ino = r.base};
	if (add_node(k, r.parent, r.name, &a) < 0)
		return -ENOMEM;
	k->node[k->nnode - 1].r = r;
	if (!r.delta)
		return 0;
	struct chain *ch = chain_get(c, r.base);
	return ch ? insert_layer(ch, r.ckpt, r.delta, r.size) : -ENOMEM;
}

static int load_rec(void *arg, uint32_t type, const void *p, uint32_t len)
{
	struct load *ld = arg;
	struct fs_ckpt *c = ld->c;
	struct ckpt *k;

	switch (type) {
	case R_NEXT:
		if (len >= 4 && *(const uint32_t *)p > c->next_id)
			c->next_id = *(const uint32_t *)p;
		return 0;
	case R_CKPT: {
		const struct rec_ckpt *r = p;
		if (len != sizeof(*r) || !(k = calloc(1, sizeof(*k))))
			return len != sizeof(*r) ? 0 : -ENOMEM;
		k->id = r->id;
		k->flags = r->flags;
		k->created_ns = r->created_ns;
		memcpy(k->name, r->name, sizeof(k->name));
		k->name[CK_NAME_MAX] = '\0';
		if (k->id >= c->next_id)
			c->next_id = k->id + 1;
		for (int i = 0; i < CK_MAX; i++)
			if (!c->ck[i]) {
				c->ck[i] = k;
				return 0;
			}
		free(k);
		return 0;
	}
	case R_NODE:
		return load_node(c, p, len);
	case R_COMMIT:
		if (len == 4 && (k = ck_by_id(c, *(const uint32_t *)p)))
			k->state = CK_READY;
		return 0;
	case R_FORMAT: {
		const struct rec_format *r = p;
		if (len != sizeof(*r) || r->version > CK_FORMAT) {
			snprintf(ld->err, ld->errlen,
				 "volume %s: checkpoint log format %u is newer than this "
				 "build's (%u): refusing to read it (use a newer spacefs)",
				 c->v->name, len == sizeof(*r) ? r->version : 0, CK_FORMAT);
			return -EPROTO;
		}
		return 0;
	}
	case R_MAP: {
		const struct rec_map *r = p;
		struct layer *L = len == sizeof(*r) ? layer_by_delta(c, r->delta) : NULL;
		if (!L)
			return 0;
		if ((r->state != POOL_CKPT_DATA && r->state != POOL_CKPT_ZERO) ||
		    r->first > POOL_CKPT_MAX_GRANULES ||
		    r->count > POOL_CKPT_MAX_GRANULES - r->first) {
			snprintf(ld->err, ld->errlen,
				 "volume %s: checkpoint log: impossible MAP record (layer %" PRIu64
				 ", granules %" PRIu64 "+%" PRIu64 ", state %u)",
				 c->v->name, r->delta, r->first, r->count, r->state);
			return -EIO;
		}
		int st = (int)r->state;
		if (pool_ckpt_map_set(&L->g, r->first, r->count, st) < 0)
			return map_nomem(ld, c, "MAP", r->delta, r->first + r->count);
		return 0;
	}
	case R_BLKS: {
		const struct rec_blks *r = p;
		struct layer *L = len == sizeof(*r) ? layer_by_delta(c, r->delta) : NULL;
		if (!L)
			return 0;
		int st = pool_ckpt_map_get(&L->g, r->granule);
		if (r->mask == 0 || r->mask > POOL_CKPT_FULL ||
		    r->granule >= POOL_CKPT_MAX_GRANULES || st == POOL_CKPT_ZERO) {
			snprintf(ld->err, ld->errlen,
				 "volume %s: checkpoint log: impossible BLKS record (layer %" PRIu64
				 ", granule %" PRIu64 ", mask 0x%x, state %d)",
				 c->v->name, r->delta, r->granule, r->mask, st);
			return -EIO;
		}
		uint32_t slot = r->slot1 ? r->slot1 - 1 : POOL_CKPT_NOSLOT;
		unsigned nb = (unsigned)__builtin_popcount(r->mask);
		const char *why = NULL;
		if (slot == POOL_CKPT_NOSLOT)
			;
		else if (!L->gs || !L->fill[slot_file(L->gs, slot)].id)
			why = "but the layer has no fill file there";
		else if ((uint64_t)slot + nb >= UINT32_MAX ||
			 (slot + nb - 1) / L->gs != slot / L->gs)
			why = "past the end of its generation";
		if (why) {
			snprintf(ld->err, ld->errlen,
				 "volume %s: checkpoint log: impossible BLKS record (layer %" PRIu64
				 ", granule %" PRIu64 ", mask 0x%x) names slot %u %s",
				 c->v->name, r->delta, r->granule, r->mask, slot, why);
			return -EIO;
		}
		if (st != POOL_CKPT_DATA &&
		    pool_ckpt_map_mark_slots(&L->g, r->granule, r->mask, slot) < 0)
			return map_nomem(ld, c, "BLKS", r->delta, r->granule + 1);
		if (slot != POOL_CKPT_NOSLOT) {
			uint64_t e = slot_off(L->gs, slot + nb - 1) + B;
			unsigned f = slot_file(L->gs, slot);
			if (e > L->fill_used[f]) /* checked against its size at settle */
				L->fill_used[f] = e;
			if (slot + nb > atomic_load(&L->next))
				atomic_store(&L->next, slot + nb); /* slots before are taken */
		}
		return 0;
	}
	case R_FILL: {
		const struct rec_fill *r = p;
		struct layer *L = len == sizeof(*r) ? layer_by_delta(c, r->delta) : NULL;
		const char *why = NULL;
		if (len != sizeof(*r) || r->which > 1 || !r->fill || !r->gen_kib ||
		    r->gen_kib % (FILL_LANE / 1024) || r->gen_kib > (1u << 30))
			why = "impossible";
		else if (!L)
			return 0; /* as MAP and BLKS records of layers not here */
		else if (L->gs && L->gs != r->gen_kib / 4)
			why = "another generation size than the layer's other fill file";
		else if (L->fill[r->which].id && L->fill[r->which].id != r->fill)
			why = "a second fill file in the same place";
		if (why) {
			snprintf(ld->err, ld->errlen,
				 "volume %s: checkpoint log: FILL record (layer %" PRIu64
				 ", file %" PRIu64 ", place %u, generation %u KiB): %s",
				 c->v->name, len == sizeof(*r) ? r->delta : 0,
				 len == sizeof(*r) ? r->fill : 0, len == sizeof(*r) ? r->which : 0,
				 len == sizeof(*r) ? r->gen_kib : 0, why);
			return -EIO;
		}
		L->fill[r->which].id = r->fill;
		L->gs = r->gen_kib / 4;
		return 0;
	}
	case R_MERGE: {
		const struct rec_id *r = p;
		if (len == sizeof(*r) && (k = ck_by_id(c, r->ckpt))) {
			k->state = CK_MERGING;
			k->rate = r->rate;
		}
		return 0;
	}
	case R_DROP: {
		const struct rec_id *r = p;
		struct chain *ch = len == sizeof(*r) ? chain_find(c, r->base) : NULL;
		if (ch)
			remove_layer(ld, ch, r->ckpt);
		return 0;
	}
	case R_GONE:
		for (int h = 0; len == 4 && h < CK_HASH; h++)
			for (struct chain *ch = c->hash[h]; ch; ch = ch->next)
				remove_layer(ld, ch, *(const uint32_t *)p);
		for (int i = 0; len == 4 && i < CK_MAX; i++)
			if (c->ck[i] && c->ck[i]->id == *(const uint32_t *)p) {
				free(c->ck[i]->node);
				free(c->ck[i]);
				c->ck[i] = NULL;
			}
		return 0;
	default:
		fs_log("volume %s: checkpoint log: unknown record type %u skipped", c->v->name,
		       type);
		return 0;
	}
}

/* Layer i of ch has no inode: drop that layer alone.  A merge deletes a
 * layer's files after its DROP record is durable, but logs of older
 * builds could lose the record and keep the deletes (its data was folded
 * below first); the file's other layers are whole and stay. */
static void missing_layer(struct load *ld, struct chain *ch, uint32_t i, int rc)
{
	fs_log("volume %s: checkpointed file %" PRIu64 ": layer %" PRIu64
	       " of checkpoint %u is missing (%s); that layer is dropped, the file's others kept",
	       ld->c->v->name, ch->ino, ch->l[i].map.id, ch->l[i].owner, strerror(-rc));
	remove_layer(ld, ch, ch->l[i].owner);
}

/* After replay: roll back checkpoints never committed, find each layer's
 * placement, note files whose name is gone. */
static int settle(struct load *ld)
{
	struct fs_ckpt *c = ld->c;
	struct fs_volume *v = c->v;

	for (int i = 0; i < CK_MAX; i++) {
		struct ckpt *k = c->ck[i];
		if (!k || k->state != CK_CREATING)
			continue;
		for (int h = 0; h < CK_HASH; h++)
			for (struct chain *ch = c->hash[h]; ch; ch = ch->next)
				remove_layer(ld, ch, k->id);
		fs_log("volume %s: checkpoint %s was not complete when the daemon stopped; "
		       "dropped",
		       v->name, k->name);
		free(k->node);
		free(k);
		c->ck[i] = NULL;
	}
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; ch; ch = ch->next) {
			struct pool_inode a;
			for (uint32_t i = 0; i < ch->n && ch->n > 1; i++) {
				uint64_t ino = i ? ch->l[i].map.id : ch->ino;
				int rc = pool_meta_get(v->meta, ino, &a);
				if (rc < 0 && i > 0) {
					missing_layer(ld, ch, i--, rc);
					continue;
				}
				if (rc < 0) {
					/* the checkpoints of this file read ESTALE */
					fs_log("volume %s: checkpointed file %" PRIu64
					       " missing (%s); its checkpoint data is lost",
					       v->name, ch->ino, strerror(-rc));
					ch->n = 1;
					break;
				}
				map_from_inode(&a, &ch->l[i].map);
				if (i == 0)
					ch->live_gone = a.nlink == 0;
				else /* first writes copy up under the shared lock */
					pool_ckpt_map_reserve(&ch->l[i].g, a.size / G + 1);
				struct layer *L = &ch->l[i];
				for (int f = 0; i > 0 && f < 2; f++) {
					if (!L->fill[f].id)
						continue;
					rc = pool_meta_get(v->meta, L->fill[f].id, &a);
					if (rc == -ENOENT && L->fill_used[f] == 0) {
						/* every BLKS record naming a slot follows a
						 * metadata commit, so this file's create was
						 * lost (power loss: its FILL record written,
						 * the commit not) before any slot in it was
						 * used: nothing is lost; made again as needed */
						fs_log("volume %s: checkpoint layer %" PRIu64
						       " of file %" PRIu64 ": fill file %" PRIu64
						       " named by a FILL record is missing and "
						       "holds no slot; dropped",
						       v->name, L->map.id, ch->ino, L->fill[f].id);
						memset(&L->fill[f], 0, sizeof(L->fill[f]));
						continue;
					}
					if (rc == 0 && a.size < L->fill_used[f])
						rc = -ERANGE;
					if (rc < 0) { /* its slots' data would be lost */
						snprintf(ld->err, ld->errlen,
							 "volume %s: checkpoint log: layer %" PRIu64
							 " of file %" PRIu64 ": fill file %" PRIu64
							 " %s",
							 v->name, L->map.id, ch->ino, L->fill[f].id,
							 rc == -ERANGE
							     ? "is shorter than its slots in BLKS "
							       "records reach"
							     : "named by a FILL record is missing");
						return -EIO;
					}
					map_from_inode(&a, &L->fill[f]);
					L->fill_size[f] = a.size;
				}
				/* slots from the generation after the last one taken
				 * on, zeroed again; none if this mount cannot */
				if (i > 0 && L->gs && !(L->lanes = lanes_new(c, L)))
					atomic_store(&L->fill_off, true);
			}
			if (ch->n > 1)
				atomic_fetch_add(&c->nchains, 1);
		}
	for (size_t i = 0; i < ld->ndrop; i++) {
		struct pool_inode a;
		if (pool_meta_get(v->meta, ld->drop[i], &a) == 0) {
			struct pool_file_map m;
			map_from_inode(&a, &m);
			drop_delta(v, &m);
		}
	}
	return 0;
}

static int enc(char **b, size_t *n, size_t *cap, uint64_t *seq, uint32_t t, const void *p,
	       uint32_t len)
{
	return pool_ckpt_log_encode(b, n, cap, t, p, len, ++*seq);
}

/* BLKS records for PART granule g of layer L: one for its blocks at
 * their offsets, one per run of blocks in consecutive slots. */
static int enc_blks(char **b, size_t *n, size_t *cap, uint64_t *seq, const struct layer *L,
		    uint64_t g)
{
	unsigned mask = pool_ckpt_map_blocks(&L->g, g), at = 0;
	struct rec_blks r = {.delta = L->map.id, .granule = g};
	int rc = 0;

	for (unsigned i = 0; i < POOL_CKPT_BLOCKS; i++)
		if ((mask >> i & 1) && pool_ckpt_map_slot(&L->g, g, i) == POOL_CKPT_NOSLOT)
			at |= 1u << i;
	if (at) {
		r.mask = at;
		rc = enc(b, n, cap, seq, R_BLKS, &r, sizeof(r));
	}
	mask &= ~at;
	for (unsigned i = 0; rc == 0 && i < POOL_CKPT_BLOCKS;) {
		if (!(mask >> i & 1)) {
			i++;
			continue;
		}
		uint32_t s0 = pool_ckpt_map_slot(&L->g, g, i), k = 1;
		r.mask = 1u << i;
		r.slot1 = s0 + 1;
		unsigned j = i + 1;
		for (; j < POOL_CKPT_BLOCKS; j++) {
			if (!(mask >> j & 1))
				continue; /* blocks between may come in any later run */
			if (pool_ckpt_map_slot(&L->g, g, j) != s0 + k || (s0 + k) % L->gs == 0)
				break; /* not the next slot, or in the next generation */
			r.mask |= 1u << j;
			k++;
		}
		mask &= ~r.mask;
		rc = enc(b, n, cap, seq, R_BLKS, &r, sizeof(r));
		i = 0; /* the rest of the mask, from its lowest block */
	}
	return rc;
}

/* Rewrite the log as the state it holds now. */
static int compact(struct fs_ckpt *c)
{
	char *b = NULL;
	size_t n = 0, cap = 0;
	uint64_t seq0 = pool_ckpt_log_seq(c->log), seq = seq0;
	int rc;

	/* format 3 only if a layer has a fill file: older builds read 2 */
	struct rec_format f = {.version = CK_FORMAT_NO};
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; ch; ch = ch->next)
			for (uint32_t i = 1; i < ch->n; i++)
				if (ch->l[i].fill[0].id || ch->l[i].fill[1].id)
					f.version = CK_FORMAT;
	rc = enc(&b, &n, &cap, &seq, R_FORMAT, &f, sizeof(f));
	/* ids are never reused: they make inode numbers the kernel may cache */
	if (rc == 0)
		rc = enc(&b, &n, &cap, &seq, R_NEXT, &c->next_id, sizeof(c->next_id));
	/* by id, the order of a file's layers (insert_layer) */
	for (struct ckpt *k = ck_next(c, 0); rc == 0 && k; k = ck_next(c, k->id)) {
		struct rec_ckpt r = {.id = k->id, .flags = k->flags, .created_ns = k->created_ns};
		memcpy(r.name, k->name, sizeof(r.name));
		rc = enc(&b, &n, &cap, &seq, R_CKPT, &r, sizeof(r));
		for (uint32_t j = 0; rc == 0 && j < k->nnode; j++) {
			struct rec_node r = k->node[j].r;
			struct chain *ch = r.delta ? chain_find(c, r.base) : NULL;
			if (r.delta && (!ch || layer_of(ch, k->id) <= 0))
				r.delta = 0; /* that file's layer is merged already */
			rc = enc(&b, &n, &cap, &seq, R_NODE, &r, sizeof(r));
		}
		if (rc == 0)
			rc = enc(&b, &n, &cap, &seq, R_COMMIT, &k->id, sizeof(k->id));
		struct rec_id m = {.ckpt = k->id, .rate = k->rate};
		if (rc == 0 && k->state == CK_MERGING)
			rc = enc(&b, &n, &cap, &seq, R_MERGE, &m, sizeof(m));
	}
	for (int h = 0; rc == 0 && h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; rc == 0 && ch; ch = ch->next)
			for (uint32_t i = 1; rc == 0 && i < ch->n; i++) {
				const struct pool_ckpt_map *g = &ch->l[i].g;
				for (unsigned w = 0; rc == 0 && w < 2; w++) {
					struct rec_fill fr = {.delta = ch->l[i].map.id,
							      .fill = ch->l[i].fill[w].id,
							      .which = w,
							      .gen_kib = ch->l[i].gs * 4};
					if (fr.fill)
						rc = enc(&b, &n, &cap, &seq, R_FILL, &fr,
							 sizeof(fr));
				}
				for (uint64_t s = pool_ckpt_map_next(g, 0);
				     rc == 0 && s != UINT64_MAX;) {
					int st = pool_ckpt_map_get(g, s);
					uint64_t e = s + 1;
					if (st == POOL_CKPT_PART) {
						rc = enc_blks(&b, &n, &cap, &seq, &ch->l[i], s);
						s = pool_ckpt_map_next(g, e);
						continue;
					}
					while (e < g->ngran && pool_ckpt_map_get(g, e) == st)
						e++;
					struct rec_map r = {.delta = ch->l[i].map.id,
							    .first = s,
							    .count = e - s,
							    .state = (uint32_t)st};
					rc = enc(&b, &n, &cap, &seq, R_MAP, &r, sizeof(r));
					s = pool_ckpt_map_next(g, e);
				}
			}
	if (rc == 0)
		rc = pool_ckpt_log_reset(c->log, b ? b : "", n);
	if (rc == 0) {
		c->compact_recs = seq - seq0;
		c->compact_seq = pool_ckpt_log_seq(c->log);
		c->format = f.version;
	}
	free(b);
	return rc;
}

/* Compact while the volume serves: no create between its records and its
 * ck[] entry (cmu), no copy-up between its record and its map bit, no
 * fold (every chain exclusive, in hash order; nobody else holds two), then
 * the log's own lock.  The chains' list only grows under cmu. */
static void compact_live(struct fs_ckpt *c)
{
	pthread_mutex_lock(&c->cmu);
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; ch; ch = ch->next)
			pthread_rwlock_wrlock(&ch->rw);
	pthread_mutex_lock(&c->lock);
	uint64_t before = pool_ckpt_log_seq(c->log) - c->compact_seq;
	int live = 0, rc = compact(c);
	for (int i = 0; i < CK_MAX; i++)
		live += c->ck[i] != NULL;
	c->compact_due = false;
	if (rc < 0 && pool_ckpt_log_replicas(c->log) == 0)
		fs_log(
		    "volume %s: checkpoint log: compaction failed (%s) and no replica of the log "
		    "is left: first writes after a checkpoint fail until the volume is mounted "
		    "again",
		    c->v->name, strerror(-rc));
	else if (rc < 0)
		fs_log("volume %s: checkpoint log: compaction failed (%s); kept as is", c->v->name,
		       strerror(-rc));
	else if (live > 0) /* past the bound: say so (not after the last merge) */
		fs_log("volume %s: checkpoint log compacted with %d checkpoint(s) live: %" PRIu64
		       " records to %" PRIu64,
		       c->v->name, live, before, c->compact_recs);
	if (rc < 0) /* try again after as many records again */
		c->compact_seq = pool_ckpt_log_seq(c->log);
	pthread_mutex_unlock(&c->lock);
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h]; ch; ch = ch->next)
			pthread_rwlock_unlock(&ch->rw);
	pthread_mutex_unlock(&c->cmu);
}

static void ckpt_free(struct fs_ckpt *c)
{
	for (int i = 0; i < CK_MAX; i++)
		if (c->ck[i]) {
			free(c->ck[i]->node);
			free(c->ck[i]);
		}
	for (int h = 0; h < CK_HASH; h++)
		for (struct chain *ch = c->hash[h], *nx; ch; ch = nx) {
			nx = ch->next;
			for (uint32_t i = 0; i <= CK_MAX; i++) {
				pool_ckpt_map_free(&ch->l[i].g);
				pool_ckpt_map_free(&ch->l[i].redo);
				free(ch->l[i].lanes);
			}
			pthread_rwlock_destroy(&ch->rw);
			pthread_mutex_destroy(&ch->mu);
			pthread_cond_destroy(&ch->cu_done);
			free(ch);
		}
	pool_ckpt_log_close(c->log);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->cmu);
	pthread_rwlock_destroy(&c->hlock);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->gc.mu);
	pthread_cond_destroy(&c->gc.cv);
	pthread_mutex_destroy(&c->zmu);
	pthread_cond_destroy(&c->zcv);
	free(c);
}

/* A size in KiB from environment variable `name` (tests), in whole
 * lanes; `dflt` when unset or malformed, at most `max`. */
static uint64_t env_kib(const char *name, uint64_t dflt, uint64_t max)
{
	const char *e = getenv(name);
	char *end;
	unsigned long long k = e ? strtoull(e, &end, 10) : 0;

	if (!e || !*e || *end || k > max / 1024)
		return dflt;
	return k * 1024 / FILL_LANE * FILL_LANE;
}

/* Records past the last compaction (beyond twice what it wrote) before the
 * next: about 4 MiB of log.  SPACEFS_CKPT_LOG_BOUND sets it (tests). */
static uint64_t log_bound(void)
{
	const char *e = getenv("SPACEFS_CKPT_LOG_BOUND");
	char *end;
	unsigned long long b = e ? strtoull(e, &end, 10) : 0;

	return e && *e && !*end && b > 0 ? b : 65536;
}

int fs_ckpt_attach(struct fs_volume *v, const char *const *dirs, uint32_t ndirs, char *err,
		   size_t errlen)
{
	struct fs_ckpt *c = calloc(1, sizeof(*c));
	struct load ld = {.c = c, .err = err, .errlen = errlen};
	int rc;

	if (!c)
		return -ENOMEM;
	c->v = v;
	c->next_id = 1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->cmu, NULL);
	pthread_rwlock_init(&c->hlock, NULL);
	c->bound = log_bound();
	/* the generation: SPACEFS_CKPT_FILL_KIB (tests: a small one runs out
	 * and turns often; 0 turns slots off, first writes at their offsets
	 * as in format 2), whole steps past one; the cap on a layer's fill
	 * files: SPACEFS_CKPT_FILL_MAX_KIB */
	c->gen = env_kib("SPACEFS_CKPT_FILL_KIB", FILL_GEN, 1ull << 30);
	c->step = c->gen < FILL_STEP ? c->gen : FILL_STEP;
	if (c->step)
		c->gen = c->gen / c->step * c->step;
	c->nlanes = (uint32_t)(c->step / FILL_LANE);
	c->cap = env_kib("SPACEFS_CKPT_FILL_MAX_KIB", FILL_CAP, 1ull << 42);
	c->format = CK_FORMAT_NO;
	pthread_cond_init(&c->wake, NULL);
	pthread_mutex_init(&c->gc.mu, NULL);
	pthread_cond_init(&c->gc.cv, NULL);
	pthread_mutex_init(&c->zmu, NULL);
	pthread_cond_init(&c->zcv, NULL);
	rc = pool_ckpt_log_open(dirs, ndirs, &c->log, err, errlen);
	if (rc == 0)
		rc = pool_ckpt_log_replay(c->log, load_rec, &ld);
	if (rc == 0)
		rc = settle(&ld);
	free(ld.drop);
	/* a backup whose spacectl or daemon died: nobody will copy it now */
	for (int i = 0; rc == 0 && i < CK_MAX; i++)
		if (c->ck[i] && (c->ck[i]->flags & CK_FLAG_BACKUP) && c->ck[i]->state == CK_READY)
			c->ck[i]->state = CK_MERGING;
	if (rc == 0)
		rc = compact(c);
	if (rc < 0) {
		if (!err[0])
			snprintf(err, errlen, "volume %s: checkpoints: %s", v->name, strerror(-rc));
		ckpt_free(c);
		return rc;
	}
	v->ckpt = c;
	/* Volumes opened at mount are attached before fuse_daemonize forks, and
	 * a thread does not survive a fork: main.c starts those workers after
	 * it (fs_ckpt_start); volumes opened later start theirs here. */
	if (atomic_load(&v->fs->daemonized) && (rc = fs_ckpt_start(v)) < 0) {
		snprintf(err, errlen, "volume %s: checkpoints: cannot start the merge worker: %s",
			 v->name, strerror(-rc));
		v->ckpt = NULL;
		ckpt_free(c);
		return rc;
	}
	return 0;
}

int fs_ckpt_start(struct fs_volume *v)
{
	struct fs_ckpt *c = v->ckpt;

	if (!c || c->worker_on)
		return 0;
	if (pthread_create(&c->worker, NULL, merge_main, c) != 0)
		return -EAGAIN;
	c->worker_on = true;
	/* without the zeroer first writes take no slots: at their offsets */
	c->zeroer_on = c->gen && pthread_create(&c->zeroer, NULL, zero_main, c) == 0;
	return 0;
}

void fs_ckpt_detach(struct fs_volume *v)
{
	struct fs_ckpt *c = v->ckpt;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_broadcast(&c->wake);
	pthread_mutex_unlock(&c->lock);
	if (c->worker_on)
		pthread_join(c->worker, NULL);
	pthread_mutex_lock(&c->zmu);
	__atomic_store_n(&c->zstop, true, __ATOMIC_RELAXED);
	pthread_cond_signal(&c->zcv);
	pthread_mutex_unlock(&c->zmu);
	if (c->zeroer_on)
		pthread_join(c->zeroer, NULL);
	pool_ckpt_log_sync(c->log);
	v->ckpt = NULL;
	ckpt_free(c);
}

/* ---- control requests ---- */

static const char *state_name(int s)
{
	return s == CK_READY ? "ready" : s == CK_MERGING ? "merging" : "creating";
}

static void list_ckpts(struct fs_ckpt *c, struct fs_text *o)
{
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < CK_MAX; i++) {
		struct ckpt *k = c->ck[i];
		if (!k)
			continue;
		uint32_t files = 0;
		for (uint32_t j = 0; j < k->nnode; j++)
			files += S_ISREG(k->node[j].r.mode);
		fs_textf(o, "%s %s %" PRId64 " %u %" PRIu64 " %" PRIu64 " %s\n", k->name,
			 state_name(k->state), k->created_ns / 1000000000, files,
			 atomic_load(&k->done), atomic_load(&k->total),
			 (k->flags & CK_FLAG_BACKUP) ? "backup" : "-");
	}
	pthread_mutex_unlock(&c->lock);
}

static bool name_ok(const char *n)
{
	if (!n[0] || strlen(n) > CK_NAME_MAX || !strcmp(n, ".") || !strcmp(n, ".."))
		return false;
	for (const char *p = n; *p; p++)
		if (*p == '/' || *p <= ' ')
			return false;
	return true;
}

int fs_ckpt_handles(const char *req)
{
	return !strncmp(req, "ckpt-", 5);
}

/* ckpt-create VOL NAME FLAGS [PATH...] | ckpt-list VOL | ckpt-merge VOL NAME RATE | ckpt-mnt
 * | ckpt-jobs VOL json|text (the running merges, for status)
 * | ckpt-copy VOL NAME DONE TOTAL (a backup's copy progress, from its spacectl) */
/* Send a request for volume v to its owner and copy its reply into o. */
static void forward(struct fs *fs, struct fs_volume *v, int argc, char **argv, struct fs_text *o)
{
	char node[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX], text[WIRE_TEXT_MAX + 1];
	uint64_t epoch;
	bool valid;
	size_t len = 0;

	fs_node_owner(v, node, addr, &epoch, &valid);
	if (!valid || !addr[0] || !strcmp(node, fs->node->name)) {
		fs_textf(o, "error: volume %s has no owner just now (changing hands); try again\n",
			 v->name);
		return;
	}
	for (int i = 0; i < argc && len < sizeof(text); i++)
		len +=
		    (size_t)snprintf(text + len, sizeof(text) - len, "%s%s", i ? " " : "", argv[i]);
	if (len >= sizeof(text)) {
		fs_textf(o, "error: checkpoint request too long to send to node %s\n", node);
		return;
	}
	struct wire_req q = {.type = W_CTL,
			     .volid = v->id,
			     .name = "",
			     .name2 = "",
			     .data = (const uint8_t *)text,
			     .ndata = (uint32_t)len};
	struct wire_rep p = {0};
	uint8_t *raw = NULL;
	int rc = fs_rpc_call(fs->node->rpc, addr, &q, &p, &raw);
	if (rc < 0)
		fs_textf(o, "error: volume %s: asking its owner %s (%s): %s\n", v->name, node, addr,
			 strerror(-rc));
	else if (p.err < 0)
		fs_textf(o, "error: volume %s: its owner %s refused the request: %s\n", v->name,
			 node, strerror(-p.err));
	else
		fs_textf(o, "%.*s", (int)p.ndata, (const char *)p.data);
	free(raw);
}

static void request(struct fs *fs, int argc, char **argv, struct fs_text *o, bool served);
static void vol_jobs(struct fs *fs, struct fs_ckpt *c, bool json, bool remote, struct fs_text *o);

void fs_ckpt_request(struct fs *fs, int argc, char **argv, struct fs_text *o)
{
	request(fs, argc, argv, o, false);
}

void fs_ckpt_serve_ctl(struct fs *fs, const struct wire_req *q, struct wire_rep *p, uint8_t **out)
{
	char text[WIRE_TEXT_MAX + 1], *argv[80], *save = NULL;
	int argc = 0;
	struct fs_text o = {0};

	if (memchr(q->data, 0, q->ndata)) {
		p->err = -EPROTO;
		return;
	}
	memcpy(text, q->data, q->ndata);
	text[q->ndata] = '\0';
	for (char *w = strtok_r(text, " ", &save); w && argc < 80; w = strtok_r(NULL, " ", &save))
		argv[argc++] = w;
	if (argc < 2 || !fs_ckpt_handles(argv[0]) || !strcmp(argv[0], "ckpt-mnt") ||
	    !fs_volume_by_id(fs, q->volid)) {
		p->err = -EPROTO;
		return;
	}
	request(fs, argc, argv, &o, true);
	if (o.failed || !o.s) {
		free(o.s);
		p->err = -ENOMEM;
		return;
	}
	*out = (uint8_t *)o.s;
	p->data = *out;
	p->ndata = (uint32_t)o.len;
}

static void request(struct fs *fs, int argc, char **argv, struct fs_text *o, bool served)
{
	char err[512] = "";

	if (!strcmp(argv[0], "ckpt-mnt")) {
		fs_textf(o, "ok\n%s\n", fs->opt.mountpoint ? fs->opt.mountpoint : "");
		return;
	}
	struct fs_volume *v = argc >= 2 ? fs_volume_by_name(fs, argv[1]) : NULL;
	if (!v) {
		fs_textf(o, "error: no volume '%s'\n", argc >= 2 ? argv[1] : "");
		return;
	}
	if (!fs_vol_enter_local(v)) {
		if (fs->node && !served)
			forward(fs, v, argc, argv, o);
		else /* a served request is not sent on: ownership moved meanwhile */
			fs_textf(o, "error: volume %s changed hands meanwhile; try again\n",
				 v->name);
		return;
	}
	struct fs_ckpt *c = v->ckpt;
	if (!c) {
		fs_textf(o, "error: volume %s: checkpoints are not available here (read-only?)\n",
			 v->name);
	} else if (!strcmp(argv[0], "ckpt-copy") && argc == 5) {
		pthread_mutex_lock(&c->lock);
		struct ckpt *k = ck_by_name(c, argv[2]);
		if (k) {
			int64_t now = fs_mono_ns(), zero = 0;
			atomic_compare_exchange_strong(&k->copy_start_ns, &zero, now);
			atomic_store(&k->copy_done, strtoull(argv[3], NULL, 10));
			atomic_store(&k->copy_total, strtoull(argv[4], NULL, 10));
			atomic_store(&k->copy_seen_ns, now);
		}
		pthread_mutex_unlock(&c->lock);
		fs_textf(o, k ? "ok\n" : "error: checkpoint %s: no such checkpoint\n", argv[2]);
	} else if (!strcmp(argv[0], "ckpt-jobs") && argc == 3) {
		fs_textf(o, "ok\n");
		vol_jobs(fs, c, !strcmp(argv[2], "json"), served, o);
	} else if (!strcmp(argv[0], "ckpt-list") && argc == 2) {
		fs_textf(o, "ok\n");
		list_ckpts(c, o);
	} else if (!strcmp(argv[0], "ckpt-create") && argc >= 4) {
		int64_t t0 = fs_mono_ns();
		if (!name_ok(argv[2])) {
			fs_textf(o,
				 "error: '%s' is not a checkpoint name (1 to %d characters, no "
				 "'/' or spaces)\n",
				 argv[2], CK_NAME_MAX);
		} else {
			int rc = create_ckpt(c, argv[2], (uint32_t)strtoul(argv[3], NULL, 10),
					     argv + 4, argc - 4, err, sizeof(err));
			if (rc < 0)
				fs_textf(o, "error: checkpoint %s: %s\n", argv[2], err);
			else
				fs_textf(o, "ok\n%.3f\n", (double)(fs_mono_ns() - t0) / 1e9);
		}
	} else if (!strcmp(argv[0], "ckpt-merge") && argc == 4) {
		pthread_mutex_lock(&c->lock);
		struct ckpt *k = ck_by_name(c, argv[2]);
		int rc = k ? start_merge(c, k, strtod(argv[3], NULL)) : -ENOENT;
		pthread_mutex_unlock(&c->lock);
		if (rc < 0)
			fs_textf(o, "error: checkpoint %s: %s\n", argv[2],
				 rc == -ENOENT ? "no such checkpoint" : strerror(-rc));
		else
			fs_textf(o, "ok\n");
	} else {
		fs_textf(o, "error: malformed checkpoint request\n");
	}
	fs_vol_leave(v);
}

/* The running merges of v, in fs/jobs.c's formats: "job" lines (json
 * false; with `remote`, the message names this node, as for a job run by
 * another node) or status objects separated by commas.  c->lock taken. */
static void vol_jobs(struct fs *fs, struct fs_ckpt *c, bool json, bool remote, struct fs_text *o)
{
	const char *node = fs->opt.node ? fs->opt.node : "";
	int n = 0;

	pthread_mutex_lock(&c->lock);
	for (int j = 0; j < CK_MAX; j++) {
		struct ckpt *k = c->ck[j];
		/* a backup's copy: while its spacectl reported in the last 10 s */
		bool copying = k && k->state == CK_READY && (k->flags & CK_FLAG_BACKUP) &&
			       fs_mono_ns() - atomic_load(&k->copy_seen_ns) < 10000000000ll &&
			       atomic_load(&k->copy_start_ns);
		if (!k || (k->state != CK_MERGING && !copying))
			continue;
		int64_t t0 = atomic_load(copying ? &k->copy_start_ns : &k->start_ns);
		int64_t ms = t0 ? (fs_mono_ns() - t0) / 1000000 : 0;
		uint64_t done = atomic_load(copying ? &k->copy_done : &k->done);
		uint64_t total = atomic_load(copying ? &k->copy_total : &k->total);
		const char *kind = copying ? "backup" : "merge";
		if (json)
			fs_textf(o,
				 "%s{\"id\":0,\"kind\":\"%s\",\"state\":\"running\",\"disk\":0,"
				 "\"volume\":\"%s\",\"done\":%" PRIu64 ",\"total\":%" PRIu64
				 ",\"node\":\"%s\",\"elapsed_ms\":%" PRId64
				 ",\"checkpoint\":\"%s\",\"rate_limit\":%.0f}",
				 n ? "," : "", kind, c->v->name, done, total, node, ms, k->name,
				 k->rate);
		else
			fs_textf(o,
				 "job\t0\t%s\trunning\t0\t%s\t%" PRIu64 "\t%" PRIu64
				 "\t0\t0\t0\t0\t0\t%" PRId64 "\tcheckpoint %s%s%s\n",
				 kind, c->v->name, done, total, ms, k->name, remote ? " node " : "",
				 remote ? node : "");
		n++;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Merges as lines of the "jobs" request and objects of status' "jobs"
 * array (id 0: they are named by checkpoint, and followed with `spacectl
 * checkpoint list` or merge --wait).  A volume another node owns: asked of
 * the owner (ckpt-jobs), as status shows other nodes' scrubs. */
void fs_ckpt_jobs(struct fs *fs, bool json, char *s, size_t cap, size_t *len)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t nv = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	for (uint32_t i = 0; i < nv && *len + 1024 < cap; i++) {
		struct fs_volume *v = fs->vol[i];
		struct fs_text o = {0};
		const char *body = NULL;
		if (fs_volume_gone(v))
			continue;
		if (fs_vol_enter_local(v)) {
			if (v->ckpt)
				vol_jobs(fs, v->ckpt, json, false, &o);
			fs_vol_leave(v);
			body = o.s;
		} else if (fs->node) {
			char *argv[] = {"ckpt-jobs", v->name, json ? "json" : "text"};
			forward(fs, v, 3, argv, &o);
			body = o.s && !strncmp(o.s, "ok\n", 3) ? o.s + 3 : NULL;
		}
		size_t n = body && !o.failed ? strlen(body) : 0;
		if (n && *len + n + 2 < cap) {
			if (json && *len > 1)
				s[(*len)++] = ',';
			memcpy(s + *len, body, n + 1);
			*len += n;
		}
		free(o.s);
	}
}

/* ---- the .checkpoints namespace ---- */

bool fs_ckpt_is_ino(uint64_t ino)
{
	return (ino & CK_BIT) != 0 && ino != FUSE_ROOT_ID;
}

static uint64_t ck_ino(struct fs_volume *v, uint32_t id, uint32_t node)
{
	return fs_ino_make(v, CK_BIT | ((uint64_t)id << 24) | (node + 1));
}

/* Resolve an inode of the namespace: the volume, and either the
 * .checkpoints directory (*k NULL) or a node of a ready checkpoint.
 * Returns with c->lock held on success. */
static int resolve(struct fs *fs, uint64_t ino, struct fs_volume **vp, struct ckpt **kp,
		   uint32_t *np)
{
	struct fs_volume *v = fs_volume_by_id(fs, fs_ino_volid(ino));
	uint64_t vino = fs_ino_vino(ino) & ~CK_BIT;

	if (!v || !v->ckpt)
		return -ENOENT;
	pthread_mutex_lock(&v->ckpt->lock);
	*vp = v;
	*kp = NULL;
	*np = 0;
	if (vino == 0)
		return 0;
	struct ckpt *k = ck_by_id(v->ckpt, (uint32_t)(vino >> 24));
	uint32_t n = (uint32_t)(vino & 0xffffff);
	if (!k || k->state != CK_READY || n == 0 || n > k->nnode) {
		pthread_mutex_unlock(&v->ckpt->lock);
		return -ESTALE;
	}
	*kp = k;
	*np = n - 1;
	return 0;
}

static void ck_stat(struct fs_volume *v, const struct ckpt *k, uint32_t n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	if (!k) {
		st->st_ino = fs_ino_make(v, CK_BIT);
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return;
	}
	const struct rec_node *r = &k->node[n].r;
	st->st_ino = ck_ino(v, k->id, n);
	st->st_mode = r->mode;
	st->st_nlink = r->nlink ? r->nlink : 1;
	st->st_uid = r->uid;
	st->st_gid = r->gid;
	st->st_size = (off_t)r->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((r->size + 511) / 512);
	st->st_atim.tv_sec = r->atime_ns / 1000000000;
	st->st_atim.tv_nsec = r->atime_ns % 1000000000;
	st->st_mtim.tv_sec = r->mtime_ns / 1000000000;
	st->st_mtim.tv_nsec = r->mtime_ns % 1000000000;
	st->st_ctim.tv_sec = r->ctime_ns / 1000000000;
	st->st_ctim.tv_nsec = r->ctime_ns % 1000000000;
}

static struct fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/*
 * Each operation of the namespace has a core that answers it from this
 * node's checkpoints.  A node that does not own the volume (several nodes)
 * has none: it sends the operation to the owner (W_CKPT, sub-operation in
 * the request's mode), whose fs_ckpt_serve_ns runs the same core, so
 * `.checkpoints` reads the same through every node's mount.
 */
enum { NS_LOOKUP = 1, NS_GETATTR, NS_LIST, NS_READ, NS_SEEK };
#define NS_LIST_MAX 64 /* entries per listing round trip */

struct ns_ent {
	char name[POOL_META_NAME_MAX + 1];
	struct stat st;
	off_t cookie;
};

static int core_lookup(struct fs *fs, uint64_t parent, const char *name, struct stat *st)
{
	struct fs_volume *v;
	struct ckpt *k;
	uint32_t n;
	int rc;

	if (!fs_ckpt_is_ino(parent)) { /* the volume root's ".checkpoints" */
		v = fs_volume_by_id(fs, fs_ino_volid(parent));
		if (!v || !v->ckpt)
			return -ENOENT;
		ck_stat(v, NULL, 0, st);
		return 0;
	}
	if ((rc = resolve(fs, parent, &v, &k, &n)) < 0)
		return rc;
	if (!k) {
		struct ckpt *t = ck_by_name(v->ckpt, name);
		if (t && t->state == CK_READY)
			ck_stat(v, t, 0, st);
		else
			rc = -ENOENT;
	} else {
		int c = S_ISDIR(k->node[n].r.mode) ? child_node(k, n, name) : -1;
		if (c >= 0)
			ck_stat(v, k, (uint32_t)c, st);
		else
			rc = S_ISDIR(k->node[n].r.mode) ? -ENOENT : -ENOTDIR;
	}
	pthread_mutex_unlock(&v->ckpt->lock);
	return rc;
}

static int core_getattr(struct fs *fs, uint64_t ino, struct stat *st)
{
	struct fs_volume *v;
	struct ckpt *k;
	uint32_t n;
	int rc = resolve(fs, ino, &v, &k, &n);

	if (rc < 0)
		return rc;
	ck_stat(v, k, n, st);
	pthread_mutex_unlock(&v->ckpt->lock);
	return 0;
}

/* Entries of directory ino after the dots, from cookie off (2 + index),
 * at most max; *parent: the directory's parent (for ".."). */
static int core_list(struct fs *fs, uint64_t ino, off_t off, struct ns_ent *e, int max, int *ne,
		     uint64_t *parent)
{
	struct fs_volume *v;
	struct ckpt *k;
	uint32_t n;
	int rc = resolve(fs, ino, &v, &k, &n);

	*ne = 0;
	if (rc < 0)
		return rc;
	if (k && !S_ISDIR(k->node[n].r.mode)) {
		pthread_mutex_unlock(&v->ckpt->lock);
		return -ENOTDIR;
	}
	*parent = !k	   ? fs_ino_make(v, ROOT_VINO)
		  : n == 0 ? fs_ino_make(v, CK_BIT)
			   : ck_ino(v, k->id, k->node[n].r.parent);
	uint32_t count = k ? k->nnode : CK_MAX;
	for (uint32_t i = off >= 2 ? (uint32_t)(off - 2) : 0; i < count && *ne < max; i++) {
		struct ns_ent *x = &e[*ne];
		if (!k) {
			struct ckpt *t = v->ckpt->ck[i];
			if (!t || t->state != CK_READY)
				continue;
			ck_stat(v, t, 0, &x->st);
			snprintf(x->name, sizeof(x->name), "%s", t->name);
		} else {
			if (i == 0 || k->node[i].r.parent != n)
				continue;
			ck_stat(v, k, i, &x->st);
			snprintf(x->name, sizeof(x->name), "%s", k->node[i].r.name);
		}
		x->cookie = (off_t)(i + 3);
		(*ne)++;
	}
	pthread_mutex_unlock(&v->ckpt->lock);
	return 0;
}

static int file_view(struct fs *fs, uint64_t ino, struct fs_volume **vp, struct chain **chp,
		     uint32_t *top, uint64_t *size);

static ssize_t core_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, char *buf)
{
	struct fs_volume *v;
	struct chain *ch;
	uint32_t top;
	uint64_t fsize;
	int rc = file_view(fs, ino, &v, &ch, &top, &fsize);

	if (rc < 0)
		return rc;
	if (off >= fsize)
		size = 0;
	else if (off + size > fsize)
		size = (size_t)(fsize - off);
	ssize_t r = size ? view_read(v, ch, top, off, size, buf) : 0;
	pthread_rwlock_unlock(&ch->rw);
	return r;
}

static int core_seek(struct fs *fs, uint64_t ino, uint64_t off, int whence, uint64_t *at)
{
	struct fs_volume *v;
	struct chain *ch;
	uint32_t top;
	uint64_t fsize;
	int rc = file_view(fs, ino, &v, &ch, &top, &fsize);

	if (rc < 0)
		return rc;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		rc = -EINVAL;
	else
		rc = view_seek(v, ch, top, fsize, off, whence, at);
	pthread_rwlock_unlock(&ch->rw);
	return rc;
}

/* ---- the namespace through another node ---- */

static void attr_to_wire(const struct stat *st, struct wire_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->a.ino = fs_ino_vino(st->st_ino); /* the volume's part: a wire inode */
	a->a.mode = st->st_mode;
	a->a.uid = st->st_uid;
	a->a.gid = st->st_gid;
	a->a.nlink = (uint32_t)st->st_nlink;
	a->a.size = (uint64_t)st->st_size;
	a->a.atime_ns = st->st_atim.tv_sec * 1000000000ll + st->st_atim.tv_nsec;
	a->a.mtime_ns = st->st_mtim.tv_sec * 1000000000ll + st->st_mtim.tv_nsec;
	a->a.ctime_ns = st->st_ctim.tv_sec * 1000000000ll + st->st_ctim.tv_nsec;
	a->blocks = (uint64_t)st->st_blocks;
}

static void attr_from_wire(struct fs_volume *v, const struct wire_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = fs_ino_make(v, a->a.ino);
	st->st_mode = a->a.mode;
	st->st_uid = a->a.uid;
	st->st_gid = a->a.gid;
	st->st_nlink = a->a.nlink;
	st->st_size = (off_t)a->a.size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_atim.tv_sec = a->a.atime_ns / 1000000000;
	st->st_atim.tv_nsec = a->a.atime_ns % 1000000000;
	st->st_mtim.tv_sec = a->a.mtime_ns / 1000000000;
	st->st_mtim.tv_nsec = a->a.mtime_ns % 1000000000;
	st->st_ctim.tv_sec = a->a.ctime_ns / 1000000000;
	st->st_ctim.tv_nsec = a->a.ctime_ns % 1000000000;
}

/* The volume of ino if another node owns it (several nodes), else NULL:
 * answer here. */
static struct fs_volume *remote_vol(struct fs *fs, uint64_t ino)
{
	struct fs_volume *v = fs->node ? fs_volume_by_id(fs, fs_ino_volid(ino)) : NULL;

	if (!v || fs_volume_gone(v))
		return NULL;
	if (fs_vol_enter_local(v)) {
		fs_vol_leave(v);
		return NULL;
	}
	return v;
}

/* One namespace operation on the owner: 0 with *p (free *raw), or -errno. */
static int ns_call(struct fs *fs, struct fs_volume *v, uint32_t op, uint64_t ino, const char *name,
		   uint64_t off, uint64_t len, uint32_t flags, struct wire_rep *p, uint8_t **raw)
{
	char node[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
	uint64_t epoch;
	bool valid;

	fs_node_owner(v, node, addr, &epoch, &valid);
	if (!valid || !addr[0] || !strcmp(node, fs->node->name))
		return -EAGAIN; /* changing hands */
	struct wire_req q = {.type = W_CKPT,
			     .volid = v->id,
			     .vino = fs_ino_vino(ino),
			     .mode = op,
			     .flags = flags,
			     .off = off,
			     .len = len,
			     .name = name ? name : "",
			     .name2 = ""};
	*raw = NULL;
	memset(p, 0, sizeof(*p));
	int rc = fs_rpc_call(fs->node->rpc, addr, &q, p, raw);
	if (rc == 0 && p->err < 0)
		rc = p->err;
	if (rc < 0) {
		free(*raw);
		*raw = NULL;
	}
	return rc == FS_NOT_OWNER ? -EAGAIN : rc;
}

static int ns_attr(struct fs *fs, uint32_t op, uint64_t ino, const char *name, struct stat *st)
{
	struct fs_volume *v = remote_vol(fs, ino);

	if (!v)
		return op == NS_LOOKUP ? core_lookup(fs, ino, name, st) : core_getattr(fs, ino, st);
	struct wire_rep p;
	uint8_t *raw;
	int rc = ns_call(fs, v, op, ino, name, 0, 0, 0, &p, &raw);
	if (rc == 0 && !p.has_attr)
		rc = -EPROTO;
	if (rc == 0)
		attr_from_wire(v, &p.attr, st);
	free(raw);
	return rc;
}

static int ns_list(struct fs *fs, uint64_t ino, off_t off, struct ns_ent *e, int *ne,
		   uint64_t *parent)
{
	struct fs_volume *v = remote_vol(fs, ino);

	if (!v)
		return core_list(fs, ino, off, e, NS_LIST_MAX, ne, parent);
	struct wire_rep p;
	uint8_t *raw;
	int rc = ns_call(fs, v, NS_LIST, ino, NULL, (uint64_t)off, 0, 0, &p, &raw);
	*ne = 0;
	if (rc < 0)
		return rc;
	*parent = p.v1;
	struct wire_rd r = {.p = p.data, .len = p.ndata};
	char name[WIRE_NAME_MAX + 1];
	struct wire_attr a;
	uint64_t cookie;
	while (*ne < NS_LIST_MAX && (rc = wire_get_dirent(&r, &cookie, name, &a)) == 1) {
		snprintf(e[*ne].name, sizeof(e[*ne].name), "%s", name);
		attr_from_wire(v, &a, &e[*ne].st);
		e[(*ne)++].cookie = (off_t)cookie;
	}
	free(raw);
	return rc < 0 ? rc : 0;
}

static ssize_t ns_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, char *buf)
{
	struct fs_volume *v = remote_vol(fs, ino);

	if (!v)
		return core_read(fs, ino, off, size, buf);
	struct wire_rep p;
	uint8_t *raw;
	int rc = ns_call(fs, v, NS_READ, ino, NULL, off, size, 0, &p, &raw);
	if (rc < 0)
		return rc;
	ssize_t n = p.ndata <= size ? (ssize_t)p.ndata : -EPROTO;
	if (n > 0)
		memcpy(buf, p.data, (size_t)n);
	free(raw);
	return n;
}

static int ns_seek(struct fs *fs, uint64_t ino, uint64_t off, int whence, uint64_t *at)
{
	struct fs_volume *v = remote_vol(fs, ino);

	if (!v)
		return core_seek(fs, ino, off, whence, at);
	struct wire_rep p;
	uint8_t *raw;
	int rc = ns_call(fs, v, NS_SEEK, ino, NULL, off, 0, (uint32_t)whence, &p, &raw);
	if (rc == 0)
		*at = p.v1;
	free(raw);
	return rc;
}

void fs_ckpt_serve_ns(struct fs *fs, const struct wire_req *q, struct wire_rep *p, uint8_t **out)
{
	struct fs_volume *v = fs_volume_by_id(fs, q->volid);
	uint64_t ino = v ? fs_ino_make(v, q->vino) : 0;
	struct stat st;

	if (!v || fs_volume_gone(v) || !fs_vol_enter_local(v)) {
		p->err = FS_NOT_OWNER;
		return;
	}
	if (q->mode == NS_LOOKUP || q->mode == NS_GETATTR) {
		p->err = q->mode == NS_LOOKUP ? core_lookup(fs, ino, q->name, &st)
					      : core_getattr(fs, ino, &st);
		if (p->err == 0) {
			attr_to_wire(&st, &p->attr);
			p->has_attr = true;
		}
	} else if (q->mode == NS_LIST) {
		struct ns_ent *e = calloc(NS_LIST_MAX, sizeof(*e));
		struct wire_buf b = {0};
		int ne = 0;
		p->err =
		    e ? core_list(fs, ino, (off_t)q->off, e, NS_LIST_MAX, &ne, &p->v1) : -ENOMEM;
		for (int i = 0; p->err == 0 && i < ne; i++) {
			struct wire_attr a;
			attr_to_wire(&e[i].st, &a);
			wire_put_dirent(&b, (uint64_t)e[i].cookie, e[i].name, &a);
		}
		free(e);
		if (p->err == 0 && b.err)
			p->err = b.err;
		if (p->err == 0) {
			*out = b.p;
			p->data = b.p;
			p->ndata = (uint32_t)b.len;
		} else {
			wire_buf_free(&b);
		}
	} else if (q->mode == NS_READ) {
		char *buf = NULL;
		ssize_t n = q->len > WIRE_MAX_DATA ? -EINVAL
			    : posix_memalign((void **)&buf, 4096, q->len ? q->len : 1)
				? -ENOMEM
				: core_read(fs, ino, q->off, q->len, buf);
		if (n < 0) {
			free(buf);
			p->err = (int32_t)n;
		} else {
			*out = (uint8_t *)buf;
			p->data = *out;
			p->ndata = (uint32_t)n;
		}
	} else if (q->mode == NS_SEEK) {
		p->err = core_seek(fs, ino, q->off, (int)q->flags, &p->v1);
	} else {
		p->err = -EPROTO;
	}
	fs_vol_leave(v);
}

/* ---- FUSE handlers ---- */

static void reply_entry(fuse_req_t req, struct fs *fs, const struct stat *st)
{
	struct fuse_entry_param e = {.attr_timeout = fs->opt.attr_timeout,
				     .entry_timeout = fs->opt.entry_timeout};

	e.attr = *st;
	e.ino = st->st_ino;
	fuse_reply_entry(req, &e);
}

void fs_ckpt_lookup(fuse_req_t req, uint64_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	struct stat st;
	int rc = ns_attr(fs, NS_LOOKUP, parent, name, &st);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(req, fs, &st);
}

void fs_ckpt_getattr(fuse_req_t req, uint64_t ino)
{
	struct fs *fs = req_fs(req);
	struct stat st;
	int rc = ns_attr(fs, NS_GETATTR, ino, NULL, &st);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, fs->opt.attr_timeout);
}

void fs_ckpt_open(fuse_req_t req, uint64_t ino, struct fuse_file_info *fi, bool dir)
{
	struct stat st;
	int rc = ns_attr(req_fs(req), NS_GETATTR, ino, NULL, &st);

	if (rc == 0 && !dir && (fi->flags & O_ACCMODE) != O_RDONLY)
		rc = -EROFS;
	else if (rc == 0 && dir != S_ISDIR(st.st_mode))
		rc = dir ? -ENOTDIR : -EISDIR;
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = 0;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

void fs_ckpt_readdir(fuse_req_t req, uint64_t ino, size_t size, off_t off, bool plus)
{
	struct fs *fs = req_fs(req);
	struct ns_ent *e = calloc(NS_LIST_MAX, sizeof(*e));
	char *buf = calloc(1, size ? size : 1);
	uint64_t parent = 0;
	int ne = 0, rc = e && buf ? 0 : -ENOMEM;
	off_t next = off;
	size_t used = 0;

	if (rc == 0)
		rc = ns_list(fs, ino, off, e, &ne, &parent);
	if (rc == 0)
		used = fs_add_dots(req, buf, size, off, ino, parent, plus, &next);
	for (int i = 0; rc == 0 && i < ne; i++) {
		struct fuse_entry_param x = {.attr_timeout = fs->opt.attr_timeout,
					     .entry_timeout = fs->opt.entry_timeout};
		x.attr = e[i].st;
		x.ino = e[i].st.st_ino;
		size_t w =
		    fs_add_entry(req, buf + used, size - used, e[i].name, &x, e[i].cookie, plus);
		if (!w)
			break;
		used += w;
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
	free(e);
}

/* The chain and view top of a checkpoint file, chain lock taken shared. */
static int file_view(struct fs *fs, uint64_t ino, struct fs_volume **vp, struct chain **chp,
		     uint32_t *top, uint64_t *size)
{
	struct ckpt *k;
	uint32_t n;
	int rc = resolve(fs, ino, vp, &k, &n);

	if (rc < 0)
		return rc;
	struct fs_ckpt *c = (*vp)->ckpt;
	if (!k || !S_ISREG(k->node[n].r.mode)) {
		pthread_mutex_unlock(&c->lock);
		return -EISDIR;
	}
	uint32_t id = k->id;
	*size = k->node[n].r.size;
	struct chain *ch = chain_find(c, k->node[n].r.base);
	pthread_mutex_unlock(&c->lock);
	if (!ch)
		return -ESTALE;
	pthread_rwlock_rdlock(&ch->rw);
	/* a merge that began since c->lock was dropped folds later granules
	 * into what this view reads: that checkpoint reads ESTALE */
	int li = layer_of(ch, id);
	if (li <= 0 || ch->l[li].merging) {
		pthread_rwlock_unlock(&ch->rw);
		return -ESTALE;
	}
	*chp = ch;
	*top = (uint32_t)li - 1;
	return 0;
}

void fs_ckpt_read_req(fuse_req_t req, uint64_t ino, size_t size, off_t off)
{
	char *buf = NULL;
	ssize_t r = 0;

	if (size && posix_memalign((void **)&buf, 4096, size) != 0)
		r = -ENOMEM;
	else if (size)
		r = ns_read(req_fs(req), ino, (uint64_t)off, size, buf);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

void fs_ckpt_lseek(fuse_req_t req, uint64_t ino, off_t off, int whence)
{
	uint64_t at = 0;
	int rc = ns_seek(req_fs(req), ino, (uint64_t)off, whence, &at);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_lseek(req, (off_t)at);
}
