/*
 * text.c -- a growing text buffer (see text.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "fs/text.h"

void fs_textf(struct fs_text *t, const char *fmt, ...)
{
	va_list ap;

	while (!t->failed) {
		size_t room = t->cap - t->len;
		va_start(ap, fmt);
		int n = vsnprintf(t->s ? t->s + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap - t->len <= (size_t)n)
			cap *= 2;
		char *s = realloc(t->s, cap);
		if (!s) {
			t->failed = 1;
			return;
		}
		t->s = s;
		t->cap = cap;
	}
}
