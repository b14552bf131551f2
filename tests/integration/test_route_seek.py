#!/usr/bin/env python3
"""SEEK_DATA / SEEK_HOLE through a node that does not own the volume.

Two nodes on one pool with a mirror 2 and a parity 1 volume.  Through the
mount of the node that does not own a volume (every request redirected to
the owner) a sparse file is written: data at 0, at 3 MiB and at the end of
9 MiB, holes between, then a hole punched inside the first extent.  The
same sequence of writes and punches is made on a plain ext4 file (the
oracle; its block size is 4 KiB, spacefs's holes are exact to 4 KiB too),
and every SEEK_DATA and SEEK_HOLE from every 64 KiB offset must answer the
same through the non-owner, through the owner, and after the volume moved
to the other node (the roles swapped).  `cp --sparse=always` through the
non-owner must keep the copy's holes, and the bytes must match.

Before lseek was routed, a non-owner had no lseek operation: the kernel
answered every SEEK_HOLE with the file size, so copies through a
redirecting node (Samba on a non-owner) were never sparse.  The copies
across owner moves also found a crash: a peer's release of an open that a
previous owner had counted took one of the new owner's own open counts,
and its own release then hit fs_inode_release's assertion (1 run in 4).
"""
import errno
import os
import shutil
import subprocess
import tempfile
import threading

from harness import Pool, Tap, log_tail
from nodes import Node, free_port, owners, wait_for

MiB = 1 << 20
OPTS = "heartbeat=0.5,lease=3"
MOVES = 10
VOLS = {"M": ["mirror", "--copies", "2"], "P": ["parity", "--parity", "1"]}


def build(path):
    """The writes and the punch, the same on any file system."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, b"a" * (256 << 10), 0)
        os.pwrite(fd, b"b" * (64 << 10), 3 * MiB)
        os.pwrite(fd, b"c" * 4096, 9 * MiB - 4096)
        os.fsync(fd)
        # punch [64 KiB, 128 KiB) of the first extent
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.fallocate(fd, 3, ctypes.c_long(64 << 10), ctypes.c_long(64 << 10)) != 0:
            raise OSError(ctypes.get_errno(), "fallocate punch")
        os.fsync(fd)
    finally:
        os.close(fd)


def seeks(path):
    """Every SEEK_DATA and SEEK_HOLE answer from every 64 KiB offset."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for off in range(0, size + (64 << 10), 64 << 10):
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                try:
                    out.append(os.lseek(fd, off, whence))
                except OSError as e:
                    out.append(-e.errno)
    finally:
        os.close(fd)
    return out


class CopyLoop(threading.Thread):
    """cp --sparse=always of src through a mount, back to back, until
    stopped; keeps every failure (a copy that errs, differs in bytes or
    in holes)."""

    def __init__(self, src, dst, want):
        super().__init__(daemon=True)
        self.src, self.dst, self.want = src, dst, want
        self.stop = threading.Event()
        self.runs, self.bad = 0, []

    def run(self):
        with open(self.src, "rb") as f:
            data = f.read()
        while not self.stop.is_set():
            p = subprocess.run(["cp", "--sparse=always", self.src, self.dst],
                               capture_output=True, text=True)
            self.runs += 1
            if p.returncode:
                self.bad.append(f"cp: {p.stderr.strip()[-300:]}")
                continue
            with open(self.dst, "rb") as f:
                if f.read() != data:
                    self.bad.append("copy differs in bytes")
            got = seeks(self.dst)
            if got != self.want:
                self.bad.append(f"copy differs in holes: {got[:12]}")


def moves_under_copies(t, pool, nodes, want):
    """Owner moves while copies run through both nodes: a move is a pause
    to the copies, never an error or a wrong hole."""
    n1, n2 = nodes
    loops = [CopyLoop(os.path.join(n.mnt, "M", "f"), os.path.join(n.mnt, "M", f"loop-{n.name}"),
                      want) for n in nodes]
    for c in loops:
        c.start()
    failed = []
    moves = 0
    try:
        # MOVES at least, and on until each copy loop has run twice (the
        # point is moves during copies: a loaded machine copies slower)
        while moves < MOVES or (min(c.runs for c in loops) < 2 and moves < 8 * MOVES):
            i = moves
            moves += 1
            cur = owners(n1).get("M")
            target = "n1" if cur == "n2" else "n2"
            r = n1.spacectl("owner", "move", pool.source, "M", target, check=False)
            if r.returncode:
                failed.append(f"move {i} to {target}: {r.stderr.strip()[-200:]}")
    finally:
        for c in loops:
            c.stop.set()
        for c in loops:
            c.join(timeout=120)
    t.eq(failed, [], f"{moves} owner moves of M, each exit 0")
    for c, n in zip(loops, nodes):
        t.ok(c.runs >= 2, f"copies through {n.name} ran during the moves ({c.runs})")
        if not t.eq(c.bad, [], f"every copy through {n.name} right, across the moves"):
            t.diag("\n".join(c.bad[:5]))


def main():
    t = Tap()
    pool = Pool(ndisks=4)
    nodes = []
    oracle = tempfile.mkdtemp(prefix="spacefs-seek-oracle-", dir="/var/tmp")
    try:
        for name, args in VOLS.items():
            pool.spacectl("volume", "create", pool.source, name, "--layout", *args)
        n1 = Node(pool, "n1", f"127.0.0.1:{free_port()}", OPTS).start()
        n2 = Node(pool, "n2", f"127.0.0.1:{free_port()}", OPTS).start()
        nodes = [n1, n2]
        by = {"n1": n1, "n2": n2}
        # n2 joining makes n1 hand a volume over (balancing): wait until
        # each node owns one, so no owner changes under the checks below
        t.ok(wait_for(lambda: sorted(owners(n1).get(v, "") for v in VOLS) == ["n1", "n2"]
                      and sorted(owners(n2).get(v, "") for v in VOLS) == ["n1", "n2"], 30),
             "the volumes are balanced, one per node, as both nodes see it")
        ref = os.path.join(oracle, "f")
        build(ref)
        want = seeks(ref)
        t.ok(want.count(-errno.ENXIO) >= 1 and len(set(want)) > 4,
             "the oracle file has data, holes and an end")
        for v in VOLS:
            own = by[owners(n1)[v]]
            other = n2 if own is n1 else n1
            f = os.path.join(other.mnt, v, "f")
            build(f)
            t.eq(seeks(f), want,
                 f"{v}: SEEK_DATA/SEEK_HOLE through the non-owner {other.name} match ext4")
            t.eq(seeks(os.path.join(own.mnt, v, "f")), want,
                 f"{v}: and through the owner {own.name}")
            cp = os.path.join(other.mnt, v, "copy")
            p = subprocess.run(["cp", "--sparse=always", f, cp], capture_output=True, text=True)
            if not t.eq(p.returncode, 0, f"{v}: cp --sparse=always through the non-owner"):
                t.diag(p.stderr)
            with open(f, "rb") as x, open(cp, "rb") as y:
                t.ok(x.read() == y.read(), f"{v}: the copy has the same bytes")
            t.eq(seeks(cp), want, f"{v}: the copy has the same holes")
            r = own.spacectl("owner", "move", pool.source, v, other.name, check=False)
            t.eq(r.returncode, 0, f"{v}: owner moved to {other.name} "
                                  f"({r.stderr.strip()[-200:]})")
            t.eq(seeks(os.path.join(own.mnt, v, "f")), want,
                 f"{v}: after the move, through {own.name} (now redirecting)")
            t.eq(seeks(f), want, f"{v}: after the move, through {other.name} (now the owner)")
        moves_under_copies(t, pool, nodes, want)
        for n in nodes:
            t.eq(n.m.stop(), 0, f"{n.name} unmounts, exit 0")
            t.ok(n.m.sanitizer_report() is None, f"{n.name}: no sanitizer report")
        nodes = []
        m = pool.mount()
        for v in VOLS:
            t.eq(seeks(os.path.join(pool.mnt, v, "f")), want,
                 f"{v}: the same holes after a single-node remount")
        t.eq(m.stop(), 0, "single-node unmount")
    except Exception as e:
        t.ok(False, f"unexpected error: {e!r}")
        for n in nodes:
            t.diag(f"--- {n.name}\n" + n.m.log_text()[-3000:])
        t.diag(log_tail(pool))
    finally:
        for n in nodes:
            n.m.stop()
        shutil.rmtree(oracle, ignore_errors=True)
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
