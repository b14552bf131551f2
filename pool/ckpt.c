/*
 * ckpt.c -- granule maps of checkpoint differencing data, and the log
 * that keeps them (pool/ckpt.h has the format).
 *
 * Why a log of our own and not tables in the metadata store: a record is
 * written on the first write to each granule after a checkpoint, on the
 * data path, and must be durable against kill -9 before that write is
 * answered.  An append of ~40 bytes to a file per metadata disk does that
 * with one write(2) each; a SQLite transaction would cost a commit on
 * every replica and contend with namespace changes.  The log stays small:
 * it is rewritten compactly at every mount, and emptied when the last
 * checkpoint of the volume is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout/layout.h"
#include "pool/ckpt.h"
#include "pool/pool.h"

#define LOG_MAGIC 0x4b435053u /* "SPCK" */
#define LOG_NAME  "ckpt"
#define HDR_LEN	  20u
#define MAX_REC	  (1u << 20)

/* ---- maps ---- */

static int grow(struct pool_ckpt_map *m, uint64_t want);

int pool_ckpt_map_get(const struct pool_ckpt_map *m, uint64_t g)
{
	if (g >= m->ngran)
		return POOL_CKPT_NONE;
	/* atomic: readers under a file's shared lock race one setter */
	return (__atomic_load_n(&m->bits[g / 4], __ATOMIC_ACQUIRE) >> ((g % 4) * 2)) & 3;
}

int pool_ckpt_map_reserve(struct pool_ckpt_map *m, uint64_t n)
{
	return grow(m, n);
}

static int grow(struct pool_ckpt_map *m, uint64_t want)
{
	if (want <= m->ngran)
		return 0;
	if (want > POOL_CKPT_MAX_GRANULES)
		return -EFBIG;
	uint64_t n = m->ngran ? m->ngran : POOL_CKPT_LEAF;
	while (n < want)
		n *= 2;
	uint8_t *b = realloc(m->bits, (size_t)(n / 4));
	if (!b)
		return -ENOMEM;
	memset(b + m->ngran / 4, 0, (size_t)((n - m->ngran) / 4));
	m->bits = b;
	/* n and ngran are multiples of the leaf (powers of two from it) */
	uint16_t **l = realloc(m->masks, (size_t)(n / POOL_CKPT_LEAF) * sizeof(*l));
	if (!l)
		return -ENOMEM; /* bits grown, ngran not: the next grow redoes it */
	memset(l + m->ngran / POOL_CKPT_LEAF, 0,
	       (size_t)((n - m->ngran) / POOL_CKPT_LEAF) * sizeof(*l));
	m->masks = l;
	uint32_t ***sl = realloc(m->slots, (size_t)(n / POOL_CKPT_LEAF) * sizeof(*sl));
	if (!sl)
		return -ENOMEM;
	memset(sl + m->ngran / POOL_CKPT_LEAF, 0,
	       (size_t)((n - m->ngran) / POOL_CKPT_LEAF) * sizeof(*sl));
	m->slots = sl;
	m->ngran = n;
	return 0;
}

/* Granule g's slot entries, or NULL if none of its blocks has had one. */
static uint32_t *slots_of(const struct pool_ckpt_map *m, uint64_t g)
{
	if (g >= m->ngran)
		return NULL;
	uint32_t **leaf = __atomic_load_n(&m->slots[g / POOL_CKPT_LEAF], __ATOMIC_ACQUIRE);
	return leaf ? __atomic_load_n(&leaf[g % POOL_CKPT_LEAF], __ATOMIC_ACQUIRE) : NULL;
}

/* Clear granule g's slots (its blocks are at their offsets, or gone).
 * The entries stay allocated: a getter may be reading them. */
static void clear_slots(struct pool_ckpt_map *m, uint64_t g)
{
	uint32_t *e = slots_of(m, g);

	for (unsigned b = 0; e && b < POOL_CKPT_BLOCKS; b++)
		__atomic_store_n(&e[b], 0u, __ATOMIC_RELEASE);
}

static void put_state(struct pool_ckpt_map *m, uint64_t i, int state)
{
	unsigned sh = (unsigned)(i % 4) * 2;
	__atomic_store_n(&m->bits[i / 4],
			 (uint8_t)((m->bits[i / 4] & ~(3u << sh)) | ((unsigned)state << sh)),
			 __ATOMIC_RELEASE);
}

static uint16_t *mask_of(const struct pool_ckpt_map *m, uint64_t g)
{
	uint16_t *leaf = __atomic_load_n(&m->masks[g / POOL_CKPT_LEAF], __ATOMIC_ACQUIRE);
	return leaf ? &leaf[g % POOL_CKPT_LEAF] : NULL;
}

int pool_ckpt_map_set(struct pool_ckpt_map *m, uint64_t g, uint64_t n, int state)
{
	if (state < POOL_CKPT_NONE || state > POOL_CKPT_ZERO)
		return -EINVAL;
	if (state != POOL_CKPT_NONE) {
		int rc = grow(m, g + n);
		if (rc)
			return rc;
	}
	for (uint64_t i = g; i < g + n && i < m->ngran; i++) {
		int old = pool_ckpt_map_get(m, i);
		put_state(m, i, state);
		/* a PART granule turned DATA keeps its mask (a getter that saw
		 * PART may read it still); NONE and ZERO start the next PART
		 * from no blocks.  Those two come under the file's exclusive
		 * lock, or at load. */
		uint16_t *mk = state != POOL_CKPT_DATA ? mask_of(m, i) : NULL;
		if (mk)
			__atomic_store_n(mk, 0, __ATOMIC_RELEASE);
		/* DATA, ZERO, NONE: every block at its offset or gone.  After
		 * the state: a getter that still sees PART reads the slot or,
		 * cleared, the offset, both holding the granule's data then. */
		clear_slots(m, i);
		if (old == POOL_CKPT_NONE && state != POOL_CKPT_NONE)
			m->ndata++;
		else if (old != POOL_CKPT_NONE && state == POOL_CKPT_NONE)
			m->ndata--;
	}
	return 0;
}

unsigned pool_ckpt_map_blocks(const struct pool_ckpt_map *m, uint64_t g)
{
	int st = pool_ckpt_map_get(m, g);

	if (st == POOL_CKPT_DATA)
		return POOL_CKPT_FULL;
	if (st != POOL_CKPT_PART)
		return 0;
	const uint16_t *mk = mask_of(m, g);
	return mk ? __atomic_load_n(mk, __ATOMIC_ACQUIRE) : 0;
}

int pool_ckpt_map_mark(struct pool_ckpt_map *m, uint64_t g, unsigned mask)
{
	return pool_ckpt_map_mark_slots(m, g, mask, POOL_CKPT_NOSLOT);
}

uint32_t pool_ckpt_map_slot(const struct pool_ckpt_map *m, uint64_t g, unsigned b)
{
	const uint32_t *e = slots_of(m, g);
	uint32_t v = e && b < POOL_CKPT_BLOCKS ? __atomic_load_n(&e[b], __ATOMIC_ACQUIRE) : 0;

	return v ? v - 1 : POOL_CKPT_NOSLOT;
}

bool pool_ckpt_map_slotted(const struct pool_ckpt_map *m, uint64_t g)
{
	const uint32_t *e = slots_of(m, g);

	for (unsigned b = 0; e && b < POOL_CKPT_BLOCKS; b++)
		if (__atomic_load_n(&e[b], __ATOMIC_ACQUIRE))
			return true;
	return false;
}

/* Give the blocks `mask` of granule g consecutive slots from `slot`. */
static int put_slots(struct pool_ckpt_map *m, uint64_t g, unsigned mask, uint32_t slot)
{
	uint32_t ***leafp = &m->slots[g / POOL_CKPT_LEAF];
	if (!*leafp) {
		uint32_t **leaf = calloc(POOL_CKPT_LEAF, sizeof(*leaf));
		if (!leaf)
			return -ENOMEM;
		__atomic_store_n(leafp, leaf, __ATOMIC_RELEASE);
	}
	uint32_t **ep = &(*leafp)[g % POOL_CKPT_LEAF];
	if (!*ep) {
		uint32_t *e = calloc(POOL_CKPT_BLOCKS, sizeof(*e));
		if (!e)
			return -ENOMEM;
		__atomic_store_n(ep, e, __ATOMIC_RELEASE);
	}
	for (unsigned b = 0; b < POOL_CKPT_BLOCKS; b++)
		if (mask >> b & 1)
			__atomic_store_n(&(*ep)[b], slot++ + 1, __ATOMIC_RELEASE);
	return 0;
}

int pool_ckpt_map_mark_slots(struct pool_ckpt_map *m, uint64_t g, unsigned mask, uint32_t slot)
{
	mask &= POOL_CKPT_FULL;
	int rc = mask ? grow(m, g + 1) : -EINVAL;
	if (rc)
		return rc;
	int old = pool_ckpt_map_get(m, g);
	if (old != POOL_CKPT_NONE && old != POOL_CKPT_PART)
		return -EINVAL;
	if (slot != POOL_CKPT_NOSLOT &&
	    (uint64_t)slot + (unsigned)__builtin_popcount(mask) >= POOL_CKPT_NOSLOT)
		return -EFBIG;
	uint16_t **leafp = &m->masks[g / POOL_CKPT_LEAF];
	if (!*leafp) {
		uint16_t *leaf = calloc(POOL_CKPT_LEAF, sizeof(*leaf));
		if (!leaf)
			return -ENOMEM;
		__atomic_store_n(leafp, leaf, __ATOMIC_RELEASE);
	}
	if (old == POOL_CKPT_NONE)
		clear_slots(m, g); /* left by an earlier life of the granule */
	/* the slots, then the mask: a getter that sees a block finds its slot */
	if (slot != POOL_CKPT_NOSLOT) {
		int rc2 = put_slots(m, g, mask, slot);
		if (rc2)
			return rc2;
	}
	uint16_t *mk = &(*leafp)[g % POOL_CKPT_LEAF];
	unsigned now = (old == POOL_CKPT_PART ? *mk : 0u) | mask;
	/* the mask first: a getter that sees PART finds its blocks */
	__atomic_store_n(mk, (uint16_t)now, __ATOMIC_RELEASE);
	put_state(m, g,
		  now == POOL_CKPT_FULL && !pool_ckpt_map_slotted(m, g) ? POOL_CKPT_DATA
									: POOL_CKPT_PART);
	if (old == POOL_CKPT_NONE)
		m->ndata++;
	return 0;
}

uint64_t pool_ckpt_map_end(const struct pool_ckpt_map *m)
{
	for (uint64_t b = (m->ngran + 3) / 4; b > 0; b--) {
		uint8_t x = __atomic_load_n(&m->bits[b - 1], __ATOMIC_ACQUIRE);
		if (x == 0)
			continue;
		uint64_t g = (b - 1) * 4 + 3 < m->ngran ? (b - 1) * 4 + 3 : m->ngran - 1;
		while (pool_ckpt_map_get(m, g) == POOL_CKPT_NONE)
			g--;
		return g + 1;
	}
	return 0;
}

uint64_t pool_ckpt_map_next(const struct pool_ckpt_map *m, uint64_t g)
{
	for (; g < m->ngran; g++) {
		if (g % 4 == 0 && __atomic_load_n(&m->bits[g / 4], __ATOMIC_ACQUIRE) == 0) {
			g += 3;
			continue;
		}
		if (pool_ckpt_map_get(m, g) != POOL_CKPT_NONE)
			return g;
	}
	return UINT64_MAX;
}

void pool_ckpt_map_free(struct pool_ckpt_map *m)
{
	for (uint64_t i = 0; m->masks && i < m->ngran / POOL_CKPT_LEAF; i++)
		free(m->masks[i]);
	free(m->masks);
	for (uint64_t i = 0; m->slots && i < m->ngran / POOL_CKPT_LEAF; i++) {
		for (uint32_t j = 0; m->slots[i] && j < POOL_CKPT_LEAF; j++)
			free(m->slots[i][j]);
		free(m->slots[i]);
	}
	free(m->slots);
	free(m->bits);
	memset(m, 0, sizeof(*m));
}

/* ---- the log ---- */

struct pool_ckpt_log {
	uint32_t n;
	char path[POOL_CKPT_MAX_REPLICA][4200];
	int fd[POOL_CKPT_MAX_REPLICA]; /* -1: dropped after an error */
	char *img;		       /* the chosen replica's valid records, at open */
	size_t imglen;
	uint64_t seq;
	/* Flushes.  The kernel reports a writeback error once per open file,
	 * to whichever flush looks first, so one flush at a time (flush_mu)
	 * and a failure is remembered: bad[i] is gen[i] + 1 once a flush of
	 * replica i's file of generation gen[i] failed (gen[i] counts
	 * reopens, under the caller's lock; bad is written under flush_mu). */
	pthread_mutex_t flush_mu;
	uint32_t gen[POOL_CKPT_MAX_REPLICA];
	_Atomic uint32_t bad[POOL_CKPT_MAX_REPLICA];
};

static void put32(char *p, uint32_t v)
{
	memcpy(p, &v, 4); /* the daemon runs on little-endian machines only */
}

static uint32_t get32(const char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

int pool_ckpt_log_encode(char **buf, size_t *len, size_t *cap, uint32_t type, const void *p,
			 uint32_t plen, uint64_t seq)
{
	size_t need = *len + HDR_LEN + plen + 4;

	if (need > *cap) {
		size_t c = *cap ? *cap : 4096;
		while (c < need)
			c *= 2;
		char *b = realloc(*buf, c);
		if (!b)
			return -ENOMEM;
		*buf = b;
		*cap = c;
	}
	char *r = *buf + *len;
	put32(r, LOG_MAGIC);
	put32(r + 4, type);
	put32(r + 8, plen);
	memcpy(r + 12, &seq, 8);
	if (plen)
		memcpy(r + HDR_LEN, p, plen);
	put32(r + HDR_LEN + plen, layout_crc32c(r, HDR_LEN + plen));
	*len = need;
	return 0;
}

/* Length of the valid prefix of img, and the last sequence in it. */
static size_t valid_prefix(const char *img, size_t len, uint64_t *last)
{
	size_t off = 0;

	*last = 0;
	while (off + HDR_LEN + 4 <= len) {
		const char *r = img + off;
		uint32_t plen = get32(r + 8);
		uint64_t seq;
		if (get32(r) != LOG_MAGIC || plen > MAX_REC || off + HDR_LEN + plen + 4 > len)
			break;
		if (layout_crc32c(r, HDR_LEN + plen) != get32(r + HDR_LEN + plen))
			break;
		memcpy(&seq, r + 12, 8);
		*last = seq;
		off += HDR_LEN + plen + 4;
	}
	return off;
}

static int read_all(const char *path, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0 || !(*out = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, *out + got, (size_t)st.st_size - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return 0;
}

static int write_replace(const char *path, const char *buf, size_t len)
{
	char tmp[4300];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);
		if (w <= 0) {
			close(fd);
			unlink(tmp);
			return w < 0 ? -errno : -EIO;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return -errno;
	}
	/* until the directory is synced, a power cut can leave the name on
	 * the old file, whose last appends no flush of the new one reached */
	return pool_fsync_parent(path);
}

static void reopen(struct pool_ckpt_log *l, uint32_t i)
{
	l->gen[i]++; /* a new file: earlier flush failures were the old one's */
	if (l->fd[i] >= 0)
		close(l->fd[i]);
	l->fd[i] = open(l->path[i], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (l->fd[i] < 0)
		fprintf(stderr, "spacefs: checkpoint log %s: %s; replica dropped\n", l->path[i],
			strerror(errno));
}

int pool_ckpt_log_open(const char *const *dirs, uint32_t n, struct pool_ckpt_log **out, char *err,
		       size_t errlen)
{
	struct pool_ckpt_log *l = calloc(1, sizeof(*l));
	size_t best = 0;
	int rc = 0;

	if (!l)
		return -ENOMEM;
	if (n > POOL_CKPT_MAX_REPLICA)
		n = POOL_CKPT_MAX_REPLICA;
	l->n = n;
	pthread_mutex_init(&l->flush_mu, NULL);
	for (uint32_t i = 0; i < n; i++) {
		char *img;
		size_t len;
		uint64_t last;
		l->fd[i] = -1;
		snprintf(l->path[i], sizeof(l->path[i]), "%s/%s", dirs[i], LOG_NAME);
		rc = read_all(l->path[i], &img, &len);
		if (rc < 0) {
			fprintf(stderr, "spacefs: checkpoint log %s: %s; ignored\n", l->path[i],
				strerror(-rc));
			rc = 0;
			continue;
		}
		size_t ok = valid_prefix(img ? img : "", len, &last);
		if (ok < len)
			fprintf(stderr,
				"spacefs: checkpoint log %s: %zu bytes after the last valid "
				"record dropped (a write cut by a crash)\n",
				l->path[i], len - ok);
		if (!l->img || last > l->seq) {
			free(l->img);
			l->img = img;
			l->imglen = ok;
			l->seq = last;
			best = i;
		} else {
			free(img);
		}
	}
	(void)best;
	/* Every replica becomes the chosen one's valid records. */
	for (uint32_t i = 0; i < n; i++) {
		rc = write_replace(l->path[i], l->img ? l->img : "", l->imglen);
		if (rc < 0)
			fprintf(stderr, "spacefs: checkpoint log %s: %s; replica dropped\n",
				l->path[i], strerror(-rc));
		else
			reopen(l, i);
	}
	uint32_t live = 0;
	for (uint32_t i = 0; i < n; i++)
		live += l->fd[i] >= 0;
	if (n > 0 && live == 0) {
		snprintf(err, errlen, "checkpoint log: no replica writable (%s)", l->path[0]);
		pool_ckpt_log_close(l);
		return -EIO;
	}
	*out = l;
	return 0;
}

void pool_ckpt_log_close(struct pool_ckpt_log *l)
{
	if (!l)
		return;
	for (uint32_t i = 0; i < l->n; i++)
		if (l->fd[i] >= 0)
			close(l->fd[i]);
	pthread_mutex_destroy(&l->flush_mu);
	free(l->img);
	free(l);
}

int pool_ckpt_log_replay(struct pool_ckpt_log *l,
			 int (*fn)(void *arg, uint32_t type, const void *p, uint32_t len),
			 void *arg)
{
	size_t off = 0;
	uint64_t *al = malloc(MAX_REC + 8); /* payloads handed over aligned */
	int rc = al ? 0 : -ENOMEM;

	while (rc == 0 && off < l->imglen) {
		const char *r = l->img + off;
		uint32_t plen = get32(r + 8);
		memcpy(al, r + HDR_LEN, plen);
		rc = fn(arg, get32(r + 4), al, plen);
		off += HDR_LEN + plen + 4;
	}
	free(al);
	return rc;
}

/* Stop writing replica i after a failed write or flush, saying why.
 * Caller's lock held (or the log is the caller's alone: detach). */
static void drop_replica(struct pool_ckpt_log *l, uint32_t i, const char *why)
{
	fprintf(stderr, "spacefs: checkpoint log %s: %s; replica dropped\n", l->path[i], why);
	close(l->fd[i]);
	l->fd[i] = -1;
}

static int write_everywhere(struct pool_ckpt_log *l, const char *buf, size_t len)
{
	uint32_t ok = 0;

	for (uint32_t i = 0; i < l->n; i++) {
		if (l->fd[i] < 0)
			continue;
		ssize_t w = write(l->fd[i], buf, len);
		if (w == (ssize_t)len) {
			ok++;
			continue;
		}
		char why[96];
		snprintf(why, sizeof(why), "write failed (%s)",
			 w < 0 ? strerror(errno) : "short write");
		drop_replica(l, i, why);
	}
	return ok ? 0 : -EIO;
}

int pool_ckpt_log_append(struct pool_ckpt_log *l, uint32_t type, const void *p, uint32_t len)
{
	char stack[512], *buf = stack;
	size_t n = 0, cap = sizeof(stack);
	int rc;

	if (HDR_LEN + len + 4 > cap)
		buf = NULL, cap = 0;
	rc = pool_ckpt_log_encode(&buf, &n, &cap, type, p, len, l->seq + 1);
	if (rc == 0)
		rc = write_everywhere(l, buf, n);
	if (rc == 0)
		l->seq++;
	if (buf != stack)
		free(buf);
	return rc;
}

/* n records of one type and length (recs: n payloads back to back) in
 * one write(2) per replica, with consecutive sequence numbers: the group
 * commit of fs/ckpt.c.  A crash tearing it leaves a valid prefix of them
 * (each record has its own CRC), as n separate appends would. */
int pool_ckpt_log_append_n(struct pool_ckpt_log *l, uint32_t type, const void *recs, uint32_t len,
			   uint32_t n)
{
	char stack[4096], *buf = stack;
	size_t used = 0, cap = sizeof(stack);
	int rc = 0;

	if ((size_t)n * (HDR_LEN + len + 4) > cap)
		buf = NULL, cap = 0;
	for (uint32_t i = 0; i < n && rc == 0; i++)
		rc =
		    pool_ckpt_log_encode(&buf, &used, &cap, type,
					 (const char *)recs + (size_t)i * len, len, l->seq + 1 + i);
	if (rc == 0 && n > 0)
		rc = write_everywhere(l, buf, used);
	if (rc == 0)
		l->seq += n;
	if (buf != stack)
		free(buf);
	return rc;
}

static bool flush_failed(struct pool_ckpt_log *l, uint32_t i, uint32_t gen)
{
	return atomic_load(&l->bad[i]) == gen + 1;
}

/* Flush fd, replica i's file of generation gen: 0, or -errno if this
 * flush failed or one of the replica's current file did before.  Such a
 * replica may have lost appends the kernel had accepted, and a later
 * flush of it would report success: it is dropped as a failed write
 * drops one (by pool_ckpt_log_sync at once, after _end by the next
 * _begin).  flush_mu held.  A failure is recorded unless a newer file's is: an
 * older file's no longer matters (a newer generation exists only because
 * a reset made its replacement and the rename durable), and letting it
 * overwrite a newer one's would let the next flush of that newer file,
 * which the kernel then answers with success, count as good. */
static int flush_one(struct pool_ckpt_log *l, uint32_t i, uint32_t gen, int fd)
{
	if (flush_failed(l, i, gen))
		return -EIO; /* known lost: no flush of it can tell otherwise */
	if (fdatasync(fd) < 0) {
		int e = -errno;
		uint32_t cur = atomic_load(&l->bad[i]);
		if (cur == 0 || (int32_t)(gen + 1 - cur) > 0)
			atomic_store(&l->bad[i], gen + 1);
		return e;
	}
	return 0;
}

int pool_ckpt_log_sync(struct pool_ckpt_log *l)
{
	uint32_t ok = 0;
	int rc = -EIO; /* no replica left */

	pthread_mutex_lock(&l->flush_mu);
	for (uint32_t i = 0; i < l->n; i++) {
		if (l->fd[i] < 0)
			continue;
		int e = flush_one(l, i, l->gen[i], l->fd[i]);
		if (e == 0) {
			ok++;
		} else {
			rc = e;
			drop_replica(l, i, "a flush failed");
		}
	}
	pthread_mutex_unlock(&l->flush_mu);
	return ok || l->n == 0 ? 0 : rc;
}

int pool_ckpt_log_sync_begin(struct pool_ckpt_log *l, struct pool_ckpt_log_flush *f)
{
	f->n = 0;
	for (uint32_t i = 0; i < l->n; i++) {
		if (l->fd[i] >= 0 && flush_failed(l, i, l->gen[i]))
			drop_replica(l, i, "a flush failed");
		if (l->fd[i] < 0)
			continue;
		int fd = fcntl(l->fd[i], F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			int e = -errno;
			while (f->n > 0)
				close(f->fd[--f->n]);
			return e;
		}
		f->fd[f->n] = fd;
		f->replica[f->n] = i;
		f->gen[f->n] = l->gen[i];
		f->n++;
	}
	return f->n || l->n == 0 ? 0 : -EIO; /* every replica dropped already */
}

int pool_ckpt_log_sync_end(struct pool_ckpt_log *l, struct pool_ckpt_log_flush *f)
{
	uint32_t ok = 0;
	int rc = 0;

	pthread_mutex_lock(&l->flush_mu);
	for (uint32_t i = 0; i < f->n; i++) {
		int e = flush_one(l, f->replica[i], f->gen[i], f->fd[i]);
		if (e == 0)
			ok++;
		else
			rc = e;
	}
	pthread_mutex_unlock(&l->flush_mu);
	for (uint32_t i = 0; i < f->n; i++)
		close(f->fd[i]);
	f->n = 0;
	return ok ? 0 : rc;
}

uint32_t pool_ckpt_log_replicas(const struct pool_ckpt_log *l)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < l->n; i++)
		n += l->fd[i] >= 0;
	return n;
}

uint64_t pool_ckpt_log_seq(struct pool_ckpt_log *l)
{
	return l->seq;
}

int pool_ckpt_log_reset(struct pool_ckpt_log *l, const char *buf, size_t len)
{
	uint64_t last;
	uint32_t ok = 0;

	if (valid_prefix(buf, len, &last) != len)
		return -EINVAL;
	for (uint32_t i = 0; i < l->n; i++) {
		if (l->fd[i] < 0)
			continue;
		if (write_replace(l->path[i], buf, len) == 0) {
			reopen(l, i);
			ok += l->fd[i] >= 0;
		} else {
			close(l->fd[i]);
			l->fd[i] = -1;
		}
	}
	if (len)
		l->seq = last;
	return ok || l->n == 0 ? 0 : -EIO;
}
