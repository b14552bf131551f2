/*
 * test_sha256.c -- SHA-256 against the FIPS 180-4 examples (and the
 * million-'a' message), HMAC-SHA256 against RFC 4231 test cases 1-4, 6, 7.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/sha256.h"

static void hex(const uint8_t *d, char *out)
{
	for (int i = 0; i < POOL_SHA256_LEN; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_sha(const void *msg, size_t len, const char *want)
{
	uint8_t d[POOL_SHA256_LEN];
	char got[65];

	pool_sha256(msg, len, d);
	hex(d, got);
	assert_string_equal(got, want);
}

static void test_fips(void **state)
{
	(void)state;
	check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	check_sha(two, strlen(two),
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_million_a(void **state)
{
	struct pool_sha256 c;
	uint8_t d[POOL_SHA256_LEN], chunk[1001];
	char got[65];

	(void)state;
	memset(chunk, 'a', sizeof(chunk));
	pool_sha256_init(&c);
	for (int i = 0; i < 1000; i++)
		pool_sha256_update(&c, chunk, i % 2 ? 999 : 1001); /* odd splits */
	pool_sha256_final(&c, d);
	hex(d, got);
	assert_string_equal(got,
			    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void check_hmac(const void *key, size_t klen, const void *msg, size_t mlen, const char *want)
{
	uint8_t d[POOL_SHA256_LEN];
	char got[65];
	const void *part[2] = {msg, (const char *)msg + mlen / 2};
	size_t plen[2] = {mlen / 2, mlen - mlen / 2};

	pool_hmac_sha256(key, klen, part, plen, 2, d);
	hex(d, got);
	assert_string_equal(got, want);
}

static void test_rfc4231(void **state)
{
	uint8_t k[131], m[50];

	(void)state;
	memset(k, 0x0b, 20);
	check_hmac(k, 20, "Hi There", 8,
		   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	check_hmac("Jefe", 4, "what do ya want for nothing?", 28,
		   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	memset(k, 0xaa, 20);
	memset(m, 0xdd, 50);
	check_hmac(k, 20, m, 50,
		   "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
	for (int i = 0; i < 25; i++)
		k[i] = (uint8_t)(i + 1);
	memset(m, 0xcd, 50);
	check_hmac(k, 25, m, 50,
		   "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
	memset(k, 0xaa, 131);
	const char *t6 = "Test Using Larger Than Block-Size Key - Hash Key First";
	check_hmac(k, 131, t6, strlen(t6),
		   "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	const char *t7 = "This is a test using a larger than block-size key and a larger than "
			 "block-size data. The key needs to be hashed before being used by the "
			 "HMAC algorithm.";
	check_hmac(k, 131, t7, strlen(t7),
		   "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void test_mac_cmp(void **state)
{
	uint8_t a[32] = {0}, b[32] = {0};

	(void)state;
	assert_int_equal(pool_mac_cmp(a, b, 32), 0);
	b[31] = 1;
	assert_int_not_equal(pool_mac_cmp(a, b, 32), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fips),
	    cmocka_unit_test(test_million_a),
	    cmocka_unit_test(test_rfc4231),
	    cmocka_unit_test(test_mac_cmp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
