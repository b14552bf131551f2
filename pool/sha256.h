/*
 * sha256.h -- SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104).
 *
 * The redirect channel between nodes authenticates peers by a challenge
 * and response keyed with the pool secret; this is the only cryptography
 * spacefs needs, so it is written here rather than pulled from a library.
 * Tested against the FIPS 180-4 and RFC 4231 vectors (tests/pool).
 */
#ifndef SPACEFS_POOL_SHA256_H
#define SPACEFS_POOL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define POOL_SHA256_LEN 32

struct pool_sha256 {
	uint32_t h[8];
	uint64_t total; /* bytes hashed so far */
	uint8_t buf[64];
	size_t nbuf;
};

void pool_sha256_init(struct pool_sha256 *c);
void pool_sha256_update(struct pool_sha256 *c, const void *data, size_t len);
void pool_sha256_final(struct pool_sha256 *c, uint8_t out[POOL_SHA256_LEN]);
void pool_sha256(const void *data, size_t len, uint8_t out[POOL_SHA256_LEN]);

/* HMAC-SHA256 of the concatenation of n message parts. */
void pool_hmac_sha256(const void *key, size_t keylen, const void *const *part,
		      const size_t *partlen, size_t n, uint8_t out[POOL_SHA256_LEN]);

/* Compare two MACs in time independent of where they differ: 0 if equal. */
int pool_mac_cmp(const uint8_t *a, const uint8_t *b, size_t len);

#endif /* SPACEFS_POOL_SHA256_H */
