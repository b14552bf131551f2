/*
 * inode.c -- the daemon's in-memory inode table.
 *
 * FUSE's low-level API hands inode numbers to the kernel and expects them
 * to stay valid until the kernel forgets them (lookup counts).  This table
 * holds one struct fs_inode per number the kernel or an open file holds,
 * in a hash of FS_ITABLE_SIZE buckets under one mutex (lookups are short;
 * the per-inode work happens outside it).
 *
 * Attributes of regular files are cached here and are authoritative while
 * cached: every write would otherwise cost a metadata transaction for the
 * new size and mtime.  A write marks the inode dirty; the flusher thread
 * writes all dirty inodes back in one transaction every flush_interval
 * seconds, and fsync, release and unmount write back at once.  So after a
 * daemon crash the metadata is at most flush_interval seconds behind,
 * except for files that were fsync'd.  Directories and symlinks are not
 * cached: the metadata store changes them inside namespace transactions,
 * and reading them from SQLite is cheap.
 *
 * An unlinked file keeps its inode (nlink 0, an "orphan" in the store)
 * until the kernel forgets it and the last open handle is released; then
 * its chunk files are removed and the inode purged.  A crash in between
 * leaves an orphan, which the next mount reaps (fs/volume.c).
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/fs.h"

static size_t bucket_of(uint64_t ino)
{
	uint64_t h = ino * 0x9E3779B97F4A7C15ull;
	return (size_t)(h >> 52) % FS_ITABLE_SIZE;
}

/* Caller holds itable_lock. */
static struct fs_inode *table_find(struct fs *fs, uint64_t ino)
{
	for (struct fs_inode *in = fs->itable[bucket_of(ino)]; in; in = in->hnext)
		if (in->ino == ino)
			return in;
	return NULL;
}

static void table_unlink(struct fs *fs, struct fs_inode *in)
{
	struct fs_inode **pp = &fs->itable[bucket_of(in->ino)];

	while (*pp != in)
		pp = &(*pp)->hnext;
	*pp = in->hnext;
}

static struct fs_inode *inode_new(struct fs_volume *v, const struct pool_inode *a)
{
	struct fs_inode *in = calloc(1, sizeof(*in));

	if (!in)
		return NULL;
	in->ino = fs_ino_make(v, a->ino);
	in->vol = v;
	in->attr = *a;
	pthread_mutex_init(&in->lock, NULL);
	pthread_rwlock_init(&in->io_lock, NULL);
	return in;
}

static void inode_free(struct fs_inode *in)
{
	pthread_mutex_destroy(&in->lock);
	pthread_rwlock_destroy(&in->io_lock);
	free(in);
}

#define RETIRED_SLOTS (sizeof(((struct fs *)0)->retired_at) / sizeof(uint64_t))

uint64_t fs_inode_epoch(struct fs *fs)
{
	pthread_mutex_lock(&fs->itable_lock);
	uint64_t e = fs->retired;
	pthread_mutex_unlock(&fs->itable_lock);
	return e;
}

/* Under the table lock: a retire of an inode hashing like ino wrote the
 * store back since `epoch` (so attributes read before may be older). */
static bool retired_since(const struct fs *fs, uint64_t ino, uint64_t epoch)
{
	return fs->retired_at[ino % RETIRED_SLOTS] > epoch;
}

struct fs_inode *fs_inode_install_read(struct fs *fs, struct fs_volume *v,
				       const struct pool_inode *a, uint64_t nlookup, uint64_t epoch)
{
	struct pool_inode cur = *a;
	struct fs_inode *fresh, *in;

	/* An inode not in the table was read from the store, perhaps before
	 * a retire wrote newer attributes back and freed it: installed, the
	 * older copy would be authoritative (a size gone back, then written
	 * back for good).  So read again; a few tries (each needs another
	 * such retire meanwhile), then the latest read. */
	for (int tries = 0;; tries++) {
		if (!(fresh = inode_new(v, &cur)))
			return NULL;
		pthread_mutex_lock(&fs->itable_lock);
		in = table_find(fs, fresh->ino);
		if (in || tries == 4 || !retired_since(fs, fresh->ino, epoch))
			break;
		epoch = fs->retired;
		pthread_mutex_unlock(&fs->itable_lock);
		inode_free(fresh);
		if (pool_meta_get(v->meta, a->ino, &cur) < 0)
			cur = *a; /* gone meanwhile: as it was (it is an orphan now) */
	}
	if (!in) {
		size_t b = bucket_of(fresh->ino);
		in = fresh;
		in->hnext = fs->itable[b];
		fs->itable[b] = in;
		fresh = NULL;
	}
	in->nlookup += nlookup;
	in->nref++;
	pthread_mutex_unlock(&fs->itable_lock);
	if (fresh)
		inode_free(fresh);
	return in;
}

struct fs_inode *fs_inode_install(struct fs *fs, struct fs_volume *v, const struct pool_inode *a,
				  uint64_t nlookup)
{
	return fs_inode_install_read(fs, v, a, nlookup, UINT64_MAX);
}

int fs_inode_get(struct fs *fs, uint64_t ino, uint64_t nlookup, struct fs_inode **out)
{
	struct fs_volume *v = fs_volume_by_id(fs, fs_ino_volid(ino));
	struct pool_inode a;
	int rc;

	pthread_mutex_lock(&fs->itable_lock);
	struct fs_inode *in = table_find(fs, ino);
	if (in) {
		in->nlookup += nlookup;
		in->nref++;
		pthread_mutex_unlock(&fs->itable_lock);
		*out = in;
		return 0;
	}
	pthread_mutex_unlock(&fs->itable_lock);

	if (!v)
		return -ENOENT;
	uint64_t epoch = fs_inode_epoch(fs);
	rc = pool_meta_get(v->meta, fs_ino_vino(ino), &a);
	if (rc < 0)
		return rc;
	*out = fs_inode_install_read(fs, v, &a, nlookup, epoch);
	return *out ? 0 : -ENOMEM;
}

struct fs_inode *fs_inode_peek(struct fs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itable_lock);
	struct fs_inode *in = table_find(fs, ino);
	if (in)
		in->nref++;
	pthread_mutex_unlock(&fs->itable_lock);
	return in;
}

int fs_inode_cached_size(struct fs *fs, uint64_t ino, uint64_t *size)
{
	int rc = -ENOENT;

	pthread_mutex_lock(&fs->itable_lock);
	struct fs_inode *in = table_find(fs, ino);
	if (in) {
		pthread_mutex_lock(&in->lock);
		*size = in->attr.size;
		pthread_mutex_unlock(&in->lock);
		rc = 0;
	}
	pthread_mutex_unlock(&fs->itable_lock);
	return rc;
}

void fs_file_map(const struct fs_inode *in, struct pool_file_map *map)
{
	map->id = in->attr.ino;
	map->npos = in->attr.npos;
	memcpy(map->disk, in->attr.disk, sizeof(map->disk));
}

/* Remove a file's data and its inode for good.  Called with no table
 * reference left, so nothing else can reach `a`. */
static void purge(struct fs_volume *v, const struct pool_inode *a)
{
	fs_empty_drop(v->fs, fs_ino_make(v, a->ino));
	if (fs_ckpt_holds(v, a->ino))
		return; /* a checkpoint still reads it; its last merge removes it */
	if (S_ISREG(a->mode) && a->npos > 0) {
		struct pool_file_map map = {.id = a->ino, .npos = a->npos};
		memcpy(map.disk, a->disk, sizeof(map.disk));
		int rc = pool_store_remove(v->store, &map);
		if (rc < 0)
			fprintf(stderr, "spacefs: volume %s: removing data of inode %llu: %s\n",
				v->name, (unsigned long long)a->ino, strerror(-rc));
	}
	int rc = pool_meta_purge(v->meta, a->ino);
	if (rc < 0)
		fprintf(stderr, "spacefs: volume %s: purging inode %llu: %s\n", v->name,
			(unsigned long long)a->ino, strerror(-rc));
}

static int flush_inode(struct fs *fs, struct fs_inode *in, bool retire);

/* Write back or purge an inode nobody references any more: 0 (done, or
 * nothing to do), 1 (not this node's to write: the volume's owner is
 * elsewhere), or the write-back's -errno. */
static int retire_work(struct fs *fs, struct fs_inode *in)
{
	int rc = 0;

	/* Only the volume's owner writes it (several nodes, fs/node.c). */
	if (!fs_vol_hold_local(in->vol))
		return 1;
	pthread_mutex_lock(&in->lock);
	bool unlinked = in->attr.nlink == 0 && !in->purged;
	pthread_mutex_unlock(&in->lock);
	if (unlinked) {
		purge(in->vol, &in->attr);
		pthread_mutex_lock(&in->lock);
		in->purged = true;
		pthread_mutex_unlock(&in->lock);
	} else {
		/* Through wb_lock even when clean: a flusher batch that took
		 * this inode's copy may still be committing it, and freed
		 * before it ends, the inode would leave a lookup the store's
		 * older row. */
		rc = flush_inode(fs, in, true);
		if (rc < 0)
			fprintf(stderr,
				"spacefs: volume %s: inode %llu: attribute write-back failed (%s); "
				"kept for the next write-back\n",
				in->vol->name, (unsigned long long)in->attr.ino, strerror(-rc));
	}
	fs_vol_leave(in->vol);
	return rc;
}

/* Under the table lock: what retire_work did is out of date (a holder
 * came and went while it ran: a write made the inode dirty again, an
 * unlink took its last link after it looked). */
static bool retire_again(struct fs_inode *in)
{
	pthread_mutex_lock(&in->lock);
	bool again = in->dirty || (in->attr.nlink == 0 && !in->purged);
	pthread_mutex_unlock(&in->lock);
	return again;
}

static bool unused(const struct fs_inode *in)
{
	return in->nlookup == 0 && in->nopen == 0 && in->nremote == 0 && in->nref == 0;
}

/* Under the table lock: if nothing holds `in`, the caller retires it.  It
 * stays in the table while its attributes are written back, so a lookup
 * racing with the write-back finds (and revives) it instead of loading
 * the store's older copy. */
static struct fs_inode *drop_if_unused(struct fs *fs, struct fs_inode *in)
{
	(void)fs;
	if (!unused(in) || in->retiring)
		return NULL;
	in->retiring = true;
	return in;
}

/* Retire an inode claimed by drop_if_unused, then free it unless it was
 * revived meanwhile (its new holder retires it in turn).  A holder that
 * came and went during the write-back found it retiring and left it to
 * this one (drop_if_unused): so once unused again, it is written back
 * again if that holder changed it, and only then freed.  One whose
 * write-back failed stays in the table, dirty, for the flusher's next
 * try (freed, its size would be lost; a takeover's reload that retires
 * it under the volume's exclusive ownership lock finds it not local,
 * fs_vol_hold_local, and frees it then: the store is reloaded anyway).
 * Every free counts as a retire for fs_inode_install_read: a lookup that
 * read the store before it re-reads. */
static void inode_retire(struct fs *fs, struct fs_inode *in)
{
	for (;;) {
		int rc = retire_work(fs, in);
		pthread_mutex_lock(&fs->itable_lock);
		bool gone = unused(in);
		if (gone && rc == 0 && retire_again(in)) {
			pthread_mutex_unlock(&fs->itable_lock);
			continue; /* still ours: `retiring` stays set */
		}
		in->retiring = false;
		gone = gone && rc >= 0;
		if (gone) {
			table_unlink(fs, in);
			fs->retired++;
			fs->retired_at[in->ino % RETIRED_SLOTS] = fs->retired;
		}
		pthread_mutex_unlock(&fs->itable_lock);
		if (gone)
			inode_free(in);
		return;
	}
}

void fs_inode_put(struct fs *fs, struct fs_inode *in)
{
	pthread_mutex_lock(&fs->itable_lock);
	assert(in->nref > 0);
	in->nref--;
	struct fs_inode *gone = drop_if_unused(fs, in);
	pthread_mutex_unlock(&fs->itable_lock);
	if (gone)
		inode_retire(fs, gone);
}

void fs_inode_forget(struct fs *fs, struct fs_inode *in, uint64_t n)
{
	pthread_mutex_lock(&fs->itable_lock);
	assert(in->nlookup >= n);
	in->nlookup = in->nlookup >= n ? in->nlookup - n : 0;
	struct fs_inode *gone = drop_if_unused(fs, in);
	pthread_mutex_unlock(&fs->itable_lock);
	if (gone)
		inode_retire(fs, gone);
}

void fs_inode_open(struct fs *fs, struct fs_inode *in)
{
	pthread_mutex_lock(&fs->itable_lock);
	in->nopen++;
	pthread_mutex_unlock(&fs->itable_lock);
}

void fs_inode_release(struct fs *fs, struct fs_inode *in)
{
	pthread_mutex_lock(&fs->itable_lock);
	assert(in->nopen > 0);
	in->nopen--;
	struct fs_inode *gone = drop_if_unused(fs, in);
	pthread_mutex_unlock(&fs->itable_lock);
	if (gone)
		inode_retire(fs, gone);
}

void fs_inode_open_remote(struct fs *fs, struct fs_inode *in)
{
	pthread_mutex_lock(&fs->itable_lock);
	in->nremote++;
	pthread_mutex_unlock(&fs->itable_lock);
}

void fs_inode_release_remote(struct fs *fs, struct fs_inode *in)
{
	struct fs_inode *gone = NULL;

	pthread_mutex_lock(&fs->itable_lock);
	if (in->nremote > 0) { /* else a previous owner counted the open */
		in->nremote--;
		gone = drop_if_unused(fs, in);
	}
	pthread_mutex_unlock(&fs->itable_lock);
	if (gone)
		inode_retire(fs, gone);
}

int fs_inode_attr(struct fs *fs, struct fs_inode *in, struct pool_inode *out)
{
	(void)fs;
	if (S_ISREG(in->attr.mode)) {
		pthread_mutex_lock(&in->lock);
		*out = in->attr;
		pthread_mutex_unlock(&in->lock);
		return 0;
	}
	int rc = pool_meta_get(in->vol->meta, in->attr.ino, out);
	if (rc == 0) {
		pthread_mutex_lock(&in->lock);
		in->attr = *out;
		pthread_mutex_unlock(&in->lock);
	}
	return rc;
}

void fs_inode_refresh_links(struct fs *fs, struct fs_volume *v, const struct pool_inode *a)
{
	struct fs_inode *in = fs_inode_peek(fs, fs_ino_make(v, a->ino));

	if (!in)
		return;
	pthread_mutex_lock(&in->lock);
	in->attr.nlink = a->nlink;
	in->attr.ctime_ns = a->ctime_ns;
	pthread_mutex_unlock(&in->lock);
	fs_inode_put(fs, in);
}

void fs_inode_reap_if_unused(struct fs *fs, struct fs_volume *v, const struct pool_inode *a)
{
	if (a->ino == 0 || a->nlink > 0)
		return;
	/* Referenced inodes are purged when their last reference goes; an
	 * entry nobody references (left by a redirected request) goes now. */
	pthread_mutex_lock(&fs->itable_lock);
	struct fs_inode *in = table_find(fs, fs_ino_make(v, a->ino));
	struct fs_inode *gone = in ? drop_if_unused(fs, in) : NULL;
	pthread_mutex_unlock(&fs->itable_lock);
	if (gone) {
		pthread_mutex_lock(&gone->lock);
		gone->attr.nlink = 0;
		pthread_mutex_unlock(&gone->lock);
		inode_retire(fs, gone);
	} else if (!in) {
		purge(v, a);
	}
}

int fs_inode_touch(struct fs *fs, struct fs_volume *v, uint64_t vino, bool mtime)
{
	struct fs_inode *in = fs_inode_peek(fs, fs_ino_make(v, vino));
	int64_t now = fs_now_ns();
	struct pool_inode a;
	int rc;

	if (in && S_ISREG(in->attr.mode)) {
		pthread_mutex_lock(&in->lock);
		in->attr.ctime_ns = now;
		if (mtime)
			in->attr.mtime_ns = now;
		in->dirty = true;
		pthread_mutex_unlock(&in->lock);
		fs_inode_put(fs, in);
		return 0;
	}
	if (in)
		fs_inode_put(fs, in);
	rc = pool_meta_get(v->meta, vino, &a);
	if (rc < 0)
		return rc;
	a.ctime_ns = now;
	if (mtime)
		a.mtime_ns = now;
	return pool_meta_setattr(v->meta, &a);
}

/* Write-backs of one volume hold v->wb_lock from taking the copy to the
 * commit: two write-backs of one inode (the flusher's and an fsync's) must
 * reach the store in the order they copied, or an older size could land
 * after a newer, fsync'd one. */
static int flush_inode(struct fs *fs, struct fs_inode *in, bool retire)
{
	struct pool_inode a;
	int rc = 0;

	(void)fs;
	pthread_mutex_lock(&in->vol->wb_lock);
	pthread_mutex_lock(&in->lock);
	bool todo = in->dirty && in->attr.nlink > 0;
	a = in->attr;
	in->dirty = false;
	pthread_mutex_unlock(&in->lock);
	if (todo && retire && in->vol->fault.kind == POOL_FAULT_IRETIRE)
		usleep((useconds_t)(in->vol->fault.at * 1000)); /* tests: a slow store */
	if (todo)
		rc = pool_meta_setattr(in->vol->meta, &a);
	if (rc < 0) {
		pthread_mutex_lock(&in->lock);
		in->dirty = true;
		pthread_mutex_unlock(&in->lock);
	}
	pthread_mutex_unlock(&in->vol->wb_lock);
	return rc;
}

int fs_inode_flush(struct fs *fs, struct fs_inode *in)
{
	return flush_inode(fs, in, false);
}

/* A failed batch: mark its inodes dirty again (those still cached), with
 * the volume's wb_lock still held, so that an fsync waiting for it cannot
 * find them clean and answer without writing them. */
static void redirty(struct fs *fs, struct fs_volume *v, const struct pool_inode *batch, size_t n)
{
	pthread_mutex_lock(&fs->itable_lock);
	for (size_t i = 0; i < n; i++) {
		struct fs_inode *in = table_find(fs, fs_ino_make(v, batch[i].ino));
		if (!in)
			continue;
		pthread_mutex_lock(&in->lock);
		in->dirty = true;
		pthread_mutex_unlock(&in->lock);
	}
	pthread_mutex_unlock(&fs->itable_lock);
}

/* Collect dirty inodes of one volume into a batch under the table lock,
 * then write them in one transaction.  Inodes stay in the table while the
 * table lock is held, and we copy their attributes, so the batch needs no
 * references. */
int fs_inode_flush_volume(struct fs *fs, struct fs_volume *v)
{
	size_t cap = 64, n = 0;
	struct pool_inode *batch = malloc(cap * sizeof(*batch));
	int rc = 0;

	if (!batch)
		return -ENOMEM;
	pthread_mutex_lock(&v->wb_lock);
	pthread_mutex_lock(&fs->itable_lock);
	for (size_t b = 0; b < FS_ITABLE_SIZE; b++) {
		for (struct fs_inode *in = fs->itable[b]; in; in = in->hnext) {
			if (in->vol != v)
				continue;
			pthread_mutex_lock(&in->lock);
			if (in->dirty && in->attr.nlink > 0) {
				if (n == cap) {
					struct pool_inode *nb =
					    realloc(batch, 2 * cap * sizeof(*nb));
					if (!nb) {
						pthread_mutex_unlock(&in->lock);
						goto out;
					}
					batch = nb;
					cap *= 2;
				}
				batch[n++] = in->attr;
				in->dirty = false;
			}
			pthread_mutex_unlock(&in->lock);
		}
	}
out:
	pthread_mutex_unlock(&fs->itable_lock);
	if (n > 0 && v->fault.kind == POOL_FAULT_IRETIRE)
		usleep((useconds_t)(v->fault.at * 1000)); /* tests: a slow store */
	if (n > 0)
		rc = pool_meta_setattr_many(v->meta, batch, n);
	if (rc < 0)
		redirty(fs, v, batch, n);
	pthread_mutex_unlock(&v->wb_lock);
	if (rc < 0)
		fprintf(stderr,
			"spacefs: volume %s: attribute write-back of %zu inodes: %s "
			"(kept dirty, retried at the next write-back)\n",
			v->name, n, strerror(-rc));
	free(batch);
	return rc;
}

int fs_inode_flush_all(struct fs *fs)
{
	int rc = 0;

	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	for (uint32_t i = 0; i < n; i++) {
		if (!fs_vol_enter_local(fs->vol[i]))
			continue;
		int r = fs_inode_flush_volume(fs, fs->vol[i]);
		fs_vol_leave(fs->vol[i]);
		if (r < 0 && rc == 0)
			rc = r;
	}
	return rc;
}

/* This node just became the volume's owner: cached attributes (copies
 * of what the previous owner answered) are replaced by the store's. */
void fs_inode_reload_volume(struct fs *fs, struct fs_volume *v)
{
	size_t n = 0, cap = 0;
	uint64_t *inos = NULL;

	pthread_mutex_lock(&fs->itable_lock);
	for (size_t b = 0; b < FS_ITABLE_SIZE; b++)
		for (struct fs_inode *in = fs->itable[b]; in; in = in->hnext) {
			if (in->vol != v)
				continue;
			if (n == cap) {
				size_t nc = cap ? 2 * cap : 64;
				uint64_t *p = realloc(inos, nc * sizeof(*p));
				if (!p)
					break;
				inos = p;
				cap = nc;
			}
			inos[n++] = in->ino;
		}
	pthread_mutex_unlock(&fs->itable_lock);
	for (size_t i = 0; i < n; i++) {
		struct pool_inode a;
		struct fs_inode *in;
		if (pool_meta_get(v->meta, fs_ino_vino(inos[i]), &a) < 0 ||
		    !(in = fs_inode_peek(fs, inos[i])))
			continue;
		pthread_mutex_lock(&in->lock);
		in->attr = a;
		in->dirty = false;
		pthread_mutex_unlock(&in->lock);
		fs_inode_put(fs, in);
	}
	free(inos);
}

/* ---- files known to hold no blocks ----------------------------------------
 *
 * ls -l of a directory of new, empty files would otherwise stat() every
 * position's chunk file of every entry (six path walks per file on a
 * mirror 2 volume of six disks), which was most of the daemon's time in
 * the listing.  A file created here has no chunk file until something
 * writes, reserves or cuts it, and every such call goes through ops.c,
 * which drops the file from the set first; background jobs (scrub,
 * rebuild, resync) only touch stripes a write made.  Only with one node:
 * with several, other nodes write through fs/serve.c.  Bounded: past
 * EMPTY_MAX files nothing more is noted (their blocks are counted on disk
 * as before).
 */
#define EMPTY_FREE 0
#define EMPTY_GONE 1
#define EMPTY_MAX  (1u << 22)

static size_t empty_home(uint64_t ino, size_t cap)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

/* Slot of `ino`, or of the free slot where it would go; lock held. */
static size_t empty_find(const struct fs_empty_set *e, uint64_t ino, bool *found)
{
	size_t i = empty_home(ino, e->cap), gone = SIZE_MAX;

	for (;; i = (i + 1) & (e->cap - 1)) {
		if (e->slot[i] == ino) {
			*found = true;
			return i;
		}
		if (e->slot[i] == EMPTY_GONE && gone == SIZE_MAX)
			gone = i;
		if (e->slot[i] == EMPTY_FREE) {
			*found = false;
			return gone != SIZE_MAX ? gone : i;
		}
	}
}

/* Room for one more: rehash into a table twice the live count (at least
 * 1024 slots), which also clears deleted slots.  False: no memory. */
static bool empty_grow(struct fs_empty_set *e)
{
	if (e->cap && (e->used + 1) * 2 <= e->cap)
		return true;
	size_t cap = 1024;
	while (cap < (e->live + 1) * 4)
		cap *= 2;
	uint64_t *slot = calloc(cap, sizeof(*slot));
	if (!slot)
		return false;
	struct fs_empty_set old = *e;
	e->slot = slot;
	e->cap = cap;
	e->used = 0;
	for (size_t i = 0; i < old.cap; i++) {
		if (old.slot[i] > EMPTY_GONE) {
			bool found;
			e->slot[empty_find(e, old.slot[i], &found)] = old.slot[i];
			e->used++;
		}
	}
	free(old.slot);
	return true;
}

void fs_empty_note(struct fs *fs, uint64_t ino)
{
	struct fs_empty_set *e = &fs->empty;
	bool found;

	if (fs->node || ino <= EMPTY_GONE)
		return;
	pthread_mutex_lock(&e->lock);
	if (e->live < EMPTY_MAX && empty_grow(e)) {
		size_t i = empty_find(e, ino, &found);
		if (!found) {
			e->used += e->slot[i] == EMPTY_FREE;
			e->slot[i] = ino;
			e->live++;
		}
	}
	pthread_mutex_unlock(&e->lock);
}

bool fs_empty_known(struct fs *fs, uint64_t ino)
{
	struct fs_empty_set *e = &fs->empty;
	bool found = false;

	pthread_mutex_lock(&e->lock);
	if (e->live && ino > EMPTY_GONE)
		empty_find(e, ino, &found);
	pthread_mutex_unlock(&e->lock);
	return found;
}

void fs_empty_drop(struct fs *fs, uint64_t ino)
{
	struct fs_empty_set *e = &fs->empty;
	bool found = false;

	pthread_mutex_lock(&e->lock);
	if (e->live && ino > EMPTY_GONE) {
		size_t i = empty_find(e, ino, &found);
		if (found) {
			e->slot[i] = EMPTY_GONE;
			e->live--;
		}
	}
	pthread_mutex_unlock(&e->lock);
}

void fs_inode_table_clear(struct fs *fs)
{
	fs_inode_flush_all(fs);
	pthread_mutex_lock(&fs->empty.lock);
	free(fs->empty.slot);
	fs->empty.slot = NULL;
	fs->empty.cap = fs->empty.used = fs->empty.live = 0;
	pthread_mutex_unlock(&fs->empty.lock);
	for (size_t b = 0; b < FS_ITABLE_SIZE; b++) {
		while (fs->itable[b]) {
			struct fs_inode *in = fs->itable[b];
			fs->itable[b] = in->hnext;
			retire_work(fs, in);
			inode_free(in);
		}
	}
}

/* Nanoseconds since the epoch to a timespec, times before 1970 included
 * (tv_nsec must stay in 0..999999999, so divide rounding down). */
static struct timespec ns_to_ts(int64_t ns)
{
	int64_t sec = ns / 1000000000, rem = ns % 1000000000;

	if (rem < 0) {
		rem += 1000000000;
		sec -= 1;
	}
	return (struct timespec){.tv_sec = (time_t)sec, .tv_nsec = (long)rem};
}

void fs_attr_to_stat(const struct pool_inode *a, uint64_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_rdev = (dev_t)a->rdev;
	st->st_blksize = 65536;
	st->st_atim = ns_to_ts(a->atime_ns);
	st->st_mtim = ns_to_ts(a->mtime_ns);
	st->st_ctim = ns_to_ts(a->ctime_ns);
}

/* ---- the flusher thread ---- */

static void *flusher_main(void *arg)
{
	struct fs *fs = arg;

	pthread_mutex_lock(&fs->flush_lock);
	while (!fs->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += fs->opt.flush_interval;
		pthread_cond_timedwait(&fs->flush_cond, &fs->flush_lock, &ts);
		if (fs->stopping)
			break;
		pthread_mutex_unlock(&fs->flush_lock);
		fs_inode_flush_all(fs);
		pthread_mutex_lock(&fs->flush_lock);
	}
	pthread_mutex_unlock(&fs->flush_lock);
	return NULL;
}

int fs_flusher_start(struct fs *fs)
{
	return -pthread_create(&fs->flusher, NULL, flusher_main, fs);
}

void fs_flusher_stop(struct fs *fs)
{
	pthread_mutex_lock(&fs->flush_lock);
	fs->stopping = true;
	pthread_cond_signal(&fs->flush_cond);
	pthread_mutex_unlock(&fs->flush_lock);
	pthread_join(fs->flusher, NULL);
}
