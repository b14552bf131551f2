/*
 * test_owner.c -- coordinator lock records and epoch fencing.
 *
 * Lock records round-trip and every damaged or hostile variant (bad
 * magic, version, CRC, size, padding, names, addresses) is refused with a
 * reason; the byte-0 update lock and the byte-1 liveness lock behave
 * between two open file descriptions as between two nodes; and a
 * metadata store stamped with a newer epoch refuses writes from an older
 * one (the stalled-owner case), for good.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout/layout.h"
#include "pool/meta.h"
#include "pool/owner.h"

static struct pool_owner_rec sample(void)
{
	struct pool_owner_rec r = {.epoch = 7, .expiry_ms = 123456789, .seq = 3};

	snprintf(r.node, sizeof(r.node), "node-a");
	snprintf(r.addr, sizeof(r.addr), "127.0.0.1:7411");
	return r;
}

static void test_roundtrip(void **state)
{
	struct pool_owner_rec r = sample(), got;
	uint8_t buf[POOL_OWNER_REC_SIZE];
	const char *why;

	(void)state;
	pool_owner_encode(&r, buf);
	assert_int_equal(pool_owner_decode(buf, sizeof(buf), &got, &why), 0);
	assert_int_equal(got.epoch, 7);
	assert_int_equal(got.seq, 3);
	assert_string_equal(got.node, "node-a");
	assert_string_equal(got.addr, "127.0.0.1:7411");
}

static void reseal(uint8_t *buf)
{
	uint32_t c = layout_crc32c(buf, 176);
	for (int i = 0; i < 4; i++)
		buf[176 + i] = (uint8_t)(c >> (8 * i));
}

static void test_damage(void **state)
{
	struct pool_owner_rec r = sample(), got;
	uint8_t buf[POOL_OWNER_REC_SIZE], bad[POOL_OWNER_REC_SIZE];
	const char *why;

	(void)state;
	pool_owner_encode(&r, buf);
	memcpy(bad, buf, sizeof(buf));
	bad[0] ^= 1;
	assert_int_equal(pool_owner_decode(bad, sizeof(bad), &got, &why), -EMEDIUMTYPE);
	memcpy(bad, buf, sizeof(buf));
	bad[4] = 9;
	assert_int_equal(pool_owner_decode(bad, sizeof(bad), &got, &why), -EPROTONOSUPPORT);
	assert_int_equal(pool_owner_decode(buf, sizeof(buf) - 1, &got, &why), -EBADMSG);
	memcpy(bad, buf, sizeof(buf));
	bad[20] ^= 0x40; /* flipped bit in the expiry */
	assert_int_equal(pool_owner_decode(bad, sizeof(bad), &got, &why), -EBADMSG);
	memcpy(bad, buf, sizeof(buf));
	bad[40] = '/'; /* a bad node name, CRC made right */
	reseal(bad);
	assert_int_equal(pool_owner_decode(bad, sizeof(bad), &got, &why), -EUCLEAN);
	memcpy(bad, buf, sizeof(buf));
	memset(bad + 40, 'a', 72); /* no NUL in the name field */
	reseal(bad);
	assert_int_equal(pool_owner_decode(bad, sizeof(bad), &got, &why), -EUCLEAN);
	memcpy(bad, buf, sizeof(buf));
	memcpy(bad + 112, "999.1.1.1:1", 12); /* an address that does not parse */
	reseal(bad);
	assert_int_equal(pool_owner_decode(bad, sizeof(bad), &got, &why), -EUCLEAN);
	assert_int_equal(pool_addr_check("[::1]:7411"), 0);
	assert_int_equal(pool_addr_check("127.0.0.1:0"), -EINVAL);
	assert_int_equal(pool_addr_check("host:80"), -EINVAL);
}

static int set_epoch9(struct pool_owner_rec *r, bool exists, void *arg)
{
	(void)exists;
	(void)arg;
	*r = sample();
	r->epoch = 9;
	return 1;
}

static void test_locks(void **state)
{
	char dir[] = "/tmp/test_owner.XXXXXX";
	char err[256];
	struct pool_owner_rec r;

	(void)state;
	assert_non_null(mkdtemp(dir));
	int a = pool_lock_open(dir, true), b = pool_lock_open(dir, false);
	assert_true(a >= 0 && b >= 0);
	assert_int_equal(pool_lock_read(a, dir, &r, err, sizeof(err)), -ENODATA);
	assert_int_equal(pool_lock_update(a, dir, set_epoch9, NULL, err, sizeof(err)), 0);
	assert_int_equal(pool_lock_read(b, dir, &r, err, sizeof(err)), 0);
	assert_int_equal(r.epoch, 9);
	assert_int_equal(pool_lock_probe(b), 0);
	assert_int_equal(pool_lock_hold(a), 0);
	assert_int_equal(pool_lock_probe(b), 1);      /* b sees a live owner */
	assert_int_equal(pool_lock_hold(b), -EAGAIN); /* and cannot take it */
	close(a);				      /* the owner "dies" */
	assert_int_equal(pool_lock_probe(b), 0);
	assert_int_equal(pool_lock_hold(b), 0);
	close(b);
	char path[300];
	snprintf(path, sizeof(path), "%s/owner.lock", dir);
	unlink(path);
	rmdir(dir);
}

static void test_fencing(void **state)
{
	char dir[] = "/tmp/test_fence.XXXXXX", err[256];
	struct pool_meta *old, *fresh;
	struct pool_inode in = {.mode = S_IFDIR | 0755};

	(void)state;
	assert_non_null(mkdtemp(dir));
	const char *dirs[1] = {dir};
	assert_int_equal(pool_meta_open(dirs, 1, 0, 0, &old, err, sizeof(err)), 0);
	assert_int_equal(pool_meta_set_epoch(old, 1), 0);
	assert_int_equal(pool_meta_create(old, POOL_META_ROOT, "a", &in, NULL), 0);
	/* another node takes over: epoch 2 on the replica */
	assert_int_equal(pool_meta_open(dirs, 1, 0, 0, &fresh, err, sizeof(err)), 0);
	assert_int_equal(pool_meta_set_epoch(fresh, 2), 0);
	in.ino = 0;
	assert_int_equal(pool_meta_create(old, POOL_META_ROOT, "b", &in, NULL), -EIO);
	assert_true(pool_meta_fenced(old));
	in.ino = 0;
	assert_int_equal(pool_meta_create(old, POOL_META_ROOT, "c", &in, NULL), -EIO);
	in.ino = 0;
	assert_int_equal(pool_meta_create(fresh, POOL_META_ROOT, "d", &in, NULL), 0);
	struct pool_inode got;
	assert_int_equal(pool_meta_lookup(fresh, POOL_META_ROOT, "b", &got), -ENOENT);
	assert_int_equal(pool_meta_lookup(fresh, POOL_META_ROOT, "d", &got), 0);
	/* an older epoch cannot be stamped over a newer one */
	assert_int_not_equal(pool_meta_set_epoch(old, 1), 0);
	pool_meta_close(old);
	pool_meta_close(fresh);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_damage),
	    cmocka_unit_test(test_locks),
	    cmocka_unit_test(test_fencing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
