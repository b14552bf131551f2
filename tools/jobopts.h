/*
 * jobopts.h -- the options every spacectl command that starts a job
 * takes: --wait (follow it to the end) and --rate MB/s (its speed limit),
 * with --help.  One parser for repair, scrub, disk add/replace/retire,
 * checkpoint and backup (tools/jobopts.c).
 */
#ifndef SPACEFS_TOOLS_JOBOPTS_H
#define SPACEFS_TOOLS_JOBOPTS_H

struct jobopts {
	int wait;
	double rate; /* MB/s, 0: unlimited */
};

/* Parse argv[1..argc) (argv[0] is the command's own name): options may
 * stand anywhere among the operands, which are left, in their order, at
 * argv[optind..argc).  Returns 0, with *done set when --help printed
 * help (the command then exits 0), or 2 after one error line. */
int jobopts_parse(int argc, char **argv, const char *what, const char *help, struct jobopts *o,
		  int *done);

#endif /* SPACEFS_TOOLS_JOBOPTS_H */
