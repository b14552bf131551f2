/*
 * ctl.h -- the control socket between spacectl and a running daemon.
 *
 * A mounted daemon listens on a Unix socket
 *     /run/spacefs/<pool uuid>.<node>.sock   (mode 0600: root only)
 * so spacectl, given any member disk, finds the daemons serving that pool
 * from the pool UUID in the disk's superblock.  The protocol is one
 * request line, one reply, then the server closes:
 *     request:  "<command> [arg ...]\n"      (at most POOL_CTL_MAX_REQUEST bytes)
 *     reply:    "ok\n<payload>"  or  "error: <one line>\n"
 * Commands: "status" (payload: JSON with the daemon's live counters),
 * "counters" (payload: one line per volume and disk, tab-separated:
 * VOLUME DISK READS WRITES READ_BYTES WRITE_BYTES ERRORS CSUM_ERRORS) and
 * "shares" (payload: "mount\tNODE\tMOUNTPOINT\tALLOW_OTHER(0|1)" then one
 * "volume\tNAME\tOWNER_NODE\tOWNER_HOST(or -)\tEPOCH\tLAYOUT" per volume) and
 * "volume-create NAME LAYOUT COPIES PARITY COLUMNS INTERLEAVE INTEGRITY".
 * The directory can be moved with SPACEFS_RUN_DIR (tests use their own);
 * SPACEFS_NODE=NAME talks to node NAME's daemon when several run here.
 * With several nodes (fs/node.c) also: "owners" (one line per volume:
 * VOLUME OWNER ADDR EPOCH ACCESS REDIRECTED_OPS REDIRECTED_BYTES PREFERRED),
 * "owner-move VOLUME NODE" and "owner-balance".
 */
#ifndef SPACEFS_POOL_CTL_H
#define SPACEFS_POOL_CTL_H

#include <stddef.h>

#define POOL_CTL_MAX_REQUEST 4096
#define POOL_CTL_MAX_REPLY   (4u << 20)

/* Directory holding the sockets: $SPACEFS_RUN_DIR or /run/spacefs. */
const char *pool_ctl_dir(void);
/* Socket path of node `node` serving pool `uuid` (text form). */
int pool_ctl_path(const char *uuid, const char *node, char *buf, size_t len);
/* Send `request` to the first daemon of pool `uuid` that answers.  On
 * success *reply (malloc'd, NUL-terminated) holds the payload after "ok".
 * -ENOENT when no daemon serves the pool; -EIO with *err set when the
 * daemon answered "error: ...".  While a daemon of the pool holds its run
 * lock but does not answer (starting, or finishing an unmount) it waits
 * up to POOL_RUNLOCK_WAIT_S, then fails with -EBUSY and *err set. */
int pool_ctl_call(const char *uuid, const char *request, char **reply, char *err, size_t errlen);
/* Same, to the daemon of node `node` only. */
int pool_ctl_call_node(const char *uuid, const char *node, const char *request, char **reply,
		       char *err, size_t errlen);
/* Same, giving up after timeout_ms (-ETIMEDOUT) on a daemon that does
 * not answer; the reply's error text, if any, is dropped. */
int pool_ctl_ask_node(const char *uuid, const char *node, const char *request, char **reply,
		      unsigned timeout_ms);

/* ---- the run lock (runlock.c): one daemon per pool and node ---------- */

/* Seconds a daemon or spacectl waits for another daemon of the pool that
 * is still starting or shutting down. */
#define POOL_RUNLOCK_WAIT_S 60u

/* Before a daemon opens any volume: take pool `uuid`'s lock shared (kept
 * from spacectl's offline changes) and node `node`'s lock exclusive, for
 * the life of the process (also across fork; *fd is the node lock's, never
 * close it).  Refuses at once with -EBUSY when the node's holder still
 * serves a mount; waits up to wait_s for a holder that is shutting down or
 * starting (one message on stderr), then -EBUSY.  Returns 1 when it had
 * to wait (what the pool holds may have changed: read it again), 0 when
 * not; *err names what and where on failure. */
int pool_runlock_take(const char *uuid, const char *node, unsigned wait_s, int *fd, char *err,
		      size_t errlen);
/* Record this process's pid in the lock file (after fuse_daemonize). */
int pool_runlock_note_pid(int fd);
/* Before spacectl changes a pool offline: take the pool's lock exclusive,
 * held until the process exits, so no daemon starts beside the change.
 * Waits up to POOL_RUNLOCK_WAIT_S for daemons that hold it (starting or
 * shutting down).  1 when it had to wait (read the pool again), 0 when
 * not, -EBUSY with *err set when still held. */
int pool_runlock_offline(const char *uuid, char *err, size_t errlen);
/* The same for the pool *p, opened from `source`: when it had to wait,
 * *p is closed and opened again (NULL on failure, with *err set). */
struct pool;
int pool_runlock_offline_pool(struct pool **p, const char *source, char *err, size_t errlen);
/* 1 when a daemon of pool `uuid` (node `node`, or "*" for any) holds its
 * run lock, with *err saying which; 0 when none does. */
int pool_runlock_busy(const char *uuid, const char *node, char *err, size_t errlen);

#endif /* SPACEFS_POOL_CTL_H */
