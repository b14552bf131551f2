/*
 * catalog.c -- the catalogue lock, reload and change detection that let
 * several running nodes share one pool's superblock (catalog.h says why).
 *
 * The reload adopts what another node committed, member by member: a
 * state the superblock records (failed, repairing, retired, active again)
 * replaces ours, a replaced member (new UUID) takes its new path, a new
 * member is added; what only this node observed (a disk missing or stale
 * here) stays, since the next commit of ours would record it anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pool/catalog.h"

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int lock_one(const char *disk, int64_t until, char *path, size_t pathlen)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
	int fd;

	snprintf(path, pathlen, "%s/%s", disk, POOL_CATALOG_LOCK_FILE);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	while (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		int rc = -errno;
		if ((rc != -EAGAIN && rc != -EACCES) || mono_ms() >= until) {
			close(fd);
			return rc == -EAGAIN || rc == -EACCES ? -EBUSY : rc;
		}
		nanosleep(&(struct timespec){0, 5000000}, NULL);
	}
	return fd;
}

int pool_catalog_lock(struct pool *p, struct pool_catalog_lock *l, char *err, size_t errlen)
{
	int64_t until = mono_ms() + POOL_CATALOG_WAIT_MS;
	char path[POOL_PATH_MAX + 32], first[POOL_PATH_MAX + 96] = "";

	l->n = 0;
	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (!pool_disk_in_service(p, i))
			continue;
		int fd = lock_one(p->disk[i].path, until, path, sizeof(path));
		if (fd == -EBUSY) { /* held elsewhere: all or nothing, in order */
			pool_catalog_unlock(l);
			snprintf(err, errlen,
				 "%s: the pool catalogue is locked by another node for more than "
				 "%d ms; try again",
				 path, POOL_CATALOG_WAIT_MS);
			return -EBUSY;
		}
		if (fd < 0 && !first[0])
			snprintf(first, sizeof(first), "%s: %s", path, strerror(-fd));
		if (fd >= 0)
			l->fd[l->n++] = fd;
	}
	if (l->n < p->ndisks / 2 + 1) {
		uint32_t got = l->n;
		pool_catalog_unlock(l);
		snprintf(err, errlen, "pool '%s': catalogue lock taken on %u of %u disks (%s)",
			 p->sb->pool_name, got, p->ndisks,
			 first[0] ? first : "disks out of service");
		return -EIO;
	}
	return 0;
}

void pool_catalog_unlock(struct pool_catalog_lock *l)
{
	for (uint32_t i = 0; i < l->n; i++)
		close(l->fd[i]);
	l->n = 0;
}

static enum pool_disk_state disk_state_of(enum pool_member_state m)
{
	switch (m) {
	case POOL_MEMBER_FAILED:
		return POOL_DISK_FAILED;
	case POOL_MEMBER_REPAIRING:
		return POOL_DISK_REPAIRING;
	case POOL_MEMBER_RETIRED:
		return POOL_DISK_RETIRED;
	default:
		return POOL_DISK_HEALTHY;
	}
}

/* Member m as the newer superblock `nb` records it. */
static void adopt_member(struct pool *p, const struct pool_sb *nb, uint32_t m)
{
	struct pool_disk *d = &p->disk[m];
	const struct pool_sb_member *nm = &nb->member[m];
	bool known = m < p->ndisks;
	bool same = known && !memcmp(p->sb->member[m].uuid, nm->uuid, POOL_UUID_LEN);

	if (same && p->sb->member[m].state == nm->state)
		return; /* nothing recorded about it changed: keep what we see */
	if (!same) {	/* added or replaced by another node */
		memset(d, 0, sizeof(*d));
		snprintf(d->path, sizeof(d->path), "%s", nm->path);
		struct stat st;
		if (stat(d->path, &st) == 0)
			d->dev = st.st_dev;
	}
	d->state = disk_state_of(nm->state);
	d->generation = nb->generation;
	if (d->state == POOL_DISK_HEALTHY)
		d->msg[0] = '\0';
	else {
		char msg[sizeof(d->msg)];
		snprintf(msg, sizeof(msg), "%.400s: recorded %s in the pool by another node",
			 d->path, pool_disk_state_name(d->state));
		memcpy(d->msg, msg, sizeof(msg));
	}
}

int pool_catalog_reload(struct pool *p, bool *changed, char *err, size_t errlen)
{
	struct pool_sb *cur = malloc(sizeof(*cur)), *best = malloc(sizeof(*best));
	char why[POOL_MSG_MAX];
	int rc = 0;

	*changed = false;
	if (!cur || !best) {
		free(cur);
		free(best);
		snprintf(err, errlen, "pool '%s': out of memory", p->sb->pool_name);
		return -ENOMEM;
	}
	best->generation = 0;
	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (!pool_disk_in_service(p, i))
			continue;
		if (pool_sb_read(p->disk[i].path, cur, why, sizeof(why)) < 0)
			continue; /* the health watcher judges unreadable disks */
		if (memcmp(cur->pool_uuid, p->sb->pool_uuid, POOL_UUID_LEN) ||
		    cur->generation <= best->generation)
			continue;
		*best = *cur;
	}
	if (best->generation > p->sb->generation) {
		if (best->nmembers < p->ndisks) {
			snprintf(err, errlen,
				 "pool '%s': generation %llu on disk has %u members, fewer than "
				 "the %u known here",
				 p->sb->pool_name, (unsigned long long)best->generation,
				 best->nmembers, p->ndisks);
			rc = -EUCLEAN;
		} else {
			for (uint32_t m = 0; m < best->nmembers; m++)
				adopt_member(p, best, m);
			for (uint32_t m = 0; m < p->ndisks; m++)
				if (pool_disk_in_service(p, m))
					p->disk[m].generation = best->generation;
			p->ndisks = best->nmembers;
			*p->sb = *best;
			*changed = true;
		}
	}
	free(cur);
	free(best);
	return rc;
}

uint64_t pool_catalog_stamp(const struct pool *p)
{
	char path[POOL_PATH_MAX + sizeof(POOL_SB_FILE) + 1];
	uint64_t h = 1469598103934665603ull; /* FNV-1a over (ino, mtime) */

	for (uint32_t i = 0; i < p->ndisks; i++) {
		struct stat st;
		uint64_t parts[3] = {i, 0, 0};
		if (!pool_disk_in_service(p, i))
			continue;
		snprintf(path, sizeof(path), "%s/%s", p->disk[i].path, POOL_SB_FILE);
		if (stat(path, &st) == 0) {
			parts[1] = st.st_ino;
			parts[2] = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + st.st_mtim.tv_nsec;
		} else {
			parts[1] = (uint64_t)mono_ms(); /* unreadable: "changed" */
		}
		for (size_t b = 0; b < sizeof(parts); b++) {
			h ^= ((const uint8_t *)parts)[b];
			h *= 1099511628211ull;
		}
	}
	return h;
}
