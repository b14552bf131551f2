/*
 * fusefloor.c -- the floor under every FUSE create: a file system that does
 * nothing, for bench/metabench's "FUSE floor" row.
 *
 *     fusefloor MOUNTPOINT      (stays in the foreground; fusermount3 -u ends it)
 *
 * Why.  An open(O_CREAT) of a new name on FUSE is two synchronous round
 * trips whatever the daemon does: LOOKUP (the kernel has not seen the name)
 * and CREATE, then RELEASE in the background at close.  How much of a
 * spacefs create is that protocol, and how much is spacefs, can only be
 * told by measuring the protocol alone on the same machine in the same
 * minutes: here every LOOKUP below the root is a miss, every CREATE or
 * MKDIR is answered at once with a new inode number, nothing is stored.
 * One thread serves the requests (libfuse's single-threaded loop), the
 * cheapest way a daemon can read and answer /dev/fuse, so the row is a
 * floor and not a competitor: it cannot list, read or write anything.
 *
 * The only thing kept is the names of the directories made in the root (a
 * few, by metabench), so that a path through one is found again.
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define FLOOR_DIR_BASE (1ULL << 40) /* inode numbers of the root's directories */
#define FLOOR_DIRS     256

static atomic_ullong next_ino = 2;
static char root_dirs[FLOOR_DIRS][256]; /* one thread: no lock needed */
static unsigned nroot_dirs;

/* The inode number of directory `name` in the root, or 0 if never made. */
static fuse_ino_t root_dir(const char *name)
{
	for (unsigned i = 0; i < nroot_dirs; i++)
		if (strcmp(root_dirs[i], name) == 0)
			return FLOOR_DIR_BASE + i;
	return 0;
}

static void fill(struct fuse_entry_param *e, fuse_ino_t ino, mode_t mode)
{
	memset(e, 0, sizeof(*e));
	e->ino = ino;
	e->generation = 1;
	e->attr.st_ino = ino;
	e->attr.st_mode = mode;
	e->attr.st_nlink = S_ISDIR(mode) ? 2 : 1;
	e->attr_timeout = 1.0;
	e->entry_timeout = 1.0;
}

static void floor_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent == FUSE_ROOT_ID && root_dir(name)) {
		fill(&e, root_dir(name), S_IFDIR | 0777);
	} else {
		memset(&e, 0, sizeof(e)); /* a negative entry: every other name is new */
		e.entry_timeout = 1.0;
	}
	fuse_reply_entry(req, &e);
}

static void floor_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	memset(&st, 0, sizeof(st));
	st.st_ino = ino;
	st.st_mode = ino == FUSE_ROOT_ID || ino >= FLOOR_DIR_BASE ? S_IFDIR | 0777 : S_IFREG | 0644;
	st.st_nlink = 1;
	fuse_reply_attr(req, &st, 1.0);
}

static void floor_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fuse_entry_param e;

	(void)mode;
	if (parent != FUSE_ROOT_ID) {
		fill(&e, atomic_fetch_add(&next_ino, 1), S_IFDIR | 0777);
	} else if (root_dir(name)) {
		fuse_reply_err(req, EEXIST);
		return;
	} else if (nroot_dirs == FLOOR_DIRS || strlen(name) >= sizeof(root_dirs[0])) {
		fuse_reply_err(req, ENOSPC);
		return;
	} else {
		strcpy(root_dirs[nroot_dirs], name);
		fill(&e, FLOOR_DIR_BASE + nroot_dirs++, S_IFDIR | 0777);
	}
	fuse_reply_entry(req, &e);
}

static void floor_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	struct fuse_entry_param e;

	(void)parent;
	(void)name;
	(void)mode;
	fill(&e, atomic_fetch_add(&next_ino, 1), S_IFREG | 0644);
	fi->noflush = 1; /* as spacefs: no FLUSH at close */
	fuse_reply_create(req, &e, fi);
}

static void floor_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void floor_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	(void)ino;
	(void)n;
	fuse_reply_none(req);
}

static const struct fuse_lowlevel_ops floor_ops = {
    .lookup = floor_lookup,
    .getattr = floor_getattr,
    .mkdir = floor_mkdir,
    .create = floor_create,
    .release = floor_release,
    .forget = floor_forget,
};

int main(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: fusefloor MOUNTPOINT\n");
		return 2;
	}
	char *fargv[] = {argv[0], NULL};
	struct fuse_args args = FUSE_ARGS_INIT(1, fargv);
	struct fuse_session *se = fuse_session_new(&args, &floor_ops, sizeof(floor_ops), NULL);
	if (!se) {
		fprintf(stderr, "fusefloor: cannot start a FUSE session\n");
		return 1;
	}
	if (fuse_session_mount(se, argv[1]) != 0) {
		fprintf(stderr, "fusefloor: cannot mount %s\n", argv[1]);
		fuse_session_destroy(se);
		return 1;
	}
	int rc = fuse_session_loop(se);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	if (rc)
		fprintf(stderr, "fusefloor: %s: %s\n", argv[1], strerror(rc < 0 ? -rc : rc));
	return rc ? 1 : 0;
}
