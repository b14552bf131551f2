/*
 * ctl.c -- client side of the control socket (see ctl.h for the protocol).
 *
 * Kept in pool/ because both spacectl and the daemon must agree on where
 * the sockets live; the server half is fs/ctl.c.
 */
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "pool/ctl.h"

const char *pool_ctl_dir(void)
{
	const char *d = getenv("SPACEFS_RUN_DIR");

	return d && *d ? d : "/run/spacefs";
}

int pool_ctl_path(const char *uuid, const char *node, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.%s.sock", pool_ctl_dir(), uuid, node);

	if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	return 0;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static int send_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EIO;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read until the server closes; bounded by POOL_CTL_MAX_REPLY. */
static int read_all(int fd, char **out)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (len + 1 == cap) {
			if (cap >= POOL_CTL_MAX_REPLY) {
				free(buf);
				return -EMSGSIZE;
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + len, cap - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			return -errno;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

static int parse_reply(char *raw, char **reply, char *err, size_t errlen)
{
	size_t len = strlen(raw);

	if (len >= 3 && memcmp(raw, "ok\n", 3) == 0) {
		memmove(raw, raw + 3, len - 3 + 1);
		*reply = raw;
		return 0;
	}
	if (strncmp(raw, "error: ", 7) == 0) {
		raw[strcspn(raw, "\n")] = '\0';
		snprintf(err, errlen, "%s", raw + 7);
	} else {
		snprintf(err, errlen, "malformed reply from the daemon");
	}
	free(raw);
	return -EIO;
}

/* One request to the socket at `path`; -ENOENT if nobody listens.  With
 * timeout_ms, a daemon that does not answer in time (stopped, hung) gives
 * -ETIMEDOUT instead of a wait without end. */
static int call_within(const char *path, const char *request, char **reply, char *err,
		       size_t errlen, unsigned timeout_ms)
{
	int fd = connect_to(path);
	char *raw = NULL;
	int rc;

	if (fd < 0)
		return -ENOENT; /* a stale socket of a dead daemon */
	if (timeout_ms) {
		struct timeval tv = {.tv_sec = timeout_ms / 1000,
				     .tv_usec = (timeout_ms % 1000) * 1000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	rc = send_all(fd, request, strlen(request));
	if (rc == 0)
		rc = send_all(fd, "\n", 1);
	if (rc == 0)
		rc = read_all(fd, &raw);
	close(fd);
	if (rc == -EAGAIN || rc == -EWOULDBLOCK)
		rc = -ETIMEDOUT;
	return rc == 0 ? parse_reply(raw, reply, err, errlen) : rc;
}

static int call_at(const char *path, const char *request, char **reply, char *err, size_t errlen)
{
	return call_within(path, request, reply, err, errlen, 0);
}

static int check_request(const char *request)
{
	/* the server's buffer holds the request, its newline and a NUL */
	return strlen(request) + 2 > POOL_CTL_MAX_REQUEST || strchr(request, '\n') ? -EINVAL : 0;
}

/* One try at every daemon of pool `uuid` (or $SPACEFS_NODE's only). */
static int call_any(const char *uuid, const char *node, const char *request, char **reply,
		    char *err, size_t errlen)
{
	char pattern[512];
	glob_t g;
	int rc = -ENOENT;

	snprintf(pattern, sizeof(pattern), "%s/%s.%s.sock", pool_ctl_dir(), uuid, node);
	if (glob(pattern, 0, NULL, &g) != 0)
		return -ENOENT;
	for (size_t i = 0; i < g.gl_pathc && rc == -ENOENT; i++)
		rc = call_at(g.gl_pathv[i], request, reply, err, errlen);
	globfree(&g);
	return rc;
}

int pool_ctl_call(const char *uuid, const char *request, char **reply, char *err, size_t errlen)
{
	int rc = check_request(request);

	*reply = NULL;
	if (rc < 0)
		return rc;
	/* SPACEFS_NODE picks one node's daemon when several run here. */
	const char *env = getenv("SPACEFS_NODE");
	const char *node = env && *env && !strpbrk(env, "/*?[") ? env : "*";
	/* "Nobody answers" means "no daemon" only once no daemon holds its
	 * run lock (runlock.c): one that is starting or still shutting down
	 * is waited for, never raced. */
	for (unsigned waited = 0;; waited += 100) {
		rc = call_any(uuid, node, request, reply, err, errlen);
		if (rc != -ENOENT || !pool_runlock_busy(uuid, node, err, errlen))
			return rc;
		if (waited >= POOL_RUNLOCK_WAIT_S * 1000u)
			return -EBUSY;
		usleep(100 * 1000);
	}
}

int pool_ctl_call_node(const char *uuid, const char *node, const char *request, char **reply,
		       char *err, size_t errlen)
{
	char path[512];
	int rc = check_request(request);

	*reply = NULL;
	if (rc == 0)
		rc = pool_ctl_path(uuid, node, path, sizeof(path));
	return rc < 0 ? rc : call_at(path, request, reply, err, errlen);
}

int pool_ctl_ask_node(const char *uuid, const char *node, const char *request, char **reply,
		      unsigned timeout_ms)
{
	char path[512], err[128];
	int rc = check_request(request);

	*reply = NULL;
	if (rc == 0)
		rc = pool_ctl_path(uuid, node, path, sizeof(path));
	return rc < 0 ? rc : call_within(path, request, reply, err, sizeof(err), timeout_ms);
}
