/*
 * test_superblock.c -- spacefs.pool encoding and the pool mount rule.
 *
 * The superblock is the one file that decides what a pool is, so these
 * tests attack it: every byte flipped in turn, truncations, files that
 * are not superblocks at all, a newer format, fields out of bounds under
 * a valid checksum.  Each must give its own errno and a message naming
 * the file.  Then whole pools in temporary directories: the majority
 * rule with stale, missing, damaged and foreign disks, moved disks,
 * volume creation and deletion, and placement.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/pool.h"
#include "pool/superblock.h"

#define ERRLEN 2048

/* ---- helpers ------------------------------------------------------------- */

static struct pool_sb *sample_sb(uint32_t nmembers, uint32_t nvolumes)
{
	struct pool_sb *sb = calloc(1, sizeof(*sb));

	assert_non_null(sb);
	sb->version = POOL_SB_VERSION;
	sb->generation = 42;
	snprintf(sb->pool_name, sizeof(sb->pool_name), "lab-pool_1.x");
	sb->created = 1700000000;
	sb->next_volume_id = nvolumes + 5;
	for (int i = 0; i < 16; i++)
		sb->pool_uuid[i] = (uint8_t)(0xa0 + i);
	sb->nmembers = nmembers;
	for (uint32_t i = 0; i < nmembers; i++) {
		struct pool_sb_member *m = &sb->member[i];

		m->index = i;
		m->state = i == 1 ? POOL_MEMBER_FAILED : POOL_MEMBER_ACTIVE;
		for (int b = 0; b < 16; b++)
			m->uuid[b] = (uint8_t)(i * 16 + b + 1);
		snprintf(m->path, sizeof(m->path), "/srv/disks/d%u", i);
	}
	sb->disk_index = nmembers - 1;
	memcpy(sb->disk_uuid, sb->member[nmembers - 1].uuid, POOL_UUID_LEN);
	sb->nvolumes = nvolumes;
	for (uint32_t i = 0; i < nvolumes; i++) {
		struct pool_sb_volume *v = &sb->volume[i];

		snprintf(v->name, sizeof(v->name), "vol%u", i);
		v->id = i + 1;
		v->created = 1700000100 + i;
		v->geom = (struct layout_geom){LAYOUT_MIRROR, 2, 0, 1, 64 * 1024};
		if (i % 2)
			v->geom = (struct layout_geom){LAYOUT_PARITY, 1, 1, 3, 256 * 1024};
		if (i == 3) { /* a parity volume with its journal settings changed */
			v->journal = POOL_VOLUME_JOURNAL_OFF;
			v->journal_mib = 64;
		}
		v->integrity = i % 2;
		v->state = POOL_VOLUME_ONLINE;
		v->nmeta = 2;
		v->meta[0] = 0;
		v->meta[1] = (uint8_t)(nmembers - 1);
	}
	return sb;
}

static uint8_t *encode(const struct pool_sb *sb, size_t *len)
{
	char err[ERRLEN];
	uint8_t *buf;

	*len = pool_sb_size(sb);
	buf = malloc(*len);
	assert_non_null(buf);
	assert_int_equal(pool_sb_encode(sb, buf, *len, err, sizeof(err)), 0);
	return buf;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void reseal(uint8_t *buf, size_t len)
{
	put32(buf + len - 4, layout_crc32c(buf, len - 4));
}

static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		fail_msg("message \"%s\" lacks \"%s\"", hay, needle);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

struct fixture {
	char root[64];
	char disk[6][128];
	char sbpath[6][160];
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->root, sizeof(f->root), "/tmp/spacefs-test-XXXXXX");
	if (!mkdtemp(f->root))
		return -1;
	for (int i = 0; i < 6; i++) {
		char root[sizeof(f->root)];

		memcpy(root, f->root, sizeof(root)); /* snprintf must not read what it writes */
		snprintf(f->disk[i], sizeof(f->disk[i]), "%s/d%d", root, i);
		snprintf(f->sbpath[i], sizeof(f->sbpath[i]), "%s/d%d/%s", root, i, POOL_SB_FILE);
		if (mkdir(f->disk[i], 0755) < 0)
			return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void make_pool(struct fixture *f, uint32_t n)
{
	const char *paths[6];
	char err[ERRLEN];

	for (uint32_t i = 0; i < n; i++)
		paths[i] = f->disk[i];
	if (pool_create("tank", paths, n, 0, err, sizeof(err)) < 0)
		fail_msg("pool_create: %s", err);
}

static struct pool *open_ok(const char *source)
{
	char err[ERRLEN];
	struct pool *p;

	if (pool_open(source, 0, &p, err, sizeof(err)) < 0)
		fail_msg("pool_open: %s", err);
	return p;
}

/* Rewrite disk i's copy with another generation, content unchanged. */
static void set_generation(struct fixture *f, int i, uint64_t gen)
{
	struct pool_sb *sb = malloc(sizeof(*sb));
	char err[ERRLEN];

	assert_int_equal(pool_sb_read(f->disk[i], sb, err, sizeof(err)), 0);
	sb->generation = gen;
	assert_int_equal(pool_sb_write(f->disk[i], sb, err, sizeof(err)), 0);
	free(sb);
}

/* ---- names -------------------------------------------------------------- */

static void test_names(void **state)
{
	const char *why;
	char long_name[80];

	(void)state;
	memset(long_name, 'a', 65);
	long_name[65] = '\0';
	assert_int_equal(pool_name_check("tank-1_2.x", &why), 0);
	assert_int_equal(pool_name_check(long_name + 1, &why), 0); /* 64 chars */
	assert_int_equal(pool_name_check(long_name, &why), -EINVAL);
	assert_int_equal(pool_name_check("", &why), -EINVAL);
	assert_int_equal(pool_name_check(".hidden", &why), -EINVAL);
	assert_int_equal(pool_name_check("a/b", &why), -EINVAL);
	assert_int_equal(pool_name_check("a b", &why), -EINVAL);
	assert_non_null(why);
}

/* ---- encoding ------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
	struct pool_sb *sb = sample_sb(5, 4), *out = malloc(sizeof(*out));
	char err[ERRLEN];
	size_t len, len2;
	uint8_t *buf, *buf2;

	(void)state;
	buf = encode(sb, &len);
	assert_int_equal(len, POOL_SB_HEADER_SIZE + 5 * POOL_SB_MEMBER_SIZE +
				  4 * POOL_SB_VOLUME_SIZE + 4);
	assert_memory_equal(buf, "SPACEFSP", 8);
	assert_int_equal(pool_sb_decode(buf, len, "mem", out, err, sizeof(err)), 0);
	assert_int_equal(out->generation, 42);
	assert_string_equal(out->pool_name, "lab-pool_1.x");
	assert_int_equal(out->nmembers, 5);
	assert_int_equal(out->disk_index, 4);
	assert_int_equal(out->member[1].state, POOL_MEMBER_FAILED);
	assert_string_equal(out->member[3].path, "/srv/disks/d3");
	assert_int_equal(out->nvolumes, 4);
	assert_string_equal(out->volume[3].name, "vol3");
	assert_int_equal(out->volume[3].geom.kind, LAYOUT_PARITY);
	assert_int_equal(out->volume[3].geom.interleave, 256 * 1024);
	assert_int_equal(out->volume[2].geom.copies, 2);
	assert_int_equal(out->volume[3].meta[1], 4);
	assert_int_equal(out->volume[3].journal, POOL_VOLUME_JOURNAL_OFF);
	assert_int_equal(out->volume[3].journal_mib, 64);
	assert_int_equal(out->volume[1].journal, POOL_VOLUME_JOURNAL_ON);
	assert_int_equal(out->volume[1].journal_mib, 0);
	assert_int_equal(out->next_volume_id, 9);
	/* Encoding is canonical: decode then encode gives the same bytes. */
	buf2 = encode(out, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	free(buf2);
	free(buf);
	free(out);
	free(sb);
}

/* Every single-byte change anywhere is caught, whatever the byte holds. */
static void test_flip_every_byte(void **state)
{
	struct pool_sb *sb = sample_sb(3, 2), *out = malloc(sizeof(*out));
	char err[ERRLEN];
	size_t len;
	uint8_t *buf;

	(void)state;
	buf = encode(sb, &len);
	for (size_t i = 0; i < len; i++) {
		uint8_t save = buf[i];
		int rc;

		buf[i] ^= (uint8_t)(1u << (i % 8));
		rc = pool_sb_decode(buf, len, "/d/d3/spacefs.pool", out, err, sizeof(err));
		buf[i] = save;
		if (i < 8) {
			assert_int_equal(rc, -EMEDIUMTYPE);
		} else if (i >= 12 && i < 16) {
			assert_int_equal(rc, -EBADMSG); /* the size field: truncated or too long */
		} else {
			if (rc != -EBADMSG)
				fail_msg("byte %zu: rc %d (%s)", i, rc, err);
			assert_string_equal(
			    err, "/d/d3/spacefs.pool: checksum mismatch (damaged superblock)");
		}
	}
	assert_int_equal(pool_sb_decode(buf, len, "x", out, err, sizeof(err)), 0);
	free(buf);
	free(out);
	free(sb);
}

static void test_newer_version(void **state)
{
	struct pool_sb *sb = sample_sb(2, 1), *out = malloc(sizeof(*out));
	char err[ERRLEN];
	size_t len;
	uint8_t *buf;

	(void)state;
	buf = encode(sb, &len);
	put32(buf + 8, 7);
	reseal(buf, len);
	assert_int_equal(pool_sb_decode(buf, len, "/d/d1/spacefs.pool", out, err, sizeof(err)),
			 -EPROTONOSUPPORT);
	assert_string_equal(err,
			    "/d/d1/spacefs.pool: format version 7 is newer than this spacefs (3)");
	put32(buf + 8, 0);
	reseal(buf, len);
	assert_int_equal(pool_sb_decode(buf, len, "f", out, err, sizeof(err)), -EUCLEAN);
	free(buf);
	free(out);
	free(sb);
}

/* Patch a field, fix the checksum, expect -EUCLEAN naming the problem. */

static void expect_invalid(const struct pool_sb *sb, size_t off, const void *bytes, size_t n,
			   const char *what)
{
	struct pool_sb *out = malloc(sizeof(*out));
	char err[ERRLEN];
	size_t len;
	uint8_t *buf = encode(sb, &len);

	memcpy(buf + off, bytes, n);
	reseal(buf, len);
	assert_int_equal(pool_sb_decode(buf, len, "/p/spacefs.pool", out, err, sizeof(err)),
			 -EUCLEAN);
	assert_contains(err, "/p/spacefs.pool: invalid superblock");
	assert_contains(err, what);
	free(buf);
	free(out);
}

/* Disk models: a pool without any is written as version 1, exactly as
 * before models existed; one model makes it version 2 with a model table
 * after the volumes, which decodes to the same models. */
static void test_models(void **state)
{
	struct pool_sb *sb = sample_sb(3, 2), *out = malloc(sizeof(*out));
	char err[ERRLEN];
	size_t len, len2;
	uint8_t *buf, *buf2;

	(void)state;
	buf = encode(sb, &len);
	assert_int_equal(len, POOL_SB_HEADER_SIZE + 3 * POOL_SB_MEMBER_SIZE +
				  2 * POOL_SB_VOLUME_SIZE + 4);
	assert_int_equal(buf[8], 1); /* version 1 */
	free(buf);

	assert_int_equal(pool_diskmodel_preset("hdd-7200", &sb->member[1].model), 0);
	assert_int_equal(pool_diskmodel_preset("nvme", &sb->member[2].model), 0);
	buf = encode(sb, &len);
	assert_int_equal(len, POOL_SB_HEADER_SIZE + 3 * POOL_SB_MEMBER_SIZE +
				  2 * POOL_SB_VOLUME_SIZE + 3 * POOL_SB_MODEL_SIZE + 4);
	assert_int_equal(buf[8], 2);
	assert_int_equal(buf[168], POOL_SB_MODEL_SIZE);
	assert_int_equal(pool_sb_decode(buf, len, "mem", out, err, sizeof(err)), 0);
	assert_int_equal(out->version, 2);
	assert_int_equal(out->member[0].model.kind, POOL_DISKMODEL_NONE);
	assert_memory_equal(&out->member[1].model, &sb->member[1].model,
			    sizeof(sb->member[1].model));
	assert_memory_equal(&out->member[2].model, &sb->member[2].model,
			    sizeof(sb->member[2].model));
	assert_string_equal(pool_diskmodel_name(&out->member[1].model), "hdd-7200");
	buf2 = encode(out, &len2); /* canonical */
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	free(buf2);

	/* Model records are checked like every other field. */
	size_t d0 = POOL_SB_HEADER_SIZE + 3 * POOL_SB_MEMBER_SIZE + 2 * POOL_SB_VOLUME_SIZE;
	uint8_t bad[4] = {9, 0, 0, 0};
	expect_invalid(sb, d0 + POOL_SB_MODEL_SIZE, bad, 4, "member 1 disk model");
	expect_invalid(sb, d0 + POOL_SB_MODEL_SIZE - 1, bad, 1, "disk model has reserved bytes");
	expect_invalid(sb, d0 + POOL_SB_MODEL_SIZE + 8, "\0\0\0\0", 4, "member 1 disk model");
	/* A version 1 file has no model table and a zero where its size is. */
	free(buf);
	memset(&sb->member[1].model, 0, sizeof(sb->member[1].model));
	memset(&sb->member[2].model, 0, sizeof(sb->member[2].model));
	expect_invalid(sb, 168, bad, 1, "wrong record sizes");
	free(out);
	free(sb);
}

/* Member usage: a pool with a journal disk is written as version 3 (the
 * usage in the model record's word at 44, zero in version 2), which
 * decodes to the same usages; without one it stays version 1 or 2. */
static void test_usage(void **state)
{
	struct pool_sb *sb = sample_sb(4, 2), *out = malloc(sizeof(*out));
	const size_t d0 = POOL_SB_HEADER_SIZE + 4 * POOL_SB_MEMBER_SIZE + 2 * POOL_SB_VOLUME_SIZE;
	char err[ERRLEN];
	size_t len, len2;
	uint8_t *buf, *buf2, four[4];

	(void)state;
	sb->member[2].usage = POOL_USAGE_JOURNAL; /* not a metadata disk (0 and 3 are) */
	buf = encode(sb, &len);
	assert_int_equal(len, d0 + 4 * POOL_SB_MODEL_SIZE + 4);
	assert_int_equal(buf[8], 3);
	assert_int_equal(buf[d0 + 2 * POOL_SB_MODEL_SIZE + 44], POOL_USAGE_JOURNAL);
	assert_int_equal(pool_sb_decode(buf, len, "mem", out, err, sizeof(err)), 0);
	assert_int_equal(out->version, 3);
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(out->member[i].usage,
				 i == 2 ? POOL_USAGE_JOURNAL : POOL_USAGE_DATA);
	buf2 = encode(out, &len2); /* canonical */
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	free(buf2);
	free(buf);
	/* An unknown usage, a usage in a version 2 file, a journal disk
	 * holding a volume's metadata: each refused, named. */
	put32(four, 2);
	expect_invalid(sb, d0 + 2 * POOL_SB_MODEL_SIZE + 44, four, 4,
		       "member 2 has unknown usage 2");
	struct pool_sb *v2 = malloc(sizeof(*v2));
	memcpy(v2, sb, sizeof(*v2));
	v2->member[2].usage = POOL_USAGE_DATA;
	assert_int_equal(pool_diskmodel_preset("nvme", &v2->member[1].model), 0);
	put32(four, POOL_USAGE_JOURNAL);
	expect_invalid(v2, d0 + 2 * POOL_SB_MODEL_SIZE + 44, four, 4,
		       "disk model has reserved bytes");
	free(v2);
	sb->volume[1].meta[1] = 2;
	assert_int_equal(pool_sb_validate(sb, "mem", err, sizeof(err)), -EUCLEAN);
	assert_contains(err, "volume 'vol1' metadata disk 2 is a journal disk");
	free(out);
	free(sb);
}

static void test_bounds(void **state)
{
	struct pool_sb *sb = sample_sb(3, 2);
	const size_t m0 = POOL_SB_HEADER_SIZE, v0 = m0 + 3 * POOL_SB_MEMBER_SIZE;
	uint8_t four[4], ff[POOL_PATH_MAX];

	(void)state;
	memset(ff, 'x', sizeof(ff));
	put32(four, 3);
	expect_invalid(sb, 36, four, 4, "disk index 3"); /* disk index == nmembers */
	put32(four, 4);
	expect_invalid(sb, 28, four, 4, "does not fit"); /* member count vs size */
	put32(four, 0);
	expect_invalid(sb, 28, four, 4, "0 members");
	expect_invalid(sb, 96, ff, 72, "pool name");			       /* unterminated */
	expect_invalid(sb, 96, ".x", 2, "bad pool name");		       /* bad name */
	expect_invalid(sb, 96 + 70, "x", 1, "pool name is not a zero-padded"); /* after NUL */
	expect_invalid(sb, m0 + 24 + 100, "x", 1, "member 0 path");
	expect_invalid(sb, m0 + 24, ff, POOL_PATH_MAX, "member 0 path"); /* unterminated */
	expect_invalid(sb, m0 + 24, "rel", 3, "not an absolute path");
	put32(four, 2);
	expect_invalid(sb, m0 + 16, four, 4, "member 0 says it is index 2");
	put32(four, 9);
	expect_invalid(sb, m0 + 20, four, 4, "unknown state 9");
	expect_invalid(sb, m0 + POOL_SB_MEMBER_SIZE, sb->member[0].uuid, 16, "share a UUID");
	put32(four, 12345);
	expect_invalid(sb, v0 + 104, four, 4, "invalid layout"); /* interleave */
	put32(four, 4);
	expect_invalid(sb, v0 + 88, four, 4, "invalid layout"); /* kind */
	put32(four, 3);
	expect_invalid(sb, v0 + 100, four, 4, "more disks than the pool"); /* 3 x 2 > 3 */
	expect_invalid(sb, v0 + 120, (uint8_t[]){7}, 1, "not a member");   /* meta index */
	expect_invalid(sb, v0 + 121, (uint8_t[]){0}, 1, "twice");
	/* one metadata disk (unused slots zeroed) for a mirror, which needs 2 */
	expect_invalid(sb, v0 + 116, (uint8_t[]){1, 0, 0, 0, 0, 0, 0}, 7, "1 metadata disks");
	expect_invalid(sb, v0 + 122, (uint8_t[]){1}, 1, "malformed"); /* unused slot set */
	/* journal settings: only parity volumes have them, mode 0, 1 or 2, 8..65536 MiB */
	expect_invalid(sb, v0 + 123, (uint8_t[]){1}, 1, "journal mode 1");
	expect_invalid(sb, v0 + POOL_SB_VOLUME_SIZE + 123, (uint8_t[]){3}, 1, "journal mode 3");
	put32(four, 4);
	expect_invalid(sb, v0 + POOL_SB_VOLUME_SIZE + 124, four, 4, "4 MiB");
	expect_invalid(sb, v0 + POOL_SB_VOLUME_SIZE, "vol0", 4, "appears twice");
	expect_invalid(sb, 200, "\1", 1, "reserved");
	free(sb);
}

/* ---- files ------------------------------------------------------------------ */

static void test_read_errors(void **state)
{
	struct fixture *f = *state;
	struct pool_sb *sb = sample_sb(2, 1), *out = malloc(sizeof(*out));
	char err[ERRLEN], expect[512], noise[4096];
	size_t len;
	uint8_t *buf = encode(sb, &len);

	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), -ENOENT);
	assert_contains(err, f->sbpath[0]);

	write_file(f->sbpath[0], buf, 412);
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), -EBADMSG);
	snprintf(expect, sizeof(expect), "%s: truncated (412 of %zu bytes)", f->sbpath[0], len);
	assert_string_equal(err, expect);

	write_file(f->sbpath[0], buf, 5); /* "SPACE": a start of ours, cut short */
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), -EBADMSG);
	assert_contains(err, f->sbpath[0]);
	assert_contains(err, "truncated");

	write_file(f->sbpath[0], "", 0);
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), -EMEDIUMTYPE);
	assert_contains(err, f->sbpath[0]);
	assert_contains(err, "not a spacefs pool file");

	write_file(f->sbpath[0], "[pool]\nname = tank\n", 19);
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), -EMEDIUMTYPE);
	snprintf(expect, sizeof(expect), "%s: not a spacefs pool file", f->sbpath[0]);
	assert_string_equal(err, expect);

	srand(7);
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (char)rand();
	noise[0] = 'X';
	write_file(f->sbpath[0], noise, sizeof(noise));
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), -EMEDIUMTYPE);
	assert_string_equal(err, expect);

	/* one byte too many */
	buf = realloc(buf, len + 1);
	buf[len] = 0;
	write_file(f->sbpath[0], buf, len + 1);
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), -EBADMSG);
	assert_contains(err, f->sbpath[0]);

	assert_int_equal(mkdir(f->sbpath[1], 0755), 0); /* a directory, not a file */
	assert_int_equal(pool_sb_read(f->disk[1], out, err, sizeof(err)), -EMEDIUMTYPE);
	assert_contains(err, f->sbpath[1]);
	free(buf);
	free(out);
	free(sb);
}

static void test_write_atomic(void **state)
{
	struct fixture *f = *state;
	struct pool_sb *sb = sample_sb(3, 2), *out = malloc(sizeof(*out));
	char err[ERRLEN];
	int entries = 0;
	struct dirent *de;
	DIR *d;

	assert_int_equal(pool_sb_write(f->disk[0], sb, err, sizeof(err)), 0);
	sb->generation++;
	assert_int_equal(pool_sb_write(f->disk[0], sb, err, sizeof(err)), 0);
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), 0);
	assert_int_equal(out->generation, 43);
	d = opendir(f->disk[0]);
	while ((de = readdir(d)))
		entries += de->d_name[0] != '.' || strlen(de->d_name) > 2;
	closedir(d);
	assert_int_equal(entries, 1); /* no temp file left behind */
	/* An invalid superblock is never written. */
	sb->disk_index = 9;
	assert_int_equal(pool_sb_write(f->disk[0], sb, err, sizeof(err)), -EINVAL);
	assert_int_equal(pool_sb_read(f->disk[0], out, err, sizeof(err)), 0);
	assert_int_equal(out->generation, 43);
	free(out);
	free(sb);
}

/* ---- the mount rule ------------------------------------------------------------ */

static void test_open_healthy(void **state)
{
	struct fixture *f = *state;
	struct pool *p;

	make_pool(f, 3);
	p = open_ok(f->disk[1]);
	assert_int_equal(p->ndisks, 3);
	assert_int_equal(p->sb->generation, 1);
	assert_string_equal(p->sb->pool_name, "tank");
	assert_int_equal(pool_healthy_disks(p), 3);
	assert_string_equal(pool_health(p), "healthy");
	pool_close(p);
}

static void test_majority_stale(void **state)
{
	struct fixture *f = *state;
	struct pool *p;

	make_pool(f, 3);
	set_generation(f, 0, 5);
	set_generation(f, 1, 5);
	set_generation(f, 2, 4);
	p = open_ok(f->disk[2]); /* even from the stale disk */
	assert_int_equal(p->sb->generation, 5);
	assert_int_equal(p->disk[0].state, POOL_DISK_HEALTHY);
	assert_int_equal(p->disk[1].state, POOL_DISK_HEALTHY);
	assert_int_equal(p->disk[2].state, POOL_DISK_STALE);
	assert_contains(p->disk[2].msg, "generation 4");
	assert_string_equal(pool_health(p), "degraded");
	/* A commit goes to the healthy disks only; the stale one stays so. */
	{
		char err[ERRLEN];

		assert_int_equal(pool_commit(p, err, sizeof(err)), 0);
	}
	pool_close(p);
	p = open_ok(f->disk[0]);
	assert_int_equal(p->sb->generation, 6);
	assert_int_equal(p->disk[2].state, POOL_DISK_STALE);
	pool_close(p);
}

/* A generation only one disk of three holds was never committed. */
static void test_minority_newer(void **state)
{
	struct fixture *f = *state;
	struct pool *p;

	make_pool(f, 3);
	set_generation(f, 0, 6);
	set_generation(f, 1, 5);
	set_generation(f, 2, 5);
	p = open_ok(f->disk[0]);
	assert_int_equal(p->sb->generation, 5);
	assert_int_equal(p->disk[0].state, POOL_DISK_STALE);
	pool_close(p);
}

/* Half is not a majority: 2 of 4 at generation 5, 2 at 4, is refused. */
static void test_majority_tie(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN];
	struct pool *p = NULL;

	make_pool(f, 4);
	set_generation(f, 0, 5);
	set_generation(f, 1, 5);
	set_generation(f, 2, 4);
	set_generation(f, 3, 4);
	assert_int_equal(pool_open(f->disk[0], 0, &p, err, sizeof(err)), -ENXIO);
	assert_contains(err, "2 of 4 disks hold generation 5, a majority needs 3");
	assert_contains(err, f->disk[2]);
	assert_contains(err, f->disk[3]);
	set_generation(f, 2, 5);
	p = open_ok(f->disk[3]);
	assert_int_equal(p->sb->generation, 5);
	assert_int_equal(p->disk[3].state, POOL_DISK_STALE);
	pool_close(p);
}

static void test_majority_missing(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN], moved[160];
	struct pool *p = NULL;

	make_pool(f, 3);
	snprintf(moved, sizeof(moved), "%s.gone", f->disk[2]);
	assert_int_equal(rename(f->disk[2], moved), 0);
	assert_int_equal(unlink(f->sbpath[1]), 0); /* disk 1 present but empty */
	assert_int_equal(pool_open(f->disk[0], 0, &p, err, sizeof(err)), -ENXIO);
	assert_null(p);
	assert_contains(err, "incomplete");
	assert_contains(err, f->disk[1]);
	assert_contains(err, f->disk[2]);
	assert_contains(err, "1 of 3");
	/* status can still look, read-only */
	assert_int_equal(pool_open(f->disk[0], POOL_OPEN_INSPECT, &p, err, sizeof(err)), 0);
	assert_true(p->incomplete);
	assert_string_equal(pool_health(p), "incomplete");
	assert_int_equal(p->disk[1].state, POOL_DISK_MISSING);
	assert_int_equal(p->disk[2].state, POOL_DISK_MISSING);
	assert_int_equal(pool_commit(p, err, sizeof(err)), -EROFS);
	pool_close(p);
	assert_int_equal(rename(moved, f->disk[2]), 0);
}

static void test_damaged_and_foreign(void **state)
{
	struct fixture *f = *state;
	const char *other[1] = {f->disk[5]};
	char err[ERRLEN];
	struct pool *p;
	uint8_t byte;
	int fd;

	make_pool(f, 3);
	fd = open(f->sbpath[2], O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &byte, 1, 300), 1);
	byte ^= 0x20;
	assert_int_equal(pwrite(fd, &byte, 1, 300), 1);
	close(fd);
	p = open_ok(f->disk[0]);
	assert_int_equal(p->disk[2].state, POOL_DISK_DAMAGED);
	assert_contains(p->disk[2].msg, f->sbpath[2]);
	assert_contains(p->disk[2].msg, "checksum mismatch");
	assert_int_equal(pool_healthy_disks(p), 2);
	pool_close(p);

	/* disk 1's directory now belongs to another pool */
	assert_int_equal(pool_create("other", other, 1, 0, err, sizeof(err)), 0);
	assert_int_equal(rename(f->sbpath[5], f->sbpath[1]), 0);
	assert_int_equal(pool_open(f->disk[0], 0, &p, err, sizeof(err)), -ENXIO);
	assert_contains(err, "foreign");
	assert_contains(err, "damaged");
	assert_int_equal(pool_open(f->disk[0], POOL_OPEN_INSPECT, &p, err, sizeof(err)), 0);
	assert_int_equal(p->disk[1].state, POOL_DISK_FOREIGN);
	assert_contains(p->disk[1].msg, "'other'");
	pool_close(p);
}

/* Disks found by UUID at a path given explicitly, and the new path kept. */
static void test_moved_disk(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN], moved[160];
	const char *extra[1] = {moved};
	struct pool *p;

	make_pool(f, 3);
	snprintf(moved, sizeof(moved), "%s/elsewhere", f->root);
	assert_int_equal(rename(f->disk[1], moved), 0);
	assert_int_equal(pool_open_paths(f->disk[0], extra, 1, 0, &p, err, sizeof(err)), 0);
	assert_int_equal(pool_healthy_disks(p), 3);
	assert_string_equal(p->disk[1].path, moved);
	assert_int_equal(pool_commit(p, err, sizeof(err)), 0);
	pool_close(p);
	p = open_ok(f->disk[2]); /* now found without help */
	assert_int_equal(pool_healthy_disks(p), 3);
	assert_string_equal(p->sb->member[1].path, moved);
	pool_close(p);
}

/* ---- pool create ------------------------------------------------------------------ */

static void test_create_refusals(void **state)
{
	struct fixture *f = *state;
	char err[ERRLEN], link[160], inner[160], file[160];
	const char *twice[2] = {f->disk[0], link};
	const char *nested[2] = {f->disk[0], inner};
	const char *notdir[1] = {file};
	const char *one[1] = {f->disk[3]};

	snprintf(link, sizeof(link), "%s/link", f->root);
	snprintf(inner, sizeof(inner), "%s/inner", f->disk[1]);
	snprintf(file, sizeof(file), "%s/file", f->root);
	assert_int_equal(symlink(f->disk[0], link), 0);
	assert_int_equal(pool_create("p", twice, 2, 1, err, sizeof(err)), -EINVAL);
	assert_contains(err, "listed twice");
	nested[0] = f->disk[1];
	assert_int_equal(mkdir(inner, 0755), 0);
	assert_int_equal(pool_create("p", nested, 2, 1, err, sizeof(err)), -EINVAL);
	assert_contains(err, "inside");
	write_file(file, "x", 1);
	assert_int_equal(pool_create("p", notdir, 1, 0, err, sizeof(err)), -ENOTDIR);
	assert_int_equal(pool_create(".p", one, 1, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(pool_create("p", one, 0, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(pool_create("p", one, 1, 0, err, sizeof(err)), 0);
	assert_int_equal(pool_create("q", one, 1, 0, err, sizeof(err)), -EEXIST);
	assert_contains(err, "pool 'p'");
	assert_int_equal(pool_create("q", one, 1, 1, err, sizeof(err)), 0);
	nested[0] = f->disk[1]; /* non-empty: holds inner/ */
	assert_int_equal(pool_create("r", nested, 1, 0, err, sizeof(err)), -ENOTEMPTY);
	/* nothing was written by the refusals */
	assert_int_equal(access(f->sbpath[0], F_OK), -1);
	assert_int_equal(access(f->sbpath[1], F_OK), -1);
}

/* ---- volumes -------------------------------------------------------------------- */

static void test_volumes(void **state)
{
	struct fixture *f = *state;
	struct layout_geom mirror = {LAYOUT_MIRROR, 2, 0, 2, 256 * 1024};
	struct layout_geom wide = {LAYOUT_MIRROR, 2, 0, 3, 256 * 1024};
	struct layout_geom badil = {LAYOUT_SIMPLE, 1, 0, 2, 48 * 1024};
	struct layout_geom par = {LAYOUT_PARITY, 1, 1, 4, 64 * 1024};
	const struct pool_sb_volume *v;
	char err[ERRLEN], path[256];
	struct pool *p;
	uint64_t usable;

	make_pool(f, 4);
	p = open_ok(f->disk[0]);
	assert_int_equal(pool_volume_create(p, "vms", &mirror, 1, err, sizeof(err)), 0);
	assert_int_equal(pool_volume_create(p, "vms", &mirror, 1, err, sizeof(err)), -EEXIST);
	assert_int_equal(pool_volume_create(p, "w", &wide, 1, err, sizeof(err)), -EINVAL);
	assert_contains(err, "needs 6 disks");
	assert_int_equal(pool_volume_create(p, "w", &badil, 1, err, sizeof(err)), -EINVAL);
	assert_contains(err, "power of two");
	assert_int_equal(pool_volume_create(p, "b", &par, 0, err, sizeof(err)), 0);
	v = pool_volume_find(p, "vms");
	assert_non_null(v);
	assert_int_equal(v->nmeta, 3);
	assert_int_equal(v->id, 1);
	assert_int_equal(pool_volume_find(p, "b")->id, 2);
	assert_string_equal(pool_volume_health(p, v), "healthy");
	assert_int_equal(pool_volume_capacity(p, v, &usable), 0);
	assert_true(usable > 0);
	snprintf(path, sizeof(path), "%s/vol/vms", f->disk[3]);
	assert_int_equal(access(path, F_OK), 0);
	pool_close(p);

	p = open_ok(f->disk[3]);
	assert_int_equal(p->sb->generation, 3);
	assert_int_equal(p->sb->nvolumes, 2);
	assert_int_equal(pool_volume_delete(p, "vms", err, sizeof(err)), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_null(pool_volume_find(p, "vms"));
	assert_int_equal(pool_volume_delete(p, "vms", err, sizeof(err)), -ENOENT);
	/* a leftover directory blocks reuse of the name */
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(pool_volume_create(p, "vms", &mirror, 1, err, sizeof(err)), -EEXIST);
	assert_contains(err, path);
	assert_int_equal(rmdir(path), 0);
	/* ids are never reused */
	assert_int_equal(pool_volume_create(p, "vms", &mirror, 1, err, sizeof(err)), 0);
	assert_int_equal(pool_volume_find(p, "vms")->id, 3);
	pool_close(p);
}

/* ---- placement and capacity ---------------------------------------------------- */

/* Freeze the free-space cache at chosen figures. */
static void fake_space(struct pool *p, const uint64_t *gib)
{
	pthread_mutex_lock(&p->lock);
	p->space_when = INT64_MAX / 2; /* "measured in the future": never refreshed */
	for (uint32_t i = 0; i < p->ndisks; i++) {
		p->space[i].ok = 1;
		p->space[i].share = 1;
		p->space[i].size = 1000ull << 30;
		p->space[i].free = gib[i] << 30;
	}
	pthread_mutex_unlock(&p->lock);
}

static void test_place(void **state)
{
	struct fixture *f = *state;
	const uint64_t equal[6] = {10, 10, 10, 10, 10, 10};
	const uint64_t skew[6] = {10, 50, 10, 40, 10, 10};
	uint32_t used[6] = {0};
	uint8_t out[6];
	struct pool *p;

	make_pool(f, 6);
	p = open_ok(f->disk[0]);
	fake_space(p, equal);
	for (int call = 0; call < 60; call++) {
		assert_int_equal(pool_place(p, 2, out), 0);
		assert_int_not_equal(out[0], out[1]);
		used[out[0]]++;
		used[out[1]]++;
	}
	for (int i = 0; i < 6; i++)
		assert_int_equal(used[i], 20); /* ties spread evenly */
	fake_space(p, skew);
	for (int call = 0; call < 10; call++) {
		assert_int_equal(pool_place(p, 3, out), 0);
		assert_int_equal(out[0], 1); /* most free first */
		assert_int_equal(out[1], 3);
		assert_true(out[2] != 1 && out[2] != 3);
	}
	assert_int_equal(pool_place(p, 6, out), 0);
	assert_int_equal(pool_place(p, 7, out), -ENOSPC);
	p->disk[4].state = POOL_DISK_MISSING; /* never placed on */
	for (int call = 0; call < 12; call++) {
		assert_int_equal(pool_place(p, 5, out), 0);
		for (int i = 0; i < 5; i++)
			assert_int_not_equal(out[i], 4);
	}
	assert_int_equal(pool_place(p, 6, out), -ENOSPC);
	pool_close(p);
}

static void *place_thread(void *arg)
{
	struct pool *p = arg;
	uint8_t out[3];

	for (int i = 0; i < 2000; i++) {
		if (pool_place(p, 3, out) < 0 || out[0] == out[1] || out[1] == out[2] ||
		    out[0] == out[2])
			return (void *)1;
	}
	return NULL;
}

static void test_place_threads(void **state)
{
	struct fixture *f = *state;
	pthread_t t[4];
	struct pool *p;
	void *res;

	make_pool(f, 5);
	p = open_ok(f->disk[0]);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, place_thread, p), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], &res), 0);
		assert_null(res);
	}
	pool_close(p);
}

static void test_capacity(void **state)
{
	(void)state;
	assert_int_equal(pool_capacity_raw((uint64_t[]){100, 10}, 2, 2), 20);
	assert_int_equal(pool_capacity_raw((uint64_t[]){10, 10, 10}, 3, 2), 30);
	assert_int_equal(pool_capacity_raw((uint64_t[]){1, 100, 1}, 3, 2), 4);
	assert_int_equal(pool_capacity_raw((uint64_t[]){5, 5, 5, 5}, 4, 3), 18);
	assert_int_equal(pool_capacity_raw((uint64_t[]){7, 3}, 2, 1), 10);
	assert_int_equal(pool_capacity_raw((uint64_t[]){7, 3}, 2, 3), 0);
}

/* pool_create_model and pool_disk_set_model: the models survive a reopen. */
static void test_pool_models(void **state)
{
	struct fixture *f = *state;
	const char *paths[3] = {f->disk[0], f->disk[1], f->disk[2]};
	struct pool_diskmodel m, bad = {.kind = 7};
	char err[ERRLEN];

	assert_int_equal(pool_diskmodel_preset("ssd-sata", &m), 0);
	assert_int_equal(pool_create_model("tank", paths, 3, 0, &bad, err, sizeof(err)), -EINVAL);
	assert_contains(err, "disk model");
	assert_int_equal(pool_create_model("tank", paths, 3, 0, &m, err, sizeof(err)), 0);
	struct pool *p = open_ok(f->disk[0]);
	for (uint32_t i = 0; i < 3; i++)
		assert_string_equal(pool_diskmodel_name(&p->sb->member[i].model), "ssd-sata");
	assert_int_equal(pool_diskmodel_preset("none", &m), 0);
	assert_int_equal(pool_disk_set_model(p, 1, &m, err, sizeof(err)), 0);
	assert_int_equal(pool_disk_set_model(p, 3, &m, err, sizeof(err)), -EINVAL);
	assert_int_equal(pool_disk_set_model(p, 0, &bad, err, sizeof(err)), -EINVAL);
	pool_close(p);
	p = open_ok(f->disk[2]);
	assert_string_equal(pool_diskmodel_name(&p->sb->member[0].model), "ssd-sata");
	assert_string_equal(pool_diskmodel_name(&p->sb->member[1].model), "none");
	assert_int_equal(p->sb->member[2].model.read_iops, 72000);
	pool_close(p);
}

/* A journal disk (pool_disk_add_usage) survives a reopen, is never
 * placed on (data or metadata) and does not count as a data disk. */
static void test_pool_journal_disk(void **state)
{
	struct fixture *f = *state;
	const uint64_t free5[6] = {10, 10, 10, 10, 90, 10};
	char err[ERRLEN];
	uint8_t out[6];

	make_pool(f, 4);
	struct pool *p = open_ok(f->disk[0]);
	assert_int_equal(pool_disk_add_usage(p, f->disk[4], 7, err, sizeof(err)), -EINVAL);
	assert_contains(err, "unknown disk usage 7");
	assert_int_equal(pool_disk_add_usage(p, f->disk[4], POOL_USAGE_JOURNAL, err, sizeof(err)),
			 0);
	pool_close(p);
	p = open_ok(f->disk[4]);
	assert_int_equal(p->ndisks, 5);
	assert_int_equal(pool_data_disks(p), 4);
	assert_true(pool_disk_is_journal(p, 4));
	assert_false(pool_disk_is_journal(p, 3));
	assert_int_equal(p->sb->version, 3);
	fake_space(p, free5); /* the journal disk has the most room: still never used */
	for (int call = 0; call < 20; call++) {
		assert_int_equal(pool_place(p, 4, out), 0);
		for (int i = 0; i < 4; i++)
			assert_int_not_equal(out[i], 4);
		assert_int_equal(pool_place_degraded(p, 4, 1, out), 0);
		for (int i = 0; i < 4; i++)
			assert_int_not_equal(out[i], 4);
	}
	assert_int_equal(pool_place(p, 5, out), -ENOSPC);
	struct layout_geom g = {LAYOUT_PARITY, 1, 1, 5, 256 * 1024};
	assert_int_equal(pool_geom_fit(p, &g, err, sizeof(err)), -EINVAL);
	assert_contains(err, "has 4 data");
	g.columns = 3;
	assert_int_equal(pool_volume_create(p, "v", &g, 1, err, sizeof(err)), 0);
	const struct pool_sb_volume *v = pool_volume_find(p, "v");
	for (uint32_t i = 0; i < v->nmeta; i++)
		assert_int_not_equal(v->meta[i], 4);
	pool_close(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_flip_every_byte),
	    cmocka_unit_test(test_newer_version),
	    cmocka_unit_test(test_models),
	    cmocka_unit_test(test_usage),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_capacity),
	    cmocka_unit_test_setup_teardown(test_read_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_atomic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_healthy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_majority_stale, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_minority_newer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_majority_tie, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_majority_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_and_foreign, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_moved_disk, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_volumes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_place, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_place_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_models, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pool_journal_disk, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
