/*
 * spacectl_disk.h -- the disk, repair and scrub commands of spacectl
 * (tools/spacectl_disk.c), called from spacectl.c's command table.
 */
#ifndef SPACEFS_TOOLS_SPACECTL_DISK_H
#define SPACEFS_TOOLS_SPACECTL_DISK_H

#include "pool/pool.h"

extern const char spacectl_help_disk[];

int spacectl_cmd_disk_add(int argc, char **argv);
int spacectl_cmd_disk_replace(int argc, char **argv);
int spacectl_cmd_disk_retire(int argc, char **argv);
int spacectl_cmd_repair(int argc, char **argv);
int spacectl_cmd_scrub(int argc, char **argv);
/* tools/spacectl_model.c: emulated disks. */
struct pool_diskmodel;
extern const char spacectl_help_disk_set[];
int spacectl_cmd_disk_set(int argc, char **argv);
/* A preset name into *out; a usage error (exit status 2) if unknown. */
int spacectl_model_parse(const char *name, struct pool_diskmodel *out, const char *what);
/* Each modelled disk's busy time since mount (status), nothing if none. */
void spacectl_busy_table(const struct pool *p);
/* The daemon's jobs as a table (status), nothing if none or not mounted. */
void spacectl_jobs_table(const struct pool *p);

#endif /* SPACEFS_TOOLS_SPACECTL_DISK_H */
