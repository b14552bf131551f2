/*
 * owner.c -- coordinator lock files, node registry, pool secret and
 * preferred owner: the files several nodes share (pool/owner.h).
 *
 * Why files and OFD locks: nodes share nothing but the disk directories
 * (on one machine, or exported per disk over NFS or CephFS), so the
 * coordinator state must live there.  A record is small and fixed-size,
 * rewritten in place with pwrite + fdatasync: a torn write is caught by
 * the CRC and reads as "damaged", which the caller treats like a lease it
 * cannot see (no majority from it).  OFD locks (F_OFD_SETLK) belong to
 * the open file description, so they work between threads of one process
 * as between processes, are dropped by the kernel when the process dies,
 * and are forwarded by NFSv4 and CephFS.  The byte-0 lock only serialises
 * a read-modify-write of the record and is never held across a sleep; the
 * byte-1 lock is the owner's "I am alive" token.
 *
 * Every record read is validated: magic, version, size, CRC, then each
 * field (names are [A-Za-z0-9._-], addresses parse, the NUL padding is
 * there), so a hostile or damaged file is an error with a reason.
 */
#include "pool/owner.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "layout/layout.h"
#include "pool/superblock.h"

#define OWNER_MAGIC 0x4c4f5053u /* "SPOL" */
#define NODE_MAGIC  0x444e5053u /* "SPND" */
#define REC_VERSION 1u

/* Field offsets of both records (docs/FORMAT.md). */
#define O_NODE	 40u
#define O_ADDR	 112u
#define O_CRC	 176u
#define N_BEAT	 8u
#define N_PID	 16u
#define N_NAME	 20u
#define N_ADDR	 100u
#define N_CRC	 164u
#define NAME_FLD 72u

int64_t pool_realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

int pool_addr_check(const char *addr)
{
	char host[POOL_ADDR_MAX], buf[16];
	const char *colon = strrchr(addr, ':');
	size_t len = strnlen(addr, POOL_ADDR_MAX);

	if (len == 0 || len >= POOL_ADDR_MAX || !colon || colon == addr)
		return -EINVAL;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end || port < 1 || port > 65535)
		return -EINVAL;
	size_t hl = (size_t)(colon - addr);
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		host[hl - 1] = '\0';
		return inet_pton(AF_INET6, host + 1, buf) == 1 ? 0 : -EINVAL;
	}
	return inet_pton(AF_INET, host, buf) == 1 ? 0 : -EINVAL;
}

/* A NUL-padded text field: the text must end inside it. */
static int get_text(const uint8_t *p, size_t fld, char *out, size_t outlen)
{
	size_t n = strnlen((const char *)p, fld);

	if (n == fld || n >= outlen)
		return -EUCLEAN;
	for (size_t i = n; i < fld; i++)
		if (p[i])
			return -EUCLEAN;
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

static int check_node_name(const char *name)
{
	const char *why;

	return strlen(name) <= POOL_NODE_NAME_MAX && pool_name_check(name, &why) == 0 ? 0
										      : -EUCLEAN;
}

/* ---- owner records ---- */

void pool_owner_encode(const struct pool_owner_rec *r, uint8_t buf[POOL_OWNER_REC_SIZE])
{
	memset(buf, 0, POOL_OWNER_REC_SIZE);
	put32(buf, OWNER_MAGIC);
	put32(buf + 4, REC_VERSION);
	put64(buf + 8, r->epoch);
	put64(buf + 16, (uint64_t)r->expiry_ms);
	put64(buf + 24, r->seq);
	put32(buf + 32, r->flags);
	memcpy(buf + O_NODE, r->node, strnlen(r->node, POOL_NODE_NAME_MAX));
	memcpy(buf + O_ADDR, r->addr, strnlen(r->addr, POOL_ADDR_MAX - 1));
	put32(buf + O_CRC, layout_crc32c(buf, O_CRC));
}

static int header_check(const uint8_t *buf, size_t len, size_t size, uint32_t magic,
			uint32_t crc_off, const char **why)
{
	if (len < 8 || get32(buf) != magic) {
		*why = "not a spacefs record (bad magic)";
		return -EMEDIUMTYPE;
	}
	if (get32(buf + 4) != REC_VERSION) {
		*why = "unknown record version";
		return -EPROTONOSUPPORT;
	}
	if (len != size) {
		*why = "wrong size (truncated or padded)";
		return -EBADMSG;
	}
	if (get32(buf + crc_off) != layout_crc32c(buf, crc_off)) {
		*why = "checksum mismatch";
		return -EBADMSG;
	}
	return 0;
}

int pool_owner_decode(const uint8_t *buf, size_t len, struct pool_owner_rec *r, const char **why)
{
	int rc = header_check(buf, len, POOL_OWNER_REC_SIZE, OWNER_MAGIC, O_CRC, why);

	if (rc)
		return rc;
	memset(r, 0, sizeof(*r));
	r->epoch = get64(buf + 8);
	r->expiry_ms = (int64_t)get64(buf + 16);
	r->seq = get64(buf + 24);
	r->flags = get32(buf + 32);
	*why = "a field is out of bounds";
	if (get32(buf + 36) != 0 || (r->flags & ~POOL_OWNER_RELEASED) || r->expiry_ms < 0)
		return -EUCLEAN;
	if (get_text(buf + O_NODE, NAME_FLD, r->node, sizeof(r->node)) ||
	    get_text(buf + O_ADDR, POOL_ADDR_MAX, r->addr, sizeof(r->addr)))
		return -EUCLEAN;
	if (r->epoch == 0 && (r->node[0] || r->addr[0]))
		return -EUCLEAN;
	if (r->epoch && (check_node_name(r->node) || pool_addr_check(r->addr)))
		return -EUCLEAN;
	*why = NULL;
	return 0;
}

int pool_lock_open(const char *dir, bool create)
{
	char path[POOL_PATH_MAX + 32];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, POOL_OWNER_FILE);
	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	return fd < 0 ? -errno : fd;
}

static int ofd_lock(int fd, short type, off_t start, int cmd)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = 1};

	return fcntl(fd, cmd, &fl) < 0 ? -errno : 0;
}

/* The short update lock: non-blocking, retried for POOL_LOCK_WAIT_MS. */
static int lock_byte0(int fd, short type)
{
	for (int waited = 0;; waited += 5) {
		int rc = ofd_lock(fd, type, 0, F_OFD_SETLK);
		if (rc != -EAGAIN && rc != -EACCES)
			return rc;
		if (waited >= POOL_LOCK_WAIT_MS)
			return -EAGAIN;
		nanosleep(&(struct timespec){0, 5000000}, NULL);
	}
}

static int read_rec(int fd, const char *path, struct pool_owner_rec *r, char *err, size_t errlen)
{
	uint8_t buf[POOL_OWNER_REC_SIZE + 1];
	const char *why;
	ssize_t n = pread(fd, buf, sizeof(buf), 0);

	if (n < 0) {
		snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
		return -errno;
	}
	if (n == 0)
		return -ENODATA;
	int rc = pool_owner_decode(buf, (size_t)n, r, &why);
	if (rc)
		snprintf(err, errlen, "%s: %s", path, why);
	return rc;
}

int pool_lock_read(int fd, const char *path, struct pool_owner_rec *r, char *err, size_t errlen)
{
	int rc = lock_byte0(fd, F_RDLCK);

	if (rc) {
		snprintf(err, errlen, "%s: update lock busy: %s", path, strerror(-rc));
		return rc;
	}
	rc = read_rec(fd, path, r, err, errlen);
	ofd_lock(fd, F_UNLCK, 0, F_OFD_SETLK);
	return rc;
}

int pool_lock_update(int fd, const char *path, pool_lock_fn fn, void *arg, char *err, size_t errlen)
{
	struct pool_owner_rec r;
	uint8_t buf[POOL_OWNER_REC_SIZE];
	int rc = lock_byte0(fd, F_WRLCK);

	if (rc) {
		snprintf(err, errlen, "%s: update lock busy: %s", path, strerror(-rc));
		return rc;
	}
	rc = read_rec(fd, path, &r, err, errlen);
	bool exists = rc == 0;
	if (rc == -ENODATA || rc == -EMEDIUMTYPE || rc == -EBADMSG || rc == -EUCLEAN) {
		memset(&r, 0, sizeof(r)); /* a damaged record is overwritten, never trusted */
		rc = 0;
	}
	if (rc == 0)
		rc = fn(&r, exists, arg);
	if (rc == 1) {
		pool_owner_encode(&r, buf);
		if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) || fdatasync(fd) < 0) {
			rc = errno ? -errno : -EIO;
			snprintf(err, errlen, "%s: write: %s", path, strerror(-rc));
		} else {
			rc = 0;
		}
	}
	ofd_lock(fd, F_UNLCK, 0, F_OFD_SETLK);
	return rc;
}

int pool_lock_hold(int fd)
{
	int rc = ofd_lock(fd, F_WRLCK, 1, F_OFD_SETLK);

	return rc == -EACCES ? -EAGAIN : rc;
}

void pool_lock_drop(int fd)
{
	ofd_lock(fd, F_UNLCK, 1, F_OFD_SETLK);
}

int pool_lock_probe(int fd)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 1, .l_len = 1};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

/* ---- node registry ---- */

void pool_node_encode(const struct pool_node_rec *r, uint8_t buf[POOL_NODE_REC_SIZE])
{
	memset(buf, 0, POOL_NODE_REC_SIZE);
	put32(buf, NODE_MAGIC);
	put32(buf + 4, REC_VERSION);
	put64(buf + N_BEAT, (uint64_t)r->heartbeat_ms);
	put32(buf + N_PID, r->pid);
	memcpy(buf + N_NAME, r->name, strnlen(r->name, POOL_NODE_NAME_MAX));
	memcpy(buf + N_ADDR, r->addr, strnlen(r->addr, POOL_ADDR_MAX - 1));
	put32(buf + N_CRC, layout_crc32c(buf, N_CRC));
}

int pool_node_decode(const uint8_t *buf, size_t len, struct pool_node_rec *r, const char **why)
{
	int rc = header_check(buf, len, POOL_NODE_REC_SIZE, NODE_MAGIC, N_CRC, why);

	if (rc)
		return rc;
	memset(r, 0, sizeof(*r));
	r->heartbeat_ms = (int64_t)get64(buf + N_BEAT);
	r->pid = get32(buf + N_PID);
	*why = "a field is out of bounds";
	if (r->heartbeat_ms < 0 || get_text(buf + N_NAME, NAME_FLD, r->name, sizeof(r->name)) ||
	    get_text(buf + N_ADDR, POOL_ADDR_MAX, r->addr, sizeof(r->addr)) ||
	    check_node_name(r->name) || pool_addr_check(r->addr))
		return -EUCLEAN;
	*why = NULL;
	return 0;
}

int pool_node_beat(int fd, const struct pool_node_rec *r)
{
	uint8_t buf[POOL_NODE_REC_SIZE];

	pool_node_encode(r, buf);
	if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
		return errno ? -errno : -EIO;
	return 0;
}

int pool_node_register(const char *disk, const struct pool_node_rec *r, char *err, size_t errlen)
{
	char path[POOL_PATH_MAX + 128];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", disk, POOL_NODES_DIR);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/%s/%s", disk, POOL_NODES_DIR, r->name);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	rc = ofd_lock(fd, F_WRLCK, 0, F_OFD_SETLK);
	if (rc == -EAGAIN || rc == -EACCES) {
		snprintf(err, errlen, "%s: node %s is already running on this pool", path, r->name);
		rc = -EBUSY;
	} else if (rc == 0 && (rc = pool_node_beat(fd, r)) < 0) {
		snprintf(err, errlen, "%s: write: %s", path, strerror(-rc));
	}
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

static void list_one(const char *path, void (*fn)(void *, const struct pool_node_rec *), void *arg)
{
	uint8_t buf[POOL_NODE_REC_SIZE + 1];
	struct pool_node_rec r;
	const char *why;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	if (n > 0 && pool_node_decode(buf, (size_t)n, &r, &why) == 0) {
		struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_len = 1};
		r.running = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
		fn(arg, &r);
	} else if (n > 0) {
		fprintf(stderr, "spacefs: node record %s: %s; ignored\n", path, why);
	}
	close(fd);
}

int pool_node_list(const char *disk, void (*fn)(void *arg, const struct pool_node_rec *r),
		   void *arg)
{
	char path[POOL_PATH_MAX + 128];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s", disk, POOL_NODES_DIR);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || strlen(e->d_name) > POOL_NODE_NAME_MAX)
			continue;
		snprintf(path, sizeof(path), "%s/%s/%s", disk, POOL_NODES_DIR, e->d_name);
		list_one(path, fn, arg);
	}
	closedir(d);
	return 0;
}

/* ---- secret ---- */

static int read_secret(const char *disk, uint8_t out[POOL_SECRET_LEN])
{
	char path[POOL_PATH_MAX + 32];
	uint8_t buf[POOL_SECRET_LEN + 1];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", disk, POOL_SECRET_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	int bad = fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077);
	close(fd);
	if (bad) {
		fprintf(stderr, "spacefs: %s: not a regular file of mode 0600; ignored\n", path);
		return -EPERM;
	}
	if (n != POOL_SECRET_LEN) {
		fprintf(stderr, "spacefs: %s: not %u bytes; ignored\n", path, POOL_SECRET_LEN);
		return -EBADMSG;
	}
	memcpy(out, buf, POOL_SECRET_LEN);
	return 0;
}

/* Write the secret to a temp file and link it into place: link() never
 * replaces, so of two nodes creating at once exactly one wins. */
static int install_secret(const char *disk, const uint8_t key[POOL_SECRET_LEN])
{
	char tmp[POOL_PATH_MAX + 64], path[POOL_PATH_MAX + 32];
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s/.%s.%d", disk, POOL_SECRET_FILE, (int)getpid());
	snprintf(path, sizeof(path), "%s/%s", disk, POOL_SECRET_FILE);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, key, POOL_SECRET_LEN) != POOL_SECRET_LEN || fsync(fd) < 0)
		rc = errno ? -errno : -EIO;
	close(fd);
	if (rc == 0 && link(tmp, path) < 0)
		rc = -errno;
	unlink(tmp);
	return rc;
}

int pool_secret_load(const char *const *disks, uint32_t n, uint8_t out[POOL_SECRET_LEN], char *err,
		     size_t errlen)
{
	uint8_t fresh[POOL_SECRET_LEN];
	uint32_t i;
	int rc = -ENOENT;

	for (i = 0; i < n && rc < 0; i++)
		rc = read_secret(disks[i], out);
	if (rc < 0) {
		if (getrandom(fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
			snprintf(err, errlen, "pool secret: getrandom: %s", strerror(errno));
			return -EIO;
		}
		for (i = 0; i < n && rc < 0; i++) {
			rc = install_secret(disks[i], fresh);
			if (rc == -EEXIST) /* another node was quicker: use its secret */
				rc = read_secret(disks[i], out);
			else if (rc == 0)
				memcpy(out, fresh, sizeof(fresh));
		}
	}
	if (rc < 0) {
		snprintf(err, errlen, "pool secret %s: cannot be read or created on any disk: %s",
			 POOL_SECRET_FILE, strerror(-rc));
		return rc;
	}
	for (i = 0; i < n; i++) {
		uint8_t have[POOL_SECRET_LEN];
		if (read_secret(disks[i], have) == -ENOENT)
			install_secret(disks[i], out);
	}
	return 0;
}

/* ---- preferred owner ---- */

int pool_pref_read(const char *const *dirs, uint32_t n, char *node, size_t len)
{
	node[0] = '\0';
	for (uint32_t i = 0; i < n; i++) {
		char path[POOL_PATH_MAX + 32], buf[POOL_NODE_NAME_MAX + 2];
		snprintf(path, sizeof(path), "%s/%s", dirs[i], POOL_PREF_FILE);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		char *got = fgets(buf, sizeof(buf), f);
		fclose(f);
		if (!got)
			continue;
		buf[strcspn(buf, "\n")] = '\0';
		if (buf[0] && check_node_name(buf) == 0 && strlen(buf) < len) {
			snprintf(node, len, "%s", buf);
			return 0;
		}
		if (!buf[0])
			return 0; /* explicitly cleared */
	}
	return 0;
}

int pool_pref_write(const char *const *dirs, uint32_t n, const char *node, char *err, size_t errlen)
{
	uint32_t ok = 0;
	int rc = -ENOENT;

	if (node[0] && check_node_name(node)) {
		snprintf(err, errlen, "node name '%s' is not valid", node);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n; i++) {
		char tmp[POOL_PATH_MAX + 64], path[POOL_PATH_MAX + 32];
		snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dirs[i], POOL_PREF_FILE);
		snprintf(path, sizeof(path), "%s/%s", dirs[i], POOL_PREF_FILE);
		FILE *f = fopen(tmp, "we");
		if (!f) {
			rc = -errno;
			continue;
		}
		int bad = fprintf(f, "%s\n", node) < 0 || fflush(f) || fsync(fileno(f));
		bad |= fclose(f) != 0;
		if (bad || rename(tmp, path) < 0) {
			rc = -EIO;
			unlink(tmp);
			continue;
		}
		ok++;
	}
	if (ok == 0) {
		snprintf(err, errlen, "%s: cannot write %s: %s", n ? dirs[0] : "(no disk)",
			 POOL_PREF_FILE, strerror(-rc));
		return rc;
	}
	return 0;
}

/* ---- drained nodes ---- */

int pool_drain_write(const char *const *disks, uint32_t n, const char *node, bool drained,
		     char *err, size_t errlen)
{
	uint32_t ok = 0;
	int rc = -ENOENT;

	if (check_node_name(node)) {
		snprintf(err, errlen, "node name '%s' is not valid", node);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n; i++) {
		char dir[POOL_PATH_MAX + 16], path[POOL_PATH_MAX + POOL_NODE_NAME_MAX + 24];
		snprintf(dir, sizeof(dir), "%s/%s", disks[i], POOL_DRAIN_DIR);
		snprintf(path, sizeof(path), "%s/%s", dir, node);
		if (drained) {
			if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
				rc = -errno;
				continue;
			}
			int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
			if (fd < 0 || fsync(fd) < 0) {
				rc = -errno;
				if (fd >= 0)
					close(fd);
				continue;
			}
			close(fd);
		} else if (unlink(path) < 0 && errno != ENOENT) {
			rc = -errno;
			continue;
		}
		ok++;
	}
	if (ok == 0) {
		snprintf(err, errlen, "%s: cannot %s %s/%s: %s", n ? disks[0] : "(no disk)",
			 drained ? "create" : "remove", POOL_DRAIN_DIR, node, strerror(-rc));
		return rc;
	}
	return 0;
}

bool pool_drain_read(const char *const *disks, uint32_t n, const char *node)
{
	uint32_t have = 0;

	if (n == 0 || check_node_name(node))
		return false;
	for (uint32_t i = 0; i < n; i++) {
		char path[POOL_PATH_MAX + POOL_NODE_NAME_MAX + 24];
		snprintf(path, sizeof(path), "%s/%s/%s", disks[i], POOL_DRAIN_DIR, node);
		have += access(path, F_OK) == 0;
	}
	return 2 * have >= n;
}
