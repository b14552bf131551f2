/*
 * spacectl.c -- the admin command line of spacefs.
 *
 *   spacectl pool create NAME DISK... [--force]
 *   spacectl volume create SOURCE NAME --layout L [options]
 *   spacectl volume list SOURCE [--json]
 *   spacectl volume delete SOURCE NAME
 *   spacectl volume set SOURCE NAME [--journal on|off] [--journal-size S] [--journal-mode M]
 *   spacectl status SOURCE [--json]
 *   spacectl smbconf SOURCE [...]         (tools/smbconf.c)
 *   spacectl owner move SOURCE VOLUME NODE
 *   spacectl owner balance SOURCE
 *   spacectl owner prefer SOURCE VOLUME NODE|none
 *   spacectl node drain|resume SOURCE NODE
 *   spacectl metrics SOURCE               (Prometheus text, from the daemon)
 *
 * Every command is two functions: cmd_X() turns argv into a struct of
 * parsed arguments, reporting usage errors; do_X() acts on that struct.
 * The split is there because there are two ways of acting: on the pool's
 * disks directly ("offline"), or, while a spacefs daemon has the pool
 * mounted, through the daemon's control socket, since the daemon's next
 * commit would silently undo a catalogue change made behind its back.
 * daemon_call() is where that choice is made (see "the running daemon").
 *
 * Errors are one line on stderr, "spacectl: <what>: <why>", and a
 * non-zero exit: 2 for a malformed command line, 1 for anything refused
 * or failed.  Validation happens before anything is written (pool/ checks
 * every argument first), so a refused command leaves the disks as they
 * were, byte for byte.  tests/cli/ holds us to that.
 */
#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "layout/layout.h"
#include "pool/ctl.h"
#include "pool/owner.h"
#include "pool/journal.h"
#include "pool/pool.h"
#include "tools/smbconf.h"
#include "tools/spacectl_ckpt.h"
#include "tools/spacectl_disk.h"
#include "tools/table.h"

#ifndef SPACEFS_VERSION
#define SPACEFS_VERSION "0.1.0"
#endif

#define EXIT_USAGE 2

static int say_error(int code, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The one line a failing command prints; returns the exit status. */
static int say_error(int code, const char *what, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "spacectl: ");
	if (what)
		fprintf(stderr, "%s: ", what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* ---- help ------------------------------------------------------------------ */

static const char help_main[] =
    "usage: spacectl COMMAND [ARGS...]\n"
    "\n"
    "Administer spacefs storage pools: directories used as disks, pooled into\n"
    "volumes with simple, mirror or parity layouts.  SOURCE is any member disk\n"
    "of a pool; the others are found through it.\n"
    "\n"
    "commands:\n"
    "  pool create NAME DISK... [--force]    make a new pool of DISK directories\n"
    "  volume create SOURCE NAME --layout L  add a volume (see volume create --help)\n"
    "  volume list SOURCE [--json]           list the volumes of a pool\n"
    "  volume delete SOURCE NAME             delete a volume and all its files\n"
    "  volume set SOURCE NAME [options]      change a volume's journal settings\n"
    "  status SOURCE [--json]                show the pool, its disks and volumes\n"
    "  smbconf SOURCE [--watch FILE]         smb.conf shares for the volumes (Samba)\n"
    "  owner move|balance|prefer ...         volume owners with several nodes\n"
    "  node drain|resume SOURCE NODE         take a node out of balancing and back\n"
    "  disk add|replace|retire|set|list ... the disks (spacectl disk --help)\n"
    "  repair SOURCE [VOLUME] [--wait]       rebuild replaced or returning disks\n"
    "  scrub SOURCE [VOLUME] [--wait]        check and repair every block\n"
    "  metrics SOURCE                        the daemon's counters for Prometheus\n"
    "  checkpoint create|list|merge|delete   freeze files at one instant, merge back\n"
    "  backup SOURCE VOLUME[/PATH] DEST      checkpoint, copy, merge (crash-consistent)\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help (also: spacectl COMMAND --help)\n"
    "  --version      show the version\n"
    "\n"
    "Errors are reported on one line as 'spacectl: WHAT: WHY' with exit status 1\n"
    "(2 for a malformed command line); a refused command changes nothing on disk.\n";

static const char help_pool[] = "usage: spacectl pool create NAME DISK... [--force] [--model M]\n"
				"\n"
				"pool commands:\n"
				"  create    make a new pool (spacectl pool create --help)\n";

static const char help_pool_create[] =
    "usage: spacectl pool create NAME DISK... [--force] [--model MODEL]\n"
    "\n"
    "Make a new pool called NAME from the DISK directories (usually the mount\n"
    "points of whole disks).  Each disk gets a spacefs.pool file describing the\n"
    "pool; nothing else is written.\n"
    "\n"
    "NAME is 1 to 64 characters of A-Z a-z 0-9 . _ - and does not start with '.'.\n"
    "Each DISK must exist, be a directory, appear once (also counting other\n"
    "paths to the same directory), not lie inside another DISK, be empty (a\n"
    "lost+found is allowed) and not already belong to a pool.\n"
    "\n"
    "options:\n"
    "  -f, --force    also accept non-empty directories and disks of another\n"
    "                 pool (their old spacefs.pool is overwritten; other files\n"
    "                 are left alone)\n"
    "  -m, --model MODEL\n"
    "                 every disk emulates this drive: hdd-7200, hdd-15k,\n"
    "                 ssd-sata, nvme or none (default); see spacectl disk set\n"
    "  -h, --help     show this help\n";

static const char help_volume[] =
    "usage: spacectl volume COMMAND ...\n"
    "\n"
    "volume commands:\n"
    "  create SOURCE NAME --layout L [options]   add a volume\n"
    "  list SOURCE [--json]                      list volumes\n"
    "  delete SOURCE NAME                        delete a volume and its files\n"
    "  set SOURCE NAME [--journal on|off] [--journal-mode M] [--journal-size S]\n"
    "                                        change settings\n"
    "\n"
    "See spacectl volume COMMAND --help.\n";

static const char help_owner[] =
    "usage: spacectl owner COMMAND ...\n"
    "\n"
    "With several nodes (spacefs -o listen=...) each volume has one owner node,\n"
    "the only one that writes it; the others redirect their I/O to it.\n"
    "\n"
    "owner commands:\n"
    "  move SOURCE VOLUME NODE        hand VOLUME over to NODE (a running node);\n"
    "                                 returns once NODE owns it, else exits 1\n"
    "                                 saying why\n"
    "  balance SOURCE                 spread volumes evenly over the live nodes\n"
    "  prefer SOURCE VOLUME NODE|none set or clear VOLUME's preferred owner\n"
    "\n"
    "SPACEFS_NODE=NAME picks which local daemon spacectl talks to.\n";

static const char help_node[] =
    "usage: spacectl node COMMAND ...\n"
    "\n"
    "With several nodes: take a node out of balancing for maintenance.\n"
    "\n"
    "node commands:\n"
    "  drain SOURCE NODE    move every volume NODE owns to the other nodes and keep\n"
    "                       them away (NODE still serves its clients, redirected);\n"
    "                       returns once NODE owns nothing\n"
    "  resume SOURCE NODE   give NODE its share again (balancing)\n"
    "\n"
    "The mark is kept on the pool's disks (drain/NODE), so it survives restarts.\n";

static const char help_volume_create[] =
    "usage: spacectl volume create SOURCE NAME --layout simple|mirror|parity\n"
    "                              [--copies 2|3] [--parity 1|2] [--columns N]\n"
    "                              [--interleave SIZE] [--integrity on|off]\n"
    "                              [--journal on|off] [--journal-size SIZE]\n"
    "                              [--journal-mode write-back|write-through]\n"
    "\n"
    "Add volume NAME to the pool that disk SOURCE belongs to.  NAME follows the\n"
    "pool name rules.  Its metadata is kept on the 3 disks with the most free\n"
    "space (all disks if the pool has fewer).\n"
    "\n"
    "options:\n"
    "  -l, --layout L       simple (striping, no redundancy), mirror (each\n"
    "                       column on COPIES disks) or parity (Reed-Solomon);\n"
    "                       required\n"
    "  -c, --copies N       mirror only: 2 (default) or 3 copies\n"
    "  -p, --parity N       parity only: 1 (default) or 2 parity columns\n"
    "  -n, --columns N      disks one stripe spans, as Storage Spaces counts:\n"
    "                       for parity data + parity columns (at least 2 data\n"
    "                       columns), for simple and mirror the data columns\n"
    "                       (a mirror needs COLUMNS x COPIES disks); default as\n"
    "                       many as the pool's disks allow, up to 8 (parity:\n"
    "                       data columns a power of two, so 1 MiB writes fill\n"
    "                       stripes: 4+1 on 5 to 8 disks)\n"
    "  -i, --interleave S   bytes per column per stripe: a power of two from 16K\n"
    "                       to 1M, in bytes or with a K or M suffix; default 256K\n"
    "  -I, --integrity X    on (default): CRC-32C of every 4 KiB block, checked\n"
    "                       on every read; off: faster, no checksums\n"
    "  -j, --journal X      parity only: on (default): every partial-stripe\n"
    "                       update is journaled first (write-through), so a\n"
    "                       crash followed by a lost disk cannot return bytes\n"
    "                       nobody wrote (the write hole); off: no journal\n"
    "  -J, --journal-size S parity only: bytes per journal copy, with K, M or\n"
    "                       G, 8M..64G in whole MiB; default 256M; at least\n"
    "                       2 x columns x interleave (two partial stripes)\n"
    "  -M, --journal-mode M parity only: write-through (default): in place before\n"
    "                       the acknowledgement; write-back: a small write is\n"
    "                       acknowledged once it is in the journal, a flusher\n"
    "                       puts it in place later, gathering writes per\n"
    "                       stripe (docs/OPERATIONS.md)\n"
    "  -h, --help           show this help\n"
    "\n"
    "example: spacectl volume create /disks/d0 vms --layout mirror --copies 2\n";

static const char help_volume_set[] =
    "usage: spacectl volume set SOURCE NAME [--journal on|off] [--journal-size SIZE]\n"
    "                           [--journal-mode write-back|write-through]\n"
    "\n"
    "Change settings of volume NAME.  A mounted daemon applies them the next\n"
    "time it opens the volume (mount, or takeover by another node); turning\n"
    "the journal off replays it first, so nothing it holds is lost.\n"
    "\n"
    "options:\n"
    "  -j, --journal X      parity only: on or off (see volume create --help)\n"
    "  -J, --journal-size S parity only: bytes per journal copy, 8M..64G\n"
    "  -M, --journal-mode M parity only: write-back or write-through\n"
    "  -h, --help           show this help\n";

static const char help_volume_list[] =
    "usage: spacectl volume list SOURCE [--json]\n"
    "\n"
    "List the volumes of the pool that disk SOURCE belongs to: name, layout,\n"
    "copies, parity, columns, interleave, integrity, metadata disks, usable\n"
    "free capacity (estimated) and state.\n"
    "\n"
    "options:\n"
    "  -j, --json     print JSON instead of a table\n"
    "  -h, --help     show this help\n";

static const char help_volume_delete[] =
    "usage: spacectl volume delete SOURCE NAME\n"
    "\n"
    "Delete volume NAME and every file in it, on every disk of the pool that\n"
    "disk SOURCE belongs to.  If interrupted, the volume stays listed as\n"
    "'deleting' and the command can be run again to finish.\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help\n";

static const char help_status[] =
    "usage: spacectl status SOURCE [--json]\n"
    "\n"
    "Show the pool that disk SOURCE belongs to: name, UUID, generation and\n"
    "health (healthy, degraded or incomplete); every disk (index, path, UUID,\n"
    "state, size, free space, and why it is not healthy); every volume (as\n"
    "volume list).  Works on incomplete pools too, read-only.\n"
    "\n"
    "options:\n"
    "  -j, --json     print JSON instead of tables\n"
    "  -h, --help     show this help\n";

static const char help_metrics[] =
    "usage: spacectl metrics SOURCE\n"
    "\n"
    "Print the counters of the spacefs daemon that has the pool of disk SOURCE\n"
    "mounted on this machine, in the Prometheus text format: per volume and disk\n"
    "chunk reads and writes, their bytes, I/O and checksum errors and a chunk\n"
    "latency histogram; per volume application bytes, owner and epoch; disk and\n"
    "pool health; repair and scrub progress.  The same text is served over HTTP\n"
    "by spacefs -o metrics=ADDR:PORT.  Fails if no daemon serves the pool here\n"
    "(SPACEFS_NODE=NAME picks one node's daemon when several run here).\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help\n";

static int show_help(const char *text)
{
	fputs(text, stdout);
	return 0;
}

/* ---- option parsing ------------------------------------------------------ */

/* getopt_long over argv with our own one-line messages.  Returns the
 * option, -1 at the end, or '?' after printing a usage error. */
static int next_opt(int argc, char **argv, const char *what, const char *shortopts,
		    const struct option *longopts)
{
	int c = getopt_long(argc, argv, shortopts, longopts, NULL);

	if (c == '?') {
		say_error(EXIT_USAGE, what, "unknown option '%s'; see spacectl %s --help",
			  argv[optind - 1], what);
		return '?';
	}
	if (c == ':') {
		say_error(EXIT_USAGE, what, "option '%s' needs a value", argv[optind - 1]);
		return '?';
	}
	return c;
}

static void opt_reset(void)
{
	optind = 0; /* glibc: full reinitialisation */
	opterr = 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* ---- the running daemon ------------------------------------------------- */

/*
 * While a spacefs daemon has the pool mounted it owns the catalogue: it
 * holds the superblock in memory and its next commit would overwrite a
 * change made offline (two different superblocks could even share one
 * generation).  So every command first asks whether a daemon serves the
 * pool (pool/ctl.h: a socket named after the pool UUID) and then:
 *   volume create   is sent to the daemon, which creates and mounts it;
 *   volume delete   is sent to the daemon too: with several nodes it
 *                   deletes the volume live, a single node refuses;
 *   status, list    read the disks (safe: superblocks are replaced
 *                   atomically), and status adds the daemon's counters.
 * A command the daemon learns later slots in the same way: build the
 * request from the parsed arguments and call daemon_call().
 */
static int daemon_call(const struct pool *p, const char *request, char **reply, char *err,
		       size_t errlen)
{
	char uuid[37];

	pool_uuid_format(p->sb->pool_uuid, uuid);
	err[0] = '\0';
	return pool_ctl_call(uuid, request, reply, err, errlen);
}

/* The string value of "key" in a flat JSON text, escapes left as they are
 * (for display only), or "?" . */
static void json_peek(const char *json, const char *key, char *out, size_t size)
{
	char pat[64];
	const char *p;
	size_t n = 0;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	snprintf(out, size, "?");
	if (!p)
		return;
	p += strlen(pat);
	if (*p == '"')
		p++;
	while (p[n] && p[n] != '"' && p[n] != ',' && p[n] != '}' && !(n > 0 && p[n - 1] == '\\') &&
	       n + 1 < size)
		n++;
	snprintf(out, size, "%.*s", (int)n, p);
}

/* ---- what the daemon says of full disks (its status JSON, fs/ctl.c) ---- */

/* The daemon's disk_space entry of disk d, or NULL. */
static const char *live_space(const char *live, uint32_t d)
{
	char pat[48];

	snprintf(pat, sizeof(pat), "{\"index\":%u,\"full\":", d);
	return live ? strstr(live, pat) : NULL;
}

static int live_disk_full(const char *live, uint32_t d)
{
	const char *sp = live_space(live, d);
	char v[16];

	if (!sp)
		return 0;
	json_peek(sp, "full", v, sizeof(v));
	return strcmp(v, "true") == 0;
}

/* Why the daemon says volume `name` cannot place new data, or "". */
static void live_cannot_allocate(const char *live, const char *name, char *out, size_t size)
{
	char pat[POOL_NAME_MAX + 32];
	const char *v;

	snprintf(pat, sizeof(pat), "{\"name\":\"%s\",\"cannot_allocate\":", name);
	out[0] = '\0';
	if (live && (v = strstr(live, pat)))
		json_peek(v, "cannot_allocate", out, size);
}

/* The daemon's journal counters of volume `name` ("journal":{...} in its
 * status), as a JSON object text, or "" if it has none. */
static void live_journal(const char *live, const char *name, char *out, size_t size)
{
	char pat[POOL_NAME_MAX + 32];
	const char *v, *jn, *end;

	snprintf(pat, sizeof(pat), "{\"name\":\"%s\",\"cannot_allocate\":", name);
	out[0] = '\0';
	if (!live || !(v = strstr(live, pat)) || !(jn = strstr(v, "\"journal\":{")))
		return;
	const char *disks = strstr(v, "\"disks\":[");
	if (disks && disks < jn)
		return; /* that one is a later volume's */
	jn += strlen("\"journal\":");
	if (!(end = strchr(jn, '}')) || (size_t)(end - jn + 2) > size)
		return;
	memcpy(out, jn, (size_t)(end - jn + 1));
	out[end - jn + 1] = '\0';
}

/* "full (disk 1)" / "full (disks 1,3)" for the health line, or "". */
static void live_full_disks(const char *live, char *out, size_t size)
{
	char list[POOL_MAX_DISKS * 4];

	out[0] = '\0';
	if (!live)
		return;
	json_peek(live, "full_disks", list, sizeof(list));
	if (list[0] && strcmp(list, "?"))
		snprintf(out, size, "full (disk%s %s)", strchr(list, ',') ? "s" : "", list);
}

/* Open SOURCE's pool, printing the error line on failure. */
static struct pool *open_pool(const char *source, unsigned flags)
{
	char err[POOL_MSG_MAX * 2];
	struct pool *p;

	if (pool_open(source, flags, &p, err, sizeof(err)) < 0) {
		say_error(1, NULL, "%s", err);
		return NULL;
	}
	return p;
}

/* Before changing a pool, say which disks will not get the change. */
static void warn_unhealthy(const struct pool *p)
{
	for (uint32_t i = 0; i < p->ndisks; i++)
		if (p->disk[i].state != POOL_DISK_HEALTHY)
			fprintf(stderr, "spacectl: warning: disk %u %s: %s\n", i,
				pool_disk_state_name(p->disk[i].state), p->disk[i].msg);
}

/* ---- pool create ----------------------------------------------------------- */

struct pool_create_args {
	const char *name;
	const char *const *disks;
	uint32_t ndisks;
	int force;
	struct pool_diskmodel model; /* kind NONE unless --model */
};

static int do_pool_create(const struct pool_create_args *a)
{
	char err[POOL_MSG_MAX * 2];

	if (pool_create_model(a->name, a->disks, a->ndisks, a->force, &a->model, err, sizeof(err)) <
	    0)
		return say_error(1, NULL, "%s", err);
	printf("pool '%s' created on %u disk%s", a->name, a->ndisks, a->ndisks == 1 ? "" : "s");
	if (a->model.kind != POOL_DISKMODEL_NONE)
		printf(", each emulating %s", pool_diskmodel_name(&a->model));
	printf("\n");
	return 0;
}

static int cmd_pool_create(int argc, char **argv)
{
	static const struct option lo[] = {{"force", no_argument, NULL, 'f'},
					   {"model", required_argument, NULL, 'm'},
					   {"help", no_argument, NULL, 'h'},
					   {0}};
	struct pool_create_args a = {0};
	int c;

	opt_reset();
	while ((c = next_opt(argc, argv, "pool create", ":fm:h", lo)) != -1) {
		if (c == '?')
			return EXIT_USAGE;
		if (c == 'h')
			return show_help(help_pool_create);
		if (c == 'm') {
			int rc = spacectl_model_parse(optarg, &a.model, "pool create");
			if (rc)
				return rc;
			continue;
		}
		a.force = 1;
	}
	if (optind >= argc)
		return say_error(EXIT_USAGE, "pool create", "needs NAME and at least one DISK");
	a.name = argv[optind++];
	if (optind >= argc)
		return say_error(EXIT_USAGE, "pool create", "pool '%s' needs at least one DISK",
				 a.name);
	a.disks = (const char *const *)&argv[optind];
	a.ndisks = (uint32_t)(argc - optind);
	return do_pool_create(&a);
}

/* ---- volume create --------------------------------------------------------- */

struct volume_create_args {
	const char *source, *name;
	enum layout_kind kind;
	uint32_t copies, parity, columns, interleave; /* 0: default */
	int integrity;
	int journal;	      /* -1: default, else POOL_VOLUME_JOURNAL_* */
	int journal_mode;     /* --journal-mode: -1, or POOL_VOLUME_JOURNAL_ON or _WB */
	uint32_t journal_mib; /* 0: default */
};

/* Fewest disks a layout can live on, for the "too few disks" message. */
static uint32_t min_disks(const struct volume_create_args *a)
{
	switch (a->kind) {
	case LAYOUT_MIRROR:
		return a->copies ? a->copies : 2;
	case LAYOUT_PARITY:
		return (a->parity ? a->parity : 1) + 2;
	default:
		return 1;
	}
}

/* The geometry asked for, Storage Spaces defaults filling the gaps. */
static int volume_geom(const struct pool *p, const struct volume_create_args *a,
		       struct layout_geom *g)
{
	if (a->columns == 0) {
		/* journal disks hold no data: only data disks count */
		uint32_t nd = pool_data_disks(p);
		if (layout_geom_default(g, a->kind, a->copies, a->parity, nd) < 0)
			return say_error(
			    1, "volume create",
			    "volume '%s': %s needs at least %u disks; pool '%s' has %u%s", a->name,
			    layout_kind_name(a->kind), min_disks(a), p->sb->pool_name, nd,
			    nd < p->ndisks ? " data disks" : "");
	} else {
		memset(g, 0, sizeof(*g));
		g->kind = a->kind;
		g->copies = a->kind == LAYOUT_MIRROR ? (a->copies ? a->copies : 2) : 1;
		g->parity = a->kind == LAYOUT_PARITY ? (a->parity ? a->parity : 1) : 0;
		g->columns = a->columns;
		g->interleave = 256 * 1024;
	}
	if (a->interleave)
		g->interleave = a->interleave;
	return 0;
}

static void describe_geom(const struct layout_geom *g, char *out, size_t size)
{
	char il[32];

	fmt_size(g->interleave, il, sizeof(il));
	if (g->kind == LAYOUT_MIRROR)
		snprintf(out, size, "mirror, %u copies, %u columns, %s interleave", g->copies,
			 g->columns, il);
	else if (g->kind == LAYOUT_PARITY)
		snprintf(out, size, "parity, %u parity, %u columns, %s interleave", g->parity,
			 g->columns, il);
	else
		snprintf(out, size, "simple, %u columns, %s interleave", g->columns, il);
}

/* The journal mode a new parity volume gets (docs/OPERATIONS.md says why
 * write-through: measured not slower, and it keeps the dirty-region log's
 * resync for a record rotten in every journal copy). */
#define DEFAULT_JOURNAL_MODE POOL_VOLUME_JOURNAL_ON

static const char *journal_mode_name(uint32_t m)
{
	return m == POOL_VOLUME_JOURNAL_OFF  ? "off"
	       : m == POOL_VOLUME_JOURNAL_WB ? "write-back"
					     : "write-through";
}

/* The mode --journal (onoff: -1, _ON or _OFF) and --journal-mode (mode: -1,
 * _ON or _WB) ask for, given the volume's current mode cur (-1: a new
 * volume): -1 if neither was given, or a negative errno after saying why. */
static int journal_resolve(int onoff, int mode, int cur)
{
	if (onoff == POOL_VOLUME_JOURNAL_OFF && mode >= 0)
		return say_error(EXIT_USAGE, "--journal-mode", "makes no sense with --journal off"),
		       -EINVAL;
	if (onoff == POOL_VOLUME_JOURNAL_OFF || mode >= 0)
		return onoff == POOL_VOLUME_JOURNAL_OFF ? POOL_VOLUME_JOURNAL_OFF : mode;
	if (onoff < 0)
		return cur < 0 ? DEFAULT_JOURNAL_MODE : -1;
	return cur >= 0 && cur != POOL_VOLUME_JOURNAL_OFF ? cur : DEFAULT_JOURNAL_MODE;
}

/* Hand the creation to the daemon serving the pool; -ENOENT if none. */
static int create_via_daemon(struct pool *p, const struct volume_create_args *a,
			     const struct layout_geom *g)
{
	char req[256], err[POOL_MSG_MAX];
	char *reply = NULL;
	int rc;

	snprintf(req, sizeof(req), "volume-create %s %s %u %u %u %u %d %u %u", a->name,
		 layout_kind_name(g->kind), g->copies, g->parity, g->columns, g->interleave,
		 a->integrity, a->journal < 0 ? 0 : (unsigned)a->journal, a->journal_mib);
	rc = daemon_call(p, req, &reply, err, sizeof(err));
	free(reply);
	if (rc == -ENOENT)
		return rc;
	if (rc < 0)
		return say_error(1, "volume create", "the running spacefs refused: %s",
				 err[0] ? err : strerror(-rc));
	return 0;
}

static int create_offline(struct pool *p, const struct volume_create_args *a,
			  const struct layout_geom *g)
{
	char err[POOL_MSG_MAX * 2];

	if (pool_volume_create(p, a->name, g, a->integrity, err, sizeof(err)) < 0)
		return say_error(1, NULL, "%s", err);
	if ((a->journal > 0 || a->journal_mib) &&
	    pool_volume_set_journal(p, a->name, a->journal < 0 ? 0 : (uint32_t)a->journal,
				    a->journal_mib, err, sizeof(err)) < 0)
		return say_error(1, NULL, "%s", err);
	warn_unhealthy(p);
	return 0;
}

static int do_volume_create(const struct volume_create_args *a)
{
	char err[POOL_MSG_MAX], desc[128];
	struct layout_geom g;
	struct pool *p = open_pool(a->source, 0);
	int rc;

	if (!p)
		return 1;
	rc = volume_geom(p, a, &g);
	/* Checked here too, so both paths refuse alike and before any change. */
	if (rc == 0 && pool_geom_fit(p, &g, err, sizeof(err)) < 0)
		rc = say_error(1, NULL, "volume '%s': %s", a->name, err);
	if (rc == 0 && a->journal != POOL_VOLUME_JOURNAL_OFF &&
	    pool_journal_fits(&g, a->journal_mib, err, sizeof(err)) < 0)
		rc = say_error(1, NULL, "volume '%s': %s", a->name, err);
	if (rc == 0 && (rc = create_via_daemon(p, a, &g)) == -ENOENT) {
		rc = pool_runlock_offline_pool(&p, a->source, err, sizeof(err));
		rc = rc < 0 ? say_error(1, NULL, "%s", err) : create_offline(p, a, &g);
	}
	if (rc == 0) {
		describe_geom(&g, desc, sizeof(desc));
		printf("volume '%s' created: %s, integrity %s%s%s\n", a->name, desc,
		       a->integrity ? "on" : "off", g.kind != LAYOUT_PARITY ? "" : ", journal ",
		       g.kind != LAYOUT_PARITY ? "" : journal_mode_name((uint32_t)a->journal));
	}
	pool_close(p);
	return rc;
}

/* --journal on|off (c 'j'), --journal-mode (c 'M') and --journal-size (c
 * 'J'), for create and set. */
static int journal_option(int c, const char *arg, int *mode, int *jmode, uint32_t *mib)
{
	if (c == 'M') {
		if (strcmp(arg, "write-back") && strcmp(arg, "write-through"))
			return say_error(EXIT_USAGE, "--journal-mode",
					 "must be write-back or write-through, not '%s'", arg);
		*jmode =
		    strcmp(arg, "write-back") ? POOL_VOLUME_JOURNAL_ON : POOL_VOLUME_JOURNAL_WB;
		return 0;
	}
	if (c == 'j') {
		if (strcmp(arg, "on") && strcmp(arg, "off"))
			return say_error(EXIT_USAGE, "--journal", "must be on or off, not '%s'",
					 arg);
		*mode = strcmp(arg, "on") ? POOL_VOLUME_JOURNAL_OFF : POOL_VOLUME_JOURNAL_ON;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 10);
	unsigned long long mul = 1;
	if (*end == 'K' || *end == 'k')
		mul = 1ull << 10;
	else if (*end == 'M' || *end == 'm')
		mul = 1ull << 20;
	else if (*end == 'G' || *end == 'g')
		mul = 1ull << 30;
	if (mul > 1)
		end++;
	if (errno || end == arg || *end || arg[0] == '-' || v > (1ull << 40) ||
	    (v * mul) % (1ull << 20) || v * mul < ((uint64_t)POOL_JOURNAL_MIN_MIB << 20) ||
	    v * mul > ((uint64_t)POOL_JOURNAL_MAX_MIB << 20))
		return say_error(EXIT_USAGE, "--journal-size",
				 "'%s' is not a size of whole MiB from %uM to %uM", arg,
				 POOL_JOURNAL_MIN_MIB, POOL_JOURNAL_MAX_MIB);
	*mib = (uint32_t)(v * mul >> 20);
	return 0;
}

static int vc_option(struct volume_create_args *a, int c, const char *arg, int *have_layout)
{
	switch (c) {
	case 'l':
		if (layout_kind_parse(arg, &a->kind) < 0)
			return say_error(EXIT_USAGE, "--layout",
					 "unknown layout '%s' (simple, mirror or parity)", arg);
		*have_layout = 1;
		return 0;
	case 'c':
		if (parse_u32(arg, &a->copies) < 0 || a->copies < 2 || a->copies > 3)
			return say_error(EXIT_USAGE, "--copies", "must be 2 or 3, not '%s'", arg);
		return 0;
	case 'p':
		if (parse_u32(arg, &a->parity) < 0 || a->parity < 1 || a->parity > 2)
			return say_error(EXIT_USAGE, "--parity", "must be 1 or 2, not '%s'", arg);
		return 0;
	case 'n':
		if (parse_u32(arg, &a->columns) < 0 || a->columns == 0)
			return say_error(EXIT_USAGE, "--columns", "not a positive number: '%s'",
					 arg);
		return 0;
	case 'i':
		if (parse_size(arg, &a->interleave) < 0 || a->interleave == 0)
			return say_error(EXIT_USAGE, "--interleave",
					 "cannot read '%s' (bytes, or a number with K or M)", arg);
		return 0;
	case 'I':
		if (strcmp(arg, "on") && strcmp(arg, "off"))
			return say_error(EXIT_USAGE, "--integrity", "must be on or off, not '%s'",
					 arg);
		a->integrity = !strcmp(arg, "on");
		return 0;
	case 'j':
	case 'J':
	case 'M':
		return journal_option(c, arg, &a->journal, &a->journal_mode, &a->journal_mib);
	}
	return say_error(EXIT_USAGE, "volume create", "internal error: option %d", c);
}

/* Options that only make sense for another layout are refused, not
 * ignored: someone who typed --copies expected copies. */
static int vc_check(const struct volume_create_args *a, int have_layout)
{
	if (!have_layout)
		return say_error(EXIT_USAGE, "volume create",
				 "--layout is required (simple, mirror or parity)");
	if (a->copies && a->kind != LAYOUT_MIRROR)
		return say_error(EXIT_USAGE, "--copies", "only a mirror layout has copies");
	if (a->parity && a->kind != LAYOUT_PARITY)
		return say_error(EXIT_USAGE, "--parity", "only a parity layout has parity columns");
	if ((a->journal >= 0 || a->journal_mode >= 0 || a->journal_mib) && a->kind != LAYOUT_PARITY)
		return say_error(EXIT_USAGE, "--journal", "only a parity layout has a journal");
	return 0;
}

static int cmd_volume_create(int argc, char **argv)
{
	static const struct option lo[] = {{"layout", required_argument, NULL, 'l'},
					   {"copies", required_argument, NULL, 'c'},
					   {"parity", required_argument, NULL, 'p'},
					   {"columns", required_argument, NULL, 'n'},
					   {"interleave", required_argument, NULL, 'i'},
					   {"integrity", required_argument, NULL, 'I'},
					   {"journal", required_argument, NULL, 'j'},
					   {"journal-size", required_argument, NULL, 'J'},
					   {"journal-mode", required_argument, NULL, 'M'},
					   {"help", no_argument, NULL, 'h'},
					   {0}};
	struct volume_create_args a = {.integrity = 1, .journal = -1, .journal_mode = -1};
	int c, rc, have_layout = 0;

	opt_reset();
	while ((c = next_opt(argc, argv, "volume create", ":l:c:p:n:i:I:j:J:M:h", lo)) != -1) {
		if (c == '?')
			return EXIT_USAGE;
		if (c == 'h')
			return show_help(help_volume_create);
		rc = vc_option(&a, c, optarg, &have_layout);
		if (rc)
			return rc;
	}
	if (argc - optind != 2)
		return say_error(EXIT_USAGE, "volume create",
				 argc - optind < 2 ? "needs SOURCE and NAME"
						   : "too many arguments; needs SOURCE and NAME");
	a.source = argv[optind];
	a.name = argv[optind + 1];
	rc = vc_check(&a, have_layout);
	if (rc == 0 && a.kind == LAYOUT_PARITY) {
		int m = journal_resolve(a.journal, a.journal_mode, -1);
		if (m < 0)
			return EXIT_USAGE;
		a.journal = m;
	}
	return rc ? rc : do_volume_create(&a);
}

/* ---- volume list and status: showing volumes -------------------------------- */

static void meta_list(const struct pool_sb_volume *v, char *out, size_t size)
{
	size_t off = 0;

	out[0] = '\0';
	for (uint32_t i = 0; i < v->nmeta && off < size; i++)
		off += (size_t)snprintf(out + off, size - off, "%s%u", i ? "," : "", v->meta[i]);
}

/* live: the daemon's status JSON, or NULL (volume list, not mounted). */
static int volumes_table(struct pool *p, const char *live)
{
	static const char *const head[] = {"NAME",     "LAYOUT",      "COPIES",	   ">PARITY",
					   ">COLUMNS", ">INTERLEAVE", "INTEGRITY", "METADATA",
					   ">USABLE",  "STATE"};
	struct table *t = table_new(10, head);

	if (!t)
		return say_error(1, NULL, "out of memory");
	for (uint32_t i = 0; i < p->sb->nvolumes; i++) {
		const struct pool_sb_volume *v = &p->sb->volume[i];
		char copies[16] = "-", parity[16] = "-", cols[16], il[32], meta[32], usable[32];
		char full[POOL_MSG_MAX], state[POOL_MSG_MAX + 64];
		uint64_t u;
		const char *row[10];

		if (v->geom.kind == LAYOUT_MIRROR)
			snprintf(copies, sizeof(copies), "%u", v->geom.copies);
		if (v->geom.kind == LAYOUT_PARITY)
			snprintf(parity, sizeof(parity), "%u", v->geom.parity);
		snprintf(cols, sizeof(cols), "%u", v->geom.columns);
		fmt_size(v->geom.interleave, il, sizeof(il));
		meta_list(v, meta, sizeof(meta));
		pool_volume_capacity(p, v, &u);
		fmt_size(u, usable, sizeof(usable));
		row[0] = v->name;
		row[1] = layout_kind_name(v->geom.kind);
		row[2] = copies;
		row[3] = parity;
		row[4] = cols;
		row[5] = il;
		row[6] = v->integrity ? "on" : "off";
		row[7] = meta;
		row[8] = usable;
		live_cannot_allocate(live, v->name, full, sizeof(full));
		snprintf(state, sizeof(state), "%s%s%s", pool_volume_health(p, v),
			 full[0] ? ", cannot allocate: " : "", full);
		row[9] = state;
		table_row(t, row);
	}
	if (p->sb->nvolumes)
		table_print(t, stdout);
	else
		printf("no volumes\n");
	table_free(t);
	return 0;
}

static void volume_json(struct json *j, struct pool *p, const struct pool_sb_volume *v,
			const char *live)
{
	char full[POOL_MSG_MAX];
	uint64_t u;

	pool_volume_capacity(p, v, &u);
	json_object(j, NULL);
	json_str(j, "name", v->name);
	json_u64(j, "id", v->id);
	json_str(j, "layout", layout_kind_name(v->geom.kind));
	json_u64(j, "copies", v->geom.copies);
	json_u64(j, "parity", v->geom.parity);
	json_u64(j, "columns", v->geom.columns);
	json_u64(j, "data_columns", layout_data_columns(&v->geom));
	json_u64(j, "interleave", v->geom.interleave);
	json_bool(j, "integrity", (int)v->integrity);
	json_str(j, "journal",
		 v->geom.kind != LAYOUT_PARITY ? "none" : journal_mode_name(v->journal));
	if (v->geom.kind == LAYOUT_PARITY)
		json_u64(j, "journal_size",
			 (uint64_t)(v->journal_mib ? v->journal_mib : POOL_JOURNAL_DEFAULT_MIB)
			     << 20);
	json_array(j, "metadata_disks");
	for (uint32_t i = 0; i < v->nmeta; i++)
		json_u64(j, NULL, v->meta[i]);
	json_close(j, ']');
	json_u64(j, "usable", u);
	json_str(j, "state", pool_volume_health(p, v));
	if (live) { /* status: what the daemon says */
		live_cannot_allocate(live, v->name, full, sizeof(full));
		if (full[0])
			json_str(j, "cannot_allocate", full);
		else
			json_null(j, "cannot_allocate");
		char jr[2048];
		live_journal(live, v->name, jr, sizeof(jr));
		if (jr[0]) /* mode, size, used, copies and counters since mount */
			json_raw(j, "journal_live", jr);
	}
	json_u64(j, "created", (uint64_t)v->created);
	json_close(j, '}');
}

static void volumes_json(struct json *j, struct pool *p, const char *live)
{
	json_array(j, "volumes");
	for (uint32_t i = 0; i < p->sb->nvolumes; i++)
		volume_json(j, p, &p->sb->volume[i], live);
	json_close(j, ']');
}

/* ---- volume list ----------------------------------------------------------- */

struct show_args {
	const char *source;
	int json;
};

static int do_volume_list(const struct show_args *a)
{
	struct pool *p = open_pool(a->source, POOL_OPEN_INSPECT);
	struct json j;
	int rc = 0;

	/* Reading the disks while a daemon serves the pool is safe: commits
	 * replace spacefs.pool atomically. */
	if (!p)
		return 1;
	if (a->json) {
		json_begin(&j, stdout);
		json_str(&j, "pool", p->sb->pool_name);
		volumes_json(&j, p, NULL);
		json_end(&j);
	} else {
		rc = volumes_table(p, NULL);
	}
	pool_close(p);
	return rc;
}

/* Shared by volume list and status: SOURCE [--json]. */
static int parse_show(int argc, char **argv, const char *what, const char *help,
		      struct show_args *a, int *done)
{
	static const struct option lo[] = {
	    {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
	int c;

	*done = 0;
	opt_reset();
	while ((c = next_opt(argc, argv, what, ":jh", lo)) != -1) {
		if (c == '?')
			return EXIT_USAGE;
		if (c == 'h') {
			*done = 1;
			return show_help(help);
		}
		a->json = 1;
	}
	if (argc - optind != 1)
		return say_error(EXIT_USAGE, what,
				 argc - optind < 1 ? "needs SOURCE" : "too many arguments");
	a->source = argv[optind];
	return 0;
}

static int cmd_volume_list(int argc, char **argv)
{
	struct show_args a = {0};
	int done, rc = parse_show(argc, argv, "volume list", help_volume_list, &a, &done);

	return rc || done ? rc : do_volume_list(&a);
}

/* ---- volume delete --------------------------------------------------------- */

struct volume_delete_args {
	const char *source, *name;
};

static int do_volume_delete(const struct volume_delete_args *a)
{
	char err[POOL_MSG_MAX * 2], node[128];
	struct pool *p = open_pool(a->source, 0);
	char *reply = NULL;
	int rc = 0;

	if (!p)
		return 1;
	char req[POOL_NAME_MAX + 32];
	snprintf(req, sizeof(req), "volume-delete %s", a->name);
	int drc = daemon_call(p, req, &reply, err, sizeof(err));
	if (drc != -ENOENT) {
		/* a cluster node deletes it live (fs/catalog.c); a single-node
		 * daemon, or an older one, refuses */
		(void)node;
		if (drc < 0)
			rc = say_error(1, "volume delete", "the running spacefs refused: %s", err);
		else
			printf("volume '%s' deleted\n", a->name);
	} else if (pool_runlock_offline_pool(&p, a->source, err, sizeof(err)) < 0 ||
		   pool_volume_delete(p, a->name, err, sizeof(err)) < 0) {
		rc = say_error(1, NULL, "%s", err);
	} else {
		warn_unhealthy(p);
		printf("volume '%s' deleted\n", a->name);
	}
	free(reply);
	pool_close(p);
	return rc;
}

static int cmd_volume_delete(int argc, char **argv)
{
	static const struct option lo[] = {{"help", no_argument, NULL, 'h'}, {0}};
	struct volume_delete_args a;
	int c;

	opt_reset();
	while ((c = next_opt(argc, argv, "volume delete", ":h", lo)) != -1) {
		if (c == '?')
			return EXIT_USAGE;
		return show_help(help_volume_delete);
	}
	if (argc - optind != 2)
		return say_error(EXIT_USAGE, "volume delete",
				 argc - optind < 2 ? "needs SOURCE and NAME"
						   : "too many arguments; needs SOURCE and NAME");
	a.source = argv[optind];
	a.name = argv[optind + 1];
	return do_volume_delete(&a);
}

/* ---- volume set ------------------------------------------------------------ */

static int do_volume_set(const char *source, const char *name, int mode, int jmode, uint32_t mib);

static int cmd_volume_set(int argc, char **argv)
{
	static const struct option lo[] = {{"journal", required_argument, NULL, 'j'},
					   {"journal-size", required_argument, NULL, 'J'},
					   {"journal-mode", required_argument, NULL, 'M'},
					   {"help", no_argument, NULL, 'h'},
					   {0}};
	int c, rc, mode = -1, jmode = -1;
	uint32_t mib = 0;

	opt_reset();
	while ((c = next_opt(argc, argv, "volume set", ":j:J:M:h", lo)) != -1) {
		if (c == '?')
			return EXIT_USAGE;
		if (c == 'h')
			return show_help(help_volume_set);
		rc = journal_option(c, optarg, &mode, &jmode, &mib);
		if (rc)
			return rc;
	}
	if (argc - optind != 2)
		return say_error(EXIT_USAGE, "volume set",
				 argc - optind < 2 ? "needs SOURCE and NAME"
						   : "too many arguments; needs SOURCE and NAME");
	if (mode < 0 && jmode < 0 && !mib)
		return say_error(EXIT_USAGE, "volume set",
				 "nothing to set (--journal, --journal-mode, --journal-size)");
	if (mode == POOL_VOLUME_JOURNAL_OFF && jmode >= 0)
		return say_error(EXIT_USAGE, "--journal-mode", "makes no sense with --journal off");
	return do_volume_set(argv[optind], argv[optind + 1], mode, jmode, mib);
}

static int do_volume_set(const char *source, const char *name, int mode, int jmode, uint32_t mib)
{
	char err[POOL_MSG_MAX * 2] = "", req[256];
	char *reply = NULL;
	struct pool *p = open_pool(source, 0);
	int rc;

	if (!p)
		return 1;
	const struct pool_sb_volume *v = pool_volume_find(p, name);
	int r = journal_resolve(mode, jmode, v ? (int)v->journal : POOL_VOLUME_JOURNAL_ON);
	uint32_t m = r >= 0 ? (uint32_t)r : v ? v->journal : 0;
	uint32_t sz = mib ? mib : v ? v->journal_mib : 0;
	snprintf(req, sizeof(req), "volume-set-journal %s %u %u", name, m, sz);
	rc = daemon_call(p, req, &reply, err, sizeof(err));
	free(reply);
	if (rc == -ENOENT) {
		err[0] = 0;
		rc = pool_runlock_offline_pool(&p, source, err, sizeof(err));
		if (rc == 0)
			rc = pool_volume_set_journal(p, name, m, sz, err, sizeof(err));
	}
	if (rc < 0)
		rc = say_error(1, "volume set", "%s", err[0] ? err : strerror(-rc));
	else
		printf("volume '%s': journal %s, %u MiB per copy\n", name, journal_mode_name(m),
		       sz ? sz : POOL_JOURNAL_DEFAULT_MIB);
	pool_close(p);
	return rc;
}

/* ---- status ------------------------------------------------------------------ */

/* The line under the disk table for a disk the daemon found full. */
static void disk_full_line(const char *live, uint32_t i)
{
	const char *sp = live_space(live, i);
	char n[32], last[32], n_free[32], fr[32] = "unknown", when[64] = "?";
	unsigned long long f;
	long long t;

	json_peek(sp, "enospc", n, sizeof(n));
	json_peek(sp, "last_enospc", last, sizeof(last));
	json_peek(sp, "free", n_free, sizeof(n_free));
	if (sscanf(n_free, "%llu", &f) == 1)
		fmt_size(f, fr, sizeof(fr));
	if (sscanf(last, "%lld", &t) == 1) {
		time_t tt = (time_t)t;
		struct tm tm;
		if (localtime_r(&tt, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	}
	printf("  disk %u: full: %s chunk writes got ENOSPC, the last at %s; %s free; "
	       "space is checked each second\n",
	       i, n, when, fr);
}

static void disks_table(struct pool *p, const char *live)
{
	static const char *const head[] = {">DISK", "PATH",  "UUID",  "STATE",
					   "USAGE", "MODEL", ">SIZE", ">FREE"};
	struct table *t = table_new(8, head);

	if (!t)
		return;
	for (uint32_t i = 0; i < p->ndisks; i++) {
		char idx[16], uuid[37], size[32] = "-", free[32] = "-", state[48];
		uint64_t sz, fr;
		const char *row[8] = {idx,
				      p->disk[i].path,
				      uuid,
				      state,
				      POOL_USAGE_NAME(p->sb->member[i].usage),
				      pool_diskmodel_name(&p->sb->member[i].model),
				      size,
				      free};

		snprintf(state, sizeof(state), "%s%s", pool_disk_state_name(p->disk[i].state),
			 live_disk_full(live, i) ? ", full" : "");
		snprintf(idx, sizeof(idx), "%u", i);
		pool_uuid_format(p->sb->member[i].uuid, uuid);
		if (pool_disk_space(p, i, &sz, &fr) == 0) {
			fmt_size(sz, size, sizeof(size));
			fmt_size(fr, free, sizeof(free));
		}
		table_row(t, row);
	}
	table_print(t, stdout);
	table_free(t);
	for (uint32_t i = 0; i < p->ndisks; i++) {
		if (p->disk[i].msg[0])
			printf("  disk %u: %s\n", i, p->disk[i].msg);
		if (live_disk_full(live, i))
			disk_full_line(live, i);
	}
}

static void daemon_text(const char *live)
{
	char node[128], pid[32], mnt[POOL_PATH_MAX];

	if (!live) {
		printf("mounted     no\n");
		return;
	}
	json_peek(live, "node", node, sizeof(node));
	json_peek(live, "pid", pid, sizeof(pid));
	json_peek(live, "mountpoint", mnt, sizeof(mnt));
	printf("mounted     %s (node %s, pid %s)\n", mnt, node, pid);
}

/* The daemon's chunk I/O counters since it mounted, per volume and disk
 * (rows with no I/O left out): the cost of each layout, as the disks see
 * it.  Every field from the socket is checked before use. */
static void counters_table(struct pool *p)
{
	static const char *const head[] = {"VOLUME", ">DISK",	 ">READS",  ">WRITES",
					   ">READ",  ">WRITTEN", ">ERRORS", ">CSUM-ERRORS"};
	char err[POOL_MSG_MAX], *reply = NULL;
	struct table *t;

	if (daemon_call(p, "counters", &reply, err, sizeof(err)) != 0)
		return;
	t = table_new(8, head);
	for (char *save = NULL, *line = strtok_r(reply, "\n", &save); t && line;
	     line = strtok_r(NULL, "\n", &save)) {
		char vol[POOL_NAME_MAX + 1], disk[16], r[24], w[24], rb[32], wb[32], e[24], c[24];
		unsigned long long n[6];
		unsigned d;
		if (sscanf(line, "%64[^\t]\t%u\t%llu\t%llu\t%llu\t%llu\t%llu\t%llu", vol, &d, &n[0],
			   &n[1], &n[2], &n[3], &n[4], &n[5]) != 8)
			continue;
		if (n[0] + n[1] + n[4] + n[5] == 0)
			continue;
		snprintf(disk, sizeof(disk), "%u", d);
		snprintf(r, sizeof(r), "%llu", n[0]);
		snprintf(w, sizeof(w), "%llu", n[1]);
		fmt_size(n[2], rb, sizeof(rb));
		fmt_size(n[3], wb, sizeof(wb));
		snprintf(e, sizeof(e), "%llu", n[4]);
		snprintf(c, sizeof(c), "%llu", n[5]);
		const char *row[8] = {vol, disk, r, w, rb, wb, e, c};
		table_row(t, row);
	}
	if (t) {
		printf("\nchunk I/O since mount\n");
		table_print(t, stdout);
		table_free(t);
	}
	free(reply);
}

static void owners_table(struct pool *p);

/* One number of the daemon's journal object jr, 0 if absent. */
static uint64_t jnum(const char *jr, const char *key)
{
	char v[32];
	json_peek(jr, key, v, sizeof(v));
	return strtoull(v, NULL, 10);
}

/* Up to max numbers of the array `key` in the daemon's journal object jr
 * ("copy_disk":[6,0]); returns how many. */
static uint32_t jarray(const char *jr, const char *key, int64_t *out, uint32_t max)
{
	char pat[64];
	uint32_t n = 0;

	snprintf(pat, sizeof(pat), "\"%s\":[", key);
	const char *q = strstr(jr, pat);
	if (!q)
		return 0;
	q += strlen(pat);
	while (n < max && *q && *q != ']') {
		char *end;
		long long x = strtoll(q, &end, 10);
		if (end == q)
			break;
		out[n++] = x;
		q = *end == ',' ? end + 1 : end;
	}
	return n;
}

/* "6,0" for the journal's copies on disks 6 and 0 (a copy out of service
 * marked "(out)"), and a line for the admin under the table when one is. */
static void journal_copies(const struct pool *p, const char *jr, char *out, size_t size, char *note,
			   size_t nsize)
{
	int64_t disk[8], live[8];
	uint32_t n = jarray(jr, "copy_disk", disk, 8), nl = jarray(jr, "copy_in_service", live, 8);
	size_t o = 0;

	out[0] = note[0] = '\0';
	for (uint32_t i = 0; i < n && o < size; i++) {
		int out_of = i < nl && !live[i];
		o += (size_t)snprintf(
		    out + o, size - o, "%s%" PRId64 "%s%s", i ? "," : "", disk[i],
		    disk[i] >= 0 && pool_disk_is_journal(p, (uint32_t)disk[i]) ? "j" : "",
		    out_of ? "(out)" : "");
		if (out_of && !note[0])
			snprintf(note, nsize,
				 "journal copy on disk %" PRId64
				 " out of service: the other copies carry the journal; the "
				 "copy is placed on a disk in service at the journal's next "
				 "checkpoint (write-back: once its records are applied)",
				 disk[i]);
	}
	if (!n)
		snprintf(out, size, "-");
}

/* Per parity volume: the journal's mode, size, fill, what write-back has
 * not applied yet and how fast it applies, a replay in progress, and the
 * disks holding its copies ("j": a journal disk). */
static void journals_table(struct pool *p, const char *live)
{
	static const char *const head[] = {"VOLUME",	 "MODE",     ">SIZE",	 ">FILL",
					   ">UNAPPLIED", ">APPLY/S", ">RECORDS", ">CHECKPOINTS",
					   "REPLAY",	 "COPIES"};
	char notes[POOL_MAX_VOLUMES][320];
	uint32_t nnotes = 0;
	struct table *t = NULL;

	for (uint32_t i = 0; i < p->sb->nvolumes; i++) {
		const struct pool_sb_volume *v = &p->sb->volume[i];
		char jr[2048], size[32], fill[32], un[32], rate[32], recs[32], ck[32], rp[64];
		char copies[96], note[256];
		if (v->geom.kind != LAYOUT_PARITY)
			continue;
		live_journal(live, v->name, jr, sizeof(jr));
		if (!jr[0])
			continue; /* off, or not open on this node */
		if (!t && !(t = table_new(10, head)))
			return;
		char mode[32];
		json_peek(jr, "mode", mode, sizeof(mode));
		uint64_t sz = jnum(jr, "size"), used = jnum(jr, "used");
		fmt_size(sz, size, sizeof(size));
		uint64_t pm = sz ? used * 1000 / sz : 0; /* per mille */
		snprintf(fill, sizeof(fill), "%" PRIu64 ".%" PRIu64 "%%", pm / 10, pm % 10);
		snprintf(un, sizeof(un), "%" PRIu64, jnum(jr, "unapplied"));
		snprintf(rate, sizeof(rate), "%" PRIu64, jnum(jr, "apply_rate"));
		snprintf(recs, sizeof(recs), "%" PRIu64, jnum(jr, "records"));
		snprintf(ck, sizeof(ck), "%" PRIu64, jnum(jr, "checkpoints"));
		if (jnum(jr, "replaying"))
			snprintf(rp, sizeof(rp), "running: %" PRIu64 " rec, %" PRIu64 " MiB",
				 jnum(jr, "replayed"), jnum(jr, "replay_bytes") >> 20);
		else
			snprintf(rp, sizeof(rp), "%" PRIu64 " replayed, %" PRIu64 " damaged",
				 jnum(jr, "replayed"), jnum(jr, "damaged"));
		journal_copies(p, jr, copies, sizeof(copies), note, sizeof(note));
		if (note[0])
			snprintf(notes[nnotes++], sizeof(notes[0]), "volume %s: %s", v->name, note);
		const char *row[10] = {v->name, mode, size, fill, un, rate, recs, ck, rp, copies};
		table_row(t, row);
	}
	if (t) {
		printf("\nparity journals (COPIES: the disks holding them, j: a journal disk)\n");
		table_print(t, stdout);
		table_free(t);
	}
	for (uint32_t i = 0; i < nnotes; i++)
		printf("  %s\n", notes[i]);
}

static int status_text(struct pool *p, const char *live)
{
	char uuid[37], full[POOL_MAX_DISKS * 4 + 32];

	pool_uuid_format(p->sb->pool_uuid, uuid);
	live_full_disks(live, full, sizeof(full));
	printf("pool        %s\n", p->sb->pool_name);
	printf("uuid        %s\n", uuid);
	printf("generation  %llu\n", (unsigned long long)p->sb->generation);
	printf("health      %s%s%s\n", pool_health(p), full[0] ? ", " : "", full);
	daemon_text(live);
	printf("\n");
	disks_table(p, live);
	printf("\n");
	int rc = volumes_table(p, live);
	if (live)
		journals_table(p, live);
	if (live)
		owners_table(p);
	if (live)
		counters_table(p);
	if (live)
		spacectl_busy_table(p);
	if (live)
		spacectl_jobs_table(p);
	return rc;
}

static void disk_json(struct json *j, struct pool *p, uint32_t i, const char *live)
{
	char uuid[37];
	uint64_t size, free;
	int ok = pool_disk_space(p, i, &size, &free) == 0;

	pool_uuid_format(p->sb->member[i].uuid, uuid);
	json_object(j, NULL);
	json_u64(j, "index", i);
	json_str(j, "path", p->disk[i].path);
	json_str(j, "uuid", uuid);
	json_str(j, "state", pool_disk_state_name(p->disk[i].state));
	json_str(j, "usage", POOL_USAGE_NAME(p->sb->member[i].usage));
	json_str(j, "message", p->disk[i].msg);
	json_u64(j, "generation", p->disk[i].generation);
	{
		const struct pool_diskmodel *m = &p->sb->member[i].model;
		char fig[160];
		pool_diskmodel_describe(m, fig, sizeof(fig));
		json_str(j, "model", pool_diskmodel_name(m));
		json_str(j, "model_figures", fig);
		json_object(j, "model_params"); /* the stored figures (docs/FORMAT.md) */
		json_u64(j, "kind", m->kind);
		json_u64(j, "rpm", m->rpm);
		json_u64(j, "seek_min_us", m->seek_min_us);
		json_u64(j, "seek_avg_us", m->seek_avg_us);
		json_u64(j, "read_lat_us", m->read_lat_us);
		json_u64(j, "write_lat_us", m->write_lat_us);
		json_u64(j, "read_mbps", m->read_mbps);
		json_u64(j, "write_mbps", m->write_mbps);
		json_u64(j, "read_iops", m->read_iops);
		json_u64(j, "write_iops", m->write_iops);
		json_close(j, '}');
	}
	if (ok) {
		json_u64(j, "size", size);
		json_u64(j, "free", free);
	} else {
		json_null(j, "size");
		json_null(j, "free");
	}
	if (live) { /* the daemon's word: ENOSPC seen, space not back since */
		char n[32];
		unsigned long long v = 0;
		json_bool(j, "full", live_disk_full(live, i));
		json_peek(live_space(live, i) ? live_space(live, i) : "", "enospc", n, sizeof(n));
		sscanf(n, "%llu", &v);
		json_u64(j, "enospc", v);
	}
	json_close(j, '}');
}

static int status_json(struct pool *p, const char *live)
{
	char uuid[37];
	struct json j;

	pool_uuid_format(p->sb->pool_uuid, uuid);
	json_begin(&j, stdout);
	json_object(&j, "pool");
	json_str(&j, "name", p->sb->pool_name);
	json_str(&j, "uuid", uuid);
	json_u64(&j, "generation", p->sb->generation);
	json_str(&j, "health", pool_health(p));
	json_u64(&j, "created", (uint64_t)p->sb->created);
	json_array(&j, "full_disks"); /* as the daemon says; [] when not mounted */
	for (uint32_t i = 0; i < p->ndisks; i++)
		if (live_disk_full(live, i))
			json_u64(&j, NULL, i);
	json_close(&j, ']');
	json_close(&j, '}');
	json_array(&j, "disks");
	for (uint32_t i = 0; i < p->ndisks; i++)
		disk_json(&j, p, i, live);
	json_close(&j, ']');
	volumes_json(&j, p, live);
	/* The daemon's own JSON (node, mount point, per-volume and per-disk
	 * I/O counters), as it sent it. */
	if (live)
		json_raw(&j, "daemon", live);
	else
		json_null(&j, "daemon");
	json_end(&j);
	return 0;
}

static int do_status(const struct show_args *a)
{
	struct pool *p = open_pool(a->source, POOL_OPEN_INSPECT);
	char err[POOL_MSG_MAX], *live = NULL;
	int rc;

	if (!p)
		return 1;
	if (daemon_call(p, "status", &live, err, sizeof(err)) == 0)
		live[strcspn(live, "\n")] = '\0'; /* one JSON line */
	rc = a->json ? status_json(p, live) : status_text(p, live);
	free(live);
	pool_close(p);
	return rc;
}

static const char help_disk_list[] =
    "usage: spacectl disk list SOURCE [--json]\n"
    "\n"
    "List the pool's disks: index, path, UUID, state, usage (data, or journal:\n"
    "holds only the parity volumes' journals), emulated model, size and free\n"
    "space, as spacectl status shows them.\n"
    "\n"
    "options:\n"
    "  -j, --json   one JSON object: {\"disks\":[...]} as in status --json\n"
    "  -h, --help   show this help\n";

static int cmd_disk_list(int argc, char **argv)
{
	struct show_args a = {0};
	int done, rc = parse_show(argc, argv, "disk list", help_disk_list, &a, &done);

	if (rc || done)
		return rc;
	struct pool *p = open_pool(a.source, POOL_OPEN_INSPECT);
	char err[POOL_MSG_MAX], *live = NULL;
	if (!p)
		return 1;
	if (daemon_call(p, "status", &live, err, sizeof(err)) == 0)
		live[strcspn(live, "\n")] = '\0';
	if (a.json) {
		struct json j;
		json_begin(&j, stdout);
		json_array(&j, "disks");
		for (uint32_t i = 0; i < p->ndisks; i++)
			disk_json(&j, p, i, live);
		json_close(&j, ']');
		json_end(&j);
	} else {
		disks_table(p, live);
	}
	free(live);
	pool_close(p);
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	struct show_args a = {0};
	int done, rc = parse_show(argc, argv, "status", help_status, &a, &done);

	return rc || done ? rc : do_status(&a);
}

/* ---- owners (several nodes) ------------------------------------------------------ */

/* Who owns each volume, as the daemon spacectl reached sees it. */
static void owners_table(struct pool *p)
{
	static const char *const head[] = {"VOLUME", "OWNER",	    "ADDRESS",	    ">EPOCH",
					   "ACCESS", ">REDIRECTED", ">REDIR-BYTES", "PREFERRED"};
	char err[POOL_MSG_MAX], *reply = NULL;
	struct table *t;

	if (daemon_call(p, "owners", &reply, err, sizeof(err)) != 0)
		return;
	t = table_new(8, head);
	for (char *save = NULL, *line = strtok_r(reply, "\n", &save); t && line;
	     line = strtok_r(NULL, "\n", &save)) {
		char vol[65], own[65], addr[64], acc[16], pref[65], ep[24], ops[24], by[32];
		unsigned long long e, o, b;
		if (sscanf(line, "%64[^\t]\t%64[^\t]\t%63[^\t]\t%llu\t%15[^\t]\t%llu\t%llu\t%64s",
			   vol, own, addr, &e, acc, &o, &b, pref) != 8)
			continue;
		snprintf(ep, sizeof(ep), "%llu", e);
		snprintf(ops, sizeof(ops), "%llu", o);
		fmt_size(b, by, sizeof(by));
		const char *row[8] = {vol, own, addr, ep, acc, ops, by, pref};
		table_row(t, row);
	}
	if (t) {
		printf("\nvolume owners (seen from this node)\n");
		table_print(t, stdout);
		table_free(t);
	}
	free(reply);
}

static int owner_call(const char *source, const char *request)
{
	struct pool *p = open_pool(source, 0);
	char err[POOL_MSG_MAX], *reply = NULL;
	int rc;

	if (!p)
		return 1;
	rc = daemon_call(p, request, &reply, err, sizeof(err));
	pool_close(p);
	free(reply);
	if (rc == -ENOENT)
		return say_error(1, source, "no spacefs node is running on this pool here");
	if (rc < 0)
		return say_error(1, NULL, "%s", err[0] ? err : strerror(-rc));
	return 0;
}

static int cmd_owner_move(int argc, char **argv)
{
	char req[POOL_NAME_MAX * 3];

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return show_help(help_owner);
	if (argc != 4)
		return say_error(EXIT_USAGE, "owner move", "usage: owner move SOURCE VOLUME NODE");
	snprintf(req, sizeof(req), "owner-move %.64s %.64s", argv[2], argv[3]);
	return owner_call(argv[1], req);
}

static int cmd_owner_balance(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '-')
		return argc == 2
			   ? show_help(help_owner)
			   : say_error(EXIT_USAGE, "owner balance", "usage: owner balance SOURCE");
	return owner_call(argv[1], "owner-balance");
}

/* Written to the volume's metadata disks directly (pool/owner.c), then
 * the running nodes are asked to balance, which reads it. */
static int cmd_owner_prefer(int argc, char **argv)
{
	const char *dirs[POOL_META_DISKS];
	char paths[POOL_META_DISKS][POOL_PATH_MAX + 80], err[POOL_MSG_MAX];
	uint32_t n = 0;

	if (argc != 4)
		return say_error(EXIT_USAGE, "owner prefer",
				 "usage: owner prefer SOURCE VOLUME NODE|none");
	struct pool *p = open_pool(argv[1], 0);
	if (!p)
		return 1;
	const struct pool_sb_volume *v = pool_volume_find(p, argv[2]);
	if (!v) {
		pool_close(p);
		return say_error(1, argv[2], "no such volume");
	}
	for (uint32_t i = 0; i < v->nmeta; i++)
		if (v->meta[i] < p->ndisks && p->disk[v->meta[i]].state == POOL_DISK_HEALTHY) {
			snprintf(paths[n], sizeof(paths[n]), "%s/vol/%s", p->disk[v->meta[i]].path,
				 v->name);
			dirs[n] = paths[n];
			n++;
		}
	const char *node = strcmp(argv[3], "none") ? argv[3] : "";
	int rc = pool_pref_write(dirs, n, node, err, sizeof(err));
	char *reply = NULL;
	if (rc == 0)
		daemon_call(p, "owner-balance", &reply, err, sizeof(err));
	free(reply);
	pool_close(p);
	if (rc < 0)
		return say_error(1, argv[2], "%s", err);
	return 0;
}

/* ---- node drain and resume ------------------------------------------------------ */

/* Volumes `node` owns as the daemon here sees them; -1 if none answers. */
static int owned_by(struct pool *p, const char *node)
{
	char err[POOL_MSG_MAX], *reply = NULL;
	int n = 0;

	if (daemon_call(p, "owners", &reply, err, sizeof(err)) < 0) {
		free(reply);
		return -1;
	}
	for (char *save = NULL, *l = strtok_r(reply, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		char vol[65], own[65];
		if (sscanf(l, "%64[^\t]\t%64[^\t]", vol, own) == 2 && !strcmp(own, node))
			n++;
	}
	free(reply);
	return n;
}

/* The drain mark is written to every healthy disk directly (pool/owner.c),
 * like owner prefer, so it works with no node running; then the running
 * nodes are asked to balance, which reads it.  A drain waits until the
 * node owns nothing. */
static int node_mark(int argc, char **argv, bool drained)
{
	const char *what = drained ? "node drain" : "node resume";
	const char *disks[POOL_MAX_DISKS];
	char err[POOL_MSG_MAX], *reply = NULL;
	uint32_t n = 0;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return show_help(help_node);
	if (argc != 3)
		return say_error(EXIT_USAGE, what, "usage: %s SOURCE NODE", what);
	struct pool *p = open_pool(argv[1], 0);
	if (!p)
		return 1;
	for (uint32_t i = 0; i < p->ndisks; i++)
		if (p->disk[i].state == POOL_DISK_HEALTHY)
			disks[n++] = p->disk[i].path;
	int rc = pool_drain_write(disks, n, argv[2], drained, err, sizeof(err));
	if (rc < 0) {
		pool_close(p);
		return say_error(1, what, "%s", err);
	}
	int running = daemon_call(p, "owner-balance", &reply, err, sizeof(err)) == 0;
	free(reply);
	int left = running ? owned_by(p, argv[2]) : 0;
	for (int waited = 0; drained && running && left > 0 && waited < 600; waited++) {
		usleep(100 * 1000);
		left = owned_by(p, argv[2]);
	}
	pool_close(p);
	if (drained && left > 0)
		return say_error(1, what, "node %s still owns %d volume(s) after 60 s", argv[2],
				 left);
	if (drained)
		printf("node %s drained: it owns no volume and gets none until "
		       "`spacectl node resume`%s\n",
		       argv[2], running ? "" : " (no node running here: applies when they start)");
	else
		printf("node %s resumed: balancing gives it its share%s\n", argv[2],
		       running ? "" : " (when nodes run)");
	return 0;
}

static int cmd_node_drain(int argc, char **argv)
{
	return node_mark(argc, argv, true);
}

static int cmd_node_resume(int argc, char **argv)
{
	return node_mark(argc, argv, false);
}

/* ---- metrics ------------------------------------------------------------------ */

static int cmd_metrics(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		return show_help(help_metrics);
	if (argc != 2 || argv[1][0] == '-')
		return say_error(EXIT_USAGE, "metrics", "usage: metrics SOURCE");
	struct pool *p = open_pool(argv[1], POOL_OPEN_INSPECT);
	char err[POOL_MSG_MAX], *reply = NULL;
	if (!p)
		return 1;
	int rc = daemon_call(p, "metrics", &reply, err, sizeof(err));
	pool_close(p);
	if (rc == 0)
		fputs(reply, stdout);
	free(reply);
	if (rc == -ENOENT)
		return say_error(1, argv[1], "no spacefs daemon serves this pool here");
	if (rc < 0)
		return say_error(1, "metrics", "%s", err[0] ? err : strerror(-rc));
	return 0;
}

/* ---- dispatch ------------------------------------------------------------------ */

struct command {
	const char *group; /* "pool", "volume", or NULL for top-level commands */
	const char *name;
	int (*run)(int argc, char **argv);
};

static const struct command commands[] = {
    {"pool", "create", cmd_pool_create},
    {"volume", "create", cmd_volume_create},
    {"volume", "list", cmd_volume_list},
    {"volume", "delete", cmd_volume_delete},
    {"volume", "set", cmd_volume_set},
    {NULL, "status", cmd_status},
    {NULL, "smbconf", smbconf_main},
    {NULL, "status", cmd_status},
    {"owner", "move", cmd_owner_move},
    {"owner", "balance", cmd_owner_balance},
    {"owner", "prefer", cmd_owner_prefer},
    {"node", "drain", cmd_node_drain},
    {"node", "resume", cmd_node_resume},
    {"disk", "add", spacectl_cmd_disk_add},
    {"disk", "replace", spacectl_cmd_disk_replace},
    {"disk", "retire", spacectl_cmd_disk_retire},
    {"disk", "set", spacectl_cmd_disk_set},
    {"disk", "list", cmd_disk_list},
    {NULL, "repair", spacectl_cmd_repair},
    {NULL, "scrub", spacectl_cmd_scrub},
    {NULL, "metrics", cmd_metrics},
    {NULL, "checkpoint", spacectl_cmd_checkpoint},
    {NULL, "backup", spacectl_cmd_backup},
};

static int is_help(const char *s)
{
	return !strcmp(s, "--help") || !strcmp(s, "-h") || !strcmp(s, "help");
}

static int run_group(const char *group, const char *help, int argc, char **argv)
{
	if (argc < 1)
		return say_error(EXIT_USAGE, group, "missing command; see spacectl %s --help",
				 group);
	if (is_help(argv[0]))
		return show_help(help);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].group && !strcmp(commands[i].group, group) &&
		    !strcmp(commands[i].name, argv[0]))
			return commands[i].run(argc, argv);
	return say_error(EXIT_USAGE, group, "unknown command '%s'; see spacectl %s --help", argv[0],
			 group);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return say_error(EXIT_USAGE, NULL, "no command; see spacectl --help");
	if (is_help(argv[1]))
		return show_help(help_main);
	if (!strcmp(argv[1], "--version")) {
		printf("spacectl (spacefs) %s\n", SPACEFS_VERSION);
		return 0;
	}
	/* Each command sees its own argv: argv[0] is the command word. */
	if (!strcmp(argv[1], "pool"))
		return run_group("pool", help_pool, argc - 2, argv + 2);
	if (!strcmp(argv[1], "volume"))
		return run_group("volume", help_volume, argc - 2, argv + 2);
	if (!strcmp(argv[1], "owner"))
		return run_group("owner", help_owner, argc - 2, argv + 2);
	if (!strcmp(argv[1], "node"))
		return run_group("node", help_node, argc - 2, argv + 2);
	if (!strcmp(argv[1], "disk"))
		return run_group("disk", spacectl_help_disk, argc - 2, argv + 2);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!commands[i].group && !strcmp(commands[i].name, argv[1]))
			return commands[i].run(argc - 1, argv + 1);
	return say_error(EXIT_USAGE, NULL, "unknown command '%s'; see spacectl --help", argv[1]);
}
