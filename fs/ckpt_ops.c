/*
 * ckpt_ops.c -- the read-only MNT/VOLUME/.checkpoints namespace, in front
 * of the daemon's FUSE operations.
 *
 * Every operation on an inode of the namespace (inode numbers with bit 47
 * of the volume part set; fs/ckpt.c) is answered here: lookups, attributes,
 * listings, reads and SEEK_DATA/SEEK_HOLE from the checkpoint, EROFS for
 * anything that would change it.  Everything else goes to the inner table
 * (fs_ops, or fs_route_ops with several nodes) untouched, so fs/ops.c
 * needs no knowledge of the namespace.  ".checkpoints" is found only by
 * name in a volume's root: it is not an entry of the metadata store, so
 * listings never show it (as ZFS's .zfs).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/ckpt.h"
#include "fs/fs.h"

#define CKPT_DIR ".checkpoints"

static const struct fuse_lowlevel_ops *inner(fuse_req_t req)
{
	return ((struct fs *)fuse_req_userdata(req))->inner_ops;
}

static bool ck(fuse_ino_t ino)
{
	return fs_ckpt_is_ino(ino);
}

static void w_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (ck(parent) || (parent != FUSE_ROOT_ID && fs_ino_vino(parent) == POOL_META_ROOT &&
			   strcmp(name, CKPT_DIR) == 0))
		fs_ckpt_lookup(req, parent, name);
	else
		inner(req)->lookup(req, parent, name);
}

static void w_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	if (ck(ino))
		fuse_reply_none(req);
	else
		inner(req)->forget(req, ino, n);
}

static void w_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	size_t n = 0;

	for (size_t i = 0; i < count; i++)
		if (!ck(f[i].ino))
			f[n++] = f[i];
	inner(req)->forget_multi(req, n, f);
}

static void w_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ck(ino))
		fs_ckpt_getattr(req, ino);
	else
		inner(req)->getattr(req, ino, fi);
}

static void w_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *a, int to_set,
		      struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->setattr(req, ino, a, to_set, fi);
}

static void w_readlink(fuse_req_t req, fuse_ino_t ino)
{
	if (ck(ino))
		fuse_reply_err(req, EINVAL);
	else
		inner(req)->readlink(req, ino);
}

static void w_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev)
{
	if (ck(p))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->mknod(req, p, name, mode, rdev);
}

static void w_mkdir(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode)
{
	if (ck(p))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->mkdir(req, p, name, mode);
}

static void w_unlink(fuse_req_t req, fuse_ino_t p, const char *name)
{
	if (ck(p))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->unlink(req, p, name);
}

static void w_rmdir(fuse_req_t req, fuse_ino_t p, const char *name)
{
	if (ck(p))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->rmdir(req, p, name);
}

static void w_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name)
{
	if (ck(p))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->symlink(req, link, p, name);
}

static void w_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np, const char *nn,
		     unsigned int flags)
{
	if (ck(p) || ck(np))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->rename(req, p, name, np, nn, flags);
}

static void w_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nn)
{
	if (ck(ino) || ck(np))
		fuse_reply_err(req, ck(np) ? EROFS : EXDEV);
	else
		inner(req)->link(req, ino, np, nn);
}

static void w_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ck(ino))
		fs_ckpt_open(req, ino, fi, false);
	else
		inner(req)->open(req, ino, fi);
}

static void w_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
		     struct fuse_file_info *fi)
{
	if (ck(p))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->create(req, p, name, mode, fi);
}

static void w_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	if (ck(ino))
		fs_ckpt_read_req(req, ino, size, off);
	else
		inner(req)->read(req, ino, size, off, fi);
}

static void w_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *b, off_t off,
			struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->write_buf(req, ino, b, off, fi);
}

static void w_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, 0);
	else
		inner(req)->flush(req, ino, fi);
}

static void w_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, 0);
	else
		inner(req)->release(req, ino, fi);
}

static void w_fsync(fuse_req_t req, fuse_ino_t ino, int ds, struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, 0);
	else
		inner(req)->fsync(req, ino, ds, fi);
}

static void w_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ck(ino))
		fs_ckpt_open(req, ino, fi, true);
	else
		inner(req)->opendir(req, ino, fi);
}

static void w_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	if (ck(ino))
		fs_ckpt_readdir(req, ino, size, off, false);
	else
		inner(req)->readdir(req, ino, size, off, fi);
}

static void w_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	if (ck(ino))
		fs_ckpt_readdir(req, ino, size, off, true);
	else
		inner(req)->readdirplus(req, ino, size, off, fi);
}

static void w_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, 0);
	else
		inner(req)->releasedir(req, ino, fi);
}

static void w_fsyncdir(fuse_req_t req, fuse_ino_t ino, int ds, struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, 0);
	else
		inner(req)->fsyncdir(req, ino, ds, fi);
}

static void w_statfs(fuse_req_t req, fuse_ino_t ino)
{
	/* a checkpoint's space is its volume's */
	inner(req)->statfs(req,
			   ck(ino) ? (ino >> FS_VOL_SHIFT << FS_VOL_SHIFT) | POOL_META_ROOT : ino);
}

static void w_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		       size_t size, int flags)
{
	if (ck(ino))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->setxattr(req, ino, name, value, size, flags);
}

static void w_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	if (ck(ino))
		fuse_reply_err(req, ENODATA);
	else
		inner(req)->getxattr(req, ino, name, size);
}

static void w_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (!ck(ino))
		inner(req)->listxattr(req, ino, size);
	else if (size == 0)
		fuse_reply_xattr(req, 0);
	else
		fuse_reply_buf(req, NULL, 0);
}

static void w_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (ck(ino))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->removexattr(req, ino, name);
}

static void w_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	if (ck(ino))
		fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
	else
		inner(req)->access(req, ino, mask);
}

static void w_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	if (ck(ino))
		fuse_reply_err(req, EROFS);
	else
		inner(req)->fallocate(req, ino, mode, off, len, fi);
}

static void w_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		    struct fuse_file_info *fi)
{
	if (ck(ino))
		fs_ckpt_lseek(req, ino, off, whence);
	else
		inner(req)->lseek(req, ino, off, whence, fi);
}

void fs_ckpt_wrap_ops(const struct fuse_lowlevel_ops *in, struct fuse_lowlevel_ops *out)
{
	*out = *in;
#define WRAP(op, fn)                                                                               \
	do {                                                                                       \
		if (in->op)                                                                        \
			out->op = fn;                                                              \
	} while (0)
	WRAP(lookup, w_lookup);
	WRAP(forget, w_forget);
	WRAP(forget_multi, w_forget_multi);
	WRAP(getattr, w_getattr);
	WRAP(setattr, w_setattr);
	WRAP(readlink, w_readlink);
	WRAP(mknod, w_mknod);
	WRAP(mkdir, w_mkdir);
	WRAP(unlink, w_unlink);
	WRAP(rmdir, w_rmdir);
	WRAP(symlink, w_symlink);
	WRAP(rename, w_rename);
	WRAP(link, w_link);
	WRAP(open, w_open);
	WRAP(create, w_create);
	WRAP(read, w_read);
	WRAP(write_buf, w_write_buf);
	WRAP(flush, w_flush);
	WRAP(release, w_release);
	WRAP(fsync, w_fsync);
	WRAP(opendir, w_opendir);
	WRAP(readdir, w_readdir);
	WRAP(readdirplus, w_readdirplus);
	WRAP(releasedir, w_releasedir);
	WRAP(fsyncdir, w_fsyncdir);
	WRAP(statfs, w_statfs);
	WRAP(setxattr, w_setxattr);
	WRAP(getxattr, w_getxattr);
	WRAP(listxattr, w_listxattr);
	WRAP(removexattr, w_removexattr);
	WRAP(access, w_access);
	WRAP(fallocate, w_fallocate);
	WRAP(lseek, w_lseek);
#undef WRAP
}
