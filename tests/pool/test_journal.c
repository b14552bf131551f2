/*
 * test_journal.c -- the parity journal (pool/journal.c) and the fault
 * spec parser (pool/fault.c).
 *
 * The journal is only worth its cost if what it replays is exactly what
 * was logged and acknowledged, and if nothing damaged or stale is ever
 * replayed.  So: records logged and not checkpointed come back in order,
 * byte for byte, after a reopen (as after a crash); a clean close leaves
 * nothing to replay; a record damaged in one copy is taken from the
 * other, damaged in both it is skipped (counted) and the later records
 * still come back; a torn tail is not replayed; a full journal
 * checkpoints (the sync callback runs first) and the old epoch is never
 * replayed again; a barrier on a journaled stripe checkpoints and on
 * another stripe does not; concurrent writers share commits; an append
 * the fence refuses (the node lost the volume) never reaches the copies;
 * a held journal (write-back records not in place) never checkpoints;
 * copies moved while open (pool_journal_set_copies) wait for the records
 * in flight, start the new epoch on the new copy, remove the copy no
 * longer needed only if it was in service, and a crash after the move
 * replays from the new copies, also from the new one alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/fault.h"
#include "pool/journal.h"

#define B POOL_JOURNAL_BLOCK

struct env {
	char root[64];
	char path[2][128];
	const char *paths[2];
	int syncs;
	/* what replay applied */
	uint64_t seq[64], file[64], stripe[64];
	uint8_t first[64]; /* first byte of the first piece */
	uint32_t npiece[64];
	int napplied;
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	snprintf(e->root, sizeof(e->root), "/var/tmp/spacefs-jrnl-XXXXXX");
	assert_non_null(mkdtemp(e->root));
	for (int i = 0; i < 2; i++) {
		snprintf(e->path[i], sizeof(e->path[i]), "%s/journal%d", e->root, i);
		e->paths[i] = e->path[i];
	}
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	nftw(e->root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	free(e);
	return 0;
}

static int count_sync(void *arg)
{
	((struct env *)arg)->syncs++;
	return 0;
}

/* The tests' journal: volume "v", 1 MiB copies paths[0..n) on pool disks
 * disks[0..n) (NULL: unknown), checkpoints counted in e->syncs.  Tests
 * change what they need before opening. */
static struct pool_journal_config jcfg(struct env *e, const char *const *paths,
				       const uint32_t *disks, uint32_t n)
{
	return (struct pool_journal_config){.volume = "v",
					    .volume_id = 7,
					    .path = paths,
					    .disk = disks,
					    .npath = n,
					    .size = 1 << 20,
					    .sync = count_sync,
					    .arg = e};
}

static struct pool_journal *jopen(struct env *e, uint64_t size, struct pool_fault *fault)
{
	struct pool_journal_config cfg = jcfg(e, e->paths, NULL, 2);
	struct pool_journal *j = NULL;
	char err[256] = "";

	cfg.size = size;
	cfg.fault = fault;
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	return j;
}

static int record_apply(void *arg, const struct pool_journal_rec *r)
{
	struct env *e = arg;
	int n = e->napplied++;

	assert_true(n < 64);
	e->seq[n] = r->seq;
	e->file[n] = r->file_id;
	e->stripe[n] = r->stripe;
	e->npiece[n] = r->npiece;
	e->first[n] = r->piece[0].buf[0];
	/* every byte of every piece is the piece's fill value */
	for (uint32_t p = 0; p < r->npiece; p++) {
		assert_int_equal(r->piece[p].pos, p);
		assert_int_equal(r->piece[p].off, (uint64_t)p * B * 4);
		for (uint32_t i = 0; i < r->piece[p].len; i++)
			assert_int_equal(r->piece[p].buf[i], (uint8_t)(r->piece[0].buf[0] + p));
	}
	return 0;
}

/* Log one record of file `file`, stripe `stripe` with `np` pieces of
 * 4 KiB filled with fill, fill+1, ..., and leave it in flight (its
 * in-place writes not done: pool_journal_done(j, 1) is the caller's). */
static void log_pending(struct pool_journal *j, uint64_t file, uint64_t stripe, uint32_t np,
			uint8_t fill)
{
	static uint8_t buf[4][B];
	struct pool_journal_piece p[4];

	for (uint32_t i = 0; i < np; i++) {
		memset(buf[i], fill + i, B);
		p[i] = (struct pool_journal_piece){
		    .pos = i, .len = B, .off = (uint64_t)i * B * 4, .buf = buf[i]};
	}
	struct pool_journal_rec r = {.file_id = file, .stripe = stripe, .npiece = np, .piece = p};
	assert_int_equal(pool_journal_log(j, &r, 1), 0);
}

/* log_pending, and its in-place writes done at once. */
static void log_one(struct pool_journal *j, uint64_t file, uint64_t stripe, uint32_t np,
		    uint8_t fill)
{
	log_pending(j, file, stripe, np, fill);
	pool_journal_done(j, 1);
}

static void replay(struct env *e, uint64_t size)
{
	e->napplied = 0;
	struct pool_journal *j = jopen(e, size, NULL);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	pool_journal_close(j, 0);
}

static void flip(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static void test_replay_after_crash(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);

	log_one(j, 100, 3, 2, 0x10);
	log_one(j, 101, 0, 3, 0x20);
	log_one(j, 100, 3, 1, 0x30);
	pool_journal_close(j, 0); /* as a crash leaves it */

	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 3);
	assert_int_equal(e->file[0], 100);
	assert_int_equal(e->stripe[0], 3);
	assert_int_equal(e->npiece[0], 2);
	assert_int_equal(e->first[0], 0x10);
	assert_int_equal(e->file[1], 101);
	assert_int_equal(e->npiece[1], 3);
	assert_int_equal(e->first[2], 0x30);
	assert_true(e->seq[0] < e->seq[1] && e->seq[1] < e->seq[2]);
	/* replay checkpointed: nothing the second time */
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 0);
}

/* Copies that moved (a journal disk added or lost between a crash and
 * the next open): the records are only in a file now listed after
 * cfg.nwrite.  Replay finds them there without writing to it; the new
 * copy gets the new epoch, and an open of the new copy alone then has
 * nothing to replay, while the old file still holds the superseded epoch
 * (fs/volume.c deletes it). */
static void test_older_copy(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL); /* copies 0 and 1 */
	char newer[160];
	struct stat st0, st1;

	log_one(j, 100, 3, 2, 0x10);
	log_one(j, 101, 0, 3, 0x20);
	pool_journal_close(j, 0); /* as a crash leaves it */
	snprintf(newer, sizeof(newer), "%s/journal-new", e->root);
	unlink(e->path[0]); /* copy 0's disk is gone */
	assert_int_equal(stat(e->path[1], &st0), 0);
	const char *paths[2] = {newer, e->path[1]};
	const uint32_t disks[2] = {6, 2};
	struct pool_journal_config cfg = jcfg(e, paths, disks, 2);
	char err[256] = "";
	cfg.nwrite = 1;
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	e->napplied = 0;
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	assert_int_equal(e->napplied, 2);
	assert_int_equal(e->file[1], 101);
	struct pool_journal_stats js;
	log_one(j, 102, 1, 1, 0x30);
	pool_journal_stats(j, &js);
	assert_int_equal(js.copies, 1);
	assert_int_equal(js.ncopyslot, 1); /* the older file is not a copy */
	assert_int_equal(js.copy[0].disk, 6);
	assert_int_equal(js.copy[0].in_service, 1);
	assert_int_equal(js.copy[0].bytes, pool_journal_rec_bytes(NULL, 0) + B);
	pool_journal_close(j, 0);
	assert_int_equal(stat(e->path[1], &st1), 0); /* never written */
	assert_int_equal(st1.st_mtim.tv_sec, st0.st_mtim.tv_sec);
	assert_int_equal(st1.st_mtim.tv_nsec, st0.st_mtim.tv_nsec);
	/* the new copy holds the new epoch (record 102), the older file only
	 * the superseded one: opened together, 102 alone is replayed */
	e->napplied = 0;
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	pool_journal_close(j, 0);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->file[0], 102);
}

static void test_clean_close(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);

	log_one(j, 100, 1, 2, 0x10);
	pool_journal_close(j, 1);
	assert_true(e->syncs >= 1); /* the chunks were synced before the epoch ended */
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 0);
}

static void test_damaged_records(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);

	log_one(j, 100, 1, 1, 0x10); /* at byte 4096, 2 blocks */
	log_one(j, 100, 2, 1, 0x20); /* at 12288 */
	log_one(j, 100, 3, 1, 0x30); /* at 20480 */
	pool_journal_close(j, 0);
	/* first record: data rotten in copy 0 only -> taken from copy 1 */
	flip(e->path[0], 2 * B + 100);
	/* second record: data rotten in both copies -> skipped */
	flip(e->path[0], 4 * B + 7);
	flip(e->path[1], 4 * B + 9);
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 2);
	assert_int_equal(e->first[0], 0x10);
	assert_int_equal(e->first[1], 0x30);
}

static void test_torn_tail(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);

	log_one(j, 100, 1, 1, 0x10);
	log_one(j, 100, 2, 2, 0x20); /* at 12288, 3 blocks */
	pool_journal_close(j, 0);
	/* the second record half written in one copy, absent in the other */
	assert_int_equal(truncate(e->path[0], 4 * B), 0);
	int fd = open(e->path[1], O_RDWR);
	static uint8_t zero[3 * B];
	assert_int_equal(pwrite(fd, zero, sizeof(zero), 3 * B), (ssize_t)sizeof(zero));
	close(fd);
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->first[0], 0x10);
}

static void test_header_damaged_in_one_copy(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);

	log_one(j, 100, 1, 1, 0x10);
	pool_journal_close(j, 0);
	flip(e->path[0], 40);
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 1);
}

static void test_full_checkpoints(void **state)
{
	struct env *e = *state;
	/* header + 5 records of 2 blocks */
	struct pool_journal *j = jopen(e, 11 * B, NULL);

	for (int i = 0; i < 5; i++)
		log_one(j, 100, (uint64_t)i, 1, (uint8_t)(0x10 + i));
	assert_int_equal(e->syncs, 0);
	log_one(j, 100, 9, 1, 0x40); /* no room: checkpoint, then logged */
	assert_int_equal(e->syncs, 1);
	struct pool_journal_stats st;
	pool_journal_stats(j, &st);
	assert_int_equal(st.checkpoints, 1);
	assert_int_equal(st.used, 2 * B);
	pool_journal_close(j, 0);
	replay(e, 11 * B);
	assert_int_equal(e->napplied, 1); /* the old epoch is never replayed */
	assert_int_equal(e->first[0], 0x40);
	assert_int_equal(e->stripe[0], 9);
}

static void test_too_big(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 3 * B, NULL);
	static uint8_t buf[4 * B];
	struct pool_journal_piece p = {.pos = 0, .len = sizeof(buf), .off = 0, .buf = buf};
	struct pool_journal_rec r = {.file_id = 1, .stripe = 0, .npiece = 1, .piece = &p};

	assert_int_equal(pool_journal_log(j, &r, 1), -EFBIG);
	pool_journal_close(j, 1);
}

static void test_barrier(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);

	log_one(j, 100, 5, 1, 0x10);
	assert_int_equal(pool_journal_barrier(j, 100, 6, 1000), 0);
	assert_int_equal(pool_journal_barrier(j, 101, 0, 10), 0);
	assert_int_equal(e->syncs, 0);
	assert_int_equal(pool_journal_barrier(j, 100, 0, 5), 0);
	assert_int_equal(e->syncs, 1);
	assert_int_equal(pool_journal_barrier(j, 100, 5, 5), 0); /* new epoch: nothing */
	assert_int_equal(e->syncs, 1);
	log_one(j, 100, 70000, 1, 0x10);
	assert_int_equal(pool_journal_barrier(j, 100, 0, UINT64_MAX), 0); /* wide range */
	assert_int_equal(e->syncs, 2);
	pool_journal_close(j, 0);
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 0);
}

struct writer {
	struct pool_journal *j;
	int id;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t *buf = malloc(B);
	memset(buf, 0x55, B);
	struct pool_journal_piece p = {.pos = 0, .len = B, .off = 0, .buf = buf};

	for (int i = 0; i < 50; i++) {
		struct pool_journal_rec r = {.file_id = 1000 + (uint64_t)w->id,
					     .stripe = (uint64_t)i,
					     .npiece = 1,
					     .piece = &p};
		if (pool_journal_log(w->j, &r, 1) != 0)
			abort();
		pool_journal_done(w->j, 1);
	}
	free(buf);
	return NULL;
}

static void test_group_commit(void **state)
{
	struct env *e = *state;
	/* small enough that the writers also hit checkpoints */
	struct pool_journal *j = jopen(e, 64 * B, NULL);
	pthread_t t[8];
	struct writer w[8];

	for (int i = 0; i < 8; i++) {
		w[i] = (struct writer){j, i};
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	struct pool_journal_stats st;
	pool_journal_stats(j, &st);
	assert_int_equal(st.records, 400);
	assert_true(st.commits <= st.records);
	assert_true(st.checkpoints >= 400 * 2 / 63);
	print_message("# 400 records, %llu commits, %llu checkpoints\n",
		      (unsigned long long)st.commits, (unsigned long long)st.checkpoints);
	pool_journal_close(j, 1);
}

static void test_copy_lost(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);

	log_one(j, 100, 1, 1, 0x10);
	pool_journal_close(j, 0);
	/* the disk of copy 0 is gone at the next mount */
	assert_int_equal(unlink(e->path[0]), 0);
	e->paths[0] = NULL;
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 1);
	e->paths[0] = e->path[0];
}

/* The move the tests make: copies on disks 0, 1 (paths 0, 1) to disks 1,
 * 2 (path 1 and a new file journal2). */
struct moves {
	char p2[160];
	const char *from[2], *to[2];
	uint32_t dfrom[2], dto[2];
};

static void moves(const struct env *e, struct moves *m)
{
	*m = (struct moves){.from = {e->path[0], e->path[1]},
			    .to = {e->path[1], m->p2},
			    .dfrom = {0, 1},
			    .dto = {1, 2}};
	snprintf(m->p2, sizeof(m->p2), "%s/journal2", e->root);
}

/* Open copies paths[0..n) on disks[0..n). */
static struct pool_journal *jopen_at(struct env *e, const char *const *paths, const uint32_t *disks,
				     uint32_t n)
{
	struct pool_journal_config cfg = jcfg(e, paths, disks, n);
	struct pool_journal *j = NULL;
	char err[256] = "";

	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	return j;
}

static void test_move_copies(void **state)
{
	struct env *e = *state;
	struct moves mv;
	moves(e, &mv);
	struct pool_journal *j = jopen_at(e, mv.from, mv.dfrom, 2);
	struct pool_journal_stats js;
	struct stat st;

	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	assert_int_equal(pool_journal_placed(j, mv.from, mv.dfrom, 2), 1);
	assert_int_equal(pool_journal_placed(j, mv.to, mv.dto, 2), 0);
	log_one(j, 100, 1, 1, 0x10);
	/* a record whose in-place write has not completed: no move yet */
	log_pending(j, 101, 2, 1, 0x20);
	int syncs = e->syncs;
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 50), -EAGAIN);
	assert_int_equal(e->syncs, syncs);
	assert_int_equal(stat(mv.p2, &st), -1);
	pool_journal_done(j, 1);
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 0), 0);
	assert_true(e->syncs > syncs); /* the old epoch in place first */
	assert_int_equal(pool_journal_placed(j, mv.to, mv.dto, 2), 1);
	assert_int_equal(stat(e->path[0], &st), -1); /* in service, not needed: removed */
	assert_int_equal(stat(mv.p2, &st), 0);
	pool_journal_stats(j, &js);
	assert_int_equal(js.copies, 2);
	assert_int_equal(js.ncopyslot, 2);
	assert_int_equal(js.copy[0].disk, 1);
	assert_int_equal(js.copy[1].disk, 2);
	assert_true(js.copy[0].in_service && js.copy[1].in_service);
	/* again: nothing to do */
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 0), 0);
	assert_int_equal(pool_journal_set_copies(j, mv.to, (const uint32_t[]){1, 1}, 2, 0),
			 -EINVAL);
	log_one(j, 102, 3, 2, 0x30);
	pool_journal_close(j, 0); /* as a crash leaves it */

	/* the disk of the kept copy lost too: the new copy alone has it */
	e->napplied = 0;
	j = jopen_at(e, (const char *const[]){mv.p2}, (const uint32_t[]){2}, 1);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	pool_journal_close(j, 0);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->file[0], 102);
	assert_int_equal(e->first[0], 0x30);
}

/* The copy whose disk failed is dropped; moving away from it leaves its
 * file alone (the disk may come back with it, or not be the same disk);
 * records after the move come back from the new copies. */
static void test_move_after_disk_failed(void **state)
{
	struct env *e = *state;
	struct moves mv;
	moves(e, &mv);
	struct pool_journal *j = jopen_at(e, mv.from, mv.dfrom, 2);
	struct pool_journal_stats js;
	struct stat st;

	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	log_one(j, 100, 1, 1, 0x10);
	pool_journal_disk_failed(j, 0);
	pool_journal_stats(j, &js);
	assert_int_equal(js.copies, 1);
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 0), 0);
	pool_journal_stats(j, &js);
	assert_int_equal(js.copies, 2);
	assert_int_equal(stat(e->path[0], &st), 0); /* out of service: left alone */
	log_one(j, 101, 1, 2, 0x40);
	pool_journal_close(j, 0);
	/* the next open: the copies where they moved, the old file read too */
	e->napplied = 0;
	const char *next[3] = {e->path[1], mv.p2, e->path[0]};
	const uint32_t dnext[3] = {1, 2, 0};
	struct pool_journal_config cfg = jcfg(e, next, dnext, 3);
	char err[256] = "";
	cfg.nwrite = 2;
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	pool_journal_close(j, 1);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->file[0], 101);
	assert_int_equal(e->first[0], 0x40);
}

struct barrier_arg {
	struct pool_journal *j;
	uint64_t file, stripe;
	int rc;
	_Atomic int done;
};

static void *barrier_main(void *arg)
{
	struct barrier_arg *b = arg;
	b->rc = pool_journal_barrier(b->j, b->file, b->stripe, b->stripe);
	atomic_store(&b->done, 1);
	return NULL;
}

struct move_arg {
	struct pool_journal *j;
	const char *const *path;
	const uint32_t *disk;
	int rc;
};

static void *move_main(void *arg)
{
	struct move_arg *m = arg;
	m->rc = pool_journal_set_copies(m->j, m->path, m->disk, 2, 300);
	return NULL;
}

static uint64_t checkpoints(struct pool_journal *j)
{
	struct pool_journal_stats st;
	pool_journal_stats(j, &st);
	return st.checkpoints;
}

/* A barrier that waited on a checkpoint which gave up -- a forced move
 * timing out on a record in flight -- must not return as if a new epoch
 * had begun: its caller then writes the stripe unjournaled while the
 * stripe's old record is still in the epoch.  It runs a checkpoint of its
 * own, which waits for the record.  (A forced move is no longer even
 * tried with a record in flight; the barrier must wait all the same, and
 * its checkpoint applies the move.) */
static void test_barrier_after_forced_timeout(void **state)
{
	struct env *e = *state;
	struct moves mv;
	moves(e, &mv);
	struct pool_journal *j = jopen_at(e, mv.from, mv.dfrom, 2);
	pthread_t tm, tb;

	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	uint64_t ck = checkpoints(j);
	log_pending(j, 101, 2, 1, 0); /* in flight until done */
	struct move_arg m = {j, mv.to, mv.dto, 0};
	struct barrier_arg b = {.j = j, .file = 101, .stripe = 2};
	assert_int_equal(pthread_create(&tm, NULL, move_main, &m), 0);
	usleep(50 * 1000); /* the forced checkpoint is waiting for the record */
	assert_int_equal(pthread_create(&tb, NULL, barrier_main, &b), 0);
	pthread_join(tm, NULL);
	assert_int_equal(m.rc, -EAGAIN);
	usleep(100 * 1000);
	assert_int_equal(atomic_load(&b.done), 0); /* still waiting for the record */
	assert_int_equal(checkpoints(j), ck);
	pool_journal_done(j, 1);
	pthread_join(tb, NULL);
	assert_int_equal(b.rc, 0);
	assert_int_equal(checkpoints(j), ck + 1);
	assert_int_equal(pool_journal_placed(j, mv.to, mv.dto, 2), 1); /* it moved them too */
	pool_journal_close(j, 0);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Under load (a record in flight) a forced move does not hold appends up
 * waiting for it: -EAGAIN at once, no sync; the next natural checkpoint
 * applies the move. */
static void test_move_not_forced_under_load(void **state)
{
	struct env *e = *state;
	struct moves mv;
	moves(e, &mv);
	struct pool_journal *j = jopen_at(e, mv.from, mv.dfrom, 2);

	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	log_pending(j, 101, 2, 1, 0); /* in flight until done */
	int syncs = e->syncs;
	uint64_t t0 = now_ms();
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 5000), -EAGAIN);
	assert_true(now_ms() - t0 < 2500); /* it did not wait the 5 s */
	assert_int_equal(e->syncs, syncs);
	pool_journal_done(j, 1);
	assert_int_equal(pool_journal_checkpoint(j, 0), 0);
	assert_int_equal(pool_journal_placed(j, mv.to, mv.dto, 2), 1);
	pool_journal_close(j, 1);
}

static _Atomic int sync_calls;

/* the first call fails after a while (a disk error), the later ones work */
static int slow_failing_sync(void *arg)
{
	(void)arg;
	if (atomic_fetch_add(&sync_calls, 1) == 0) {
		usleep(200 * 1000);
		return -EIO;
	}
	return 0;
}

/* The same for a checkpoint whose sync failed: a barrier waiting on it
 * gets a checkpoint that completed, not the failed one. */
static void test_barrier_after_failed_sync(void **state)
{
	struct env *e = *state;
	struct pool_journal_config cfg = jcfg(e, e->paths, NULL, 2);
	struct pool_journal *j = NULL;
	char err[256] = "";
	pthread_t tb;

	cfg.sync = slow_failing_sync;
	atomic_store(&sync_calls, 0);
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	log_one(j, 100, 5, 1, 0x10);
	uint64_t ck = checkpoints(j);
	struct barrier_arg b = {.j = j, .file = 100, .stripe = 5};
	assert_int_equal(pthread_create(&tb, NULL, barrier_main, &b), 0);
	usleep(50 * 1000); /* the barrier's checkpoint is in the failing sync */
	struct barrier_arg b2 = {.j = j, .file = 100, .stripe = 5};
	barrier_main(&b2); /* waits on it, then runs its own */
	pthread_join(tb, NULL);
	assert_int_equal(b.rc, -EIO);
	assert_int_equal(b2.rc, 0);
	assert_int_equal(checkpoints(j), ck + 1);
	assert_int_equal(atomic_load(&sync_calls), 2);
	pool_journal_close(j, 0);
	e->napplied = 0;
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 0); /* the epoch did end */
}

static void *ckpt_main(void *arg)
{
	struct barrier_arg *b = arg;
	b->rc = pool_journal_checkpoint(b->j, 0);
	atomic_store(&b->done, 1);
	return NULL;
}

/* A checkpoint already waiting for a write-back record when the flusher
 * finds it cannot put it in place (hold(1), then done, as pool/wback.c
 * does) must not end the epoch: a crash before the retry would lose an
 * acknowledged write. */
static void test_hold_during_checkpoint(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 1 << 20, NULL);
	pthread_t tc;

	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	uint64_t ck = checkpoints(j);
	log_pending(j, 100, 3, 1, 0x33); /* in flight until done */
	struct barrier_arg b = {.j = j};
	assert_int_equal(pthread_create(&tc, NULL, ckpt_main, &b), 0);
	usleep(50 * 1000); /* the checkpoint waits for the record */
	assert_int_equal(atomic_load(&b.done), 0);
	pool_journal_hold(j, 1);
	pool_journal_done(j, 1);
	pthread_join(tc, NULL);
	assert_int_equal(b.rc, -EAGAIN);
	assert_int_equal(checkpoints(j), ck);
	pool_journal_close(j, 0); /* a crash: the record must still be there */
	replay(e, 1 << 20);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->first[0], 0x33);
}

static void test_fault_parse(void **state)
{
	(void)state;
	struct pool_fault f;
	char err[200];

	assert_int_equal(pool_fault_parse(NULL, &f, err, sizeof(err)), 0);
	assert_int_equal(f.kind, POOL_FAULT_NONE);
	assert_int_equal(pool_fault_parse("tear:3", &f, err, sizeof(err)), 0);
	assert_int_equal(f.kind, POOL_FAULT_TEAR);
	assert_int_equal(pool_fault_hit(&f, POOL_FAULT_TEAR), 0);
	assert_int_equal(pool_fault_hit(&f, POOL_FAULT_REPLAY), 0);
	assert_int_equal(pool_fault_hit(&f, POOL_FAULT_TEAR), 0);
	assert_int_equal(pool_fault_hit(&f, POOL_FAULT_TEAR), 1);
	assert_int_equal(pool_fault_hit(&f, POOL_FAULT_TEAR), 0);
	assert_int_equal(pool_fault_parse("replay:1", &f, err, sizeof(err)), 0);
	assert_int_equal(f.kind, POOL_FAULT_REPLAY);
	assert_int_equal(pool_fault_parse("jtear:12", &f, err, sizeof(err)), 0);
	assert_int_equal(f.kind, POOL_FAULT_JTEAR);
	assert_int_equal(f.at, 12);
	assert_int_equal(pool_fault_parse("jmove:3", &f, err, sizeof(err)), 0);
	assert_int_equal(f.kind, POOL_FAULT_JMOVE);
	assert_int_equal(f.at, 3);
	const char *bad[] = {"tear", "tear:", "tear:0", "tear:-1", "tear:2x", "rip:3", "tear3"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(pool_fault_parse(bad[i], &f, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "SPACEFS_FAULT"));
	}
}

static int fence_state; /* 0: this node owns the volume; else the errno refused */

static int fence(void *arg)
{
	(void)arg;
	return fence_state ? -fence_state : 0;
}

/* Data fencing: an append is submitted only while the fence allows it.
 * Once it refuses (the node lost the volume), the append fails, nothing
 * of it reaches the copies, and no later append does either. */
static void test_fenced_append(void **state)
{
	struct env *e = *state;
	struct pool_journal_config cfg = jcfg(e, e->paths, NULL, 2);
	struct pool_journal *j = NULL;
	char err[256] = "";
	uint8_t buf[B];
	struct pool_journal_piece p = {.pos = 0, .len = B, .off = 0, .buf = buf};
	struct pool_journal_rec r = {.file_id = 3, .stripe = 0, .npiece = 1, .piece = &p};

	cfg.size = 64 * B;
	cfg.may_write = fence;
	memset(buf, 0x5a, sizeof(buf));
	fence_state = 0;
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	log_one(j, 3, 1, 1, 0x10); /* allowed */
	fence_state = ESTALE;	   /* another node took the volume over */
	assert_true(pool_journal_log(j, &r, 1) < 0);
	fence_state = 0;
	assert_true(pool_journal_log(j, &r, 1) < 0); /* and stays refused */
	pool_journal_close(j, 0);

	/* the next owner replays only the append made before the fence */
	cfg.may_write = NULL;
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->stripe[0], 1);
	assert_int_equal(e->first[0], 0x10);
	pool_journal_close(j, 1);
}

/* Held (write-back could not put some records in place): no checkpoint
 * starts a new epoch, a clean close leaves the records for the replay,
 * and once released, checkpoints work again. */
static void test_hold(void **state)
{
	struct env *e = *state;
	struct pool_journal *j = jopen(e, 64 * B, NULL);

	log_one(j, 3, 1, 2, 0x20);
	pool_journal_hold(j, 1);
	assert_int_equal(pool_journal_checkpoint(j, 0), -EAGAIN);
	int syncs = e->syncs;
	pool_journal_close(j, 1); /* clean, but held: no checkpoint */
	assert_int_equal(e->syncs, syncs);

	j = jopen(e, 64 * B, NULL);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->first[0], 0x20);
	log_one(j, 3, 2, 1, 0x30);
	pool_journal_hold(j, 1);
	pool_journal_hold(j, 0);
	assert_int_equal(pool_journal_checkpoint(j, 0), 0);
	pool_journal_close(j, 1);
	e->napplied = 0;
	j = jopen(e, 64 * B, NULL);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	assert_int_equal(e->napplied, 0); /* checkpointed: nothing to replay */
	pool_journal_close(j, 1);
}

static struct pool_journal *move_j;
static int move_fence_calls, move_fence_mode; /* 1: disk 2 fails, 2: refuse at the 2nd call */

static int move_fence(void *arg)
{
	(void)arg;
	if (!move_fence_mode || ++move_fence_calls != 2)
		return 0;
	if (move_fence_mode == 2)
		return -ESTALE;		     /* another node took the volume over meanwhile */
	pool_journal_disk_failed(move_j, 2); /* the new copy's disk fails */
	return 0;
}

/* A move whose new set takes the new header on fewer copies than the
 * journal has now is given up: the old copies stay in service and on
 * disk (they took the header too), the file the move created is removed,
 * and records logged after it come back from the old copy alone.  A
 * fence that refuses during the move leaves every old copy alone. */
static void test_move_partial(void **state)
{
	struct env *e = *state;
	struct moves mv;
	moves(e, &mv);
	struct pool_journal_config cfg = jcfg(e, mv.from, mv.dfrom, 2);
	struct pool_journal *j = NULL;
	struct pool_journal_stats js;
	struct stat st;
	char err[256] = "";

	cfg.may_write = move_fence;
	move_fence_mode = 0;
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	move_j = j;
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	log_one(j, 100, 1, 1, 0x10);
	uint64_t ck = checkpoints(j);
	move_fence_calls = 0;
	move_fence_mode = 1;
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 0), -EAGAIN);
	move_fence_mode = 0;
	assert_int_equal(checkpoints(j), ck + 1); /* the checkpoint itself is done */
	assert_int_equal(pool_journal_placed(j, mv.from, mv.dfrom, 2), 1);
	pool_journal_stats(j, &js);
	assert_int_equal(js.copies, 2);
	assert_int_equal(stat(e->path[0], &st), 0); /* still in service: kept */
	assert_int_equal(stat(mv.p2, &st), -1);	    /* created by the move: removed */
	/* not retried at once, not even by a natural checkpoint */
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 0), -EAGAIN);
	assert_int_equal(pool_journal_checkpoint(j, 0), 0);
	assert_int_equal(stat(mv.p2, &st), -1);
	log_one(j, 101, 2, 1, 0x50);
	pool_journal_close(j, 0); /* as a crash leaves it */

	/* the disk of journal1 lost: journal0 alone has the record */
	e->napplied = 0;
	j = jopen_at(e, (const char *const[]){e->path[0]}, (const uint32_t[]){0}, 1);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	pool_journal_close(j, 0);
	assert_int_equal(e->napplied, 1);
	assert_int_equal(e->file[0], 101);
	assert_int_equal(e->first[0], 0x50);

	/* the fence refuses once the new copy is open: nothing written or
	 * removed, the old copies stay */
	assert_int_equal(pool_journal_open(&cfg, &j, err, sizeof(err)), 0);
	move_j = j;
	e->napplied = 0;
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	log_one(j, 102, 3, 1, 0x60);
	move_fence_calls = 0;
	move_fence_mode = 2;
	assert_int_equal(pool_journal_set_copies(j, mv.to, mv.dto, 2, 0), -ESTALE);
	move_fence_mode = 0;
	assert_int_equal(pool_journal_placed(j, mv.from, mv.dfrom, 2), 1);
	assert_int_equal(stat(e->path[0], &st), 0);
	assert_int_equal(stat(e->path[1], &st), 0);
	pool_journal_close(j, 0);
	e->napplied = 0;
	j = jopen_at(e, (const char *const[]){e->path[0]}, (const uint32_t[]){0}, 1);
	assert_int_equal(pool_journal_replay(j, record_apply, e), 0);
	pool_journal_close(j, 0);
	assert_int_equal(e->napplied, 1); /* the epoch did not end */
	assert_int_equal(e->file[0], 102);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_replay_after_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clean_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_older_copy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_header_damaged_in_one_copy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_checkpoints, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_barrier, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fenced_append, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hold, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_copy_lost, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_move_copies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_move_after_disk_failed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_barrier_after_forced_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_barrier_after_failed_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_move_partial, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_move_not_forced_under_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hold_during_checkpoint, setup, teardown),
	    cmocka_unit_test(test_fault_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
