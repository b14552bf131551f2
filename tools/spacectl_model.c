/*
 * spacectl_model.c -- emulated disks on the command line.
 *
 *   spacectl disk set SOURCE DISK --model hdd-7200|hdd-15k|ssd-sata|nvme|none
 *   spacectl disk set SOURCE DISK --iops N --mbps N --latency DURATION
 *   spacectl pool create ... --model M        (spacectl.c, through
 *                                              spacectl_model_parse)
 *   spacectl status: the MODEL column and the busy-time table
 *
 * The model lives in the pool superblock (pool/diskmodel.h).  Like the
 * other disk commands, a mounted pool is changed through its daemon (which
 * owns the superblock and switches the disk's queue at once), an unmounted
 * one directly on its disks under the pool's run lock.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/ctl.h"
#include "pool/diskmodel.h"
#include "pool/pool.h"
#include "tools/spacectl_disk.h"
#include "tools/table.h"

#define EXIT_USAGE 2

const char spacectl_help_disk_set[] =
    "usage: spacectl disk set SOURCE DISK --model MODEL\n"
    "       spacectl disk set SOURCE DISK --iops N --mbps N --latency DURATION\n"
    "\n"
    "Make disk DISK (an index or a path) of the pool emulate a real drive: the\n"
    "daemon completes each chunk I/O of that disk no sooner than such a drive\n"
    "would (docs/BENCHMARKS.md, \"Emulated disks\", has every figure and its\n"
    "source).  The model is kept in the pool and survives remounts.\n"
    "\n"
    "options:\n"
    "  -m, --model MODEL     hdd-7200, hdd-15k, ssd-sata, nvme, or none (the\n"
    "                        directory's own speed; the default)\n"
    "  --iops N              a custom flash-like disk: at most N I/Os per second,\n"
    "  --mbps N              N megabytes (10^6 bytes) per second,\n"
    "  --latency DURATION    and this latency per I/O (e.g. 100us, 0.5ms, 2ms)\n"
    "  -h, --help            show this help\n";

/* "100us", "0.5ms", "2s" -> microseconds.  -EINVAL without a unit. */
static int parse_duration(const char *s, uint32_t *us)
{
	char *end;
	double v = strtod(s, &end), mul;

	if (end == s || v < 0)
		return -EINVAL;
	if (!strcmp(end, "us"))
		mul = 1;
	else if (!strcmp(end, "ms"))
		mul = 1e3;
	else if (!strcmp(end, "s"))
		mul = 1e6;
	else
		return -EINVAL;
	v *= mul;
	if (v > 10e6)
		return -EINVAL;
	*us = (uint32_t)(v + 0.5);
	return 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (end == s || *end || v == 0 || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int spacectl_model_parse(const char *name, struct pool_diskmodel *out, const char *what)
{
	if (pool_diskmodel_preset(name, out) < 0)
		return cli_err(EXIT_USAGE, what,
			       "unknown disk model '%s' (hdd-7200, hdd-15k, ssd-sata, nvme, none)",
			       name);
	return 0;
}

struct set_args {
	const char *source, *disk;
	const char *model;
	const char *iops, *mbps, *latency;
};

static int parse_set(int argc, char **argv, struct set_args *a, struct pool_diskmodel *m, int *done)
{
	static const struct option lo[] = {
	    {"model", required_argument, NULL, 'm'}, {"iops", required_argument, NULL, 'i'},
	    {"mbps", required_argument, NULL, 'b'},  {"latency", required_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},	     {0}};
	const char *what = "disk set";
	int c;

	*done = 0;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:h", lo, NULL)) != -1) {
		if (c == 'h') {
			fputs(spacectl_help_disk_set, stdout);
			*done = 1;
			return 0;
		}
		if (c == 'm')
			a->model = optarg;
		else if (c == 'i')
			a->iops = optarg;
		else if (c == 'b')
			a->mbps = optarg;
		else if (c == 'l')
			a->latency = optarg;
		else
			return cli_err(EXIT_USAGE, what, "unknown option or missing value '%s'",
				       argv[optind - 1]);
	}
	if (argc - optind != 2)
		return cli_err(EXIT_USAGE, what,
			       "needs SOURCE and DISK; see spacectl disk set --help");
	a->source = argv[optind];
	a->disk = argv[optind + 1];
	int custom = a->iops || a->mbps || a->latency;
	if (a->model && custom)
		return cli_err(EXIT_USAGE, what,
			       "give --model or --iops/--mbps/--latency, not both");
	if (a->model)
		return spacectl_model_parse(a->model, m, what);
	if (!custom)
		return cli_err(EXIT_USAGE, what, "needs --model or --iops, --mbps and --latency");
	uint32_t iops, mbps, lat;
	const char *why;
	if (!a->iops || parse_u32(a->iops, &iops) < 0)
		return cli_err(EXIT_USAGE, what, "--iops wants a positive number, not '%s'",
			       a->iops ? a->iops : "");
	if (!a->mbps || parse_u32(a->mbps, &mbps) < 0)
		return cli_err(EXIT_USAGE, what, "--mbps wants a positive number, not '%s'",
			       a->mbps ? a->mbps : "");
	if (!a->latency || parse_duration(a->latency, &lat) < 0)
		return cli_err(EXIT_USAGE, what,
			       "--latency wants a duration like 100us, 0.5ms or 2ms, not '%s'",
			       a->latency ? a->latency : "");
	if (pool_diskmodel_custom(iops, mbps, lat, m, &why) < 0)
		return cli_err(EXIT_USAGE, what, "%s", why);
	return 0;
}

static int daemon_req(const struct pool *p, const char *req, char **reply, char *err, size_t len)
{
	char uuid[37];

	pool_uuid_format(p->sb->pool_uuid, uuid);
	err[0] = '\0';
	return pool_ctl_call(uuid, req, reply, err, len);
}

static void said(uint32_t idx, const struct pool_diskmodel *m, const char *how)
{
	char fig[160];

	pool_diskmodel_describe(m, fig, sizeof(fig));
	printf("disk %u: model %s%s%s%s%s\n", idx, pool_diskmodel_name(m), fig[0] ? " (" : "", fig,
	       fig[0] ? ")" : "", how);
}

int spacectl_cmd_disk_set(int argc, char **argv)
{
	const char *what = "disk set";
	char err[POOL_MSG_MAX * 2], req[POOL_CTL_MAX_REQUEST], *reply = NULL;
	struct set_args a = {0};
	struct pool_diskmodel m;
	struct pool *p;
	uint32_t idx;
	int done, rc = parse_set(argc, argv, &a, &m, &done);

	if (rc || done)
		return rc;
	if (pool_open(a.source, 0, &p, err, sizeof(err)) < 0)
		return cli_err(1, what, "%s", err);
	if (pool_disk_find(p, a.disk, &idx) < 0) {
		rc = cli_err(1, what, "%s: not a disk of pool '%s'", a.disk, p->sb->pool_name);
		pool_close(p);
		return rc;
	}
	snprintf(req, sizeof(req), "disk-model %u %u %u %u %u %u %u %u %u %u %u %u", idx, m.kind,
		 m.preset, m.rpm, m.seek_min_us, m.seek_avg_us, m.read_lat_us, m.write_lat_us,
		 m.read_mbps, m.write_mbps, m.read_iops, m.write_iops);
	rc = daemon_req(p, req, &reply, err, sizeof(err));
	free(reply);
	if (rc == 0) {
		said(idx, &m, "; the daemon serves the disk by it now");
	} else if (rc != -ENOENT) {
		rc = cli_err(1, what, "%s", err[0] ? err : strerror(-rc));
	} else if (pool_runlock_offline_pool(&p, a.source, err, sizeof(err)) < 0) {
		rc = cli_err(1, what, "%s", err);
	} else if (pool_disk_set_model(p, idx, &m, err, sizeof(err)) < 0) {
		rc = cli_err(1, what, "%s", err);
	} else {
		said(idx, &m, "");
		rc = 0;
	}
	pool_close(p);
	return rc;
}

/* ---- status ---------------------------------------------------------------------- */

void spacectl_busy_table(const struct pool *p)
{
	static const char *const head[] = {">DISK", "MODEL", ">I/OS", ">BUSY", ">UTIL"};
	char err[POOL_MSG_MAX], *reply = NULL;
	struct table *t;
	int rows = 0;

	if (daemon_req(p, "disk-busy", &reply, err, sizeof(err)) != 0)
		return;
	t = table_new(5, head);
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); t && l;
	     l = strtok_r(NULL, "\n", &save)) {
		char model[32], disk[16], ios[24], busy[32], util[16];
		unsigned long long b, e, n;
		unsigned d;
		if (sscanf(l, "%u\t%31[^\t]\t%llu\t%llu\t%llu", &d, model, &b, &e, &n) != 5)
			continue;
		if (!strcmp(model, "none") && n == 0)
			continue;
		snprintf(disk, sizeof(disk), "%u", d);
		snprintf(ios, sizeof(ios), "%llu", n);
		snprintf(busy, sizeof(busy), "%.1f s", (double)b / 1e9);
		double u = e ? 100.0 * (double)b / (double)e : 0;
		snprintf(util, sizeof(util), "%.1f%%", u > 100 ? 100 : u);
		const char *row[5] = {disk, model, ios, busy, util};
		table_row(t, row);
		rows++;
	}
	if (t && rows) {
		printf("\nemulated disks since mount (busy: time the modelled drive worked)\n");
		table_print(t, stdout);
	}
	table_free(t);
	free(reply);
}
