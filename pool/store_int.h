/*
 * store_int.h -- a narrow window into the store for other modules of
 * pool/ (pool/sparse.c), never for fs/.
 *
 * Code that works on chunk files without moving data -- asking the
 * kernel where a chunk's holes are, reserving or releasing chunk space --
 * needs three things only the store knows: the descriptors of a file's
 * chunks (the store caches them and tells a missing chunk from a missing
 * disk), which positions may be trusted in a given stripe (failed disks,
 * disks being rebuilt), and the stripe locks.  A view gives exactly
 * those, so that such code can live in a file of its own instead of
 * growing store.c.
 */
#ifndef SPACEFS_POOL_STORE_INT_H
#define SPACEFS_POOL_STORE_INT_H

#include <stdint.h>

#include "pool/store.h"

struct pool_chunks;

/* Start a view of file f (its positions are opened lazily).  -ENOMEM,
 * -EINVAL for a map that does not fit the store. */
int pool_chunks_begin(struct pool_store *s, const struct pool_file_map *f,
		      struct pool_chunks **out);
/* Release the descriptors and any stripe locks, free the view. */
void pool_chunks_end(struct pool_chunks *c);
const struct layout_geom *pool_chunks_geom(const struct pool_chunks *c);
/* Positions (bit p: position p) whose chunks cannot be trusted for
 * stripe `stripe`: failed disks, disks not yet rebuilt that far.  Grows
 * with the stripe: dead(a) is a subset of dead(b) for a <= b. */
uint64_t pool_chunks_dead(struct pool_chunks *c, uint64_t stripe);
/* The chunk file of position pos: 0 and *fd >= 0; -ENOENT: there is no
 * chunk file (the position was never written: a hole throughout); any
 * other negative errno: the disk cannot tell (it is failed or failing).
 * With create the chunk (and its checksum sidecar, *crcfd, -1 without
 * integrity) is made if missing. */
int pool_chunks_fd(struct pool_chunks *c, uint32_t pos, int create, int *fd, int *crcfd);
/* fallocate(2) on position pos's chunk (created if missing), under the
 * store's chunk size lock so it cannot race a grow-ahead.  Returns 0 or
 * a negative errno. */
int pool_chunks_fallocate(struct pool_chunks *c, uint32_t pos, int mode, uint64_t off,
			  uint64_t len);
/* Lock stripes [first, last] of the file, exclusive, until
 * pool_chunks_end (at most one lock set per view). */
void pool_chunks_lock(struct pool_chunks *c, uint64_t first, uint64_t last);

/* pool/sparse.c, called by the store itself (punch and truncate edges):
 * make [off, off+len) of the file read as zeros.  Runs that are holes
 * already are left alone; data runs are written with zeros through
 * pool_store_write (so parity stays right; `zeros` is `zlen` bytes of
 * zeros), then the whole 4 KiB blocks of their data columns are given
 * back (every live copy; parity stays).  The range then reads the same
 * and is a hole, to the block, as a punch or a truncate leaves it on a
 * local filesystem -- and as SEEK_HOLE reports it. */
int pool_store_zero(struct pool_store *s, const struct pool_file_map *f, uint64_t off, uint64_t len,
		    const uint8_t *zeros, size_t zlen);

#endif /* SPACEFS_POOL_STORE_INT_H */
