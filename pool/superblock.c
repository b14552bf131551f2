/*
 * superblock.c -- encoding, decoding and atomic replacement of spacefs.pool.
 *
 * Every disk of a pool carries the whole pool description, so any one
 * disk is enough to find the others, and a majority of them is enough to
 * know the truth (pool.c applies that rule).  This file is only about one
 * copy: turning a struct pool_sb into bytes and back, and replacing the
 * file on disk so that a crash leaves either the old or the new copy.
 *
 * The format is a fixed little-endian layout (docs/FORMAT.md has every
 * offset): a 256-byte header, one fixed-size record per member, one per
 * volume, and a CRC-32C of everything before it.  Fixed records cost a
 * few KiB of zeros per member (paths get 4 KiB each) but make decoding a
 * matter of bounds checks, with no offsets inside the file to trust.
 *
 * Decoding trusts nothing.  The order of the checks is chosen so that the
 * message names the real problem:
 *
 *   1. magic            -> "not a spacefs pool file"
 *   2. size from header -> "truncated (412 of 1024 bytes)"
 *   3. CRC              -> "checksum mismatch (damaged superblock)"
 *   4. version          -> "format version 7 is newer than this spacefs (1)"
 *   5. every field      -> "invalid superblock: <field> <problem>"
 *
 * The CRC is checked before the version because the framing (magic,
 * version at 8, file size at 12, CRC in the last four bytes) is promised
 * never to change: a flipped bit in the version field is damage, and a
 * file from a newer spacefs still passes its own CRC.  Field checks come
 * last, so they only fire for a file whose writer got it wrong.
 *
 * Encoding runs the same field checks first: a bad superblock is never
 * written, so every copy on disk decodes.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool/journal.h"
#include "pool/pool.h"
#include "pool/superblock.h"

static const uint8_t sb_magic[8] = {'S', 'P', 'A', 'C', 'E', 'F', 'S', 'P'};

/* Header offsets (docs/FORMAT.md, "Header"). */
enum {
	H_MAGIC = 0,
	H_VERSION = 8,
	H_FILE_SIZE = 12,
	H_HEADER_SIZE = 16,
	H_MEMBER_SIZE = 20,
	H_VOLUME_SIZE = 24,
	H_NMEMBERS = 28,
	H_NVOLUMES = 32,
	H_DISK_INDEX = 36,
	H_GENERATION = 40,
	H_NEXT_VOLUME_ID = 48,
	H_CREATED = 56,
	H_POOL_UUID = 64,
	H_DISK_UUID = 80,
	H_POOL_NAME = 96,
	H_MODEL_SIZE = 168, /* versions 2, 3; reserved (zero) in version 1 */
	H_RESERVED = 172,   /* zeros up to POOL_SB_HEADER_SIZE */
};

/* Disk model record offsets (versions 2 and 3; one per member, after the
 * volume records). */
enum {
	D_KIND = 0,
	D_PRESET = 4,
	D_RPM = 8,
	D_SEEK_MIN = 12,
	D_SEEK_AVG = 16,
	D_READ_LAT = 20,
	D_WRITE_LAT = 24,
	D_READ_MBPS = 28,
	D_WRITE_MBPS = 32,
	D_READ_IOPS = 36,
	D_WRITE_IOPS = 40,
	D_USAGE = 44,	 /* version 3: enum pool_member_usage; zero in version 2 */
	D_RESERVED = 48, /* zeros up to POOL_SB_MODEL_SIZE */
};

/* Member record offsets. */
enum {
	M_UUID = 0,
	M_INDEX = 16,
	M_STATE = 20,
	M_PATH = 24, /* POOL_PATH_MAX bytes */
};

/* Volume record offsets. */
enum {
	V_NAME = 0,
	V_ID = 72,
	V_CREATED = 80,
	V_KIND = 88,
	V_COPIES = 92,
	V_PARITY = 96,
	V_COLUMNS = 100,
	V_INTERLEAVE = 104,
	V_INTEGRITY = 108,
	V_STATE = 112,
	V_NMETA = 116,
	V_META = 120,	     /* POOL_META_DISKS bytes */
	V_JOURNAL = 123,     /* u8 */
	V_JOURNAL_MIB = 124, /* u32 */
	V_RESERVED = 128,    /* zeros up to POOL_SB_VOLUME_SIZE */
};

#define NAME_FIELD 72u /* bytes of a name field: 64 chars, NUL, zero padding */

/* A file claiming to be larger than this is damaged whatever its version. */
#define SB_FRAME_MAX (16u << 20)

_Static_assert(H_RESERVED <= POOL_SB_HEADER_SIZE, "header overflows");
_Static_assert(V_RESERVED <= POOL_SB_VOLUME_SIZE, "volume record overflows");
_Static_assert(D_RESERVED <= POOL_SB_MODEL_SIZE, "model record overflows");
_Static_assert(M_PATH + POOL_PATH_MAX == POOL_SB_MEMBER_SIZE, "member record size");
_Static_assert(NAME_FIELD > POOL_NAME_MAX, "name field holds the NUL");
_Static_assert(POOL_SB_MAX_SIZE < SB_FRAME_MAX, "frame limit");

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* ---- little-endian access ------------------------------------------------ */

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* A NUL-terminated string in a field of `size` bytes, zero-padded after
 * the NUL, so each string has one encoding.  Copies it into out. */
static int rd_string(const uint8_t *p, size_t size, char *out, size_t outsize)
{
	const uint8_t *nul = memchr(p, 0, size);
	size_t len;

	if (!nul)
		return -1;
	len = (size_t)(nul - p);
	if (len >= outsize || !all_zero(nul, size - len))
		return -1;
	memcpy(out, p, len + 1);
	return 0;
}

/* ---- names and UUIDs ----------------------------------------------------- */

int pool_name_check(const char *name, const char **why)
{
	size_t len = strnlen(name, POOL_NAME_MAX + 1);

	*why = NULL;
	if (len == 0)
		*why = "name is empty";
	else if (len > POOL_NAME_MAX)
		*why = "name is longer than 64 characters";
	else if (name[0] == '.')
		*why = "name starts with '.'";
	else if (strspn(name,
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != len)
		*why = "name has characters other than A-Z a-z 0-9 . _ -";
	return *why ? -EINVAL : 0;
}

void pool_uuid_format(const uint8_t uuid[POOL_UUID_LEN], char out[37])
{
	char *p = out;

	for (unsigned i = 0; i < POOL_UUID_LEN; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		p += sprintf(p, "%02x", uuid[i]);
	}
	*p = '\0';
}

int pool_uuid_generate(uint8_t uuid[POOL_UUID_LEN])
{
	ssize_t n = getrandom(uuid, POOL_UUID_LEN, 0);

	if (n != (ssize_t)POOL_UUID_LEN)
		return n < 0 ? -errno : -EIO;
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40); /* version 4 */
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	return 0;
}

static int uuid_is_nil(const uint8_t uuid[POOL_UUID_LEN])
{
	return all_zero(uuid, POOL_UUID_LEN);
}

/* ---- validation ---------------------------------------------------------- */

static int check_members(const struct pool_sb *sb, const char *name, char *err, size_t errlen)
{
	for (uint32_t i = 0; i < sb->nmembers; i++) {
		const struct pool_sb_member *m = &sb->member[i];
		size_t plen = strnlen(m->path, POOL_PATH_MAX);

		if (m->index != i)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: member %u says it is index %u", name,
				    i, m->index);
		if (m->state < POOL_MEMBER_ACTIVE || m->state > POOL_MEMBER_REPAIRING)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: member %u has unknown state %u", name,
				    i, (unsigned)m->state);
		if (uuid_is_nil(m->uuid))
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: member %u has a nil UUID", name, i);
		for (uint32_t j = 0; j < i; j++)
			if (!memcmp(sb->member[j].uuid, m->uuid, POOL_UUID_LEN))
				return fail(
				    err, errlen, -EUCLEAN,
				    "%s: invalid superblock: members %u and %u share a UUID", name,
				    j, i);
		if (plen == 0 || plen >= POOL_PATH_MAX || m->path[0] != '/')
			return fail(
			    err, errlen, -EUCLEAN,
			    "%s: invalid superblock: member %u path is not an absolute path", name,
			    i);
		if ((uint32_t)m->usage > POOL_USAGE_MAX)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: member %u has unknown usage %u", name,
				    i, (unsigned)m->usage);
		const char *why;
		if (pool_diskmodel_check(&m->model, &why) < 0)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: member %u disk model: %s", name, i,
				    why);
	}
	return 0;
}

static int check_meta_disks(const struct pool_sb *sb, const struct pool_sb_volume *v,
			    const char *name, char *err, size_t errlen)
{
	uint32_t most = sb->nmembers < POOL_META_DISKS ? sb->nmembers : POOL_META_DISKS;

	if (v->nmeta < layout_redundancy(&v->geom) + 1 || v->nmeta > most)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: volume '%s' has %u metadata disks", name,
			    v->name, v->nmeta);
	for (uint32_t i = 0; i < v->nmeta; i++) {
		if (v->meta[i] >= sb->nmembers)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: volume '%s' metadata disk %u is not a "
				    "member",
				    name, v->name, v->meta[i]);
		if (sb->member[v->meta[i]].usage != POOL_USAGE_DATA)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: volume '%s' metadata disk %u is a "
				    "journal disk",
				    name, v->name, v->meta[i]);
		for (uint32_t j = 0; j < i; j++)
			if (v->meta[j] == v->meta[i])
				return fail(err, errlen, -EUCLEAN,
					    "%s: invalid superblock: volume '%s' lists metadata "
					    "disk %u twice",
					    name, v->name, v->meta[i]);
	}
	return 0;
}

static int check_volume(const struct pool_sb *sb, uint32_t i, const char *name, char *err,
			size_t errlen)
{
	const struct pool_sb_volume *v = &sb->volume[i];
	const char *why;

	if (strnlen(v->name, sizeof(v->name)) >= sizeof(v->name) ||
	    pool_name_check(v->name, &why) < 0)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: volume %u has a bad name", name, i);
	for (uint32_t j = 0; j < i; j++) {
		if (!strcmp(sb->volume[j].name, v->name))
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: volume name '%s' appears twice", name,
				    v->name);
		if (sb->volume[j].id == v->id)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: volume id %llu appears twice", name,
				    (unsigned long long)v->id);
	}
	if (v->id == 0 || v->id >= sb->next_volume_id)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: volume '%s' has id %llu out of range", name,
			    v->name, (unsigned long long)v->id);
	if (v->geom.kind < LAYOUT_SIMPLE || v->geom.kind > LAYOUT_PARITY ||
	    layout_geom_check(&v->geom) < 0)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: volume '%s' has an invalid layout", name,
			    v->name);
	if (layout_positions(&v->geom) > sb->nmembers)
		return fail(
		    err, errlen, -EUCLEAN,
		    "%s: invalid superblock: volume '%s' spans more disks than the pool has", name,
		    v->name);
	if (v->integrity > 1)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: volume '%s' integrity flag is %u", name,
			    v->name, v->integrity);
	if (v->journal > POOL_VOLUME_JOURNAL_MAX ||
	    (v->geom.kind != LAYOUT_PARITY && (v->journal || v->journal_mib)) ||
	    (v->journal_mib &&
	     (v->journal_mib < POOL_JOURNAL_MIN_MIB || v->journal_mib > POOL_JOURNAL_MAX_MIB)))
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: volume '%s' has journal mode %u, %u MiB", name,
			    v->name, v->journal, v->journal_mib);
	if (v->state < POOL_VOLUME_ONLINE || v->state > POOL_VOLUME_DELETING)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: volume '%s' has unknown state %u", name,
			    v->name, (unsigned)v->state);
	return check_meta_disks(sb, v, name, err, errlen);
}

int pool_sb_validate(const struct pool_sb *sb, const char *name, char *err, size_t errlen)
{
	const char *why;
	int rc;

	if (sb->version < 1 || sb->version > POOL_SB_VERSION)
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: format version %u",
			    name, sb->version);
	if (sb->generation == 0)
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: generation 0", name);
	if (strnlen(sb->pool_name, sizeof(sb->pool_name)) >= sizeof(sb->pool_name) ||
	    pool_name_check(sb->pool_name, &why) < 0)
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: bad pool name", name);
	if (uuid_is_nil(sb->pool_uuid))
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: nil pool UUID", name);
	if (sb->nmembers < 1 || sb->nmembers > POOL_MAX_DISKS)
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: %u members", name,
			    sb->nmembers);
	if (sb->nvolumes > POOL_MAX_VOLUMES)
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: %u volumes", name,
			    sb->nvolumes);
	rc = check_members(sb, name, err, errlen);
	if (rc < 0)
		return rc;
	if (sb->disk_index >= sb->nmembers)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: disk index %u but only %u members", name,
			    sb->disk_index, sb->nmembers);
	if (memcmp(sb->member[sb->disk_index].uuid, sb->disk_uuid, POOL_UUID_LEN))
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: disk UUID differs from member %u's", name,
			    sb->disk_index);
	for (uint32_t i = 0; i < sb->nvolumes; i++) {
		rc = check_volume(sb, i, name, err, errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- encoding ------------------------------------------------------------ */

/* The version the content needs: 3 only if some disk is a journal disk,
 * 2 only if some disk has a model, so pools without either stay readable
 * by spacefs versions before them. */
static uint32_t needed_version(const struct pool_sb *sb)
{
	uint32_t v = 1;

	for (uint32_t i = 0; i < sb->nmembers && i < POOL_MAX_DISKS; i++) {
		if (sb->member[i].usage != POOL_USAGE_DATA)
			return 3;
		if (sb->member[i].model.kind != POOL_DISKMODEL_NONE)
			v = 2;
	}
	return v;
}

static size_t size_of(uint32_t version, uint32_t nm, uint32_t nv)
{
	return POOL_SB_HEADER_SIZE + (size_t)nm * POOL_SB_MEMBER_SIZE +
	       (size_t)nv * POOL_SB_VOLUME_SIZE +
	       (version >= 2 ? (size_t)nm * POOL_SB_MODEL_SIZE : 0) + 4;
}

size_t pool_sb_size(const struct pool_sb *sb)
{
	return size_of(needed_version(sb), sb->nmembers, sb->nvolumes);
}

static void enc_header(const struct pool_sb *sb, uint8_t *p, size_t size)
{
	uint32_t version = needed_version(sb);

	memcpy(p + H_MAGIC, sb_magic, sizeof(sb_magic));
	wr32(p + H_VERSION, version);
	if (version >= 2)
		wr32(p + H_MODEL_SIZE, POOL_SB_MODEL_SIZE);
	wr32(p + H_FILE_SIZE, (uint32_t)size);
	wr32(p + H_HEADER_SIZE, POOL_SB_HEADER_SIZE);
	wr32(p + H_MEMBER_SIZE, POOL_SB_MEMBER_SIZE);
	wr32(p + H_VOLUME_SIZE, POOL_SB_VOLUME_SIZE);
	wr32(p + H_NMEMBERS, sb->nmembers);
	wr32(p + H_NVOLUMES, sb->nvolumes);
	wr32(p + H_DISK_INDEX, sb->disk_index);
	wr64(p + H_GENERATION, sb->generation);
	wr64(p + H_NEXT_VOLUME_ID, sb->next_volume_id);
	wr64(p + H_CREATED, (uint64_t)sb->created);
	memcpy(p + H_POOL_UUID, sb->pool_uuid, POOL_UUID_LEN);
	memcpy(p + H_DISK_UUID, sb->disk_uuid, POOL_UUID_LEN);
	memcpy(p + H_POOL_NAME, sb->pool_name, strlen(sb->pool_name));
}

static void enc_member(const struct pool_sb_member *m, uint8_t *p)
{
	memcpy(p + M_UUID, m->uuid, POOL_UUID_LEN);
	wr32(p + M_INDEX, m->index);
	wr32(p + M_STATE, (uint32_t)m->state);
	memcpy(p + M_PATH, m->path, strlen(m->path));
}

static void enc_volume(const struct pool_sb_volume *v, uint8_t *p)
{
	memcpy(p + V_NAME, v->name, strlen(v->name));
	wr64(p + V_ID, v->id);
	wr64(p + V_CREATED, (uint64_t)v->created);
	wr32(p + V_KIND, (uint32_t)v->geom.kind);
	wr32(p + V_COPIES, v->geom.copies);
	wr32(p + V_PARITY, v->geom.parity);
	wr32(p + V_COLUMNS, v->geom.columns);
	wr32(p + V_INTERLEAVE, v->geom.interleave);
	wr32(p + V_INTEGRITY, v->integrity);
	wr32(p + V_STATE, (uint32_t)v->state);
	wr32(p + V_NMETA, v->nmeta);
	memcpy(p + V_META, v->meta, v->nmeta);
	p[V_JOURNAL] = (uint8_t)v->journal;
	wr32(p + V_JOURNAL_MIB, v->journal_mib);
}

static void enc_model(const struct pool_sb_member *mb, uint8_t *p)
{
	const struct pool_diskmodel *m = &mb->model;

	wr32(p + D_USAGE, (uint32_t)mb->usage);
	wr32(p + D_KIND, m->kind);
	wr32(p + D_PRESET, m->preset);
	wr32(p + D_RPM, m->rpm);
	wr32(p + D_SEEK_MIN, m->seek_min_us);
	wr32(p + D_SEEK_AVG, m->seek_avg_us);
	wr32(p + D_READ_LAT, m->read_lat_us);
	wr32(p + D_WRITE_LAT, m->write_lat_us);
	wr32(p + D_READ_MBPS, m->read_mbps);
	wr32(p + D_WRITE_MBPS, m->write_mbps);
	wr32(p + D_READ_IOPS, m->read_iops);
	wr32(p + D_WRITE_IOPS, m->write_iops);
}

int pool_sb_encode(const struct pool_sb *sb, void *buf, size_t len, char *err, size_t errlen)
{
	size_t size = pool_sb_size(sb);
	uint8_t *p = buf;
	int rc = pool_sb_validate(sb, "superblock", err, errlen);

	if (rc < 0)
		return -EINVAL;
	if (len < size)
		return fail(err, errlen, -ENOSPC, "superblock: needs %zu bytes, buffer has %zu",
			    size, len);
	memset(p, 0, size); /* padding and reserved bytes are zero */
	enc_header(sb, p, size);
	p += POOL_SB_HEADER_SIZE;
	for (uint32_t i = 0; i < sb->nmembers; i++, p += POOL_SB_MEMBER_SIZE)
		enc_member(&sb->member[i], p);
	for (uint32_t i = 0; i < sb->nvolumes; i++, p += POOL_SB_VOLUME_SIZE)
		enc_volume(&sb->volume[i], p);
	for (uint32_t i = 0; needed_version(sb) >= 2 && i < sb->nmembers;
	     i++, p += POOL_SB_MODEL_SIZE)
		enc_model(&sb->member[i], p);
	wr32(p, layout_crc32c(buf, size - 4));
	assert((size_t)(p + 4 - (uint8_t *)buf) == size);
	return 0;
}

int pool_sb_digest(const struct pool_sb *sb, uint32_t *out)
{
	size_t size = pool_sb_size(sb);
	uint8_t *buf = malloc(size);
	int rc = buf ? pool_sb_encode(sb, buf, size, NULL, 0) : -ENOMEM;

	if (rc == 0) {
		memset(buf + H_DISK_INDEX, 0, 4);
		memset(buf + H_DISK_UUID, 0, POOL_UUID_LEN);
		*out = layout_crc32c(buf, size - 4);
	}
	free(buf);
	return rc;
}

/* ---- decoding ------------------------------------------------------------ */

/* Steps 1-4 of the essay: is this a spacefs.pool of our version, intact? */
static int dec_frame(const uint8_t *p, size_t len, const char *name, char *err, size_t errlen)
{
	uint32_t size, version;

	if (len == 0)
		return fail(err, errlen, -EMEDIUMTYPE, "%s: empty file, not a spacefs pool file",
			    name);
	if (memcmp(p, sb_magic, len < sizeof(sb_magic) ? len : sizeof(sb_magic)))
		return fail(err, errlen, -EMEDIUMTYPE, "%s: not a spacefs pool file", name);
	if (len < H_FILE_SIZE + 4)
		return fail(err, errlen, -EBADMSG, "%s: truncated (%zu bytes)", name, len);
	size = rd32(p + H_FILE_SIZE);
	if (size < POOL_SB_HEADER_SIZE + 4 || size > SB_FRAME_MAX)
		return fail(err, errlen, -EBADMSG,
			    "%s: damaged superblock: impossible size %u in header", name, size);
	if (len < size)
		return fail(err, errlen, -EBADMSG, "%s: truncated (%zu of %u bytes)", name, len,
			    size);
	if (len > size)
		return fail(err, errlen, -EBADMSG,
			    "%s: damaged superblock: %zu bytes where the header says %u", name, len,
			    size);
	if (layout_crc32c(p, size - 4) != rd32(p + size - 4))
		return fail(err, errlen, -EBADMSG, "%s: checksum mismatch (damaged superblock)",
			    name);
	version = rd32(p + H_VERSION);
	if (version > POOL_SB_VERSION)
		return fail(err, errlen, -EPROTONOSUPPORT,
			    "%s: format version %u is newer than this spacefs (%u)", name, version,
			    POOL_SB_VERSION);
	if (version == 0)
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: format version 0",
			    name);
	return 0;
}

/* Step 5, structure: record sizes and counts agree with the file size. */
static int dec_shape(const uint8_t *p, size_t len, const char *name, char *err, size_t errlen)
{
	uint32_t nm = rd32(p + H_NMEMBERS), nv = rd32(p + H_NVOLUMES);
	uint32_t version = rd32(p + H_VERSION);

	if (rd32(p + H_HEADER_SIZE) != POOL_SB_HEADER_SIZE ||
	    rd32(p + H_MEMBER_SIZE) != POOL_SB_MEMBER_SIZE ||
	    rd32(p + H_VOLUME_SIZE) != POOL_SB_VOLUME_SIZE ||
	    rd32(p + H_MODEL_SIZE) != (version >= 2 ? POOL_SB_MODEL_SIZE : 0))
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: wrong record sizes",
			    name);
	if (nm < 1 || nm > POOL_MAX_DISKS || nv > POOL_MAX_VOLUMES)
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: %u members, %u volumes",
			    name, nm, nv);
	if (len != size_of(version, nm, nv))
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: size %zu does not fit %u members and %u "
			    "volumes",
			    name, len, nm, nv);
	if (!all_zero(p + H_RESERVED, POOL_SB_HEADER_SIZE - H_RESERVED))
		return fail(err, errlen, -EUCLEAN, "%s: invalid superblock: reserved bytes set",
			    name);
	return 0;
}

static int dec_header(const uint8_t *p, struct pool_sb *sb)
{
	sb->version = rd32(p + H_VERSION);
	sb->nmembers = rd32(p + H_NMEMBERS);
	sb->nvolumes = rd32(p + H_NVOLUMES);
	sb->disk_index = rd32(p + H_DISK_INDEX);
	sb->generation = rd64(p + H_GENERATION);
	sb->next_volume_id = rd64(p + H_NEXT_VOLUME_ID);
	sb->created = (int64_t)rd64(p + H_CREATED);
	memcpy(sb->pool_uuid, p + H_POOL_UUID, POOL_UUID_LEN);
	memcpy(sb->disk_uuid, p + H_DISK_UUID, POOL_UUID_LEN);
	return rd_string(p + H_POOL_NAME, NAME_FIELD, sb->pool_name, sizeof(sb->pool_name));
}

static int dec_member(const uint8_t *p, struct pool_sb_member *m)
{
	memcpy(m->uuid, p + M_UUID, POOL_UUID_LEN);
	m->index = rd32(p + M_INDEX);
	m->state = (enum pool_member_state)rd32(p + M_STATE);
	return rd_string(p + M_PATH, POOL_PATH_MAX, m->path, sizeof(m->path));
}

static int dec_model(const uint8_t *p, uint32_t version, struct pool_sb_member *mb)
{
	struct pool_diskmodel *m = &mb->model;

	mb->usage = (enum pool_member_usage)rd32(p + D_USAGE);
	if (version < 3 && mb->usage != POOL_USAGE_DATA)
		return -1; /* a reserved field in version 2 */
	m->kind = rd32(p + D_KIND);
	m->preset = rd32(p + D_PRESET);
	m->rpm = rd32(p + D_RPM);
	m->seek_min_us = rd32(p + D_SEEK_MIN);
	m->seek_avg_us = rd32(p + D_SEEK_AVG);
	m->read_lat_us = rd32(p + D_READ_LAT);
	m->write_lat_us = rd32(p + D_WRITE_LAT);
	m->read_mbps = rd32(p + D_READ_MBPS);
	m->write_mbps = rd32(p + D_WRITE_MBPS);
	m->read_iops = rd32(p + D_READ_IOPS);
	m->write_iops = rd32(p + D_WRITE_IOPS);
	return all_zero(p + D_RESERVED, POOL_SB_MODEL_SIZE - D_RESERVED) ? 0 : -1;
}

static int dec_volume(const uint8_t *p, struct pool_sb_volume *v)
{
	v->id = rd64(p + V_ID);
	v->created = (int64_t)rd64(p + V_CREATED);
	v->geom.kind = (enum layout_kind)rd32(p + V_KIND);
	v->geom.copies = rd32(p + V_COPIES);
	v->geom.parity = rd32(p + V_PARITY);
	v->geom.columns = rd32(p + V_COLUMNS);
	v->geom.interleave = rd32(p + V_INTERLEAVE);
	v->integrity = rd32(p + V_INTEGRITY);
	v->state = (enum pool_volume_state)rd32(p + V_STATE);
	v->nmeta = rd32(p + V_NMETA);
	if (v->nmeta > POOL_META_DISKS)
		return -1;
	memcpy(v->meta, p + V_META, POOL_META_DISKS);
	/* unused metadata slots are zero, like every other padding byte */
	if (!all_zero(p + V_META + v->nmeta, V_JOURNAL - V_META - v->nmeta) ||
	    !all_zero(p + V_RESERVED, POOL_SB_VOLUME_SIZE - V_RESERVED))
		return -1;
	v->journal = p[V_JOURNAL];
	v->journal_mib = rd32(p + V_JOURNAL_MIB);
	return rd_string(p + V_NAME, NAME_FIELD, v->name, sizeof(v->name));
}

int pool_sb_decode(const void *buf, size_t len, const char *name, struct pool_sb *out, char *err,
		   size_t errlen)
{
	const uint8_t *p = buf;
	int rc = dec_frame(p, len, name, err, errlen);

	if (rc == 0)
		rc = dec_shape(p, len, name, err, errlen);
	if (rc < 0)
		return rc;
	memset(out, 0, sizeof(*out));
	if (dec_header(p, out) < 0)
		return fail(err, errlen, -EUCLEAN,
			    "%s: invalid superblock: pool name is not a zero-padded string", name);
	p += POOL_SB_HEADER_SIZE;
	for (uint32_t i = 0; i < out->nmembers; i++, p += POOL_SB_MEMBER_SIZE)
		if (dec_member(p, &out->member[i]) < 0)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: member %u path is not a zero-padded "
				    "string",
				    name, i);
	for (uint32_t i = 0; i < out->nvolumes; i++, p += POOL_SB_VOLUME_SIZE)
		if (dec_volume(p, &out->volume[i]) < 0)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: volume %u record is malformed", name,
				    i);
	for (uint32_t i = 0; out->version >= 2 && i < out->nmembers; i++, p += POOL_SB_MODEL_SIZE)
		if (dec_model(p, out->version, &out->member[i]) < 0)
			return fail(err, errlen, -EUCLEAN,
				    "%s: invalid superblock: member %u disk model has reserved "
				    "bytes set",
				    name, i);
	return pool_sb_validate(out, name, err, errlen);
}

/* ---- files --------------------------------------------------------------- */

static int read_all(int fd, uint8_t *buf, size_t max, size_t *got)
{
	size_t n = 0;

	while (n < max) {
		ssize_t r = read(fd, buf + n, max - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*got = n;
	return 0;
}

int pool_sb_read(const char *dir, struct pool_sb *out, char *err, size_t errlen)
{
	char path[POOL_PATH_MAX + sizeof(POOL_SB_FILE) + 1];
	struct stat st;
	uint8_t *buf;
	size_t got = 0, want;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", dir, POOL_SB_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			return fail(err, errlen, rc, "%s: no such file (not a spacefs pool disk)",
				    path);
		return fail(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return fail(err, errlen, -EMEDIUMTYPE, "%s: not a regular file", path);
	}
	/* Files are replaced, never rewritten in place, so the size holds; one
	 * byte more than it would show a file larger than any frame. */
	want = (size_t)st.st_size < SB_FRAME_MAX ? (size_t)st.st_size + 1 : SB_FRAME_MAX + 1;
	buf = malloc(want);
	if (!buf) {
		close(fd);
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	}
	rc = read_all(fd, buf, want, &got);
	close(fd);
	if (rc < 0)
		fail(err, errlen, rc, "%s: read failed: %s", path, strerror(-rc));
	else
		rc = pool_sb_decode(buf, got, path, out, err, errlen);
	free(buf);
	return rc;
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Write buf to a fresh temp file in dir, durably; its name goes to tmp. */
static int write_temp(const char *dir, const uint8_t *buf, size_t len, char *tmp, size_t tmpsize)
{
	int fd, rc = 0;

	snprintf(tmp, tmpsize, "%s/.%s.XXXXXX", dir, POOL_SB_FILE);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0644) < 0 || (rc = write_all(fd, buf, len)) < 0 || fsync(fd) < 0)
		rc = rc ? rc : -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
	return rc;
}

int pool_sb_write(const char *dir, const struct pool_sb *sb, char *err, size_t errlen)
{
	char path[POOL_PATH_MAX + sizeof(POOL_SB_FILE) + 1];
	char tmp[POOL_PATH_MAX + sizeof(POOL_SB_FILE) + 16];
	size_t size = pool_sb_size(sb);
	uint8_t *buf = malloc(size);
	int rc;

	snprintf(path, sizeof(path), "%s/%s", dir, POOL_SB_FILE);
	if (!buf)
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	rc = pool_sb_encode(sb, buf, size, err, errlen);
	if (rc == 0) {
		rc = write_temp(dir, buf, size, tmp, sizeof(tmp));
		if (rc < 0)
			fail(err, errlen, rc, "%s: cannot write: %s", path, strerror(-rc));
	}
	free(buf);
	if (rc < 0)
		return rc;
	if (rename(tmp, path) < 0) {
		rc = -errno;
		unlink(tmp);
		return fail(err, errlen, rc, "%s: cannot replace: %s", path, strerror(-rc));
	}
	/* The rename is durable only once the directory is. */
	rc = pool_fsync_dir(dir);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: cannot sync directory: %s", dir, strerror(-rc));
	return 0;
}
