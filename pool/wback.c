/*
 * wback.c -- the write-back index and its flusher (see wback.h for what
 * they are for and how they stay out of the data path's way).
 *
 * Records are queued in arrival (journal) order, each with a private copy
 * of its pieces.  The index is a chained hash of 4 KiB blocks: (file,
 * position, chunk block) -> the newest record holding that block and where
 * in its copy.  A newer record over the same block repoints the entry;
 * the older record then holds one live block less.  A record is freed
 * once it is applied (or superseded everywhere) and no entry points to
 * it, so memory held is the bytes of records not yet freed.
 *
 * A flush takes the whole queue, sorts it by (file, stripe) keeping
 * arrival order inside a stripe, and writes each stripe's blocks once,
 * with the bytes the index holds for them now (which may come from a
 * record queued after the batch was taken: writing newer bytes early is
 * harmless, that record will write them again or find nothing to do), in
 * runs of contiguous blocks per position.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layout/layout.h"
#include "pool/wback.h"

#define BLK POOL_JOURNAL_BLOCK
/* Stripes one flush round writes in one submission at most. */
#define ROUND_STRIPES 64

struct wrec {
	struct wrec *next;	/* queue order */
	struct pool_file_map f; /* the file's map when written */
	uint64_t stripe;
	uint64_t order; /* arrival, to keep order inside a stripe */
	uint64_t bytes; /* of data */
	uint32_t live;	/* index entries pointing here */
	int applied;	/* in place (or written by a newer record's flush) */
	int reported;	/* cfg.done was called for it (it may have failed since) */
	uint32_t npiece;
	struct pool_journal_piece *piece; /* npiece, then the data, in this allocation */
};

struct entry {
	struct entry *next;
	uint64_t id, blk; /* file, chunk block */
	uint32_t pos;
	struct wrec *r;
	const uint8_t *p;
};

struct pool_wb {
	struct pool_wb_config cfg;
	char volume[128];
	struct stripelock *fl; /* flush locks */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* queue changed, room made, batch done */
	struct wrec *head, **tail;
	uint64_t nqueued, order;
	int flushing, stop;
	int failing;  /* the last batch had records that could not be written: requeued */
	int draining; /* someone waits for everything to be applied: no holding back */
	struct entry **bucket;
	size_t nbucket; /* a power of two */
	size_t nentry;
	pthread_t thr;
	int have_thr;
	struct pool_wb_stats st;
	uint64_t rate_mark, rate_t; /* applied count and time (ms) of the last rate sample */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static size_t slot(const struct pool_wb *wb, uint64_t id, uint32_t pos, uint64_t blk)
{
	uint64_t h = id * 0x9e3779b97f4a7c15ull ^ (blk * 0xbf58476d1ce4e5b9ull) ^ pos;
	h ^= h >> 31;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 29;
	return (size_t)(h & (wb->nbucket - 1));
}

static struct entry **find(struct pool_wb *wb, uint64_t id, uint32_t pos, uint64_t blk)
{
	struct entry **e = &wb->bucket[slot(wb, id, pos, blk)];
	while (*e && !((*e)->id == id && (*e)->pos == pos && (*e)->blk == blk))
		e = &(*e)->next;
	return e;
}

/* Free r if nothing needs it any more (mu held). */
static void rec_release(struct pool_wb *wb, struct wrec *r)
{
	if (!r->applied || r->live)
		return;
	wb->st.held -= r->bytes;
	free(r);
	pthread_cond_broadcast(&wb->cv); /* room for waiting writers */
}

static void *flusher(void *arg);

int pool_wb_new(const struct pool_wb_config *cfg, struct pool_wb **out)
{
	struct pool_wb *wb = calloc(1, sizeof(*wb));

	if (!wb)
		return -ENOMEM;
	wb->cfg = *cfg;
	snprintf(wb->volume, sizeof(wb->volume), "%s", cfg->volume ? cfg->volume : "?");
	wb->cfg.volume = wb->volume;
	wb->nbucket = 1024;
	while (wb->nbucket < cfg->limit / BLK && wb->nbucket < (1u << 22))
		wb->nbucket *= 2;
	wb->bucket = calloc(wb->nbucket, sizeof(*wb->bucket));
	if (!wb->bucket || stripelock_new(0, &wb->fl) < 0) {
		free(wb->bucket);
		free(wb);
		return -ENOMEM;
	}
	pthread_mutex_init(&wb->mu, NULL);
	pthread_cond_init(&wb->cv, NULL);
	wb->tail = &wb->head;
	wb->st.limit = cfg->limit;
	wb->rate_t = now_ms();
	if (!cfg->no_thread && !cfg->defer_thread && pool_wb_start(wb) < 0) {
		pool_wb_free(wb);
		return -EAGAIN;
	}
	*out = wb;
	return 0;
}

int pool_wb_start(struct pool_wb *wb)
{
	if (wb->have_thr || wb->cfg.no_thread)
		return 0;
	if (pthread_create(&wb->thr, NULL, flusher, wb) != 0)
		return -EAGAIN;
	wb->have_thr = 1;
	return 0;
}

/* ---- adding ---------------------------------------------------------------- */

static void entries_free(struct entry *e)
{
	while (e) {
		struct entry *next = e->next;
		free(e);
		e = next;
	}
}

/* Point block (id, pos, blk) at p of r (mu held).  A new entry comes
 * from *spare, allocated before the record was queued: once queued, a
 * record must have every block in the index, or the flusher would not
 * apply it and reads would not see it. */
static void index_put(struct pool_wb *wb, uint64_t id, uint32_t pos, uint64_t blk, struct wrec *r,
		      const uint8_t *p, struct entry **spare)
{
	struct entry **e = find(wb, id, pos, blk);
	if (*e) {
		struct wrec *old = (*e)->r;
		(*e)->r = r;
		(*e)->p = p;
		r->live++;
		old->live--;
		rec_release(wb, old);
		return;
	}
	struct entry *n = *spare;
	assert(n);
	*spare = n->next;
	*n = (struct entry){.id = id, .blk = blk, .pos = pos, .r = r, .p = p};
	*e = n;
	wb->nentry++;
	r->live++;
}

static struct wrec *rec_copy(const struct pool_file_map *f, const struct pool_journal_rec *r)
{
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < r->npiece; i++)
		bytes += r->piece[i].len;
	struct wrec *w = malloc(sizeof(*w) + r->npiece * sizeof(*w->piece) + bytes);
	if (!w)
		return NULL;
	memset(w, 0, sizeof(*w));
	w->f = *f;
	w->stripe = r->stripe;
	w->bytes = bytes;
	w->npiece = r->npiece;
	w->piece = (struct pool_journal_piece *)(w + 1);
	uint8_t *d = (uint8_t *)(w->piece + r->npiece);
	for (uint32_t i = 0; i < r->npiece; i++) {
		w->piece[i] = r->piece[i];
		memcpy(d, r->piece[i].buf, r->piece[i].len);
		w->piece[i].buf = d;
		d += r->piece[i].len;
	}
	return w;
}

int pool_wb_add(struct pool_wb *wb, const struct pool_file_map *f, const struct pool_journal_rec *r,
		size_t n)
{
	struct wrec *w[2 * LAYOUT_MAX_POSITIONS];
	uint64_t bytes = 0;
	struct entry *spare = NULL;

	/* All copies and index entries first: either every record is queued
	 * with every block in the index, or none is. */
	if (n > sizeof(w) / sizeof(w[0]))
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		w[i] = r[i].npiece <= POOL_JOURNAL_MAX_PIECES ? rec_copy(f, &r[i]) : NULL;
		for (uint64_t b = 0; w[i] && b < w[i]->bytes / BLK; b++) {
			struct entry *e = malloc(sizeof(*e));
			if (!e) {
				free(w[i]);
				w[i] = NULL;
				break;
			}
			e->next = spare;
			spare = e;
		}
		if (!w[i]) {
			while (i-- > 0)
				free(w[i]);
			entries_free(spare);
			return -ENOMEM;
		}
		bytes += w[i]->bytes;
	}
	pthread_mutex_lock(&wb->mu);
	/* Back-pressure: wait for the flusher while full (the records always
	 * fit an empty cache, whatever their size). */
	if (wb->st.held && wb->st.held + bytes > wb->cfg.limit)
		wb->st.waits++;
	while (wb->st.held && wb->st.held + bytes > wb->cfg.limit)
		pthread_cond_wait(&wb->cv, &wb->mu);
	for (size_t i = 0; i < n; i++) {
		w[i]->order = wb->order++;
		wb->st.held += w[i]->bytes;
		for (uint32_t p = 0; p < w[i]->npiece; p++)
			for (uint32_t b = 0; b < w[i]->piece[p].len / BLK; b++)
				index_put(wb, f->id, w[i]->piece[p].pos,
					  w[i]->piece[p].off / BLK + b, w[i],
					  w[i]->piece[p].buf + (size_t)b * BLK, &spare);
		*wb->tail = w[i];
		wb->tail = &w[i]->next;
		wb->nqueued++;
	}
	wb->st.queued = wb->nqueued;
	pthread_cond_broadcast(&wb->cv);
	pthread_mutex_unlock(&wb->mu);
	entries_free(spare); /* blocks already in the index needed none */
	return 0;
}

/* ---- reading --------------------------------------------------------------- */

void pool_wb_read_begin(struct pool_wb *wb, uint64_t id, uint64_t first, uint64_t last,
			struct stripelock_set *set)
{
	stripelock_lock(wb->fl, id, first, last, 0, set);
}

void pool_wb_read_end(struct pool_wb *wb, const struct stripelock_set *set)
{
	stripelock_unlock(wb->fl, set);
}

size_t pool_wb_overlay(struct pool_wb *wb, uint64_t id, uint32_t pos, uint64_t off, uint32_t len,
		       uint8_t *buf)
{
	size_t hits = 0;

	pthread_mutex_lock(&wb->mu);
	if (wb->nentry) {
		for (uint32_t b = 0; b < len / BLK; b++) {
			struct entry *e = *find(wb, id, pos, off / BLK + b);
			if (e) {
				memcpy(buf + (size_t)b * BLK, e->p, BLK);
				hits++;
			}
		}
	}
	pthread_mutex_unlock(&wb->mu);
	return hits;
}

/* ---- flushing -------------------------------------------------------------- */

static int by_stripe(const void *a, const void *b)
{
	const struct wrec *x = *(struct wrec *const *)a, *y = *(struct wrec *const *)b;
	if (x->f.id != y->f.id)
		return x->f.id < y->f.id ? -1 : 1;
	if (x->stripe != y->stripe)
		return x->stripe < y->stripe ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* The gathered writes of one stripe, appended to piece[*np..] with their
 * bytes at *d: each block of records g[0..n) (all of that stripe) once,
 * with the index's (newest) bytes, in runs per position.  The caller
 * sized piece[] and the buffer for every block of the records.  0 or
 * -ENOMEM. */
static int gather(struct pool_wb *wb, struct wrec *const *g, size_t n, uint8_t **d,
		  struct pool_journal_piece *piece, uint32_t *np)
{
	uint32_t rows = wb->cfg.interleave / BLK, npos = g[n - 1]->f.npos;
	uint8_t *seen = calloc((size_t)npos * rows, 1);

	if (!seen)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		for (uint32_t p = 0; p < g[i]->npiece; p++) {
			const struct pool_journal_piece *pc = &g[i]->piece[p];
			uint32_t row = (uint32_t)(pc->off % wb->cfg.interleave / BLK);
			for (uint32_t b = 0; b < pc->len / BLK && pc->pos < npos; b++)
				if (seen[(size_t)pc->pos * rows + row + b]++)
					wb->st.superseded += BLK;
		}
	uint64_t id = g[0]->f.id, base = g[0]->stripe * wb->cfg.interleave;
	uint32_t first = *np;
	for (uint32_t pos = 0; pos < npos; pos++) {
		for (uint32_t row = 0; row < rows; row++) {
			if (!seen[(size_t)pos * rows + row])
				continue;
			uint64_t off = base + (uint64_t)row * BLK;
			const struct entry *e = *find(wb, id, pos, off / BLK);
			if (!e) /* cannot be: the batch's records hold their blocks */
				continue;
			memcpy(*d, e->p, BLK);
			struct pool_journal_piece *last = *np > first ? &piece[*np - 1] : NULL;
			if (last && last->pos == pos && last->off + last->len == off)
				last->len += BLK;
			else
				piece[(*np)++] = (struct pool_journal_piece){
				    .pos = pos, .len = BLK, .off = off, .buf = *d};
			*d += BLK;
			wb->st.written += BLK;
		}
	}
	free(seen);
	return 0;
}

/* Drop the index entries that still point at records g[0..n) (mu held). */
static void forget(struct pool_wb *wb, struct wrec *const *g, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct wrec *r = g[i];
		for (uint32_t p = 0; p < r->npiece; p++)
			for (uint32_t b = 0; b < r->piece[p].len / BLK; b++) {
				struct entry **e =
				    find(wb, r->f.id, r->piece[p].pos, r->piece[p].off / BLK + b);
				if (*e && (*e)->r == r) {
					struct entry *x = *e;
					*e = x->next;
					free(x);
					wb->nentry--;
					r->live--;
				}
			}
		r->applied = 1;
	}
	for (size_t i = 0; i < n; i++)
		rec_release(wb, g[i]);
}

static int by_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Write records g[0..n) -- one file, sorted by stripe -- in place in one
 * apply (one submission of every stripe's gathered writes), under the
 * flush locks of their stripe range. */
static int flush_round(struct pool_wb *wb, struct wrec *const *g, size_t n)
{
	uint64_t blocks = 0;
	size_t newest = 0;
	for (size_t i = 0; i < n; i++) {
		blocks += g[i]->bytes / BLK;
		if (g[i]->order > g[newest]->order)
			newest = i;
	}
	/* at most one piece per block */
	struct pool_journal_piece *piece = malloc((blocks ? blocks : 1) * sizeof(*piece));
	uint8_t *buf = NULL, *d;
	struct stripelock_set set;
	uint32_t np = 0, nst = 0;
	int rc =
	    piece && !posix_memalign((void **)&buf, BLK, (blocks ? blocks : 1) * BLK) ? 0 : -ENOMEM;

	/* the flush locks of exactly the round's stripes (a range from the
	 * first to the last would lock most of the table for random writes,
	 * and every read waits for them) */
	uint32_t *slot = malloc(n * sizeof(*slot)), nslot = 0;
	for (size_t i = 0; slot && i < n; i++)
		slot[nslot++] = stripelock_slot(wb->fl, g[i]->f.id, g[i]->stripe);
	if (slot) {
		qsort(slot, nslot, sizeof(*slot), by_u32);
		uint32_t k = 0;
		for (uint32_t i = 0; i < nslot; i++)
			if (k == 0 || slot[i] != slot[k - 1])
				slot[k++] = slot[i];
		nslot = k;
		stripelock_lock_slots(wb->fl, slot, nslot, 1);
	} else {
		stripelock_lock(wb->fl, g[0]->f.id, g[0]->stripe, g[n - 1]->stripe, 1, &set);
	}
	pthread_mutex_lock(&wb->mu);
	d = buf;
	for (size_t a = 0, b; rc == 0 && a < n; a = b, nst++) {
		for (b = a + 1; b < n && g[b]->stripe == g[a]->stripe; b++)
			;
		rc = gather(wb, g + a, b - a, &d, piece, &np);
	}
	pthread_mutex_unlock(&wb->mu);
	/* the newest map: a position may have moved since the oldest record */
	if (rc == 0 && np > 0)
		rc = wb->cfg.apply(wb->cfg.arg, &g[newest]->f, piece, np);
	/* no memory to gather: each record as it was logged, in order (a
	 * newer record of the same block comes later and wins) */
	if (rc == -ENOMEM) {
		rc = 0;
		for (size_t i = 0; i < n; i++) {
			int e = wb->cfg.apply(wb->cfg.arg, &g[i]->f, g[i]->piece, g[i]->npiece);
			rc = rc < 0 ? rc : e;
		}
	}
	/* Not written: the records stay (reads keep seeing them), are tried
	 * again, and hold the journal (no checkpoint drops them meanwhile; a
	 * close leaves them for the replay at the next open). */
	if (rc < 0 && !wb->failing)
		fprintf(stderr,
			"spacefs: volume %s: write-back: file %016" PRIx64 " stripes %" PRIu64
			"-%" PRIu64 ": writing %zu record(s) in place failed: %s; kept in memory "
			"and in the journal, tried again every second\n",
			wb->volume, g[0]->f.id, g[0]->stripe, g[n - 1]->stripe, n, strerror(-rc));
	pthread_mutex_lock(&wb->mu);
	if (rc == 0) {
		forget(wb, g, n);
		wb->st.stripes += nst;
	}
	pthread_mutex_unlock(&wb->mu);
	free(buf);
	free(piece);
	if (slot)
		stripelock_unlock_slots(wb->fl, slot, nslot);
	else
		stripelock_unlock(wb->fl, &set);
	free(slot);
	return rc;
}

static int by_order(const void *a, const void *b)
{
	const struct wrec *x = *(struct wrec *const *)a, *y = *(struct wrec *const *)b;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Records f[0..n) could not be written: back to the head of the queue in
 * arrival order, before anything queued meanwhile (mu held). */
static void requeue(struct pool_wb *wb, struct wrec **f, size_t n)
{
	qsort(f, n, sizeof(*f), by_order);
	for (size_t i = 0; i + 1 < n; i++)
		f[i]->next = f[i + 1];
	f[n - 1]->next = wb->head;
	if (!wb->head)
		wb->tail = &f[n - 1]->next;
	wb->head = f[0];
	wb->nqueued += n;
}

size_t pool_wb_flush(struct pool_wb *wb)
{
	pthread_mutex_lock(&wb->mu);
	while (wb->flushing) /* one batch at a time, in order */
		pthread_cond_wait(&wb->cv, &wb->mu);
	struct wrec *list = wb->head;
	size_t n = wb->nqueued;
	wb->head = NULL;
	wb->tail = &wb->head;
	wb->nqueued = 0;
	wb->flushing = n > 0;
	pthread_mutex_unlock(&wb->mu);
	if (n == 0)
		return 0;

	/* v: the batch, fv: what failed, n each.  Without memory for them:
	 * one record at a time, in order; from the first that fails on, the
	 * rest is requeued untried (fv is then the list itself). */
	struct wrec **v = malloc(2 * n * sizeof(*v)), **fv = v ? v + n : NULL;
	struct wrec *fl = NULL;
	size_t nfail = 0, fresh = 0, i = 0;
	for (struct wrec *r = list; r && i < n; r = r->next, i++) {
		fresh += !r->reported;
		r->reported = 1;
		if (v)
			v[i] = r;
	}
	if (v) {
		qsort(v, n, sizeof(*v), by_stripe);
		/* rounds of one file and at most ROUND_STRIPES stripes: one
		 * submission each, the flush locks held for one round only */
		for (size_t a = 0, b; a < n; a = b) {
			uint32_t nst = 1;
			for (b = a + 1; b < n && v[b]->f.id == v[a]->f.id; b++)
				if (v[b]->stripe != v[b - 1]->stripe && ++nst > ROUND_STRIPES)
					break;
			if (flush_round(wb, v + a, b - a) < 0)
				for (size_t k = a; k < b; k++)
					fv[nfail++] = v[k];
		}
	} else {
		for (struct wrec *r = list, *nx; r && !fl; r = nx) {
			nx = r->next;
			if (flush_round(wb, &r, 1) < 0)
				fl = r;
		}
		for (struct wrec *r = fl; r; r = r->next)
			nfail++;
	}
	/* The journal must keep what failed before it hears of it as done. */
	if (nfail && wb->cfg.hold)
		wb->cfg.hold(wb->cfg.arg, 1);
	if (wb->cfg.done && fresh)
		wb->cfg.done(wb->cfg.arg, fresh);

	pthread_mutex_lock(&wb->mu);
	if (nfail && fv) {
		requeue(wb, fv, nfail);
	} else if (nfail) { /* fl..: still linked in arrival order */
		struct wrec *last = fl;
		while (last->next)
			last = last->next;
		last->next = wb->head;
		if (!wb->head)
			wb->tail = &last->next;
		wb->head = fl;
		wb->nqueued += nfail;
	}
	int released = !nfail && wb->failing;
	wb->failing = nfail > 0;
	wb->st.applied += n - nfail;
	wb->st.queued = wb->nqueued;
	uint64_t t = now_ms();
	if (t - wb->rate_t >= 1000) {
		wb->st.rate = (wb->st.applied - wb->rate_mark) * 1000 / (t - wb->rate_t);
		wb->rate_mark = wb->st.applied;
		wb->rate_t = t;
	}
	wb->flushing = 0;
	pthread_cond_broadcast(&wb->cv);
	pthread_mutex_unlock(&wb->mu);
	free(v);
	if (released && wb->cfg.hold) /* everything held is in place now */
		wb->cfg.hold(wb->cfg.arg, 0);
	return n - nfail;
}

/* Wait on wb->cv until ms have passed, stop is set or (unless failing)
 * someone drains (mu held). */
static void wait_ms(struct pool_wb *wb, uint32_t ms, int failing)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while (!wb->stop && (failing || !wb->draining) &&
	       pthread_cond_timedwait(&wb->cv, &wb->mu, &until) == 0)
		;
}

static void *flusher(void *arg)
{
	struct pool_wb *wb = arg;

	for (;;) {
		pthread_mutex_lock(&wb->mu);
		while (!wb->head && !wb->stop)
			pthread_cond_wait(&wb->cv, &wb->mu);
		if (!wb->stop && wb->failing) /* a disk is away: try again in a while */
			wait_ms(wb, 1000, 1);
		else if (!wb->stop && wb->cfg.hold_ms) /* tests: keep records unapplied */
			wait_ms(wb, wb->cfg.hold_ms, 0);
		/* stopping: what cannot be written stays in the journal */
		int quit = wb->stop && (!wb->head || wb->failing);
		pthread_mutex_unlock(&wb->mu);
		if (quit)
			return NULL;
		pool_wb_flush(wb);
	}
}

int pool_wb_drain(struct pool_wb *wb)
{
	int rc;

	if (!wb->have_thr) {
		while (pool_wb_flush(wb))
			;
		pthread_mutex_lock(&wb->mu);
		rc = wb->failing ? -EIO : 0;
		pthread_mutex_unlock(&wb->mu);
		return rc;
	}
	pthread_mutex_lock(&wb->mu);
	wb->draining++;
	pthread_cond_broadcast(&wb->cv);
	/* until everything is in place, or what is left cannot be written */
	while ((wb->head && !wb->failing) || wb->flushing)
		pthread_cond_wait(&wb->cv, &wb->mu);
	rc = wb->failing ? -EIO : 0;
	wb->draining--;
	pthread_mutex_unlock(&wb->mu);
	return rc;
}

void pool_wb_stats(struct pool_wb *wb, struct pool_wb_stats *out)
{
	pthread_mutex_lock(&wb->mu);
	*out = wb->st;
	if (now_ms() - wb->rate_t > 3000) /* idle: nothing applied lately */
		out->rate = 0;
	pthread_mutex_unlock(&wb->mu);
}

void pool_wb_free(struct pool_wb *wb)
{
	if (!wb)
		return;
	(void)pool_wb_drain(wb);
	if (wb->have_thr) {
		pthread_mutex_lock(&wb->mu);
		wb->stop = 1;
		pthread_cond_broadcast(&wb->cv);
		pthread_mutex_unlock(&wb->mu);
		pthread_join(wb->thr, NULL);
	}
	for (size_t i = 0; i < wb->nbucket; i++)
		for (struct entry *e = wb->bucket[i], *n; e; e = n) {
			n = e->next;
			free(e);
		}
	for (struct wrec *r = wb->head, *n; r; r = n) { /* not written: in the journal */
		n = r->next;
		free(r);
	}
	free(wb->bucket);
	stripelock_free(wb->fl);
	pthread_mutex_destroy(&wb->mu);
	pthread_cond_destroy(&wb->cv);
	free(wb);
}
