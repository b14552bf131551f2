/*
 * smbconf.c -- `spacectl smbconf`: share a pool's volumes through Samba.
 *
 * In the Scale-Out File Server that spacefs emulates, hypervisors keep
 * their VM disks on SMB 3 shares, one per Cluster Shared Volume, and a
 * client that lands on a node which does not own the volume is sent to
 * the owner.  Samba can do the second half with MS-DFS: a share with
 * `msdfs proxy` set refers every client to another server's share.
 *
 * So this command asks the local spacefs daemon (control socket, request
 * "shares") where the pool is mounted and who owns each volume, and
 * prints one smb.conf share per volume: a real share over the FUSE mount
 * when this node owns the volume, a DFS proxy to the owner's share when
 * another node does.  Every setting carries its reason in a comment: the
 * output is meant to be read by the admin who includes it.
 *
 * With --watch FILE it keeps FILE current: whenever the ownership picture
 * changes it rewrites FILE atomically and tells smbd to reload
 * (`smbcontrol smbd reload-config`).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool/ctl.h"
#include "pool/pool.h"
#include "tools/smbconf.h"

#define MAX_VOLS POOL_MAX_VOLUMES

struct smb_volume {
	char name[POOL_NAME_MAX + 1];
	char owner[128];
	char host[256]; /* the owner's SMB host, "-" if unknown */
	char layout[32];
};

struct smb_view {
	char node[128]; /* the node the shares are for */
	char mountpoint[4096];
	int allow_other;
	struct smb_volume vol[MAX_VOLS];
	unsigned nvol;
};

struct smb_args {
	const char *source;
	const char *node;	     /* --node: whose view (default: the local daemon's) */
	const char *watch;	     /* --watch FILE */
	const char *smb_conf;	     /* --smb-conf: passed to smbcontrol -s */
	const char *hosts[MAX_VOLS]; /* --host NODE=HOST overrides */
	unsigned nhosts;
	unsigned interval;
};

static const char help_smbconf[] =
    "usage: spacectl smbconf SOURCE [--node NAME] [--host NODE=HOST]...\n"
    "                        [--watch FILE [--smb-conf PATH] [--interval S]]\n"
    "\n"
    "Print smb.conf share sections, one per volume of the pool SOURCE belongs to,\n"
    "for the node NAME (default: the node of the spacefs daemon running here).\n"
    "A volume this node owns is shared from its mount; a volume another node\n"
    "owns becomes an MS-DFS proxy share referring SMB clients to the owner.\n"
    "\n"
    "  --node NAME        whose shares to write (its daemon must run here)\n"
    "  --host NODE=HOST   the SMB host name or address of NODE, for referrals\n"
    "                     (default: the address the node registered)\n"
    "  --watch FILE       keep FILE current: rewrite it when ownership changes and\n"
    "                     run `smbcontrol smbd reload-config`; runs until killed\n"
    "  --smb-conf PATH    the smb.conf smbd runs with (for smbcontrol -s)\n"
    "  --interval S       --watch polling period in seconds (default 2)\n"
    "\n"
    "Include the output from smb.conf (`include = FILE`).  The pool must be mounted\n"
    "with -o allow_other so that smbd's users can reach it.\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "spacectl: smbconf: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* ---- asking the daemon --------------------------------------------------- */

/* Split a tab-separated line in place; returns the field count. */
static int split_tabs(char *line, char **f, int max)
{
	int n = 0;

	for (char *save = NULL, *t = strtok_r(line, "\t", &save); t && n < max;
	     t = strtok_r(NULL, "\t", &save))
		f[n++] = t;
	return n;
}

static int copy_field(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n == 0 || n >= size)
		return -EPROTO;
	memcpy(dst, src, n + 1);
	return 0;
}

/* Parse the "shares" reply (pool/ctl.h); every field is checked. */
static int parse_owners(char *reply, struct smb_view *v)
{
	char *f[8];
	int rc = 0, have_mount = 0;

	memset(v, 0, sizeof(*v));
	for (char *save = NULL, *line = strtok_r(reply, "\n", &save); line && rc == 0;
	     line = strtok_r(NULL, "\n", &save)) {
		int n = split_tabs(line, f, 8);
		if (n == 4 && strcmp(f[0], "mount") == 0) {
			rc = copy_field(v->node, sizeof(v->node), f[1]);
			if (rc == 0)
				rc = copy_field(v->mountpoint, sizeof(v->mountpoint), f[2]);
			v->allow_other = strcmp(f[3], "1") == 0;
			have_mount = 1;
		} else if (n == 6 && strcmp(f[0], "volume") == 0 && v->nvol < MAX_VOLS) {
			struct smb_volume *sv = &v->vol[v->nvol++];
			rc = copy_field(sv->name, sizeof(sv->name), f[1]);
			if (rc == 0)
				rc = copy_field(sv->owner, sizeof(sv->owner), f[2]);
			if (rc == 0)
				rc = copy_field(sv->host, sizeof(sv->host), f[3]);
			if (rc == 0)
				rc = copy_field(sv->layout, sizeof(sv->layout), f[5]);
		}
	}
	return rc == 0 && !have_mount ? -EPROTO : rc;
}

static int fetch_view(const struct smb_args *a, struct smb_view *v)
{
	char err[512] = "", uuid[37], *reply = NULL;
	struct pool *p = NULL;
	int rc = pool_open(a->source, POOL_OPEN_INSPECT, &p, err, sizeof(err));

	if (rc < 0)
		return fail("%s", err);
	pool_uuid_format(p->sb->pool_uuid, uuid);
	if (a->node)
		rc = pool_ctl_call_node(uuid, a->node, "shares", &reply, err, sizeof(err));
	else
		rc = pool_ctl_call(uuid, "shares", &reply, err, sizeof(err));
	if (rc == -ENOENT)
		fail("pool '%s' is not mounted by %s%s on this machine (start spacefs first)",
		     p->sb->pool_name, a->node ? "node " : "any node", a->node ? a->node : "");
	else if (rc < 0)
		fail("daemon: %s", err[0] ? err : strerror(-rc));
	else if ((rc = parse_owners(reply, v)) < 0)
		fail("malformed reply from the daemon");
	free(reply);
	pool_close(p);
	return rc < 0 ? 1 : 0;
}

/* ---- writing the configuration ------------------------------------------- */

static const char *host_of(const struct smb_args *a, const struct smb_volume *sv)
{
	size_t n = strlen(sv->owner);

	for (unsigned i = 0; i < a->nhosts; i++)
		if (strncmp(a->hosts[i], sv->owner, n) == 0 && a->hosts[i][n] == '=')
			return a->hosts[i] + n + 1;
	return strcmp(sv->host, "-") ? sv->host : NULL;
}

static void print_header(FILE *f, const struct smb_view *v)
{
	fprintf(f,
		"# spacefs shares for node %s, generated by `spacectl smbconf`.\n"
		"# Include this file from smb.conf (include = FILE).  Hypervisors keep VM\n"
		"# disks here; a volume owned by another node is a DFS referral to it.\n"
		"#\n"
		"# [global] needs nothing special: `host msdfs = yes` and `smb2 leases =\n"
		"# yes` are Samba's defaults, and the referrals below rely on the first.\n"
		"# streams_xattr comes with Debian's samba-vfs-modules package.\n",
		v->node);
	if (!v->allow_other)
		fprintf(f,
			"#\n# WARNING: the pool at %s is mounted without -o allow_other:\n"
			"# smbd's users cannot reach it until it is remounted with it.\n",
			v->mountpoint);
}

static void print_owned(FILE *f, const struct smb_view *v, const struct smb_volume *sv)
{
	fprintf(f,
		"\n[%s]\n"
		"\t# spacefs volume %s (%s), owned by this node (%s).\n"
		"\tcomment = spacefs volume %s (%s)\n"
		"\tpath = %s/%s\n"
		"\tread only = no\n"
		"\tbrowseable = yes\n"
		"\t# Hypervisors hold a few big files open for days: oplocks (and SMB2\n"
		"\t# leases, on in [global] by default) let the client cache while it is\n"
		"\t# the only opener.\n"
		"\toplocks = yes\n"
		"\t# FUSE offers no kernel oplocks or leases: Samba must not ask for them.\n"
		"\tkernel oplocks = no\n"
		"\t# Durable handles let a VM ride out a short network outage (the client\n"
		"\t# reopens its VHDX).  Samba wants these three together.\n"
		"\tdurable handles = yes\n"
		"\tkernel share modes = no\n"
		"\tposix locking = no\n"
		"\t# Honour the client's flushes: Hyper-V flushes VHDX metadata and needs it\n"
		"\t# durable; spacefs turns fsync into a sync of the file's chunks and of\n"
		"\t# the volume's metadata replicas.  But no flush after every write:\n"
		"\t# spacefs writes reach the chunk files before it replies.\n"
		"\tstrict sync = yes\n"
		"\tsync always = no\n"
		"\t# VHDX files are sparse and spacefs volumes thin: never preallocate.\n"
		"\tstrict allocate = no\n"
		"\t# DOS attributes and alternate data streams go to user.* xattrs, which\n"
		"\t# spacefs keeps in its replicated metadata.\n"
		"\tstore dos attributes = yes\n"
		"\tea support = yes\n"
		"\tvfs objects = streams_xattr\n"
		"\t# Keep many requests in flight to FUSE: asynchronous I/O at any size.\n"
		"\taio read size = 1\n"
		"\taio write size = 1\n"
		"\t# sendfile saves nothing on a FUSE mount.\n"
		"\tuse sendfile = no\n",
		sv->name, sv->name, sv->layout, v->node, sv->name, sv->layout, v->mountpoint,
		sv->name);
}

static void print_referral(FILE *f, const struct smb_volume *sv, const char *host)
{
	fprintf(f,
		"\n[%s]\n"
		"\t# spacefs volume %s (%s) is owned by node %s: refer SMB clients there,\n"
		"\t# as a Scale-Out File Server redirects clients to the volume's owner.\n"
		"\tcomment = spacefs volume %s, served by %s\n"
		"\tmsdfs root = yes\n"
		"\tmsdfs proxy = \\\\%s\\%s\n",
		sv->name, sv->name, sv->layout, sv->owner, sv->name, sv->owner, host, sv->name);
}

/* The whole file into f; 1 if a volume could not be placed. */
static int render(FILE *f, const struct smb_args *a, const struct smb_view *v)
{
	int rc = 0;

	print_header(f, v);
	for (unsigned i = 0; i < v->nvol; i++) {
		const struct smb_volume *sv = &v->vol[i];
		const char *host = host_of(a, sv);
		if (strcmp(sv->owner, v->node) == 0)
			print_owned(f, v, sv);
		else if (host)
			print_referral(f, sv, host);
		else {
			fprintf(f, "\n# [%s] left out: owner %s has no known address (--host)\n",
				sv->name, sv->owner);
			rc = 1;
		}
	}
	return rc;
}

/* ---- --watch ---------------------------------------------------------------- */

static char *render_string(const struct smb_args *a, const struct smb_view *v)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	render(f, a, v);
	fclose(f);
	return buf;
}

static int write_atomic(const char *path, const char *text)
{
	char tmp[4200];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fputs(text, f);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		int e = -errno;
		fclose(f);
		unlink(tmp);
		return e;
	}
	fclose(f);
	return rename(tmp, path) < 0 ? -errno : 0;
}

static int reload_smbd(const struct smb_args *a)
{
	pid_t pid = fork();

	if (pid == 0) {
		if (a->smb_conf)
			execlp("smbcontrol", "smbcontrol", "-s", a->smb_conf, "smbd",
			       "reload-config", (char *)NULL);
		else
			execlp("smbcontrol", "smbcontrol", "smbd", "reload-config", (char *)NULL);
		_exit(127);
	}
	int status = 0;
	if (pid > 0)
		waitpid(pid, &status, 0);
	if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "spacectl: smbconf: smbcontrol smbd reload-config failed\n");
		return -EIO;
	}
	return 0;
}

/* Write the file and have smbd reload it; 0 when both worked. */
static int publish(const struct smb_args *a, const char *text)
{
	int rc = write_atomic(a->watch, text);

	if (rc < 0) {
		fprintf(stderr, "spacectl: smbconf: %s: %s\n", a->watch, strerror(-rc));
		return rc;
	}
	printf("smbconf: %s rewritten\n", a->watch);
	fflush(stdout);
	return reload_smbd(a);
}

static int watch(const struct smb_args *a)
{
	char *last = NULL;

	for (;;) {
		struct smb_view v;
		if (fetch_view(a, &v) == 0) {
			char *text = render_string(a, &v);
			/* `last` is what smbd runs with: only a rewrite that was
			 * written and reloaded counts, anything else is retried. */
			if (text && (!last || strcmp(text, last) != 0) && publish(a, text) == 0) {
				free(last);
				last = text;
			} else {
				free(text);
			}
		}
		sleep(a->interval);
	}
	return 0;
}

/* ---- the command ------------------------------------------------------------ */

static int parse(int argc, char **argv, struct smb_args *a, int *done)
{
	static const struct option lo[] = {{"node", required_argument, NULL, 'n'},
					   {"host", required_argument, NULL, 'H'},
					   {"watch", required_argument, NULL, 'w'},
					   {"smb-conf", required_argument, NULL, 's'},
					   {"interval", required_argument, NULL, 'i'},
					   {"help", no_argument, NULL, 'h'},
					   {0}};
	int c;

	*done = 0;
	a->interval = 2;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		switch (c) {
		case 'n':
			a->node = optarg;
			break;
		case 'w':
			a->watch = optarg;
			break;
		case 's':
			a->smb_conf = optarg;
			break;
		case 'H':
			if (!strchr(optarg, '=') || a->nhosts == MAX_VOLS) {
				fail("--host wants NODE=HOST, got '%s'", optarg);
				return 2;
			}
			a->hosts[a->nhosts++] = optarg;
			break;
		case 'i': {
			char *end;
			long s = strtol(optarg, &end, 10);
			if (*end || s < 1 || s > 3600) {
				fail("--interval wants 1..3600 seconds, got '%s'", optarg);
				return 2;
			}
			a->interval = (unsigned)s;
			break;
		}
		case 'h':
			fputs(help_smbconf, stdout);
			*done = 1;
			return 0;
		case ':':
			fail("%s needs a value", argv[optind - 1]);
			return 2;
		default:
			fail("unknown option '%s' (see spacectl smbconf --help)", argv[optind - 1]);
			return 2;
		}
	}
	if (argc - optind != 1) {
		fail("%s", argc - optind < 1 ? "needs SOURCE" : "too many arguments");
		return 2;
	}
	a->source = argv[optind];
	return 0;
}

int smbconf_main(int argc, char **argv)
{
	struct smb_args a;
	struct smb_view v;
	int done, rc;

	memset(&a, 0, sizeof(a));
	rc = parse(argc, argv, &a, &done);
	if (rc || done)
		return rc;
	if (a.watch)
		return watch(&a);
	rc = fetch_view(&a, &v);
	return rc ? rc : render(stdout, &a, &v);
}
