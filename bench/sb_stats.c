/*
 * sb_stats.c -- latency histograms and percentiles, size parsing.
 *
 * A benchmark that runs 100,000 I/Os a second for minutes cannot keep
 * every latency, and percentiles of a sample hide the tail we care about
 * (p99.9 is where read-modify-write shows).  So each latency goes into a
 * log-linear histogram, as HdrHistogram does: values below 128 have a
 * bucket each, and every power of two above is cut into 64 equal buckets,
 * so a reported value is within 1/128 of a true one, in 30 KB, whatever
 * the run length.  Percentiles walk the buckets to the nearest rank
 * (ceil(p/100 * n)) and report the bucket's middle.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sb.h"

unsigned sb_hist_bucket(uint64_t v)
{
	if (v < 2 * SB_HIST_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v); /* 2^e <= v, e >= 7 */
	unsigned sub = (unsigned)(v >> (e - 6)) & (SB_HIST_SUB - 1);
	return (e - 5) * SB_HIST_SUB + sub;
}

/* The middle of a bucket's range (its only value below 128). */
uint64_t sb_hist_value(unsigned b)
{
	if (b < 2 * SB_HIST_SUB)
		return b;
	unsigned e = b / SB_HIST_SUB + 5, sub = b % SB_HIST_SUB;
	uint64_t low = (uint64_t)(SB_HIST_SUB + sub) << (e - 6);
	uint64_t width = 1ull << (e - 6);
	return low + width / 2;
}

void sb_hist_add(struct sb_hist *h, uint64_t v)
{
	h->count[sb_hist_bucket(v)]++;
	h->n++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

void sb_hist_merge(struct sb_hist *dst, const struct sb_hist *src)
{
	for (unsigned i = 0; i < SB_HIST_BUCKETS; i++)
		dst->count[i] += src->count[i];
	dst->n += src->n;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t sb_hist_percentile(const struct sb_hist *h, double p)
{
	uint64_t rank, seen = 0;

	if (!h->n || p <= 0)
		return 0;
	rank = (uint64_t)ceil(p * (double)h->n / 100.0 - 1e-9);
	if (rank < 1)
		rank = 1;
	if (rank > h->n)
		rank = h->n;
	for (unsigned i = 0; i < SB_HIST_BUCKETS; i++) {
		seen += h->count[i];
		if (seen >= rank) {
			uint64_t v = sb_hist_value(i);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

int sb_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}
