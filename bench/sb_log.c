/*
 * sb_log.c -- the write log of `spacebench write`, and its strict reader.
 *
 * The log is the ground truth a verify run judges the file against, so a
 * damaged log must never pass for a good one: a wrong verdict about data
 * is worse than none.  Every record carries its own CRC-32C and is checked
 * for type, alignment and bounds; generations must rise in submission
 * order and every acknowledgement must answer the submission in flight on
 * that block.  The first problem ends parsing with one line naming the
 * byte offset, and the caller exits 2.
 *
 * From the records the reader builds, per block, the generation last
 * submitted, last acknowledged and last acknowledged before a completed
 * fsync (FSYNC promotes the blocks acknowledged since the previous one,
 * kept on a dirty list so an fsync costs what was written since).
 *
 * Version 2 adds PRIOR records: the CRC of each sector as it was before
 * the run first wrote its block, so that a block whose write was in
 * flight at a crash may be recognised holding its older content whatever
 * that was.  They must come complete, in sector order, before the block's
 * first SUBMIT; a version 1 log (none) is still read, with prior content
 * unknown.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sb.h"
#include "layout/layout.h"

void sb_log_hdr_encode(const struct sb_log_hdr *h, uint8_t out[SB_LOG_HDR_BYTES])
{
	memset(out, 0, SB_LOG_HDR_BYTES);
	memcpy(out, SB_LOG_MAGIC, 8);
	sb_put32(out + 8, h->version ? h->version : SB_LOG_VERSION);
	sb_put32(out + 12, h->bs);
	sb_put64(out + 16, h->file_size);
	sb_put64(out + 24, h->run);
	sb_put32(out + 60, layout_crc32c(out, 60));
}

void sb_log_rec_encode(uint32_t type, uint64_t offset, uint64_t gen, uint64_t aux,
		       uint8_t out[SB_LOG_REC_BYTES])
{
	sb_put32(out, type);
	sb_put32(out + 4, 0);
	sb_put64(out + 8, offset);
	sb_put64(out + 16, gen);
	sb_put64(out + 24, aux);
	sb_put32(out + 4, layout_crc32c(out, SB_LOG_REC_BYTES));
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_hdr(const uint8_t *p, size_t len, const char *name, struct sb_log *log, char *err,
		     size_t errlen)
{
	struct sb_log_hdr *h = &log->hdr;

	if (len < SB_LOG_HDR_BYTES || memcmp(p, SB_LOG_MAGIC, 8) != 0)
		return fail(err, errlen, "log %s: not a spacebench log (bad magic at byte 0)",
			    name);
	if (sb_get32(p + 60) != layout_crc32c(p, 60))
		return fail(err, errlen, "log %s: header CRC mismatch (bytes 0-63)", name);
	h->version = sb_get32(p + 8);
	if (h->version < 1 || h->version > SB_LOG_VERSION)
		return fail(err, errlen,
			    "log %s: version %u (byte 8), this spacebench reads versions 1 to %u",
			    name, h->version, SB_LOG_VERSION);
	h->bs = sb_get32(p + 12);
	h->file_size = sb_get64(p + 16);
	h->run = sb_get64(p + 24);
	if (!h->bs || h->bs % SB_SECTOR || h->bs > SB_MAX_BS)
		return fail(err, errlen, "log %s: block size %u out of range (byte 12)", name,
			    h->bs);
	if (!h->file_size || h->file_size % h->bs || h->file_size > SB_MAX_FILE)
		return fail(err, errlen, "log %s: file size %llu out of range (byte 16)", name,
			    (unsigned long long)h->file_size);
	log->nblocks = h->file_size / h->bs;
	log->blk = calloc(log->nblocks, sizeof(*log->blk));
	if (h->version >= 2)
		log->prior = calloc(h->file_size / SB_SECTOR, sizeof(*log->prior));
	if (!log->blk || (h->version >= 2 && !log->prior))
		return fail(err, errlen, "log %s: out of memory for %llu blocks", name,
			    (unsigned long long)log->nblocks);
	return 0;
}

/* Parsing state beyond the result: generation order, the dirty list. */
struct cursor {
	uint64_t last_gen;
	uint64_t *dirty;
	uint64_t ndirty;
	uint8_t *is_dirty;
	uint16_t *nprior; /* version 2: PRIOR records seen per block */
};

static int apply_submit(struct sb_log *log, struct cursor *c, uint64_t b, uint64_t gen)
{
	struct sb_expect *e = &log->blk[b];

	if (gen <= c->last_gen)
		return -1; /* generations must rise */
	if (e->submitted != e->acked)
		return -2; /* a write still in flight on this block */
	if (c->nprior && !e->submitted && c->nprior[b] != log->hdr.bs / SB_SECTOR)
		return -4; /* the block's prior content is not all logged */
	c->last_gen = gen;
	e->submitted = gen;
	log->submits++;
	return 0;
}

static int apply_ack(struct sb_log *log, struct cursor *c, uint64_t b, uint64_t gen)
{
	struct sb_expect *e = &log->blk[b];

	if (gen != e->submitted || e->acked == gen)
		return -3;
	e->acked = gen;
	log->acks++;
	if (!c->is_dirty[b]) {
		c->is_dirty[b] = 1;
		c->dirty[c->ndirty++] = b;
	}
	return 0;
}

static int apply_prior(struct sb_log *log, struct cursor *c, uint64_t off, uint64_t gen,
		       uint64_t crc)
{
	uint64_t b = off / log->hdr.bs;

	if (gen || crc > UINT32_MAX)
		return -5;
	if (log->blk[b].submitted || c->nprior[b] != (off % log->hdr.bs) / SB_SECTOR)
		return -6; /* after the first SUBMIT, twice, or out of order */
	log->prior[off / SB_SECTOR] = (uint32_t)crc;
	c->nprior[b]++;
	return 0;
}

static void apply_fsync(struct sb_log *log, struct cursor *c)
{
	for (uint64_t i = 0; i < c->ndirty; i++) {
		uint64_t b = c->dirty[i];
		log->blk[b].durable = log->blk[b].acked;
		c->is_dirty[b] = 0;
	}
	c->ndirty = 0;
	log->fsyncs++;
}

static const char *const rec_problem[] = {"",
					  "generation does not rise",
					  "submitted while a write is in flight on the block",
					  "acknowledges a write that was not submitted",
					  "is the first on its block but not every sector's PRIOR "
					  "record came before it",
					  "(PRIOR) has a non-zero generation or a CRC over 32 bits",
					  "(PRIOR) comes after the block's first SUBMIT, twice or "
					  "out of sector order"};

static int parse_rec(const uint8_t *p, size_t pos, const char *name, struct sb_log *log,
		     struct cursor *c, char *err, size_t errlen)
{
	uint8_t tmp[SB_LOG_REC_BYTES];
	uint32_t type = sb_get32(p);
	uint64_t off = sb_get64(p + 8), gen = sb_get64(p + 16), aux = sb_get64(p + 24);
	int rc = 0;

	memcpy(tmp, p, SB_LOG_REC_BYTES);
	sb_put32(tmp + 4, 0);
	if (sb_get32(p + 4) != layout_crc32c(tmp, SB_LOG_REC_BYTES))
		return fail(err, errlen, "log %s: record CRC mismatch at byte %zu", name, pos);
	if (log->ended)
		return fail(err, errlen, "log %s: record after END at byte %zu", name, pos);
	if (type == SB_REC_FSYNC) {
		apply_fsync(log, c);
		return 0;
	}
	if (type == SB_REC_END) {
		log->ended = 1;
		return 0;
	}
	if (type != SB_REC_SUBMIT && type != SB_REC_ACK && (type != SB_REC_PRIOR || !c->nprior))
		return fail(err, errlen, "log %s: unknown record type %u at byte %zu", name, type,
			    pos);
	if (type == SB_REC_PRIOR && (off % SB_SECTOR || off >= log->hdr.file_size))
		return fail(err, errlen, "log %s: PRIOR offset %llu out of range at byte %zu", name,
			    (unsigned long long)off, pos);
	if (type == SB_REC_PRIOR)
		rc = apply_prior(log, c, off, gen, aux);
	else if (off % log->hdr.bs || off >= log->hdr.file_size || !gen)
		return fail(err, errlen,
			    "log %s: offset %llu or generation %llu out of range at byte %zu", name,
			    (unsigned long long)off, (unsigned long long)gen, pos);
	else if (type == SB_REC_SUBMIT)
		rc = apply_submit(log, c, off / log->hdr.bs, gen);
	else
		rc = apply_ack(log, c, off / log->hdr.bs, gen);
	if (rc < 0)
		return fail(
		    err, errlen, "log %s: record at byte %zu (offset %llu, generation %llu) %s",
		    name, pos, (unsigned long long)off, (unsigned long long)gen, rec_problem[-rc]);
	return 0;
}

static int parse_records(const uint8_t *p, size_t len, const char *name, struct sb_log *log,
			 char *err, size_t errlen)
{
	struct cursor c = {0};
	size_t pos = SB_LOG_HDR_BYTES;
	int rc = 0;

	if ((len - pos) % SB_LOG_REC_BYTES)
		return fail(err, errlen, "log %s: truncated record at byte %zu (%zu stray bytes)",
			    name, len - (len - pos) % SB_LOG_REC_BYTES,
			    (len - pos) % SB_LOG_REC_BYTES);
	c.dirty = malloc(log->nblocks * sizeof(*c.dirty));
	c.is_dirty = calloc(log->nblocks, 1);
	if (log->hdr.version >= 2)
		c.nprior = calloc(log->nblocks, sizeof(*c.nprior));
	if (!c.dirty || !c.is_dirty || (log->hdr.version >= 2 && !c.nprior))
		rc = fail(err, errlen, "log %s: out of memory", name);
	for (; rc == 0 && pos < len; pos += SB_LOG_REC_BYTES)
		rc = parse_rec(p + pos, pos, name, log, &c, err, errlen);
	free(c.dirty);
	free(c.is_dirty);
	free(c.nprior);
	return rc;
}

int sb_log_parse(const void *data, size_t len, const char *name, struct sb_log *log, char *err,
		 size_t errlen)
{
	int rc;

	memset(log, 0, sizeof(*log));
	rc = parse_hdr(data, len, name, log, err, errlen);
	if (rc == 0)
		rc = parse_records(data, len, name, log, err, errlen);
	if (rc < 0)
		sb_log_free(log);
	return rc;
}

void sb_log_free(struct sb_log *log)
{
	free(log->blk);
	free(log->prior);
	log->blk = NULL;
	log->prior = NULL;
	log->nblocks = 0;
}
