/*
 * owner.h -- the on-disk side of nodes: coordinator lock files, the node
 * registry, the pool secret and the preferred owner of a volume.
 *
 * Coordinator lock (DESIGN.md, "Coordinator lock and nodes"): each volume
 * has <metadisk>/vol/<volume>/owner.lock on each of its metadata disks, a
 * fixed binary record (docs/FORMAT.md, "owner.lock") naming the owner
 * node, its redirect address, the epoch (fencing token), the lease expiry
 * (CLOCK_REALTIME milliseconds) and a heartbeat sequence, closed by a
 * CRC-32C.  Record updates are serialised by a short OFD lock on byte 0
 * (non-blocking, retried for at most POOL_LOCK_WAIT_MS); the live owner
 * also holds an OFD write lock on byte 1 for as long as it runs, which
 * the kernel drops when the process dies.  This module only reads and
 * writes the files; fs/node.c decides what the records mean.
 *
 * Node registry: <disk>/nodes/<name> on every healthy disk, one record per
 * node (name, address, last heartbeat), rewritten in place at every
 * heartbeat; the running node holds an OFD write lock on byte 0 of it, so
 * a second daemon with the same name is refused and a dead one is seen
 * at once.
 *
 * Pool secret: <disk>/spacefs.secret, 32 random bytes, mode 0600, the key
 * of the redirect channel's challenge and response.
 *
 * Everything read back is validated (magic, version, CRC, bounds, names)
 * and a bad record is an error naming the file, never silent use.
 */
#ifndef SPACEFS_POOL_OWNER_H
#define SPACEFS_POOL_OWNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POOL_OWNER_FILE	    "owner.lock"
#define POOL_PREF_FILE	    "owner.pref"
#define POOL_SECRET_FILE    "spacefs.secret"
#define POOL_NODES_DIR	    "nodes"
#define POOL_NODE_NAME_MAX  64u
#define POOL_ADDR_MAX	    64u /* "host:port" with the NUL */
#define POOL_SECRET_LEN	    32u
#define POOL_OWNER_REC_SIZE 180u
#define POOL_NODE_REC_SIZE  168u
#define POOL_LOCK_WAIT_MS   200 /* longest wait for the byte-0 update lock */

/* The flags field of an owner record. */
#define POOL_OWNER_RELEASED 1u /* the owner gave it up (handover, unmount) */

struct pool_owner_rec {
	uint64_t epoch;
	int64_t expiry_ms; /* lease end, CLOCK_REALTIME ms */
	uint64_t seq;	   /* heartbeat sequence, +1 per renewal */
	uint32_t flags;
	char node[POOL_NODE_NAME_MAX + 1];
	char addr[POOL_ADDR_MAX];
};

struct pool_node_rec {
	char name[POOL_NODE_NAME_MAX + 1];
	char addr[POOL_ADDR_MAX];
	int64_t heartbeat_ms; /* CLOCK_REALTIME ms of the last heartbeat */
	uint32_t pid;
	bool running; /* some process holds the record's lock now */
};

/* 0 if `addr` is "IPv4:port" or "[IPv6]:port" with port 1..65535. */
int pool_addr_check(const char *addr);
int64_t pool_realtime_ms(void);

/* ---- owner records ---- */
void pool_owner_encode(const struct pool_owner_rec *r, uint8_t buf[POOL_OWNER_REC_SIZE]);
/* -EMEDIUMTYPE (not a lock record), -EPROTONOSUPPORT, -EBADMSG (size or
 * CRC), -EUCLEAN (a field out of bounds); *why says which. */
int pool_owner_decode(const uint8_t *buf, size_t len, struct pool_owner_rec *r, const char **why);

/* Open <dir>/owner.lock read-write (creating it, mode 0600, if `create`).
 * Returns the fd or -errno. */
int pool_lock_open(const char *dir, bool create);
/* Read the record under the byte-0 lock; -ENODATA if the file is empty
 * (never written).  Errors name `path` in err. */
int pool_lock_read(int fd, const char *path, struct pool_owner_rec *r, char *err, size_t errlen);
/* Read-modify-write under the byte-0 lock: fn gets the current record
 * (zeroed, with *exists false, if the file is empty) and returns 1 to
 * write it back (pwrite + fdatasync), 0 to leave it, or -errno. */
typedef int (*pool_lock_fn)(struct pool_owner_rec *r, bool exists, void *arg);
int pool_lock_update(int fd, const char *path, pool_lock_fn fn, void *arg, char *err,
		     size_t errlen);
/* The owner's liveness lock on byte 1: take (non-blocking, -EAGAIN if a
 * live process holds it), drop, or test whether another holds it (1) or
 * not (0). */
int pool_lock_hold(int fd);
void pool_lock_drop(int fd);
int pool_lock_probe(int fd);

/* ---- node registry ---- */
void pool_node_encode(const struct pool_node_rec *r, uint8_t buf[POOL_NODE_REC_SIZE]);
int pool_node_decode(const uint8_t *buf, size_t len, struct pool_node_rec *r, const char **why);
/* Create or open <disk>/nodes/<name>, take its lock (-EBUSY: a running
 * daemon already uses this name) and write a first heartbeat.  Returns
 * the fd to keep open, or -errno. */
int pool_node_register(const char *disk, const struct pool_node_rec *r, char *err, size_t errlen);
int pool_node_beat(int fd, const struct pool_node_rec *r);
/* Call fn for every valid record under <disk>/nodes (bad ones are
 * skipped with a line on stderr). */
int pool_node_list(const char *disk, void (*fn)(void *arg, const struct pool_node_rec *r),
		   void *arg);

/* ---- pool secret and preferred owner ---- */
/* Read the secret from the first disk holding a valid one; if none does,
 * create it (getrandom) on the first disk atomically, so two nodes
 * starting at once agree, then copy it to every disk missing it. */
int pool_secret_load(const char *const *disks, uint32_t n, uint8_t out[POOL_SECRET_LEN], char *err,
		     size_t errlen);
/* The preferred owner of a volume from its metadata directories (the
 * first valid file wins); "" if none is set. */
int pool_pref_read(const char *const *dirs, uint32_t n, char *node, size_t len);
/* Set ("" clears) the preferred owner on every directory; -errno if none
 * took it. */
int pool_pref_write(const char *const *dirs, uint32_t n, const char *node, char *err,
		    size_t errlen);

/* ---- drained nodes ----
 * <disk>/drain/<node>, an empty file on every disk in service, says that
 * `spacectl node drain` took the node out of balancing (fs/node.c): it
 * owns nothing while drained.  A node is drained while the file is on at
 * least half of the disks asked about, so a disk that missed the drain or
 * the resume is outvoted. */
#define POOL_DRAIN_DIR "drain"
int pool_drain_write(const char *const *disks, uint32_t n, const char *node, bool drained,
		     char *err, size_t errlen);
bool pool_drain_read(const char *const *disks, uint32_t n, const char *node);

#endif /* SPACEFS_POOL_OWNER_H */
