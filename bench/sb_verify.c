/*
 * sb_verify.c -- `spacebench write` and `spacebench verify`: the integrity
 * checker that the crash and fault tests use.
 *
 * `write` writes self-describing blocks (sb_block.c) at random block
 * offsets, a queue of them in flight through libaio with O_DIRECT, never
 * two on one block at once (so the order of writes to a block is the
 * order of their generations).  Before the first write to a block, one
 * PRIOR record per sector gives the CRC of what the block held (read in
 * 1 MiB pieces, once each, before this run wrote anywhere in them), so
 * that after a crash a block whose write was in flight is recognised
 * holding its older content, whatever wrote that.  Before each submission
 * a SUBMIT record goes to the log, after each completion an ACK record, and after each
 * fsync (every --fsync-every acknowledgements, and at the end, with the
 * queue drained first) an FSYNC record.  The log is write(2)n as it goes,
 * so it survives the writer or the filesystem's daemon being killed.
 *
 * `verify` reads the log back (strictly: sb_log.c), reads every block the
 * log names, and reports each one that does not hold what it should, by
 * offset and kind.  Without --durable-only every acknowledged write must
 * be there (the test after a daemon kill, or a clean run); with it only
 * what was fsync'd (the test after a power cut).  A write in flight when
 * the writer stopped may be found or not: a block holding the content from
 * before it (wholly or, torn, in some sectors) is counted "in-flight-old",
 * allowed, apart from the problems.
 *
 * --test-drop-write N is the test hook for verify itself: write number N
 * is logged as submitted and acknowledged but never issued, which is
 * exactly an acknowledged write that a filesystem lost.  It lives here,
 * not in the daemon, so no test hook ships in production code.
 */
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/spacebench.h"

#define REC_BATCH 256

struct wslot {
	struct iocb cb;
	uint8_t *buf;
	uint64_t blk, gen; /* gen 0: free */
};

struct writer {
	const struct sb_write_opts *o;
	int fd, logfd;
	io_context_t ctx;
	struct wslot *slots;
	unsigned inflight;
	struct sb_rng rng;
	uint64_t run, nblocks, gen, acks, since_fsync, t_end;
	uint64_t dropped_blk; /* UINT64_MAX until the dropped write */
	uint64_t per;	      /* blocks per piece read for PRIOR records */
	uint32_t *prior;      /* CRC of each sector before the run */
	uint8_t *piece_read, *touched, *piece;
	uint8_t rec[REC_BATCH][SB_LOG_REC_BYTES];
	unsigned nrec;
};

static int log_flush(struct writer *w)
{
	size_t len = (size_t)w->nrec * SB_LOG_REC_BYTES, done = 0;

	while (done < len) {
		ssize_t n = write(w->logfd, (uint8_t *)w->rec + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "spacebench: writing log %s: %s\n", w->o->log,
				n < 0 ? strerror(errno) : "short write");
			return -EIO;
		}
		done += (size_t)n;
	}
	w->nrec = 0;
	return 0;
}

static int log_rec(struct writer *w, uint32_t type, uint64_t off, uint64_t gen, uint64_t aux)
{
	if (w->nrec == REC_BATCH && log_flush(w) < 0)
		return -EIO;
	sb_log_rec_encode(type, off, gen, aux, w->rec[w->nrec++]);
	return 0;
}

/* Read the piece holding block blk, once, for the CRCs of its sectors
 * before this run wrote any of them. */
static int read_piece(struct writer *w, uint64_t blk)
{
	uint64_t pc = blk / w->per, b0 = pc * w->per;
	uint64_t nb = w->nblocks - b0 < w->per ? w->nblocks - b0 : w->per;
	size_t len = (size_t)(nb * w->o->bs), got = 0;

	if (w->piece_read[pc])
		return 0;
	while (got < len) {
		ssize_t n = pread(w->fd, w->piece + got, len - got, (off_t)(b0 * w->o->bs + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(
			    stderr, "spacebench: reading %s at offset %llu (prior content): %s\n",
			    w->o->path, (unsigned long long)(b0 * w->o->bs + got), strerror(errno));
			return -EIO;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	memset(w->piece + got, 0, len - got);
	for (size_t i = 0; i < len; i += SB_SECTOR)
		w->prior[(b0 * w->o->bs + i) / SB_SECTOR] = sb_prior_crc(w->piece + i);
	w->piece_read[pc] = 1;
	return 0;
}

/* Before the run's first write to blk: PRIOR records for its sectors. */
static int log_prior(struct writer *w, uint64_t blk)
{
	uint64_t off = blk * w->o->bs;

	if (w->touched[blk])
		return 0;
	if (read_piece(w, blk) < 0)
		return -EIO;
	for (uint64_t s = off; s < off + w->o->bs; s += SB_SECTOR)
		if (log_rec(w, SB_REC_PRIOR, s, 0, w->prior[s / SB_SECTOR]) < 0)
			return -EIO;
	w->touched[blk] = 1;
	return 0;
}

/* In flight, or the block of the dropped write, which is never written
 * again so that its loss stays visible. */
static int block_busy(const struct writer *w, uint64_t blk)
{
	if (blk == w->dropped_blk)
		return 1;
	for (unsigned i = 0; i < w->o->qd; i++)
		if (w->slots[i].gen && w->slots[i].blk == blk)
			return 1;
	return 0;
}

/* Log and issue the next write into free slot s (or, for the dropped
 * one, log it as done and issue nothing). */
static int issue(struct writer *w, struct wslot *s)
{
	uint32_t bs = w->o->bs;
	uint64_t blk;
	struct iocb *cbp = &s->cb;

	do
		blk = sb_rng_below(&w->rng, w->nblocks);
	while (block_busy(w, blk));
	uint64_t gen = ++w->gen, off = blk * bs;
	if (log_prior(w, blk) < 0 || log_rec(w, SB_REC_SUBMIT, off, gen, 0) < 0)
		return -EIO;
	if (gen == w->o->drop) {
		w->dropped_blk = blk;
		w->acks++;
		w->since_fsync++;
		return log_rec(w, SB_REC_ACK, off, gen, 0);
	}
	sb_block_fill(s->buf, bs, w->run, off, gen);
	if (log_flush(w) < 0)
		return -EIO; /* SUBMIT is in the log before the write is issued */
	io_prep_pwrite(&s->cb, w->fd, s->buf, bs, (long long)off);
	s->cb.data = s;
	s->blk = blk;
	s->gen = gen;
	int rc = io_submit(w->ctx, 1, &cbp);
	if (rc != 1) {
		fprintf(stderr, "spacebench: io_submit at offset %llu of %s: %s\n",
			(unsigned long long)off, w->o->path, strerror(rc < 0 ? -rc : EIO));
		return -EIO;
	}
	w->inflight++;
	return 0;
}

static int reap(struct writer *w, int min)
{
	struct io_event ev[64];
	int n = io_getevents(w->ctx, min, 64, ev, NULL);

	if (n < 0) {
		fprintf(stderr, "spacebench: io_getevents on %s: %s\n", w->o->path, strerror(-n));
		return -EIO;
	}
	for (int i = 0; i < n; i++) {
		struct wslot *s = ev[i].data;
		uint64_t off = s->blk * w->o->bs;
		if ((long)ev[i].res != (long)w->o->bs) {
			long r = (long)ev[i].res;
			fprintf(stderr,
				"spacebench: write of generation %llu at offset %llu of %s: %s\n",
				(unsigned long long)s->gen, (unsigned long long)off, w->o->path,
				r < 0 ? strerror((int)-r) : "short write");
			log_flush(w); /* keep the acknowledgements logged so far */
			return -EIO;
		}
		if (log_rec(w, SB_REC_ACK, off, s->gen, 0) < 0)
			return -EIO;
		s->gen = 0;
		w->inflight--;
		w->acks++;
		w->since_fsync++;
	}
	return log_flush(w);
}

static int drain_and_sync(struct writer *w)
{
	while (w->inflight)
		if (reap(w, 1) < 0)
			return -EIO;
	if (fdatasync(w->fd) < 0) {
		fprintf(stderr, "spacebench: fdatasync %s: %s\n", w->o->path, strerror(errno));
		return -EIO;
	}
	w->since_fsync = 0;
	if (log_rec(w, SB_REC_FSYNC, 0, 0, w->acks) < 0)
		return -EIO;
	return log_flush(w);
}

static int finished(struct writer *w)
{
	if (w->o->count && w->gen >= w->o->count)
		return 1;
	return w->o->seconds > 0 && sb_now_ns() >= w->t_end;
}

static int write_loop(struct writer *w)
{
	while (!finished(w)) {
		for (unsigned i = 0; i < w->o->qd && !finished(w); i++)
			if (!w->slots[i].gen && issue(w, &w->slots[i]) < 0)
				return -EIO;
		if (w->inflight && reap(w, 1) < 0)
			return -EIO;
		if (w->o->fsync_every && w->since_fsync >= w->o->fsync_every &&
		    drain_and_sync(w) < 0)
			return -EIO;
	}
	if (drain_and_sync(w) < 0 || log_rec(w, SB_REC_END, 0, 0, w->acks) < 0)
		return -EIO;
	return log_flush(w);
}

static int open_files(struct writer *w)
{
	const struct sb_write_opts *o = w->o;
	struct sb_log_hdr h = {SB_LOG_VERSION, o->bs, o->size, w->run};
	uint8_t hdr[SB_LOG_HDR_BYTES];
	struct stat st;

	w->fd = open(o->path, O_RDWR | O_CREAT | O_DIRECT, 0644);
	if (w->fd < 0 || fstat(w->fd, &st) < 0 ||
	    ((uint64_t)st.st_size < o->size && ftruncate(w->fd, (off_t)o->size) < 0)) {
		fprintf(stderr, "spacebench: opening %s (O_DIRECT, %llu bytes): %s\n", o->path,
			(unsigned long long)o->size, strerror(errno));
		return -EIO;
	}
	w->logfd = open(o->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	sb_log_hdr_encode(&h, hdr);
	if (w->logfd < 0 || write(w->logfd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr)) {
		fprintf(stderr, "spacebench: creating log %s: %s\n", o->log, strerror(errno));
		return -EIO;
	}
	return 0;
}

static int writer_init(struct writer *w)
{
	int rc;

	w->nblocks = w->o->size / w->o->bs;
	w->dropped_blk = UINT64_MAX;
	w->run = w->o->seed ? w->o->seed * 0x9e3779b97f4a7c15ull
			    : (sb_now_ns() ^ ((uint64_t)getpid() << 32));
	sb_rng_seed(&w->rng, w->run);
	w->t_end = sb_now_ns() + (uint64_t)(w->o->seconds * 1e9);
	w->per = (1u << 20) / w->o->bs ? (1u << 20) / w->o->bs : 1;
	w->slots = calloc(w->o->qd, sizeof(*w->slots));
	w->prior = calloc(w->o->size / SB_SECTOR, sizeof(*w->prior));
	w->piece_read = calloc(w->nblocks / w->per + 1, 1);
	w->touched = calloc(w->nblocks, 1);
	if (!w->slots || !w->prior || !w->piece_read || !w->touched ||
	    posix_memalign((void **)&w->piece, 4096, w->per * w->o->bs))
		return -ENOMEM;
	for (unsigned i = 0; i < w->o->qd; i++)
		if (posix_memalign((void **)&w->slots[i].buf, 4096, w->o->bs))
			return -ENOMEM;
	rc = io_setup((int)w->o->qd, &w->ctx);
	if (rc < 0)
		fprintf(stderr, "spacebench: io_setup(%u): %s\n", w->o->qd, strerror(-rc));
	return rc < 0 ? rc : open_files(w);
}

static void writer_free(struct writer *w)
{
	if (w->ctx)
		io_destroy(w->ctx);
	for (unsigned i = 0; w->slots && i < w->o->qd; i++)
		free(w->slots[i].buf);
	free(w->slots);
	free(w->prior);
	free(w->piece_read);
	free(w->touched);
	free(w->piece);
	if (w->fd >= 0)
		close(w->fd);
	if (w->logfd >= 0 && close(w->logfd) < 0)
		fprintf(stderr, "spacebench: closing log %s: %s\n", w->o->log, strerror(errno));
}

int sb_write(const struct sb_write_opts *o)
{
	struct writer *w = calloc(1, sizeof(*w));
	int rc;

	if (!w) {
		fprintf(stderr, "spacebench: out of memory\n");
		return SB_EXIT_ERROR;
	}
	w->o = o;
	w->fd = w->logfd = -1;
	rc = writer_init(w);
	if (rc == -ENOMEM)
		fprintf(stderr, "spacebench: out of memory for %u buffers of %u bytes\n", o->qd,
			o->bs);
	if (rc == 0)
		rc = write_loop(w);
	if (rc == 0)
		printf(
		    "spacebench write: %llu writes (%llu acknowledged) of %u bytes to %s, log %s\n",
		    (unsigned long long)w->gen, (unsigned long long)w->acks, o->bs, o->path,
		    o->log);
	writer_free(w);
	free(w);
	return rc < 0 ? SB_EXIT_ERROR : SB_EXIT_OK;
}

/* ---- verify ---- */

static int read_log(const char *path, struct sb_log *log)
{
	char err[512];
	struct stat st;
	uint8_t *data;
	int fd = open(path, O_RDONLY), rc = -EIO;

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "spacebench: reading log %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	if (st.st_size > (off_t)(8ull << 30) || !(data = malloc((size_t)st.st_size + 1))) {
		fprintf(stderr, "spacebench: log %s: too large (%lld bytes)\n", path,
			(long long)st.st_size);
		close(fd);
		return -EIO;
	}
	ssize_t n = pread(fd, data, (size_t)st.st_size, 0);
	if (n != st.st_size)
		fprintf(stderr, "spacebench: reading log %s: %s\n", path,
			n < 0 ? strerror(errno) : "short read");
	else if (sb_log_parse(data, (size_t)n, path, log, err, sizeof(err)) < 0)
		fprintf(stderr, "spacebench: %s\n", err);
	else
		rc = 0;
	free(data);
	close(fd);
	return rc;
}

struct tally {
	uint64_t checked, count[SB_NVERDICT], reported;
};

static void report(const struct sb_verify_opts *o, struct tally *t, uint64_t off, enum sb_verdict v,
		   const struct sb_expect *e, uint64_t found)
{
	static const char *const what[SB_NVERDICT] = {"",
						      "reads as zeros",
						      "holds sectors of different writes",
						      "a sector fails its magic or CRC",
						      "holds another offset's or run's data",
						      "holds an older write",
						      ""};

	t->count[v]++;
	if (v == SB_INFLIGHT)
		return; /* allowed: counted, not a problem */
	if (t->reported++ >= o->max_report)
		return;
	printf("offset %llu: %s (acknowledged generation %llu, fsync'd %llu",
	       (unsigned long long)off, sb_verdict_name(v), (unsigned long long)e->acked,
	       (unsigned long long)e->durable);
	if (e->submitted != e->acked)
		printf(", generation %llu in flight", (unsigned long long)e->submitted);
	printf("; %s", what[v]);
	if (found)
		printf(", generation %llu", (unsigned long long)found);
	printf(")\n");
}

static int read_chunk(const struct sb_verify_opts *o, int fd, uint8_t *buf, size_t len,
		      uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "spacebench: reading %s at offset %llu: %s\n", o->path,
				(unsigned long long)(off + got), strerror(errno));
			return -EIO;
		}
		if (n == 0)
			break; /* past the end: zeros */
		got += (size_t)n;
	}
	memset(buf + got, 0, len - got);
	return 0;
}

static int chunk_touched(const struct sb_log *log, uint64_t b0, uint64_t nb)
{
	for (uint64_t b = b0; b < b0 + nb && b < log->nblocks; b++)
		if (log->blk[b].submitted)
			return 1;
	return 0;
}

static int verify_blocks(const struct sb_verify_opts *o, const struct sb_log *log, int fd,
			 struct tally *t)
{
	uint32_t bs = log->hdr.bs;
	uint64_t per = (1u << 20) / bs ? (1u << 20) / bs : 1;
	uint8_t *buf;

	if (posix_memalign((void **)&buf, 4096, per * bs))
		return -ENOMEM;
	for (uint64_t b0 = 0; b0 < log->nblocks; b0 += per) {
		uint64_t nb = log->nblocks - b0 < per ? log->nblocks - b0 : per;
		if (!chunk_touched(log, b0, nb))
			continue;
		if (read_chunk(o, fd, buf, nb * bs, b0 * bs) < 0) {
			free(buf);
			return -EIO;
		}
		for (uint64_t i = 0; i < nb; i++) {
			const struct sb_expect *e = &log->blk[b0 + i];
			uint64_t found;
			if (!e->submitted)
				continue;
			t->checked++;
			const uint32_t *prior =
			    log->prior ? log->prior + (b0 + i) * (bs / SB_SECTOR) : NULL;
			enum sb_verdict v =
			    sb_block_check(buf + i * bs, bs, log->hdr.run, (b0 + i) * bs, e, prior,
					   o->durable_only, &found);
			if (v != SB_OK)
				report(o, t, (b0 + i) * bs, v, e, found);
		}
	}
	free(buf);
	return 0;
}

static void summary(const struct sb_verify_opts *o, const struct sb_log *log, const struct tally *t)
{
	uint64_t bad = t->reported;

	if (bad > o->max_report)
		printf("... and %llu more\n", (unsigned long long)(bad - o->max_report));
	printf("spacebench verify: %s: %llu blocks checked, %llu lost, %llu torn, %llu corrupt, "
	       "%llu misplaced, %llu stale; %llu in-flight-old (allowed)%s%s\n",
	       o->path, (unsigned long long)t->checked, (unsigned long long)t->count[SB_LOST],
	       (unsigned long long)t->count[SB_TORN], (unsigned long long)t->count[SB_CORRUPT],
	       (unsigned long long)t->count[SB_MISPLACED], (unsigned long long)t->count[SB_STALE],
	       (unsigned long long)t->count[SB_INFLIGHT],
	       log->ended ? "" : " (log has no END record: the writer stopped early)",
	       log->prior ? "" : " (version 1 log: content from before the run unknown)");
}

int sb_verify(const struct sb_verify_opts *o)
{
	struct sb_log log;
	struct tally t = {0};
	int fd, rc;

	if (read_log(o->log, &log) < 0)
		return SB_EXIT_ERROR;
	fd = open(o->path, O_RDONLY | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "spacebench: open %s with O_DIRECT: %s\n", o->path,
			strerror(errno));
		sb_log_free(&log);
		return SB_EXIT_ERROR;
	}
	rc = verify_blocks(o, &log, fd, &t);
	if (rc == -ENOMEM)
		fprintf(stderr, "spacebench: out of memory reading %s\n", o->path);
	close(fd);
	if (rc == 0)
		summary(o, &log, &t);
	sb_log_free(&log);
	if (rc < 0)
		return SB_EXIT_ERROR;
	return t.reported ? SB_EXIT_PROBLEMS : SB_EXIT_OK;
}
