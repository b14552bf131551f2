/*
 * metrics.c -- the daemon's counters in the Prometheus text format.
 *
 * Labs already run Prometheus and Grafana for their disks and arrays;
 * spacefs feeds the same boards instead of inventing a dashboard of its
 * own.  One function renders the text (fs_metrics_text); two ways carry
 * it out: the control socket's "metrics" request (fs/ctl.c, printed by
 * `spacectl metrics SOURCE`, which a node_exporter textfile collector or
 * a cron job can pick up), and, with -o metrics=ADDR:PORT, a tiny HTTP
 * listener in its own thread for Prometheus to scrape directly.
 *
 * The listener is deliberately minimal: one thread, one connection at a
 * time, GET only, a bounded request read with a timeout, the reply sent
 * with Connection: close.  Scrapes come every few seconds; anything more
 * (TLS, authentication) belongs to a reverse proxy in front of it.  The
 * request bytes are untrusted and only ever compared against "GET ".
 *
 * What is exported (docs/OPERATIONS.md lists every series):
 *   per volume and disk: chunk reads/writes and their bytes, I/O errors,
 *   checksum errors, a chunk I/O latency histogram (pool/lathist.h);
 *   per volume: application bytes read/written, owner, epoch, access;
 *   per disk: its state; the pool's health; per job: done/total.
 * Volumes another node owns have no local chunk I/O: only their owner
 * series appear here, the chunk series come from the owner's exporter.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fs/fs.h"
#include "fs/text.h"
#include "fs/node.h"

#ifndef SPACEFS_VERSION
#define SPACEFS_VERSION "0.1.0"
#endif
#define REQ_MAX 4096 /* bytes of an HTTP request read; the rest is ignored */

struct fs_metrics {
	int fd;
	int stop_pipe[2];
	pthread_t thread;
	bool started;
};

/* ---- rendering ---- */

/* One counter family per disk counter, in this order. */
static const struct {
	const char *name, *help;
	size_t off;
} disk_ctr[] = {
    {"spacefs_chunk_reads_total", "Chunk reads completed.",
     offsetof(struct pool_disk_stats, reads)},
    {"spacefs_chunk_writes_total", "Chunk writes completed.",
     offsetof(struct pool_disk_stats, writes)},
    {"spacefs_chunk_read_bytes_total", "Bytes of chunk reads completed.",
     offsetof(struct pool_disk_stats, read_bytes)},
    {"spacefs_chunk_write_bytes_total", "Bytes of chunk writes completed.",
     offsetof(struct pool_disk_stats, write_bytes)},
    {"spacefs_chunk_errors_total", "Chunk I/O errors.", offsetof(struct pool_disk_stats, errors)},
    {"spacefs_checksum_errors_total", "Checksum mismatches found on read.",
     offsetof(struct pool_disk_stats, csum_errors)},
};
#define NCTR (sizeof(disk_ctr) / sizeof(disk_ctr[0]))

/* Counters of every locally served volume and disk, read once so each
 * family is printed from the same snapshot. */
struct snap {
	uint32_t nvol, ndisks;
	bool *local;		    /* [nvol] */
	struct pool_disk_stats *st; /* [nvol * ndisks] */
};

static int snap_take(struct fs *fs, struct snap *sn)
{
	pthread_mutex_lock(&fs->vol_lock);
	sn->nvol = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	sn->ndisks = fs->pool->ndisks;
	sn->local = calloc(sn->nvol ? sn->nvol : 1, sizeof(*sn->local));
	sn->st = calloc((size_t)(sn->nvol ? sn->nvol : 1) * (sn->ndisks ? sn->ndisks : 1),
			sizeof(*sn->st));
	if (!sn->local || !sn->st)
		return -ENOMEM;
	for (uint32_t i = 0; i < sn->nvol; i++) {
		struct fs_volume *v = fs->vol[i];
		if (!fs_vol_enter_local(v))
			continue;
		sn->local[i] = true;
		for (uint32_t d = 0; d < sn->ndisks; d++)
			pool_store_stats(v->store, d, &sn->st[(size_t)i * sn->ndisks + d]);
		fs_vol_leave(v);
	}
	return 0;
}

static void disk_counters(struct fs *fs, const struct snap *sn, struct fs_text *t)
{
	for (size_t c = 0; c < NCTR; c++) {
		const char *name = disk_ctr[c].name;
		fs_textf(t, "# HELP %s %s\n# TYPE %s counter\n", name, disk_ctr[c].help, name);
		for (uint32_t i = 0; i < sn->nvol; i++) {
			if (!sn->local[i])
				continue;
			for (uint32_t d = 0; d < sn->ndisks; d++) {
				const char *st = (const char *)&sn->st[(size_t)i * sn->ndisks + d];
				uint64_t val;
				memcpy(&val, st + disk_ctr[c].off, sizeof(val));
				fs_textf(t, "%s{volume=\"%s\",disk=\"%u\"} %" PRIu64 "\n", name,
					 fs->vol[i]->name, d, val);
			}
		}
	}
}

/* Bucket i holds I/Os under 2^i us: its upper bound is 2^i us, in
 * seconds as Prometheus wants; the buckets are cumulative. */
static void latency(struct fs *fs, const struct snap *sn, struct fs_text *t)
{
	const char *n = "spacefs_chunk_latency_seconds";

	fs_textf(t,
		 "# HELP %s Chunk I/O latency (the request's batch, per disk).\n"
		 "# TYPE %s histogram\n",
		 n, n);
	for (uint32_t i = 0; i < sn->nvol; i++) {
		if (!sn->local[i])
			continue;
		for (uint32_t d = 0; d < sn->ndisks; d++) {
			const struct pool_disk_stats *st = &sn->st[(size_t)i * sn->ndisks + d];
			const char *vol = fs->vol[i]->name;
			uint64_t cum = 0;
			for (unsigned b = 0; b + 1 < POOL_LAT_BUCKETS; b++) {
				cum += st->lat[b];
				fs_textf(t,
					 "%s_bucket{volume=\"%s\",disk=\"%u\",le=\"%.6g\"} %" PRIu64
					 "\n",
					 n, vol, d, (double)(1ull << b) * 1e-6, cum);
			}
			cum += st->lat[POOL_LAT_BUCKETS - 1];
			fs_textf(t,
				 "%s_bucket{volume=\"%s\",disk=\"%u\",le=\"+Inf\"} %" PRIu64 "\n",
				 n, vol, d, cum);
			fs_textf(t, "%s_sum{volume=\"%s\",disk=\"%u\"} %.6f\n", n, vol, d,
				 (double)st->lat_sum_us * 1e-6);
			fs_textf(t, "%s_count{volume=\"%s\",disk=\"%u\"} %" PRIu64 "\n", n, vol, d,
				 cum);
		}
	}
}

/* One counter per volume: its HELP and TYPE lines, then the value of the
 * volume's atomic counter at byte offset `field` of struct fs_volume for
 * each volume (times `scale`, as seconds, when scale is not 0). */
static void volume_counter(struct fs *fs, const struct snap *sn, struct fs_text *t,
			   const char *name, const char *help, size_t field, double scale)
{
	fs_textf(t, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (uint32_t i = 0; i < sn->nvol; i++) {
		const atomic_uint_fast64_t *c =
		    (const atomic_uint_fast64_t *)((const char *)fs->vol[i] + field);
		uint64_t v = (uint64_t)atomic_load(c);
		if (scale == 0)
			fs_textf(t, "%s{volume=\"%s\"} %" PRIu64 "\n", name, fs->vol[i]->name, v);
		else
			fs_textf(t, "%s{volume=\"%s\"} %.6f\n", name, fs->vol[i]->name,
				 (double)v * scale);
	}
}

static void volumes(struct fs *fs, const struct snap *sn, struct fs_text *t)
{
	volume_counter(fs, sn, t, "spacefs_volume_read_bytes_total",
		       "Bytes applications read from the volume.",
		       offsetof(struct fs_volume, read_bytes), 0);
	volume_counter(fs, sn, t, "spacefs_volume_write_bytes_total",
		       "Bytes applications wrote to the volume.",
		       offsetof(struct fs_volume, write_bytes), 0);
	volume_counter(fs, sn, t, "spacefs_ckpt_log_records_total",
		       "Checkpoint log block records (first writes after a checkpoint, merges).",
		       offsetof(struct fs_volume, ckpt_recs), 0);
	volume_counter(fs, sn, t, "spacefs_ckpt_log_appends_total",
		       "Appends (one write per log replica) that carried them.",
		       offsetof(struct fs_volume, ckpt_appends), 0);
	volume_counter(fs, sn, t, "spacefs_ckpt_log_wait_seconds_total",
		       "Time writers waited for their block records to be in the log.",
		       offsetof(struct fs_volume, ckpt_wait_ns), 1e-9);
	fs_textf(t, "# HELP spacefs_volume_owner Owner of the volume (1) as this node sees it; "
		    "access is direct, redirected or read-only.\n"
		    "# TYPE spacefs_volume_owner gauge\n");
	for (uint32_t i = 0; i < sn->nvol; i++) {
		char node[POOL_NODE_NAME_MAX + 1] = "", addr[POOL_ADDR_MAX];
		uint64_t epoch = 0;
		bool valid = true;
		if (fs->node)
			fs_node_owner(fs->vol[i], node, addr, &epoch, &valid);
		else
			snprintf(node, sizeof(node), "%s", fs->opt.node);
		const char *acc = sn->local[i]	      ? "direct"
				  : fs->opt.ro_others ? "read-only"
						      : "redirected";
		fs_textf(t, "spacefs_volume_owner{volume=\"%s\",owner=\"%s\",access=\"%s\"} 1\n",
			 fs->vol[i]->name, valid ? node : "", acc);
	}
	fs_textf(t, "# HELP spacefs_volume_owner_epoch Ownership epoch of the volume (0 with one "
		    "node).\n# TYPE spacefs_volume_owner_epoch gauge\n");
	for (uint32_t i = 0; i < sn->nvol; i++) {
		char node[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
		uint64_t epoch = 0;
		bool valid;
		if (fs->node)
			fs_node_owner(fs->vol[i], node, addr, &epoch, &valid);
		fs_textf(t, "spacefs_volume_owner_epoch{volume=\"%s\"} %" PRIu64 "\n",
			 fs->vol[i]->name, epoch);
	}
}

static void pool_state(struct fs *fs, struct fs_text *t)
{
	static const char *const health[] = {"healthy", "degraded", "incomplete"};

	pthread_rwlock_rdlock(&fs->pool_lock);
	const char *h = pool_health(fs->pool);
	fs_textf(t, "# HELP spacefs_pool_health Pool health: 1 for the current one.\n"
		    "# TYPE spacefs_pool_health gauge\n");
	for (size_t i = 0; i < 3; i++)
		fs_textf(t, "spacefs_pool_health{state=\"%s\"} %d\n", health[i],
			 !strcmp(h, health[i]));
	fs_textf(t,
		 "# HELP spacefs_disk_healthy 1 if the disk is healthy, else 0 (state says why).\n"
		 "# TYPE spacefs_disk_healthy gauge\n");
	for (uint32_t d = 0; d < fs->pool->ndisks; d++)
		fs_textf(t, "spacefs_disk_healthy{disk=\"%u\",state=\"%s\"} %d\n", d,
			 pool_disk_state_name(fs->pool->disk[d].state),
			 fs->pool->disk[d].state == POOL_DISK_HEALTHY);
	pthread_rwlock_unlock(&fs->pool_lock);
}

/* Jobs come from fs_jobs_json, whose format is fixed (fs/jobs.c); each
 * object is read with one sscanf, and one that does not match is
 * skipped rather than half printed. */
static void jobs(struct fs *fs, struct fs_text *t)
{
	char *js = fs->jobs ? fs_jobs_json(fs) : NULL;

	fs_textf(t, "# HELP spacefs_job_done Units done of a repair, scrub or retire job.\n"
		    "# TYPE spacefs_job_done gauge\n"
		    "# HELP spacefs_job_total Units a job has to do (done/total is its progress).\n"
		    "# TYPE spacefs_job_total gauge\n");
	for (const char *p = js ? strchr(js, '{') : NULL; p; p = strchr(p + 1, '{')) {
		unsigned id, disk;
		char kind[16], state[16], vol[POOL_NAME_MAX + 1] = "";
		unsigned long long done, total;
		int at = 0;
		if (sscanf(p,
			   "{\"id\":%u,\"kind\":\"%15[^\"]\",\"state\":\"%15[^\"]\",\"disk\":%u,"
			   "\"volume\":\"%n",
			   &id, kind, state, &disk, &at) != 4 ||
		    !at)
			continue;
		const char *q = p + at, *e = strchr(q, '"');
		if (!e || (size_t)(e - q) > POOL_NAME_MAX ||
		    sscanf(e, "\",\"done\":%llu,\"total\":%llu", &done, &total) != 2)
			continue;
		memcpy(vol, q, (size_t)(e - q));
		vol[e - q] = '\0';
		const char *lbl = "{job=\"%u\",kind=\"%s\",state=\"%s\",disk=\"%u\",volume=\"%s\"}";
		char l[160];
		snprintf(l, sizeof(l), lbl, id, kind, state, disk, vol);
		fs_textf(t, "spacefs_job_done%s %llu\nspacefs_job_total%s %llu\n", l, done, l,
			 total);
	}
	free(js);
}

char *fs_metrics_text(struct fs *fs)
{
	struct fs_text t = {0};
	struct snap sn = {0};

	if (snap_take(fs, &sn) == 0) {
		fs_textf(&t, "# HELP spacefs_info The daemon: node, pool and version.\n"
			     "# TYPE spacefs_info gauge\n");
		fs_textf(&t, "spacefs_info{node=\"%s\",pool=\"%s\",version=\"%s\"} 1\n",
			 fs->opt.node, fs->pool->sb->pool_name, SPACEFS_VERSION);
		disk_counters(fs, &sn, &t);
		latency(fs, &sn, &t);
		volumes(fs, &sn, &t);
		pool_state(fs, &t);
		jobs(fs, &t);
	} else {
		t.failed = 1;
	}
	free(sn.local);
	free(sn.st);
	if (t.failed) {
		free(t.s);
		return NULL;
	}
	return t.s;
}

/* ---- the HTTP listener ---- */

/* "HOST:PORT" or "[V6]:PORT" into a bound, listening socket. */
static int listen_at(const char *addr, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	size_t hl = colon ? (size_t)(colon - addr) : 0;

	if (!colon || hl == 0 || hl >= sizeof(host) || !colon[1]) {
		snprintf(err, errlen, "metrics=%s: want ADDR:PORT", addr);
		return -EINVAL;
	}
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
			*ai;
	int rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "metrics=%s: %s", addr, gai_strerror(rc));
		return -EINVAL;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		rc = -errno;
		snprintf(err, errlen, "metrics=%s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = rc;
	}
	freeaddrinfo(ai);
	return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t w = send(fd, s, len, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		s += w;
		len -= (size_t)w;
	}
}

/* Read the request head (bounded, with the socket's timeout) and answer. */
static void serve_one(struct fs *fs, int cfd)
{
	char req[REQ_MAX + 1], head[256];
	size_t len = 0;
	struct timeval tv = {.tv_sec = 5};

	setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (len < REQ_MAX) {
		ssize_t r = recv(cfd, req + len, REQ_MAX - len, 0);
		if (r <= 0)
			return;
		len += (size_t)r;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	req[len] = '\0';
	const char *status = "200 OK";
	char *body = NULL;
	if (strncmp(req, "GET ", 4) != 0)
		status = "405 Method Not Allowed";
	else if (strncmp(req + 4, "/metrics ", 9) && strncmp(req + 4, "/ ", 2))
		status = "404 Not Found";
	else if (!(body = fs_metrics_text(fs)))
		status = "500 Internal Server Error";
	size_t blen = body ? strlen(body) : 0;
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, blen);
	send_all(cfd, head, (size_t)n);
	if (body)
		send_all(cfd, body, blen);
	free(body);
}

static void *metrics_main(void *arg)
{
	struct fs *fs = arg;

	fs_accept_loop(fs, fs->metrics->fd, fs->metrics->stop_pipe[0], serve_one);
	return NULL;
}

int fs_metrics_open(struct fs *fs, char *err, size_t errlen)
{
	struct fs_metrics *m;
	int rc;

	err[0] = '\0';
	if (!fs->opt.metrics)
		return 0;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->fd = listen_at(fs->opt.metrics, err, errlen);
	if (m->fd < 0) {
		rc = m->fd;
		free(m);
		return rc;
	}
	if (pipe2(m->stop_pipe, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, errlen, "metrics: pipe: %s", strerror(errno));
		close(m->fd);
		free(m);
		return rc;
	}
	m->started = false;
	fs->metrics = m;
	return 0;
}

int fs_metrics_start(struct fs *fs, char *err, size_t errlen)
{
	struct fs_metrics *m = fs->metrics;
	int rc;

	err[0] = '\0';
	if (!m)
		return 0;
	rc = -pthread_create(&m->thread, NULL, metrics_main, fs);
	if (rc < 0)
		snprintf(err, errlen, "metrics: thread: %s", strerror(-rc));
	m->started = rc == 0;
	return rc;
}

void fs_metrics_stop(struct fs *fs)
{
	struct fs_metrics *m = fs->metrics;

	if (!m)
		return;
	if (m->started) {
		if (write(m->stop_pipe[1], "x", 1) < 0)
			perror("spacefs: stopping the metrics listener");
		pthread_join(m->thread, NULL);
	}
	close(m->fd);
	close(m->stop_pipe[0]);
	close(m->stop_pipe[1]);
	free(m);
	fs->metrics = NULL;
}
