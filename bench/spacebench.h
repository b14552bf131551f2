/*
 * spacebench.h -- the three modes of spacebench (see spacebench.c):
 * `run` a timed workload, `write` self-describing blocks with a log, and
 * `verify` a file against such a log.  Each returns the process exit
 * code: 0 clean, 1 problems found (verify), 2 usage or I/O error, after
 * printing one line naming what and where.
 */
#ifndef SPACEFS_BENCH_SPACEBENCH_H
#define SPACEFS_BENCH_SPACEBENCH_H

#include <stdint.h>

#include "bench/sb.h"

#define SB_EXIT_OK	 0
#define SB_EXIT_PROBLEMS 1
#define SB_EXIT_ERROR	 2

#define SB_GROW_BLOCK (2u << 20) /* dynamic VHDX block */

struct sb_workload {
	const char *name;
	unsigned read_pct; /* share of reads, % */
	unsigned qd;	   /* default queue depth */
	int seq;	   /* sequential (else random) */
	int hot;	   /* 80% of I/Os on a 20% hot spot */
	unsigned nbs;
	uint32_t bs[3];
	unsigned bs_pct[3];
};

/* The named workload, or NULL. */
const struct sb_workload *sb_workload_find(const char *name);
/* "vhdx, randread4k, ..." for help and errors. */
const char *sb_workload_names(void);

struct sb_run_opts {
	const char *path;
	const struct sb_workload *w;
	uint64_t size;
	double seconds;
	uint64_t max_ios; /* 0: time only */
	unsigned qd;	  /* 0: the workload's */
	int grow;
	int prefill; /* lay the file out first when it is short or sparse */
	int prefill_only;
	int progress; /* a progress line on stderr */
	uint64_t seed;
};

struct sb_result {
	struct sb_hist rd, wr;
	uint64_t read_bytes, write_bytes;
	uint64_t grow_writes, zero_reads;
	double seconds, prefill_seconds;
	unsigned qd;
};

/* Run a workload; on error prints one line and returns SB_EXIT_ERROR. */
int sb_run(const struct sb_run_opts *o, struct sb_result *r);

struct sb_write_opts {
	const char *path, *log;
	uint64_t size, count, seed, drop;
	uint32_t bs;
	unsigned qd, fsync_every;
	double seconds;
};

int sb_write(const struct sb_write_opts *o);

struct sb_verify_opts {
	const char *path, *log;
	int durable_only;
	unsigned max_report;
};

int sb_verify(const struct sb_verify_opts *o);

uint64_t sb_now_ns(void);

#endif /* SPACEFS_BENCH_SPACEBENCH_H */
