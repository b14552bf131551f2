/*
 * spacebench.c -- the command line of spacebench, spacefs's benchmark and
 * integrity checker.
 *
 * Why a program of our own next to fio: two things fio does not give.
 * First a VM-disk workload with the shape the scenario is about (small
 * mixed random I/O with a hot spot, and a disk that grows in 2 MiB blocks
 * as a dynamic VHDX does) with one summary that compare can read.  Second
 * a verifier whose verdicts name a cause: every block written carries its
 * offset, generation and CRC, and a log records what was acknowledged and
 * what was fsync'd, so after a crash or a fault the checker says which
 * offsets were lost, torn, corrupt, misplaced or stale -- not merely that
 * two hashes differ.
 *
 * This file only parses arguments and prints results; the modes live in
 * sb_run.c (workloads) and sb_verify.c (write, verify).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/spacebench.h"

static const char usage[] =
    "usage: spacebench run FILE -w WORKLOAD [--size SIZE] [--time SEC] [--grow] [--json]\n"
    "       spacebench write FILE --log LOG [--size SIZE] [--bs SIZE] [--count N | --time SEC]\n"
    "       spacebench verify FILE --log LOG [--durable-only] [--max-report N]\n"
    "\n"
    "Benchmark and integrity checker for one file, with libaio and O_DIRECT.\n"
    "\n"
    "run: a timed workload; prints IOPS, MB/s (1 MB = 10^6 bytes) and latency\n"
    "p50/p99/p99.9, as a table or JSON, and a progress line on stderr when\n"
    "stderr is a terminal.  A file shorter than --size or sparse is first\n"
    "laid out with 1 MiB writes so that reads read data.\n"
    "  -w, --workload W  vhdx         70% reads; 4K 50% / 8K 30% / 64K 20%, each\n"
    "                                 aligned to its size; 80% of I/Os on a hot\n"
    "                                 20% of the file; queue depth 16\n"
    "                    randread4k   4 KiB random reads, queue depth 32\n"
    "                    randwrite4k  4 KiB random writes, queue depth 32\n"
    "                    seqread1m    1 MiB sequential reads, queue depth 8\n"
    "                    seqwrite1m   1 MiB sequential writes, queue depth 8\n"
    "  --size SIZE       file (or virtual disk) size, default 1G; K/M/G/T suffixes\n"
    "  --time SEC        run time in seconds, default 30 (fractions allowed)\n"
    "  --ios N           stop after N I/Os (as well as --time; 0: no limit)\n"
    "  --qd N            queue depth instead of the workload's\n"
    "  --grow            vhdx only: the file starts empty and grows in 2 MiB\n"
    "                    blocks on first write, as a dynamic VHDX; reads of\n"
    "                    unwritten blocks are answered as zeros without I/O\n"
    "  --no-prefill      do not lay the file out first\n"
    "  --prefill-only    lay the file out if needed, then exit\n"
    "  --seed N          random seed (default 1)\n"
    "  --json            one JSON object on stdout instead of the table\n"
    "  --progress        progress line even when stderr is not a terminal\n"
    "  -q, --quiet       no progress line\n"
    "\n"
    "write: write self-describing blocks (offset, generation, CRC-32C in every\n"
    "4 KiB sector) at random block offsets, and log each submission, each\n"
    "acknowledgement and each completed fsync to LOG (format version 2), and\n"
    "before the first write to a block the CRC of each of its sectors as they\n"
    "were (so a reused file's older content is recognised after a crash).\n"
    "  --log LOG         the log to create (on another filesystem than FILE)\n"
    "  --size SIZE       file size, default 64M (the file is extended to it)\n"
    "  --bs SIZE         block size, a multiple of 4K up to 1M, default 4K\n"
    "  --count N         number of writes (default 4096 unless --time is given)\n"
    "  --time SEC        write for SEC seconds\n"
    "  --qd N            writes in flight, default 16\n"
    "  --fsync-every N   drain and fdatasync after every N acknowledged writes\n"
    "                    (default 0: only at the end)\n"
    "  --seed N          run id seed (default: from the clock)\n"
    "  --test-drop-write N  test hook: log write N as acknowledged but never\n"
    "                    issue it, as a filesystem that lost it would\n"
    "\n"
    "verify: read every block LOG names and report, one line per block, each\n"
    "that is lost (zeros), torn (sectors of different writes), corrupt (bad\n"
    "magic or CRC), misplaced (another offset's or run's data) or stale (an\n"
    "older write), then a summary line.  The log itself is validated first\n"
    "(versions 1 and 2 are read).  A block whose write was submitted but not\n"
    "acknowledged (in flight when the writer or the filesystem died) may hold\n"
    "the new write, or, wholly or in some sectors, what it held before: the\n"
    "last acknowledged write, or from before the run (an earlier run's block,\n"
    "the file's previous bytes); that is counted as in-flight-old, allowed.\n"
    "Bytes never written to a block are a problem in any case.\n"
    "  --log LOG         the log written by `spacebench write`\n"
    "  --durable-only    require only fsync'd writes (after a power cut; the\n"
    "                    writes not fsync'd count as in flight); by default\n"
    "                    every acknowledged write must be there\n"
    "  --max-report N    print at most N problem lines (default 100)\n"
    "\n"
    "Exit status: 0 clean, 1 verify found problems, 2 usage or I/O error.\n";

enum {
	OPT_SIZE = 256,
	OPT_TIME,
	OPT_IOS,
	OPT_QD,
	OPT_GROW,
	OPT_NOPREFILL,
	OPT_PREFILLONLY,
	OPT_SEED,
	OPT_JSON,
	OPT_PROGRESS,
	OPT_LOG,
	OPT_BS,
	OPT_COUNT,
	OPT_FSYNC,
	OPT_DROP,
	OPT_DURABLE,
	OPT_MAXREP,
};

static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"workload", required_argument, NULL, 'w'},
    {"quiet", no_argument, NULL, 'q'},
    {"size", required_argument, NULL, OPT_SIZE},
    {"time", required_argument, NULL, OPT_TIME},
    {"ios", required_argument, NULL, OPT_IOS},
    {"qd", required_argument, NULL, OPT_QD},
    {"grow", no_argument, NULL, OPT_GROW},
    {"no-prefill", no_argument, NULL, OPT_NOPREFILL},
    {"prefill-only", no_argument, NULL, OPT_PREFILLONLY},
    {"seed", required_argument, NULL, OPT_SEED},
    {"json", no_argument, NULL, OPT_JSON},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"log", required_argument, NULL, OPT_LOG},
    {"bs", required_argument, NULL, OPT_BS},
    {"count", required_argument, NULL, OPT_COUNT},
    {"fsync-every", required_argument, NULL, OPT_FSYNC},
    {"test-drop-write", required_argument, NULL, OPT_DROP},
    {"durable-only", no_argument, NULL, OPT_DURABLE},
    {"max-report", required_argument, NULL, OPT_MAXREP},
    {NULL, 0, NULL, 0},
};

/* Everything any mode may be given; each mode checks what applies. */
struct args {
	const char *mode, *file, *workload, *log;
	uint64_t size, ios, seed, count, drop, bs;
	double seconds;
	unsigned qd, fsync_every, max_report;
	int grow, no_prefill, prefill_only, json, progress, quiet, durable_only, have_size,
	    have_time, have_seed;
};

static int bad(const char *opt, const char *val)
{
	fprintf(stderr, "spacebench: invalid value '%s' for %s (see --help)\n", val, opt);
	return -EINVAL;
}

static int parse_num(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > max)
		return bad(opt, s);
	*out = v;
	return 0;
}

static int parse_uint(const char *opt, const char *s, unsigned max, unsigned *out)
{
	uint64_t v;
	if (parse_num(opt, s, max, &v) < 0)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 1e6)
		return bad("--time", s);
	*out = v;
	return 0;
}

static int parse_opt(struct args *a, int c, const char *v)
{
	switch (c) {
	case 'w':
		a->workload = v;
		return 0;
	case 'q':
		a->quiet = 1;
		return 0;
	case OPT_SIZE:
		a->have_size = 1;
		return sb_parse_size(v, &a->size) < 0 ? bad("--size", v) : 0;
	case OPT_TIME:
		a->have_time = 1;
		return parse_seconds(v, &a->seconds);
	case OPT_IOS:
		return parse_num("--ios", v, UINT64_MAX, &a->ios);
	case OPT_QD:
		return parse_uint("--qd", v, 1024, &a->qd);
	case OPT_GROW:
		a->grow = 1;
		return 0;
	case OPT_NOPREFILL:
		a->no_prefill = 1;
		return 0;
	case OPT_PREFILLONLY:
		a->prefill_only = 1;
		return 0;
	case OPT_SEED:
		a->have_seed = 1;
		return parse_num("--seed", v, UINT64_MAX, &a->seed);
	case OPT_JSON:
		a->json = 1;
		return 0;
	case OPT_PROGRESS:
		a->progress = 1;
		return 0;
	case OPT_LOG:
		a->log = v;
		return 0;
	case OPT_BS:
		return sb_parse_size(v, &a->bs) < 0 ? bad("--bs", v) : 0;
	case OPT_COUNT:
		return parse_num("--count", v, UINT64_MAX / 2, &a->count);
	case OPT_FSYNC:
		return parse_uint("--fsync-every", v, 1u << 30, &a->fsync_every);
	case OPT_DROP:
		return parse_num("--test-drop-write", v, UINT64_MAX / 2, &a->drop);
	case OPT_DURABLE:
		a->durable_only = 1;
		return 0;
	case OPT_MAXREP:
		return parse_uint("--max-report", v, 1u << 30, &a->max_report);
	default:
		return -EINVAL;
	}
}

/* 1: help printed; 0: parsed; <0: usage error reported. */
static int parse_args(int argc, char **argv, struct args *a)
{
	int c;

	a->max_report = 100;
	while ((c = getopt_long(argc, argv, "hw:q", longopts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage, stdout);
			return 1;
		}
		if (c == '?' || parse_opt(a, c, optarg) < 0) {
			if (c == '?')
				fprintf(stderr, "spacebench: see --help\n");
			return -EINVAL;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "spacebench: expected a mode (run, write, verify) and a FILE; "
				"see --help\n");
		return -EINVAL;
	}
	a->mode = argv[optind];
	a->file = argv[optind + 1];
	return 0;
}

/* ---- run ---- */

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static void json_lat(const char *key, const struct sb_hist *h)
{
	printf("\"%s\":{\"n\":%llu,\"mean_us\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
	       "\"p99_9_us\":%.1f,\"max_us\":%.1f}",
	       key, (unsigned long long)h->n, h->n ? (double)h->sum / (double)h->n / 1e3 : 0.0,
	       sb_hist_percentile(h, 50) / 1e3, sb_hist_percentile(h, 99) / 1e3,
	       sb_hist_percentile(h, 99.9) / 1e3, h->max / 1e3);
}

static void print_json(const struct args *a, const struct sb_result *r, const struct sb_hist *all)
{
	double s = r->seconds > 0 ? r->seconds : 1;

	printf("{\"workload\":\"%s\",\"file\":\"", a->workload);
	for (const char *p = a->file; *p; p++)
		printf((*p == '"' || *p == '\\') ? "\\%c" : ((unsigned char)*p < 0x20 ? "?" : "%c"),
		       *p);
	printf("\",\"size\":%llu,\"grow\":%s,\"queue_depth\":%u,\"seconds\":%.3f,"
	       "\"prefill_seconds\":%.3f,\"ios\":%llu,\"reads\":%llu,\"writes\":%llu,"
	       "\"read_bytes\":%llu,\"write_bytes\":%llu,\"grow_writes\":%llu,\"zero_reads\":%llu,"
	       "\"iops\":%.1f,\"read_iops\":%.1f,\"write_iops\":%.1f,\"mbps\":%.2f,",
	       (unsigned long long)a->size, a->grow ? "true" : "false", r->qd, r->seconds,
	       r->prefill_seconds, (unsigned long long)all->n, (unsigned long long)r->rd.n,
	       (unsigned long long)r->wr.n, (unsigned long long)r->read_bytes,
	       (unsigned long long)r->write_bytes, (unsigned long long)r->grow_writes,
	       (unsigned long long)r->zero_reads, all->n / s, r->rd.n / s, r->wr.n / s,
	       (double)(r->read_bytes + r->write_bytes) / 1e6 / s);
	json_lat("lat", all);
	printf(",");
	json_lat("read_lat", &r->rd);
	printf(",");
	json_lat("write_lat", &r->wr);
	printf("}\n");
}

static void print_table(const struct args *a, const struct sb_result *r, const struct sb_hist *all)
{
	double s = r->seconds > 0 ? r->seconds : 1;

	printf("%-12s %4s %10s %10s %9s %9s %9s %9s %9s\n", "workload", "qd", "IOPS", "MB/s",
	       "read IOPS", "write IOPS", "p50 ms", "p99 ms", "p99.9 ms");
	printf("%-12s %4u %10.0f %10.1f %9.0f %9.0f %9.3f %9.3f %9.3f\n", a->workload, r->qd,
	       all->n / s, (double)(r->read_bytes + r->write_bytes) / 1e6 / s, r->rd.n / s,
	       r->wr.n / s, ms(sb_hist_percentile(all, 50)), ms(sb_hist_percentile(all, 99)),
	       ms(sb_hist_percentile(all, 99.9)));
	if (a->grow)
		printf("grow: %llu blocks of 2 MiB appended, %llu reads of unwritten blocks "
		       "answered as zeros\n",
		       (unsigned long long)r->grow_writes, (unsigned long long)r->zero_reads);
}

static int mode_run(struct args *a)
{
	struct sb_run_opts o = {0};
	struct sb_result *r = calloc(1, sizeof(*r));
	struct sb_hist *all = calloc(1, sizeof(*all));
	int rc = SB_EXIT_ERROR;

	o.w = a->workload ? sb_workload_find(a->workload) : NULL;
	if (!o.w)
		fprintf(stderr, "spacebench: run needs -w WORKLOAD, one of: %s\n",
			sb_workload_names());
	else if (a->grow && strcmp(o.w->name, "vhdx") != 0)
		fprintf(stderr, "spacebench: --grow applies to the vhdx workload only\n");
	else if (!r || !all)
		fprintf(stderr, "spacebench: out of memory\n");
	else {
		o.path = a->file;
		o.size = a->have_size ? a->size : (1ull << 30);
		o.seconds = a->have_time ? a->seconds : 30;
		o.max_ios = a->ios;
		o.qd = a->qd;
		o.grow = a->grow;
		o.prefill = !a->no_prefill;
		o.prefill_only = a->prefill_only;
		o.seed = a->have_seed ? a->seed : 1;
		o.progress = !a->quiet && (a->progress || isatty(2));
		a->size = o.size;
		rc = sb_run(&o, r);
	}
	if (rc == SB_EXIT_OK) {
		sb_hist_merge(all, &r->rd);
		sb_hist_merge(all, &r->wr);
		if (a->json)
			print_json(a, r, all);
		else
			print_table(a, r, all);
	}
	free(r);
	free(all);
	return rc;
}

/* ---- write, verify ---- */

static int mode_write(const struct args *a)
{
	struct sb_write_opts o = {0};

	o.path = a->file;
	o.log = a->log;
	o.size = a->have_size ? a->size : (64ull << 20);
	o.bs = a->bs ? (uint32_t)a->bs : SB_SECTOR;
	o.count = a->count ? a->count : (a->have_time ? 0 : 4096);
	o.seconds = a->have_time ? a->seconds : 0;
	o.qd = a->qd ? a->qd : 16;
	o.fsync_every = a->fsync_every;
	o.seed = a->seed;
	o.drop = a->drop;
	if (!o.log) {
		fprintf(stderr, "spacebench: write needs --log LOG\n");
		return SB_EXIT_ERROR;
	}
	if (a->bs && (a->bs % SB_SECTOR || a->bs > SB_MAX_BS)) {
		fprintf(stderr, "spacebench: --bs must be a multiple of 4K up to 1M\n");
		return SB_EXIT_ERROR;
	}
	if (!o.size || o.size % o.bs || o.size > SB_MAX_FILE || o.size / o.bs < 2ull * o.qd) {
		fprintf(stderr, "spacebench: --size must be a multiple of --bs, at least "
				"2 x --qd blocks, at most 16T\n");
		return SB_EXIT_ERROR;
	}
	return sb_write(&o);
}

static int mode_verify(const struct args *a)
{
	struct sb_verify_opts o = {a->file, a->log, a->durable_only, a->max_report};

	if (!o.log) {
		fprintf(stderr, "spacebench: verify needs --log LOG\n");
		return SB_EXIT_ERROR;
	}
	return sb_verify(&o);
}

int main(int argc, char **argv)
{
	struct args a = {0};
	int rc = parse_args(argc, argv, &a);

	if (rc != 0)
		return rc > 0 ? SB_EXIT_OK : SB_EXIT_ERROR;
	if (strcmp(a.mode, "run") == 0)
		return mode_run(&a);
	if (strcmp(a.mode, "write") == 0)
		return mode_write(&a);
	if (strcmp(a.mode, "verify") == 0)
		return mode_verify(&a);
	fprintf(stderr, "spacebench: unknown mode '%s' (run, write or verify; see --help)\n",
		a.mode);
	return SB_EXIT_ERROR;
}
