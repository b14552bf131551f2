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
/* The daemon's jobs as a table (status), nothing if none or not mounted. */
void spacectl_jobs_table(const struct pool *p);

#endif /* SPACEFS_TOOLS_SPACECTL_DISK_H */
