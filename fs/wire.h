/*
 * wire.h -- frames of the redirect channel between nodes (fs/redirect.c).
 *
 * Every message is a frame: a 16-byte header (body length u32, type u16,
 * zero u16, request id u64; little endian) and a body of at most
 * WIRE_MAX_BODY bytes.  The length is checked before anything is
 * allocated; unknown types, non-zero reserved bits, short or long bodies
 * and out-of-range fields are refused.  Requests share one body layout
 * (struct wire_req: the fields a FUSE operation needs, each op using its
 * own subset) so there is a single parser to harden and to fuzz
 * (tests/fs/test_wire.c); replies likewise (struct wire_rep).
 *
 * Nothing here does I/O or knows FUSE: it is plain encoding, decoding and
 * validation, linked into the daemon and into the unit test.
 */
#ifndef SPACEFS_FS_WIRE_H
#define SPACEFS_FS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool/meta.h"

#define WIRE_HDR_SIZE  16u
#define WIRE_MAX_DATA  (1u << 20) /* FUSE max_write and max read */
#define WIRE_MAX_BODY  (WIRE_MAX_DATA + 8192u)
#define WIRE_NAME_MAX  255u
#define WIRE_TEXT_MAX  4096u /* symlink targets, node names and addresses */
#define WIRE_XATTR_MAX 65536u
#define WIRE_NONCE_LEN 32u
#define WIRE_REPLY     0x8000u

enum wire_type {
	/* handshake (fs/redirect.c) */
	W_HELLO = 1,	 /* client: pool uuid, node name, client nonce */
	W_CHALLENGE = 2, /* server: server nonce, server proof */
	W_AUTH = 3,	 /* client: client proof */
	/* file system requests, one per FUSE operation */
	W_GETATTR = 16,
	W_LOOKUP,
	W_MKNOD, /* also mkdir, symlink and create (mode says which) */
	W_LINK,
	W_UNLINK,
	W_RMDIR,
	W_RENAME,
	W_READLINK,
	W_SETATTR,
	W_OPEN,
	W_RELEASE,
	W_READ,
	W_WRITE,
	W_FSYNC,
	W_FSYNCDIR,
	W_FALLOCATE,
	W_READDIR,
	W_STATFS,
	W_GETXATTR,
	W_LISTXATTR,
	W_SETXATTR,
	W_REMOVEXATTR,
	W_LSEEK, /* SEEK_DATA/SEEK_HOLE: off, flags = whence; reply v1 = offset */
	W_FS_LAST = W_LSEEK,
	/* ownership */
	W_TAKE = 64, /* "I released volume volid to you: take it now" */
	W_MOVE,	     /* "move volid to node `name`" (sent to the owner) */
	W_BALANCE,   /* "run balancing now" */
	W_CTL,	     /* a volume's control request for its owner (checkpoints):
		      * data = the request's text, reply data = its reply's */
	W_CKPT,	     /* MNT/VOL/.checkpoints on the owner: mode = operation
		      * (fs/ckpt.c), vino, name, off, len, flags = whence */
	W_LAST = W_CKPT,
};

struct wire_hdr {
	uint32_t len;
	uint16_t type; /* enum wire_type, | WIRE_REPLY on replies */
	uint64_t id;
};

/* One request.  Pointers (name, name2, data) point into the body decoded. */
struct wire_req {
	uint16_t type;
	uint32_t volid;
	uint64_t vino, vino2; /* the inode; a second inode (new parent, link target) */
	uint64_t off, len;    /* byte range; readdir: cookie and byte budget */
	uint32_t mode, uid, gid, flags, to_set;
	uint64_t rdev, size;
	int64_t atime, mtime, ctime; /* ns */
	const char *name;	     /* "" when unused */
	const char *name2;	     /* rename target, symlink target, xattr name */
	const uint8_t *data;
	uint32_t ndata;
	char name_buf[WIRE_NAME_MAX + 1], name2_buf[WIRE_TEXT_MAX + 1];
};

/* A pool_inode plus st_blocks. */
struct wire_attr {
	struct pool_inode a;
	uint64_t blocks;
};

struct wire_rep {
	int32_t err; /* 0 or -errno */
	bool has_attr;
	struct wire_attr attr;
	uint64_t v1, v2, v3; /* op-specific numbers (bytes written, statfs...) */
	const uint8_t *data; /* into the body */
	uint32_t ndata;
};

/* A growing output buffer; any failure sticks in err. */
struct wire_buf {
	uint8_t *p;
	size_t len, cap;
	int err;
};

void wire_buf_free(struct wire_buf *b);
void wire_put_u8(struct wire_buf *b, uint8_t v);
void wire_put_u32(struct wire_buf *b, uint32_t v);
void wire_put_u64(struct wire_buf *b, uint64_t v);
void wire_put_str(struct wire_buf *b, const char *s);
void wire_put_bytes(struct wire_buf *b, const void *p, uint32_t n);
void wire_put_attr(struct wire_buf *b, const struct wire_attr *a);

/* A cursor over a received body; any failure sticks in err. */
struct wire_rd {
	const uint8_t *p;
	size_t len, off;
	int err;
};

uint8_t wire_get_u8(struct wire_rd *r);
uint32_t wire_get_u32(struct wire_rd *r);
uint64_t wire_get_u64(struct wire_rd *r);
/* A string of at most max bytes, no NUL inside, copied to out (max+1). */
void wire_get_str(struct wire_rd *r, uint32_t max, char *out);
const uint8_t *wire_get_bytes(struct wire_rd *r, uint32_t max, uint32_t *n);
void wire_get_attr(struct wire_rd *r, struct wire_attr *a);

/* Header: encode into 16 bytes; decode and check (type known, reserved
 * zero, length within WIRE_MAX_BODY).  -EPROTO / -EMSGSIZE. */
void wire_hdr_encode(const struct wire_hdr *h, uint8_t out[WIRE_HDR_SIZE]);
int wire_hdr_decode(const uint8_t in[WIRE_HDR_SIZE], struct wire_hdr *h);

/* Whole frames (header + body) into b. */
void wire_req_encode(struct wire_buf *b, uint64_t id, const struct wire_req *q);
void wire_rep_encode(struct wire_buf *b, uint16_t type, uint64_t id, const struct wire_rep *p);
/* Decode and validate a body of the given type: 0 or -EPROTO. */
int wire_req_decode(uint16_t type, const uint8_t *body, size_t len, struct wire_req *q);
int wire_rep_decode(const uint8_t *body, size_t len, struct wire_rep *p);

/* A readdir reply's data: entries of (cookie, name, attr). */
void wire_put_dirent(struct wire_buf *b, uint64_t cookie, const char *name,
		     const struct wire_attr *a);
/* Next entry: 1, 0 at the end, -EPROTO if malformed. */
int wire_get_dirent(struct wire_rd *r, uint64_t *cookie, char name[WIRE_NAME_MAX + 1],
		    struct wire_attr *a);

#endif /* SPACEFS_FS_WIRE_H */
