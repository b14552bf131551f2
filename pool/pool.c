/*
 * pool.c -- a pool of disks: membership, the mount rule, the volume
 * catalogue and the placement of new files.
 *
 * A pool has no home: every member disk carries a full copy of the pool's
 * superblock (superblock.c), so the pool can be opened from any of them.
 * Opening is detective work.  Starting from the SOURCE directory we read
 * its copy, follow the last-known paths of the members it lists, read
 * those copies, follow the paths *they* list (a stale copy may know other
 * paths), and so on until no new directory turns up.  Each copy found is
 * matched to its member by disk UUID, not by path, so disks that moved
 * are still recognised when passed explicitly (pool_open_paths).
 *
 * Then the mount rule, the same one Storage Spaces uses to declare a pool
 * "incomplete": the pool takes the highest generation whose content is
 * held by a majority of the members that content lists.  A commit is
 * written to every healthy disk and only counts once a majority has it,
 * so two majorities can never disagree, and a commit interrupted before
 * reaching a majority is rolled back by the next open, as in Raft.  A
 * disk that holds an older (or a minority newer) copy is "stale": it is
 * named and kept out until a resync brings it back.  A copy that does not
 * decode is "damaged"; a copy of another pool, or of another member, is
 * "foreign"; both are named and skipped, never used.
 *
 * Catalogue changes (volumes) edit the in-memory superblock and commit it
 * with the next generation.  Deleting a volume is two commits around the
 * removal of its directories, so a crash in the middle leaves a volume
 * marked "deleting" rather than a half-deleted volume or orphan files.
 *
 * Placement of a new file's positions is the only hot path here: the
 * FUSE daemon calls pool_place() on every create, from many threads.  It
 * works from free-space figures cached for a second (statvfs on every
 * create would be wasteful), counted in whole GiB so that disks about
 * equally full are ties, and breaks ties with a rotating counter so a
 * stream of small files spreads over all disks instead of piling onto
 * the emptiest one.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "pool/journal.h"
#include "pool/pool.h"

#define SPACE_TTL_NS 1000000000LL	  /* free-space cache lifetime */
#define SPACE_UNIT   30			  /* placement compares free space in 2^30 bytes */
#define SCAN_MAX     (4 * POOL_MAX_DISKS) /* directories one open looks at */

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* Messages may be cut short; paths are long but messages need not be. */
static void say(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

const char *pool_disk_state_name(enum pool_disk_state s)
{
	switch (s) {
	case POOL_DISK_HEALTHY:
		return "healthy";
	case POOL_DISK_MISSING:
		return "missing";
	case POOL_DISK_DAMAGED:
		return "damaged";
	case POOL_DISK_FOREIGN:
		return "foreign";
	case POOL_DISK_STALE:
		return "stale";
	case POOL_DISK_FAILED:
		return "failed";
	case POOL_DISK_REPAIRING:
		return "repairing";
	case POOL_DISK_RETIRED:
		return "retired";
	}
	return "unknown";
}

int pool_disk_is_journal(const struct pool *p, uint32_t idx)
{
	return idx < p->ndisks && p->sb->member[idx].usage == POOL_USAGE_JOURNAL;
}

/* Healthy and holding data: what placement, metadata and capacity use. */
static int data_healthy(const struct pool *p, uint32_t i)
{
	return p->disk[i].state == POOL_DISK_HEALTHY && !pool_disk_is_journal(p, i);
}

uint32_t pool_data_disks(const struct pool *p)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < p->ndisks; i++)
		n += !pool_disk_is_journal(p, i);
	return n;
}

uint32_t pool_healthy_disks(const struct pool *p)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < p->ndisks; i++)
		n += p->disk[i].state == POOL_DISK_HEALTHY;
	return n;
}

const char *pool_health(const struct pool *p)
{
	if (p->incomplete)
		return "incomplete";
	return pool_healthy_disks(p) == p->ndisks ? "healthy" : "degraded";
}

/* A disk we can still reach: its directory holds this pool's superblock. */
static int disk_reachable(const struct pool_disk *d)
{
	return d->state == POOL_DISK_HEALTHY || d->state == POOL_DISK_STALE ||
	       d->state == POOL_DISK_REPAIRING || d->state == POOL_DISK_RETIRED;
}

/* A directory whose owner lost every permission bit is out of service:
 * a root daemon would still read and write it (root bypasses modes), so
 * the mode itself is the admin's signal, checked explicitly. */
static int mode_revoked(mode_t mode)
{
	return (mode & 0700) == 0;
}

/* ---- pool create ----------------------------------------------------------- */

struct newdisk {
	char path[PATH_MAX]; /* canonical */
	dev_t dev;
	ino_t ino;
	int had_sb; /* a spacefs.pool was there before (only with force) */
};

static int resolve_disk(const char *arg, struct newdisk *d, char *err, size_t errlen)
{
	struct stat st;

	if (stat(arg, &st) < 0) {
		if (errno == ENOENT)
			return fail(err, errlen, -ENOENT, "%s: no such directory", arg);
		return fail(err, errlen, -errno, "%s: %s", arg, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return fail(err, errlen, -ENOTDIR, "%s: not a directory", arg);
	if (!realpath(arg, d->path))
		return fail(err, errlen, -errno, "%s: %s", arg, strerror(errno));
	if (strlen(d->path) >= POOL_PATH_MAX)
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", arg);
	d->dev = st.st_dev;
	d->ino = st.st_ino;
	return 0;
}

/* Is canonical path a inside canonical directory b (or b itself)? */
static int path_inside(const char *a, const char *b)
{
	size_t n = strlen(b);

	if (strcmp(b, "/") == 0)
		return 1;
	return strncmp(a, b, n) == 0 && (a[n] == '/' || a[n] == '\0');
}

static int check_pairs(const char *const *args, const struct newdisk *d, uint32_t n, char *err,
		       size_t errlen)
{
	/* All duplicates first: a duplicate is also "inside" its twin. */
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < i; j++)
			if (d[i].dev == d[j].dev && d[i].ino == d[j].ino)
				return fail(err, errlen, -EINVAL, "%s: listed twice (also as %s)",
					    args[i], args[j]);
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < n; j++)
			if (i != j && path_inside(d[i].path, d[j].path))
				return fail(err, errlen, -EINVAL, "%s: inside another disk, %s",
					    args[i], args[j]);
	return 0;
}

/* Empty apart from lost+found, which every fresh ext4 has. */
static int dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int empty = 1;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    strcmp(de->d_name, "lost+found"))
			empty = 0;
	closedir(d);
	return empty;
}

static int check_fresh(const char *arg, struct newdisk *d, int force, char *err, size_t errlen)
{
	struct pool_sb *old = malloc(sizeof(*old));
	char msg[POOL_MSG_MAX], uuid[37];
	struct statvfs vfs;
	int rc;

	if (!old)
		return fail(err, errlen, -ENOMEM, "%s: out of memory", arg);
	rc = pool_sb_read(d->path, old, msg, sizeof(msg));
	d->had_sb = rc != -ENOENT;
	if (rc == 0)
		pool_uuid_format(old->pool_uuid, uuid);
	if (rc == 0 && !force)
		rc = fail(err, errlen, -EEXIST,
			  "%s: already a disk of pool '%s' (%s); use --force to reuse it", arg,
			  old->pool_name, uuid);
	else if (d->had_sb && !force)
		rc = fail(err, errlen, -EEXIST,
			  "%s: holds an unreadable spacefs.pool; use --force to overwrite it", arg);
	else if (!force && (rc = dir_empty(d->path)) <= 0)
		rc = rc < 0 ? fail(err, errlen, rc, "%s: %s", arg, strerror(-rc))
			    : fail(err, errlen, -ENOTEMPTY,
				   "%s: directory is not empty; use --force to use it anyway", arg);
	else if (statvfs(d->path, &vfs) < 0 || (vfs.f_flag & ST_RDONLY) ||
		 access(d->path, W_OK) < 0)
		rc = fail(err, errlen, -EROFS, "%s: not writable", arg);
	else
		rc = 0;
	free(old);
	return rc;
}

static int new_sb(const char *name, const struct newdisk *d, uint32_t n,
		  const struct pool_diskmodel *model, struct pool_sb *sb)
{
	int rc;

	memset(sb, 0, sizeof(*sb));
	sb->version = POOL_SB_VERSION;
	sb->generation = 1;
	snprintf(sb->pool_name, sizeof(sb->pool_name), "%s", name);
	sb->created = time(NULL);
	sb->next_volume_id = 1;
	sb->nmembers = n;
	rc = pool_uuid_generate(sb->pool_uuid);
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		struct pool_sb_member *m = &sb->member[i];

		m->index = i;
		m->state = POOL_MEMBER_ACTIVE;
		snprintf(m->path, sizeof(m->path), "%s", d[i].path);
		if (model)
			m->model = *model;
		rc = pool_uuid_generate(m->uuid);
	}
	return rc;
}

/* Undo a half-done create: remove the superblocks we wrote where none was
 * before.  A --force overwrite of an old pool's file cannot be undone. */
static void create_rollback(const struct newdisk *d, uint32_t upto)
{
	char path[PATH_MAX + sizeof(POOL_SB_FILE) + 1];

	for (uint32_t i = 0; i < upto; i++) {
		if (d[i].had_sb)
			continue;
		snprintf(path, sizeof(path), "%s/%s", d[i].path, POOL_SB_FILE);
		unlink(path);
	}
}

static int create_write(struct pool_sb *sb, const struct newdisk *d, uint32_t n, char *err,
			size_t errlen)
{
	for (uint32_t i = 0; i < n; i++) {
		int rc;

		sb->disk_index = i;
		memcpy(sb->disk_uuid, sb->member[i].uuid, POOL_UUID_LEN);
		rc = pool_sb_write(d[i].path, sb, err, errlen);
		if (rc < 0) {
			create_rollback(d, i);
			return rc;
		}
	}
	return 0;
}

int pool_create(const char *name, const char *const *paths, uint32_t n, int force, char *err,
		size_t errlen)
{
	return pool_create_model(name, paths, n, force, NULL, err, errlen);
}

int pool_create_model(const char *name, const char *const *paths, uint32_t n, int force,
		      const struct pool_diskmodel *model, char *err, size_t errlen)
{
	struct newdisk *d = NULL;
	struct pool_sb *sb = NULL;
	const char *why;
	int rc;

	if (pool_name_check(name, &why) < 0)
		return fail(err, errlen, -EINVAL, "pool name '%s': %s", name, why);
	if (model && pool_diskmodel_check(model, &why) < 0)
		return fail(err, errlen, -EINVAL, "pool '%s': disk model: %s", name, why);
	if (n < 1 || n > POOL_MAX_DISKS)
		return fail(err, errlen, -EINVAL, "pool '%s': needs 1 to %u disks, %u given", name,
			    POOL_MAX_DISKS, n);
	d = calloc(n, sizeof(*d));
	sb = malloc(sizeof(*sb));
	rc = d && sb ? 0 : fail(err, errlen, -ENOMEM, "pool '%s': out of memory", name);
	for (uint32_t i = 0; i < n && rc == 0; i++)
		rc = resolve_disk(paths[i], &d[i], err, errlen);
	if (rc == 0)
		rc = check_pairs(paths, d, n, err, errlen);
	for (uint32_t i = 0; i < n && rc == 0; i++)
		rc = check_fresh(paths[i], &d[i], force, err, errlen);
	if (rc == 0 && (rc = new_sb(name, d, n, model, sb)) < 0)
		fail(err, errlen, rc, "pool '%s': cannot make UUIDs: %s", name, strerror(-rc));
	/* Nothing was written before this point. */
	if (rc == 0)
		rc = create_write(sb, d, n, err, errlen);
	free(sb);
	free(d);
	return rc;
}

/* ---- pool open: looking at directories ------------------------------------ */

/* One directory looked at while opening, and what it holds. */
struct cand {
	char path[POOL_PATH_MAX]; /* canonical if the directory exists */
	int found;		  /* the directory exists */
	dev_t dev;
	ino_t ino;
	int rc;			/* pool_sb_read() result */
	char msg[POOL_MSG_MAX]; /* its message when rc < 0 */
	struct pool_sb *sb;	/* its superblock when rc == 0 */
	uint32_t digest;	/* pool_sb_digest(sb) */
};

struct scan {
	struct cand c[SCAN_MAX];
	uint32_t n;
	uint8_t pool_uuid[POOL_UUID_LEN]; /* the pool SOURCE belongs to */
};

static int cand_ours(const struct scan *s, const struct cand *c)
{
	return c->sb && !memcmp(c->sb->pool_uuid, s->pool_uuid, POOL_UUID_LEN);
}

/* Where `path` is among the candidates (by st_dev/st_ino when it exists,
 * else by name), or -1. */
static int cand_find(const struct scan *s, const char *path)
{
	struct stat st;
	int exists = stat(path, &st) == 0 && S_ISDIR(st.st_mode);

	for (uint32_t i = 0; i < s->n; i++) {
		const struct cand *c = &s->c[i];

		if (exists ? (c->found && c->dev == st.st_dev && c->ino == st.st_ino)
			   : (!c->found && !strcmp(c->path, path)))
			return (int)i;
	}
	return -1;
}

static void cand_read(struct cand *c)
{
	c->sb = malloc(sizeof(*c->sb));
	if (!c->sb) {
		c->rc = fail(c->msg, sizeof(c->msg), -ENOMEM, "%s: out of memory", c->path);
		return;
	}
	c->rc = pool_sb_read(c->path, c->sb, c->msg, sizeof(c->msg));
	if (c->rc == 0 && (c->rc = pool_sb_digest(c->sb, &c->digest)) < 0)
		say(c->msg, sizeof(c->msg), "%s: out of memory", c->path);
	if (c->rc < 0) {
		free(c->sb);
		c->sb = NULL;
	}
}

/* Add `path` unless already there; returns its index, -1 when full. */
static int cand_add(struct scan *s, const char *path)
{
	int i = cand_find(s, path);
	struct stat st;
	struct cand *c;

	if (i >= 0 || s->n == SCAN_MAX)
		return i;
	c = &s->c[s->n];
	memset(c, 0, sizeof(*c));
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode) && realpath(path, c->path) &&
	    strlen(c->path) < POOL_PATH_MAX) {
		c->found = 1;
		c->dev = st.st_dev;
		c->ino = st.st_ino;
		if (mode_revoked(st.st_mode))
			c->rc = fail(c->msg, sizeof(c->msg), -EACCES,
				     "%s: permissions %04o: taken out of service", c->path,
				     (unsigned)(st.st_mode & 07777));
		else
			cand_read(c);
	} else {
		snprintf(c->path, sizeof(c->path), "%s", path);
		c->rc = fail(c->msg, sizeof(c->msg), -ENOENT, "%s: directory not found", path);
	}
	return (int)s->n++;
}

static void scan_free(struct scan *s)
{
	for (uint32_t i = 0; i < s->n; i++)
		free(s->c[i].sb);
	free(s);
}

/* Follow every member path every copy of this pool knows; the array grows
 * while we walk it, so one pass reaches the closure. */
static void scan_expand(struct scan *s)
{
	for (uint32_t i = 0; i < s->n; i++) {
		const struct cand *c = &s->c[i];

		if (!cand_ours(s, c))
			continue;
		for (uint32_t m = 0; m < c->sb->nmembers; m++)
			cand_add(s, c->sb->member[m].path);
	}
}

/* The copy of the member with disk UUID `uuid`, or NULL.  Should a disk's
 * directory have been copied wholesale, the first copy seen wins: SOURCE,
 * then the explicit paths, then the recorded ones. */
static const struct cand *cand_of_member(const struct scan *s, const uint8_t *uuid)
{
	for (uint32_t i = 0; i < s->n; i++) {
		const struct cand *c = &s->c[i];

		if (cand_ours(s, c) && !memcmp(c->sb->disk_uuid, uuid, POOL_UUID_LEN))
			return c;
	}
	return NULL;
}

static int cand_same(const struct cand *a, const struct cand *b)
{
	return a->sb->generation == b->sb->generation && a->digest == b->digest;
}

/* ---- pool open: the mount rule ------------------------------------------- */

/* How many members listed by ref hold exactly ref's content. */
static uint32_t votes(const struct scan *s, const struct cand *ref)
{
	uint32_t n = 0;

	for (uint32_t m = 0; m < ref->sb->nmembers; m++) {
		const struct cand *c = cand_of_member(s, ref->sb->member[m].uuid);

		n += c && cand_same(c, ref);
	}
	return n;
}

/* The copy whose content wins (highest generation held by a majority), or
 * NULL; *newest gets the highest generation seen, to report from. */
static const struct cand *elect(const struct scan *s, const struct cand **newest)
{
	const struct cand *best = NULL;

	*newest = NULL;
	for (uint32_t i = 0; i < s->n; i++) {
		const struct cand *c = &s->c[i];

		if (!cand_ours(s, c))
			continue;
		if (!*newest || c->sb->generation > (*newest)->sb->generation)
			*newest = c;
		if (best && c->sb->generation <= best->sb->generation)
			continue;
		if (2 * votes(s, c) > c->sb->nmembers)
			best = c;
	}
	return best;
}

/* Why member m of the chosen content was not found healthy. */
static void judge_absent(const struct scan *s, const struct pool_sb *ref, uint32_t m,
			 struct pool_disk *d)
{
	int i = cand_find(s, ref->member[m].path);
	const struct cand *c = i >= 0 ? &s->c[i] : NULL;
	char uuid[37];

	snprintf(d->path, sizeof(d->path), "%s", ref->member[m].path);
	if (!c) {
		d->state = POOL_DISK_MISSING;
		say(d->msg, sizeof(d->msg), "%s: not looked at", d->path);
	} else if (c->rc == -ENOENT) {
		d->state = POOL_DISK_MISSING;
		say(d->msg, sizeof(d->msg), "%s", c->msg);
	} else if (c->rc == -EACCES) {
		d->state = POOL_DISK_FAILED;
		say(d->msg, sizeof(d->msg), "%s", c->msg);
	} else if (c->rc < 0) {
		d->state = POOL_DISK_DAMAGED;
		say(d->msg, sizeof(d->msg), "%s", c->msg);
	} else if (!cand_ours(s, c)) {
		d->state = POOL_DISK_FOREIGN;
		pool_uuid_format(c->sb->pool_uuid, uuid);
		say(d->msg, sizeof(d->msg), "%s: belongs to another pool, '%s' (%s)", c->path,
		    c->sb->pool_name, uuid);
	} else {
		d->state = POOL_DISK_FOREIGN;
		say(d->msg, sizeof(d->msg), "%s: holds disk %u's superblock, not disk %u's",
		    c->path, c->sb->disk_index, m);
	}
}

/* A disk holding the current superblock: its member state decides. */
static void judge_member(const struct pool_sb *sb, uint32_t m, struct pool_disk *d)
{
	switch (sb->member[m].state) {
	case POOL_MEMBER_FAILED:
		d->state = POOL_DISK_FAILED;
		say(d->msg, sizeof(d->msg), "%s: recorded failed in the pool; repair or replace it",
		    d->path);
		break;
	case POOL_MEMBER_REPAIRING:
		d->state = POOL_DISK_REPAIRING;
		say(d->msg, sizeof(d->msg), "%s: replacement being rebuilt", d->path);
		break;
	case POOL_MEMBER_RETIRED:
		d->state = POOL_DISK_RETIRED;
		say(d->msg, sizeof(d->msg), "%s: retired, being emptied", d->path);
		break;
	default:
		break;
	}
}

static void judge(const struct scan *s, const struct cand *ref, uint32_t m, struct pool_disk *d)
{
	const struct cand *c = cand_of_member(s, ref->sb->member[m].uuid);

	memset(d, 0, sizeof(*d));
	if (!c) {
		judge_absent(s, ref->sb, m, d);
		return;
	}
	snprintf(d->path, sizeof(d->path), "%s", c->path);
	d->dev = c->dev;
	d->generation = c->sb->generation;
	if (cand_same(c, ref)) {
		judge_member(ref->sb, m, d);
		return;
	}
	d->state = POOL_DISK_STALE;
	if (c->sb->generation == ref->sb->generation)
		say(d->msg, sizeof(d->msg),
		    "%s: generation %llu but different content than the majority's", c->path,
		    (unsigned long long)c->sb->generation);
	else
		say(d->msg, sizeof(d->msg), "%s: generation %llu, the pool is at %llu", c->path,
		    (unsigned long long)c->sb->generation, (unsigned long long)ref->sb->generation);
}

/* One line naming every disk that keeps the pool from a majority. */
static int refuse(const struct pool *p, const struct cand *ref, uint32_t agree, char *err,
		  size_t errlen)
{
	size_t off;

	fail(err, errlen, -ENXIO,
	     "pool '%s' is incomplete: %u of %u disks hold generation %llu, a majority needs %u:",
	     p->sb->pool_name, agree, p->ndisks, (unsigned long long)ref->sb->generation,
	     p->ndisks / 2 + 1);
	for (uint32_t i = 0; i < p->ndisks && err; i++) {
		if (p->disk[i].state == POOL_DISK_HEALTHY)
			continue;
		off = strlen(err);
		snprintf(err + off, errlen - off, " %s %s;", pool_disk_state_name(p->disk[i].state),
			 p->disk[i].path);
	}
	if (err && errlen && strlen(err) > 0 && err[strlen(err) - 1] == ';')
		err[strlen(err) - 1] = '\0';
	return -ENXIO;
}

static struct pool *pool_build(const struct scan *s, const struct cand *ref)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->sb = malloc(sizeof(*p->sb));
	if (!p->sb || pthread_mutex_init(&p->lock, NULL) != 0) {
		free(p->sb);
		free(p);
		return NULL;
	}
	*p->sb = *ref->sb;
	p->ndisks = p->sb->nmembers;
	for (uint32_t m = 0; m < p->ndisks; m++) {
		judge(s, ref, m, &p->disk[m]);
		/* Recorded failed and not back: failed, whatever is there now. */
		enum pool_disk_state st = p->disk[m].state;
		if (p->sb->member[m].state == POOL_MEMBER_FAILED &&
		    (st == POOL_DISK_MISSING || st == POOL_DISK_DAMAGED || st == POOL_DISK_FOREIGN))
			p->disk[m].state = POOL_DISK_FAILED;
	}
	p->space_when = INT64_MIN;
	return p;
}

static struct scan *scan_new(const char *source, const char *const *extra, uint32_t nextra,
			     char *err, size_t errlen, int *rc)
{
	struct scan *s = malloc(sizeof(*s));
	const struct cand *src;

	if (!s) {
		*rc = fail(err, errlen, -ENOMEM, "%s: out of memory", source);
		return NULL;
	}
	s->n = 0;
	src = &s->c[cand_add(s, source)];
	if (src->rc < 0) {
		*rc = fail(err, errlen, src->rc, "%s", src->msg);
		scan_free(s);
		return NULL;
	}
	memcpy(s->pool_uuid, src->sb->pool_uuid, POOL_UUID_LEN);
	for (uint32_t i = 0; i < nextra; i++)
		cand_add(s, extra[i]);
	scan_expand(s);
	*rc = 0;
	return s;
}

/* What a scan saw, in one number: two scans with the same fingerprint
 * found the same superblocks in the same places. */
static uint64_t scan_fingerprint(const struct scan *s)
{
	uint64_t h = s->n;

	for (uint32_t i = 0; i < s->n; i++)
		h = h * 1000003u + (s->c[i].sb ? s->c[i].digest ^ s->c[i].sb->generation : 0) +
		    (uint64_t)s->c[i].found;
	return h;
}

/* A commit writes the new generation disk by disk (pool_commit), so a
 * reader in the middle of one may find no majority: say, half the disks
 * at generation 9 and half still at 8.  That state lasts as long as a few
 * superblock writes, so scan again while what the disks hold keeps
 * changing, and give up only once it has held still for
 * SCAN_SETTLE_TRIES pauses in a row (a pool that really is incomplete
 * costs those few pauses before the refusal), or after SCAN_TRIES. */
#define SCAN_TRIES	  40
#define SCAN_SETTLE_TRIES 5
#define SCAN_PAUSE_US	  50000

static struct scan *scan_settled(const char *source, const char *const *extra, uint32_t nextra,
				 unsigned flags, char *err, size_t errlen, int *rc)
{
	const struct cand *newest;
	struct scan *s = scan_new(source, extra, nextra, err, errlen, rc);
	uint32_t still = 0;

	for (int t = 0; s && !(flags & POOL_OPEN_INSPECT) && t < SCAN_TRIES; t++) {
		if (elect(s, &newest) || still >= SCAN_SETTLE_TRIES)
			break;
		uint64_t was = scan_fingerprint(s);
		usleep(SCAN_PAUSE_US);
		struct scan *again = scan_new(source, extra, nextra, err, errlen, rc);
		if (!again)
			break; /* keep the scan we have: it says what is wrong */
		still = scan_fingerprint(again) == was ? still + 1 : 0;
		scan_free(s);
		s = again;
	}
	return s;
}

int pool_open_paths(const char *source, const char *const *extra, uint32_t nextra, unsigned flags,
		    struct pool **out, char *err, size_t errlen)
{
	const struct cand *ref, *newest;
	struct pool *p;
	struct scan *s;
	int rc;

	*out = NULL;
	s = scan_settled(source, extra, nextra, flags, err, errlen, &rc);
	if (!s)
		return rc;
	rc = 0;
	ref = elect(s, &newest);
	assert(newest); /* SOURCE itself is one of ours */
	p = pool_build(s, ref ? ref : newest);
	if (!p)
		rc = fail(err, errlen, -ENOMEM, "%s: out of memory", source);
	else if (!ref && !(flags & POOL_OPEN_INSPECT))
		rc = refuse(p, newest, votes(s, newest), err, errlen);
	else
		p->incomplete = !ref;
	scan_free(s);
	if (rc < 0) {
		pool_close(p);
		return rc;
	}
	*out = p;
	return 0;
}

int pool_open(const char *source, unsigned flags, struct pool **out, char *err, size_t errlen)
{
	return pool_open_paths(source, NULL, 0, flags, out, err, errlen);
}

void pool_close(struct pool *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p->sb);
	free(p);
}

/* ---- commit ---------------------------------------------------------------- */

/* Does disk i still hold this pool's superblock for member i? */
static int still_member(struct pool *p, uint32_t i)
{
	struct pool_disk *d = &p->disk[i];
	struct pool_sb *sb = malloc(sizeof(*sb));
	int rc;

	if (!sb)
		return 0; /* cannot tell: do not fail a disk for our memory */
	rc = pool_sb_read(d->path, sb, d->msg, sizeof(d->msg));
	if (rc == 0 && (memcmp(sb->pool_uuid, p->sb->pool_uuid, POOL_UUID_LEN) ||
			memcmp(sb->disk_uuid, p->sb->member[i].uuid, POOL_UUID_LEN))) {
		say(d->msg, sizeof(d->msg), "%s: holds another disk's superblock", d->path);
		rc = -EMEDIUMTYPE;
	}
	free(sb);
	return rc;
}

int pool_commit(struct pool *p, char *err, size_t errlen)
{
	struct pool_sb *next;
	char first[POOL_MSG_MAX] = "";
	uint32_t ok = 0;
	int rc;

	if (p->incomplete)
		return fail(err, errlen, -EROFS, "pool '%s': incomplete, opened read-only",
			    p->sb->pool_name);
	rc = pool_sb_validate(p->sb, "superblock", err, errlen);
	if (rc < 0)
		return rc;
	next = malloc(sizeof(*next));
	if (!next)
		return fail(err, errlen, -ENOMEM, "pool '%s': out of memory", p->sb->pool_name);
	*next = *p->sb;
	next->generation++;
	for (uint32_t i = 0; i < p->ndisks; i++)
		if (disk_reachable(&p->disk[i])) /* remember where disks are now */
			snprintf(next->member[i].path, POOL_PATH_MAX, "%s", p->disk[i].path);
	for (uint32_t i = 0; i < p->ndisks; i++) {
		struct pool_disk *d = &p->disk[i];

		if (!pool_disk_in_service(p, i))
			continue;
		/* Never write into a directory that is no longer this member
		 * (emptied or swapped under us): it would look like one. */
		if (!d->fresh && still_member(p, i) < 0) {
			d->state = POOL_DISK_FAILED;
			if (!first[0])
				say(first, sizeof(first), "%s", d->msg);
			continue;
		}
		next->disk_index = i;
		memcpy(next->disk_uuid, next->member[i].uuid, POOL_UUID_LEN);
		rc = pool_sb_write(d->path, next, d->msg, sizeof(d->msg));
		if (rc < 0) {
			d->state = POOL_DISK_FAILED;
			if (!first[0])
				say(first, sizeof(first), "%s", d->msg);
			continue;
		}
		d->generation = next->generation;
		d->fresh = 0;
		ok++;
	}
	/* The in-memory copy follows what the healthy disks now hold. */
	next->disk_index = p->sb->disk_index;
	memcpy(next->disk_uuid, p->sb->disk_uuid, POOL_UUID_LEN);
	*p->sb = *next;
	free(next);
	if (2 * ok <= p->ndisks)
		return fail(err, errlen, -EIO,
			    "pool '%s': generation %llu reached only %u of %u disks (%s)",
			    p->sb->pool_name, (unsigned long long)p->sb->generation, ok, p->ndisks,
			    first[0] ? first : "no healthy disk");
	return 0;
}

/* ---- free space and placement ------------------------------------------- */

int pool_disk_space(struct pool *p, uint32_t idx, uint64_t *size, uint64_t *free)
{
	struct statvfs v;

	if (idx >= p->ndisks)
		return -EINVAL;
	if (statvfs(p->disk[idx].path, &v) < 0)
		return -errno;
	*size = (uint64_t)v.f_blocks * v.f_frsize;
	*free = (uint64_t)v.f_bavail * v.f_frsize;
	return 0;
}

/* statvfs every healthy disk (no lock held: a slow disk must not stall
 * other threads' placements) and count disks sharing a filesystem. */
static void space_measure(struct pool *p, struct pool_space *sp)
{
	memset(sp, 0, sizeof(*sp) * POOL_MAX_DISKS);
	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (!data_healthy(p, i))
			continue;
		sp[i].ok = pool_disk_space(p, i, &sp[i].size, &sp[i].free) == 0;
		for (uint32_t j = 0; j < p->ndisks; j++)
			sp[i].share += data_healthy(p, j) && p->disk[j].dev == p->disk[i].dev;
	}
}

/* Copy the cached figures into sp, refreshing them if older than the TTL.
 * Exactly one thread refreshes; the others use the old figures meanwhile.
 * Returns the placement rotor value for this call. */
static uint32_t space_snapshot(struct pool *p, struct pool_space *sp, int advance)
{
	int64_t now = now_ns();
	int refresh;
	uint32_t rotor;

	pthread_mutex_lock(&p->lock);
	refresh = p->space_when == INT64_MIN || now - p->space_when >= SPACE_TTL_NS;
	if (refresh)
		p->space_when = now;
	pthread_mutex_unlock(&p->lock);
	if (refresh) {
		space_measure(p, sp);
		pthread_mutex_lock(&p->lock);
		memcpy(p->space, sp, sizeof(p->space));
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_lock(&p->lock);
	memcpy(sp, p->space, sizeof(p->space));
	rotor = p->place_rotor;
	p->place_rotor += advance ? 1 : 0;
	pthread_mutex_unlock(&p->lock);
	return rotor;
}

/* Free bytes one disk can count on when several share a filesystem. */
static uint64_t space_share(const struct pool_space *sp)
{
	return sp->ok && sp->share ? sp->free / sp->share : 0;
}

struct rank {
	uint32_t idx;
	uint64_t units; /* free space in 2^SPACE_UNIT bytes */
	uint32_t order; /* tie breaker: distance from the rotor */
};

static int rank_cmp(const void *a, const void *b)
{
	const struct rank *x = a, *y = b;

	if (x->units != y->units)
		return x->units > y->units ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Healthy data disks, best first; returns how many.  Journal disks
 * (usage journal) hold only parity journals: never data or metadata. */
static uint32_t rank_disks(const struct pool *p, const struct pool_space *sp, uint32_t rotor,
			   struct rank *r)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (!data_healthy(p, i))
			continue;
		r[n].idx = i;
		r[n].units = space_share(&sp[i]) >> SPACE_UNIT;
		r[n].order = (i + p->ndisks - rotor % p->ndisks) % p->ndisks;
		n++;
	}
	qsort(r, n, sizeof(*r), rank_cmp);
	return n;
}

int pool_place(struct pool *p, uint32_t npos, uint8_t *disk_out)
{
	struct pool_space sp[POOL_MAX_DISKS];
	struct rank r[POOL_MAX_DISKS];
	uint32_t rotor = space_snapshot(p, sp, 1);
	uint32_t n = rank_disks(p, sp, rotor, r);

	if (npos == 0 || npos > n)
		return -ENOSPC;
	for (uint32_t i = 0; i < npos; i++)
		disk_out[i] = (uint8_t)r[i].idx;
	return 0;
}

static int u64_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x > y ? -1 : x < y;
}

/*
 * Each file puts the same number of bytes B on each of its npos positions,
 * on npos distinct disks.  If the pool can take raw bytes T this way, each
 * disk holds at most T/npos of it, so T <= sum_i min(free_i, T/npos).
 * With the t largest disks capped at c = T/npos and the rest full, that
 * is c <= S_t / (npos - t), S_t the free space of all but the t largest;
 * the best c is the smallest of these bounds over t = 0..npos-1.
 */
uint64_t pool_capacity_raw(const uint64_t *free, uint32_t n, uint32_t npos)
{
	uint64_t sorted[POOL_MAX_DISKS];
	unsigned __int128 rest = 0, best = ~(unsigned __int128)0, c;

	if (npos == 0 || n < npos || n > POOL_MAX_DISKS)
		return 0;
	memcpy(sorted, free, n * sizeof(*free));
	qsort(sorted, n, sizeof(*sorted), u64_desc);
	for (uint32_t i = 0; i < n; i++)
		rest += sorted[i];
	for (uint32_t t = 0; t < npos; t++) {
		c = rest / (npos - t);
		best = c < best ? c : best;
		rest -= sorted[t];
	}
	best *= npos;
	return best > UINT64_MAX ? UINT64_MAX : (uint64_t)best;
}

int pool_volume_capacity(struct pool *p, const struct pool_sb_volume *v, uint64_t *usable)
{
	struct pool_space sp[POOL_MAX_DISKS];
	uint64_t free[POOL_MAX_DISKS];
	uint32_t n = 0, num, den;
	unsigned __int128 u;

	space_snapshot(p, sp, 0);
	for (uint32_t i = 0; i < p->ndisks; i++)
		if (data_healthy(p, i))
			free[n++] = space_share(&sp[i]);
	layout_efficiency(&v->geom, &num, &den);
	u = (unsigned __int128)pool_capacity_raw(free, n, layout_positions(&v->geom)) * num / den;
	*usable = (uint64_t)u;
	return 0;
}

/* ---- volumes --------------------------------------------------------------- */

const struct pool_sb_volume *pool_volume_find(const struct pool *p, const char *name)
{
	for (uint32_t i = 0; i < p->sb->nvolumes; i++)
		if (!strcmp(p->sb->volume[i].name, name))
			return &p->sb->volume[i];
	return NULL;
}

const char *pool_volume_health(const struct pool *p, const struct pool_sb_volume *v)
{
	uint32_t bad = 0, meta_ok = 0;

	/* A journal disk holds no file data: its loss costs the journals one
	 * copy (they keep the volume's redundancy in the others), not data. */
	for (uint32_t i = 0; i < p->ndisks; i++)
		bad += p->disk[i].state != POOL_DISK_HEALTHY &&
		       p->disk[i].state != POOL_DISK_RETIRED && !pool_disk_is_journal(p, i);
	if (v->state == POOL_VOLUME_DELETING)
		return "deleting";
	for (uint32_t i = 0; i < v->nmeta; i++)
		meta_ok += p->disk[v->meta[i]].state == POOL_DISK_HEALTHY;
	/* A file may sit on any disk, so every unhealthy disk counts. */
	if (meta_ok == 0 || bad > layout_redundancy(&v->geom))
		return "offline";
	return bad ? "degraded" : "healthy";
}

static int is_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

static int geom_rules(const struct layout_geom *g, char *err, size_t errlen)
{
	if (!is_pow2(g->interleave) || g->interleave < LAYOUT_MIN_INTERLEAVE ||
	    g->interleave > LAYOUT_MAX_INTERLEAVE)
		return fail(err, errlen, -EINVAL,
			    "interleave %u is not a power of two from 16K to 1M", g->interleave);
	if (g->columns < 1 || g->columns > LAYOUT_MAX_COLUMNS)
		return fail(err, errlen, -EINVAL, "%u columns; the range is 1 to %u", g->columns,
			    LAYOUT_MAX_COLUMNS);
	switch (g->kind) {
	case LAYOUT_SIMPLE:
		if (g->copies != 1 || g->parity != 0)
			return fail(err, errlen, -EINVAL, "simple has no copies or parity");
		return 0;
	case LAYOUT_MIRROR:
		if (g->copies < 2 || g->copies > LAYOUT_MAX_COPIES || g->parity != 0)
			return fail(err, errlen, -EINVAL, "mirror keeps 2 or 3 copies, not %u",
				    g->copies);
		return 0;
	case LAYOUT_PARITY:
		if (g->parity < 1 || g->parity > LAYOUT_MAX_PARITY || g->copies != 1)
			return fail(err, errlen, -EINVAL,
				    "parity takes 1 or 2 parity columns, not %u", g->parity);
		if (g->columns < g->parity + 2)
			return fail(err, errlen, -EINVAL,
				    "parity with %u columns and %u parity leaves %u data columns; "
				    "it needs at least 2",
				    g->columns, g->parity,
				    g->columns > g->parity ? g->columns - g->parity : 0);
		return 0;
	}
	return fail(err, errlen, -EINVAL, "unknown layout %d", (int)g->kind);
}

int pool_geom_fit(const struct pool *p, const struct layout_geom *g, char *err, size_t errlen)
{
	int rc = geom_rules(g, err, errlen);

	if (rc < 0)
		return rc;
	if (layout_geom_check(g) < 0)
		return fail(err, errlen, -EINVAL, "invalid layout");
	uint32_t nd = pool_data_disks(p);
	const char *data = nd < p->ndisks ? " data" : "";
	if (layout_positions(g) > nd) {
		if (g->kind == LAYOUT_MIRROR)
			return fail(err, errlen, -EINVAL,
				    "mirror with %u columns x %u copies needs %u disks; pool '%s' "
				    "has %u%s",
				    g->columns, g->copies, layout_positions(g), p->sb->pool_name,
				    nd, data);
		return fail(err, errlen, -EINVAL,
			    "%s with %u columns needs %u disks; pool '%s' has %u%s",
			    layout_kind_name(g->kind), g->columns, layout_positions(g),
			    p->sb->pool_name, nd, data);
	}
	return 0;
}

static int u8_cmp(const void *a, const void *b)
{
	return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b;
}

/* The healthy disks with most free space, ties rotated by volume id so
 * that volumes on equal disks spread their metadata. */
static int choose_meta(struct pool *p, struct pool_sb_volume *v, char *err, size_t errlen)
{
	struct pool_space sp[POOL_MAX_DISKS];
	struct rank r[POOL_MAX_DISKS];
	uint32_t nd = pool_data_disks(p);
	uint32_t n, want = nd < POOL_META_DISKS ? nd : POOL_META_DISKS;
	uint32_t need = layout_redundancy(&v->geom) + 1;

	space_snapshot(p, sp, 0);
	n = rank_disks(p, sp, (uint32_t)v->id, r);
	v->nmeta = n < want ? n : want;
	if (v->nmeta < need)
		return fail(err, errlen, -ENOSPC,
			    "volume '%s': needs %u healthy disks for its metadata, the pool has %u",
			    v->name, need, n);
	for (uint32_t i = 0; i < v->nmeta; i++)
		v->meta[i] = (uint8_t)r[i].idx;
	qsort(v->meta, v->nmeta, 1, u8_cmp);
	return 0;
}

static void vol_path(const struct pool *p, uint32_t disk, const char *vol, char *out, size_t size)
{
	snprintf(out, size, "%s/vol/%s", p->disk[disk].path, vol);
}

/* A vol/<name> directory with no catalogue entry is some earlier volume's
 * leftover; reusing it would resurrect its files. */
static int check_leftover(const struct pool *p, const char *name, char *err, size_t errlen)
{
	char path[POOL_PATH_MAX + POOL_NAME_MAX + 8];
	struct stat st;

	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (!disk_reachable(&p->disk[i]))
			continue;
		vol_path(p, i, name, path, sizeof(path));
		if (lstat(path, &st) == 0)
			return fail(
			    err, errlen, -EEXIST,
			    "volume '%s': %s exists but no such volume is in the catalogue; "
			    "remove it first",
			    name, path);
	}
	return 0;
}

static int check_new_volume(const struct pool *p, const char *name, const struct layout_geom *g,
			    int integrity, char *err, size_t errlen)
{
	const struct pool_sb_volume *old = pool_volume_find(p, name);
	char why[POOL_MSG_MAX];
	const char *bad;

	if (p->incomplete)
		return fail(err, errlen, -EROFS, "pool '%s': incomplete, opened read-only",
			    p->sb->pool_name);
	if (pool_name_check(name, &bad) < 0)
		return fail(err, errlen, -EINVAL, "volume name '%s': %s", name, bad);
	if (old && old->state == POOL_VOLUME_DELETING)
		return fail(err, errlen, -EEXIST,
			    "volume '%s': is being deleted; delete it again to finish", name);
	if (old)
		return fail(err, errlen, -EEXIST, "volume '%s': already exists in pool '%s'", name,
			    p->sb->pool_name);
	if (p->sb->nvolumes >= POOL_MAX_VOLUMES)
		return fail(err, errlen, -ENOSPC, "pool '%s': already has %u volumes",
			    p->sb->pool_name, POOL_MAX_VOLUMES);
	if (integrity != 0 && integrity != 1)
		return fail(err, errlen, -EINVAL, "volume '%s': integrity must be 0 or 1", name);
	if (pool_geom_fit(p, g, why, sizeof(why)) < 0)
		return fail(err, errlen, -EINVAL, "volume '%s': %s", name, why);
	return check_leftover(p, name, err, errlen);
}

static void make_vol_dirs(const struct pool *p, const char *name)
{
	char path[POOL_PATH_MAX + POOL_NAME_MAX + 8];

	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (p->disk[i].state != POOL_DISK_HEALTHY)
			continue;
		snprintf(path, sizeof(path), "%s/vol", p->disk[i].path);
		mkdir(path, 0755);
		vol_path(p, i, name, path, sizeof(path));
		mkdir(path, 0755);
	}
}

int pool_volume_create(struct pool *p, const char *name, const struct layout_geom *g, int integrity,
		       char *err, size_t errlen)
{
	struct pool_sb_volume *v;
	int rc = check_new_volume(p, name, g, integrity, err, errlen);

	if (rc < 0)
		return rc;
	v = &p->sb->volume[p->sb->nvolumes];
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->id = p->sb->next_volume_id;
	v->created = time(NULL);
	v->geom = *g;
	v->integrity = (uint32_t)integrity;
	v->state = POOL_VOLUME_ONLINE;
	rc = choose_meta(p, v, err, errlen);
	if (rc < 0)
		return rc;
	p->sb->nvolumes++;
	p->sb->next_volume_id++; /* ids are never reused, even if this fails */
	rc = pool_commit(p, err, errlen);
	if (rc < 0) {
		p->sb->nvolumes--;
		return rc;
	}
	make_vol_dirs(p, name);
	return 0;
}

int pool_journal_fits(const struct layout_geom *g, uint32_t mib, char *err, size_t errlen)
{
	/* One append carries the records of one request: at most two, its
	 * first and last partial stripes, each a header block and at most a
	 * piece of every column; after the file header, both must fit, or
	 * such a write fails (EFBIG from the journal, EIO to the writer). */
	uint64_t need = 3 * (uint64_t)POOL_JOURNAL_BLOCK + 2 * (uint64_t)g->columns * g->interleave;
	uint64_t have = (uint64_t)(mib ? mib : POOL_JOURNAL_DEFAULT_MIB) << 20;

	if (g->kind != LAYOUT_PARITY || have >= need)
		return 0;
	return fail(err, errlen, -EINVAL,
		    "a journal of %" PRIu64 " MiB is too small for %u columns of %u KiB: "
		    "needs at least %" PRIu64 " MiB",
		    have >> 20, g->columns, g->interleave >> 10, (need + (1 << 20) - 1) >> 20);
}

int pool_volume_set_journal(struct pool *p, const char *name, uint32_t mode, uint32_t mib,
			    char *err, size_t errlen)
{
	struct pool_sb_volume *v = (struct pool_sb_volume *)pool_volume_find(p, name);

	if (p->incomplete)
		return fail(err, errlen, -EROFS, "pool '%s': incomplete, opened read-only",
			    p->sb->pool_name);
	if (!v)
		return fail(err, errlen, -ENOENT, "volume '%s': no such volume in pool '%s'", name,
			    p->sb->pool_name);
	if (v->geom.kind != LAYOUT_PARITY)
		return fail(err, errlen, -EINVAL,
			    "volume '%s': only parity volumes have a journal (this one is %s)",
			    name, layout_kind_name(v->geom.kind));
	if (mode > POOL_VOLUME_JOURNAL_MAX)
		return fail(err, errlen, -EINVAL, "volume '%s': unknown journal mode %u", name,
			    mode);
	if (mib && (mib < POOL_JOURNAL_MIN_MIB || mib > POOL_JOURNAL_MAX_MIB))
		return fail(err, errlen, -EINVAL,
			    "volume '%s': journal size %u MiB is outside %u MiB..%u MiB", name, mib,
			    POOL_JOURNAL_MIN_MIB, POOL_JOURNAL_MAX_MIB);
	char why[256];
	if (mode != POOL_VOLUME_JOURNAL_OFF &&
	    pool_journal_fits(&v->geom, mib, why, sizeof(why)) < 0)
		return fail(err, errlen, -EINVAL, "volume '%s': %s", name, why);
	uint32_t old_mode = v->journal, old_mib = v->journal_mib;
	v->journal = mode;
	v->journal_mib = mib;
	int rc = pool_commit(p, err, errlen);
	if (rc < 0) {
		v->journal = old_mode;
		v->journal_mib = old_mib;
	}
	return rc;
}

/* rm -rf name under dirfd, without following symlinks.  Directories are
 * rescanned until empty: removing entries while reading a directory may
 * make readdir skip some. */
static int rmtree_at(int dirfd, const char *name)
{
	struct stat st;
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rc = -ENOTEMPTY; /* unless a pass empties it */
	for (int pass = 0; pass < 8 && rc == -ENOTEMPTY; pass++) {
		rc = 0;
		rewinddir(d);
		while (rc == 0 && (de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				rc = rmtree_at(fd, de->d_name);
		if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
			rc = -errno;
	}
	closedir(d);
	return rc;
}

static int remove_vol_dirs(const struct pool *p, const char *name, char *err, size_t errlen)
{
	char path[POOL_PATH_MAX + POOL_NAME_MAX + 8];

	for (uint32_t i = 0; i < p->ndisks; i++) {
		int rc;

		if (!disk_reachable(&p->disk[i]))
			continue;
		vol_path(p, i, name, path, sizeof(path));
		rc = rmtree_at(AT_FDCWD, path);
		if (rc < 0)
			return fail(err, errlen, rc,
				    "volume '%s': cannot remove %s: %s; delete it again to finish",
				    name, path, strerror(-rc));
	}
	return 0;
}

int pool_volume_delete(struct pool *p, const char *name, char *err, size_t errlen)
{
	struct pool_sb *sb = p->sb;
	struct pool_sb_volume *v = (struct pool_sb_volume *)pool_volume_find(p, name);
	uint32_t i;
	int rc;

	if (p->incomplete)
		return fail(err, errlen, -EROFS, "pool '%s': incomplete, opened read-only",
			    sb->pool_name);
	if (!v)
		return fail(err, errlen, -ENOENT, "volume '%s': no such volume in pool '%s'", name,
			    sb->pool_name);
	if (v->state != POOL_VOLUME_DELETING) {
		v->state = POOL_VOLUME_DELETING;
		rc = pool_commit(p, err, errlen);
		if (rc < 0)
			return rc;
	}
	rc = remove_vol_dirs(p, name, err, errlen);
	if (rc < 0)
		return rc;
	i = (uint32_t)(v - sb->volume);
	memmove(&sb->volume[i], &sb->volume[i + 1], (sb->nvolumes - i - 1) * sizeof(*v));
	sb->nvolumes--;
	return pool_commit(p, err, errlen);
}

/* ---- disk states: failure, restore, replace, add ---------------------------------- */

int pool_disk_in_service(const struct pool *p, uint32_t idx)
{
	enum pool_disk_state s = p->disk[idx].state;

	return s == POOL_DISK_HEALTHY || s == POOL_DISK_REPAIRING || s == POOL_DISK_RETIRED;
}

int pool_disk_fail(struct pool *p, uint32_t idx, const char *why, char *err, size_t errlen)
{
	if (idx >= p->ndisks)
		return fail(err, errlen, -EINVAL, "disk %u: no such member", idx);
	p->disk[idx].state = POOL_DISK_FAILED;
	say(p->disk[idx].msg, sizeof(p->disk[idx].msg), "%s: %s", p->disk[idx].path, why);
	p->sb->member[idx].state = POOL_MEMBER_FAILED;
	return pool_commit(p, err, errlen);
}

static enum pool_member_state member_of(enum pool_disk_state st)
{
	if (st == POOL_DISK_REPAIRING)
		return POOL_MEMBER_REPAIRING;
	return st == POOL_DISK_RETIRED ? POOL_MEMBER_RETIRED : POOL_MEMBER_ACTIVE;
}

int pool_disk_restore(struct pool *p, uint32_t idx, enum pool_disk_state st, char *err,
		      size_t errlen)
{
	if (idx >= p->ndisks)
		return fail(err, errlen, -EINVAL, "disk %u: no such member", idx);
	p->disk[idx].state = st;
	p->disk[idx].msg[0] = '\0';
	p->sb->member[idx].state = member_of(st);
	return pool_commit(p, err, errlen);
}

/* A directory that may join the pool: resolvable, not a member's. */
static int check_joining(const struct pool *p, const char *path, struct newdisk *d, char *err,
			 size_t errlen)
{
	int rc = resolve_disk(path, d, err, errlen);

	if (rc < 0)
		return rc;
	for (uint32_t i = 0; i < p->ndisks; i++) {
		struct stat st;
		if (disk_reachable(&p->disk[i]) && stat(p->disk[i].path, &st) == 0 &&
		    st.st_dev == d->dev && st.st_ino == d->ino)
			return fail(err, errlen, -EEXIST, "%s: already disk %u of the pool", path,
				    i);
	}
	rc = check_fresh(path, d, 0, err, errlen);
	char *force = rc < 0 && err ? strstr(err, "; use --force") : NULL;
	if (force) /* there is no --force for joining disks */
		*force = '\0';
	return rc;
}

int pool_disk_replace(struct pool *p, uint32_t idx, const char *path, char *err, size_t errlen)
{
	struct newdisk d;
	int rc;

	if (p->incomplete)
		return fail(err, errlen, -EROFS, "pool '%s': incomplete", p->sb->pool_name);
	if (idx >= p->ndisks)
		return fail(err, errlen, -EINVAL, "disk %u: no such member", idx);
	rc = check_joining(p, path, &d, err, errlen);
	if (rc < 0)
		return rc;
	struct pool_sb_member *m = &p->sb->member[idx];
	rc = pool_uuid_generate(m->uuid);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: cannot make a disk UUID", path);
	if (p->sb->disk_index == idx) /* the copy in memory came from it */
		memcpy(p->sb->disk_uuid, m->uuid, POOL_UUID_LEN);
	snprintf(m->path, sizeof(m->path), "%s", d.path);
	m->state = POOL_MEMBER_REPAIRING;
	struct pool_disk *pd = &p->disk[idx];
	snprintf(pd->path, sizeof(pd->path), "%s", d.path);
	pd->state = POOL_DISK_REPAIRING;
	pd->dev = d.dev;
	pd->fresh = 1;
	say(pd->msg, sizeof(pd->msg), "%s: replacement being rebuilt", d.path);
	return pool_commit(p, err, errlen);
}

int pool_disk_add(struct pool *p, const char *path, char *err, size_t errlen)
{
	return pool_disk_add_usage(p, path, POOL_USAGE_DATA, err, errlen);
}

int pool_disk_add_usage(struct pool *p, const char *path, enum pool_member_usage usage, char *err,
			size_t errlen)
{
	struct newdisk d;
	int rc;

	if ((uint32_t)usage > POOL_USAGE_MAX)
		return fail(err, errlen, -EINVAL, "%s: unknown disk usage %u", path,
			    (unsigned)usage);
	if (p->incomplete)
		return fail(err, errlen, -EROFS, "pool '%s': incomplete", p->sb->pool_name);
	if (p->ndisks >= POOL_MAX_DISKS)
		return fail(err, errlen, -ENOSPC, "pool '%s' has %u disks already",
			    p->sb->pool_name, POOL_MAX_DISKS);
	rc = check_joining(p, path, &d, err, errlen);
	if (rc < 0)
		return rc;
	uint32_t i = p->ndisks;
	struct pool_sb_member *m = &p->sb->member[i];
	memset(m, 0, sizeof(*m));
	rc = pool_uuid_generate(m->uuid);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: cannot make a disk UUID", path);
	m->index = i;
	m->state = POOL_MEMBER_ACTIVE;
	m->usage = usage;
	snprintf(m->path, sizeof(m->path), "%s", d.path);
	memset(&p->disk[i], 0, sizeof(p->disk[i]));
	snprintf(p->disk[i].path, sizeof(p->disk[i].path), "%s", d.path);
	p->disk[i].dev = d.dev;
	p->disk[i].fresh = 1;
	p->disk[i].state = POOL_DISK_HEALTHY;
	p->sb->nmembers++;
	p->ndisks++;
	pthread_mutex_lock(&p->lock);
	p->space_when = INT64_MIN;
	pthread_mutex_unlock(&p->lock);
	return pool_commit(p, err, errlen);
}

int pool_disk_set_model(struct pool *p, uint32_t idx, const struct pool_diskmodel *m, char *err,
			size_t errlen)
{
	const char *why;

	if (p->incomplete)
		return fail(err, errlen, -EROFS, "pool '%s': incomplete", p->sb->pool_name);
	if (idx >= p->ndisks)
		return fail(err, errlen, -EINVAL, "disk %u: no such member", idx);
	if (pool_diskmodel_check(m, &why) < 0)
		return fail(err, errlen, -EINVAL, "disk %u: disk model: %s", idx, why);
	struct pool_diskmodel old = p->sb->member[idx].model;
	p->sb->member[idx].model = *m;
	int rc = pool_commit(p, err, errlen);
	if (rc < 0 && rc != -EIO) /* not written anywhere: keep the truth in memory */
		p->sb->member[idx].model = old;
	return rc;
}

int pool_disk_find(const struct pool *p, const char *what, uint32_t *idx)
{
	char *end, real[PATH_MAX];
	unsigned long v = strtoul(what, &end, 10);

	if (*what && !*end && v < p->ndisks) {
		*idx = (uint32_t)v;
		return 0;
	}
	const char *want = realpath(what, real) ? real : what;
	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (!strcmp(p->disk[i].path, want) || !strcmp(p->disk[i].path, what) ||
		    !strcmp(p->sb->member[i].path, what)) {
			*idx = i;
			return 0;
		}
	}
	return -ENOENT;
}

int pool_disk_probe(const struct pool *p, uint32_t idx, dev_t dev, ino_t ino, char *err,
		    size_t errlen)
{
	const char *path = p->disk[idx].path;
	struct pool_sb *sb;
	char msg[POOL_MSG_MAX];
	struct stat st;
	int rc;

	if (stat(path, &st) < 0)
		return fail(err, errlen, -errno, "directory %s: %s", path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(err, errlen, -ENOTDIR, "%s is no longer a directory", path);
	if (dev && (st.st_dev != dev || st.st_ino != ino))
		return fail(err, errlen, -ENODEV, "directory %s was replaced by another one", path);
	if (mode_revoked(st.st_mode))
		return fail(err, errlen, -EACCES, "directory %s: permissions %04o", path,
			    (unsigned)(st.st_mode & 07777));
	sb = malloc(sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	rc = pool_sb_read(path, sb, msg, sizeof(msg));
	if (rc < 0)
		fail(err, errlen, rc, "%s", msg);
	else if (memcmp(sb->pool_uuid, p->sb->pool_uuid, POOL_UUID_LEN))
		rc = fail(err, errlen, -EMEDIUMTYPE, "%s holds another pool's disk ('%s')", path,
			  sb->pool_name);
	else if (memcmp(sb->disk_uuid, p->sb->member[idx].uuid, POOL_UUID_LEN))
		rc = fail(err, errlen, -EMEDIUMTYPE, "%s holds another member's superblock", path);
	free(sb);
	return rc;
}

int pool_place_degraded(struct pool *p, uint32_t npos, uint32_t tolerate, uint8_t *disk_out)
{
	struct pool_space sp[POOL_MAX_DISKS];
	struct rank r[POOL_MAX_DISKS];
	uint32_t rotor = space_snapshot(p, sp, 1);
	uint32_t n = rank_disks(p, sp, rotor, r), k = 0;
	uint64_t used = 0;

	if (npos == 0 || n + tolerate < npos || npos > pool_data_disks(p))
		return -ENOSPC;
	for (; k < n && k < npos; k++) {
		disk_out[k] = (uint8_t)r[k].idx;
		used |= 1ull << r[k].idx;
	}
	for (uint32_t i = 0; i < p->ndisks && k < npos; i++)
		if (!(used & (1ull << i)) && !pool_disk_is_journal(p, i))
			disk_out[k++] = (uint8_t)i;
	return 0;
}

/* ---- directory durability ------------------------------------------------- */

int pool_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 || fsync(fd) < 0 ? -errno : 0;

	if (fd >= 0)
		close(fd);
	return rc;
}

int pool_fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (!slash)
		return pool_fsync_dir(".");
	if (slash == path)
		return pool_fsync_dir("/");
	if ((size_t)(slash - path) >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	return pool_fsync_dir(dir);
}
