/*
 * redirect.c -- the TCP channel between nodes: redirected I/O.
 *
 * A node that does not own a volume sends each request for it to the
 * owner's listen address (fs/route.c) and the owner executes it on its
 * own stores (fs/serve.c).  This file is the transport: a small pool of
 * connections per peer on the client side, one thread per connection on
 * the server side, one request and one reply at a time per connection
 * (FUSE runs several worker threads, each taking its own connection, so
 * requests still run in parallel without any multiplexing to get wrong).
 *
 * Authentication.  The pool secret (32 random bytes, pool/owner.c) is the
 * key; it never crosses the wire.  Client and server exchange fresh
 * 32-byte nonces and each proves it knows the key with an HMAC-SHA256
 * over distinct labels, the pool UUID and both nonces:
 *     client -> HELLO(node, pool uuid, Nc)
 *     server -> CHALLENGE(Ns, HMAC(K, "spacefs-server-v1" | uuid | Nc | Ns))
 *     client -> AUTH(HMAC(K, "spacefs-client-v1" | uuid | Ns | Nc))
 *     server -> ok, or -EACCES and close
 * A peer that fails, sends a frame the parser refuses (fs/wire.c) or says
 * nothing for HANDSHAKE_MS is logged in one line and disconnected.  There
 * is no encryption: the channel is meant for a cluster network, like the
 * SMB traffic it emulates; docs/OPERATIONS.md says so.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/node.h"
#include "pool/sha256.h"

#define HANDSHAKE_MS 5000
#define MAX_IDLE     16	 /* idle connections kept per client */
#define MAX_SERVED   256 /* connections a server accepts at once */

/* ---- socket helpers ---- */

static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[POOL_ADDR_MAX];
	const char *colon = strrchr(addr, ':');

	if (pool_addr_check(addr) < 0 || !colon)
		return -EINVAL;
	size_t hl = (size_t)(colon - addr);
	memcpy(host, addr, hl);
	host[hl] = '\0';
	int port = atoi(colon + 1);
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		host[hl - 1] = '\0';
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, host + 1, &s6->sin6_addr);
		*len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, host, &s4->sin_addr);
		*len = sizeof(*s4);
	}
	return 0;
}

static int set_timeout(int fd, int64_t ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? (errno == EAGAIN ? -ETIMEDOUT : -errno) : -EPIPE;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_full(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t r = recv(fd, p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? (errno == EAGAIN ? -ETIMEDOUT : -errno) : -ECONNRESET;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One frame: header checked before the body is allocated. */
static int read_frame(int fd, struct wire_hdr *h, uint8_t **body)
{
	uint8_t hb[WIRE_HDR_SIZE];
	int rc = read_full(fd, hb, sizeof(hb));

	*body = NULL;
	if (rc == 0)
		rc = wire_hdr_decode(hb, h);
	if (rc < 0)
		return rc;
	*body = malloc(h->len ? h->len : 1);
	if (!*body)
		return -ENOMEM;
	rc = read_full(fd, *body, h->len);
	if (rc < 0) {
		free(*body);
		*body = NULL;
	}
	return rc;
}

static void proof(const uint8_t *key, const char *label, const char *uuid, const uint8_t *n1,
		  const uint8_t *n2, uint8_t out[POOL_SHA256_LEN])
{
	const void *part[4] = {label, uuid, n1, n2};
	size_t len[4] = {strlen(label), strlen(uuid), WIRE_NONCE_LEN, WIRE_NONCE_LEN};

	pool_hmac_sha256(key, POOL_SECRET_LEN, part, len, 4, out);
}

/* ---- client ---- */

struct conn {
	int fd;
	bool dead;	/* reset while busy: close instead of pooling */
	uint32_t volid; /* of the request in flight on it (busy; r->lock) */
	char addr[POOL_ADDR_MAX];
	struct conn *next;
};

struct fs_rpc {
	struct fs_node *n;
	pthread_mutex_t lock;
	struct conn *idle, *busy;
	uint32_t nidle;
	atomic_uint_fast64_t next_id;
};

int fs_rpc_new(struct fs_node *n, struct fs_rpc **out)
{
	struct fs_rpc *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->n = n;
	pthread_mutex_init(&r->lock, NULL);
	*out = r;
	return 0;
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c);
}

void fs_rpc_free(struct fs_rpc *r)
{
	if (!r)
		return;
	while (r->idle) {
		struct conn *c = r->idle;
		r->idle = c->next;
		conn_close(c);
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static int connect_to(const char *addr, int64_t timeout_ms)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, rc = parse_addr(addr, &ss, &len);

	if (rc < 0)
		return rc;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
		rc = -errno;
		close(fd);
		return rc;
	}
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (poll(&p, 1, (int)timeout_ms) <= 0)
		soerr = ETIMEDOUT;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr) {
		close(fd);
		return -soerr;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int send_req(int fd, uint64_t id, const struct wire_req *q)
{
	struct wire_buf b = {0};

	wire_req_encode(&b, id, q);
	int rc = b.err ? b.err : write_full(fd, b.p, b.len);
	wire_buf_free(&b);
	return rc;
}

static int recv_rep(int fd, uint16_t type, uint64_t id, struct wire_rep *p, uint8_t **raw)
{
	struct wire_hdr h;
	int rc = read_frame(fd, &h, raw);

	if (rc == 0 && (h.type != (type | WIRE_REPLY) || h.id != id))
		rc = -EPROTO;
	if (rc == 0)
		rc = wire_rep_decode(*raw, h.len, p);
	if (rc < 0) {
		free(*raw);
		*raw = NULL;
	}
	return rc;
}

static int client_handshake(struct fs_rpc *r, int fd)
{
	struct fs_node *n = r->n;
	uint8_t nc[WIRE_NONCE_LEN], mac[POOL_SHA256_LEN], *raw = NULL;
	struct wire_rep p;
	int rc;

	if (getrandom(nc, sizeof(nc), 0) != (ssize_t)sizeof(nc))
		return -EIO;
	struct wire_req hello = {
	    .type = W_HELLO, .name = n->name, .name2 = n->uuid, .data = nc, .ndata = sizeof(nc)};
	rc = send_req(fd, 1, &hello);
	if (rc == 0)
		rc = recv_rep(fd, W_CHALLENGE, 1, &p, &raw);
	if (rc == 0 && (p.err || p.ndata != WIRE_NONCE_LEN + POOL_SHA256_LEN))
		rc = p.err ? p.err : -EPROTO;
	if (rc == 0) {
		proof(n->secret, "spacefs-server-v1", n->uuid, nc, p.data, mac);
		if (pool_mac_cmp(mac, p.data + WIRE_NONCE_LEN, sizeof(mac)))
			rc = -EACCES; /* the server does not know our secret */
	}
	if (rc == 0) {
		proof(n->secret, "spacefs-client-v1", n->uuid, p.data, nc, mac);
		struct wire_req auth = {
		    .type = W_AUTH, .name = "", .name2 = "", .data = mac, .ndata = sizeof(mac)};
		free(raw);
		raw = NULL;
		rc = send_req(fd, 2, &auth);
		if (rc == 0)
			rc = recv_rep(fd, W_AUTH, 2, &p, &raw);
		if (rc == 0)
			rc = p.err;
	}
	free(raw);
	return rc;
}

/* An idle pooled connection is usable only if nothing is waiting on it:
 * the server never speaks first, so anything readable is its end closing
 * (EOF: the peer restarted, was killed, or dropped the connection) or an
 * error.  Such a connection would take our next request and answer it
 * with "Connection reset by peer" (suspected of the soak's failed owner
 * moves; their cause was another, node.c's hand-over grace, but a peer
 * killed and started again leaves such connections behind). */
static bool conn_alive(const struct conn *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};

	return poll(&p, 1, 0) == 0;
}

/* A connection to addr for a request for volume volid (0: none), busy
 * until put_conn. */
static struct conn *get_conn(struct fs_rpc *r, const char *addr, uint32_t volid, bool fresh,
			     int *err, bool *reused)
{
	struct conn **pp, *c = NULL, *stale = NULL;

	*reused = false;
	pthread_mutex_lock(&r->lock);
	for (pp = &r->idle; !fresh && *pp;) {
		struct conn *x = *pp;
		if (strcmp(x->addr, addr)) {
			pp = &x->next;
			continue;
		}
		*pp = x->next;
		r->nidle--;
		if (conn_alive(x)) {
			c = x;
			break;
		}
		x->next = stale; /* closed by the peer: never reused */
		stale = x;
	}
	if (c) {
		c->volid = volid;
		c->next = r->busy;
		r->busy = c;
	}
	pthread_mutex_unlock(&r->lock);
	while (stale) {
		struct conn *x = stale;
		stale = x->next;
		conn_close(x);
	}
	if (c) {
		*reused = true;
		return c;
	}
	int fd = connect_to(addr, 2000);
	if (fd < 0) {
		*err = fd;
		return NULL;
	}
	set_timeout(fd, HANDSHAKE_MS);
	*err = client_handshake(r, fd);
	if (*err < 0) {
		if (*err == -EACCES)
			fprintf(stderr,
				"spacefs: redirect to %s: the peer failed authentication "
				"(not this pool's secret)\n",
				addr);
		close(fd);
		return NULL;
	}
	set_timeout(fd, 3 * r->n->lease_ms + 5000);
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		*err = -ENOMEM;
		return NULL;
	}
	c->fd = fd;
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	pthread_mutex_lock(&r->lock);
	c->volid = volid;
	c->next = r->busy;
	r->busy = c;
	pthread_mutex_unlock(&r->lock);
	return c;
}

/* Back to the pool (or closed); true if fs_rpc_reset broke it meanwhile. */
static bool put_conn(struct fs_rpc *r, struct conn *c, bool ok)
{
	pthread_mutex_lock(&r->lock);
	struct conn **pp = &r->busy;
	while (*pp != c)
		pp = &(*pp)->next;
	*pp = c->next;
	c->volid = 0;
	bool dead = c->dead;
	bool keep = ok && !dead && r->nidle < MAX_IDLE;
	if (keep) {
		c->next = r->idle;
		r->idle = c;
		r->nidle++;
	}
	pthread_mutex_unlock(&r->lock);
	if (!keep)
		conn_close(c);
	return dead;
}

/* A pooled connection can still die between the check above and our
 * request (the peer closing it that instant).  When a reused one fails
 * at the transport (reset, closed) and was not reset by us
 * (fs_rpc_reset: the owner changed, the caller routes again), the request
 * goes once more on a new connection.
 *
 * Repeats.  A request that fails at the transport may have run on the
 * peer before the connection broke, and its caller sends it again (here,
 * or route.c routing it again).  That is harmless for reads, writes at an
 * offset, setattr and the ownership requests (take, move, balance are
 * idempotent), but not for namespace requests: a mkdir, create or link
 * run twice answers EEXIST, an unlink or rmdir ENOENT, and a rename run
 * twice after someone recreated its source overwrites its target.  So a
 * request is only broken on purpose when it must be: fs_rpc_reset breaks
 * those for the volume that changed hands (whose old owner no longer
 * answers for it), never those for a volume the peer still owns.  What
 * still repeats: a request whose reply does not come within the socket
 * timeout, one in flight when its peer's process dies or its connection
 * is cut, and one for the volume changing hands that its old owner ran
 * just before letting the volume go. */
static bool retry_fresh(int rc)
{
	return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN;
}

int fs_rpc_call(struct fs_rpc *r, const char *addr, const struct wire_req *q, struct wire_rep *p,
		uint8_t **raw)
{
	bool reused = false;
	int rc = 0;

	*raw = NULL;
	for (int attempt = 0; attempt < 2; attempt++) {
		struct conn *c = get_conn(r, addr, q->volid, attempt > 0, &rc, &reused);
		if (!c)
			return rc;
		uint64_t id = atomic_fetch_add(&r->next_id, 1) + 16;
		rc = send_req(c->fd, id, q);
		if (rc == 0)
			rc = recv_rep(c->fd, q->type, id, p, raw);
		bool dead = put_conn(r, c, rc == 0);
		if (rc == 0 || !reused || dead || !retry_fresh(rc))
			break;
	}
	return rc;
}

void fs_rpc_reset(struct fs_rpc *r, const char *addr, uint32_t volid)
{
	struct conn *drop = NULL;

	pthread_mutex_lock(&r->lock);
	for (struct conn **pp = &r->idle; *pp;) {
		struct conn *c = *pp;
		if (strcmp(c->addr, addr)) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		r->nidle--;
		c->next = drop;
		drop = c;
	}
	for (struct conn *c = r->busy; c; c = c->next)
		if (!strcmp(c->addr, addr) && (volid == FS_RPC_ALL || c->volid == volid)) {
			c->dead = true;
			shutdown(c->fd, SHUT_RDWR); /* wakes a thread blocked on it */
		}
	pthread_mutex_unlock(&r->lock);
	while (drop) {
		struct conn *c = drop;
		drop = c->next;
		conn_close(c);
	}
}

/* ---- server ---- */

struct served {
	int fd;
	pthread_t thread;
	bool done;
	char peer[64];
	struct fs_srv *srv;
	struct served *next;
};

struct fs_srv {
	struct fs_node *n;
	int fd;
	int stop_pipe[2];
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	struct served *conns;
	uint32_t nconns;
};

static int send_rep(int fd, uint16_t type, uint64_t id, const struct wire_rep *p)
{
	struct wire_buf b = {0};

	wire_rep_encode(&b, type, id, p);
	int rc = b.err ? b.err : write_full(fd, b.p, b.len);
	wire_buf_free(&b);
	return rc;
}

/* Read one request frame and decode it; the body stays in *body. */
static int read_req(int fd, struct wire_hdr *h, struct wire_req *q, uint8_t **body)
{
	int rc = read_frame(fd, h, body);

	if (rc == 0 && (h->type & WIRE_REPLY))
		rc = -EPROTO;
	if (rc == 0)
		rc = wire_req_decode(h->type, *body, h->len, q);
	return rc;
}

static int server_handshake(struct served *s, char *peer_node)
{
	struct fs_node *n = s->srv->n;
	struct wire_hdr h;
	struct wire_req *q = malloc(sizeof(*q));
	uint8_t ns[WIRE_NONCE_LEN], nc[WIRE_NONCE_LEN], reply[64], mac[POOL_SHA256_LEN];
	uint8_t *body = NULL;
	int rc = q ? 0 : -ENOMEM;

	if (rc == 0)
		rc = read_req(s->fd, &h, q, &body);
	if (rc == 0 && (h.type != W_HELLO || strcmp(q->name2, n->uuid)))
		rc = -EPROTO;
	if (rc == 0 && getrandom(ns, sizeof(ns), 0) != (ssize_t)sizeof(ns))
		rc = -EIO;
	if (rc == 0) {
		snprintf(peer_node, POOL_NODE_NAME_MAX + 1, "%.64s", q->name);
		memcpy(nc, q->data, sizeof(nc));
		memcpy(reply, ns, sizeof(ns));
		proof(n->secret, "spacefs-server-v1", n->uuid, nc, ns, reply + 32);
		struct wire_rep p = {.data = reply, .ndata = sizeof(reply)};
		rc = send_rep(s->fd, W_CHALLENGE, h.id, &p);
	}
	free(body);
	body = NULL;
	if (rc == 0)
		rc = read_req(s->fd, &h, q, &body);
	if (rc == 0 && h.type != W_AUTH)
		rc = -EPROTO;
	if (rc == 0) {
		proof(n->secret, "spacefs-client-v1", n->uuid, ns, nc, mac);
		struct wire_rep p = {.err = pool_mac_cmp(mac, q->data, sizeof(mac)) ? -EACCES : 0};
		send_rep(s->fd, W_AUTH, h.id, &p);
		rc = p.err;
	}
	free(body);
	free(q);
	return rc;
}

static void dispatch(struct fs_node *n, const struct wire_req *q, struct wire_rep *p, uint8_t **out)
{
	struct fs *fs = n->fs;
	char err[512] = "";

	if (q->type >= W_GETATTR && q->type <= W_FS_LAST) {
		fs_serve(fs, q, p, out);
		return;
	} else if (q->type == W_TAKE) {
		p->err = fs_node_take(fs, q->volid, q->flags & FS_TAKE_WAIT, err, sizeof(err));
	} else if (q->type == W_BALANCE) {
		fs_node_kick(fs, true);
	} else if (q->type == W_CTL) {
		fs_ckpt_serve_ctl(fs, q, p, out);
		return;
	} else if (q->type == W_CKPT) {
		fs_ckpt_serve_ns(fs, q, p, out);
		return;
	} else if (q->type == W_MOVE) {
		struct fs_volume *v = fs_volume_by_id(fs, q->volid);
		if (v)
			p->err = fs_node_move(fs, v->name, q->name, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "node %s has no volume with id %u", n->name,
				 q->volid);
		p->err = v ? p->err : -ENOENT;
	} else {
		p->err = -EPROTO;
	}
	/* ownership requests: the reason of a failure goes back as text */
	if (p->err < 0 && err[0] && (*out = (uint8_t *)strdup(err))) {
		p->data = *out;
		p->ndata = (uint32_t)strlen(err);
	}
}

static void *serve_conn(void *arg)
{
	struct served *s = arg;
	struct fs_node *n = s->srv->n;
	char peer_node[POOL_NODE_NAME_MAX + 1] = "?";
	struct wire_req *q = malloc(sizeof(*q));
	int rc = q ? server_handshake(s, peer_node) : -ENOMEM;

	if (rc < 0)
		fprintf(stderr,
			"spacefs: node %s: redirect peer %s (node %s): handshake refused: %s\n",
			n->name, s->peer, peer_node,
			rc == -EACCES ? "wrong pool secret" : strerror(-rc));
	set_timeout(s->fd, 0); /* authenticated: wait for requests as long as it likes */
	while (rc == 0) {
		struct wire_hdr h;
		uint8_t *body = NULL, *out = NULL;
		rc = read_req(s->fd, &h, q, &body);
		if (rc == -EPROTO || rc == -EMSGSIZE)
			fprintf(stderr,
				"spacefs: node %s: redirect peer %s (node %s): malformed "
				"frame; disconnected\n",
				n->name, s->peer, peer_node);
		if (rc == 0) {
			struct wire_rep p = {0};
			dispatch(n, q, &p, &out);
			rc = send_rep(s->fd, q->type, h.id, &p);
		}
		free(out);
		free(body);
	}
	free(q);
	pthread_mutex_lock(&s->srv->lock);
	s->done = true;
	pthread_mutex_unlock(&s->srv->lock);
	return NULL;
}

/* Join connection threads that have finished. */
static void reap(struct fs_srv *srv, bool all)
{
	for (;;) {
		struct served *gone = NULL;
		pthread_mutex_lock(&srv->lock);
		for (struct served **pp = &srv->conns; *pp; pp = &(*pp)->next)
			if ((*pp)->done || all) {
				gone = *pp;
				*pp = gone->next;
				srv->nconns--;
				break;
			}
		pthread_mutex_unlock(&srv->lock);
		if (!gone)
			return;
		shutdown(gone->fd, SHUT_RDWR);
		pthread_join(gone->thread, NULL);
		close(gone->fd);
		free(gone);
	}
}

static void accept_one(struct fs_srv *srv)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = accept4(srv->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	struct served *s;

	if (fd < 0)
		return;
	reap(srv, false);
	s = calloc(1, sizeof(*s));
	if (!s || srv->nconns >= MAX_SERVED) {
		close(fd);
		free(s);
		return;
	}
	char host[INET6_ADDRSTRLEN] = "?";
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
	snprintf(s->peer, sizeof(s->peer), "%s", host);
	s->fd = fd;
	s->srv = srv;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	set_timeout(fd, HANDSHAKE_MS);
	pthread_mutex_lock(&srv->lock);
	if (pthread_create(&s->thread, NULL, serve_conn, s) != 0) {
		pthread_mutex_unlock(&srv->lock);
		close(fd);
		free(s);
		return;
	}
	s->next = srv->conns;
	srv->conns = s;
	srv->nconns++;
	pthread_mutex_unlock(&srv->lock);
}

static void *accept_main(void *arg)
{
	struct fs_srv *srv = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = srv->fd, .events = POLLIN},
				      {.fd = srv->stop_pipe[0], .events = POLLIN}};
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (p[0].revents & POLLIN)
			accept_one(srv);
		else
			reap(srv, false);
	}
	return NULL;
}

int fs_srv_start(struct fs_node *n, char *err, size_t errlen)
{
	struct fs_srv *srv = calloc(1, sizeof(*srv));
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1, rc;

	if (!srv)
		return -ENOMEM;
	srv->n = n;
	srv->fd = -1;
	srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
	pthread_mutex_init(&srv->lock, NULL);
	n->srv = srv;
	if (parse_addr(n->addr, &ss, &len) < 0) {
		snprintf(err, errlen, "listen=%s: not IPv4:PORT or [IPv6]:PORT", n->addr);
		return -EINVAL;
	}
	srv->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv->fd < 0 || setsockopt(srv->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(srv->fd, (struct sockaddr *)&ss, len) < 0 || listen(srv->fd, 64) < 0 ||
	    pipe2(srv->stop_pipe, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, errlen, "listen=%s: %s", n->addr, strerror(errno));
		return rc;
	}
	return 0;
}

int fs_srv_run(struct fs_node *n, char *err, size_t errlen)
{
	struct fs_srv *srv = n->srv;
	int rc = -pthread_create(&srv->thread, NULL, accept_main, srv);

	if (rc < 0)
		snprintf(err, errlen, "redirect server thread: %s", strerror(-rc));
	srv->running = rc == 0;
	return rc;
}

void fs_srv_stop(struct fs_node *n)
{
	struct fs_srv *srv = n->srv;

	if (!srv)
		return;
	if (srv->running) {
		if (write(srv->stop_pipe[1], "x", 1) < 0)
			perror("spacefs: stopping the redirect server");
		pthread_join(srv->thread, NULL);
	}
	reap(srv, true);
	if (srv->fd >= 0)
		close(srv->fd);
	for (int i = 0; i < 2; i++)
		if (srv->stop_pipe[i] >= 0)
			close(srv->stop_pipe[i]);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
	n->srv = NULL;
}
