/*
 * check.c -- checking, resyncing and repairing stripes; moving a
 * position to another disk.
 *
 * pool_store_check reads batches of stripes whole, through the same two
 * I/O phases as the data path (store.c), and judges every block: its
 * bytes against its stored CRC-32C, mirror copies against each other,
 * parity columns against the data.  What it then does depends on the
 * mode: count (scrub), repair (rewrite what is bad from a good source),
 * rebuild (write the positions of a replaced disk), or resync (after a
 * crash, the dirty-region log's regions: data and checksums may disagree
 * because a write was torn).  A resync never blesses damage: a block whose
 * bytes disagree with its checksum is first rebuilt from the other
 * columns or copies; if that matches the stored checksum the block was
 * rotten and is healed.  Only a block no source can make match is taken
 * as a torn write, re-checksummed, and named in one log line.
 *
 * The read path calls back in here (store_heal) to self-heal the stripes
 * in which it met a bad block.  pool_store_copy_position moves a
 * position's chunk files to another disk for disk retire.
 */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool/store_priv.h"

/* Buffers of one pool_store_check batch: `n` consecutive stripes; per
 * position one contiguous buffer of n interleaves (read and written as
 * one I/O each), and per position and block: bad (read failed or
 * checksum) and write.  Block b of a position is stripe first + b / nblk,
 * row b % nblk. */
struct chk {
	uint32_t nblk;	 /* blocks per interleave */
	uint32_t maxn;	 /* stripes the buffers hold */
	uint32_t span;	 /* blocks per position in this batch: n * nblk */
	uint64_t first;	 /* first stripe of the batch */
	uint8_t *buf;	 /* npos * maxn * interleave */
	uint8_t *rbad;	 /* per read (cio order) and block */
	uint8_t *bad;	 /* per position and block: 0, BAD_IO or BAD_CSUM */
	uint8_t *wr;	 /* per position and block: rewrite */
	uint8_t *par;	 /* m interleaves of fresh parity */
	uint32_t *rcrc;	 /* per read (cio order) and block: stored checksum */
	uint32_t *crc;	 /* per position and block: stored checksum */
	uint32_t *er;	 /* parity: per block of the batch, its erased slots */
	uint8_t *trial;	 /* parity resync: m blocks for trial rebuilds */
	uint64_t live;	 /* positions read */
	uint64_t tgt;	 /* positions rebuilt */
	uint64_t exists; /* positions whose chunk file exists */
	/* Settling a failed write (store_settle): the caller holds the
	 * stripe locks; mirror copies of `prefer` win when they verify, and
	 * only mirror blocks of file bytes [lo, hi) are judged (the caller's
	 * locks cover no more); wfail collects positions whose repair writes
	 * failed.  Otherwise settling 0, prefer 0, [0, UINT64_MAX). */
	int settling;
	uint64_t prefer, lo, hi, wfail;
	unsigned flags;
	struct pool_check_stats *st;
};

static size_t cidx(const struct chk *k, uint32_t pos, uint32_t b)
{
	return (size_t)pos * k->maxn * k->nblk + b;
}

static uint8_t *cbuf(const struct pool_store *s, struct chk *k, uint32_t pos, uint32_t b)
{
	(void)s;
	return k->buf + cidx(k, pos, b) * BLK;
}

static int cbad(const struct chk *k, uint32_t pos, uint32_t b)
{
	return k->bad[cidx(k, pos, b)];
}

static uint64_t cstripe(const struct chk *k, uint32_t b)
{
	return k->first + b / k->nblk;
}

/* Does `blk` match the checksum stored for position pos block b?  Only
 * asked of positions whose read succeeded (their checksum is known). */
static int cmatch(const struct chk *k, uint32_t pos, uint32_t b, const uint8_t *blk)
{
	uint32_t got;

	return k->bad[cidx(k, pos, b)] != BAD_IO &&
	       store_block_ok(blk, k->crc[cidx(k, pos, b)], &got);
}

/* A resync keeps a block that disagrees with its checksum only when no
 * other source could make it agree: a write torn by a crash. */
static void log_torn(struct pool_store *s, const struct pool_file_map *f, const struct chk *k,
		     uint32_t pos, uint32_t b)
{
	store_log(s,
		  "resync: file %016" PRIx64 " disk %s position %u chunk offset %" PRIu64
		  ": no copy or rebuild matches the stored checksum; keeping the block as "
		  "written (torn write) and re-deriving its checksum",
		  f->id, s->disk[f->disk[pos]].path, pos,
		  cstripe(k, b) * s->g.interleave + (uint64_t)(b % k->nblk) * BLK);
}

/* Mark position pos block b to be written with `from` (unless it is it). */
static void cfix(struct pool_store *s, const struct pool_file_map *f, struct chk *k, uint32_t pos,
		 uint32_t b, const uint8_t *from, int counts)
{
	uint8_t *to = cbuf(s, k, pos, b);

	if (to != from)
		memcpy(to, from, BLK);
	k->wr[cidx(k, pos, b)] = 1;
	if (counts) {
		k->st->bad++;
		if (k->flags & POOL_CHECK_REPAIR) {
			k->st->repaired++;
			if (!k->settling) /* a failed write undone is no heal */
				store_count(&s->disk[f->disk[pos]].c.healed, 1);
		}
	}
}

/* RESYNC, every live copy of a mirror block disagrees with its own
 * checksum.  A copy that matches another copy's checksum is a version
 * that was written whole: take it (the rotten or torn copies are healed
 * from it).  Only when none does is a copy taken as it is, its checksum
 * re-derived.  -1 when no copy was read. */
static int resync_mirror_pick(struct pool_store *s, const struct pool_file_map *f, struct chk *k,
			      const uint32_t *pos, uint32_t nc, uint32_t b)
{
	int first = -1;

	for (uint32_t c = 0; c < nc; c++) {
		if (!(k->live & (1ull << pos[c])) || cbad(k, pos[c], b) == BAD_IO)
			continue;
		if (first < 0)
			first = (int)c;
		for (uint32_t o = 0; o < nc; o++)
			if (o != c && (k->live & (1ull << pos[o])) &&
			    cmatch(k, pos[o], b, cbuf(s, k, pos[c], b)))
				return (int)c;
	}
	if (first >= 0)
		log_torn(s, f, k, pos[first], b);
	return first;
}

/* The first copy of `prefer` that was read and verifies, or -1. */
static int mirror_preferred(const struct chk *k, const uint32_t *pos, uint32_t nc, uint32_t b)
{
	for (uint32_t c = 0; c < nc; c++)
		if ((k->prefer >> pos[c] & 1) && (k->live >> pos[c] & 1) && !cbad(k, pos[c], b))
			return (int)c;
	return -1;
}

/* One data column of one block of a mirror batch. */
static void check_mirror_col(struct pool_store *s, const struct pool_file_map *f, struct chk *k,
			     uint32_t d, uint32_t b)
{
	uint32_t pos[LAYOUT_MAX_COPIES], nc = s->g.copies, nlive = 0;
	uint64_t st = cstripe(k, b);
	int pick = -1;

	for (uint32_t c = 0; c < nc; c++) {
		pos[c] = layout_slot_pos(&s->g, st, d, c);
		if (!(k->live & (1ull << pos[c])))
			continue;
		nlive++;
		if (pick < 0 && !cbad(k, pos[c], b))
			pick = (int)c;
	}
	/* Without checksums, two copies against one outvote it. */
	if (nc == 3 && (k->live & (1ull << pos[1])) && (k->live & (1ull << pos[2])) &&
	    !cbad(k, pos[1], b) && !cbad(k, pos[2], b) &&
	    !memcmp(cbuf(s, k, pos[1], b), cbuf(s, k, pos[2], b), BLK))
		pick =
		    pick == 0 && !memcmp(cbuf(s, k, pos[0], b), cbuf(s, k, pos[1], b), BLK) ? 0 : 1;
	/* Settling: the copy whose write failed may refuse writes again, and
	 * holds a whole version; the others are rolled back to it. */
	if (k->prefer && mirror_preferred(k, pos, nc, b) >= 0)
		pick = mirror_preferred(k, pos, nc, b);
	if (pick < 0 && (k->flags & POOL_CHECK_RESYNC))
		pick = resync_mirror_pick(s, f, k, pos, nc, b);
	k->st->blocks += nlive;
	if (pick < 0) {
		for (uint32_t c = 0; c < nc; c++)
			k->st->unrecoverable += (k->live & (1ull << pos[c])) && cbad(k, pos[c], b);
		return;
	}
	const uint8_t *good = cbuf(s, k, pos[pick], b);
	if (cbad(k, pos[pick], b)) /* RESYNC: its checksum is rewritten */
		cfix(s, f, k, pos[pick], b, good, 1);
	for (uint32_t c = 0; c < nc; c++) {
		uint64_t bit = 1ull << pos[c];
		if ((int)c == pick)
			continue;
		if (k->tgt & bit)
			cfix(s, f, k, pos[c], b, good, 0);
		else if ((k->live & bit) &&
			 (cbad(k, pos[c], b) || memcmp(cbuf(s, k, pos[c], b), good, BLK)))
			cfix(s, f, k, pos[c], b, good, 1);
	}
}

/* Erased slots of block b of a parity batch (bit per slot): not read,
 * or disagreeing with its checksum. */
static uint32_t parity_erased(struct pool_store *s, struct chk *k, uint32_t b)
{
	uint32_t n = s->k + s->g.parity, er = 0;
	uint64_t st = cstripe(k, b);

	for (uint32_t i = 0; i < n; i++) {
		uint32_t p = layout_slot_pos(&s->g, st, i, 0);
		if (!(k->live & (1ull << p)) || cbad(k, p, b))
			er |= 1u << i;
	}
	return er;
}

/* Rebuild the slots in `er` of block b into k->trial and return the data
 * slots of `cand` whose rebuilt bytes match their stored checksums. */
static uint32_t trial_rebuild(struct pool_store *s, struct chk *k, uint32_t b, uint32_t er,
			      uint32_t cand)
{
	uint32_t n = s->k + s->g.parity, ne = 0, erased[LAYOUT_MAX_PARITY], ok = 0;
	uint32_t pos[LAYOUT_MAX_COLUMNS];
	uint8_t *blk[LAYOUT_MAX_COLUMNS];
	uint64_t st = cstripe(k, b);

	if ((uint32_t)__builtin_popcount(er) > s->g.parity)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		pos[i] = layout_slot_pos(&s->g, st, i, 0);
		blk[i] = cbuf(s, k, pos[i], b);
		if (er & (1u << i)) {
			blk[i] = k->trial + (size_t)ne * BLK;
			erased[ne++] = i;
		}
	}
	if (ne == 0 || layout_codec_decode(s->codec, BLK, blk, erased, ne) < 0)
		return 0;
	for (uint32_t i = 0; i < s->k; i++)
		if ((cand & (1u << i)) && cmatch(k, pos[i], b, blk[i]))
			ok |= 1u << i;
	return ok;
}

/* RESYNC: which data slots of block b that disagree with their checksums
 * are rotten (the other columns rebuild bytes that match: erase and heal
 * them) and which were torn by the crash (nothing matches: keep them as
 * written, their checksums re-derived, parity recomputed from them).
 * Rebuilding all suspects at once is tried first, then one at a time. */
static uint32_t resync_erased(struct pool_store *s, const struct pool_file_map *f, struct chk *k,
			      uint32_t b, uint32_t er)
{
	uint32_t cand = 0, healed;
	uint64_t st = cstripe(k, b);

	for (uint32_t i = 0; i < s->k; i++)
		if ((er & (1u << i)) && cbad(k, layout_slot_pos(&s->g, st, i, 0), b) == BAD_CSUM)
			cand |= 1u << i;
	if (!cand)
		return er;
	uint32_t base = er & ~cand;
	healed = trial_rebuild(s, k, b, er, cand);
	for (uint32_t i = 0; i < s->k; i++)
		if ((cand & ~healed & (1u << i)) &&
		    trial_rebuild(s, k, b, base | healed | (1u << i), 1u << i))
			healed |= 1u << i;
	for (uint32_t i = 0; i < s->k; i++)
		if (cand & ~healed & (1u << i))
			log_torn(s, f, k, layout_slot_pos(&s->g, st, i, 0), b);
	return base | healed;
}

/* Blocks [b0, b1) of one stripe of a parity batch share the erasure
 * pattern er. */
static int check_parity_run(struct pool_store *s, const struct pool_file_map *f, struct chk *k,
			    uint32_t b0, uint32_t b1, uint32_t er)
{
	uint32_t n = s->k + s->g.parity, m = s->g.parity, ne = 0, erased[LAYOUT_MAX_COLUMNS];
	uint32_t pos[LAYOUT_MAX_COLUMNS];
	uint8_t *blk[LAYOUT_MAX_COLUMNS], *par[LAYOUT_MAX_PARITY];
	size_t len = (size_t)(b1 - b0) * BLK;
	uint64_t st = cstripe(k, b0);

	for (uint32_t i = 0; i < n; i++) {
		pos[i] = layout_slot_pos(&s->g, st, i, 0);
		blk[i] = cbuf(s, k, pos[i], b0);
		if (er & (1u << i))
			erased[ne++] = i;
		k->st->blocks += (b1 - b0) * !!(k->live & (1ull << pos[i]));
	}
	if (ne > m) {
		for (uint32_t i = 0; i < n; i++)
			for (uint32_t b = b0; b < b1; b++)
				k->st->unrecoverable +=
				    (k->live & (1ull << pos[i])) && cbad(k, pos[i], b);
		return 0;
	}
	if (ne > 0) {
		int rc = layout_codec_decode(s->codec, len, blk, erased, ne);
		if (rc < 0)
			return rc;
	}
	for (uint32_t j = 0; j < m; j++)
		par[j] = k->par + (size_t)j * s->g.interleave;
	layout_codec_encode(s->codec, len, blk, par);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t bit = 1ull << pos[i];
		for (uint32_t b = b0; b < b1; b++) {
			uint8_t *want = i < s->k ? cbuf(s, k, pos[i], b)
						 : par[i - s->k] + (size_t)(b - b0) * BLK;
			if (k->tgt & bit)
				cfix(s, f, k, pos[i], b, want, 0);
			else if (!(k->live & bit))
				continue;
			else if (er & (1u << i) || cbad(k, pos[i], b))
				cfix(s, f, k, pos[i], b, want, 1);
			else if (i >= s->k && memcmp(cbuf(s, k, pos[i], b), want, BLK))
				cfix(s, f, k, pos[i], b, want, 1);
		}
	}
	return 0;
}

static int check_parity(struct pool_store *s, const struct pool_file_map *f, struct chk *k)
{
	for (uint32_t b = 0; b < k->span; b++) {
		k->er[b] = parity_erased(s, k, b);
		if (k->er[b] && (k->flags & POOL_CHECK_RESYNC))
			k->er[b] = resync_erased(s, f, k, b, k->er[b]);
	}
	for (uint32_t b0 = 0; b0 < k->span;) {
		uint32_t er = k->er[b0], b1 = b0 + 1;
		uint32_t end = (b0 / k->nblk + 1) * k->nblk; /* runs stay in one stripe */
		while (b1 < end && k->er[b1] == er)
			b1++;
		int rc = check_parity_run(s, f, k, b0, b1, er);
		if (rc < 0)
			return rc;
		b0 = b1;
	}
	return 0;
}

static void check_simple(struct chk *k, uint32_t npos)
{
	for (uint32_t p = 0; p < npos; p++)
		for (uint32_t b = 0; b < k->span; b++) {
			k->st->blocks += !!(k->live & (1ull << p));
			k->st->unrecoverable += (k->live & (1ull << p)) && cbad(k, p, b);
		}
}

/* Read every live position over the whole batch, one I/O each. */
static int check_read(struct rq *q, struct chk *k)
{
	struct pool_store *s = q->s;
	struct scratch *t = q->t;
	uint32_t n = 0, il = s->g.interleave;

	if (store_grow(&t->cio, &t->cio_cap, s->npos, sizeof(*t->cio)))
		return -ENOMEM;
	for (uint32_t p = 0; p < s->npos; p++)
		if (k->live & (1ull << p))
			t->cio[n++] = (struct cio){.pos = p,
						   .len = k->span * (uint32_t)BLK,
						   .off = k->first * il,
						   .buf = cbuf(s, k, p, 0)};
	memset(k->rbad, 0, (size_t)n * k->span);
	memset(k->rcrc, 0, (size_t)n * k->span * sizeof(*k->rcrc));
	for (uint32_t p = 0; p < s->npos; p++)
		memset(k->bad + cidx(k, p, 0), 0, k->span);
	q->badblk = k->rbad;
	q->stored = k->rcrc;
	int rc = store_phase_read(q, t->cio, n);
	q->badblk = NULL;
	q->stored = NULL;
	k->exists = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t p = t->cio[i].pos;
		memcpy(k->bad + cidx(k, p, 0), k->rbad + (size_t)i * k->span, k->span);
		memcpy(k->crc + cidx(k, p, 0), k->rcrc + (size_t)i * k->span,
		       k->span * sizeof(*k->crc));
		if ((q->have & (1ull << p)) && q->ref[p].fd >= 0)
			k->exists |= 1ull << p;
	}
	return rc;
}

/* Write the blocks marked in k->wr, one I/O per run per position.  A
 * target whose chunk file does not exist is not given runs of zeros. */
static int check_write(struct rq *q, struct chk *k)
{
	struct pool_store *s = q->s;
	struct scratch *t = q->t;
	size_t n = 0;
	uint64_t base = k->first * s->g.interleave;

	if (store_grow(&t->cio, &t->cio_cap, (size_t)s->npos * k->span, sizeof(*t->cio)))
		return -ENOMEM;
	for (uint32_t p = 0; p < s->npos; p++) {
		const uint8_t *w = k->wr + cidx(k, p, 0);
		int tgt_new = -1;
		for (uint32_t b = 0; b < k->span;) {
			if (!w[b]) {
				b++;
				continue;
			}
			uint32_t e = b;
			while (e < k->span && w[e])
				e++;
			uint8_t *buf = cbuf(s, k, p, b);
			size_t len = (size_t)(e - b) * BLK;
			if ((k->tgt & (1ull << p)) && store_all_zero(buf, len)) {
				if (tgt_new < 0) {
					int rc = store_rq_ref(q, p, 0);
					tgt_new = rc == 0 && q->ref[p].fd < 0;
				}
				if (tgt_new) {
					b = e;
					continue;
				}
			}
			t->cio[n++] = (struct cio){.pos = p,
						   .len = (uint32_t)len,
						   .buf = buf,
						   .off = base + (uint64_t)b * BLK};
			if (k->tgt & (1ull << p))
				k->st->rebuilt_bytes += len;
			b = e;
		}
	}
	return n ? store_phase_write(q, t->cio, n) : 0;
}

/* Positions holding copies of the columns the targets hold (mirror
 * positions do not rotate, so this holds for every stripe). */
static uint64_t mirror_sources(const struct pool_store *s, uint64_t tgt, uint64_t st)
{
	uint64_t src = 0;

	for (uint32_t p = 0; p < s->npos; p++) {
		uint32_t col, copy;
		if (!(tgt & (1ull << p)))
			continue;
		layout_pos_slot(&s->g, st, p, &col, &copy);
		for (uint32_t c = 0; c < s->g.copies; c++)
			src |= 1ull << layout_slot_pos(&s->g, st, col, c);
	}
	return src;
}

/* Which positions to read and which to rebuild, for the whole batch. */
/* ---- reservations ---------------------------------------------------------- */

/* Call fn for every run of fd's bytes in [lo, hi) that fallocate reserved
 * and nothing wrote since (FIEMAP's unwritten extents), clipped to the
 * range.  Such runs read as zeros, so neither a rebuild (which leaves
 * zeros as holes on a new disk) nor a sparse copy carries them; without
 * this a repaired or moved file would lose the space its fallocate
 * promised.  A filesystem without FIEMAP: -EOPNOTSUPP, nothing called. */
static int unwritten_runs(int fd, uint64_t lo, uint64_t hi,
			  int (*fn)(void *arg, uint64_t lo, uint64_t hi), void *arg)
{
	enum { NEXT = 64 };
	union {
		struct fiemap m;
		uint8_t room[sizeof(struct fiemap) + NEXT * sizeof(struct fiemap_extent)];
	} u;
	uint64_t at = lo;

	while (at < hi) {
		memset(&u, 0, sizeof(u));
		u.m.fm_start = at;
		u.m.fm_length = hi - at;
		u.m.fm_extent_count = NEXT;
		if (ioctl(fd, FS_IOC_FIEMAP, &u.m) < 0)
			return -errno;
		if (u.m.fm_mapped_extents == 0)
			return 0;
		for (uint32_t i = 0; i < u.m.fm_mapped_extents; i++) {
			const struct fiemap_extent *e = &u.m.fm_extents[i];
			uint64_t a = e->fe_logical > lo ? e->fe_logical : lo;
			uint64_t b =
			    e->fe_logical + e->fe_length < hi ? e->fe_logical + e->fe_length : hi;
			if ((e->fe_flags & FIEMAP_EXTENT_UNWRITTEN) && a < b) {
				int rc = fn(arg, a, b);
				if (rc < 0)
					return rc;
			}
			at = e->fe_logical + e->fe_length;
			if (e->fe_flags & FIEMAP_EXTENT_LAST)
				return 0;
		}
	}
	return 0;
}

struct carry {
	struct rq *q;
	uint64_t to; /* positions to reserve on */
};

static int carry_run(void *arg, uint64_t lo, uint64_t hi)
{
	struct carry *c = arg;
	struct pool_store *s = c->q->s;
	uint64_t clo = lo / BLK * CRC_BYTES, chi = (hi + BLK - 1) / BLK * CRC_BYTES;

	for (uint32_t p = 0; p < s->npos; p++) {
		if (!(c->to >> p & 1))
			continue;
		int rc = store_rq_ref(c->q, p, 1);
		if (rc < 0)
			return rc;
		struct chunk_ref *r = &c->q->ref[p];
		pthread_mutex_lock(&s->size_mu); /* see store_chunk_reserve */
		if (fallocate(r->fd, 0, (off_t)lo, (off_t)(hi - lo)) < 0 ||
		    (r->crcfd >= 0 && fallocate(r->crcfd, 0, (off_t)clo, (off_t)(chi - clo)) < 0))
			rc = -errno;
		pthread_mutex_unlock(&s->size_mu);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* A rebuilt batch: reserve on the targets what the batch's sources hold
 * reserved.  Mirror: a target's own copies, exactly.  Parity: every live
 * position of the stripes -- parity rows are reserved wherever any data
 * column was, so a data column may get a few rows more than it had at
 * the ends of a reserved range (space, never data).  Best effort: the
 * data is rebuilt either way; a failure is said once per batch. */
static void carry_reserved(struct rq *q, struct chk *k, uint64_t sources)
{
	struct pool_store *s = q->s;
	uint64_t lo = k->first * s->g.interleave, hi = lo + (uint64_t)k->span * BLK;
	struct carry c = {.q = q, .to = k->tgt};
	int rc = 0;

	for (uint32_t p = 0; p < s->npos && rc == 0; p++) {
		if (!(sources >> p & 1) || (k->tgt >> p & 1))
			continue;
		if (store_rq_ref(q, p, 0) < 0 || q->ref[p].fd < 0)
			continue;
		rc = unwritten_runs(q->ref[p].fd, lo, hi, carry_run, &c);
	}
	if (rc < 0 && rc != -EOPNOTSUPP)
		store_log(s,
			  "file %016" PRIx64 ": stripes %" PRIu64 "-%" PRIu64
			  ": reservations not carried to the rebuilt disk: %s",
			  q->f->id, k->first, k->first + k->span / k->nblk - 1, strerror(-rc));
}

static void check_masks(struct rq *q, struct chk *k, uint64_t targets, uint64_t last)
{
	struct pool_store *s = q->s;
	uint64_t all = s->npos == 64 ? ~0ull : (1ull << s->npos) - 1;

	k->tgt = 0;
	for (uint32_t p = 0; p < s->npos; p++)
		if (((targets >> q->f->disk[p]) & 1) && !(q->failed & (1ull << p)) &&
		    s->disk[q->f->disk[p]].dir)
			k->tgt |= 1ull << p;
	if (!(k->flags & POOL_CHECK_REPAIR))
		k->tgt = 0;
	/* store_rq_mask is monotone in the stripe: the last stripe's is the
	 * widest of the batch. */
	k->live = all & ~store_rq_mask(q, last) & ~k->tgt;
	if ((k->flags & POOL_CHECK_REBUILD) && k->tgt && s->g.kind == LAYOUT_MIRROR)
		k->live &= mirror_sources(s, k->tgt, k->first);
}

/* Every column of every block of a mirror batch inside [k->lo, k->hi). */
static void check_mirror(struct pool_store *s, const struct pool_file_map *f, struct chk *k)
{
	for (uint32_t b = 0; b < k->span; b++) {
		uint64_t at = cstripe(k, b) * s->stripe_bytes + (uint64_t)(b % k->nblk) * BLK;
		for (uint32_t d = 0; d < s->k; d++) {
			uint64_t o = at + (uint64_t)d * s->g.interleave;
			if (o >= k->lo && o < k->hi)
				check_mirror_col(s, f, k, d, b);
		}
	}
}

static int check_batch(struct pool_store *s, struct scratch *t, const struct pool_file_map *f,
		       uint64_t first, uint32_t n, uint64_t targets, struct chk *k)
{
	struct stripelock_set set;
	struct rq q;
	int rc;

	k->first = first;
	k->span = n * k->nblk;
	store_rq_init(&q, s, t, f);
	if (!k->settling)
		store_lock_stripes(s, f->id, first, first + n - 1,
				   (k->flags & POOL_CHECK_REPAIR) ? 1 : 0, &set);
	check_masks(&q, k, targets, first + n - 1);
	rc = check_read(&q, k);
	if (rc == 0 && k->exists) { /* else nothing anywhere: holes stay holes */
		memset(k->wr, 0, (size_t)s->npos * k->maxn * k->nblk);
		if (s->g.kind == LAYOUT_MIRROR)
			check_mirror(s, f, k);
		else if (s->g.kind == LAYOUT_PARITY)
			rc = check_parity(s, f, k);
		else
			check_simple(k, s->npos);
		if (rc == 0 && (k->flags & POOL_CHECK_REPAIR))
			rc = check_write(&q, k);
		k->wfail |= q.wfail;
		if (rc == 0 && (k->flags & POOL_CHECK_REPAIR) && k->tgt)
			carry_reserved(&q, k,
				       s->g.kind == LAYOUT_MIRROR ? mirror_sources(s, k->tgt, first)
								  : k->live);
	} else if (rc == 0) {
		for (uint32_t p = 0; p < s->npos; p++)
			k->st->blocks += (k->live >> p & 1) * k->span;
	}
	/* A REBUILDING target is now live up to the end of the batch. */
	for (uint32_t p = 0; rc == 0 && p < s->npos; p++) {
		struct store_disk *d = &s->disk[f->disk[p]];
		if (((targets >> f->disk[p]) & 1) &&
		    store_dstate(d) == POOL_STORE_DISK_REBUILDING &&
		    atomic_load(&d->rb_id) == f->id && atomic_load(&d->rb_stripe) == first)
			pool_store_rebuild_cursor(s, f->disk[p], f->id, first + n);
	}
	if (!k->settling)
		store_unlock(s, &set);
	store_rq_end(&q);
	return rc;
}

static void chk_free(struct chk *k)
{
	free(k->buf);
	free(k->rbad);
	free(k->bad);
	free(k->wr);
	free(k->par);
	free(k->rcrc);
	free(k->crc);
	free(k->er);
	free(k->trial);
}

/* Batches of up to 4 MiB per position (at least one stripe). */
#define CHECK_BATCH_BYTES (4u << 20)

static int chk_alloc(struct pool_store *s, struct chk *k, uint64_t n)
{
	size_t il = s->g.interleave;
	uint64_t maxn = CHECK_BATCH_BYTES / il;
	void *b = NULL, *p = NULL;

	k->nblk = (uint32_t)(il / BLK);
	k->maxn = (uint32_t)(n < maxn ? n : maxn ? maxn : 1);
	size_t per = (size_t)k->maxn * k->nblk;
	if (posix_memalign(&b, BLK, s->npos * per * BLK) ||
	    posix_memalign(&p, BLK, (s->g.parity ? s->g.parity : 1) * il)) {
		free(b);
		return -ENOMEM;
	}
	k->buf = b;
	k->par = p;
	k->rbad = calloc(s->npos, per);
	k->bad = calloc(s->npos, per);
	k->wr = calloc(s->npos, per);
	k->rcrc = calloc(s->npos * per, sizeof(*k->rcrc));
	k->crc = calloc(s->npos * per, sizeof(*k->crc));
	k->er = calloc(per, sizeof(*k->er));
	k->trial = malloc((size_t)LAYOUT_MAX_PARITY * BLK);
	if (!k->rbad || !k->bad || !k->wr || !k->rcrc || !k->crc || !k->er || !k->trial) {
		chk_free(k);
		return -ENOMEM;
	}
	return 0;
}

static int check_range(struct pool_store *s, const struct pool_file_map *f, uint64_t first,
		       uint64_t n, uint64_t targets, struct chk *k)
{
	int rc = store_check_file(s, f);

	if (rc < 0 || n == 0)
		return rc;
	struct scratch *t = store_scratch_get(s);
	if (!t)
		return -ENOMEM;
	rc = chk_alloc(s, k, n);
	for (uint64_t i = 0; rc == 0 && i < n; i += k->maxn) {
		uint32_t b = (uint32_t)(n - i < k->maxn ? n - i : k->maxn);
		rc = check_batch(s, t, f, first + i, b, targets, k);
	}
	if (k->buf)
		chk_free(k);
	store_scratch_put(s, t);
	return rc;
}

int pool_store_check(struct pool_store *s, const struct pool_file_map *f, uint64_t first,
		     uint64_t n, unsigned flags, uint64_t targets, struct pool_check_stats *st)
{
	struct chk k = {.flags = flags, .st = st, .hi = UINT64_MAX};

	return check_range(s, f, first, n, targets, &k);
}

/* A write failed on the positions in *torn without failing their disks
 * and may have landed on the others: resync the stripes of [aoff, aend)
 * (the caller holds their locks) taking those positions as they are.
 * *torn gains the positions whose repair writes failed. */
int store_settle(struct pool_store *s, const struct pool_file_map *f, uint64_t aoff, uint64_t aend,
		 uint64_t *torn)
{
	struct pool_check_stats st = {0};
	struct chk k = {.flags = POOL_CHECK_RESYNC | POOL_CHECK_REPAIR,
			.st = &st,
			.settling = 1,
			.prefer = *torn,
			.lo = aoff,
			.hi = aend};
	uint64_t first = aoff / s->stripe_bytes, last = (aend - 1) / s->stripe_bytes;
	int rc = check_range(s, f, first, last - first + 1, 0, &k);

	*torn |= k.wfail;
	return rc < 0 ? rc : st.unrecoverable ? -EIO : 0;
}

/* Self-healing: a read or write found bad checksums on some positions
 * and was served from redundancy; rewrite those blocks in place. */
int store_heal(struct pool_store *s, const struct pool_file_map *f, uint64_t aoff, uint64_t aend,
	       uint64_t csum_bad)
{
	struct pool_check_stats st = {0};
	uint64_t first = aoff / s->stripe_bytes, last = (aend - 1) / s->stripe_bytes;
	int rc = pool_store_check(s, f, first, last - first + 1, POOL_CHECK_REPAIR, 0, &st);

	(void)csum_bad;
	if (rc == 0 && st.repaired)
		store_log(s, "file %016" PRIx64 ": self-healed %" PRIu64 " bad block(s) in place",
			  f->id, st.repaired);
	return rc;
}

/* ---- moving a position to another disk (disk retire) ---------------------- */

static int reserve_fd(void *arg, uint64_t lo, uint64_t hi)
{
	return fallocate(*(int *)arg, 0, (off_t)lo, (off_t)(hi - lo)) < 0 ? -errno : 0;
}

/* Copy the data extents of src into dst (holes stay holes) and its
 * reservations (unwritten extents stay reserved: a retire that cannot
 * keep a fallocate's promise fails, and the old copy stays), fsync. */
static int copy_sparse(int src, int dst)
{
	struct stat st;
	uint8_t *buf = malloc(1 << 20);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	if (fstat(src, &st) < 0 || ftruncate(dst, st.st_size) < 0)
		rc = -errno;
	for (off_t off = 0; rc == 0 && off < st.st_size;) {
		off_t d = lseek(src, off, SEEK_DATA);
		if (d < 0)
			break; /* only a hole is left */
		off_t h = lseek(src, d, SEEK_HOLE);
		for (off_t o = d; rc == 0 && o < h;) {
			ssize_t n =
			    pread(src, buf, (size_t)(h - o < (1 << 20) ? h - o : (1 << 20)), o);
			if (n <= 0) {
				rc = n < 0 ? -errno : -EIO;
				break;
			}
			ssize_t w = pwrite(dst, buf, (size_t)n, o);
			if (w != n)
				rc = w < 0 ? -errno : -ENOSPC;
			o += n;
		}
		off = h;
	}
	if (rc == 0) {
		int e = unwritten_runs(src, 0, (uint64_t)st.st_size, reserve_fd, &dst);
		rc = e == -EOPNOTSUPP ? 0 : e;
	}
	if (rc == 0 && fsync(dst) < 0)
		rc = -errno;
	free(buf);
	return rc;
}

static int copy_one(const char *from, const char *to)
{
	int src = open(from, O_RDONLY | O_CLOEXEC), dst, rc;

	if (src < 0)
		return errno == ENOENT ? 0 : -errno; /* never written: nothing to copy */
	dst = store_open_mkdir(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
	rc = dst < 0 ? dst : copy_sparse(src, dst);
	if (dst >= 0)
		close(dst);
	close(src);
	return rc;
}

int pool_store_copy_position(struct pool_store *s, const struct pool_file_map *f, uint32_t pos,
			     uint32_t to, char *err, size_t errlen)
{
	char from[PATH_MAX], dest[PATH_MAX];
	int rc = store_check_file(s, f);

	if (rc == 0 && (pos >= f->npos || to >= s->ndisks || !s->disk[to].dir))
		rc = -EINVAL;
	/* write-back: what is acknowledged but not in place would be written
	 * to the old disk after the copy (the flusher keeps the map it was
	 * given): in place first */
	if (rc == 0)
		pool_store_wb_drain(s);
	for (int crc = 0; rc == 0 && crc < 2; crc++) {
		rc = store_chunk_path(s, f->disk[pos], f->id, pos, crc, from, sizeof(from));
		if (rc == 0)
			rc = store_chunk_path(s, to, f->id, pos, crc, dest, sizeof(dest));
		if (rc == 0 && (rc = copy_one(from, dest)) < 0)
			snprintf(err, errlen,
				 "file %016" PRIx64 " position %u: copying %s to %s: %s", f->id,
				 pos, from, dest, strerror(-rc));
	}
	if (rc < 0 && !err[0])
		snprintf(err, errlen, "file %016" PRIx64 " position %u: %s", f->id, pos,
			 strerror(-rc));
	return rc;
}

int pool_store_forget_position(struct pool_store *s, const struct pool_file_map *f, uint32_t pos)
{
	char path[PATH_MAX];

	if (pos >= f->npos || f->disk[pos] >= s->ndisks)
		return -EINVAL;
	store_chunk_drop(s, f->id, pos, f->disk[pos]);
	for (int crc = 0; crc < 2; crc++)
		if (store_chunk_path(s, f->disk[pos], f->id, pos, crc, path, sizeof(path)) == 0)
			unlink(path);
	return 0;
}
