/*
 * ctl.c -- the daemon's control socket (protocol in pool/ctl.h).
 *
 * One thread accepts connections on /run/spacefs/<pool uuid>.<node>.sock
 * and answers each request in turn: control traffic is rare and tiny, and
 * serialising it means an online `volume create` never races another.
 * Every byte from the socket is untrusted: the request is bounded, split
 * on spaces, and each argument parsed with range checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fs/fs.h"
#include "pool/ctl.h"

struct fs_ctl {
	int fd;
	int stop_pipe[2];
	pthread_t thread;
	char path[108];
};

/* ---- a growing text buffer for replies ---- */

struct out {
	char *s;
	size_t len, cap;
	int failed;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...)
{
	va_list ap;

	for (;;) {
		size_t room = o->cap - o->len;
		va_start(ap, fmt);
		int n = vsnprintf(o->s ? o->s + o->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap ? o->cap * 2 : 4096;
		while (cap - o->len <= (size_t)n)
			cap *= 2;
		char *s = realloc(o->s, cap);
		if (!s) {
			o->failed = 1;
			return;
		}
		o->s = s;
		o->cap = cap;
	}
}

/* ---- commands ---- */

static void status_volume(struct fs *fs, struct out *o, struct fs_volume *v)
{
	uint32_t nd = fs->pool->ndisks;

	outf(o, "{\"name\":\"%s\",\"id\":%u,\"read_bytes\":%" PRIu64 ",\"write_bytes\":%" PRIu64
		",\"meta_txn\":%" PRIu64 ",\"meta_replicas\":%u,\"disks\":[",
	     v->name, v->id, (uint64_t)atomic_load(&v->read_bytes),
	     (uint64_t)atomic_load(&v->write_bytes), pool_meta_txn(v->meta),
	     pool_meta_live_replicas(v->meta));
	for (uint32_t d = 0; d < nd; d++) {
		struct pool_disk_stats st;
		pool_store_stats(v->store, d, &st);
		outf(o,
		     "%s{\"index\":%u,\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
		     ",\"read_bytes\":%" PRIu64 ",\"write_bytes\":%" PRIu64 ",\"errors\":%" PRIu64
		     ",\"csum_errors\":%" PRIu64 "}",
		     d ? "," : "", d, st.reads, st.writes, st.read_bytes, st.write_bytes,
		     st.errors, st.csum_errors);
	}
	outf(o, "]}");
}

static void cmd_status(struct fs *fs, struct out *o)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);

	/* Volume and node names are [A-Za-z0-9._-]: no JSON escaping needed,
	 * but the mount point is any path, so it is escaped. */
	outf(o, "ok\n{\"node\":\"%s\",\"pid\":%d,\"mountpoint\":\"", fs->opt.node, (int)getpid());
	for (const char *p = fs->opt.mountpoint; *p; p++) {
		if (*p == '"' || *p == '\\')
			outf(o, "\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			outf(o, "\\u%04x", *p);
		else
			outf(o, "%c", *p);
	}
	outf(o, "\",\"read_only\":%s,\"volumes\":[", fs->opt.read_only ? "true" : "false");
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			outf(o, ",");
		status_volume(fs, o, fs->vol[i]);
	}
	char *jobs = fs->jobs ? fs_jobs_json(fs) : NULL;
	outf(o, "],\"pool_health\":\"%s\",\"jobs\":%s}\n", pool_health(fs->pool),
	     jobs ? jobs : "[]");
	free(jobs);
}

/* One line per volume and disk: the same counters as status, as
 * tab-separated fields for spacectl's table (see pool/ctl.h). */
static void cmd_counters(struct fs *fs, struct out *o)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);

	outf(o, "ok\n");
	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
			struct pool_disk_stats st;
			pool_store_stats(v->store, d, &st);
			outf(o,
			     "%s\t%u\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
			     "\t%" PRIu64 "\n",
			     v->name, d, st.reads, st.writes, st.read_bytes, st.write_bytes,
			     st.errors, st.csum_errors);
		}
	}
}

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* "volume-create NAME LAYOUT COPIES PARITY COLUMNS INTERLEAVE INTEGRITY" */
static void cmd_volume_create(struct fs *fs, struct out *o, char **argv, int argc)
{
	struct layout_geom g = {0};
	uint32_t integrity;
	char err[512] = "";
	int rc = 0;

	if (argc != 8) {
		outf(o, "error: volume-create takes 7 arguments\n");
		return;
	}
	if (layout_kind_parse(argv[2], &g.kind) < 0 || parse_u32(argv[3], 3, &g.copies) < 0 ||
	    parse_u32(argv[4], 2, &g.parity) < 0 ||
	    parse_u32(argv[5], LAYOUT_MAX_COLUMNS, &g.columns) < 0 ||
	    parse_u32(argv[6], LAYOUT_MAX_INTERLEAVE, &g.interleave) < 0 ||
	    parse_u32(argv[7], 1, &integrity) < 0) {
		outf(o, "error: volume-create: malformed arguments\n");
		return;
	}
	if (fs->opt.read_only) {
		outf(o, "error: the pool is mounted read-only\n");
		return;
	}
	pthread_rwlock_wrlock(&fs->pool_lock);
	rc = pool_volume_create(fs->pool, argv[1], &g, (int)integrity, err, sizeof(err));
	struct pool_sb_volume pv;
	if (rc == 0) {
		const struct pool_sb_volume *found = pool_volume_find(fs->pool, argv[1]);
		if (found)
			pv = *found;
		else
			rc = -ENOENT;
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	if (rc == 0)
		rc = fs_volume_open(fs, &pv, err, sizeof(err));
	if (rc < 0)
		outf(o, "error: %s\n", err[0] ? err : strerror(-rc));
	else
		outf(o, "ok\n");
}

/* Disks, repair, scrub and jobs: fs/jobs.c. */
static void cmd_jobs(struct fs *fs, struct out *o, char **argv, int argc)
{
	char *r = fs_jobs_request(fs, argc, argv);

	outf(o, "%s", r ? r : "error: out of memory\n");
	free(r);
}

static void dispatch(struct fs *fs, char *req, struct out *o)
{
	char *argv[16];
	int argc = 0;

	for (char *tok = strtok(req, " \t\r\n"); tok && argc < 16; tok = strtok(NULL, " \t\r\n"))
		argv[argc++] = tok;
	if (argc == 0)
		outf(o, "error: empty request\n");
	else if (strcmp(argv[0], "status") == 0 && argc == 1)
		cmd_status(fs, o);
	else if (strcmp(argv[0], "counters") == 0 && argc == 1)
		cmd_counters(fs, o);
	else if (strcmp(argv[0], "volume-create") == 0)
		cmd_volume_create(fs, o, argv, argc);
	else if (fs_jobs_handles(argv[0]))
		cmd_jobs(fs, o, argv, argc);
	else
		outf(o, "error: unknown request '%.64s'\n", argv[0]);
}

/* ---- the server ---- */

static int read_request(int fd, char *buf, size_t size)
{
	size_t len = 0;

	while (len + 1 < size) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 5000) <= 0) /* a client that says nothing is dropped */
			return -ETIMEDOUT;
		ssize_t r = read(fd, buf + len, size - 1 - len);
		if (r <= 0)
			return r == 0 ? -EPROTO : -errno;
		len += (size_t)r;
		buf[len] = '\0';
		if (memchr(buf, '\n', len))
			return 0;
	}
	return -EMSGSIZE;
}

static void serve_one(struct fs *fs, int cfd)
{
	char req[POOL_CTL_MAX_REQUEST];
	struct out o = {0};

	if (read_request(cfd, req, sizeof(req)) < 0)
		outf(&o, "error: request too long, empty or timed out\n");
	else
		dispatch(fs, req, &o);
	if (!o.failed && o.s) {
		size_t off = 0;
		while (off < o.len) {
			ssize_t w = write(cfd, o.s + off, o.len - off);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
	}
	free(o.s);
}

static void *ctl_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_ctl *c = fs->ctl;

	for (;;) {
		struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN},
				      {.fd = c->stop_pipe[0], .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int cfd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		serve_one(fs, cfd);
		close(cfd);
	}
	return NULL;
}

static int listen_on(struct fs_ctl *c, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -errno;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->path);
	unlink(c->path); /* a stale socket of a daemon that died */
	mode_t old = umask(0077);
	int rc = bind(c->fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || listen(c->fd, 16) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
		close(c->fd);
		return rc;
	}
	return 0;
}

int fs_ctl_start(struct fs *fs, char *err, size_t errlen)
{
	struct fs_ctl *c = calloc(1, sizeof(*c));
	char uuid[40];
	int rc;

	err[0] = '\0';
	if (!c)
		return -ENOMEM;
	pool_uuid_format(fs->pool->sb->pool_uuid, uuid);
	mkdir(pool_ctl_dir(), 0700);
	rc = pool_ctl_path(uuid, fs->opt.node, c->path, sizeof(c->path));
	if (rc == 0)
		rc = listen_on(c, err, errlen);
	if (rc == 0 && pipe2(c->stop_pipe, O_CLOEXEC) < 0)
		rc = -errno;
	if (rc == 0) {
		fs->ctl = c;
		rc = -pthread_create(&c->thread, NULL, ctl_main, fs);
	}
	if (rc < 0) {
		if (rc != -ENAMETOOLONG && !err[0])
			snprintf(err, errlen, "%s", strerror(-rc));
		fs->ctl = NULL;
		free(c);
	}
	return rc;
}

void fs_ctl_stop(struct fs *fs)
{
	struct fs_ctl *c = fs->ctl;

	if (!c)
		return;
	if (write(c->stop_pipe[1], "x", 1) < 0)
		perror("spacefs: stopping the control socket");
	pthread_join(c->thread, NULL);
	close(c->fd);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	unlink(c->path);
	free(c);
	fs->ctl = NULL;
}
