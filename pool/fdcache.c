/*
 * fdcache.c -- chunk files and the store's descriptor cache.
 *
 * Every chunk I/O of the store needs two descriptors: the chunk file of a
 * (file, position) on its disk and, with integrity on, its checksum
 * sidecar.  Opening them per request would cost two path walks per I/O,
 * so they are cached in a sharded, bounded table with clock eviction.  An
 * entry is referenced while a request uses it (struct chunk_ref), so
 * eviction, pool_store_remove or a disk replacement never closes a
 * descriptor under an I/O: an unhashed entry is closed at its last
 * release.  Files are opened lazily and only write paths create them, so
 * a read of a never-written position is zeros at no cost on disk.
 *
 * O_DIRECT chunk files are also grown ahead of the data here
 * (store_chunk_reserve), because extending O_DIRECT writes are
 * synchronous on ext4.
 */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool/store_priv.h"

/* ---- chunk files ----------------------------------------------------------- */

int store_chunk_path(const struct pool_store *s, uint32_t disk, uint64_t id, uint32_t pos, int crc,
		     char *buf, size_t n)
{
	if (!s->disk[disk].dir)
		return -EIO;
	int len = snprintf(buf, n, "%s/%02x/%016" PRIx64 ".%u%s", s->disk[disk].dir,
			   (unsigned)(id % 256), id, pos, crc ? ".crc" : "");

	return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

/* open(2) that makes the hash subdirectory on first use when creating. */
int store_open_mkdir(const char *path, int flags)
{
	int fd = open(path, flags, 0600);

	if (fd < 0 && errno == ENOENT && (flags & O_CREAT)) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", path);
		char *slash = strrchr(dir, '/');
		assert(slash);
		*slash = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return -errno;
		fd = open(path, flags, 0600);
	}
	return fd < 0 ? -errno : fd;
}

/* Open the sidecar; -ENOENT is "none yet" when not creating. */
static int open_crc(const struct pool_store *s, uint32_t disk, uint64_t id, uint32_t pos,
		    int create)
{
	char path[PATH_MAX];
	int rc = store_chunk_path(s, disk, id, pos, 1, path, sizeof(path));

	if (rc < 0)
		return rc;
	return store_open_mkdir(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0));
}

/* Open a chunk (and its sidecar with integrity).  -ENOENT if it does not
 * exist and create is 0. */
static int open_chunk(const struct pool_store *s, uint32_t disk, uint64_t id, uint32_t pos,
		      int create, int *fd, int *crcfd)
{
	char path[PATH_MAX];
	int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
	int rc = store_chunk_path(s, disk, id, pos, 0, path, sizeof(path));

	if (rc < 0)
		return rc;
	if (s->disk[disk].direct)
		flags |= O_DIRECT;
	*fd = store_open_mkdir(path, flags);
	if (*fd < 0)
		return *fd;
	*crcfd = -1;
	if (s->integrity) {
		rc = open_crc(s, disk, id, pos, create);
		if (rc < 0 && rc != -ENOENT) {
			close(*fd);
			return rc;
		}
		*crcfd = rc < 0 ? -1 : rc;
	}
	return 0;
}

static void close_fds(int fd, int crcfd)
{
	if (fd >= 0)
		close(fd);
	if (crcfd >= 0)
		close(crcfd);
}

/* ---- descriptor cache ------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t key_hash(uint64_t id, uint32_t pos)
{
	return mix64(id * 64 + pos);
}

int store_fdcache_init(struct pool_store *s)
{
	struct rlimit rl;
	uint32_t total = FD_CACHE_MAX;

	/* Stay well inside the descriptor limit: half of it for the cache. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		uint64_t fit = rl.rlim_cur / 2 / (s->integrity ? 2 : 1);
		if (fit < total)
			total = fit < FD_CACHE_MIN ? FD_CACHE_MIN : (uint32_t)fit;
	}
	uint32_t per = total / FD_SHARDS; /* >= 1: FD_CACHE_MIN >= FD_SHARDS */
	uint32_t nb = 1;
	while (nb < per * 2)
		nb *= 2;

	for (uint32_t i = 0; i < FD_SHARDS; i++) {
		struct fd_shard *sh = &s->shard[i];
		pthread_mutex_init(&sh->mu, NULL);
		sh->cap = per;
		sh->nbucket = nb;
		sh->e = calloc(per, sizeof(*sh->e));
		sh->bucket = malloc(nb * sizeof(*sh->bucket));
		if (!sh->e || !sh->bucket)
			return -ENOMEM;
		for (uint32_t b = 0; b < nb; b++)
			sh->bucket[b] = -1;
		for (uint32_t j = 0; j < per; j++)
			sh->e[j].next = j + 1 < per ? (int32_t)(j + 1) : -1;
		sh->free = 0;
	}
	return 0;
}

void store_fdcache_free(struct pool_store *s)
{
	for (uint32_t i = 0; i < FD_SHARDS; i++) {
		struct fd_shard *sh = &s->shard[i];
		for (uint32_t j = 0; sh->e && j < sh->cap; j++)
			if (sh->e[j].used)
				close_fds(sh->e[j].fd, sh->e[j].crcfd);
		free(sh->e);
		free(sh->bucket);
		pthread_mutex_destroy(&sh->mu);
	}
}

static int32_t *bucket_of(struct fd_shard *sh, uint64_t id, uint32_t pos)
{
	return &sh->bucket[(key_hash(id, pos) / FD_SHARDS) & (sh->nbucket - 1)];
}

static struct fd_entry *shard_find(struct fd_shard *sh, uint64_t id, uint32_t pos, uint32_t disk)
{
	for (int32_t i = *bucket_of(sh, id, pos); i >= 0; i = sh->e[i].next) {
		struct fd_entry *e = &sh->e[i];
		if (e->id == id && e->pos == pos && e->disk == disk)
			return e;
	}
	return NULL;
}

static void shard_unhash(struct fd_shard *sh, struct fd_entry *e)
{
	int32_t idx = (int32_t)(e - sh->e);

	for (int32_t *link = bucket_of(sh, e->id, e->pos); *link >= 0; link = &sh->e[*link].next) {
		if (*link == idx) {
			*link = e->next;
			e->hashed = 0;
			return;
		}
	}
	assert(!"fd cache entry not in its chain");
}

static void shard_put_free(struct fd_shard *sh, struct fd_entry *e)
{
	e->used = 0;
	e->next = sh->free;
	sh->free = (int32_t)(e - sh->e);
}

/* A free slot, evicting an idle entry by clock if needed; its old
 * descriptors go to *victim for closing outside the lock.  NULL if every
 * entry is in use. */
static struct fd_entry *shard_alloc(struct fd_shard *sh, int victim[2])
{
	victim[0] = victim[1] = -1;
	if (sh->free < 0) {
		for (uint32_t tries = 0; tries < 2 * sh->cap; tries++) {
			struct fd_entry *e = &sh->e[sh->hand];
			sh->hand = (sh->hand + 1) % sh->cap;
			if (!e->used || e->ref > 0 || !e->hashed)
				continue;
			if (e->clock) {
				e->clock = 0;
				continue;
			}
			shard_unhash(sh, e);
			victim[0] = e->fd;
			victim[1] = e->crcfd;
			shard_put_free(sh, e);
			break;
		}
		if (sh->free < 0)
			return NULL;
	}
	struct fd_entry *e = &sh->e[sh->free];
	sh->free = e->next;
	return e;
}

static void shard_insert(struct fd_shard *sh, struct fd_entry *e, uint64_t id, uint32_t pos,
			 uint32_t disk, int fd, int crcfd)
{
	int32_t *b = bucket_of(sh, id, pos);

	*e = (struct fd_entry){.id = id,
			       .pos = pos,
			       .disk = disk,
			       .fd = fd,
			       .crcfd = crcfd,
			       .ref = 1,
			       .next = *b,
			       .used = 1,
			       .clock = 1,
			       .hashed = 1};
	*b = (int32_t)(e - sh->e);
}

static void ref_from_entry(struct chunk_ref *r, struct fd_entry *e)
{
	r->e = e;
	r->fd = e->fd;
	r->crcfd = e->crcfd;
}

/* A cached entry exists; with create and integrity it must have its
 * sidecar (rare: the chunk was first opened by a read).  Shard locked. */
static int entry_need_crc(const struct pool_store *s, struct fd_entry *e, int create)
{
	if (!create || !s->integrity || e->crcfd >= 0)
		return 0;
	int rc = open_crc(s, e->disk, e->id, e->pos, 1);
	if (rc < 0)
		return rc;
	e->crcfd = rc;
	return 0;
}

/* Hold the descriptors of position pos of file id on disk.  With create
 * the files are made if missing; without, a missing chunk gives fd -1. */
int store_chunk_get(struct pool_store *s, uint64_t id, uint32_t pos, uint32_t disk, int create,
		    struct chunk_ref *r)
{
	uint32_t si = (uint32_t)(key_hash(id, pos) % FD_SHARDS);
	struct fd_shard *sh = &s->shard[si];
	struct fd_entry *e;
	int fd, crcfd, rc, victim[2];

	r->shard = si;
	pthread_mutex_lock(&sh->mu);
	e = shard_find(sh, id, pos, disk);
	if (e) {
		rc = entry_need_crc(s, e, create);
		if (rc == 0) {
			e->ref++;
			e->clock = 1;
			ref_from_entry(r, e);
		}
		pthread_mutex_unlock(&sh->mu);
		return rc;
	}
	pthread_mutex_unlock(&sh->mu);

	/* Open outside the lock: path lookups must not serialise a shard. */
	rc = open_chunk(s, disk, id, pos, create, &fd, &crcfd);
	if (rc == -ENOENT && !create) {
		*r = (struct chunk_ref){.e = NULL, .fd = -1, .crcfd = -1, .shard = si};
		return 0;
	}
	if (rc < 0)
		return rc;

	pthread_mutex_lock(&sh->mu);
	e = shard_find(sh, id, pos, disk);
	if (e) { /* another thread opened it meanwhile: use theirs */
		rc = entry_need_crc(s, e, create);
		if (rc == 0) {
			e->ref++;
			ref_from_entry(r, e);
		}
		pthread_mutex_unlock(&sh->mu);
		close_fds(fd, crcfd);
		return rc;
	}
	e = shard_alloc(sh, victim);
	if (e) {
		shard_insert(sh, e, id, pos, disk, fd, crcfd);
		ref_from_entry(r, e);
	} else {
		*r = (struct chunk_ref){.e = NULL, .fd = fd, .crcfd = crcfd, .shard = si};
	}
	pthread_mutex_unlock(&sh->mu);
	if (!e)
		victim[0] = victim[1] = -1;
	close_fds(victim[0], victim[1]);
	return 0;
}

void store_chunk_put(struct pool_store *s, struct chunk_ref *r)
{
	struct fd_shard *sh = &s->shard[r->shard];
	struct fd_entry *e = r->e;
	int fd = -1, crcfd = -1;

	if (!e) {
		close_fds(r->fd, r->crcfd);
		return;
	}
	pthread_mutex_lock(&sh->mu);
	assert(e->used && e->ref > 0);
	if (--e->ref == 0 && !e->hashed) {
		fd = e->fd;
		crcfd = e->crcfd;
		shard_put_free(sh, e);
	}
	pthread_mutex_unlock(&sh->mu);
	close_fds(fd, crcfd);
}

/* Forget a chunk (its file is being removed).  In use: closed by the last
 * release instead. */
void store_chunk_drop(struct pool_store *s, uint64_t id, uint32_t pos, uint32_t disk)
{
	struct fd_shard *sh = &s->shard[key_hash(id, pos) % FD_SHARDS];
	int fd = -1, crcfd = -1;

	pthread_mutex_lock(&sh->mu);
	struct fd_entry *e = shard_find(sh, id, pos, disk);
	if (e) {
		shard_unhash(sh, e);
		if (e->ref == 0) {
			fd = e->fd;
			crcfd = e->crcfd;
			shard_put_free(sh, e);
		}
	}
	pthread_mutex_unlock(&sh->mu);
	close_fds(fd, crcfd);
}

/*
 * Make the chunk file at least `end` bytes long before an O_DIRECT write
 * up to there.  ext4 (and others) run an O_DIRECT write that extends the
 * file synchronously, inside io_submit, with a journalled size update
 * each time -- measured here at 4 to 10 times slower than a write below
 * the end of file, and erratic.  So the file is grown ahead, sparse, in
 * GROW_STEP steps; bytes past the data are holes and read as zeros, which
 * is what a chunk's unwritten space means anyway.
 *
 * Growing must never shrink a file another thread just grew, so every
 * size change (here and in truncate) is a fstat-compare-ftruncate under
 * one mutex.  The cached size only spares that lock when the file is
 * known to be long enough; if it is stale the worst case is an extending
 * write, which is slow but correct.
 */
void store_chunk_reserve(struct pool_store *s, struct chunk_ref *r, uint64_t end)
{
	struct stat st;

	if (r->e && end <= atomic_load_explicit(&r->e->size, memory_order_relaxed))
		return;
	pthread_mutex_lock(&s->size_mu);
	if (fstat(r->fd, &st) == 0) {
		uint64_t size = (uint64_t)st.st_size;
		if (size < end) {
			uint64_t want = (end + GROW_STEP - 1) / GROW_STEP * GROW_STEP;
			if (ftruncate(r->fd, (off_t)want) == 0)
				size = want; /* else: the write extends it, slowly */
		}
		if (r->e)
			atomic_store_explicit(&r->e->size, size, memory_order_relaxed);
	}
	pthread_mutex_unlock(&s->size_mu);
}

/* Forget every cached chunk of one disk (it is being replaced). */
void store_fdcache_drop_disk(struct pool_store *s, uint32_t disk)
{
	for (uint32_t i = 0; i < FD_SHARDS; i++) {
		struct fd_shard *sh = &s->shard[i];
		pthread_mutex_lock(&sh->mu);
		for (uint32_t j = 0; j < sh->cap; j++) {
			struct fd_entry *e = &sh->e[j];
			if (!e->used || !e->hashed || e->disk != disk)
				continue;
			shard_unhash(sh, e);
			if (e->ref == 0) {
				close_fds(e->fd, e->crcfd);
				shard_put_free(sh, e);
			}
		}
		pthread_mutex_unlock(&sh->mu);
	}
}
