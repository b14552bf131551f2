/*
 * table.c -- how spacectl shows things: aligned tables for people, JSON
 * for programs.
 *
 * Tables are built whole and then printed, because a column's width is
 * only known once every row is in.  The JSON writer streams instead: it
 * only has to remember, per nesting level, whether a comma is due, and
 * it escapes every string it writes, since pool, volume and path names
 * come from users and disks (paths may hold any byte but NUL and '/').
 * Bytes >= 0x80 are passed through: paths are UTF-8 on any sane system,
 * and JSON readers that reject invalid UTF-8 do so loudly.  Error lines
 * (cli_err) are here too: every spacectl file prints them the same way.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tools/table.h"

/* ---- tables -------------------------------------------------------------- */

struct table {
	unsigned ncols, nrows, cap;
	const char *head[TABLE_MAX_COLS];
	int right[TABLE_MAX_COLS];
	char **cells; /* nrows * ncols, row-major, owned */
};

struct table *table_new(unsigned ncols, const char *const *headers)
{
	struct table *t = calloc(1, sizeof(*t));

	assert(ncols > 0 && ncols <= TABLE_MAX_COLS);
	if (!t)
		return NULL;
	t->ncols = ncols;
	for (unsigned c = 0; c < ncols; c++) {
		t->right[c] = headers[c][0] == '>';
		t->head[c] = headers[c] + t->right[c];
	}
	return t;
}

int table_row(struct table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		unsigned cap = t->cap ? 2 * t->cap : 8;
		char **n = realloc(t->cells, (size_t)cap * t->ncols * sizeof(*n));

		if (!n)
			return -ENOMEM;
		t->cells = n;
		t->cap = cap;
	}
	for (unsigned c = 0; c < t->ncols; c++) {
		char *s = strdup(cells[c] ? cells[c] : "");

		if (!s) {
			while (c-- > 0)
				free(t->cells[(size_t)t->nrows * t->ncols + c]);
			return -ENOMEM;
		}
		t->cells[(size_t)t->nrows * t->ncols + c] = s;
	}
	t->nrows++;
	return 0;
}

static void print_row(const struct table *t, const char *const *cells, const size_t *w, FILE *f)
{
	for (unsigned c = 0; c < t->ncols; c++) {
		int last = c + 1 == t->ncols;
		int pad = (int)(w[c] - strlen(cells[c]));

		if (t->right[c])
			fprintf(f, "%*s%s", pad, "", cells[c]);
		else
			fprintf(f, "%s%*s", cells[c], last ? 0 : pad, "");
		fputs(last ? "\n" : "  ", f);
	}
}

void table_print(const struct table *t, FILE *f)
{
	size_t w[TABLE_MAX_COLS];

	for (unsigned c = 0; c < t->ncols; c++) {
		w[c] = strlen(t->head[c]);
		for (unsigned r = 0; r < t->nrows; r++) {
			size_t n = strlen(t->cells[(size_t)r * t->ncols + c]);

			w[c] = n > w[c] ? n : w[c];
		}
	}
	print_row(t, t->head, w, f);
	for (unsigned r = 0; r < t->nrows; r++)
		print_row(t, (const char *const *)&t->cells[(size_t)r * t->ncols], w, f);
}

void table_free(struct table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < (size_t)t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

/* ---- JSON ------------------------------------------------------------------ */

void json_quote(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

/* Comma, newline and indent before a value, then its key if any. */
static void json_lead(struct json *j, const char *key)
{
	if (j->count[j->depth]++)
		fputc(',', j->f);
	fprintf(j->f, "\n%*s", 2 * j->depth, "");
	if (key) {
		json_quote(j->f, key);
		fputs(": ", j->f);
	}
}

static void json_open(struct json *j, const char *key, char bracket)
{
	json_lead(j, key);
	fputc(bracket, j->f);
	assert(j->depth + 1 < JSON_MAX_DEPTH);
	j->count[++j->depth] = 0;
}

void json_begin(struct json *j, FILE *f)
{
	j->f = f;
	j->depth = 0;
	fputc('{', f);
	j->count[++j->depth] = 0;
}

void json_end(struct json *j)
{
	json_close(j, '}');
	assert(j->depth == 0);
	fputc('\n', j->f);
}

void json_object(struct json *j, const char *key)
{
	json_open(j, key, '{');
}

void json_array(struct json *j, const char *key)
{
	json_open(j, key, '[');
}

void json_close(struct json *j, char bracket)
{
	assert(j->depth > 0);
	if (j->count[j->depth--])
		fprintf(j->f, "\n%*s", 2 * j->depth, "");
	fputc(bracket, j->f);
}

void json_str(struct json *j, const char *key, const char *val)
{
	json_lead(j, key);
	json_quote(j->f, val);
}

void json_u64(struct json *j, const char *key, uint64_t val)
{
	json_lead(j, key);
	fprintf(j->f, "%llu", (unsigned long long)val);
}

void json_bool(struct json *j, const char *key, int val)
{
	json_lead(j, key);
	fputs(val ? "true" : "false", j->f);
}

void json_null(struct json *j, const char *key)
{
	json_lead(j, key);
	fputs("null", j->f);
}

void json_raw(struct json *j, const char *key, const char *text)
{
	json_lead(j, key);
	fputs(text, j->f);
}

/* ---- sizes ------------------------------------------------------------------ */

void fmt_size(uint64_t bytes, char *out, size_t size)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0 || bytes % (1ull << (10 * u)) == 0) /* exact: "256 KiB" */
		snprintf(out, size, "%llu %s", (unsigned long long)(bytes >> (10 * u)), unit[u]);
	else if (v < 10)
		snprintf(out, size, "%.2f %s", v, unit[u]);
	else if (v < 100)
		snprintf(out, size, "%.1f %s", v, unit[u]);
	else
		snprintf(out, size, "%.0f %s", v, unit[u]);
}

int parse_size(const char *s, uint32_t *out)
{
	unsigned long long v = 0, mult = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned long long)(*p - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
	}
	if (*p == 'K' || *p == 'k')
		mult = 1024;
	else if (*p == 'M' || *p == 'm')
		mult = 1024 * 1024;
	if (mult > 1)
		p++;
	if (*p != '\0' || v * mult > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)(v * mult);
	return 0;
}

/* ---- messages ------------------------------------------------------------ */

int cli_err(int code, const char *what, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "spacectl: %s: ", what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}
