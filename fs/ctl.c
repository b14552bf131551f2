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
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/fs.h"
#include "pool/journal.h"
#include "pool/wback.h"
#include "fs/text.h"
#include "fs/node.h"
#include "pool/catalog.h"
#include "pool/ctl.h"

struct fs_ctl {
	int fd;
	int stop_pipe[2];
	pthread_t thread;
	char path[108];
};

/* ---- commands ---- */

/* Several nodes: who owns the volume and how this node reaches it. */
static const char *access_mode(struct fs *fs, bool local)
{
	return local ? "direct" : fs->opt.ro_others ? "read-only" : "redirected";
}

static void owner_json(struct fs *fs, struct fs_volume *v, bool local, struct fs_text *o)
{
	char node[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
	uint64_t epoch;
	bool valid;

	fs_node_owner(v, node, addr, &epoch, &valid);
	pthread_mutex_lock(&v->vn->info_lock);
	char pref[POOL_NODE_NAME_MAX + 1];
	memcpy(pref, v->vn->pref, sizeof(pref));
	pthread_mutex_unlock(&v->vn->info_lock);
	fs_textf(
	    o,
	    "\"owner\":\"%s\",\"owner_addr\":\"%s\",\"epoch\":%" PRIu64
	    ",\"preferred\":\"%s\",\"access\":\"%s\",\"redirected_ops\":%" PRIu64
	    ",\"redirected_bytes\":%" PRIu64 ",\"served_ops\":%" PRIu64 ",\"served_bytes\":%" PRIu64
	    ",",
	    valid ? node : "", valid ? addr : "", epoch, pref, access_mode(fs, local),
	    (uint64_t)atomic_load(&v->vn->redir_ops), (uint64_t)atomic_load(&v->vn->redir_bytes),
	    (uint64_t)atomic_load(&v->vn->served_ops), (uint64_t)atomic_load(&v->vn->served_bytes));
}

/* "owners": VOLUME OWNER ADDR EPOCH ACCESS REDIRECTED_OPS REDIRECTED_BYTES PREFERRED */
static void cmd_owners(struct fs *fs, struct fs_text *o)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);

	if (!fs->node) {
		fs_textf(o, "error: this daemon runs as a single node (no listen= option)\n");
		return;
	}
	fs_textf(o, "ok\n");
	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		char node[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
		uint64_t epoch;
		if (fs_volume_gone(v))
			continue;
		bool valid, local = fs_vol_enter_local(v);
		if (local)
			fs_vol_leave(v);
		fs_node_owner(v, node, addr, &epoch, &valid);
		pthread_mutex_lock(&v->vn->info_lock);
		char pref[POOL_NODE_NAME_MAX + 1];
		memcpy(pref, v->vn->pref, sizeof(pref));
		pthread_mutex_unlock(&v->vn->info_lock);
		fs_textf(o, "%s\t%s\t%s\t%" PRIu64 "\t%s\t%" PRIu64 "\t%" PRIu64 "\t%s\n", v->name,
			 valid ? node : "-", valid ? addr : "-", epoch, access_mode(fs, local),
			 (uint64_t)atomic_load(&v->vn->redir_ops),
			 (uint64_t)atomic_load(&v->vn->redir_bytes), pref[0] ? pref : "-");
	}
}

static void cmd_owner_move(struct fs *fs, struct fs_text *o, char **argv, int argc)
{
	char err[512] = "";

	if (!fs->node || argc != 3) {
		fs_textf(o, "error: %s\n",
			 fs->node ? "owner-move takes VOLUME NODE"
				  : "this daemon runs as a single node");
		return;
	}
	int rc = fs_node_move(fs, argv[1], argv[2], err, sizeof(err));
	if (rc < 0)
		fs_textf(o, "error: %s\n", err[0] ? err : strerror(-rc));
	else
		fs_textf(o, "ok\n");
}

/* Balance here, and ask every other live node to balance too. */
static void cmd_owner_balance(struct fs *fs, struct fs_text *o)
{
	struct fs_node *n = fs->node;
	char addrs[64][POOL_ADDR_MAX];
	uint32_t na = 0;

	if (!n) {
		fs_textf(o, "error: this daemon runs as a single node\n");
		return;
	}
	fs_node_kick(fs, true);
	pthread_mutex_lock(&n->lock);
	for (uint32_t i = 0; i < n->nlive; i++)
		if (strcmp(n->live[i], n->name))
			memcpy(addrs[na++], n->live_addr[i], POOL_ADDR_MAX);
	pthread_mutex_unlock(&n->lock);
	for (uint32_t i = 0; i < na; i++) {
		struct wire_req q = {.type = W_BALANCE, .name = "", .name2 = ""};
		struct wire_rep p;
		uint8_t *raw = NULL;
		fs_rpc_call(n->rpc, addrs[i], &q, &p, &raw);
		free(raw);
	}
	fs_textf(o, "ok\n");
}

/* Where each journal copy is (pool disk, -1 unknown), whether it is in
 * service, and the record bytes written to it: arrays in the flat
 * "journal" object, so a test or an admin sees which disk takes the
 * journal writes (a journal disk, or the volume's own disks). */
static void journal_copies_json(struct fs_text *o, const struct pool_journal_stats *js)
{
	const char *key[3] = {"copy_disk", "copy_in_service", "copy_bytes"};

	for (int k = 0; k < 3; k++) {
		fs_textf(o, ",\"%s\":[", key[k]);
		for (uint32_t i = 0; i < js->ncopyslot; i++) {
			int64_t val = k == 0   ? js->copy[i].disk
				      : k == 1 ? js->copy[i].in_service
					       : (int64_t)js->copy[i].bytes;
			fs_textf(o, "%s%" PRId64, i ? "," : "", val);
		}
		fs_textf(o, "]");
	}
}

static void status_volume(struct fs *fs, struct fs_text *o, struct fs_volume *v)
{
	uint32_t nd = fs->pool->ndisks;
	char full[POOL_MSG_MAX];

	pthread_rwlock_rdlock(&fs->pool_lock);
	fs_health_cannot_allocate(fs, &v->geom, full, sizeof(full));
	pthread_rwlock_unlock(&fs->pool_lock);
	bool local = fs_vol_enter_local(v);
	/* cannot_allocate comes right after the name: spacectl finds each
	 * volume's by looking for the first one after its name */
	fs_textf(o,
		 "{\"name\":\"%s\",\"cannot_allocate\":\"%s\",\"id\":%u,\"read_bytes\":%" PRIu64
		 ",\"write_bytes\":%" PRIu64 ",\"meta_txn\":%" PRIu64 ",\"meta_replicas\":%u,",
		 v->name, full, v->id, (uint64_t)atomic_load(&v->read_bytes),
		 (uint64_t)atomic_load(&v->write_bytes), local ? pool_meta_txn(v->meta) : 0,
		 local ? pool_meta_live_replicas(v->meta) : 0);
	if (local && v->journal) {
		struct pool_journal_stats js;
		struct pool_wb_stats ws = {0};
		pool_journal_stats(v->journal, &js);
		if (v->wb)
			pool_wb_stats(v->wb, &ws);
		/* one flat object: spacectl copies it up to its first '}' */
		fs_textf(o,
			 "\"journal\":{\"mode\":\"%s\",\"size\":%" PRIu64 ",\"used\":%" PRIu64
			 ",\"copies\":%u,\"records\":%" PRIu64 ",\"commits\":%" PRIu64
			 ",\"bytes\":%" PRIu64 ",\"checkpoints\":%" PRIu64 ",\"replayed\":%" PRIu64
			 ",\"damaged\":%" PRIu64 ",\"replaying\":%u,\"replay_bytes\":%" PRIu64
			 ",\"unapplied\":%" PRIu64 ",\"held\":%" PRIu64 ",\"held_limit\":%" PRIu64
			 ",\"applied\":%" PRIu64 ",\"apply_rate\":%" PRIu64
			 ",\"applied_bytes\":%" PRIu64 ",\"gathered_bytes\":%" PRIu64
			 ",\"stripe_writes\":%" PRIu64 ",\"waits\":%" PRIu64,
			 v->wb ? "write-back" : "write-through", js.size, js.used, js.copies,
			 js.records, js.commits, js.bytes, js.checkpoints, js.replayed, js.damaged,
			 js.replaying, js.replay_bytes, ws.queued, ws.held, ws.limit, ws.applied,
			 ws.rate, ws.written, ws.superseded, ws.stripes, ws.waits);
		journal_copies_json(o, &js);
		fs_textf(o, "},");
	}
	if (fs->node)
		owner_json(fs, v, local, o);
	fs_textf(o, "\"disks\":[");
	for (uint32_t d = 0; d < nd; d++) {
		struct pool_disk_stats st = {0};
		if (local)
			pool_store_stats(v->store, d, &st);
		fs_textf(o,
			 "%s{\"index\":%u,\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
			 ",\"read_bytes\":%" PRIu64 ",\"write_bytes\":%" PRIu64
			 ",\"errors\":%" PRIu64 ",\"csum_errors\":%" PRIu64 "}",
			 d ? "," : "", d, st.reads, st.writes, st.read_bytes, st.write_bytes,
			 st.errors, st.csum_errors);
	}
	fs_textf(o, "]}");
	if (local)
		fs_vol_leave(v);
}

/* "full_disks":"1,3" (for spacectl's text, "" if none) and per disk what
 * ENOSPC answers and statvfs said: "disk_space":[{...},...]. */
static void status_space(struct fs *fs, struct fs_text *o)
{
	uint32_t nd = fs->pool->ndisks, nfull = 0;

	fs_textf(o, "\"full_disks\":\"");
	for (uint32_t d = 0; d < nd; d++) {
		struct fs_disk_space sp;
		fs_health_space(fs, d, &sp);
		if (sp.full)
			fs_textf(o, "%s%u", nfull++ ? "," : "", d);
	}
	fs_textf(o, "\",\"disk_space\":[");
	for (uint32_t d = 0; d < nd; d++) {
		struct fs_disk_space sp;
		fs_health_space(fs, d, &sp);
		fs_textf(o,
			 "%s{\"index\":%u,\"full\":%s,\"enospc\":%" PRIu64
			 ",\"last_enospc\":%" PRId64,
			 d ? "," : "", d, sp.full ? "true" : "false", sp.enospc, sp.last_enospc);
		if (sp.have_free)
			fs_textf(o, ",\"free\":%" PRIu64 "}", sp.free);
		else
			fs_textf(o, ",\"free\":null}");
	}
	fs_textf(o, "],");
}

/* Each disk's emulated-disk model and busy time since mount:
 * "disk_busy":[{"index":0,"model":"hdd-7200","busy_ns":..,...},...], */
static void status_busy(struct fs *fs, struct fs_text *o)
{
	uint64_t now = pool_diskq_now();

	fs_textf(o, "\"disk_busy\":[");
	for (uint32_t d = 0; d < fs->pool->ndisks && fs->diskq[d]; d++) {
		struct pool_diskq_stats st;
		pool_diskq_stats(fs->diskq[d], now, &st);
		fs_textf(o,
			 "%s{\"index\":%u,\"model\":\"%s\",\"busy_ns\":%" PRIu64
			 ",\"elapsed_ns\":%" PRIu64 ",\"ios\":%" PRIu64 "}",
			 d ? "," : "", d, pool_diskmodel_name(&st.m), st.busy_ns, st.elapsed_ns,
			 st.ios);
	}
	fs_textf(o, "],");
}

/* "disk-busy": one line per disk, DISK MODEL BUSY_NS ELAPSED_NS IOS
 * (tab-separated), for spacectl's table. */
static void cmd_disk_busy(struct fs *fs, struct fs_text *o)
{
	uint64_t now = pool_diskq_now();

	fs_textf(o, "ok\n");
	for (uint32_t d = 0; d < fs->pool->ndisks && fs->diskq[d]; d++) {
		struct pool_diskq_stats st;
		pool_diskq_stats(fs->diskq[d], now, &st);
		fs_textf(o, "%u\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\n", d,
			 pool_diskmodel_name(&st.m), st.busy_ns, st.elapsed_ns, st.ios);
	}
}

/* "disk-model DISK KIND PRESET RPM SEEKMIN SEEKAVG RLAT WLAT RMBPS WMBPS
 * RIOPS WIOPS": record the model in the pool and serve the disk by it from
 * now on. */
static void cmd_disk_model(struct fs *fs, struct fs_text *o, char **argv, int argc)
{
	char err[POOL_MSG_MAX * 2];
	uint32_t v[12];

	if (argc != 13) {
		fs_textf(o, "error: malformed disk-model request\n");
		return;
	}
	for (int i = 0; i < 12; i++) {
		char *end;
		unsigned long x = strtoul(argv[1 + i], &end, 10);
		if (end == argv[1 + i] || *end || x > UINT32_MAX) {
			fs_textf(o, "error: disk-model: bad number '%.32s'\n", argv[1 + i]);
			return;
		}
		v[i] = (uint32_t)x;
	}
	struct pool_diskmodel m = {.kind = v[1],
				   .preset = v[2],
				   .rpm = v[3],
				   .seek_min_us = v[4],
				   .seek_avg_us = v[5],
				   .read_lat_us = v[6],
				   .write_lat_us = v[7],
				   .read_mbps = v[8],
				   .write_mbps = v[9],
				   .read_iops = v[10],
				   .write_iops = v[11]};
	if (fs->opt.read_only) {
		fs_textf(o, "error: the pool is mounted read-only\n");
		return;
	}
	pthread_rwlock_wrlock(&fs->pool_lock);
	int rc = pool_disk_set_model(fs->pool, v[0], &m, err, sizeof(err));
	pthread_rwlock_unlock(&fs->pool_lock);
	if (rc < 0) {
		fs_textf(o, "error: %s\n", err);
		return;
	}
	pool_diskq_set(fs->diskq[v[0]], &m);
	fs_log("disk %u now emulates %s", v[0], pool_diskmodel_name(&m));
	fs_textf(o, "ok\n");
}

static void cmd_status(struct fs *fs, struct fs_text *o)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);

	/* Volume and node names are [A-Za-z0-9._-]: no JSON escaping needed,
	 * but the mount point is any path, so it is escaped. */
	fs_textf(o, "ok\n{\"node\":\"%s\",\"pid\":%d,\"mountpoint\":\"", fs->opt.node,
		 (int)getpid());
	for (const char *p = fs->opt.mountpoint; *p; p++) {
		if (*p == '"' || *p == '\\')
			fs_textf(o, "\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			fs_textf(o, "\\u%04x", *p);
		else
			fs_textf(o, "%c", *p);
	}
	fs_textf(o, "\",\"read_only\":%s,\"volumes\":[", fs->opt.read_only ? "true" : "false");
	for (uint32_t i = 0, shown = 0; i < n; i++) {
		if (fs_volume_gone(fs->vol[i]))
			continue;
		if (shown++)
			fs_textf(o, ",");
		status_volume(fs, o, fs->vol[i]);
	}
	char *jobs = fs->jobs ? fs_jobs_json(fs) : NULL;
	char fuse[2048];
	if (fs_chan_json(fs, fuse, sizeof(fuse)) < 0)
		snprintf(fuse, sizeof(fuse), "{}");
	fs_textf(o, "],\"fuse\":%s,", fuse);
	status_space(fs, o);
	status_busy(fs, o);
	fs_textf(o, "\"pool_health\":\"%s\",\"jobs\":%s}\n", pool_health(fs->pool),
		 jobs ? jobs : "[]");
	free(jobs);
}

/* One line per volume and disk: the same counters as status, as
 * tab-separated fields for spacectl's table (see pool/ctl.h). */
static void cmd_counters(struct fs *fs, struct fs_text *o)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);

	fs_textf(o, "ok\n");
	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		if (fs_volume_gone(v) || !fs_vol_enter_local(v))
			continue; /* owned by another node: its counters are there */
		for (uint32_t d = 0; d < fs->pool->ndisks; d++) {
			struct pool_disk_stats st;
			pool_store_stats(v->store, d, &st);
			fs_textf(o,
				 "%s\t%u\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
				 "\t%" PRIu64 "\t%" PRIu64 "\n",
				 v->name, d, st.reads, st.writes, st.read_bytes, st.write_bytes,
				 st.errors, st.csum_errors);
		}
		fs_vol_leave(v);
	}
}

/* "metrics": the counters in the Prometheus text format (fs/metrics.c),
 * for `spacectl metrics`. */
static void cmd_metrics(struct fs *fs, struct fs_text *o)
{
	char *text = fs_metrics_text(fs);

	if (text)
		fs_textf(o, "ok\n%s", text);
	else
		fs_textf(o, "error: out of memory\n");
	free(text);
}

/* The host part of a node address "HOST:PORT" or "[V6]:PORT" into host;
 * "-" if there is none. */
static void addr_host(const char *addr, char *host, size_t size)
{
	const char *colon = strrchr(addr, ':');
	size_t n = colon ? (size_t)(colon - addr) : 0;

	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
	}
	if (n == 0 || n >= size)
		snprintf(host, size, "-");
	else
		snprintf(host, size, "%.*s", (int)n, addr);
}

/* "shares": where this node mounts the pool and who owns each volume, for
 * `spacectl smbconf` (format in pool/ctl.h).  A single node owns every
 * volume; with several, the owner and its host come from the lock. */
static void cmd_shares(struct fs *fs, struct fs_text *o)
{
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t n = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);

	fs_textf(o, "ok\nmount\t%s\t%s\t%d\n", fs->opt.node, fs->opt.mountpoint,
		 fs->opt.allow_other);
	for (uint32_t i = 0; i < n; i++) {
		struct fs_volume *v = fs->vol[i];
		char owner[POOL_NODE_NAME_MAX + 1] = "-", addr[POOL_ADDR_MAX] = "", host[256] = "-";
		uint64_t epoch = 0;
		bool valid = true;
		if (fs_volume_gone(v))
			continue;
		if (fs->node) {
			fs_node_owner(v, owner, addr, &epoch, &valid);
			addr_host(addr, host, sizeof(host));
		} else {
			snprintf(owner, sizeof(owner), "%s", fs->opt.node);
		}
		fs_textf(o, "volume\t%s\t%s\t%s\t%" PRIu64 "\t%s\n", v->name, valid ? owner : "-",
			 valid ? host : "-", epoch, layout_kind_name(v->geom.kind));
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

/* "volume-create NAME LAYOUT COPIES PARITY COLUMNS INTERLEAVE INTEGRITY
 * [JOURNAL JOURNAL_MIB]" (the journal pair is absent from older spacectl) */
static void cmd_volume_create(struct fs *fs, struct fs_text *o, char **argv, int argc)
{
	struct layout_geom g = {0};
	uint32_t integrity, journal = 0, journal_mib = 0;
	char err[512] = "";
	int rc = 0;

	if (argc != 8 && argc != 10) {
		fs_textf(o, "error: volume-create takes 7 or 9 arguments\n");
		return;
	}
	if (argc == 10 && (parse_u32(argv[8], POOL_VOLUME_JOURNAL_MAX, &journal) < 0 ||
			   parse_u32(argv[9], POOL_JOURNAL_MAX_MIB, &journal_mib) < 0)) {
		fs_textf(o, "error: volume-create: malformed arguments\n");
		return;
	}
	if (layout_kind_parse(argv[2], &g.kind) < 0 || parse_u32(argv[3], 3, &g.copies) < 0 ||
	    parse_u32(argv[4], 2, &g.parity) < 0 ||
	    parse_u32(argv[5], LAYOUT_MAX_COLUMNS, &g.columns) < 0 ||
	    parse_u32(argv[6], LAYOUT_MAX_INTERLEAVE, &g.interleave) < 0 ||
	    parse_u32(argv[7], 1, &integrity) < 0) {
		fs_textf(o, "error: volume-create: malformed arguments\n");
		return;
	}
	if (fs->opt.read_only) {
		fs_textf(o, "error: the pool is mounted read-only\n");
		return;
	}
	/* With several nodes, under the cluster's catalogue lock on the newest
	 * superblock; fs_catalog_end then opens it here (and every other node
	 * at its next heartbeat). */
	struct pool_catalog_lock l;
	rc = fs_catalog_begin(fs, &l, err, sizeof(err));
	if (rc < 0) {
		fs_textf(o, "error: %s\n", err);
		return;
	}
	rc = pool_volume_create(fs->pool, argv[1], &g, (int)integrity, err, sizeof(err));
	if (rc == 0 && (journal || journal_mib))
		rc = pool_volume_set_journal(fs->pool, argv[1], journal, journal_mib, err,
					     sizeof(err));
	struct pool_sb_volume pv;
	if (rc == 0) {
		const struct pool_sb_volume *found = pool_volume_find(fs->pool, argv[1]);
		if (found)
			pv = *found;
		else
			rc = -ENOENT;
	}
	fs_catalog_end(fs, &l);
	if (rc == 0 && fs->node)
		fs_catalog_apply(fs); /* opens it here; the others at their heartbeat */
	else if (rc == 0)
		rc = fs_volume_open(fs, &pv, err, sizeof(err));
	if (rc == 0 && !fs_volume_by_name(fs, argv[1])) {
		snprintf(err, sizeof(err), "volume %s: created, but not mounted here (see the log)",
			 argv[1]);
		rc = -EIO;
	}
	if (rc < 0)
		fs_textf(o, "error: %s\n", err[0] ? err : strerror(-rc));
	else
		fs_textf(o, "ok\n");
}

/* "volume-delete NAME": with several nodes, every node lets go of it
 * first (fs/catalog.c); a single-node daemon refuses. */
static void cmd_volume_delete(struct fs *fs, struct fs_text *o, char **argv, int argc)
{
	char err[POOL_MSG_MAX * 2] = "";

	if (argc != 2) {
		fs_textf(o, "error: volume-delete takes 1 argument\n");
		return;
	}
	int rc = fs_catalog_delete(fs, argv[1], err, sizeof(err));
	if (rc < 0)
		fs_textf(o, "error: %s\n", err[0] ? err : strerror(-rc));
	else
		fs_textf(o, "ok\n");
}

/* "volume-set-journal NAME MODE MIB": recorded now, applied when the
 * volume is next opened (mount or takeover). */
static void cmd_volume_set_journal(struct fs *fs, struct fs_text *o, char **argv, int argc)
{
	uint32_t mode, mib;
	char err[512] = "";

	if (argc != 4 || parse_u32(argv[2], POOL_VOLUME_JOURNAL_MAX, &mode) < 0 ||
	    parse_u32(argv[3], POOL_JOURNAL_MAX_MIB, &mib) < 0) {
		fs_textf(o, "error: volume-set-journal: malformed arguments\n");
		return;
	}
	if (fs->opt.read_only) {
		fs_textf(o, "error: the pool is mounted read-only\n");
		return;
	}
	pthread_rwlock_wrlock(&fs->pool_lock);
	int rc = pool_volume_set_journal(fs->pool, argv[1], mode, mib, err, sizeof(err));
	pthread_rwlock_unlock(&fs->pool_lock);
	if (rc < 0)
		fs_textf(o, "error: %s\n", err[0] ? err : strerror(-rc));
	else
		fs_textf(o, "ok\n");
}

/* Disks, repair, scrub and jobs: fs/jobs.c. */
static void cmd_jobs(struct fs *fs, struct fs_text *o, char **argv, int argc)
{
	char *r = fs_jobs_request(fs, argc, argv);

	fs_textf(o, "%s", r ? r : "error: out of memory\n");
	free(r);
}

static void dispatch(struct fs *fs, char *req, struct fs_text *o)
{
	char *argv[16];
	int argc = 0;

	for (char *tok = strtok(req, " \t\r\n"); tok && argc < 16; tok = strtok(NULL, " \t\r\n"))
		argv[argc++] = tok;
	if (argc == 0)
		fs_textf(o, "error: empty request\n");
	else if (strcmp(argv[0], "status") == 0 && argc == 1)
		cmd_status(fs, o);
	else if (strcmp(argv[0], "owners") == 0 && argc == 1)
		cmd_owners(fs, o);
	else if (strcmp(argv[0], "counters") == 0 && argc == 1)
		cmd_counters(fs, o);
	else if (strcmp(argv[0], "disk-busy") == 0 && argc == 1)
		cmd_disk_busy(fs, o);
	else if (strcmp(argv[0], "disk-model") == 0)
		cmd_disk_model(fs, o, argv, argc);
	else if (strcmp(argv[0], "metrics") == 0 && argc == 1)
		cmd_metrics(fs, o);
	else if (strcmp(argv[0], "volume-create") == 0)
		cmd_volume_create(fs, o, argv, argc);
	else if (strcmp(argv[0], "volume-set-journal") == 0)
		cmd_volume_set_journal(fs, o, argv, argc);
	else if (strcmp(argv[0], "volume-delete") == 0)
		cmd_volume_delete(fs, o, argv, argc);
	else if (strcmp(argv[0], "shares") == 0 && argc == 1)
		cmd_shares(fs, o);
	else if (strcmp(argv[0], "owner-move") == 0)
		cmd_owner_move(fs, o, argv, argc);
	else if (strcmp(argv[0], "owner-balance") == 0 && argc == 1)
		cmd_owner_balance(fs, o);
	else if (fs_ckpt_handles(argv[0]))
		fs_ckpt_request(fs, argc, argv, o);
	else if (fs_jobs_handles(argv[0]))
		cmd_jobs(fs, o, argv, argc);
	else
		fs_textf(o, "error: unknown request '%.64s'\n", argv[0]);
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
	struct fs_text o = {0};
	/* One thread serves every client: one that stops reading (or
	 * writing) must not wedge it, or unmount would wait forever. */
	struct timeval tv = {.tv_sec = 5};

	setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	if (read_request(cfd, req, sizeof(req)) < 0)
		fs_textf(&o, "error: request too long, empty or timed out\n");
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

void fs_accept_loop(struct fs *fs, int lfd, int stop_fd, void (*serve)(struct fs *, int))
{
	for (;;) {
		struct pollfd p[2] = {{.fd = lfd, .events = POLLIN},
				      {.fd = stop_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		serve(fs, cfd);
		close(cfd);
	}
}

static void *ctl_main(void *arg)
{
	struct fs *fs = arg;

	fs_accept_loop(fs, fs->ctl->fd, fs->ctl->stop_pipe[0], serve_one);
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
