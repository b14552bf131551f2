/*
 * jobs.h -- background repair, resync and scrub jobs of the daemon
 * (fs/jobs.c), and the hooks fs/health.c and fs/volume.c call.
 */
#ifndef SPACEFS_FS_JOBS_H
#define SPACEFS_FS_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "fs/fs.h"

/* Resume what a previous daemon left: repairs of REPAIRING disks,
 * interrupted scrubs (their checkpoints). */
void fs_jobs_resume(struct fs *fs);
/* Once a second from the health thread: reap finished jobs, clean the
 * dirty-region logs. */
void fs_jobs_tick(struct fs *fs);
/* Is a repair or resync of `disk` running? */
int fs_jobs_busy(struct fs *fs, uint32_t disk);
/* Disk `disk` came back with its own superblock: resync it. */
int fs_jobs_start_resync(struct fs *fs, uint32_t disk);
/* Disk `disk` failed: a job rebuilding it stops. */
void fs_jobs_disk_failed(struct fs *fs, uint32_t disk);
/* Unclean-shutdown resync of one volume's dirty regions, and of regions
 * that disks in service missed; at volume open, before any I/O. */
int fs_volume_resync(struct fs *fs, struct fs_volume *v);
/* fs/ckpt.c: the record of a volume's checkpoint merge (or backup,
 * whose last step is its merge) for every node's status: state "running"
 * when it starts, "done" or "failed" (why) when it ends. */
void fs_jobs_merge_record(struct fs *fs, const char *vol, const char *ckpt, bool backup,
			  uint64_t done, uint64_t total, int64_t ms, double rate, const char *state,
			  const char *why);
/* The jobs as text lines for the "jobs" control request (pool/ctl.h). */
char *fs_jobs_text(struct fs *fs);
/* fs/health.c: the directory of `disk` changed on purpose (replace). */
void fs_health_rebaseline(struct fs *fs, uint32_t disk);

#endif /* SPACEFS_FS_JOBS_H */
