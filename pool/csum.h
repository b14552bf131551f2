/*
 * csum.h -- checksum sidecars read and written through shared mappings.
 *
 * A chunk's checksums (store.h: 4 bytes per 4 KiB block in "<chunk>.crc")
 * are tiny beside the data, but writing them with a pwrite per request
 * cost a system call, an inode lock and a timestamp update per 4 KiB
 * write -- more than the data write itself.  So the store maps each
 * cached sidecar MAP_SHARED and reads and writes checksums as memory.
 * The stores land in the kernel's page cache at once, exactly where a
 * buffered pwrite put them: a kill -9 of the daemon loses nothing, the
 * kernel writes them back in batches, and fsync/syncfs of the sidecar
 * flush them as before, so the dirty-region log's rule -- a region is
 * cleared only after a syncfs -- still covers them after a power cut.
 *
 * A mapping covers a fixed window of the sidecar (POOL_CSUM_WINDOW: the
 * first 16 GiB of the chunk); checksums past it, and chunks whose sidecar
 * could not be mapped, go through pread/pwrite as before (the caller's
 * fallback).  Mapping past the end of the file costs address space only.  The sidecar is grown
 * ahead of the checksums stored in it (sparse: unwritten checksums read
 * as 0, "never written"), so a store never touches a page past the end
 * of the file.  A page that cannot be read (an I/O error, or a sidecar
 * cut short behind the daemon's back) would raise SIGBUS; every access
 * goes through a guarded copy, and one that faults is done again with
 * pread or pwrite, whose answer the caller gets as before (EIO, zeros
 * past the end, ENOSPC).
 */
#ifndef SPACEFS_POOL_CSUM_H
#define SPACEFS_POOL_CSUM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Bytes of sidecar one mapping covers: 4M checksums, 16 GiB of chunk. */
#define POOL_CSUM_WINDOW (16ull << 20)
/* The sidecar is grown a page at a time while small, then in steps up
 * to this big (64 MiB of chunk data). */
#define POOL_CSUM_GROW (64u << 10)

struct pool_csum_map {
	uint32_t *base;	       /* the window; NULL: not mapped (use pread/pwrite) */
	_Atomic uint64_t size; /* sidecar bytes as last seen (a lower bound) */
};

/* Map the sidecar open as fd (read-write).  On failure m->base stays
 * NULL and the caller falls back to pread/pwrite; returns 0 or -errno. */
int pool_csum_map(struct pool_csum_map *m, int fd);
void pool_csum_unmap(struct pool_csum_map *m);
/* Do checksums [blk, blk + n) lie inside the mapped window? */
int pool_csum_covers(const struct pool_csum_map *m, uint64_t blk, uint64_t n);
/* The sidecar was cut to `size` bytes (under the caller's size lock). */
void pool_csum_resized(struct pool_csum_map *m, uint64_t size);

/* Copy the stored checksums of blocks [blk, blk + n) to out (little
 * endian as on disk); those past the end of the sidecar are 0.  `mu`
 * serialises size changes of the sidecar (the store's size lock).
 * 0, or the errno of a failed pread (see the top). */
int pool_csum_load(struct pool_csum_map *m, int fd, pthread_mutex_t *mu, uint64_t blk, uint64_t n,
		   uint32_t *out);
/* Store checksums (little endian) of blocks [blk, blk + n), growing the
 * sidecar first if needed (with blocks: fallocate).  0, or the errno of
 * a failed grow or pwrite (ENOSPC...). */
int pool_csum_store(struct pool_csum_map *m, int fd, pthread_mutex_t *mu, uint64_t blk, uint64_t n,
		    const uint32_t *in);

#endif /* SPACEFS_POOL_CSUM_H */
