/*
 * jobs.c -- repair, resync and scrub as background jobs of the daemon.
 *
 * All three walk allocated data only (the placed files of a volume, in
 * inode order, each up to its size) and hand stripes to
 * pool_store_check(), which reads every live copy or column, verifies
 * checksums, compares mirror copies and parity with data, and rewrites in
 * place, under the stripe lock, what is bad or what a target disk lacks.
 *
 *   repair   a replacement disk (member REPAIRING) gets every position it
 *            holds rebuilt from the others.  The store keeps the disk
 *            "rebuilding" with a cursor: positions behind it are live
 *            (read and written), the rest are left out, so the volume
 *            serves throughout and the cursor only moves under the lock
 *            of the stripe just rebuilt.
 *   resync   a disk that returns (stale: it missed writes while away) is
 *            rebuilt the same way, but only in the regions the volume's
 *            dirty-region log says it missed; when the log overflowed, in
 *            full.  Writes that skip the disk during either are recorded
 *            in the log as missed too, and a second pass, with the disk
 *            fully live, rebuilds those.
 *   scrub    every stripe of every file is checked; what is bad is
 *            repaired from good copies or parity; files with bad blocks
 *            are named.
 *
 * One worker thread per job.  A job reports progress (bytes of file data
 * done of the total), honours a rate limit (a token bucket: it sleeps
 * whenever it is ahead of rate x elapsed), and keeps a checkpoint (the
 * last file done) in `<metadata disk>/vol/<volume>/job` on each
 * in-service metadata disk of the volume, so a restarted daemon resumes
 * where it stopped: repairs of REPAIRING disks always restart, scrubs
 * restart when a checkpoint says one was running.
 *
 * The control socket (fs/ctl.c) reaches this file through
 * fs_jobs_request(); fs/health.c through the functions in fs/jobs.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/fs.h"
#include "fs/jobs.h"
#include "fs/node.h"
#include "pool/catalog.h"
#include "pool/drl.h"
#include "pool/journal.h"

#define MAX_JOBS       32
#define MAX_BAD_PATHS  16
#define BATCH_BYTES    (4u << 20) /* per position per step (pool_store_check) */
#define CKPT_PERIOD_NS 1000000000ll

enum job_kind { JOB_REPAIR, JOB_RESYNC, JOB_SCRUB, JOB_RETIRE };
enum job_state { JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_STOPPED };

struct job {
	struct fs *fs;
	uint32_t id;
	enum job_kind kind;
	uint32_t disk;			/* repair, resync */
	char volume[POOL_NAME_MAX + 1]; /* "" = every volume */
	uint64_t resume_ino;		/* scrub resumed after this inode */
	double rate;			/* bytes per second, 0: unlimited */
	_Atomic int state;
	_Atomic int stop;
	_Atomic uint64_t done, total; /* bytes of file data */
	pthread_mutex_t mu;	      /* guards st, msg, bad */
	struct pool_check_stats st;
	char msg[POOL_MSG_MAX];
	char bad[MAX_BAD_PATHS][POOL_MSG_MAX];
	uint32_t nbad;
	int64_t start_ns, end_ns, ckpt_ns;
	pthread_t thread;
};

struct fs_jobs {
	pthread_mutex_t mu;
	struct job *j[MAX_JOBS];
	uint32_t n, next_id;
};

/* snprintf for messages that may be cut short (long paths). */
static void put(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

static const char *kind_name(enum job_kind k)
{
	static const char *const n[] = {"repair", "resync", "scrub", "retire"};

	return n[k];
}

static const char *state_name(int s)
{
	static const char *const n[] = {"running", "done", "failed", "stopped"};

	return s >= 0 && s <= JOB_STOPPED ? n[s] : "?";
}

static uint32_t nvolumes(struct fs *fs)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	return n;
}

/* ---- checkpoints ------------------------------------------------------------ */

/* Two slots per volume, so a scrub asked for during a repair does not
 * overwrite the repair's record: `job` (repair, resync, retire) and
 * `scrub`.  A third, `merge`, is the last checkpoint merge (fs/ckpt.c
 * runs it and resumes it from its own log; the record is for every
 * node's status and is never a resume point: fs_jobs_merge_record). */
enum slot { SLOT_JOB, SLOT_SCRUB, SLOT_MERGE };
static const char *const slot_file[] = {"job", "scrub", "merge"};

static enum slot slot_of(enum job_kind k)
{
	return k == JOB_SCRUB ? SLOT_SCRUB : SLOT_JOB;
}

/* A volume's record of one slot: the resume point (first line, covered by
 * its CRC) and, for every node's status, who runs it, how far it got and,
 * once over, how it ended (docs/FORMAT.md). */
struct rec {
	char kind[16];
	uint32_t disk;
	char at[32]; /* the last inode done, "done" (this part), "end" (over) */
	double rate;
	char node[POOL_NODE_NAME_MAX + 1]; /* "-": asked for, not started */
	uint64_t done, total, repaired, unrec;
	int64_t ms;
	char state[16]; /* running, waiting, done, failed */
	char msg[POOL_MSG_MAX];
};

/* The in-service metadata directories of a volume. */
static uint32_t meta_dirs(struct fs *fs, const char *vol, char dirs[][POOL_PATH_MAX + 80])
{
	uint32_t n = 0;

	pthread_rwlock_rdlock(&fs->pool_lock);
	const struct pool_sb_volume *pv = pool_volume_find(fs->pool, vol);
	for (uint32_t i = 0; pv && i < pv->nmeta; i++)
		if (pool_disk_in_service(fs->pool, pv->meta[i]))
			snprintf(dirs[n++], POOL_PATH_MAX + 80, "%s/vol/%s",
				 fs->pool->disk[pv->meta[i]].path, vol);
	pthread_rwlock_unlock(&fs->pool_lock);
	return n;
}

/* "spacefs-job 1 KIND DISK INO RATE CRC\n"
 * "progress NODE DONE TOTAL MS STATE REPAIRED UNRECOVERABLE\n"
 * ["msg TEXT\n"], on every in-service metadata disk, atomically. */
static void rec_write(struct fs *fs, const char *vol, enum slot s, const struct rec *r)
{
	char dirs[POOL_META_DISKS][POOL_PATH_MAX + 80], body[128], line[POOL_MSG_MAX + 400];
	uint32_t n = meta_dirs(fs, vol, dirs);

	snprintf(body, sizeof(body), "spacefs-job 1 %s %u %s %.0f", r->kind, r->disk, r->at,
		 r->rate);
	int len =
	    snprintf(line, sizeof(line), "%s %08x\n", body, layout_crc32c(body, strlen(body)));
	len +=
	    snprintf(line + len, sizeof(line) - (size_t)len,
		     "progress %s %" PRIu64 " %" PRIu64 " %" PRId64 " %s %" PRIu64 " %" PRIu64 "\n",
		     r->node[0] ? r->node : "-", r->done, r->total, r->ms,
		     r->state[0] ? r->state : "running", r->repaired, r->unrec);
	if (r->msg[0]) {
		len += snprintf(line + len, sizeof(line) - (size_t)len, "msg ");
		for (const char *c = r->msg; *c && len < (int)sizeof(line) - 2; c++)
			line[len++] = *c == '\n' || *c == '\t' ? ' ' : *c;
		line[len++] = '\n';
	}
	for (uint32_t i = 0; i < n; i++) {
		char path[POOL_PATH_MAX + 96], tmp[POOL_PATH_MAX + 104];
		put(path, sizeof(path), "%s/%s", dirs[i], slot_file[s]);
		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		/* a replacement disk may not have the volume's directory yet */
		char parent[sizeof(dirs[i])];
		memcpy(parent, dirs[i], sizeof(parent));
		char *slash = strrchr(parent, '/');
		if (slash) {
			*slash = '\0';
			mkdir(parent, 0755);
		}
		mkdir(dirs[i], 0755);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int ok = fd >= 0 && write(fd, line, (size_t)len) == len && fsync(fd) == 0;
		if (fd >= 0)
			close(fd);
		if (!ok || rename(tmp, path) < 0)
			fs_log("volume %s: cannot write job checkpoint %s: %s", vol, path,
			       strerror(errno));
	}
}

/* The first valid record of a volume's slot: 0, or -ENOENT. */
static int rec_read(struct fs *fs, const char *vol, enum slot s, struct rec *r)
{
	char dirs[POOL_META_DISKS][POOL_PATH_MAX + 80], path[POOL_PATH_MAX + 96];
	uint32_t n = meta_dirs(fs, vol, dirs);

	for (uint32_t i = 0; i < n; i++) {
		char line[POOL_MSG_MAX + 400] = "", body[128];
		unsigned crc;
		put(path, sizeof(path), "%s/%s", dirs[i], slot_file[s]);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		*r = (struct rec){.node = "-", .state = "running"};
		int got = fgets(line, sizeof(line), f) != NULL;
		if (!got || sscanf(line, "spacefs-job 1 %15s %u %31s %lf %x", r->kind, &r->disk,
				   r->at, &r->rate, &crc) != 5) {
			fclose(f);
			continue;
		}
		snprintf(body, sizeof(body), "spacefs-job 1 %s %u %s %.0f", r->kind, r->disk, r->at,
			 r->rate);
		if (crc != layout_crc32c(body, strlen(body)) || r->disk >= POOL_MAX_DISKS ||
		    r->rate < 0) {
			fclose(f);
			fs_log("volume %s: job checkpoint %s is damaged; ignored", vol, path);
			continue;
		}
		/* display only: a short or older line leaves the defaults */
		unsigned long long d = 0, t = 0, rep = 0, un = 0;
		long long ms = 0;
		if (fgets(line, sizeof(line), f) &&
		    sscanf(line, "progress %64s %llu %llu %lld %15s %llu %llu", r->node, &d, &t,
			   &ms, r->state, &rep, &un) >= 4) {
			r->done = d, r->total = t, r->ms = ms, r->repaired = rep, r->unrec = un;
			if (fgets(line, sizeof(line), f) && !strncmp(line, "msg ", 4)) {
				size_t l = strcspn(line + 4, "\n");
				l = l < sizeof(r->msg) - 1 ? l : sizeof(r->msg) - 1;
				memcpy(r->msg, line + 4, l);
				r->msg[l] = '\0';
			}
		}
		fclose(f);
		return 0;
	}
	return -ENOENT;
}

/* A job's record: its progress as of now, `at` its resume point, `state`
 * NULL for "running". */
static void ckpt_put(struct fs *fs, const char *vol, struct job *j, const char *at,
		     const char *state)
{
	struct rec r = {.disk = j->disk, .rate = j->rate};

	snprintf(r.kind, sizeof(r.kind), "%s", kind_name(j->kind));
	snprintf(r.at, sizeof(r.at), "%s", at);
	snprintf(r.node, sizeof(r.node), "%s", j->start_ns ? j->fs->opt.node : "-");
	snprintf(r.state, sizeof(r.state), "%s", state ? state : "running");
	r.done = atomic_load(&j->done);
	r.total = atomic_load(&j->total);
	if (state && strcmp(state, "failed") && r.total > r.done)
		r.done = r.total; /* over: what was left needed nothing */
	else if (state && strcmp(state, "failed"))
		r.total = r.done;
	r.ms = j->start_ns ? (fs_mono_ns() - j->start_ns) / 1000000 : 0;
	if (j->start_ns)
		pthread_mutex_lock(&j->mu);
	r.repaired = j->st.repaired;
	r.unrec = j->st.unrecoverable;
	if (state && !strcmp(state, "failed"))
		snprintf(r.msg, sizeof(r.msg), "%s", j->msg);
	if (j->start_ns)
		pthread_mutex_unlock(&j->mu);
	rec_write(fs, vol, slot_of(j->kind), &r);
}

/* A running job's checkpoint; "done": this volume's part is finished (a
 * disk job then waits for the other volumes' parts). */
static void ckpt_write(struct fs *fs, const char *vol, struct job *j, const char *ino)
{
	bool part_over = !strcmp(ino, "done");

	ckpt_put(fs, vol, j, ino, part_over ? (j->kind == JOB_SCRUB ? "done" : "waiting") : NULL);
}

static void ckpt_remove(struct fs *fs, const char *vol, enum slot s)
{
	char dirs[POOL_META_DISKS][POOL_PATH_MAX + 80], path[POOL_PATH_MAX + 96];
	uint32_t n = meta_dirs(fs, vol, dirs);

	for (uint32_t i = 0; i < n; i++) {
		put(path, sizeof(path), "%s/%s", dirs[i], slot_file[s]);
		unlink(path);
	}
}

/* Several nodes: the job is over on this volume (state "done" or
 * "failed"); the record stays, with its last progress, for every node's
 * status and for --wait, until the next job of the slot, but it is no
 * longer a resume point. */
static void ckpt_end(struct fs *fs, const char *vol, enum slot s, const char *state)
{
	struct rec r;

	if (rec_read(fs, vol, s, &r) < 0 || !strcmp(r.at, "end"))
		return;
	snprintf(r.at, sizeof(r.at), "end");
	snprintf(r.state, sizeof(r.state), "%s", state);
	rec_write(fs, vol, s, &r);
}

/* The resume point of a volume's slot: 0 and its fields, or -ENOENT (none,
 * or the job is over). */
static int ckpt_read(struct fs *fs, const char *vol, enum slot s, char *kind, uint32_t *disk,
		     uint64_t *ino, int *done, double *rate)
{
	struct rec r;

	if (rec_read(fs, vol, s, &r) < 0 || !strcmp(r.at, "end"))
		return -ENOENT;
	snprintf(kind, 16, "%s", r.kind);
	*rate = r.rate;
	*disk = r.disk;
	*done = !strcmp(r.at, "done");
	*ino = *done ? 0 : strtoull(r.at, NULL, 10);
	return 0;
}

/* The volume's record is a repair of `disk` that did not finish: the
 * disk holds only the files that repair reached, whatever the
 * dirty-region log says it missed, so its return must be a whole
 * rebuild.  (Single node, pool_drl_stale_all says so too; with several
 * nodes only this record reaches the volume's owner.) */
static bool repair_unfinished(struct fs *fs, const char *vol, uint32_t disk)
{
	struct rec r;

	if (rec_read(fs, vol, SLOT_JOB, &r) < 0 || strcmp(r.kind, "repair") || r.disk != disk)
		return false;
	return strcmp(r.at, "done") && !(!strcmp(r.at, "end") && !strcmp(r.state, "done"));
}

/* A checkpoint merge's record (fs/jobs.h): written by the volume's owner
 * when a merge starts ("running", replacing the last one's) and when it
 * ends ("end" with state done or failed), so that every node's status
 * shows the last merge of each volume once it is over, the same rows on
 * every node.  A running merge's row is the owner's live one
 * (fs_ckpt_jobs), so a running record is not listed. */
void fs_jobs_merge_record(struct fs *fs, const char *vol, const char *ckpt, bool backup,
			  uint64_t done, uint64_t total, int64_t ms, double rate, const char *state,
			  const char *why)
{
	bool over = state && strcmp(state, "running");
	struct rec r = {.rate = rate, .done = done, .total = total, .ms = ms};

	snprintf(r.kind, sizeof(r.kind), "%s", backup ? "backup" : "merge");
	snprintf(r.at, sizeof(r.at), "%s", over ? "end" : "running");
	snprintf(r.node, sizeof(r.node), "%s",
		 fs->opt.node && fs->opt.node[0] ? fs->opt.node : "-");
	snprintf(r.state, sizeof(r.state), "%s", state ? state : "running");
	put(r.msg, sizeof(r.msg), "checkpoint %s%s%s", ckpt, why && why[0] ? ": " : "",
	    why ? why : "");
	rec_write(fs, vol, SLOT_MERGE, &r);
}

/* ---- progress and pacing ------------------------------------------------------ */

static void pace(struct job *j, uint64_t bytes)
{
	uint64_t done = atomic_fetch_add(&j->done, bytes) + bytes;

	if (j->rate <= 0)
		return;
	double ahead = (double)done / j->rate - (double)(fs_mono_ns() - j->start_ns) / 1e9;
	if (ahead > 0.001) {
		struct timespec ts = {.tv_sec = (time_t)ahead,
				      .tv_nsec = (long)((ahead - (double)(time_t)ahead) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

static void add_stats(struct job *j, const struct pool_check_stats *s)
{
	pthread_mutex_lock(&j->mu);
	j->st.blocks += s->blocks;
	j->st.repaired += s->repaired;
	j->st.bad += s->bad;
	j->st.unrecoverable += s->unrecoverable;
	j->st.rebuilt_bytes += s->rebuilt_bytes;
	pthread_mutex_unlock(&j->mu);
}

/* A file with bad blocks: name it in the log and the job's report. */
static void note_file(struct job *j, struct fs_volume *v, uint64_t ino,
		      const struct pool_check_stats *s)
{
	char path[POOL_MSG_MAX - 128] = "";

	if (pool_meta_path(v->meta, ino, path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "(inode %" PRIu64 ")", ino);
	fs_log("%s: volume %s file %s: %" PRIu64 " bad block(s), %" PRIu64 " repaired, %" PRIu64
	       " unrecoverable",
	       kind_name(j->kind), v->name, path, s->bad, s->repaired, s->unrecoverable);
	pthread_mutex_lock(&j->mu);
	if (j->nbad < MAX_BAD_PATHS)
		snprintf(j->bad[j->nbad++], POOL_MSG_MAX,
			 "%s/%s bad=%" PRIu64 " repaired=%" PRIu64 " unrecoverable=%" PRIu64,
			 v->name, path + (path[0] == '/'), s->bad, s->repaired, s->unrecoverable);
	pthread_mutex_unlock(&j->mu);
}

/* ---- walking files ----------------------------------------------------------- */

/* Before a job's checkpoint vouches for what it rebuilt or repaired: that
 * data on stable storage.  The checkpoint is fsynced on the metadata
 * disks; the rebuilt chunks sit in the target disk's page cache and
 * running journal, and a power cut could keep the first and lose the
 * second: the resumed job would skip files whose rebuild was lost, and
 * mark the disk healthy without them (kill -9 alone cannot: the page
 * cache survives it).  0 or -errno (the checkpoint waits). */
static int data_durable(struct fs_volume *v)
{
	return pool_store_syncfs(v->store);
}

/* The bytes of a file a scrub or repair walks: its size, the open file's
 * if larger, and for a file in a checkpoint chain as far as its
 * checkpoints need (fs_ckpt_walk_end). */
static uint64_t file_size(struct fs *fs, struct fs_volume *v, const struct pool_inode *in)
{
	uint64_t size = in->size, open_size, layer = fs_ckpt_walk_end(v, in->ino);

	if (fs_inode_cached_size(fs, fs_ino_make(v, in->ino), &open_size) == 0 && open_size > size)
		size = open_size;
	return layer > size ? layer : size;
}

/* A disk that was out when the file was cut (pool_store_truncate) keeps
 * its long chunks, with valid checksums: the old bytes would show again
 * once the file grows back over them.  Cut its chunks to the file's size,
 * read with the file's writes held off (io_lock, as fs_set_size), so the
 * size cannot grow under the cut.  0 or -errno. */
static int cut_stale(struct job *j, struct fs_volume *v, uint64_t id, uint64_t targets)
{
	struct pool_file_map map;
	struct fs_inode *fi;

	/* A checkpoint's layer or fill file is written under its file's
	 * locks, not its own, and is never cut (a merge removes it whole):
	 * a first write past its end could land under the cut. */
	if (fs_ckpt_is_delta(v, id))
		return 0;
	int rc = fs_inode_get(j->fs, fs_ino_make(v, id), 0, &fi); /* a hold */
	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;
	pthread_rwlock_wrlock(&fi->io_lock);
	pthread_mutex_lock(&fi->lock);
	struct pool_inode in = fi->attr;
	pthread_mutex_unlock(&fi->lock);
	fs_file_map(fi, &map);
	rc = pool_store_cut(v->store, &map, file_size(j->fs, v, &in), targets);
	pthread_rwlock_unlock(&fi->io_lock);
	fs_inode_put(j->fs, fi);
	return rc;
}

static int on_disk(const struct pool_inode *in, uint32_t disk)
{
	for (uint32_t p = 0; p < in->npos; p++)
		if (in->disk[p] == disk)
			return 1;
	return 0;
}

struct walk {
	struct job *j;
	struct fs_volume *v;
	uint64_t total; /* first pass: bytes to do */
	int count_only;
	int rc;
	/* several nodes: stop after slice_end (CLOCK_MONOTONIC ns, 0: never),
	 * `last` the last file done */
	int64_t slice_end;
	uint64_t last;
	bool more;
};

static int job_wants(const struct job *j, const struct pool_inode *in)
{
	return j->kind == JOB_SCRUB || on_disk(in, j->disk);
}

/* Check (scrub) or rebuild (repair) stripes [first, first+n) of a file. */
static int do_stripes(struct job *j, struct fs_volume *v, const struct pool_file_map *map,
		      uint64_t first, uint64_t n, unsigned flags, uint64_t targets,
		      struct pool_check_stats *fst)
{
	uint64_t stripe_bytes = (uint64_t)layout_stripe_bytes(&v->geom);
	uint64_t batch = BATCH_BYTES / v->geom.interleave;

	for (uint64_t s = first; s < first + n && !atomic_load(&j->stop); s += batch) {
		uint64_t k = first + n - s < batch ? first + n - s : batch;
		struct pool_check_stats st = {0};
		int rc = pool_store_check(v->store, map, s, k, flags, targets, &st);
		add_stats(j, &st);
		fst->bad += st.bad;
		fst->repaired += st.repaired;
		fst->unrecoverable += st.unrecoverable;
		if (rc < 0)
			return rc;
		pace(j, k * stripe_bytes);
	}
	return atomic_load(&j->stop) ? -ECANCELED : 0;
}

static void map_of(const struct pool_inode *in, struct pool_file_map *map)
{
	map->id = in->ino;
	map->npos = in->npos;
	memcpy(map->disk, in->disk, sizeof(map->disk));
}

static int walk_one(void *arg, const struct pool_inode *in)
{
	struct walk *w = arg;
	struct job *j = w->j;
	struct fs_volume *v = w->v;
	uint64_t nst = pool_store_stripes(v->store, file_size(j->fs, v, in));

	if (!job_wants(j, in))
		return 0;
	if (w->count_only) {
		w->total += nst * layout_stripe_bytes(&v->geom);
		return 0;
	}
	if (w->slice_end && fs_mono_ns() > w->slice_end) {
		w->more = true; /* this file is the next slice's */
		return 1;
	}
	struct pool_file_map map;
	struct pool_check_stats fst = {0};
	map_of(in, &map);
	int rep = j->kind != JOB_SCRUB;
	if (rep)
		pool_store_rebuild_cursor(v->store, j->disk, in->ino, 0);
	unsigned flags = POOL_CHECK_REPAIR | (rep ? POOL_CHECK_REBUILD : 0);
	w->rc = do_stripes(j, v, &map, 0, nst, flags, rep ? 1ull << j->disk : 0, &fst);
	if (rep && w->rc == 0) /* a returning disk may have missed cuts too */
		w->rc = cut_stale(j, v, in->ino, 1ull << j->disk);
	if (rep)
		pool_store_rebuild_cursor(v->store, j->disk, in->ino + 1, 0);
	if (fst.bad || fst.unrecoverable)
		note_file(j, v, in->ino, &fst);
	if (w->rc == 0)
		w->last = in->ino;
	int64_t now = fs_mono_ns();
	if (w->rc == 0 && now - j->ckpt_ns > CKPT_PERIOD_NS && data_durable(v) == 0) {
		char at[32];
		snprintf(at, sizeof(at), "%" PRIu64, in->ino);
		ckpt_write(j->fs, v->name, j, at);
		j->ckpt_ns = now;
	}
	return w->rc < 0 ? w->rc : 0;
}

/* Every placed file of the volume after `after`. */
static int walk_files(struct job *j, struct fs_volume *v, uint64_t after)
{
	struct walk w = {.j = j, .v = v, .count_only = 1};
	int rc = pool_meta_files(v->meta, after, walk_one, &w);

	atomic_fetch_add(&j->total, w.total);
	w.count_only = 0;
	if (rc == 0)
		rc = pool_meta_files(v->meta, after, walk_one, &w);
	return rc < 0 ? rc : w.rc;
}

/* With several nodes the volume's stores close when it changes hands
 * (fs/node.c), so the walk holds the volume (shared, as a request does)
 * for a slice of files at a time, never across a handover's drain, and
 * gives up with -EREMCHG once this node no longer owns it: its checkpoint
 * (the last file done, at most a second old) stays for the next owner,
 * whose health tick resumes the job there (fs_jobs_tick).  Files done
 * since that checkpoint are scrubbed twice, which changes nothing. */
#define SLICE_NS 200000000ll

static int walk_files_owned(struct job *j, struct fs_volume *v, uint64_t after)
{
	struct walk w = {.j = j, .v = v, .count_only = 1};
	int rc;

	if (!fs_vol_enter_local(v))
		return -EREMCHG;
	rc = pool_meta_files(v->meta, after, walk_one, &w);
	fs_vol_leave(v);
	atomic_fetch_add(&j->total, w.total);
	w.count_only = 0;
	w.last = after;
	while (rc >= 0 && w.rc >= 0 && !atomic_load(&j->stop)) {
		if (!fs_vol_enter_local(v))
			return -EREMCHG;
		w.more = false;
		w.slice_end = fs_mono_ns() + SLICE_NS;
		rc = pool_meta_files(v->meta, w.last, walk_one, &w);
		fs_vol_leave(v);
		if (!w.more)
			break;
	}
	if (atomic_load(&j->stop))
		return -ECANCELED;
	return rc < 0 ? rc : w.rc < 0 ? w.rc : 0;
}

/* ---- the dirty-region log's view -------------------------------------------- */

/* Rebuild (targets) or resync one region of a file; *bytes += its size. */
static int do_region(struct job *j, struct fs_volume *v, uint64_t id, uint64_t region,
		     unsigned flags, uint64_t targets, uint64_t *bytes)
{
	struct pool_inode in;
	struct pool_file_map map;
	struct pool_check_stats fst = {0};
	int rc = pool_meta_get(v->meta, id, &in);

	if (rc == -ENOENT || (rc == 0 && in.npos == 0))
		return 1; /* the file is gone: nothing to do */
	if (rc < 0)
		return rc;
	map_of(&in, &map);
	uint64_t sb = layout_stripe_bytes(&v->geom);
	uint64_t first = region * POOL_DRL_REGION / sb;
	uint64_t end = ((region + 1) * POOL_DRL_REGION + sb - 1) / sb;
	uint64_t have = pool_store_stripes(v->store, file_size(v->fs, v, &in));
	/* After a crash the recorded size may lag the data: go as far as
	 * the chunk files do.  While mounted the daemon's size is right. */
	uint64_t ext = j ? 0 : pool_store_stripes_on_disk(v->store, &map);
	if (ext > have)
		have = ext;
	if (j && targets && end > have) { /* past the end: a cut it missed? */
		rc = cut_stale(j, v, id, targets);
		if (rc < 0)
			return rc;
	}
	if (end > have)
		end = have;
	if (end <= first)
		return 0;
	if (j) {
		if (targets && flags & POOL_CHECK_REPAIR)
			pool_store_rebuild_cursor(v->store, j->disk, id, first);
		rc = do_stripes(j, v, &map, first, end - first, flags, targets, &fst);
	} else {
		rc = pool_store_check(v->store, &map, first, end - first, flags, targets, &fst);
	}
	*bytes += (end - first) * sb;
	return rc;
}

/* Rebuild on `disk` every region the log says it missed. */
static int resync_missed(struct job *j, struct fs_volume *v, int with_cursor)
{
	struct pool_drl_entry *e;
	size_t n;
	uint64_t bytes = 0;
	int rc = pool_drl_list(v->drl, &e, &n);

	for (size_t i = 0; rc == 0 && i < n; i++)
		if (e[i].missed & (1ull << j->disk))
			atomic_fetch_add(&j->total, POOL_DRL_REGION);
	for (size_t i = 0; rc >= 0 && i < n && !atomic_load(&j->stop); i++) {
		if (!(e[i].missed & (1ull << j->disk)))
			continue;
		rc = do_region(j, v, e[i].id, e[i].region, POOL_CHECK_REPAIR | POOL_CHECK_REBUILD,
			       1ull << j->disk, &bytes);
		if (with_cursor && (i + 1 == n || e[i + 1].id != e[i].id))
			pool_store_rebuild_cursor(v->store, j->disk, e[i].id + 1, 0);
		if (rc >= 0)
			rc = pool_drl_clear_missed(v->drl, e[i].id, e[i].region, j->disk);
	}
	free(e);
	if (bytes)
		fs_log("%s: volume %s: disk %u: %" PRIu64
		       " bytes of file data in regions it missed",
		       kind_name(j->kind), v->name, j->disk, bytes);
	return rc < 0 ? rc : 0;
}

/* ---- one volume of a repair or resync ------------------------------------------- */

static int all_healthy(struct fs *fs, int except);

static void forget_missed(struct fs_volume *v, uint32_t disk)
{
	struct pool_drl_entry *e;
	size_t n;

	if (pool_drl_list(v->drl, &e, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (e[i].missed & (1ull << disk))
			pool_drl_clear_missed(v->drl, e[i].id, e[i].region, disk);
	free(e);
}

static int rebuild_volume(struct job *j, struct fs_volume *v)
{
	char kind[16];
	uint32_t disk;
	uint64_t after = 0;
	int done = 0, rc = 0;
	int full = j->kind == JOB_REPAIR || !v->drl || pool_drl_overflowed(v->drl) ||
		   repair_unfinished(j->fs, v->name, j->disk);
	double rate;

	if (ckpt_read(j->fs, v->name, SLOT_JOB, kind, &disk, &after, &done, &rate) < 0 ||
	    strcmp(kind, kind_name(j->kind)) || disk != j->disk)
		after = 0, done = 0;
	if (!done && full && v->drl && !after)
		forget_missed(v, j->disk); /* the sweep rebuilds all of it anyway */
	if (!done) {
		pool_store_rebuild_cursor(v->store, j->disk, after + 1, 0);
		rc = full ? walk_files(j, v, after) : v->drl ? resync_missed(j, v, 1) : 0;
		if (rc == 0)
			rc = data_durable(v);
		if (rc == 0)
			ckpt_write(j->fs, v->name, j, "done");
	}
	if (rc < 0)
		return rc;
	/* Second pass, the disk fully live: what writes skipped meanwhile. */
	pool_store_disk_set(v->store, j->disk, POOL_STORE_DISK_OK);
	if (v->drl) {
		rc = resync_missed(j, v, 0);
		if (rc == 0 && full && all_healthy(j->fs, (int)j->disk))
			pool_drl_clear_overflow(v->drl);
	}
	return rc;
}

static void restore_meta(struct job *j);

/* Several nodes: this volume's part of a repair, on its owner, holding the
 * volume only a slice at a time (walk_files_owned); -EREMCHG once the
 * volume changed hands (the checkpoint stays for the next owner).  The
 * part is recorded done only after its second pass: a move between the
 * passes leaves the next owner both (the first from its checkpoint). */
static int rebuild_volume_owned(struct job *j, struct fs_volume *v)
{
	char kind[16];
	uint32_t disk;
	uint64_t after = 0;
	int done = 0, rc = 0;
	double rate;

	if (ckpt_read(j->fs, v->name, SLOT_JOB, kind, &disk, &after, &done, &rate) < 0 ||
	    strcmp(kind, kind_name(j->kind)) || disk != j->disk)
		after = 0, done = 0;
	if (!done) {
		if (!fs_vol_enter_local(v))
			return -EREMCHG;
		if (pool_store_disk_get(v->store, j->disk) != POOL_STORE_DISK_REBUILDING) {
			fs_vol_leave(v); /* not applied here yet: the next tick retries */
			put(j->msg, sizeof(j->msg),
			    "volume %s: disk %u is not being rebuilt in its store yet; retried",
			    v->name, j->disk);
			return -EAGAIN;
		}
		bool full = j->kind == JOB_REPAIR || !v->drl || pool_drl_overflowed(v->drl);
		if (v->drl && full && !after)
			forget_missed(v, j->disk); /* the sweep rebuilds all of it */
		pool_store_rebuild_cursor(v->store, j->disk, after + 1, 0);
		char at[32]; /* status on every node: it runs here now */
		snprintf(at, sizeof(at), "%" PRIu64, after);
		ckpt_write(j->fs, v->name, j, at);
		if (!full) /* a returning disk: what the log says it missed */
			rc = resync_missed(j, v, 1);
		fs_vol_leave(v);
		if (full)
			rc = walk_files_owned(j, v, after);
	}
	if (rc < 0)
		return rc;
	if (!fs_vol_enter_local(v))
		return -EREMCHG;
	pool_store_disk_set(v->store, j->disk, POOL_STORE_DISK_OK);
	if (v->drl) /* what writes skipped meanwhile */
		rc = resync_missed(j, v, 0);
	if (rc == 0 && v->drl && j->kind == JOB_REPAIR && all_healthy(j->fs, (int)j->disk))
		pool_drl_clear_overflow(v->drl); /* the sweep covered every region */
	if (rc == 0 && !done)
		rc = data_durable(v);
	fs_vol_leave(v);
	if (rc == 0 && !done)
		ckpt_write(j->fs, v->name, j, "done");
	return rc;
}

static bool part_done(struct fs *fs, const char *vol, const char *what, uint32_t disk)
{
	char kind[16];
	uint32_t d;
	uint64_t ino;
	double rate;
	int done;

	return ckpt_read(fs, vol, SLOT_JOB, kind, &d, &ino, &done, &rate) == 0 &&
	       !strcmp(kind, what) && d == disk && done;
}

/* Several nodes: when every volume's part is done (whichever node did
 * it), the disk is healthy again: committed once, under the catalogue
 * lock, by the node that finishes last (a second finisher finds it done). */
static int cluster_repair_finish(struct job *j)
{
	struct fs *fs = j->fs;
	struct pool_catalog_lock l;
	char err[POOL_MSG_MAX * 2];
	uint32_t n = nvolumes(fs);

	for (uint32_t i = 0; i < n; i++)
		if (!fs_volume_gone(fs->vol[i]) &&
		    !part_done(fs, fs->vol[i]->name, kind_name(j->kind), j->disk))
			return 0; /* another node's part is still running */
	int rc = fs_catalog_begin(fs, &l, err, sizeof(err));
	if (rc < 0) {
		put(j->msg, sizeof(j->msg), "%s", err);
		return rc;
	}
	if (fs->pool->disk[j->disk].state == POOL_DISK_REPAIRING)
		rc = pool_disk_restore(fs->pool, j->disk, POOL_DISK_HEALTHY, err, sizeof(err));
	fs_catalog_end(fs, &l);
	if (rc < 0) {
		put(j->msg, sizeof(j->msg), "%s", err);
		return rc;
	}
	fs_catalog_apply(fs);
	restore_meta(j);
	for (uint32_t i = 0; i < n; i++)
		if (!fs_volume_gone(fs->vol[i]))
			ckpt_end(fs, fs->vol[i]->name, SLOT_JOB, "done");
	fs_log("%s of disk %u: every volume's part is done; the disk is healthy",
	       kind_name(j->kind), j->disk);
	return 0;
}

/* A returning disk goes back in service as REPAIRING, its directory
 * reopened by every store (rebuilding, nothing live yet). */
static int resync_prepare(struct job *j)
{
	struct fs *fs = j->fs;
	char err[POOL_MSG_MAX * 2], path[POOL_PATH_MAX];
	int rc;

	pthread_rwlock_wrlock(&fs->pool_lock);
	snprintf(path, sizeof(path), "%s", fs->pool->disk[j->disk].path);
	fs_health_rebaseline(fs, j->disk);
	rc = pool_disk_restore(fs->pool, j->disk, POOL_DISK_REPAIRING, err, sizeof(err));
	pthread_rwlock_unlock(&fs->pool_lock);
	if (rc < 0) {
		put(j->msg, sizeof(j->msg), "%s", err);
		return rc;
	}
	uint32_t n = nvolumes(fs);
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		rc = pool_store_disk_replace(fs->vol[i]->store, j->disk, path, err, sizeof(err));
		if (rc < 0)
			put(j->msg, sizeof(j->msg), "%s", err);
	}
	return rc;
}

/* The rebuilt disk is a metadata disk of some volumes: give them their
 * replica back now, not at the next mount. */
static void restore_meta(struct job *j)
{
	struct fs *fs = j->fs;
	uint32_t n = nvolumes(fs);

	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		char dir[POOL_PATH_MAX + 80], err[POOL_MSG_MAX * 2];
		int is_meta = 0;
		/* several nodes: only volumes open here; the others get their
		 * replica back when their owner next opens them */
		if (fs_volume_gone(v) || !fs_vol_enter_local(v))
			continue;
		pthread_rwlock_rdlock(&fs->pool_lock);
		const struct pool_sb_volume *pv = pool_volume_find(fs->pool, v->name);
		for (uint32_t k = 0; pv && k < pv->nmeta; k++)
			is_meta |= pv->meta[k] == j->disk;
		put(dir, sizeof(dir), "%s/vol/%s", fs->pool->disk[j->disk].path, v->name);
		pthread_rwlock_unlock(&fs->pool_lock);
		if (is_meta && pool_meta_add_replica(v->meta, dir, err, sizeof(err)) < 0)
			fs_log("volume %s: %s (restored at the next mount)", v->name, err);
		fs_vol_leave(v);
	}
}

static int rebuild_finish(struct job *j)
{
	struct fs *fs = j->fs;
	char err[POOL_MSG_MAX * 2];
	uint32_t n = nvolumes(fs);

	pthread_rwlock_wrlock(&fs->pool_lock);
	int rc = pool_disk_restore(fs->pool, j->disk, POOL_DISK_HEALTHY, err, sizeof(err));
	pthread_rwlock_unlock(&fs->pool_lock);
	if (rc < 0)
		put(j->msg, sizeof(j->msg), "%s", err);
	for (uint32_t i = 0; rc == 0 && i < n; i++)
		ckpt_remove(fs, fs->vol[i]->name, SLOT_JOB);
	return rc;
}

static int run_rebuild(struct job *j)
{
	struct fs *fs = j->fs;
	/* several nodes: cluster_resync_start did resync_prepare's part */
	int rc = j->kind == JOB_RESYNC && !fs->node ? resync_prepare(j) : 0;
	uint32_t n = nvolumes(fs);

	if (fs->node) { /* one volume's part (job_start insists) */
		struct fs_volume *v = fs_volume_by_name(fs, j->volume);
		rc = v ? rebuild_volume_owned(j, v) : -ENOENT;
		if (rc == -EREMCHG)
			put(j->msg, sizeof(j->msg),
			    "repair of disk %u, volume %s: the volume changed hands; its new owner "
			    "goes on from the checkpoint",
			    j->disk, j->volume);
		else if (rc < 0 && !j->msg[0])
			put(j->msg, sizeof(j->msg), "volume %s: %s", j->volume, strerror(-rc));
		return rc == 0 && !atomic_load(&j->stop) ? cluster_repair_finish(j) : rc;
	}

	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		if (j->volume[0] && strcmp(j->volume, v->name))
			continue;
		rc = rebuild_volume(j, v);
		if (rc < 0 && !j->msg[0])
			snprintf(j->msg, sizeof(j->msg), "volume %s: %s", v->name, strerror(-rc));
	}
	if (rc == 0 && !atomic_load(&j->stop)) {
		restore_meta(j);
		rc = rebuild_finish(j);
	}
	return rc;
}

/* ---- scrub ---------------------------------------------------------------------- */

static int run_scrub(struct job *j)
{
	struct fs *fs = j->fs;
	uint32_t n = nvolumes(fs);
	int rc = 0;

	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		if (j->volume[0] && strcmp(j->volume, v->name))
			continue;
		char at[32];
		snprintf(at, sizeof(at), "%" PRIu64, j->resume_ino);
		ckpt_write(fs, v->name, j, at);
		rc = fs->node ? walk_files_owned(j, v, j->resume_ino)
			      : walk_files(j, v, j->resume_ino);
		if (rc == 0 && fs->node) /* kept for every node's status and --wait */
			ckpt_put(fs, v->name, j, "end", "done");
		else if (rc == 0)
			ckpt_remove(fs, v->name, SLOT_SCRUB);
		else if (rc == -EREMCHG)
			put(j->msg, sizeof(j->msg),
			    "scrub of volume %s: the volume changed hands; its new owner goes on "
			    "from the checkpoint",
			    v->name);
		else if (!j->msg[0])
			snprintf(j->msg, sizeof(j->msg), "volume %s: %s", v->name, strerror(-rc));
	}
	return rc;
}

/* ---- retire: move every position off a disk -------------------------------------- */

/* The healthy disk with the most free space that holds no position of
 * the file, or -1. */
static int move_target(struct fs *fs, const struct pool_file_map *map)
{
	uint64_t best = 0, size, free;
	int pick = -1;

	pthread_rwlock_rdlock(&fs->pool_lock);
	for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
		int used = 0;
		for (uint32_t p = 0; p < map->npos; p++)
			used |= map->disk[p] == d;
		if (used || fs->pool->disk[d].state != POOL_DISK_HEALTHY ||
		    pool_disk_space(fs->pool, d, &size, &free) < 0)
			continue;
		if (pick < 0 || free > best) {
			pick = (int)d;
			best = free;
		}
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	return pick;
}

/* Move one position: copy, record the placement, switch the cached map,
 * drop the old chunk.  The caller holds the file's io_lock exclusively. */
static int move_position(struct job *j, struct fs_volume *v, struct fs_inode *fi,
			 struct pool_file_map *map, uint32_t p)
{
	char err[POOL_MSG_MAX * 2] = "";
	int to = move_target(j->fs, map);

	if (to < 0) {
		put(j->msg, sizeof(j->msg),
		    "volume %s file %" PRIu64 ": no healthy disk free of its positions to move to",
		    v->name, map->id);
		return -ENOSPC;
	}
	int rc = pool_store_copy_position(v->store, map, p, (uint32_t)to, err, sizeof(err));
	struct pool_file_map old = *map;
	map->disk[p] = (uint8_t)to;
	if (rc == 0)
		rc = pool_meta_set_disks(v->meta, map->id, map->npos, map->disk);
	if (rc < 0) {
		put(j->msg, sizeof(j->msg), "volume %s: %s", v->name, err[0] ? err : strerror(-rc));
		return rc;
	}
	pthread_mutex_lock(&fi->lock);
	fi->attr.disk[p] = (uint8_t)to;
	pthread_mutex_unlock(&fi->lock);
	return pool_store_forget_position(v->store, &old, p);
}

static int retire_one(void *arg, const struct pool_inode *in)
{
	struct walk *w = arg;
	struct job *j = w->j;
	struct fs_inode *fi;
	struct pool_file_map map;
	int rc = 0;

	if (!on_disk(in, j->disk) || atomic_load(&j->stop))
		return atomic_load(&j->stop) ? -ECANCELED : 0;
	if (w->slice_end && fs_mono_ns() > w->slice_end) {
		w->more = true; /* several nodes: the next slice's */
		return 1;
	}
	rc = fs_inode_get(j->fs, fs_ino_make(w->v, in->ino), 0, &fi); /* a hold */
	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;
	pthread_rwlock_wrlock(&fi->io_lock); /* no I/O on the file meanwhile */
	fs_file_map(fi, &map);
	/* a checkpoint chain keeps its own copies of its files' placements
	 * (held under io_lock: no checkpoint is created meanwhile) */
	if (fs_ckpt_in_chain(w->v, in->ino)) {
		put(j->msg, sizeof(j->msg),
		    "retire of disk %u stopped: volume %s file %" PRIu64
		    " on it is in a checkpoint; merge or delete the volume's checkpoints first",
		    j->disk, w->v->name, in->ino);
		rc = -EBUSY;
	}
	for (uint32_t p = 0; rc == 0 && p < map.npos; p++)
		if (map.disk[p] == j->disk)
			rc = move_position(j, w->v, fi, &map, p);
	pthread_rwlock_unlock(&fi->io_lock);
	fs_inode_put(j->fs, fi);
	if (rc == 0) {
		pace(j, file_size(j->fs, w->v, in));
		w->last = in->ino;
	}
	w->rc = rc;
	return rc;
}

/* Several nodes: this volume's part, on its owner, a slice at a time.  No
 * checkpoint needed: a part resumed elsewhere walks again and skips what
 * already moved off the disk. */
static int retire_volume_owned(struct job *j, struct fs_volume *v)
{
	struct walk w = {.j = j, .v = v};
	int rc;

	do {
		if (!fs_vol_enter_local(v))
			return -EREMCHG;
		w.more = false;
		w.slice_end = fs_mono_ns() + SLICE_NS;
		rc = pool_meta_files(v->meta, w.last, retire_one, &w);
		fs_vol_leave(v);
	} while (rc >= 0 && w.rc >= 0 && w.more && !atomic_load(&j->stop));
	if (atomic_load(&j->stop))
		return -ECANCELED;
	return rc < 0 ? rc : w.rc < 0 ? w.rc : 0;
}

static int run_retire_cluster(struct job *j)
{
	struct fs *fs = j->fs;
	struct fs_volume *v = fs_volume_by_name(fs, j->volume);
	int rc = v ? retire_volume_owned(j, v) : -ENOENT;

	if (rc == -EREMCHG)
		put(j->msg, sizeof(j->msg),
		    "retire of disk %u, volume %s: the volume changed hands; its new owner goes on",
		    j->disk, j->volume);
	if (rc < 0)
		return rc;
	ckpt_write(fs, j->volume, j, "done");
	uint32_t n = nvolumes(fs);
	for (uint32_t i = 0; i < n; i++)
		if (!fs_volume_gone(fs->vol[i]) &&
		    !part_done(fs, fs->vol[i]->name, "retire", j->disk))
			return 0; /* another volume's part is still running */
	for (uint32_t i = 0; i < n; i++)
		if (!fs_volume_gone(fs->vol[i]))
			ckpt_end(fs, fs->vol[i]->name, SLOT_JOB, "done");
	fs_log("disk %u is empty: every volume's part moved off it; it can be removed", j->disk);
	return 0;
}

static int run_retire(struct job *j)
{
	uint32_t n = nvolumes(j->fs);
	int rc = 0;

	if (j->fs->node)
		return run_retire_cluster(j);
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		struct walk w = {.j = j, .v = j->fs->vol[i]};
		rc = pool_meta_files(w.v->meta, 0, retire_one, &w);
		if (rc == 0)
			rc = w.rc;
	}
	if (rc == 0)
		fs_log("disk %u is empty: every position moved off it; it can be removed", j->disk);
	return rc;
}

/* ---- job threads ------------------------------------------------------------------ */

static void job_summary(struct job *j, int rc)
{
	double secs = (double)(j->end_ns - j->start_ns) / 1e9;
	uint64_t done = atomic_load(&j->done);
	char what[64];

	if (j->kind == JOB_SCRUB)
		put(what, sizeof(what), "volume %s", j->volume[0] ? j->volume : "(all)");
	else
		snprintf(what, sizeof(what), "disk %u", j->disk);
	pthread_mutex_lock(&j->mu);
	if (rc == 0 || !j->msg[0])
		snprintf(j->msg, sizeof(j->msg),
			 "%s %s %s: %" PRIu64
			 " bytes in %.2f s (%.1f MB/s); blocks checked %" PRIu64 ", bad %" PRIu64
			 ", repaired %" PRIu64 ", unrecoverable %" PRIu64 ", rebuilt %" PRIu64
			 " bytes%s%s",
			 kind_name(j->kind), what, rc == 0 ? "done" : "stopped", done, secs,
			 secs > 0 ? (double)done / secs / 1e6 : 0.0, j->st.blocks, j->st.bad,
			 j->st.repaired, j->st.unrecoverable, j->st.rebuilt_bytes,
			 rc < 0 ? ": " : "", rc < 0 ? strerror(-rc) : "");
	pthread_mutex_unlock(&j->mu);
	fs_log("%s", j->msg);
}

static void *job_main(void *arg)
{
	struct job *j = arg;
	int rc = j->kind == JOB_SCRUB	 ? run_scrub(j)
		 : j->kind == JOB_RETIRE ? run_retire(j)
					 : run_rebuild(j);

	j->end_ns = fs_mono_ns();
	if (rc == 0 && atomic_load(&j->done) < atomic_load(&j->total))
		atomic_store(&j->done, atomic_load(&j->total));
	else if (rc == 0)
		atomic_store(&j->total, atomic_load(&j->done));
	job_summary(j, rc);
	/* Several nodes: a part that failed is recorded as such for every
	 * node's status and --wait (not resumed: `spacectl repair` or a new
	 * scrub asks again); a part that stopped (unmount, the volume moved,
	 * not ready yet) stays a resume point. */
	if (j->fs->node && j->volume[0] && rc < 0 && rc != -EREMCHG && rc != -EAGAIN &&
	    !atomic_load(&j->stop))
		ckpt_put(j->fs, j->volume, j, "end", "failed");
	atomic_store(&j->state, rc == 0					  ? JOB_DONE
				: atomic_load(&j->stop) || rc == -EREMCHG ? JOB_STOPPED
									  : JOB_FAILED);
	return NULL;
}

/* Start a job; its id, or a negative errno (*why says why). */
static int job_start(struct fs *fs, enum job_kind k, uint32_t disk, const char *vol, double rate,
		     uint64_t resume, char *why, size_t whylen)
{
	struct fs_jobs *js = fs->jobs;
	struct job *j = calloc(1, sizeof(*j));

	if (!j || !js)
		return free(j), -ENOMEM;
	/* Jobs walk a volume's stores for minutes; with several nodes those
	 * open and close as ownership moves, and jobs do not follow it yet. */
	if (fs->node && (!vol || !vol[0])) {
		snprintf(why, whylen, "with several nodes a job runs per volume, on its owner");
		free(j);
		return -EOPNOTSUPP;
	}
	*j = (struct job){.fs = fs, .kind = k, .disk = disk, .rate = rate, .resume_ino = resume};
	snprintf(j->volume, sizeof(j->volume), "%s", vol ? vol : "");
	pthread_mutex_init(&j->mu, NULL);
	j->start_ns = j->ckpt_ns = fs_mono_ns();
	pthread_mutex_lock(&js->mu);
	/* full: forget the oldest finished job (with several nodes a scrub
	 * leaves one entry per change of hands) */
	for (uint32_t i = 0; js->n == MAX_JOBS && i < js->n; i++) {
		struct job *o = js->j[i];
		if (atomic_load(&o->state) == JOB_RUNNING)
			continue;
		pthread_join(o->thread, NULL);
		pthread_mutex_destroy(&o->mu);
		free(o);
		memmove(&js->j[i], &js->j[i + 1], (js->n - i - 1) * sizeof(js->j[0]));
		js->n--;
	}
	int rc = js->n < MAX_JOBS ? 0 : -EBUSY;
	for (uint32_t i = 0; rc == 0 && i < js->n; i++) {
		struct job *o = js->j[i];
		if (atomic_load(&o->state) == JOB_RUNNING && o->kind == k &&
		    (k == JOB_SCRUB ? !strcmp(o->volume, j->volume)
		     : fs->node	    ? o->disk == disk && !strcmp(o->volume, j->volume)
				    : o->disk == disk))
			rc = -EALREADY;
	}
	if (rc == 0) {
		j->id = ++js->next_id;
		rc = -pthread_create(&j->thread, NULL, job_main, j);
	}
	if (rc == 0)
		js->j[js->n++] = j;
	pthread_mutex_unlock(&js->mu);
	if (rc < 0) {
		snprintf(why, whylen, "%s",
			 rc == -EALREADY ? "the same job is already running"
			 : rc == -EBUSY	 ? "too many jobs"
					 : strerror(-rc));
		pthread_mutex_destroy(&j->mu);
		free(j);
		return rc;
	}
	if (k == JOB_SCRUB)
		fs_log("scrub of volume %s started (job %u)", j->volume[0] ? j->volume : "(all)",
		       j->id);
	else
		fs_log("%s of disk %u started (job %u)", kind_name(k), disk, j->id);
	return (int)j->id;
}

int fs_jobs_init(struct fs *fs)
{
	struct fs_jobs *js = calloc(1, sizeof(*js));

	if (!js)
		return -ENOMEM;
	pthread_mutex_init(&js->mu, NULL);
	fs->jobs = js;
	return 0;
}

void fs_jobs_stop(struct fs *fs)
{
	struct fs_jobs *js = fs->jobs;

	if (!js)
		return;
	pthread_mutex_lock(&js->mu);
	for (uint32_t i = 0; i < js->n; i++)
		atomic_store(&js->j[i]->stop, 1);
	pthread_mutex_unlock(&js->mu);
	for (uint32_t i = 0; i < js->n; i++) {
		pthread_join(js->j[i]->thread, NULL);
		pthread_mutex_destroy(&js->j[i]->mu);
		free(js->j[i]);
	}
	pthread_mutex_destroy(&js->mu);
	free(js);
	fs->jobs = NULL;
}

int fs_jobs_busy(struct fs *fs, uint32_t disk)
{
	struct fs_jobs *js = fs->jobs;
	int busy = 0;

	if (!js)
		return 0;
	pthread_mutex_lock(&js->mu);
	for (uint32_t i = 0; i < js->n; i++)
		busy |= js->j[i]->kind != JOB_SCRUB && js->j[i]->disk == disk &&
			atomic_load(&js->j[i]->state) == JOB_RUNNING;
	pthread_mutex_unlock(&js->mu);
	return busy;
}

/* Several nodes: a returning disk goes back in service as REPAIRING under
 * the catalogue lock (a node that finds another did it already stops
 * there), each node's owned stores reopen it when they apply that, and the
 * resync is recorded in every volume's checkpoint; each owner resyncs what
 * its volume's dirty-region log says the disk missed (fs_jobs_tick), and
 * the last part marks the disk healthy, as for a repair. */
static void pickup_scrub(struct fs *fs, struct fs_volume *v);

static int cluster_resync_start(struct fs *fs, uint32_t disk)
{
	struct pool_catalog_lock l;
	char err[POOL_MSG_MAX * 2];
	int rc = fs_catalog_begin(fs, &l, err, sizeof(err));

	if (rc < 0) {
		fs_log("cannot resync disk %u now: %s", disk, err);
		return rc;
	}
	enum pool_disk_state st = disk < fs->pool->ndisks ? fs->pool->disk[disk].state : 0;
	if (st == POOL_DISK_FAILED || st == POOL_DISK_STALE || st == POOL_DISK_MISSING) {
		fs_health_rebaseline(fs, disk);
		rc = pool_disk_restore(fs->pool, disk, POOL_DISK_REPAIRING, err, sizeof(err));
	} else {
		rc = -EALREADY; /* another node took it back first */
	}
	fs_catalog_end(fs, &l);
	if (rc < 0) {
		if (rc != -EALREADY)
			fs_log("cannot resync disk %u: %s", disk, err);
		return rc;
	}
	fs_catalog_apply(fs);
	struct job tmpl = {.fs = fs, .kind = JOB_RESYNC, .disk = disk};
	uint32_t n = nvolumes(fs);
	/* a repair it left unfinished: rebuilt whole, every volume's part */
	for (uint32_t i = 0; i < n; i++)
		if (!fs_volume_gone(fs->vol[i]) && repair_unfinished(fs, fs->vol[i]->name, disk))
			tmpl.kind = JOB_REPAIR;
	for (uint32_t i = 0; i < n; i++)
		if (!fs_volume_gone(fs->vol[i]))
			ckpt_write(fs, fs->vol[i]->name, &tmpl, "0");
	for (uint32_t i = 0; i < n; i++)
		pickup_scrub(fs, fs->vol[i]);
	fs_log("disk %u back in service: each volume's owner %s", disk,
	       tmpl.kind == JOB_REPAIR ? "rebuilds it whole (its repair had not finished)"
				       : "resyncs what it missed");
	return 0;
}

int fs_jobs_start_resync(struct fs *fs, uint32_t disk)
{
	char why[POOL_MSG_MAX];

	if (fs->node)
		return cluster_resync_start(fs, disk);
	int rc = job_start(fs, JOB_RESYNC, disk, NULL, 0, 0, why, sizeof(why));

	if (rc < 0 && rc != -EALREADY)
		fs_log("cannot resync disk %u: %s", disk, why);
	return rc;
}

void fs_jobs_disk_failed(struct fs *fs, uint32_t disk)
{
	struct fs_jobs *js = fs->jobs;

	if (!js)
		return;
	pthread_mutex_lock(&js->mu);
	for (uint32_t i = 0; i < js->n; i++)
		if (js->j[i]->kind != JOB_SCRUB && js->j[i]->disk == disk)
			atomic_store(&js->j[i]->stop, 1);
	pthread_mutex_unlock(&js->mu);
}

/* Repairs of REPAIRING disks; scrubs whose checkpoint says running. */
void fs_jobs_resume(struct fs *fs)
{
	char why[POOL_MSG_MAX], kind[16];
	uint32_t n = nvolumes(fs), disk;
	uint64_t ino;
	double rate, repair_rate = 0;
	int done;

	if (fs->opt.read_only)
		return;
	for (uint32_t i = 0; i < 2 * n; i++) {
		struct fs_volume *v = fs->vol[i / 2];
		if (ckpt_read(fs, v->name, i % 2 ? SLOT_SCRUB : SLOT_JOB, kind, &disk, &ino, &done,
			      &rate) < 0)
			continue;
		if (!strcmp(kind, "repair"))
			repair_rate = rate;
		/* several nodes: fs_jobs_tick; a scrub line in the `job` slot
		 * is from before the slots were split */
		if (strcmp(kind, "scrub") || done || fs->node)
			continue;
		fs_log("volume %s: resuming the scrub after inode %" PRIu64, v->name, ino);
		job_start(fs, JOB_SCRUB, 0, v->name, rate, ino, why, sizeof(why));
	}
	for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
		if (fs->pool->disk[d].state == POOL_DISK_REPAIRING)
			job_start(fs, JOB_REPAIR, d, NULL, repair_rate, 0, why, sizeof(why));
		if (fs->pool->disk[d].state == POOL_DISK_RETIRED)
			job_start(fs, JOB_RETIRE, d, NULL, 0, 0, why, sizeof(why));
	}
}

static int drl_sync(void *arg)
{
	return pool_store_syncfs(arg);
}

/* Several nodes: a scrub whose checkpoint says running goes on on the
 * volume's owner, whoever asked for it and wherever it ran before. */
static void pickup_slot(struct fs *fs, struct fs_volume *v, enum slot s);

/* A repair part recorded done whose volume moved here since: this node's
 * store opened the disk as still rebuilding (the pool says repairing), so
 * the second pass (the disk live, what writes skipped) is redone here. */
static bool part_rebuilding(struct fs_volume *v, uint32_t disk)
{
	if (!fs_vol_enter_local(v))
		return false;
	bool r = pool_store_disk_get(v->store, disk) == POOL_STORE_DISK_REBUILDING;
	fs_vol_leave(v);
	return r;
}

static void pickup_scrub(struct fs *fs, struct fs_volume *v)
{
	if (fs_volume_gone(v) || !fs_vol_enter_local(v))
		return;
	fs_vol_leave(v);
	pickup_slot(fs, v, SLOT_JOB);
	pickup_slot(fs, v, SLOT_SCRUB);
}

static void pickup_slot(struct fs *fs, struct fs_volume *v, enum slot s)
{
	char kind[16], why[POOL_MSG_MAX];
	uint32_t disk;
	uint64_t ino;
	double rate;
	int done;

	if (ckpt_read(fs, v->name, s, kind, &disk, &ino, &done, &rate) < 0)
		return;
	bool scrub = !strcmp(kind, "scrub"), retire = !strcmp(kind, "retire");
	bool repair = !strcmp(kind, "repair") || !strcmp(kind, "resync") || retire;
	if (!(scrub || repair) || (scrub && done) || (retire && done))
		return;
	if (repair && done && !part_rebuilding(v, disk))
		return; /* done: waits for the others (the finish) */
	/* a repair only once this node applied the replacement to its stores
	 * (fs/catalog.c): else it would rebuild onto the old directory */
	uint32_t need = retire ? POOL_MEMBER_RETIRED : POOL_MEMBER_REPAIRING;
	if (repair && (disk >= fs->cat_nmem || fs->cat_mstate[disk] != need))
		return;
	enum job_kind k = scrub			    ? JOB_SCRUB
			  : retire		    ? JOB_RETIRE
			  : !strcmp(kind, "repair") ? JOB_REPAIR
						    : JOB_RESYNC;
	int rc = job_start(fs, k, scrub ? 0 : disk, v->name, rate, ino, why, sizeof(why));
	if (rc > 0)
		fs_log("volume %s: %s runs here (job %d) after inode %" PRIu64 " (its checkpoint)",
		       v->name, kind, rc, ino);
	else if (rc != -EALREADY)
		fs_log("volume %s: cannot resume its %s here: %s", v->name, kind, why);
}

/* Several nodes: a repaired disk whose every volume's part is done but
 * which is still repairing (the last part's node failed to commit, or
 * died in between) is committed healthy here. */
static void finish_pending(struct fs *fs)
{
	uint32_t n = nvolumes(fs);

	for (uint32_t d = 0; d < fs->cat_nmem && d < POOL_MAX_DISKS; d++) {
		struct rec r;
		if (fs->cat_mstate[d] != POOL_MEMBER_REPAIRING)
			continue;
		uint32_t i = 0;
		while (i < n && fs_volume_gone(fs->vol[i]))
			i++;
		if (i == n || rec_read(fs, fs->vol[i]->name, SLOT_JOB, &r) < 0 || r.disk != d ||
		    (strcmp(r.kind, "repair") && strcmp(r.kind, "resync")))
			continue;
		struct job tmpl = {.fs = fs,
				   .kind = strcmp(r.kind, "repair") ? JOB_RESYNC : JOB_REPAIR,
				   .disk = d};
		cluster_repair_finish(&tmpl);
	}
}

void fs_jobs_tick(struct fs *fs)
{
	uint32_t n = nvolumes(fs);

	for (uint32_t i = 0; fs->node && !fs->opt.read_only && i < n; i++)
		pickup_scrub(fs, fs->vol[i]);
	if (fs->node && !fs->opt.read_only)
		finish_pending(fs);

	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		if (fs->opt.read_only || !fs_vol_hold_local(v)) /* owned volumes only */
			continue;
		if (v->drl)
			pool_drl_clean(v->drl, drl_sync, v->store);
		if (v->journal) {
			/* A quarter full: start a new epoch now, so writers
			 * rarely wait for one and a replay stays short. */
			struct pool_journal_stats js;
			pool_journal_stats(v->journal, &js);
			if (js.used >= js.size / 4)
				pool_journal_checkpoint(v->journal, js.size / 4);
			/* a copy out of service, or a disk back: copies moved */
			fs_volume_journal_place(fs, v);
		}
		fs_vol_leave(v);
	}
}

/* ---- unclean-shutdown resync at mount ---------------------------------------- */

/* Every disk healthy: nothing is missed anywhere any more. */
static int all_healthy(struct fs *fs, int except)
{
	for (uint32_t d = 0; d < fs->pool->ndisks; d++)
		if ((int)d != except && fs->pool->disk[d].state != POOL_DISK_HEALTHY &&
		    fs->pool->disk[d].state != POOL_DISK_RETIRED)
			return 0;
	return 1;
}

static int resync_file(void *arg, const struct pool_inode *in)
{
	struct fs_volume *v = arg;
	struct pool_file_map map;
	struct pool_check_stats st = {0};

	fs_node_keepalive(v->fs); /* a takeover's resync: the node's other leases */
	map_of(in, &map);
	uint64_t n = pool_store_stripes(v->store, in->size);
	uint64_t ext = pool_store_stripes_on_disk(v->store, &map);
	return pool_store_check(v->store, &map, 0, n > ext ? n : ext,
				POOL_CHECK_REPAIR | POOL_CHECK_RESYNC, 0, &st);
}

/* The log overflowed: nothing is known, resync every file. */
static int resync_all(struct fs *fs, struct fs_volume *v)
{
	fs_log("volume %s: the dirty-region log had overflowed: resyncing every file", v->name);
	int rc = pool_meta_files(v->meta, 0, resync_file, v);
	if (rc == 0 && all_healthy(fs, -1))
		pool_drl_clear_overflow(v->drl);
	return rc;
}

/* A resync at mount works with the disks in service; disks holding a
 * position of file id that are out (away at this mount, failed) keep what
 * they held: a mirror copy a write torn by the crash did not reach, a
 * parity column the replayed journal could not write.  The log must say
 * they missed the region before its dirty mark goes, or they would come
 * back serving it, with checksums that match.  Not on a parity volume
 * without journal: its torn stripes' parity is what is wrong there, and
 * rebuilding the returning column from it would spread the write hole
 * into blocks no write touched.  0 or -errno. */
static int mark_missed_absent(struct fs *fs, struct fs_volume *v, uint64_t id, uint64_t region)
{
	struct pool_inode in;
	uint64_t absent = 0;

	if (v->geom.kind != LAYOUT_MIRROR && !(v->geom.kind == LAYOUT_PARITY && v->journal))
		return 0;
	int rc = pool_meta_get(v->meta, id, &in);
	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;
	for (uint32_t p = 0; p < in.npos; p++)
		if (in.disk[p] < fs->pool->ndisks && !pool_disk_in_service(fs->pool, in.disk[p]))
			absent |= 1ull << in.disk[p];
	if (!absent)
		return 0;
	rc = pool_drl_begin(v->drl, id, region * POOL_DRL_REGION, POOL_DRL_REGION, absent);
	if (rc == 0)
		pool_drl_end(v->drl, id, region * POOL_DRL_REGION, POOL_DRL_REGION);
	return rc;
}

int fs_volume_resync(struct fs *fs, struct fs_volume *v)
{
	struct pool_drl_entry *e;
	uint64_t bytes = 0, inservice = 0;
	size_t n, dirty = 0;
	int rc;

	if (!v->drl)
		return 0;
	for (uint32_t d = 0; d < fs->pool->ndisks; d++)
		if (fs->pool->disk[d].state == POOL_DISK_HEALTHY)
			inservice |= 1ull << d;
	rc = pool_drl_list(v->drl, &e, &n);
	for (size_t i = 0; rc >= 0 && i < n; i++) {
		/* Healthy disks the log says missed writes (the record of their
		 * failure never reached the superblock): rebuild them there. */
		uint64_t t = e[i].missed & inservice;
		if (!e[i].dirty && !t)
			continue;
		dirty++;
		fs_node_keepalive(fs); /* a takeover's resync: the node's other leases */
		rc = do_region(NULL, v, e[i].id, e[i].region, POOL_CHECK_REPAIR | POOL_CHECK_RESYNC,
			       t, &bytes);
		if (rc == 1) { /* file gone */
			rc = pool_drl_clear_dirty(v->drl, e[i].id, e[i].region);
			for (uint32_t d = 0; rc == 0 && d < 64; d++)
				if (e[i].missed & (1ull << d))
					rc = pool_drl_clear_missed(v->drl, e[i].id, e[i].region, d);
			continue;
		}
		if (rc == 0 && e[i].dirty)
			rc = mark_missed_absent(fs, v, e[i].id, e[i].region);
		if (rc == 0)
			rc = pool_drl_clear_dirty(v->drl, e[i].id, e[i].region);
		for (uint32_t d = 0; rc == 0 && d < 64; d++)
			if (t & (1ull << d))
				rc = pool_drl_clear_missed(v->drl, e[i].id, e[i].region, d);
	}
	free(e);
	if (rc < 0)
		return rc;
	if (dirty)
		fs_log("volume %s: unclean shutdown: resynced %zu dirty region(s), %" PRIu64
		       " bytes of file data",
		       v->name, dirty, bytes);
	if (pool_drl_overflowed(v->drl))
		return resync_all(fs, v);
	return 0;
}

/* ---- control requests ------------------------------------------------------------- */

static char *reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *reply(const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

static int parse_rate(const char *s, double *rate)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < 0 || v > 1e6)
		return -EINVAL;
	*rate = v * 1e6; /* MB/s */
	return 0;
}

/* Several nodes: the replacement is committed under the catalogue lock
 * (every node's owned stores reopen the disk when they apply it), and the
 * repair recorded in each volume's checkpoint; each volume's owner runs
 * its part (fs_jobs_tick), the last one to finish marks the disk healthy.
 * One line per volume as for a scrub. */
static char *req_replace_cluster(struct fs *fs, const char *old, const char *path, double rate)
{
	struct pool_catalog_lock l;
	char err[POOL_MSG_MAX * 2], out[8192] = "", why[POOL_MSG_MAX];
	uint32_t idx = 0;
	size_t len = 0;
	int rc = fs_catalog_begin(fs, &l, err, sizeof(err));

	if (rc < 0)
		return reply("error: %s\n", err);
	rc = pool_disk_find(fs->pool, old, &idx);
	if (rc < 0)
		snprintf(err, sizeof(err), "%s: not a disk of the pool", old);
	else if (fs->pool->disk[idx].state == POOL_DISK_REPAIRING)
		rc = -EBUSY, snprintf(err, sizeof(err), "disk %u is being repaired", idx);
	else
		rc = pool_disk_replace(fs->pool, idx, path, err, sizeof(err));
	if (rc == 0)
		fs_health_rebaseline(fs, idx);
	fs_catalog_end(fs, &l);
	if (rc < 0)
		return reply("error: %s\n", err);
	fs_catalog_apply(fs); /* the stores of volumes owned here */
	struct job tmpl = {.fs = fs, .kind = JOB_REPAIR, .disk = idx, .rate = rate};
	uint32_t n = nvolumes(fs);
	for (uint32_t i = 0; i < n; i++)
		if (!fs_volume_gone(fs->vol[i]))
			ckpt_write(fs, fs->vol[i]->name, &tmpl, "0");
	for (uint32_t i = 0; i < n && len < sizeof(out) - 256; i++) {
		struct fs_volume *v = fs->vol[i];
		char owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
		uint64_t epoch;
		bool valid;
		if (fs_volume_gone(v))
			continue;
		rc = -EREMCHG;
		if (fs_vol_enter_local(v)) {
			fs_vol_leave(v);
			rc = job_start(fs, JOB_REPAIR, idx, v->name, rate, 0, why, sizeof(why));
		}
		fs_node_owner(v, owner, addr, &epoch, &valid);
		if (rc > 0)
			len += (size_t)snprintf(out + len, sizeof(out) - len, "%d\n", rc);
		else
			len += (size_t)snprintf(out + len, sizeof(out) - len, "on %s %s\n", v->name,
						valid ? owner : "(its next owner)");
		len += (size_t)snprintf(out + len, sizeof(out) - len, "part job %s\n", v->name);
	}
	fs_log("disk %u replaced by %s: each volume's owner repairs its part", idx, path);
	return reply("ok\n%s", out);
}

/* "disk-replace OLD NEW [RATE]" */
static char *req_replace(struct fs *fs, int argc, char **argv)
{
	double rate = 0;

	if (argc > 3 && parse_rate(argv[3], &rate) < 0)
		return reply("error: bad rate '%.32s'\n", argv[3]);
	if (fs->node)
		return req_replace_cluster(fs, argv[1], argv[2], rate);
	char err[POOL_MSG_MAX * 2], path[POOL_PATH_MAX];
	uint32_t idx;
	int rc;

	pthread_rwlock_wrlock(&fs->pool_lock);
	rc = pool_disk_find(fs->pool, argv[1], &idx);
	if (rc < 0)
		snprintf(err, sizeof(err), "%s: not a disk of the pool", argv[1]);
	else if (fs_jobs_busy(fs, idx))
		rc = -EBUSY, snprintf(err, sizeof(err), "disk %u is being rebuilt", idx);
	else
		rc = pool_disk_replace(fs->pool, idx, argv[2], err, sizeof(err));
	if (rc == 0) {
		snprintf(path, sizeof(path), "%s", fs->pool->disk[idx].path);
		fs_health_rebaseline(fs, idx); /* before the watcher sees the new path */
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	if (rc < 0)
		return reply("error: %s\n", err);
	uint32_t n = nvolumes(fs);
	for (uint32_t i = 0; i < n && rc == 0; i++)
		rc = pool_store_disk_replace(fs->vol[i]->store, idx, path, err, sizeof(err));
	if (rc < 0)
		return reply("error: %s\n", err);
	for (uint32_t i = 0; i < n; i++)
		ckpt_remove(fs, fs->vol[i]->name, SLOT_JOB);
	rc = job_start(fs, JOB_REPAIR, idx, NULL, rate, 0, err, sizeof(err));
	if (rc < 0)
		return reply("error: disk %u replaced, but its repair did not start: %s\n", idx,
			     err);
	return reply("ok\n%d\n", rc);
}

/* "disk-add PATH [journal]": a journal disk with the last word (usage
 * journal: never placed on; the parity journals take it at their next
 * open). */
/* Several nodes: committed under the catalogue lock; every node's owned
 * stores take the new disk when they apply the catalogue (fs/catalog.c),
 * this node's at once. */
static char *req_add_cluster(struct fs *fs, const char *dir, enum pool_member_usage usage)
{
	struct pool_catalog_lock l;
	char err[POOL_MSG_MAX * 2];
	int rc = fs_catalog_begin(fs, &l, err, sizeof(err));

	if (rc < 0)
		return reply("error: %s\n", err);
	rc = pool_disk_add_usage(fs->pool, dir, usage, err, sizeof(err));
	uint32_t idx = fs->pool->ndisks - 1;
	if (rc == 0)
		fs_health_rebaseline(fs, idx);
	fs_catalog_end(fs, &l);
	if (rc < 0)
		return reply("error: %s\n", err);
	fs_catalog_apply(fs);
	if (usage == POOL_USAGE_JOURNAL)
		fs_log("disk %u added as a journal disk (%s): parity journals move there at "
		       "each volume's next open",
		       idx, dir);
	else
		fs_log("disk %u added (%s): every node's volumes place data on it from their "
		       "next heartbeat",
		       idx, dir);
	return reply("ok\n%u\n", idx);
}

static char *req_add(struct fs *fs, int argc, char **argv)
{
	char err[POOL_MSG_MAX * 2], path[POOL_PATH_MAX];
	enum pool_member_usage usage = POOL_USAGE_DATA;
	uint32_t idx = 0;
	int rc;

	if (argc == 3 && !strcmp(argv[2], "journal"))
		usage = POOL_USAGE_JOURNAL;
	else if (argc == 3)
		return reply("error: unknown disk usage '%.32s'\n", argv[2]);
	if (fs->node)
		return req_add_cluster(fs, argv[1], usage);
	pthread_rwlock_wrlock(&fs->pool_lock);
	rc = pool_disk_add_usage(fs->pool, argv[1], usage, err, sizeof(err));
	if (rc == 0) {
		idx = fs->pool->ndisks - 1;
		snprintf(path, sizeof(path), "%s", fs->pool->disk[idx].path);
		fs_health_rebaseline(fs, idx);
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	if (rc < 0)
		return reply("error: %s\n", err);
	uint32_t n = nvolumes(fs);
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		rc = pool_store_disk_replace(fs->vol[i]->store, idx, path, err, sizeof(err));
		pool_store_disk_set(fs->vol[i]->store, idx, POOL_STORE_DISK_OK);
	}
	return rc < 0 ? reply("error: %s\n", err) : reply("ok\n%u\n", idx);
}

/* "disk-retire DISK [RATE]" */
static char *req_retire(struct fs *fs, int argc, char **argv)
{
	char err[POOL_MSG_MAX * 2];
	double rate = 0;
	uint32_t idx;
	int rc;

	if (argc > 2 && parse_rate(argv[2], &rate) < 0)
		return reply("error: bad rate '%.32s'\n", argv[2]);
	/* several nodes: under the catalogue lock, then a part per volume on
	 * its owner, recorded in the checkpoints like a repair */
	struct pool_catalog_lock l;
	if (fs->node && fs_catalog_begin(fs, &l, err, sizeof(err)) < 0)
		return reply("error: %s\n", err);
	if (!fs->node)
		pthread_rwlock_wrlock(&fs->pool_lock);
	rc = pool_disk_find(fs->pool, argv[1], &idx);
	if (rc < 0)
		put(err, sizeof(err), "%s: not a disk of the pool", argv[1]);
	else if (fs->pool->disk[idx].state != POOL_DISK_HEALTHY &&
		 fs->pool->disk[idx].state != POOL_DISK_RETIRED)
		rc = -EIO, put(err, sizeof(err),
			       "disk %u is %s: only a disk that reads can be "
			       "retired (replace a failed one)",
			       idx, pool_disk_state_name(fs->pool->disk[idx].state));
	else
		rc = pool_disk_restore(fs->pool, idx, POOL_DISK_RETIRED, err, sizeof(err));
	if (fs->node)
		fs_catalog_end(fs, &l);
	else
		pthread_rwlock_unlock(&fs->pool_lock);
	if (rc < 0)
		return reply("error: %s\n", err);
	if (fs->node) {
		fs_catalog_apply(fs);
		struct job tmpl = {.fs = fs, .kind = JOB_RETIRE, .disk = idx, .rate = rate};
		uint32_t n = nvolumes(fs);
		for (uint32_t i = 0; i < n; i++)
			if (!fs_volume_gone(fs->vol[i]))
				ckpt_write(fs, fs->vol[i]->name, &tmpl, "0");
		char out[4096] = "";
		size_t len = 0;
		for (uint32_t i = 0; i < n && len < sizeof(out) - 256; i++) {
			char owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
			uint64_t epoch;
			bool valid;
			if (fs_volume_gone(fs->vol[i]))
				continue;
			pickup_scrub(fs, fs->vol[i]);
			fs_node_owner(fs->vol[i], owner, addr, &epoch, &valid);
			len += (size_t)snprintf(
			    out + len, sizeof(out) - len, "on %s %s\npart job %s\n",
			    fs->vol[i]->name, valid ? owner : "(its next owner)", fs->vol[i]->name);
		}
		return reply("ok\n%s", out);
	}
	rc = job_start(fs, JOB_RETIRE, idx, NULL, rate, 0, err, sizeof(err));
	return rc < 0 ? reply("error: %s\n", err) : reply("ok\n%d\n", rc);
}

/* Several nodes: record the scrub in each volume's checkpoint (inode 0),
 * start the parts of volumes owned here; the owners of the others start
 * theirs at their next health tick.  One line per volume: the job id if
 * it runs here, else "on VOLUME NODE". */
static char *req_scrub_cluster(struct fs *fs, const char *vol, double rate)
{
	char out[8192] = "", owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX], why[POOL_MSG_MAX];
	struct job tmpl = {.fs = fs, .kind = JOB_SCRUB, .rate = rate};
	uint32_t n = nvolumes(fs);
	size_t len = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		uint64_t epoch;
		bool valid;
		if (fs_volume_gone(v) || (vol && strcmp(vol, v->name)))
			continue;
		ckpt_write(fs, v->name, &tmpl, "0");
		int rc = -EREMCHG;
		if (fs_vol_enter_local(v)) {
			fs_vol_leave(v);
			rc = job_start(fs, JOB_SCRUB, 0, v->name, rate, 0, why, sizeof(why));
		}
		if (rc > 0) {
			len += (size_t)snprintf(out + len, sizeof(out) - len, "%d\n", rc);
		} else {
			fs_node_owner(v, owner, addr, &epoch, &valid);
			len += (size_t)snprintf(out + len, sizeof(out) - len, "on %s %s\n", v->name,
						valid ? owner : "(its next owner)");
		}
		len += (size_t)snprintf(out + len, sizeof(out) - len, "part scrub %s\n", v->name);
		if (len >= sizeof(out) - 256)
			break;
	}
	fs_log("scrub of %s asked for here: recorded in the checkpoints; each volume's owner runs "
	       "its part",
	       vol ? vol : "every volume");
	return reply("ok\n%s", out);
}

/* Several nodes: the repairs of replaced or returning disks run by
 * themselves (fs_jobs_tick); this asks again for the parts that failed
 * (their record says so) while their disk still needs them, and names
 * every unfinished part, so `spacectl repair --wait` follows them. */
static char *req_repair_cluster(struct fs *fs, const char *vol)
{
	char out[8192] = "", owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
	uint32_t n = nvolumes(fs);
	size_t len = 0;

	for (uint32_t i = 0; i < n && len < sizeof(out) - 256; i++) {
		struct fs_volume *v = fs->vol[i];
		struct rec r;
		uint64_t epoch;
		bool valid;
		if (fs_volume_gone(v) || (vol && strcmp(vol, v->name)) ||
		    rec_read(fs, v->name, SLOT_JOB, &r) < 0 || !strcmp(r.kind, "retire"))
			continue;
		bool again = !strcmp(r.at, "end") && !strcmp(r.state, "failed") &&
			     r.disk < fs->cat_nmem &&
			     fs->cat_mstate[r.disk] == POOL_MEMBER_REPAIRING;
		if (!again && !strcmp(r.at, "end"))
			continue; /* over */
		if (again) {
			struct job tmpl = {.fs = fs,
					   .kind =
					       strcmp(r.kind, "resync") ? JOB_REPAIR : JOB_RESYNC,
					   .disk = r.disk,
					   .rate = r.rate};
			ckpt_write(fs, v->name, &tmpl, "0");
			fs_log("volume %s: its %s part of disk %u failed before (%s); asked again",
			       v->name, r.kind, r.disk, r.msg);
		}
		fs_node_owner(v, owner, addr, &epoch, &valid);
		len += (size_t)snprintf(out + len, sizeof(out) - len, "on %s %s\npart job %s\n",
					v->name, valid ? owner : "(its next owner)", v->name);
	}
	for (uint32_t i = 0; i < n; i++)
		pickup_scrub(fs, fs->vol[i]);
	return reply("ok\n%s", out);
}

/* "repair VOLUME|- RATE" and "scrub VOLUME|- RATE" */
static char *req_job(struct fs *fs, int argc, char **argv, enum job_kind k)
{
	char err[POOL_MSG_MAX];
	const char *vol = argc > 1 && strcmp(argv[1], "-") ? argv[1] : NULL;
	double rate = 0;
	int started = 0, rc = 0;

	if (argc > 2 && parse_rate(argv[2], &rate) < 0)
		return reply("error: bad rate '%.32s'\n", argv[2]);
	if (vol && !fs_volume_by_name(fs, vol))
		return reply("error: no volume '%.64s'\n", vol);
	if (k == JOB_SCRUB && fs->node)
		return req_scrub_cluster(fs, vol, rate);
	if (fs->node)
		return req_repair_cluster(fs, vol);
	if (k == JOB_SCRUB) {
		rc = job_start(fs, k, 0, vol, rate, 0, err, sizeof(err));
		return rc < 0 ? reply("error: %s\n", err) : reply("ok\n%d\n", rc);
	}
	char ids[256] = "";
	for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
		enum pool_disk_state s = fs->pool->disk[d].state;
		if (s != POOL_DISK_REPAIRING)
			continue;
		rc = job_start(fs, JOB_REPAIR, d, vol, rate, 0, err, sizeof(err));
		if (rc > 0 || rc == -EALREADY) {
			size_t off = strlen(ids);
			snprintf(ids + off, sizeof(ids) - off, "%d\n", rc > 0 ? rc : 0);
			started++;
		}
	}
	if (!started) {
		for (uint32_t d = 0; d < fs->pool->ndisks; d++)
			if (fs->pool->disk[d].state == POOL_DISK_FAILED ||
			    fs->pool->disk[d].state == POOL_DISK_MISSING)
				return reply("error: disk %u is %s with nothing to rebuild onto; "
					     "replace it first (spacectl disk replace)\n",
					     d, pool_disk_state_name(fs->pool->disk[d].state));
		return reply("ok\n");
	}
	return reply("ok\n%s", ids);
}

/* "jobs": one line per job, tab-separated (pool/ctl.h), then "bad" lines. */
static char *req_jobs(struct fs *fs)
{
	char *out = fs_jobs_text(fs);
	char *r = out ? reply("ok\n%s", out) : NULL;

	free(out);
	return r;
}

/* One row of the jobs list, whichever node runs it. */
struct row {
	uint32_t id, disk;
	const char *kind, *state, *volume, *node;
	uint64_t done, total, blocks, bad, repaired, unrec, rebuilt;
	int64_t ms;
	const char *msg;
	const char *ckpt; /* merges and backups: their checkpoint */
	bool here;
};

struct out {
	char *s;
	size_t cap, len;
	bool json;
	uint32_t nrows;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...)
{
	va_list ap;

	if (o->len >= o->cap - 1)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(o->s + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	o->len = n < 0 ? o->len : o->len + (size_t)n < o->cap ? o->len + (size_t)n : o->cap - 1;
}

/* A message as a JSON string body: no quote, backslash or control byte. */
static void json_safe(char *dst, size_t size, const char *src)
{
	size_t i = 0;

	for (; src[i] && i + 1 < size; i++)
		dst[i] =
		    src[i] == '"' || src[i] == '\\' || (unsigned char)src[i] < 0x20 ? ' ' : src[i];
	dst[i] = '\0';
}

static void put_row(struct out *o, const struct row *r)
{
	if (o->len > o->cap - 4096)
		return;
	if (o->json) {
		char msg[POOL_MSG_MAX];
		json_safe(msg, sizeof(msg), r->msg);
		outf(
		    o,
		    "%s{\"id\":%u,\"kind\":\"%s\",\"state\":\"%s\",\"disk\":%u,\"volume\":\"%s\","
		    "\"done\":%" PRIu64 ",\"total\":%" PRIu64 ",\"node\":\"%s\",\"blocks\":%" PRIu64
		    ",\"bad\":%" PRIu64 ",\"repaired\":%" PRIu64 ",\"unrecoverable\":%" PRIu64
		    ",\"rebuilt_bytes\":%" PRIu64 ",\"elapsed_ms\":%" PRId64 ",\"message\":\"%s\"}",
		    o->nrows ? "," : "", r->id, r->kind, r->state, r->disk, r->volume, r->done,
		    r->total, r->node, r->blocks, r->bad, r->repaired, r->unrec, r->rebuilt, r->ms,
		    msg);
		if (r->ckpt) { /* as fs_ckpt_jobs' rows: before the closing brace */
			char ck[96];
			json_safe(ck, sizeof(ck), r->ckpt);
			o->len--;
			outf(o, ",\"checkpoint\":\"%s\"}", ck);
		}
	} else {
		/* another node's row: its message is "node NAME[: why]" */
		outf(o,
		     "job\t%u\t%s\t%s\t%u\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
		     "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRId64 "\t%s%s%s%s\n",
		     r->id, r->kind, r->state, r->disk, r->volume, r->done, r->total, r->blocks,
		     r->bad, r->repaired, r->unrec, r->rebuilt, r->ms, r->here ? "" : "node ",
		     r->here ? "" : r->node, !r->here && r->msg[0] ? ": " : "", r->msg);
	}
	o->nrows++;
}

static void job_row(struct out *o, struct job *j, const char *node)
{
	int64_t end = atomic_load(&j->state) == JOB_RUNNING ? fs_mono_ns() : j->end_ns;

	pthread_mutex_lock(&j->mu);
	struct row r = {.id = j->id,
			.disk = j->disk,
			.kind = kind_name(j->kind),
			.state = state_name(atomic_load(&j->state)),
			.volume = j->volume[0] ? j->volume : "-",
			.node = node,
			.done = atomic_load(&j->done),
			.total = atomic_load(&j->total),
			.blocks = j->st.blocks,
			.bad = j->st.bad,
			.repaired = j->st.repaired,
			.unrec = j->st.unrecoverable,
			.rebuilt = j->st.rebuilt_bytes,
			.ms = (end - j->start_ns) / 1000000,
			.msg = j->msg,
			.here = true};
	put_row(o, &r);
	for (uint32_t b = 0; !o->json && b < j->nbad; b++)
		outf(o, "bad\t%u\t%s\n", j->id, j->bad[b]);
	pthread_mutex_unlock(&j->mu);
}

/* This node's running job of a volume's slot, or NULL (js->mu held). */
static struct job *running_here(struct fs_jobs *js, const char *vol, enum slot s)
{
	for (uint32_t i = 0; i < js->n; i++)
		if (!strcmp(js->j[i]->volume, vol) && slot_of(js->j[i]->kind) == s &&
		    atomic_load(&js->j[i]->state) == JOB_RUNNING)
			return js->j[i];
	return NULL;
}

/* Several nodes: every job of the pool, one row per volume and slot, from
 * the records on the volume's metadata disks (the same on every node), or
 * live when this node runs it.  A part that stopped here (the volume
 * moved) is its record's row. */
static void cluster_rows(struct fs *fs, struct out *o)
{
	struct fs_jobs *js = fs->jobs;
	uint32_t n = nvolumes(fs);

	for (uint32_t i = 0; i < 2 * n; i++) {
		struct fs_volume *v = fs->vol[i / 2];
		enum slot s = i % 2 ? SLOT_SCRUB : SLOT_JOB;
		struct rec r;
		if (fs_volume_gone(v))
			continue;
		pthread_mutex_lock(&js->mu);
		struct job *j = running_here(js, v->name, s);
		if (j)
			job_row(o, j, fs->opt.node ? fs->opt.node : "-");
		pthread_mutex_unlock(&js->mu);
		if (j || rec_read(fs, v->name, s, &r) < 0)
			continue;
		bool over = !strcmp(r.at, "end") || !strcmp(r.at, "done");
		struct row w = {.disk = r.disk,
				.kind = r.kind,
				.state = over ? r.state : "running",
				.volume = v->name,
				.node = r.node,
				.done = r.done,
				.total = r.total,
				.repaired = r.repaired,
				.unrec = r.unrec,
				.ms = r.ms,
				.msg = r.msg};
		put_row(o, &w);
	}
}

/* The last merge of every volume once it is over, from its record (the
 * same on every node); running merges are fs_ckpt_jobs' live rows. */
static void merge_rows(struct fs *fs, struct out *o)
{
	uint32_t n = nvolumes(fs);

	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		struct rec r;
		char ck[72] = "";
		if (fs_volume_gone(v) || rec_read(fs, v->name, SLOT_MERGE, &r) < 0 ||
		    strcmp(r.at, "end"))
			continue;
		sscanf(r.msg, "checkpoint %71[^: ]", ck);
		struct row w = {.kind = r.kind,
				.state = r.state,
				.volume = v->name,
				.node = r.node,
				.done = r.done,
				.total = r.total,
				.ms = r.ms,
				.msg = r.msg,
				.ckpt = ck,
				.here = !fs->node};
		put_row(o, &w);
	}
}

static char *list_jobs(struct fs *fs, bool json)
{
	struct fs_jobs *js = fs->jobs;
	struct out o = {.cap = 1 << 16, .json = json};

	o.s = malloc(o.cap);
	if (!o.s)
		return NULL;
	o.s[0] = '\0';
	if (json)
		outf(&o, "[");
	if (fs->node) {
		cluster_rows(fs, &o);
	} else {
		pthread_mutex_lock(&js->mu);
		for (uint32_t i = 0; i < js->n; i++)
			job_row(&o, js->j[i], fs->opt.node ? fs->opt.node : "-");
		pthread_mutex_unlock(&js->mu);
	}
	merge_rows(fs, &o);
	fs_ckpt_jobs(fs, json, o.s, o.cap, &o.len); /* running merges and backups */
	if (json)
		outf(&o, "]");
	return o.s;
}

char *fs_jobs_text(struct fs *fs)
{
	return list_jobs(fs, false);
}

char *fs_jobs_json(struct fs *fs)
{
	return list_jobs(fs, true);
}

int fs_jobs_handles(const char *r)
{
	return !strcmp(r, "disk-replace") || !strcmp(r, "disk-add") || !strcmp(r, "disk-retire") ||
	       !strcmp(r, "repair") || !strcmp(r, "scrub") || !strcmp(r, "jobs");
}

char *fs_jobs_request(struct fs *fs, int argc, char **argv)
{
	if (!fs->jobs)
		return reply("error: the daemon is not running jobs (starting or stopping)\n");
	if (fs->opt.read_only && strcmp(argv[0], "jobs"))
		return reply("error: the pool is mounted read-only\n");
	if (!strcmp(argv[0], "disk-replace") && (argc == 3 || argc == 4))
		return req_replace(fs, argc, argv);
	if (!strcmp(argv[0], "disk-add") && (argc == 2 || argc == 3))
		return req_add(fs, argc, argv);
	if (!strcmp(argv[0], "disk-retire") && (argc == 2 || argc == 3))
		return req_retire(fs, argc, argv);
	if (!strcmp(argv[0], "repair") && argc <= 3)
		return req_job(fs, argc, argv, JOB_REPAIR);
	if (!strcmp(argv[0], "scrub") && argc <= 3)
		return req_job(fs, argc, argv, JOB_SCRUB);
	if (!strcmp(argv[0], "jobs") && argc == 1)
		return req_jobs(fs);
	return reply("error: malformed '%.32s' request\n", argv[0]);
}
