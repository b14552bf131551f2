/*
 * test_wire.c -- the redirect channel's frame parser (fs/wire.c) against
 * garbage: every request type round-trips; then tens of thousands of
 * random bodies, random headers and single-byte mutations, truncations
 * and extensions of valid frames are decoded.  None may crash, read out
 * of bounds (the suite runs under ASan) or be accepted with a field
 * outside its limits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/wire.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static const uint16_t types[] = {W_HELLO,    W_AUTH,	  W_GETATTR,   W_LOOKUP,      W_MKNOD,
				 W_LINK,     W_UNLINK,	  W_RMDIR,     W_RENAME,      W_READLINK,
				 W_SETATTR,  W_OPEN,	  W_RELEASE,   W_READ,	      W_WRITE,
				 W_FSYNC,    W_FSYNCDIR,  W_FALLOCATE, W_READDIR,     W_STATFS,
				 W_GETXATTR, W_LISTXATTR, W_SETXATTR,  W_REMOVEXATTR, W_LSEEK,
				 W_TAKE,     W_MOVE,	  W_BALANCE,   W_CTL,	      W_CKPT};
#define NTYPES (sizeof(types) / sizeof(types[0]))

/* A valid request of each type. */
static void sample(uint16_t t, struct wire_req *q, uint8_t *data)
{
	memset(q, 0, sizeof(*q));
	q->type = t;
	q->volid = 1;
	q->vino = 1;
	q->name = "";
	q->name2 = "";
	switch (t) {
	case W_HELLO:
		q->name = "node-a";
		q->name2 = "01234567-89ab-cdef-0123-456789abcdef";
		q->data = data;
		q->ndata = WIRE_NONCE_LEN;
		break;
	case W_AUTH:
		q->data = data;
		q->ndata = 32;
		break;
	case W_LOOKUP:
	case W_UNLINK:
	case W_RMDIR:
		q->name = "file";
		break;
	case W_LINK:
		q->name = "file";
		q->vino2 = 1;
		break;
	case W_RENAME:
		q->name = "a";
		q->name2 = "b";
		q->vino2 = 1;
		break;
	case W_MKNOD:
		q->name = "l";
		q->mode = S_IFLNK | 0777;
		q->name2 = "target";
		break;
	case W_WRITE:
		q->data = data;
		q->ndata = 100;
		break;
	case W_GETXATTR:
	case W_SETXATTR:
	case W_REMOVEXATTR:
		q->name2 = "user.x";
		break;
	case W_MOVE:
		q->name = "node-b";
		break;
	case W_LSEEK:
		q->flags = SEEK_HOLE;
		break;
	case W_CTL:
		q->data = (const uint8_t *)"ckpt-list V";
		q->ndata = 11;
		break;
	case W_CKPT:
		q->name = "c1";
		break;
	default:
		break;
	}
}

static void encode(const struct wire_req *q, struct wire_buf *b)
{
	memset(b, 0, sizeof(*b));
	wire_req_encode(b, 7, q);
	assert_int_equal(b->err, 0);
}

static void test_roundtrip(void **state)
{
	uint8_t data[128] = {1, 2, 3};
	struct wire_req q, *got = malloc(sizeof(*got));
	struct wire_buf b;
	struct wire_hdr h;

	(void)state;
	for (size_t i = 0; i < NTYPES; i++) {
		sample(types[i], &q, data);
		encode(&q, &b);
		assert_int_equal(wire_hdr_decode(b.p, &h), 0);
		assert_int_equal(h.type, types[i]);
		assert_int_equal(h.len, b.len - WIRE_HDR_SIZE);
		assert_int_equal(wire_req_decode(h.type, b.p + WIRE_HDR_SIZE, h.len, got), 0);
		assert_string_equal(got->name, q.name);
		assert_string_equal(got->name2, q.name2);
		assert_int_equal(got->ndata, q.ndata);
		wire_buf_free(&b);
	}
	free(got);
}

static void test_reply_roundtrip(void **state)
{
	struct wire_rep p = {.err = -ENOENT, .has_attr = true, .v1 = 5}, got;
	struct wire_buf b = {0};
	struct wire_hdr h;

	(void)state;
	p.attr.a.ino = 9;
	p.attr.a.mode = S_IFREG | 0644;
	p.attr.a.npos = 3;
	p.attr.blocks = 8;
	wire_rep_encode(&b, W_GETATTR, 3, &p);
	assert_int_equal(wire_hdr_decode(b.p, &h), 0);
	assert_int_equal(h.type, W_GETATTR | WIRE_REPLY);
	assert_int_equal(wire_rep_decode(b.p + WIRE_HDR_SIZE, h.len, &got), 0);
	assert_int_equal(got.err, -ENOENT);
	assert_int_equal(got.attr.a.npos, 3);
	assert_int_equal(got.v1, 5);
	wire_buf_free(&b);
	/* an error out of range, or a bad has_attr byte, is refused */
	p.err = 5;
	wire_rep_encode(&b, W_GETATTR, 3, &p);
	assert_int_equal(wire_rep_decode(b.p + WIRE_HDR_SIZE, b.len - WIRE_HDR_SIZE, &got),
			 -EPROTO);
	wire_buf_free(&b);
}

static void test_bad_fields(void **state)
{
	struct wire_req q, *got = malloc(sizeof(*got));
	struct wire_buf b;
	uint8_t data[64] = {0};

	(void)state;
	sample(W_LOOKUP, &q, data);
	q.name = "a/b"; /* a slash in a name */
	encode(&q, &b);
	assert_int_equal(wire_req_decode(W_LOOKUP, b.p + 16, b.len - 16, got), -EPROTO);
	wire_buf_free(&b);
	q.name = "..";
	encode(&q, &b);
	assert_int_equal(wire_req_decode(W_LOOKUP, b.p + 16, b.len - 16, got), -EPROTO);
	wire_buf_free(&b);
	sample(W_READ, &q, data);
	q.len = WIRE_MAX_DATA + 1; /* too large a read */
	encode(&q, &b);
	assert_int_equal(wire_req_decode(W_READ, b.p + 16, b.len - 16, got), -EPROTO);
	wire_buf_free(&b);
	sample(W_LSEEK, &q, data);
	q.flags = SEEK_SET; /* only SEEK_DATA and SEEK_HOLE go to the owner */
	encode(&q, &b);
	assert_int_equal(wire_req_decode(W_LSEEK, b.p + 16, b.len - 16, got), -EPROTO);
	wire_buf_free(&b);
	sample(W_GETATTR, &q, data);
	q.volid = 0x10000;
	encode(&q, &b);
	assert_int_equal(wire_req_decode(W_GETATTR, b.p + 16, b.len - 16, got), -EPROTO);
	wire_buf_free(&b);
	/* a header claiming a huge body is refused before any allocation */
	uint8_t hdr[16] = {0xff, 0xff, 0xff, 0x7f, W_READ, 0};
	struct wire_hdr h;
	assert_int_equal(wire_hdr_decode(hdr, &h), -EMSGSIZE);
	hdr[4] = 200; /* unknown type */
	hdr[0] = 0;
	assert_int_equal(wire_hdr_decode(hdr, &h), -EPROTO);
	free(got);
}

/* Decoded requests must respect every limit, whatever the input. */
static void check_limits(const struct wire_req *q)
{
	assert_true(strlen(q->name) <= WIRE_NAME_MAX);
	assert_true(strlen(q->name2) <= WIRE_TEXT_MAX);
	assert_true(q->ndata <= WIRE_MAX_DATA);
	assert_true(q->volid <= 0xffff);
}

static void test_fuzz_random(void **state)
{
	struct wire_req *q = malloc(sizeof(*q));
	uint8_t *buf = malloc(4096);
	struct wire_hdr h;

	(void)state;
	for (int i = 0; i < 50000; i++) {
		size_t len = rnd() % 4096;
		for (size_t j = 0; j < len; j++)
			buf[j] = (uint8_t)rnd();
		uint16_t t = (uint16_t)(rnd() % 80);
		if (wire_req_decode(t, buf, len, q) == 0)
			check_limits(q);
		struct wire_rep p;
		(void)wire_rep_decode(buf, len, &p);
		if (len >= WIRE_HDR_SIZE)
			(void)wire_hdr_decode(buf, &h);
	}
	free(buf);
	free(q);
}

static void test_fuzz_mutations(void **state)
{
	uint8_t data[128];
	struct wire_req q, *got = malloc(sizeof(*got));
	struct wire_buf b;
	uint32_t accepted = 0;

	(void)state;
	memset(data, 0x41, sizeof(data));
	for (int i = 0; i < 40000; i++) {
		sample(types[rnd() % NTYPES], &q, data);
		encode(&q, &b);
		uint8_t *body = b.p + WIRE_HDR_SIZE;
		size_t len = b.len - WIRE_HDR_SIZE;
		switch (rnd() % 4) {
		case 0: /* flip bytes */
			for (int k = 0; k < 1 + (int)(rnd() % 4); k++)
				body[rnd() % len] ^= (uint8_t)(1 + rnd() % 255);
			break;
		case 1: /* truncate */
			len = rnd() % len;
			break;
		case 2: /* a length field made huge */
			body[rnd() % len] = 0xff;
			break;
		default:	   /* trailing garbage: must be refused */
			len = len; /* decoded below with one more byte */
			break;
		}
		uint8_t *copy = malloc(len + 1);
		memcpy(copy, body, len);
		copy[len] = 0x5a;
		size_t dlen = len + (i % 4 == 3 ? 1 : 0);
		if (wire_req_decode(q.type, copy, dlen, got) == 0) {
			check_limits(got);
			accepted++;
		}
		free(copy);
		wire_buf_free(&b);
	}
	assert_true(accepted < 40000); /* most mutations are caught */
	free(got);
}

static void test_fuzz_dirents(void **state)
{
	uint8_t buf[512];
	char name[WIRE_NAME_MAX + 1];
	struct wire_attr a;
	uint64_t cookie;

	(void)state;
	for (int i = 0; i < 20000; i++) {
		size_t len = rnd() % sizeof(buf);
		for (size_t j = 0; j < len; j++)
			buf[j] = (uint8_t)(rnd() % 4 ? rnd() % 8 : rnd());
		struct wire_rd r = {.p = buf, .len = len};
		for (int k = 0; k < 64 && wire_get_dirent(&r, &cookie, name, &a) == 1; k++)
			assert_true(a.a.npos <= LAYOUT_MAX_POSITIONS);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),	   cmocka_unit_test(test_reply_roundtrip),
	    cmocka_unit_test(test_bad_fields),	   cmocka_unit_test(test_fuzz_random),
	    cmocka_unit_test(test_fuzz_mutations), cmocka_unit_test(test_fuzz_dirents),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
