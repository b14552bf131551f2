/*
 * spacectl_ckpt.c -- checkpoints and backups (fs/ckpt.c does the work in
 * the daemon).
 *
 *   spacectl checkpoint create SOURCE VOLUME NAME [PATH...]
 *   spacectl checkpoint list SOURCE VOLUME
 *   spacectl checkpoint merge|delete SOURCE VOLUME NAME [--wait] [--rate MB/s]
 *   spacectl backup SOURCE VOLUME[/PATH] DEST [--wait] [--rate MB/s]
 *
 * A backup is: a checkpoint of VOLUME (or PATH in it), a copy of
 * MNT/VOLUME/.checkpoints/NAME/PATH into DEST through the mount (sparse
 * files stay sparse: only SEEK_DATA extents are copied), then the merge.
 * Its checkpoint is marked as a backup's: a daemon that starts and finds
 * one merges it (the copy cannot go on), and the next backup merges one
 * whose spacectl is gone.  Ctrl-C stops the copy and merges.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pool/ctl.h"
#include "pool/pool.h"
#include "tools/jobopts.h"
#include "tools/spacectl_ckpt.h"
#include "tools/table.h"

#define EXIT_USAGE 2
#define COPY_BUF   (1u << 20)
#define CK_NAME_LEN 64 /* a checkpoint name and its NUL (fs/ckpt.c) */

static const char help_ckpt[] =
    "usage: spacectl checkpoint COMMAND SOURCE VOLUME ...\n"
    "\n"
    "  create SOURCE VOLUME NAME [PATH...]   freeze the volume (or the PATHs in it:\n"
    "                                        files or directories) at one instant\n"
    "  list SOURCE VOLUME                    the volume's checkpoints\n"
    "  merge SOURCE VOLUME NAME [--wait] [--rate MB/s]\n"
    "                                        fold the checkpoint back into the live\n"
    "                                        files (they keep serving) and drop it\n"
    "  delete ...                            the same as merge\n"
    "\n"
    "A checkpoint reads at MNT/VOLUME/.checkpoints/NAME/PATH, read-only, with the\n"
    "sizes, contents, holes and times of its instant.  Writes after it go to\n"
    "differencing data (64 KiB granules) kept with the volume's own layout.\n"
    "A merge is a 'merge' row of spacectl status (a backup's, 'backup'): live\n"
    "while it runs, then the volume's last one stays listed as done or failed,\n"
    "the same on every node.  With several nodes, run these on any node:\n"
    "requests and .checkpoints reads go to the owner.\n";

static const char help_backup[] =
    "usage: spacectl backup SOURCE VOLUME[/PATH] DEST [--wait] [--rate MB/s]\n"
    "\n"
    "Checkpoint VOLUME (or PATH in it), copy the checkpoint into the directory\n"
    "DEST (sparse files stay sparse), then merge the checkpoint; the files keep\n"
    "serving throughout and DEST holds them as they were at one instant.  With\n"
    "--wait, return once the merge is done too.  Interrupted (Ctrl-C, a crash),\n"
    "the next backup or the next mount merges what was left: no checkpoint\n"
    "stays behind and no file of the volume changes.  A restore is a plain copy\n"
    "back.\n"
    "\n"
    "options:\n"
    "  -w, --wait        wait for the merge to finish\n"
    "  -r, --rate MB/s   copy (and merge) at most this fast\n";

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Send a request; the reply's text after "ok\n" in *body (malloc'd). */
static int ask(const char *what, const char *source, const char *req, char **body)
{
	char err[POOL_MSG_MAX * 2], uuid[37], *reply = NULL;
	struct pool *p;

	*body = NULL;
	if (pool_open(source, 0, &p, err, sizeof(err)) < 0)
		return cli_err(1, what, "%s", err);
	pool_uuid_format(p->sb->pool_uuid, uuid);
	err[0] = '\0';
	int rc = pool_ctl_call(uuid, req, &reply, err, sizeof(err));
	const char *name = p->sb->pool_name;
	if (rc == -ENOENT)
		rc = cli_err(1, what,
			     "pool '%s' is not mounted here: checkpoints live in the "
			     "spacefs daemon",
			     name);
	else if (rc < 0)
		rc = cli_err(1, what, "%s", err[0] ? err : strerror(-rc));
	pool_close(p);
	if (rc)
		return rc;
	*body = reply;
	return 0;
}

struct ck_line {
	char name[128], state[16], kind[16];
	long long created;
	unsigned files;
	unsigned long long done, total;
};

static int parse_line(const char *l, struct ck_line *c)
{
	return sscanf(l, "%127s %15s %lld %u %llu %llu %15s", c->name, c->state, &c->created,
		      &c->files, &c->done, &c->total, c->kind) == 7;
}

/* 1 if the checkpoint exists, 0 if not, <0 on error; *out filled. */
static int find(const char *what, const char *source, const char *vol, const char *name,
		struct ck_line *out)
{
	char req[512], *body;
	int found = 0;

	snprintf(req, sizeof(req), "ckpt-list %s", vol);
	if (ask(what, source, req, &body))
		return -1;
	for (char *s = NULL, *l = strtok_r(body, "\n", &s); l; l = strtok_r(NULL, "\n", &s))
		if (parse_line(l, out) && strcmp(out->name, name) == 0) {
			found = 1;
			break;
		}
	free(body);
	return found;
}

static int wait_merged(const char *what, const char *source, const char *vol, const char *name)
{
	struct ck_line c;
	int last = -1, r;

	while ((r = find(what, source, vol, name, &c)) == 1) {
		int pct = c.total ? (int)(100.0 * (double)c.done / (double)c.total) : 0;
		if (pct > 100)
			pct = 100;
		if (pct / 10 != last) {
			last = pct / 10;
			printf("%s: merging %s: %d%%\n", what, name, pct);
			fflush(stdout);
		}
		struct timespec ts = {0, 200000000};
		nanosleep(&ts, NULL);
	}
	if (r < 0)
		return 1;
	printf("%s: checkpoint %s merged\n", what, name);
	return 0;
}

static int merge(const char *what, const char *source, const char *vol, const char *name,
		 double rate, int wait)
{
	char req[512], *body;

	snprintf(req, sizeof(req), "ckpt-merge %s %s %.0f", vol, name, rate * 1e6);
	if (ask(what, source, req, &body))
		return 1;
	free(body);
	if (!wait) {
		printf("%s: merge of %s started (spacectl checkpoint list shows its progress)\n",
		       what, name);
		return 0;
	}
	return wait_merged(what, source, vol, name);
}

int spacectl_cmd_checkpoint(int argc, char **argv)
{
	const char *what = "checkpoint";
	struct jobopts jo = {0};
	int done = 0;
	char req[4096], *body;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(help_ckpt, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	const char *cmd = argv[1];
	argc--;
	argv++;
	if (jobopts_parse(argc, argv, what, help_ckpt, &jo, &done) || done)
		return done ? 0 : EXIT_USAGE;
	int n = argc - optind;
	char **a = argv + optind;
	if (!strcmp(cmd, "create") && n >= 3 && n <= 13) {
		int64_t len = snprintf(req, sizeof(req), "ckpt-create %s %s 0", a[1], a[2]);
		for (int i = 3; i < n && len < (int64_t)sizeof(req); i++)
			len += snprintf(req + len, sizeof(req) - (size_t)len, " %s", a[i]);
		if (strpbrk(a[2], " \t") || len >= (int64_t)sizeof(req))
			return cli_err(EXIT_USAGE, what, "names and paths may not hold spaces");
		if (ask(what, a[0], req, &body))
			return 1;
		printf("checkpoint %s of volume %s created in %.3f s\n", a[2], a[1], atof(body));
		free(body);
		return 0;
	}
	if (!strcmp(cmd, "list") && n == 2) {
		snprintf(req, sizeof(req), "ckpt-list %s", a[1]);
		if (ask(what, a[0], req, &body))
			return 1;
		printf("%-24s %-8s %-20s %6s %s\n", "NAME", "STATE", "CREATED", "FILES", "MERGED");
		for (char *s = NULL, *l = strtok_r(body, "\n", &s); l;
		     l = strtok_r(NULL, "\n", &s)) {
			struct ck_line c;
			char when[32] = "?";
			if (!parse_line(l, &c))
				continue;
			time_t t = (time_t)c.created;
			struct tm tm;
			if (gmtime_r(&t, &tm))
				strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			char merged[32] = "-";
			if (!strcmp(c.state, "merging"))
				snprintf(merged, sizeof(merged), "%.0f%%",
					 c.total ? 100.0 * (double)c.done / (double)c.total : 0.0);
			printf("%-24s %-8s %-20s %6u %s%s\n", c.name, c.state, when, c.files,
			       merged, strcmp(c.kind, "backup") ? "" : " (backup)");
		}
		free(body);
		return 0;
	}
	if ((!strcmp(cmd, "merge") || !strcmp(cmd, "delete")) && n == 3)
		return merge(what, a[0], a[1], a[2], jo.rate, jo.wait);
	return cli_err(EXIT_USAGE, what,
		       "unknown command or wrong arguments; see spacectl "
		       "checkpoint --help");
}

/* ---- backup ---- */

struct copy {
	const char *what;
	const char *source, *vol, *name; /* progress reports to the daemon */
	struct timespec reported;
	double rate; /* bytes/s, 0 none */
	uint64_t done, total;
	struct timespec start;
	int last;
	char *buf;
};

static double since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Tell the daemon how far the copy is, for `spacectl status` (a backup
 * row): once a second, silently (a report lost costs nothing). */
static void report(struct copy *c, bool force)
{
	char err[POOL_MSG_MAX], uuid[37], req[512], *reply = NULL;
	struct pool *p;

	if (!c->source || (!force && since(&c->reported) < 1.0))
		return;
	clock_gettime(CLOCK_MONOTONIC, &c->reported);
	if (pool_open(c->source, 0, &p, err, sizeof(err)) < 0)
		return;
	pool_uuid_format(p->sb->pool_uuid, uuid);
	snprintf(req, sizeof(req), "ckpt-copy %s %s %llu %llu", c->vol, c->name,
		 (unsigned long long)c->done, (unsigned long long)c->total);
	pool_ctl_call(uuid, req, &reply, err, sizeof(err));
	free(reply);
	pool_close(p);
}

static void tick(struct copy *c, uint64_t n)
{
	c->done += n;
	report(c, false);
	if (c->rate > 0) {
		double ahead = (double)c->done / c->rate - since(&c->start);
		if (ahead > 0)
			usleep((useconds_t)(ahead * 1e6));
	}
	int pct = c->total ? (int)(100.0 * (double)c->done / (double)c->total) : 100;
	if (pct / 10 != c->last) {
		c->last = pct / 10;
		double t = since(&c->start);
		printf("%s: copied %d%% (%llu of %llu bytes, %.1f MB/s)\n", c->what, pct,
		       (unsigned long long)c->done, (unsigned long long)c->total,
		       t > 0 ? (double)c->done / t / 1e6 : 0.0);
		fflush(stdout);
	}
}

/* Bytes of data (SEEK_DATA extents) of a file. */
static uint64_t data_bytes(int fd, uint64_t size)
{
	uint64_t total = 0;
	off_t pos = 0;

	while ((uint64_t)pos < size) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0)
			break;
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			h = (off_t)size;
		total += (uint64_t)(h - d);
		pos = h;
	}
	return total;
}

/* Write all of len bytes at off; 0 or an errno. */
static int pwrite_all(int fd, const char *p, size_t len, off_t off)
{
	while (len) {
		ssize_t w = pwrite(fd, p, len, off);
		if (w < 0)
			return errno;
		if (w == 0)
			return EIO;
		p += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

/* Copy the data extents of in into out: 0, or an errno (*bad_out set if
 * it came from out).  Only ENXIO from SEEK_DATA means no more data. */
static int copy_data(struct copy *c, int in, int out, off_t size, bool *bad_out)
{
	*bad_out = false;
	for (off_t pos = 0; pos < size;) {
		off_t d = lseek(in, pos, SEEK_DATA);
		if (d < 0)
			return errno == ENXIO ? 0 : errno;
		off_t h = lseek(in, d, SEEK_HOLE);
		if (h < 0)
			return errno;
		if (h > size)
			h = size;
		for (off_t o = d; o < h;) {
			if (interrupted)
				return EINTR;
			size_t len = (size_t)(h - o) < COPY_BUF ? (size_t)(h - o) : COPY_BUF;
			ssize_t r = pread(in, c->buf, len, o);
			if (r <= 0)
				return r < 0 ? errno : EIO; /* the checkpoint is shorter */
			int e = pwrite_all(out, c->buf, (size_t)r, o);
			if (e) {
				*bad_out = true;
				return e;
			}
			o += r;
			tick(c, (uint64_t)r);
		}
		pos = h;
	}
	return interrupted ? EINTR : 0;
}

/* The name a file's copy is written under until it is complete: beside
 * dst, so that the rename is atomic (short: dst's name may be long). */
static int partial_name(char *out, size_t size, const char *dst)
{
	const char *slash = strrchr(dst, '/');
	int dirlen = slash ? (int)(slash - dst) : 1;

	if (snprintf(out, size, "%.*s/.spacectl-backup-%d.partial", dirlen, slash ? dst : ".",
		     (int)getpid()) >= (int)size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* A new file at tmp (a leftover of an interrupted run removed first;
 * never written through a symlink). */
static int create_partial(const char *tmp, mode_t mode)
{
	if (unlink(tmp) < 0 && errno != ENOENT)
		return -1;
	return open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
}

/* Only a complete copy replaces dst (written beside it, renamed over
 * it: an existing entry, a symlink or a hard link, is replaced, never
 * written through); a failed or interrupted one is removed, and an
 * older copy at dst stays as it was. */
static int copy_file(struct copy *c, const char *src, const char *dst, const struct stat *st)
{
	char tmp[PATH_MAX];
	int in = open(src, O_RDONLY | O_CLOEXEC), out = -1;

	if (in < 0)
		return cli_err(1, c->what, "%s: %s", src, strerror(errno));
	if (partial_name(tmp, sizeof(tmp), dst) == 0)
		out = create_partial(tmp, st->st_mode & 07777);
	if (out < 0) {
		int e = errno;
		close(in);
		return cli_err(1, c->what, "%s: %s", dst, strerror(e));
	}
	bool bad_out = true;
	int e = copy_data(c, in, out, st->st_size, &bad_out);
	if (e == 0 && (ftruncate(out, st->st_size) < 0 || fsync(out) < 0)) {
		e = errno;
		bad_out = true;
	}
	if (e == 0) {
		struct timespec ts[2] = {st->st_atim, st->st_mtim};
		futimens(out, ts);
	}
	close(out);
	close(in);
	if (e == 0 && rename(tmp, dst) == 0)
		return 0;
	if (e == 0) {
		e = errno;
		bad_out = true;
	}
	unlink(tmp);
	if (e == EINTR && interrupted)
		return cli_err(1, c->what, "interrupted; %s not written (an older copy stays)",
			       dst);
	return cli_err(1, c->what, "%s: %s; %s not written (an older copy stays)",
		       bad_out ? dst : src, strerror(e), dst);
}

/* A directory at path, or the one there (not a symlink to one). */
static int make_dir(const char *path, mode_t mode)
{
	struct stat st;

	if (mkdir(path, mode) == 0)
		return 0;
	if (errno != EEXIST || lstat(path, &st) < 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

static int walk(struct copy *c, const char *src, const char *dst, int count)
{
	struct stat st;

	if (interrupted)
		return 0;
	if (stat(src, &st) < 0)
		return cli_err(1, c->what, "%s: %s", src, strerror(errno));
	if (S_ISREG(st.st_mode)) {
		if (count) {
			int fd = open(src, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				c->total += data_bytes(fd, (uint64_t)st.st_size);
				close(fd);
			}
			return 0;
		}
		return copy_file(c, src, dst, &st);
	}
	if (!S_ISDIR(st.st_mode))
		return 0;
	if (!count && make_dir(dst, st.st_mode & 07777) < 0)
		return cli_err(1, c->what, "%s: %s", dst, strerror(errno));
	DIR *d = opendir(src);
	if (!d)
		return cli_err(1, c->what, "%s: %s", src, strerror(errno));
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (errno = 0, e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char *s, *t;
		if (asprintf(&s, "%s/%s", src, e->d_name) < 0)
			return cli_err(1, c->what, "out of memory");
		if (asprintf(&t, "%s/%s", dst, e->d_name) < 0) {
			free(s);
			return cli_err(1, c->what, "out of memory");
		}
		rc = walk(c, s, t, count);
		free(s);
		free(t);
	}
	if (rc == 0 && !e && errno)
		rc = cli_err(1, c->what, "%s: %s", src, strerror(errno));
	closedir(d);
	if (rc == 0 && !count && !interrupted) {
		struct timespec ts[2] = {st.st_atim, st.st_mtim};
		utimensat(AT_FDCWD, dst, ts, 0);
	}
	return rc;
}

/* A backup's checkpoint name: backup-PID-TIME-HOST (HOST cut to fit). */
static void backup_name(char *out, size_t size, int pid, long t)
{
	char host[256] = "";

	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	for (char *h = host; *h; h++)
		if (*h == '/' || *h <= ' ')
			*h = '_';
	snprintf(out, size, "backup-%d-%ld-%s", pid, t, host);
}

/* Whether a backup checkpoint is this host's (an old-style name,
 * backup-PID-TIME, counts as this host's); its spacectl's PID in *pid,
 * 0 if the name holds none. */
static bool backup_is_ours(const char *name, int *pid)
{
	char mine[CK_NAME_LEN];
	long t;
	int n = 0;

	*pid = 0;
	if (sscanf(name, "backup-%d-%ld%n", pid, &t, &n) != 2 || n == 0) {
		*pid = 0;
		return true;
	}
	if (!name[n])
		return true;
	backup_name(mine, sizeof(mine), *pid, t);
	return strcmp(mine, name) == 0;
}

/* Backups left by a spacectl of this host that is gone: merge them.
 * Another host's are left alone (its spacectl may be running). */
static void clean_stale(const char *what, const char *source, const char *vol)
{
	char req[512], others[256] = "", *body;
	int nothers = 0;

	snprintf(req, sizeof(req), "ckpt-list %s", vol);
	if (ask(what, source, req, &body))
		return;
	for (char *s = NULL, *l = strtok_r(body, "\n", &s); l; l = strtok_r(NULL, "\n", &s)) {
		struct ck_line c;
		int pid;
		if (!parse_line(l, &c) || strcmp(c.kind, "backup") || strcmp(c.state, "ready"))
			continue;
		if (!backup_is_ours(c.name, &pid)) {
			size_t len = strlen(others);
			if (len < sizeof(others) - 1)
				snprintf(others + len, sizeof(others) - len, "%s%s", len ? " " : "",
					 c.name);
			nothers++;
			continue;
		}
		if (pid > 0 && pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM))
			continue; /* another backup is running (EPERM: another user's) */
		printf("%s: merging %s, left by an interrupted backup\n", what, c.name);
		char *b2;
		snprintf(req, sizeof(req), "ckpt-merge %s %s 0", vol, c.name);
		if (ask(what, source, req, &b2) == 0)
			free(b2);
	}
	free(body);
	if (nothers)
		printf("%s: %d backup checkpoint(s) of other hosts left alone: %s\n", what, nothers,
		       others);
}

int spacectl_cmd_backup(int argc, char **argv)
{
	const char *what = "backup";
	struct jobopts jo = {0};
	int done = 0, rc;
	char vol[POOL_NAME_MAX + 1], name[CK_NAME_LEN], req[4096], *body;

	if (jobopts_parse(argc, argv, what, help_backup, &jo, &done) || done)
		return done ? 0 : EXIT_USAGE;
	if (argc - optind != 3)
		return cli_err(EXIT_USAGE, what,
			       "wrong number of arguments; see spacectl backup "
			       "--help");
	const char *source = argv[optind], *target = argv[optind + 1], *dest = argv[optind + 2];
	const char *slash = strchr(target, '/');
	const char *path = slash ? slash + 1 : "";
	snprintf(vol, sizeof(vol), "%.*s", slash ? (int)(slash - target) : (int)strlen(target),
		 target);
	struct stat dst;
	if (stat(dest, &dst) < 0 || !S_ISDIR(dst.st_mode))
		return cli_err(1, what, "%s: not a directory", dest);
	if (strpbrk(path, " \t"))
		return cli_err(EXIT_USAGE, what, "paths may not hold spaces");

	clean_stale(what, source, vol);
	if (ask(what, source, "ckpt-mnt", &body))
		return 1;
	char mnt[4096];
	snprintf(mnt, sizeof(mnt), "%s", body);
	free(body);
	char *nl = strchr(mnt, '\n');
	if (nl)
		*nl = '\0';
	backup_name(name, sizeof(name), (int)getpid(), (long)time(NULL));
	snprintf(req, sizeof(req), "ckpt-create %s %s 1 %s", vol, name, path);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (ask(what, source, req, &body))
		return 1;
	free(body);
	printf("%s: checkpoint %s of %s taken\n", what, name, target);

	char src[8192], to[8192];
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	snprintf(src, sizeof(src), "%s/%s/.checkpoints/%s/%s", mnt, vol, name, path);
	snprintf(to, sizeof(to), "%s%s%s", dest, *base ? "/" : "", base);
	struct copy c = {.what = what,
			 .rate = jo.rate * 1e6,
			 .last = -1,
			 .source = source,
			 .vol = vol,
			 .name = name};
	clock_gettime(CLOCK_MONOTONIC, &c.start);
	c.buf = malloc(COPY_BUF);
	rc = c.buf ? walk(&c, src, to, 1) : cli_err(1, what, "out of memory");
	report(&c, true);
	if (rc == 0)
		rc = walk(&c, src, to, 0);
	report(&c, true);
	free(c.buf);
	if (interrupted)
		rc = cli_err(130, what, "interrupted; the copy in %s is incomplete", dest);
	else if (rc == 0)
		printf("%s: %llu bytes of data copied to %s\n", what, (unsigned long long)c.done,
		       to);
	int mrc = merge(what, source, vol, name, jo.rate, jo.wait);
	return rc ? rc : mrc;
}
