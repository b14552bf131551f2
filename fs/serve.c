/*
 * serve.c -- the owner executing requests other nodes redirect to it.
 *
 * A peer's request (fs/wire.h, already validated) names a volume and an
 * inode; if this node owns the volume, the request runs here exactly as
 * the FUSE operation would (same helpers from ops.c, same cached
 * attributes in the inode table, so the owner's own clients and the
 * redirected ones see one consistent file), and the result goes back as
 * a wire_rep.  If it does not own the volume (any more) the answer is
 * FS_NOT_OWNER and the peer looks for the owner again.
 *
 * Inode references: a redirected lookup takes no reference here (the
 * peer's kernel holds its own, in the peer's table); opens do, so a file
 * unlinked while a peer has it open keeps its data until the peer's
 * release (docs/OPERATIONS.md lists what a takeover does to those).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/ckpt.h"
#include "fs/node.h"

/* Attributes as the owner knows them: cached for regular files in use. */
static int cur_attr(struct fs *fs, struct fs_volume *v, uint64_t vino, struct wire_attr *w)
{
	struct fs_inode *in = fs_inode_peek(fs, fs_ino_make(v, vino));
	int rc;

	memset(w, 0, sizeof(*w));
	if (in) {
		rc = fs_inode_attr(fs, in, &w->a);
		if (rc == -ENOENT) { /* removed directory still referenced */
			pthread_mutex_lock(&in->lock);
			w->a = in->attr;
			pthread_mutex_unlock(&in->lock);
			w->a.nlink = 0;
			rc = 0;
		}
		fs_inode_put(fs, in);
	} else {
		rc = pool_meta_get(v->meta, vino, &w->a);
	}
	if (rc == 0 && S_ISREG(w->a.mode) && w->a.npos > 0) {
		uint64_t bytes = 0;
		struct pool_file_map map = {.id = w->a.ino, .npos = w->a.npos};
		memcpy(map.disk, w->a.disk, sizeof(map.disk));
		if (pool_store_allocated(v->store, &map, &bytes) == 0)
			w->blocks = bytes / 512;
	} else if (rc == 0 && S_ISDIR(w->a.mode)) {
		w->blocks = 8;
	}
	return rc;
}

static int with_attr(struct fs *fs, struct fs_volume *v, uint64_t vino, struct wire_rep *p)
{
	int rc = cur_attr(fs, v, vino, &p->attr);

	p->has_attr = rc == 0;
	return rc;
}

static int get_in(struct fs *fs, struct fs_volume *v, uint64_t vino, struct fs_inode **in)
{
	return fs_inode_get(fs, fs_ino_make(v, vino), 0, in);
}

static int s_mknod(struct fs *fs, struct fs_volume *v, const struct wire_req *q, struct wire_rep *p)
{
	struct pool_inode a;
	int rc = fs_new_inode(fs, v, q->vino, q->mode, (dev_t)q->rdev, q->uid, q->gid, &a);

	if (rc == 0)
		rc = pool_meta_create(v->meta, q->vino, q->name, &a,
				      S_ISLNK(q->mode) ? q->name2 : NULL);
	if (rc < 0)
		return rc;
	if (q->flags & 1) { /* create: opened by the peer */
		struct fs_inode *in = fs_inode_install(fs, v, &a, 0);
		if (!in)
			return -ENOMEM;
		fs_inode_open_remote(fs, in);
		fs_inode_put(fs, in);
	}
	return with_attr(fs, v, a.ino, p);
}

static int s_link(struct fs *fs, struct fs_volume *v, const struct wire_req *q, struct wire_rep *p)
{
	struct pool_inode a;
	int rc = pool_meta_link(v->meta, q->vino, q->vino2, q->name, fs_now_ns(), &a);

	if (rc < 0)
		return rc;
	fs_inode_refresh_links(fs, v, &a);
	return with_attr(fs, v, a.ino, p);
}

static int s_unlink(struct fs *fs, struct fs_volume *v, const struct wire_req *q)
{
	return fs_do_unlink(fs, v, q->vino, q->name);
}

static int s_rmdir(struct fs *fs, struct fs_volume *v, const struct wire_req *q)
{
	return fs_do_rmdir(fs, v, q->vino, q->name);
}

static int s_rename(struct fs *fs, struct fs_volume *v, const struct wire_req *q)
{
	return fs_do_rename(fs, v, q->vino, q->name, q->vino2, q->name2, q->flags);
}

static int s_readlink(struct fs_volume *v, const struct wire_req *q, struct wire_rep *p,
		      uint8_t **out)
{
	char *buf = malloc(PATH_MAX + 1);
	int rc = buf ? pool_meta_readlink(v->meta, q->vino, buf, PATH_MAX + 1) : -ENOMEM;

	if (rc >= 0) {
		p->data = (uint8_t *)buf;
		p->ndata = (uint32_t)strlen(buf);
		*out = (uint8_t *)buf;
		return 0;
	}
	free(buf);
	return rc;
}

static void ns_to_ts(int64_t ns, struct timespec *ts)
{
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
	if (ts->tv_nsec < 0) {
		ts->tv_nsec += 1000000000;
		ts->tv_sec--;
	}
}

/* fs_op_setattr's logic on a request's fields. */
static int s_setattr(struct fs *fs, struct fs_volume *v, const struct wire_req *q,
		     struct wire_rep *p)
{
	struct stat st = {
	    .st_mode = q->mode, .st_uid = q->uid, .st_gid = q->gid, .st_size = (off_t)q->size};
	struct fs_inode *in = NULL;
	struct pool_inode a;
	int to_set = (int)q->to_set, rc = get_in(fs, v, q->vino, &in);

	ns_to_ts(q->atime, &st.st_atim);
	ns_to_ts(q->mtime, &st.st_mtim);
	ns_to_ts(q->ctime, &st.st_ctim);
	if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE))
		rc = S_ISDIR(in->attr.mode)    ? -EISDIR
		     : !S_ISREG(in->attr.mode) ? -EINVAL
					       : fs_set_size(in, q->size);
	if (rc == 0 && to_set == 0)
		rc = fs_inode_touch(fs, v, in->attr.ino, false);
	if (rc == 0 && (to_set & ~FUSE_SET_ATTR_SIZE)) {
		if (S_ISREG(in->attr.mode)) {
			pthread_mutex_lock(&in->lock);
			fs_apply_setattr(&in->attr, &st, to_set);
			in->dirty = true;
			pthread_mutex_unlock(&in->lock);
		} else {
			rc = pool_meta_get(v->meta, in->attr.ino, &a);
			if (rc == 0)
				fs_apply_setattr(&a, &st, to_set);
			if (rc == 0)
				rc = pool_meta_setattr(v->meta, &a);
		}
	}
	if (rc == 0 && S_ISREG(in->attr.mode))
		rc = fs_inode_flush(fs, in);
	if (in)
		fs_inode_put(fs, in);
	return rc ? rc : with_attr(fs, v, q->vino, p);
}

static int s_open(struct fs *fs, struct fs_volume *v, const struct wire_req *q, struct wire_rep *p)
{
	struct fs_inode *in = NULL;
	int rc = get_in(fs, v, q->vino, &in);

	if (rc == 0 && (q->flags & O_TRUNC) && S_ISREG(in->attr.mode))
		rc = fs_set_size(in, 0);
	if (rc == 0)
		fs_inode_open_remote(fs, in);
	if (in)
		fs_inode_put(fs, in);
	return rc ? rc : with_attr(fs, v, q->vino, p);
}

/* Tolerant: the open may have been counted by a previous owner.  Only a
 * peer's count is taken, never one of this node's own handles (a test
 * of nopen then a release raced this node's own release, and a peer's
 * release of an open another owner counted took one of ours: both ended
 * in fs_inode_release's assertion). */
static int s_release(struct fs *fs, struct fs_volume *v, const struct wire_req *q)
{
	struct fs_inode *in = fs_inode_peek(fs, fs_ino_make(v, q->vino));

	if (!in)
		return 0;
	fs_inode_release_remote(fs, in);
	fs_inode_put(fs, in);
	return 0;
}

static int s_read(struct fs *fs, struct fs_volume *v, const struct wire_req *q, struct wire_rep *p,
		  uint8_t **out)
{
	struct fs_inode *in;
	struct pool_file_map map;
	size_t size = (size_t)q->len;
	ssize_t n = 0;
	int rc = get_in(fs, v, q->vino, &in);

	if (rc < 0)
		return rc;
	pthread_rwlock_rdlock(&in->io_lock);
	pthread_mutex_lock(&in->lock);
	uint64_t fsize = in->attr.size;
	pthread_mutex_unlock(&in->lock);
	if (q->off >= fsize)
		size = 0;
	else if (q->off + size > fsize)
		size = fsize - q->off;
	*out = malloc(size ? size : 1);
	if (!*out)
		n = -ENOMEM;
	else if (size) {
		fs_file_map(in, &map);
		if (!fs_ckpt_read(in, q->off, size, *out, &n))
			n = pool_store_read(v->store, &map, q->off, size, *out);
	}
	pthread_rwlock_unlock(&in->io_lock);
	fs_inode_put(fs, in);
	if (n < 0)
		return (int)n;
	atomic_fetch_add(&v->read_bytes, (uint64_t)n);
	p->data = *out;
	p->ndata = (uint32_t)n;
	return 0;
}

static int s_write(struct fs *fs, struct fs_volume *v, const struct wire_req *q, struct wire_rep *p)
{
	struct fs_inode *in;
	struct pool_file_map map;
	int rc = get_in(fs, v, q->vino, &in);

	if (rc < 0)
		return rc;
	pthread_rwlock_rdlock(&in->io_lock);
	fs_file_map(in, &map);
	ssize_t n;
	if (!fs_ckpt_write(in, q->off, q->ndata, q->data, &n))
		n = pool_store_write(v->store, &map, q->off, q->ndata, q->data);
	if (n > 0) {
		int64_t now = fs_now_ns();
		pthread_mutex_lock(&in->lock);
		if (q->off + (uint64_t)n > in->attr.size)
			in->attr.size = q->off + (uint64_t)n;
		in->attr.mtime_ns = in->attr.ctime_ns = now;
		in->dirty = true;
		pthread_mutex_unlock(&in->lock);
	}
	pthread_rwlock_unlock(&in->io_lock);
	fs_inode_put(fs, in);
	if (n < 0)
		return (int)n;
	atomic_fetch_add(&v->write_bytes, (uint64_t)n);
	p->v1 = (uint64_t)n;
	return 0;
}

static int s_fsync(struct fs *fs, struct fs_volume *v, const struct wire_req *q)
{
	struct fs_inode *in;
	int rc = get_in(fs, v, q->vino, &in);

	if (rc < 0)
		return rc;
	rc = fs_sync_inode(fs, in);
	fs_inode_put(fs, in);
	return rc;
}

static int s_fallocate(struct fs *fs, struct fs_volume *v, const struct wire_req *q)
{
	struct fs_inode *in;
	int rc = get_in(fs, v, q->vino, &in);

	if (rc < 0)
		return rc;
	rc = fs_do_fallocate(in, (int)q->flags, q->off, q->len);
	fs_inode_put(fs, in);
	return rc;
}

static int s_lseek(struct fs *fs, struct fs_volume *v, const struct wire_req *q, struct wire_rep *p)
{
	struct fs_inode *in;
	int rc = get_in(fs, v, q->vino, &in);

	if (rc < 0)
		return rc;
	rc = fs_do_lseek(in, q->off, (int)q->flags, &p->v1);
	fs_inode_put(fs, in);
	return rc;
}

struct dir_out {
	struct fs *fs;
	struct fs_volume *v;
	struct wire_buf b;
	uint64_t budget;
	uint32_t n;
};

static int put_dirent(void *arg, const char *name, const struct pool_inode *in, uint64_t cookie)
{
	struct dir_out *d = arg;
	struct wire_attr w = {.a = *in};

	if (d->n > 0 && d->b.len + 200 + strlen(name) > d->budget)
		return 1;
	struct fs_inode *c = fs_inode_peek(d->fs, fs_ino_make(d->v, in->ino));
	if (c && S_ISREG(in->mode)) {
		pthread_mutex_lock(&c->lock);
		w.a = c->attr;
		pthread_mutex_unlock(&c->lock);
	}
	if (c)
		fs_inode_put(d->fs, c);
	wire_put_dirent(&d->b, cookie, name, &w);
	d->n++;
	return d->b.err;
}

static int s_readdir(struct fs *fs, struct fs_volume *v, const struct wire_req *q,
		     struct wire_rep *p, uint8_t **out)
{
	struct dir_out d = {.fs = fs, .v = v, .budget = q->len < 4096 ? 4096 : q->len};
	uint64_t up = POOL_META_ROOT;
	int rc;

	if (q->vino != POOL_META_ROOT && pool_meta_parent(v->meta, q->vino, &up) < 0)
		up = POOL_META_ROOT;
	rc = pool_meta_readdir(v->meta, q->vino, q->off, put_dirent, &d);
	if (rc < 0 || d.b.err) {
		wire_buf_free(&d.b);
		return rc < 0 ? rc : d.b.err;
	}
	p->v1 = up;
	p->data = d.b.p;
	p->ndata = (uint32_t)d.b.len;
	*out = d.b.p;
	return 0;
}

static int s_xattr_get(struct fs_volume *v, const struct wire_req *q, struct wire_rep *p,
		       uint8_t **out)
{
	size_t size = (size_t)q->len;

	*out = malloc(size ? size : 1);
	if (!*out)
		return -ENOMEM;
	ssize_t n = q->type == W_GETXATTR
			? pool_meta_getxattr(v->meta, q->vino, q->name2, *out, size)
			: pool_meta_listxattr(v->meta, q->vino, (char *)*out, size);
	if (n < 0)
		return (int)n;
	p->v1 = (uint64_t)n;
	if (size) {
		p->data = *out;
		p->ndata = (uint32_t)n;
	}
	return 0;
}

static int s_xattr_set(struct fs *fs, struct fs_volume *v, const struct wire_req *q)
{
	int rc = fs_check_xattr_name(q->name2);

	if (rc == 0)
		rc = q->type == W_SETXATTR ? pool_meta_setxattr(v->meta, q->vino, q->name2, q->data,
								q->ndata, (int)q->flags)
					   : pool_meta_removexattr(v->meta, q->vino, q->name2);
	if (rc == 0)
		rc = fs_inode_touch(fs, v, q->vino, false);
	return rc;
}

static int s_statfs(struct fs *fs, struct fs_volume *v, struct wire_rep *p)
{
	fs_pool_space(fs, v, &p->v1, &p->v2);
	return pool_meta_count(v->meta, &p->v3);
}

static int run(struct fs *fs, struct fs_volume *v, const struct wire_req *q, struct wire_rep *p,
	       uint8_t **out)
{
	struct pool_inode a;
	int rc;

	switch (q->type) {
	case W_GETATTR:
		return with_attr(fs, v, q->vino, p);
	case W_LOOKUP:
		rc = pool_meta_lookup(v->meta, q->vino, q->name, &a);
		return rc ? rc : with_attr(fs, v, a.ino, p);
	case W_MKNOD:
		return s_mknod(fs, v, q, p);
	case W_LINK:
		return s_link(fs, v, q, p);
	case W_UNLINK:
		return s_unlink(fs, v, q);
	case W_RMDIR:
		return s_rmdir(fs, v, q);
	case W_RENAME:
		return s_rename(fs, v, q);
	case W_READLINK:
		return s_readlink(v, q, p, out);
	case W_SETATTR:
		return s_setattr(fs, v, q, p);
	case W_OPEN:
		return s_open(fs, v, q, p);
	case W_RELEASE:
		return s_release(fs, v, q);
	case W_READ:
		return s_read(fs, v, q, p, out);
	case W_WRITE:
		return s_write(fs, v, q, p);
	case W_FSYNC:
		return s_fsync(fs, v, q);
	case W_FSYNCDIR:
		return pool_meta_sync(v->meta);
	case W_FALLOCATE:
		return s_fallocate(fs, v, q);
	case W_READDIR:
		return s_readdir(fs, v, q, p, out);
	case W_STATFS:
		return s_statfs(fs, v, p);
	case W_GETXATTR:
	case W_LISTXATTR:
		return s_xattr_get(v, q, p, out);
	case W_SETXATTR:
	case W_REMOVEXATTR:
		return s_xattr_set(fs, v, q);
	case W_LSEEK:
		return s_lseek(fs, v, q, p);
	default:
		return -EPROTO;
	}
}

static bool is_write(uint16_t t)
{
	return t == W_MKNOD || t == W_LINK || t == W_UNLINK || t == W_RMDIR || t == W_RENAME ||
	       t == W_SETATTR || t == W_WRITE || t == W_FALLOCATE || t == W_SETXATTR ||
	       t == W_REMOVEXATTR;
}

void fs_serve(struct fs *fs, const struct wire_req *q, struct wire_rep *p, uint8_t **out)
{
	struct fs_volume *v = fs_volume_by_id(fs, q->volid);

	*out = NULL;
	if (!v || !v->vn) {
		p->err = -ENOENT;
		return;
	}
	if (!fs_vol_enter_local(v)) {
		p->err = FS_NOT_OWNER;
		return;
	}
	if (fs->opt.read_only && is_write(q->type))
		p->err = -EROFS;
	else
		p->err = run(fs, v, q, p, out);
	fs_vol_leave(v);
	atomic_fetch_add(&v->vn->served_ops, 1);
	atomic_fetch_add(&v->vn->served_bytes, q->ndata + p->ndata);
	if (p->err < -4095 || p->err > 0)
		p->err = -EIO;
}
