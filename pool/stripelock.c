/*
 * stripelock.c -- serialise writers of a stripe, keep readers off
 * half-written stripes.
 *
 * A partial-stripe parity write reads old data and parity, computes, and
 * writes back; two of them on one stripe at once would each compute from
 * the other's stale parity.  Mirror copies must land in the same order on
 * every copy.  And a reader must not see data of a new write next to
 * parity of the old one.  So every request locks the stripes it touches:
 * writers exclusive, readers shared.
 *
 * The locks live in a fixed table of pthread rwlocks indexed by a hash;
 * there is no per-stripe allocation and no lock on the table itself.
 * Stripe s of file f maps to slot (H(f) + s) mod N: one file's
 * consecutive stripes take consecutive slots, so a request's set of slots
 * is one run (wrapping once at the end of the table) -- no sorting, no
 * duplicates unless the request spans more stripes than the table has
 * slots, in which case it simply takes the whole table.  Slots are always
 * taken in ascending index order (for a wrapped run: the low part first),
 * which is a global order, so requests cannot deadlock.  Different files
 * land at unrelated offsets thanks to the hash.
 *
 * The rwlocks prefer writers: a stream of readers on a hot stripe must
 * not starve a writer.  That kind of lock deadlocks if a thread re-takes
 * a slot it already holds shared, which the one-run design rules out.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "pool/stripelock.h"

#define STRIPELOCK_DEFAULT_SLOTS 1024u

struct stripelock {
	uint32_t n;
	pthread_rwlock_t lock[];
};

int stripelock_new(uint32_t nslots, struct stripelock **out)
{
	pthread_rwlockattr_t attr;
	struct stripelock *t;

	if (nslots == 0)
		nslots = STRIPELOCK_DEFAULT_SLOTS;
	t = malloc(sizeof(*t) + nslots * sizeof(t->lock[0]));
	if (!t)
		return -ENOMEM;
	t->n = nslots;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (uint32_t i = 0; i < nslots; i++)
		pthread_rwlock_init(&t->lock[i], &attr);
	pthread_rwlockattr_destroy(&attr);
	*out = t;
	return 0;
}

void stripelock_free(struct stripelock *t)
{
	if (!t)
		return;
	for (uint32_t i = 0; i < t->n; i++)
		pthread_rwlock_destroy(&t->lock[i]);
	free(t);
}

/* splitmix64 finaliser: file ids are small consecutive integers. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void take_range(struct stripelock *t, uint32_t from, uint32_t to, int excl)
{
	for (uint32_t i = from; i < to; i++) {
		int rc =
		    excl ? pthread_rwlock_wrlock(&t->lock[i]) : pthread_rwlock_rdlock(&t->lock[i]);
		assert(rc == 0);
		(void)rc;
	}
}

static void drop_range(struct stripelock *t, uint32_t from, uint32_t to)
{
	for (uint32_t i = from; i < to; i++)
		pthread_rwlock_unlock(&t->lock[i]);
}

void stripelock_lock(struct stripelock *t, uint64_t id, uint64_t first, uint64_t last, int excl,
		     struct stripelock_set *set)
{
	assert(first <= last);
	uint64_t span = last - first + 1;

	set->excl = excl;
	if (span >= t->n) {
		set->first = 0;
		set->count = t->n;
	} else {
		set->first = (uint32_t)((mix(id) % t->n + first % t->n) % t->n);
		set->count = (uint32_t)span;
	}

	uint32_t end = set->first + set->count; /* may pass the table end */
	if (end > t->n) {
		take_range(t, 0, end - t->n, excl);
		take_range(t, set->first, t->n, excl);
	} else {
		take_range(t, set->first, end, excl);
	}
}

uint32_t stripelock_slot(const struct stripelock *t, uint64_t id, uint64_t stripe)
{
	return (uint32_t)((mix(id) % t->n + stripe % t->n) % t->n);
}

void stripelock_lock_slots(struct stripelock *t, const uint32_t *slot, uint32_t n, int excl)
{
	for (uint32_t i = 0; i < n; i++) {
		assert(slot[i] < t->n && (i == 0 || slot[i] > slot[i - 1]));
		take_range(t, slot[i], slot[i] + 1, excl);
	}
}

void stripelock_unlock_slots(struct stripelock *t, const uint32_t *slot, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		drop_range(t, slot[i], slot[i] + 1);
}

void stripelock_unlock(struct stripelock *t, const struct stripelock_set *set)
{
	uint32_t end = set->first + set->count;

	if (end > t->n) {
		drop_range(t, set->first, t->n);
		drop_range(t, 0, end - t->n);
	} else {
		drop_range(t, set->first, end);
	}
}
