/*
 * text.h -- a growing text buffer for replies built piece by piece (the
 * control socket's JSON and tables, the Prometheus metrics page).
 *
 * fs_textf() appends like printf, growing the buffer as needed; on
 * failure (out of memory) it sets `failed` and later calls do nothing
 * more, so a caller formats everything and checks once at the end.  The
 * buffer is malloc'd: free(t.s) when done.
 */
#ifndef SPACEFS_FS_TEXT_H
#define SPACEFS_FS_TEXT_H

#include <stddef.h>

struct fs_text {
	char *s; /* NUL-terminated once anything was added */
	size_t len, cap;
	int failed;
};

void fs_textf(struct fs_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* SPACEFS_FS_TEXT_H */
