/*
 * node.h -- several nodes on one pool: ownership of volumes, the redirect
 * channel, routing of FUSE requests (internal to fs/; fs.h has the few
 * entry points the rest of the daemon calls).
 *
 *   node.c      lease renewal, takeover, handover, balancing, registry
 *   redirect.c  TCP client (connection pool per peer) and server, with the
 *               challenge-response handshake
 *   serve.c     the owner executing a peer's request on its own stores
 *   route.c     FUSE operations: local when this node owns the volume,
 *               else forwarded to the owner
 *   wire.c      frame encoding and validation
 */
#ifndef SPACEFS_FS_NODE_H
#define SPACEFS_FS_NODE_H

#include "fs/fs.h"
#include "fs/wire.h"
#include "pool/owner.h"

enum fs_vstate {
	VS_REMOTE = 0, /* another node (or nobody yet) owns it */
	VS_OWNED,      /* this node owns it: stores open, lease held */
};

/* Per-volume ownership state. */
struct fs_vnode {
	/* Shared by every local operation in flight, exclusive while the
	 * state changes (stores opened or closed). */
	pthread_rwlock_t lock;
	atomic_int changing; /* a state change waits: new requests go remote */
	enum fs_vstate state;
	atomic_int_fast64_t deadline_ns; /* CLOCK_MONOTONIC: no writes after */

	pthread_mutex_t info_lock; /* guards the fields below */
	uint64_t epoch;		   /* owner's epoch (ours when owned) */
	char owner[POOL_NODE_NAME_MAX + 1];
	char owner_addr[POOL_ADDR_MAX];
	char pref[POOL_NODE_NAME_MAX + 1];
	bool owner_valid; /* a valid lease on a majority */

	/* lock files on the metadata disks, and what was seen in them (under
	 * the node's state_lock: the node thread's ticks, moves) */
	uint32_t nmeta;
	int lock_fd[POOL_META_DISKS];
	char lock_dir[POOL_META_DISKS][POOL_PATH_MAX];
	bool held[POOL_META_DISKS];
	uint64_t seen_seq; /* hung-owner detection: last (epoch, seq) seen */
	uint64_t seen_epoch;
	int64_t seen_since_ns; /* CLOCK_MONOTONIC when it was first seen */
	int64_t ownerless_since_ns;
	/* CLOCK_MONOTONIC when this node saw the record turn RELEASED by
	 * another node (a hand-over under way), 0 if it did not see it
	 * happen (tick_volume: only the node it is handed to takes it at
	 * once) */
	int64_t released_seen_ns;
	bool seen_unreleased; /* the last record seen was a held lease */
	/* Handovers, CLOCK_MONOTONIC deadlines (0: none).  take_until: a
	 * peer released the volume to us, take it at once until then (it
	 * stays asked for across ticks, so a tick that looked at the lock
	 * files just before the release does not lose it).  hold_until: we
	 * released it to a peer, do not take it back before then. */
	atomic_int_fast64_t take_until_ns;
	atomic_int_fast64_t hold_until_ns;
	char take_err[256]; /* under info_lock: why the last take failed */

	/* The lease, renewed by the lease thread (node.c) independently of
	 * the node thread's ticks.  lease_mu serialises every read and update
	 * of the lock files (lock_fd, held) between the two threads; leased
	 * says the lease is ours to renew (from the take that won it until
	 * the release that gives it up), lease_epoch under which epoch. */
	pthread_mutex_t lease_mu;
	atomic_int leased;
	atomic_uint_fast64_t lease_epoch;
	int64_t renewed_ns;			   /* under lease_mu: start of the last renewal */
	atomic_int_fast64_t renew_gap_max_ns;	   /* longest time between two renewals */
	atomic_uint_fast64_t renewals, renew_late; /* late: over 2 heartbeats apart */

	atomic_uint_fast64_t fenced; /* chunk write batches refused (fs_vol_may_write) */
	atomic_uint_fast64_t resent; /* local writes fenced, then routed again (route.c) */
	atomic_int fence_logged;     /* said so since the last take */
	atomic_uint_fast64_t redir_ops, redir_bytes;   /* as a non-owner */
	atomic_uint_fast64_t served_ops, served_bytes; /* as the owner, for peers */
};

/* A reply error meaning "I do not own this volume (any more)": the
 * client finds the owner again and resends. */
#define FS_NOT_OWNER (-EREMCHG)

struct fs_rpc; /* redirect.c client */
struct fs_srv; /* redirect.c server */

struct fs_node {
	struct fs *fs;
	char name[POOL_NODE_NAME_MAX + 1];
	char addr[POOL_ADDR_MAX];
	char uuid[40];
	uint8_t secret[POOL_SECRET_LEN];
	int64_t hb_ms, lease_ms, margin_ms;
	long test_delay_ns; /* SPACEFS_TEST_SUBMIT_DELAY_MS (fs_vol_may_write) */
	int reg_fd[POOL_MAX_DISKS];

	pthread_t thread;
	bool thread_started;
	/* The lease thread: renews the leases of the volumes held here and
	 * this node's registry record every heartbeat, whatever the node
	 * thread is busy with (a takeover's resync, a hand-over waiting for
	 * its answer, catalogue polls under load). */
	pthread_t lease_thread;
	bool lease_started;
	pthread_cond_t lease_wake; /* with lock */
	pthread_mutex_t beat_mu;   /* one registry beat at a time */
	int64_t keepalive_ns;	   /* the node thread's last beat (fs_node_keepalive) */
	/* Serialises ownership changes (the node thread's ticks, moves). */
	pthread_mutex_t state_lock;
	pthread_mutex_t lock; /* guards the fields below */
	pthread_cond_t wake;
	bool stopping, balance_now;
	bool again;			       /* tick once more right away (a handover to us) */
	char live[64][POOL_NODE_NAME_MAX + 1]; /* live nodes, sorted */
	char live_addr[64][POOL_ADDR_MAX];
	bool live_drained[64]; /* `spacectl node drain`: owns nothing (pool/owner.h) */
	uint32_t nlive;

	struct fs_rpc *rpc;
	struct fs_srv *srv;
};

/* node.c */
int fs_node_start(struct fs *fs, char *err, size_t errlen); /* before mounting */
int fs_node_run(struct fs *fs, char *err, size_t errlen);   /* after: threads */
void fs_node_stop(struct fs *fs);			    /* hand every owned volume back, stop */
void fs_node_kick(struct fs *fs, bool balance);
/* Between the steps of a long resync: on the node thread, once a
 * heartbeat, renew the node's record and its owned volumes' leases. */
void fs_node_keepalive(struct fs *fs);
/* "owner-move VOLUME NODE": done here if we own it, else forwarded to
 * the owner.  Returns 0 only once NODE owns the volume; else *err has one
 * line saying why not. */
int fs_node_move(struct fs *fs, const char *volume, const char *node, char *err, size_t errlen);
/* W_TAKE: a peer released volume id to us.  With FS_TAKE_WAIT in the
 * request's flags the answer waits until this node owns it (0) or gives
 * up (-ETIMEDOUT, *err says why); else it only asks the node thread. */
#define FS_TAKE_WAIT 1u
int fs_node_take(struct fs *fs, uint32_t volid, bool wait, char *err, size_t errlen);
/* A volume deleted from the catalogue: hand it back if owned (stores
 * closed, lock released), then mark it gone. */
void fs_node_retire(struct fs *fs, struct fs_volume *v);
/* Wait until no node holds v's lease (released, or its holder dead);
 * -ETIMEDOUT after lease + margin + two heartbeats (*err names the
 * holder), by when a stalled holder has stopped writing by its deadline. */
int fs_node_wait_unowned(struct fs *fs, struct fs_volume *v, char *err, size_t errlen);
/* Snapshot of the owner for status and the user.spacefs.owner xattr. */
void fs_node_owner(struct fs_volume *v, char *node, char *addr, uint64_t *epoch, bool *valid);
/* Address of a live node, "" if unknown. */
void fs_node_addr_of(struct fs *fs, const char *name, char *addr);

/* redirect.c */
int fs_rpc_new(struct fs_node *n, struct fs_rpc **out);
void fs_rpc_free(struct fs_rpc *r);
/* Send q to the node at addr and wait for the reply (*raw holds the body
 * p points into; free it).  -ECONNREFUSED etc. on transport errors. */
int fs_rpc_call(struct fs_rpc *r, const char *addr, const struct wire_req *q, struct wire_rep *p,
		uint8_t **raw);
/* Volume `addr` no longer owns (this node took it): close the idle
 * connections to addr and break the busy ones carrying a request for
 * volid, whose callers route again (see redirect.c).  Requests for the
 * volumes addr still owns are left to finish: they may have run there
 * already.  FS_RPC_ALL breaks them all (addr's process is gone). */
#define FS_RPC_ALL UINT32_MAX
void fs_rpc_reset(struct fs_rpc *r, const char *addr, uint32_t volid);
/* Listen (before daemonizing), then run the accept thread (after). */
int fs_srv_start(struct fs_node *n, char *err, size_t errlen);
int fs_srv_run(struct fs_node *n, char *err, size_t errlen);
void fs_srv_stop(struct fs_node *n);

/* serve.c: execute a request on this node's stores; fills p (p->data may
 * point into *out_data, to free after sending). */
void fs_serve(struct fs *fs, const struct wire_req *q, struct wire_rep *p, uint8_t **out_data);

#endif /* SPACEFS_FS_NODE_H */
