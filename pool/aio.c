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
 * several engines can coexist.  There are deliberately no per-thread
 * contexts: a thread-exit destructor could run at the same moment as
 * pool_aio_free on a context that the engine had already freed (a store
 * closed on an owner move while a redirect-serving thread exits), and
 * pthread keys are a finite resource that a store opened on every owner
 * move would use up.  The list holds as many contexts as batches ever ran
 * at once, and the two lock round-trips per batch cost nothing beside an
 * io_submit.  A context starts small and is rebuilt larger when a batch
 * needs more slots, up to AIO_MAX_DEPTH; beyond that the batch goes
 * through a sliding window (submit what fits, reap, submit the rest),
 * which is the only case where one phase takes more than one io_submit.
 *
 * Chunk files are often opened with O_DIRECT, where libaio is truly
 * asynchronous.  Buffered descriptors work too: the kernel performs the
 * I/O inside io_submit and posts the completion at once, so a batch on a
 * tmpfs pool simply runs synchronously.
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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool/aio.h"
#include "pool/diskmodel.h"

#define AIO_MIN_DEPTH 64u
#define AIO_MAX_DEPTH 1024u
#define AIO_PENDING   (-EINPROGRESS) /* result of a request not yet completed */

/* One batch's completion ring and its iocb arrays (grown, never shrunk). */
struct aio_ctx {
	io_context_t ctx;
	unsigned depth; /* events the ring was set up for */
	size_t cap;	/* iocbs the arrays hold */
	struct iocb *cb;
	struct iocb **cbp;
	struct io_event *ev;
	struct aio_ctx *next; /* on the free list */
};

struct pool_aio {
	pthread_mutex_t mu;   /* guards the fields below */
	struct aio_ctx *idle; /* contexts no batch uses, last used first */
	size_t busy;	      /* contexts taken by batches running now */
};

static void ctx_release(struct aio_ctx *c)
{
	if (c->ctx)
		io_destroy(c->ctx); /* waits for anything still in flight */
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

/* Take an idle context (or make one) fit for n requests. */
static int ctx_take(struct pool_aio *e, size_t n, struct aio_ctx **out)
{
	struct aio_ctx *c;
	int rc;

	pthread_mutex_lock(&e->mu);
	c = e->idle;
	if (c)
		e->idle = c->next;
	e->busy++;
	pthread_mutex_unlock(&e->mu);
	if (!c)
		c = calloc(1, sizeof(*c));
	rc = c ? ctx_fit(c, n) : -ENOMEM;
	if (rc < 0 && c && !c->ctx) { /* a new context that never worked */
		ctx_release(c);
		c = NULL;
	}
	if (rc < 0) {
		pthread_mutex_lock(&e->mu);
		e->busy--;
		if (c) { /* still good for smaller batches */
			c->next = e->idle;
			e->idle = c;
		}
		pthread_mutex_unlock(&e->mu);
		return rc;
	}
	*out = c;
	return 0;
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
 * Returns how many iocbs were prepared; *due as in model_admit. */
static size_t prepare(struct aio_ctx *c, struct pool_aio_req *reqs, size_t n, uint64_t *due)
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
		if (__builtin_expect(pool_diskq_on(r->dq), 0))
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
 * by destroying it, fail what did not complete, start afresh next time. */
static int ctx_abandon(struct pool_aio *e, struct aio_ctx *c, struct pool_aio_req *reqs, size_t n,
		       int err)
{
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

int pool_aio_run(struct pool_aio *e, struct pool_aio_req *reqs, size_t n)
{
	struct aio_ctx *c;
	int rc;

	if (n == 0 || run_one(reqs, n) == 0)
		return 0;
	rc = ctx_take(e, n + 1, &c);
	if (rc < 0) {
		for (size_t i = 0; i < n; i++)
			reqs[i].result = rc;
		return rc;
	}

	uint64_t due = 0;
	size_t m = prepare(c, reqs, n, &due);
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
