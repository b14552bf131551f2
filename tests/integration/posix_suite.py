#!/usr/bin/env python3
"""posix_suite.py -- a differential POSIX filesystem conformance suite.

No POSIX filesystem test suite (pjdfstest, xfstests) is packaged for the
build hosts, so spacefs carries its own, built the differential way: every
scenario runs once in a directory on a reference filesystem (ext4, the
oracle) and once in a directory on the filesystem under test, and the two
*observations* must be equal.

A scenario is a function taking an Obs (an observation recorder bound to a
fresh, empty base directory, mode 0755, owned by root, umask 022).  It does
its operations through os.* calls and records what it sees:

  * return values, and errno names (errno.errorcode) for failures;
  * normalized stat fields: type, permission bits, nlink, uid, gid, size
    (regular files and symlinks only: directory sizes are filesystem
    specific), rdev for device nodes;
  * time RELATIONS ("mtime same/later" since a snapshot), never absolute
    times, except times that were set explicitly with utime (deterministic);
  * inode equality relations inside the scenario, never inode numbers;
  * sorted directory listings, content digests with a zero-block map.

Never compared: absolute inode numbers, st_dev, st_blocks, st_blksize,
atime (except right after an explicit utime), directory sizes.

Usage as a module:

    results = run_suite(ref_dir, test_dir, uid_nonroot=65534)
    # [(scenario_name, passed, detail), ...]

A scenario the oracle itself cannot run (ext4 limits, e.g. xattr values
beyond what fits in an inode without ea_inode) comes back passed with a
detail starting "SKIP " (TAP: "ok N - name # SKIP ...").

As a program (must run as root):

    python3 posix_suite.py REF_DIR TEST_DIR [-k PATTERN] [-v]

prints TAP, one line per scenario.  -k selects scenarios whose name
matches the regular expression PATTERN; -v prints the whole observation of
failing scenarios (and of passing ones with -vv).
"""
import argparse
import ctypes
import errno
import fcntl
import hashlib
import json
import mmap
import os
import platform
import random
import re
import shutil
import stat
import struct
import sys
import threading
import time
import traceback

# --------------------------------------------------------------------------
# libc helpers for calls the os module does not offer

libc = ctypes.CDLL(None, use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
O_TMPFILE = getattr(os, "O_TMPFILE", 0o20200000)

_SYS = {
    "x86_64": {"renameat2": 316, "getdents64": 217},
    "aarch64": {"renameat2": 276, "getdents64": 61},
}.get(platform.machine(), {})


def _raise_errno(what):
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e), what)


def renameat2(old, new, flags, olddirfd=AT_FDCWD, newdirfd=AT_FDCWD):
    o, n = os.fsencode(old), os.fsencode(new)
    if hasattr(libc, "renameat2"):
        f = libc.renameat2
        f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        r = f(olddirfd, o, newdirfd, n, flags)
    else:
        f = libc.syscall
        r = f(ctypes.c_long(_SYS["renameat2"]), ctypes.c_int(olddirfd), ctypes.c_char_p(o),
              ctypes.c_int(newdirfd), ctypes.c_char_p(n), ctypes.c_uint(flags))
    if r != 0:
        _raise_errno(old)


def fallocate(fd, mode, offset, length):
    f = libc.fallocate
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if f(fd, mode, offset, length) != 0:
        _raise_errno("fallocate")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path, atime, mtime, flags=0, dirfd=AT_FDCWD):
    """atime/mtime: ns integer, or UTIME_NOW / UTIME_OMIT (as ('NOW',) etc)."""
    def ts(v):
        if v == "NOW":
            return _Timespec(0, UTIME_NOW)
        if v == "OMIT":
            return _Timespec(0, UTIME_OMIT)
        return _Timespec(v // 10**9, v % 10**9)
    arr = (_Timespec * 2)(ts(atime), ts(mtime))
    f = libc.utimensat
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    if f(dirfd, os.fsencode(path), ctypes.byref(arr), flags) != 0:
        _raise_errno(path)


def getxattr_raw(path, name, size):
    """getxattr(2) with a caller-chosen buffer size (0 = ask the size)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    f = libc.getxattr
    f.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    f.restype = ctypes.c_ssize_t
    n = f(os.fsencode(path), os.fsencode(name), buf if size else None, size)
    if n < 0:
        _raise_errno(path)
    return n if size == 0 else buf.raw[:n]


def getdents_fd(fd, bufsize=32768, limit=None):
    """[(name bytes, d_type, d_ino, d_off)] from getdents64 on an open
    directory, from its current position to the end (or `limit` entries)."""
    out = []
    buf = ctypes.create_string_buffer(bufsize)
    while limit is None or len(out) < limit:
        n = libc.syscall(ctypes.c_long(_SYS["getdents64"]), ctypes.c_int(fd), buf,
                         ctypes.c_uint(len(buf)))
        if n < 0:
            _raise_errno("getdents64")
        if n == 0:
            break
        raw, pos = buf.raw[:n], 0
        while pos < n:
            d_ino, d_off, reclen, d_type = struct.unpack_from("=QqHB", raw, pos)
            name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
            out.append((name, d_type, d_ino, d_off))
            pos += reclen
    return out


def getdents(path):
    """[(name bytes, d_type, d_ino)] straight from getdents64, dots included."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [e[:3] for e in getdents_fd(fd)]
    finally:
        os.close(fd)


DT_NAMES = {0: "unknown", 1: "fifo", 2: "chr", 4: "dir", 6: "blk", 8: "reg", 10: "lnk", 12: "sock"}

# --------------------------------------------------------------------------
# observations

TICK = 0.02  # seconds between a time snapshot and the change it brackets
FAIL = object()  # returned by Obs.call when the call raised OSError


class OracleLimited(Exception):
    """The reference filesystem cannot run this scenario (raised on ref only)."""


class ScenarioSkip(Exception):
    """A precondition of the scenario does not hold on one side (e.g. the
    test mount is nodev); the scenario is skipped, not failed."""


def errname(e):
    return "E:" + errno.errorcode.get(e, str(e))


TYPE_NAMES = {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFLNK: "lnk",
              stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock", stat.S_IFCHR: "chr",
              stat.S_IFBLK: "blk"}


def nstat(st):
    t = stat.S_IFMT(st.st_mode)
    d = {"type": TYPE_NAMES.get(t, oct(t)), "mode": oct(stat.S_IMODE(st.st_mode)),
         "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid}
    if t in (stat.S_IFREG, stat.S_IFLNK):
        d["size"] = st.st_size
    if t in (stat.S_IFCHR, stat.S_IFBLK):
        d["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    return d


def digest(data):
    """Short bytes as repr; long ones as length, hash and a 4 KiB zero map
    ("d3 z2 d1": 3 blocks with data, 2 all-zero, 1 with data)."""
    if len(data) <= 64:
        return repr(bytes(data))
    runs, zero = [], bytes(4096)
    for i in range(0, len(data), 4096):
        blk = data[i:i + 4096]
        k = "z" if blk == zero[:len(blk)] else "d"
        if runs and runs[-1][0] == k:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    return {"len": len(data), "sha": hashlib.sha256(data).hexdigest()[:16],
            "blocks": " ".join(f"{k}{n}" for k, n in runs)}


def norm(v):
    if v is None:
        return "ok"
    if isinstance(v, (bool, int, str, float)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return digest(bytes(v))
    if isinstance(v, os.stat_result):
        return nstat(v)
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): norm(x) for k, x in v.items()}
    return repr(v)


def rel(new, old):
    return "same" if new == old else "later" if new > old else "EARLIER"


def pattern(n, seed=1):
    return random.Random(seed * 7919 + n).randbytes(n)


def read_all(path_or_fd, chunk=1 << 20):
    fd = os.open(path_or_fd, os.O_RDONLY) if not isinstance(path_or_fd, int) else path_or_fd
    try:
        parts, off = [], 0
        while True:
            b = os.pread(fd, chunk, off)
            if not b:
                return b"".join(parts)
            parts.append(b)
            off += len(b)
    finally:
        if not isinstance(path_or_fd, int):
            os.close(fd)


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


class Obs:
    """Records one run of a scenario in base directory `base`."""

    def __init__(self, base, is_ref=False, uid=65534):
        self.base = base
        self.is_ref = is_ref
        self.uid = uid
        self.out = []
        self.snaps = {}
        self.inos = {}
        self.fds = set()

    # paths and recording
    def p(self, *parts):
        return os.path.join(self.base, *parts)

    def rec(self, label, value):
        self.out.append([label, norm(value)])

    def call(self, label, fn, *a, **kw):
        """Call fn; record its normalized result or the errno name."""
        try:
            r = fn(*a, **kw)
        except OSError as e:
            self.rec(label, errname(e.errno))
            return FAIL
        self.rec(label, r)
        return r

    def limited(self, reason):
        """Give up: the oracle cannot do this.  Only raises on the oracle."""
        if self.is_ref:
            raise OracleLimited(reason)

    def skip_if(self, cond, reason):
        """Give up on either side when a precondition fails."""
        if cond:
            raise ScenarioSkip(("oracle: " if self.is_ref else "test side: ") + reason)

    # files
    def open(self, label, path, flags, mode=0o644, **kw):
        try:
            fd = os.open(path, flags, mode, **kw)
        except OSError as e:
            self.rec(label, errname(e.errno))
            return None
        self.fds.add(fd)
        self.rec(label, "fd")
        return fd

    def close(self, fd):
        if fd is not None and fd in self.fds:
            self.fds.discard(fd)
            os.close(fd)

    def closeall(self):
        for fd in list(self.fds):
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()

    def mkfile(self, name, data=b"", mode=None):
        """Create (or rewrite) name with data; an explicit mode is set
        exactly (chmod, not subject to the umask)."""
        write_file(self.p(name), data, 0o644 if mode is None else mode)
        if mode is not None:
            os.chmod(self.p(name), mode)
        return self.p(name)

    def content(self, label, path):
        return self.call(label, read_all, path)

    def lstat(self, label, path):
        return self.call(label, os.lstat, path)

    def stat(self, label, path):
        return self.call(label, os.stat, path)

    def fstat(self, label, fd):
        return self.call(label, os.fstat, fd)

    def nlink(self, label, path):
        return self.call(label, lambda: os.lstat(path).st_nlink)

    def mode(self, label, path):
        return self.call(label, lambda: oct(stat.S_IMODE(os.lstat(path).st_mode)))

    def ls(self, label, path=None):
        return self.call(label, lambda: sorted(os.listdir(path or self.base)))

    def tree(self, label, path=None):
        """Sorted [relpath, type, mode, size/target] of everything under path."""
        root = path or self.base
        is_bytes = isinstance(root, bytes)
        out = []

        def walk(d, prefix):
            for name in sorted(os.listdir(d)):
                full = os.path.join(d, name)
                relp = os.path.join(prefix, name) if prefix else name
                st = os.lstat(full)
                t = TYPE_NAMES.get(stat.S_IFMT(st.st_mode), "?")
                extra = None
                if t == "reg":
                    extra = st.st_size
                elif t == "lnk":
                    extra = os.readlink(full)
                out.append([relp if not is_bytes else repr(relp), t,
                            oct(stat.S_IMODE(st.st_mode)), st.st_nlink,
                            extra if not isinstance(extra, bytes) else repr(extra)])
                if t == "dir":
                    walk(full, relp)
        try:
            walk(root, b"" if is_bytes else "")
        except OSError as e:
            self.rec(label, errname(e.errno))
            return FAIL
        self.rec(label, out)
        return out

    # time relations
    def _st(self, path=None, fd=None, follow=False):
        if fd is not None:
            return os.fstat(fd)
        return os.stat(path) if follow else os.lstat(path)

    def snap(self, key, path=None, fd=None, follow=False, tick=True):
        self.snaps[key] = self._st(path, fd, follow)
        if tick:
            time.sleep(TICK)

    def since(self, label, key, path=None, fd=None, follow=False, fields=("mtime", "ctime")):
        try:
            st = self._st(path, fd, follow)
        except OSError as e:
            self.rec(label, errname(e.errno))
            return
        old = self.snaps[key]
        self.rec(label, {f: rel(getattr(st, f"st_{f}_ns"), getattr(old, f"st_{f}_ns"))
                         for f in fields})

    def times(self, label, path, follow=False, fields=("atime", "mtime")):
        """Exact times (only for explicitly set ones)."""
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except OSError as e:
            self.rec(label, errname(e.errno))
            return
        self.rec(label, {f: getattr(st, f"st_{f}_ns") for f in fields})

    # inode relations
    def same_ino(self, label, a, b, follow=False):
        def ino(x):
            if isinstance(x, int):
                return os.fstat(x).st_ino
            return (os.stat(x) if follow else os.lstat(x)).st_ino
        self.call(label, lambda: ino(a) == ino(b))

    # unprivileged child
    def as_user(self, label, fn, uid=None, gid=None):
        """Run fn(Obs) in a forked child with uid (and gid) dropped, cwd at
        base (so the child reaches base without searching its ancestors);
        the child's observation comes back as JSON through a pipe and its
        exit status is recorded with it."""
        uid = self.uid if uid is None else uid
        gid = uid if gid is None else gid
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(r)
                os.chdir(self.base)
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                sub = Obs(".", self.is_ref, uid)
                fn(sub)
                sub.closeall()
                payload = sub.out
            except BaseException as e:  # noqa: BLE001 -- report anything
                detail = errname(e.errno) if isinstance(e, OSError) else str(e)
                payload = [["!child-exception", f"{type(e).__name__}: {detail}"]]
                code = 3
            try:
                data = memoryview(json.dumps(payload).encode())
                while data:
                    data = data[os.write(w, data):]
            finally:
                os._exit(code)
        os.close(w)
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        obs = json.loads(b"".join(chunks) or b"null")
        self.rec(label, {"exit": os.waitstatus_to_exitcode(status), "obs": obs})


# --------------------------------------------------------------------------
# scenario registry

SCENARIOS = []  # [(name, fn)]


def scenario(name=None):
    def deco(fn):
        add(name or fn.__name__, fn)
        return fn
    return deco


def add(name, fn):
    if any(n == name for n, _ in SCENARIOS):
        raise ValueError(f"duplicate scenario {name}")
    SCENARIOS.append((name, fn))


# ==========================================================================
# open(2) flags on every kind of target

OPEN_TARGETS = ["missing", "file", "dir", "symfile", "symdangle", "symdir"]
OPEN_FLAGS = [
    ("rdonly", os.O_RDONLY),
    ("wronly", os.O_WRONLY),
    ("rdwr", os.O_RDWR),
    ("creat", os.O_CREAT | os.O_WRONLY),
    ("creat_excl", os.O_CREAT | os.O_EXCL | os.O_WRONLY),
    ("trunc", os.O_TRUNC | os.O_WRONLY),
    ("trunc_rdonly", os.O_TRUNC | os.O_RDONLY),
    ("creat_trunc_rdwr", os.O_CREAT | os.O_TRUNC | os.O_RDWR),
    ("append", os.O_APPEND | os.O_WRONLY),
    ("directory", os.O_DIRECTORY | os.O_RDONLY),
    ("nofollow", os.O_NOFOLLOW | os.O_RDONLY),
    ("creat_directory", os.O_CREAT | os.O_DIRECTORY | os.O_RDONLY),
]


def _open_setup(o, kind):
    t = o.p("t")
    if kind == "file":
        o.mkfile("t", b"hello world")
    elif kind == "dir":
        os.mkdir(t)
    elif kind == "symfile":
        o.mkfile("f", b"hello world")
        os.symlink("f", t)
    elif kind == "symdangle":
        os.symlink("nowhere", t)
    elif kind == "symdir":
        os.mkdir(o.p("d"))
        os.symlink("d", t)
    return t


def _open_case(kind, flags):
    def fn(o):
        t = _open_setup(o, kind)
        real = o.p("f") if kind == "symfile" else t
        if kind in ("file", "symfile"):
            o.snap("before", real)
        fd = o.open("open", t, flags, 0o640)
        if kind in ("file", "symfile"):
            o.since("times after open", "before", real)
        if fd is not None:
            o.fstat("fstat", fd)
            if flags & os.O_ACCMODE != os.O_RDONLY:
                o.call("write", os.write, fd, b"XY")
                o.fstat("fstat after write", fd)
            if flags & os.O_ACCMODE != os.O_WRONLY:
                o.call("read", os.pread, fd, 100, 0)
            o.close(fd)
        o.tree("tree")
        if kind == "symdangle":
            o.content("dangling target", o.p("nowhere"))
    return fn


for _k in OPEN_TARGETS:
    for _fname, _fl in OPEN_FLAGS:
        add(f"open/{_k}/{_fname}", _open_case(_k, _fl))


@scenario("open/dir_wronly_eisdir")
def _(o):
    os.mkdir(o.p("d"))
    o.open("wronly", o.p("d"), os.O_WRONLY)
    o.open("rdwr", o.p("d"), os.O_RDWR)
    o.open("creat", o.p("d"), os.O_CREAT | os.O_RDONLY)


@scenario("open/dir_read_write_fd_errors")
def _(o):
    os.mkdir(o.p("d"))
    fd = o.open("open dir", o.p("d"), os.O_RDONLY)
    o.call("read dir fd", os.read, fd, 10)
    o.call("write dir fd", os.write, fd, b"x")
    o.close(fd)
    o.mkfile("f", b"abc")
    fd = o.open("open rdonly", o.p("f"), os.O_RDONLY)
    o.call("write rdonly fd", os.write, fd, b"x")
    o.close(fd)
    fd = o.open("open wronly", o.p("f"), os.O_WRONLY)
    o.call("read wronly fd", os.read, fd, 10)
    o.close(fd)


@scenario("open/creat_mode_umask_special")
def _(o):
    for i, m in enumerate([0o777, 0o4777, 0o2777, 0o1777, 0o7777, 0o000, 0o444]):
        fd = o.open(f"creat {oct(m)}", o.p(f"f{i}"), os.O_CREAT | os.O_WRONLY, m)
        o.close(fd)
        o.lstat(f"stat {oct(m)}", o.p(f"f{i}"))


@scenario("open/tmpfile")
def _(o):
    fd = o.open("O_TMPFILE", o.base, O_TMPFILE | os.O_RDWR, 0o600)
    if fd is None:
        return
    o.call("write", os.write, fd, b"tmpdata")
    o.fstat("fstat", fd)
    o.ls("listing")
    o.call("linkat", os.link, f"/proc/self/fd/{fd}", o.p("named"), follow_symlinks=True)
    o.fstat("fstat after link", fd)
    o.close(fd)
    o.content("content", o.p("named"))


@scenario("open/o_direct")
def _(o):
    fd = o.open("open O_DIRECT", o.p("f"), os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    if fd is None:
        return
    buf = mmap.mmap(-1, 8192)
    buf.write(pattern(8192))
    o.call("write", os.write, fd, buf)
    rb = mmap.mmap(-1, 8192)
    o.call("readv", os.preadv, fd, [rb], 0)
    o.rec("read back", bytes(rb))
    o.close(fd)
    o.content("content", o.p("f"))


@scenario("open/o_sync_dsync")
def _(o):
    for name, fl in (("sync", os.O_SYNC), ("dsync", os.O_DSYNC)):
        fd = o.open(name, o.p(name), os.O_CREAT | os.O_WRONLY | fl)
        o.call("write", os.write, fd, pattern(10000))
        o.close(fd)
        o.content(f"content {name}", o.p(name))


@scenario("open/creat_through_dangling_symlink_chain")
def _(o):
    os.symlink("b", o.p("a"))
    os.symlink("sub/c", o.p("b"))
    os.mkdir(o.p("sub"))
    fd = o.open("creat via chain", o.p("a"), os.O_CREAT | os.O_WRONLY)
    o.close(fd)
    o.tree("tree")


# ==========================================================================
# ENOENT / ENOTDIR / trailing slash on every path operation


def _path_ops(o):
    f = o.p("existing")
    return [
        ("open", lambda p: os.close(os.open(p, os.O_RDONLY))),
        ("creat", lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))),
        ("mkdir", lambda p: os.mkdir(p)),
        ("rmdir", lambda p: os.rmdir(p)),
        ("unlink", lambda p: os.unlink(p)),
        ("stat", lambda p: os.stat(p)),
        ("chmod", lambda p: os.chmod(p, 0o600)),
        ("chown", lambda p: os.chown(p, 1, 1)),
        ("truncate", lambda p: os.truncate(p, 0)),
        ("utime", lambda p: os.utime(p, ns=(10**9, 10**9))),
        ("listdir", lambda p: sorted(os.listdir(p))),
        ("mkfifo", lambda p: os.mkfifo(p)),
        ("symlink", lambda p: os.symlink("x", p)),
        ("link_to", lambda p: os.link(f, p)),
        ("link_from", lambda p: os.link(p, o.p("new"))),
        ("rename_from", lambda p: os.rename(p, o.p("new"))),
        ("rename_to", lambda p: os.rename(f, p)),
        ("readlink", lambda p: os.readlink(p)),
        ("setxattr", lambda p: os.setxattr(p, "user.a", b"1")),
    ]


PATH_KINDS = {
    "noent_parent": lambda o: o.p("missing", "x"),
    "notdir_parent": lambda o: o.p("file", "x"),
    "trailing_slash_file": lambda o: o.p("file") + "/",
}


def _path_case(opname, kind):
    def fn(o):
        o.mkfile("existing", b"e")
        o.mkfile("file", b"f")
        op = dict(_path_ops(o))[opname]
        o.call(opname, op, PATH_KINDS[kind](o))
        o.tree("tree")
    return fn


for _op in [n for n, _ in _path_ops(Obs("/"))]:
    for _kind in PATH_KINDS:
        add(f"path/{_kind}/{_op}", _path_case(_op, _kind))


@scenario("path/symlink_loop_component")
def _(o):
    os.symlink("loop", o.p("loop"))
    for name, op in _path_ops(o)[:8]:
        o.call(name, op, o.p("loop", "x"))


@scenario("path/empty_and_dots")
def _(o):
    os.mkdir(o.p("d"))
    o.call("stat empty", os.stat, "")
    o.call("mkdir d/.", os.mkdir, o.p("d", "."))
    o.call("mkdir d/..", os.mkdir, o.p("d", ".."))
    o.call("unlink d/.", os.unlink, o.p("d", "."))
    o.call("creat d/.", lambda: os.open(o.p("d", "."), os.O_CREAT | os.O_WRONLY))
    o.same_ino("d/.. is base", o.p("d", ".."), o.base)
    o.same_ino("d/. is d", o.p("d", "."), o.p("d"))


# ==========================================================================
# data: read / write / pread / pwrite, holes


def _pwrite_case(off, size, prefill):
    def fn(o):
        path = o.p("f")
        if prefill:
            o.mkfile("f", b"\xaa" * prefill)
        fd = o.open("open", path, os.O_RDWR | os.O_CREAT)
        data = pattern(size, off)
        o.call("pwrite", os.pwrite, fd, data, off)
        o.fstat("fstat", fd)
        o.call("pread back", lambda: os.pread(fd, size, off) == data)
        o.call("pread past EOF", os.pread, fd, 10, max(off + size, prefill) + 5)
        o.call("pread straddling EOF", lambda: len(os.pread(fd, 100, max(off + size, prefill) - 10)))
        if off and not prefill:
            o.call("hole reads zeros", lambda: os.pread(fd, off, 0) == bytes(off))
        o.close(fd)
        o.content("content after close", path)
    return fn


for _off in [0, 1, 4095, 4096, 65535, 65536, 131071, 196613, 1 << 20]:
    for _size in [1, 5000, 70000]:
        add(f"data/pwrite/off{_off}/len{_size}", _pwrite_case(_off, _size, 0))
for _off in [0, 1, 4095, 65535, 65636, 190000]:
    for _size in [1, 5000, 70000]:
        add(f"data/overwrite/off{_off}/len{_size}", _pwrite_case(_off, _size, 200000))


@scenario("data/sequential_write_read_chunks")
def _(o):
    data = pattern(3 * 1024 * 1024 + 777)
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_WRONLY)
    for i in range(0, len(data), 100003):
        os.write(fd, data[i:i + 100003])
    o.close(fd)
    fd = o.open("reopen", o.p("f"), os.O_RDONLY)
    for chunk in (1000, 65536, 1 << 20):
        os.lseek(fd, 0, os.SEEK_SET)
        parts = []
        while True:
            b = os.read(fd, chunk)
            if not b:
                break
            parts.append(b)
        o.rec(f"read in {chunk}-byte chunks equal", b"".join(parts) == data)
    o.close(fd)
    o.lstat("stat", o.p("f"))


def _concurrent_case(block, nthreads):
    def fn(o):
        total = 1 << 20
        nblocks = total // block
        o.mkfile("f", b"")
        fd = os.open(o.p("f"), os.O_RDWR)
        os.ftruncate(fd, total)
        errors = []

        def worker(t):
            try:
                for rnd in range(2):
                    for b in range(t, nblocks, nthreads):
                        os.pwrite(fd, bytes([(b * 7 + rnd * 13 + 1) % 251]) * block, b * block)
            except OSError as e:
                errors.append(errname(e.errno))
        ts = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        os.close(fd)
        want = b"".join(bytes([(b * 7 + 13 + 1) % 251]) * block for b in range(nblocks))
        want += bytes(total - len(want))
        got = read_all(o.p("f"))
        o.rec("errors", errors)
        o.rec("content as expected", got == want)
        bad = [i for i in range(0, total, block) if got[i:i + block] != want[i:i + block]]
        o.rec("bad blocks (first 10)", bad[:10])
    return fn


for _blk, _nt in [(4096, 4), (1000, 4), (65536, 3), (3000, 6)]:
    add(f"data/concurrent_disjoint_writers/{_blk}x{_nt}", _concurrent_case(_blk, _nt))


@scenario("data/sparse_far_apart")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    os.pwrite(fd, b"head", 0)
    os.pwrite(fd, b"tail", 10 << 20)
    o.fstat("fstat", fd)
    o.call("middle zero", lambda: os.pread(fd, 1 << 20, 4 << 20) == bytes(1 << 20))
    o.call("tail", os.pread, fd, 10, 10 << 20)
    o.close(fd)


@scenario("data/many_small_files")
def _(o):
    for i in range(60):
        o.mkfile(f"f{i}", pattern(i * 317, i))
    ok = all(read_all(o.p(f"f{i}")) == pattern(i * 317, i) for i in range(60))
    o.rec("all contents", ok)
    o.rec("sizes", [os.lstat(o.p(f"f{i}")).st_size for i in range(60)])


@scenario("data/rewrite_same_size")
def _(o):
    o.mkfile("f", pattern(300000, 1))
    o.mkfile("f", pattern(300000, 2))
    o.content("content", o.p("f"))


@scenario("data/rewrite_shorter")
def _(o):
    o.mkfile("f", pattern(300000, 1))
    with open(o.p("f"), "wb") as fh:
        fh.write(b"short")
    o.content("content", o.p("f"))
    o.lstat("stat", o.p("f"))


@scenario("data/o_trunc_with_other_fd_cached")
def _(o):
    o.mkfile("f", pattern(100000, 2))
    a = o.open("open a", o.p("f"), os.O_RDWR)
    o.call("read through a (fills the cache)", lambda: len(os.pread(a, 100000, 0)))
    m = mmap.mmap(a, 8192)
    b = o.open("open b O_TRUNC", o.p("f"), os.O_RDWR | os.O_TRUNC)
    o.call("write through b", os.write, b, b"ab")
    o.call("read through a", os.pread, a, 100, 0)
    o.call("fstat a", lambda: os.fstat(a).st_size)
    o.close(b)
    m.close()
    o.close(a)
    o.content("content", o.p("f"))


@scenario("data/two_fds_coherent")
def _(o):
    a = o.open("open a", o.p("f"), os.O_CREAT | os.O_RDWR)
    b = o.open("open b", o.p("f"), os.O_RDWR)
    os.write(a, b"written through a")
    o.call("read through b", os.pread, b, 100, 0)
    os.pwrite(b, b"B", 0)
    o.call("read through a", os.pread, a, 100, 0)
    o.close(a)
    o.close(b)


@scenario("data/dup_shares_offset")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    d = os.dup(fd)
    os.write(fd, b"abc")
    os.write(d, b"def")
    o.call("offset", os.lseek, fd, 0, os.SEEK_CUR)
    os.close(d)
    o.close(fd)
    o.content("content", o.p("f"))


@scenario("data/write_zero_bytes")
def _(o):
    o.mkfile("f", b"abc")
    o.snap("b", o.p("f"))
    fd = o.open("open", o.p("f"), os.O_WRONLY)
    o.call("write empty", os.write, fd, b"")
    o.close(fd)
    o.lstat("stat", o.p("f"))
    o.since("times", "b", o.p("f"))


@scenario("data/copy_file_range")
def _(o):
    o.mkfile("src", pattern(200000))
    fi = o.open("open src", o.p("src"), os.O_RDONLY)
    fo = o.open("open dst", o.p("dst"), os.O_CREAT | os.O_WRONLY)
    total = 0
    try:
        while total < 150000:
            n = os.copy_file_range(fi, fo, 150000 - total, 1000 + total, 5000 + total)
            if n == 0:
                break
            total += n
        o.rec("copied", total)
    except OSError as e:
        o.rec("copy_file_range", errname(e.errno))
    o.close(fi)
    o.close(fo)
    o.content("dst", o.p("dst"))


# ==========================================================================
# truncate


def _trunc_case(init, new):
    def fn(o):
        data = pattern(init, 3)
        o.mkfile("f", data)
        fd = o.open("open", o.p("f"), os.O_RDWR)
        o.call("ftruncate", os.ftruncate, fd, new)
        o.fstat("fstat", fd)
        got = os.pread(fd, new + 10, 0)
        o.rec("kept prefix", got[:min(init, new)] == data[:min(init, new)])
        o.rec("grown part zero", got[init:] == bytes(max(0, new - init)))
        o.close(fd)
        o.content("content", o.p("f"))
    return fn


for _init in [0, 5000, 70000, 200000]:
    for _new in [0, 1, 4096, 65536, 65537, 150000]:
        add(f"truncate/{_init}_to_{_new}", _trunc_case(_init, _new))


def _shrink_grow_case(cut):
    def fn(o):
        o.mkfile("f", pattern(200000, 4))
        o.call("truncate down", os.truncate, o.p("f"), cut)
        o.call("truncate up", os.truncate, o.p("f"), 200000)
        data = read_all(o.p("f"))
        o.rec("stale data gone", data[cut:] == bytes(200000 - cut))
        o.rec("prefix kept", data[:cut] == pattern(200000, 4)[:cut])
        o.rec("content", data)
    return fn


for _cut in [1, 4095, 65536, 100000]:
    add(f"truncate/shrink_then_grow/{_cut}", _shrink_grow_case(_cut))


def _shrink_write_beyond_case(cut):
    def fn(o):
        o.mkfile("f", pattern(200000, 5))
        fd = o.open("open", o.p("f"), os.O_RDWR)
        o.call("ftruncate", os.ftruncate, fd, cut)
        o.call("pwrite beyond", os.pwrite, fd, b"END", 190000)
        o.close(fd)
        data = read_all(o.p("f"))
        o.rec("gap zero", data[cut:190000] == bytes(190000 - cut))
        o.rec("content", data)
    return fn


for _cut in [10, 65537]:
    add(f"truncate/shrink_then_write_beyond/{_cut}", _shrink_write_beyond_case(_cut))


@scenario("truncate/errors")
def _(o):
    os.mkdir(o.p("d"))
    o.mkfile("f", b"abc")
    o.call("negative", os.truncate, o.p("f"), -1)
    o.call("dir", os.truncate, o.p("d"), 0)
    os.mkfifo(o.p("fifo"))
    fd = o.open("open rdonly", o.p("f"), os.O_RDONLY)
    o.call("ftruncate rdonly fd", os.ftruncate, fd, 0)
    o.close(fd)
    o.lstat("stat", o.p("f"))


def _trunc_times_case(how):
    def fn(o):
        o.mkfile("f", b"abcdef")
        if how == "o_trunc_empty":
            os.truncate(o.p("f"), 0)
        o.snap("a", o.p("f"))
        if how == "shorter":
            o.call("truncate 6 -> 3", os.truncate, o.p("f"), 3)
        elif how == "longer":
            o.call("truncate 6 -> 9", os.truncate, o.p("f"), 9)
        elif how == "same_size_path":
            o.call("truncate 6 -> 6", os.truncate, o.p("f"), 6)
        elif how == "same_size_fd":
            fd = os.open(o.p("f"), os.O_RDWR)
            o.call("ftruncate 6 -> 6", os.ftruncate, fd, 6)
            os.close(fd)
        elif how in ("o_trunc", "o_trunc_empty"):
            o.call("open O_TRUNC", lambda: os.close(os.open(o.p("f"), os.O_RDWR | os.O_TRUNC)))
        o.since("times", "a", o.p("f"))
        o.lstat("stat", o.p("f"))
    return fn


for _how in ["shorter", "longer", "same_size_path", "same_size_fd", "o_trunc", "o_trunc_empty"]:
    add(f"truncate/times/{_how}", _trunc_times_case(_how))


# ==========================================================================
# unlink, rmdir, mkdir


@scenario("unlink/file")
def _(o):
    o.mkfile("f", b"x")
    o.snap("dir", o.base)
    o.call("unlink", os.unlink, o.p("f"))
    o.since("dir times", "dir", o.base)
    o.ls("listing")
    o.lstat("stat", o.p("f"))


@scenario("unlink/errors")
def _(o):
    os.mkdir(o.p("d"))
    o.call("noent", os.unlink, o.p("nope"))
    o.call("dir", os.unlink, o.p("d"))
    o.call("dot", os.unlink, o.p("d", "."))
    o.ls("listing")


@scenario("unlink/symlink_to_dir")
def _(o):
    os.mkdir(o.p("d"))
    os.symlink("d", o.p("l"))
    o.call("unlink link", os.unlink, o.p("l"))
    o.tree("tree")
    os.symlink("d", o.p("l2"))
    o.call("unlink link/", os.unlink, o.p("l2") + "/")
    o.tree("tree 2")


@scenario("unlink/special_files")
def _(o):
    os.mkfifo(o.p("fifo"))
    os.mknod(o.p("chr"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.symlink("x", o.p("dangling"))
    for n in ("fifo", "chr", "dangling"):
        o.call(f"unlink {n}", os.unlink, o.p(n))
    o.ls("listing")


@scenario("unlink/hardlink_keeps_other")
def _(o):
    o.mkfile("a", b"data")
    os.link(o.p("a"), o.p("b"))
    o.snap("b", o.p("b"))
    o.call("unlink a", os.unlink, o.p("a"))
    o.lstat("stat b", o.p("b"))
    o.since("b times", "b", o.p("b"))
    o.content("b content", o.p("b"))


@scenario("rmdir/empty_and_parent_nlink")
def _(o):
    os.mkdir(o.p("d"))
    o.nlink("base nlink with d", o.base)
    o.snap("base", o.base)
    o.call("rmdir", os.rmdir, o.p("d"))
    o.nlink("base nlink after", o.base)
    o.since("base times", "base", o.base)
    o.ls("listing")


@scenario("rmdir/errors")
def _(o):
    os.mkdir(o.p("full"))
    o.mkfile("full/f", b"")
    os.mkdir(o.p("full2"))
    os.mkdir(o.p("full2/sub"))
    os.mkdir(o.p("d"))
    o.mkfile("file", b"")
    os.symlink("d", o.p("ldir"))
    o.call("nonempty (file)", os.rmdir, o.p("full"))
    o.call("nonempty (subdir)", os.rmdir, o.p("full2"))
    o.call("not a dir", os.rmdir, o.p("file"))
    o.call("dot", os.rmdir, o.p("d", "."))
    o.call("dotdot", os.rmdir, o.p("d", ".."))
    o.call("noent", os.rmdir, o.p("nope"))
    o.call("symlink to dir", os.rmdir, o.p("ldir"))
    o.call("trailing slash ok", os.rmdir, o.p("d") + "/")
    o.tree("tree")


@scenario("rmdir/nonempty_special_child")
def _(o):
    os.mkdir(o.p("d"))
    os.mkfifo(o.p("d", "fifo"))
    o.call("rmdir with fifo", os.rmdir, o.p("d"))
    os.unlink(o.p("d", "fifo"))
    os.symlink("x", o.p("d", "l"))
    o.call("rmdir with symlink", os.rmdir, o.p("d"))
    os.unlink(o.p("d", "l"))
    o.call("rmdir now empty", os.rmdir, o.p("d"))


@scenario("rmdir/open_dir_then_create")
def _(o):
    os.mkdir(o.p("d"))
    fd = o.open("open dir", o.p("d"), os.O_RDONLY | os.O_DIRECTORY)
    o.call("rmdir", os.rmdir, o.p("d"))
    o.call("listdir removed", lambda: sorted(os.listdir(fd)))
    o.call("mkdir in removed", os.mkdir, "x", dir_fd=fd)
    o.call("create in removed", lambda: os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    o.call("fstat nlink", lambda: os.fstat(fd).st_nlink)
    o.close(fd)


@scenario("mkdir/eexist")
def _(o):
    os.mkdir(o.p("d"))
    o.mkfile("f", b"")
    os.symlink("nowhere", o.p("dl"))
    os.mkfifo(o.p("fifo"))
    for n in ("d", "f", "dl", "fifo"):
        o.call(f"mkdir over {n}", os.mkdir, o.p(n))
    o.tree("tree")


@scenario("mkdir/parent_nlink")
def _(o):
    o.nlink("empty", o.base)
    os.mkdir(o.p("a"))
    o.nlink("one subdir", o.base)
    os.mkdir(o.p("b"))
    o.nlink("two subdirs", o.base)
    o.mkfile("f", b"")
    os.symlink("a", o.p("l"))
    o.nlink("plus file and symlink", o.base)
    os.mkdir(o.p("a", "x"))
    o.nlink("a with child", o.p("a"))
    o.nlink("new dir", o.p("b"))
    os.rmdir(o.p("a", "x"))
    o.nlink("a after rmdir", o.p("a"))
    o.same_ino("a/.. is base", o.p("a", ".."), o.base)


@scenario("mkdir/trailing_slash")
def _(o):
    o.call("mkdir d/", os.mkdir, o.p("d") + "/")
    o.call("mkdir d//", os.mkdir, o.p("e") + "//")
    o.tree("tree")


def _umask_case(um, kind, mode):
    def fn(o):
        os.umask(um)
        p = o.p("x")
        if kind == "file":
            o.call("create", lambda: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, mode)))
        elif kind == "dir":
            o.call("mkdir", os.mkdir, p, mode)
        elif kind == "fifo":
            o.call("mkfifo", os.mkfifo, p, mode)
        o.lstat("stat", p)
    return fn


for _um in [0o000, 0o022, 0o077, 0o777]:
    for _kind in ["file", "dir", "fifo"]:
        add(f"mode/umask{_um:03o}/{_kind}", _umask_case(_um, _kind, 0o777 if _kind != "fifo" else 0o666))
for _kind, _m in [("file", 0o7777), ("dir", 0o7777), ("dir", 0o1777), ("dir", 0o2755)]:
    add(f"mode/umask022/{_kind}{_m:04o}", _umask_case(0o022, _kind, _m))


# ==========================================================================
# rename

RN_KINDS = ["file", "emptydir", "fulldir", "symlink", "missing"]


def _rn_make(o, name, kind, tag):
    p = o.p(name)
    if kind == "file":
        o.mkfile(name, tag.encode())
    elif kind == "emptydir":
        os.mkdir(p)
    elif kind == "fulldir":
        os.mkdir(p)
        o.mkfile(os.path.join(name, "child-" + tag), tag.encode())
    elif kind == "symlink":
        os.symlink("target-" + tag, p)


def _rename_case(src, dst):
    def fn(o):
        _rn_make(o, "s", src, "src")
        _rn_make(o, "t", dst, "dst")
        o.snap("base", o.base)
        o.call("rename", os.rename, o.p("s"), o.p("t"))
        o.since("base times", "base", o.base)
        o.nlink("base nlink", o.base)
        o.tree("tree")
    return fn


for _s in RN_KINDS:
    for _d in RN_KINDS:
        if _s == "missing" and _d != "missing":
            continue
        add(f"rename/{_s}_over_{_d}", _rename_case(_s, _d))


@scenario("rename/to_itself")
def _(o):
    o.mkfile("f", b"x")
    os.mkdir(o.p("d"))
    os.symlink("f", o.p("l"))
    o.snap("f", o.p("f"))
    o.call("file", os.rename, o.p("f"), o.p("f"))
    o.call("dir", os.rename, o.p("d"), o.p("d"))
    o.call("symlink", os.rename, o.p("l"), o.p("l"))
    o.call("missing", os.rename, o.p("m"), o.p("m"))
    o.tree("tree")


@scenario("rename/hardlinks_onto_each_other")
def _(o):
    o.mkfile("a", b"data")
    os.link(o.p("a"), o.p("b"))
    o.snap("a", o.p("a"))
    o.call("rename a b", os.rename, o.p("a"), o.p("b"))
    o.tree("tree")
    o.same_ino("same inode", o.p("a"), o.p("b"))
    o.since("times", "a", o.p("a"))
    o.call("renameat2 noreplace a b", renameat2, o.p("a"), o.p("b"), RENAME_NOREPLACE)
    o.call("renameat2 exchange a b", renameat2, o.p("a"), o.p("b"), RENAME_EXCHANGE)
    o.tree("tree after renameat2")


@scenario("rename/dir_into_own_subdir")
def _(o):
    os.makedirs(o.p("d", "sub", "subsub"))
    o.call("into child", os.rename, o.p("d"), o.p("d", "sub", "x"))
    o.call("into grandchild", os.rename, o.p("d"), o.p("d", "sub", "subsub", "x"))
    o.call("onto own child", os.rename, o.p("d"), o.p("d", "sub"))
    o.call("child onto parent", os.rename, o.p("d", "sub"), o.p("d"))
    o.call("exchange with own child", renameat2, o.p("d"), o.p("d", "sub"), RENAME_EXCHANGE)
    o.tree("tree")


@scenario("rename/dots")
def _(o):
    os.makedirs(o.p("d", "e"))
    o.call("rename d/.", os.rename, o.p("d", "."), o.p("x"))
    o.call("rename d/..", os.rename, o.p("d", "e", ".."), o.p("x"))
    o.call("rename onto d/.", os.rename, o.p("d", "e"), o.p("d", "."))
    o.tree("tree")


@scenario("rename/file_across_dirs")
def _(o):
    os.mkdir(o.p("a"))
    os.mkdir(o.p("b"))
    o.mkfile("a/f", b"moved")
    o.snap("a", o.p("a"))
    o.snap("b", o.p("b"))
    o.snap("f", o.p("a", "f"))
    o.call("rename", os.rename, o.p("a", "f"), o.p("b", "g"))
    o.since("a times", "a", o.p("a"))
    o.since("b times", "b", o.p("b"))
    o.since("file times", "f", o.p("b", "g"))
    o.nlink("a nlink", o.p("a"))
    o.nlink("b nlink", o.p("b"))
    o.tree("tree")


@scenario("rename/dir_across_dirs")
def _(o):
    os.mkdir(o.p("a"))
    os.mkdir(o.p("b"))
    os.makedirs(o.p("a", "d", "sub"))
    o.mkfile("a/d/sub/f", b"deep")
    o.nlink("a before", o.p("a"))
    o.nlink("b before", o.p("b"))
    o.snap("d", o.p("a", "d"))
    o.call("rename", os.rename, o.p("a", "d"), o.p("b", "d2"))
    o.nlink("a after", o.p("a"))
    o.nlink("b after", o.p("b"))
    o.nlink("moved dir", o.p("b", "d2"))
    o.same_ino("d2/.. is b", o.p("b", "d2", ".."), o.p("b"))
    o.since("moved dir times", "d", o.p("b", "d2"))
    o.content("deep file", o.p("b", "d2", "sub", "f"))
    o.tree("tree")


@scenario("rename/dir_over_empty_dir_across_dirs")
def _(o):
    os.makedirs(o.p("a", "d"))
    os.makedirs(o.p("b", "e"))
    o.mkfile("a/d/f", b"x")
    o.call("rename", os.rename, o.p("a", "d"), o.p("b", "e"))
    o.nlink("a", o.p("a"))
    o.nlink("b", o.p("b"))
    o.tree("tree")


@scenario("rename/over_open_file")
def _(o):
    o.mkfile("a", b"new contents")
    o.mkfile("b", b"old contents")
    fd = o.open("open b", o.p("b"), os.O_RDWR)
    o.call("rename a b", os.rename, o.p("a"), o.p("b"))
    o.call("read old via fd", os.pread, fd, 100, 0)
    o.call("fstat nlink", lambda: os.fstat(fd).st_nlink)
    o.call("write old via fd", os.pwrite, fd, b"OLD", 0)
    o.call("read old again", os.pread, fd, 100, 0)
    o.close(fd)
    o.content("b now", o.p("b"))
    o.ls("listing")


@scenario("rename/overwrite_chain_with_open_fds")
def _(o):
    fds = []
    for i in range(20):
        o.mkfile(f"f{i}", pattern(5000 + i, i))
        fds.append(os.open(o.p(f"f{i}"), os.O_RDONLY))
    for i in range(20):
        os.rename(o.p(f"f{i}"), o.p("target"))
    o.rec("each fd reads its file", [os.pread(fd, 10000, 0) == pattern(5000 + i, i) for i, fd in enumerate(fds)])
    o.rec("fstat nlink", [os.fstat(fd).st_nlink for fd in fds])
    for fd in fds:
        os.close(fd)
    o.ls("listing")
    o.content("target", o.p("target"))


@scenario("rename/over_hardlinked_target")
def _(o):
    o.mkfile("a", b"new")
    o.mkfile("b", b"old")
    os.link(o.p("b"), o.p("c"))
    o.call("rename a b", os.rename, o.p("a"), o.p("b"))
    o.lstat("c", o.p("c"))
    o.content("c keeps old", o.p("c"))
    o.content("b is new", o.p("b"))
    o.tree("tree")


@scenario("rename/open_file_keeps_fd")
def _(o):
    fd = o.open("open", o.p("a"), os.O_CREAT | os.O_RDWR)
    os.write(fd, b"one")
    o.call("rename", os.rename, o.p("a"), o.p("b"))
    os.write(fd, b"two")
    o.same_ino("fd is b", fd, o.p("b"))
    o.close(fd)
    o.content("b", o.p("b"))


@scenario("rename/trailing_slash")
def _(o):
    o.mkfile("f", b"")
    os.mkdir(o.p("d"))
    o.call("file to x/", os.rename, o.p("f"), o.p("x") + "/")
    o.call("file/ to x", os.rename, o.p("f") + "/", o.p("x"))
    o.call("dir to y/", os.rename, o.p("d"), o.p("y") + "/")
    o.tree("tree")


@scenario("rename/symlink_not_followed")
def _(o):
    os.mkdir(o.p("d"))
    os.symlink("d", o.p("l"))
    o.mkfile("f", b"")
    o.call("file over symlink to dir", os.rename, o.p("f"), o.p("l"))
    o.tree("tree")


@scenario("rename/times")
def _(o):
    o.mkfile("f", b"x")
    os.mkdir(o.p("d"))
    o.snap("f", o.p("f"))
    o.snap("d", o.p("d"))
    o.snap("base", o.base)
    os.rename(o.p("f"), o.p("g"))
    os.rename(o.p("d"), o.p("e"))
    o.since("file", "f", o.p("g"))
    o.since("dir", "d", o.p("e"))
    o.since("base", "base", o.base)


@scenario("rename/many_in_dir")
def _(o):
    for i in range(200):
        o.mkfile(f"f{i}", str(i).encode())
    for i in range(0, 200, 2):
        os.rename(o.p(f"f{i}"), o.p(f"g{i}"))
    for i in range(1, 200, 4):
        os.rename(o.p(f"f{i}"), o.p(f"g{i - 1}"))
    o.ls("listing")
    o.rec("contents", [read_all(o.p(n)).decode() for n in sorted(os.listdir(o.base))])


# renameat2


def _rn2_case(flags, src, dst, cross=False):
    def fn(o):
        sd = o.p("a") if cross else o.base
        dd = o.p("b") if cross else o.base
        if cross:
            os.mkdir(sd)
            os.mkdir(dd)
        rel_ = os.path.relpath
        _rn_make(o, rel_(os.path.join(sd, "s"), o.base), src, "src")
        _rn_make(o, rel_(os.path.join(dd, "t"), o.base), dst, "dst")
        if src != "missing":
            o.snap("s", os.path.join(sd, "s"))
        o.call("renameat2", renameat2, os.path.join(sd, "s"), os.path.join(dd, "t"), flags)
        if src != "missing":
            o.call("t is old s", lambda: os.lstat(os.path.join(dd, "t")).st_ino == o.snaps["s"].st_ino)
        o.tree("tree")
        if cross:
            o.nlink("a nlink", sd)
            o.nlink("b nlink", dd)
        for d in ("s", "t"):
            p = os.path.join(sd if d == "s" else dd, d)
            if os.path.isdir(p) and not os.path.islink(p):
                o.same_ino(f"{d}/.. parent", os.path.join(p, ".."), sd if d == "s" else dd)
    return fn


for _d in ["missing", "file", "emptydir", "symlink"]:
    add(f"renameat2/noreplace/file_over_{_d}", _rn2_case(RENAME_NOREPLACE, "file", _d))
add("renameat2/noreplace/dir_over_missing", _rn2_case(RENAME_NOREPLACE, "emptydir", "missing"))
add("renameat2/noreplace/missing_src", _rn2_case(RENAME_NOREPLACE, "missing", "missing"))
for _s, _d in [("file", "file"), ("file", "emptydir"), ("fulldir", "file"), ("fulldir", "emptydir"),
               ("symlink", "file"), ("file", "missing"), ("missing", "file")]:
    add(f"renameat2/exchange/{_s}_with_{_d}", _rn2_case(RENAME_EXCHANGE, _s, _d))
add("renameat2/exchange/dirs_across_parents", _rn2_case(RENAME_EXCHANGE, "fulldir", "emptydir", True))
add("renameat2/exchange/file_dir_across_parents", _rn2_case(RENAME_EXCHANGE, "file", "fulldir", True))


@scenario("renameat2/exchange_contents_and_times")
def _(o):
    o.mkfile("a", b"AAAA")
    o.mkfile("b", b"BB")
    o.snap("a", o.p("a"))
    o.call("exchange", renameat2, o.p("a"), o.p("b"), RENAME_EXCHANGE)
    o.content("a", o.p("a"))
    o.content("b", o.p("b"))
    o.since("old a (now b) times", "a", o.p("b"))


@scenario("renameat2/bad_flags")
def _(o):
    o.mkfile("a", b"")
    o.mkfile("b", b"")
    o.call("noreplace|exchange", renameat2, o.p("a"), o.p("b"), RENAME_NOREPLACE | RENAME_EXCHANGE)
    o.call("unknown flag", renameat2, o.p("a"), o.p("b"), 0x80)
    o.tree("tree")


# ==========================================================================
# hard links


@scenario("link/counts_and_identity")
def _(o):
    o.mkfile("a", b"shared")
    o.nlink("1", o.p("a"))
    o.snap("a", o.p("a"))
    o.call("link b", os.link, o.p("a"), o.p("b"))
    o.since("times after link", "a", o.p("a"))
    os.mkdir(o.p("d"))
    o.call("link d/c", os.link, o.p("a"), o.p("d", "c"))
    o.lstat("stat a", o.p("a"))
    o.same_ino("a is b", o.p("a"), o.p("b"))
    o.same_ino("a is d/c", o.p("a"), o.p("d", "c"))
    with open(o.p("b"), "r+b") as f:
        f.write(b"SH")
    o.content("a after write via b", o.p("a"))
    o.snap("a2", o.p("a"))
    o.call("unlink b", os.unlink, o.p("b"))
    o.since("times after unlink of b", "a2", o.p("a"))
    o.nlink("after unlink", o.p("d", "c"))
    o.call("chmod via d/c", os.chmod, o.p("d", "c"), 0o600)
    o.lstat("a sees chmod", o.p("a"))


@scenario("link/errors")
def _(o):
    os.mkdir(o.p("d"))
    o.mkfile("f", b"")
    o.mkfile("g", b"")
    o.call("dir", os.link, o.p("d"), o.p("d2"))
    o.call("noent", os.link, o.p("nope"), o.p("x"))
    o.call("onto file", os.link, o.p("f"), o.p("g"))
    o.call("onto dir", os.link, o.p("f"), o.p("d"))
    o.call("onto self", os.link, o.p("f"), o.p("f"))
    o.call("onto dangling symlink", lambda: (os.symlink("zz", o.p("dl")), os.link(o.p("f"), o.p("dl"))))
    o.tree("tree")


@scenario("link/symlink_follow_or_not")
def _(o):
    o.mkfile("f", b"target")
    os.symlink("f", o.p("l"))
    o.call("link nofollow", os.link, o.p("l"), o.p("l2"), follow_symlinks=False)
    o.call("link follow", os.link, o.p("l"), o.p("f2"), follow_symlinks=True)
    o.same_ino("l2 is l", o.p("l"), o.p("l2"))
    o.same_ino("f2 is f", o.p("f"), o.p("f2"))
    o.tree("tree")


@scenario("link/fifo_and_device")
def _(o):
    os.mkfifo(o.p("fifo"))
    os.mknod(o.p("chr"), stat.S_IFCHR | 0o644, os.makedev(1, 3))
    o.call("link fifo", os.link, o.p("fifo"), o.p("fifo2"))
    o.call("link chr", os.link, o.p("chr"), o.p("chr2"))
    o.tree("tree")


@scenario("link/hundred_links")
def _(o):
    o.mkfile("f", b"x")
    for i in range(100):
        os.link(o.p("f"), o.p(f"l{i}"))
    o.nlink("nlink 101", o.p("f"))
    for i in range(99):
        os.unlink(o.p(f"l{i}"))
    o.nlink("nlink 2", o.p("f"))
    o.ls("listing")


@scenario("link/unlinked_open_file_via_proc")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    os.unlink(o.p("f"))
    o.call("linkat /proc/self/fd", os.link, f"/proc/self/fd/{fd}", o.p("g"), follow_symlinks=True)
    o.close(fd)
    o.ls("listing")


# ==========================================================================
# symlinks


@scenario("symlink/basic_readlink_lstat_stat")
def _(o):
    o.mkfile("f", b"12345")
    os.mkdir(o.p("d"))
    o.call("symlink file", os.symlink, "f", o.p("lf"))
    o.call("symlink dir", os.symlink, "d", o.p("ld"))
    o.call("readlink", os.readlink, o.p("lf"))
    o.lstat("lstat lf", o.p("lf"))
    o.stat("stat lf", o.p("lf"))
    o.lstat("lstat ld", o.p("ld"))
    o.stat("stat ld", o.p("ld"))
    o.same_ino("stat lf is f", o.p("lf"), o.p("f"), follow=True)
    o.content("read via link", o.p("lf"))
    o.call("create through dir link", lambda: write_file(o.p("ld", "x"), b"x"))
    o.tree("tree")


@scenario("symlink/dangling")
def _(o):
    o.call("symlink", os.symlink, "no/such/target", o.p("l"))
    o.lstat("lstat", o.p("l"))
    o.stat("stat", o.p("l"))
    o.call("readlink", os.readlink, o.p("l"))
    o.call("open", lambda: os.open(o.p("l"), os.O_RDONLY))
    o.call("exists", os.path.exists, o.p("l"))
    o.call("lexists", os.path.lexists, o.p("l"))


@scenario("symlink/absolute_target")
def _(o):
    os.symlink("/nonexistent/abs/path", o.p("l"))
    o.call("readlink", os.readlink, o.p("l"))
    o.lstat("lstat", o.p("l"))
    os.symlink(o.p("f"), o.p("l2"))
    o.mkfile("f", b"via absolute")
    o.content("read via absolute", o.p("l2"))


@scenario("symlink/loops")
def _(o):
    os.symlink("self", o.p("self"))
    os.symlink("b", o.p("a"))
    os.symlink("a", o.p("b"))
    for n in ("self", "a"):
        o.stat(f"stat {n}", o.p(n))
        o.lstat(f"lstat {n}", o.p(n))
        o.call(f"open {n}", lambda n=n: os.open(o.p(n), os.O_RDONLY))
        o.call(f"creat {n}", lambda n=n: os.open(o.p(n), os.O_CREAT | os.O_WRONLY))
        o.call(f"open nofollow {n}", lambda n=n: os.open(o.p(n), os.O_RDONLY | os.O_NOFOLLOW))
        o.call(f"chmod {n}", os.chmod, o.p(n), 0o600)


@scenario("symlink/chain_limit")
def _(o):
    o.mkfile("target", b"end")
    prev = "target"
    for i in range(41):
        os.symlink(prev, o.p(f"l{i}"))
        prev = f"l{i}"
    o.content("40 hops", o.p("l39"))
    o.content("41 hops", o.p("l40"))


def _symlink_len_case(n):
    def fn(o):
        target = ("t/" * (n // 2) + "x" * (n % 2))[:n] if n > 0 else ""
        r = o.call("symlink", os.symlink, target, o.p("l"))
        if r is not FAIL:
            o.call("readlink equal", lambda: os.readlink(o.p("l")) == target)
            o.lstat("lstat", o.p("l"))
    return fn


for _n in [0, 1, 100, 255, 256, 1024, 4000, 4095, 4096]:
    add(f"symlink/target_len/{_n}", _symlink_len_case(_n))


@scenario("symlink/target_with_long_component")
def _(o):
    t = "a" * 300
    o.call("symlink", os.symlink, t, o.p("l"))
    o.call("readlink", lambda: os.readlink(o.p("l")) == t)
    o.stat("stat", o.p("l"))


@scenario("symlink/odd_bytes_target")
def _(o):
    t = b"line\nbreak \xff\xfe \x01 tab\t*?"
    o.call("symlink", os.symlink, t, os.fsencode(o.p("l")))
    o.call("readlink", os.readlink, os.fsencode(o.p("l")))


@scenario("symlink/errors")
def _(o):
    o.mkfile("f", b"")
    os.symlink("x", o.p("l"))
    o.call("readlink file", os.readlink, o.p("f"))
    o.call("readlink dir", os.readlink, o.base)
    o.call("readlink noent", os.readlink, o.p("nope"))
    o.call("symlink onto file", os.symlink, "y", o.p("f"))
    o.call("symlink onto symlink", os.symlink, "y", o.p("l"))
    o.tree("tree")


@scenario("symlink/trailing_slash_follows")
def _(o):
    os.mkdir(o.p("d"))
    os.symlink("d", o.p("l"))
    o.lstat("lstat l/", o.p("l") + "/")
    o.lstat("lstat l", o.p("l"))
    o.mkfile("f", b"")
    os.symlink("f", o.p("lf"))
    o.lstat("lstat lf/", o.p("lf") + "/")


@scenario("symlink/chmod_follows_lchown_not")
def _(o):
    o.mkfile("f", b"")
    os.symlink("f", o.p("l"))
    o.call("chmod via link", os.chmod, o.p("l"), 0o600)
    o.call("lchown link", os.chown, o.p("l"), 123, 456, follow_symlinks=False)
    o.lstat("link", o.p("l"))
    o.lstat("target", o.p("f"))
    o.call("chown via link", os.chown, o.p("l"), 7, 8)
    o.lstat("link after", o.p("l"))
    o.lstat("target after", o.p("f"))


# ==========================================================================
# unlink while open


@scenario("open_unlinked/read_write_fstat")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, pattern(100000))
    o.call("unlink", os.unlink, o.p("f"))
    o.call("read via fd", os.pread, fd, 100000, 0)
    o.call("write via fd", os.pwrite, fd, b"more", 100000)
    o.call("read again", os.pread, fd, 10, 99998)
    o.fstat("fstat", fd)
    o.call("fchmod", os.fchmod, fd, 0o640)
    o.call("ftruncate", os.ftruncate, fd, 50)
    o.fstat("fstat after", fd)
    o.call("fsync", os.fsync, fd)
    o.ls("listing")
    o.lstat("stat name", o.p("f"))
    o.close(fd)
    o.ls("listing after close")


@scenario("open_unlinked/one_of_two_links")
def _(o):
    o.mkfile("a", b"data")
    os.link(o.p("a"), o.p("b"))
    fd = o.open("open", o.p("a"), os.O_RDWR)
    o.call("unlink a", os.unlink, o.p("a"))
    o.call("fstat nlink", lambda: os.fstat(fd).st_nlink)
    os.pwrite(fd, b"DA", 0)
    o.close(fd)
    o.content("b", o.p("b"))


@scenario("open_unlinked/recreate_same_name")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    os.write(fd, b"old")
    os.unlink(o.p("f"))
    o.mkfile("f", b"new")
    o.call("old via fd", os.pread, fd, 10, 0)
    o.content("new via name", o.p("f"))
    o.close(fd)
    o.content("new after close", o.p("f"))


@scenario("open_unlinked/mmap_after_unlink")
def _(o):
    o.mkfile("f", pattern(8192))
    fd = o.open("open", o.p("f"), os.O_RDWR)
    os.unlink(o.p("f"))
    m = mmap.mmap(fd, 8192)
    m[0:4] = b"MMAP"
    m.flush()
    o.call("pread", os.pread, fd, 8, 0)
    m.close()
    o.close(fd)


# ==========================================================================
# chmod / chown as root


def _chmod_case(kind, mode):
    def fn(o):
        p = o.p("x")
        if kind == "file":
            o.mkfile("x", b"")
        else:
            os.mkdir(p)
        o.snap("x", p)
        o.call("chmod", os.chmod, p, mode)
        o.lstat("stat", p)
        o.since("times", "x", p)
    return fn


for _m in [0o000, 0o644, 0o755, 0o4755, 0o2755, 0o2745, 0o1777, 0o7777]:
    add(f"chmod/file/{_m:04o}", _chmod_case("file", _m))
for _m in [0o000, 0o755, 0o1777, 0o2755, 0o7777]:
    add(f"chmod/dir/{_m:04o}", _chmod_case("dir", _m))


@scenario("chmod/same_mode_ctime")
def _(o):
    o.mkfile("f", b"", 0o644)
    o.snap("f", o.p("f"))
    o.call("chmod same", os.chmod, o.p("f"), 0o644)
    o.since("times", "f", o.p("f"))


@scenario("chmod/fchmod_and_fifo")
def _(o):
    o.mkfile("f", b"")
    fd = os.open(o.p("f"), os.O_RDONLY)
    o.call("fchmod rdonly fd", os.fchmod, fd, 0o604)
    os.close(fd)
    os.mkfifo(o.p("fifo"))
    o.call("chmod fifo", os.chmod, o.p("fifo"), 0o1640)
    o.tree("tree")


def _chown_case(kind, mode, uid, gid):
    def fn(o):
        p = o.p("x")
        if kind == "file":
            o.mkfile("x", b"", 0o644)
        else:
            os.mkdir(p)
        os.chmod(p, mode)
        o.snap("x", p)
        o.call("chown", os.chown, p, uid, gid)
        o.lstat("stat", p)
        o.since("times", "x", p)
    return fn


for _kind, _mode, _uid, _gid in [
        ("file", 0o644, 1000, 2000), ("file", 0o644, -1, 3000), ("file", 0o644, 4000, -1),
        ("file", 0o644, -1, -1), ("file", 0o644, 0, 0),
        ("file", 0o4755, 1000, -1), ("file", 0o2755, -1, 1000), ("file", 0o6755, 1000, 1000),
        ("file", 0o2745, -1, 1000), ("file", 0o4755, -1, -1),
        ("dir", 0o755, 1000, 1000), ("dir", 0o2755, 1000, 1000), ("dir", 0o4755, 1000, -1)]:
    add(f"chown/{_kind}/{_mode:04o}/{_uid}.{_gid}", _chown_case(_kind, _mode, _uid, _gid))


@scenario("chown/large_ids")
def _(o):
    o.mkfile("f", b"")
    o.call("chown 2^31", os.chown, o.p("f"), 2**31, 2**31 + 5)
    o.lstat("stat", o.p("f"))
    o.call("chown 2^32-2", os.chown, o.p("f"), 2**32 - 2, 2**32 - 2)
    o.lstat("stat 2", o.p("f"))


@scenario("chown/setgid_dir_inheritance")
def _(o):
    os.mkdir(o.p("d"))
    os.chown(o.p("d"), 0, 1234)
    os.chmod(o.p("d"), 0o2775)
    o.mkfile("d/f", b"")
    os.mkdir(o.p("d", "sub"))
    os.mkfifo(o.p("d", "fifo"))
    os.symlink("x", o.p("d", "l"))
    o.tree("tree")
    for n in ("f", "sub", "fifo", "l"):
        o.lstat(f"stat {n}", o.p("d", n))


# ==========================================================================
# unprivileged access (forked child, uid 65534, default_permissions)


@scenario("perm/nonowner_chmod_chown")
def _(o):
    o.mkfile("f", b"", 0o666)

    def child(c):
        c.call("chmod", os.chmod, "f", 0o777)
        c.call("chown to self", os.chown, "f", c.uid, c.uid)
        c.call("chgrp", os.chown, "f", -1, c.uid)
        c.call("utime explicit", os.utime, "f", ns=(10**9, 10**9))
        c.call("utime now (writable)", os.utime, "f", None)
    o.as_user("child", child)
    o.lstat("stat", o.p("f"))


@scenario("perm/write_readonly_file")
def _(o):
    o.mkfile("f", b"ro", 0o444)

    def child(c):
        c.call("open wronly", lambda: os.open("f", os.O_WRONLY))
        c.call("open rdwr", lambda: os.open("f", os.O_RDWR))
        c.call("open trunc", lambda: os.open("f", os.O_WRONLY | os.O_TRUNC))
        c.call("truncate", os.truncate, "f", 0)
        c.call("open rdonly", lambda: os.close(os.open("f", os.O_RDONLY)))
        c.call("utime now (not writable)", os.utime, "f", None)
    o.as_user("child", child)
    o.content("content", o.p("f"))


@scenario("perm/create_in_readonly_dir")
def _(o):
    os.mkdir(o.p("d"), 0o555)
    os.chmod(o.p("d"), 0o555)
    o.mkfile("d/existing", b"", 0o666)

    def child(c):
        c.call("creat", lambda: os.open("d/new", os.O_CREAT | os.O_WRONLY, 0o644))
        c.call("mkdir", os.mkdir, "d/sub")
        c.call("symlink", os.symlink, "x", "d/l")
        c.call("mkfifo", os.mkfifo, "d/fifo")
        c.call("unlink", os.unlink, "d/existing")
        c.call("rename within", os.rename, "d/existing", "d/other")
        c.call("rename out", os.rename, "d/existing", "out")
        c.call("write existing", lambda: os.close(os.open("d/existing", os.O_WRONLY)))
    o.as_user("child", child)
    o.tree("tree")


@scenario("perm/read_private_file_and_dir")
def _(o):
    o.mkfile("f", b"secret", 0o600)
    os.mkdir(o.p("d"), 0o700)
    o.mkfile("d/inner", b"inner", 0o644)
    os.mkdir(o.p("x"), 0o711)
    o.mkfile("x/inner", b"inner", 0o644)

    def child(c):
        c.call("read 0600", lambda: read_all("f"))
        c.call("listdir 0700", os.listdir, "d")
        c.call("stat through 0700", os.stat, "d/inner")
        c.call("listdir 0711", os.listdir, "x")
        c.call("read through 0711", read_all, "x/inner")
        c.call("access R f", os.access, "f", os.R_OK)
        c.call("access R x/inner", os.access, "x/inner", os.R_OK)
    o.as_user("child", child)


@scenario("perm/owner_operations")
def _(o):
    o.mkfile("f", b"", 0o644)
    os.chown(o.p("f"), o.uid, o.uid)
    os.mkdir(o.p("open"), 0o777)
    os.chmod(o.p("open"), 0o777)

    def child(c):
        c.call("owner chmod", os.chmod, "f", 0o600)
        c.call("owner utime explicit", os.utime, "f", ns=(5 * 10**9, 6 * 10**9))
        c.times("times", "f")
        c.call("owner chown to root", os.chown, "f", 0, -1)
        c.call("owner chgrp to 0", os.chown, "f", -1, 0)
        c.call("create in 0777 dir", lambda: write_file("open/mine", b"m", 0o640))
        c.call("mkdir in 0777 dir", os.mkdir, "open/mydir", 0o777)
        c.lstat("my file", "open/mine")
        c.lstat("my dir", "open/mydir")
    o.as_user("child", child)
    o.lstat("stat f", o.p("f"))


@scenario("perm/sticky_dir")
def _(o):
    os.mkdir(o.p("t"))
    os.chmod(o.p("t"), 0o1777)
    o.mkfile("t/rootfile", b"", 0o666)
    o.mkfile("t/theirs", b"", 0o666)
    os.chown(o.p("t", "theirs"), o.uid, o.uid)

    def child(c):
        c.call("unlink other's file", os.unlink, "t/rootfile")
        c.call("rename other's file", os.rename, "t/rootfile", "t/x")
        c.call("unlink own file", os.unlink, "t/theirs")
        c.call("create", lambda: write_file("t/new", b""))
        c.call("rename own", os.rename, "t/new", "t/new2")
    o.as_user("child", child)
    o.tree("tree")


@scenario("perm/write_clears_setuid")
def _(o):
    o.mkfile("f", b"abc", 0o6777)
    os.chmod(o.p("f"), 0o6777)
    o.mkfile("g", b"abc", 0o6775)
    os.chmod(o.p("g"), 0o6777)

    def child(c):
        fd = os.open("f", os.O_WRONLY)
        c.call("write", os.write, fd, b"x")
        os.close(fd)
        c.call("truncate", os.truncate, "g", 1)
    o.as_user("child", child)
    o.mode("f mode after write", o.p("f"))
    o.mode("g mode after truncate", o.p("g"))


@scenario("perm/nonmember_setgid_stripped")
def _(o):
    o.mkfile("f", b"", 0o644)
    os.chown(o.p("f"), o.uid, 4321)

    def child(c):
        c.call("chmod g+s not member", os.chmod, "f", 0o2755)
        c.mode("mode", "f")
    o.as_user("child", child)


@scenario("perm/search_and_rmdir")
def _(o):
    os.makedirs(o.p("ro", "sub"))
    os.chmod(o.p("ro"), 0o555)
    os.mkdir(o.p("noexec"), 0o766)
    os.chmod(o.p("noexec"), 0o766)
    o.mkfile("noexec/f", b"")

    def child(c):
        c.call("rmdir in 0555", os.rmdir, "ro/sub")
        c.call("stat in 0766 (no x)", os.stat, "noexec/f")
        c.call("listdir 0766", lambda: sorted(os.listdir("noexec")))
        c.call("access X dir", os.access, "noexec", os.X_OK)
    o.as_user("child", child)
    o.tree("tree")


@scenario("perm/xattr_nonowner")
def _(o):
    o.mkfile("f", b"", 0o644)
    os.setxattr(o.p("f"), "user.k", b"v")
    o.mkfile("w", b"", 0o666)

    def child(c):
        c.call("getxattr readable", os.getxattr, "f", "user.k")
        c.call("setxattr not writable", os.setxattr, "f", "user.k", b"x")
        c.call("setxattr writable", os.setxattr, "w", "user.k", b"x")
        c.call("trusted as user", os.setxattr, "w", "trusted.k", b"x")
        c.call("list", lambda: sorted(os.listxattr("f")))
    o.as_user("child", child)


@scenario("perm/rename_into_unwritable_dir")
def _(o):
    os.mkdir(o.p("ro"))
    os.chmod(o.p("ro"), 0o555)
    os.mkdir(o.p("rw"))
    os.chmod(o.p("rw"), 0o777)
    o.mkfile("rw/f", b"", 0o666)
    os.mkdir(o.p("rw", "sub"))
    os.chmod(o.p("rw", "sub"), 0o755)
    os.mkdir(o.p("rw", "other"))
    os.chmod(o.p("rw", "other"), 0o777)

    def child(c):
        c.call("file into ro", os.rename, "rw/f", "ro/f")
        c.call("root-owned dir to another dir (needs write on it for ..)", os.rename,
               "rw/sub", "rw/other/sub")
        c.call("root-owned dir renamed within rw", os.rename, "rw/sub", "rw/sub2")
    o.as_user("child", child)
    o.tree("tree")


@scenario("perm/access_as_root")
def _(o):
    for i, m in enumerate([0o000, 0o644, 0o744, 0o010, 0o001]):
        o.mkfile(f"f{i}", b"", m)
        os.chmod(o.p(f"f{i}"), m)
        o.rec(f"{m:03o} R W X", [os.access(o.p(f"f{i}"), x) for x in (os.R_OK, os.W_OK, os.X_OK)])
    os.mkdir(o.p("d"), 0o000)
    o.rec("dir 000 R W X", [os.access(o.p("d"), x) for x in (os.R_OK, os.W_OK, os.X_OK)])
    o.call("open 000 file as root", lambda: os.close(os.open(o.p("f0"), os.O_RDWR)))
    o.call("create in 000 dir as root", lambda: write_file(o.p("d", "x"), b""))


@scenario("perm/mkdir_ownership_as_user")
def _(o):
    os.chmod(o.base, 0o777)

    def child(c):
        c.call("mkdir", os.mkdir, "d", 0o777)
        c.call("create", lambda: write_file("f", b"", 0o666))
        c.call("symlink", os.symlink, "f", "l")
        c.lstat("d", "d")
        c.lstat("f", "f")
        c.lstat("l", "l")
    o.as_user("child", child)
    os.chmod(o.base, 0o755)


# ==========================================================================
# utime / utimensat

UTIME_VALUES = {
    "zero": (0, 0),
    "small": (1_000_000_000, 2_000_000_000),
    "ns_precision": (1_700_000_000_123_456_789, 1_600_000_000_987_654_321),
    "pre_epoch": (-1_000_000_000, -2_500_000_000),
    "y2100": (4_102_444_800_000_000_001, 4_102_444_800_999_999_999),
}


def _utime_case(kind, vals, nofollow=False):
    def fn(o):
        p = o.p("x")
        if kind == "file":
            o.mkfile("x", b"abc")
        elif kind == "dir":
            os.mkdir(p)
        elif kind == "symlink":
            o.mkfile("t", b"")
            os.symlink("t", p)
            o.snap("t", o.p("t"), tick=False)
        o.snap("x", p)
        o.call("utime", os.utime, p, ns=vals, follow_symlinks=not nofollow)
        o.times("exact times", p)
        o.since("ctime", "x", p, fields=("ctime",))
        if kind == "symlink":
            o.since("target times", "t", o.p("t"))
    return fn


for _name, _v in UTIME_VALUES.items():
    add(f"utime/file/{_name}", _utime_case("file", _v))
add("utime/dir/ns_precision", _utime_case("dir", UTIME_VALUES["ns_precision"]))
add("utime/symlink_nofollow", _utime_case("symlink", UTIME_VALUES["small"], True))


def _utimensat_case(a, m):
    def fn(o):
        o.mkfile("f", b"abc")
        os.utime(o.p("f"), ns=(3 * 10**9, 4 * 10**9))
        o.snap("f", o.p("f"))
        o.call("utimensat", utimensat, o.p("f"), a, m)
        st = os.lstat(o.p("f"))
        o.rec("atime", st.st_atime_ns if a not in ("NOW",) else ("later" if st.st_atime_ns > 3 * 10**9 else "not later"))
        o.rec("mtime", st.st_mtime_ns if m not in ("NOW",) else ("later" if st.st_mtime_ns > 4 * 10**9 else "not later"))
        o.since("ctime", "f", o.p("f"), fields=("ctime",))
        if m == "NOW":
            o.rec("ctime >= mtime", st.st_ctime_ns >= st.st_mtime_ns)
    return fn


for _a, _m in [("NOW", "NOW"), ("OMIT", "OMIT"), (7 * 10**9 + 5, "OMIT"), ("OMIT", 8 * 10**9 + 9),
               ("NOW", "OMIT"), ("OMIT", "NOW"), (7 * 10**9, "NOW")]:
    add(f"utimensat/{_a}_{_m}", _utimensat_case(_a, _m))


@scenario("utime/none_is_now")
def _(o):
    o.mkfile("f", b"")
    os.utime(o.p("f"), ns=(10**9, 10**9))
    o.call("utime None", os.utime, o.p("f"), None)
    st = os.lstat(o.p("f"))
    o.rec("moved to now", st.st_mtime_ns > 10**9 and st.st_atime_ns > 10**9)


@scenario("utime/futimens")
def _(o):
    o.mkfile("f", b"")
    fd = os.open(o.p("f"), os.O_RDONLY)
    o.call("futimens", os.utime, fd, ns=(11 * 10**9 + 1, 12 * 10**9 + 2))
    os.close(fd)
    o.times("times", o.p("f"))


@scenario("utime/invalid_nsec")
def _(o):
    o.mkfile("f", b"")
    arr = (_Timespec * 2)(_Timespec(1, 1_000_000_000), _Timespec(1, 0))
    f = libc.utimensat
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    r = f(AT_FDCWD, os.fsencode(o.p("f")), ctypes.byref(arr), 0)
    o.rec("nsec 1e9", errname(ctypes.get_errno()) if r else "ok")


@scenario("utime/times_survive_write_back")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    os.write(fd, b"data")
    o.call("futimens", os.utime, fd, ns=(21 * 10**9, 22 * 10**9))
    o.close(fd)
    o.times("times after close", o.p("f"))
    fd = os.open(o.p("f"), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    o.times("times after fsync", o.p("f"))


# ==========================================================================
# ctime / mtime relations


def _ftime_case(opname):
    def fn(o):
        f = o.p("f")
        o.mkfile("f", b"0123456789", 0o644)
        os.link(f, o.p("other"))
        os.setxattr(f, "user.old", b"1")
        fd = os.open(f, os.O_RDWR)
        o.snap("f", f)
        if opname == "chmod":
            os.chmod(f, 0o600)
        elif opname == "chown":
            os.chown(f, 55, 66)
        elif opname == "link":
            os.link(f, o.p("new"))
        elif opname == "unlink_other_link":
            os.unlink(o.p("other"))
        elif opname == "rename":
            os.rename(f, o.p("g"))
            f = o.p("g")
        elif opname == "write":
            os.pwrite(fd, b"X", 3)
        elif opname == "write_extend":
            os.pwrite(fd, b"X", 100)
        elif opname == "truncate":
            os.ftruncate(fd, 4)
        elif opname == "setxattr":
            os.setxattr(f, "user.new", b"2")
        elif opname == "removexattr":
            os.removexattr(f, "user.old")
        elif opname == "read":
            os.pread(fd, 10, 0)
        elif opname == "fsync":
            os.fsync(fd)
        elif opname == "open_close":
            os.close(os.open(f, os.O_RDWR))
        elif opname == "mmap_write":
            m = mmap.mmap(fd, 10)
            m[0:1] = b"M"
            m.flush()
            m.close()
        elif opname == "fallocate":
            fallocate(fd, 0, 0, 100)
        elif opname == "fallocate_keep_size":
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 100)
        elif opname == "punch_hole":
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2, 4)
        os.close(fd)
        o.since(opname, "f", f)
    return fn


for _op in ["chmod", "chown", "link", "unlink_other_link", "rename", "write", "write_extend",
            "truncate", "setxattr", "removexattr", "read", "fsync", "open_close",
            "mmap_write", "fallocate", "fallocate_keep_size", "punch_hole"]:
    add(f"times/file/{_op}", _ftime_case(_op))


def _dtime_case(opname):
    def fn(o):
        d = o.p("d")
        os.mkdir(d)
        os.mkdir(o.p("other"))
        o.mkfile("d/existing", b"e")
        os.mkdir(o.p("d", "sub"))
        o.mkfile("other/incoming", b"i")
        o.snap("d", d)
        if opname == "create":
            write_file(o.p("d", "new"), b"")
        elif opname == "unlink":
            os.unlink(o.p("d", "existing"))
        elif opname == "mkdir":
            os.mkdir(o.p("d", "newdir"))
        elif opname == "rmdir":
            os.rmdir(o.p("d", "sub"))
        elif opname == "rename_in":
            os.rename(o.p("other", "incoming"), o.p("d", "incoming"))
        elif opname == "rename_out":
            os.rename(o.p("d", "existing"), o.p("other", "existing"))
        elif opname == "rename_within":
            os.rename(o.p("d", "existing"), o.p("d", "renamed"))
        elif opname == "link_in":
            os.link(o.p("other", "incoming"), o.p("d", "hard"))
        elif opname == "symlink_in":
            os.symlink("x", o.p("d", "sym"))
        elif opname == "mkfifo_in":
            os.mkfifo(o.p("d", "fifo"))
        elif opname == "write_child":
            with open(o.p("d", "existing"), "ab") as fh:
                fh.write(b"more")
        elif opname == "chmod_child":
            os.chmod(o.p("d", "existing"), 0o600)
        elif opname == "setxattr_dir":
            os.setxattr(d, "user.k", b"v")
        elif opname == "chmod_dir":
            os.chmod(d, 0o700)
        elif opname == "create_fails_eexist":
            try:
                os.open(o.p("d", "existing"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
        elif opname == "listdir":
            os.listdir(d)
        elif opname == "moved_dir_itself":
            os.rename(d, o.p("d2"))
            d = o.p("d2")
        o.since(opname, "d", d)
        o.nlink("nlink", d)
    return fn


for _op in ["create", "unlink", "mkdir", "rmdir", "rename_in", "rename_out", "rename_within",
            "link_in", "symlink_in", "mkfifo_in", "write_child", "chmod_child", "setxattr_dir",
            "chmod_dir", "create_fails_eexist", "listdir", "moved_dir_itself"]:
    add(f"times/dir/{_op}", _dtime_case(_op))


@scenario("times/new_file_times_equal")
def _(o):
    fd = os.open(o.p("f"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    st = os.lstat(o.p("f"))
    o.rec("mtime == ctime", st.st_mtime_ns == st.st_ctime_ns)
    os.mkdir(o.p("d"))
    st = os.lstat(o.p("d"))
    o.rec("dir mtime == ctime", st.st_mtime_ns == st.st_ctime_ns)


# ==========================================================================
# xattrs


@scenario("xattr/basic")
def _(o):
    o.mkfile("f", b"")
    o.call("list empty", lambda: sorted(os.listxattr(o.p("f"))))
    o.call("set a", os.setxattr, o.p("f"), "user.a", b"alpha")
    o.call("set b", os.setxattr, o.p("f"), "user.b", b"beta\0with\0nuls")
    o.call("get a", os.getxattr, o.p("f"), "user.a")
    o.call("get b", os.getxattr, o.p("f"), "user.b")
    o.call("list", lambda: sorted(os.listxattr(o.p("f"))))
    o.call("overwrite a shorter", os.setxattr, o.p("f"), "user.a", b"A")
    o.call("get a", os.getxattr, o.p("f"), "user.a")
    o.call("remove a", os.removexattr, o.p("f"), "user.a")
    o.call("get removed", os.getxattr, o.p("f"), "user.a")
    o.call("list after", lambda: sorted(os.listxattr(o.p("f"))))


@scenario("xattr/flags")
def _(o):
    o.mkfile("f", b"")
    os.setxattr(o.p("f"), "user.x", b"1")
    o.call("CREATE existing", os.setxattr, o.p("f"), "user.x", b"2", os.XATTR_CREATE)
    o.call("REPLACE missing", os.setxattr, o.p("f"), "user.y", b"2", os.XATTR_REPLACE)
    o.call("REPLACE existing", os.setxattr, o.p("f"), "user.x", b"3", os.XATTR_REPLACE)
    o.call("CREATE new", os.setxattr, o.p("f"), "user.z", b"4", os.XATTR_CREATE)
    o.call("CREATE|REPLACE", os.setxattr, o.p("f"), "user.x", b"5", os.XATTR_CREATE | os.XATTR_REPLACE)
    o.call("get missing", os.getxattr, o.p("f"), "user.nope")
    o.call("remove missing", os.removexattr, o.p("f"), "user.nope")
    o.call("values", lambda: [os.getxattr(o.p("f"), n) for n in sorted(os.listxattr(o.p("f")))])


def _xattr_size_case(size):
    def fn(o):
        o.mkfile("f", b"")
        val = pattern(size, 9)
        try:
            os.setxattr(o.p("f"), "user.big", val)
            o.rec("set", "ok")
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.E2BIG, errno.ERANGE) and size <= 65536:
                o.limited(f"ext4 cannot store a {size}-byte xattr value ({errname(e.errno)})")
            o.rec("set", errname(e.errno))
            return
        o.call("get equal", lambda: os.getxattr(o.p("f"), "user.big") == val)
        o.call("size query", getxattr_raw, o.p("f"), "user.big", 0)
        o.call("list", os.listxattr, o.p("f"))
        o.call("remove", os.removexattr, o.p("f"), "user.big")
    return fn


for _sz in [0, 1, 255, 1024, 3000, 4096, 16384, 65536, 65537]:
    add(f"xattr/size/{_sz}", _xattr_size_case(_sz))


@scenario("xattr/small_buffer_erange")
def _(o):
    o.mkfile("f", b"")
    os.setxattr(o.p("f"), "user.k", b"0123456789")
    o.call("size 0", getxattr_raw, o.p("f"), "user.k", 0)
    o.call("size 5", getxattr_raw, o.p("f"), "user.k", 5)
    o.call("size 10", getxattr_raw, o.p("f"), "user.k", 10)
    f = libc.listxattr
    f.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    f.restype = ctypes.c_ssize_t
    buf = ctypes.create_string_buffer(64)
    n = f(os.fsencode(o.p("f")), None, 0)
    o.rec("listxattr size query", n)
    n = f(os.fsencode(o.p("f")), buf, 3)
    o.rec("listxattr small", errname(ctypes.get_errno()) if n < 0 else n)


@scenario("xattr/name_limits")
def _(o):
    o.mkfile("f", b"")
    o.call("name 255", os.setxattr, o.p("f"), "user." + "n" * 250, b"v")
    o.call("name 256", os.setxattr, o.p("f"), "user." + "n" * 251, b"v")
    o.call("empty user. name", os.setxattr, o.p("f"), "user.", b"v")
    o.call("unknown namespace", os.setxattr, o.p("f"), "foo.bar", b"v")
    o.call("no namespace", os.setxattr, o.p("f"), "plain", b"v")
    o.call("list", lambda: sorted(os.listxattr(o.p("f"))))


@scenario("xattr/many")
def _(o):
    o.mkfile("f", b"")
    for i in range(40):
        try:
            os.setxattr(o.p("f"), f"user.k{i:02d}", str(i).encode() * 3)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                o.limited("ext4 ran out of xattr space")
            raise
    o.call("list", lambda: sorted(os.listxattr(o.p("f"))))
    o.call("values", lambda: [os.getxattr(o.p("f"), f"user.k{i:02d}") for i in range(40)])
    for i in range(0, 40, 2):
        os.removexattr(o.p("f"), f"user.k{i:02d}")
    o.call("list after removing half", lambda: sorted(os.listxattr(o.p("f"))))


@scenario("xattr/on_dir_fifo_symlink")
def _(o):
    os.mkdir(o.p("d"))
    os.mkfifo(o.p("fifo"))
    os.symlink("d", o.p("l"))
    o.call("dir", os.setxattr, o.p("d"), "user.k", b"d")
    o.call("dir get", os.getxattr, o.p("d"), "user.k")
    o.call("fifo", os.setxattr, o.p("fifo"), "user.k", b"f")
    o.call("symlink nofollow", os.setxattr, o.p("l"), "user.k", b"l", follow_symlinks=False)
    o.call("symlink follow", os.setxattr, o.p("l"), "user.k2", b"l")
    o.call("dir list", lambda: sorted(os.listxattr(o.p("d"))))
    o.call("symlink list nofollow", lambda: sorted(os.listxattr(o.p("l"), follow_symlinks=False)))


@scenario("xattr/trusted_as_root")
def _(o):
    o.mkfile("f", b"")
    o.call("set trusted", os.setxattr, o.p("f"), "trusted.k", b"t")
    o.call("get trusted", os.getxattr, o.p("f"), "trusted.k")
    o.call("list", lambda: sorted(os.listxattr(o.p("f"))))


@scenario("xattr/follows_inode")
def _(o):
    o.mkfile("a", b"")
    os.setxattr(o.p("a"), "user.k", b"v1")
    os.link(o.p("a"), o.p("b"))
    o.call("via hard link", os.getxattr, o.p("b"), "user.k")
    os.setxattr(o.p("b"), "user.k", b"v2")
    o.call("change seen via a", os.getxattr, o.p("a"), "user.k")
    os.rename(o.p("a"), o.p("c"))
    o.call("after rename", os.getxattr, o.p("c"), "user.k")
    os.unlink(o.p("b"))
    os.unlink(o.p("c"))
    o.mkfile("c", b"")
    o.call("new file same name", lambda: sorted(os.listxattr(o.p("c"))))


@scenario("xattr/fd_variants_and_unlinked")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    o.call("fsetxattr", os.setxattr, fd, "user.k", b"v")
    os.unlink(o.p("f"))
    o.call("fgetxattr after unlink", os.getxattr, fd, "user.k")
    o.call("fsetxattr after unlink", os.setxattr, fd, "user.k2", b"w")
    o.call("flistxattr", lambda: sorted(os.listxattr(fd)))
    o.close(fd)


@scenario("xattr/binary_name_and_utf8")
def _(o):
    o.mkfile("f", b"")
    o.call("utf8 name", os.setxattr, o.p("f"), "user.ключ", b"v")
    o.call("get", os.getxattr, o.p("f"), "user.ключ")
    o.call("list", lambda: sorted(os.listxattr(o.p("f"))))


# ==========================================================================
# directories: big, deep, names, readdir


@scenario("dir/10000_entries")
def _(o):
    d = o.p("big")
    os.mkdir(d)
    names = {f"entry-{i:05d}" for i in range(10000)}
    for n in names:
        os.close(os.open(os.path.join(d, n), os.O_CREAT | os.O_WRONLY, 0o644))
    got = os.listdir(d)
    o.rec("count", len(got))
    o.rec("set equal", set(got) == names)
    o.rec("no duplicates", len(got) == len(set(got)))
    o.rec("all regular (scandir)", all(e.is_file(follow_symlinks=False) for e in os.scandir(d)))
    removed = {f"entry-{i:05d}" for i in range(0, 10000, 2)}
    for n in removed:
        os.unlink(os.path.join(d, n))
    got = os.listdir(d)
    o.rec("count after removing half", len(got))
    o.rec("set equal after", set(got) == names - removed)
    o.lstat("stat one", os.path.join(d, "entry-09999"))
    o.lstat("stat removed", os.path.join(d, "entry-09998"))


@scenario("dir/unlink_during_readdir")
def _(o):
    d = o.p("d")
    os.mkdir(d)
    for i in range(600):
        os.close(os.open(os.path.join(d, f"f{i:03d}"), os.O_CREAT | os.O_WRONLY, 0o644))
    seen = []
    with os.scandir(d) as it:
        for e in it:
            seen.append(e.name)
            os.unlink(e.path)
    o.rec("each seen once", len(seen) == len(set(seen)))
    o.rec("all seen", len(set(seen)))
    o.ls("left", d)
    o.call("rmdir", os.rmdir, d)


@scenario("dir/create_during_readdir")
def _(o):
    d = o.p("d")
    os.mkdir(d)
    for i in range(300):
        os.close(os.open(os.path.join(d, f"a{i:03d}"), os.O_CREAT | os.O_WRONLY, 0o644))
    seen = []
    with os.scandir(d) as it:
        for e in it:
            seen.append(e.name)
            if e.name.startswith("a"):
                os.close(os.open(os.path.join(d, "b" + e.name[1:]), os.O_CREAT | os.O_WRONLY, 0o644))
    o.rec("old entries all seen once", sorted(n for n in seen if n.startswith("a")) == [f"a{i:03d}" for i in range(300)])
    o.rec("no duplicates", len(seen) == len(set(seen)))
    o.rec("final count", len(os.listdir(d)))


@scenario("dir/deep_path_beyond_path_max")
def _(o):
    depth = 100
    names = [("%03d" % i) + "d" * 252 for i in range(depth)]
    fds = [os.open(o.base, os.O_RDONLY | os.O_DIRECTORY)]
    made = 0
    try:
        for n in names:
            os.mkdir(n, 0o755, dir_fd=fds[-1])
            fds.append(os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            made += 1
        o.rec("levels made", made)
        fd = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fds[-1])
        os.write(fd, b"deep leaf")
        os.close(fd)
        o.call("fstat leaf dir", os.fstat, fds[-1])
        o.call("stat leaf", lambda: os.stat("leaf", dir_fd=fds[-1]).st_size)
    finally:
        for fd in fds[1:]:
            os.close(fd)
    basefd = fds[0]
    try:
        # relative path strings within PATH_MAX work, longer ones fail
        rel16 = "/".join(names[:16])
        rel17 = "/".join(names[:17])
        o.rec("path string lengths", [len(rel16), len(rel17)])
        o.call("stat 16 levels (4095-byte path)", lambda: os.stat(rel16, dir_fd=basefd).st_nlink)
        o.call("stat 17 levels (4351-byte path)", lambda: os.stat(rel17, dir_fd=basefd).st_nlink)
        o.call("stat absolute full path", lambda: os.stat(o.p(*names, "leaf")))
        # walk again from the top and read the leaf
        fd = basefd
        walk = []
        for n in names:
            nfd = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            if fd != basefd:
                os.close(fd)
            fd = nfd
            walk.append(sorted(os.listdir(fd)) == [names[len(walk) + 1]] if len(walk) + 1 < depth else True)
        o.rec("each level lists only the next", all(walk))
        lf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        o.call("leaf content", os.read, lf, 100)
        os.close(lf)
        os.close(fd)
        # tear down bottom-up through fds
        chain = [basefd]
        for n in names:
            chain.append(os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=chain[-1]))
        os.unlink("leaf", dir_fd=chain[-1])
        ok = True
        for i in range(depth - 1, -1, -1):
            os.close(chain[i + 1])
            try:
                os.rmdir(names[i], dir_fd=chain[i])
            except OSError:
                ok = False
        o.rec("removed bottom-up", ok)
        o.ls("empty", o.base)
    finally:
        os.close(basefd)


def _name_len_case(op):
    def fn(o):
        for n in (255, 256):
            name = "n" * n
            p = o.p(name)
            if op == "creat":
                o.call(f"{op} {n}", lambda: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)))
            elif op == "mkdir":
                o.call(f"{op} {n}", os.mkdir, p)
            elif op == "symlink":
                o.call(f"{op} {n}", os.symlink, "t", p)
            elif op == "mkfifo":
                o.call(f"{op} {n}", os.mkfifo, p)
            elif op == "link":
                o.mkfile("src", b"")
                o.call(f"{op} {n}", os.link, o.p("src"), p)
            elif op == "rename":
                o.mkfile("src", b"")
                o.call(f"{op} {n}", os.rename, o.p("src"), p)
            elif op == "stat":
                o.call(f"{op} {n}", os.stat, p)
        o.ls("listing")
    return fn


for _op in ["creat", "mkdir", "symlink", "mkfifo", "link", "rename", "stat"]:
    add(f"names/len255_256/{_op}", _name_len_case(_op))


@scenario("names/multibyte_length")
def _(o):
    o.call("254 bytes (127 x é)", lambda: write_file(o.p("é" * 127), b""))
    o.call("255 bytes (85 x €)", lambda: write_file(o.p("€" * 85), b""))
    o.call("256 bytes (128 x é)", lambda: write_file(o.p("é" * 128), b""))
    o.ls("listing")


@scenario("names/odd_bytes")
def _(o):
    base = os.fsencode(o.base)
    names = [b"\x01\x02", b"\xff", b"\xfe\xfdbad-utf8", b"new\nline", b" lead space", b"trail space ",
             b"-dash", b"*?[]", b"\xc3\xa9", b"e\xcc\x81", b"\xe2\x80\x8b", b"a", b"A",
             b"..x", b".hidden", b"\\back", b"tab\tname", b"%s%n", b"'quote\"", b"\x7f"]
    for n in names:
        write_file(os.path.join(base, n), n)
    o.call("listdir", lambda: [repr(x) for x in sorted(os.listdir(base))])
    o.rec("contents match", all(read_all(os.path.join(base, n)) == n for n in names))
    o.rec("count", len(os.listdir(base)))
    o.same_ino("a and A differ", os.path.join(base, b"a"), os.path.join(base, b"A"))
    o.same_ino("NFC and NFD differ", os.path.join(base, b"\xc3\xa9"), os.path.join(base, b"e\xcc\x81"))
    for n in names:
        os.unlink(os.path.join(base, n))
    o.ls("empty")


@scenario("dir/long_names_many")
def _(o):
    names = {("%04d" % i) + chr(ord("a") + i % 26) * 251 for i in range(400)}
    names |= {"x" * n for n in range(1, 256)}
    for n in names:
        os.close(os.open(o.p(n), os.O_CREAT | os.O_WRONLY, 0o644))
    got = os.listdir(o.base)
    o.rec("count", len(got))
    o.rec("set equal", set(got) == names)
    o.rec("no duplicates", len(got) == len(set(got)))
    ents = getdents(o.base)
    o.rec("getdents count incl. dots", len(ents))


def _resume_case(delete_before):
    def fn(o):
        d = o.p("d")
        os.mkdir(d)
        for i in range(300):
            os.close(os.open(os.path.join(d, f"e{i:03d}-" + "n" * (i % 40)), os.O_CREAT | os.O_WRONLY, 0o644))
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        full = [e for e in getdents_fd(fd, 1024)]
        os.close(fd)
        o.rec("entries incl. dots", len(full))
        names = [e[0] for e in full]
        results = []
        for k in (0, 1, 2, 50, 151, 299, len(full) - 1):
            if delete_before:
                for e in full[:k + 1]:
                    if e[0] not in (b".", b".."):
                        try:
                            os.unlink(os.path.join(os.fsencode(d), e[0]))
                        except FileNotFoundError:
                            pass
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            os.lseek(fd, full[k][3], os.SEEK_SET)
            rest = [e[0] for e in getdents_fd(fd, 2048)]
            os.close(fd)
            results.append([k, rest == names[k + 1:], len(rest)])
        o.rec("resume after entry k: [k, rest equal, count]", results)
    return fn


add("dir/getdents_resume_at_d_off", _resume_case(False))
add("dir/getdents_resume_after_deleting_read_entries", _resume_case(True))


@scenario("dir/getdents_rewind")
def _(o):
    for i in range(100):
        o.mkfile(f"f{i}", b"")
    fd = os.open(o.base, os.O_RDONLY | os.O_DIRECTORY)
    first = sorted(e[0] for e in getdents_fd(fd, 1024))
    os.lseek(fd, 0, os.SEEK_SET)
    o.mkfile("late", b"")
    second = sorted(e[0] for e in getdents_fd(fd, 1024))
    os.close(fd)
    o.rec("first count", len(first))
    o.rec("after rewind sees new entry", b"late" in second)
    o.rec("second count", len(second))


@scenario("dir/getdents_dots_and_types")
def _(o):
    os.mkdir(o.p("d"))
    o.mkfile("f", b"")
    os.symlink("f", o.p("l"))
    os.mkfifo(o.p("fifo"))
    os.mknod(o.p("chr"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(o.p("blk"), stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(o.p("sock"), stat.S_IFSOCK | 0o600)
    ents = getdents(o.base)
    o.rec("names and types", sorted([e[0].decode(), DT_NAMES.get(e[1], e[1])] for e in ents))
    byname = {e[0]: e[2] for e in ents}
    o.rec("d_ino matches lstat", all(byname[n] == os.lstat(os.path.join(os.fsencode(o.base), n)).st_ino
                                      for n in byname if n not in (b".", b"..")))
    o.rec("'.' d_ino matches", byname.get(b".") == os.lstat(o.base).st_ino)
    o.rec("'..' d_ino matches", byname.get(b"..") == os.lstat(o.p("..")).st_ino)
    o.ls("listdir has no dots")
    o.rec("scandir types", sorted([e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False),
                                   e.is_symlink()] for e in os.scandir(o.base)))
    o.rec("scandir inode", all(e.inode() == os.lstat(e.path).st_ino for e in os.scandir(o.base)))


@scenario("dir/empty_getdents")
def _(o):
    os.mkdir(o.p("d"))
    o.rec("entries", sorted(e[0].decode() for e in getdents(o.p("d"))))


@scenario("dir/nested_tree_walk")
def _(o):
    for a in range(4):
        for b in range(4):
            os.makedirs(o.p(f"a{a}", f"b{b}"))
            for c in range(3):
                o.mkfile(f"a{a}/b{b}/f{c}", f"{a}{b}{c}".encode())
    o.tree("tree")
    walked = []
    for dp, dn, fn in os.walk(o.base):
        walked.append([os.path.relpath(dp, o.base), sorted(dn), sorted(fn)])
    o.rec("walk", sorted(walked))
    shutil.rmtree(o.p("a0"))
    o.ls("after rmtree")


# ==========================================================================
# special files


@scenario("special/mkfifo")
def _(o):
    o.call("mkfifo", os.mkfifo, o.p("fifo"), 0o640)
    o.lstat("stat", o.p("fifo"))
    fd = o.open("open reader nonblock", o.p("fifo"), os.O_RDONLY | os.O_NONBLOCK)
    w = o.open("open writer nonblock", o.p("fifo"), os.O_WRONLY | os.O_NONBLOCK)
    if w is not None:
        o.call("write", os.write, w, b"through the pipe")
        o.call("read", os.read, fd, 100)
        o.close(w)
    o.close(fd)
    o.call("writer without reader", lambda: os.open(o.p("fifo"), os.O_WRONLY | os.O_NONBLOCK))
    o.call("mkfifo eexist", os.mkfifo, o.p("fifo"))


@scenario("special/mknod_devices")
def _(o):
    o.call("chr", os.mknod, o.p("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    o.call("blk", os.mknod, o.p("loop"), stat.S_IFBLK | 0o600, os.makedev(7, 200))
    o.call("big numbers", os.mknod, o.p("big"), stat.S_IFCHR | 0o600, os.makedev(4095, 1048575))
    o.call("reg", os.mknod, o.p("reg"), stat.S_IFREG | 0o640)
    o.call("sock", os.mknod, o.p("sock"), stat.S_IFSOCK | 0o640)
    o.call("bad type", os.mknod, o.p("bad"), 0o170000 | 0o600)
    for n in ("null", "loop", "big", "reg", "sock"):
        o.lstat(n, o.p(n))


@scenario("special/open_device_node")
def _(o):
    o.skip_if(os.statvfs(o.base).f_flag & os.ST_NODEV, "mounted nodev (the FUSE default)")
    os.mknod(o.p("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    fd = o.open("open chr 1:3", o.p("null"), os.O_RDWR)
    if fd is not None:
        o.call("read", os.read, fd, 10)
        o.call("write", os.write, fd, b"gone")
        o.close(fd)


# ==========================================================================
# statvfs, fsync, mmap


@scenario("statvfs/sanity")
def _(o):
    s = os.statvfs(o.base)
    o.rec("f_bsize > 0", s.f_bsize > 0)
    o.rec("f_frsize > 0", s.f_frsize > 0)
    o.rec("f_namemax", s.f_namemax)
    o.rec("bfree >= bavail", s.f_bfree >= s.f_bavail)
    o.rec("blocks >= bfree", s.f_blocks >= s.f_bfree)
    o.rec("files >= ffree", s.f_files >= s.f_ffree)
    fd = os.open(o.base, os.O_RDONLY)
    o.rec("fstatvfs namemax", os.fstatvfs(fd).f_namemax)
    os.close(fd)


@scenario("fsync/files_and_dirs")
def _(o):
    o.mkfile("f", b"data")
    os.mkdir(o.p("d"))
    fd = os.open(o.p("f"), os.O_RDWR)
    o.call("fsync file", os.fsync, fd)
    o.call("fdatasync file", os.fdatasync, fd)
    os.close(fd)
    fd = os.open(o.p("f"), os.O_RDONLY)
    o.call("fsync rdonly file", os.fsync, fd)
    os.close(fd)
    fd = os.open(o.p("d"), os.O_RDONLY | os.O_DIRECTORY)
    o.call("fsync dir", os.fsync, fd)
    o.call("fdatasync dir", os.fdatasync, fd)
    os.close(fd)
    fd = os.open(o.base, os.O_RDONLY)
    o.call("fsync base", os.fsync, fd)
    os.close(fd)
    o.call("sync", os.sync)


@scenario("mmap/shared_write_msync_read")
def _(o):
    o.mkfile("f", pattern(200000))
    fd = o.open("open", o.p("f"), os.O_RDWR)
    m = mmap.mmap(fd, 200000)
    m[100:110] = b"0123456789"
    m[70000:70005] = b"ABCDE"
    m.flush()
    o.call("pread", os.pread, fd, 10, 100)
    o.call("pread 2", os.pread, fd, 5, 70000)
    m.close()
    o.close(fd)
    o.content("content", o.p("f"))


@scenario("mmap/write_then_map_coherent")
def _(o):
    o.mkfile("f", bytes(8192))
    fd = o.open("open", o.p("f"), os.O_RDWR)
    m = mmap.mmap(fd, 8192)
    os.pwrite(fd, b"via write", 4000)
    o.rec("seen in map", bytes(m[4000:4009]))
    m.close()
    o.close(fd)


@scenario("mmap/extend_with_ftruncate")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    os.ftruncate(fd, 100000)
    m = mmap.mmap(fd, 100000)
    m[99990:100000] = b"lastbytes!"
    m[0:5] = b"first"
    m.flush()
    m.close()
    o.close(fd)
    o.content("content", o.p("f"))


@scenario("mmap/private_not_written")
def _(o):
    o.mkfile("f", b"original content")
    fd = o.open("open", o.p("f"), os.O_RDWR)
    m = mmap.mmap(fd, 16, flags=mmap.MAP_PRIVATE)
    m[0:4] = b"PRIV"
    o.rec("map sees", bytes(m[:16]))
    m.close()
    o.close(fd)
    o.content("file unchanged", o.p("f"))


@scenario("mmap/shared_readonly_fd_write_map_fails")
def _(o):
    o.mkfile("f", bytes(4096))
    fd = os.open(o.p("f"), os.O_RDONLY)
    try:
        mmap.mmap(fd, 4096, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        o.rec("map", "ok")
    except OSError as e:
        o.rec("map", errname(e.errno))
    os.close(fd)


# ==========================================================================
# large files, fallocate


@scenario("large/one_byte_at_3GiB")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    off = 3 << 30
    o.call("pwrite", os.pwrite, fd, b"Z", off)
    o.fstat("fstat", fd)
    o.call("read byte", os.pread, fd, 1, off)
    o.call("zeros before", lambda: os.pread(fd, 65536, off - 65536) == bytes(65536))
    o.call("zeros at 0", os.pread, fd, 16, 0)
    o.call("read past", os.pread, fd, 16, off + 1)
    o.call("truncate down", os.ftruncate, fd, 4096)
    o.fstat("fstat after", fd)
    o.close(fd)


@scenario("large/write_across_4GiB")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    off = (1 << 32) - 3
    o.call("pwrite", os.pwrite, fd, b"ABCDEFGH", off)
    o.fstat("fstat", fd)
    o.call("read back", os.pread, fd, 8, off)
    o.call("low 4G alias untouched", os.pread, fd, 8, 0)
    o.close(fd)


@scenario("large/seek_end_large")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    os.ftruncate(fd, 5 << 30)
    o.call("SEEK_END", os.lseek, fd, 0, os.SEEK_END)
    o.call("read at 4.5G", os.pread, fd, 8, (9 << 29))
    o.close(fd)


def _falloc_case(setup, mode, off, length):
    def fn(o):
        if setup:
            o.mkfile("f", pattern(setup, 11))
        fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
        o.call("fallocate", fallocate, fd, mode, off, length)
        o.fstat("fstat", fd)
        o.close(fd)
        o.content("content", o.p("f"))
    return fn


for _name, _setup, _mode, _off, _len in [
        ("extend_empty", 0, 0, 0, 100000),
        ("extend_offset", 5000, 0, 65000, 70000),
        ("within_data", 200000, 0, 1000, 5000),
        ("keep_size_beyond_eof", 5000, FALLOC_FL_KEEP_SIZE, 4096, 100000),
        ("punch_aligned", 200000, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 65536),
        ("punch_unaligned", 200000, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 3000),
        ("punch_across_64k", 200000, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 60000, 10000),
        ("punch_whole", 200000, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 200000),
        ("punch_past_eof", 200000, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 150000, 100000),
        ("punch_tail_partial", 200000, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 199990, 10),
        ("punch_without_keep_size", 200000, FALLOC_FL_PUNCH_HOLE, 4096, 4096),
        ("zero_range", 200000, FALLOC_FL_ZERO_RANGE, 5000, 70000),
        ("negative_len", 1000, 0, 0, -5),
        ("zero_len", 1000, 0, 0, 0),
        ("negative_offset", 1000, 0, -1, 10)]:
    add(f"fallocate/{_name}", _falloc_case(_setup, _mode, _off, _len))


@scenario("fallocate/rdonly_fd")
def _(o):
    o.mkfile("f", b"abc")
    fd = os.open(o.p("f"), os.O_RDONLY)
    o.call("fallocate", fallocate, fd, 0, 0, 100)
    os.close(fd)
    o.lstat("stat", o.p("f"))


@scenario("fallocate/punch_then_write")
def _(o):
    o.mkfile("f", pattern(200000, 12))
    fd = os.open(o.p("f"), os.O_RDWR)
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 131072)
    os.pwrite(fd, b"refill", 65536)
    os.close(fd)
    o.content("content", o.p("f"))


# ==========================================================================
# O_APPEND, lseek


@scenario("append/two_fds_interleaved")
def _(o):
    a = o.open("open a", o.p("f"), os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    b = o.open("open b", o.p("f"), os.O_WRONLY | os.O_APPEND)
    for i in range(50):
        os.write(a, b"a%03d" % i)
        os.write(b, b"B%03d" % i)
    o.close(a)
    o.close(b)
    o.content("content", o.p("f"))


@scenario("append/concurrent_threads")
def _(o):
    rec_len = 97
    per = 300

    def writer(tag):
        fd = os.open(o.p("f"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        for i in range(per):
            os.write(fd, (b"%s%05d" % (tag, i)).ljust(rec_len - 1, b".") + b"\n")
        os.close(fd)
    ts = [threading.Thread(target=writer, args=(t,)) for t in (b"A", b"B")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    data = read_all(o.p("f"))
    o.rec("size", len(data))
    recs = [data[i:i + rec_len] for i in range(0, len(data), rec_len)]
    o.rec("records intact", all(r.endswith(b"\n") and r[:1] in (b"A", b"B") for r in recs))
    o.rec("sorted records", hashlib.sha256(b"".join(sorted(recs))).hexdigest()[:16])


@scenario("append/concurrent_processes")
def _(o):
    pids = []
    for tag in (b"P", b"Q"):
        pid = os.fork()
        if pid == 0:
            try:
                fd = os.open(o.p("f"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
                for i in range(200):
                    os.write(fd, b"%s%05d\n" % (tag, i))
                os.close(fd)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    data = read_all(o.p("f"))
    recs = data.split(b"\n")[:-1]
    o.rec("size", len(data))
    o.rec("records", sorted(set(len(r) for r in recs)))
    o.rec("per-writer order kept", [r for r in recs if r[:1] == b"P"] == [b"P%05d" % i for i in range(200)])


@scenario("append/pwrite_ignores_offset")
def _(o):
    o.mkfile("f", b"0123456789")
    fd = o.open("open", o.p("f"), os.O_WRONLY | os.O_APPEND)
    o.call("pwrite at 0", os.pwrite, fd, b"APP", 0)
    o.close(fd)
    o.content("content", o.p("f"))


@scenario("append/after_external_truncate")
def _(o):
    o.mkfile("f", b"0123456789")
    fd = o.open("open", o.p("f"), os.O_WRONLY | os.O_APPEND)
    os.truncate(o.p("f"), 3)
    o.call("append", os.write, fd, b"X")
    other = os.open(o.p("f"), os.O_WRONLY)
    os.pwrite(other, b"abcdefgh", 0)
    os.close(other)
    o.call("append 2", os.write, fd, b"Y")
    o.close(fd)
    o.content("content", o.p("f"))


@scenario("seek/whence")
def _(o):
    o.mkfile("f", pattern(70000))
    fd = o.open("open", o.p("f"), os.O_RDWR)
    o.call("SEEK_END 0", os.lseek, fd, 0, os.SEEK_END)
    o.call("SEEK_END -10", os.lseek, fd, -10, os.SEEK_END)
    o.call("read at end-10", os.read, fd, 100)
    o.call("SEEK_CUR +5", os.lseek, fd, 5, os.SEEK_CUR)
    o.call("SEEK_SET -1", os.lseek, fd, -1, os.SEEK_SET)
    o.call("SEEK_END -70001", os.lseek, fd, -70001, os.SEEK_END)
    o.call("SEEK_SET past EOF", os.lseek, fd, 100000, os.SEEK_SET)
    o.call("write there", os.write, fd, b"far")
    o.fstat("fstat", fd)
    o.call("hole zero", lambda: os.pread(fd, 30000, 70000) == bytes(30000))
    o.call("bad whence", os.lseek, fd, 0, 77)
    o.close(fd)


@scenario("seek/data_hole_dense")
def _(o):
    o.mkfile("f", pattern(10000))
    fd = o.open("open", o.p("f"), os.O_RDONLY)
    o.call("SEEK_DATA 0", os.lseek, fd, 0, os.SEEK_DATA)
    o.call("SEEK_HOLE 0", os.lseek, fd, 0, os.SEEK_HOLE)
    o.call("SEEK_DATA at EOF", os.lseek, fd, 10000, os.SEEK_DATA)
    o.call("SEEK_HOLE past EOF", os.lseek, fd, 20000, os.SEEK_HOLE)
    o.close(fd)


@scenario("seek/dir")
def _(o):
    os.mkdir(o.p("d"))
    fd = os.open(o.p("d"), os.O_RDONLY)
    o.call("lseek dir 0", os.lseek, fd, 0, os.SEEK_SET)
    os.close(fd)


# ==========================================================================
# locks


@scenario("locks/flock_conflict")
def _(o):
    o.mkfile("f", b"")
    a = os.open(o.p("f"), os.O_RDWR)
    b = os.open(o.p("f"), os.O_RDWR)
    o.call("flock a EX", fcntl.flock, a, fcntl.LOCK_EX | fcntl.LOCK_NB)
    o.call("flock b EX", fcntl.flock, b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    o.call("flock b SH", fcntl.flock, b, fcntl.LOCK_SH | fcntl.LOCK_NB)
    o.call("unlock a", fcntl.flock, a, fcntl.LOCK_UN)
    o.call("flock b EX now", fcntl.flock, b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(a)
    os.close(b)


@scenario("locks/posix_lock_other_process")
def _(o):
    o.mkfile("f", b"0123456789")
    fd = os.open(o.p("f"), os.O_RDWR)
    o.call("lockf parent", fcntl.lockf, fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        res = b"ok"
        try:
            cfd = os.open(o.p("f"), os.O_RDWR)
            try:
                fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0)
            except OSError as e:
                res = errname(e.errno).encode()
            try:
                fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 5)
                res += b" / ok"
            except OSError as e:
                res += b" / " + errname(e.errno).encode()
        finally:
            os.write(w, res)
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    o.rec("child: overlapping / disjoint", os.read(r, 100).decode())
    os.close(r)
    os.close(fd)


# ==========================================================================
# attributes survive the inode leaving the kernel's cache
#
# echo 2 > /proc/sys/vm/drop_caches evicts unused dentries and inodes; on a
# FUSE mount that sends FORGET, so the next lookup reads the attributes
# back from the filesystem's own store rather than from a cache.


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    time.sleep(0.1)


FIELDS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_mtime_ns", "st_ctime_ns")


def _persist_case(opname):
    def fn(o):
        f = o.p("f")
        o.mkfile("f", pattern(100000, 21))
        os.setxattr(f, "user.keep", b"kept")
        time.sleep(TICK)
        if opname == "write":
            with open(f, "r+b") as fh:
                fh.seek(50000)
                fh.write(b"W" * 70000)
        elif opname == "truncate_down":
            os.truncate(f, 1234)
        elif opname == "truncate_up":
            os.truncate(f, 300000)
        elif opname == "utime":
            os.utime(f, ns=(123 * 10**9 + 4, 567 * 10**9 + 8))
        elif opname == "chmod_chown":
            os.chmod(f, 0o4710)
            os.chown(f, 1001, 1002)
        elif opname == "rename":
            os.rename(f, o.p("g"))
            f = o.p("g")
        elif opname == "link":
            os.link(f, o.p("h"))
        elif opname == "setxattr":
            os.setxattr(f, "user.new", b"v")
        elif opname == "fallocate":
            fd = os.open(f, os.O_RDWR)
            fallocate(fd, 0, 0, 250000)
            os.close(fd)
        elif opname == "punch":
            fd = os.open(f, os.O_RDWR)
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 65536)
            os.close(fd)
        elif opname == "o_trunc_write":
            with open(f, "wb") as fh:
                fh.write(b"rewritten")
        elif opname == "write_then_utime_then_write":
            fd = os.open(f, os.O_RDWR)
            os.pwrite(fd, b"a", 0)
            os.utime(fd, ns=(10**9, 2 * 10**9))
            os.pwrite(fd, b"b", 200000)
            os.close(fd)
        before = os.lstat(f)
        data = read_all(f)
        drop_caches()
        after = os.lstat(f)
        o.rec("unchanged across cache drop",
              {k[3:]: getattr(after, k) == getattr(before, k) for k in FIELDS})
        o.lstat("stat", f)
        o.rec("content unchanged", read_all(f) == data)
        o.content("content", f)
        o.call("xattrs", lambda: sorted(os.listxattr(f)))
    return fn


for _op in ["write", "truncate_down", "truncate_up", "utime", "chmod_chown", "rename", "link",
            "setxattr", "fallocate", "punch", "o_trunc_write", "write_then_utime_then_write"]:
    add(f"persist/{_op}", _persist_case(_op))


@scenario("persist/directory_and_symlink")
def _(o):
    os.mkdir(o.p("d"), 0o750)
    os.symlink("some/target", o.p("d", "l"))
    os.mkfifo(o.p("d", "fifo"), 0o600)
    os.utime(o.p("d"), ns=(3 * 10**9, 4 * 10**9))
    before = {n: os.lstat(o.p(*n)) for n in [("d",), ("d", "l"), ("d", "fifo")]}
    drop_caches()
    o.rec("unchanged", {"/".join(n): {k[3:]: getattr(os.lstat(o.p(*n)), k) == getattr(st, k)
                                      for k in FIELDS if k != "st_size"}
                        for n, st in before.items()})
    o.tree("tree")


@scenario("persist/unlinked_open_file")
def _(o):
    fd = o.open("open", o.p("f"), os.O_CREAT | os.O_RDWR)
    os.write(fd, pattern(70000, 3))
    os.unlink(o.p("f"))
    drop_caches()
    o.call("read via fd", os.pread, fd, 70000, 0)
    o.fstat("fstat", fd)
    o.close(fd)
    o.ls("listing")


# ==========================================================================
# runner


def _run_side(fn, base, is_ref, uid):
    os.mkdir(base)
    os.chown(base, 0, 0)
    os.chmod(base, 0o755)
    old_umask = os.umask(0o022)
    o = Obs(base, is_ref, uid)
    status = "ok"
    try:
        fn(o)
    except OracleLimited as e:
        status = ("limited", str(e))
    except ScenarioSkip as e:
        status = ("skip", str(e))
    except Exception as e:  # noqa: BLE001 -- any exception is part of the outcome
        detail = errname(e.errno) if isinstance(e, OSError) else str(e)[:200]
        o.out.append(["!exception", f"{type(e).__name__}: {detail}"])
        status = ("error", traceback.format_exc())
    finally:
        o.closeall()
        os.umask(old_umask)
        try:
            os.chdir("/")
        except OSError:
            pass
    return o.out, status


def _fmt(v, limit=600):
    s = json.dumps(v, ensure_ascii=False, default=repr)
    return s if len(s) <= limit else s[:limit] + "..."


def compare(ref_out, test_out):
    """(equal, detail) for two observations."""
    if ref_out == test_out:
        return True, ""
    lines = []
    n = max(len(ref_out), len(test_out))
    shown = 0
    for i in range(n):
        r = ref_out[i] if i < len(ref_out) else None
        t = test_out[i] if i < len(test_out) else None
        if r != t:
            label = (r or t)[0]
            lines.append(f"[{i}] {label}:")
            lines.append(f"    want: {_fmt(r[1] if r else '<missing>')}")
            lines.append(f"    got:  {_fmt(t[1] if t else '<missing>')}")
            shown += 1
            if shown >= 4:
                lines.append("    ...")
                break
    return False, "\n".join(lines)


def _rmtree(path):
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        # something refused (e.g. a 0000 directory on a filesystem that does
        # not let root bypass it); open everything up and retry
        for dp, dn, _fn in os.walk(path):
            for d in dn:
                try:
                    os.chmod(os.path.join(dp, d), 0o755)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)


def select(pattern=None):
    if not pattern:
        return list(SCENARIOS)
    rx = re.compile(pattern)
    return [(n, f) for n, f in SCENARIOS if rx.search(n)]


def run_suite(ref_dir, test_dir, uid_nonroot=65534, pattern=None, verbose=0, on_result=None):
    """Run every (selected) scenario on ref_dir and test_dir; returns a list
    of (scenario_name, passed, detail).  Scenarios the oracle cannot run
    pass with a detail starting "SKIP ".  on_result(name, passed, detail)
    is called as each scenario finishes."""
    if os.geteuid() != 0:
        raise RuntimeError("the POSIX suite must run as root")
    results = []
    for idx, (name, fn) in enumerate(select(pattern)):
        sub = f"s{idx:03d}"
        rbase, tbase = os.path.join(ref_dir, sub), os.path.join(test_dir, sub)
        for b in (rbase, tbase):
            if os.path.lexists(b):
                _rmtree(b)
        t0 = time.monotonic()
        ref_out, ref_status = _run_side(fn, rbase, True, uid_nonroot)
        test_out, test_status = _run_side(fn, tbase, False, uid_nonroot)
        elapsed = time.monotonic() - t0
        skip = [st[1] for st in (ref_status, test_status) if isinstance(st, tuple) and st[0] == "skip"]
        if isinstance(ref_status, tuple) and ref_status[0] == "limited":
            passed, detail = True, f"SKIP oracle-limited: {ref_status[1]}"
        elif skip:
            passed, detail = True, "SKIP " + "; ".join(skip)
        elif isinstance(ref_status, tuple) and ref_status[0] == "error":
            passed, detail = False, "suite error: the oracle raised\n" + ref_status[1]
        else:
            passed, detail = compare(ref_out, test_out)
            if not passed and isinstance(test_status, tuple) and test_status[0] == "error":
                detail += "\n" + test_status[1].rstrip().splitlines()[-1]
        if verbose >= 2 or (verbose and not passed):
            detail += "\nref:  " + _fmt(ref_out, 20000) + "\ntest: " + _fmt(test_out, 20000)
        if verbose >= 2:
            detail += f"\n({elapsed:.2f}s)"
        _rmtree(rbase)
        _rmtree(tbase)
        results.append((name, passed, detail))
        if on_result:
            on_result(name, passed, detail)
    return results


def tap_line(n, name, passed, detail, todo=None):
    if detail.startswith("SKIP "):
        return f"ok {n} - {name} # SKIP {detail[5:]}"
    if todo is not None:
        return f"ok {n} - {name} # TODO {todo}"
    return f"{'ok' if passed else 'not ok'} {n} - {name}"


def main(argv=None):
    ap = argparse.ArgumentParser(description="Differential POSIX suite: REF_DIR is the oracle.")
    ap.add_argument("ref_dir")
    ap.add_argument("test_dir")
    ap.add_argument("-k", dest="pattern", help="run scenarios whose name matches this regex")
    ap.add_argument("-v", dest="verbose", action="count", default=0)
    ap.add_argument("--uid", type=int, default=65534, help="unprivileged uid for permission scenarios")
    ap.add_argument("--list", action="store_true", help="list scenario names and exit")
    args = ap.parse_args(argv)
    if args.list:
        for n, _ in select(args.pattern):
            print(n)
        return 0
    if os.geteuid() != 0:
        print("posix_suite.py must run as root", file=sys.stderr)
        return 2
    for d in (args.ref_dir, args.test_dir):
        os.makedirs(d, exist_ok=True)
    counter = {"n": 0, "fail": 0, "skip": 0}

    def show(name, passed, detail):
        counter["n"] += 1
        if detail.startswith("SKIP "):
            counter["skip"] += 1
        if not passed:
            counter["fail"] += 1
        print(tap_line(counter["n"], name, passed, detail), flush=True)
        body = detail if not detail.startswith("SKIP ") else ""
        for line in body.splitlines():
            print(f"# {line}", flush=True)

    t0 = time.monotonic()
    run_suite(args.ref_dir, args.test_dir, args.uid, args.pattern, args.verbose, show)
    print(f"1..{counter['n']}")
    print(f"# {counter['n'] - counter['fail']} passed ({counter['skip']} skipped), "
          f"{counter['fail']} failed, {time.monotonic() - t0:.1f}s")
    return 1 if counter["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
