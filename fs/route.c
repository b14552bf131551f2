/*
 * route.c -- FUSE operations with several nodes: local or redirected.
 *
 * Every operation on a volume asks fs_vol_enter_local(): if this node owns
 * the volume (valid lease, stores open) the request runs through fs_ops
 * (ops.c) unchanged, with the ownership held shared so a handover waits
 * for it.  Otherwise it becomes a request to the owner (fs/redirect.c,
 * executed by fs/serve.c) and the owner's answer is the reply.  When there
 * is no owner for a moment (a move, a takeover) or the owner says it is
 * not the owner any more, the request waits and is routed again, for up
 * to 3 leases + 10 s: clients see a pause, not an error.
 *
 * The non-owner's kernel must not serve stale data: redirected files are
 * opened with direct_io, and with listen= the attribute and entry
 * timeouts default to 0 and opens never keep the page cache, on every
 * node.  The consistency model is close-to-open, plus immediate
 * visibility through direct_io for redirected I/O (docs/OPERATIONS.md).
 *
 * Inode numbers are global ((volume id << 48) | volume inode), so the
 * kernel's numbers mean the same on every node.  Redirected lookups still
 * install an entry in this node's inode table (its attributes a copy,
 * never written back), so forget, open handles (fi->fh is always a
 * struct fs_inode) and a later takeover work the same either way.
 *
 * The virtual xattr user.spacefs.owner, on every file and directory of a
 * volume, answers "NODE ADDR:PORT epoch N" from this node's view, so a
 * client can be sent to the owner as SMB client redirection does.  It is
 * not listed by listxattr (it is not stored).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fs/node.h"

#define ROOT_INO    FUSE_ROOT_ID
#define OWNER_XATTR "user.spacefs.owner"
#define AGAIN	    (-EAGAIN) /* not replied: route again */

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fs_volume *vol_of(fuse_req_t req, fuse_ino_t ino)
{
	return ino == ROOT_INO ? NULL : fs_volume_by_id(fs_of(req), fs_ino_volid(ino));
}

static bool is_write(uint16_t t)
{
	return t == W_MKNOD || t == W_LINK || t == W_UNLINK || t == W_RMDIR || t == W_RENAME ||
	       t == W_SETATTR || t == W_WRITE || t == W_FALLOCATE || t == W_SETXATTR ||
	       t == W_REMOVEXATTR;
}

/* Send q for volume v to its owner.  0: *p holds the owner's answer
 * (p->err its result); AGAIN: no owner reachable now; else -errno to
 * reply at once. */
static int rcall(struct fs *fs, struct fs_volume *v, struct wire_req *q, struct wire_rep *p,
		 uint8_t **raw)
{
	char owner[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX];
	uint64_t epoch;
	bool valid;

	*raw = NULL;
	if (fs->opt.ro_others && is_write(q->type))
		return -EROFS;
	fs_node_owner(v, owner, addr, &epoch, &valid);
	if (!valid || !strcmp(owner, fs->node->name) || !addr[0])
		return AGAIN;
	q->volid = v->id;
	if (!q->name)
		q->name = "";
	if (!q->name2)
		q->name2 = "";
	int rc = fs_rpc_call(fs->node->rpc, addr, q, p, raw);
	if (rc == 0 && p->err == FS_NOT_OWNER)
		rc = -EREMCHG;
	if (rc < 0) {
		free(*raw);
		*raw = NULL;
		fs_node_kick(fs, false); /* look at the lock files now */
		return AGAIN;
	}
	atomic_fetch_add(&v->vn->redir_ops, 1);
	atomic_fetch_add(&v->vn->redir_bytes, q->ndata + p->ndata);
	return 0;
}

/* Wait a little for an owner; -ETIMEDOUT past the request's deadline. */
static int wait_owner(struct fs *fs, int64_t *deadline)
{
	int64_t now = fs_mono_ns();

	if (*deadline == 0)
		*deadline = now + (3 * fs->node->lease_ms + 10000) * 1000000ll;
	if (now > *deadline)
		return -ETIMEDOUT;
	nanosleep(&(struct timespec){0, 20000000}, NULL);
	return 0;
}

__thread bool fs_route_resend_ok, fs_route_resend;

/* Around a local operation: whether the data fence refused it, and so
 * left it unanswered to be routed again (ops.c fs_route_fenced). */
static void local_begin(void)
{
	fs_route_resend_ok = true;
	fs_route_resend = false;
}

static bool local_end(struct fs *fs, struct fs_volume *v)
{
	fs_route_resend_ok = false;
	if (!fs_route_resend)
		return false;
	atomic_fetch_add(&v->vn->resent, 1);
	fs_node_kick(fs, false); /* give the volume up, find the owner */
	return true;
}

/* Run LOCAL if this node owns v, else REMOTE (an expression returning 0
 * when it replied, AGAIN to route again).  A local write, truncate or
 * fallocate refused by the data fence (this node's lease ran out while
 * it ran) is routed again too: the application sees a pause across the
 * owner change, never an error. */
#define ROUTE(fs, v, LOCAL, REMOTE)                                                                \
	do {                                                                                       \
		int64_t dl_ = 0;                                                                   \
		for (;;) {                                                                         \
			if (fs_volume_gone(v)) { /* deleted meanwhile (fs/catalog.c) */            \
				fuse_reply_err(req, ESTALE);                                       \
				return;                                                            \
			}                                                                          \
			if (fs_vol_enter_local(v)) {                                               \
				local_begin();                                                     \
				LOCAL;                                                             \
				fs_vol_leave(v);                                                   \
				if (!local_end(fs, v))                                             \
					return;                                                    \
			} else if ((REMOTE) != AGAIN) {                                            \
				return;                                                            \
			}                                                                          \
			if (wait_owner(fs, &dl_) < 0) {                                            \
				fprintf(stderr, "spacefs: volume %s: no owner reachable\n",        \
					(v)->name);                                                \
				fuse_reply_err(req, EIO);                                          \
				return;                                                            \
			}                                                                          \
		}                                                                                  \
	} while (0)

/* One redirected call: 0 replied-or-ready with *p, AGAIN, or replied error. */
static int call(fuse_req_t req, struct fs_volume *v, struct wire_req *q, struct wire_rep *p,
		uint8_t **raw)
{
	int rc = rcall(fs_of(req), v, q, p, raw);

	if (rc == AGAIN)
		return AGAIN;
	if (rc == 0 && p->err == 0)
		return 0;
	fuse_reply_err(req, rc < 0 ? -rc : -p->err);
	free(*raw);
	*raw = NULL;
	return 1; /* replied */
}

/* ---- entries and attributes ---- */

static struct fs_inode *install(struct fs *fs, struct fs_volume *v, const struct wire_attr *w,
				uint64_t nlookup)
{
	struct fs_inode *in = fs_inode_install(fs, v, &w->a, nlookup);

	if (in && !fs_vol_hold_local(v)) { /* a copy of the owner's attributes */
		pthread_mutex_lock(&in->lock);
		in->attr = w->a;
		in->dirty = false;
		pthread_mutex_unlock(&in->lock);
	} else if (in) {
		fs_vol_leave(v);
	}
	return in;
}

static void to_stat(struct fs_volume *v, const struct wire_attr *w, struct stat *st)
{
	fs_attr_to_stat(&w->a, fs_ino_make(v, w->a.ino), st);
	st->st_blocks = (blkcnt_t)w->blocks;
}

static void fill_entry(struct fs *fs, struct fs_volume *v, const struct wire_attr *w,
		       struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = fs_ino_make(v, w->a.ino);
	e->attr_timeout = fs->opt.attr_timeout;
	e->entry_timeout = fs->opt.entry_timeout;
	to_stat(v, w, &e->attr);
}

static void reply_entry(fuse_req_t req, struct fs_volume *v, const struct wire_attr *w)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct fs_inode *in = install(fs, v, w, 1);

	if (!in) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fill_entry(fs, v, w, &e);
	if (fuse_reply_entry(req, &e) == -ENOENT)
		fs_inode_forget(fs, in, 1);
	fs_inode_put(fs, in);
}

/* A request carrying an attribute back as an entry (lookup, mknod...). */
static int entry_call(fuse_req_t req, struct fs_volume *v, struct wire_req *q)
{
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	if (!p.has_attr)
		fuse_reply_err(req, EIO);
	else
		reply_entry(req, v, &p.attr);
	free(raw);
	return 0;
}

/* A request whose answer is only an error code. */
static int err_call(fuse_req_t req, struct fs_volume *v, struct wire_req *q)
{
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	fuse_reply_err(req, 0);
	free(raw);
	return 0;
}

static int attr_call(fuse_req_t req, struct fs_volume *v, struct wire_req *q)
{
	struct fs *fs = fs_of(req);
	struct wire_rep p;
	struct stat st;
	uint8_t *raw;
	int rc = call(req, v, q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	if (!p.has_attr) {
		fuse_reply_err(req, EIO);
	} else {
		to_stat(v, &p.attr, &st);
		fuse_reply_attr(req, &st, fs->opt.attr_timeout);
	}
	free(raw);
	return 0;
}

/* ---- operations ---- */

static void r_lookup_root(fuse_req_t req, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = fs_volume_by_name(fs, name);

	if (!v) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct wire_req q = {.type = W_GETATTR, .vino = POOL_META_ROOT};
	ROUTE(fs, v, fs_ops.lookup(req, ROOT_INO, name), entry_call(req, v, &q));
}

static void r_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);

	if (parent == ROOT_INO) {
		r_lookup_root(req, name);
		return;
	}
	if (!v || strlen(name) > WIRE_NAME_MAX) {
		fs_ops.lookup(req, parent, name);
		return;
	}
	struct wire_req q = {.type = W_LOOKUP, .vino = fs_ino_vino(parent), .name = name};
	ROUTE(fs, v, fs_ops.lookup(req, parent, name), entry_call(req, v, &q));
}

static void r_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.getattr(req, ino, fi);
		return;
	}
	struct wire_req q = {.type = W_GETATTR, .vino = fs_ino_vino(ino)};
	ROUTE(fs, v, fs_ops.getattr(req, ino, fi), attr_call(req, v, &q));
}

static void r_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.setattr(req, ino, attr, to_set, fi);
		return;
	}
	struct wire_req q = {
	    .type = W_SETATTR,
	    .vino = fs_ino_vino(ino),
	    .mode = attr->st_mode,
	    .uid = attr->st_uid,
	    .gid = attr->st_gid,
	    .to_set = (uint32_t)to_set,
	    .size = (uint64_t)attr->st_size,
	    .atime = attr->st_atim.tv_sec * 1000000000ll + attr->st_atim.tv_nsec,
	    .mtime = attr->st_mtim.tv_sec * 1000000000ll + attr->st_mtim.tv_nsec,
	    .ctime = attr->st_ctim.tv_sec * 1000000000ll + attr->st_ctim.tv_nsec,
	};
	ROUTE(fs, v, fs_ops.setattr(req, ino, attr, to_set, fi), attr_call(req, v, &q));
}

static int remote_readlink(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino)
{
	struct wire_req q = {.type = W_READLINK, .vino = fs_ino_vino(ino)};
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	char *s = malloc(p.ndata + 1);
	if (s) {
		memcpy(s, p.data, p.ndata);
		s[p.ndata] = '\0';
		fuse_reply_readlink(req, s);
	} else {
		fuse_reply_err(req, ENOMEM);
	}
	free(s);
	free(raw);
	return 0;
}

static void r_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.readlink(req, ino);
		return;
	}
	ROUTE(fs, v, fs_ops.readlink(req, ino), remote_readlink(req, v, ino));
}

static void mk_req(fuse_req_t req, struct wire_req *q, fuse_ino_t parent, const char *name,
		   mode_t mode, dev_t rdev, const char *target)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	memset(q, 0, sizeof(*q));
	q->type = W_MKNOD;
	q->vino = fs_ino_vino(parent);
	q->name = name;
	q->name2 = target ? target : "";
	q->mode = mode;
	q->rdev = rdev;
	q->uid = ctx->uid;
	q->gid = ctx->gid;
}

static void r_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);
	struct wire_req q;

	if (!v || strlen(name) > WIRE_NAME_MAX) {
		fs_ops.mknod(req, parent, name, mode, rdev);
		return;
	}
	mk_req(req, &q, parent, name, mode, rdev, NULL);
	ROUTE(fs, v, fs_ops.mknod(req, parent, name, mode, rdev), entry_call(req, v, &q));
}

static void r_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);
	struct wire_req q;

	if (!v || strlen(name) > WIRE_NAME_MAX) {
		fs_ops.mkdir(req, parent, name, mode);
		return;
	}
	mk_req(req, &q, parent, name, S_IFDIR | (mode & 07777), 0, NULL);
	ROUTE(fs, v, fs_ops.mkdir(req, parent, name, mode), entry_call(req, v, &q));
}

static void r_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);
	struct wire_req q;

	if (!v || strlen(name) > WIRE_NAME_MAX || !link[0] || strlen(link) > WIRE_TEXT_MAX) {
		fs_ops.symlink(req, link, parent, name);
		return;
	}
	mk_req(req, &q, parent, name, S_IFLNK | 0777, 0, link);
	ROUTE(fs, v, fs_ops.symlink(req, link, parent, name), entry_call(req, v, &q));
}

static void r_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v || newparent == ROOT_INO || fs_ino_volid(ino) != fs_ino_volid(newparent) ||
	    strlen(newname) > WIRE_NAME_MAX) {
		fs_ops.link(req, ino, newparent, newname);
		return;
	}
	struct wire_req q = {.type = W_LINK,
			     .vino = fs_ino_vino(ino),
			     .vino2 = fs_ino_vino(newparent),
			     .name = newname};
	ROUTE(fs, v, fs_ops.link(req, ino, newparent, newname), entry_call(req, v, &q));
}

static void r_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);

	if (!v || strlen(name) > WIRE_NAME_MAX) {
		fs_ops.unlink(req, parent, name);
		return;
	}
	struct wire_req q = {.type = W_UNLINK, .vino = fs_ino_vino(parent), .name = name};
	ROUTE(fs, v, fs_ops.unlink(req, parent, name), err_call(req, v, &q));
}

static void r_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);

	if (!v || strlen(name) > WIRE_NAME_MAX) {
		fs_ops.rmdir(req, parent, name);
		return;
	}
	struct wire_req q = {.type = W_RMDIR, .vino = fs_ino_vino(parent), .name = name};
	ROUTE(fs, v, fs_ops.rmdir(req, parent, name), err_call(req, v, &q));
}

static void r_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		     const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);

	if (!v || newparent == ROOT_INO || fs_ino_volid(parent) != fs_ino_volid(newparent) ||
	    strlen(name) > WIRE_NAME_MAX || strlen(newname) > WIRE_NAME_MAX) {
		fs_ops.rename(req, parent, name, newparent, newname, flags);
		return;
	}
	struct wire_req q = {.type = W_RENAME,
			     .vino = fs_ino_vino(parent),
			     .name = name,
			     .vino2 = fs_ino_vino(newparent),
			     .name2 = newname,
			     .flags = flags};
	ROUTE(fs, v, fs_ops.rename(req, parent, name, newparent, newname, flags),
	      err_call(req, v, &q));
}

/* ---- files ---- */

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

static int remote_open(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct wire_req q = {
	    .type = W_OPEN, .vino = fs_ino_vino(ino), .flags = (uint32_t)fi->flags};
	struct wire_rep p;
	uint8_t *raw;

	if (fs->opt.ro_others && wants_write(fi->flags)) {
		fuse_reply_err(req, EROFS);
		return 0;
	}
	int rc = call(req, v, &q, &p, &raw);
	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	struct fs_inode *in = p.has_attr ? install(fs, v, &p.attr, 0) : NULL;
	free(raw);
	if (!in) {
		fuse_reply_err(req, EIO);
		return 0;
	}
	fs_inode_open(fs, in);
	fs_inode_put(fs, in); /* the open handle keeps it now */
	fi->fh = (uintptr_t)in;
	fi->direct_io = 1; /* every read and write goes to the owner */
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_inode_release(fs, in);
	return 0;
}

static void r_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.open(req, ino, fi);
		return;
	}
	ROUTE(fs, v, fs_ops.open(req, ino, fi), remote_open(req, v, ino, fi));
}

static int remote_create(fuse_req_t req, struct fs_volume *v, fuse_ino_t parent, const char *name,
			 mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct wire_req q;
	struct wire_rep p;
	uint8_t *raw;

	mk_req(req, &q, parent, name, S_IFREG | (mode & 07777), 0, NULL);
	q.flags = 1; /* and open it */
	int rc = call(req, v, &q, &p, &raw);
	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	struct fs_inode *in = p.has_attr ? install(fs, v, &p.attr, 1) : NULL;
	if (!in) {
		free(raw);
		fuse_reply_err(req, EIO);
		return 0;
	}
	fill_entry(fs, v, &p.attr, &e);
	free(raw);
	fs_inode_open(fs, in);
	fi->fh = (uintptr_t)in;
	fi->direct_io = 1;
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		fs_inode_forget(fs, in, 1);
		fs_inode_release(fs, in);
	}
	fs_inode_put(fs, in);
	return 0;
}

static void r_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, parent);

	if (!v || strlen(name) > WIRE_NAME_MAX) {
		fs_ops.create(req, parent, name, mode, fi);
		return;
	}
	ROUTE(fs, v, fs_ops.create(req, parent, name, mode, fi),
	      remote_create(req, v, parent, name, mode, fi));
}

static int remote_read(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino, size_t size, off_t off)
{
	struct wire_req q = {.type = W_READ,
			     .vino = fs_ino_vino(ino),
			     .off = (uint64_t)off,
			     .len = size > WIRE_MAX_DATA ? WIRE_MAX_DATA : size};
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	fuse_reply_buf(req, (const char *)p.data, p.ndata);
	free(raw);
	return 0;
}

static void r_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	ROUTE(fs, v, fs_ops.read(req, ino, size, off, fi), remote_read(req, v, ino, size, off));
}

static int remote_write(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino,
			struct fuse_bufvec *in_buf, off_t off)
{
	size_t size = fuse_buf_size(in_buf);
	struct wire_rep p;
	uint8_t *raw, *data = malloc(size ? size : 1);

	if (!data || size > WIRE_MAX_DATA) {
		free(data);
		fuse_reply_err(req, data ? EINVAL : ENOMEM);
		return 0;
	}
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
	dst.buf[0].mem = data;
	/* the source vector may have been consumed by an earlier attempt */
	struct fuse_bufvec src = *in_buf;
	if (fuse_buf_copy(&dst, &src, 0) != (ssize_t)size) {
		free(data);
		fuse_reply_err(req, EIO);
		return 0;
	}
	struct wire_req q = {.type = W_WRITE,
			     .vino = fs_ino_vino(ino),
			     .off = (uint64_t)off,
			     .data = data,
			     .ndata = (uint32_t)size};
	int rc = call(req, v, &q, &p, &raw);
	free(data);
	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	fuse_reply_write(req, (size_t)p.v1);
	free(raw);
	return 0;
}

/* A local write refused by the data fence is routed again whole (ROUTE):
 * whatever part of it landed before the fence is written again by the
 * next owner (or by this node, if it renews its lease first), as a
 * redirected request refused at the fence is.  The bytes are read from
 * in_buf again then, so its position is put back. */
static void local_write(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
			struct fuse_file_info *fi)
{
	size_t idx = in_buf->idx, boff = in_buf->off;

	fs_ops.write_buf(req, ino, in_buf, off, fi);
	in_buf->idx = idx; /* the copy may have consumed it */
	in_buf->off = boff;
}

static void r_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
			struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	ROUTE(fs, v, local_write(req, ino, in_buf, off, fi),
	      remote_write(req, v, ino, in_buf, off));
}

static void r_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);
	struct fs_inode *in = (struct fs_inode *)(uintptr_t)fi->fh;

	if (fs_vol_enter_local(v)) {
		fs_ops.release(req, ino, fi);
		fs_vol_leave(v);
		return;
	}
	struct wire_req q = {.type = W_RELEASE, .vino = fs_ino_vino(ino)};
	struct wire_rep p;
	uint8_t *raw = NULL;
	rcall(fs, v, &q, &p, &raw); /* best effort: a new owner never saw the open */
	free(raw);
	fs_inode_release(fs, in);
	fuse_reply_err(req, 0);
}

static void r_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);
	struct wire_req q = {.type = W_FSYNC, .vino = fs_ino_vino(ino)};

	ROUTE(fs, v, fs_ops.fsync(req, ino, datasync, fi), err_call(req, v, &q));
}

static void r_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.fsyncdir(req, ino, datasync, fi);
		return;
	}
	struct wire_req q = {.type = W_FSYNCDIR, .vino = fs_ino_vino(ino)};
	ROUTE(fs, v, fs_ops.fsyncdir(req, ino, datasync, fi), err_call(req, v, &q));
}

static void r_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);
	struct wire_req q = {.type = W_FALLOCATE,
			     .vino = fs_ino_vino(ino),
			     .flags = (uint32_t)mode,
			     .off = (uint64_t)off,
			     .len = (uint64_t)len};

	ROUTE(fs, v, fs_ops.fallocate(req, ino, mode, off, len, fi), err_call(req, v, &q));
}

/* SEEK_DATA/SEEK_HOLE: the owner knows the holes (chunk files, checkpoint
 * layers, writes it has not applied yet), so the question goes there like
 * a read.  Every node of a pool runs the same spacefs (docs/FORMAT.md,
 * "Redirect frames"). */
static int remote_lseek(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino, off_t off, int whence)
{
	struct wire_req q = {.type = W_LSEEK,
			     .vino = fs_ino_vino(ino),
			     .off = (uint64_t)off,
			     .flags = (uint32_t)whence};
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	fuse_reply_lseek(req, (off_t)p.v1);
	free(raw);
	return 0;
}

static void r_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) { /* its volume was deleted (fs/catalog.c) */
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (whence != SEEK_DATA && whence != SEEK_HOLE) { /* the kernel answers the others */
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0 || fs->opt.writeback_cache) {
		fs_ops.lseek(req, ino, off, whence, fi); /* answered without the store */
		return;
	}
	ROUTE(fs, v, fs_ops.lseek(req, ino, off, whence, fi),
	      remote_lseek(req, v, ino, off, whence));
}

/* ---- directories ---- */

static int remote_opendir(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct wire_req q = {.type = W_GETATTR, .vino = fs_ino_vino(ino)};
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	if (!p.has_attr || !S_ISDIR(p.attr.a.mode)) {
		fuse_reply_err(req, p.has_attr ? ENOTDIR : EIO);
	} else {
		fi->cache_readdir = 0;
		fuse_reply_open(req, fi);
	}
	free(raw);
	return 0;
}

static void r_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.opendir(req, ino, fi);
		return;
	}
	ROUTE(fs, v, fs_ops.opendir(req, ino, fi), remote_opendir(req, v, ino, fi));
}

/* Append one entry; bytes used or 0 if it does not fit. */
static void fill_dir(fuse_req_t req, struct fs_volume *v, const struct wire_rep *p, char *buf,
		     size_t size, size_t used, bool plus)
{
	struct fs *fs = fs_of(req);
	struct wire_rd rd = {.p = p->data, .len = p->ndata};
	char name[WIRE_NAME_MAX + 1];
	struct wire_attr w;
	uint64_t cookie;

	while (wire_get_dirent(&rd, &cookie, name, &w) == 1) {
		struct fuse_entry_param e;
		fill_entry(fs, v, &w, &e);
		if (!plus) {
			e.attr_timeout = e.entry_timeout = 0;
		}
		size_t n =
		    fs_add_entry(req, buf + used, size - used, name, &e, (off_t)(cookie + 2), plus);
		if (!n)
			break;
		if (plus) { /* the kernel's reference for the entry sent */
			struct fs_inode *in = install(fs, v, &w, 1);
			if (!in)
				break;
			fs_inode_put(fs, in);
		}
		used += n;
	}
	fuse_reply_buf(req, buf, used);
}

static int remote_readdir(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino, size_t size,
			  off_t off, bool plus)
{
	struct wire_req q = {.type = W_READDIR,
			     .vino = fs_ino_vino(ino),
			     .off = off >= 2 ? (uint64_t)(off - 2) : 0,
			     .len = size > WIRE_MAX_DATA ? WIRE_MAX_DATA : size};
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	char *buf = calloc(1, size ? size : 1);
	if (!buf) {
		free(raw);
		fuse_reply_err(req, ENOMEM);
		return 0;
	}
	fuse_ino_t parent =
	    p.v1 && fs_ino_vino(ino) != POOL_META_ROOT ? fs_ino_make(v, p.v1) : ROOT_INO;
	size_t used = fs_add_dots(req, buf, size, off, ino, parent, plus, NULL);
	fill_dir(req, v, &p, buf, size, used, plus);
	free(buf);
	free(raw);
	return 0;
}

/* The pool root with several nodes: volume roots' attributes come from
 * their owners. */
static int root_attr(struct fs *fs, struct fs_volume *v, struct wire_attr *w)
{
	struct wire_req q = {.type = W_GETATTR, .vino = POOL_META_ROOT};
	struct wire_rep p;
	uint8_t *raw;
	struct fs_inode *in;
	int rc = -EIO;

	memset(w, 0, sizeof(*w));
	if (fs_vol_enter_local(v)) {
		rc = fs_inode_get(fs, fs_ino_make(v, POOL_META_ROOT), 0, &in);
		if (rc == 0) {
			rc = fs_inode_attr(fs, in, &w->a);
			fs_inode_put(fs, in);
		}
		w->blocks = 8;
		fs_vol_leave(v);
		return rc;
	}
	if (rcall(fs, v, &q, &p, &raw) == 0 && p.err == 0 && p.has_attr) {
		*w = p.attr;
		rc = 0;
	}
	free(raw);
	return rc;
}

static void readdir_root(fuse_req_t req, size_t size, off_t off, bool plus)
{
	struct fs *fs = fs_of(req);
	char *buf = calloc(1, size ? size : 1);

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = fs_add_dots(req, buf, size, off, ROOT_INO, ROOT_INO, plus, NULL);
	pthread_mutex_lock(&fs->vol_lock);
	uint32_t nvol = fs->nvol;
	pthread_mutex_unlock(&fs->vol_lock);
	for (uint32_t i = off >= 2 ? (uint32_t)(off - 2) : 0; i < nvol; i++) {
		struct fs_volume *v = fs->vol[i];
		struct fuse_entry_param e;
		struct wire_attr w;
		if (fs_volume_gone(v) || root_attr(fs, v, &w) < 0)
			continue;
		fill_entry(fs, v, &w, &e);
		size_t n =
		    fs_add_entry(req, buf + used, size - used, v->name, &e, (off_t)(i + 3), plus);
		if (!n)
			break;
		if (plus) { /* the kernel's reference for the entry sent */
			struct fs_inode *in = install(fs, v, &w, 1);
			if (!in)
				break;
			fs_inode_put(fs, in);
		}
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void r_readdir_any(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi, bool plus)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (ino == ROOT_INO) {
		readdir_root(req, size, off, plus);
		return;
	}
	if (!v) {
		fs_ops.readdir(req, ino, size, off, fi);
		return;
	}
	ROUTE(fs, v, (plus ? fs_ops.readdirplus : fs_ops.readdir)(req, ino, size, off, fi),
	      remote_readdir(req, v, ino, size, off, plus));
}

static void r_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	r_readdir_any(req, ino, size, off, fi, false);
}

static void r_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	r_readdir_any(req, ino, size, off, fi, true);
}

/* ---- statfs, xattrs, access ---- */

static int remote_statfs(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino)
{
	struct wire_req q = {.type = W_STATFS, .vino = fs_ino_vino(ino)};
	struct wire_rep p;
	struct statvfs st;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	memset(&st, 0, sizeof(st));
	st.f_bsize = st.f_frsize = 4096;
	st.f_blocks = p.v1 / 4096;
	st.f_bfree = st.f_bavail = p.v2 / 4096;
	st.f_files = p.v3 + (1ull << 32);
	st.f_ffree = st.f_favail = 1ull << 32;
	st.f_namemax = POOL_META_NAME_MAX;
	fuse_reply_statfs(req, &st);
	free(raw);
	return 0;
}

static void r_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.statfs(req, ino);
		return;
	}
	ROUTE(fs, v, fs_ops.statfs(req, ino), remote_statfs(req, v, ino));
}

static void reply_owner(fuse_req_t req, struct fs_volume *v, size_t size)
{
	char node[POOL_NODE_NAME_MAX + 1], addr[POOL_ADDR_MAX], text[256];
	uint64_t epoch;
	bool valid;

	fs_node_owner(v, node, addr, &epoch, &valid);
	if (!valid) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	int n =
	    snprintf(text, sizeof(text), "%s %s epoch %llu", node, addr, (unsigned long long)epoch);
	if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else if (size < (size_t)n)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, text, (size_t)n);
}

static int remote_getxattr(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino, const char *name,
			   size_t size, bool list)
{
	struct wire_req q = {.type = list ? W_LISTXATTR : W_GETXATTR,
			     .vino = fs_ino_vino(ino),
			     .name2 = name,
			     .len = size};
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	if (size == 0)
		fuse_reply_xattr(req, (size_t)p.v1);
	else
		fuse_reply_buf(req, (const char *)p.data, p.ndata);
	free(raw);
	return 0;
}

static void r_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (v && !strcmp(name, OWNER_XATTR)) {
		reply_owner(req, v, size);
		return;
	}
	if (!v || !name[0] || strlen(name) > WIRE_NAME_MAX || size > WIRE_XATTR_MAX) {
		fs_ops.getxattr(req, ino, name, size);
		return;
	}
	ROUTE(fs, v, fs_ops.getxattr(req, ino, name, size),
	      remote_getxattr(req, v, ino, name, size, false));
}

static void r_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v || size > WIRE_XATTR_MAX) {
		fs_ops.listxattr(req, ino, size);
		return;
	}
	ROUTE(fs, v, fs_ops.listxattr(req, ino, size),
	      remote_getxattr(req, v, ino, "", size, true));
}

static void r_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		       size_t size, int flags)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (v && !strcmp(name, OWNER_XATTR)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!v || !name[0] || strlen(name) > WIRE_NAME_MAX || size > WIRE_XATTR_MAX) {
		fs_ops.setxattr(req, ino, name, value, size, flags);
		return;
	}
	struct wire_req q = {.type = W_SETXATTR,
			     .vino = fs_ino_vino(ino),
			     .name2 = name,
			     .data = (const uint8_t *)value,
			     .ndata = (uint32_t)size,
			     .flags = (uint32_t)flags};
	ROUTE(fs, v, fs_ops.setxattr(req, ino, name, value, size, flags), err_call(req, v, &q));
}

static void r_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v || !name[0] || strlen(name) > WIRE_NAME_MAX) {
		fs_ops.removexattr(req, ino, name);
		return;
	}
	struct wire_req q = {.type = W_REMOVEXATTR, .vino = fs_ino_vino(ino), .name2 = name};
	ROUTE(fs, v, fs_ops.removexattr(req, ino, name), err_call(req, v, &q));
}

/* access(2) without default_permissions, from the owner's attributes. */
static int remote_access(fuse_req_t req, struct fs_volume *v, fuse_ino_t ino, int mask)
{
	struct fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct wire_req q = {.type = W_GETATTR, .vino = fs_ino_vino(ino)};
	struct wire_rep p;
	uint8_t *raw;
	int rc = call(req, v, &q, &p, &raw);

	if (rc)
		return rc == AGAIN ? AGAIN : 0;
	const struct pool_inode *a = &p.attr.a;
	int err = 0;
	if ((mask & W_OK) && (fs->opt.read_only || fs->opt.ro_others))
		err = EROFS;
	else if (mask == F_OK)
		err = 0;
	else if (ctx->uid == 0)
		err = (mask & X_OK) && !S_ISDIR(a->mode) && !(a->mode & 0111) ? EACCES : 0;
	else {
		unsigned shift = ctx->uid == a->uid ? 6 : ctx->gid == a->gid ? 3 : 0;
		err = ((unsigned)mask & ~((a->mode >> shift) & 7)) ? EACCES : 0;
	}
	fuse_reply_err(req, p.has_attr ? err : EIO);
	free(raw);
	return 0;
}

static void r_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct fs *fs = fs_of(req);
	struct fs_volume *v = vol_of(req, ino);

	if (!v) {
		fs_ops.access(req, ino, mask);
		return;
	}
	ROUTE(fs, v, fs_ops.access(req, ino, mask), remote_access(req, v, ino, mask));
}

static void r_read_guard(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			 struct fuse_file_info *fi)
{
	if (!vol_of(req, ino)) { /* its volume was deleted (fs/catalog.c) */
		fuse_reply_err(req, ESTALE);
		return;
	}
	r_read(req, ino, size, off, fi);
}

static void r_write_guard(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
			  struct fuse_file_info *fi)
{
	if (!vol_of(req, ino)) { /* its volume was deleted (fs/catalog.c) */
		fuse_reply_err(req, ESTALE);
		return;
	}
	r_write_buf(req, ino, in_buf, off, fi);
}

static void r_release_guard(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!vol_of(req, ino)) {
		fs_ops.release(req, ino, fi);
		return;
	}
	r_release(req, ino, fi);
}

static void r_fsync_guard(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	if (!vol_of(req, ino)) {
		fuse_reply_err(req, 0);
		return;
	}
	r_fsync(req, ino, datasync, fi);
}

static void r_fallocate_guard(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			      struct fuse_file_info *fi)
{
	if (!vol_of(req, ino)) { /* its volume was deleted (fs/catalog.c) */
		fuse_reply_err(req, ESTALE);
		return;
	}
	r_fallocate(req, ino, mode, off, len, fi);
}

static void r_init(void *userdata, struct fuse_conn_info *conn)
{
	fs_ops.init(userdata, conn);
}

static void r_destroy(void *userdata)
{
	fs_ops.destroy(userdata);
}

static void r_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_ops.forget(req, ino, nlookup);
}

static void r_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	fs_ops.forget_multi(req, count, forgets);
}

static void r_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_ops.flush(req, ino, fi);
}

static void r_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_ops.releasedir(req, ino, fi);
}

const struct fuse_lowlevel_ops fs_route_ops = {
    .init = r_init,
    .destroy = r_destroy,
    .lookup = r_lookup,
    .forget = r_forget,
    .forget_multi = r_forget_multi,
    .getattr = r_getattr,
    .setattr = r_setattr,
    .readlink = r_readlink,
    .mknod = r_mknod,
    .mkdir = r_mkdir,
    .unlink = r_unlink,
    .rmdir = r_rmdir,
    .symlink = r_symlink,
    .rename = r_rename,
    .link = r_link,
    .open = r_open,
    .create = r_create,
    .read = r_read_guard,
    .write_buf = r_write_guard,
    .flush = r_flush,
    .release = r_release_guard,
    .fsync = r_fsync_guard,
    .opendir = r_opendir,
    .readdir = r_readdir,
    .readdirplus = r_readdirplus,
    .releasedir = r_releasedir,
    .fsyncdir = r_fsyncdir,
    .statfs = r_statfs,
    .setxattr = r_setxattr,
    .getxattr = r_getxattr,
    .listxattr = r_listxattr,
    .removexattr = r_removexattr,
    .access = r_access,
    .fallocate = r_fallocate_guard,
    .lseek = r_lseek,
};
