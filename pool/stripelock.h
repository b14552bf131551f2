/*
 * stripelock.h -- the stripe lock table of the data path.
 *
 * A fixed table of reader/writer locks.  A range of stripes of one file
 * hashes to a set of distinct slots; a writer takes them exclusive, a
 * reader shared, always in ascending slot order, so two requests never
 * deadlock and a request never takes one slot twice.  Unrelated stripes
 * may share a slot (they then serialise needlessly, never incorrectly).
 */
#ifndef SPACEFS_POOL_STRIPELOCK_H
#define SPACEFS_POOL_STRIPELOCK_H

#include <stdint.h>

struct stripelock;

/* The slots one request holds: a run of consecutive slots, wrapping at the
 * end of the table.  Filled by stripelock_lock, given back to unlock. */
struct stripelock_set {
	uint32_t first; /* first slot of the run */
	uint32_t count; /* slots in the run, 1 .. table size */
	int excl;
};

/* nslots: table size (0 for the default, 1024). */
int stripelock_new(uint32_t nslots, struct stripelock **out);
void stripelock_free(struct stripelock *t);

/* Lock stripes [first, last] of file `id`: exclusive if excl, else shared. */
void stripelock_lock(struct stripelock *t, uint64_t id, uint64_t first, uint64_t last, int excl,
		     struct stripelock_set *set);
void stripelock_unlock(struct stripelock *t, const struct stripelock_set *set);

/* The slot of stripe `stripe` of file `id`, and locking a set of slots
 * given in ascending order without duplicates (the order every lock above
 * takes its slots in, so the two kinds cannot deadlock): for a holder of
 * many scattered stripes, which a range would over-lock. */
uint32_t stripelock_slot(const struct stripelock *t, uint64_t id, uint64_t stripe);
void stripelock_lock_slots(struct stripelock *t, const uint32_t *slot, uint32_t n, int excl);
void stripelock_unlock_slots(struct stripelock *t, const uint32_t *slot, uint32_t n);

#endif /* SPACEFS_POOL_STRIPELOCK_H */
