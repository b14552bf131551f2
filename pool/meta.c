/*
 * meta.c -- one volume's metadata store: the namespace in SQLite, kept as
 * identical replicas on the volume's metadata disks.
 *
 * Why SQLite: a namespace is a few small tables with unique keys, and
 * SQLite gives us atomic multi-row transactions, crash recovery (WAL) and
 * an integrity checker for free.  Why replicas instead of one database on
 * a mirrored volume: the metadata must survive the same disk failures as
 * the data, and must be readable before any layout code runs.
 *
 * How replication stays exact.  Every replica is its own connection.  A
 * mutating call reads only from the first live replica (the "reader") and
 * then sends the *same* statements with the *same* bound values to every
 * live replica inside BEGIN IMMEDIATE ... COMMIT, bumping the transaction
 * counter (meta.txn) in the same transaction.  All decisions (does the
 * name exist, which inode number is next) are taken once, in C, from the
 * reader, so replicas cannot drift apart; as a cheap tripwire, every write
 * must change the same number of rows and yield the same row id on every
 * replica.  A replica that fails (or trips the wire) is rolled back and
 * dropped from the live set with one log line; the call succeeds if any
 * replica committed.  A dropped replica stays behind at an older txn, so
 * the next open sees it as stale and copies it afresh.  If the reader
 * itself fails, the whole call is rolled back everywhere and run again on
 * the remaining replicas (a call is never half-applied).
 *
 * Opening takes every <dir>/meta.db that exists, validates it (our
 * application_id and format, quick_check, the meta rows, the root inode),
 * chooses the one with the highest txn and re-copies every missing, stale
 * or bad replica from it with the backup API (temp file, rename, fsync of
 * the directory), moving a bad file aside as meta.db.bad.  It refuses to
 * start when files exist but none is valid: an empty namespace must never
 * silently replace damaged metadata.
 *
 * Mirrors (one node): the statements run on the reader only and the other
 * replicas get its file writes through the VFS below, byte for byte; see
 * "mirrors" further down for why and how failures are handled.
 *
 * Reading back is never trusted: a row with an impossible value (unknown
 * file type, npos out of range, a placement blob of the wrong length, a
 * dentry without its inode) is -EIO with a line naming the file and inode.
 *
 * Orphans: an inode whose nlink drops to 0 (unlink, rmdir, rename over it)
 * stays until pool_meta_purge(), because it may still be open; the daemon
 * purges it on last close, or at the next mount via pool_meta_orphans().
 *
 * Locking: one mutex per store serialises all calls; callbacks (readdir,
 * orphans) run with it released, on batches copied out under it, so they
 * may call back into the store.
 *
 * Group commit (run()).  A create costs about eight page writes to the WAL
 * of each replica, whatever its size, so N calls in one transaction cost
 * far less than N transactions.  Calls queue; the thread that finds nobody
 * running takes the whole queue and runs it as one BEGIN ... COMMIT per
 * replica, each call inside a SAVEPOINT, so a call that fails is undone
 * alone and the others commit.  Everyone is answered after the COMMIT, so
 * "acknowledged" still means "in every live replica's WAL".  A batch of
 * one runs exactly as a lone call (BEGIN at its first write).
 *
 * Create windows (one node): creates are also batched over time -- the
 * transaction stays open across them for up to 10 ms, each acknowledged
 * once its record is in every live replica's meta.log, which the next
 * open replays if the window never committed; see "create windows".
 */
#include "pool/meta.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define META_APP_ID	    0x5350464d /* "SPFM": spacefs metadata */
#define META_FORMAT	    1	       /* user_version and meta.format */
#define META_BUSY_MS	    5000
#define META_LINK_MAX	    65000u /* as ext4 */
#define META_XATTR_SIZE_MAX 65536
#define META_XATTR_LIST_MAX 65536
#define META_SYMLINK_MAX    4095
#define META_BATCH	    64		     /* rows copied out per lock hold in listings */
#define META_MAX_DEPTH	    1000000	     /* bound on parent walks of a damaged tree */
#define META_RETRY	    (-100000)	     /* internal: reader dropped, run the call again */
#define META_PATH_MAX	    (PATH_MAX + 64)  /* a replica path plus our suffixes */
#define META_WAL_BYTES	    (8 << 20)	     /* WAL size that triggers a checkpoint */
#define META_WINDOW_NS	    (10 * 1000000LL) /* a held window commits after this long */
#define META_WINDOW_RECS    1024u	     /* ... or after this many creates */
#define META_LOG_MAGIC	    0x4c4d5053u	     /* "SPML": a record of meta.log */
#define META_LOG_VERSION    1
#define META_LOG_HDR	    104 /* bytes before the name (docs/FORMAT.md, meta.log) */

/* ---- schema and statements ------------------------------------------------ */

static const char schema_sql[] =
    "CREATE TABLE inodes(ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL,"
    " uid INTEGER NOT NULL, gid INTEGER NOT NULL, nlink INTEGER NOT NULL,"
    " size INTEGER NOT NULL, rdev INTEGER NOT NULL, atime INTEGER NOT NULL,"
    " mtime INTEGER NOT NULL, ctime INTEGER NOT NULL, npos INTEGER NOT NULL,"
    " disks BLOB);"
    "CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;"
    "CREATE TABLE dentries(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " parent INTEGER NOT NULL, name TEXT NOT NULL, ino INTEGER NOT NULL,"
    " UNIQUE(parent, name));"
    "CREATE INDEX dentries_by_parent ON dentries(parent, id);"
    "CREATE INDEX dentries_by_ino ON dentries(ino);"
    "CREATE TABLE symlinks(ino INTEGER PRIMARY KEY, target TEXT NOT NULL);"
    "CREATE TABLE xattrs(ino INTEGER NOT NULL, name TEXT NOT NULL,"
    " value BLOB NOT NULL, PRIMARY KEY(ino, name)) WITHOUT ROWID;"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;";

#define INODE_COLS                                                                                 \
	"i.ino, i.mode, i.uid, i.gid, i.nlink, i.size, i.rdev, i.atime, i.mtime, i.ctime, "        \
	"i.npos, i.disks"
#define ENTRY_COLS "d.id, d.name, d.ino, " INODE_COLS
#define ENTRY_FROM " FROM dentries d LEFT JOIN inodes i ON i.ino = d.ino "

enum stmt {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_GET_META,
	ST_SET_META,
	ST_PUT_META,
	ST_GET_INODE,
	ST_PUT_INODE,
	ST_SET_ATTR,
	ST_SET_LINKS,
	ST_SET_DIR,
	ST_DEL_INODE,
	ST_COUNT_INODES,
	ST_MAX_INO,
	ST_ORPHANS,
	ST_FILES,
	ST_LOOKUP,
	ST_READDIR,
	ST_HAS_CHILD,
	ST_PARENT_OF,
	ST_NAME_OF,
	ST_SET_DISKS,
	ST_PUT_DENTRY,
	ST_MOVE_DENTRY,
	ST_POINT_DENTRY,
	ST_DEL_DENTRY,
	ST_PUT_SYMLINK,
	ST_GET_SYMLINK,
	ST_DEL_SYMLINK,
	ST_GET_XATTR,
	ST_PUT_XATTR,
	ST_LIST_XATTR,
	ST_DEL_XATTR,
	ST_DEL_XATTRS,
	ST_ANY_XATTR,
	ST_ANY_LABEL,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_GET_META] = "SELECT value FROM meta WHERE key = ?1",
    [ST_SET_META] = "UPDATE meta SET value = ?2 WHERE key = ?1",
    [ST_PUT_META] = "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)",
    [ST_GET_INODE] = "SELECT " INODE_COLS " FROM inodes i WHERE i.ino = ?1",
    [ST_PUT_INODE] = "INSERT INTO inodes(ino, mode, uid, gid, nlink, size, rdev, atime, mtime,"
		     " ctime, npos, disks) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
		     " ?11, ?12)",
    [ST_SET_ATTR] = "UPDATE inodes SET mode = ?2, uid = ?3, gid = ?4, size = ?5, rdev = ?6,"
		    " atime = ?7, mtime = ?8, ctime = ?9 WHERE ino = ?1",
    [ST_SET_LINKS] = "UPDATE inodes SET nlink = ?2, ctime = ?3 WHERE ino = ?1",
    [ST_SET_DIR] = "UPDATE inodes SET nlink = ?2, mtime = ?3, ctime = ?3 WHERE ino = ?1",
    [ST_DEL_INODE] = "DELETE FROM inodes WHERE ino = ?1",
    [ST_COUNT_INODES] = "SELECT count(*) FROM inodes",
    [ST_MAX_INO] = "SELECT max(ino) FROM inodes",
    [ST_ORPHANS] = "SELECT " INODE_COLS " FROM inodes i WHERE i.nlink = 0 AND i.ino > ?1"
		   " ORDER BY i.ino LIMIT ?2",
    [ST_FILES] = "SELECT " INODE_COLS " FROM inodes i WHERE i.npos > 0 AND i.ino > ?1"
		 " ORDER BY i.ino LIMIT ?2",
    [ST_LOOKUP] = "SELECT " ENTRY_COLS ENTRY_FROM "WHERE d.parent = ?1 AND d.name = ?2",
    [ST_READDIR] = "SELECT " ENTRY_COLS ENTRY_FROM "WHERE d.parent = ?1 AND d.id > ?2"
		   " ORDER BY d.id LIMIT ?3",
    [ST_HAS_CHILD] = "SELECT 1 FROM dentries WHERE parent = ?1 LIMIT 1",
    [ST_PARENT_OF] = "SELECT parent FROM dentries WHERE ino = ?1 LIMIT 1",
    [ST_NAME_OF] = "SELECT parent, name FROM dentries WHERE ino = ?1 ORDER BY id LIMIT 1",
    [ST_SET_DISKS] = "UPDATE inodes SET disks = ?2 WHERE ino = ?1 AND npos = ?3",
    [ST_PUT_DENTRY] = "INSERT INTO dentries(parent, name, ino) VALUES(?1, ?2, ?3)",
    [ST_MOVE_DENTRY] = "UPDATE dentries SET parent = ?2, name = ?3 WHERE id = ?1",
    [ST_POINT_DENTRY] = "UPDATE dentries SET ino = ?2 WHERE id = ?1",
    [ST_DEL_DENTRY] = "DELETE FROM dentries WHERE id = ?1",
    [ST_PUT_SYMLINK] = "INSERT INTO symlinks(ino, target) VALUES(?1, ?2)",
    [ST_GET_SYMLINK] = "SELECT target FROM symlinks WHERE ino = ?1",
    [ST_DEL_SYMLINK] = "DELETE FROM symlinks WHERE ino = ?1",
    [ST_GET_XATTR] = "SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2",
    [ST_PUT_XATTR] = "INSERT OR REPLACE INTO xattrs(ino, name, value) VALUES(?1, ?2, ?3)",
    [ST_LIST_XATTR] = "SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name",
    [ST_DEL_XATTR] = "DELETE FROM xattrs WHERE ino = ?1 AND name = ?2",
    [ST_DEL_XATTRS] = "DELETE FROM xattrs WHERE ino = ?1",
    [ST_ANY_XATTR] = "SELECT 1 FROM xattrs LIMIT 1",
    [ST_ANY_LABEL] = "SELECT 1 FROM xattrs WHERE name = '" POOL_META_LABEL "' LIMIT 1",
    [ST_SAVEPOINT] = "SAVEPOINT call",
    [ST_RELEASE] = "RELEASE call",
    [ST_ROLLBACK_TO] = "ROLLBACK TO call",
};

/* ---- the store -------------------------------------------------------------- */

/* Mirrors (one node, see mirror_all): every write, truncate and sync of
 * the first replica's meta.db and meta.db-wal repeated on the other
 * replicas' files, which are then byte for byte the same.  A mirror whose
 * write fails is left alone from then on (its files stay a prefix of the
 * writes: a crash-consistent older state) and dropped by the store. */
struct meta_tee {
	bool off; /* the source was dropped: write nowhere else */
	struct tee_dst {
		bool on;
		int fd[2]; /* [0] meta.db, [1] meta.db-wal */
		int err;   /* errno of the first failed write */
	} d[POOL_META_MAX_REPLICAS];
};

enum replica_state {
	R_MISSING,     /* no meta.db: will be copied from the best replica */
	R_BAD,	       /* exists but unusable: moved aside, then copied */
	R_UNREACHABLE, /* directory or file cannot be reached now: left alone */
	R_VALID,
};

struct replica {
	char *dir;  /* <disk>/vol/<volume> */
	char *path; /* <dir>/meta.db */
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	bool live;
	bool mirror;		  /* no connection: gets the first replica's bytes (mirror_all) */
	int logfd;		  /* <dir>/meta.log while windows are on, else -1 */
	enum replica_state state; /* as found by pool_meta_open */
	uint64_t txn, next_ino;	  /* as found by pool_meta_open */
	char why[256];		  /* why it is bad or was dropped */
};

typedef int (*op_fn)(struct pool_meta *m, void *arg);

/* One API call waiting to be run (group commit, see run()). */
struct call {
	op_fn fn;
	void *arg;
	int rc;
	bool done;
	bool alone; /* never inside a batch's transaction (see run_call) */
	struct call *next;
};

struct pool_meta {
	pthread_mutex_t lock;
	/* Group commit: calls queue under qlock; one thread at a time (the
	 * leader) takes the whole queue and runs it as one transaction. */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct call *queue, **qtail;
	bool leading;
	atomic_bool any_xattrs; /* some inode may have an xattr (sticky while open) */
	atomic_bool any_labels; /* ... an SELinux label (POOL_META_LABEL), likewise */
	uint32_t n, nlive;
	bool in_txn; /* BEGIN issued on the live replicas, not yet ended */
	bool wrote;  /* the open transaction holds writes */
	uint64_t txn, next_ino, ninodes;
	uint64_t epoch; /* fencing token of this writer; 0: no fencing (one node) */
	bool fenced;	/* a replica holds a newer epoch: every write is refused */
	bool exclusive; /* one node: replicas in locking_mode=EXCLUSIVE */
	bool teeing;	/* the other live replicas are mirrors of the reader */
	bool failover;	/* the mirrors' source was dropped: make them connections */
	struct meta_tee tee;
	struct {
		int rc;
		unsigned n;
	} fail_reads; /* tests: the next n reads answer rc (pool_meta_fail_reads) */
	struct {
		uint64_t next_ino;
		int64_t dinodes;
	} pending;	  /* effects of the running call, applied to the fields above on commit */
	uint64_t nwrites; /* successful wr() calls, to tell which calls wrote */
	/* The create window (one node, see "Create windows" below): creates
	 * held in the open transaction, each one also a record in buf, which
	 * is what every live replica's meta.log holds from offset 0. */
	bool window_ok;	   /* exclusive, and every live replica has its log open */
	int64_t window_ns; /* bounds of a window (pool_meta_set_window) */
	uint32_t window_recs;
	bool replaying; /* creates run from records: do not record them again */
	struct {
		char *buf;
		size_t len, cap;
		size_t batch_len; /* len before the running batch */
		uint32_t nrec, batch_nrec;
		int64_t since;	  /* CLOCK_MONOTONIC ns of the first held create */
		bool must_commit; /* a record could not be kept: commit at the end */
	} win;
	/* The thread that commits a window nobody else ends in time. */
	pthread_t timer;
	bool timer_on, timer_stop;
	pthread_mutex_t tlock;
	pthread_cond_t tcond;
	atomic_llong win_since; /* win.since, for the timer; 0: no window held */
	struct replica r[POOL_META_MAX_REPLICAS];
};

/* One bound statement argument; built by the macros below so every value
 * is converted to its SQLite type at the call site. */
struct arg {
	char kind; /* 'i' integer, 't' text, 'b' blob */
	int len;
	int64_t i;
	const void *p;
};

#define AI(x)	   ((struct arg){.kind = 'i', .i = (int64_t)(x)})
#define AT(s)	   ((struct arg){.kind = 't', .p = (s)})
#define AB(ptr, n) ((struct arg){.kind = 'b', .p = (ptr), .len = (int)(n)})
#define ARGS(...)                                                                                  \
	((const struct arg[]){__VA_ARGS__}),                                                       \
	    (int)(sizeof((const struct arg[]){__VA_ARGS__}) / sizeof(struct arg))

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr, written with one call so lines from threads do not mix. */
static void say(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "spacefs: %s\n", line);
}

/* ---- small checks ------------------------------------------------------------ */

static bool mode_ok(int64_t mode)
{
	if (mode < 0 || (mode & ~(int64_t)(S_IFMT | 07777)))
		return false;
	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
	case S_IFLNK:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		return true;
	default:
		return false;
	}
}

/* A name stored in a directory: 1..255 bytes, no '/', not "." or "..". */
static int check_name(const char *name)
{
	size_t len = strnlen(name, POOL_META_NAME_MAX + 1);

	if (len > POOL_META_NAME_MAX)
		return -ENAMETOOLONG;
	if (len == 0 || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	return 0;
}

static int check_xattr_name(const char *name)
{
	size_t len = strnlen(name, POOL_META_NAME_MAX + 1);

	return len == 0 || len > POOL_META_NAME_MAX ? -ERANGE : 0;
}

/* Attributes a caller may store: a real file type, bounded placement, and a
 * size SQLite's signed integers can hold. */
static int check_attrs(const struct pool_inode *in)
{
	if (!mode_ok(in->mode))
		return -EINVAL;
	if (in->npos > LAYOUT_MAX_POSITIONS)
		return -EINVAL;
	if (in->size > INT64_MAX)
		return -EFBIG;
	return 0;
}

/* ---- WAL write coalescing (a VFS over the default one) ---------------------- */

/*
 * SQLite appends a commit to the WAL as two write() calls per page (frame
 * header, then page): a create touches about eight pages, so 16 syscalls
 * per replica, 48 per create -- most of a create's CPU time on a machine
 * where syscalls are dear.  This VFS passes everything through to the
 * default one, except that writes to a WAL file that continue the previous
 * one are gathered in a buffer and written with one pwrite.  The buffer is
 * written out before anything else touches the file (read, sync, size,
 * truncate, close, file control, lock), when it grows past WALBUF_MAX, and
 * by walbuf_flush(), which commit_all() calls on every replica right after
 * its COMMIT -- before any caller is answered, so an acknowledged change is
 * in the kernel exactly as before (kill -9 loses nothing acknowledged).
 * Between COMMIT and that flush the WAL index already counts frames the
 * file lacks; no other connection reads them meanwhile (one connection per
 * replica, used under the store lock), and if the daemon dies in between
 * the next open rebuilds the index from the frames that are in the file.
 */
#define WALBUF_VFS "spacefs-walbuf"
#define WALBUF_MAX (1 << 20)

struct walbuf_file {
	sqlite3_file base;
	sqlite3_file *real;   /* the default VFS's file, allocated right after us */
	struct meta_tee *tee; /* set on the mirrored source's two files */
	bool wal;
	char *buf;
	size_t len, cap;
	sqlite3_int64 off; /* file offset of buf[0] */
};

static void tee_write(struct walbuf_file *f, const void *buf, size_t n, sqlite3_int64 off)
{
	for (int i = 0; f->tee && !f->tee->off && i < POOL_META_MAX_REPLICAS; i++) {
		struct tee_dst *d = &f->tee->d[i];
		for (size_t done = 0; d->on && !d->err && done < n;) {
			ssize_t w = pwrite(d->fd[f->wal], (const char *)buf + done, n - done,
					   off + (off_t)done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				d->err = w < 0 ? errno : EIO;
			else
				done += (size_t)w;
		}
	}
}

static void tee_truncate(struct walbuf_file *f, sqlite3_int64 size)
{
	for (int i = 0; f->tee && !f->tee->off && i < POOL_META_MAX_REPLICAS; i++) {
		struct tee_dst *d = &f->tee->d[i];
		if (d->on && !d->err && ftruncate(d->fd[f->wal], (off_t)size) < 0)
			d->err = errno;
	}
}

static void tee_sync(struct walbuf_file *f)
{
	for (int i = 0; f->tee && !f->tee->off && i < POOL_META_MAX_REPLICAS; i++) {
		struct tee_dst *d = &f->tee->d[i];
		if (d->on && !d->err && fdatasync(d->fd[f->wal]) < 0)
			d->err = errno;
	}
}

/* The largest write handed to the real file at once.  SQLite's unix VFS
 * never expects more than a page (64 KiB at most): its seekAndWrite masks
 * the length to 17 bits, so a coalesced write of 128 KiB or more came back
 * short and the COMMIT failed with SQLITE_FULL ("database or disk is
 * full"), dropping every replica -- seen with create windows, whose
 * commits can be hundreds of KiB. */
#define WALBUF_CHUNK 65536

/* A write to the real file (in chunks it accepts), then the same to every
 * mirror. */
static int write_real(struct walbuf_file *f, const void *buf, int n, sqlite3_int64 off)
{
	int rc = SQLITE_OK;

	for (int done = 0; rc == SQLITE_OK && done < n;) {
		int k = n - done < WALBUF_CHUNK ? n - done : WALBUF_CHUNK;
		rc = f->real->pMethods->xWrite(f->real, (const char *)buf + done, k, off + done);
		done += k;
	}
	if (rc == SQLITE_OK)
		tee_write(f, buf, (size_t)n, off);
	return rc;
}

static int walbuf_flush_file(struct walbuf_file *f)
{
	if (!f->len)
		return SQLITE_OK;
	int rc = write_real(f, f->buf, (int)f->len, f->off);
	f->len = 0;
	return rc;
}

#define WB(file) ((struct walbuf_file *)(file))
#define WB_FLUSH_THEN(file, call)                                                                  \
	do {                                                                                       \
		int rc_ = walbuf_flush_file(WB(file));                                             \
		return rc_ != SQLITE_OK ? rc_ : (call);                                            \
	} while (0)

static int walbuf_close(sqlite3_file *file)
{
	int rc = walbuf_flush_file(WB(file));
	int rc2 =
	    WB(file)->real->pMethods ? WB(file)->real->pMethods->xClose(WB(file)->real) : SQLITE_OK;
	free(WB(file)->buf);
	return rc != SQLITE_OK ? rc : rc2;
}

static int walbuf_read(sqlite3_file *file, void *buf, int n, sqlite3_int64 off)
{
	WB_FLUSH_THEN(file, WB(file)->real->pMethods->xRead(WB(file)->real, buf, n, off));
}

static int walbuf_write(sqlite3_file *file, const void *buf, int n, sqlite3_int64 off)
{
	struct walbuf_file *f = WB(file);

	if (!f->wal)
		return write_real(f, buf, n, off);
	if (f->len && off != f->off + (sqlite3_int64)f->len) {
		int rc = walbuf_flush_file(f);
		if (rc != SQLITE_OK)
			return rc;
	}
	if (f->len + (size_t)n > f->cap) {
		size_t cap = f->cap ? f->cap : 65536;
		while (cap < f->len + (size_t)n)
			cap *= 2;
		char *b = cap <= WALBUF_MAX ? realloc(f->buf, cap) : NULL;
		if (!b) { /* too big or no memory: write through */
			int rc = walbuf_flush_file(f);
			return rc != SQLITE_OK ? rc : write_real(f, buf, n, off);
		}
		f->buf = b;
		f->cap = cap;
	}
	if (!f->len)
		f->off = off;
	memcpy(f->buf + f->len, buf, (size_t)n);
	f->len += (size_t)n;
	return SQLITE_OK;
}

static int walbuf_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct walbuf_file *f = WB(file);
	int rc = walbuf_flush_file(f);

	if (rc == SQLITE_OK)
		rc = f->real->pMethods->xTruncate(f->real, size);
	if (rc == SQLITE_OK)
		tee_truncate(f, size);
	return rc;
}

static int walbuf_sync(sqlite3_file *file, int flags)
{
	struct walbuf_file *f = WB(file);
	int rc = walbuf_flush_file(f);

	if (rc == SQLITE_OK)
		rc = f->real->pMethods->xSync(f->real, flags);
	if (rc == SQLITE_OK)
		tee_sync(f);
	return rc;
}

static int walbuf_size(sqlite3_file *file, sqlite3_int64 *size)
{
	WB_FLUSH_THEN(file, WB(file)->real->pMethods->xFileSize(WB(file)->real, size));
}

static int walbuf_lock(sqlite3_file *file, int lock)
{
	WB_FLUSH_THEN(file, WB(file)->real->pMethods->xLock(WB(file)->real, lock));
}

static int walbuf_unlock(sqlite3_file *file, int lock)
{
	WB_FLUSH_THEN(file, WB(file)->real->pMethods->xUnlock(WB(file)->real, lock));
}

static int walbuf_reserved(sqlite3_file *file, int *out)
{
	return WB(file)->real->pMethods->xCheckReservedLock(WB(file)->real, out);
}

static int walbuf_fcntl(sqlite3_file *file, int op, void *arg)
{
	WB_FLUSH_THEN(file, WB(file)->real->pMethods->xFileControl(WB(file)->real, op, arg));
}

static int walbuf_sector(sqlite3_file *file)
{
	return WB(file)->real->pMethods->xSectorSize(WB(file)->real);
}

static int walbuf_devchar(sqlite3_file *file)
{
	return WB(file)->real->pMethods->xDeviceCharacteristics(WB(file)->real);
}

static int walbuf_shm_map(sqlite3_file *file, int pg, int pgsz, int extend, void volatile **p)
{
	return WB(file)->real->pMethods->xShmMap(WB(file)->real, pg, pgsz, extend, p);
}

static int walbuf_shm_lock(sqlite3_file *file, int off, int n, int flags)
{
	return WB(file)->real->pMethods->xShmLock(WB(file)->real, off, n, flags);
}

static void walbuf_shm_barrier(sqlite3_file *file)
{
	WB(file)->real->pMethods->xShmBarrier(WB(file)->real);
}

static int walbuf_shm_unmap(sqlite3_file *file, int del)
{
	return WB(file)->real->pMethods->xShmUnmap(WB(file)->real, del);
}

/* Version 2: no memory-mapped I/O (xFetch), which would bypass the buffer. */
static const sqlite3_io_methods walbuf_methods = {
    .iVersion = 2,
    .xClose = walbuf_close,
    .xRead = walbuf_read,
    .xWrite = walbuf_write,
    .xTruncate = walbuf_truncate,
    .xSync = walbuf_sync,
    .xFileSize = walbuf_size,
    .xLock = walbuf_lock,
    .xUnlock = walbuf_unlock,
    .xCheckReservedLock = walbuf_reserved,
    .xFileControl = walbuf_fcntl,
    .xSectorSize = walbuf_sector,
    .xDeviceCharacteristics = walbuf_devchar,
    .xShmMap = walbuf_shm_map,
    .xShmLock = walbuf_shm_lock,
    .xShmBarrier = walbuf_shm_barrier,
    .xShmUnmap = walbuf_shm_unmap,
};

static sqlite3_vfs walbuf_vfs;

static int walbuf_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
		       int *out_flags)
{
	sqlite3_vfs *real = vfs->pAppData;
	struct walbuf_file *f = WB(file);

	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	f->wal = (flags & SQLITE_OPEN_WAL) != 0;
	int rc = real->xOpen(real, name, f->real, flags, out_flags);
	/* Methods set means the file needs xClose, even when the open failed. */
	f->base.pMethods = f->real->pMethods ? &walbuf_methods : NULL;
	return rc;
}

#define WALBUF_PASS(ret, name, params, args)                                                       \
	static ret walbuf_##name params                                                            \
	{                                                                                          \
		sqlite3_vfs *real = vfs->pAppData;                                                 \
		return real->x##name args;                                                         \
	}
WALBUF_PASS(int, Delete, (sqlite3_vfs * vfs, const char *p, int sync), (real, p, sync))
WALBUF_PASS(int, Access, (sqlite3_vfs * vfs, const char *p, int f, int *o), (real, p, f, o))
WALBUF_PASS(int, FullPathname, (sqlite3_vfs * vfs, const char *p, int n, char *o), (real, p, n, o))
WALBUF_PASS(int, Randomness, (sqlite3_vfs * vfs, int n, char *o), (real, n, o))
WALBUF_PASS(int, Sleep, (sqlite3_vfs * vfs, int us), (real, us))
WALBUF_PASS(int, CurrentTime, (sqlite3_vfs * vfs, double *t), (real, t))
WALBUF_PASS(int, GetLastError, (sqlite3_vfs * vfs, int n, char *o), (real, n, o))
WALBUF_PASS(int, CurrentTimeInt64, (sqlite3_vfs * vfs, sqlite3_int64 *t), (real, t))

static void walbuf_register(void)
{
	sqlite3_vfs *real = sqlite3_vfs_find(NULL);

	walbuf_vfs = (sqlite3_vfs){
	    .iVersion = 2,
	    .szOsFile = (int)sizeof(struct walbuf_file) + real->szOsFile,
	    .mxPathname = real->mxPathname,
	    .zName = WALBUF_VFS,
	    .pAppData = real,
	    .xOpen = walbuf_open,
	    .xDelete = walbuf_Delete,
	    .xAccess = walbuf_Access,
	    .xFullPathname = walbuf_FullPathname,
	    .xRandomness = walbuf_Randomness,
	    .xSleep = walbuf_Sleep,
	    .xCurrentTime = walbuf_CurrentTime,
	    .xGetLastError = walbuf_GetLastError,
	    .xCurrentTimeInt64 = walbuf_CurrentTimeInt64,
	};
	sqlite3_vfs_register(&walbuf_vfs, 0);
}

/* Write out what the replica's WAL buffer holds (after a COMMIT). */
static int walbuf_flush(struct replica *r)
{
	sqlite3_file *file = NULL;

	if (sqlite3_file_control(r->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &file) != SQLITE_OK ||
	    !file || file->pMethods != &walbuf_methods)
		return 0;
	int rc = walbuf_flush_file(WB(file));
	if (rc == SQLITE_OK)
		return 0;
	/* SQLite's code, not errno: errno may be anything by now */
	snprintf(r->why, sizeof(r->why), "writing the WAL: %s", sqlite3_errstr(rc));
	return -EIO;
}

/* ---- replicas: binding, reading, writing ---------------------------------- */

static int bind_args(sqlite3_stmt *st, const struct arg *a, int n)
{
	int rc = SQLITE_OK;

	for (int i = 0; i < n && rc == SQLITE_OK; i++) {
		switch (a[i].kind) {
		case 'i':
			rc = sqlite3_bind_int64(st, i + 1, a[i].i);
			break;
		case 't':
			rc = sqlite3_bind_text(st, i + 1, a[i].p, -1, SQLITE_STATIC);
			break;
		case 'b':
			/* A NULL pointer would bind SQL NULL, not an empty blob. */
			rc = sqlite3_bind_blob(st, i + 1, a[i].len ? a[i].p : "", a[i].len,
					       SQLITE_STATIC);
			break;
		default:
			assert(!"unknown argument kind");
		}
	}
	return rc;
}

/* A live replica with its own connection (runs the statements). */
static bool sql_live(const struct replica *r)
{
	return r->live && !r->mirror;
}

static uint32_t nsql(const struct pool_meta *m)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < m->n; i++)
		n += sql_live(&m->r[i]);
	return n;
}

/* Stop mirroring into replica i (closing its descriptors drops our locks). */
static void unmirror_one(struct pool_meta *m, uint32_t i)
{
	struct tee_dst *d = &m->tee.d[i];

	if (d->on) {
		close(d->fd[0]);
		close(d->fd[1]);
	}
	*d = (struct tee_dst){.on = false};
	m->r[i].mirror = false;
}

/* Take a failing replica out of the live set.  Its connection is closed
 * later (reap), because a statement of it may still be on the stack.  The
 * source of the mirrors going means they stop being written at once (they
 * hold every committed change so far) and become connections before the
 * call is run again (failover()). */
static void drop_replica(struct pool_meta *m, struct replica *r, const char *what,
			 const char *detail)
{
	assert(r->live && m->nlive > 0);
	say("metadata replica %s dropped: %.40s: %s", r->path, what, detail);
	if (r->mirror) {
		unmirror_one(m, (uint32_t)(r - m->r));
	} else {
		if (!sqlite3_get_autocommit(r->db))
			sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
		/* Leave a failing disk alone: no checkpoint into it when closing.
		 * Its WAL still holds its last commits; the next open sees it as
		 * stale. */
		sqlite3_db_config(r->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
		if (m->teeing) {
			m->tee.off = true;
			m->failover = true;
		}
	}
	r->live = false;
	m->nlive--;
}

/* Mirrors whose writes failed: out of the live set, one line each. */
static void reap_mirrors(struct pool_meta *m)
{
	for (uint32_t i = 0; i < m->n; i++) {
		struct tee_dst *d = &m->tee.d[i];
		if (m->r[i].live && m->r[i].mirror && d->err)
			drop_replica(m, &m->r[i], "mirror write", strerror(d->err));
	}
}

static void close_conn(struct replica *r)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(r->st[i]);
		r->st[i] = NULL;
	}
	sqlite3_close(r->db);
	r->db = NULL;
}

static void reap_dropped(struct pool_meta *m)
{
	for (uint32_t i = 0; i < m->n; i++)
		if (!m->r[i].live && m->r[i].db)
			close_conn(&m->r[i]);
}

/* The replica reads are answered from. */
static struct replica *reader(struct pool_meta *m)
{
	for (uint32_t i = 0; i < m->n; i++)
		if (sql_live(&m->r[i]))
			return &m->r[i];
	return NULL;
}

/* SQLITE_BUSY or SQLITE_LOCKED, extended codes included: another
 * connection held a lock past the busy timeout.  That says nothing about
 * the replica's disk, so it must never cost the replica: under load every
 * replica could be dropped that way, and the volume would answer EIO. */
static bool is_busy(int rc)
{
	return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/* A read failed on the reader.  Busy: the call fails with -EBUSY and the
 * replica stays.  Anything else is the disk or the file: drop the replica
 * and have the call run again on the next one. */
static int read_failed(struct pool_meta *m, struct replica *r, int rc)
{
	if (rc == SQLITE_NOMEM)
		return -ENOMEM;
	if (is_busy(rc)) {
		say("metadata replica %s busy on a read (%s); call refused, replica kept", r->path,
		    sqlite3_errstr(rc));
		return -EBUSY;
	}
	/* the connection's message, unless rc is not its last error (a test's) */
	drop_replica(m, r, "read",
		     sqlite3_errcode(r->db) == rc ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
	return META_RETRY;
}

/* A read's result, unless a test asked for a failure (pool_meta_fail_reads). */
static int read_result(struct pool_meta *m, int rc)
{
	if (m->fail_reads.n == 0)
		return rc;
	m->fail_reads.n--;
	return m->fail_reads.rc;
}

struct rd {
	struct replica *r;
	sqlite3_stmt *st;
};

static int rd_start(struct pool_meta *m, struct rd *q, enum stmt s, const struct arg *a, int n)
{
	int rc;

	q->st = NULL;
	q->r = reader(m);
	if (!q->r)
		return -EIO;
	q->st = q->r->st[s];
	rc = read_result(m, bind_args(q->st, a, n));
	return rc == SQLITE_OK ? 0 : read_failed(m, q->r, rc);
}

/* 1 for a row, 0 at the end, negative on error. */
static int rd_step(struct pool_meta *m, struct rd *q)
{
	int rc = read_result(m, sqlite3_step(q->st));

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return read_failed(m, q->r, rc);
}

/* Reset ends the statement's implicit read transaction (which would
 * otherwise pin the WAL). */
static void rd_end(struct rd *q)
{
	if (q->st)
		sqlite3_reset(q->st);
}

static int rd_row(struct pool_meta *m, struct rd *q, enum stmt s, const struct arg *a, int n)
{
	int rc = rd_start(m, q, s, a, n);

	return rc ? rc : rd_step(m, q);
}

/* Epoch fencing (DESIGN.md, coordinator lock): inside the write
 * transaction (BEGIN IMMEDIATE holds the replica's write lock), a replica
 * stamped with a newer epoch than ours means another node has taken the
 * volume over: refuse, and refuse every later write too. */
static int fence_check(struct pool_meta *m, struct replica *r)
{
	sqlite3_stmt *st = r->st[ST_GET_META];
	int64_t stored = 0;

	if (bind_args(st, ARGS(AT("epoch"))) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		stored = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (stored <= 0 || (uint64_t)stored <= m->epoch)
		return 0;
	if (!m->fenced)
		say("metadata replica %s holds epoch %" PRId64 ", newer than this node's %" PRIu64
		    ": another node owns the volume; writes refused",
		    r->path, stored, m->epoch);
	return -ESTALE;
}

static void rollback_all(struct pool_meta *m);
static void mirror_all(struct pool_meta *m);
static int probe(struct replica *r);
static int set_locking(struct replica *r, bool exclusive);
static int fsync_path(const char *path, bool dir);
static void remove_sidecars(const char *path);

/* Start the write transaction on every live replica, at the first write of
 * a call: calls that fail their checks never touch the files. */
static int begin_all(struct pool_meta *m)
{
	if (m->in_txn)
		return 0;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!sql_live(r))
			continue;
		int rc = sqlite3_step(r->st[ST_BEGIN]);
		sqlite3_reset(r->st[ST_BEGIN]);
		if (is_busy(rc)) {
			/* Another connection holds its write lock (another node
			 * writing its epoch, a copy in progress): not the disk's
			 * fault.  Undo the BEGINs so far and refuse the call. */
			say("metadata replica %s busy at BEGIN (%s); call refused, replica kept",
			    r->path, sqlite3_errstr(rc));
			m->in_txn = true;
			rollback_all(m);
			return -EBUSY;
		}
		if (rc != SQLITE_DONE)
			drop_replica(m, r, "BEGIN", sqlite3_errmsg(r->db));
		else if (m->epoch && fence_check(m, r) < 0)
			m->fenced = true;
	}
	if (nsql(m) == 0)
		return -EIO;
	m->in_txn = true;
	return m->fenced ? -EIO : 0;
}

/* Run one write on one replica; NULL or why it failed (kept in r->why). */
static const char *apply(struct replica *r, enum stmt s, int expect, const struct arg *a, int n,
			 int64_t *rowid)
{
	sqlite3_stmt *st = r->st[s];
	int rc = bind_args(st, a, n);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		snprintf(r->why, sizeof(r->why), "%s", sqlite3_errmsg(r->db));
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return r->why;
	if (expect >= 0 && sqlite3_changes(r->db) != expect)
		return "diverged from the first replica (rows changed)";
	*rowid = sqlite3_last_insert_rowid(r->db);
	return NULL;
}

/* The same write on every live replica.  `expect` is the number of rows it
 * must change (-1: any), checked on each replica as a divergence tripwire,
 * like the row id, which must match the first replica's. */
static int wr(struct pool_meta *m, enum stmt s, int expect, const struct arg *a, int n)
{
	bool have_ref = false;
	int64_t ref = 0, rowid = 0;
	int rc = begin_all(m);

	if (rc)
		return rc;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!sql_live(r))
			continue;
		const char *why = apply(r, s, expect, a, n, &rowid);
		if (!why && have_ref && rowid != ref)
			why = "diverged from the first replica (row id)";
		if (why) {
			drop_replica(m, r, stmt_sql[s], why);
			continue;
		}
		if (!have_ref)
			ref = rowid;
		have_ref = true;
		m->wrote = true;
	}
	m->nwrites++;
	return nsql(m) ? 0 : -EIO;
}

/* The transaction's bookkeeping rows, then COMMIT on every replica:
 * meta.next_ino once for all the creates of the transaction (a batch of
 * creates writes it once, not once each), meta.txn always. */
static int commit_all(struct pool_meta *m)
{
	int rc = 0;

	if (m->pending.next_ino != m->next_ino)
		rc = wr(m, ST_SET_META, 1, ARGS(AT("next_ino"), AI(m->pending.next_ino)));
	if (rc == 0)
		rc = wr(m, ST_SET_META, 1, ARGS(AT("txn"), AI(m->txn + 1)));

	if (rc)
		return rc;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!sql_live(r))
			continue;
		rc = sqlite3_step(r->st[ST_COMMIT]);
		sqlite3_reset(r->st[ST_COMMIT]);
		if (rc != SQLITE_DONE)
			drop_replica(m, r, "COMMIT", sqlite3_errmsg(r->db));
		else if (walbuf_flush(r) < 0)
			drop_replica(m, r, "COMMIT", r->why);
	}
	m->in_txn = false;
	reap_mirrors(m);
	return nsql(m) && !m->failover ? 0 : -EIO;
}

static void rollback_all(struct pool_meta *m)
{
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!sql_live(r) || sqlite3_get_autocommit(r->db))
			continue;
		int rc = sqlite3_step(r->st[ST_ROLLBACK]);
		sqlite3_reset(r->st[ST_ROLLBACK]);
		if (rc != SQLITE_DONE)
			drop_replica(m, r, "ROLLBACK", sqlite3_errmsg(r->db));
	}
	m->in_txn = false;
}

/* Step one statement without arguments (SAVEPOINT, RELEASE, ROLLBACK TO)
 * on every live replica, dropping a replica it fails on. */
static int step_all(struct pool_meta *m, enum stmt s)
{
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!sql_live(r))
			continue;
		int rc = sqlite3_step(r->st[s]);
		sqlite3_reset(r->st[s]);
		if (rc != SQLITE_DONE)
			drop_replica(m, r, stmt_sql[s], sqlite3_errmsg(r->db));
	}
	return nsql(m) ? 0 : -EIO;
}

/* One call of a batch of several, inside the batch's transaction: under a
 * savepoint, so a call that fails after some of its writes leaves neither
 * rows nor pending counters behind and the others still commit. */
static int run_saved(struct pool_meta *m, struct call *c)
{
	typeof(m->pending) saved = m->pending;
	int rc = step_all(m, ST_SAVEPOINT);

	if (rc)
		return rc;
	rc = c->fn(m, c->arg);
	if (rc == META_RETRY)
		return rc; /* the whole batch is rolled back and run again */
	if (rc && step_all(m, ST_ROLLBACK_TO) == 0)
		m->pending = saved;
	int rel = step_all(m, ST_RELEASE);
	return rc ? rc : rel;
}

static void run_batch(struct pool_meta *m, struct call *list);
static int failover(struct pool_meta *m);
static int op_create(struct pool_meta *m, void *arg);
static int replay_held(struct pool_meta *m);

static void run_alone(struct pool_meta *m, struct call *list)
{
	for (struct call *c = list, *next; c; c = next) {
		next = c->next;
		c->next = NULL;
		run_batch(m, c);
		c->next = next;
	}
}

/* ---- create windows (one node) ------------------------------------------------
 *
 * Why.  With one creator nothing overlaps, so group commit has nothing to
 * batch: every create paid a COMMIT of its own (eight WAL frames, their
 * checksums, one WAL append per replica), about half of the daemon's CPU
 * per create (docs/BENCHMARKS.md, fourth round).  So, as ext4's journal
 * does, creates are batched over time instead: the write transaction stays
 * open across creates (a "window") and commits after META_WINDOW_NS or
 * META_WINDOW_RECS creates, before any call that writes something else,
 * before every sync, checkpoint, replica copy or close.  Reads run on the
 * same connection, inside the transaction, so they see every held create.
 *
 * The guarantee stays: an acknowledged create survives kill -9.  Before a
 * held create is answered, a small record of it (its arguments and inode
 * number, CRC32C) is written to <dir>/meta.log on every live replica --
 * one pwrite of about 150 bytes each instead of a COMMIT.  The records of
 * the window in flight start at offset 0 and carry the txn the window will
 * commit as; the next open replays those whose txn is the database's + 1
 * (pool_meta_open -> replay_logs) and commits them, so the store comes
 * back exactly as acknowledged.  Power loss is unchanged: neither a
 * commit (synchronous=NORMAL) nor a record is on stable storage before a
 * sync, and a sync commits the window first.
 *
 * Only with one node (pool_meta_exclusive): several nodes must see each
 * other's commits in the files.  Anything else that writes commits the
 * window together with its own change, so only creates are recorded. */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void window_reset(struct pool_meta *m)
{
	m->win.len = m->win.batch_len = 0;
	m->win.nrec = m->win.batch_nrec = 0;
	m->win.since = 0;
	m->win.must_commit = false;
	atomic_store(&m->win_since, 0);
}

/* The records added by the running batch, on every live replica's log.
 * 0, or -1 if one could not be written (then the window commits now). */
static int log_append(struct pool_meta *m)
{
	size_t off = m->win.batch_len, n = m->win.len - off;

	for (uint32_t i = 0; n && i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!r->live)
			continue;
		if (r->logfd < 0)
			return -1;
		for (size_t done = 0; done < n;) {
			ssize_t w = pwrite(r->logfd, m->win.buf + off + done, n - done,
					   (off_t)(off + done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				say("metadata replica %s: writing meta.log: %s; committing instead",
				    r->path, w < 0 ? strerror(errno) : "short write");
				return -1;
			}
			done += (size_t)w;
		}
	}
	return 0;
}

static void *window_main(void *arg);

/* The window timer runs from the first window held, not from windows_on:
 * the daemon opens its volumes before fuse_daemonize forks, and a thread
 * started then does not exist in the child (which would hold windows no
 * timer ends, then hang at close joining it and destroying a condition
 * variable the lost thread was waiting on).  Under the store lock. */
static bool timer_start(struct pool_meta *m)
{
	if (!m->timer_on)
		m->timer_on = pthread_create(&m->timer, NULL, window_main, m) == 0;
	return m->timer_on;
}

/* After a batch: keep its transaction open (true), or have it committed
 * now (false).  `other`: a call of the batch changed something that is not
 * a create, which no record describes. */
static bool hold_window(struct pool_meta *m, bool other)
{
	if (!m->window_ok || !m->in_txn || !m->wrote || other || m->win.must_commit ||
	    m->win.nrec == 0 || m->win.nrec >= m->window_recs)
		return false;
	int64_t now = now_ns();
	if (m->win.since && now - m->win.since >= m->window_ns)
		return false;
	if (!timer_start(m))
		return false;
	if (log_append(m) < 0)
		return false;
	if (!m->win.since) {
		m->win.since = now;
		pthread_mutex_lock(&m->tlock);
		atomic_store(&m->win_since, now);
		pthread_cond_signal(&m->tcond);
		pthread_mutex_unlock(&m->tlock);
	}
	return true;
}

/* Commit the transaction a window holds (under the store lock).  If the
 * mirrors' source fails on the way, the held creates run again on the
 * mirrors, now connections (as run_batch does for a batch).  The creates
 * were answered: a commit that fails everywhere loses them from this
 * session (the volume has no live replica left then), but their records
 * stay in the logs for the next open. */
static void end_window(struct pool_meta *m)
{
	while (m->in_txn) {
		int rc = m->wrote ? commit_all(m) : 0;
		if (rc == 0 && m->wrote) {
			m->txn++;
			m->next_ino = m->pending.next_ino;
			m->ninodes += m->pending.dinodes;
		}
		if (m->in_txn)
			rollback_all(m);
		if (rc && m->failover && failover(m) > 0 && nsql(m)) {
			m->pending.next_ino = m->next_ino;
			m->pending.dinodes = 0;
			m->wrote = false;
			if (replay_held(m) == 0)
				continue;
			if (m->in_txn)
				rollback_all(m);
		}
		if (rc)
			say("metadata: committing %u held creates failed: %s", m->win.nrec,
			    strerror(-rc));
		break;
	}
	window_reset(m);
}

/* Run a batch of calls (under the store lock) as one transaction: reads on
 * the reader, writes (if any) committed on all replicas with one COMMIT
 * each, everything undone on error, and the batch run again if the reader
 * was lost half-way.  A batch of one with no window held is run exactly as
 * a lone call: the transaction begins at its first write.  With a window
 * held, every call runs under a savepoint, so one that fails leaves the
 * held creates alone; and the batch may leave the transaction open
 * (hold_window). */
static void run_batch(struct pool_meta *m, struct call *list)
{
	bool many = list->next != NULL;
	int rc;

	do {
		if (!m->in_txn) {
			m->pending.next_ino = m->next_ino;
			m->pending.dinodes = 0;
			m->wrote = false;
		}
		rc = nsql(m) ? 0 : -EIO;
		if (rc == 0 && !m->in_txn && m->win.nrec)
			rc = replay_held(m); /* rolled back by a retry: the held creates again */
		bool saved = many || m->in_txn;
		m->win.batch_len = m->win.len;
		m->win.batch_nrec = m->win.nrec;
		if (rc == 0 && many && begin_all(m) != 0) {
			/* fenced or no replica left: reads may still succeed, so
			 * every call runs alone and meets the failure itself */
			if (m->in_txn)
				rollback_all(m);
			window_reset(m);
			run_alone(m, list);
			return;
		}
		bool other = false;
		for (struct call *c = list; c; c = c->next) {
			uint64_t w0 = m->nwrites;
			c->rc = rc ? rc : saved ? run_saved(m, c) : c->fn(m, c->arg);
			if (c->rc == META_RETRY)
				rc = META_RETRY;
			else if (!saved)
				rc = c->rc;
			if (c->rc == 0 && m->nwrites != w0 && c->fn != op_create)
				other = true;
		}
		if (rc != META_RETRY && hold_window(m, other))
			return;
		if (rc == 0 && m->in_txn && m->wrote) {
			rc = commit_all(m);
			if (rc == 0) {
				m->txn++;
				m->next_ino = m->pending.next_ino;
				m->ninodes += m->pending.dinodes;
			}
			for (struct call *c = list; rc && c; c = c->next)
				if (c->rc == 0)
					c->rc = rc;
		}
		if (m->in_txn)
			rollback_all(m);
		if (m->failover && failover(m) > 0)
			rc = META_RETRY; /* on the mirrors, now connections */
		if (rc == META_RETRY) {	 /* the held creates are replayed, the batch's run again */
			m->win.len = m->win.batch_len;
			m->win.nrec = m->win.batch_nrec;
		} else {
			window_reset(m);
		}
	} while (rc == META_RETRY);
}

/* Take the calls marked `alone` out of *list, in order, into the list
 * returned. */
static struct call *split_alone(struct call **list)
{
	struct call *alone = NULL, **atail = &alone, **p = list;

	while (*p) {
		struct call *c = *p;
		if (!c->alone) {
			p = &c->next;
			continue;
		}
		*p = c->next;
		c->next = NULL;
		*atail = c;
		atail = &c->next;
	}
	return alone;
}

/* Run one API call.  Group commit: a call joins the queue; if no other
 * thread is running calls, this one leads: it takes the whole queue (the
 * calls that arrived while the previous batch ran) and runs it as one
 * transaction, so N concurrent creates cost one COMMIT per replica, not N.
 * Nobody is answered before the batch's COMMIT returned on every live
 * replica, so an acknowledged change is in every replica's WAL.
 *
 * Calls marked `alone` (a sync: its WAL checkpoint; the locking-mode
 * switch) cannot run inside a transaction -- SQLite refuses a checkpoint
 * on a connection with one open (SQLITE_LOCKED), and a sync batched with
 * a backup's readdirs once dropped every replica that way.  They run
 * after the batch, one at a time, each outside any transaction. */
static int run_call(struct pool_meta *m, op_fn fn, void *arg, bool alone)
{
	struct call me = {.fn = fn, .arg = arg, .alone = alone};

	pthread_mutex_lock(&m->qlock);
	*m->qtail = &me;
	m->qtail = &me.next;
	while (!me.done && m->leading)
		pthread_cond_wait(&m->qcond, &m->qlock);
	if (me.done) {
		pthread_mutex_unlock(&m->qlock);
		return me.rc;
	}
	struct call *list = m->queue; /* me among them */
	m->queue = NULL;
	m->qtail = &m->queue;
	m->leading = true;
	pthread_mutex_unlock(&m->qlock);

	struct call *later = split_alone(&list);
	pthread_mutex_lock(&m->lock);
	if (list)
		run_batch(m, list);
	if (later) {
		end_window(m); /* a sync or a mode switch needs no transaction open */
		run_alone(m, later);
	}
	reap_dropped(m);
	pthread_mutex_unlock(&m->lock);

	pthread_mutex_lock(&m->qlock);
	for (struct call *c = list; c; c = c->next)
		c->done = true;
	for (struct call *c = later; c; c = c->next)
		c->done = true;
	m->leading = false;
	pthread_cond_broadcast(&m->qcond);
	pthread_mutex_unlock(&m->qlock);
	assert(me.rc <= 0);
	return me.rc;
}

static int run(struct pool_meta *m, op_fn fn, void *arg)
{
	return run_call(m, fn, arg, false);
}

/* ---- decoding rows ------------------------------------------------------------ */

static bool col_int(sqlite3_stmt *st, int c, int64_t lo, int64_t hi, int64_t *v)
{
	if (sqlite3_column_type(st, c) != SQLITE_INTEGER)
		return false;
	*v = sqlite3_column_int64(st, c);
	return *v >= lo && *v <= hi;
}

static int bad_value(const struct replica *r, int64_t ino, const char *what, const char *value)
{
	say("metadata %s: inode %" PRId64 ": impossible %s (%s)", r->path, ino, what, value);
	return -EIO;
}

static int bad_row(const struct replica *r, sqlite3_stmt *st, int c, int64_t ino, const char *what)
{
	int type = sqlite3_column_type(st, c);
	char value[80];

	if (type == SQLITE_BLOB)
		snprintf(value, sizeof(value), "%d-byte blob", sqlite3_column_bytes(st, c));
	else if (type == SQLITE_TEXT)
		snprintf(value, sizeof(value), "'%.60s'", sqlite3_column_text(st, c));
	else if (type == SQLITE_NULL)
		snprintf(value, sizeof(value), "NULL");
	else
		snprintf(value, sizeof(value), "%.60s", sqlite3_column_text(st, c));
	return bad_value(r, ino, what, value);
}

/* Decode the INODE_COLS starting at column c, checking every value. */
static int decode_inode(const struct replica *r, sqlite3_stmt *st, int c, struct pool_inode *in)
{
	static const char *const field[] = {"ino",  "mode",  "uid",   "gid",   "nlink", "size",
					    "rdev", "atime", "mtime", "ctime", "npos"};
	static const int64_t lo[] = {1,		0,	   0,	      0,	 0, 0,
				     INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, 0};
	static const int64_t hi[] = {INT64_MAX,	 UINT32_MAX, UINT32_MAX,	  UINT32_MAX,
				     UINT32_MAX, INT64_MAX,  INT64_MAX,		  INT64_MAX,
				     INT64_MAX,	 INT64_MAX,  LAYOUT_MAX_POSITIONS};
	int64_t v[11];
	int64_t ino = sqlite3_column_int64(st, c);

	for (int i = 0; i < 11; i++)
		if (!col_int(st, c + i, lo[i], hi[i], &v[i]))
			return bad_row(r, st, c + i, ino, field[i]);
	if (!mode_ok(v[1]))
		return bad_row(r, st, c + 1, ino, "mode");

	int type = sqlite3_column_type(st, c + 11);
	const void *disks = sqlite3_column_blob(st, c + 11);
	int64_t ndisks = sqlite3_column_bytes(st, c + 11);
	if (!(type == SQLITE_BLOB || (type == SQLITE_NULL && v[10] == 0)) || ndisks != v[10]) {
		char value[64];
		snprintf(value, sizeof(value), "%" PRId64 " bytes for npos %" PRId64, ndisks,
			 v[10]);
		return bad_value(r, ino, "disks blob", value);
	}

	memset(in, 0, sizeof(*in));
	in->ino = (uint64_t)v[0];
	in->mode = (uint32_t)v[1];
	in->uid = (uint32_t)v[2];
	in->gid = (uint32_t)v[3];
	in->nlink = (uint32_t)v[4];
	in->size = (uint64_t)v[5];
	in->rdev = (uint64_t)v[6];
	in->atime_ns = v[7];
	in->mtime_ns = v[8];
	in->ctime_ns = v[9];
	in->npos = (uint32_t)v[10];
	if (ndisks)
		memcpy(in->disk, disks, (size_t)ndisks);
	return 0;
}

/* Decode ENTRY_COLS: a dentry's id and name, and the inode it names. */
static int decode_entry(const struct replica *r, sqlite3_stmt *st, uint64_t *id, char *name,
			struct pool_inode *in)
{
	const char *text = (const char *)sqlite3_column_text(st, 1);
	int64_t ino = sqlite3_column_int64(st, 2);

	*id = (uint64_t)sqlite3_column_int64(st, 0);
	if (!text || check_name(text) || strlen(text) != (size_t)sqlite3_column_bytes(st, 1)) {
		say("metadata %s: entry %" PRIu64 " for inode %" PRId64 ": impossible name",
		    r->path, *id, ino);
		return -EIO;
	}
	if (sqlite3_column_type(st, 3) == SQLITE_NULL) {
		say("metadata %s: entry %" PRIu64 " (%s) names missing inode %" PRId64, r->path,
		    *id, text, ino);
		return -EIO;
	}
	int rc = decode_inode(r, st, 3, in);
	if (rc == 0 && in->nlink == 0) {
		say("metadata %s: entry %" PRIu64 " (%s) names inode %" PRId64 " with nlink 0",
		    r->path, *id, text, ino);
		rc = -EIO;
	}
	if (rc == 0 && name)
		strcpy(name, text);
	return rc;
}

/* ---- reads used by the operations --------------------------------------------- */

static int get_inode(struct pool_meta *m, uint64_t ino, struct pool_inode *out)
{
	struct rd q;
	int rc = rd_row(m, &q, ST_GET_INODE, ARGS(AI(ino)));

	if (rc == 1)
		rc = decode_inode(q.r, q.st, 0, out);
	else if (rc == 0)
		rc = -ENOENT;
	rd_end(&q);
	return rc;
}

/* A directory new entries may go into: it exists, is a directory, and has
 * not been removed while open. */
static int get_dir(struct pool_meta *m, uint64_t ino, struct pool_inode *dir)
{
	int rc = get_inode(m, ino, dir);

	if (rc)
		return rc;
	if (!S_ISDIR(dir->mode))
		return -ENOTDIR;
	return dir->nlink == 0 ? -ENOENT : 0;
}

/* The entry `name` of `parent`: 0 and its dentry id and inode, or -ENOENT. */
static int lookup_entry(struct pool_meta *m, uint64_t parent, const char *name, uint64_t *id,
			struct pool_inode *in)
{
	struct rd q;
	int rc = rd_row(m, &q, ST_LOOKUP, ARGS(AI(parent), AT(name)));

	if (rc == 1)
		rc = decode_entry(q.r, q.st, id, NULL, in);
	else if (rc == 0)
		rc = -ENOENT;
	rd_end(&q);
	return rc;
}

/* 1 if directory `ino` has entries, 0 if not. */
static int has_children(struct pool_meta *m, uint64_t ino)
{
	struct rd q;
	int rc = rd_row(m, &q, ST_HAS_CHILD, ARGS(AI(ino)));

	rd_end(&q);
	return rc;
}

static int parent_of(struct pool_meta *m, uint64_t dir, uint64_t *parent)
{
	struct rd q;
	int rc = rd_row(m, &q, ST_PARENT_OF, ARGS(AI(dir)));

	if (rc == 1) {
		*parent = (uint64_t)sqlite3_column_int64(q.st, 0);
		rc = 0;
	} else if (rc == 0) {
		say("metadata %s: directory inode %" PRIu64 " has no entry", q.r->path, dir);
		rc = -EIO;
	}
	rd_end(&q);
	return rc;
}

/* -EINVAL if directory `dir` is `ancestor` or lies below it: a directory
 * may not move into its own subtree.  Walks up to the root. */
static int check_not_below(struct pool_meta *m, uint64_t dir, uint64_t ancestor)
{
	for (uint32_t depth = 0; depth < META_MAX_DEPTH; depth++) {
		if (dir == ancestor)
			return -EINVAL;
		if (dir == POOL_META_ROOT)
			return 0;
		int rc = parent_of(m, dir, &dir);
		if (rc)
			return rc;
	}
	say("metadata %s: directory loop above inode %" PRIu64, reader(m)->path, dir);
	return -EIO;
}

/* ---- writes used by the operations -------------------------------------------- */

static int put_inode(struct pool_meta *m, const struct pool_inode *in)
{
	return wr(m, ST_PUT_INODE, 1,
		  ARGS(AI(in->ino), AI(in->mode), AI(in->uid), AI(in->gid), AI(in->nlink),
		       AI(in->size), AI(in->rdev), AI(in->atime_ns), AI(in->mtime_ns),
		       AI(in->ctime_ns), AI(in->npos), AB(in->disk, in->npos)));
}

static int put_links(struct pool_meta *m, const struct pool_inode *in)
{
	return wr(m, ST_SET_LINKS, 1, ARGS(AI(in->ino), AI(in->nlink), AI(in->ctime_ns)));
}

/* A directory whose entries changed: new link count, mtime = ctime = now. */
static int touch_dir(struct pool_meta *m, struct pool_inode *dir, int dlinks, int64_t now)
{
	assert(dlinks >= 0 || dir->nlink >= (uint32_t)-dlinks);
	dir->nlink = (uint32_t)((int64_t)dir->nlink + dlinks);
	dir->mtime_ns = dir->ctime_ns = now;
	return wr(m, ST_SET_DIR, 1, ARGS(AI(dir->ino), AI(dir->nlink), AI(now)));
}

/* Both parents of a rename; written once when they are the same. */
static int touch_dirs(struct pool_meta *m, struct pool_inode *a, int da, struct pool_inode *b,
		      int db, int64_t now)
{
	if (a->ino == b->ino)
		return touch_dir(m, a, da + db, now);
	int rc = touch_dir(m, a, da, now);
	return rc ? rc : touch_dir(m, b, db, now);
}

static int put_dentry(struct pool_meta *m, uint64_t parent, const char *name, uint64_t ino)
{
	return wr(m, ST_PUT_DENTRY, 1, ARGS(AI(parent), AT(name), AI(ino)));
}

static int del_dentry(struct pool_meta *m, uint64_t id)
{
	return wr(m, ST_DEL_DENTRY, 1, ARGS(AI(id)));
}

/* ---- lookups -------------------------------------------------------------------- */

struct get_args {
	uint64_t ino, parent;
	const char *name;
	struct pool_inode *out;
};

static int op_get(struct pool_meta *m, void *arg)
{
	struct get_args *a = arg;

	return get_inode(m, a->ino, a->out);
}

int pool_meta_get(struct pool_meta *m, uint64_t ino, struct pool_inode *out)
{
	struct get_args a = {.ino = ino, .out = out};

	return run(m, op_get, &a);
}

static int op_lookup(struct pool_meta *m, void *arg)
{
	struct get_args *a = arg;
	struct pool_inode dir;
	uint64_t id;
	int rc = get_inode(m, a->parent, &dir);

	if (rc)
		return rc;
	if (!S_ISDIR(dir.mode))
		return -ENOTDIR;
	rc = check_name(a->name);
	return rc ? rc : lookup_entry(m, a->parent, a->name, &id, a->out);
}

struct parent_args {
	uint64_t dir, *parent;
};

static int op_parent(struct pool_meta *m, void *arg)
{
	struct parent_args *a = arg;

	if (a->dir == POOL_META_ROOT) {
		*a->parent = POOL_META_ROOT;
		return 0;
	}
	return parent_of(m, a->dir, a->parent);
}

int pool_meta_parent(struct pool_meta *m, uint64_t dir, uint64_t *parent)
{
	struct parent_args a = {.dir = dir, .parent = parent};

	return run(m, op_parent, &a);
}

int pool_meta_lookup(struct pool_meta *m, uint64_t parent, const char *name, struct pool_inode *out)
{
	struct get_args a = {.parent = parent, .name = name, .out = out};

	return run(m, op_lookup, &a);
}

/* ---- create and link -------------------------------------------------------------- */

struct create_args {
	uint64_t parent;
	const char *name, *target;
	struct pool_inode in; /* copy; returned to the caller only on success */
};

static int check_target(const struct pool_inode *in, const char *target)
{
	if (S_ISLNK(in->mode) != (target != NULL))
		return -EINVAL;
	if (!target)
		return 0;
	size_t len = strnlen(target, META_SYMLINK_MAX + 1);
	if (len == 0)
		return -ENOENT; /* as symlink(2) with an empty target */
	return len > META_SYMLINK_MAX ? -ENAMETOOLONG : 0;
}

/* The parent of a new entry, and -EEXIST if the name is taken. */
static int check_new_entry(struct pool_meta *m, uint64_t parent, const char *name,
			   struct pool_inode *dir)
{
	struct pool_inode old;
	uint64_t id;
	int rc = get_dir(m, parent, dir);

	if (rc == 0)
		rc = check_name(name);
	if (rc)
		return rc;
	rc = lookup_entry(m, parent, name, &id, &old);
	if (rc == 0)
		return -EEXIST;
	return rc == -ENOENT ? 0 : rc;
}

static void win_record(struct pool_meta *m, const struct create_args *a,
		       const struct pool_inode *given, uint64_t ino);

static int op_create(struct pool_meta *m, void *arg)
{
	struct create_args *a = arg;
	struct pool_inode *in = &a->in, dir, given = a->in;
	bool isdir = S_ISDIR(in->mode);
	int rc = check_attrs(in);

	if (rc == 0)
		rc = check_target(in, a->target);
	/* Begin before the checks: inside the write transaction the reads take
	 * no WAL read lock of their own (two fcntl calls each).  A create that
	 * fails its checks is rolled back having written nothing. */
	if (rc == 0)
		rc = begin_all(m);
	if (rc == 0)
		rc = check_new_entry(m, a->parent, a->name, &dir);
	if (rc)
		return rc;
	if (isdir && dir.nlink == UINT32_MAX)
		return -EMLINK;
	if (dir.mode & S_ISGID) { /* as ext4: the group, and for a directory the bit */
		in->gid = dir.gid;
		if (isdir)
			in->mode |= S_ISGID;
	}

	in->ino = m->pending.next_ino++;
	in->nlink = isdir ? 2 : 1;
	if (a->target)
		in->size = strlen(a->target); /* as ext4 reports symlinks */
	rc = put_inode(m, in);
	if (rc == 0 && a->target)
		rc = wr(m, ST_PUT_SYMLINK, 1, ARGS(AI(in->ino), AT(a->target)));
	if (rc == 0)
		rc = put_dentry(m, a->parent, a->name, in->ino);
	if (rc == 0)
		rc = touch_dir(m, &dir, isdir ? 1 : 0, in->ctime_ns);
	if (rc == 0) /* meta.next_ino is written once per transaction (commit_all) */
		m->pending.dinodes++;
	if (rc == 0 && m->window_ok && !m->replaying)
		win_record(m, a, &given, in->ino);
	return rc;
}

/* ---- meta.log: the records of a held window --------------------------------------- */

static void put_le(char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (char)(v >> (8 * i));
}

static uint64_t get_le(const char *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)(unsigned char)p[i] << (8 * i);
	return v;
}

/* Append the record of a create that just succeeded to the window's
 * buffer (written to the logs at the end of the batch, hold_window).  The
 * arguments as the caller gave them: replaying them on the same state
 * gives the same result, which the inode number checks. */
static void win_record(struct pool_meta *m, const struct create_args *a,
		       const struct pool_inode *given, uint64_t ino)
{
	size_t nlen = strlen(a->name), tlen = a->target ? strlen(a->target) : 0;
	size_t len = (META_LOG_HDR + nlen + tlen + given->npos + 7) & ~(size_t)7;

	if (m->win.len + len > m->win.cap) {
		size_t cap = m->win.cap ? m->win.cap * 2 : 65536;
		while (cap < m->win.len + len)
			cap *= 2;
		char *b = realloc(m->win.buf, cap);
		if (!b) {
			m->win.must_commit = true; /* no record: commit instead */
			return;
		}
		m->win.buf = b;
		m->win.cap = cap;
	}
	char *p = m->win.buf + m->win.len;
	memset(p, 0, len);
	put_le(p + 0, META_LOG_MAGIC, 4);
	put_le(p + 4, META_LOG_VERSION, 2);
	put_le(p + 8, len, 4);
	/* 12: CRC32C of bytes 16..len, below */
	put_le(p + 16, m->txn + 1, 8);
	put_le(p + 24, m->win.nrec, 4);
	put_le(p + 28, nlen, 2);
	put_le(p + 30, tlen, 2);
	put_le(p + 32, a->parent, 8);
	put_le(p + 40, ino, 8);
	put_le(p + 48, given->mode, 4);
	put_le(p + 52, given->uid, 4);
	put_le(p + 56, given->gid, 4);
	put_le(p + 60, given->npos, 4);
	put_le(p + 64, given->rdev, 8);
	put_le(p + 72, (uint64_t)given->atime_ns, 8);
	put_le(p + 80, (uint64_t)given->mtime_ns, 8);
	put_le(p + 88, (uint64_t)given->ctime_ns, 8);
	put_le(p + 96, given->size, 8);
	memcpy(p + META_LOG_HDR, a->name, nlen);
	if (tlen)
		memcpy(p + META_LOG_HDR + nlen, a->target, tlen);
	memcpy(p + META_LOG_HDR + nlen + tlen, given->disk, given->npos);
	put_le(p + 12, layout_crc32c(p + 16, len - 16), 4);
	m->win.len += len;
	m->win.nrec++;
}

/* The length of the valid record at buf[off..end) that is number `seq` of
 * the window committing as `txn`, or 0 (the end of the window's records:
 * an older window's, a torn or damaged one, or nothing). */
static size_t log_record_at(const char *buf, size_t off, size_t end, uint64_t txn, uint32_t seq)
{
	if (end - off < META_LOG_HDR || get_le(buf + off, 4) != META_LOG_MAGIC ||
	    get_le(buf + off + 4, 2) != META_LOG_VERSION)
		return 0;
	const char *p = buf + off;
	size_t len = get_le(p + 8, 4);
	if (len < META_LOG_HDR || len > end - off || len % 8 ||
	    META_LOG_HDR + get_le(p + 28, 2) + get_le(p + 30, 2) + get_le(p + 60, 4) > len ||
	    get_le(p + 60, 4) > LAYOUT_MAX_POSITIONS || get_le(p + 28, 2) > POOL_META_NAME_MAX)
		return 0;
	if (layout_crc32c(p + 16, len - 16) != (uint32_t)get_le(p + 12, 4) ||
	    get_le(p + 16, 8) != txn || get_le(p + 24, 4) != seq)
		return 0;
	return len;
}

/* Run the creates recorded in buf[0..len) (records of the window that
 * commits as m->txn + 1) inside the open transaction.  The number run, or
 * negative: a record that does not give the same inode as when it was
 * acknowledged (-EIO, one line), or the call's error. */
static int replay_records(struct pool_meta *m, const char *buf, size_t len, const char *from)
{
	uint32_t n = 0;
	int rc = 0;

	m->replaying = true;
	for (size_t off = 0, rl; rc == 0 && off < len; off += rl, n++) {
		rl = log_record_at(buf, off, len, m->txn + 1, n);
		if (!rl)
			break;
		const char *p = buf + off;
		char name[POOL_META_NAME_MAX + 1], target[4096];
		size_t nlen = get_le(p + 28, 2), tlen = get_le(p + 30, 2);
		struct create_args a = {.parent = get_le(p + 32, 8), .name = name};
		uint64_t ino = get_le(p + 40, 8);
		memcpy(name, p + META_LOG_HDR, nlen);
		name[nlen] = 0;
		if (tlen) {
			if (tlen >= sizeof(target)) {
				rc = -EIO;
				break;
			}
			memcpy(target, p + META_LOG_HDR + nlen, tlen);
			target[tlen] = 0;
			a.target = target;
		}
		a.in.mode = (uint32_t)get_le(p + 48, 4);
		a.in.uid = (uint32_t)get_le(p + 52, 4);
		a.in.gid = (uint32_t)get_le(p + 56, 4);
		a.in.npos = (uint32_t)get_le(p + 60, 4);
		a.in.rdev = get_le(p + 64, 8);
		a.in.atime_ns = (int64_t)get_le(p + 72, 8);
		a.in.mtime_ns = (int64_t)get_le(p + 80, 8);
		a.in.ctime_ns = (int64_t)get_le(p + 88, 8);
		a.in.size = get_le(p + 96, 8);
		memcpy(a.in.disk, p + META_LOG_HDR + nlen + tlen, a.in.npos);
		m->pending.next_ino = ino;
		rc = ino >= m->next_ino ? op_create(m, &a) : -EIO;
		if (rc == 0 && a.in.ino != ino)
			rc = -EIO;
		if (rc)
			say("metadata: %s: record %u (\"%s\" in directory %" PRIu64
			    ", inode %" PRIu64 ") cannot be replayed: %s",
			    from, n, name, a.parent, ino, strerror(-rc));
	}
	m->replaying = false;
	return rc ? rc : (int)n;
}

/* A retry rolled the held window back: run its creates again. */
static int replay_held(struct pool_meta *m)
{
	int rc = begin_all(m);

	if (rc == 0)
		rc = replay_records(m, m->win.buf, m->win.len, "held window");
	return rc < 0 ? rc : 0;
}

/* At open: the creates a window held when the last session ended without
 * committing them (kill -9, a crash), from the live replica whose log has
 * the most, committed as one transaction.  0 also when there are none. */
static int replay_logs(struct pool_meta *m, char *err, size_t errlen)
{
	char *best = NULL, path[META_PATH_MAX], from[META_PATH_MAX] = "";
	size_t best_len = 0;
	uint32_t best_n = 0;
	int rc = 0;

	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!r->live)
			continue;
		snprintf(path, sizeof(path), "%s/meta.log", r->dir);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		struct stat sb;
		if (fd < 0 || fstat(fd, &sb) < 0 || sb.st_size <= 0 ||
		    sb.st_size > (off_t)64 << 20) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		char *buf = malloc((size_t)sb.st_size);
		ssize_t got = buf ? pread(fd, buf, (size_t)sb.st_size, 0) : -1;
		close(fd);
		size_t len = 0;
		uint32_t n = 0;
		for (size_t rl;
		     got > 0 && (rl = log_record_at(buf, len, (size_t)got, m->txn + 1, n));
		     len += rl)
			n++;
		if (n > best_n) {
			free(best);
			best = buf;
			best_len = len;
			best_n = n;
			snprintf(from, sizeof(from), "%s", path);
		} else {
			free(buf);
		}
	}
	if (!best_n)
		return 0;
	m->pending.next_ino = m->next_ino;
	m->pending.dinodes = 0;
	m->wrote = false;
	rc = begin_all(m);
	if (rc == 0)
		rc = replay_records(m, best, best_len, from);
	if (rc >= 0)
		rc = commit_all(m);
	if (rc == 0) {
		m->txn++;
		m->next_ino = m->pending.next_ino;
		m->ninodes += m->pending.dinodes;
		say("metadata: %u creates acknowledged but not committed when the last session "
		    "ended replayed from %s (txn %" PRIu64 ")",
		    best_n, from, m->txn);
	}
	if (m->in_txn)
		rollback_all(m);
	if (rc < 0)
		snprintf(err, errlen,
			 "metadata: cannot replay the creates recorded in %s (%s); the database is "
			 "unchanged, moving meta.log aside in every metadata replica's directory "
			 "mounts without them",
			 from, strerror(-rc));
	free(best);
	return rc < 0 ? rc : 0;
}

/* ---- the window timer ------------------------------------------------------------- */

void pool_meta_set_window(struct pool_meta *m, int64_t ns, uint32_t max_creates)
{
	pthread_mutex_lock(&m->lock);
	end_window(m);
	m->window_ns = ns > 0 ? ns : META_WINDOW_NS;
	m->window_recs = max_creates;
	pthread_mutex_unlock(&m->lock);
}

static int op_nothing(struct pool_meta *m, void *arg)
{
	(void)m;
	(void)arg;
	return 0;
}

/* Ends a window that no later call ended within META_WINDOW_NS. */
static void *window_main(void *arg)
{
	struct pool_meta *m = arg;

	pthread_mutex_lock(&m->tlock);
	while (!m->timer_stop) {
		int64_t since = atomic_load(&m->win_since);
		if (!since) {
			pthread_cond_wait(&m->tcond, &m->tlock);
			continue;
		}
		int64_t due = since + m->window_ns;
		if (now_ns() < due) {
			struct timespec ts = {.tv_sec = due / 1000000000LL,
					      .tv_nsec = due % 1000000000LL};
			pthread_cond_timedwait(&m->tcond, &m->tlock, &ts);
			continue;
		}
		pthread_mutex_unlock(&m->tlock);
		run_call(m, op_nothing, NULL, true); /* an `alone` call ends the window */
		pthread_mutex_lock(&m->tlock);
	}
	pthread_mutex_unlock(&m->tlock);
	return NULL;
}

/* Windows on (one node, under the store lock): every live replica's log
 * open.  Without them (or without a timer thread, timer_start), creates
 * commit as before. */
static void windows_on(struct pool_meta *m)
{
	char path[META_PATH_MAX];

	m->window_ok = false;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!r->live || r->logfd >= 0)
			continue;
		snprintf(path, sizeof(path), "%s/meta.log", r->dir);
		/* Emptied: no window is held now (the callers ended it, and the
		 * open replayed the last session's), and records left by an
		 * older volume of the same name must never meet a matching txn. */
		r->logfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (r->logfd < 0) {
			say("metadata replica %s: cannot open meta.log (%s); creates commit one "
			    "by one",
			    r->path, strerror(errno));
			return;
		}
	}
	m->window_ok = true; /* the timer starts with the first window (timer_start) */
}

int pool_meta_create(struct pool_meta *m, uint64_t parent, const char *name, struct pool_inode *in,
		     const char *symlink_target)
{
	struct create_args a = {.parent = parent, .name = name, .target = symlink_target};
	int rc;

	a.in = *in;
	rc = run(m, op_create, &a);
	if (rc == 0)
		*in = a.in;
	return rc;
}

struct link_args {
	uint64_t ino, parent;
	const char *name;
	int64_t now;
	struct pool_inode out;
};

static int op_link(struct pool_meta *m, void *arg)
{
	struct link_args *a = arg;
	struct pool_inode *in = &a->out, dir;
	int rc = get_inode(m, a->ino, in);

	if (rc == 0)
		rc = check_new_entry(m, a->parent, a->name, &dir);
	if (rc)
		return rc;
	if (S_ISDIR(in->mode))
		return -EPERM;
	if (in->nlink == 0)
		return -ENOENT; /* unlinked while open: it cannot come back */
	if (in->nlink >= META_LINK_MAX)
		return -EMLINK;

	in->nlink++;
	in->ctime_ns = a->now;
	rc = put_links(m, in);
	if (rc == 0)
		rc = put_dentry(m, a->parent, a->name, in->ino);
	return rc ? rc : touch_dir(m, &dir, 0, a->now);
}

int pool_meta_link(struct pool_meta *m, uint64_t ino, uint64_t parent, const char *name,
		   int64_t now_ns, struct pool_inode *out)
{
	struct link_args a = {.ino = ino, .parent = parent, .name = name, .now = now_ns};
	int rc = run(m, op_link, &a);

	if (rc == 0 && out)
		*out = a.out;
	return rc;
}

/* ---- unlink and rmdir ------------------------------------------------------------- */

struct remove_args {
	uint64_t parent;
	const char *name;
	int64_t now;
	bool dir; /* rmdir */
	struct pool_inode out;
};

/* The entry to remove and its directory. */
static int find_victim(struct pool_meta *m, struct remove_args *a, struct pool_inode *dir,
		       uint64_t *id)
{
	int rc = get_dir(m, a->parent, dir);

	if (rc == 0)
		rc = check_name(a->name);
	return rc ? rc : lookup_entry(m, a->parent, a->name, id, &a->out);
}

static int op_remove(struct pool_meta *m, void *arg)
{
	struct remove_args *a = arg;
	struct pool_inode *in = &a->out, dir;
	uint64_t id;
	int rc = find_victim(m, a, &dir, &id);

	if (rc)
		return rc;
	if (a->dir && !S_ISDIR(in->mode))
		return -ENOTDIR;
	if (!a->dir && S_ISDIR(in->mode))
		return -EISDIR;
	if (a->dir) {
		rc = has_children(m, in->ino);
		if (rc)
			return rc > 0 ? -ENOTEMPTY : rc;
	}

	assert(in->nlink > 0);
	in->nlink = a->dir ? 0 : in->nlink - 1;
	in->ctime_ns = a->now;
	rc = put_links(m, in);
	if (rc == 0)
		rc = del_dentry(m, id);
	return rc ? rc : touch_dir(m, &dir, a->dir ? -1 : 0, a->now);
}

int pool_meta_unlink(struct pool_meta *m, uint64_t parent, const char *name, int64_t now_ns,
		     struct pool_inode *out)
{
	struct remove_args a = {.parent = parent, .name = name, .now = now_ns};
	int rc = run(m, op_remove, &a);

	if (rc == 0 && out)
		*out = a.out;
	return rc;
}

int pool_meta_rmdir(struct pool_meta *m, uint64_t parent, const char *name, int64_t now_ns,
		    uint64_t *ino_out)
{
	struct remove_args a = {.parent = parent, .name = name, .now = now_ns, .dir = true};
	int rc = run(m, op_remove, &a);

	if (rc == 0 && ino_out)
		*ino_out = a.out.ino;
	return rc;
}

/* ---- rename ---------------------------------------------------------------------- */

/* One end of a rename: a directory, a name in it, and what the name holds. */
struct end {
	struct pool_inode dir;
	const char *name;
	bool exists;
	uint64_t id; /* dentry id, when it exists */
	struct pool_inode in;
};

struct rename_args {
	uint64_t parent, newparent;
	const char *name, *newname;
	unsigned int flags;
	int64_t now;
	struct pool_inode replaced;
};

static int load_end(struct pool_meta *m, uint64_t dir, const char *name, struct end *e)
{
	int rc = get_dir(m, dir, &e->dir);

	e->name = name;
	e->exists = false;
	if (rc == 0)
		rc = check_name(name);
	if (rc)
		return rc;
	rc = lookup_entry(m, dir, name, &e->id, &e->in);
	e->exists = rc == 0;
	return rc == -ENOENT ? 0 : rc;
}

/* Neither end may become its own ancestor: a directory moving to another
 * parent must not move below itself. */
static int check_loops(struct pool_meta *m, const struct end *src, const struct end *dst,
		       bool exchange)
{
	int rc = 0;

	if (src->dir.ino == dst->dir.ino)
		return 0;
	if (S_ISDIR(src->in.mode))
		rc = check_not_below(m, dst->dir.ino, src->in.ino);
	if (rc == 0 && exchange && S_ISDIR(dst->in.mode))
		rc = check_not_below(m, src->dir.ino, dst->in.ino);
	return rc;
}

/* Whether src may replace the existing dst, as rename(2) decides. */
static int check_replace(struct pool_meta *m, const struct end *src, const struct end *dst)
{
	bool sdir = S_ISDIR(src->in.mode), ddir = S_ISDIR(dst->in.mode);

	if (sdir && !ddir)
		return -ENOTDIR;
	if (!sdir && ddir)
		return -EISDIR;
	if (!ddir)
		return 0;
	int rc = has_children(m, dst->in.ino);
	return rc > 0 ? -ENOTEMPTY : rc;
}

/* RENAME_EXCHANGE: the two entries swap inodes; a directory that changes
 * parent moves its ".." link count with it. */
static int rename_exchange(struct pool_meta *m, struct end *src, struct end *dst, int64_t now)
{
	bool sdir = S_ISDIR(src->in.mode), ddir = S_ISDIR(dst->in.mode);
	int dsrc = 0, ddst = 0;
	int rc;

	if (src->dir.ino != dst->dir.ino && sdir != ddir) {
		dsrc = sdir ? -1 : 1;
		ddst = -dsrc;
	}
	rc = wr(m, ST_POINT_DENTRY, 1, ARGS(AI(src->id), AI(dst->in.ino)));
	if (rc == 0)
		rc = wr(m, ST_POINT_DENTRY, 1, ARGS(AI(dst->id), AI(src->in.ino)));
	src->in.ctime_ns = dst->in.ctime_ns = now;
	if (rc == 0)
		rc = put_links(m, &src->in);
	if (rc == 0)
		rc = put_links(m, &dst->in);
	return rc ? rc : touch_dirs(m, &src->dir, dsrc, &dst->dir, ddst, now);
}

/* Plain rename, replacing dst if it exists.  A replaced name keeps its
 * dentry id (its place in a listing) and now points to the moved inode. */
static int rename_move(struct pool_meta *m, struct end *src, struct end *dst, int64_t now,
		       struct pool_inode *replaced)
{
	int dsrc = 0, ddst = 0;
	int rc;

	if (S_ISDIR(src->in.mode) && src->dir.ino != dst->dir.ino) {
		dsrc = -1;
		ddst = 1;
		if (!dst->exists && dst->dir.nlink == UINT32_MAX)
			return -EMLINK;
	}
	if (dst->exists) {
		struct pool_inode *t = &dst->in;
		if (S_ISDIR(t->mode))
			ddst--;
		t->nlink = S_ISDIR(t->mode) ? 0 : t->nlink - 1;
		t->ctime_ns = now;
		*replaced = *t;
		rc = put_links(m, t);
		if (rc == 0)
			rc = wr(m, ST_POINT_DENTRY, 1, ARGS(AI(dst->id), AI(src->in.ino)));
		if (rc == 0)
			rc = del_dentry(m, src->id);
	} else {
		rc = wr(m, ST_MOVE_DENTRY, 1, ARGS(AI(src->id), AI(dst->dir.ino), AT(dst->name)));
	}
	src->in.ctime_ns = now;
	if (rc == 0)
		rc = put_links(m, &src->in);
	return rc ? rc : touch_dirs(m, &src->dir, dsrc, &dst->dir, ddst, now);
}

static int op_rename(struct pool_meta *m, void *arg)
{
	struct rename_args *a = arg;
	bool exchange = a->flags & RENAME_EXCHANGE;
	struct end src, dst;
	int rc;

	memset(&a->replaced, 0, sizeof(a->replaced));
	if (a->flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (exchange && (a->flags & RENAME_NOREPLACE))
		return -EINVAL;
	rc = load_end(m, a->parent, a->name, &src);
	if (rc == 0 && !src.exists)
		rc = -ENOENT;
	if (rc == 0)
		rc = load_end(m, a->newparent, a->newname, &dst);
	if (rc)
		return rc;
	if (exchange && !dst.exists)
		return -ENOENT;
	if (!exchange && dst.exists && (a->flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (dst.exists && dst.in.ino == src.in.ino)
		return 0; /* POSIX: both names are the same file; nothing happens */
	rc = check_loops(m, &src, &dst, exchange);
	if (rc == 0 && dst.exists && !exchange)
		rc = check_replace(m, &src, &dst);
	if (rc)
		return rc;
	if (exchange)
		return rename_exchange(m, &src, &dst, a->now);
	return rename_move(m, &src, &dst, a->now, &a->replaced);
}

int pool_meta_rename(struct pool_meta *m, uint64_t parent, const char *name, uint64_t newparent,
		     const char *newname, unsigned int flags, int64_t now_ns,
		     struct pool_inode *replaced)
{
	struct rename_args a = {.parent = parent,
				.newparent = newparent,
				.name = name,
				.newname = newname,
				.flags = flags,
				.now = now_ns};
	int rc = run(m, op_rename, &a);

	if (replaced)
		*replaced = rc == 0 ? a.replaced : (struct pool_inode){0};
	return rc;
}

/* ---- attributes, purge ------------------------------------------------------------ */

struct setattr_args {
	const struct pool_inode *in;
	size_t n;
	bool skip_missing; /* write-back: an inode purged meanwhile is not an error */
};

/* The file type never changes; nlink and placement are not the caller's to
 * set here.  A mode without type bits keeps the stored type. */
static int set_one(struct pool_meta *m, const struct pool_inode *in, bool skip_missing)
{
	struct pool_inode cur;
	int rc = get_inode(m, in->ino, &cur);

	if (rc == -ENOENT && skip_missing)
		return 0;
	if (rc)
		return rc;
	if ((in->mode & S_IFMT) && (in->mode & S_IFMT) != (cur.mode & S_IFMT))
		return -EINVAL;
	uint32_t mode = (cur.mode & S_IFMT) | (in->mode & 07777);
	return wr(m, ST_SET_ATTR, 1,
		  ARGS(AI(in->ino), AI(mode), AI(in->uid), AI(in->gid), AI(in->size), AI(in->rdev),
		       AI(in->atime_ns), AI(in->mtime_ns), AI(in->ctime_ns)));
}

static int op_setattr(struct pool_meta *m, void *arg)
{
	struct setattr_args *a = arg;
	int rc = 0;

	for (size_t i = 0; i < a->n && rc == 0; i++) {
		if (a->in[i].mode & ~(uint32_t)(S_IFMT | 07777))
			rc = -EINVAL;
		else if (a->in[i].size > INT64_MAX)
			rc = -EFBIG;
		else
			rc = set_one(m, &a->in[i], a->skip_missing);
	}
	return rc;
}

int pool_meta_setattr(struct pool_meta *m, const struct pool_inode *in)
{
	struct setattr_args a = {.in = in, .n = 1};

	return run(m, op_setattr, &a);
}

int pool_meta_setattr_many(struct pool_meta *m, const struct pool_inode *in, size_t n)
{
	struct setattr_args a = {.in = in, .n = n, .skip_missing = true};

	return n ? run(m, op_setattr, &a) : 0;
}

static int op_purge(struct pool_meta *m, void *arg)
{
	const uint64_t *ino = arg;
	struct pool_inode in;
	int rc = get_inode(m, *ino, &in);

	if (rc)
		return rc;
	if (in.nlink != 0)
		return -EBUSY;
	rc = wr(m, ST_DEL_INODE, 1, ARGS(AI(in.ino)));
	if (rc == 0)
		rc = wr(m, ST_DEL_SYMLINK, S_ISLNK(in.mode) ? 1 : 0, ARGS(AI(in.ino)));
	if (rc == 0)
		rc = wr(m, ST_DEL_XATTRS, -1, ARGS(AI(in.ino)));
	if (rc == 0)
		m->pending.dinodes--;
	return rc;
}

int pool_meta_purge(struct pool_meta *m, uint64_t ino)
{
	return run(m, op_purge, &ino);
}

/* ---- listings: copied out in batches, callbacks run unlocked --------------------- */

struct batch {
	uint64_t dir, after; /* what to list, and the cookie (or ino) to go on after */
	int n;
	struct {
		uint64_t cookie;
		struct pool_inode in;
		char name[POOL_META_NAME_MAX + 1];
	} e[META_BATCH];
};

static int op_orphan_batch(struct pool_meta *m, void *arg)
{
	struct batch *b = arg;
	struct rd q;
	int rc = rd_start(m, &q, ST_ORPHANS, ARGS(AI(b->after), AI(META_BATCH)));

	b->n = 0;
	while (rc == 0 && (rc = rd_step(m, &q)) == 1) {
		rc = decode_inode(q.r, q.st, 0, &b->e[b->n].in);
		b->e[b->n].cookie = b->e[b->n].in.ino;
		b->e[b->n].name[0] = '\0';
		b->n++;
	}
	rd_end(&q);
	return rc;
}

static int op_readdir_batch(struct pool_meta *m, void *arg)
{
	struct batch *b = arg;
	struct pool_inode dir;
	struct rd q;
	int rc = get_inode(m, b->dir, &dir);

	b->n = 0;
	if (rc)
		return rc;
	if (!S_ISDIR(dir.mode))
		return -ENOTDIR;
	rc = rd_start(m, &q, ST_READDIR, ARGS(AI(b->dir), AI(b->after), AI(META_BATCH)));
	while (rc == 0 && (rc = rd_step(m, &q)) == 1) {
		rc = decode_entry(q.r, q.st, &b->e[b->n].cookie, b->e[b->n].name, &b->e[b->n].in);
		b->n++;
	}
	rd_end(&q);
	return rc;
}

/* Fetch batches with `op` and hand entries to `each` until the listing
 * ends or `each` returns non-zero (negative is passed back). */
static int list(struct pool_meta *m, op_fn op, struct batch *b,
		int (*each)(void *ctx, const struct batch *b, int i), void *ctx)
{
	int rc;

	do {
		rc = run(m, op, b);
		for (int i = 0; rc == 0 && i < b->n; i++) {
			int stop = each(ctx, b, i);
			if (stop)
				return stop < 0 ? stop : 0;
			b->after = b->e[i].cookie;
		}
	} while (rc == 0 && b->n == META_BATCH);
	return rc;
}

struct readdir_ctx {
	pool_meta_dirent_fn fn;
	void *arg;
};

static int each_dirent(void *ctx, const struct batch *b, int i)
{
	struct readdir_ctx *c = ctx;

	return c->fn(c->arg, b->e[i].name, &b->e[i].in, b->e[i].cookie);
}

int pool_meta_readdir(struct pool_meta *m, uint64_t dir, uint64_t cookie, pool_meta_dirent_fn fn,
		      void *arg)
{
	struct readdir_ctx c = {.fn = fn, .arg = arg};
	struct batch *b = malloc(sizeof(*b));
	int rc;

	if (!b)
		return -ENOMEM;
	b->dir = dir;
	b->after = cookie;
	rc = list(m, op_readdir_batch, b, each_dirent, &c);
	free(b);
	return rc;
}

struct orphans_ctx {
	int (*fn)(void *arg, const struct pool_inode *in);
	void *arg;
};

static int each_orphan(void *ctx, const struct batch *b, int i)
{
	struct orphans_ctx *c = ctx;

	return c->fn(c->arg, &b->e[i].in);
}

int pool_meta_orphans(struct pool_meta *m, int (*fn)(void *arg, const struct pool_inode *in),
		      void *arg)
{
	struct orphans_ctx c = {.fn = fn, .arg = arg};
	struct batch *b = malloc(sizeof(*b));
	int rc;

	if (!b)
		return -ENOMEM;
	b->dir = 0;
	b->after = 0;
	rc = list(m, op_orphan_batch, b, each_orphan, &c);
	free(b);
	return rc;
}

/* Every placed file (npos > 0, linked or not) above `after`, by inode:
 * repair and scrub walk these.  Same batching as the orphans. */
static int op_files_batch(struct pool_meta *m, void *arg)
{
	struct batch *b = arg;
	struct rd q;
	int rc = rd_start(m, &q, ST_FILES, ARGS(AI(b->after), AI(META_BATCH)));

	b->n = 0;
	while (rc == 0 && (rc = rd_step(m, &q)) == 1) {
		rc = decode_inode(q.r, q.st, 0, &b->e[b->n].in);
		b->e[b->n].cookie = b->e[b->n].in.ino;
		b->e[b->n].name[0] = '\0';
		b->n++;
	}
	rd_end(&q);
	return rc;
}

int pool_meta_files(struct pool_meta *m, uint64_t after,
		    int (*fn)(void *arg, const struct pool_inode *in), void *arg)
{
	struct orphans_ctx c = {.fn = fn, .arg = arg};
	struct batch *b = malloc(sizeof(*b));
	int rc;

	if (!b)
		return -ENOMEM;
	b->dir = 0;
	b->after = after;
	rc = list(m, op_files_batch, b, each_orphan, &c);
	free(b);
	return rc;
}

struct path_args {
	uint64_t ino;
	char *buf;
	size_t size;
};

/* Prepend "/name" of ino's first entry, walking up to the root. */
static int op_path(struct pool_meta *m, void *arg)
{
	struct path_args *a = arg;
	size_t end = a->size - 1, at = end;
	uint64_t ino = a->ino;

	a->buf[end] = '\0';
	for (int depth = 0; ino != POOL_META_ROOT && depth < 4096; depth++) {
		struct rd q;
		int rc = rd_row(m, &q, ST_NAME_OF, ARGS(AI(ino)));
		if (rc != 1) {
			rd_end(&q);
			return rc < 0 ? rc : -ENOENT;
		}
		const char *name = (const char *)sqlite3_column_text(q.st, 1);
		size_t len = name ? strlen(name) : 0;
		ino = (uint64_t)sqlite3_column_int64(q.st, 0);
		if (len + 1 > at) {
			rd_end(&q);
			return -ENAMETOOLONG;
		}
		at -= len;
		memcpy(a->buf + at, name, len);
		a->buf[--at] = '/';
		rd_end(&q);
	}
	memmove(a->buf, a->buf + at, end - at + 1);
	return 0;
}

int pool_meta_path(struct pool_meta *m, uint64_t ino, char *buf, size_t size)
{
	struct path_args a = {.ino = ino, .buf = buf, .size = size};

	if (size < 2)
		return -ENAMETOOLONG;
	return run(m, op_path, &a);
}

/* ---- symlinks ---------------------------------------------------------------------- */

struct buf_args {
	uint64_t ino;
	const char *name;
	void *buf;
	size_t size;
	ssize_t len; /* result */
};

/* The target, NUL-terminated in buf; returns its length, -ERANGE when buf
 * cannot hold it and the NUL, -EINVAL for a non-symlink. */
static int op_readlink(struct pool_meta *m, void *arg)
{
	struct buf_args *a = arg;
	struct pool_inode in;
	struct rd q;
	int rc = get_inode(m, a->ino, &in);

	if (rc)
		return rc;
	if (!S_ISLNK(in.mode))
		return -EINVAL;
	rc = rd_row(m, &q, ST_GET_SYMLINK, ARGS(AI(a->ino)));
	if (rc == 1) {
		const char *t = (const char *)sqlite3_column_text(q.st, 0);
		size_t len = (size_t)sqlite3_column_bytes(q.st, 0);
		rc = 0;
		if (!t || len == 0 || len > META_SYMLINK_MAX || strlen(t) != len)
			rc = bad_row(q.r, q.st, 0, (int64_t)a->ino, "symlink target");
		else if (len >= a->size)
			rc = -ERANGE;
		else
			memcpy(a->buf, t, len + 1);
		a->len = (ssize_t)len;
	} else if (rc == 0) {
		say("metadata %s: symlink inode %" PRIu64 " has no target", q.r->path, a->ino);
		rc = -EIO;
	}
	rd_end(&q);
	return rc;
}

int pool_meta_readlink(struct pool_meta *m, uint64_t ino, char *buf, size_t size)
{
	struct buf_args a = {.ino = ino, .buf = buf, .size = size};
	int rc = run(m, op_readlink, &a);

	return rc ? rc : (int)a.len;
}

/* ---- extended attributes ------------------------------------------------------------ */

/* Fill buf with `len` bytes the getxattr way: size 0 asks the size. */
static int copy_out(struct buf_args *a, const void *src, size_t len)
{
	a->len = (ssize_t)len;
	if (a->size == 0)
		return 0;
	if (len > a->size)
		return -ERANGE;
	if (len)
		memcpy(a->buf, src, len);
	return 0;
}

static int op_getxattr(struct pool_meta *m, void *arg)
{
	struct buf_args *a = arg;
	struct pool_inode in;
	struct rd q;
	int rc = check_xattr_name(a->name);

	if (rc == 0)
		rc = get_inode(m, a->ino, &in);
	if (rc)
		return rc;
	rc = rd_row(m, &q, ST_GET_XATTR, ARGS(AI(a->ino), AT(a->name)));
	if (rc == 1) {
		const void *v = sqlite3_column_blob(q.st, 0);
		size_t len = (size_t)sqlite3_column_bytes(q.st, 0);
		if (sqlite3_column_type(q.st, 0) != SQLITE_BLOB || len > META_XATTR_SIZE_MAX)
			rc = bad_row(q.r, q.st, 0, (int64_t)a->ino, "xattr value");
		else
			rc = copy_out(a, v, len);
	} else if (rc == 0) {
		rc = -ENODATA;
	}
	rd_end(&q);
	return rc;
}

ssize_t pool_meta_getxattr(struct pool_meta *m, uint64_t ino, const char *name, void *buf,
			   size_t size)
{
	struct buf_args a = {.ino = ino, .name = name, .buf = buf, .size = size};
	int rc = run(m, op_getxattr, &a);

	return rc ? rc : a.len;
}

/* Build the NUL-separated name list into a->buf (or just its size). */
static int op_listxattr(struct pool_meta *m, void *arg)
{
	struct buf_args *a = arg;
	struct pool_inode in;
	struct rd q;
	size_t total = 0;
	int rc = get_inode(m, a->ino, &in);

	if (rc == 0)
		rc = rd_start(m, &q, ST_LIST_XATTR, ARGS(AI(a->ino)));
	if (rc)
		return rc;
	while ((rc = rd_step(m, &q)) == 1) {
		const char *name = (const char *)sqlite3_column_text(q.st, 0);
		if (!name || check_xattr_name(name)) {
			rc = bad_row(q.r, q.st, 0, (int64_t)a->ino, "xattr name");
			break;
		}
		size_t len = strlen(name) + 1;
		if (a->size && total + len <= a->size)
			memcpy((char *)a->buf + total, name, len);
		total += len;
	}
	rd_end(&q);
	if (rc)
		return rc;
	a->len = (ssize_t)total;
	if (total > META_XATTR_LIST_MAX)
		return -E2BIG;
	return a->size && total > a->size ? -ERANGE : 0;
}

ssize_t pool_meta_listxattr(struct pool_meta *m, uint64_t ino, char *buf, size_t size)
{
	struct buf_args a = {.ino = ino, .buf = buf, .size = size};
	int rc = run(m, op_listxattr, &a);

	return rc ? rc : a.len;
}

struct setxattr_args {
	uint64_t ino;
	const char *name;
	const void *val;
	size_t size;
	int flags;
};

/* 1 if the attribute exists, 0 if not. */
static int xattr_exists(struct pool_meta *m, uint64_t ino, const char *name)
{
	struct rd q;
	int rc = rd_row(m, &q, ST_GET_XATTR, ARGS(AI(ino), AT(name)));

	rd_end(&q);
	return rc;
}

static int op_setxattr(struct pool_meta *m, void *arg)
{
	struct setxattr_args *a = arg;
	struct pool_inode in;
	int rc = check_xattr_name(a->name);

	if (rc == 0 && (a->flags & ~(XATTR_CREATE | XATTR_REPLACE)))
		rc = -EINVAL;
	if (rc == 0 && a->size > META_XATTR_SIZE_MAX)
		rc = -E2BIG;
	if (rc == 0)
		rc = get_inode(m, a->ino, &in);
	if (rc == 0)
		rc = xattr_exists(m, a->ino, a->name);
	if (rc < 0)
		return rc;
	if (rc == 1 && (a->flags & XATTR_CREATE))
		return -EEXIST;
	if (rc == 0 && (a->flags & XATTR_REPLACE))
		return -ENODATA;
	atomic_store(&m->any_xattrs, true); /* before the row exists: a hint may only err high */
	if (!strcmp(a->name, POOL_META_LABEL))
		atomic_store(&m->any_labels, true);
	return wr(m, ST_PUT_XATTR, 1, ARGS(AI(a->ino), AT(a->name), AB(a->val, a->size)));
}

int pool_meta_setxattr(struct pool_meta *m, uint64_t ino, const char *name, const void *val,
		       size_t size, int flags)
{
	struct setxattr_args a = {
	    .ino = ino, .name = name, .val = val, .size = size, .flags = flags};

	return run(m, op_setxattr, &a);
}

static int op_removexattr(struct pool_meta *m, void *arg)
{
	struct setxattr_args *a = arg;
	struct pool_inode in;
	int rc = check_xattr_name(a->name);

	if (rc == 0)
		rc = get_inode(m, a->ino, &in);
	if (rc == 0)
		rc = xattr_exists(m, a->ino, a->name);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return -ENODATA;
	return wr(m, ST_DEL_XATTR, 1, ARGS(AI(a->ino), AT(a->name)));
}

int pool_meta_removexattr(struct pool_meta *m, uint64_t ino, const char *name)
{
	struct setxattr_args a = {.ino = ino, .name = name};

	return run(m, op_removexattr, &a);
}

/* ---- counters ----------------------------------------------------------------------- */

static int op_count(struct pool_meta *m, void *arg)
{
	*(uint64_t *)arg = m->ninodes;
	return 0;
}

int pool_meta_count(struct pool_meta *m, uint64_t *inodes)
{
	return run(m, op_count, inodes);
}

static int op_set_epoch(struct pool_meta *m, void *arg)
{
	return wr(m, ST_PUT_META, -1, ARGS(AT("epoch"), AI(*(uint64_t *)arg)));
}

int pool_meta_set_epoch(struct pool_meta *m, uint64_t epoch)
{
	pthread_mutex_lock(&m->lock);
	uint64_t old = m->epoch;
	m->epoch = epoch;
	m->fenced = false;
	pthread_mutex_unlock(&m->lock);
	int rc = epoch ? run(m, op_set_epoch, &epoch) : 0;
	if (rc < 0) {
		pthread_mutex_lock(&m->lock);
		m->epoch = old;
		pthread_mutex_unlock(&m->lock);
	}
	return rc;
}

bool pool_meta_fenced(struct pool_meta *m)
{
	pthread_mutex_lock(&m->lock);
	bool f = m->fenced;
	pthread_mutex_unlock(&m->lock);
	return f;
}

/* Hold every replica's locks for good (PRAGMA locking_mode=EXCLUSIVE; the
 * next transaction takes them and never lets go): no fcntl() lock and
 * unlock of the database and WAL index per transaction (about 26 per
 * create with 3 replicas), nothing else changes -- commits, WAL and crash
 * recovery are the same.  Only where nothing else may open the files while
 * we run: one node (pool/runlock.c: one daemon per node), not several,
 * whose newer owner must write its epoch into our replicas. */
static int set_locking(struct replica *r, bool exclusive)
{
	int rc = sqlite3_exec(
	    r->db, exclusive ? "PRAGMA locking_mode = EXCLUSIVE" : "PRAGMA locking_mode = NORMAL",
	    NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		snprintf(r->why, sizeof(r->why), "locking mode: %s", sqlite3_errmsg(r->db));
	return rc == SQLITE_OK ? 0 : -EIO;
}

static int op_exclusive(struct pool_meta *m, void *arg)
{
	(void)arg;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (sql_live(r) && set_locking(r, true) < 0)
			drop_replica(m, r, "locking_mode", r->why);
	}
	m->exclusive = nsql(m) > 0;
	if (m->exclusive)
		mirror_all(m);
	if (m->exclusive)
		windows_on(m);
	return nsql(m) ? 0 : -EIO;
}

int pool_meta_exclusive(struct pool_meta *m)
{
	return run_call(m, op_exclusive, NULL, true);
}

void pool_meta_fail_reads(struct pool_meta *m, int sqlite_rc, unsigned n)
{
	pthread_mutex_lock(&m->lock);
	m->fail_reads.rc = sqlite_rc;
	m->fail_reads.n = n;
	pthread_mutex_unlock(&m->lock);
}

bool pool_meta_may_have_xattrs(struct pool_meta *m)
{
	return atomic_load(&m->any_xattrs);
}

bool pool_meta_may_have_labels(struct pool_meta *m)
{
	return atomic_load(&m->any_labels);
}

uint64_t pool_meta_txn(struct pool_meta *m)
{
	pthread_mutex_lock(&m->lock);
	uint64_t txn = m->txn;
	pthread_mutex_unlock(&m->lock);
	return txn;
}

uint32_t pool_meta_live_replicas(struct pool_meta *m)
{
	pthread_mutex_lock(&m->lock);
	uint32_t n = m->nlive;
	pthread_mutex_unlock(&m->lock);
	return n;
}

/* ---- durability ----------------------------------------------------------------------- */

static int fsync_path(const char *path, bool dir)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
	int rc = 0;

	if (fd < 0)
		return errno == ENOENT && !dir ? 0 : -errno;
	if (fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

/* fsync one of the connection's own files (op: the database or its WAL).
 * Never open() and close() them ourselves: closing any descriptor of a
 * file drops every POSIX lock the process holds on it, SQLite's included. */
static int sync_file(struct replica *r, int op)
{
	sqlite3_file *file = NULL;

	if (sqlite3_file_control(r->db, "main", op, &file) != SQLITE_OK || !file || !file->pMethods)
		return 0; /* not open (no WAL yet): nothing written to sync */
	return file->pMethods->xSync(file, SQLITE_SYNC_NORMAL) == SQLITE_OK ? 0 : -EIO;
}

/* Durable against power loss.  Committed transactions are in meta.db or in
 * meta.db-wal (synchronous=NORMAL appends to the WAL without fsync).  A
 * PASSIVE checkpoint copies what it can into meta.db without waiting for
 * readers, which keeps the WAL short; durability itself comes from the
 * fsync of the WAL and the database file afterwards, so it holds even when
 * a reader kept the checkpoint from copying everything. */
static int sync_replica(struct replica *r)
{
	int rc = sqlite3_wal_checkpoint_v2(r->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

	/* Busy or locked: another connection's reader or writer (or, were a
	 * sync ever run inside a transaction, our own: see run_call) kept
	 * the copy into meta.db from running -- it waits for a later
	 * checkpoint; the fsyncs below are what make the WAL durable.  It
	 * says nothing about the replica's disk: dropping replicas for it
	 * once left a volume with none (test_nodes, test_checkpoint). */
	if (rc != SQLITE_OK && !is_busy(rc)) {
		snprintf(r->why, sizeof(r->why), "checkpoint: %s", sqlite3_errmsg(r->db));
		return -EIO;
	}
	rc = sync_file(r, SQLITE_FCNTL_JOURNAL_POINTER);
	if (rc == 0)
		rc = sync_file(r, SQLITE_FCNTL_FILE_POINTER);
	if (rc == 0)
		rc = fsync_path(r->dir, true);
	if (rc)
		snprintf(r->why, sizeof(r->why), "fsync: %s", strerror(-rc));
	return rc;
}

static int op_sync(struct pool_meta *m, void *arg)
{
	(void)arg;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (sql_live(r) && sync_replica(r))
			drop_replica(m, r, "sync", r->why);
		/* a mirror's files were synced with the reader's (walbuf_sync) */
		else if (r->live && r->mirror && fsync_path(r->dir, true) < 0)
			m->tee.d[i].err = errno ? errno : EIO;
	}
	reap_mirrors(m);
	return nsql(m) && !m->failover ? 0 : -EIO;
}

int pool_meta_sync(struct pool_meta *m)
{
	return run_call(m, op_sync, NULL, true);
}

/* ---- opening: probing, creating, restoring --------------------------------------------- */

static int pragma_int(sqlite3 *db, const char *sql, int64_t *v)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*v = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(st);
	return rc;
}

/* quick_check: cheaper than integrity_check (no index/table cross-check)
 * but reads every page, so truncation and garbage pages show. */
static bool quick_check(struct replica *r)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(r->db, "PRAGMA quick_check", -1, &st, NULL);
	const char *first = NULL;

	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		first = (const char *)sqlite3_column_text(st, 0);
	if (first && !strcmp(first, "ok")) {
		sqlite3_finalize(st);
		return true;
	}
	snprintf(r->why, sizeof(r->why), "integrity check failed: %s",
		 first ? first : sqlite3_errmsg(r->db));
	sqlite3_finalize(st);
	return false;
}

/* One meta row, read straight from a replica being probed. */
static bool probe_meta(struct replica *r, const char *key, int64_t *v)
{
	sqlite3_stmt *st = r->st[ST_GET_META];
	bool ok = bind_args(st, ARGS(AT(key))) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
		  col_int(st, 0, 0, INT64_MAX, v);

	sqlite3_reset(st);
	return ok;
}

/* The meta rows and the root inode, read with the statements just
 * prepared (a missing table already failed at prepare time). */
static bool check_contents(struct replica *r)
{
	int64_t txn, next_ino, format, max_ino = 0;
	struct pool_inode root;
	sqlite3_stmt *st;
	bool ok;

	ok = probe_meta(r, "format", &format) && format == META_FORMAT &&
	     probe_meta(r, "txn", &txn) && probe_meta(r, "next_ino", &next_ino);
	st = r->st[ST_MAX_INO];
	if (ok && sqlite3_step(st) == SQLITE_ROW)
		max_ino = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (!ok || next_ino <= max_ino || next_ino <= POOL_META_ROOT) {
		snprintf(r->why, sizeof(r->why), "bad or missing rows in table meta");
		return false;
	}
	st = r->st[ST_GET_INODE];
	ok = bind_args(st, ARGS(AI(POOL_META_ROOT))) == SQLITE_OK &&
	     sqlite3_step(st) == SQLITE_ROW && decode_inode(r, st, 0, &root) == 0 &&
	     S_ISDIR(root.mode);
	sqlite3_reset(st);
	if (!ok) {
		snprintf(r->why, sizeof(r->why), "no valid root directory inode");
		return false;
	}
	r->txn = (uint64_t)txn;
	r->next_ino = (uint64_t)next_ino;
	return true;
}

static bool prepare_all(struct replica *r)
{
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(r->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &r->st[i],
				       NULL) != SQLITE_OK) {
			snprintf(r->why, sizeof(r->why), "%s", sqlite3_errmsg(r->db));
			return false;
		}
	}
	return true;
}

/* Identity first, with read-only pragmas, so a foreign file is never
 * modified; WAL is switched on only once the file is known to be ours. */
static bool check_replica(struct replica *r)
{
	int64_t app = 0, version = 0;

	if (pragma_int(r->db, "PRAGMA application_id", &app) != SQLITE_OK) {
		snprintf(r->why, sizeof(r->why), "%s", sqlite3_errmsg(r->db));
		return false;
	}
	if (app != META_APP_ID) {
		snprintf(r->why, sizeof(r->why),
			 "not a spacefs metadata database (application_id 0x%" PRIx64 ")",
			 (uint64_t)app);
		return false;
	}
	if (pragma_int(r->db, "PRAGMA user_version", &version) != SQLITE_OK ||
	    version != META_FORMAT) {
		snprintf(r->why, sizeof(r->why), "unknown format version %" PRId64, version);
		return false;
	}
	if (!quick_check(r))
		return false;
	/* Checkpoints every META_WAL_BYTES of WAL rather than SQLite's 1000
	 * pages: a checkpoint costs two fdatasync whatever it copies, and the
	 * few pages a run of creates keeps rewriting (the directory's leaf,
	 * the index leaves, meta) are copied once instead of once per 1000
	 * pages.  A crash recovers a longer WAL on the next open (milliseconds). */
	char sql[200];
	int64_t page = 0;
	if (pragma_int(r->db, "PRAGMA page_size", &page) != SQLITE_OK || page <= 0)
		page = 4096;
	snprintf(sql, sizeof(sql),
		 "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
		 " PRAGMA foreign_keys = OFF; PRAGMA wal_autocheckpoint = %" PRId64,
		 META_WAL_BYTES / page);
	if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(r->why, sizeof(r->why), "%s", sqlite3_errmsg(r->db));
		return false;
	}
	return prepare_all(r) && check_contents(r);
}

/* Open and validate r->path.  On success r->db is ready and r->txn set. */
static int probe(struct replica *r)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, walbuf_register);
	int rc = sqlite3_open_v2(r->path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				 WALBUF_VFS);

	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(r->db, META_BUSY_MS);
		if (check_replica(r)) {
			r->state = R_VALID;
			return 0;
		}
		rc = sqlite3_errcode(r->db);
	} else {
		snprintf(r->why, sizeof(r->why), "%s", sqlite3_errmsg(r->db));
	}
	/* Held by someone else or not writable is not damage: leave it alone. */
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED || sqlite3_db_readonly(r->db, "main") == 1)
		r->state = R_UNREACHABLE;
	else
		r->state = R_BAD;
	close_conn(r);
	return -EIO;
}

static void remove_sidecars(const char *path)
{
	char p[META_PATH_MAX + 16];

	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-journal", path);
	unlink(p);
}

/* Put a finished temp file in place of r->path.  A WAL left next to the
 * old file must go first: SQLite would replay it into the new one. */
static int install(struct replica *r, const char *tmp)
{
	int rc = fsync_path(tmp, false);

	remove_sidecars(r->path);
	if (rc == 0 && rename(tmp, r->path))
		rc = -errno;
	if (rc == 0)
		rc = fsync_path(r->dir, true);
	if (rc) {
		snprintf(r->why, sizeof(r->why), "renaming the new file into place: %s",
			 strerror(-rc));
		unlink(tmp);
	}
	return rc;
}

/* Write a new store into `tmp`: schema, meta rows and the root. */
static int write_fresh(const char *tmp, uint32_t uid, uint32_t gid, int64_t now, char *why,
		       size_t whylen)
{
	char head[256], sql[512];
	sqlite3 *db = NULL;
	int rc;

	unlink(tmp);
	remove_sidecars(tmp);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO meta VALUES('format', %d), ('txn', 0), ('next_ino', %d);"
		 " INSERT INTO inodes VALUES(%d, %u, %u, %u, 2, 0, 0, %" PRId64 ", %" PRId64
		 ", %" PRId64 ", 0, x'');"
		 " COMMIT;",
		 META_FORMAT, POOL_META_ROOT + 1, POOL_META_ROOT, (unsigned)(S_IFDIR | 0755), uid,
		 gid, now, now, now);
	snprintf(head, sizeof(head),
		 "PRAGMA page_size = 1024; PRAGMA application_id = %d; PRAGMA user_version = %d;"
		 " PRAGMA journal_mode = WAL; BEGIN;",
		 META_APP_ID, META_FORMAT);
	rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, head, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		snprintf(why, whylen, "creating the database: %s", sqlite3_errmsg(db));
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -EIO;
}

/* Copy the whole database of `src` into `tmp` (backup API). */
static int write_copy(sqlite3 *src, const char *tmp, char *why, size_t whylen)
{
	sqlite3 *db = NULL;
	sqlite3_backup *b = NULL;
	int rc;

	unlink(tmp);
	remove_sidecars(tmp);
	rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK) {
		b = sqlite3_backup_init(db, "main", src, "main");
		rc = b ? sqlite3_backup_step(b, -1) : sqlite3_errcode(db);
		if (rc == SQLITE_DONE)
			rc = SQLITE_OK;
		if (b && sqlite3_backup_finish(b) != SQLITE_OK && rc == SQLITE_OK)
			rc = sqlite3_errcode(db);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		snprintf(why, whylen, "copying the database: %s", sqlite3_errstr(rc));
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : -EIO;
}

/* Replace replica `dst` by a copy of `src`; a damaged file is kept aside
 * as meta.db.bad for whoever wants to look at it. */
static int restore(struct replica *src, struct replica *dst)
{
	char tmp[META_PATH_MAX], bad[META_PATH_MAX];
	int rc;

	close_conn(dst);
	snprintf(tmp, sizeof(tmp), "%s.tmp", dst->path);
	if (dst->state == R_BAD) {
		snprintf(bad, sizeof(bad), "%s.bad", dst->path);
		remove_sidecars(dst->path);
		if (rename(dst->path, bad) == 0)
			say("metadata replica %s moved aside to %s", dst->path, bad);
	}
	rc = write_copy(src->db, tmp, dst->why, sizeof(dst->why));
	if (rc == 0)
		rc = install(dst, tmp);
	if (rc == 0)
		rc = probe(dst);
	if (rc) {
		say("metadata replica %s could not be restored: %s", dst->path, dst->why);
		return rc;
	}
	say("metadata replica %s restored from %s (txn %" PRIu64 ")", dst->path, src->path,
	    src->txn);
	return 0;
}

/* A brand-new store on every replica.  Each gets the same rows (same
 * root timestamp), so they start identical. */
static int create_all(struct pool_meta *m, uint32_t uid, uint32_t gid, char *err, size_t errlen)
{
	struct timespec ts;
	uint32_t nok = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		char tmp[META_PATH_MAX];
		snprintf(tmp, sizeof(tmp), "%s.tmp", r->path);
		int rc = write_fresh(tmp, uid, gid, now, r->why, sizeof(r->why));
		if (rc == 0)
			rc = install(r, tmp);
		if (rc == 0)
			rc = probe(r);
		if (rc)
			say("metadata replica %s could not be created: %s", r->path, r->why);
		else
			nok++;
	}
	if (nok == 0) {
		snprintf(err, errlen, "metadata: could not create any replica (first: %s: %s)",
			 m->r[0].path, m->r[0].why);
		return -EIO;
	}
	return 0;
}

/* Files exist but none is valid: name each and why, change nothing. */
static int refuse(struct pool_meta *m, char *err, size_t errlen)
{
	size_t used = 0;

	used += (size_t)snprintf(err, errlen, "metadata: no valid replica");
	for (uint32_t i = 0; i < m->n && used < errlen; i++) {
		const struct replica *r = &m->r[i];
		const char *why = r->state == R_MISSING ? "missing" : r->why;
		used += (size_t)snprintf(err + used, errlen - used, "%s %s: %s", i ? ";" : ":",
					 r->path, why);
	}
	return -EIO;
}

static struct replica *newest(struct pool_meta *m)
{
	struct replica *best = NULL;

	for (uint32_t i = 0; i < m->n; i++)
		if (m->r[i].state == R_VALID && (!best || m->r[i].txn > best->txn))
			best = &m->r[i];
	return best;
}

/* Directory `dir` and its parents. */
static int mkdir_p(const char *dir)
{
	char p[META_PATH_MAX];
	struct stat sb;

	snprintf(p, sizeof(p), "%s", dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0755) && errno != EEXIST)
		return -errno;
	if (stat(p, &sb))
		return -errno;
	return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

/* Paths for each replica; its directory made; same directory twice refused
 * (its second connection would wait forever on the first's lock). */
static int setup_replicas(struct pool_meta *m, const char *const *dirs, char *err, size_t errlen)
{
	struct stat sb[POOL_META_MAX_REPLICAS];

	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		char tmp[META_PATH_MAX];
		if (strlen(dirs[i]) > PATH_MAX - 64) {
			snprintf(err, errlen, "metadata: directory name too long: %.80s...",
				 dirs[i]);
			return -ENAMETOOLONG;
		}
		r->dir = strdup(dirs[i]);
		if (!r->dir || asprintf(&r->path, "%s/meta.db", dirs[i]) < 0) {
			r->path = NULL;
			return -ENOMEM;
		}
		int rc = mkdir_p(r->dir);
		if (rc == 0 && stat(r->dir, &sb[i]))
			rc = -errno;
		if (rc) {
			r->state = R_UNREACHABLE;
			snprintf(r->why, sizeof(r->why), "directory %s: %s", r->dir, strerror(-rc));
			say("metadata replica %s unreachable: %s", r->path, r->why);
			continue;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (m->r[j].state != R_UNREACHABLE && sb[j].st_dev == sb[i].st_dev &&
			    sb[j].st_ino == sb[i].st_ino) {
				snprintf(err, errlen, "metadata: %s and %s are the same directory",
					 m->r[j].dir, r->dir);
				return -EINVAL;
			}
		}
		snprintf(tmp, sizeof(tmp), "%s.tmp", r->path);
		unlink(tmp); /* a copy or creation cut short */
		r->state = R_MISSING;
	}
	return 0;
}

/* Probe every replica that has a file. */
static void probe_all(struct pool_meta *m, uint32_t *nfound, uint32_t *nok, uint32_t *nunreachable)
{
	*nfound = *nok = *nunreachable = 0;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		struct stat sb;
		if (r->state == R_UNREACHABLE) {
			++*nunreachable;
			continue;
		}
		if (lstat(r->path, &sb)) {
			if (errno == ENOENT)
				continue;
			r->state = R_UNREACHABLE;
			snprintf(r->why, sizeof(r->why), "%s", strerror(errno));
			say("metadata replica %s unreachable: %s", r->path, r->why);
			++*nunreachable;
			continue;
		}
		++*nfound;
		if (probe(r) == 0) {
			++*nok;
			continue;
		}
		if (r->state == R_UNREACHABLE)
			++*nunreachable;
		say("metadata replica %s is unusable: %s", r->path, r->why);
	}
}

static int open_replicas(struct pool_meta *m, uint32_t uid, uint32_t gid, char *err, size_t errlen)
{
	uint32_t nfound, nok, nunreachable;
	struct replica *best;

	probe_all(m, &nfound, &nok, &nunreachable);
	if (nfound == 0 && nunreachable == 0)
		return create_all(m, uid, gid, err, errlen);
	if (nok == 0)
		return refuse(m, err, errlen);
	best = newest(m);
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (r == best || r->state == R_UNREACHABLE)
			continue;
		if (r->state == R_VALID && r->txn == best->txn)
			continue;
		if (r->state == R_VALID)
			say("metadata replica %s is stale (txn %" PRIu64 " < %" PRIu64 ")", r->path,
			    r->txn, best->txn);
		restore(best, r);
	}
	return 0;
}

static int load_state(struct pool_meta *m)
{
	struct replica *best = newest(m);
	struct rd q;
	int rc;

	assert(best);
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		r->live = r->state == R_VALID && r->txn == best->txn;
		m->nlive += r->live;
		if (r->state == R_VALID && !r->live)
			close_conn(r);
	}
	m->txn = best->txn;
	m->next_ino = best->next_ino;
	rc = rd_row(m, &q, ST_COUNT_INODES, NULL, 0);
	if (rc == 1)
		m->ninodes = (uint64_t)sqlite3_column_int64(q.st, 0);
	rd_end(&q);
	if (rc == 1) {
		int any = rd_row(m, &q, ST_ANY_XATTR, NULL, 0);
		rd_end(&q);
		atomic_store(&m->any_xattrs, any != 0); /* on a read error: assume some */
		any = any ? rd_row(m, &q, ST_ANY_LABEL, NULL, 0) : 0;
		rd_end(&q);
		atomic_store(&m->any_labels, any != 0);
	}
	reap_dropped(m);
	return rc == 1 ? 0 : -EIO;
}

int pool_meta_open(const char *const *dirs, uint32_t ndirs, uint32_t uid, uint32_t gid,
		   struct pool_meta **out, char *err, size_t errlen)
{
	struct pool_meta *m;
	int rc;

	*out = NULL;
	if (!dirs || ndirs == 0 || ndirs > POOL_META_MAX_REPLICAS) {
		snprintf(err, errlen, "metadata: need 1 to %d replica directories, got %u",
			 POOL_META_MAX_REPLICAS, ndirs);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "metadata: out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->qlock, NULL);
	pthread_cond_init(&m->qcond, NULL);
	pthread_mutex_init(&m->tlock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* as now_ns() */
	pthread_cond_init(&m->tcond, &ca);
	pthread_condattr_destroy(&ca);
	for (uint32_t i = 0; i < POOL_META_MAX_REPLICAS; i++)
		m->r[i].logfd = -1;
	m->window_ns = META_WINDOW_NS;
	m->window_recs = META_WINDOW_RECS;
	m->qtail = &m->queue;
	m->n = ndirs;
	rc = setup_replicas(m, dirs, err, errlen);
	if (rc == 0)
		rc = open_replicas(m, uid, gid, err, errlen);
	if (rc == 0) {
		rc = load_state(m);
		if (rc)
			snprintf(err, errlen, "metadata: cannot read %s",
				 newest(m) ? newest(m)->path : m->r[0].path);
	}
	if (rc == 0) {
		rc = replay_logs(m, err, errlen);
	}
	if (rc == -ENOMEM)
		snprintf(err, errlen, "metadata: out of memory");
	if (rc) {
		pool_meta_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

void pool_meta_close(struct pool_meta *m)
{
	if (!m)
		return;
	if (m->timer_on) {
		pthread_mutex_lock(&m->tlock);
		m->timer_stop = true;
		pthread_cond_signal(&m->tcond);
		pthread_mutex_unlock(&m->tlock);
		pthread_join(m->timer, NULL);
	}
	pthread_mutex_lock(&m->lock);
	end_window(m);
	pthread_mutex_unlock(&m->lock);
	/* An empty WAL everywhere (the truncate reaches the mirrors), then the
	 * reader closes first: its last writes go to the mirrors too. */
	struct replica *p = m->teeing ? reader(m) : NULL;
	if (p)
		sqlite3_wal_checkpoint_v2(p->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	if (p)
		close_conn(p);
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (r->db)
			close_conn(r);
		if (r->mirror)
			unmirror_one(m, i);
		if (r->logfd >= 0)
			close(r->logfd);
		free(r->dir);
		free(r->path);
	}
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->qlock);
	pthread_cond_destroy(&m->qcond);
	pthread_mutex_destroy(&m->tlock);
	pthread_cond_destroy(&m->tcond);
	free(m->win.buf);
	free(m);
}

/* ---- mirrors (one node) ---------------------------------------------------- */

/* Why.  Every replica running every statement and its own COMMIT was half
 * of the daemon's CPU per create (docs/BENCHMARKS.md, third round).  With
 * one node nothing else opens the replicas while the volume is attached
 * (pool/runlock.c, EXCLUSIVE locking), so the statements can run once, on
 * the reader, and the other replicas receive the reader's file writes
 * instead: its VFS (the walbuf layer above) repeats every write, truncate
 * and sync of meta.db and meta.db-wal on theirs, so they stay byte for byte
 * the same.  An acknowledged change is still in every live replica's WAL
 * before the reply (the WAL append is repeated right after the reader's,
 * inside commit_all), so kill -9 loses nothing acknowledged.  A mirror
 * whose write fails stops being written (its files hold a prefix of the
 * writes: an older, consistent state) and is dropped; the reader failing
 * drops it, turns every mirror into a connection of its own and runs the
 * call again there (failover()).  Several nodes keep the replication by
 * statements. */

#define MIRROR_CHUNK (64 << 10)

/* 1 if the file at `path` holds exactly the source's `size` bytes, 0 if
 * not, negative errno if it cannot be read.  The source is read through
 * its connection's file: opening and closing it here would drop SQLite's
 * POSIX locks on it. */
static int same_bytes(sqlite3_file *src, sqlite3_int64 size, const char *path, char *buf)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 1;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0 || st.st_size != size)
		rc = 0;
	for (sqlite3_int64 off = 0; rc == 1 && off < size; off += MIRROR_CHUNK) {
		int n = (int)(size - off < MIRROR_CHUNK ? size - off : MIRROR_CHUNK);
		if (src->pMethods->xRead(src, buf, n, off) != SQLITE_OK)
			rc = -EIO;
		else if (pread(fd, buf + MIRROR_CHUNK, (size_t)n, off) != n ||
			 memcmp(buf, buf + MIRROR_CHUNK, (size_t)n))
			rc = 0;
	}
	close(fd);
	return rc;
}

static int copy_bytes(sqlite3_file *src, sqlite3_int64 size, const char *tmp, char *buf)
{
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), rc = 0;

	if (fd < 0)
		return -errno;
	for (sqlite3_int64 off = 0; rc == 0 && off < size; off += MIRROR_CHUNK) {
		int n = (int)(size - off < MIRROR_CHUNK ? size - off : MIRROR_CHUNK);
		if (src->pMethods->xRead(src, buf, n, off) != SQLITE_OK)
			rc = -EIO;
		else if (pwrite(fd, buf, (size_t)n, off) != n)
			rc = errno ? -errno : -EIO;
	}
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* Make r's files a copy of the source's (`size` bytes, its WAL empty) --
 * through a temp file and a rename where they differ, so a crash leaves
 * the old file or the new one -- and open them for the tee, locked as a
 * SQLite writer would lock them so that nothing else opens them meanwhile
 * (an OFD lock: it also holds against connections of this process). */
static int make_mirror(sqlite3_file *src, sqlite3_int64 size, struct replica *r, struct tee_dst *d)
{
	char tmp[META_PATH_MAX + 16], wal[META_PATH_MAX + 16];
	char *buf = malloc(2 * MIRROR_CHUNK);
	int rc = buf ? same_bytes(src, size, r->path, buf) : -ENOMEM;

	if (rc == 0) {
		snprintf(tmp, sizeof(tmp), "%s.mirror", r->path);
		rc = copy_bytes(src, size, tmp, buf);
		if (rc == 0) {
			remove_sidecars(r->path);
			rc = rename(tmp, r->path) < 0 ? -errno : fsync_path(r->dir, true);
		}
		if (rc < 0)
			unlink(tmp);
	}
	free(buf);
	if (rc < 0) {
		snprintf(r->why, sizeof(r->why), "copying: %s", strerror(-rc));
		return rc;
	}
	snprintf(wal, sizeof(wal), "%s-wal", r->path);
	struct flock fl = {.l_type = F_WRLCK,
			   .l_whence = SEEK_SET,
			   .l_start = 0x40000000,
			   .l_len = 512}; /* SQLite's pending, reserved and shared bytes */
	d->fd[0] = open(r->path, O_RDWR | O_CLOEXEC);
	d->fd[1] = open(wal, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (d->fd[0] < 0 || d->fd[1] < 0 || fcntl(d->fd[0], F_OFD_SETLK, &fl) < 0) {
		rc = -errno;
		snprintf(r->why, sizeof(r->why), "opening: %s", strerror(errno));
		if (d->fd[0] >= 0)
			close(d->fd[0]);
		if (d->fd[1] >= 0)
			close(d->fd[1]);
		return rc;
	}
	d->on = true;
	d->err = 0;
	return 0;
}

/* Turn every other live replica into a mirror of the reader.  Each is
 * checkpointed to an empty WAL first, so the files alone hold everything;
 * a file that differs from the reader's (replicas kept by statements are
 * equal in rows, not in bytes) is replaced by a copy.  Any failure leaves
 * that replica out of the live set (the next open copies it afresh); a
 * failure on the reader leaves things as they were. */
static void mirror_all(struct pool_meta *m)
{
	struct replica *p = reader(m);
	sqlite3_file *dbf = NULL, *walf = NULL;
	sqlite3_int64 size = 0;
	uint32_t n = 0;

	if (!p || m->teeing || nsql(m) < 2)
		return;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!sql_live(r) ||
		    sqlite3_wal_checkpoint_v2(r->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
					      NULL) == SQLITE_OK)
			continue;
		if (r == p)
			return;
		drop_replica(m, r, "checkpoint", sqlite3_errmsg(r->db));
	}
	if (sqlite3_file_control(p->db, "main", SQLITE_FCNTL_FILE_POINTER, &dbf) != SQLITE_OK ||
	    sqlite3_file_control(p->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &walf) != SQLITE_OK ||
	    !dbf || !walf || dbf->pMethods != &walbuf_methods ||
	    walf->pMethods != &walbuf_methods || dbf->pMethods->xFileSize(dbf, &size) != SQLITE_OK)
		return;
	m->tee = (struct meta_tee){.off = false};
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (r == p || !sql_live(r))
			continue;
		close_conn(r);
		if (make_mirror(dbf, size, r, &m->tee.d[i]) < 0) {
			say("metadata replica %s dropped: mirroring: %s", r->path, r->why);
			r->live = false;
			m->nlive--;
			continue;
		}
		r->mirror = true;
		n++;
	}
	reap_dropped(m);
	if (n == 0)
		return;
	WB(dbf)->tee = WB(walf)->tee = &m->tee;
	m->teeing = true;
}

/* Every mirror becomes a connection again (its files hold every committed
 * change): after its source was dropped (src NULL), or to add a replica.
 * The number of connections after. */
static int reconnect_mirrors(struct pool_meta *m, struct replica *src)
{
	m->tee.off = true;
	m->teeing = false;
	m->failover = false;
	for (uint32_t i = 0; i < m->n; i++) {
		struct replica *r = &m->r[i];
		if (!r->mirror)
			continue;
		unmirror_one(m, i); /* our descriptors closed before SQLite opens */
		if (!r->live)
			continue;
		int rc = probe(r);
		if (rc == 0 && r->txn != m->txn) {
			snprintf(r->why, sizeof(r->why), "at txn %" PRIu64 ", not %" PRIu64, r->txn,
				 m->txn);
			close_conn(r);
			rc = -EIO;
		}
		if (rc == 0 && m->exclusive && set_locking(r, true) < 0) {
			close_conn(r);
			rc = -EIO;
		}
		if (rc < 0) {
			say("metadata replica %s dropped: reopening a mirror: %s", r->path, r->why);
			r->live = false;
			m->nlive--;
		} else if (src) { /* wr() compares row ids across connections */
			sqlite3_set_last_insert_rowid(r->db, sqlite3_last_insert_rowid(src->db));
		}
	}
	return (int)nsql(m);
}

static int failover(struct pool_meta *m)
{
	return reconnect_mirrors(m, NULL);
}

/* ---- replicas added while open (a rebuilt metadata disk) -------------------- */

/* The slot for `dir`: its old one, one whose directory is gone (a disk
 * removed under us keeps a "live" connection to deleted files), a
 * dropped one, or a new one. */
static struct replica *slot_for(struct pool_meta *m, const char *dir, const struct replica *src)
{
	struct stat st;

	for (uint32_t i = 0; i < m->n; i++)
		if (m->r[i].dir && !strcmp(m->r[i].dir, dir))
			return &m->r[i];
	for (uint32_t i = 0; i < m->n; i++)
		if (&m->r[i] != src && m->r[i].dir && stat(m->r[i].dir, &st) < 0)
			return &m->r[i];
	for (uint32_t i = 0; i < m->n; i++)
		if (!m->r[i].live)
			return &m->r[i];
	return m->n < POOL_META_MAX_REPLICAS ? &m->r[m->n++] : NULL;
}

int pool_meta_add_replica(struct pool_meta *m, const char *dir, char *err, size_t errlen)
{
	struct replica *src = NULL, *r;
	struct stat st;
	int rc = -ENOSPC;

	pthread_mutex_lock(&m->lock);
	end_window(m); /* the copy is of committed state */
	if (m->teeing) /* copied from a connection, kept by statements, mirrored again below */
		reconnect_mirrors(m, reader(m));
	for (uint32_t i = 0; i < m->n && !src; i++)
		if (m->r[i].live && m->r[i].db && strcmp(m->r[i].dir, dir) &&
		    stat(m->r[i].dir, &st) == 0)
			src = &m->r[i];
	r = src ? slot_for(m, dir, src) : NULL;
	if (r) {
		if (r->live) {
			r->live = false;
			m->nlive--;
		}
		close_conn(r);
		if (r->logfd >= 0)
			close(r->logfd);
		r->logfd = -1;
		free(r->dir);
		free(r->path);
		r->path = NULL;
		r->dir = strdup(dir);
		rc = r->dir && asprintf(&r->path, "%s/meta.db", dir) >= 0 ? mkdir_p(dir) : -ENOMEM;
		r->state = R_MISSING;
		src->txn = m->txn;
		if (rc == 0)
			rc = restore(src, r);
		if (rc == 0 && m->exclusive)
			rc = set_locking(r, true);
		if (rc == 0 && r->txn == m->txn) {
			/* wr() compares row ids across connections */
			sqlite3_set_last_insert_rowid(r->db, sqlite3_last_insert_rowid(src->db));
			r->live = true;
			m->nlive++;
		} else if (rc == 0) {
			rc = -EIO;
		}
	}
	if (m->exclusive)
		mirror_all(m);
	if (m->exclusive)
		windows_on(m); /* the new replica's log */
	pthread_mutex_unlock(&m->lock);
	if (rc < 0)
		snprintf(err, errlen, "metadata replica %s/meta.db: %s", dir,
			 src ? strerror(-rc) : "no live replica to copy from");
	return rc;
}

/* ---- placement changes (a retired disk emptied) ------------------------------ */

struct disks_args {
	uint64_t ino;
	uint32_t npos;
	const uint8_t *disk;
};

static int op_set_disks(struct pool_meta *m, void *arg)
{
	struct disks_args *a = arg;

	return wr(m, ST_SET_DISKS, 1, ARGS(AI(a->ino), AB(a->disk, a->npos), AI(a->npos)));
}

int pool_meta_set_disks(struct pool_meta *m, uint64_t ino, uint32_t npos, const uint8_t *disk)
{
	struct disks_args a = {.ino = ino, .npos = npos, .disk = disk};

	if (npos == 0 || npos > LAYOUT_MAX_POSITIONS)
		return -EINVAL;
	return run(m, op_set_disks, &a);
}

/* ---- hidden files (checkpoint differencing data, fs/ckpt.c) ---------------------- */

static int op_create_hidden(struct pool_meta *m, void *arg)
{
	struct pool_inode *in = arg;
	int rc = check_attrs(in);

	if (rc == 0 && !S_ISREG(in->mode))
		rc = -EINVAL;
	if (rc == 0)
		rc = begin_all(m);
	if (rc)
		return rc;
	in->ino = m->pending.next_ino++;
	in->nlink = 1; /* not an orphan: nothing reaps it but pool_meta_drop_hidden */
	rc = put_inode(m, in);
	if (rc == 0)
		rc = wr(m, ST_SET_META, 1, ARGS(AT("next_ino"), AI(m->pending.next_ino)));
	if (rc == 0)
		m->pending.dinodes++;
	return rc;
}

int pool_meta_create_hidden(struct pool_meta *m, struct pool_inode *in)
{
	struct pool_inode a = *in;
	int rc = run(m, op_create_hidden, &a);

	if (rc == 0)
		*in = a;
	return rc;
}

static int op_drop_hidden(struct pool_meta *m, void *arg)
{
	const uint64_t *ino = arg;
	struct pool_inode in;
	int rc = get_inode(m, *ino, &in);

	if (rc)
		return rc;
	if (!S_ISREG(in.mode))
		return -EINVAL;
	rc = wr(m, ST_DEL_INODE, 1, ARGS(AI(in.ino)));
	if (rc == 0)
		rc = wr(m, ST_DEL_XATTRS, -1, ARGS(AI(in.ino)));
	if (rc == 0)
		m->pending.dinodes--;
	return rc;
}

int pool_meta_drop_hidden(struct pool_meta *m, uint64_t ino)
{
	return run(m, op_drop_hidden, &ino);
}
