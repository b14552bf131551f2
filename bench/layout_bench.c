/*
 * layout_bench.c -- how close layout/'s codec runs to bare ISA-L.
 *
 * layout_codec_encode and layout_codec_decode wrap ISA-L: table lookups,
 * a decode-table cache behind a mutex, pointer arrays.  This program
 * shows what that costs by timing each of them next to the bare ISA-L
 * call it stands for (ec_encode_data with tables built here, on the same
 * buffers, in the same run), in alternating batches so that frequency
 * changes, cache warmth and noisy neighbours hit both sides alike.  The
 * target is a ratio within 10% of 1.
 *
 * Throughput is stripe data bytes (k * interleave) per second, 1 GB =
 * 1e9 bytes, for whole-stripe encode and for decoding 1 and 2 lost data
 * columns.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/erasure_code.h>

#include "layout/layout.h"

#define BATCH_NS    2000000.0 /* aim for ~2 ms per timed batch */
#define MAX_BATCHES 100000

struct shape {
	uint32_t k, m;
};

static const struct shape shapes[] = {{4, 1}, {4, 2}, {6, 2}, {8, 1}, {8, 2}, {12, 2}};
static const uint32_t interleaves[] = {64 * 1024, 256 * 1024};

/* One row of the table: the layout call and its bare ISA-L twin. */
struct pair {
	struct layout_codec *codec;
	uint32_t k, m, nerased, erased[LAYOUT_MAX_PARITY];
	size_t len;
	uint8_t *blocks[LAYOUT_MAX_COLUMNS];
	uint8_t tbls[32 * LAYOUT_MAX_COLUMNS * LAYOUT_MAX_PARITY]; /* bare ISA-L's own */
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct result {
	double gbs_layout, gbs_bare, ratio;
};

static void run_layout(struct pair *p)
{
	if (p->nerased == 0)
		layout_codec_encode(p->codec, p->len, p->blocks, p->blocks + p->k);
	else if (layout_codec_decode(p->codec, p->len, p->blocks, p->erased, p->nerased) != 0)
		abort();
}

/* Bare ISA-L: encode from the data, or decode the erased data columns
 * (always the first ones) from the next k slots. */
static void run_bare(struct pair *p)
{
	if (p->nerased == 0)
		ec_encode_data((int)p->len, (int)p->k, (int)p->m, p->tbls, p->blocks,
			       p->blocks + p->k);
	else
		ec_encode_data((int)p->len, (int)p->k, (int)p->nerased, p->tbls,
			       p->blocks + p->nerased, p->blocks);
}

/* Tables bare ISA-L needs: the parity rows, or for erased data columns
 * 0..e-1 the rows of the inverse of slots e..e+k-1's submatrix. */
static double time_batch(struct pair *p, void (*run)(struct pair *), uint64_t reps)
{
	double t0 = now_ns();

	for (uint64_t i = 0; i < reps; i++)
		run(p);
	return now_ns() - t0;
}

static int bare_tables(struct pair *p)
{
	uint8_t a[LAYOUT_MAX_COLUMNS * LAYOUT_MAX_COLUMNS],
	    sub[LAYOUT_MAX_COLUMNS * LAYOUT_MAX_COLUMNS];
	uint8_t inv[LAYOUT_MAX_COLUMNS * LAYOUT_MAX_COLUMNS];
	uint32_t k = p->k;

	gf_gen_cauchy1_matrix(a, (int)(k + p->m), (int)k);
	if (p->nerased == 0) {
		ec_init_tables((int)k, (int)p->m, a + k * k, p->tbls);
		return 0;
	}
	memcpy(sub, a + p->nerased * k, k * k);
	if (gf_invert_matrix(sub, inv, (int)k) != 0)
		return -1;
	ec_init_tables((int)k, (int)p->nerased, inv, p->tbls);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Time both sides in alternating batches for about `seconds`, swapping
 * which goes first each time.  Medians, not sums: a batch that a noisy
 * neighbour hit is an outlier, not a trend.  The ratio is the median of
 * the per-pair ratios, each pair run back to back. */
static void measure(struct pair *p, double seconds, struct result *r)
{
	double bytes = (double)p->k * p->len, start = now_ns();
	double *gl = malloc(MAX_BATCHES * sizeof(double)),
	       *gb = malloc(MAX_BATCHES * sizeof(double));
	double *ratio = malloc(MAX_BATCHES * sizeof(double));
	uint64_t reps = 1;
	size_t n = 0;

	/* Warm up and size a batch. */
	for (double t0 = now_ns(); now_ns() - t0 < BATCH_NS; reps++)
		run_layout(p);
	while (n < MAX_BATCHES && (n < 3 || now_ns() - start < seconds * 1e9)) {
		double tl, tb;

		if (n % 2) {
			tb = time_batch(p, run_bare, reps);
			tl = time_batch(p, run_layout, reps);
		} else {
			tl = time_batch(p, run_layout, reps);
			tb = time_batch(p, run_bare, reps);
		}
		gl[n] = reps * bytes / tl;
		gb[n] = reps * bytes / tb;
		ratio[n] = gl[n] / gb[n];
		n++;
	}
	r->gbs_layout = median(gl, n);
	r->gbs_bare = median(gb, n);
	r->ratio = median(ratio, n);
	free(gl);
	free(gb);
	free(ratio);
}

static int setup(struct pair *p, uint32_t k, uint32_t m, uint32_t nerased, size_t len)
{
	memset(p, 0, sizeof(*p));
	p->k = k;
	p->m = m;
	p->len = len;
	p->nerased = nerased;
	for (uint32_t i = 0; i < nerased; i++)
		p->erased[i] = i;
	if (layout_codec_new(k, m, &p->codec) != 0)
		return -1;
	for (uint32_t i = 0; i < k + m; i++) {
		if (posix_memalign((void **)&p->blocks[i], 64, len) != 0)
			return -1;
		for (size_t x = 0; x < len; x++)
			p->blocks[i][x] = (uint8_t)(x * 131 + i * 7 + (x >> 9));
	}
	layout_codec_encode(p->codec, len, p->blocks, p->blocks + k);
	return bare_tables(p);
}

/* Both decoders must rebuild what was there: a benchmark of a wrong
 * answer is worthless. */
static int verify(struct pair *p)
{
	uint8_t *save = malloc(p->len);
	int ok = 1;

	if (p->nerased == 0) {
		free(save);
		return 0;
	}
	memcpy(save, p->blocks[0], p->len);
	memset(p->blocks[0], 0, p->len);
	run_layout(p);
	ok &= memcmp(save, p->blocks[0], p->len) == 0;
	memset(p->blocks[0], 0, p->len);
	run_bare(p);
	ok &= memcmp(save, p->blocks[0], p->len) == 0;
	free(save);
	return ok ? 0 : -1;
}

static void teardown(struct pair *p)
{
	for (uint32_t i = 0; i < p->k + p->m; i++)
		free(p->blocks[i]);
	layout_codec_free(p->codec);
}

static int bench_row(uint32_t k, uint32_t m, uint32_t nerased, uint32_t il, double seconds,
		     double *worst)
{
	static const char *const ops[] = {"encode", "decode-1", "decode-2"};
	struct result r;
	struct pair p;

	if (setup(&p, k, m, nerased, il) != 0 || verify(&p) != 0) {
		fprintf(stderr, "layout-bench: setup or verification failed for %u+%u\n", k, m);
		teardown(&p);
		return -1;
	}
	measure(&p, seconds, &r);
	printf("%-9s %2u+%u  %5u KiB  %11.2f  %10.2f  %5.3f\n", ops[nerased], k, m, il / 1024,
	       r.gbs_layout, r.gbs_bare, r.ratio);
	*worst = r.ratio < *worst ? r.ratio : *worst;
	teardown(&p);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: layout-bench [--seconds N] [--help]\n"
		   "\n"
		   "Throughput of layout/'s codec next to bare ISA-L on the same buffers:\n"
		   "whole-stripe encode, and decode of 1 and 2 lost data columns, for\n"
		   "k+m in 4+1 4+2 6+2 8+1 8+2 12+2 at interleave 64 KiB and 256 KiB.\n"
		   "GB/s of stripe data (k * interleave bytes), 1 GB = 1e9 B; ratio is\n"
		   "layout / ISA-L (target: >= 0.90).\n"
		   "\n"
		   "  --seconds N   time per row, both sides together (default 0.5)\n"
		   "  --help        this text\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"seconds", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	double seconds = 0.5, worst = 1e9;
	int c;

	while ((c = getopt_long(argc, argv, "s:h", opts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		if (c != 's' || (seconds = strtod(optarg, NULL)) <= 0 || seconds > 3600) {
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	printf("%-9s %5s  %9s  %11s  %10s  %5s\n", "op", "k+m", "interleave", "layout GB/s",
	       "isa-l GB/s", "ratio");
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		for (size_t i = 0; i < sizeof(interleaves) / sizeof(interleaves[0]); i++) {
			for (uint32_t e = 0; e <= shapes[s].m; e++) {
				if (bench_row(shapes[s].k, shapes[s].m, e, interleaves[i], seconds,
					      &worst) != 0)
					return 1;
			}
		}
	}
	printf("worst ratio %.3f (%s the 0.90 target)\n", worst, worst >= 0.9 ? "meets" : "misses");
	return 0;
}
