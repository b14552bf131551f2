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
 * daemon answered "error: ...". */
int pool_ctl_call(const char *uuid, const char *request, char **reply, char *err, size_t errlen);
/* Same, to the daemon of node `node` only. */
int pool_ctl_call_node(const char *uuid, const char *node, const char *request, char **reply,
		       char *err, size_t errlen);

#endif /* SPACEFS_POOL_CTL_H */
