/*
 * aio.h -- batch chunk I/O through Linux native AIO (libaio).
 *
 * The data path hands a whole phase of a request (every chunk read, or
 * every chunk write) to pool_aio_run, which gives all of it to the kernel
 * in one io_submit and waits for all of it (a phase with one I/O for the
 * kernel is a plain pread or pwrite).  Each batch borrows an
 * io_context_t from the engine's free list for its duration (made on
 * first need, grown when a batch outgrows it), so two batches never share
 * a completion ring.  No global state and no per-thread state: the
 * engine owns every context and frees them in pool_aio_free.  Batches of
 * O_DIRECT I/Os use an io_uring instead of an io_context_t when the
 * kernel allows it (one system call per batch instead of two; aio.c).
 */
#ifndef SPACEFS_POOL_AIO_H
#define SPACEFS_POOL_AIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pool_aio;
struct pool_diskq;

enum pool_aio_op {
	POOL_AIO_READ = 0,
	POOL_AIO_WRITE = 1,
};

/* One I/O.  The caller fills fd, op, buf, len and off; pool_aio_run sets
 * result to the bytes transferred or a negative errno.  A read that ends
 * early (end of file, or fd < 0, meaning "no such file") leaves the rest
 * of buf zeroed and result at the bytes actually read, so holes and
 * missing chunk files read as zeros.  A write with fd < 0 is -EBADF. */
struct pool_aio_req {
	int fd;
	enum pool_aio_op op;
	void *buf;
	size_t len;
	uint64_t off;
	ssize_t result;
	/* The emulated disk serving it (pool/diskmodel.h), or NULL: then, or
	 * when the disk's model is none, the request completes as soon as the
	 * kernel's I/O does.  Otherwise not before the disk model says a
	 * drive of that kind would have finished it. */
	struct pool_diskq *dq;
	/* fd is O_DIRECT: a batch whose kernel I/Os all are goes through
	 * io_uring (submit and wait in one system call) where the kernel
	 * has it.  A buffered one would be handed to io_uring's worker
	 * threads, where libaio runs it inside io_submit: 0 keeps libaio. */
	int direct;
};

int pool_aio_new(struct pool_aio **out);
/* Destroys every context.  No thread may be inside pool_aio_run (the
 * caller drains its requests first), and none may call it afterwards. */
void pool_aio_free(struct pool_aio *e);

/* Submit reqs[0..n) at once and wait for all of them.  Returns 0 when
 * every request was handed to the kernel (each one's own outcome is in its
 * result), or a negative errno if the thread's context cannot be set up
 * (then every result is that errno) or the engine failed mid-batch (then
 * that errno is the result of each request the kernel did not complete).
 * Either way it returns only once the kernel is done with every buffer.
 * With modelled requests it returns at the latest of their model
 * deadlines (sleeping, not spinning). */
int pool_aio_run(struct pool_aio *e, struct pool_aio_req *reqs, size_t n);

/* Tests only: this engine calls fn instead of the io_uring_enter system
 * call (same arguments, less the signal mask; same return and errno), to
 * make a ring fail; NULL restores the system call. */
typedef int (*pool_aio_enter_fn)(int fd, unsigned to_submit, unsigned min_complete, unsigned flags);
void pool_aio_test_enter(struct pool_aio *e, pool_aio_enter_fn fn);

/* How many contexts (completion rings) the engine holds: about one per
 * thread that ran a batch and still lives (tests). */
size_t pool_aio_contexts(struct pool_aio *e);

/* "io_uring" once a batch went through an io_uring (and the kernel has
 * not refused one since), else "libaio". */
const char *pool_aio_engine(struct pool_aio *e);

#endif /* SPACEFS_POOL_AIO_H */
