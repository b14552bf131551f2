/*
 * sb_run.c -- the timed workloads: a libaio loop at a fixed queue depth.
 *
 * One file, opened with O_DIRECT so that the page cache never answers for
 * the storage under test; a fixed number of slots, each holding one I/O in
 * flight; a completion immediately refills its slot.  That is how a
 * hypervisor drives a virtual disk, and it keeps the queue depth honest:
 * the figure is what the storage does with N requests outstanding, not
 * what a burst does.  Latency is measured from the moment an I/O is
 * generated to its completion, into histograms (sb_stats.c).
 *
 * `vhdx` stands for a VM's disk: 70% reads, 4/8/64 KiB in 50/30/20%
 * shares, each aligned to its size, 80% of the I/Os on a hot 20% of the
 * disk.  With --grow the file starts empty and grows as a dynamic VHDX
 * does: the first write into a 2 MiB block of the virtual disk appends
 * that whole block to the file (a "grow write", counted apart) before the
 * guest's write goes to it, and reads of blocks never written are answered
 * with zeros without touching the file (counted as zero reads, not in the
 * IOPS), as the VHDX block table answers them.
 */
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/spacebench.h"

static const struct sb_workload workloads[] = {
    {"vhdx", 70, 16, 0, 1, 3, {4096, 8192, 65536}, {50, 30, 20}},
    {"randread4k", 100, 32, 0, 0, 1, {4096}, {100}},
    {"randwrite4k", 0, 32, 0, 0, 1, {4096}, {100}},
    {"seqread1m", 100, 8, 1, 0, 1, {1u << 20}, {100}},
    {"seqwrite1m", 0, 8, 1, 0, 1, {1u << 20}, {100}},
};

#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

const struct sb_workload *sb_workload_find(const char *name)
{
	for (size_t i = 0; i < NWORKLOADS; i++)
		if (strcmp(workloads[i].name, name) == 0)
			return &workloads[i];
	return NULL;
}

const char *sb_workload_names(void)
{
	return "vhdx, randread4k, randwrite4k, seqread1m, seqwrite1m";
}

uint64_t sb_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct slot {
	struct iocb cb;
	uint8_t *buf;
	uint64_t t0, voff;
	uint32_t len;
	int write, grow;
};

struct engine {
	const struct sb_run_opts *o;
	const struct sb_workload *w;
	struct sb_result *r;
	io_context_t ctx;
	int fd;
	unsigned qd, inflight;
	struct slot *slots;
	uint8_t *wbuf; /* shared data for every write */
	struct sb_rng rng;
	uint64_t seq_next, hot_start, hot_len, issued, t_end;
	uint32_t *bat; /* grow: file block + 1 of each virtual 2 MiB block */
	uint64_t nalloc;
};

static uint32_t pick_bs(struct engine *e)
{
	unsigned roll = (unsigned)sb_rng_below(&e->rng, 100), acc = 0;

	for (unsigned i = 0; i < e->w->nbs; i++) {
		acc += e->w->bs_pct[i];
		if (roll < acc)
			return e->w->bs[i];
	}
	return e->w->bs[0];
}

static uint64_t pick_offset(struct engine *e, uint32_t len)
{
	uint64_t size = e->o->size, start = 0, span = size;

	if (e->w->seq) {
		if (e->seq_next + len > size)
			e->seq_next = 0;
		uint64_t off = e->seq_next;
		e->seq_next += len;
		return off;
	}
	if (e->w->hot && sb_rng_below(&e->rng, 100) < 80) {
		start = e->hot_start;
		span = e->hot_len;
	}
	return start + sb_rng_below(&e->rng, span / len) * len;
}

static int submit(struct engine *e, struct slot *s, uint64_t foff, uint32_t len, int write)
{
	struct iocb *cbp = &s->cb;
	int rc;

	if (write)
		io_prep_pwrite(&s->cb, e->fd, e->wbuf, len, (long long)foff);
	else
		io_prep_pread(&s->cb, e->fd, s->buf, len, (long long)foff);
	s->cb.data = s;
	rc = io_submit(e->ctx, 1, &cbp);
	if (rc != 1) {
		fprintf(stderr, "spacebench: io_submit of %s at offset %llu of %s: %s\n",
			write ? "write" : "read", (unsigned long long)foff, e->o->path,
			strerror(rc < 0 ? -rc : EIO));
		return -EIO;
	}
	e->inflight++;
	return 0;
}

/* Grow mode: the file offset of virtual offset voff, appending its 2 MiB
 * block if needed (then *grow is set and the block's file offset is
 * returned).  UINT64_MAX: an unallocated read, served as zeros. */
static uint64_t map_grow(struct engine *e, uint64_t voff, int write, int *grow)
{
	uint64_t vb = voff / SB_GROW_BLOCK;

	*grow = 0;
	if (!e->bat[vb]) {
		if (!write)
			return UINT64_MAX;
		e->bat[vb] = (uint32_t)++e->nalloc;
		*grow = 1;
		return (uint64_t)(e->bat[vb] - 1) * SB_GROW_BLOCK;
	}
	return (uint64_t)(e->bat[vb] - 1) * SB_GROW_BLOCK + voff % SB_GROW_BLOCK;
}

static int start_io(struct engine *e, struct slot *s)
{
	for (;;) {
		uint32_t len = pick_bs(e);
		int write = sb_rng_below(&e->rng, 100) >= e->w->read_pct;
		uint64_t voff = pick_offset(e, len), foff = voff;
		int grow = 0;

		if (e->o->grow) {
			foff = map_grow(e, voff, write, &grow);
			if (foff == UINT64_MAX) {
				e->r->zero_reads++;
				continue;
			}
		}
		s->t0 = sb_now_ns();
		s->voff = voff;
		s->len = len;
		s->write = write;
		s->grow = grow;
		e->issued++;
		return grow ? submit(e, s, foff, SB_GROW_BLOCK, 1) : submit(e, s, foff, len, write);
	}
}

static int done(struct engine *e, uint64_t now)
{
	if (e->o->max_ios && e->issued >= e->o->max_ios)
		return 1;
	return e->o->seconds > 0 && now >= e->t_end;
}

static int complete(struct engine *e, struct io_event *ev, uint64_t now)
{
	struct slot *s = ev->data;
	long res = (long)ev->res;
	uint32_t want = s->grow ? SB_GROW_BLOCK : s->len;

	e->inflight--;
	if (res != (long)want) {
		fprintf(stderr, "spacebench: %s of %u bytes at offset %llu of %s: %s\n",
			s->write ? "write" : "read", want, (unsigned long long)s->cb.u.c.offset,
			e->o->path, res < 0 ? strerror((int)-res) : "short transfer");
		return -EIO;
	}
	if (s->grow) {
		int g;
		e->r->grow_writes++;
		s->grow = 0;
		return submit(e, s, map_grow(e, s->voff, 1, &g), s->len, 1);
	}
	sb_hist_add(s->write ? &e->r->wr : &e->r->rd, now - s->t0);
	if (s->write)
		e->r->write_bytes += s->len;
	else
		e->r->read_bytes += s->len;
	return done(e, now) ? 0 : start_io(e, s);
}

static void progress(struct engine *e, uint64_t t_start, uint64_t now)
{
	double el = (double)(now - t_start) / 1e9;
	uint64_t ios = e->r->rd.n + e->r->wr.n;
	double mb = (double)(e->r->read_bytes + e->r->write_bytes) / 1e6;

	fprintf(stderr, "\r%-12s %5.1f/%.0f s %9.0f IOPS %8.1f MB/s   ", e->w->name, el,
		e->o->seconds, ios / (el > 0 ? el : 1), mb / (el > 0 ? el : 1));
}

static int loop(struct engine *e)
{
	struct io_event ev[64];
	uint64_t t0 = sb_now_ns(), last = t0;
	int rc = 0;

	e->t_end = t0 + (uint64_t)(e->o->seconds * 1e9);
	for (unsigned i = 0; i < e->qd && rc == 0 && !done(e, t0); i++)
		rc = start_io(e, &e->slots[i]);
	while (e->inflight > 0) {
		struct timespec to = {0, 100000000};
		int n = io_getevents(e->ctx, 1, 64, ev, &to);
		uint64_t now = sb_now_ns();
		if (n < 0 && n != -EINTR) {
			fprintf(stderr, "spacebench: io_getevents on %s: %s\n", e->o->path,
				strerror(-n));
			return -EIO;
		}
		for (int i = 0; rc == 0 && i < n; i++)
			rc = complete(e, &ev[i], now);
		if (rc < 0)
			return rc; /* io_destroy reaps what is still in flight */
		if (e->o->progress && now - last >= 1000000000ull) {
			progress(e, t0, now);
			last = now;
		}
	}
	e->r->seconds = (double)(sb_now_ns() - t0) / 1e9;
	if (e->o->progress)
		fprintf(stderr, "\r%72s\r", "");
	return rc;
}

static int engine_init(struct engine *e, const struct sb_run_opts *o, struct sb_result *r, int fd)
{
	memset(e, 0, sizeof(*e));
	e->o = o;
	e->w = o->w;
	e->r = r;
	e->fd = fd;
	e->qd = o->qd ? o->qd : o->w->qd;
	sb_rng_seed(&e->rng, o->seed);
	e->hot_len = (o->size / 5) & ~(uint64_t)(SB_GROW_BLOCK - 1);
	if (e->hot_len < 65536)
		e->hot_len = o->size & ~(uint64_t)65535;
	e->hot_start = sb_rng_below(&e->rng, (o->size - e->hot_len) / 65536 + 1) * 65536;
	e->slots = calloc(e->qd, sizeof(*e->slots));
	if (!e->slots || posix_memalign((void **)&e->wbuf, 4096, SB_GROW_BLOCK))
		return -ENOMEM;
	for (size_t i = 0; i < SB_GROW_BLOCK; i += 8)
		sb_put64(e->wbuf + i, sb_rng_next(&e->rng));
	for (unsigned i = 0; i < e->qd; i++)
		if (posix_memalign((void **)&e->slots[i].buf, 4096, 1u << 20))
			return -ENOMEM;
	if (o->grow) {
		e->bat = calloc(o->size / SB_GROW_BLOCK + 1, sizeof(*e->bat));
		if (!e->bat)
			return -ENOMEM;
	}
	int rc = io_setup((int)e->qd, &e->ctx);
	return rc < 0 ? rc : 0;
}

static void engine_free(struct engine *e)
{
	if (e->ctx)
		io_destroy(e->ctx);
	for (unsigned i = 0; e->slots && i < e->qd; i++)
		free(e->slots[i].buf);
	free(e->slots);
	free(e->wbuf);
	free(e->bat);
}

static int run_engine(const struct sb_run_opts *o, struct sb_result *r, int fd)
{
	struct engine e;
	int rc = engine_init(&e, o, r, fd);

	r->qd = e.qd;
	if (rc < 0)
		fprintf(stderr, "spacebench: setting up %u I/O slots for %s: %s\n", e.qd, o->path,
			strerror(-rc));
	else
		rc = loop(&e);
	engine_free(&e);
	return rc;
}

/* Write the whole file sequentially (1 MiB, depth 8) unless it is already
 * as long as the run needs and allocated, so reads read data. */
static int prefill(const struct sb_run_opts *o, struct sb_result *r, int fd)
{
	struct sb_run_opts p = *o;
	struct sb_result pr;
	struct stat st;
	uint64_t t0 = sb_now_ns();

	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "spacebench: stat %s: %s\n", o->path, strerror(errno));
		return -EIO;
	}
	if ((uint64_t)st.st_size >= o->size && (uint64_t)st.st_blocks * 512 >= o->size)
		return 0;
	if (o->progress)
		fprintf(stderr, "spacebench: laying out %s (%llu MiB)\n", o->path,
			(unsigned long long)(o->size >> 20));
	memset(&pr, 0, sizeof(pr));
	p.w = sb_workload_find("seqwrite1m");
	p.qd = 0;
	p.grow = 0;
	p.seconds = 0;
	p.max_ios = o->size >> 20;
	p.progress = 0;
	int rc = run_engine(&p, &pr, fd);
	if (rc == 0 && fdatasync(fd) < 0) {
		fprintf(stderr, "spacebench: fdatasync %s: %s\n", o->path, strerror(errno));
		rc = -EIO;
	}
	r->prefill_seconds = (double)(sb_now_ns() - t0) / 1e9;
	return rc;
}

static int check_opts(const struct sb_run_opts *o)
{
	uint32_t big = o->w->bs[o->w->nbs - 1];

	if (o->size < (o->grow ? SB_GROW_BLOCK : big) || o->size % SB_SECTOR ||
	    (o->grow && o->size / SB_GROW_BLOCK > UINT32_MAX)) {
		fprintf(stderr, "spacebench: --size %llu does not suit workload %s%s\n",
			(unsigned long long)o->size, o->w->name, o->grow ? " --grow" : "");
		return -EINVAL;
	}
	if (o->w->seq && o->size % (1u << 20)) {
		fprintf(stderr, "spacebench: --size must be a multiple of 1M for %s\n", o->w->name);
		return -EINVAL;
	}
	return 0;
}

int sb_run(const struct sb_run_opts *o, struct sb_result *r)
{
	int fd, rc;

	memset(r, 0, sizeof(*r));
	if (check_opts(o) < 0)
		return SB_EXIT_ERROR;
	fd = open(o->path, O_RDWR | O_CREAT | O_DIRECT | (o->grow ? O_TRUNC : 0), 0644);
	if (fd < 0) {
		fprintf(stderr, "spacebench: open %s with O_DIRECT: %s\n", o->path,
			strerror(errno));
		return SB_EXIT_ERROR;
	}
	rc = (o->grow || !o->prefill) ? 0 : prefill(o, r, fd);
	if (rc == 0 && !o->prefill_only)
		rc = run_engine(o, r, fd);
	if (close(fd) < 0 && rc == 0) {
		fprintf(stderr, "spacebench: close %s: %s\n", o->path, strerror(errno));
		rc = -EIO;
	}
	return rc < 0 ? SB_EXIT_ERROR : SB_EXIT_OK;
}
