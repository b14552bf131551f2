/*
 * ops.c -- one function per FUSE low-level operation.
 *
 * Each operation finds the volume from the inode number (fs.h), does its
 * work through the volume's metadata store (pool/meta.c) or data path
 * (pool/store.c) and replies.  Nothing here knows about columns, copies or
 * parity: that is the store's business.
 *
 * The mount's root is synthetic.  It lists the volumes; nothing can be
 * created, removed or renamed in it (volumes come from `spacectl volume
 * create`).  Its inode is FUSE_ROOT_ID; volume roots are volume inode 1.
 *
 * Locking: namespace operations are single metadata transactions, which
 * the store serialises.  Data operations take the inode's io_lock shared,
 * so reads and writes run in parallel (the store's stripe locks order
 * overlapping writes); operations that cut a file (truncate, punch) take
 * it exclusive so no write lands in a range being cut.  A regular file's
 * size and times change under the inode's lock and are written back lazily
 * (inode.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/ckpt.h"
#include "fs/fs.h"

#define ROOT_INO FUSE_ROOT_ID

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void log_root_change(const char *what, const char *name)
{
	fprintf(stderr,
		"spacefs: %s \"%s\" in the pool root refused: volumes are made with "
		"`spacectl volume create`\n",
		what, name);
}

/* Volume of a non-root inode, or NULL (reply already sent). */
static struct fs_volume *vol_of(fuse_req_t req, fuse_ino_t ino)
{
	struct fs_volume *v = fs_volume_by_id(fs_of(req), fs_ino_volid(ino));

	if (!v)
		fuse_reply_err(req, ENOENT);
	return v;
}

static int check_writable(struct fs *fs)
{
	return fs->opt.read_only ? -EROFS : 0;
}

/* The kernel asked this request (a write, truncate, chown or O_TRUNC
 * open) to clear a regular file's set-id bits (fs/chan.c).  Clears them in
 * the cached attributes; true if the mode changed, and then the caller
 * writes the attributes through, as for any mode change. */
static bool kill_suidgid(fuse_req_t req, struct fs_inode *in, bool asked)
{
	if (!(asked || fs_chan_kill_suidgid()) || !S_ISREG(in->attr.mode))
		return false;
	pthread_mutex_lock(&in->lock);
	mode_t old = in->attr.mode;
	gid_t gid = in->attr.gid;
	pthread_mutex_unlock(&in->lock);
	if (!(old & (S_ISUID | S_ISGID)))
		return false;
	mode_t cleared = old & ~fs_chan_killed_mode(req, old, gid);
	if (!cleared)
		return false;
	pthread_mutex_lock(&in->lock);
	in->attr.mode &= ~cleared;
	in->attr.ctime_ns = fs_now_ns();
	in->dirty = true;
	pthread_mutex_unlock(&in->lock);
	return true;
}

/* ---- attributes ---------------------------------------------------------- */

/* `fresh`: an inode this call just made, which has no chunk file yet, so
 * its blocks are not counted on the disks (six stat calls for mirror 2);
 * nor are those of a file nothing has written since (fs_empty_known). */
static void fill_stat_of(struct fs *fs, struct fs_volume *v, const struct pool_inode *a,
			 struct stat *st, bool fresh)
{
	fs_attr_to_stat(a, fs_ino_make(v, a->ino), st);
	st->st_blocks = 0;
	if (S_ISREG(a->mode) && a->npos > 0 && !fresh &&
	    !fs_empty_known(fs, fs_ino_make(v, a->ino))) {
		uint64_t bytes = 0;
		struct pool_file_map map = {.id = a->ino, .npos = a->npos};
		memcpy(map.disk, a->disk, sizeof(map.disk));
		if (pool_store_allocated(v->store, &map, &bytes) == 0)
			st->st_blocks = (blkcnt_t)(bytes / 512);
	} else if (S_ISDIR(a->mode)) {
		st->st_blocks = 8;
	}
}

static void fill_stat(struct fs *fs, struct fs_volume *v, const struct pool_inode *a,
		      struct stat *st)
{
	fill_stat_of(fs, v, a, st, false);
}

static void root_stat(struct fs *fs, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ROOT_INO;
	st->st_mode = S_IFDIR | 0755;
	pthread_mutex_lock(&fs->vol_lock);
	st->st_nlink = 2 + fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec =
	    (time_t)(fs->started_ns / 1000000000);
	st->st_blksize = 4096;
}

/* Reply with an entry for `in`, which carries one new kernel reference
 * and the caller's hold; the hold is given back here.  `fresh`: just made. */
static void reply_entry_of(fuse_req_t req, struct fs *fs, struct fs_inode *in, bool fresh)
{
	struct fuse_entry_param e;
	struct pool_inode a;
	int rc = fs_inode_attr(fs, in, &a);

	if (rc < 0) {
		fs_inode_forget(fs, in, 1);
		fs_inode_put(fs, in);
		fuse_reply_err(req, -rc);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = in->ino;
	e.attr_timeout = fs->opt.attr_timeout;
	e.entry_timeout = fs->opt.entry_timeout;
	fill_stat_of(fs, in->vol, &a, &e.attr, fresh);
	if (fuse_reply_entry(req, &e) == -ENOENT)
		fs_inode_forget(fs, in, 1); /* interrupted: the kernel took no reference */
	fs_inode_put(fs, in);
}

static void reply_entry(fuse_req_t req, struct fs *fs, struct fs_inode *in)
{
	reply_entry_of(req, fs, in, false);
}

static void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	struct pool_inode a;
	struct fs_inode *in = NULL;
	int rc;

	(void)fi;
	if (ino == ROOT_INO) {
		root_stat(fs, &st);
		fuse_reply_attr(req, &st, fs->opt.attr_timeout);
		return;
	}
	rc = fs_inode_get(fs, ino, 0, &in);
	if (rc == 0) {
		rc = fs_inode_attr(fs, in, &a);
		if (rc == -ENOENT) { /* removed directory still held open */
			pthread_mutex_lock(&in->lock);
			a = in->attr;
			pthread_mutex_unlock(&in->lock);
			a.nlink = 0;
			rc = 0;
		}
	}
	if (rc == 0)
		fill_stat(fs, in->vol, &a, &st);
	if (in)
		fs_inode_put(fs, in);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_attr(req, &st, fs->opt.attr_timeout);
}

/* Apply the requested changes to a; returns 0 or -errno. */
int fs_apply_setattr(struct pool_inode *a, const struct stat *attr, int to_set)
{
	int64_t now = fs_now_ns();

	if (to_set & FUSE_SET_ATTR_MODE)
		a->mode = (a->mode & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & FUSE_SET_ATTR_UID)
		a->uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		a->gid = attr->st_gid;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		a->atime_ns = now;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		a->atime_ns = attr->st_atim.tv_sec * 1000000000ll + attr->st_atim.tv_nsec;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		a->mtime_ns = now;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		a->mtime_ns = attr->st_mtim.tv_sec * 1000000000ll + attr->st_mtim.tv_nsec;
	if (to_set & FUSE_SET_ATTR_CTIME)
		a->ctime_ns = attr->st_ctim.tv_sec * 1000000000ll + attr->st_ctim.tv_nsec;
	else
		a->ctime_ns = now;
	return 0;
}

/* Change a regular file's size: cut the data first, then the attribute. */
int fs_set_size(struct fs_inode *in, uint64_t size)
{
	struct pool_file_map map;
	int rc = 0;

	pthread_rwlock_wrlock(&in->io_lock);
	pthread_mutex_lock(&in->lock);
	uint64_t old = in->attr.size;
	pthread_mutex_unlock(&in->lock);
	fs_empty_drop(in->vol->fs, in->ino);
	fs_file_map(in, &map);
	if (size < old)
		if (!fs_ckpt_zero(in, size, old, &rc))
			rc = pool_store_truncate(in->vol->store, &map, old, size);
	if (rc == 0) {
		int64_t now = fs_now_ns();
		pthread_mutex_lock(&in->lock);
		in->attr.size = size;
		in->attr.mtime_ns = in->attr.ctime_ns = now;
		in->dirty = true;
		pthread_mutex_unlock(&in->lock);
	}
	pthread_rwlock_unlock(&in->io_lock);
	return rc;
}

static void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			  struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = NULL;
	struct pool_inode a;
	int rc;

	(void)fi;
	if (ino == ROOT_INO) {
		fuse_reply_err(req, EPERM);
		return;
	}
	rc = check_writable(fs);
	if (rc == 0)
		rc = fs_inode_get(fs, ino, 0, &in);
	if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (S_ISDIR(in->attr.mode))
			rc = -EISDIR;
		else if (!S_ISREG(in->attr.mode))
			rc = -EINVAL;
		else
			rc = fs_set_size(in, (uint64_t)attr->st_size);
	}
	if (rc == 0 && to_set == 0)
		rc = fs_inode_touch(fs, in->vol, in->attr.ino, false);
	if (rc == 0 && (to_set & ~FUSE_SET_ATTR_SIZE)) {
		if (S_ISREG(in->attr.mode)) {
			pthread_mutex_lock(&in->lock);
			fs_apply_setattr(&in->attr, attr, to_set);
			in->dirty = true;
			pthread_mutex_unlock(&in->lock);
		} else {
			rc = pool_meta_get(in->vol->meta, in->attr.ino, &a);
			if (rc == 0)
				fs_apply_setattr(&a, attr, to_set);
			if (rc == 0)
				rc = pool_meta_setattr(in->vol->meta, &a);
		}
	}
	/* With KILLPRIV_V2 the kernel strips the mode it computed for a
	 * chown(-1, -1) or a write's privilege drop and sends an empty
	 * setattr: that is the request to clear the bits. */
	if (rc == 0)
		kill_suidgid(req, in, to_set == 0 && fs->chan.killpriv_v2);
	/* Attribute changes other than size are rare; write them through. */
	if (rc == 0 && S_ISREG(in->attr.mode))
		rc = fs_inode_flush(fs, in);
	if (in)
		fs_inode_put(fs, in);
	if (rc < 0 && fs_route_fenced(rc))
		return;
	if (rc < 0) {
		fuse_reply_err(req, rc == -EREMCHG ? EIO : -rc);
		return;
	}
	fs_op_getattr(req, ino, NULL);
}

/* ---- lookup and forget --------------------------------------------------- */

static void lookup_root(fuse_req_t req, struct fs *fs, const char *name)
{
	struct fs_volume *v = fs_volume_by_name(fs, name);
	struct fs_inode *in;
	int rc;

	if (!v) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	rc = fs_inode_get(fs, fs_ino_make(v, POOL_META_ROOT), 1, &in);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	reply_entry(req, fs, in);
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v;
	struct pool_inode a;
	int rc;

	if (parent == ROOT_INO) {
		lookup_root(req, fs, name);
		return;
	}
	if (!(v = vol_of(req, parent)))
		return;
	uint64_t epoch = fs_inode_epoch(fs);
	rc = pool_meta_lookup(v->meta, fs_ino_vino(parent), name, &a);
	if (rc == -ENOENT && !fs->opt.listen && fs->opt.entry_timeout > 0) {
		/* A negative entry the kernel may keep: with one node every
		 * create goes through this daemon, which the kernel sees. */
		struct fuse_entry_param e = {.ino = 0, .entry_timeout = fs->opt.entry_timeout};
		fuse_reply_entry(req, &e);
		return;
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct fs_inode *in = fs_inode_install_read(fs, v, &a, 1, epoch);
	if (!in) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_entry(req, fs, in);
}

static void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = ino == ROOT_INO ? NULL : fs_inode_peek(fs, ino);

	if (in) {
		fs_inode_forget(fs, in, nlookup);
		fs_inode_put(fs, in);
	}
	fuse_reply_none(req);
}

static void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fs *fs = fs_of(req);

	for (size_t i = 0; i < count; i++) {
		struct fs_inode *in =
		    forgets[i].ino == ROOT_INO ? NULL : fs_inode_peek(fs, forgets[i].ino);
		if (in) {
			fs_inode_forget(fs, in, forgets[i].nlookup);
			fs_inode_put(fs, in);
		}
	}
	fuse_reply_none(req);
}

/* ---- creating entries ---------------------------------------------------- */

/* Fill a new inode's attributes: owner from the caller, placement for
 * files.  pool_meta_create applies a setgid directory's group (and bit), in
 * the same locked call that checks the parent: one metadata call per create,
 * which also lets concurrent creates share a commit (pool/meta.c). */
int fs_new_inode(struct fs *fs, struct fs_volume *v, uint64_t parent_vino, mode_t mode, dev_t rdev,
		 uid_t uid, gid_t gid, struct pool_inode *a)
{
	int rc = 0;

	(void)parent_vino;
	memset(a, 0, sizeof(*a));
	a->mode = mode;
	a->uid = uid;
	a->gid = gid;
	a->rdev = rdev;
	a->atime_ns = a->mtime_ns = a->ctime_ns = fs_now_ns();
	if (S_ISREG(mode)) {
		a->npos = layout_positions(&v->geom);
		pthread_rwlock_rdlock(&fs->pool_lock);
		rc = pool_place(fs->pool, a->npos, a->disk);
		if (rc == -ENOSPC) /* disks failed: a degraded file, within redundancy */
			rc = pool_place_degraded(fs->pool, a->npos, layout_redundancy(&v->geom),
						 a->disk);
		pthread_rwlock_unlock(&fs->pool_lock);
	}
	return rc;
}

static int make_entry(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev,
		      const char *target, struct fs_inode **out)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v;
	struct pool_inode a;
	int rc;

	if (parent == ROOT_INO) {
		log_root_change("creating", name);
		return -EPERM;
	}
	v = fs_volume_by_id(fs, fs_ino_volid(parent));
	if (!v)
		return -ENOENT;
	if ((rc = check_writable(fs)) < 0)
		return rc;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	rc = fs_new_inode(fs, v, fs_ino_vino(parent), mode, rdev, ctx->uid, ctx->gid, &a);
	if (rc == 0)
		rc = pool_meta_create(v->meta, fs_ino_vino(parent), name, &a, target);
	if (rc < 0)
		return rc;
	*out = fs_inode_install(fs, v, &a, 1);
	return *out ? 0 : -ENOMEM;
}

/* The reply to mknod, mkdir and symlink: a new inode. */
static void reply_made(fuse_req_t req, int rc, struct fs_inode *in)
{
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry_of(req, fs_of(req), in, true);
}

static void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			dev_t rdev)
{
	struct fs_inode *in = NULL;
	int rc = make_entry(req, parent, name, mode, rdev, NULL, &in);

	reply_made(req, rc, in);
}

static void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs_inode *in = NULL;
	int rc = make_entry(req, parent, name, S_IFDIR | (mode & 07777), 0, NULL, &in);

	reply_made(req, rc, in);
}

static void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct fs_inode *in = NULL;
	int rc = make_entry(req, parent, name, S_IFLNK | 0777, 0, link, &in);

	reply_made(req, rc, in);
}

static void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v;
	struct pool_inode a;
	int rc;

	if (newparent == ROOT_INO || ino == ROOT_INO) {
		log_root_change("linking", newname);
		fuse_reply_err(req, EPERM);
		return;
	}
	if (fs_ino_volid(ino) != fs_ino_volid(newparent)) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (!(v = vol_of(req, ino)))
		return;
	rc = check_writable(fs);
	uint64_t epoch = fs_inode_epoch(fs);
	if (rc == 0)
		rc = pool_meta_link(v->meta, fs_ino_vino(ino), fs_ino_vino(newparent), newname,
				    fs_now_ns(), &a);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fs_inode_refresh_links(fs, v, &a);
	struct fs_inode *in = fs_inode_install_read(fs, v, &a, 1, epoch);
	if (!in)
		fuse_reply_err(req, ENOMEM);
	else
		reply_entry(req, fs, in); /* an old inode: its blocks are counted */
}

/* ---- removing and renaming ------------------------------------------------ */

/* The metadata change of unlink, rmdir and rename, by volume inode
 * numbers, and what the inode table must learn from it; the owner runs the
 * same for other nodes' requests (fs/serve.c). */
int fs_do_unlink(struct fs *fs, struct fs_volume *v, uint64_t parent, const char *name)
{
	struct pool_inode a;
	int rc = pool_meta_unlink(v->meta, parent, name, fs_now_ns(), &a);

	if (rc == 0) {
		fs_inode_refresh_links(fs, v, &a);
		fs_inode_reap_if_unused(fs, v, &a);
	}
	return rc;
}

int fs_do_rmdir(struct fs *fs, struct fs_volume *v, uint64_t parent, const char *name)
{
	uint64_t vino = 0;
	int rc = pool_meta_rmdir(v->meta, parent, name, fs_now_ns(), &vino);

	if (rc == 0) {
		struct fs_inode *in = fs_inode_peek(fs, fs_ino_make(v, vino));
		if (in) { /* purged when the kernel lets go of it */
			pthread_mutex_lock(&in->lock);
			in->attr.nlink = 0;
			pthread_mutex_unlock(&in->lock);
			fs_inode_put(fs, in);
		} else {
			pool_meta_purge(v->meta, vino);
		}
	}
	return rc;
}

int fs_do_rename(struct fs *fs, struct fs_volume *v, uint64_t parent, const char *name,
		 uint64_t newparent, const char *newname, unsigned int flags)
{
	struct pool_inode moved = {0}, other = {0}, replaced = {0};
	int rc = 0;

	if (flags & ~(unsigned int)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	rc = pool_meta_lookup(v->meta, parent, name, &moved);
	if (rc == 0 && (flags & RENAME_EXCHANGE))
		rc = pool_meta_lookup(v->meta, newparent, newname, &other);
	if (rc == 0)
		rc = pool_meta_rename(v->meta, parent, name, newparent, newname, flags, fs_now_ns(),
				      &replaced);
	/* ext4 stamps the ctime of whatever moved. */
	if (rc == 0 && moved.ino != replaced.ino)
		fs_inode_touch(fs, v, moved.ino, false);
	if (rc == 0 && other.ino != 0)
		fs_inode_touch(fs, v, other.ino, false);
	if (rc == 0 && replaced.ino != 0 && replaced.ino != moved.ino) {
		fs_inode_refresh_links(fs, v, &replaced);
		fs_inode_reap_if_unused(fs, v, &replaced);
	}
	return rc;
}

static void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v;
	int rc;

	if (parent == ROOT_INO) {
		log_root_change("removing", name);
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!(v = vol_of(req, parent)))
		return;
	rc = check_writable(fs);
	if (rc == 0)
		rc = fs_do_unlink(fs, v, fs_ino_vino(parent), name);
	fuse_reply_err(req, -rc);
}

static void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v;
	int rc;

	if (parent == ROOT_INO) {
		log_root_change("removing", name);
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!(v = vol_of(req, parent)))
		return;
	rc = check_writable(fs);
	if (rc == 0)
		rc = fs_do_rmdir(fs, v, fs_ino_vino(parent), name);
	fuse_reply_err(req, -rc);
}

static void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			 const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v;
	int rc;

	if (parent == ROOT_INO || newparent == ROOT_INO) {
		log_root_change("renaming", name);
		fuse_reply_err(req, EPERM);
		return;
	}
	if (fs_ino_volid(parent) != fs_ino_volid(newparent)) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (!(v = vol_of(req, parent)))
		return;
	rc = check_writable(fs);
	if (rc == 0)
		rc = fs_do_rename(fs, v, fs_ino_vino(parent), name, fs_ino_vino(newparent), newname,
				  flags);
	fuse_reply_err(req, -rc);
}

static void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs_volume *v;
	char buf[PATH_MAX + 1];
	int rc;

	if (ino == ROOT_INO) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!(v = vol_of(req, ino)))
		return;
	rc = pool_meta_readlink(v->meta, fs_ino_vino(ino), buf, sizeof(buf));
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_readlink(req, buf);
}

/* ---- files ---------------------------------------------------------------- */

static void set_open_flags(struct fs *fs, struct fuse_file_info *fi)
{
	fi->noflush = 1; /* flush does nothing here: spare close() a round trip */
	if (fs->opt.direct_io)
		fi->direct_io = 1;
	else if (!fs->opt.listen)   /* other nodes may write: close-to-open (fs/route.c) */
		fi->keep_cache = 1; /* one writer per volume: the page cache stays valid */
}

static void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in;
	int rc;

	if (ino == ROOT_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (fs->opt.read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	rc = fs_inode_get(fs, ino, 0, &in);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* libfuse asks for atomic O_TRUNC: the kernel sends no separate
	 * truncate, open does it. */
	if ((fi->flags & O_TRUNC) && S_ISREG(in->attr.mode))
		rc = fs_set_size(in, 0); /* even with O_RDONLY, as Linux does */
	if (rc == 0 && kill_suidgid(req, in, false))
		rc = fs_inode_flush(fs, in);
	if (rc < 0) {
		fs_inode_put(fs, in);
		fuse_reply_err(req, -rc);
		return;
	}
	fs_inode_open(fs, in);
	fs_inode_put(fs, in); /* the open handle keeps it now */
	fi->fh = (uintptr_t)in;
	set_open_flags(fs, fi);
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_inode_release(fs, in);
}

static void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = NULL;
	struct fuse_entry_param e;
	struct pool_inode a;
	int rc = make_entry(req, parent, name, S_IFREG | (mode & 07777), 0, NULL, &in);

	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fs_empty_note(fs, in->ino); /* before the kernel can name it */
	fs_inode_open(fs, in);
	fi->fh = (uintptr_t)in;
	set_open_flags(fs, fi);
	fs_inode_attr(fs, in, &a);
	memset(&e, 0, sizeof(e));
	e.ino = in->ino;
	e.attr_timeout = fs->opt.attr_timeout;
	e.entry_timeout = fs->opt.entry_timeout;
	fill_stat_of(fs, in->vol, &a, &e.attr, true);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		fs_inode_forget(fs, in, 1);
		fs_inode_release(fs, in);
	}
	fs_inode_put(fs, in);
}

/*
 * The read buffer.  Each read used to posix_memalign its reply buffer and
 * free it after the reply: an aligned allocation, which glibc's per-thread
 * cache does not serve, on every 4 KiB read.  fuse_reply_buf has copied the
 * bytes to the kernel when it returns, so a worker thread can keep one
 * buffer for all its reads: held in a thread-specific value (one key for
 * the process, its destructor frees the buffer when the thread exits),
 * kept up to READ_BUF_KEEP bytes; larger reads allocate as before.
 */
#define READ_BUF_KEEP (256u << 10)

struct read_buf {
	void *p;
	size_t cap;
};

static pthread_key_t read_buf_key;
static pthread_once_t read_buf_once = PTHREAD_ONCE_INIT;
static int read_buf_ok;

static void read_buf_free(void *v)
{
	struct read_buf *b = v;

	free(b->p);
	free(b);
}

static void read_buf_init(void)
{
	read_buf_ok = pthread_key_create(&read_buf_key, read_buf_free) == 0;
}

/* A LAYOUT_BLOCK-aligned buffer of size bytes; *own: the caller frees it. */
static void *read_buf_get(size_t size, int *own)
{
	struct read_buf *b = NULL;
	void *p;

	*own = 1;
	pthread_once(&read_buf_once, read_buf_init);
	if (size <= READ_BUF_KEEP && read_buf_ok) {
		b = pthread_getspecific(read_buf_key);
		if (!b && (b = calloc(1, sizeof(*b))) && pthread_setspecific(read_buf_key, b)) {
			free(b);
			b = NULL;
		}
	}
	if (b && b->cap >= size) {
		*own = 0;
		return b->p;
	}
	if (posix_memalign(&p, LAYOUT_BLOCK, b ? READ_BUF_KEEP : size) != 0)
		return NULL;
	if (b) {
		free(b->p);
		b->p = p;
		b->cap = READ_BUF_KEEP;
		*own = 0;
	}
	return p;
}

static void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs_inode *in = (struct fs_inode *)(uintptr_t)fi->fh;
	struct pool_file_map map;
	ssize_t n = 0;
	char *buf;
	int own = 0;

	(void)ino;
	pthread_rwlock_rdlock(&in->io_lock);
	pthread_mutex_lock(&in->lock);
	uint64_t fsize = in->attr.size;
	pthread_mutex_unlock(&in->lock);
	if ((uint64_t)off >= fsize)
		size = 0;
	else if ((uint64_t)off + size > fsize)
		size = fsize - (uint64_t)off;
	/* 4 KiB-aligned buffers let the store read chunks straight into them. */
	buf = NULL;
	if (size && !(buf = read_buf_get(size, &own)))
		n = -ENOMEM;
	else if (size) {
		fs_file_map(in, &map);
		if (!fs_ckpt_read(in, (uint64_t)off, size, buf, &n))
			n = pool_store_read(in->vol->store, &map, (uint64_t)off, size, buf);
	}
	pthread_rwlock_unlock(&in->io_lock);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
	} else {
		atomic_fetch_add(&in->vol->read_bytes, (uint64_t)n);
		fuse_reply_buf(req, buf, (size_t)n);
	}
	if (own)
		free(buf);
}

/* The write's bytes as one flat buffer: the request's own memory when the
 * kernel handed it over in one piece (the usual case), else a copy. */
static const void *flat_data(struct fuse_bufvec *in_buf, size_t size, void **to_free)
{
	*to_free = NULL;
	if (in_buf->count == 1 && !(in_buf->buf[0].flags & FUSE_BUF_IS_FD))
		return (const char *)in_buf->buf[0].mem + in_buf->off;
	void *copy = malloc(size);
	if (!copy)
		return NULL;
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
	dst.buf[0].mem = copy;
	if (fuse_buf_copy(&dst, in_buf, 0) != (ssize_t)size) {
		free(copy);
		return NULL;
	}
	*to_free = copy;
	return copy;
}

static void fs_op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
			    struct fuse_file_info *fi)
{
	struct fs_inode *in = (struct fs_inode *)(uintptr_t)fi->fh;
	size_t size = fuse_buf_size(in_buf);
	struct pool_file_map map;
	void *to_free;
	ssize_t n;

	(void)ino;
	const void *data = flat_data(in_buf, size, &to_free);
	if (!data) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Set-id bits go before the data changes, as on ext4. */
	if (kill_suidgid(req, in, false)) {
		int rc = fs_inode_flush(fs_of(req), in);
		if (rc < 0) {
			free(to_free);
			fuse_reply_err(req, -rc);
			return;
		}
	}
	pthread_rwlock_rdlock(&in->io_lock);
	fs_empty_drop(in->vol->fs, in->ino);
	fs_file_map(in, &map);
	if (!fs_ckpt_write(in, (uint64_t)off, size, data, &n))
		n = pool_store_write(in->vol->store, &map, (uint64_t)off, size, data);
	if (n > 0) {
		int64_t now = fs_now_ns();
		pthread_mutex_lock(&in->lock);
		if ((uint64_t)off + (uint64_t)n > in->attr.size)
			in->attr.size = (uint64_t)off + (uint64_t)n;
		in->attr.mtime_ns = in->attr.ctime_ns = now;
		in->dirty = true;
		pthread_mutex_unlock(&in->lock);
	}
	pthread_rwlock_unlock(&in->io_lock);
	free(to_free);
	if (n < 0 && fs_route_fenced((int)n))
		return;
	if (n < 0) { /* fenced (lease lost mid-request, fs/node.c) and no one to resend it */
		fuse_reply_err(req, n == -EREMCHG ? EIO : (int)-n);
		return;
	}
	atomic_fetch_add(&in->vol->write_bytes, (uint64_t)n);
	fuse_reply_write(req, (size_t)n);
}

static void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = (struct fs_inode *)(uintptr_t)fi->fh;

	(void)ino;
	fs_inode_release(fs, in);
	fuse_reply_err(req, 0);
}

int fs_sync_inode(struct fs *fs, struct fs_inode *in)
{
	struct pool_file_map map;
	int rc = 0;

	if (S_ISREG(in->attr.mode)) {
		fs_file_map(in, &map);
		rc = pool_store_sync(in->vol->store, &map);
		if (rc == 0)
			rc = fs_ckpt_sync(in->vol, in->attr.ino);
	}
	if (rc == 0)
		rc = fs_inode_flush(fs, in);
	if (rc == 0)
		rc = pool_meta_sync(in->vol->meta);
	return rc;
}

static void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs_inode *in = (struct fs_inode *)(uintptr_t)fi->fh;

	(void)ino;
	(void)datasync; /* the size may have changed: always write it back */
	fuse_reply_err(req, -fs_sync_inode(fs_of(req), in));
}

static void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs_volume *v;

	(void)datasync;
	(void)fi;
	if (ino == ROOT_INO) {
		fuse_reply_err(req, 0);
		return;
	}
	if (!(v = vol_of(req, ino)))
		return;
	fuse_reply_err(req, -pool_meta_sync(v->meta));
}

/* Zero [off, end) of the file (clipped to its size): whole stripes are
 * released, the rest written with zeros (pool_store_punch). */
int fs_zero_range(struct fs_inode *in, uint64_t off, uint64_t end)
{
	struct pool_file_map map;
	int rc = 0;

	pthread_rwlock_wrlock(&in->io_lock);
	pthread_mutex_lock(&in->lock);
	uint64_t size = in->attr.size;
	pthread_mutex_unlock(&in->lock);
	if (end > size)
		end = size;
	fs_empty_drop(in->vol->fs, in->ino);
	fs_file_map(in, &map);
	if (off < end && !fs_ckpt_zero(in, off, end, &rc))
		rc = pool_store_punch(in->vol->store, &map, off, end - off);
	pthread_rwlock_unlock(&in->io_lock);
	return rc;
}

/* Grow the size to `end` unless KEEP_SIZE; stamp mtime and ctime as ext4
 * does for every fallocate mode that succeeds. */
void fs_falloc_attrs(struct fs_inode *in, uint64_t end, int mode)
{
	pthread_mutex_lock(&in->lock);
	if (!(mode & FALLOC_FL_KEEP_SIZE) && end > in->attr.size)
		in->attr.size = end;
	in->attr.mtime_ns = in->attr.ctime_ns = fs_now_ns();
	in->dirty = true;
	pthread_mutex_unlock(&in->lock);
}

/* Reserve chunk space for [off, end) (pool_store_reserve): like a write,
 * under the shared io_lock, so no cut runs meanwhile. */
static int fs_reserve(struct fs_inode *in, uint64_t off, uint64_t end)
{
	struct pool_file_map map;
	int rc;

	pthread_rwlock_rdlock(&in->io_lock);
	fs_empty_drop(in->vol->fs, in->ino);
	fs_file_map(in, &map);
	rc = pool_store_reserve(in->vol->store, &map, off, end - off);
	pthread_rwlock_unlock(&in->io_lock);
	return rc;
}

/* Modes: 0 and KEEP_SIZE reserve the chunk space a write of the range
 * needs (every copy, parity, checksums), so that write cannot fail with
 * ENOSPC; PUNCH_HOLE|KEEP_SIZE zeroes the range and gives its blocks
 * back; ZERO_RANGE zeroes it and reserves it again.  Other modes
 * (COLLAPSE, INSERT, UNSHARE) are EOPNOTSUPP.  The owner runs this for
 * other nodes too (fs/serve.c). */
int fs_do_fallocate(struct fs_inode *in, int mode, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	int base = mode & ~FALLOC_FL_KEEP_SIZE, rc;

	if (end < off)
		return -EFBIG;
	if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
		rc = fs_zero_range(in, off, end);
	else if (base == FALLOC_FL_ZERO_RANGE)
		rc = fs_zero_range(in, off, end);
	else if (base == 0)
		rc = 0;
	else
		return -EOPNOTSUPP;
	if (rc == 0 && !(mode & FALLOC_FL_PUNCH_HOLE))
		rc = fs_reserve(in, off, end);
	if (rc == 0)
		fs_falloc_attrs(in, end, mode);
	return rc;
}

static void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = (struct fs_inode *)(uintptr_t)fi->fh;
	int rc = check_writable(fs);

	(void)ino;
	if (rc == 0)
		rc = fs_do_fallocate(in, mode, (uint64_t)off, (uint64_t)len);
	if (rc < 0 && fs_route_fenced(rc))
		return;
	fuse_reply_err(req, rc == -EREMCHG ? EIO : -rc);
}

/* SEEK_DATA and SEEK_HOLE (the kernel answers the other whences itself),
 * from the chunk files' holes (pool_store_seek) and the size as this
 * daemon knows it, which runs ahead of the metadata store.  With
 * writeback_cache the kernel holds written data the daemon has not seen,
 * so holes cannot be told here: ENOSYS makes the kernel answer every later
 * SEEK_DATA/SEEK_HOLE of the mount itself (all data up to its size). */
int fs_do_lseek(struct fs_inode *in, uint64_t off, int whence, uint64_t *at)
{
	struct pool_file_map map;
	int rc;

	pthread_rwlock_rdlock(&in->io_lock);
	pthread_mutex_lock(&in->lock);
	uint64_t size = in->attr.size;
	pthread_mutex_unlock(&in->lock);
	fs_file_map(in, &map);
	if (!fs_ckpt_seek(in, size, off, whence, at, &rc))
		rc = pool_store_seek(in->vol->store, &map, size, (int64_t)off, whence, at);
	pthread_rwlock_unlock(&in->io_lock);
	return rc;
}

static void fs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
			struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = (struct fs_inode *)(uintptr_t)fi->fh;
	uint64_t at = 0;
	int rc;

	(void)ino;
	if (fs->opt.writeback_cache) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	rc = off < 0 ? -ENXIO : fs_do_lseek(in, (uint64_t)off, whence, &at);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_lseek(req, (off_t)at);
}

/* ---- directories ---------------------------------------------------------- */

/* readdir offsets: 1 after ".", 2 after "..", cookie + 2 after an entry. */
#define DIR_OFF_BASE 2

struct dirent_rec {
	char *name;
	struct pool_inode a;
	uint64_t cookie;
};

struct dir_batch {
	struct dirent_rec *rec;
	size_t n, cap, budget; /* budget: bytes of reply space left (estimate) */
};

static int collect_dirent(void *arg, const char *name, const struct pool_inode *in, uint64_t cookie)
{
	struct dir_batch *b = arg;
	size_t need = 24 + strlen(name) + 8 + sizeof(struct fuse_entry_param);

	if (need > b->budget && b->n > 0)
		return 1;
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 64;
		struct dirent_rec *r = realloc(b->rec, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		b->rec = r;
		b->cap = cap;
	}
	b->rec[b->n].name = strdup(name);
	if (!b->rec[b->n].name)
		return -ENOMEM;
	b->rec[b->n].a = *in;
	b->rec[b->n].cookie = cookie;
	b->n++;
	b->budget = need > b->budget ? 0 : b->budget - need;
	return 0;
}

static void free_batch(struct dir_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->rec[i].name);
	free(b->rec);
}

/* Append one directory entry (readdirplus: with e's attributes, readdir:
 * e->attr's number and type); returns bytes used or 0 when it does not fit.
 * Shared with fs/route.c, which fills listings of redirected volumes. */
size_t fs_add_entry(fuse_req_t req, char *buf, size_t left, const char *name,
		    struct fuse_entry_param *e, off_t next, bool plus)
{
	size_t need = plus ? fuse_add_direntry_plus(req, NULL, 0, name, e, next)
			   : fuse_add_direntry(req, NULL, 0, name, &e->attr, next);
	if (need > left)
		return 0;
	return plus ? fuse_add_direntry_plus(req, buf, left, name, e, next)
		    : fuse_add_direntry(req, buf, left, name, &e->attr, next);
}

/* "." and ".." when the listing starts before them; *next (if given) gets
 * the offset after the last one added. */
size_t fs_add_dots(fuse_req_t req, char *buf, size_t size, off_t off, fuse_ino_t ino,
		   fuse_ino_t parent, bool plus, off_t *next)
{
	struct fuse_entry_param e;
	size_t used = 0, n;

	memset(&e, 0, sizeof(e));
	e.attr.st_mode = S_IFDIR;
	if (off < 1) {
		e.attr.st_ino = ino;
		if (!(n = fs_add_entry(req, buf, size, ".", &e, 1, plus)))
			return used;
		used += n;
		if (next)
			*next = 1;
	}
	if (off < 2) {
		e.attr.st_ino = parent;
		if (!(n = fs_add_entry(req, buf + used, size - used, "..", &e, 2, plus)))
			return used;
		used += n;
		if (next)
			*next = 2;
	}
	return used;
}

static void readdir_root(fuse_req_t req, struct fs *fs, size_t size, off_t off, bool plus)
{
	char *buf = calloc(1, size);
	off_t next = off;
	size_t used;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	used = fs_add_dots(req, buf, size, off, ROOT_INO, ROOT_INO, plus, &next);
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t nvol = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	for (uint32_t i = next >= DIR_OFF_BASE ? (uint32_t)(next - DIR_OFF_BASE) : nvol; i < nvol;
	     i++) {
		struct fs_volume *v = fs->vol[i];
		struct fs_inode *in = NULL;
		struct fuse_entry_param e;
		struct pool_inode a;
		size_t n;

		memset(&e, 0, sizeof(e));
		/* readdirplus hands the kernel a reference per entry: take it
		 * now, give it back if the entry does not fit. */
		if (fs_inode_get(fs, fs_ino_make(v, POOL_META_ROOT), plus ? 1 : 0, &in) < 0)
			continue;
		if (fs_inode_attr(fs, in, &a) < 0) {
			fs_inode_forget(fs, in, plus ? 1 : 0);
			fs_inode_put(fs, in);
			continue;
		}
		fill_stat(fs, v, &a, &e.attr);
		e.ino = in->ino;
		e.attr_timeout = fs->opt.attr_timeout;
		e.entry_timeout = fs->opt.entry_timeout;
		n = fs_add_entry(req, buf + used, size - used, v->name, &e,
				 (off_t)(DIR_OFF_BASE + i + 1), plus);
		if (!n)
			fs_inode_forget(fs, in, plus ? 1 : 0);
		fs_inode_put(fs, in);
		if (!n)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void readdir_vol(fuse_req_t req, struct fs *fs, fuse_ino_t ino, size_t size, off_t off,
			bool plus)
{
	struct fs_volume *v = vol_of(req, ino);
	struct dir_batch b = {.budget = size};
	off_t next = off;
	char *buf;
	size_t used;
	int rc;

	if (!v)
		return;
	buf = calloc(1, size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	uint64_t up = POOL_META_ROOT;
	fuse_ino_t parent = ROOT_INO; /* a volume root's ".." is the pool root */
	if (fs_ino_vino(ino) != POOL_META_ROOT &&
	    pool_meta_parent(v->meta, fs_ino_vino(ino), &up) == 0)
		parent = fs_ino_make(v, up);
	used = fs_add_dots(req, buf, size, off, ino, parent, plus, &next);
	uint64_t cookie = next >= DIR_OFF_BASE ? (uint64_t)(next - DIR_OFF_BASE) : 0;
	b.budget = size - used;
	uint64_t epoch = fs_inode_epoch(fs);
	rc = next >= 2 || off >= 2
		 ? pool_meta_readdir(v->meta, fs_ino_vino(ino), cookie, collect_dirent, &b)
		 : 0;
	if (rc < 0) {
		free_batch(&b);
		free(buf);
		fuse_reply_err(req, -rc);
		return;
	}
	for (size_t i = 0; i < b.n; i++) {
		struct fuse_entry_param e;
		struct fs_inode *in = NULL;
		struct pool_inode a = b.rec[i].a;

		memset(&e, 0, sizeof(e));
		if (plus) { /* one kernel reference per entry sent, taken now */
			in = fs_inode_install_read(fs, v, &a, 1, epoch);
			if (!in)
				break;
			if (fs_inode_attr(fs, in, &a) < 0) {
				fs_inode_forget(fs, in, 1);
				fs_inode_put(fs, in);
				break;
			}
			e.ino = in->ino;
			e.attr_timeout = fs->opt.attr_timeout;
			e.entry_timeout = fs->opt.entry_timeout;
		}
		if (plus) {
			fill_stat(fs, v, &a, &e.attr);
		} else { /* readdir uses only the number and the type */
			e.attr.st_ino = fs_ino_make(v, a.ino);
			e.attr.st_mode = a.mode;
		}
		size_t n = fs_add_entry(req, buf + used, size - used, b.rec[i].name, &e,
					(off_t)(b.rec[i].cookie + DIR_OFF_BASE), plus);
		if (in && !n)
			fs_inode_forget(fs, in, 1); /* not sent: no reference for the kernel */
		if (in)
			fs_inode_put(fs, in);
		if (!n)
			break;
		used += n;
	}
	free_batch(&b);
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct fs *fs = fs_of(req);

	if (ino == ROOT_INO)
		readdir_root(req, fs, size, off, plus);
	else
		readdir_vol(req, fs, ino, size, off, plus);
}

static void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			      struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in;

	if (ino != ROOT_INO) {
		int rc = fs_inode_get(fs, ino, 0, &in);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		bool dir = S_ISDIR(in->attr.mode);
		fs_inode_put(fs, in);
		if (!dir) {
			fuse_reply_err(req, ENOTDIR);
			return;
		}
	}
	fi->cache_readdir = 0;
	fuse_reply_open(req, fi);
}

static void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* ---- statfs, xattrs, access ------------------------------------------------ */

/* Raw size and free space of the healthy disks, scaled by the volume's
 * efficiency (and bounded by the pool's placement estimate for what is
 * still free); the pool root reports raw figures. */
void fs_pool_space(struct fs *fs, struct fs_volume *v, uint64_t *size, uint64_t *avail)
{
	uint64_t raw = 0, rawfree = 0;
	uint32_t num = 1, den = 1;

	pthread_rwlock_rdlock(&fs->pool_lock);
	for (uint32_t i = 0; i < fs->pool->ndisks; i++) {
		uint64_t s, f;
		if (fs->pool->disk[i].state == POOL_DISK_HEALTHY &&
		    !pool_disk_is_journal(fs->pool, i) && /* holds no file data */
		    pool_disk_space(fs->pool, i, &s, &f) == 0) {
			raw += s;
			rawfree += f;
		}
	}
	if (v) {
		const struct pool_sb_volume *pv = pool_volume_find(fs->pool, v->name);
		layout_efficiency(&v->geom, &num, &den);
		if (!pv || pool_volume_capacity(fs->pool, pv, avail) < 0)
			*avail = rawfree / den * num;
	} else {
		*avail = rawfree;
	}
	pthread_rwlock_unlock(&fs->pool_lock);
	*size = raw / den * num;
	if (*avail > *size)
		*avail = *size;
}

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = ino == ROOT_INO ? NULL : fs_volume_by_id(fs, fs_ino_volid(ino));
	struct statvfs st;
	uint64_t size = 0, avail = 0, inodes = 0;

	memset(&st, 0, sizeof(st));
	fs_pool_space(fs, v, &size, &avail);
	if (v)
		pool_meta_count(v->meta, &inodes);
	st.f_bsize = st.f_frsize = 4096;
	st.f_blocks = size / 4096;
	st.f_bfree = st.f_bavail = avail / 4096;
	st.f_files = inodes + (1ull << 32);
	st.f_ffree = st.f_favail = 1ull << 32;
	st.f_namemax = POOL_META_NAME_MAX;
	fuse_reply_statfs(req, &st);
}

/* ext4's rules: user., trusted. and security. names with something after
 * the prefix; other namespaces are not supported here (no POSIX ACLs). */
int fs_check_xattr_name(const char *name)
{
	static const char *const ns[] = {"user.", "trusted.", "security."};

	for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
		size_t n = strlen(ns[i]);
		if (strncmp(name, ns[i], n) == 0)
			return name[n] ? 0 : -EINVAL;
	}
	return -EOPNOTSUPP;
}

/* setxattr (value != NULL) and removexattr: one metadata change, then the
 * inode's ctime, as ext4 stamps it. */
static void change_xattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v;
	int rc;

	if (ino == ROOT_INO) {
		fuse_reply_err(req, value ? EPERM : ENODATA);
		return;
	}
	if (!(v = vol_of(req, ino)))
		return;
	rc = check_writable(fs);
	if (rc == 0)
		rc = fs_check_xattr_name(name);
	if (rc == 0 && value)
		rc = pool_meta_setxattr(v->meta, fs_ino_vino(ino), name, value, size, flags);
	else if (rc == 0)
		rc = pool_meta_removexattr(v->meta, fs_ino_vino(ino), name);
	if (rc == 0)
		rc = fs_inode_touch(fs, v, fs_ino_vino(ino), false);
	fuse_reply_err(req, -rc);
}

static void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			   size_t size, int flags)
{
	change_xattr(req, ino, name, value ? value : "", size, flags);
}

static void reply_xattr(fuse_req_t req, size_t size, ssize_t n, const char *buf)
{
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs_volume *v;
	char *buf;

	if (ino == ROOT_INO) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (!(v = vol_of(req, ino)))
		return;
	/* A namespace not supported here (system.posix_acl_access: no POSIX
	 * ACLs) is EOPNOTSUPP, as setxattr says and ext4 -o noacl answers: ls -l
	 * then stops asking this filesystem for ACLs after its first file
	 * (coreutils remembers the device), instead of one request per file. */
	int rc = fs_check_xattr_name(name);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* ls -l asks every file for its SELinux label (the kernel passes the
	 * name through: on this host no security module answers it).  A
	 * volume where no file has one says "not supported", which ls takes
	 * to mean "none on this filesystem" and stops asking: one request per
	 * listing instead of one per file.  Labels can still be set (rsync -X,
	 * a restore); once one is stored, the others are ENODATA as usual. */
	if (!strcmp(name, POOL_META_LABEL) && !pool_meta_may_have_labels(v->meta)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (!pool_meta_may_have_xattrs(v->meta)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_xattr(req, size, pool_meta_getxattr(v->meta, fs_ino_vino(ino), name, buf, size), buf);
	free(buf);
}

static void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs_volume *v;
	char *buf;

	if (ino == ROOT_INO) {
		reply_xattr(req, size, 0, NULL);
		return;
	}
	if (!(v = vol_of(req, ino)))
		return;
	if (!pool_meta_may_have_xattrs(v->meta)) {
		reply_xattr(req, size, 0, NULL);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_xattr(req, size, pool_meta_listxattr(v->meta, fs_ino_vino(ino), buf, size), buf);
	free(buf);
}

static void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	change_xattr(req, ino, name, NULL, 0, 0);
}

/* access(2) when the kernel does not check permissions itself
 * (no default_permissions): the classic owner/group/other test. */
static int may_access(const struct fuse_ctx *ctx, const struct pool_inode *a, int mask)
{
	if (mask == F_OK)
		return 0;
	if (ctx->uid == 0) {
		if ((mask & X_OK) && !S_ISDIR(a->mode) && !(a->mode & 0111))
			return -EACCES;
		return 0;
	}
	unsigned shift = ctx->uid == a->uid ? 6 : ctx->gid == a->gid ? 3 : 0;
	unsigned granted = (a->mode >> shift) & 7;
	return ((unsigned)mask & ~granted) ? -EACCES : 0;
}

static void fs_op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in;
	struct pool_inode a;
	int rc;

	if (ino == ROOT_INO) {
		fuse_reply_err(req, (mask & W_OK) ? EACCES : 0);
		return;
	}
	rc = fs_inode_get(fs, ino, 0, &in);
	if (rc == 0) {
		rc = fs_inode_attr(fs, in, &a);
		fs_inode_put(fs, in);
	}
	if (rc == 0 && (mask & W_OK) && fs->opt.read_only)
		rc = -EROFS;
	if (rc == 0)
		rc = may_access(fuse_req_ctx(req), &a, mask);
	fuse_reply_err(req, -rc);
}

/* ---- session ---------------------------------------------------------------- */

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	conn->max_write = 1024 * 1024;
	conn->max_readahead = 1024 * 1024;
	/* Asynchronous direct I/O counts against this limit: below the
	 * application's queue depth the kernel makes submitters wait. */
	conn->max_background = fs->opt.max_background;
	conn->congestion_threshold = fs->opt.max_background * 3 / 4;
	fs->chan.max_background = fs->opt.max_background;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (fs->opt.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	/* With auto_inval_data the kernel refreshes a file's attributes
	 * (GETATTR, and then GETXATTR security.capability) before every read
	 * once a write made them stale: 0.5 more requests per I/O on the VHDX
	 * mix.  It exists to notice changes made behind the kernel's back;
	 * with one node every change passes through this mount.  Several
	 * nodes keep it (other nodes write there too). */
	if (!fs->node)
		conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

static void fs_op_destroy(void *userdata)
{
	fs_inode_table_clear(userdata);
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = fs_op_init,
    .destroy = fs_op_destroy,
    .lookup = fs_op_lookup,
    .forget = fs_op_forget,
    .forget_multi = fs_op_forget_multi,
    .getattr = fs_op_getattr,
    .setattr = fs_op_setattr,
    .readlink = fs_op_readlink,
    .mknod = fs_op_mknod,
    .mkdir = fs_op_mkdir,
    .unlink = fs_op_unlink,
    .rmdir = fs_op_rmdir,
    .symlink = fs_op_symlink,
    .rename = fs_op_rename,
    .link = fs_op_link,
    .open = fs_op_open,
    .create = fs_op_create,
    .read = fs_op_read,
    .write_buf = fs_op_write_buf,
    .flush = fs_op_flush,
    .release = fs_op_release,
    .fsync = fs_op_fsync,
    .opendir = fs_op_opendir,
    .readdir = fs_op_readdir,
    .readdirplus = fs_op_readdirplus,
    .releasedir = fs_op_releasedir,
    .fsyncdir = fs_op_fsyncdir,
    .statfs = fs_op_statfs,
    .setxattr = fs_op_setxattr,
    .getxattr = fs_op_getxattr,
    .listxattr = fs_op_listxattr,
    .removexattr = fs_op_removexattr,
    .access = fs_op_access,
    .fallocate = fs_op_fallocate,
    .lseek = fs_op_lseek,
};
