/*
 * catalog.c -- the volume catalogue while several nodes run.
 *
 * Any node may change the pool's catalogue (pool/catalog.h): `volume
 * create` and `volume delete` through its control socket, a disk failure
 * its health watcher records.  Each change is made under the cluster's
 * catalogue lock on top of the newest superblock on disk, and every node
 * notices the commit with its next heartbeat (fs_catalog_poll, from the
 * node thread's tick) and applies it to its mount:
 *
 *  - a volume that appeared is opened (its ownership state only: the stores
 *    open on whichever node the balancing rule makes its owner, at once,
 *    in the same tick);
 *  - a volume marked DELETING or gone from the catalogue is retired: handed
 *    back if this node owned it, then marked gone, so lookups, the root
 *    listing and status no longer show it, and requests on files still
 *    open there fail with ESTALE (fs/route.c) or ENOENT, never wait.
 *
 * Deleting is two commits around a wait: mark the volume DELETING, wait
 * until no node holds its lease (each releases it when it sees the mark;
 * a stalled one has stopped writing by its own deadline), then remove its
 * files and its catalogue entry (pool_volume_delete).  A delete cut short
 * leaves it DELETING, hidden everywhere; deleting it again finishes.
 *
 * The struct fs_volume of a deleted volume is never freed while mounted
 * (vol[] only grows): inodes and requests in flight may point at it.
 * Volume ids are never reused, so a new volume never takes its place.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs.h"
#include "fs/jobs.h"
#include "fs/node.h"
#include "pool/catalog.h"

int fs_catalog_begin(struct fs *fs, struct pool_catalog_lock *l, char *err, size_t errlen)
{
	bool changed;
	int rc = 0;

	l->n = 0;
	if (fs->node && (rc = pool_catalog_lock(fs->pool, l, err, errlen)) < 0)
		return rc;
	pthread_rwlock_wrlock(&fs->pool_lock);
	if (fs->node && (rc = pool_catalog_reload(fs->pool, &changed, err, errlen)) < 0) {
		pthread_rwlock_unlock(&fs->pool_lock);
		pool_catalog_unlock(l);
	}
	return rc;
}

void fs_catalog_end(struct fs *fs, struct pool_catalog_lock *l)
{
	pthread_rwlock_unlock(&fs->pool_lock);
	pool_catalog_unlock(l);
	if (fs->node) /* the node thread applies it (a caller may hold locks) */
		fs_node_kick(fs, false);
}

void fs_catalog_poll(struct fs *fs)
{
	char err[POOL_MSG_MAX * 2];
	bool changed = false;
	int rc = 0;

	pthread_rwlock_rdlock(&fs->pool_lock);
	uint64_t stamp = pool_catalog_stamp(fs->pool);
	pthread_rwlock_unlock(&fs->pool_lock);
	if (stamp != fs->cat_stamp) {
		pthread_rwlock_wrlock(&fs->pool_lock);
		rc = pool_catalog_reload(fs->pool, &changed, err, sizeof(err));
		pthread_rwlock_unlock(&fs->pool_lock);
		if (rc < 0)
			fs_log("catalogue: cannot reload the pool's superblock: %s", err);
		else
			fs->cat_stamp = stamp; /* a failed reload is retried next time */
	}
	fs_catalog_apply(fs);
}

/* The volume with catalogue id `id`, gone or not (ids are never reused). */
static struct fs_volume *any_by_id(struct fs *fs, uint64_t id)
{
	struct fs_volume *found = NULL;

	pthread_mutex_lock(&fs->vol_lock);
	for (uint32_t i = 0; i < fs->nvol && !found; i++)
		if (fs->vol[i]->id == id)
			found = fs->vol[i];
	pthread_mutex_unlock(&fs->vol_lock);
	return found;
}

static const struct pool_sb_volume *cat_find(const struct pool_sb *sb, uint64_t id)
{
	for (uint32_t i = 0; i < sb->nvolumes; i++)
		if (sb->volume[i].id == id)
			return &sb->volume[i];
	return NULL;
}

static void retire(struct fs *fs, struct fs_volume *v, bool deleting)
{
	if (fs->node)
		fs_node_retire(fs, v);
	else
		atomic_store(&v->gone, 1);
	fs_log("volume %s %s: no longer mounted here; requests on its open files fail "
	       "(ESTALE)",
	       v->name, deleting ? "is being deleted" : "was deleted by another node");
}

/* Member d as another node (or this one) committed it: the stores of the
 * volumes owned here follow -- a replacement is reopened (rebuilding,
 * nothing live until its repair moves the cursor), a member recorded
 * failed is left out, one back to active is live again.  Volumes owned
 * elsewhere open their stores from the pool's disk states when taken. */
static void apply_member(struct fs *fs, const struct pool_sb *sb, uint32_t d)
{
	const struct pool_sb_member *m = &sb->member[d];
	bool known = d < fs->cat_nmem;
	bool replaced = !known || memcmp(fs->cat_uuid[d], m->uuid, POOL_UUID_LEN);
	uint32_t was = known ? fs->cat_mstate[d] : 0;
	char err[POOL_MSG_MAX * 2];

	if (!replaced && was == (uint32_t)m->state)
		return;
	if (replaced) /* the watcher must not take the new directory for a swap */
		fs_health_rebaseline(fs, d);
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		if (fs_volume_gone(v) || !fs_vol_enter_local(v))
			continue;
		if ((replaced && m->state != POOL_MEMBER_FAILED) ||
		    m->state == POOL_MEMBER_REPAIRING) { /* replaced, or back for a resync */
			if (pool_store_disk_replace(v->store, d, m->path, err, sizeof(err)) < 0)
				fs_log("volume %s: disk %u: %s", v->name, d, err);
			if (m->state == POOL_MEMBER_ACTIVE) /* added */
				pool_store_disk_set(v->store, d, POOL_STORE_DISK_OK);
		} else if (m->state == POOL_MEMBER_FAILED) {
			pool_store_disk_set(v->store, d, POOL_STORE_DISK_FAILED);
		} else if (m->state == POOL_MEMBER_ACTIVE && was == POOL_MEMBER_REPAIRING) {
			pool_store_disk_set(v->store, d, POOL_STORE_DISK_OK);
		}
		fs_vol_leave(v);
	}
	fs_log("catalogue: disk %u is %s now%s", d,
	       m->state == POOL_MEMBER_FAILED	   ? "failed"
	       : m->state == POOL_MEMBER_REPAIRING ? "being repaired"
	       : m->state == POOL_MEMBER_RETIRED   ? "retired"
						   : "active",
	       replaced && known ? " (replaced)" : "");
}

static void apply_members(struct fs *fs, const struct pool_sb *sb)
{
	bool first = fs->cat_nmem == 0;

	for (uint32_t d = 0; !first && d < sb->nmembers; d++)
		apply_member(fs, sb, d);
	for (uint32_t d = 0; d < sb->nmembers; d++) {
		memcpy(fs->cat_uuid[d], sb->member[d].uuid, POOL_UUID_LEN);
		fs->cat_mstate[d] = (uint32_t)sb->member[d].state;
	}
	fs->cat_nmem = sb->nmembers;
}

void fs_catalog_apply(struct fs *fs)
{
	struct pool_sb *sb = malloc(sizeof(*sb));
	char err[512];
	bool added = false;

	if (!sb) {
		fs_log("catalogue: out of memory; changes applied at the next heartbeat");
		return;
	}
	pthread_mutex_lock(&fs->cat_lock);
	pthread_rwlock_rdlock(&fs->pool_lock);
	*sb = *fs->pool->sb;
	pthread_rwlock_unlock(&fs->pool_lock);
	if (sb->generation == fs->cat_applied)
		goto out;
	/* in catalogue order, which is id order: every node appends new
	 * volumes to vol[] in the same order, so balancing agrees */
	for (uint32_t i = 0; i < sb->nvolumes; i++) {
		const struct pool_sb_volume *pv = &sb->volume[i];
		if (pv->state != POOL_VOLUME_ONLINE || any_by_id(fs, pv->id))
			continue;
		int rc = fs_volume_open(fs, pv, err, sizeof(err));
		if (rc < 0)
			fs_log("catalogue: volume %s appeared but cannot be mounted: %s", pv->name,
			       err);
		else
			fs_log("volume %s appeared in the catalogue: mounted", pv->name);
		added |= rc == 0;
	}
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		const struct pool_sb_volume *pv = cat_find(sb, v->id);
		if (!fs_volume_gone(v) && (!pv || pv->state != POOL_VOLUME_ONLINE))
			retire(fs, v, pv != NULL);
	}
	apply_members(fs, sb);
	fs->cat_applied = sb->generation;
	if (added && fs->node)
		fs_node_kick(fs, true); /* the balancing rule gives it an owner */
out:
	pthread_mutex_unlock(&fs->cat_lock);
	free(sb);
}

/* Set volume `name` DELETING (committed) under the catalogue lock. */
static int mark_deleting(struct fs *fs, const char *name, char *err, size_t errlen)
{
	struct pool_catalog_lock l;
	int rc = fs_catalog_begin(fs, &l, err, errlen);

	if (rc < 0)
		return rc;
	const struct pool_sb_volume *pv = pool_volume_find(fs->pool, name);
	if (!pv) {
		snprintf(err, errlen, "volume '%s': no such volume in pool '%s'", name,
			 fs->pool->sb->pool_name);
		rc = -ENOENT;
	} else if (pv->state != POOL_VOLUME_DELETING) {
		/* pool_volume_delete's first step, taken alone so that every
		 * node lets go of the volume before its files go */
		((struct pool_sb_volume *)pv)->state = POOL_VOLUME_DELETING;
		rc = pool_commit(fs->pool, err, errlen);
		if (rc < 0)
			((struct pool_sb_volume *)pv)->state = POOL_VOLUME_ONLINE;
	}
	fs_catalog_end(fs, &l);
	if (rc == 0)
		fs_catalog_apply(fs); /* retire it here now */
	return rc;
}

int fs_catalog_delete(struct fs *fs, const char *name, char *err, size_t errlen)
{
	struct pool_catalog_lock l;
	int rc;

	if (!fs->node) {
		snprintf(err, errlen,
			 "pool '%s' is mounted by a single node (spacefs on node %s); unmount it "
			 "first",
			 fs->pool->sb->pool_name, fs->opt.node);
		return -EBUSY;
	}
	if (fs->opt.read_only) {
		snprintf(err, errlen, "the pool is mounted read-only");
		return -EROFS;
	}
	rc = mark_deleting(fs, name, err, errlen);
	if (rc < 0)
		return rc;
	/* retired here by mark_deleting; wait for the others to let go */
	struct fs_volume *v = NULL;
	pthread_mutex_lock(&fs->vol_lock);
	for (uint32_t i = 0; i < fs->nvol; i++)
		if (!strcmp(fs->vol[i]->name, name))
			v = fs->vol[i]; /* the newest of that name */
	pthread_mutex_unlock(&fs->vol_lock);
	if (v && (rc = fs_node_wait_unowned(fs, v, err, errlen)) < 0)
		fs_log("volume %s: deleting anyway: %s", name, err);
	rc = fs_catalog_begin(fs, &l, err, errlen);
	if (rc < 0)
		return rc;
	rc = pool_volume_delete(fs->pool, name, err, errlen);
	fs_catalog_end(fs, &l);
	fs_catalog_apply(fs);
	if (rc == 0)
		fs_log("volume %s deleted", name);
	return rc;
}
