/*
 * runlock.c -- one daemon per pool and node, for the daemon's whole life.
 *
 * `fusermount3 -u` returns as soon as the kernel has let go of the mount;
 * the daemon then still writes back cached sizes, closes the volumes'
 * stores and marks their dirty-region logs clean.  A second daemon
 * started in that window (a user's "unmount, mount again") would open the
 * same metadata and dirty-region logs while the first still writes them,
 * and would resync regions the first had not yet marked clean: two
 * writers on one volume, which is never allowed.  An offline spacectl
 * command run in the same window (its check "does a daemon answer on the
 * control socket?" says no: the socket closes first) would race the same
 * way.
 *
 * So a daemon takes a write lock on
 *     <run dir>/<pool uuid>.<node>.lock
 * before it opens any volume and keeps it until the process ends; the
 * kernel drops it when the process dies, however it dies.  The lock is an
 * open-file-description lock (F_OFD_SETLK): it follows the descriptor
 * through fuse_daemonize()'s fork, which a POSIX record lock would not.
 * The file's text is the holder's pid, for messages only.
 *
 * A new daemon that finds the lock held refuses at once when the holder
 * still serves a mount (it names its mount point on the control socket
 * and /proc/self/mountinfo lists it: just after `fusermount3 -u` the old
 * daemon still answers for a moment, but its mount is gone); otherwise
 * the holder is shutting down or still starting, and the new daemon waits
 * for it, then refuses if it has not finished.  spacectl treats "lock
 * held, no socket answers" the same way: it waits, then refuses, and
 * never acts offline beside a live daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pool/ctl.h"
#include "pool/pool.h"

static int lock_path(const char *uuid, const char *node, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.%s.lock", pool_ctl_dir(), uuid, node);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static struct flock whole_file(short type)
{
	struct flock l = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};

	return l;
}

/* Pid recorded in a lock file, or 0 when unreadable. */
static long holder_pid(int fd)
{
	char buf[32] = "";
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	return n > 0 ? strtol(buf, NULL, 10) : 0;
}

/* 1 when some process holds the lock of the file at `path`, 0 when not
 * (or the file is gone), with the holder's pid in *pid. */
static int held(const char *path, long *pid)
{
	struct flock l = whole_file(F_WRLCK);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc = 0;

	*pid = 0;
	if (fd < 0)
		return 0;
	if (fcntl(fd, F_OFD_GETLK, &l) == 0 && l.l_type != F_UNLCK) {
		rc = 1;
		*pid = holder_pid(fd);
	}
	close(fd);
	return rc;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int pool_runlock_note_pid(int fd)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		return -errno;
	return 0;
}

/* Is `dir` a spacefs mount point in this mount namespace?  mountinfo
 * escapes space, tab, newline and backslash as octal. */
static int is_spacefs_mount(const char *dir)
{
	char esc[PATH_MAX * 4], line[PATH_MAX * 4 + 512];
	size_t n = 0;
	int found = 0;

	for (const char *c = dir; *c && n + 5 < sizeof(esc); c++)
		n += strchr(" \t\n\\", *c) ? (size_t)snprintf(esc + n, 5, "\\%03o", *c)
					   : (size_t)snprintf(esc + n, 2, "%c", *c);
	esc[n] = '\0';
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char mnt[sizeof(line)], *sep = strstr(line, " - ");
		if (sscanf(line, "%*s %*s %*s %*s %s", mnt) == 1 && !strcmp(mnt, esc) && sep &&
		    !strncmp(sep, " - fuse.spacefs ", 16))
			found = 1;
	}
	fclose(f);
	return found;
}

/* The holder of node `node`'s lock still has its mount: it answers on its
 * control socket and the mount point it names is mounted.  Just after
 * `fusermount3 -u` it still answers for a moment, but its mount is gone. */
static int holder_mounted(const char *uuid, const char *node, char *mnt, size_t mntlen)
{
	char *reply = NULL;
	int rc = pool_ctl_ask_node(uuid, node, "shares", &reply, 2000), up = 0;

	if (rc == 0 && !strncmp(reply, "mount\t", 6)) {
		char *m = strchr(reply + 6, '\t');
		if (m) {
			m++;
			m[strcspn(m, "\t\n")] = '\0';
			snprintf(mnt, mntlen, "%s", m);
			up = is_spacefs_mount(m);
		}
	}
	free(reply);
	return up;
}

/* Take an OFD lock of `type` on `path`, waiting up to wait_s while someone
 * else holds a conflicting one (and, if `give_up` says so, not at all).
 * Returns the descriptor (>= 0) and sets *waited, or -errno with *err set. */
static int lock_file(const char *path, short type, unsigned wait_s, int *waited,
		     int (*give_up)(void *), void *arg, const char *waiting_msg, char *err,
		     size_t errlen)
{
	struct flock l = whole_file(type);
	double deadline = now_s() + wait_s;
	int fd, rc;

	*waited = 0;
	mkdir(pool_ctl_dir(), 0700);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	while (fcntl(fd, F_OFD_SETLK, &l) < 0) {
		rc = -errno;
		if (rc != -EAGAIN && rc != -EACCES) {
			snprintf(err, errlen, "%s: cannot lock: %s", path, strerror(-rc));
			close(fd);
			return rc;
		}
		if ((give_up && give_up(arg)) || now_s() >= deadline) {
			close(fd);
			return -EBUSY;
		}
		if (!(*waited)++ && waiting_msg)
			fprintf(stderr, "%s\n", waiting_msg);
		sleep_ms(50);
	}
	return fd;
}

static int pool_lock_path(const char *uuid, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.lock", pool_ctl_dir(), uuid);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int pool_runlock_offline(const char *uuid, char *err, size_t errlen)
{
	char path[512], msg[1024];
	int waited, fd;

	if (pool_lock_path(uuid, path, sizeof(path)) < 0) {
		snprintf(err, errlen, "%s: run directory path too long", pool_ctl_dir());
		return -ENAMETOOLONG;
	}
	snprintf(msg, sizeof(msg),
		 "spacectl: waiting for the spacefs daemon of pool %s to finish (%s)", uuid, path);
	fd = lock_file(path, F_WRLCK, POOL_RUNLOCK_WAIT_S, &waited, NULL, NULL, msg, err, errlen);
	if (fd == -EBUSY)
		snprintf(err, errlen,
			 "a spacefs daemon of pool %s is starting or running (%s is held); "
			 "nothing changed: try again, or make the change through the mount",
			 uuid, path);
	return fd < 0 ? fd : waited > 0; /* fd stays open: held until we exit */
}

struct holder {
	const char *uuid, *node;
	char mnt[PATH_MAX];
};

static int holder_has_mount(void *arg)
{
	struct holder *h = arg;

	return holder_mounted(h->uuid, h->node, h->mnt, sizeof(h->mnt));
}

int pool_runlock_offline_pool(struct pool **pp, const char *source, char *err, size_t errlen)
{
	char uuid[40];
	int rc;

	pool_uuid_format((*pp)->sb->pool_uuid, uuid);
	rc = pool_runlock_offline(uuid, err, errlen);
	if (rc != 1)
		return rc;
	pool_close(*pp); /* a daemon ran while we waited: read what it left */
	*pp = NULL;
	return pool_open(source, 0, pp, err, errlen);
}

int pool_runlock_take(const char *uuid, const char *node, unsigned wait_s, int *fdp, char *err,
		      size_t errlen)
{
	char path[512], msg[1024];
	struct holder h = {.uuid = uuid, .node = node, .mnt = ""};
	int waited_pool, waited_node, fd;

	if (pool_lock_path(uuid, path, sizeof(path)) < 0 ||
	    lock_path(uuid, node, msg, sizeof(msg)) < 0) {
		snprintf(err, errlen, "%s: run directory path too long", pool_ctl_dir());
		return -ENAMETOOLONG;
	}
	/* Shared with the pool's other daemons here; exclusive for spacectl's
	 * offline changes, which it keeps out.  Held until we exit. */
	snprintf(msg, sizeof(msg), "spacefs: waiting for spacectl to finish changing pool %s",
		 uuid);
	fd = lock_file(path, F_RDLCK, wait_s, &waited_pool, NULL, NULL, msg, err, errlen);
	if (fd == -EBUSY)
		snprintf(err, errlen, "%s is held by a spacectl changing the pool; not mounting",
			 path);
	if (fd < 0)
		return fd;
	lock_path(uuid, node, path, sizeof(path));
	snprintf(
	    msg, sizeof(msg),
	    "spacefs: waiting for the previous spacefs of node %s to finish unmounting pool %s",
	    node, uuid);
	fd = lock_file(path, F_WRLCK, wait_s, &waited_node, holder_has_mount, &h, msg, err, errlen);
	if (fd == -EBUSY && h.mnt[0] && holder_mounted(uuid, node, h.mnt, sizeof(h.mnt)))
		snprintf(err, errlen,
			 "pool %s is already mounted at %s by node %s; unmount it first, or "
			 "mount with another -o node=NAME",
			 uuid, h.mnt, node);
	else if (fd == -EBUSY)
		snprintf(err, errlen,
			 "the previous spacefs of node %s on pool %s has not finished after %u s; "
			 "not mounting beside it",
			 node, uuid, wait_s);
	if (fd < 0)
		return fd;
	int rc = pool_runlock_note_pid(fd);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	*fdp = fd;
	return waited_pool || waited_node;
}

int pool_runlock_busy(const char *uuid, const char *node, char *err, size_t errlen)
{
	char pattern[512];
	glob_t g;
	int busy = 0;

	snprintf(pattern, sizeof(pattern), "%s/%s.%s.lock", pool_ctl_dir(), uuid, node);
	if (glob(pattern, 0, NULL, &g) != 0)
		return 0;
	for (size_t i = 0; i < g.gl_pathc && !busy; i++) {
		long pid;
		if (held(g.gl_pathv[i], &pid)) {
			busy = 1;
			snprintf(err, errlen,
				 "a spacefs daemon of this pool (pid %ld, %s) is starting or "
				 "shutting down and does not answer yet; try again when it has",
				 pid, g.gl_pathv[i]);
		}
	}
	globfree(&g);
	return busy;
}
