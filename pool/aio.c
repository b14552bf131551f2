/*
 * aio.c -- one io_submit per phase: the chunk I/O engine of the data path.
 *
 * A FUSE request on a striped file turns into many small chunk I/Os on
 * several disks: a 1 MiB write on a parity volume is a dozen stripes of
 * data, parity and checksum writes.  Issuing them one pread/pwrite at a
 * time would serialise the disks; a thread pool would cost a wake-up per
 * I/O.  Linux native AIO lets one thread hand the whole batch to the
 * kernel in a single io_submit and collect the completions with
 * io_getevents, so every disk works at once and the cost is two system
 * calls per phase.  A phase with a single I/O for the kernel (a 4 KiB
 * read or write on simple or mirror, whose checksums are stored as
 * memory) is a plain pread or pwrite instead: one system call, as a
 * passthrough filesystem makes (issue 11).
 *
 * The engine owns its io_context_t's (completion rings) and keeps the
 * idle ones on a free list under a mutex: a batch takes one at its start
 * and puts it back at its end, so a context is never shared by two
 * batches and the engine alone decides when it dies -- no global state,
 * several engines can coexist.  There are deliberately no thread-local
 * contexts: a thread-exit destructor could run at the same moment as
 * pool_aio_free on a context that the engine had already freed (a store
 * closed on an owner move while a redirect-serving thread exits), and
 * pthread keys are a finite resource that a store opened on every owner
 * move would use up.  But a context remembers the thread that made its
 * io_uring (below), and a thread takes its own one back from the list;
 * a thread new to the engine takes one nobody owns, or one whose thread
 * has exited (a tgkill probe, only then), so the list holds about as many
 * contexts as threads that did I/O and still live.  The two lock
 * round-trips per batch cost nothing beside the system call.  A context
 * starts small and is rebuilt larger when a batch needs more slots, up
 * to AIO_MAX_DEPTH; beyond that the batch goes through a sliding window
 * (submit what fits, reap, submit the rest), which is the only case
 * where one phase takes more than one io_submit.
 *
 * Chunk files are often opened with O_DIRECT, where libaio is truly
 * asynchronous.  Buffered descriptors work too: the kernel performs the
 * I/O inside io_submit and posts the completion at once, so a batch on a
 * tmpfs pool simply runs synchronously.
 *
 * io_uring.  A batch of two or more I/Os costs io_submit and
 * io_getevents: two system calls, each several microseconds on a
 * virtual machine (about 2 us for an empty one on the PVM guests these
 * figures come from), per mirror 2 write.  An io_uring takes the whole
 * batch and waits for its completions in one io_uring_enter.  Rings are
 * single-issuer with deferred task work where the kernel has it (6.1):
 * the kernel then wakes the waiter once, when the last completion is in
 * (otherwise each completion arriving alone wakes it, as libaio's wait
 * does), and a thread submitting to the ring it always uses skips the
 * kernel's per-submitter bookkeeping; such a ring takes submissions from
 * the thread that made it only, hence the owner above.  So a batch whose
 * I/Os are all on O_DIRECT descriptors (pool_aio_req.direct) goes
 * through an io_uring of the same context; anything buffered stays on libaio, which runs it inside
 * io_submit where io_uring would hand it to a worker thread.  The rings
 * are used through the raw system calls (<linux/io_uring.h>), no
 * library.  If the kernel refuses io_uring (too old, disabled by
 * kernel.io_uring_disabled or a seccomp filter), or SPACEFS_AIO=libaio is
 * set, the engine stays on libaio for good.
 *
 * No batch returns while the kernel may still use one of its buffers:
 * its caller frees or reuses them at once (a read landing late would
 * overwrite freed memory, a write reading late would put wrong data on
 * disk).  Closing an io_uring does not wait for its requests, so a ring
 * whose io_uring_enter fails mid-batch (should not happen) is first
 * waited on until everything the kernel took has completed (uring_drain);
 * what it never took fails with the error, and libaio takes over.  If
 * even the wait fails, the process ends (abort) rather than return.
 * libaio's io_destroy does wait for a context's I/Os (ctx_abandon).  A
 * ring that refuses the thread (EEXIST: a thread id reused) takes
 * nothing, and libaio runs the batch, which stays admitted once to the
 * emulated disks below.
 *
 * Emulated disks (pool/diskmodel.c): a request naming a disk queue whose
 * model is not none is admitted to that queue as it is prepared, which
 * gives the time a drive of the model would complete it; the batch, once
 * the kernel has completed everything, sleeps until the latest of those
 * deadlines (clock_nanosleep on an absolute CLOCK_MONOTONIC time: no
 * spinning, no timer thread).  A batch is synchronous anyway, so only its
 * last completion matters to its caller.  With no model the cost is one
 * well-predicted test per request.
 *
 * Reads treat the end of a chunk file as a hole: a short read, or a read
 * with fd < 0 ("the chunk file does not exist"), leaves the missing bytes
 * zeroed, because sparse chunk files are the normal case.
 */
#include <assert.h>
#include <errno.h>
#include <libaio.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

#include "pool/aio.h"
#include "pool/diskmodel.h"

#define AIO_MIN_DEPTH 64u
#define AIO_MAX_DEPTH 1024u
#define AIO_PENDING   (-EINPROGRESS) /* result of a request not yet completed */

/* An io_uring: its descriptor and the three shared mappings. */
struct uring {
	int fd;	     /* -1: none yet */
	pid_t owner; /* single-issuer ring: the thread that made it (only it submits); 0: any */
	unsigned entries;
	_Atomic unsigned *sq_head, *sq_tail, *cq_head, *cq_tail;
	unsigned sq_mask, cq_mask;
	unsigned *sq_array;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
	void *sq_map, *cq_map; /* cq_map == sq_map with IORING_FEAT_SINGLE_MMAP */
	size_t sq_len, cq_len, sqes_len;
};

/* One batch's completion ring and its iocb arrays (grown, never shrunk). */
struct aio_ctx {
	io_context_t ctx;
	unsigned depth; /* events the ring was set up for */
	size_t cap;	/* iocbs the arrays hold */
	struct iocb *cb;
	struct iocb **cbp;
	struct io_event *ev;
	struct uring u;	      /* O_DIRECT batches, when the kernel has it */
	struct aio_ctx *next; /* on the free list */
};

struct pool_aio {
	pthread_mutex_t mu;	 /* guards the fields below */
	struct aio_ctx *idle;	 /* contexts no batch uses, last used first */
	size_t busy;		 /* contexts taken by batches running now */
	atomic_int no_uring;	 /* the kernel refused io_uring, or SPACEFS_AIO=libaio */
	atomic_int uring;	 /* some batch set up an io_uring */
	pool_aio_enter_fn enter; /* tests only (pool_aio_test_enter); NULL: the system call */
};

static void uring_release(struct uring *u)
{
	if (u->sqes)
		munmap(u->sqes, u->sqes_len);
	if (u->cq_map && u->cq_map != u->sq_map)
		munmap(u->cq_map, u->cq_len);
	if (u->sq_map)
		munmap(u->sq_map, u->sq_len);
	/* Nothing may be in flight: close() does not wait for the ring's
	 * requests (the kernel cancels what it can and finishes the rest
	 * from a work queue after close returns), so a request still in
	 * flight could write into, or read from, a buffer its caller has
	 * freed.  Every caller has reaped all it submitted (uring_drain). */
	if (u->fd >= 0)
		close(u->fd);
	*u = (struct uring){.fd = -1};
}

static void ctx_release(struct aio_ctx *c)
{
	if (c->ctx)
		io_destroy(c->ctx); /* waits for anything still in flight */
	uring_release(&c->u);
	free(c->cb);
	free(c->cbp);
	free(c->ev);
	free(c);
}

int pool_aio_new(struct pool_aio **out)
{
	struct pool_aio *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	pthread_mutex_init(&e->mu, NULL);
	const char *force = getenv("SPACEFS_AIO");
	atomic_init(&e->no_uring, force && strcmp(force, "libaio") == 0);
	*out = e;
	return 0;
}

void pool_aio_free(struct pool_aio *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	assert(e->busy == 0); /* the caller drained every request */
	while (e->idle) {
		struct aio_ctx *c = e->idle;
		e->idle = c->next;
		ctx_release(c);
	}
	pthread_mutex_unlock(&e->mu);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

static unsigned depth_for(size_t n)
{
	unsigned d = AIO_MIN_DEPTH;

	while (d < n && d < AIO_MAX_DEPTH)
		d *= 2;
	return d;
}

/* Make the arrays hold n iocbs and the ring hold min(n, max) events. */
static int ctx_fit(struct aio_ctx *c, size_t n)
{
	unsigned want = depth_for(n);

	if (c->cap < n) {
		size_t cap = n > c->cap * 2 ? n : c->cap * 2;
		struct iocb *cb = realloc(c->cb, cap * sizeof(*cb));
		if (!cb)
			return -ENOMEM;
		c->cb = cb;
		struct iocb **cbp = realloc(c->cbp, cap * sizeof(*cbp));
		if (!cbp)
			return -ENOMEM;
		c->cbp = cbp;
		c->cap = cap;
	}
	if (c->ctx && c->depth >= want)
		return 0;

	/* Rebuild the ring larger.  Nothing is in flight between runs. */
	io_context_t ctx = 0;
	int rc = io_setup((int)want, &ctx);
	if (rc < 0)
		return c->ctx ? 0 : rc; /* a smaller ring still works, windowed */
	struct io_event *ev = realloc(c->ev, want * sizeof(*ev));
	if (!ev) {
		io_destroy(ctx);
		return c->ctx ? 0 : -ENOMEM;
	}
	if (c->ctx)
		io_destroy(c->ctx);
	c->ctx = ctx;
	c->ev = ev;
	c->depth = want;
	return 0;
}

/* The calling thread's id, without a system call after the first.  The
 * cache is forgotten in a fork's child: the daemon forks in
 * fuse_daemonize after volumes opened, and its main thread would go on
 * naming the parent's id (then another thread's tid_gone would take the
 * main thread's ring for a dead one's). */
static _Thread_local pid_t cached_tid;
static pthread_once_t tid_once = PTHREAD_ONCE_INIT;

static void tid_forget(void)
{
	cached_tid = 0;
}

static void tid_atfork(void)
{
	pthread_atfork(NULL, NULL, tid_forget);
}

static pid_t self_tid(void)
{
	if (!cached_tid) {
		pthread_once(&tid_once, tid_atfork);
		cached_tid = gettid();
	}
	return cached_tid;
}

/* Whether thread tid of this process has exited (its ring can go). */
static int tid_gone(pid_t tid)
{
	return syscall(SYS_tgkill, getpid(), tid, 0) < 0 && errno == ESRCH;
}

/* Unlink and return the idle context after *pp. */
static struct aio_ctx *unlink_at(struct aio_ctx **pp)
{
	struct aio_ctx *c = *pp;

	*pp = c->next;
	return c;
}

/*
 * An idle context for a batch of the calling thread: the one whose ring
 * it made, else one whose ring any thread may use (or none yet).  Past
 * that, a libaio batch (ring == 0) takes the last one used, and an
 * io_uring batch one whose ring's thread has exited; NULL: make a new
 * one.  So each thread keeps one context, and there are about as many
 * as threads that did I/O and still live.  Called under e->mu.
 */
static struct aio_ctx *idle_pick(struct pool_aio *e, int ring)
{
	struct aio_ctx **pp, **shared = NULL;
	pid_t tid = self_tid();

	for (pp = &e->idle; *pp; pp = &(*pp)->next) {
		if ((*pp)->u.owner == tid)
			return unlink_at(pp);
		if (!shared && (*pp)->u.owner == 0)
			shared = pp;
	}
	if (shared)
		return unlink_at(shared);
	if (!ring)
		return e->idle ? unlink_at(&e->idle) : NULL;
	for (pp = &e->idle; *pp; pp = &(*pp)->next)
		if (tid_gone((*pp)->u.owner))
			return unlink_at(pp);
	return NULL;
}

/* Take an idle context (idle_pick), or make a new empty one; NULL: no
 * memory. */
static struct aio_ctx *ctx_take(struct pool_aio *e, int ring)
{
	struct aio_ctx *c;

	pthread_mutex_lock(&e->mu);
	c = idle_pick(e, ring);
	e->busy++;
	pthread_mutex_unlock(&e->mu);
	if (!c && (c = calloc(1, sizeof(*c))))
		c->u.fd = -1;
	if (!c) {
		pthread_mutex_lock(&e->mu);
		e->busy--;
		pthread_mutex_unlock(&e->mu);
	}
	return c;
}

/* The batch is over: nothing of it is in flight any more. */
static void ctx_put(struct pool_aio *e, struct aio_ctx *c)
{
	pthread_mutex_lock(&e->mu);
	e->busy--;
	if (c) {
		c->next = e->idle;
		e->idle = c;
	}
	pthread_mutex_unlock(&e->mu);
}

static void req_complete(struct pool_aio_req *r, long res)
{
	r->result = res;
	if (r->op == POOL_AIO_READ && res >= 0 && (size_t)res < r->len)
		memset((char *)r->buf + res, 0, r->len - (size_t)res);
}

/* Admit a modelled request to its disk's queue; *due is the latest
 * deadline of the batch so far (0: none yet, *now read lazily). */
static void model_admit(const struct pool_aio_req *r, uint64_t *now, uint64_t *due)
{
	if (!*now)
		*now = pool_diskq_now();
	uint64_t t = pool_diskq_admit(r->dq, *now, r->fd, r->op == POOL_AIO_WRITE, r->off, r->len);
	if (t > *due)
		*due = t;
}

/* Wait for the emulated disks: until CLOCK_MONOTONIC reaches due (ns). */
static void model_wait(uint64_t due)
{
	struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull),
			      .tv_nsec = (long)(due % 1000000000ull)};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* Fill the iocbs; requests that need no kernel I/O complete right here.
 * Returns how many iocbs were prepared; *due as in model_admit.  admitted:
 * the modelled requests are already in their disks' queues (uring_run
 * admitted them before the ring refused the thread), so admitting them
 * again would make the emulated disks serve the batch twice. */
static size_t prepare(struct aio_ctx *c, struct pool_aio_req *reqs, size_t n, uint64_t *due,
		      int admitted)
{
	size_t m = 0;
	uint64_t now = 0;

	for (size_t i = 0; i < n; i++) {
		struct pool_aio_req *r = &reqs[i];
		struct iocb *cb = &c->cb[m];

		if (r->fd < 0) {
			req_complete(r, r->op == POOL_AIO_READ ? 0 : -EBADF);
			continue;
		}
		if (r->op == POOL_AIO_READ)
			io_prep_pread(cb, r->fd, r->buf, r->len, (long long)r->off);
		else
			io_prep_pwrite(cb, r->fd, r->buf, r->len, (long long)r->off);
		if (__builtin_expect(pool_diskq_on(r->dq), 0) && !admitted)
			model_admit(r, &now, due);
		cb->data = r;
		r->result = AIO_PENDING;
		c->cbp[m++] = cb;
	}
	return m;
}

/*
 * The kernel plugs a submission (holds its block requests back and starts
 * them together when io_submit returns) only when it has more than
 * AIO_PLUG_THRESHOLD iocbs; below that each one is started on its own.
 * The disks of a pool are often directories on one device: then a
 * mirror 2 write's two chunk writes, started one by one, cost the device
 * two doorbells (on a virtual machine, two exits to the host: a fifth of
 * the daemon's CPU time per 4 KiB write), where a plugged batch rings
 * once.  So a batch of exactly two gets a third iocb that does no I/O: a
 * read of zero bytes on the first one's file, which the kernel completes
 * at once.  Its buffer is a local request (plug) whose result is ignored.
 */
#define AIO_PLUG_THRESHOLD 2

static size_t add_plug(struct aio_ctx *c, size_t m, struct pool_aio_req *plug)
{
	const struct iocb *first = c->cbp[0];
	struct iocb *cb = &c->cb[m];

	*plug = (struct pool_aio_req){.fd = first->aio_fildes,
				      .op = POOL_AIO_READ,
				      .buf = first->u.c.buf,
				      .len = 0,
				      .result = AIO_PENDING};
	io_prep_pread(cb, plug->fd, plug->buf, 0, 0);
	cb->data = plug;
	c->cbp[m] = cb;
	return m + 1;
}

/* The ring is broken (should not happen): wait out whatever is in flight
 * by destroying it (io_destroy returns only once every I/O of the context
 * has completed, so no buffer is touched after it), fail what did not
 * complete, start afresh next time. */
static int ctx_abandon(struct pool_aio *e, struct aio_ctx *c, struct pool_aio_req *reqs, size_t n,
		       int err)
{
	int rc = io_destroy(c->ctx);
	if (rc < 0) {
		/* The kernel does not know the context: nothing says its I/Os
		 * are over, and returning would hand their buffers back to
		 * callers that free or reuse them while the kernel may still
		 * write into them or read them.  There is no safe way on. */
		fprintf(stderr,
			"spacefs: pool/aio.c: io_getevents failed (%s), then io_destroy failed too "
			"(%s): chunk I/Os may still be in flight; aborting\n",
			strerror(-err), strerror(-rc));
		abort();
	}
	c->ctx = 0;
	ctx_release(c);
	ctx_put(e, NULL);
	for (size_t i = 0; i < n; i++)
		if (reqs[i].result == AIO_PENDING)
			reqs[i].result = err;
	return err;
}

/* A batch with one request for the kernel (the others have fd < 0): a
 * plain pread or pwrite, one system call instead of an io_submit and an
 * io_getevents, and no context to borrow.  Returns 0 if it ran the batch,
 * 1 if the batch has several requests for the kernel. */
static int run_one(struct pool_aio_req *reqs, size_t n)
{
	struct pool_aio_req *r = NULL;
	uint64_t now = 0, due = 0;
	ssize_t got;

	for (size_t i = 0; i < n; i++) {
		if (reqs[i].fd < 0)
			continue;
		if (r)
			return 1;
		r = &reqs[i];
	}
	for (size_t i = 0; i < n; i++)
		if (reqs[i].fd < 0)
			req_complete(&reqs[i], reqs[i].op == POOL_AIO_READ ? 0 : -EBADF);
	if (!r)
		return 0;
	if (__builtin_expect(pool_diskq_on(r->dq), 0))
		model_admit(r, &now, &due);
	do {
		got = r->op == POOL_AIO_READ ? pread(r->fd, r->buf, r->len, (off_t)r->off)
					     : pwrite(r->fd, r->buf, r->len, (off_t)r->off);
	} while (got < 0 && errno == EINTR);
	req_complete(r, got < 0 ? -errno : (long)got);
	if (__builtin_expect(due != 0, 0))
		model_wait(due);
	return 0;
}

/* ---- io_uring ---------------------------------------------------------------- */

/* A new ring of at least `entries` submission slots in *u. */
static int uring_setup(struct uring *u, unsigned entries)
{
	struct io_uring_params p;
	int rc;

	/* SUBMIT_ALL: a bad request fails alone, as with libaio's window
	 * below.  SINGLE_ISSUER + DEFER_TASKRUN: only this thread submits
	 * (the ring is its own, see idle_pick), and the kernel keeps the
	 * completions until it waits for them, waking it once, when as many
	 * as it waits for are in; without it every completion that comes in
	 * alone wakes the waiter to post it (a mirror 2 write's two chunk
	 * writes often complete apart).  Older kernels: COOP_TASKRUN (a
	 * completion does not interrupt the thread to run its task work),
	 * then a plain ring. */
	static const unsigned flags[] = {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
					     IORING_SETUP_DEFER_TASKRUN,
					 IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN, 0};
	int fd = -1;
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = flags[i];
		fd = (int)syscall(__NR_io_uring_setup, entries, &p);
		if (fd >= 0 || errno != EINVAL)
			break;
	}
	if (fd < 0)
		return -errno;

	struct uring n = {.fd = fd,
			  .owner = (p.flags & IORING_SETUP_SINGLE_ISSUER) ? self_tid() : 0,
			  .entries = p.sq_entries};
	n.sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	n.cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
	if (single)
		n.sq_len = n.cq_len = n.sq_len > n.cq_len ? n.sq_len : n.cq_len;
	void *m = mmap(NULL, n.sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
		       IORING_OFF_SQ_RING);
	if (m == MAP_FAILED)
		goto fail;
	n.sq_map = m;
	if (single) {
		n.cq_map = m;
	} else {
		m = mmap(NULL, n.cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			 IORING_OFF_CQ_RING);
		if (m == MAP_FAILED)
			goto fail;
		n.cq_map = m;
	}
	n.sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
	m = mmap(NULL, n.sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
		 IORING_OFF_SQES);
	if (m == MAP_FAILED)
		goto fail;
	n.sqes = m;

	char *sq = n.sq_map, *cq = n.cq_map;
	n.sq_head = (void *)(sq + p.sq_off.head);
	n.sq_tail = (void *)(sq + p.sq_off.tail);
	n.sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
	n.sq_array = (void *)(sq + p.sq_off.array);
	n.cq_head = (void *)(cq + p.cq_off.head);
	n.cq_tail = (void *)(cq + p.cq_off.tail);
	n.cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
	n.cqes = (void *)(cq + p.cq_off.cqes);
	*u = n;
	return 0;
fail:
	rc = -errno;
	uring_release(&n);
	return rc;
}

/* Make the ring hold n requests (or keep a smaller one: windowed). */
static int uring_fit(struct pool_aio *e, struct uring *u, size_t n)
{
	unsigned want = depth_for(n);
	struct uring nu;

	/* a ring left by a thread that has exited: only that thread could
	 * submit to it */
	int mine = u->fd >= 0 && (u->owner == 0 || u->owner == self_tid());
	if (mine && u->entries >= want)
		return 0;
	int rc = uring_setup(&nu, want);
	if (rc < 0) {
		if (mine)
			return 0;
		if (rc != -ENOMEM && rc != -EMFILE && rc != -ENFILE)
			atomic_store(&e->no_uring, 1); /* refused: libaio from now on */
		return rc;
	}
	uring_release(u); /* nothing in flight between batches */
	*u = nu;
	atomic_store_explicit(&e->uring, 1, memory_order_relaxed);
	return 0;
}

static int all_direct(const struct pool_aio_req *reqs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (reqs[i].fd >= 0 && !reqs[i].direct)
			return 0;
	return 1;
}

/* Queue one request (r, or a no-op when r is the plug) at the tail. */
static void uring_queue(struct uring *u, unsigned tail, struct pool_aio_req *r, int nop)
{
	unsigned i = tail & u->sq_mask;
	struct io_uring_sqe *sqe = &u->sqes[i];

	memset(sqe, 0, sizeof(*sqe));
	if (nop) {
		sqe->opcode = IORING_OP_NOP;
	} else {
		sqe->opcode = r->op == POOL_AIO_READ ? IORING_OP_READ : IORING_OP_WRITE;
		sqe->fd = r->fd;
		sqe->addr = (uintptr_t)r->buf;
		sqe->len = (uint32_t)r->len;
		sqe->off = r->off;
	}
	sqe->user_data = (uintptr_t)r;
	u->sq_array[i] = i;
}

/* io_uring_enter, or the engine's test stand-in (pool_aio_test_enter). */
static int uring_enter(const struct pool_aio *e, int fd, unsigned to_submit, unsigned wait,
		       unsigned flags)
{
	if (__builtin_expect(e->enter != NULL, 0))
		return e->enter(fd, to_submit, wait, flags);
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, wait, flags, NULL, 0);
}

void pool_aio_test_enter(struct pool_aio *e, pool_aio_enter_fn fn)
{
	e->enter = fn;
}

/* An io_uring_enter error that only asks to call again (interrupted,
 * or the completion queue is full for now), not a broken ring. */
static int enter_retry(int err)
{
	return err == EINTR || err == EAGAIN || err == EBUSY;
}

/* Take every completion the ring holds; returns how many. */
static size_t uring_reap(struct uring *u)
{
	unsigned h = atomic_load_explicit(u->cq_head, memory_order_relaxed);
	unsigned t = atomic_load_explicit(u->cq_tail, memory_order_acquire);
	size_t got = 0;

	for (; h != t; h++, got++) {
		const struct io_uring_cqe *cqe = &u->cqes[h & u->cq_mask];
		struct pool_aio_req *r = (struct pool_aio_req *)(uintptr_t)cqe->user_data;
		/* memcheck does not see the kernel fill a buffer through the
		 * ring (it does for io_getevents): say so, or every check of
		 * read bytes is an "uninitialised value" (a no-op outside it) */
		if (r->op == POOL_AIO_READ && cqe->res > 0)
			VALGRIND_MAKE_MEM_DEFINED(r->buf, (size_t)cqe->res);
		req_complete(r, cqe->res);
	}
	atomic_store_explicit(u->cq_head, h, memory_order_release);
	return got;
}

/*
 * The ring failed in the middle of a batch (err: io_uring_enter's errno).
 * Every entry the kernel took since head0 (its submission head moved past
 * it) is an I/O that may still be in flight: closing the ring would not
 * wait for it, so wait here, with the call that only waits (and, on a
 * DEFER_TASKRUN ring, is what posts the completions), until each has
 * completed; *done counts the batch's completions.  What the kernel never
 * took stays in the ring, which is closed next, and is failed by the
 * caller.  If even waiting fails, no return is safe: the caller would free
 * or reuse buffers the kernel may still write into (a read) or read from
 * (a write, putting wrong data on disk), so the process ends.
 */
static void uring_drain(const struct pool_aio *e, struct uring *u, unsigned head0, size_t *done,
			int err)
{
	fprintf(stderr,
		"spacefs: pool/aio.c: io_uring_enter failed (%s); waiting for the batch's "
		"I/Os in flight, then chunk I/O uses libaio\n",
		strerror(err));
	for (;;) {
		unsigned taken = atomic_load_explicit(u->sq_head, memory_order_acquire) - head0;
		*done += uring_reap(u);
		if (*done >= taken)
			return;
		int rc =
		    uring_enter(e, u->fd, 0, (unsigned)(taken - *done), IORING_ENTER_GETEVENTS);
		if (rc < 0 && !enter_retry(errno)) {
			fprintf(stderr,
				"spacefs: pool/aio.c: cannot wait for %zu io_uring I/Os in flight "
				"(%s): their buffers cannot be handed back; aborting\n",
				(size_t)taken - *done, strerror(errno));
			abort();
		}
	}
}

/*
 * The batch through the ring: queue what fits, then one io_uring_enter
 * submits it and (once everything is queued) sleeps until all of it has
 * completed.  A batch of exactly two gets a no-op third entry for the
 * same reason as add_plug below: io_uring plugs a submission of more
 * than two entries only.  Returns 0 or a negative errno as pool_aio_run,
 * or 1 when the ring refused this thread and took nothing (libaio runs
 * the batch then).
 */
static int uring_run(struct pool_aio *e, struct uring *u, struct pool_aio_req *reqs, size_t n,
		     uint64_t *due)
{
	struct pool_aio_req plug = {.fd = -1, .op = POOL_AIO_WRITE, .result = AIO_PENDING};
	size_t m = 0, next = 0, queued = 0, done = 0;
	uint64_t now = 0;

	for (size_t i = 0; i < n; i++) {
		struct pool_aio_req *r = &reqs[i];
		if (r->fd < 0) {
			req_complete(r, r->op == POOL_AIO_READ ? 0 : -EBADF);
			continue;
		}
		r->result = AIO_PENDING;
		if (__builtin_expect(pool_diskq_on(r->dq), 0))
			model_admit(r, &now, due);
		m++;
	}
	size_t total = m + (m == AIO_PLUG_THRESHOLD);
	unsigned tail = atomic_load_explicit(u->sq_tail, memory_order_relaxed);
	unsigned head0 = atomic_load_explicit(u->sq_head, memory_order_acquire);

	while (done < total) {
		unsigned head = atomic_load_explicit(u->sq_head, memory_order_acquire);
		while (queued < total && queued - done < u->entries && tail - head < u->entries) {
			if (queued < m) {
				while (reqs[next].fd < 0)
					next++;
				uring_queue(u, tail, &reqs[next++], 0);
			} else {
				uring_queue(u, tail, &plug, 1);
			}
			tail++;
			queued++;
		}
		atomic_store_explicit(u->sq_tail, tail, memory_order_release);
		unsigned to_submit = tail - head;
		unsigned wait = queued == total ? (unsigned)(total - done) : 1;
		int rc = uring_enter(e, u->fd, to_submit, wait, IORING_ENTER_GETEVENTS);
		int err = rc < 0 ? errno : 0;
		if (err == EEXIST && head == head0) {
			/* Not the ring's thread after all (a thread id
			 * reused): the kernel took nothing from it; drop the
			 * ring and let libaio run the batch. */
			uring_release(u);
			return 1;
		}
		done += uring_reap(u);
		if (err && !enter_retry(err)) {
			/* The ring is broken (should not happen): wait out
			 * what the kernel took, fail what it did not take, and
			 * use libaio from now on. */
			uring_drain(e, u, head0, &done, err);
			for (size_t i = 0; i < n; i++)
				if (reqs[i].result == AIO_PENDING)
					reqs[i].result = -err;
			uring_release(u);
			atomic_store(&e->no_uring, 1);
			return -err;
		}
	}
	return 0;
}

int pool_aio_run(struct pool_aio *e, struct pool_aio_req *reqs, size_t n)
{
	struct aio_ctx *c;
	int rc;

	if (n == 0 || run_one(reqs, n) == 0)
		return 0;
	int ring = !atomic_load_explicit(&e->no_uring, memory_order_relaxed) && all_direct(reqs, n);
	c = ctx_take(e, ring);
	rc = c ? 0 : -ENOMEM;
	uint64_t due = 0;
	int admitted = 0; /* uring_run admitted the batch to the disk models */
	if (c && ring && uring_fit(e, &c->u, n + 1) == 0) {
		rc = uring_run(e, &c->u, reqs, n, &due);
		if (rc <= 0) {
			ctx_put(e, c);
			if (__builtin_expect(due != 0, 0))
				model_wait(due);
			return rc;
		}
		admitted = 1; /* the ring refused the thread, took nothing: libaio runs it */
	}
	rc = c ? 0 : -ENOMEM;
	if (c)
		rc = ctx_fit(c, n + 1);
	if (rc < 0) {
		if (c)
			ctx_put(e, c); /* an empty context is fine to keep */
		for (size_t i = 0; i < n; i++)
			reqs[i].result = rc;
		return rc;
	}

	size_t m = prepare(c, reqs, n, &due, admitted);
	size_t sub = 0, done = 0;
	struct pool_aio_req plug;
	if (m == AIO_PLUG_THRESHOLD)
		m = add_plug(c, m, &plug);

	while (done < m) {
		size_t inflight = sub - done;

		if (sub < m && inflight < c->depth) {
			size_t want = m - sub;
			if (want > c->depth - inflight)
				want = c->depth - inflight;
			rc = io_submit(c->ctx, (long)want, c->cbp + sub);
			if (rc > 0) {
				sub += (size_t)rc;
				if (sub < m && sub - done < c->depth)
					continue; /* partial: the kernel took less */
			} else if (rc != -EAGAIN || inflight == 0) {
				/* The first iocb was refused (bad fd, misaligned
				 * O_DIRECT...): fail it alone, go on. */
				struct pool_aio_req *r = c->cbp[sub]->data;
				req_complete(r, rc < 0 ? rc : -EIO);
				sub++;
				done++;
				continue;
			}
		}
		if (sub == done)
			continue;

		long min = sub < m ? 1 : (long)(sub - done);
		rc = io_getevents(c->ctx, min, (long)c->depth, c->ev, NULL);
		if (rc == -EINTR)
			continue;
		if (rc < 0)
			return ctx_abandon(e, c, reqs, n, rc);
		for (int i = 0; i < rc; i++)
			req_complete(c->ev[i].data, (long)c->ev[i].res);
		done += (size_t)rc;
	}
	assert(sub == m && done == m);
	ctx_put(e, c);
	if (__builtin_expect(due != 0, 0))
		model_wait(due);
	return 0;
}

size_t pool_aio_contexts(struct pool_aio *e)
{
	size_t n = 0;

	pthread_mutex_lock(&e->mu);
	for (const struct aio_ctx *c = e->idle; c; c = c->next)
		n++;
	n += e->busy;
	pthread_mutex_unlock(&e->mu);
	return n;
}

const char *pool_aio_engine(struct pool_aio *e)
{
	return atomic_load(&e->uring) && !atomic_load(&e->no_uring) ? "io_uring" : "libaio";
}
