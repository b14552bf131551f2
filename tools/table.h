/*
 * table.h -- output helpers for spacectl: aligned text tables, a small
 * streaming JSON writer, and human sizes.
 */
#ifndef SPACEFS_TOOLS_TABLE_H
#define SPACEFS_TOOLS_TABLE_H

#include <stdint.h>
#include <stdio.h>

/* ---- messages ------------------------------------------------------------ */

/* One line on stderr, "spacectl: WHAT: <fmt...>", and return code (the
 * exit status the caller hands back), so an error path is one statement. */
int cli_err(int code, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- tables -------------------------------------------------------------- */

#define TABLE_MAX_COLS 16

struct table;

/* A table with the given column headers (ncols <= TABLE_MAX_COLS).  A
 * header starting with '>' is right-aligned (numbers); the '>' is not
 * printed.  NULL when out of memory. */
struct table *table_new(unsigned ncols, const char *const *headers);
/* Append a row of ncols cells (copied).  -ENOMEM. */
int table_row(struct table *t, const char *const *cells);
/* Print header and rows, columns padded to their widest cell and
 * separated by two spaces, no trailing blanks. */
void table_print(const struct table *t, FILE *f);
void table_free(struct table *t);

/* ---- JSON ------------------------------------------------------------------ */

/* Streaming writer, pretty-printed.  Keys are passed with every value;
 * pass NULL inside arrays.  Nesting depth is at most JSON_MAX_DEPTH. */
#define JSON_MAX_DEPTH 16

struct json {
	FILE *f;
	int depth;
	int count[JSON_MAX_DEPTH]; /* values written at each level */
};

void json_begin(struct json *j, FILE *f); /* starts the top-level object */
void json_end(struct json *j);		  /* closes it and adds a newline */
void json_object(struct json *j, const char *key);
void json_array(struct json *j, const char *key);
void json_close(struct json *j, char bracket); /* '}' or ']' */
void json_str(struct json *j, const char *key, const char *val);
void json_u64(struct json *j, const char *key, uint64_t val);
void json_bool(struct json *j, const char *key, int val);
void json_null(struct json *j, const char *key);
/* A value that is already JSON text, written as it is. */
void json_raw(struct json *j, const char *key, const char *text);
/* Write s as a JSON string literal, quotes included. */
void json_quote(FILE *f, const char *s);

/* ---- sizes ------------------------------------------------------------------ */

/* "1.5 GiB", "256 KiB", "512 B": at most 3 significant digits. */
void fmt_size(uint64_t bytes, char *out, size_t size);
/* Parse "65536", "64K", "1M" (K = 1024, M = 1024^2, upper or lower case)
 * into a value <= UINT32_MAX.  -EINVAL when unparseable or too big. */
int parse_size(const char *s, uint32_t *out);

#endif /* SPACEFS_TOOLS_TABLE_H */
