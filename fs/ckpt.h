/*
 * ckpt.h -- checkpoints of files (fs/ckpt.c) and their read-only
 * namespace MNT/VOLUME/.checkpoints (fs/ckpt_ops.c).
 *
 * The data path hooks (called by fs/ops.c under the inode's io_lock)
 * return false when the file has no checkpoint, and the caller goes to
 * the store as before; true when they did the I/O (result in *res).
 */
#ifndef SPACEFS_FS_CKPT_H
#define SPACEFS_FS_CKPT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "fs/fs.h"
#include "fs/text.h"

int fs_ckpt_attach(struct fs_volume *v, const char *const *dirs, uint32_t ndirs, char *err,
		   size_t errlen);
void fs_ckpt_detach(struct fs_volume *v);
/* Start v's merge worker (after fuse_daemonize: threads do not survive its
 * fork).  0 (also with no checkpoints or a worker running) or -EAGAIN. */
int fs_ckpt_start(struct fs_volume *v);

/* How far a scrub or repair must walk file ino if it is in a checkpoint
 * chain, past its own size: a checkpointed file as far as the largest
 * size a checkpoint of it recorded (its checkpoints read its chunk files
 * up to there after the live file was cut shorter); a layer (a hidden
 * file of differencing data) to the end of the last granule it holds (a
 * file that grew wrote its new end into the layer, past the layer's
 * recorded size); a fill file to its zeroed end.  0 if ino is in none. */
uint64_t fs_ckpt_walk_end(struct fs_volume *v, uint64_t ino);
/* ino is part of a checkpoint chain: a checkpointed file with layers, a
 * layer or a layer's fill file.  The chain keeps copies of their
 * placements and does I/O to the layers under the file's locks, so their
 * positions must not move while it lasts (disk retire refuses them). */
bool fs_ckpt_in_chain(struct fs_volume *v, uint64_t ino);
/* ino is a layer or a fill file of a chain: written under the
 * checkpointed file's locks, not its own. */
bool fs_ckpt_is_delta(struct fs_volume *v, uint64_t ino);
/* fsync of a checkpointed file: its layers' chunk files and the
 * checkpoint log (the records saying which blocks are in which layer), so
 * what was written since the checkpoint survives a power cut as the file's
 * own chunk files do.  0 (also for a file with no layers) or -errno. */
int fs_ckpt_sync(struct fs_volume *v, uint64_t vino);
bool fs_ckpt_read(struct fs_inode *in, uint64_t off, size_t len, void *buf, ssize_t *res);
bool fs_ckpt_write(struct fs_inode *in, uint64_t off, size_t len, const void *buf, ssize_t *res);
/* [off, end) of the live file reads as zeros (truncate, punch). */
bool fs_ckpt_zero(struct fs_inode *in, uint64_t off, uint64_t end, int *res);
bool fs_ckpt_seek(struct fs_inode *in, uint64_t size, uint64_t off, int whence, uint64_t *out,
		  int *res);
/* The file's data is needed by a checkpoint: do not remove it (its
 * last name is gone; the last merge removes it). */
bool fs_ckpt_holds(struct fs_volume *v, uint64_t vino);

int fs_ckpt_handles(const char *req);
/* Running merges appended to fs_jobs_text (json false) or fs_jobs_json's
 * array (true) at s + *len. */
void fs_ckpt_jobs(struct fs *fs, bool json, char *s, size_t cap, size_t *len);
/* On a node that does not own the volume, the request goes to its owner
 * (W_CTL) and the owner's reply comes back as it is. */
void fs_ckpt_request(struct fs *fs, int argc, char **argv, struct fs_text *o);
struct wire_req;
struct wire_rep;
/* W_CTL on the owner: p->data (in *out, to free) is the reply's text. */
void fs_ckpt_serve_ctl(struct fs *fs, const struct wire_req *q, struct wire_rep *p, uint8_t **out);
/* W_CKPT on the owner: one operation of the .checkpoints namespace for a
 * node whose mount reads it (p->data in *out, to free). */
void fs_ckpt_serve_ns(struct fs *fs, const struct wire_req *q, struct wire_rep *p, uint8_t **out);

/* the namespace */
bool fs_ckpt_is_ino(uint64_t ino);
void fs_ckpt_lookup(fuse_req_t req, uint64_t parent, const char *name);
void fs_ckpt_getattr(fuse_req_t req, uint64_t ino);
void fs_ckpt_open(fuse_req_t req, uint64_t ino, struct fuse_file_info *fi, bool dir);
void fs_ckpt_readdir(fuse_req_t req, uint64_t ino, size_t size, off_t off, bool plus);
void fs_ckpt_read_req(fuse_req_t req, uint64_t ino, size_t size, off_t off);
void fs_ckpt_lseek(fuse_req_t req, uint64_t ino, off_t off, int whence);
/* fs_ops (or fs_route_ops) with the namespace in front of it. */
void fs_ckpt_wrap_ops(const struct fuse_lowlevel_ops *inner, struct fuse_lowlevel_ops *out);

#endif /* SPACEFS_FS_CKPT_H */
