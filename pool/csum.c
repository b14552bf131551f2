/*
 * csum.c -- checksum sidecars as shared mappings (see csum.h for why).
 *
 * The one delicate part is SIGBUS.  A store or load through a file
 * mapping faults the page in from the disk; if the disk cannot deliver
 * it, the file was cut short under the mapping, or a page without a
 * block cannot get one (a full filesystem), the kernel sends SIGBUS to
 * the thread, and the default action kills the daemon -- with every
 * volume of the pool, for one damaged file.  So every access here runs
 * inside copy_guarded: it arms a per-thread jump buffer, and a process
 * wide SIGBUS handler (installed by the first map) jumps back to it.  The
 * access is then done again with pread or pwrite on the descriptor, which
 * report what is wrong as they always did: an I/O error (the store fails
 * the disk), a sidecar cut short (a short read: zeros, so the blocks fail
 * their checksums and are healed from redundancy), ENOSPC.  A SIGBUS that
 * is not ours (no guard armed on the faulting thread) goes to whatever
 * handler was there before (the default, or a sanitizer's): the handler
 * puts it back and returns, and the faulting instruction faults again
 * under it.  SA_NODEFER keeps SIGBUS unblocked across the jump, so the
 * jump buffer need not save the signal mask (a system call per access
 * otherwise).
 *
 * The sidecar is grown with fallocate, so its new pages have blocks and a
 * full disk says ENOSPC at the grow, as a pwrite would.  It never shrinks
 * under a mapping except through the store's own truncate, which tells
 * the map (pool_csum_resized) under the same size lock that grows it;
 * loads past the known size refresh it with fstat and read what lies past
 * the end as 0, so the guard only ever fires for real damage.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool/csum.h"

#define CRC_BYTES 4u

/* The jump buffer of the guarded copy running on this thread, if any. */
static _Thread_local sigjmp_buf *guard;
static struct sigaction old_bus;
static pthread_mutex_t bus_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	if (guard)
		siglongjmp(*guard, 1);
	/* Not a sidecar access: let the previous handler have it. */
	sigaction(SIGBUS, &old_bus, NULL);
}

/* Install the handler unless it is in place (checked at every map: a
 * test framework or a library may have replaced it since). */
static void bus_install(void)
{
	struct sigaction sa, cur;

	pthread_mutex_lock(&bus_mu);
	if (sigaction(SIGBUS, NULL, &cur) == 0 &&
	    !((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigbus)) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_sigbus;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, &old_bus);
	}
	pthread_mutex_unlock(&bus_mu);
}

/* memcpy that returns -EFAULT instead of dying when a mapped page cannot
 * be read or given a block.  Nothing the jump could leave half-changed is
 * used after it: the caller redoes the access with pread or pwrite. */
static int copy_guarded(void *dst, const void *src, size_t n)
{
	sigjmp_buf jb;

	if (sigsetjmp(jb, 0)) {
		guard = NULL;
		return -EFAULT;
	}
	guard = &jb;
	atomic_signal_fence(memory_order_seq_cst);
	memcpy(dst, src, n);
	atomic_signal_fence(memory_order_seq_cst);
	guard = NULL;
	return 0;
}

/* The mapping faulted: read with pread (past the end: zeros). */
static int load_fallback(struct pool_csum_map *m, int fd, pthread_mutex_t *mu, uint64_t blk,
			 uint64_t n, uint32_t *out)
{
	size_t len = n * CRC_BYTES, done = 0;
	struct stat st;

	pthread_mutex_lock(mu); /* the size it believed was wrong */
	if (fstat(fd, &st) == 0)
		atomic_store(&m->size, (uint64_t)st.st_size);
	pthread_mutex_unlock(mu);
	while (done < len) {
		ssize_t r =
		    pread(fd, (uint8_t *)out + done, len - done, (off_t)(blk * CRC_BYTES + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	memset((uint8_t *)out + done, 0, len - done);
	return 0;
}

/* The mapping faulted: write with pwrite. */
static int store_fallback(int fd, uint64_t blk, uint64_t n, const uint32_t *in)
{
	size_t len = n * CRC_BYTES;
	ssize_t w;

	do
		w = pwrite(fd, in, len, (off_t)(blk * CRC_BYTES));
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return -errno;
	return (size_t)w == len ? 0 : -ENOSPC;
}

int pool_csum_map(struct pool_csum_map *m, int fd)
{
	struct stat st;

	m->base = NULL;
	atomic_store(&m->size, 0);
	bus_install();
	if (fstat(fd, &st) < 0)
		return -errno;
	void *p = mmap(NULL, POOL_CSUM_WINDOW, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	m->base = p;
	atomic_store(&m->size, (uint64_t)st.st_size);
	return 0;
}

void pool_csum_unmap(struct pool_csum_map *m)
{
	if (m->base)
		munmap(m->base, POOL_CSUM_WINDOW);
	m->base = NULL;
}

int pool_csum_covers(const struct pool_csum_map *m, uint64_t blk, uint64_t n)
{
	return m->base && blk + n >= blk && (blk + n) * CRC_BYTES <= POOL_CSUM_WINDOW;
}

void pool_csum_resized(struct pool_csum_map *m, uint64_t size)
{
	atomic_store(&m->size, size);
}

/* Make the sidecar at least `need` bytes long (sparse), in steps. */
static int grow(struct pool_csum_map *m, int fd, pthread_mutex_t *mu, uint64_t need)
{
	struct stat st;
	int rc = 0;

	pthread_mutex_lock(mu);
	if (fstat(fd, &st) < 0) {
		rc = -errno;
	} else if ((uint64_t)st.st_size < need) {
		/* Page by page while small (a small file's sidecar stays one
		 * block, as before), then doubling up to POOL_CSUM_GROW steps. */
		uint64_t size = (uint64_t)st.st_size, step = size < 4096 ? 4096 : size;
		if (step > POOL_CSUM_GROW)
			step = POOL_CSUM_GROW;
		uint64_t want = (need + step - 1) / step * step;
		if (want > POOL_CSUM_WINDOW)
			want = POOL_CSUM_WINDOW > need ? POOL_CSUM_WINDOW : need;
		off_t from = st.st_size, len = (off_t)want - st.st_size;
		if (fallocate(fd, 0, from, len) < 0 &&
		    (errno != EOPNOTSUPP || ftruncate(fd, (off_t)want) < 0))
			rc = -errno;
		else
			atomic_store(&m->size, want);
	} else {
		atomic_store(&m->size, (uint64_t)st.st_size);
	}
	pthread_mutex_unlock(mu);
	return rc;
}

int pool_csum_load(struct pool_csum_map *m, int fd, pthread_mutex_t *mu, uint64_t blk, uint64_t n,
		   uint32_t *out)
{
	uint64_t size = atomic_load(&m->size), have;
	struct stat st;

	if ((blk + n) * CRC_BYTES > size) { /* maybe grown by another path */
		pthread_mutex_lock(mu);
		if (fstat(fd, &st) == 0)
			atomic_store(&m->size, size = (uint64_t)st.st_size);
		pthread_mutex_unlock(mu);
	}
	have = size / CRC_BYTES > blk ? size / CRC_BYTES - blk : 0;
	if (have > n)
		have = n;
	if (have < n)
		memset(out + have, 0, (n - have) * CRC_BYTES);
	if (have && copy_guarded(out, m->base + blk, have * CRC_BYTES) < 0)
		return load_fallback(m, fd, mu, blk, n, out);
	return 0;
}

int pool_csum_store(struct pool_csum_map *m, int fd, pthread_mutex_t *mu, uint64_t blk, uint64_t n,
		    const uint32_t *in)
{
	uint64_t need = (blk + n) * CRC_BYTES;

	if (need > atomic_load(&m->size)) {
		int rc = grow(m, fd, mu, need);
		if (rc < 0)
			return rc;
	}
	if (copy_guarded(m->base + blk, in, n * CRC_BYTES) < 0)
		return store_fallback(fd, blk, n, in);
	return 0;
}
