/*
 * chan.c -- the daemon's end of /dev/fuse, seen one request at a time.
 *
 * libfuse reads each request from the kernel and writes each reply; this
 * file hooks in between (fuse_session_custom_io, whose read and writev do
 * the plain system calls) for three things libfuse 3.14 cannot give:
 *
 * 1. Counting.  Every request is counted by opcode, so `spacectl status`
 *    shows how many FUSE requests the kernel sent per application read or
 *    write (bench/compare reports it; tests/integration/test_fuse_requests
 *    fails if a 4 KiB write costs more than one).
 *
 * 2. The kill-set-id flags.  The kernel asks the file system to clear
 *    set-user-ID and set-group-ID bits itself: FUSE_WRITE_KILL_SUIDGID on a
 *    write by a caller without CAP_FSETID (always with FUSE direct I/O, and
 *    on every write once HANDLE_KILLPRIV_V2 is agreed), FATTR_KILL_SUIDGID
 *    on a truncate or chown, FUSE_OPEN_KILL_SUIDGID on an open with O_TRUNC.
 *    libfuse 3.14 drops these bits before calling the operation, so the
 *    read hook keeps them for the worker thread that runs the request
 *    (libfuse's multithreaded loop reads a request and runs it on the same
 *    thread; every operation here replies before it returns).
 *
 * 3. HANDLE_KILLPRIV_V2.  Without it the kernel must find out itself
 *    whether a write has to clear privileges: before every write it asks
 *    GETXATTR "security.capability", a second, blocking round trip under
 *    the file's inode lock.  With it the kernel marks the super block
 *    SB_NOSEC and each inode S_NOSEC after one check, and leaves the
 *    clearing to the daemon (point 2): one request per write.  libfuse 3.14
 *    does not know the flag, so the write hook adds it to the INIT reply
 *    when the kernel offered it and the daemon serves every write itself
 *    (one node: with several, a redirected write reaches the owner without
 *    the flag, so the kernel keeps doing it).  The same goes for
 *    DIRECT_IO_ALLOW_MMAP, which lets files opened with FUSE direct I/O be
 *    mapped shared.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fs/fs.h"

#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif

/* The request this worker thread is running, as the kernel sent it. */
static __thread struct {
	uint32_t opcode;
	bool kill_suidgid;
} cur;

static bool kill_flag(const struct fuse_in_header *h, const char *body, size_t len)
{
	switch (h->opcode) {
	case FUSE_WRITE:
		return len >= sizeof(struct fuse_write_in) &&
		       (((const struct fuse_write_in *)body)->write_flags &
			FUSE_WRITE_KILL_SUIDGID);
	case FUSE_SETATTR:
		return len >= sizeof(struct fuse_setattr_in) &&
		       (((const struct fuse_setattr_in *)body)->valid & FATTR_KILL_SUIDGID);
	case FUSE_OPEN:
		return len >= sizeof(struct fuse_open_in) &&
		       (((const struct fuse_open_in *)body)->open_flags & FUSE_OPEN_KILL_SUIDGID);
	default:
		return false;
	}
}

/* The kernel's INIT: remember what it offers, to answer in chan_writev. */
static void note_init(struct fs *fs, const struct fuse_in_header *h, const char *body, size_t len)
{
	const struct fuse_init_in *in = (const void *)body;
	uint64_t offered;

	if (len < offsetof(struct fuse_init_in, flags2))
		return;
	offered = in->flags;
	if ((in->flags & FUSE_INIT_EXT) && len >= offsetof(struct fuse_init_in, unused))
		offered |= (uint64_t)in->flags2 << 32;
	fs->chan.offered = offered;
	atomic_store(&fs->chan.init_unique, h->unique);
}

static ssize_t chan_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fs *fs = userdata;
	ssize_t n = read(fd, buf, len);
	const struct fuse_in_header *h = buf;

	cur.opcode = 0;
	cur.kill_suidgid = false;
	if (n < (ssize_t)sizeof(*h))
		return n;
	const char *body = (const char *)buf + sizeof(*h);
	size_t blen = (size_t)n - sizeof(*h);
	cur.opcode = h->opcode;
	cur.kill_suidgid = kill_flag(h, body, blen);
	atomic_fetch_add(&fs->chan.by_op[h->opcode < FS_CHAN_OPS ? h->opcode : 0], 1);
	if (h->opcode == FUSE_INIT)
		note_init(fs, h, body, blen);
	return n;
}

/* The INIT reply: agree to what libfuse cannot name (see the top). */
static void patch_init(struct fs *fs, struct fuse_init_out *out, size_t len)
{
	uint64_t offered = fs->chan.offered;

	if (len < offsetof(struct fuse_init_out, unused))
		return;
	if ((offered & FUSE_HANDLE_KILLPRIV_V2) && !fs->node) {
		out->flags &= ~(uint32_t)FUSE_HANDLE_KILLPRIV;
		out->flags |= FUSE_HANDLE_KILLPRIV_V2;
		fs->chan.killpriv_v2 = true;
	}
	if ((offered & FUSE_DIRECT_IO_ALLOW_MMAP) && (out->flags & FUSE_INIT_EXT)) {
		out->flags2 |= (uint32_t)(FUSE_DIRECT_IO_ALLOW_MMAP >> 32);
		fs->chan.direct_io_mmap = true;
	}
}

static ssize_t chan_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fs *fs = userdata;

	if (count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		const struct fuse_out_header *oh = iov[0].iov_base;
		uint64_t want = atomic_load(&fs->chan.init_unique);
		if (want && oh->unique == want && oh->error == 0 &&
		    atomic_compare_exchange_strong(&fs->chan.init_unique, &want, 0))
			patch_init(fs, iov[1].iov_base, iov[1].iov_len);
	}
	return writev(fd, iov, count);
}

int fs_chan_attach(struct fs *fs)
{
	static const struct fuse_custom_io io = {.read = chan_read, .writev = chan_writev};

	return fuse_session_custom_io(fs->se, &io, fuse_session_fd(fs->se));
}

bool fs_chan_kill_suidgid(void)
{
	return cur.kill_suidgid;
}

/* Clear what a write, truncate or chown by this caller clears on ext4:
 * set-user-ID always, set-group-ID if the group may execute or the caller
 * is not in the file's group (and is not root). */
mode_t fs_chan_killed_mode(fuse_req_t req, mode_t mode, gid_t file_gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	bool in_group = ctx->uid == 0 || ctx->gid == file_gid;

	mode &= ~(mode_t)S_ISUID;
	if (!(mode & S_ISGID))
		return mode;
	if (!in_group && !(mode & S_IXGRP)) {
		gid_t groups[64];
		int n = fuse_req_getgroups(req, 64, groups);
		for (int i = 0; i < n && i < 64 && !in_group; i++)
			in_group = groups[i] == file_gid;
	}
	if ((mode & S_IXGRP) || !in_group)
		mode &= ~(mode_t)S_ISGID;
	return mode;
}

static const char *const op_name[FS_CHAN_OPS] = {
    [FUSE_LOOKUP] = "lookup",
    [FUSE_FORGET] = "forget",
    [FUSE_GETATTR] = "getattr",
    [FUSE_SETATTR] = "setattr",
    [FUSE_READLINK] = "readlink",
    [FUSE_SYMLINK] = "symlink",
    [FUSE_MKNOD] = "mknod",
    [FUSE_MKDIR] = "mkdir",
    [FUSE_UNLINK] = "unlink",
    [FUSE_RMDIR] = "rmdir",
    [FUSE_RENAME] = "rename",
    [FUSE_LINK] = "link",
    [FUSE_OPEN] = "open",
    [FUSE_READ] = "read",
    [FUSE_WRITE] = "write",
    [FUSE_STATFS] = "statfs",
    [FUSE_RELEASE] = "release",
    [FUSE_FSYNC] = "fsync",
    [FUSE_SETXATTR] = "setxattr",
    [FUSE_GETXATTR] = "getxattr",
    [FUSE_LISTXATTR] = "listxattr",
    [FUSE_REMOVEXATTR] = "removexattr",
    [FUSE_FLUSH] = "flush",
    [FUSE_INIT] = "init",
    [FUSE_OPENDIR] = "opendir",
    [FUSE_READDIR] = "readdir",
    [FUSE_RELEASEDIR] = "releasedir",
    [FUSE_FSYNCDIR] = "fsyncdir",
    [FUSE_ACCESS] = "access",
    [FUSE_CREATE] = "create",
    [FUSE_INTERRUPT] = "interrupt",
    [FUSE_BATCH_FORGET] = "batch_forget",
    [FUSE_FALLOCATE] = "fallocate",
    [FUSE_READDIRPLUS] = "readdirplus",
    [FUSE_RENAME2] = "rename2",
    [FUSE_LSEEK] = "lseek",
};

/* Append to buf; *used grows past len when it does not fit. */
static void put(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
	va_list ap;
	size_t room = *used < len ? len - *used : 0;

	va_start(ap, fmt);
	int n = vsnprintf(room ? buf + *used : NULL, room, fmt, ap);
	va_end(ap);
	*used += n > 0 ? (size_t)n : 0;
}

int fs_chan_json(struct fs *fs, char *buf, size_t len)
{
	uint64_t c[FS_CHAN_OPS], total = 0;
	size_t used = 0;
	bool first = true;

	/* The total is the sum of the counts read, not a counter of its own:
	 * a reader then always sees the two agree, however requests race it. */
	for (uint32_t op = 0; op < FS_CHAN_OPS; op++) {
		c[op] = atomic_load(&fs->chan.by_op[op]);
		total += c[op];
	}
	put(buf, len, &used,
	    "{\"requests\":%" PRIu64 ",\"killpriv_v2\":%s,\"direct_io_mmap\":%s,"
	    "\"max_background\":%u,\"by_op\":{",
	    total, fs->chan.killpriv_v2 ? "true" : "false",
	    fs->chan.direct_io_mmap ? "true" : "false", fs->chan.max_background);
	for (uint32_t op = 0; op < FS_CHAN_OPS; op++) {
		if (!c[op])
			continue;
		if (op && op_name[op])
			put(buf, len, &used, "%s\"%s\":%" PRIu64, first ? "" : ",", op_name[op],
			    c[op]);
		else
			put(buf, len, &used, "%s\"op%u\":%" PRIu64, first ? "" : ",", op, c[op]);
		first = false;
	}
	put(buf, len, &used, "}}");
	return used < len ? (int)used : -ENOSPC;
}
