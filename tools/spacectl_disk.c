/*
 * spacectl_disk.c -- the disk and job commands of spacectl.
 *
 *   spacectl disk add SOURCE DIR [--usage data|journal]
 *   spacectl disk replace SOURCE OLD NEW [--wait] [--rate MB/s]
 *   spacectl disk retire SOURCE DISK
 *   (spacectl disk set: tools/spacectl_model.c)
 *   spacectl repair SOURCE [VOLUME] [--wait] [--rate MB/s]
 *   spacectl scrub SOURCE [VOLUME] [--wait] [--rate MB/s]
 *
 * Repair and scrub are jobs of the spacefs daemon (fs/jobs.c): they need
 * the pool mounted, and these commands only start them and, with --wait,
 * follow their progress (a bar on a terminal, a line per 10% otherwise)
 * until they end, printing the job's report (with several nodes: every
 * volume's part, wherever it runs, as the node asked lists them all).
 * Changing the members works
 * both ways: through the daemon when one serves the pool (it must, as it
 * owns the superblock while mounted), else directly on the disks, in
 * which case the next mount rebuilds the replacement.
 *
 * Errors follow spacectl.c: one line "spacectl: <what>: <why>" and exit 1
 * (2 for a malformed command line).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool/ctl.h"
#include "pool/pool.h"
#include "tools/jobopts.h"
#include "tools/spacectl_disk.h"
#include "tools/table.h"

#define EXIT_USAGE 2

const char spacectl_help_disk[] =
    "usage: spacectl disk COMMAND ...\n"
    "\n"
    "disk commands:\n"
    "  add SOURCE DIR [-u journal]         add an empty directory to the pool; a\n"
    "                                      journal disk holds only the parity volumes'\n"
    "                                      journals, never data (disk add -h)\n"
    "  replace SOURCE OLD NEW [--wait] [--rate MB/s]\n"
    "                                      put NEW in place of disk OLD (an index or\n"
    "                                      a path) and rebuild its data onto it\n"
    "  retire SOURCE DISK [--wait] [--rate MB/s]\n"
    "                                      move every file's data off DISK (it must\n"
    "                                      still read), then nothing uses it\n"
    "  set SOURCE DISK MODEL-OPTIONS       make DISK emulate a real drive (HDD, SSD,\n"
    "                                      NVMe or custom): spacectl disk set --help\n"
    "  list SOURCE [-j]                    the disks: state, usage, model, space\n"
    "\n"
    "A mounted pool is changed through its daemon, which starts the rebuild at\n"
    "once; an unmounted pool is changed on its disks and rebuilt at the next mount.\n"
    "\n"
    "Journal disks (-u journal, like Storage Spaces' -Usage Journal): each\n"
    "parity volume keeps parity+1 journal copies on distinct disks, the journal\n"
    "disks first, its own disks for the rest.  One journal disk takes one copy\n"
    "off the data disks; parity+1 of them take all.  A failed or retired journal\n"
    "disk's copy falls back to the volume's disks, and comes back when it is\n"
    "replaced or added: an open volume moves its copies within seconds (at a\n"
    "journal checkpoint), without a remount.\n";

static const char help_disk_add[] =
    "usage: spacectl disk add SOURCE DIR [--usage data|journal]\n"
    "\n"
    "Add the empty directory DIR to the pool of disk SOURCE (through the daemon\n"
    "when the pool is mounted).\n"
    "\n"
    "options:\n"
    "  -u, --usage U   data (the default): file data and metadata go there;\n"
    "                  journal: a journal disk (Storage Spaces' -Usage Journal,\n"
    "                  for a fast device), holding only the journals of parity\n"
    "                  volumes, never data.  Each parity volume keeps parity+1\n"
    "                  journal copies on distinct disks, journal disks first\n"
    "                  (an open volume moves its copies there within seconds);\n"
    "                  one failed or retired falls back to the volume's own\n"
    "                  disks.  Fine without parity volumes.\n"
    "  -h, --help      show this help\n";

static const char help_job[] =
    "usage: spacectl %s SOURCE [VOLUME] [--wait] [--rate MB/s]\n"
    "\n"
    "%s\n"
    "Runs in the background in the spacefs daemon that has the pool mounted,\n"
    "only over allocated data, resumed after a daemon restart; progress shows in\n"
    "spacectl status.\n"
    "\n"
    "options:\n"
    "  -w, --wait        follow the job to its end (progress bar on a terminal);\n"
    "                    with several nodes, every volume's part on whichever\n"
    "                    node runs it\n"
    "  -r, --rate MB/s   at most this many megabytes of file data per second\n"
    "  -h, --help        show this help\n";

static struct pool *open_pool(const char *what, const char *source, unsigned flags)
{
	char err[POOL_MSG_MAX * 2];
	struct pool *p;

	if (pool_open(source, flags, &p, err, sizeof(err)) < 0) {
		cli_err(1, what, "%s", err);
		return NULL;
	}
	return p;
}

static int call(const struct pool *p, const char *req, char **reply, char *err, size_t len)
{
	char uuid[37];

	pool_uuid_format(p->sb->pool_uuid, uuid);
	err[0] = '\0';
	return pool_ctl_call(uuid, req, reply, err, len);
}

/* ---- following a job ------------------------------------------------------------ */

struct jobline {
	unsigned id, disk;
	char kind[16], state[16], volume[POOL_NAME_MAX + 1], msg[POOL_MSG_MAX];
	unsigned long long done, total, blocks, bad, repaired, unrec, rebuilt, ms;
};

static int parse_job(const char *line, struct jobline *j)
{
	*j = (struct jobline){0}; /* an empty message leaves msg untouched */
	return sscanf(line,
		      "job\t%u\t%15[^\t]\t%15[^\t]\t%u\t%64[^\t]\t%llu\t%llu\t%llu\t%llu\t%llu\t%"
		      "llu\t%llu\t%llu\t%511[^\n]",
		      &j->id, j->kind, j->state, &j->disk, j->volume, &j->done, &j->total,
		      &j->blocks, &j->bad, &j->repaired, &j->unrec, &j->rebuilt, &j->ms,
		      j->msg) >= 13;
}

/* Job `id` from the daemon's list; bad-file lines go to `bad` if not NULL. */
static int fetch_job(const struct pool *p, unsigned id, struct jobline *out, FILE *bad)
{
	char err[POOL_MSG_MAX], *reply = NULL;
	int found = -ENOENT;

	if (call(p, "jobs", &reply, err, sizeof(err)) < 0)
		return -EIO;
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		struct jobline j;
		unsigned bid;
		int at = 0;
		if (parse_job(l, &j) && j.id == id) {
			*out = j;
			found = 0;
		} else if (bad && sscanf(l, "bad\t%u\t%n", &bid, &at) == 1 && bid == id && at > 0) {
			fprintf(bad, "  file %s\n", l + at);
		}
	}
	free(reply);
	return found;
}

static void progress(const struct jobline *j, int tty, int *last_decile)
{
	double pct = j->total ? 100.0 * (double)j->done / (double)j->total : 0;
	double mbs = j->ms ? (double)j->done / ((double)j->ms / 1000.0) / 1e6 : 0;

	if (pct > 100)
		pct = 100;
	if (tty) {
		char bar[41];
		int fill = (int)(pct * 40 / 100);
		for (int i = 0; i < 40; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[40] = '\0';
		printf("\r%s [%s] %5.1f%%  %7.1f MB/s  %llu repaired", j->kind, bar, pct, mbs,
		       j->repaired);
		fflush(stdout);
	} else if ((int)(pct / 10) > *last_decile) {
		*last_decile = (int)(pct / 10);
		printf("%s: %.0f%% (%llu of %llu bytes, %.1f MB/s)\n", j->kind, pct, j->done,
		       j->total, mbs);
		fflush(stdout);
	}
}

/* Poll job `id` until it ends; print its report.  Exit status. */
static int wait_job(const struct pool *p, unsigned id, const char *what)
{
	int tty = isatty(STDOUT_FILENO), decile = -1;
	struct jobline j;

	for (;;) {
		int rc = fetch_job(p, id, &j, NULL);
		if (rc < 0)
			return cli_err(1, what, "lost track of job %u (daemon gone?)", id);
		progress(&j, tty, &decile);
		if (strcmp(j.state, "running"))
			break;
		struct timespec ts = {0, 200000000};
		nanosleep(&ts, NULL);
	}
	if (tty)
		printf("\n");
	printf("%s\n", j.msg);
	fetch_job(p, id, &j, stdout);
	if (strcmp(j.state, "done"))
		return cli_err(1, what, "job %u %s", id, j.state);
	if (j.unrec)
		return cli_err(1, what, "%llu block(s) could not be recovered", j.unrec);
	return 0;
}

/* ---- following the parts of a job (several nodes) -------------------------------- */

/* With several nodes a job has a part per volume, each on the volume's
 * owner, which may be another node and may change while it runs; every
 * node lists every part (from the records on the disks, fs/jobs.c), so
 * the node asked is polled for all of them. */
struct part {
	char slot[8]; /* "job" (repair, resync, retire) or "scrub" */
	char volume[POOL_NAME_MAX + 1];
	struct jobline row;
	int seen, missing;
};

#define MAX_PARTS     64
#define MISSING_POLLS 25 /* 5 s without a row: the volume went away */

static int part_final(const struct part *pt)
{
	return pt->missing >= MISSING_POLLS ||
	       (pt->seen && (!strcmp(pt->row.state, "done") || !strcmp(pt->row.state, "failed")));
}

/* "node NAME[: why]" (another node's row) or the local job's message. */
static void row_node(const struct jobline *j, char *node, size_t size, const char **why)
{
	int at = 0;

	*why = j->msg;
	if (sscanf(j->msg, "node %63[A-Za-z0-9._-]%n", node, &at) == 1 && at > 0) {
		*why = j->msg + at;
		*why += !strncmp(*why, ": ", 2) ? 2 : 0;
	} else {
		snprintf(node, size, "%s", "(the node asked)");
	}
}

/* One poll of every part; 1 when all are over, 0 if not, <0 on error. */
static int poll_parts(const struct pool *p, struct part *pt, int n, struct jobline *sum)
{
	char err[POOL_MSG_MAX], *reply = NULL;
	int over = 1;

	if (call(p, "jobs", &reply, err, sizeof(err)) < 0)
		return -EIO;
	for (int i = 0; i < n; i++)
		pt[i].seen = 0;
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		struct jobline j;
		/* a checkpoint merge or backup row of the volume is no part of
		 * a disk job (its slot is "job" for every kind but scrub) */
		if (!parse_job(l, &j) || !strcmp(j.kind, "merge") || !strcmp(j.kind, "backup"))
			continue;
		for (int i = 0; i < n; i++)
			if (!strcmp(j.volume, pt[i].volume) &&
			    !strcmp(j.kind, "scrub") == !strcmp(pt[i].slot, "scrub")) {
				pt[i].row = j;
				pt[i].seen = 1;
			}
	}
	free(reply);
	*sum = (struct jobline){0};
	for (int i = 0; i < n; i++) {
		pt[i].missing = pt[i].seen ? 0 : pt[i].missing + 1;
		over &= part_final(&pt[i]);
		if (pt[i].seen) {
			snprintf(sum->kind, sizeof(sum->kind), "%s", pt[i].row.kind);
			sum->done += pt[i].row.done;
			sum->total += pt[i].row.total;
			sum->repaired += pt[i].row.repaired;
			sum->ms = pt[i].row.ms > sum->ms ? pt[i].row.ms : sum->ms;
		}
	}
	return over;
}

/* Poll every part until each is done or failed; one line per part, one
 * error line per failed part.  Exit status. */
static int wait_parts(const struct pool *p, struct part *pt, int n, const char *what)
{
	int tty = isatty(STDOUT_FILENO), decile = -1, status = 0;
	struct jobline sum;

	for (;;) {
		int rc = poll_parts(p, pt, n, &sum);
		if (rc < 0)
			return cli_err(1, what, "lost track of the job's parts (daemon gone?)");
		if (sum.total)
			progress(&sum, tty, &decile);
		if (rc == 1)
			break;
		struct timespec ts = {0, 200000000};
		nanosleep(&ts, NULL);
	}
	if (tty)
		printf("\n");
	for (int i = 0; i < n; i++) {
		const struct jobline *j = &pt[i].row;
		char node[64];
		const char *why;
		if (pt[i].missing >= MISSING_POLLS) {
			printf("%s: volume %s: no longer listed (deleted?)\n", what, pt[i].volume);
			continue;
		}
		row_node(j, node, sizeof(node), &why);
		printf("%s: volume %s on node %s: %s, %llu bytes, %llu repaired, %llu "
		       "unrecoverable\n",
		       j->kind, pt[i].volume, node, j->state, j->done, j->repaired, j->unrec);
		if (!strcmp(j->state, "failed"))
			status =
			    cli_err(1, what, "volume %s (%s on node %s) failed: %s", pt[i].volume,
				    j->kind, node, why[0] ? why : "no reason recorded");
		else if (j->unrec)
			status = cli_err(1, what, "volume %s: %llu block(s) could not be recovered",
					 pt[i].volume, j->unrec);
	}
	return status;
}

/* ---- options shared by the job commands -------------------------------------------- */

struct jobargs {
	const char *source;
	const char *arg[2];
	int nargs;
	int wait;
	double rate; /* MB/s, 0 unlimited */
};

static int parse_jobargs(int argc, char **argv, const char *what, const char *help, int min,
			 int max, struct jobargs *a, int *done)
{
	struct jobopts o = {0};
	int rc = jobopts_parse(argc, argv, what, help, &o, done);

	if (rc || *done)
		return rc;
	a->wait = o.wait;
	a->rate = o.rate;
	int n = argc - optind;
	if (n < 1 + min || n > 1 + max)
		return cli_err(EXIT_USAGE, what,
			       "wrong number of arguments; see spacectl %s --help", what);
	a->source = argv[optind];
	for (int i = 0; i < n - 1; i++)
		a->arg[i] = argv[optind + 1 + i];
	a->nargs = n - 1;
	return 0;
}

/* Send a request that starts jobs; follow them with --wait. */
static int start_jobs(struct pool *p, const char *what, const char *req, int wait)
{
	char err[POOL_MSG_MAX * 2], *reply = NULL;
	int rc = call(p, req, &reply, err, sizeof(err));

	if (rc == -ENOENT)
		return cli_err(1, what,
			       "pool '%s' is not mounted: %s runs in the spacefs daemon (mount the "
			       "pool; a mount resumes unfinished repairs by itself)",
			       p->sb->pool_name, what);
	if (rc < 0)
		return cli_err(1, what, "%s", err[0] ? err : strerror(-rc));
	int status = 0, any = 0, nparts = 0;
	static struct part parts[MAX_PARTS];
	unsigned ids[MAX_PARTS];
	int nids = 0;
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		char vol[POOL_NAME_MAX + 1], node[80];
		if (nparts < MAX_PARTS &&
		    sscanf(l, "part %7s %64s", parts[nparts].slot, parts[nparts].volume) == 2) {
			parts[nparts].missing = 0;
			nparts++;
			continue;
		}
		if (sscanf(l, "on %64s %79s", vol, node) == 2) { /* several nodes */
			any = 1;
			printf("%s: volume %s: runs on its owner, node %s (spacectl status shows "
			       "it)\n",
			       what, vol, node);
			continue;
		}
		unsigned id = (unsigned)strtoul(l, NULL, 10);
		if (!id)
			continue;
		any = 1;
		printf("%s: job %u started\n", what, id);
		if (nids < MAX_PARTS)
			ids[nids++] = id;
	}
	if (wait && nparts) /* several nodes: the parts cover the local jobs too */
		status = wait_parts(p, parts, nparts, what);
	for (int i = 0; wait && !nparts && i < nids; i++)
		status |= wait_job(p, ids[i], what);
	if (!any)
		printf("%s: nothing to do\n", what);
	free(reply);
	return status;
}

static int cmd_job(int argc, char **argv, const char *what, const char *blurb)
{
	char help[2048], req[POOL_CTL_MAX_REQUEST];
	struct jobargs a = {0};
	int done, rc;

	snprintf(help, sizeof(help), help_job, what, blurb);
	rc = parse_jobargs(argc, argv, what, help, 0, 1, &a, &done);
	if (rc || done)
		return rc;
	struct pool *p = open_pool(what, a.source, 0);
	if (!p)
		return 1;
	snprintf(req, sizeof(req), "%s %s %g", what, a.nargs ? a.arg[0] : "-", a.rate);
	rc = start_jobs(p, what, req, a.wait);
	pool_close(p);
	return rc;
}

int spacectl_cmd_repair(int argc, char **argv)
{
	return cmd_job(argc, argv, "repair",
		       "Rebuild the data of replaced or returning disks (every volume, or\n"
		       "VOLUME) from the other copies and parity.");
}

int spacectl_cmd_scrub(int argc, char **argv)
{
	return cmd_job(argc, argv, "scrub",
		       "Read every block of every file (of every volume, or VOLUME), check\n"
		       "checksums, mirror copies against each other and parity against data,\n"
		       "and repair what is bad from good copies or parity.  Reports blocks\n"
		       "checked, repaired and unrecoverable, and names the files.");
}

/* ---- disk add / replace / retire ------------------------------------------------------ */

static int disk_offline(struct pool *p, const char *what,
			int (*fn)(struct pool *, const char **, char *, size_t), const char **args)
{
	char err[POOL_MSG_MAX * 2];

	if (fn(p, args, err, sizeof(err)) < 0)
		return cli_err(1, what, "%s", err);
	return 0;
}

static int off_add(struct pool *p, const char **a, char *err, size_t n)
{
	enum pool_member_usage u = !strcmp(a[1], "journal") ? POOL_USAGE_JOURNAL : POOL_USAGE_DATA;
	int rc = pool_disk_add_usage(p, a[0], u, err, n);

	if (rc == 0)
		printf("disk %u added%s: %s\n", p->ndisks - 1,
		       u == POOL_USAGE_JOURNAL ? " as a journal disk" : "",
		       p->disk[p->ndisks - 1].path);
	return rc;
}

/* Take "--usage X", "--usage=X" or "-u X" out of argv (before "--"),
 * leaving the other words in order for parse_jobargs.  *usage gets X;
 * 2 after one error line for a bad or missing value. */
static int take_usage(int *argc, char **argv, const char **usage)
{
	int o = 1;

	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i], *val = NULL;
		if (!strcmp(a, "--")) {
			while (i < *argc)
				argv[o++] = argv[i++];
			break;
		}
		if (!strncmp(a, "--usage=", 8)) {
			val = a + 8;
		} else if (!strcmp(a, "--usage") || !strcmp(a, "-u")) {
			if (i + 1 >= *argc)
				return cli_err(EXIT_USAGE, "disk add",
					       "--usage wants data or journal");
			val = argv[++i];
		} else {
			argv[o++] = argv[i];
			continue;
		}
		if (strcmp(val, "data") && strcmp(val, "journal"))
			return cli_err(EXIT_USAGE, "disk add",
				       "--usage wants data or journal, not '%s'", val);
		*usage = val;
	}
	*argc = o;
	return 0;
}

static int off_replace(struct pool *p, const char **a, char *err, size_t n)
{
	uint32_t idx;
	int rc = pool_disk_find(p, a[0], &idx);

	if (rc < 0) {
		snprintf(err, n, "%s: not a disk of pool '%s'", a[0], p->sb->pool_name);
		return rc;
	}
	rc = pool_disk_replace(p, idx, a[1], err, n);
	if (rc == 0)
		printf("disk %u replaced by %s; its data is rebuilt when the pool is next "
		       "mounted\n",
		       idx, p->disk[idx].path);
	return rc;
}

static int off_retire(struct pool *p, const char **a, char *err, size_t n)
{
	uint32_t idx;
	int rc = pool_disk_find(p, a[0], &idx);

	if (rc < 0) {
		snprintf(err, n, "%s: not a disk of pool '%s'", a[0], p->sb->pool_name);
		return rc;
	}
	rc = pool_disk_restore(p, idx, POOL_DISK_RETIRED, err, n);
	if (rc == 0)
		printf("disk %u retired: no new data goes there; the next mount moves its data "
		       "off\n",
		       idx);
	return rc;
}

/* "disk-add" through the daemon: it replies the new disk's index (not a
 * job: nothing is rebuilt). */
static int add_live(struct pool *p, const char *what, const char *req)
{
	char err[POOL_MSG_MAX * 2], *reply = NULL;
	int rc = call(p, req, &reply, err, sizeof(err));
	unsigned idx;

	/* pool_ctl_call leaves the reply after its "ok" line */
	const char *q = reply && !strncmp(reply, "ok\n", 3) ? reply + 3 : reply;
	if (rc < 0)
		rc = cli_err(1, what, "%s", err[0] ? err : strerror(-rc));
	else if (!q || sscanf(q, "%u", &idx) != 1)
		rc = cli_err(1, what, "unexpected reply from the daemon: %.80s", reply);
	else if (strstr(req, " journal"))
		printf("disk %u added as a journal disk; each open parity volume moves its "
		       "journal there at its next checkpoint (within seconds)\n",
		       idx);
	else
		printf("disk %u added; new files are placed on it now\n", idx);
	free(reply);
	return rc;
}

/* Through the daemon when it runs; offline otherwise. */
static int disk_cmd(const char *what, const char *source, const char *req, int wait,
		    int (*off)(struct pool *, const char **, char *, size_t), const char **args)
{
	char err[POOL_MSG_MAX * 2], *reply = NULL;
	struct pool *p = open_pool(what, source, 0);
	int rc;

	if (!p)
		return 1;
	rc = call(p, "jobs", &reply, err, sizeof(err));
	free(reply);
	if (rc == -ENOENT && pool_runlock_offline_pool(&p, source, err, sizeof(err)) < 0)
		rc = cli_err(1, what, "%s", err);
	else if (rc == -ENOENT)
		rc = disk_offline(p, what, off, args);
	else if (!req)
		rc = cli_err(1, what, "pool '%s' is mounted: unmount it first", p->sb->pool_name);
	else if (!strncmp(req, "disk-add ", 9))
		rc = add_live(p, what, req);
	else
		rc = start_jobs(p, what, req, wait);
	pool_close(p);
	return rc;
}

static const char *absolute(const char *path, char *buf)
{
	return realpath(path, buf) ? buf : path;
}

int spacectl_cmd_disk_add(int argc, char **argv)
{
	char req[POOL_CTL_MAX_REQUEST], abs[PATH_MAX];
	struct jobargs a = {0};
	const char *usage = "data";
	int done = 0, rc = take_usage(&argc, argv, &usage);

	if (rc == 0)
		rc = parse_jobargs(argc, argv, "disk add", help_disk_add, 1, 1, &a, &done);
	if (rc || done)
		return rc;
	const char *args[2] = {absolute(a.arg[0], abs), usage};
	if (strlen(args[0]) + 24 > sizeof(req))
		return cli_err(1, "disk add", "path too long");
	/* " journal" only when asked: a daemon before journal disks refuses
	 * it (malformed request) instead of adding a data disk */
	snprintf(req, sizeof(req), "disk-add %.4000s%s", args[0],
		 strcmp(usage, "journal") ? "" : " journal");
	return disk_cmd("disk add", a.source, req, 0, off_add, args);
}

int spacectl_cmd_disk_replace(int argc, char **argv)
{
	char req[POOL_CTL_MAX_REQUEST], abs[PATH_MAX];
	struct jobargs a = {0};
	int done,
	    rc = parse_jobargs(argc, argv, "disk replace", spacectl_help_disk, 2, 2, &a, &done);

	if (rc || done)
		return rc;
	const char *args[2] = {a.arg[0], absolute(a.arg[1], abs)};
	if (strchr(args[0], ' ') || strchr(args[1], ' '))
		return cli_err(1, "disk replace", "paths with spaces are not supported");
	if (strlen(args[0]) + strlen(args[1]) + 16 > sizeof(req))
		return cli_err(1, "disk replace", "paths too long");
	snprintf(req, sizeof(req), "disk-replace %.2000s %.2000s %g", args[0], args[1], a.rate);
	return disk_cmd("disk replace", a.source, req, a.wait, off_replace, args);
}

int spacectl_cmd_disk_retire(int argc, char **argv)
{
	struct jobargs a = {0};
	int done,
	    rc = parse_jobargs(argc, argv, "disk retire", spacectl_help_disk, 1, 1, &a, &done);

	if (rc || done)
		return rc;
	const char *args[1] = {a.arg[0]};
	char req[POOL_CTL_MAX_REQUEST];
	if (strlen(args[0]) + 64 > sizeof(req) || strchr(args[0], ' '))
		return cli_err(1, "disk retire", "bad disk name");
	snprintf(req, sizeof(req), "disk-retire %.3000s %g", args[0], a.rate);
	return disk_cmd("disk retire", a.source, req, a.wait, off_retire, args);
}

/* ---- status: the daemon's jobs ---------------------------------------------------- */

void spacectl_jobs_table(const struct pool *p)
{
	static const char *const head[] = {">JOB",	     "KIND",	  "STATE",
					   "TARGET",	     ">PROGRESS", ">REPAIRED",
					   ">UNRECOVERABLE", "NODE",	  ">MB/S"};
	char err[POOL_MSG_MAX], *reply = NULL;
	struct table *t;
	int rows = 0;

	if (call(p, "jobs", &reply, err, sizeof(err)) != 0)
		return;
	t = table_new(9, head);
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); t && l;
	     l = strtok_r(NULL, "\n", &save)) {
		struct jobline j;
		char id[16], target[96], prog[32], rep[24], unrec[24];
		if (!parse_job(l, &j))
			continue;
		snprintf(id, sizeof(id), "%u", j.id);
		if (!strcmp(j.kind, "scrub") || !strcmp(j.kind, "merge") ||
		    !strcmp(j.kind, "backup"))
			snprintf(target, sizeof(target), "volume %s", j.volume);
		else if (strcmp(j.volume, "-")) /* several nodes: a part per volume */
			snprintf(target, sizeof(target), "disk %u, volume %s", j.disk, j.volume);
		else
			snprintf(target, sizeof(target), "disk %u", j.disk);
		snprintf(prog, sizeof(prog), "%.1f%%",
			 j.total		      ? 100.0 * (double)j.done / (double)j.total
			 : strcmp(j.state, "running") ? 100.0
						      : 0.0);
		snprintf(rep, sizeof(rep), "%llu", j.repaired);
		snprintf(unrec, sizeof(unrec), "%llu", j.unrec);
		/* another node's job (several nodes): its message is "node NAME" */
		char node[80] = "here", mbs[24];
		/* a merge's: "checkpoint NAME[ node NAME]" */
		const char *on = strstr(j.msg, "node ");
		if (on && (on == j.msg || on[-1] == ' '))
			sscanf(on, "node %79[A-Za-z0-9._-]", node);
		char ck[64];
		const char *cp = strstr(j.msg, "checkpoint ");
		if (cp && (cp == j.msg || cp[-1] == ' ') &&
		    sscanf(cp, "checkpoint %63[^: ]", ck) == 1)
			snprintf(target + strlen(target), sizeof(target) - strlen(target),
				 " (%.24s)", ck);
		snprintf(mbs, sizeof(mbs), "%.1f",
			 j.ms ? (double)j.done / ((double)j.ms / 1000.0) / 1e6 : 0.0);
		const char *row[9] = {id, j.kind, j.state, target, prog, rep, unrec, node, mbs};
		table_row(t, row);
		rows++;
	}
	if (t && rows) {
		printf("\njobs\n");
		table_print(t, stdout);
	}
	table_free(t);
	free(reply);
}
