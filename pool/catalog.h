/*
 * catalog.h -- the pool catalogue shared by several running nodes.
 *
 * Every node of a cluster keeps the superblock (the volume catalogue and
 * the member states) in memory, and any of them may change it: a volume
 * created or deleted, a disk failed by a health watcher.  Two nodes
 * committing from their own copies would write two different superblocks
 * under one generation.  So in a cluster every catalogue change is
 *
 *     pool_catalog_lock -> pool_catalog_reload -> change + pool_commit
 *     -> pool_catalog_unlock
 *
 * and every node polls the superblock files with its heartbeat
 * (pool_catalog_changed, a stat: commits replace the file, so its inode
 * number changes) and reloads when they moved.  The lock is an OFD lock on
 * <disk>/catalog.lock of every disk in service, taken in member order and
 * needed on a majority of the members, so two nodes that disagree about
 * one disk's health still exclude each other.  It is only held for the
 * length of one commit (milliseconds), and taken non-blocking with
 * retries: a stalled holder makes the change fail with a message naming
 * the lock, never hang.
 */
#ifndef SPACEFS_POOL_CATALOG_H
#define SPACEFS_POOL_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pool/pool.h"

#define POOL_CATALOG_LOCK_FILE "catalog.lock"
#define POOL_CATALOG_WAIT_MS   5000 /* longest wait for the lock */

struct pool_catalog_lock {
	int fd[POOL_MAX_DISKS];
	uint32_t n;
};

/* Take the cluster's catalogue lock (see above).  -EBUSY with *err naming
 * the file if it stays held for POOL_CATALOG_WAIT_MS, -EIO if fewer than a
 * majority of the members could be locked. */
int pool_catalog_lock(struct pool *p, struct pool_catalog_lock *l, char *err, size_t errlen);
void pool_catalog_unlock(struct pool_catalog_lock *l);

/* Adopt the newest superblock found on the disks in service if it is newer
 * than p's: volumes, member states and paths.  *changed says whether it
 * was.  Callers hold whatever excludes other users of p->sb (fs/: the
 * pool rwlock, exclusively). */
int pool_catalog_reload(struct pool *p, bool *changed, char *err, size_t errlen);

/* A cheap fingerprint of the superblock files (their inode numbers and
 * times, on the disks in service): different from the last one when some
 * node committed since.  Never fails; an unreadable disk just counts as
 * "changed" until it reads again. */
uint64_t pool_catalog_stamp(const struct pool *p);

#endif /* SPACEFS_POOL_CATALOG_H */
