/*
 * wire.c -- encoding, decoding and validation of redirect-channel frames
 * (fs/wire.h).
 *
 * Why one body layout for every request: a hand-written parser per
 * operation is twenty chances to forget a bounds check.  Here every
 * request carries the same fields in the same order, decoded by one
 * function that checks each against the limits of the request's type, and
 * the unit test throws random and mutated frames at it by the thousand.
 * The cursor (struct wire_rd) never reads past the body: a short read
 * sets err and returns zeros, and the decoder checks err once at the end
 * and that no byte is left over.
 */
#include "fs/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout/layout.h"

/* ---- output ---- */

void wire_buf_free(struct wire_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static uint8_t *grow(struct wire_buf *b, size_t n)
{
	if (b->err)
		return NULL;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		uint8_t *p = realloc(b->p, cap);
		if (!p) {
			b->err = -ENOMEM;
			return NULL;
		}
		b->p = p;
		b->cap = cap;
	}
	uint8_t *at = b->p + b->len;
	b->len += n;
	return at;
}

void wire_put_u8(struct wire_buf *b, uint8_t v)
{
	uint8_t *p = grow(b, 1);
	if (p)
		*p = v;
}

void wire_put_u32(struct wire_buf *b, uint32_t v)
{
	uint8_t *p = grow(b, 4);
	for (int i = 0; p && i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void wire_put_u64(struct wire_buf *b, uint64_t v)
{
	wire_put_u32(b, (uint32_t)v);
	wire_put_u32(b, (uint32_t)(v >> 32));
}

void wire_put_bytes(struct wire_buf *b, const void *src, uint32_t n)
{
	wire_put_u32(b, n);
	uint8_t *p = n ? grow(b, n) : NULL;
	if (p)
		memcpy(p, src, n);
}

void wire_put_str(struct wire_buf *b, const char *s)
{
	wire_put_bytes(b, s ? s : "", s ? (uint32_t)strlen(s) : 0);
}

void wire_put_attr(struct wire_buf *b, const struct wire_attr *w)
{
	const struct pool_inode *a = &w->a;
	uint32_t npos = a->npos <= LAYOUT_MAX_POSITIONS ? a->npos : 0;

	wire_put_u64(b, a->ino);
	wire_put_u32(b, a->mode);
	wire_put_u32(b, a->uid);
	wire_put_u32(b, a->gid);
	wire_put_u32(b, a->nlink);
	wire_put_u64(b, a->size);
	wire_put_u64(b, a->rdev);
	wire_put_u64(b, (uint64_t)a->atime_ns);
	wire_put_u64(b, (uint64_t)a->mtime_ns);
	wire_put_u64(b, (uint64_t)a->ctime_ns);
	wire_put_bytes(b, a->disk, npos);
	wire_put_u64(b, w->blocks);
}

/* ---- input ---- */

static const uint8_t *take(struct wire_rd *r, size_t n)
{
	if (r->err || n > r->len - r->off) {
		r->err = -EPROTO;
		return NULL;
	}
	const uint8_t *p = r->p + r->off;
	r->off += n;
	return p;
}

uint8_t wire_get_u8(struct wire_rd *r)
{
	const uint8_t *p = take(r, 1);
	return p ? *p : 0;
}

uint32_t wire_get_u32(struct wire_rd *r)
{
	const uint8_t *p = take(r, 4);
	return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		       (uint32_t)p[3] << 24
		 : 0;
}

uint64_t wire_get_u64(struct wire_rd *r)
{
	uint64_t lo = wire_get_u32(r);
	return lo | (uint64_t)wire_get_u32(r) << 32;
}

const uint8_t *wire_get_bytes(struct wire_rd *r, uint32_t max, uint32_t *n)
{
	*n = wire_get_u32(r);
	if (*n > max) {
		r->err = -EPROTO;
		*n = 0;
		return NULL;
	}
	const uint8_t *p = take(r, *n);
	if (!p)
		*n = 0;
	return p;
}

void wire_get_str(struct wire_rd *r, uint32_t max, char *out)
{
	uint32_t n;
	const uint8_t *p = wire_get_bytes(r, max, &n);

	out[0] = '\0';
	if (!p)
		return;
	if (memchr(p, '\0', n)) {
		r->err = -EPROTO;
		return;
	}
	memcpy(out, p, n);
	out[n] = '\0';
}

static bool mode_ok(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
	case S_IFLNK:
	case S_IFIFO:
	case S_IFSOCK:
	case S_IFCHR:
	case S_IFBLK:
		return (mode & ~(uint32_t)(S_IFMT | 07777)) == 0;
	default:
		return false;
	}
}

void wire_get_attr(struct wire_rd *r, struct wire_attr *w)
{
	struct pool_inode *a = &w->a;
	uint32_t npos;

	memset(w, 0, sizeof(*w));
	a->ino = wire_get_u64(r);
	a->mode = wire_get_u32(r);
	a->uid = wire_get_u32(r);
	a->gid = wire_get_u32(r);
	a->nlink = wire_get_u32(r);
	a->size = wire_get_u64(r);
	a->rdev = wire_get_u64(r);
	a->atime_ns = (int64_t)wire_get_u64(r);
	a->mtime_ns = (int64_t)wire_get_u64(r);
	a->ctime_ns = (int64_t)wire_get_u64(r);
	const uint8_t *d = wire_get_bytes(r, LAYOUT_MAX_POSITIONS, &npos);
	if (d)
		memcpy(a->disk, d, npos);
	a->npos = npos;
	w->blocks = wire_get_u64(r);
	if (r->err)
		return;
	if (a->ino == 0 || a->ino >= (1ull << 48) || !mode_ok(a->mode) ||
	    a->size > (uint64_t)INT64_MAX || (npos && !S_ISREG(a->mode)))
		r->err = -EPROTO;
}

/* ---- headers ---- */

void wire_hdr_encode(const struct wire_hdr *h, uint8_t out[WIRE_HDR_SIZE])
{
	struct wire_buf b = {.p = out, .cap = WIRE_HDR_SIZE};

	wire_put_u32(&b, h->len);
	wire_put_u8(&b, (uint8_t)h->type);
	wire_put_u8(&b, (uint8_t)(h->type >> 8));
	wire_put_u8(&b, 0);
	wire_put_u8(&b, 0);
	wire_put_u64(&b, h->id);
}

static bool type_known(uint16_t t)
{
	return (t >= W_HELLO && t <= W_AUTH) || (t >= W_GETATTR && t <= W_FS_LAST) ||
	       (t >= W_TAKE && t <= W_LAST);
}

int wire_hdr_decode(const uint8_t in[WIRE_HDR_SIZE], struct wire_hdr *h)
{
	struct wire_rd r = {.p = in, .len = WIRE_HDR_SIZE};

	h->len = wire_get_u32(&r);
	uint8_t lo = wire_get_u8(&r), hi = wire_get_u8(&r); /* in this order */
	h->type = (uint16_t)(lo | hi << 8);
	uint8_t z0 = wire_get_u8(&r), z1 = wire_get_u8(&r);
	h->id = wire_get_u64(&r);
	uint16_t zero = (uint16_t)(z0 | z1);
	if (zero || !type_known(h->type & (uint16_t)~WIRE_REPLY))
		return -EPROTO;
	return h->len > WIRE_MAX_BODY ? -EMSGSIZE : 0;
}

static void finish_frame(struct wire_buf *b, size_t start, uint16_t type, uint64_t id)
{
	if (b->err)
		return;
	struct wire_hdr h = {
	    .len = (uint32_t)(b->len - start - WIRE_HDR_SIZE), .type = type, .id = id};
	wire_hdr_encode(&h, b->p + start);
}

/* ---- requests ---- */

void wire_req_encode(struct wire_buf *b, uint64_t id, const struct wire_req *q)
{
	size_t start = b->len;

	grow(b, WIRE_HDR_SIZE);
	wire_put_u32(b, q->volid);
	wire_put_u64(b, q->vino);
	wire_put_u64(b, q->vino2);
	wire_put_u64(b, q->off);
	wire_put_u64(b, q->len);
	wire_put_u32(b, q->mode);
	wire_put_u32(b, q->uid);
	wire_put_u32(b, q->gid);
	wire_put_u32(b, q->flags);
	wire_put_u32(b, q->to_set);
	wire_put_u64(b, q->rdev);
	wire_put_u64(b, q->size);
	wire_put_u64(b, (uint64_t)q->atime);
	wire_put_u64(b, (uint64_t)q->mtime);
	wire_put_u64(b, (uint64_t)q->ctime);
	wire_put_str(b, q->name);
	wire_put_str(b, q->name2);
	wire_put_bytes(b, q->data, q->ndata);
	finish_frame(b, start, q->type, id);
}

static bool name_ok(const char *s)
{
	return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

/* What each request type needs: a file-system inode, a name, a second
 * name, which data length. */
static int check_req(const struct wire_req *q)
{
	uint16_t t = q->type;
	bool fsreq = t >= W_GETATTR && t <= W_FS_LAST;
	uint32_t max_data = 0;

	if (q->volid > 0xffff || (fsreq && (q->volid == 0 || q->vino == 0)) ||
	    q->vino >= (1ull << 48) || q->vino2 >= (1ull << 48))
		return -EPROTO;
	switch (t) {
	case W_HELLO:
		if (!q->name[0] || strlen(q->name2) != 36 || q->ndata != WIRE_NONCE_LEN)
			return -EPROTO;
		return 0;
	case W_AUTH:
		return q->ndata == 32 ? 0 : -EPROTO;
	case W_LOOKUP:
	case W_UNLINK:
	case W_RMDIR:
		return name_ok(q->name) && !q->ndata ? 0 : -EPROTO;
	case W_LINK:
		return name_ok(q->name) && q->vino2 && !q->ndata ? 0 : -EPROTO;
	case W_RENAME:
		return name_ok(q->name) && name_ok(q->name2) && q->vino2 && !q->ndata ? 0 : -EPROTO;
	case W_MKNOD:
		if (!name_ok(q->name) || q->ndata || !mode_ok(q->mode))
			return -EPROTO;
		return S_ISLNK(q->mode) == (q->name2[0] != '\0') ? 0 : -EPROTO;
	case W_READ:
	case W_READDIR:
		return q->len <= WIRE_MAX_DATA && !q->ndata ? 0 : -EPROTO;
	case W_GETXATTR:
		return q->name2[0] && q->len <= WIRE_XATTR_MAX && !q->ndata ? 0 : -EPROTO;
	case W_LISTXATTR:
		return q->len <= WIRE_XATTR_MAX && !q->ndata ? 0 : -EPROTO;
	case W_REMOVEXATTR:
		return q->name2[0] && !q->ndata ? 0 : -EPROTO;
	case W_SETXATTR:
		return q->name2[0] && q->ndata <= WIRE_XATTR_MAX ? 0 : -EPROTO;
	case W_WRITE:
		max_data = WIRE_MAX_DATA;
		break;
	case W_MOVE:
		return q->name[0] && q->volid ? 0 : -EPROTO;
	case W_TAKE:
		return q->volid ? 0 : -EPROTO;
	case W_LSEEK:
		return (q->flags == SEEK_DATA || q->flags == SEEK_HOLE) && !q->ndata ? 0 : -EPROTO;
	case W_CTL:
		return q->volid && q->ndata && q->ndata <= WIRE_TEXT_MAX ? 0 : -EPROTO;
	case W_CKPT:
		return q->volid && !q->ndata && q->len <= WIRE_MAX_DATA &&
			       (!q->name[0] || name_ok(q->name))
			   ? 0
			   : -EPROTO;
	case W_CHALLENGE:
		return -EPROTO; /* a reply type, never a request */
	default:
		break;
	}
	if (q->off > (uint64_t)INT64_MAX || q->len > (uint64_t)INT64_MAX)
		return -EPROTO;
	return q->ndata <= max_data ? 0 : -EPROTO;
}

int wire_req_decode(uint16_t type, const uint8_t *body, size_t len, struct wire_req *q)
{
	struct wire_rd r = {.p = body, .len = len};
	uint32_t n;

	memset(q, 0, offsetof(struct wire_req, name_buf));
	q->type = type;
	q->volid = wire_get_u32(&r);
	q->vino = wire_get_u64(&r);
	q->vino2 = wire_get_u64(&r);
	q->off = wire_get_u64(&r);
	q->len = wire_get_u64(&r);
	q->mode = wire_get_u32(&r);
	q->uid = wire_get_u32(&r);
	q->gid = wire_get_u32(&r);
	q->flags = wire_get_u32(&r);
	q->to_set = wire_get_u32(&r);
	q->rdev = wire_get_u64(&r);
	q->size = wire_get_u64(&r);
	q->atime = (int64_t)wire_get_u64(&r);
	q->mtime = (int64_t)wire_get_u64(&r);
	q->ctime = (int64_t)wire_get_u64(&r);
	wire_get_str(&r, WIRE_NAME_MAX, q->name_buf);
	wire_get_str(&r, WIRE_TEXT_MAX, q->name2_buf);
	q->data = wire_get_bytes(&r, WIRE_MAX_DATA, &n);
	q->ndata = n;
	q->name = q->name_buf;
	q->name2 = q->name2_buf;
	if (r.err || r.off != r.len)
		return -EPROTO;
	return check_req(q);
}

/* ---- replies ---- */

void wire_rep_encode(struct wire_buf *b, uint16_t type, uint64_t id, const struct wire_rep *p)
{
	size_t start = b->len;

	grow(b, WIRE_HDR_SIZE);
	wire_put_u32(b, (uint32_t)p->err);
	wire_put_u8(b, p->has_attr);
	if (p->has_attr)
		wire_put_attr(b, &p->attr);
	wire_put_u64(b, p->v1);
	wire_put_u64(b, p->v2);
	wire_put_u64(b, p->v3);
	wire_put_bytes(b, p->data, p->ndata);
	finish_frame(b, start, (uint16_t)(type | WIRE_REPLY), id);
}

int wire_rep_decode(const uint8_t *body, size_t len, struct wire_rep *p)
{
	struct wire_rd r = {.p = body, .len = len};
	uint32_t n;

	memset(p, 0, sizeof(*p));
	p->err = (int32_t)wire_get_u32(&r);
	uint8_t has = wire_get_u8(&r);
	if (has > 1 || p->err > 0 || p->err < -4095)
		return -EPROTO;
	p->has_attr = has;
	if (has)
		wire_get_attr(&r, &p->attr);
	p->v1 = wire_get_u64(&r);
	p->v2 = wire_get_u64(&r);
	p->v3 = wire_get_u64(&r);
	p->data = wire_get_bytes(&r, WIRE_MAX_DATA, &n);
	p->ndata = n;
	return r.err || r.off != r.len ? -EPROTO : 0;
}

/* ---- readdir entries ---- */

void wire_put_dirent(struct wire_buf *b, uint64_t cookie, const char *name,
		     const struct wire_attr *a)
{
	wire_put_u64(b, cookie);
	wire_put_str(b, name);
	wire_put_attr(b, a);
}

int wire_get_dirent(struct wire_rd *r, uint64_t *cookie, char name[WIRE_NAME_MAX + 1],
		    struct wire_attr *a)
{
	if (r->err)
		return -EPROTO;
	if (r->off == r->len)
		return 0;
	*cookie = wire_get_u64(r);
	wire_get_str(r, WIRE_NAME_MAX, name);
	wire_get_attr(r, a);
	if (r->err || !name_ok(name))
		return -EPROTO;
	return 1;
}
