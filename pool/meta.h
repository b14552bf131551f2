/*
 * meta.h -- one volume's metadata: namespace, inodes, xattrs, placement.
 *
 * Kept in SQLite, one database per metadata disk
 * (<disk>/vol/<volume>/meta.db), every replica holding the same rows.
 * Each change is one transaction applied to every live replica in turn,
 * each stamped with the same transaction counter (table `meta`, key
 * 'txn').  Opening takes the replica with the highest counter, re-copies
 * stale or missing replicas from it (SQLite backup API) and says so on
 * stderr.  A file that is not a spacefs metadata database (wrong
 * application_id, unknown user_version, failed integrity_check, or not
 * SQLite at all) is named in a one-line error and treated as missing.
 *
 * Durability: replicas run in WAL mode with synchronous=NORMAL, so a
 * committed transaction survives a crash of the daemon (kill -9) at once;
 * pool_meta_sync() makes everything so far durable against power loss on
 * every replica.  A replica whose write fails is dropped from the live set
 * with a log line; the store goes on while one replica is live.
 *
 * Inode 1 is the volume's root directory, created with the store.  Inode
 * numbers are never reused, so (ino, generation 0) is a stable FUSE handle.
 *
 * Concurrency: every function is thread-safe (one internal mutex; SQLite
 * is fast enough for metadata at FUSE rates, and fs/ caches attributes).
 * Calls that arrive while others run are batched into one transaction
 * (group commit); each is answered once that transaction committed --
 * or, with one node, a create once its record is in every replica's
 * meta.log (create windows, pool_meta_set_window): the next open replays
 * a window that never committed, so kill -9 loses no answered create.
 */
#ifndef SPACEFS_POOL_META_H
#define SPACEFS_POOL_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout/layout.h"

#define POOL_META_NAME_MAX     255
#define POOL_META_ROOT	       1
#define POOL_META_MAX_REPLICAS 8

struct pool_meta;

/* One inode.  Times in nanoseconds since the epoch. */
struct pool_inode {
	uint64_t ino;
	uint32_t mode; /* type and permission bits, as st_mode */
	uint32_t uid, gid;
	uint32_t nlink;
	uint64_t size;
	uint64_t rdev;
	int64_t atime_ns, mtime_ns, ctime_ns;
	uint32_t npos;			    /* regular files: stripe positions */
	uint8_t disk[LAYOUT_MAX_POSITIONS]; /* pool disk index of each position */
};

/* Open (creating if none exists) the store on the given replica
 * directories (each <disk>/vol/<volume>; created if missing).  Fails with
 * a one-line *err when no replica is usable.  `uid`, `gid` own a newly
 * created root. */
int pool_meta_open(const char *const *dirs, uint32_t ndirs, uint32_t uid, uint32_t gid,
		   struct pool_meta **out, char *err, size_t errlen);
void pool_meta_close(struct pool_meta *m);

/* Make all committed changes durable on every live replica. */
int pool_meta_sync(struct pool_meta *m);
/* Fencing (several nodes): stamp `epoch` on every replica and check it in
 * every later write transaction; a replica holding a newer epoch refuses
 * the write (-EIO, and pool_meta_fenced() turns true for good).  -EIO if a
 * replica already holds a newer epoch.  Epoch 0 (the default) fences
 * nothing. */
int pool_meta_set_epoch(struct pool_meta *m, uint64_t epoch);
bool pool_meta_fenced(struct pool_meta *m);
/* One node only: keep the replicas' file locks for as long as the store is
 * open (SQLite's EXCLUSIVE locking mode), saving the lock calls of every
 * transaction.  Nothing else can open the replicas until pool_meta_close. */
int pool_meta_exclusive(struct pool_meta *m);
/* Also one node only, from pool_meta_exclusive on: creates are committed
 * in windows (several creates per transaction, each acknowledged once its
 * record is in every replica's meta.log, so kill -9 loses none; the next
 * open replays them).  A window commits after `ns` nanoseconds or
 * `max_creates` creates (defaults 10 ms and 1024), before any other change,
 * sync or close.  Tests only: other bounds; max_creates 0 turns windows off. */
void pool_meta_set_window(struct pool_meta *m, int64_t ns, uint32_t max_creates);
/* False when no inode of the store has an extended attribute: getxattr of
 * any inode is -ENODATA and listxattr empty, answered without a query (ls -l
 * asks every file for security.selinux).  Read without the lock; turns
 * true before the first setxattr writes and stays true until reopened. */
bool pool_meta_may_have_xattrs(struct pool_meta *m);
/* The same for the SELinux label attribute: false when no inode of the
 * store has one (see fs_op_getxattr for why fs/ asks). */
#define POOL_META_LABEL "security.selinux"
bool pool_meta_may_have_labels(struct pool_meta *m);
/* Tests only: the next n reads on the reader replica fail with SQLite
 * result code sqlite_rc instead of running (a busy replica, a failing
 * disk), so the handling of each can be shown without staging it. */
void pool_meta_fail_reads(struct pool_meta *m, int sqlite_rc, unsigned n);
/* Transaction counter of the newest state, and how many replicas are live. */
uint64_t pool_meta_txn(struct pool_meta *m);
uint32_t pool_meta_live_replicas(struct pool_meta *m);

int pool_meta_get(struct pool_meta *m, uint64_t ino, struct pool_inode *out); /* -ENOENT */
int pool_meta_lookup(struct pool_meta *m, uint64_t parent, const char *name,
		     struct pool_inode *out); /* -ENOENT, -ENOTDIR */

/* The directory holding directory `dir` (the root is its own parent), for
 * "..".  -ENOENT if dir has no entry. */
int pool_meta_parent(struct pool_meta *m, uint64_t dir, uint64_t *parent);

/* Create `name` in directory `parent` from *in (ino is assigned and written
 * back; nlink is set to 1, or 2 for a directory, whose parent's nlink goes
 * up; in a setgid directory the gid is the directory's and a new directory
 * is setgid too, as ext4 does).  `symlink_target` is stored for symlinks, NULL otherwise.  Updates
 * the parent's mtime/ctime to in->ctime_ns.  -EEXIST, -ENOENT, -ENOTDIR,
 * -ENAMETOOLONG. */
int pool_meta_create(struct pool_meta *m, uint64_t parent, const char *name, struct pool_inode *in,
		     const char *symlink_target);
/* Hard link: a new entry for ino; nlink+1.  -EEXIST, -EPERM on a dir. */
int pool_meta_link(struct pool_meta *m, uint64_t ino, uint64_t parent, const char *name,
		   int64_t now_ns, struct pool_inode *out);
/* Remove a non-directory entry; nlink-1.  *out gets the inode after the
 * change (nlink 0 means the caller should purge it once nobody has it
 * open).  -ENOENT, -EISDIR. */
int pool_meta_unlink(struct pool_meta *m, uint64_t parent, const char *name, int64_t now_ns,
		     struct pool_inode *out);
/* Remove an empty directory.  -ENOTEMPTY, -ENOTDIR, -ENOENT. */
int pool_meta_rmdir(struct pool_meta *m, uint64_t parent, const char *name, int64_t now_ns,
		    uint64_t *ino_out);
/* rename(2) semantics including RENAME_NOREPLACE and RENAME_EXCHANGE
 * (flags as in <linux/fs.h>): -EEXIST, -ENOENT, -ENOTDIR, -EISDIR,
 * -ENOTEMPTY, -EINVAL (a directory into its own subtree).  If an existing
 * target is replaced, *replaced gets its inode after the change (ino 0 if
 * none), so the caller can purge it when its nlink is 0. */
int pool_meta_rename(struct pool_meta *m, uint64_t parent, const char *name, uint64_t newparent,
		     const char *newname, unsigned int flags, int64_t now_ns,
		     struct pool_inode *replaced);
/* Store all attributes of *in (mode, uid, gid, size, rdev, times). */
int pool_meta_setattr(struct pool_meta *m, const struct pool_inode *in);
/* Same for n inodes in one transaction (the attribute write-back). */
int pool_meta_setattr_many(struct pool_meta *m, const struct pool_inode *in, size_t n);
/* Drop an inode with nlink 0 and its xattrs for good. */
int pool_meta_purge(struct pool_meta *m, uint64_t ino);
/* Call fn for every inode with nlink 0 (left by a crash while open);
 * the caller removes their data then purges them. */
int pool_meta_orphans(struct pool_meta *m, int (*fn)(void *arg, const struct pool_inode *in),
		      void *arg);

int pool_meta_readlink(struct pool_meta *m, uint64_t ino, char *buf, size_t size);

/* Directory listing in a stable order.  Calls fn for each entry after
 * `cookie` (0 = from the start) until fn returns non-zero; each entry's
 * cookie is what to pass to resume after it.  "." and ".." are not stored. */
typedef int (*pool_meta_dirent_fn)(void *arg, const char *name, const struct pool_inode *in,
				   uint64_t cookie);
int pool_meta_readdir(struct pool_meta *m, uint64_t dir, uint64_t cookie, pool_meta_dirent_fn fn,
		      void *arg);

/* Extended attributes, getxattr/setxattr/listxattr/removexattr semantics:
 * get returns the value size (copying when size allows, -ERANGE when not,
 * size 0 asks the size), -ENODATA when absent; set honours XATTR_CREATE
 * (-EEXIST) and XATTR_REPLACE (-ENODATA); list returns the NUL-separated
 * names' total size the same way. */
ssize_t pool_meta_getxattr(struct pool_meta *m, uint64_t ino, const char *name, void *buf,
			   size_t size);
int pool_meta_setxattr(struct pool_meta *m, uint64_t ino, const char *name, const void *val,
		       size_t size, int flags);
ssize_t pool_meta_listxattr(struct pool_meta *m, uint64_t ino, char *buf, size_t size);
int pool_meta_removexattr(struct pool_meta *m, uint64_t ino, const char *name);

/* Call fn for every placed regular file (npos > 0, unlinked ones too)
 * with an inode number above `after`, in inode order, until fn returns
 * non-zero (repair and scrub). */
int pool_meta_files(struct pool_meta *m, uint64_t after,
		    int (*fn)(void *arg, const struct pool_inode *in), void *arg);
/* "/dir/name" of inode ino inside the volume (its first name), for
 * messages.  -ENOENT for an unlinked inode. */
int pool_meta_path(struct pool_meta *m, uint64_t ino, char *buf, size_t size);

/* Change the disks of a placed file (npos must match): its positions'
 * data has been moved by the caller.  -ENOENT if no such placed file. */
int pool_meta_set_disks(struct pool_meta *m, uint64_t ino, uint32_t npos, const uint8_t *disk);
/* Copy the store into a new replica directory while open (a metadata
 * disk rebuilt by a repair) and make it live; a replica already known
 * at `dir` is replaced. */
int pool_meta_add_replica(struct pool_meta *m, const char *dir, char *err, size_t errlen);

/* Hidden regular files (checkpoint differencing data, fs/ckpt.c): an inode
 * with placement (in->npos, in->disk) and no directory entry, nlink 1 so
 * the orphan reaper leaves it; repair and scrub see it (pool_meta_files).
 * in->ino is assigned.  Dropped, whatever its nlink, by drop_hidden (also
 * used for a checkpointed file whose live name is gone). */
int pool_meta_create_hidden(struct pool_meta *m, struct pool_inode *in);
int pool_meta_drop_hidden(struct pool_meta *m, uint64_t ino);

/* Totals for statfs. */
int pool_meta_count(struct pool_meta *m, uint64_t *inodes);

#endif /* SPACEFS_POOL_META_H */
