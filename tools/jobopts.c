/*
 * jobopts.c -- --wait, --rate and --help for spacectl's job commands.
 *
 * Options are moved in front of the operands before getopt runs, with
 * '+' (stop at the first operand), instead of relying on glibc's own
 * permutation: that permutation is off when POSIXLY_CORRECT is set in
 * the environment, and then `spacectl backup SRC VOL DEST --wait` would
 * take "--wait" as a fourth operand.  The checkpoint commands did this
 * first; the disk and repair commands now get the same behaviour.  "--"
 * ends the options: what follows is operands even if it starts with '-'.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/jobopts.h"
#include "tools/table.h"

#define EXIT_USAGE 2

/* Options (and --rate's value) first, then operands, each in its order. */
static void options_first(int argc, char **argv)
{
	char **ops = malloc(sizeof(*ops) * (size_t)argc),
	     **opt = malloc(sizeof(*opt) * (size_t)argc);
	int no = 0, nt = 0, i = 1;

	if (!ops || !opt) { /* getopt's own permutation is then the fallback */
		free(ops);
		free(opt);
		return;
	}
	for (; i < argc && strcmp(argv[i], "--"); i++) {
		if (argv[i][0] == '-' && argv[i][1]) {
			opt[nt++] = argv[i];
			if ((!strcmp(argv[i], "--rate") || !strcmp(argv[i], "-r")) && i + 1 < argc)
				opt[nt++] = argv[++i];
		} else {
			ops[no++] = argv[i];
		}
	}
	if (i < argc) /* "--" and everything after it stay operands */
		opt[nt++] = argv[i++];
	for (; i < argc; i++)
		ops[no++] = argv[i];
	memcpy(argv + 1, opt, sizeof(*opt) * (size_t)nt);
	memcpy(argv + 1 + nt, ops, sizeof(*ops) * (size_t)no);
	free(ops);
	free(opt);
}

int jobopts_parse(int argc, char **argv, const char *what, const char *help, struct jobopts *o,
		  int *done)
{
	static const struct option lo[] = {{"wait", no_argument, NULL, 'w'},
					   {"rate", required_argument, NULL, 'r'},
					   {"help", no_argument, NULL, 'h'},
					   {0}};
	int c;

	*done = 0;
	options_first(argc, argv);
	optind = 0; /* glibc: full reinitialisation */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:wr:h", lo, NULL)) != -1) {
		char *end;
		if (c == 'h') {
			fputs(help, stdout);
			*done = 1;
			return 0;
		} else if (c == 'w') {
			o->wait = 1;
		} else if (c == 'r') {
			o->rate = strtod(optarg, &end);
			if (end == optarg || *end || o->rate <= 0 || o->rate > 1e6)
				return cli_err(EXIT_USAGE, what, "--rate wants MB/s, not '%s'",
					       optarg);
		} else {
			return cli_err(EXIT_USAGE, what, "unknown option or missing value '%s'",
				       argv[optind - 1]);
		}
	}
	return 0;
}
