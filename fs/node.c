/*
 * node.c -- one node among several on a pool: who owns which volume.
 *
 * With `-o listen=ADDR:PORT` the daemon is a node of a cluster sharing the
 * disk directories (DESIGN.md, "Coordinator lock and nodes").  Each volume
 * has one owner, the only node that opens and writes its stores; this file
 * keeps that true:
 *
 *  - Lease.  The owner holds a lease in the volume's owner.lock on each of
 *    its metadata disks (pool/owner.c) and renews it every heartbeat.  It
 *    owns the volume while the lease is valid on a majority; its own
 *    deadline is the start of the last renewal that reached a majority,
 *    plus the lease, minus a safety margin, on CLOCK_MONOTONIC.  Past the
 *    deadline fs_vol_enter_local() says no, so nothing more is written:
 *    requests go to whoever owns the volume next.
 *  - Takeover.  A node that sees no valid owner takes the volume with a
 *    new epoch (the highest seen + 1), stamps the epoch on the metadata
 *    replicas (pool_meta_set_epoch: older writers are refused from then
 *    on), opens the stores and serves.  A dead owner (its byte-1 lock is
 *    gone) is replaced at the next heartbeat; a hung one (lock held, lease
 *    expired) only after its heartbeat sequence has not moved for lease +
 *    margin, by which time it has stopped writing by its own deadline.
 *  - Handover.  On `spacectl owner move`, balancing or unmount the owner
 *    drains local requests (the volume's rwlock), writes back cached
 *    attributes, syncs the metadata, closes the stores, marks the lock
 *    records released, drops its byte-1 locks and tells the new owner
 *    (W_TAKE), which takes over at once.  The old owner leaves the volume
 *    alone meanwhile (hold_until), and the new one keeps the request until
 *    it has taken the volume (take_until), so neither a tick racing the
 *    release nor balancing takes it back.  A move waits for the answer:
 *    W_TAKE with FS_TAKE_WAIT is answered once the target owns the volume,
 *    or with the reason it could not, so `owner move` succeeds only when
 *    the volume really moved.
 *  - Balancing (CSV in Windows Server 2012 R2): whenever the set of live
 *    nodes changes, and on request, every node computes the same desired
 *    owner per volume -- its preferred owner if live, else the current
 *    owner while it holds no more than its share, else the least loaded
 *    live node (ties by name) -- and hands over what it should not own.
 *    Drained nodes (`spacectl node drain`, a mark on the disks) are live
 *    but never picked, unless every live node is drained.
 *
 * Node registry: every heartbeat rewrites <disk>/nodes/<name>; a node is
 * live while some process holds its record's lock and its heartbeat is
 * younger than a lease.  Clocks: leases and heartbeats in the files are
 * CLOCK_REALTIME, so nodes on different machines must agree within a
 * fraction of the margin (NTP); every wait that decides safety is also
 * measured on this node's CLOCK_MONOTONIC (docs/OPERATIONS.md).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/node.h"

/* ---- entering a volume ---- */

bool fs_vol_enter_local(struct fs_volume *v)
{
	struct fs_vnode *vn = v->vn;

	if (!vn)
		return true;
	if (atomic_load(&vn->changing))
		return false;
	return fs_vol_hold_local(v);
}

bool fs_vol_hold_local(struct fs_volume *v)
{
	struct fs_vnode *vn = v->vn;

	if (!vn)
		return true;
	/* EDEADLK: this thread holds it exclusively (a takeover opening the
	 * stores, a release closing them) and got here through a store hook
	 * or an inode retire: no hold to nest, and the unlock that would
	 * follow would release the exclusive one (review, round 4). */
	if (pthread_rwlock_rdlock(&vn->lock) != 0)
		return false;
	if (vn->state == VS_OWNED && fs_mono_ns() < atomic_load(&vn->deadline_ns))
		return true;
	pthread_rwlock_unlock(&vn->lock);
	return false;
}

/* Called by the store right before it submits chunk writes, from a
 * request that entered the volume (so the state cannot change under it).
 * The deadline is the one fs_vol_enter_local checks at entry; checking it
 * again here covers a request that entered in time and then stalled (the
 * process stopped, swapped, starved) while a takeover happened: the
 * contender waits lease + margin from the last renewal it saw, and our
 * deadline is lease - margin after the start of that renewal, so a batch
 * refused here would have landed after the takeover, and one submitted
 * has at least 2 x margin to complete before it.  What is left is the
 * time between this check and io_submit (docs/OPERATIONS.md). */
int fs_vol_may_write(struct fs_volume *v)
{
	struct fs_vnode *vn = v->vn;

	if (!vn)
		return 0;
	if (v->fs->node && v->fs->node->test_delay_ns) /* tests: widen the window */
		nanosleep(&(struct timespec){0, v->fs->node->test_delay_ns}, NULL);
	/* only the deadline: it moves only while this node holds the lease,
	 * and the stores exist only while it owns the volume (or is taking
	 * it: the resync at takeover writes under the new lease) */
	int64_t late = fs_mono_ns() - atomic_load(&vn->deadline_ns);
	if (late < 0)
		return 0;
	atomic_fetch_add(&vn->fenced, 1);
	if (!atomic_exchange(&vn->fence_logged, 1))
		fs_log("FENCED: volume %s: lease deadline passed %lld ms ago (epoch %llu): chunk "
		       "writes refused, requests go to the next owner",
		       v->name, (long long)(late / 1000000), (unsigned long long)vn->epoch);
	return FS_NOT_OWNER;
}

void fs_vol_leave(struct fs_volume *v)
{
	if (v->vn)
		pthread_rwlock_unlock(&v->vn->lock);
}

/* ---- per-volume state ---- */

int fs_node_volume_init(struct fs *fs, struct fs_volume *v, const struct pool_sb_volume *pv,
			char *err, size_t errlen)
{
	struct fs_vnode *vn = calloc(1, sizeof(*vn));
	const char *dirs[POOL_META_DISKS];

	if (!vn) {
		snprintf(err, errlen, "volume %s: out of memory", pv->name);
		return -ENOMEM;
	}
	pthread_rwlock_init(&vn->lock, NULL);
	pthread_mutex_init(&vn->info_lock, NULL);
	pthread_mutex_init(&vn->lease_mu, NULL);
	for (uint32_t i = 0; i < pv->nmeta && i < POOL_META_DISKS; i++) {
		if (pv->meta[i] >= fs->pool->ndisks)
			continue;
		snprintf(vn->lock_dir[vn->nmeta], POOL_PATH_MAX, "%s/vol/%s",
			 fs->pool->disk[pv->meta[i]].path, pv->name);
		dirs[vn->nmeta] = vn->lock_dir[vn->nmeta];
		vn->lock_fd[vn->nmeta++] = -1;
	}
	pool_pref_read(dirs, vn->nmeta, vn->pref, sizeof(vn->pref));
	v->vn = vn;
	return 0;
}

void fs_node_volume_free(struct fs_volume *v)
{
	struct fs_vnode *vn = v->vn;

	if (!vn)
		return;
	for (uint32_t i = 0; i < vn->nmeta; i++)
		if (vn->lock_fd[i] >= 0)
			close(vn->lock_fd[i]);
	pthread_rwlock_destroy(&vn->lock);
	pthread_mutex_destroy(&vn->info_lock);
	pthread_mutex_destroy(&vn->lease_mu);
	free(vn);
	v->vn = NULL;
}

int fs_node_fence(struct fs *fs, struct fs_volume *v, char *err, size_t errlen)
{
	(void)fs;
	int rc = pool_meta_set_epoch(v->meta, v->vn->epoch);
	if (rc < 0)
		snprintf(err, errlen, "volume %s: cannot stamp epoch %llu on its metadata: %s",
			 v->name, (unsigned long long)v->vn->epoch, strerror(-rc));
	return rc;
}

void fs_node_owner(struct fs_volume *v, char *node, char *addr, uint64_t *epoch, bool *valid)
{
	struct fs_vnode *vn = v->vn;

	pthread_mutex_lock(&vn->info_lock);
	snprintf(node, POOL_NODE_NAME_MAX + 1, "%s", vn->owner);
	snprintf(addr, POOL_ADDR_MAX, "%s", vn->owner_addr);
	*epoch = vn->epoch;
	*valid = vn->owner_valid;
	pthread_mutex_unlock(&vn->info_lock);
}

static void set_owner(struct fs_vnode *vn, const char *node, const char *addr, uint64_t epoch,
		      bool valid)
{
	pthread_mutex_lock(&vn->info_lock);
	snprintf(vn->owner, sizeof(vn->owner), "%s", node);
	snprintf(vn->owner_addr, sizeof(vn->owner_addr), "%s", addr);
	vn->epoch = epoch;
	vn->owner_valid = valid;
	pthread_mutex_unlock(&vn->info_lock);
}

static uint32_t majority(const struct fs_vnode *vn)
{
	return vn->nmeta / 2 + 1;
}

static int live_index(const struct fs_node *n, const char *name);

/* ---- observing the lock files ---- */

enum owner_seen {
	SEEN_NONE,  /* nobody: never owned, released, or expired and gone */
	SEEN_VALID, /* a live owner with a valid lease on a majority */
	SEEN_DEAD,  /* the owner's process is gone (byte-1 lock free) */
	SEEN_HUNG,  /* lease expired, process still there: wait it out */
	SEEN_MINE,  /* our own valid lease (we own it) */
};

struct seen {
	enum owner_seen state;
	struct pool_owner_rec best; /* highest epoch found */
	uint64_t max_epoch;
};

static int ensure_fd(struct fs_vnode *vn, uint32_t i, bool create)
{
	if (vn->lock_fd[i] < 0)
		vn->lock_fd[i] = pool_lock_open(vn->lock_dir[i], create);
	return vn->lock_fd[i];
}

static void observe(struct fs_node *n, struct fs_volume *v, struct seen *s)
{
	struct fs_vnode *vn = v->vn;
	struct pool_owner_rec rec[POOL_META_DISKS];
	bool ok[POOL_META_DISKS] = {0};
	uint32_t same = 0, alive = 0;
	const struct pool_owner_rec *b = &s->best;
	char err[512];

	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&vn->lease_mu);
	for (uint32_t i = 0; i < vn->nmeta; i++) {
		if (ensure_fd(vn, i, false) < 0)
			continue;
		ok[i] =
		    pool_lock_read(vn->lock_fd[i], vn->lock_dir[i], &rec[i], err, sizeof(err)) == 0;
		if (ok[i] && rec[i].epoch > s->max_epoch) {
			s->max_epoch = rec[i].epoch;
			s->best = rec[i];
		}
	}
	for (uint32_t i = 0; i < vn->nmeta; i++) {
		if (!ok[i] || rec[i].epoch != s->best.epoch || strcmp(rec[i].node, s->best.node))
			continue;
		same++;
		if (pool_lock_probe(vn->lock_fd[i]) == 1)
			alive++;
	}
	pthread_mutex_unlock(&vn->lease_mu);
	bool released = (b->flags & POOL_OWNER_RELEASED) || b->epoch == 0;
	bool lease_ok = !released && b->expiry_ms > pool_realtime_ms() && same >= majority(vn);
	bool mine = vn->state == VS_OWNED && b->epoch == vn->epoch && !strcmp(b->node, n->name);

	/* Byte 1 is free but the owner's node is running: it took the volume
	 * over from a stalled node that still held byte 1 and has not picked
	 * it up yet.  Not dead. */
	if (!alive && !released && b->node[0]) {
		pthread_mutex_lock(&n->lock);
		alive = live_index(n, b->node) >= 0 && strcmp(b->node, n->name);
		pthread_mutex_unlock(&n->lock);
	}
	if (mine)
		s->state = SEEN_MINE;
	else if (released || same < majority(vn))
		s->state = alive ? SEEN_HUNG : SEEN_NONE;
	else if (!alive)
		s->state = SEEN_DEAD;
	else
		s->state = lease_ok ? SEEN_VALID : SEEN_HUNG;
	/* Hung-owner clock: restart it whenever the record moves (so it runs
	 * from the last renewal this node saw). */
	if (b->epoch != vn->seen_epoch || b->seq != vn->seen_seq) {
		vn->seen_epoch = b->epoch;
		vn->seen_seq = b->seq;
		vn->seen_since_ns = fs_mono_ns();
		vn->released_seen_ns = 0;
	}
	/* a release seen happen (not one found at start) */
	if ((b->flags & POOL_OWNER_RELEASED) && vn->seen_unreleased && strcmp(b->node, n->name))
		vn->released_seen_ns = fs_mono_ns();
	vn->seen_unreleased = b->epoch && !(b->flags & POOL_OWNER_RELEASED);
	if (s->state == SEEN_VALID)
		set_owner(vn, b->node, b->addr, b->epoch, true);
	else if (s->state != SEEN_MINE)
		set_owner(vn, b->node, b->addr, b->epoch, false);
}

/* ---- taking, renewing, releasing ---- */

struct take_ctx {
	struct fs_node *n;
	uint64_t epoch;
	bool force;
	const struct pool_owner_rec *seen; /* the record observe() judged */
};

static int fn_take(struct pool_owner_rec *r, bool exists, void *arg)
{
	struct take_ctx *c = arg;
	int64_t now = pool_realtime_ms();

	if (exists && r->epoch >= c->epoch)
		return -EAGAIN; /* someone was quicker */
	/* A forced take judged the owner dead or hung from what observe()
	 * read; if the owner renewed since (same epoch, its sequence moved),
	 * it is alive after all and believes its lease good: taking now
	 * would let both write.  The next tick looks again. */
	if (exists && c->force && r->epoch && r->epoch == c->seen->epoch &&
	    r->seq != c->seen->seq && !strcmp(r->node, c->seen->node))
		return -EAGAIN;
	if (exists && r->epoch && strcmp(r->node, c->n->name) &&
	    !(r->flags & POOL_OWNER_RELEASED) && r->expiry_ms > now && !c->force)
		return -EBUSY;
	memset(r, 0, sizeof(*r));
	r->epoch = c->epoch;
	r->expiry_ms = now + c->n->lease_ms;
	snprintf(r->node, sizeof(r->node), "%s", c->n->name);
	snprintf(r->addr, sizeof(r->addr), "%s", c->n->addr);
	return 1;
}

struct mine_ctx {
	struct fs_node *n;
	uint64_t epoch;
	bool release;
};

static int fn_mine(struct pool_owner_rec *r, bool exists, void *arg)
{
	struct mine_ctx *c = arg;

	if (exists && r->epoch > c->epoch)
		return -ESTALE; /* a newer owner */
	if (exists && r->epoch == c->epoch && strcmp(r->node, c->n->name))
		return -ESTALE;
	if (c->release && (!exists || r->epoch != c->epoch))
		return 0; /* not ours: leave it */
	if (!exists || r->epoch < c->epoch) {
		/* a file we could not update when taking over (its update lock
		 * was held by a stalled node), or rewritten by one since: ours
		 * is the newer epoch, so restore it */
		memset(r, 0, sizeof(*r));
		r->epoch = c->epoch;
		snprintf(r->node, sizeof(r->node), "%s", c->n->name);
		snprintf(r->addr, sizeof(r->addr), "%s", c->n->addr);
	}
	if (c->release) {
		r->flags |= POOL_OWNER_RELEASED;
		r->expiry_ms = 0;
	} else {
		r->expiry_ms = pool_realtime_ms() + c->n->lease_ms;
		r->seq++;
	}
	return 1;
}

static void drop_locks(struct fs_node *n, struct fs_volume *v, uint64_t epoch, bool release)
{
	struct fs_vnode *vn = v->vn;
	struct mine_ctx c = {n, epoch, true};
	char err[512];

	pthread_mutex_lock(&vn->lease_mu);
	atomic_store(&vn->leased, 0); /* the lease thread leaves it alone from now */
	for (uint32_t i = 0; i < vn->nmeta; i++) {
		if (vn->lock_fd[i] < 0)
			continue;
		if (release)
			pool_lock_update(vn->lock_fd[i], vn->lock_dir[i], fn_mine, &c, err,
					 sizeof(err));
		if (vn->held[i])
			pool_lock_drop(vn->lock_fd[i]);
		vn->held[i] = false;
	}
	pthread_mutex_unlock(&vn->lease_mu);
}

/* Why the last take asked of us did not happen (for the mover's error). */
static void note_take_err(struct fs_vnode *vn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note_take_err(struct fs_vnode *vn, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&vn->info_lock);
	va_start(ap, fmt);
	vsnprintf(vn->take_err, sizeof(vn->take_err), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&vn->info_lock);
}

static int open_stores(struct fs_node *n, struct fs_volume *v, uint64_t epoch)
{
	struct fs *fs = n->fs;
	struct pool_sb_volume pv;
	char err[512] = "";
	int rc = 0;

	pthread_rwlock_rdlock(&fs->pool_lock);
	const struct pool_sb_volume *found = pool_volume_find(fs->pool, v->name);
	if (found)
		pv = *found;
	pthread_rwlock_unlock(&fs->pool_lock);
	if (!found)
		return -ENOENT;
	atomic_store(&v->vn->changing, 1);
	pthread_rwlock_wrlock(&v->vn->lock);
	v->vn->epoch = epoch;
	rc = fs_volume_attach(fs, v, &pv, err, sizeof(err));
	if (rc == 0) {
		fs_inode_reload_volume(fs, v);
		v->vn->state = VS_OWNED;
	} else {
		fprintf(stderr, "spacefs: node %s: taking volume %s: %s\n", n->name, v->name, err);
		note_take_err(v->vn, "opening its stores: %s", err);
	}
	pthread_rwlock_unlock(&v->vn->lock);
	atomic_store(&v->vn->changing, 0);
	return rc;
}

static void renew(struct fs_node *n, struct fs_volume *v);

static void take(struct fs_node *n, struct fs_volume *v, const struct seen *s, bool force,
		 const char *why)
{
	struct fs_vnode *vn = v->vn;
	struct take_ctx c = {n, s->max_epoch + 1, force, &s->best};
	int64_t t0 = fs_mono_ns();
	uint32_t ok = 0;
	char err[512] = "no metadata disk reachable";

	pthread_mutex_lock(&vn->lease_mu);
	for (uint32_t i = 0; i < vn->nmeta; i++) {
		if (ensure_fd(vn, i, true) < 0)
			continue;
		if (!vn->held[i])
			vn->held[i] = pool_lock_hold(vn->lock_fd[i]) == 0;
		int rc = pool_lock_update(vn->lock_fd[i], vn->lock_dir[i], fn_take, &c, err,
					  sizeof(err));
		if (rc == 0)
			ok++;
	}
	if (ok >= majority(vn)) {
		/* ours from now: the lease thread renews it, also while the
		 * stores open (a resync can take longer than a lease) */
		atomic_store(&vn->lease_epoch, c.epoch);
		atomic_store(&vn->deadline_ns, t0 + (n->lease_ms - n->margin_ms) * 1000000ll);
		vn->renewed_ns = t0;
		atomic_store(&vn->leased, 1);
	}
	pthread_mutex_unlock(&vn->lease_mu);
	if (ok < majority(vn)) {
		fprintf(stderr, "spacefs: node %s: volume %s: lease taken on %u of %u disks (%s)\n",
			n->name, v->name, ok, vn->nmeta, err);
		note_take_err(vn, "lease taken on %u of %u metadata disks (%s)", ok, vn->nmeta,
			      err);
	}
	/* the lease holds from t0 (set above): the stores' opening (orphans,
	 * resync) writes under it, fenced by it like any request */
	atomic_store(&vn->fence_logged, 0);
	if (ok < majority(vn) || open_stores(n, v, c.epoch) < 0) {
		drop_locks(n, v, c.epoch, true); /* first: the lease thread stops renewing */
		atomic_store(&vn->deadline_ns, 0);
		return;
	}
	set_owner(vn, n->name, n->addr, c.epoch, true);
	/* opening the stores (resync) may have used much of the lease taken at
	 * t0: renew it now, not a heartbeat later */
	renew(n, v);
	if (vn->state != VS_OWNED)
		return;
	/* Unblock this volume's requests sent to the old owner: it answers no
	 * more for it (released, hung or gone), they route again to us.  Not
	 * those for the volumes it still owns: they may have run there
	 * already, and routed again they would run twice (a mkdir answering
	 * EEXIST, a rename overwriting).  Unless its process is gone: then it
	 * runs nothing more, and its connections break anyway (or hang, cut
	 * off), so their requests route again now, not at a socket timeout. */
	if (s->best.addr[0] && strcmp(s->best.addr, n->addr))
		fs_rpc_reset(n->rpc, s->best.addr, s->state == SEEN_DEAD ? FS_RPC_ALL : v->id);
	fprintf(stderr, "spacefs: node %s: owner of volume %s now (epoch %llu; %s%s%s)\n", n->name,
		v->name, (unsigned long long)c.epoch, why, s->best.node[0] ? ", was " : "",
		s->best.node);
}

/* The reason a peer gave with a failed ownership request. */
static void reply_text(const struct wire_rep *p, int rc, char *out, size_t outlen)
{
	if (p->ndata)
		snprintf(out, outlen, "%.*s", (int)p->ndata, (const char *)p->data);
	else
		snprintf(out, outlen, "%s", strerror(-rc));
}

/* Stop owning v.  `lost`: another node took it, so nothing may be written
 * (not even cached attributes); else drain, write back and release.  The
 * drain is what keeps the stores alive under every request: each one holds
 * the volume's rwlock shared (fs_vol_enter_local / fs_vol_hold_local) for
 * as long as it uses them, and the stores close under the exclusive lock.
 * `to`: the caller hands the volume over next (hand_over); until it knows
 * how that went, this node does not take the volume back. */
static void release(struct fs_node *n, struct fs_volume *v, bool lost, const char *to)
{
	struct fs_vnode *vn = v->vn;
	uint64_t epoch = vn->epoch;

	if (to) /* longest a W_TAKE can take (redirect.c's socket timeout) */
		atomic_store(&vn->hold_until_ns,
			     fs_mono_ns() + (3 * n->lease_ms + 5000) * 1000000ll);
	atomic_store(&vn->changing, 1);
	pthread_rwlock_wrlock(&vn->lock);
	if (!lost) {
		fs_inode_flush_volume(n->fs, v);
		pool_meta_sync(v->meta);
	}
	fs_volume_detach(v);
	vn->state = VS_REMOTE;
	pthread_rwlock_unlock(&vn->lock);
	atomic_store(&vn->changing, 0);
	drop_locks(n, v, epoch, !lost);
	set_owner(vn, "", "", epoch, false);
	fprintf(stderr,
		"spacefs: node %s: %s volume %s (epoch %llu; lease renewed %llu times, %llu late, "
		"longest gap %lld ms)%s%s\n",
		n->name, lost ? "LOST" : "released", v->name, (unsigned long long)epoch,
		(unsigned long long)atomic_exchange(&vn->renewals, 0),
		(unsigned long long)atomic_exchange(&vn->renew_late, 0),
		(long long)(atomic_exchange(&vn->renew_gap_max_ns, 0) / 1000000),
		to ? ", handing it over to " : "", to ? to : "");
}

/* After release(n, v, false, to): tell `to` to take v now (W_TAKE).
 * wait: the answer comes once `to` owns v, or says why it does not.  On
 * failure v is ownerless and the usual takeover gives it an owner. */
static int hand_over(struct fs_node *n, struct fs_volume *v, const char *to, bool wait, char *err,
		     size_t errlen)
{
	struct fs_vnode *vn = v->vn;
	struct wire_req q = {.type = W_TAKE,
			     .volid = v->id,
			     .flags = wait ? FS_TAKE_WAIT : 0,
			     .name = n->name,
			     .name2 = ""};
	struct wire_rep p = {0};
	uint8_t *raw = NULL;
	char addr[POOL_ADDR_MAX], why[300];
	int rc;

	fs_node_addr_of(n->fs, to, addr);
	rc = addr[0] ? fs_rpc_call(n->rpc, addr, &q, &p, &raw) : -EHOSTUNREACH;
	if (rc < 0)
		snprintf(why, sizeof(why), "telling it failed: %s", strerror(-rc));
	else if ((rc = p.err) < 0)
		reply_text(&p, rc, why, sizeof(why));
	free(raw);
	if (rc < 0) {
		snprintf(err, errlen,
			 "volume %s was released by %s but %s did not take it (%s); the next "
			 "heartbeat gives it an owner",
			 v->name, n->name, to, why);
		fprintf(stderr, "spacefs: node %s: %s\n", n->name, err);
		atomic_store(&vn->hold_until_ns, 0);
	} else {
		/* a moved volume is owned now; a balanced one soon */
		atomic_store(&vn->hold_until_ns, wait ? 0 : fs_mono_ns() + n->lease_ms * 1000000ll);
	}
	return rc;
}

/* Renew v's lease on its lock files if it is ours (leased): 0 renewed on
 * a majority (the deadline moves to lease - margin after the start of
 * this renewal), -ESTALE a newer owner holds it, -EIO not a majority,
 * -ENOENT not ours to renew.  From the lease thread every heartbeat, and
 * from the node thread's tick; lease_mu keeps the two apart. */
static int lease_renew(struct fs_node *n, struct fs_volume *v)
{
	struct fs_vnode *vn = v->vn;
	uint32_t ok = 0;
	bool lost = false;
	char err[512];

	pthread_mutex_lock(&vn->lease_mu);
	if (!atomic_load(&vn->leased)) {
		pthread_mutex_unlock(&vn->lease_mu);
		return -ENOENT;
	}
	struct mine_ctx c = {n, atomic_load(&vn->lease_epoch), false};
	int64_t t0 = fs_mono_ns();
	for (uint32_t i = 0; i < vn->nmeta; i++) {
		if (ensure_fd(vn, i, false) < 0)
			continue;
		if (!vn->held[i])
			vn->held[i] = pool_lock_hold(vn->lock_fd[i]) == 0;
		int rc = pool_lock_update(vn->lock_fd[i], vn->lock_dir[i], fn_mine, &c, err,
					  sizeof(err));
		ok += rc == 0;
		lost |= rc == -ESTALE;
	}
	bool renewed = !lost && ok >= majority(vn);
	if (renewed) {
		/* lateness: how long since the last renewal began (the lease is
		 * only as good as the longest of these gaps) */
		int64_t gap = t0 - vn->renewed_ns;
		if (gap > atomic_load(&vn->renew_gap_max_ns))
			atomic_store(&vn->renew_gap_max_ns, gap);
		atomic_fetch_add(&vn->renewals, 1);
		if (gap > 2 * n->hb_ms * 1000000ll) {
			atomic_fetch_add(&vn->renew_late, 1);
			if (gap > n->lease_ms * 1000000ll / 2)
				fprintf(stderr,
					"spacefs: node %s: volume %s: lease renewed %lld ms after "
					"the previous renewal (lease %lld ms)\n",
					n->name, v->name, (long long)(gap / 1000000),
					(long long)n->lease_ms);
		}
		vn->renewed_ns = t0;
		atomic_store(&vn->deadline_ns, t0 + (n->lease_ms - n->margin_ms) * 1000000ll);
	} else if (!lost) {
		fprintf(stderr, "spacefs: node %s: volume %s: lease renewed on %u of %u disks\n",
			n->name, v->name, ok, vn->nmeta);
	}
	pthread_mutex_unlock(&vn->lease_mu);
	return renewed ? 0 : lost ? -ESTALE : -EIO;
}

/* The node thread's renewal: renew, and let the volume go if the lease is
 * lost, its deadline passed, or a newer epoch fenced its metadata. */
static void renew(struct fs_node *n, struct fs_volume *v)
{
	struct fs_vnode *vn = v->vn;
	int rc = lease_renew(n, v);

	if (rc == -ESTALE || fs_mono_ns() >= atomic_load(&vn->deadline_ns) ||
	    (v->meta && pool_meta_fenced(v->meta)))
		release(n, v, true, NULL);
}

/* ---- live nodes and balancing ---- */

struct live_scan {
	struct fs_node *n;
	char name[64][POOL_NODE_NAME_MAX + 1];
	char addr[64][POOL_ADDR_MAX];
	uint32_t count;
	int64_t now;
};

static void live_add(void *arg, const struct pool_node_rec *r)
{
	struct live_scan *ls = arg;

	if (!r->running || ls->now - r->heartbeat_ms > ls->n->lease_ms)
		return;
	for (uint32_t i = 0; i < ls->count; i++)
		if (!strcmp(ls->name[i], r->name))
			return;
	if (ls->count < 64) {
		snprintf(ls->name[ls->count], POOL_NODE_NAME_MAX + 1, "%s", r->name);
		snprintf(ls->addr[ls->count++], POOL_ADDR_MAX, "%s", r->addr);
	}
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* This node's registry record, stamped now, on every disk. */
static void beat(struct fs_node *n, struct pool_node_rec *me)
{
	*me = (struct pool_node_rec){.heartbeat_ms = pool_realtime_ms(), .pid = (uint32_t)getpid()};
	snprintf(me->name, sizeof(me->name), "%s", n->name);
	snprintf(me->addr, sizeof(me->addr), "%s", n->addr);
	pthread_mutex_lock(&n->beat_mu);
	for (uint32_t i = 0; i < n->fs->pool->ndisks; i++)
		if (n->reg_fd[i] >= 0)
			pool_node_beat(n->reg_fd[i], me);
	pthread_mutex_unlock(&n->beat_mu);
}

/* One heartbeat from now: when the node and lease threads wake next
 * (CLOCK_MONOTONIC, as their condition variables wait). */
static struct timespec next_beat(const struct fs_node *n)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = ts.tv_nsec + (n->hb_ms % 1000) * 1000000ll;
	ts.tv_sec += n->hb_ms / 1000 + ns / 1000000000ll;
	ts.tv_nsec = ns % 1000000000ll;
	return ts;
}

/* ---- the lease thread ----
 *
 * Renewals used to ride on the node thread's tick, behind whatever else
 * the tick did: a takeover's resync, a balancing hand-over, catalogue
 * polls, all slow under load.  In the long soak (ASan, 2 cores, load 18)
 * renewals came up to 7 s late with a 6 s lease: owners fenced themselves
 * and failed requests, and the other nodes took them for dead.  This
 * thread does nothing but beat the registry and renew every lease held
 * here (lease_renew, each under its volume's lease_mu), every heartbeat.
 * Giving a volume up (a lease found lost) stays the node thread's job:
 * this one only kicks it. */
static void *lease_main(void *arg)
{
	struct fs_node *n = arg;
	struct fs *fs = n->fs;

	pthread_mutex_lock(&n->lock);
	while (!n->stopping) {
		pthread_mutex_unlock(&n->lock);
		struct pool_node_rec me;
		beat(n, &me);
		pthread_mutex_lock(&fs->vol_lock);
		uint32_t nvol = fs->nvol;
		pthread_mutex_unlock(&fs->vol_lock);
		bool lost = false;
		for (uint32_t i = 0; i < nvol; i++) {
			struct fs_volume *v = fs->vol[i];
			if (v->vn && atomic_load(&v->vn->leased) && !fs_volume_gone(v))
				lost |= lease_renew(n, v) == -ESTALE;
		}
		if (lost)
			fs_node_kick(fs, false);
		pthread_mutex_lock(&n->lock);
		if (n->stopping)
			break;
		struct timespec ts = next_beat(n);
		pthread_cond_timedwait(&n->lease_wake, &n->lock, &ts);
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

/* A takeover's opening of the stores (the resync of its dirty regions)
 * runs in the node thread and can take longer than a lease under load;
 * meanwhile nothing else renewed the node's other leases or its registry
 * record, so it fenced its own volumes (local writes failed with EIO) and
 * the other nodes took it for dead (the long cluster soak).  The resync
 * calls this between regions: on the node thread, once a heartbeat, it
 * beats and renews every volume owned here.  Elsewhere it does nothing
 * (another thread does not hold the node's state lock). */
void fs_node_keepalive(struct fs *fs)
{
	struct fs_node *n = fs->node;

	if (!n || !n->thread_started || !pthread_equal(pthread_self(), n->thread))
		return;
	int64_t now = fs_mono_ns();
	if (now - n->keepalive_ns < n->hb_ms * 1000000ll)
		return;
	n->keepalive_ns = now;
	struct pool_node_rec me;
	beat(n, &me);
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t nvol = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	for (uint32_t i = 0; i < nvol; i++)
		if (fs->vol[i]->vn && fs->vol[i]->vn->state == VS_OWNED &&
		    !fs_volume_gone(fs->vol[i]))
			renew(n, fs->vol[i]);
}

/* Beat, then list the live nodes; true if the set changed. */
static bool refresh_live(struct fs_node *n)
{
	struct fs *fs = n->fs;
	struct live_scan *ls = calloc(1, sizeof(*ls));
	struct pool_node_rec me;
	bool changed;

	if (!ls)
		return false;
	beat(n, &me);
	n->keepalive_ns = fs_mono_ns();
	ls->n = n;
	ls->now = pool_realtime_ms();
	me.running = true;
	live_add(ls, &me);
	for (uint32_t i = 0; i < fs->pool->ndisks; i++)
		if (fs->pool->disk[i].state == POOL_DISK_HEALTHY)
			pool_node_list(fs->pool->disk[i].path, live_add, ls);
	/* sort names, carrying addresses along */
	for (uint32_t i = 1; i < ls->count; i++)
		for (uint32_t j = i; j > 0 && strcmp(ls->name[j - 1], ls->name[j]) > 0; j--) {
			char tn[POOL_NODE_NAME_MAX + 1], ta[POOL_ADDR_MAX];
			memcpy(tn, ls->name[j], sizeof(tn));
			memcpy(ta, ls->addr[j], sizeof(ta));
			memcpy(ls->name[j], ls->name[j - 1], sizeof(tn));
			memcpy(ls->addr[j], ls->addr[j - 1], sizeof(ta));
			memcpy(ls->name[j - 1], tn, sizeof(tn));
			memcpy(ls->addr[j - 1], ta, sizeof(ta));
		}
	/* drained nodes stay live (they serve redirected I/O) but own nothing */
	const char *disks[POOL_MAX_DISKS];
	uint32_t nd = 0;
	bool drained[64] = {0};
	for (uint32_t i = 0; i < fs->pool->ndisks; i++)
		if (fs->pool->disk[i].state == POOL_DISK_HEALTHY)
			disks[nd++] = fs->pool->disk[i].path;
	for (uint32_t i = 0; i < ls->count; i++)
		drained[i] = pool_drain_read(disks, nd, ls->name[i]);
	pthread_mutex_lock(&n->lock);
	changed = ls->count != n->nlive;
	for (uint32_t i = 0; !changed && i < ls->count; i++)
		changed = strcmp(ls->name[i], n->live[i]) != 0 || drained[i] != n->live_drained[i];
	memcpy(n->live, ls->name, sizeof(n->live));
	memcpy(n->live_addr, ls->addr, sizeof(n->live_addr));
	memcpy(n->live_drained, drained, sizeof(drained));
	n->nlive = ls->count;
	pthread_mutex_unlock(&n->lock);
	free(ls);
	(void)cmp_name;
	return changed;
}

void fs_node_addr_of(struct fs *fs, const char *name, char *addr)
{
	struct fs_node *n = fs->node;

	addr[0] = '\0';
	pthread_mutex_lock(&n->lock);
	for (uint32_t i = 0; i < n->nlive; i++)
		if (!strcmp(n->live[i], name))
			snprintf(addr, POOL_ADDR_MAX, "%s", n->live_addr[i]);
	pthread_mutex_unlock(&n->lock);
}

static int live_index(const struct fs_node *n, const char *name)
{
	for (uint32_t i = 0; i < n->nlive; i++)
		if (!strcmp(n->live[i], name))
			return (int)i;
	return -1;
}

/* The desired owner of every volume (index into n->live, -1: none), the
 * same on every node that sees the same live set and owners. */
/* A live node that may own volumes: not drained, unless every live node
 * is (then volumes still need owners). */
static bool eligible(const struct fs_node *n, int i, bool all_drained)
{
	return i >= 0 && (all_drained || !n->live_drained[i]);
}

static void desired_owners(struct fs_node *n, int *want)
{
	struct fs *fs = n->fs;
	uint32_t count[64] = {0}, nvol = fs->nvol, nlive = n->nlive, nelig = 0;
	char owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
	uint64_t epoch;
	bool valid;

	for (uint32_t j = 0; j < nlive; j++)
		nelig += !n->live_drained[j];
	bool alld = nelig == 0;
	if (alld)
		nelig = nlive;

	uint32_t nlivevol = 0;
	for (uint32_t i = 0; i < nvol; i++) {
		want[i] = -1;
		nlivevol += !fs_volume_gone(fs->vol[i]);
	}
	if (nlive == 0)
		return;
	uint32_t cap = (nlivevol + nelig - 1) / nelig;
	for (uint32_t i = 0; i < nvol; i++) {
		struct fs_vnode *vn = fs->vol[i]->vn;
		if (fs_volume_gone(fs->vol[i]))
			continue; /* deleted: nobody's share */
		pthread_mutex_lock(&vn->info_lock);
		want[i] = live_index(n, vn->pref);
		pthread_mutex_unlock(&vn->info_lock);
		if (!eligible(n, want[i], alld))
			want[i] = -1; /* its preferred owner is drained */
		if (want[i] >= 0)
			count[want[i]]++;
	}
	for (uint32_t i = 0; i < nvol; i++) {
		if (want[i] >= 0 || fs_volume_gone(fs->vol[i]))
			continue;
		fs_node_owner(fs->vol[i], owner, addr, &epoch, &valid);
		int cur = valid ? live_index(n, owner) : -1;
		if (eligible(n, cur, alld) && count[cur] < cap) {
			want[i] = cur;
			count[cur]++;
		}
	}
	for (uint32_t i = 0; i < nvol; i++) {
		if (want[i] >= 0 || fs_volume_gone(fs->vol[i]))
			continue;
		int best = -1;
		for (uint32_t j = 0; j < nlive; j++)
			if (eligible(n, (int)j, alld) && (best < 0 || count[j] < count[best]))
				best = (int)j;
		want[i] = best;
		count[best]++;
	}
}

static void reload_prefs(struct fs *fs)
{
	for (uint32_t i = 0; i < fs->nvol; i++) {
		struct fs_vnode *vn = fs->vol[i]->vn;
		const char *dirs[POOL_META_DISKS];
		char pref[POOL_NODE_NAME_MAX + 1];
		for (uint32_t j = 0; j < vn->nmeta; j++)
			dirs[j] = vn->lock_dir[j];
		pool_pref_read(dirs, vn->nmeta, pref, sizeof(pref));
		pthread_mutex_lock(&vn->info_lock);
		memcpy(vn->pref, pref, sizeof(pref));
		pthread_mutex_unlock(&vn->info_lock);
	}
}

static void balance(struct fs_node *n)
{
	struct fs *fs = n->fs;
	int want[FS_MAX_VOLUMES];
	char to[POOL_NODE_NAME_MAX + 1];

	pthread_mutex_lock(&n->lock);
	desired_owners(n, want);
	pthread_mutex_unlock(&n->lock);
	for (uint32_t i = 0; i < fs->nvol; i++) {
		struct fs_volume *v = fs->vol[i];
		if (v->vn->state != VS_OWNED || want[i] < 0)
			continue;
		pthread_mutex_lock(&n->lock);
		snprintf(to, sizeof(to), "%s", n->live[want[i]]);
		pthread_mutex_unlock(&n->lock);
		if (strcmp(to, n->name)) {
			char err[512];
			release(n, v, false, to);
			hand_over(n, v, to, false, err, sizeof(err));
		}
	}
}

/* ---- the heartbeat ---- */

static bool is_desired(struct fs_node *n, uint32_t idx)
{
	int want[FS_MAX_VOLUMES];
	bool mine;

	pthread_mutex_lock(&n->lock);
	desired_owners(n, want);
	mine = want[idx] >= 0 && !strcmp(n->live[want[idx]], n->name);
	pthread_mutex_unlock(&n->lock);
	return mine;
}

static void tick_volume(struct fs_node *n, uint32_t idx)
{
	struct fs_volume *v = n->fs->vol[idx];
	struct fs_vnode *vn = v->vn;
	struct seen s;
	int64_t now = fs_mono_ns();

	if (fs_volume_gone(v))
		return; /* deleted: fs_node_retire let it go */
	if (vn->state == VS_OWNED)
		return; /* renewed by tick() */
	observe(n, v, &s);
	if (s.state != SEEN_NONE)
		vn->ownerless_since_ns = 0;
	else if (!vn->ownerless_since_ns)
		vn->ownerless_since_ns = now;
	bool asked = atomic_load(&vn->take_until_ns) > now;
	bool hold = !asked && atomic_load(&vn->hold_until_ns) > now;
	bool want = !hold && (asked || is_desired(n, idx));
	/* Released by another node a moment ago: a hand-over to the node it
	 * names in its W_TAKE (an `owner move`, which balancing here knows
	 * nothing of).  Taking it meanwhile because this node's balancing
	 * wants it stole the volume from the move's target, and the take's
	 * fs_rpc_reset of the old owner broke the move request itself (a
	 * W_MOVE for this very volume, which the reset still breaks:
	 * "Connection reset by peer", about one move in ten in the soak).
	 * Only the asked node takes it for a lease; then anyone may. */
	bool handing = vn->released_seen_ns && now - vn->released_seen_ns < n->lease_ms * 1000000ll;
	if (handing && !asked)
		want = false;
	switch (s.state) {
	case SEEN_NONE:
		if (want || (!hold && !handing &&
			     now - vn->ownerless_since_ns > 2 * n->lease_ms * 1000000ll))
			take(n, v, &s, false, asked ? "handed over" : "no owner");
		break;
	case SEEN_DEAD:
		if (want)
			take(n, v, &s, true, "previous owner died");
		break;
	case SEEN_HUNG:
		if (want && now - vn->seen_since_ns > (n->lease_ms + n->margin_ms) * 1000000ll)
			take(n, v, &s, true, "previous owner stopped renewing");
		else if (asked)
			note_take_err(vn, "node %s still holds its lock (epoch %llu)", s.best.node,
				      (unsigned long long)s.best.epoch);
		break;
	case SEEN_VALID:
		if (asked)
			note_take_err(vn, "node %s holds a valid lease (epoch %llu)", s.best.node,
				      (unsigned long long)s.best.epoch);
		break;
	default:
		break;
	}
	if (vn->state == VS_OWNED)
		atomic_store(&vn->take_until_ns, 0);
}

static void tick(struct fs_node *n)
{
	struct fs *fs = n->fs;

	fs_catalog_poll(fs); /* volumes created or deleted by other nodes */
	pthread_mutex_lock(&n->state_lock);
	bool changed = refresh_live(n);
	reload_prefs(fs);
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t nvol = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	/* Renewals first: a takeover below can take seconds (its resync), and
	 * an owned volume must not run past its deadline meanwhile -- past it
	 * the fence (fs_vol_may_write) refuses its writes in flight. */
	for (uint32_t i = 0; i < nvol; i++)
		if (n->fs->vol[i]->vn->state == VS_OWNED && !fs_volume_gone(n->fs->vol[i]))
			renew(n, n->fs->vol[i]);
	for (uint32_t i = 0; i < nvol; i++)
		tick_volume(n, i);
	pthread_mutex_lock(&n->lock);
	bool bal = changed || n->balance_now;
	n->balance_now = false;
	pthread_mutex_unlock(&n->lock);
	if (bal)
		balance(n);
	pthread_mutex_unlock(&n->state_lock);
}

static void *node_main(void *arg)
{
	struct fs_node *n = arg;

	pthread_mutex_lock(&n->lock);
	while (!n->stopping) {
		n->again = false;
		pthread_mutex_unlock(&n->lock);
		tick(n);
		pthread_mutex_lock(&n->lock);
		if (n->stopping || n->balance_now || n->again)
			continue;
		struct timespec ts = next_beat(n);
		pthread_cond_timedwait(&n->wake, &n->lock, &ts);
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

void fs_node_kick(struct fs *fs, bool bal)
{
	struct fs_node *n = fs->node;

	pthread_mutex_lock(&n->lock);
	if (bal)
		n->balance_now = true;
	pthread_cond_signal(&n->wake);
	pthread_mutex_unlock(&n->lock);
}

static bool owned_here(struct fs_node *n, struct fs_volume *v)
{
	char owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
	uint64_t epoch;
	bool valid;

	fs_node_owner(v, owner, addr, &epoch, &valid);
	return valid && !strcmp(owner, n->name);
}

int fs_node_take(struct fs *fs, uint32_t volid, bool wait, char *err, size_t errlen)
{
	struct fs_node *n = fs->node;
	struct fs_volume *v = fs_volume_by_id(fs, volid);
	int64_t limit = 2 * n->lease_ms * 1000000ll; /* below the mover's socket timeout */
	int64_t until = fs_mono_ns() + limit;

	if (!v || !v->vn) {
		snprintf(err, errlen, "node %s has no volume with id %u", n->name, volid);
		return -ENOENT;
	}
	struct fs_vnode *vn = v->vn;
	pthread_mutex_lock(&vn->info_lock);
	vn->take_err[0] = '\0';
	pthread_mutex_unlock(&vn->info_lock);
	atomic_store(&vn->hold_until_ns, 0);
	atomic_store(&vn->take_until_ns, until);
	pthread_mutex_lock(&n->lock);
	n->again = true; /* even if a tick is running right now */
	pthread_cond_signal(&n->wake);
	pthread_mutex_unlock(&n->lock);
	if (!wait)
		return 0;
	while (!owned_here(n, v) && fs_mono_ns() < until)
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	/* Settle it under the state lock: a take under way finishes first,
	 * none starts after. */
	pthread_mutex_lock(&n->state_lock);
	atomic_store(&vn->take_until_ns, 0);
	bool owned = vn->state == VS_OWNED;
	pthread_mutex_unlock(&n->state_lock);
	if (owned)
		return 0;
	pthread_mutex_lock(&vn->info_lock);
	snprintf(err, errlen, "node %s could not take volume %s within %lld s: %s", n->name,
		 v->name, (long long)(limit / 1000000000ll),
		 vn->take_err[0] ? vn->take_err : "its node thread did not get to it");
	pthread_mutex_unlock(&vn->info_lock);
	return -ETIMEDOUT;
}

/* Read v's lock files now (not at the next heartbeat): the owner this
 * node reports must be the real one as soon as a move returns. */
static void look_again(struct fs_node *n, struct fs_volume *v)
{
	struct seen s;

	pthread_mutex_lock(&n->state_lock);
	if (v->vn->state != VS_OWNED)
		observe(n, v, &s);
	pthread_mutex_unlock(&n->state_lock);
}

/* The owner as seen now; waits up to a lease while there is none (a
 * takeover or another move under way).  false: still none. */
static bool current_owner(struct fs_node *n, struct fs_volume *v, char *owner, char *addr)
{
	int64_t until = fs_mono_ns() + n->lease_ms * 1000000ll;
	uint64_t epoch;
	bool valid;

	for (;;) {
		look_again(n, v);
		fs_node_owner(v, owner, addr, &epoch, &valid);
		if (valid || fs_mono_ns() >= until)
			return valid;
		fs_node_kick(n->fs, false);
		nanosleep(&(struct timespec){0, 50000000}, NULL);
	}
}

/* After a move whose request broke: true once `node` owns v, false as
 * soon as another node than `from` does, or after two leases. */
static bool moved_to(struct fs_node *n, struct fs_volume *v, const char *from, const char *node)
{
	int64_t until = fs_mono_ns() + 2 * n->lease_ms * 1000000ll;
	char owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
	uint64_t epoch;
	bool valid;

	while (fs_mono_ns() < until) {
		look_again(n, v);
		fs_node_owner(v, owner, addr, &epoch, &valid);
		if (valid && !strcmp(owner, node))
			return true;
		if (valid && strcmp(owner, from))
			return false;
		nanosleep(&(struct timespec){0, 50000000}, NULL);
	}
	return false;
}

/* Not the owner: ask the owner to move v. */
static int move_remote(struct fs_node *n, struct fs_volume *v, const char *node, char *err,
		       size_t errlen)
{
	char owner[POOL_NODE_NAME_MAX + 1], oaddr[POOL_ADDR_MAX];

	if (!current_owner(n, v, owner, oaddr)) {
		snprintf(err, errlen, "volume %s has had no owner for a lease; try again", v->name);
		return -EAGAIN;
	}
	if (!strcmp(owner, n->name)) { /* our own lease on disk, but the stores are closed */
		snprintf(err, errlen, "volume %s is changing hands on node %s; try again", v->name,
			 n->name);
		return -EAGAIN;
	}
	if (!strcmp(owner, node))
		return 0;
	struct wire_req q = {.type = W_MOVE, .volid = v->id, .name = node, .name2 = ""};
	struct wire_rep p = {0};
	uint8_t *raw = NULL;
	int rc = fs_rpc_call(n->rpc, oaddr, &q, &p, &raw);
	if (rc == 0 && (rc = p.err) < 0)
		reply_text(&p, rc, err, errlen);
	free(raw);
	look_again(n, v);
	/* When this node is the target, taking the volume breaks this
	 * node's requests for it to the old owner (fs_rpc_reset in take),
	 * this one too: what counts is who owns the volume now. */
	if (rc < 0 && rc != p.err && owned_here(n, v) && !strcmp(node, n->name))
		rc = 0;
	/* The same for a connection the move broke otherwise (this node
	 * taking another volume from the owner no longer does; a socket
	 * timeout or the owner dying may): the move may have gone through;
	 * wait up to two leases to see. */
	if (rc < 0 && rc != p.err && moved_to(n, v, owner, node))
		rc = 0;
	if (rc < 0 && rc != p.err)
		snprintf(err, errlen, "asking owner %s (%s) to move volume %s: %s", owner, oaddr,
			 v->name, strerror(-rc));
	return rc;
}

int fs_node_move(struct fs *fs, const char *volume, const char *node, char *err, size_t errlen)
{
	struct fs_node *n = fs->node;
	struct fs_volume *v = fs_volume_by_name(fs, volume);
	char addr[POOL_ADDR_MAX];
	int rc;

	if (!v) {
		snprintf(err, errlen, "no volume '%s'", volume);
		return -ENOENT;
	}
	fs_node_addr_of(fs, node, addr);
	if (!addr[0]) {
		snprintf(err, errlen, "node '%s' is not running on this pool", node);
		return -EHOSTUNREACH;
	}
	pthread_mutex_lock(&n->state_lock);
	bool owned = v->vn->state == VS_OWNED, here = !strcmp(node, n->name);
	if (owned && !here)
		release(n, v, false, node);
	pthread_mutex_unlock(&n->state_lock);
	if (!owned)
		return move_remote(n, v, node, err, errlen);
	if (here)
		return 0;
	/* Not under the state lock: the target's answer can take a while,
	 * and this node's other volumes need their heartbeats meanwhile. */
	rc = hand_over(n, v, node, true, err, errlen);
	look_again(n, v);
	return rc;
}

/* ---- deleted volumes ---- */

void fs_node_retire(struct fs *fs, struct fs_volume *v)
{
	struct fs_node *n = fs->node;

	pthread_mutex_lock(&n->state_lock);
	if (v->vn->state == VS_OWNED)
		release(n, v, false, NULL);
	atomic_store(&v->gone, 1);
	pthread_mutex_unlock(&n->state_lock);
}

int fs_node_wait_unowned(struct fs *fs, struct fs_volume *v, char *err, size_t errlen)
{
	struct fs_node *n = fs->node;
	/* a node that has not seen the deletion yet does at its next
	 * heartbeat; a stalled one stops writing by its own deadline */
	int64_t until = fs_mono_ns() + (n->lease_ms + n->margin_ms + 2 * n->hb_ms) * 1000000ll;
	struct seen s;

	for (;;) {
		pthread_mutex_lock(&n->state_lock);
		observe(n, v, &s);
		pthread_mutex_unlock(&n->state_lock);
		if (s.state == SEEN_NONE || s.state == SEEN_DEAD)
			return 0;
		if (fs_mono_ns() >= until)
			break;
		nanosleep(&(struct timespec){0, 20000000}, NULL);
	}
	snprintf(err, errlen, "volume %s: node %s still holds its lock (epoch %llu)", v->name,
		 s.best.node, (unsigned long long)s.best.epoch);
	return -ETIMEDOUT;
}

/* ---- start and stop ---- */

static int load_secret(struct fs_node *n, char *err, size_t errlen)
{
	struct fs *fs = n->fs;
	const char *disks[POOL_MAX_DISKS];
	uint32_t nd = 0;

	for (uint32_t i = 0; i < fs->pool->ndisks; i++)
		if (fs->pool->disk[i].state == POOL_DISK_HEALTHY)
			disks[nd++] = fs->pool->disk[i].path;
	return pool_secret_load(disks, nd, n->secret, err, errlen);
}

static int register_node(struct fs_node *n, char *err, size_t errlen)
{
	struct fs *fs = n->fs;
	struct pool_node_rec me = {.heartbeat_ms = pool_realtime_ms(), .pid = (uint32_t)getpid()};
	uint32_t ok = 0;
	int fd = -1;

	snprintf(me.name, sizeof(me.name), "%s", n->name);
	snprintf(me.addr, sizeof(me.addr), "%s", n->addr);
	for (uint32_t i = 0; i < fs->pool->ndisks; i++) {
		n->reg_fd[i] = -1;
		if (fs->pool->disk[i].state != POOL_DISK_HEALTHY)
			continue;
		fd = pool_node_register(fs->pool->disk[i].path, &me, err, errlen);
		if (fd == -EBUSY)
			return fd;
		n->reg_fd[i] = fd >= 0 ? fd : -1;
		ok += fd >= 0;
	}
	return ok ? 0 : fd;
}

int fs_node_start(struct fs *fs, char *err, size_t errlen)
{
	struct fs_node *n = calloc(1, sizeof(*n));
	const char *why;
	int rc;

	if (!n)
		return -ENOMEM;
	n->fs = fs;
	fs->node = n;
	pthread_mutex_init(&n->lock, NULL);
	pthread_mutex_init(&n->state_lock, NULL);
	pthread_mutex_init(&n->beat_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->wake, &ca);
	pthread_cond_init(&n->lease_wake, &ca);
	pthread_condattr_destroy(&ca);
	for (uint32_t i = 0; i < POOL_MAX_DISKS; i++)
		n->reg_fd[i] = -1;
	if (pool_name_check(fs->opt.node, &why) < 0 || strlen(fs->opt.node) > POOL_NODE_NAME_MAX) {
		snprintf(err, errlen, "node=%s: %s", fs->opt.node, why ? why : "too long");
		return -EINVAL;
	}
	snprintf(n->name, sizeof(n->name), "%s", fs->opt.node);
	snprintf(n->addr, sizeof(n->addr), "%s", fs->opt.listen);
	pool_uuid_format(fs->pool->sb->pool_uuid, n->uuid);
	n->hb_ms = (int64_t)(fs->opt.heartbeat * 1000);
	n->lease_ms = (int64_t)(fs->opt.lease * 1000);
	n->margin_ms = n->lease_ms / 5 > n->hb_ms ? n->lease_ms / 5 : n->hb_ms;
	/* Test hook (tests/integration/test_fence.py): a pause before each
	 * fencing check, so that a SIGSTOP lands between a request's start and
	 * its chunk writes' submission, as a real stall rarely does on cue. */
	const char *delay = getenv("SPACEFS_TEST_SUBMIT_DELAY_MS");
	if (delay && atoi(delay) > 0 && atoi(delay) < 1000)
		n->test_delay_ns = atoi(delay) * 1000000l;
	rc = load_secret(n, err, errlen);
	if (rc == 0)
		rc = fs_rpc_new(n, &n->rpc);
	if (rc == 0)
		rc = fs_srv_start(n, err, errlen);
	if (rc == 0)
		rc = register_node(n, err, errlen);
	if (rc == 0)
		tick(n); /* own what is ownerless before mounting */
	return rc;
}

/* After mounting (and daemonizing: threads do not survive fork). */
int fs_node_run(struct fs *fs, char *err, size_t errlen)
{
	struct fs_node *n = fs->node;
	int rc = fs_srv_run(n, err, errlen);

	if (rc == 0) {
		rc = -pthread_create(&n->thread, NULL, node_main, n);
		if (rc < 0)
			snprintf(err, errlen, "node thread: %s", strerror(-rc));
	}
	n->thread_started = rc == 0;
	/* SPACEFS_TEST_NO_LEASE_THREAD=1 (tests and measurements only):
	 * renewals from the node thread's tick alone, as before the lease
	 * thread, to compare their lateness */
	const char *nolt = getenv("SPACEFS_TEST_NO_LEASE_THREAD");
	if (rc == 0 && !(nolt && !strcmp(nolt, "1"))) {
		rc = -pthread_create(&n->lease_thread, NULL, lease_main, n);
		if (rc < 0)
			snprintf(err, errlen, "lease thread: %s", strerror(-rc));
		n->lease_started = rc == 0;
	}
	return rc;
}

void fs_node_stop(struct fs *fs)
{
	struct fs_node *n = fs->node;

	if (!n)
		return;
	if (n->thread_started) {
		pthread_mutex_lock(&n->lock);
		n->stopping = true;
		pthread_cond_signal(&n->wake);
		pthread_cond_signal(&n->lease_wake);
		pthread_mutex_unlock(&n->lock);
		pthread_join(n->thread, NULL);
		if (n->lease_started)
			pthread_join(n->lease_thread, NULL);
	}
	/* Leave the registry first, so the others' balancing skips us. */
	for (uint32_t i = 0; i < POOL_MAX_DISKS; i++)
		if (n->reg_fd[i] >= 0) {
			close(n->reg_fd[i]);
			n->reg_fd[i] = -1;
		}
	refresh_live(n);
	int want[FS_MAX_VOLUMES];
	pthread_mutex_lock(&n->lock);
	/* drop ourselves from the live set for the handover targets */
	for (uint32_t i = 0; i < n->nlive; i++)
		if (!strcmp(n->live[i], n->name)) {
			memmove(n->live[i], n->live[i + 1],
				(n->nlive - i - 1) * sizeof(n->live[0]));
			memmove(n->live_addr[i], n->live_addr[i + 1],
				(n->nlive - i - 1) * sizeof(n->live_addr[0]));
			memmove(&n->live_drained[i], &n->live_drained[i + 1],
				(n->nlive - i - 1) * sizeof(n->live_drained[0]));
			n->nlive--;
			break;
		}
	desired_owners(n, want);
	pthread_mutex_unlock(&n->lock);
	for (uint32_t i = 0; i < fs->nvol; i++) {
		struct fs_volume *v = fs->vol[i];
		char to[POOL_NODE_NAME_MAX + 1] = "";
		if (n->nlive && want[i] >= 0)
			snprintf(to, sizeof(to), "%s", n->live[want[i]]);
		/* Under the state lock, as fs_node_move: a peer's move request
		 * served meanwhile may have released this volume already (a
		 * second release found its stores closed and crashed). */
		pthread_mutex_lock(&n->state_lock);
		bool owned = v->vn && v->vn->state == VS_OWNED;
		if (owned)
			release(n, v, false, to[0] ? to : NULL);
		pthread_mutex_unlock(&n->state_lock);
		if (owned && to[0]) {
			char err[512];
			hand_over(n, v, to, false, err, sizeof(err));
		}
	}
	fs_srv_stop(n);
	fs_rpc_free(n->rpc);
	pthread_mutex_destroy(&n->lock);
	pthread_mutex_destroy(&n->state_lock);
	pthread_mutex_destroy(&n->beat_mu);
	pthread_cond_destroy(&n->wake);
	pthread_cond_destroy(&n->lease_wake);
	free(n);
	fs->node = NULL;
}
