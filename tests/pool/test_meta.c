/*
 * test_meta.c -- the metadata store: namespace semantics against ext4's,
 * replication and recovery of damaged replicas, validation of what is read
 * back, and a concurrency smoke test.  Replica files are inspected and
 * damaged directly with SQLite, as a failing disk or a careless admin
 * would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "pool/meta.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define NREP   3
#define NOW(k) ((int64_t)(k)*1000000000LL)
#define ROOT   POOL_META_ROOT

struct fix {
	char root[256];
	char dir[NREP][PATH_MAX];
	char db[NREP][PATH_MAX];
	const char *dirs[NREP];
	struct pool_meta *m;
	char err[2048];
};

/* ---- helpers --------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	snprintf(f->root, sizeof(f->root), "%s/test_meta.XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->root));
	for (int i = 0; i < NREP; i++) {
		char dir[sizeof(f->root) + 32];
		/* Nested and not yet existing: the store must create them. */
		snprintf(dir, sizeof(dir), "%s/disk%d/vol/v1", f->root, i);
		snprintf(f->dir[i], sizeof(f->dir[i]), "%s", dir);
		snprintf(f->db[i], sizeof(f->db[i]), "%s/meta.db", dir);
		f->dirs[i] = f->dir[i];
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	pool_meta_close(f->m);
	nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void open_n(struct fix *f, uint32_t n)
{
	int rc = pool_meta_open(f->dirs, n, 1000, 100, &f->m, f->err, sizeof(f->err));

	if (rc)
		fprintf(stderr, "open: %s\n", f->err);
	assert_int_equal(rc, 0);
	assert_non_null(f->m);
}

static void close_m(struct fix *f)
{
	pool_meta_close(f->m);
	f->m = NULL;
}

static uint64_t mk_at(struct pool_meta *m, uint64_t parent, const char *name, uint32_t mode,
		      int64_t now)
{
	struct pool_inode in;

	memset(&in, 0, sizeof(in));
	in.mode = mode;
	in.uid = 1000;
	in.gid = 100;
	in.atime_ns = in.mtime_ns = in.ctime_ns = now;
	if (S_ISREG(mode)) {
		in.npos = 3;
		in.disk[0] = 1;
		in.disk[1] = 4;
		in.disk[2] = 7;
	}
	assert_int_equal(pool_meta_create(m, parent, name, &in, S_ISLNK(mode) ? "target" : NULL),
			 0);
	assert_true(in.ino > ROOT);
	return in.ino;
}

static uint64_t mk(struct pool_meta *m, uint64_t parent, const char *name, uint32_t mode)
{
	return mk_at(m, parent, name, mode, NOW(10));
}

static struct pool_inode get(struct pool_meta *m, uint64_t ino)
{
	struct pool_inode in;

	assert_int_equal(pool_meta_get(m, ino, &in), 0);
	return in;
}

static uint64_t look(struct pool_meta *m, uint64_t parent, const char *name)
{
	struct pool_inode in;
	int rc = pool_meta_lookup(m, parent, name, &in);

	return rc == 0 ? in.ino : 0;
}

/* Run a statement on a replica file directly, as damage or inspection. */
static void sql(const char *path, const char *q)
{
	sqlite3 *db;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	int rc = sqlite3_exec(db, q, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		fprintf(stderr, "sql %s: %s\n", q, sqlite3_errmsg(db));
	assert_int_equal(rc, SQLITE_OK);
	sqlite3_close(db);
}

static int64_t sql_int(const char *path, const char *q)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* Every row of every table, as text: two replicas are equivalent when
 * their dumps are equal. */
static char *dump(const char *path)
{
	static const char *const q[] = {"SELECT * FROM inodes ORDER BY 1",
					"SELECT * FROM dentries ORDER BY 1",
					"SELECT * FROM symlinks ORDER BY 1",
					"SELECT * FROM xattrs ORDER BY 1, 2",
					"SELECT * FROM meta ORDER BY 1",
					"SELECT * FROM sqlite_sequence ORDER BY 1",
					"PRAGMA application_id",
					"PRAGMA user_version"};
	char *out = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&out, &len);
	sqlite3 *db;

	assert_non_null(fp);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		sqlite3_stmt *st;
		assert_int_equal(sqlite3_prepare_v2(db, q[i], -1, &st, NULL), SQLITE_OK);
		fprintf(fp, "%s\n", q[i]);
		while (sqlite3_step(st) == SQLITE_ROW) {
			for (int c = 0; c < sqlite3_column_count(st); c++) {
				if (sqlite3_column_type(st, c) == SQLITE_BLOB) {
					const unsigned char *b = sqlite3_column_blob(st, c);
					fputc('x', fp);
					for (int k = 0; k < sqlite3_column_bytes(st, c); k++)
						fprintf(fp, "%02x", b[k]);
				} else {
					const unsigned char *t = sqlite3_column_text(st, c);
					fprintf(fp, "%s", t ? (const char *)t : "NULL");
				}
				fputc('|', fp);
			}
			fputc('\n', fp);
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	fclose(fp);
	return out;
}

static void assert_replicas_equal(struct fix *f, int n)
{
	char *first = dump(f->db[0]);

	for (int i = 1; i < n; i++) {
		char *other = dump(f->db[i]);
		assert_string_equal(first, other);
		free(other);
	}
	free(first);
}

static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	assert_true(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
}

static void write_garbage(const char *path, size_t len, unsigned seed)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	for (size_t i = 0; i < len; i++)
		fputc((int)((i * 2654435761u + seed) >> 13) & 0xff, fp);
	fclose(fp);
}

static bool file_exists(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0;
}

/* stderr of a stretch of code, to check what the store said. */
struct capture {
	int saved;
	FILE *tmp;
};

static void capture_begin(struct capture *c)
{
	fflush(stderr);
	c->tmp = tmpfile();
	assert_non_null(c->tmp);
	c->saved = dup(2);
	dup2(fileno(c->tmp), 2);
}

static char *capture_end(struct capture *c)
{
	long len;
	char *s;

	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	len = ftell(c->tmp);
	s = calloc(1, (size_t)len + 1);
	rewind(c->tmp);
	assert_int_equal(fread(s, 1, (size_t)len, c->tmp), (size_t)len);
	fclose(c->tmp);
	fputs(s, stderr); /* keep it visible in the test log */
	return s;
}

/* Cross-check link counts and references straight from a replica file:
 * every entry names an existing inode in an existing directory, a file's
 * nlink is its number of entries, a directory's is 2 + its subdirectories
 * (or 0 once removed), and inode numbers were never handed out twice. */
static void check_consistency(const char *db)
{
	static const char *const bad[] = {
	    "SELECT count(*) FROM dentries d LEFT JOIN inodes i ON i.ino = d.ino"
	    " WHERE i.ino IS NULL",
	    "SELECT count(*) FROM dentries d LEFT JOIN inodes p ON p.ino = d.parent"
	    " WHERE p.ino IS NULL OR (p.mode & 61440) != 16384 OR p.nlink = 0",
	    "SELECT count(*) FROM inodes i WHERE (i.mode & 61440) != 16384"
	    " AND i.nlink != (SELECT count(*) FROM dentries d WHERE d.ino = i.ino)",
	    "SELECT count(*) FROM inodes i WHERE (i.mode & 61440) = 16384 AND i.nlink != 0"
	    " AND i.nlink != 2 + (SELECT count(*) FROM dentries d JOIN inodes c ON c.ino = d.ino"
	    " WHERE d.parent = i.ino AND (c.mode & 61440) = 16384)",
	    "SELECT count(*) FROM inodes i WHERE (i.mode & 61440) = 16384 AND i.ino != 1"
	    " AND (SELECT count(*) FROM dentries d WHERE d.ino = i.ino) != (i.nlink > 0)",
	    "SELECT count(*) FROM inodes i WHERE i.nlink = 0 AND EXISTS"
	    " (SELECT 1 FROM dentries d WHERE d.parent = i.ino)",
	    "SELECT (SELECT max(ino) FROM inodes) >= (SELECT value FROM meta"
	    " WHERE key = 'next_ino')",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t n = sql_int(db, bad[i]);
		if (n != 0)
			fprintf(stderr, "inconsistent (%lld): %s\n", (long long)n, bad[i]);
		assert_int_equal(n, 0);
	}
}

/* ---- basics ----------------------------------------------------------------- */

static void test_fresh_root(void **state)
{
	struct fix *f = *state;
	struct pool_inode in;
	uint64_t n;

	open_n(f, 1);
	in = get(f->m, ROOT);
	assert_int_equal(in.mode, S_IFDIR | 0755);
	assert_int_equal(in.uid, 1000);
	assert_int_equal(in.gid, 100);
	assert_int_equal(in.nlink, 2);
	assert_int_equal(pool_meta_txn(f->m), 0);
	assert_int_equal(pool_meta_live_replicas(f->m), 1);
	assert_int_equal(pool_meta_count(f->m, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(pool_meta_get(f->m, 999, &in), -ENOENT);
	assert_int_equal(pool_meta_get(f->m, 0, &in), -ENOENT);
	assert_int_equal(pool_meta_lookup(f->m, ROOT, "nope", &in), -ENOENT);
	assert_int_equal(sql_int(f->db[0], "PRAGMA application_id"), 0x5350464d);
	assert_int_equal(sql_int(f->db[0], "PRAGMA user_version"), 1);
}

static void test_open_arguments(void **state)
{
	struct fix *f = *state;
	struct pool_meta *m = NULL;
	const char *twice[2] = {f->dir[0], f->dir[0]};

	assert_int_equal(pool_meta_open(f->dirs, 0, 0, 0, &m, f->err, sizeof(f->err)), -EINVAL);
	assert_int_equal(
	    pool_meta_open(f->dirs, POOL_META_MAX_REPLICAS + 1, 0, 0, &m, f->err, sizeof(f->err)),
	    -EINVAL);
	assert_int_equal(pool_meta_open(twice, 2, 0, 0, &m, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "same directory"));
	assert_null(m);
}

static void test_create_lookup(void **state)
{
	struct fix *f = *state;
	struct pool_inode in, out;
	char buf[64], longname[300];
	uint64_t file, dir, link, fifo;

	open_n(f, 1);
	file = mk_at(f->m, ROOT, "file", S_IFREG | 0644, NOW(20));
	assert_int_equal(pool_meta_txn(f->m), 1);
	dir = mk_at(f->m, ROOT, "dir", S_IFDIR | 0750, NOW(21));
	link = mk_at(f->m, dir, "link", S_IFLNK | 0777, NOW(22));
	fifo = mk_at(f->m, dir, "fifo", S_IFIFO | 0600, NOW(23));
	assert_true(file < dir && dir < link && link < fifo);
	assert_int_equal(pool_meta_txn(f->m), 4);

	/* What was stored is what comes back, through get and lookup. */
	in = get(f->m, file);
	assert_int_equal(in.mode, S_IFREG | 0644);
	assert_int_equal(in.nlink, 1);
	assert_int_equal(in.uid, 1000);
	assert_int_equal(in.npos, 3);
	assert_int_equal(in.disk[1], 4);
	assert_int_equal(in.disk[3], 0);
	assert_int_equal(in.ctime_ns, NOW(20));
	assert_int_equal(pool_meta_lookup(f->m, ROOT, "file", &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	assert_int_equal(get(f->m, dir).nlink, 2);
	assert_int_equal(get(f->m, fifo).mode, S_IFIFO | 0600);

	/* The parent counts the subdirectory and takes the creation time. */
	in = get(f->m, ROOT);
	assert_int_equal(in.nlink, 3);
	assert_int_equal(in.mtime_ns, NOW(21));
	assert_int_equal(in.ctime_ns, NOW(21));
	assert_int_equal(get(f->m, dir).mtime_ns, NOW(23));

	/* Symlinks: target stored, size is its length, readlink rules. */
	assert_int_equal(get(f->m, link).size, 6);
	assert_int_equal(pool_meta_readlink(f->m, link, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "target");
	assert_int_equal(pool_meta_readlink(f->m, link, buf, 6), -ERANGE);
	assert_int_equal(pool_meta_readlink(f->m, file, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(pool_meta_readlink(f->m, 12345, buf, sizeof(buf)), -ENOENT);

	/* Refusals change nothing. */
	uint64_t txn = pool_meta_txn(f->m);
	memset(&in, 0, sizeof(in));
	in.mode = S_IFREG | 0644;
	assert_int_equal(pool_meta_create(f->m, ROOT, "file", &in, NULL), -EEXIST);
	assert_int_equal(pool_meta_create(f->m, ROOT, "dir", &in, NULL), -EEXIST);
	assert_int_equal(pool_meta_create(f->m, 777, "x", &in, NULL), -ENOENT);
	assert_int_equal(pool_meta_create(f->m, file, "x", &in, NULL), -ENOTDIR);
	assert_int_equal(pool_meta_create(f->m, ROOT, ".", &in, NULL), -EINVAL);
	assert_int_equal(pool_meta_create(f->m, ROOT, "..", &in, NULL), -EINVAL);
	assert_int_equal(pool_meta_create(f->m, ROOT, "", &in, NULL), -EINVAL);
	assert_int_equal(pool_meta_create(f->m, ROOT, "a/b", &in, NULL), -EINVAL);
	memset(longname, 'n', sizeof(longname));
	longname[256] = '\0';
	assert_int_equal(pool_meta_create(f->m, ROOT, longname, &in, NULL), -ENAMETOOLONG);
	assert_int_equal(pool_meta_lookup(f->m, ROOT, longname, &out), -ENAMETOOLONG);
	assert_int_equal(pool_meta_lookup(f->m, file, "x", &out), -ENOTDIR);
	assert_int_equal(pool_meta_create(f->m, ROOT, "t", &in, "target"), -EINVAL);
	in.mode = S_IFLNK | 0777;
	assert_int_equal(pool_meta_create(f->m, ROOT, "t", &in, NULL), -EINVAL);
	assert_int_equal(pool_meta_create(f->m, ROOT, "t", &in, ""), -ENOENT);
	in.mode = 0644; /* no file type */
	assert_int_equal(pool_meta_create(f->m, ROOT, "t", &in, NULL), -EINVAL);
	in.mode = S_IFREG | 0644;
	in.npos = LAYOUT_MAX_POSITIONS + 1;
	assert_int_equal(pool_meta_create(f->m, ROOT, "t", &in, NULL), -EINVAL);
	assert_int_equal(pool_meta_txn(f->m), txn);

	/* 255 bytes is fine. */
	longname[255] = '\0';
	mk(f->m, ROOT, longname, S_IFREG | 0600);
	assert_true(look(f->m, ROOT, longname) > 0);
}

struct seen {
	int n, stop_after;
	uint64_t cookie[64];
	char name[64][16];
};

static int collect(void *arg, const char *name, const struct pool_inode *in, uint64_t cookie)
{
	struct seen *s = arg;

	(void)in;
	if (s->n == s->stop_after)
		return 1;
	s->cookie[s->n] = cookie;
	snprintf(s->name[s->n], sizeof(s->name[0]), "%s", name);
	s->n++;
	return 0;
}

static int fail_cb(void *arg, const char *name, const struct pool_inode *in, uint64_t cookie)
{
	(void)arg;
	(void)name;
	(void)in;
	(void)cookie;
	return -ENOSPC;
}

static void test_readdir_basic(void **state)
{
	struct fix *f = *state;
	struct seen s = {.stop_after = 64};
	uint64_t d, file;

	open_n(f, 1);
	d = mk(f->m, ROOT, "d", S_IFDIR | 0755);
	assert_int_equal(pool_meta_readdir(f->m, d, 0, collect, &s), 0);
	assert_int_equal(s.n, 0);
	file = mk(f->m, d, "c", S_IFREG | 0644);
	mk(f->m, d, "a", S_IFREG | 0644);
	mk(f->m, d, "b", S_IFDIR | 0755);

	/* Creation order, increasing cookies. */
	assert_int_equal(pool_meta_readdir(f->m, d, 0, collect, &s), 0);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.name[0], "c");
	assert_string_equal(s.name[1], "a");
	assert_string_equal(s.name[2], "b");
	assert_true(s.cookie[0] < s.cookie[1] && s.cookie[1] < s.cookie[2]);

	/* Resume after a cookie; stop when the callback says so. */
	struct seen t = {.stop_after = 64};
	assert_int_equal(pool_meta_readdir(f->m, d, s.cookie[0], collect, &t), 0);
	assert_int_equal(t.n, 2);
	assert_string_equal(t.name[0], "a");
	struct seen u = {.stop_after = 1};
	assert_int_equal(pool_meta_readdir(f->m, d, 0, collect, &u), 0);
	assert_int_equal(u.n, 1);
	struct seen v = {.stop_after = 64};
	assert_int_equal(pool_meta_readdir(f->m, d, s.cookie[2], collect, &v), 0);
	assert_int_equal(v.n, 0);

	assert_int_equal(pool_meta_readdir(f->m, d, 0, fail_cb, NULL), -ENOSPC);
	assert_int_equal(pool_meta_readdir(f->m, file, 0, collect, &s), -ENOTDIR);
	assert_int_equal(pool_meta_readdir(f->m, 4242, 0, collect, &s), -ENOENT);
}

static void test_nlink_unlink_rmdir(void **state)
{
	struct fix *f = *state;
	struct pool_inode in, out;
	uint64_t a, b, x, rm;

	open_n(f, 1);
	a = mk(f->m, ROOT, "a", S_IFDIR | 0755);
	b = mk(f->m, a, "b", S_IFDIR | 0755);
	mk(f->m, a, "c", S_IFDIR | 0755);
	x = mk(f->m, b, "x", S_IFREG | 0644);
	assert_int_equal(get(f->m, ROOT).nlink, 3);
	assert_int_equal(get(f->m, a).nlink, 4);
	assert_int_equal(get(f->m, b).nlink, 2);

	assert_int_equal(pool_meta_rmdir(f->m, a, "b", NOW(30), &rm), -ENOTEMPTY);
	assert_int_equal(pool_meta_rmdir(f->m, b, "x", NOW(30), &rm), -ENOTDIR);
	assert_int_equal(pool_meta_rmdir(f->m, a, "zz", NOW(30), &rm), -ENOENT);
	assert_int_equal(pool_meta_unlink(f->m, ROOT, "a", NOW(30), &out), -EISDIR);
	assert_int_equal(pool_meta_unlink(f->m, b, "zz", NOW(30), &out), -ENOENT);
	assert_int_equal(pool_meta_unlink(f->m, x, "zz", NOW(30), &out), -ENOTDIR);

	assert_int_equal(pool_meta_unlink(f->m, b, "x", NOW(31), &out), 0);
	assert_int_equal(out.ino, x);
	assert_int_equal(out.nlink, 0);
	assert_int_equal(out.ctime_ns, NOW(31));
	in = get(f->m, b);
	assert_int_equal(in.mtime_ns, NOW(31));
	assert_int_equal(in.ctime_ns, NOW(31));
	assert_int_equal(in.nlink, 2);

	assert_int_equal(pool_meta_rmdir(f->m, a, "b", NOW(32), &rm), 0);
	assert_int_equal(rm, b);
	in = get(f->m, a);
	assert_int_equal(in.nlink, 3);
	assert_int_equal(in.mtime_ns, NOW(32));
	/* A removed directory lives on (it may be open) but takes no entries. */
	in = get(f->m, b);
	assert_int_equal(in.nlink, 0);
	memset(&in, 0, sizeof(in));
	in.mode = S_IFREG | 0644;
	assert_int_equal(pool_meta_create(f->m, b, "new", &in, NULL), -ENOENT);
	assert_int_equal(pool_meta_rmdir(f->m, a, "c", NOW(33), &rm), 0);
	assert_int_equal(get(f->m, a).nlink, 2);
	assert_int_equal(pool_meta_rmdir(f->m, ROOT, "a", NOW(34), &rm), 0);
	assert_int_equal(get(f->m, ROOT).nlink, 2);
	close_m(f);
	check_consistency(f->db[0]);
}

/* ---- rename -------------------------------------------------------------------- */

static void test_rename_files(void **state)
{
	struct fix *f = *state;
	struct pool_inode r, in;
	uint64_t d1, d2, a, b, c;

	open_n(f, 1);
	d1 = mk(f->m, ROOT, "d1", S_IFDIR | 0755);
	d2 = mk(f->m, ROOT, "d2", S_IFDIR | 0755);
	a = mk(f->m, d1, "a", S_IFREG | 0644);
	b = mk(f->m, d2, "b", S_IFREG | 0644);
	c = mk(f->m, d2, "c", S_IFREG | 0644);

	/* Within a directory. */
	assert_int_equal(pool_meta_rename(f->m, d1, "a", d1, "a2", 0, NOW(40), &r), 0);
	assert_int_equal(r.ino, 0);
	assert_int_equal(look(f->m, d1, "a"), 0);
	assert_int_equal(look(f->m, d1, "a2"), a);
	in = get(f->m, a);
	assert_int_equal(in.ctime_ns, NOW(40));
	assert_int_equal(in.nlink, 1);
	assert_int_equal(get(f->m, d1).mtime_ns, NOW(40));

	/* Across directories: both parents touched, no link count change. */
	assert_int_equal(pool_meta_rename(f->m, d1, "a2", d2, "a", 0, NOW(41), &r), 0);
	assert_int_equal(look(f->m, d2, "a"), a);
	assert_int_equal(get(f->m, d1).mtime_ns, NOW(41));
	assert_int_equal(get(f->m, d2).ctime_ns, NOW(41));
	assert_int_equal(get(f->m, d1).nlink, 2);
	assert_int_equal(get(f->m, d2).nlink, 2);

	/* Over an existing file: it is returned with nlink 0 and stays an orphan. */
	assert_int_equal(pool_meta_rename(f->m, d2, "a", d2, "b", 0, NOW(42), &r), 0);
	assert_int_equal(r.ino, b);
	assert_int_equal(r.nlink, 0);
	assert_int_equal(r.ctime_ns, NOW(42));
	assert_int_equal(look(f->m, d2, "b"), a);
	assert_int_equal(look(f->m, d2, "a"), 0);
	assert_int_equal(get(f->m, b).nlink, 0);

	/* Over a file that has another link: nlink goes down by one. */
	assert_int_equal(pool_meta_link(f->m, c, d1, "c-link", NOW(43), &in), 0);
	assert_int_equal(pool_meta_rename(f->m, d2, "b", d2, "c", 0, NOW(44), &r), 0);
	assert_int_equal(r.ino, c);
	assert_int_equal(r.nlink, 1);
	assert_int_equal(look(f->m, d1, "c-link"), c);

	/* Errors. */
	assert_int_equal(pool_meta_rename(f->m, d2, "nope", d2, "x", 0, NOW(45), &r), -ENOENT);
	assert_int_equal(pool_meta_rename(f->m, d2, "c", 999, "x", 0, NOW(45), &r), -ENOENT);
	assert_int_equal(pool_meta_rename(f->m, d2, "c", a, "x", 0, NOW(45), &r), -ENOTDIR);
	assert_int_equal(pool_meta_rename(f->m, d2, "c", d2, "..", 0, NOW(45), &r), -EINVAL);
	assert_int_equal(pool_meta_rename(f->m, d2, "c", d2, "x", 8, NOW(45), &r), -EINVAL);
	close_m(f);
	check_consistency(f->db[0]);
}

static void test_rename_dirs(void **state)
{
	struct fix *f = *state;
	struct pool_inode r, in;
	uint64_t a, b, sub, empty, full, file1;

	open_n(f, 1);
	a = mk(f->m, ROOT, "a", S_IFDIR | 0755);
	b = mk(f->m, ROOT, "b", S_IFDIR | 0755);
	sub = mk(f->m, a, "sub", S_IFDIR | 0755);
	empty = mk(f->m, b, "empty", S_IFDIR | 0755);
	full = mk(f->m, b, "full", S_IFDIR | 0755);
	mk(f->m, full, "x", S_IFREG | 0644);
	file1 = mk(f->m, ROOT, "file1", S_IFREG | 0644);
	assert_int_equal(get(f->m, ROOT).nlink, 4);
	assert_int_equal(get(f->m, b).nlink, 4);

	/* A directory over an empty one in another parent. */
	assert_int_equal(pool_meta_rename(f->m, ROOT, "a", b, "empty", 0, NOW(50), &r), 0);
	assert_int_equal(r.ino, empty);
	assert_int_equal(r.nlink, 0);
	assert_int_equal(look(f->m, b, "empty"), a);
	assert_int_equal(look(f->m, a, "sub"), sub);
	assert_int_equal(get(f->m, ROOT).nlink, 3);
	assert_int_equal(get(f->m, b).nlink, 4);
	assert_int_equal(get(f->m, a).nlink, 3);
	assert_int_equal(get(f->m, a).ctime_ns, NOW(50));

	/* Over a non-empty directory; file over directory; directory over file. */
	assert_int_equal(pool_meta_rename(f->m, b, "empty", b, "full", 0, NOW(51), &r), -ENOTEMPTY);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "file1", b, "full", 0, NOW(51), &r), -EISDIR);
	assert_int_equal(pool_meta_rename(f->m, b, "full", ROOT, "file1", 0, NOW(51), &r),
			 -ENOTDIR);
	assert_int_equal(r.ino, 0);

	/* Into its own subtree, however deep; into itself. */
	assert_int_equal(pool_meta_rename(f->m, ROOT, "b", sub, "b", 0, NOW(52), &r), -EINVAL);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "b", full, "b", 0, NOW(52), &r), -EINVAL);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "b", b, "b", 0, NOW(52), &r), -EINVAL);
	/* Over its own ancestor: not empty. */
	assert_int_equal(pool_meta_rename(f->m, a, "sub", ROOT, "b", 0, NOW(52), &r), -ENOTEMPTY);

	/* Onto itself, and between two links of one file: nothing happens. */
	uint64_t txn = pool_meta_txn(f->m);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "b", ROOT, "b", 0, NOW(53), &r), 0);
	assert_int_equal(pool_meta_link(f->m, file1, ROOT, "file1b", NOW(53), &in), 0);
	txn = pool_meta_txn(f->m);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "file1", ROOT, "file1b", 0, NOW(54), &r), 0);
	assert_int_equal(r.ino, 0);
	assert_int_equal(look(f->m, ROOT, "file1"), file1);
	assert_int_equal(look(f->m, ROOT, "file1b"), file1);
	assert_int_equal(get(f->m, file1).nlink, 2);
	assert_int_equal(pool_meta_txn(f->m), txn);

	/* A subdirectory moving up: link counts follow; the new place counts
	 * for later subtree checks. */
	assert_int_equal(pool_meta_rename(f->m, b, "full", ROOT, "full2", 0, NOW(55), &r), 0);
	assert_int_equal(get(f->m, b).nlink, 3);
	assert_int_equal(get(f->m, ROOT).nlink, 4);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "full2", sub, "f", 0, NOW(56), &r), 0);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "b", full, "b", 0, NOW(57), &r), -EINVAL);
	assert_int_equal(get(f->m, sub).nlink, 3);
	assert_int_equal(get(f->m, ROOT).nlink, 3);
	close_m(f);
	check_consistency(f->db[0]);
}

static void test_rename_flags(void **state)
{
	struct fix *f = *state;
	struct pool_inode r, in;
	uint64_t p, d2, fl, g, q, d3;

	open_n(f, 1);
	p = mk(f->m, ROOT, "p", S_IFDIR | 0755);
	fl = mk(f->m, ROOT, "f", S_IFREG | 0644);
	g = mk(f->m, ROOT, "g", S_IFREG | 0644);
	d2 = mk(f->m, p, "d2", S_IFDIR | 0755);

	/* NOREPLACE. */
	assert_int_equal(
	    pool_meta_rename(f->m, ROOT, "f", ROOT, "g", RENAME_NOREPLACE, NOW(60), &r), -EEXIST);
	assert_int_equal(look(f->m, ROOT, "g"), g);
	assert_int_equal(
	    pool_meta_rename(f->m, ROOT, "g", ROOT, "h", RENAME_NOREPLACE, NOW(60), &r), 0);
	assert_int_equal(look(f->m, ROOT, "h"), g);

	/* EXCHANGE needs both; not with NOREPLACE; no other flags. */
	assert_int_equal(
	    pool_meta_rename(f->m, ROOT, "f", ROOT, "zz", RENAME_EXCHANGE, NOW(61), &r), -ENOENT);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "f", ROOT, "h",
					  RENAME_EXCHANGE | RENAME_NOREPLACE, NOW(61), &r),
			 -EINVAL);
	assert_int_equal(
	    pool_meta_rename(f->m, ROOT, "f", ROOT, "h", 4 /* WHITEOUT */, NOW(61), &r), -EINVAL);

	/* A file and a directory swap between parents: ".." link counts move. */
	assert_int_equal(get(f->m, ROOT).nlink, 3);
	assert_int_equal(get(f->m, p).nlink, 3);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "f", p, "d2", RENAME_EXCHANGE, NOW(62), &r),
			 0);
	assert_int_equal(r.ino, 0);
	assert_int_equal(look(f->m, ROOT, "f"), d2);
	assert_int_equal(look(f->m, p, "d2"), fl);
	assert_int_equal(get(f->m, ROOT).nlink, 4);
	assert_int_equal(get(f->m, p).nlink, 2);
	assert_int_equal(get(f->m, fl).ctime_ns, NOW(62));
	assert_int_equal(get(f->m, d2).ctime_ns, NOW(62));
	assert_int_equal(get(f->m, p).mtime_ns, NOW(62));
	assert_int_equal(get(f->m, ROOT).mtime_ns, NOW(62));
	assert_int_equal(get(f->m, fl).nlink, 1);
	assert_int_equal(get(f->m, d2).nlink, 2);

	/* Two directories swap between parents: counts unchanged. */
	q = mk(f->m, ROOT, "q", S_IFDIR | 0755);
	d3 = mk(f->m, q, "d3", S_IFDIR | 0755);
	mk(f->m, d3, "inside", S_IFREG | 0644);
	assert_int_equal(pool_meta_rename(f->m, q, "d3", ROOT, "f", RENAME_EXCHANGE, NOW(63), &r),
			 0);
	assert_int_equal(look(f->m, ROOT, "f"), d3);
	assert_int_equal(look(f->m, q, "d3"), d2);
	assert_true(look(f->m, d3, "inside") > 0);
	assert_int_equal(get(f->m, q).nlink, 3);
	assert_int_equal(get(f->m, ROOT).nlink, 5);

	/* Exchange with an ancestor or a descendant: a loop. */
	assert_int_equal(pool_meta_rename(f->m, q, "d3", ROOT, "q", RENAME_EXCHANGE, NOW(64), &r),
			 -EINVAL);
	assert_int_equal(pool_meta_rename(f->m, ROOT, "q", q, "d3", RENAME_EXCHANGE, NOW(64), &r),
			 -EINVAL);
	/* Exchange within one directory; and two links of one file. */
	assert_int_equal(pool_meta_rename(f->m, ROOT, "h", ROOT, "p", RENAME_EXCHANGE, NOW(65), &r),
			 0);
	assert_int_equal(look(f->m, ROOT, "h"), p);
	assert_int_equal(look(f->m, ROOT, "p"), g);
	assert_int_equal(get(f->m, ROOT).nlink, 5);
	assert_int_equal(pool_meta_link(f->m, g, ROOT, "g2", NOW(66), &in), 0);
	assert_int_equal(
	    pool_meta_rename(f->m, ROOT, "p", ROOT, "g2", RENAME_EXCHANGE, NOW(67), &r), 0);
	assert_int_equal(look(f->m, ROOT, "p"), g);
	close_m(f);
	check_consistency(f->db[0]);
}

/* ---- links, orphans, purge ---------------------------------------------------------- */

struct orphan_list {
	int n;
	uint64_t ino[16];
};

static int collect_orphan(void *arg, const struct pool_inode *in)
{
	struct orphan_list *o = arg;

	assert_int_equal(in->nlink, 0);
	o->ino[o->n++] = in->ino;
	return 0;
}

struct purger {
	struct pool_meta *m;
	int n;
};

/* Purging from inside the iteration must work: the lock is not held. */
static int purge_orphan(void *arg, const struct pool_inode *in)
{
	struct purger *p = arg;

	p->n++;
	return pool_meta_purge(p->m, in->ino);
}

static void test_links_orphans_purge(void **state)
{
	struct fix *f = *state;
	struct pool_inode in, out;
	struct orphan_list o = {0};
	uint64_t d, x, y, n0, n1;

	open_n(f, 1);
	d = mk(f->m, ROOT, "d", S_IFDIR | 0755);
	x = mk(f->m, ROOT, "x", S_IFREG | 0644);
	y = mk(f->m, ROOT, "y", S_IFLNK | 0777);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.k", "v", 1, 0), 0);

	assert_int_equal(pool_meta_link(f->m, x, d, "x2", NOW(70), &out), 0);
	assert_int_equal(out.nlink, 2);
	assert_int_equal(out.ctime_ns, NOW(70));
	assert_int_equal(get(f->m, x).nlink, 2);
	assert_int_equal(get(f->m, d).mtime_ns, NOW(70));
	assert_int_equal(get(f->m, d).nlink, 2);
	assert_int_equal(pool_meta_link(f->m, x, d, "x2", NOW(71), &out), -EEXIST);
	assert_int_equal(pool_meta_link(f->m, d, ROOT, "dlink", NOW(71), &out), -EPERM);
	assert_int_equal(pool_meta_link(f->m, 9999, ROOT, "n", NOW(71), &out), -ENOENT);
	assert_int_equal(pool_meta_link(f->m, x, 9999, "n", NOW(71), &out), -ENOENT);
	assert_int_equal(pool_meta_link(f->m, x, y, "n", NOW(71), &out), -ENOTDIR);

	assert_int_equal(pool_meta_unlink(f->m, ROOT, "x", NOW(72), &out), 0);
	assert_int_equal(out.nlink, 1);
	assert_int_equal(pool_meta_orphans(f->m, collect_orphan, &o), 0);
	assert_int_equal(o.n, 0);
	assert_int_equal(pool_meta_unlink(f->m, d, "x2", NOW(73), &out), 0);
	assert_int_equal(out.nlink, 0);
	assert_int_equal(pool_meta_unlink(f->m, ROOT, "y", NOW(73), &out), 0);
	assert_int_equal(pool_meta_lookup(f->m, d, "x2", &in), -ENOENT);

	/* Orphans are still there for whoever has them open. */
	in = get(f->m, x);
	assert_int_equal(in.nlink, 0);
	assert_int_equal(in.npos, 3);
	assert_int_equal(pool_meta_getxattr(f->m, x, "user.k", NULL, 0), 1);
	assert_int_equal(pool_meta_link(f->m, x, ROOT, "back", NOW(74), &out), -ENOENT);
	assert_int_equal(pool_meta_orphans(f->m, collect_orphan, &o), 0);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.ino[0], x);
	assert_int_equal(o.ino[1], y);

	assert_int_equal(pool_meta_count(f->m, &n0), 0);
	assert_int_equal(pool_meta_purge(f->m, d), -EBUSY);
	struct purger p = {.m = f->m};
	assert_int_equal(pool_meta_orphans(f->m, purge_orphan, &p), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(pool_meta_count(f->m, &n1), 0);
	assert_int_equal(n1, n0 - 2);
	assert_int_equal(pool_meta_get(f->m, x, &in), -ENOENT);
	assert_int_equal(pool_meta_purge(f->m, x), -ENOENT);
	o.n = 0;
	assert_int_equal(pool_meta_orphans(f->m, collect_orphan, &o), 0);
	assert_int_equal(o.n, 0);

	/* Numbers are never reused, even after the highest was purged. */
	uint64_t z = mk(f->m, ROOT, "z", S_IFREG | 0644);
	assert_true(z > y);
	assert_int_equal(pool_meta_unlink(f->m, ROOT, "z", NOW(75), &out), 0);
	assert_int_equal(pool_meta_purge(f->m, z), 0);
	close_m(f);
	open_n(f, 1);
	assert_true(mk(f->m, ROOT, "w", S_IFREG | 0644) > z);
	close_m(f);
	assert_int_equal(sql_int(f->db[0], "SELECT count(*) FROM xattrs"), 0);
	assert_int_equal(sql_int(f->db[0], "SELECT count(*) FROM symlinks"), 0);
	check_consistency(f->db[0]);
}

/* ---- xattrs, setattr ----------------------------------------------------------------- */

static void test_xattrs(void **state)
{
	struct fix *f = *state;
	char buf[128], big[70000];
	uint64_t x;

	open_n(f, 1);
	x = mk(f->m, ROOT, "x", S_IFREG | 0644);
	assert_int_equal(pool_meta_getxattr(f->m, x, "user.a", buf, sizeof(buf)), -ENODATA);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.b", "hello", 5, XATTR_CREATE), 0);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.b", "again", 5, XATTR_CREATE), -EEXIST);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.a", "v", 1, XATTR_REPLACE), -ENODATA);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.b", "bye", 3, XATTR_REPLACE), 0);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.a", NULL, 0, 0), 0);

	/* get: size 0 asks, too small is ERANGE, exact fits. */
	assert_int_equal(pool_meta_getxattr(f->m, x, "user.b", NULL, 0), 3);
	assert_int_equal(pool_meta_getxattr(f->m, x, "user.b", buf, 2), -ERANGE);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(pool_meta_getxattr(f->m, x, "user.b", buf, 3), 3);
	assert_memory_equal(buf, "bye", 3);
	assert_int_equal(pool_meta_getxattr(f->m, x, "user.a", buf, sizeof(buf)), 0);

	/* list: sorted, NUL-separated, same size rules. */
	assert_int_equal(pool_meta_listxattr(f->m, x, NULL, 0), 14);
	assert_int_equal(pool_meta_listxattr(f->m, x, buf, 13), -ERANGE);
	assert_int_equal(pool_meta_listxattr(f->m, x, buf, sizeof(buf)), 14);
	assert_memory_equal(buf, "user.a\0user.b\0", 14);

	assert_int_equal(pool_meta_removexattr(f->m, x, "user.a"), 0);
	assert_int_equal(pool_meta_removexattr(f->m, x, "user.a"), -ENODATA);
	assert_int_equal(pool_meta_listxattr(f->m, x, buf, sizeof(buf)), 7);

	/* Limits and errors. */
	memset(big, 'v', sizeof(big));
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.big", big, 65537, 0), -E2BIG);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.big", big, 65536, 0), 0);
	assert_int_equal(pool_meta_getxattr(f->m, x, "user.big", NULL, 0), 65536);
	assert_int_equal(pool_meta_setxattr(f->m, x, "", "v", 1, 0), -ERANGE);
	big[256] = '\0';
	assert_int_equal(pool_meta_setxattr(f->m, x, big, "v", 1, 0), -ERANGE);
	assert_int_equal(pool_meta_setxattr(f->m, x, "user.c", "v", 1, 0x10), -EINVAL);
	assert_int_equal(pool_meta_setxattr(f->m, 999, "user.c", "v", 1, 0), -ENOENT);
	assert_int_equal(pool_meta_getxattr(f->m, 999, "user.c", NULL, 0), -ENOENT);
	assert_int_equal(pool_meta_listxattr(f->m, 999, NULL, 0), -ENOENT);
	assert_int_equal(pool_meta_removexattr(f->m, 999, "user.c"), -ENOENT);
	/* Directories carry them too. */
	assert_int_equal(pool_meta_setxattr(f->m, ROOT, "user.r", "1", 1, 0), 0);
	assert_int_equal(pool_meta_getxattr(f->m, ROOT, "user.r", buf, sizeof(buf)), 1);
}

static void test_setattr(void **state)
{
	struct fix *f = *state;
	struct pool_inode in, many[3];
	uint64_t x, y;

	open_n(f, 1);
	x = mk(f->m, ROOT, "x", S_IFREG | 0644);
	y = mk(f->m, ROOT, "y", S_IFREG | 0644);
	in = get(f->m, x);
	in.mode = S_IFREG | 04711;
	in.uid = 5;
	in.gid = 6;
	in.size = 1ull << 40;
	in.atime_ns = NOW(80);
	in.mtime_ns = -NOW(1); /* before 1970 is legal */
	in.ctime_ns = NOW(82);
	in.nlink = 77; /* not ours to set */
	in.npos = 1;
	assert_int_equal(pool_meta_setattr(f->m, &in), 0);
	in = get(f->m, x);
	assert_int_equal(in.mode, S_IFREG | 04711);
	assert_int_equal(in.uid, 5);
	assert_int_equal(in.gid, 6);
	assert_int_equal(in.size, 1ull << 40);
	assert_int_equal(in.mtime_ns, -NOW(1));
	assert_int_equal(in.ctime_ns, NOW(82));
	assert_int_equal(in.nlink, 1);
	assert_int_equal(in.npos, 3);

	/* The type cannot change; a mode without type bits keeps it. */
	in.mode = S_IFDIR | 0755;
	assert_int_equal(pool_meta_setattr(f->m, &in), -EINVAL);
	in.mode = 0600;
	assert_int_equal(pool_meta_setattr(f->m, &in), 0);
	assert_int_equal(get(f->m, x).mode, S_IFREG | 0600);
	in.size = (uint64_t)INT64_MAX + 1;
	assert_int_equal(pool_meta_setattr(f->m, &in), -EFBIG);
	in = get(f->m, x);
	in.ino = 999;
	assert_int_equal(pool_meta_setattr(f->m, &in), -ENOENT);

	/* Write-back: one transaction; inodes gone meanwhile are skipped. */
	uint64_t txn = pool_meta_txn(f->m);
	many[0] = get(f->m, x);
	many[0].size = 100;
	many[1] = get(f->m, y);
	many[1].ino = 4242;
	many[2] = get(f->m, y);
	many[2].size = 200;
	assert_int_equal(pool_meta_setattr_many(f->m, many, 3), 0);
	assert_int_equal(pool_meta_txn(f->m), txn + 1);
	assert_int_equal(get(f->m, x).size, 100);
	assert_int_equal(get(f->m, y).size, 200);
	assert_int_equal(pool_meta_setattr_many(f->m, many, 0), 0);
}

/* ---- big directory, stable cookies ------------------------------------------------------ */

#define BIG 10000

struct pager {
	int page, taken;
	uint64_t last;
	unsigned char *seen; /* per file index: times seen */
	int others;	     /* entries not named f%05d (added while listing) */
	uint64_t prev_cookie;
};

static int take_page(void *arg, const char *name, const struct pool_inode *in, uint64_t cookie)
{
	struct pager *p = arg;
	int i;

	(void)in;
	if (p->taken == p->page)
		return 1;
	assert_true(cookie > p->prev_cookie);
	p->prev_cookie = cookie;
	if (sscanf(name, "f%05d", &i) == 1)
		p->seen[i]++;
	else
		p->others++;
	p->taken++;
	p->last = cookie;
	return 0;
}

static void test_readdir_big_stable(void **state)
{
	struct fix *f = *state;
	struct pool_inode out;
	unsigned char *gone = calloc(BIG, 1);
	struct pager p = {.page = 100, .seen = calloc(BIG, 1)};
	char name[64];
	uint64_t d;
	int pages = 0;

	open_n(f, 1);
	d = mk(f->m, ROOT, "big", S_IFDIR | 0755);
	for (int i = 0; i < BIG; i++) {
		snprintf(name, sizeof(name), "f%05d", i);
		mk(f->m, d, name, S_IFREG | 0644);
	}
	/* Page through while deleting entries behind and ahead of the cursor
	 * and adding new ones: survivors are listed exactly once, deleted
	 * entries at most once. */
	do {
		p.taken = 0;
		assert_int_equal(pool_meta_readdir(f->m, d, p.last, take_page, &p), 0);
		pages++;
		int k = pages * 37 % BIG;
		for (int j = 0; j < 3; j++, k = (k + 4999) % BIG) {
			snprintf(name, sizeof(name), "f%05d", k);
			if (!gone[k])
				assert_int_equal(pool_meta_unlink(f->m, d, name, NOW(90), &out), 0);
			gone[k] = 1;
		}
		snprintf(name, sizeof(name), "n%05d", pages);
		mk(f->m, d, name, S_IFREG | 0644);
	} while (p.taken == p.page);
	int deleted = 0;
	for (int i = 0; i < BIG; i++) {
		deleted += gone[i];
		if (!gone[i])
			assert_int_equal(p.seen[i], 1);
		else
			assert_true(p.seen[i] <= 1);
	}
	/* New entries get later cookies, so this listing sees all of them
	 * but the one added after it ended. */
	assert_int_equal(p.others, pages - 1);
	assert_true(deleted > 100);

	/* A full listing in one go after all that. */
	memset(p.seen, 0, BIG);
	p = (struct pager){.page = 1 << 30, .seen = p.seen};
	assert_int_equal(pool_meta_readdir(f->m, d, 0, take_page, &p), 0);
	assert_int_equal(p.taken, BIG - deleted + pages);
	free(p.seen);
	free(gone);
}

/* ---- persistence and recovery --------------------------------------------------------- */

static void build_tree(struct pool_meta *m)
{
	struct pool_inode out;
	uint64_t a = mk(m, ROOT, "a", S_IFDIR | 0755);
	uint64_t x = mk(m, a, "x", S_IFREG | 0644);

	mk(m, a, "s", S_IFLNK | 0777);
	mk(m, ROOT, "b", S_IFDIR | 0700);
	assert_int_equal(pool_meta_link(m, x, ROOT, "x-again", NOW(11), &out), 0);
	assert_int_equal(pool_meta_setxattr(m, x, "user.tag", "\0\1\2", 3, 0), 0);
	for (int i = 0; i < 300; i++) { /* a few pages of rows */
		char name[64];
		snprintf(name, sizeof(name), "file-with-a-longish-name-%03d", i);
		mk(m, a, name, S_IFREG | 0644);
	}
	assert_int_equal(pool_meta_unlink(m, a, "file-with-a-longish-name-007", NOW(12), &out), 0);
}

/* What a foreign connection gets when it tries to write replica `path`
 * now, without waiting: SQLITE_OK or SQLITE_BUSY. */
static int foreign_write(const char *path)
{
	sqlite3 *db;
	int rc;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	rc = sqlite3_exec(db, "BEGIN IMMEDIATE; CREATE TABLE foreign_t(x); ROLLBACK", NULL, NULL,
			  NULL);
	sqlite3_close(db);
	return rc;
}

/* One node: pool_meta_exclusive keeps every replica's locks from the first
 * transaction until close (no lock calls per transaction), so nothing else
 * can write a replica meanwhile; creates still reach every replica, and the
 * locks go with pool_meta_close. */
static void test_exclusive(void **state)
{
	struct fix *f = *state;
	uint64_t ino[50];
	char name[16];

	open_n(f, NREP);
	mk_at(f->m, ROOT, "before", S_IFREG | 0644, 1);
	for (int i = 0; i < NREP; i++)
		assert_int_equal(foreign_write(f->db[i]), SQLITE_OK); /* normal locking */
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		ino[i] = mk_at(f->m, ROOT, name, S_IFREG | 0644, 2);
	}
	for (int i = 0; i < NREP; i++)
		assert_int_equal(foreign_write(f->db[i]), SQLITE_BUSY);
	close_m(f);
	for (int i = 0; i < NREP; i++) {
		assert_int_equal(foreign_write(f->db[i]), SQLITE_OK);
		assert_int_equal(sql_int(f->db[i], "SELECT count(*) FROM dentries"), 51);
		check_consistency(f->db[i]);
	}
	open_n(f, NREP);
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		assert_int_equal(look(f->m, ROOT, name), ino[i]);
	}
}

static void test_persistence(void **state)
{
	struct fix *f = *state;
	char *before, *after, buf[8];
	uint64_t txn, a;

	open_n(f, 1);
	build_tree(f->m);
	txn = pool_meta_txn(f->m);
	assert_int_equal(pool_meta_sync(f->m), 0);
	close_m(f);
	before = dump(f->db[0]);

	open_n(f, 1);
	assert_int_equal(pool_meta_txn(f->m), txn);
	a = look(f->m, ROOT, "a");
	assert_true(a > 0);
	assert_int_equal(pool_meta_readlink(f->m, look(f->m, a, "s"), buf, sizeof(buf)), 6);
	assert_int_equal(pool_meta_getxattr(f->m, look(f->m, a, "x"), "user.tag", buf, 8), 3);
	assert_memory_equal(buf, "\0\1\2", 3);
	assert_int_equal(get(f->m, look(f->m, a, "x")).nlink, 2);
	close_m(f);
	after = dump(f->db[0]);
	assert_string_equal(before, after);
	free(before);
	free(after);
	check_consistency(f->db[0]);
}

static void test_replicas_identical_and_missing_restored(void **state)
{
	struct fix *f = *state;
	struct capture c;
	char *log;

	open_n(f, NREP);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	build_tree(f->m);
	uint64_t txn = pool_meta_txn(f->m);
	close_m(f);
	assert_replicas_equal(f, NREP);

	assert_int_equal(unlink(f->db[1]), 0);
	capture_begin(&c);
	open_n(f, NREP);
	log = capture_end(&c);
	assert_non_null(strstr(log, f->db[1]));
	assert_non_null(strstr(log, "restored from"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	assert_int_equal(pool_meta_txn(f->m), txn);
	close_m(f);
	assert_replicas_equal(f, NREP);
	check_consistency(f->db[1]);
}

static void test_stale_restored(void **state)
{
	struct fix *f = *state;
	char old[PATH_MAX + 8], *log;
	struct capture c;

	open_n(f, NREP);
	build_tree(f->m);
	close_m(f);
	snprintf(old, sizeof(old), "%s.old", f->db[2]);
	copy_file(f->db[2], old);

	open_n(f, NREP);
	mk(f->m, ROOT, "newer", S_IFREG | 0644);
	uint64_t txn = pool_meta_txn(f->m);
	close_m(f);
	copy_file(old, f->db[2]); /* an old version comes back */

	capture_begin(&c);
	open_n(f, NREP);
	log = capture_end(&c);
	char expect[PATH_MAX * 2 + 64];
	snprintf(expect, sizeof(expect), "metadata replica %s restored from %s (txn %llu)",
		 f->db[2], f->db[0], (unsigned long long)txn);
	assert_non_null(strstr(log, expect));
	free(log);
	assert_true(look(f->m, ROOT, "newer") > 0);
	assert_int_equal(pool_meta_txn(f->m), txn);
	close_m(f);
	assert_replicas_equal(f, NREP);

	/* The newest may be any replica, not only the first. */
	snprintf(old, sizeof(old), "%s.old", f->db[0]);
	copy_file(f->db[0], old);
	open_n(f, NREP);
	mk(f->m, ROOT, "newest", S_IFREG | 0644);
	close_m(f);
	copy_file(old, f->db[0]);
	open_n(f, NREP);
	assert_true(look(f->m, ROOT, "newest") > 0);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

static void test_garbage_one_restored(void **state)
{
	struct fix *f = *state;
	char bad[PATH_MAX + 8], *log;
	struct capture c;

	open_n(f, NREP);
	build_tree(f->m);
	close_m(f);
	write_garbage(f->db[1], 20000, 7);
	capture_begin(&c);
	open_n(f, NREP);
	log = capture_end(&c);
	assert_non_null(strstr(log, f->db[1]));
	assert_non_null(strstr(log, "unusable"));
	assert_non_null(strstr(log, "restored from"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	close_m(f);
	assert_replicas_equal(f, NREP);
	snprintf(bad, sizeof(bad), "%s.bad", f->db[1]);
	assert_true(file_exists(bad));

	/* A valid SQLite file that is not ours is treated the same way. */
	unlink(f->db[0]);
	sql(f->db[0], "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
	capture_begin(&c);
	open_n(f, NREP);
	log = capture_end(&c);
	assert_non_null(strstr(log, "application_id"));
	free(log);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

static void test_garbage_all_refused(void **state)
{
	struct fix *f = *state;
	struct pool_meta *m = NULL;
	struct capture c;
	char *log;

	open_n(f, NREP);
	build_tree(f->m);
	close_m(f);
	for (int i = 0; i < NREP; i++)
		write_garbage(f->db[i], 8192, (unsigned)i);
	capture_begin(&c);
	int rc = pool_meta_open(f->dirs, NREP, 0, 0, &m, f->err, sizeof(f->err));
	log = capture_end(&c);
	free(log);
	assert_int_equal(rc, -EIO);
	assert_null(m);
	fprintf(stderr, "refused: %s\n", f->err);
	for (int i = 0; i < NREP; i++)
		assert_non_null(strstr(f->err, f->db[i]));
	/* Nothing was touched: still the same garbage, no new store. */
	for (int i = 0; i < NREP; i++) {
		struct stat sb;
		assert_int_equal(stat(f->db[i], &sb), 0);
		assert_int_equal(sb.st_size, 8192);
	}

	/* Garbage in one, the others missing: refused as well. */
	unlink(f->db[1]);
	unlink(f->db[2]);
	rc = pool_meta_open(f->dirs, NREP, 0, 0, &m, f->err, sizeof(f->err));
	assert_int_equal(rc, -EIO);
	assert_non_null(strstr(f->err, f->db[0]));
}

static void truncate_half(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	assert_true(sb.st_size > 8 * 4096);
	assert_int_equal(truncate(path, sb.st_size / 2), 0);
}

static void test_truncated(void **state)
{
	struct fix *f = *state;
	struct pool_meta *m = NULL;
	struct capture c;
	char *log;

	open_n(f, NREP);
	build_tree(f->m);
	close_m(f);
	truncate_half(f->db[0]);
	capture_begin(&c);
	open_n(f, NREP);
	log = capture_end(&c);
	assert_non_null(strstr(log, f->db[0]));
	assert_non_null(strstr(log, "restored from"));
	free(log);
	close_m(f);
	assert_replicas_equal(f, NREP);

	/* Alone, a truncated replica is refused, by name. */
	truncate_half(f->db[0]);
	capture_begin(&c);
	int rc = pool_meta_open(f->dirs, 1, 0, 0, &m, f->err, sizeof(f->err));
	free(capture_end(&c));
	assert_int_equal(rc, -EIO);
	assert_non_null(strstr(f->err, f->db[0]));
}

static void test_invalid_rows(void **state)
{
	struct fix *f = *state;
	struct pool_inode in;
	struct seen s = {.stop_after = 64};
	uint64_t a, b, c, d, e, z, ok, sub;
	char q[PATH_MAX + 128], *log, buf[16];
	struct capture cap;

	open_n(f, 1);
	a = mk(f->m, ROOT, "a", S_IFREG | 0644);
	b = mk(f->m, ROOT, "b", S_IFREG | 0644);
	c = mk(f->m, ROOT, "c", S_IFREG | 0644);
	d = mk(f->m, ROOT, "d", S_IFREG | 0644);
	e = mk(f->m, ROOT, "e", S_IFLNK | 0777);
	z = mk(f->m, ROOT, "z", S_IFREG | 0644);
	sub = mk(f->m, ROOT, "sub", S_IFDIR | 0755);
	ok = mk(f->m, sub, "ok", S_IFREG | 0644);
	close_m(f);

	snprintf(q, sizeof(q),
		 "UPDATE inodes SET npos = 999 WHERE ino = %llu;"
		 "UPDATE inodes SET disks = x'0102' WHERE ino = %llu;"
		 "UPDATE inodes SET mode = 0 WHERE ino = %llu;"
		 "UPDATE inodes SET nlink = -5, uid = 'text' WHERE ino = %llu;"
		 "UPDATE symlinks SET target = '' WHERE ino = %llu;"
		 "UPDATE inodes SET nlink = 0 WHERE ino = %llu;"
		 "INSERT INTO dentries(parent, name, ino) VALUES(%llu, 'ghost', 99999)",
		 (unsigned long long)a, (unsigned long long)b, (unsigned long long)c,
		 (unsigned long long)d, (unsigned long long)e, (unsigned long long)z,
		 (unsigned long long)sub);
	sql(f->db[0], q);

	open_n(f, 1);
	capture_begin(&cap);
	assert_int_equal(pool_meta_get(f->m, a, &in), -EIO);
	assert_int_equal(pool_meta_lookup(f->m, ROOT, "a", &in), -EIO);
	assert_int_equal(pool_meta_get(f->m, b, &in), -EIO);
	assert_int_equal(pool_meta_get(f->m, c, &in), -EIO);
	assert_int_equal(pool_meta_get(f->m, d, &in), -EIO);
	assert_int_equal(pool_meta_readlink(f->m, e, buf, sizeof(buf)), -EIO);
	assert_int_equal(pool_meta_readdir(f->m, ROOT, 0, collect, &s), -EIO);
	assert_int_equal(pool_meta_readdir(f->m, sub, 0, collect, &s), -EIO);
	assert_int_equal(pool_meta_lookup(f->m, sub, "ghost", &in), -EIO);
	assert_int_equal(pool_meta_unlink(f->m, ROOT, "c", NOW(1), &in), -EIO);
	/* Linked but nlink 0: nothing may count it down below zero. */
	assert_int_equal(pool_meta_lookup(f->m, ROOT, "z", &in), -EIO);
	assert_int_equal(pool_meta_unlink(f->m, ROOT, "z", NOW(1), &in), -EIO);
	assert_int_equal(pool_meta_rename(f->m, sub, "ok", ROOT, "z", 0, NOW(1), &in), -EIO);
	assert_int_equal(get(f->m, z).nlink, 0);
	log = capture_end(&cap);
	snprintf(q, sizeof(q), "%s: inode %llu: impossible npos (999)", f->db[0],
		 (unsigned long long)a);
	assert_non_null(strstr(log, q));
	snprintf(q, sizeof(q), "inode %llu: impossible disks blob", (unsigned long long)b);
	assert_non_null(strstr(log, q));
	snprintf(q, sizeof(q), "inode %llu: impossible mode", (unsigned long long)c);
	assert_non_null(strstr(log, q));
	assert_non_null(strstr(log, "missing inode 99999"));
	free(log);

	/* Everything else still works. */
	assert_int_equal(get(f->m, ok).nlink, 1);
	assert_int_equal(look(f->m, sub, "ok"), ok);
	assert_int_equal(pool_meta_unlink(f->m, sub, "ok", NOW(2), &in), 0);
}

/* Make the replica's WAL a /dev/full: every write to it fails from now on,
 * as on a disk that filled up or died under an open file. */
static void break_wal(const char *dir)
{
	char want[PATH_MAX + 16], real[PATH_MAX], link[PATH_MAX], fdpath[300];
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int full = open("/dev/full", O_RDWR), done = 0;

	assert_non_null(realpath(dir, real));
	snprintf(want, sizeof(want), "%s/meta.db-wal", real);
	assert_non_null(d);
	assert_true(full >= 0);
	while ((de = readdir(d))) {
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%s", de->d_name);
		ssize_t n = readlink(fdpath, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (!strcmp(link, want)) {
			assert_true(dup2(full, atoi(de->d_name)) >= 0);
			done++;
		}
	}
	closedir(d);
	close(full);
	assert_int_equal(done, 1);
}

static void test_replica_fails_at_runtime(void **state)
{
	struct fix *f = *state;
	struct capture c;
	char *log;

	open_n(f, NREP);
	mk(f->m, ROOT, "before", S_IFREG | 0644);
	/* The first replica answers the reads: losing it must not lose a call. */
	break_wal(f->dir[0]);
	capture_begin(&c);
	for (int i = 0; i < 20; i++) {
		char name[64];
		snprintf(name, sizeof(name), "after%d", i);
		mk(f->m, ROOT, name, S_IFREG | 0644);
	}
	log = capture_end(&c);
	assert_non_null(strstr(log, f->db[0]));
	assert_non_null(strstr(log, "dropped"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP - 1);
	assert_true(look(f->m, ROOT, "before") > 0);
	assert_true(look(f->m, ROOT, "after0") > 0);
	assert_int_equal(pool_meta_sync(f->m), 0);
	uint64_t txn = pool_meta_txn(f->m);
	assert_int_equal(txn, 21);

	/* Then the second: one left, still going. */
	break_wal(f->dir[1]);
	capture_begin(&c);
	mk(f->m, ROOT, "last", S_IFREG | 0644);
	free(capture_end(&c));
	assert_int_equal(pool_meta_live_replicas(f->m), 1);
	close_m(f);
	check_consistency(f->db[2]);

	/* The next open takes the survivor and re-copies the others. */
	open_n(f, NREP);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	assert_int_equal(pool_meta_txn(f->m), txn + 1);
	assert_true(look(f->m, ROOT, "last") > 0);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

/* A read that fails on the first replica: the call is answered by the
 * next one, and the failed replica is out. */
static void test_reader_fails_on_read(void **state)
{
	struct fix *f = *state;
	struct pool_inode in;
	struct capture c;
	char *log, name[64];
	uint64_t ino[40];

	open_n(f, NREP);
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		ino[i] = mk(f->m, ROOT, name, S_IFREG | 0644);
	}
	/* Another connection commits a change and takes it back (SQLite skips
	 * writes that change nothing), so the store's page cache is stale and
	 * its next read must go to the (now failing) WAL. */
	sql(f->db[0], "UPDATE meta SET value = value + 1 WHERE key = 'format';"
		      "UPDATE meta SET value = value - 1 WHERE key = 'format'");
	break_wal(f->dir[0]);
	capture_begin(&c);
	assert_int_equal(pool_meta_lookup(f->m, ROOT, "f17", &in), 0);
	log = capture_end(&c);
	assert_int_equal(in.ino, ino[17]);
	assert_non_null(strstr(log, f->db[0]));
	assert_non_null(strstr(log, "dropped: read"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP - 1);
	for (int i = 0; i < 40; i++)
		assert_int_equal(get(f->m, ino[i]).ino, ino[i]);
	close_m(f);
	open_n(f, NREP);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

/* Byte-identical files, compared whole. */
static void assert_same_file(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	int ca, cb;

	assert_non_null(fa);
	assert_non_null(fb);
	do {
		ca = fgetc(fa);
		cb = fgetc(fb);
		assert_int_equal(ca, cb);
	} while (ca != EOF);
	fclose(fa);
	fclose(fb);
}

static void mk_many(struct fix *f, const char *prefix, int n, uint64_t *ino)
{
	char name[64];

	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s%d", prefix, i);
		uint64_t x = mk(f->m, ROOT, name, S_IFREG | 0644);
		if (ino)
			ino[i] = x;
	}
}

/* Hold every create window until a sync ends it.  Otherwise the window
 * timer may commit the creates before the failure is set up, or meet the
 * failure before the test captures what the store says of it (seen under
 * valgrind on a loaded machine). */
static void hold_windows(struct fix *f)
{
	pool_meta_set_window(f->m, 3600 * 1000000000LL, 100000);
}

/* One node: the statements run on the first replica only and the others
 * get its file writes (mirrors).  Every change still reaches every
 * replica, the files end byte for byte the same, and a second open starts
 * from them without copying. */
static void test_mirrors_identical(void **state)
{
	struct fix *f = *state;
	struct pool_inode out;
	uint64_t ino[300];

	open_n(f, NREP);
	mk_many(f, "old", 20, NULL);
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	mk_many(f, "f", 300, ino);
	for (int i = 0; i < 300; i += 3) {
		char name[64];
		snprintf(name, sizeof(name), "f%d", i);
		assert_int_equal(pool_meta_unlink(f->m, ROOT, name, NOW(20), &out), 0);
		assert_int_equal(pool_meta_purge(f->m, out.ino), 0);
	}
	assert_int_equal(pool_meta_sync(f->m), 0);
	uint64_t txn = pool_meta_txn(f->m);
	close_m(f);
	for (int i = 1; i < NREP; i++)
		assert_same_file(f->db[0], f->db[i]);
	assert_replicas_equal(f, NREP);
	open_n(f, NREP);
	assert_int_equal(pool_meta_txn(f->m), txn);
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	for (int i = 0; i < 300; i++) {
		char name[64];
		snprintf(name, sizeof(name), "f%d", i);
		assert_int_equal(look(f->m, ROOT, name), i % 3 ? ino[i] : 0);
	}
	mk_many(f, "new", 10, NULL);
	close_m(f);
	for (int i = 1; i < NREP; i++)
		assert_same_file(f->db[0], f->db[i]);
	check_consistency(f->db[2]);
}

/* The mirrors' source fails (its WAL now answers ENOSPC): it is dropped,
 * the mirrors are opened as connections of their own, and the create
 * window that met the failure at its commit (the sync) is run again there
 * -- acknowledged, so present after a reopen, as is everything before. */
static void test_mirror_source_fails(void **state)
{
	struct fix *f = *state;
	struct capture c;
	uint64_t ino[50];

	open_n(f, NREP);
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	hold_windows(f);
	mk_many(f, "a", 50, ino);
	break_wal(f->dir[0]);
	capture_begin(&c);
	uint64_t b = mk(f->m, ROOT, "b", S_IFREG | 0644);
	assert_int_equal(pool_meta_sync(f->m), 0); /* commits the window: meets the failure */
	char *log = capture_end(&c);
	assert_non_null(strstr(log, f->db[0]));
	assert_non_null(strstr(log, "dropped"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP - 1);
	mk_many(f, "c", 20, NULL);
	assert_int_equal(pool_meta_sync(f->m), 0); /* the last window committed */
	uint64_t txn = pool_meta_txn(f->m);
	close_m(f);
	check_consistency(f->db[1]);
	open_n(f, NREP);
	assert_int_equal(pool_meta_txn(f->m), txn);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	assert_int_equal(look(f->m, ROOT, "b"), b);
	assert_int_equal(look(f->m, ROOT, "a49"), ino[49]);
	assert_true(look(f->m, ROOT, "c19") > 0);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

/* A mirror's write fails: that mirror is dropped, nothing else notices,
 * and the next open copies it afresh. */
static void test_mirror_write_fails(void **state)
{
	struct fix *f = *state;
	struct capture c;

	open_n(f, NREP);
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	hold_windows(f);
	mk_many(f, "a", 10, NULL);
	break_wal(f->dir[2]);
	capture_begin(&c);
	uint64_t b = mk(f->m, ROOT, "b", S_IFREG | 0644);
	assert_int_equal(pool_meta_sync(f->m), 0); /* commits the window: meets the failure */
	char *log = capture_end(&c);
	assert_non_null(strstr(log, f->db[2]));
	assert_non_null(strstr(log, "dropped: mirror write"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP - 1);
	mk_many(f, "c", 10, NULL);
	close_m(f);
	open_n(f, NREP);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	assert_int_equal(look(f->m, ROOT, "b"), b);
	assert_true(look(f->m, ROOT, "c9") > 0);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

/* Create windows (one node): creates held in an open transaction, each
 * with a record in meta.log.  A child process opens the store, creates,
 * and ends with _exit -- like kill -9, no close, nothing committed after
 * the last window began, the page cache keeps what it wrote.  The next
 * open replays the records: every acknowledged create is there with its
 * inode number, and every replica equal. */
static void window_child(struct fix *f, int nfiles, uint64_t *ino, uint64_t *dir, uint64_t *lnk)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct pool_meta *m;
		char err[512], name[32];
		if (pool_meta_open(f->dirs, NREP, 1000, 100, &m, err, sizeof(err)) ||
		    pool_meta_exclusive(m))
			_exit(2);
		pool_meta_set_window(m, 3600 * 1000000000LL, 100000); /* one window */
		struct pool_inode in = {.mode = S_IFREG | 0644};
		if (pool_meta_create(m, ROOT, "committed", &in, NULL))
			_exit(3);
		if (pool_meta_sync(m)) /* commits: from here on, a window */
			_exit(4);
		for (int i = 0; i < nfiles; i++) {
			snprintf(name, sizeof(name), "w%d", i);
			in = (struct pool_inode){.mode = S_IFREG | 0644, .uid = 7, .npos = 2};
			in.disk[1] = 5;
			if (pool_meta_create(m, ROOT, name, &in, NULL))
				_exit(5);
			ino[i] = in.ino;
			in = (struct pool_inode){.mode = S_IFREG | 0644};
			if (pool_meta_create(m, ROOT, name, &in, NULL) != -EEXIST) /* fails alone */
				_exit(6);
		}
		in = (struct pool_inode){.mode = S_IFDIR | 0755};
		if (pool_meta_create(m, ROOT, "wd", &in, NULL))
			_exit(7);
		*dir = in.ino;
		in = (struct pool_inode){.mode = S_IFLNK | 0777};
		if (pool_meta_create(m, *dir, "wl", &in, "../w0"))
			_exit(8);
		*lnk = in.ino;
		_exit(0); /* no close: the window is never committed */
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void *shared_page(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static void test_window_replayed_after_crash(void **state)
{
	struct fix *f = *state;
	struct capture c;
	uint64_t *ino = shared_page(4096), *dir = ino + 400, *lnk = ino + 401;
	char name[32], buf[64];

	open_n(f, NREP);
	uint64_t txn = pool_meta_txn(f->m);
	close_m(f);
	window_child(f, 300, ino, dir, lnk);
	for (int i = 0; i < NREP; i++) /* the window never reached the databases */
		assert_int_equal(sql_int(f->db[i], "SELECT count(*) FROM dentries"), 1);
	capture_begin(&c);
	open_n(f, NREP);
	char *log = capture_end(&c);
	assert_non_null(strstr(log, "302 creates acknowledged but not committed"));
	free(log);
	assert_int_equal(pool_meta_txn(f->m), txn + 2); /* "committed", then the replay */
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		assert_int_equal(look(f->m, ROOT, name), ino[i]);
		struct pool_inode in = get(f->m, ino[i]);
		assert_int_equal(in.uid, 7);
		assert_int_equal(in.npos, 2);
		assert_int_equal(in.disk[1], 5);
	}
	assert_int_equal(look(f->m, ROOT, "wd"), *dir);
	assert_int_equal(look(f->m, *dir, "wl"), *lnk);
	assert_int_equal(pool_meta_readlink(f->m, *lnk, buf, sizeof(buf)), 5);
	assert_int_equal(get(f->m, *dir).nlink, 2);
	assert_int_equal(get(f->m, ROOT).nlink, 3);
	/* new inodes continue after the replayed ones */
	uint64_t after = mk(f->m, ROOT, "after", S_IFREG | 0644);
	assert_true(after > *lnk);
	close_m(f);
	assert_replicas_equal(f, NREP);
	for (int i = 0; i < NREP; i++)
		check_consistency(f->db[i]);
	/* replayed once: a second open finds nothing left to replay */
	capture_begin(&c);
	open_n(f, NREP);
	log = capture_end(&c);
	assert_null(strstr(log, "replayed"));
	free(log);
	assert_int_equal(look(f->m, ROOT, "after"), after);
	munmap(ino, 4096);
}

/* A damaged record ends the replay there, on every replica alike (the
 * longest valid run of records wins): the creates before it come back,
 * none after it, and the store stays consistent. */
static void test_window_damaged_record(void **state)
{
	struct fix *f = *state;
	uint64_t *ino = shared_page(4096), *dir = ino + 400, *lnk = ino + 401;
	char path[PATH_MAX + 16], name[32];

	window_child(f, 20, ino, dir, lnk);
	/* record 10 (w10) of each log: flip a byte of its name */
	for (int i = 0; i < NREP; i++) {
		snprintf(path, sizeof(path), "%s/meta.log", f->dir[i]);
		FILE *fp = fopen(path, "r+b");
		assert_non_null(fp);
		char rec[65536];
		size_t n = fread(rec, 1, sizeof(rec), fp), off = 0;
		for (int k = 0; k < 10; k++) {
			uint32_t len;
			memcpy(&len, rec + off + 8, 4);
			off += len;
		}
		assert_true(off + 110 < n);
		rec[off + 105] ^= 0x20;
		fseek(fp, 0, SEEK_SET);
		assert_int_equal(fwrite(rec, 1, n, fp), n);
		fclose(fp);
	}
	open_n(f, NREP);
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		assert_int_equal(look(f->m, ROOT, name), i < 10 ? ino[i] : 0);
	}
	assert_int_equal(look(f->m, ROOT, "wd"), 0);
	close_m(f);
	assert_replicas_equal(f, NREP);
	check_consistency(f->db[0]);
	munmap(ino, 4096);
}

/* The mirrors' source fails at the commit of a batch that ends a held
 * window (an unlink after creates): the batch runs again on the mirrors,
 * now connections, with the held creates replayed first -- every create
 * answered before the failure is there after a reopen, and the unlink. */
static void test_window_failover(void **state)
{
	struct fix *f = *state;
	struct pool_inode out;
	uint64_t ino[40];

	open_n(f, NREP);
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	hold_windows(f);
	uint64_t txn = pool_meta_txn(f->m);
	mk_many(f, "h", 40, ino);
	assert_int_equal(pool_meta_txn(f->m), txn); /* all held */
	break_wal(f->dir[0]);
	assert_int_equal(pool_meta_unlink(f->m, ROOT, "h7", NOW(20), &out), 0);
	assert_int_equal(out.ino, ino[7]);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP - 1);
	assert_int_equal(pool_meta_txn(f->m), txn + 1); /* the creates and the unlink */
	close_m(f);
	open_n(f, NREP);
	for (int i = 0; i < 40; i++) {
		char name[32];
		snprintf(name, sizeof(name), "h%d", i);
		assert_int_equal(look(f->m, ROOT, name), i == 7 ? 0 : ino[i]);
	}
	close_m(f);
	assert_replicas_equal(f, NREP);
}

/* A window of creates with long names commits hundreds of KiB of WAL at
 * once.  The VFS layer's coalesced write was handed to SQLite's unix VFS
 * whole, which writes at most 128 KiB - 1 per call: the COMMIT failed with
 * "database or disk is full" and every replica was dropped. */
static void test_window_big_commit(void **state)
{
	struct fix *f = *state;
	char name[POOL_META_NAME_MAX + 1];

	open_n(f, NREP);
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	hold_windows(f);
	uint64_t txn = pool_meta_txn(f->m);
	for (int i = 0; i < 400; i++) {
		snprintf(name, sizeof(name), "%04d", i);
		memset(name + 4, 'a' + i % 26, POOL_META_NAME_MAX - 4);
		name[POOL_META_NAME_MAX] = '\0';
		mk(f->m, ROOT, name, S_IFREG | 0644);
	}
	assert_int_equal(pool_meta_sync(f->m), 0);
	assert_int_equal(pool_meta_txn(f->m), txn + 1);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	close_m(f);
	assert_replicas_equal(f, NREP);
	assert_int_equal(sql_int(f->db[0], "SELECT count(*) FROM dentries"), 400);
}

/* spacefs opens its volumes (and turns windows on) before fuse_daemonize
 * forks and the parent exits.  In the child a held window must still end
 * on time and close must return (the timer thread started before the fork
 * did not exist there: windows never ended by time, and close hung). */
static void test_window_after_daemonize(void **state)
{
	struct fix *f = *state;
	int *res = shared_page(4096);

	res[0] = res[1] = res[2] = -1;
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct pool_meta *m;
		char err[512];
		if (pool_meta_open(f->dirs, NREP, 1000, 100, &m, err, sizeof(err)) ||
		    pool_meta_exclusive(m))
			_exit(2);
		uint64_t txn = pool_meta_txn(m);
		pid_t d = fork(); /* as fuse_daemonize: the parent exits */
		if (d != 0)
			_exit(d > 0 ? 0 : 3);
		struct pool_inode in = {.mode = S_IFREG | 0644};
		res[2] = pool_meta_create(m, ROOT, "a", &in, NULL);
		for (int i = 0; i < 1000 && pool_meta_txn(m) == txn; i++)
			usleep(10000);
		res[0] = pool_meta_txn(m) == txn + 1; /* the timer committed it */
		alarm(20);			      /* a hung close ends the child */
		pool_meta_close(m);
		res[1] = 1;
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (int i = 0; i < 2500 && res[1] == -1; i++) /* the grandchild */
		usleep(10000);
	assert_int_equal(res[2], 0);
	assert_int_equal(res[0], 1);
	assert_int_equal(res[1], 1);
	munmap(res, 4096);
}

/* A window ends on time without any later call (the timer), before a
 * write that is not a create, and reads inside it see the held creates. */
static void test_window_ends(void **state)
{
	struct fix *f = *state;
	struct pool_inode out;

	open_n(f, NREP);
	assert_int_equal(pool_meta_exclusive(f->m), 0);
	/* 1 s, not the default 10 ms: "held" below must not depend on how
	 * fast a loaded machine (or valgrind) runs the next two calls */
	pool_meta_set_window(f->m, 1000000000LL, 1024);
	uint64_t txn = pool_meta_txn(f->m);
	uint64_t a = mk(f->m, ROOT, "a", S_IFREG | 0644);
	assert_int_equal(look(f->m, ROOT, "a"), a); /* read inside the window */
	assert_int_equal(pool_meta_txn(f->m), txn); /* held */
	for (int i = 0; i < 1000 && pool_meta_txn(f->m) == txn; i++)
		usleep(10000);
	assert_int_equal(pool_meta_txn(f->m), txn + 1); /* the timer committed it */
	uint64_t b = mk(f->m, ROOT, "b", S_IFREG | 0644);
	assert_int_equal(pool_meta_unlink(f->m, ROOT, "a", NOW(20), &out), 0);
	assert_int_equal(pool_meta_txn(f->m), txn + 2); /* "b" and the unlink, together */
	assert_int_equal(out.ino, a);
	close_m(f);
	open_n(f, NREP);
	assert_int_equal(look(f->m, ROOT, "a"), 0);
	assert_int_equal(look(f->m, ROOT, "b"), b);
}

/* A replica that is only busy (another connection held a lock past the
 * busy timeout) is not a failing disk: the call is refused with EBUSY,
 * every replica stays, and the next call works.  Before the fix, each busy
 * read dropped the reader, so a few under load left no replica at all. */
static void test_busy_read_keeps_replica(void **state)
{
	struct fix *f = *state;
	struct pool_inode in;
	struct capture c;
	char *log;

	open_n(f, NREP);
	uint64_t a = mk(f->m, ROOT, "a", S_IFREG | 0644);
	uint64_t txn = pool_meta_txn(f->m);
	static const int busy[] = {SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_RECOVERY,
				   SQLITE_BUSY_SNAPSHOT};
	for (size_t i = 0; i < sizeof(busy) / sizeof(busy[0]); i++) {
		capture_begin(&c);
		pool_meta_fail_reads(f->m, busy[i], 1);
		assert_int_equal(pool_meta_lookup(f->m, ROOT, "a", &in), -EBUSY);
		log = capture_end(&c);
		assert_non_null(strstr(log, "busy"));
		assert_null(strstr(log, "dropped"));
		free(log);
		assert_int_equal(pool_meta_live_replicas(f->m), NREP);
		assert_int_equal(look(f->m, ROOT, "a"), a);
	}
	/* A create whose checks meet a busy reader writes nothing. */
	capture_begin(&c);
	pool_meta_fail_reads(f->m, SQLITE_BUSY, 1);
	memset(&in, 0, sizeof(in));
	in.mode = S_IFREG | 0644;
	assert_int_equal(pool_meta_create(f->m, ROOT, "b", &in, NULL), -EBUSY);
	free(capture_end(&c));
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	assert_int_equal(pool_meta_txn(f->m), txn);
	assert_int_equal(look(f->m, ROOT, "b"), 0);
	uint64_t b = mk(f->m, ROOT, "b", S_IFREG | 0644);

	/* The same injection with an I/O error does drop the reader, and the
	 * call is answered by the next replica: the busy case above is
	 * special, not the injection inert. */
	capture_begin(&c);
	pool_meta_fail_reads(f->m, SQLITE_IOERR_READ, 1);
	assert_int_equal(pool_meta_lookup(f->m, ROOT, "b", &in), 0);
	log = capture_end(&c);
	assert_int_equal(in.ino, b);
	assert_non_null(strstr(log, "dropped: read"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP - 1);
	close_m(f);
	open_n(f, NREP);
	assert_int_equal(look(f->m, ROOT, "a"), a);
	assert_int_equal(look(f->m, ROOT, "b"), b);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

/* A real lock: another holder of one replica's WAL write lock (an OFD
 * lock on its -shm file, which conflicts with SQLite's own fcntl locks
 * even in this process) makes BEGIN busy after the busy timeout.  The
 * create is refused with EBUSY, nothing is written anywhere, no replica
 * is dropped; once the lock is gone the create goes through everywhere. */
static void test_busy_begin_keeps_replica(void **state)
{
	struct fix *f = *state;
	struct pool_inode in;
	struct capture c;
	char shm[PATH_MAX + 8];

	open_n(f, NREP);
	mk(f->m, ROOT, "a", S_IFREG | 0644);
	uint64_t txn = pool_meta_txn(f->m);
	snprintf(shm, sizeof(shm), "%s-shm", f->db[1]);
	int fd = open(shm, O_RDWR);
	assert_true(fd >= 0);
	/* WAL_WRITE_LOCK: the first lock byte, after the two index headers
	 * and the checkpoint info (120 bytes, SQLite's wal.c). */
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 120, .l_len = 1};
	assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);

	capture_begin(&c);
	memset(&in, 0, sizeof(in));
	in.mode = S_IFREG | 0644;
	assert_int_equal(pool_meta_create(f->m, ROOT, "b", &in, NULL), -EBUSY);
	char *log = capture_end(&c);
	assert_non_null(strstr(log, f->db[1]));
	assert_non_null(strstr(log, "busy at BEGIN"));
	assert_null(strstr(log, "dropped"));
	free(log);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	assert_int_equal(pool_meta_txn(f->m), txn);
	assert_int_equal(look(f->m, ROOT, "b"), 0);

	fl.l_type = F_UNLCK;
	assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
	close(fd);
	uint64_t b = mk(f->m, ROOT, "b", S_IFREG | 0644);
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	assert_int_equal(pool_meta_txn(f->m), txn + 1);
	close_m(f);
	open_n(f, NREP);
	assert_int_equal(look(f->m, ROOT, "b"), b);
	close_m(f);
	assert_replicas_equal(f, NREP);
}

/* ---- concurrency ------------------------------------------------------------------------ */

struct worker {
	struct pool_meta *m;
	uint64_t dir[4];
	unsigned seed;
	int ops;
	long entries;
	int bad_rc; /* first unexpected result; cmocka asserts only in the main thread */
};

static int count_entry(void *arg, const char *name, const struct pool_inode *in, uint64_t cookie)
{
	(void)name, (void)in, (void)cookie;
	++*(long *)arg;
	return 0;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct pool_inode in, out;
	char a[16], b[16];

	for (int i = 0; i < w->ops; i++) {
		unsigned r = (unsigned)rand_r(&w->seed);
		uint64_t d1 = w->dir[r % 4], d2 = w->dir[(r >> 2) % 4];
		int rc = 0;
		snprintf(a, sizeof(a), "n%u", (r >> 4) % 24);
		snprintf(b, sizeof(b), "n%u", (r >> 9) % 24);
		switch ((r >> 14) % 8) {
		case 0:
		case 1:
			memset(&in, 0, sizeof(in));
			in.mode = ((r >> 17) % 4 ? S_IFREG : S_IFDIR) | 0644;
			rc = pool_meta_create(w->m, d1, a, &in, NULL);
			break;
		case 2:
			rc = pool_meta_rename(w->m, d1, a, d2, b,
					      (r >> 17) % 3 == 2 ? RENAME_EXCHANGE : 0, i, &out);
			break;
		case 3:
			rc = pool_meta_unlink(w->m, d1, a, i, &out);
			if (rc == 0 && out.nlink == 0)
				rc = pool_meta_purge(w->m, out.ino);
			break;
		case 4:
			rc = pool_meta_rmdir(w->m, d1, a, i, &in.ino);
			break;
		case 5:
			if (pool_meta_lookup(w->m, d1, a, &in) == 0)
				rc = pool_meta_link(w->m, in.ino, d2, b, i, &out);
			break;
		case 6: /* batched with the others: must not run inside their
			 * transaction (a sync is a few fsyncs: 1 in 8 of these) */
			rc = (r >> 17) % 8 ? pool_meta_lookup(w->m, d1, a, &in)
					   : pool_meta_sync(w->m);
			rc = rc == -ENOENT ? 0 : rc;
			break;
		case 7:
			rc = pool_meta_readdir(w->m, d1, 0, count_entry, &w->entries);
			break;
		}
		/* Races give ordinary errors, never EIO or anything odd. */
		if (!(rc == 0 || rc == -EEXIST || rc == -ENOENT || rc == -ENOTEMPTY ||
		      rc == -EISDIR || rc == -ENOTDIR || rc == -EPERM || rc == -EINVAL) &&
		    !w->bad_rc)
			w->bad_rc = rc;
	}
	return NULL;
}

static void test_concurrency(void **state)
{
	struct fix *f = *state;
	struct worker w[4];
	pthread_t t[4];
	uint64_t dir[4];

	open_n(f, NREP);
	for (int i = 0; i < 4; i++) {
		char name[64];
		snprintf(name, sizeof(name), "d%d", i);
		dir[i] = mk(f->m, ROOT, name, S_IFDIR | 0755);
	}
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.m = f->m, .seed = 17u * (unsigned)i + 1, .ops = 1500};
		memcpy(w[i].dir, dir, sizeof(dir));
		assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].bad_rc, 0);
	}
	assert_int_equal(pool_meta_live_replicas(f->m), NREP);
	close_m(f);
	for (int i = 0; i < NREP; i++)
		check_consistency(f->db[i]);
	assert_replicas_equal(f, NREP);
}

/* ---- throughput (printed, not asserted) --------------------------------------------------- */

static double creates_per_second(struct fix *f, uint32_t nrep, int n)
{
	struct timespec t0, t1;
	char name[64];

	nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	mkdir(f->root, 0700);
	open_n(f, nrep);
	uint64_t d = mk(f->m, ROOT, "d", S_IFDIR | 0755);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "file%07d", i);
		mk(f->m, d, name, S_IFREG | 0644);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close_m(f);
	return n / ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
}

static void test_throughput(void **state)
{
	struct fix *f = *state;
	const char *env = getenv("META_BENCH_N");
	int n = env ? atoi(env) : 5000;

	double one = creates_per_second(f, 1, n);
	double three = creates_per_second(f, 3, n);
	printf("# creates/s (%d files, one directory, %s): 1 replica %.0f, 3 replicas %.0f\n", n,
	       getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", one, three);
	assert_true(one > 0 && three > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	    T(test_fresh_root),
	    T(test_open_arguments),
	    T(test_create_lookup),
	    T(test_readdir_basic),
	    T(test_nlink_unlink_rmdir),
	    T(test_rename_files),
	    T(test_rename_dirs),
	    T(test_rename_flags),
	    T(test_links_orphans_purge),
	    T(test_xattrs),
	    T(test_setattr),
	    T(test_readdir_big_stable),
	    T(test_persistence),
	    T(test_exclusive),
	    T(test_replicas_identical_and_missing_restored),
	    T(test_stale_restored),
	    T(test_garbage_one_restored),
	    T(test_garbage_all_refused),
	    T(test_truncated),
	    T(test_invalid_rows),
	    T(test_replica_fails_at_runtime),
	    T(test_reader_fails_on_read),
	    T(test_mirrors_identical),
	    T(test_mirror_source_fails),
	    T(test_mirror_write_fails),
	    T(test_window_replayed_after_crash),
	    T(test_window_damaged_record),
	    T(test_window_ends),
	    T(test_window_failover),
	    T(test_window_big_commit),
	    T(test_window_after_daemonize),
	    T(test_busy_read_keeps_replica),
	    T(test_busy_begin_keeps_replica),
	    T(test_concurrency),
	    T(test_throughput),
#undef T
	};

	/* e.g. META_TEST_FILTER='*concurrency*' to run one test under a tool */
	if (getenv("META_TEST_FILTER"))
		cmocka_set_test_filter(getenv("META_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
