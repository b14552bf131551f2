/*
 * fault.c -- fault injection for crash tests (see fault.h for why it is
 * in every build).  A crash fault fires once: the Nth event of its kind
 * ends the process with _exit, so no atexit handler, no flush of anything
 * the daemon buffers, no unmount -- what is on the disks is what a power
 * cut at that instant would leave.  The other kinds (wbhold, cklog) only
 * delay or fail what the daemon does, and it goes on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool/fault.h"

static const struct {
	const char *name;
	enum pool_fault_kind kind;
} kinds[] = {
    {"tear", POOL_FAULT_TEAR},	   {"jtear", POOL_FAULT_JTEAR}, {"replay", POOL_FAULT_REPLAY},
    {"wbhold", POOL_FAULT_WBHOLD}, {"cklog", POOL_FAULT_CKLOG}, {"jmove", POOL_FAULT_JMOVE},
    {"fill", POOL_FAULT_FILL},	   {"jsync", POOL_FAULT_JSYNC}, {"iretire", POOL_FAULT_IRETIRE},
};

int pool_fault_parse(const char *spec, struct pool_fault *f, char *err, size_t errlen)
{
	f->kind = POOL_FAULT_NONE;
	f->at = 0;
	f->seen = 0;
	if (!spec || !*spec)
		return 0;
	const char *colon = strchr(spec, ':');
	size_t n = colon ? (size_t)(colon - spec) : 0;
	for (size_t i = 0; colon && i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (strlen(kinds[i].name) != n || strncmp(spec, kinds[i].name, n) != 0)
			continue;
		char *end;
		errno = 0;
		unsigned long long at = strtoull(colon + 1, &end, 10);
		if (errno || end == colon + 1 || *end || at == 0 || colon[1] == '-')
			break;
		f->kind = kinds[i].kind;
		f->at = at;
		return 0;
	}
	snprintf(
	    err, errlen,
	    "SPACEFS_FAULT='%s': expected tear:N, jtear:N, replay:N, jmove:N, cklog:N, fill:N, "
	    "jsync:N, wbhold:MS or iretire:MS with N, MS >= 1",
	    spec);
	return -EINVAL;
}

int pool_fault_hit(struct pool_fault *f, enum pool_fault_kind kind)
{
	if (!f || f->kind != kind)
		return 0;
	return ++f->seen == f->at;
}

int pool_fault_from(struct pool_fault *f, enum pool_fault_kind kind)
{
	if (!f || f->kind != kind)
		return 0;
	return ++f->seen >= f->at;
}

_Noreturn void pool_fault_die(const char *volume, const char *what)
{
	fprintf(stderr, "spacefs: volume %s: SPACEFS_FAULT: %s; ending the process now\n", volume,
		what);
	fflush(stderr);
	_exit(99);
}
