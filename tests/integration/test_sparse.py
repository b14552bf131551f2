#!/usr/bin/env python3
"""Holes and reservations: SEEK_DATA/SEEK_HOLE and fallocate.

- ext4 is the oracle.  The same writes, truncates and punches
  (fallocate PUNCH_HOLE) go to a file on ext4 (the scratch directory) and
  to a file on every layout; the data/hole extents that SEEK_DATA and
  SEEK_HOLE give must be the same, to the 4 KiB block, and so must the
  answer of both whences at every block boundary and at unaligned
  offsets (ENXIO past the end included), with the size only in the
  daemon's memory, after a remount, and degraded (one disk removed):
  mirror exactly, parity never a hole where ext4 has data.
- `cp` of a sparse file out of spacefs keeps its holes (st_blocks of the
  copy near the ext4 original's, not the file size), same bytes.
- A region reserved by fallocate reads as zeros and is a hole to
  SEEK_DATA on both; with -o writeback_cache the daemon declines and
  the kernel reports all data.
- fallocate reserves: on mirror 2 and parity 1 pools whose disks live on
  one small ext4 (a loop device), posix_fallocate of 10 MiB raises
  st_blocks by the layout's overhead, the disks are then filled with
  another file until ENOSPC, and writing the whole reserved range still
  succeeds; after a remount the bytes read back equal.
- reservations survive a disk's replacement (rebuild) and retirement
  (move): the new disk holds as much of each file's reservation as the
  old one did, st_blocks after a remount is what it was, and data
  written into the reserved range then reads back equal.
"""
import ctypes
import ctypes.util
import errno
import os
import random
import subprocess
import tempfile

import harness
from failures import FailPool
from harness import Tap, log_tail, run

BLK = 4096
MiB = 1 << 20
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def seek(fd, off, whence):
    """lseek's answer, or the errno name."""
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)


def extents(fd):
    """[(data start, data end)] by SEEK_DATA/SEEK_HOLE from 0."""
    out, off = [], 0
    while True:
        d = seek(fd, off, os.SEEK_DATA)
        if not isinstance(d, int):
            return out if d == "ENXIO" else out + [d]
        h = seek(fd, d, os.SEEK_HOLE)
        out.append((d, h))
        if not isinstance(h, int) or h <= d:
            return out
        off = h


def probes(fd, size, seed):
    """Both whences at every block boundary and at unaligned offsets."""
    rng = random.Random(seed)
    offs = list(range(0, size + 2 * BLK, BLK)) + [rng.randrange(0, size + BLK) for _ in range(64)]
    return [(o, seek(fd, o, os.SEEK_DATA), seek(fd, o, os.SEEK_HOLE)) for o in offs]


# ---- operation sequences -------------------------------------------------------

def scripted():
    """A sequence with every kind of edge: partial blocks, holes inside
    data, a punch inside a hole, truncates down and up, a far write."""
    return [("write", 0, 5000), ("write", 200000, 70000), ("write", 1 * MiB + 3 * BLK, 4096),
            ("punch", 210000, 40000), ("punch", 2 * BLK, 3 * BLK), ("punch", 600000, 100),
            ("write", 2 * MiB + 100, 300000), ("truncate", 2 * MiB + 150000),
            ("truncate", 3 * MiB), ("truncate", 2 * MiB + 150000 + 7 * BLK + 11),
            ("punch", 1 * MiB, 1 * MiB + 5000), ("write", 4 * MiB - 10, 10)]


def randomized(rng, n=24, span=3 * MiB):
    ops = []
    for _ in range(n):
        r = rng.random()
        off = rng.randrange(0, span)
        if rng.random() < 0.5:
            off &= ~(BLK - 1)
        if r < 0.5:
            ops.append(("write", off, rng.randrange(1, 300000)))
        elif r < 0.8:
            ops.append(("punch", off, rng.randrange(1, 600000)))
        else:
            ops.append(("truncate", rng.randrange(0, span + MiB)))
    return ops


def apply(fd, ops, seed):
    rng = random.Random(seed)
    for op in ops:
        if op[0] == "write":
            os.pwrite(fd, rng.randbytes(op[2]) or b"\1", op[1])
        elif op[0] == "punch":
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, op[1], op[2])
        else:
            os.ftruncate(fd, op[1])


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def covered(ext, want):
    """Every byte of want's extents lies in one of ext's."""
    return all(any(a <= s and e <= b for a, b in ext) for s, e in want)


# ---- oracle comparison -----------------------------------------------------------

def compare(t, pool, oracle, files, when, exact, superset=()):
    """exact: volumes that must answer as ext4; superset: volumes that
    must report data wherever ext4 does (degraded parity)."""
    for vol in pool.layouts:
        if vol not in exact and vol not in superset:
            continue
        for name in files:
            spath, opath = os.path.join(pool.mnt, vol, name), os.path.join(oracle, name)
            fd, ofd = os.open(spath, os.O_RDONLY), os.open(opath, os.O_RDONLY)
            size = os.fstat(ofd).st_size
            got, want = extents(fd), extents(ofd)
            data_same = read_all(spath) == read_all(opath)
            if vol in exact:
                ok = t.eq(got, want, f"{when}: {vol}/{name}: SEEK_DATA/SEEK_HOLE extents are "
                          f"ext4's ({len(want)} extents)")
                if ok:
                    gp, wp = probes(fd, size, size), probes(ofd, size, size)
                    bad = [(a, b) for a, b in zip(gp, wp) if a[1:] != b[1:]]
                    t.ok(not bad, f"{when}: {vol}/{name}: both whences at {len(wp)} offsets "
                         f"answer as ext4 {bad[:3]}")
            else:
                t.ok(covered(got, want) and all(isinstance(x, int) for e in got for x in e),
                     f"{when}: {vol}/{name}: degraded parity never reports a hole where ext4 "
                     f"has data ({len(got)} vs {len(want)} extents)")
            t.ok(data_same, f"{when}: {vol}/{name}: same bytes as ext4")
            os.close(fd)
            os.close(ofd)


def oracle_test(t):
    pool = FailPool(harness.LAYOUTS, ndisks=6, seed=3)
    try:
        oracle = tempfile.mkdtemp(prefix="oracle-", dir=pool.dir)
        pool.mount()
        rng = random.Random(11)
        seqs = {"scripted": scripted()}
        for i in range(3):
            seqs[f"random{i}"] = randomized(rng)
        for name, ops in seqs.items():
            for where in [oracle] + [os.path.join(pool.mnt, v) for v in pool.layouts]:
                fd = os.open(os.path.join(where, name), os.O_RDWR | os.O_CREAT, 0o644)
                apply(fd, ops, seed=len(name) * 31 + len(ops))
                os.close(fd)
        # in memory: the sizes have not necessarily reached the metadata yet
        compare(t, pool, oracle, seqs, "fresh", pool.layouts)
        check_enxio(t, pool)
        check_cp(t, pool, oracle)
        check_reserved_hole(t, pool, oracle)
        t.eq(pool.m.stop(), 0, "unmount")
        pool.mount()
        compare(t, pool, oracle, seqs, "remounted", pool.layouts)
        t.eq(pool.m.stop(), 0, "unmount")
        pool.fail(1, "removed")
        pool.mount()
        compare(t, pool, oracle, seqs, "disk 1 removed", ("mirror2", "mirror3"),
                ("parity1", "parity2"))
        t.eq(pool.m.stop(), 0, "unmount")
        rep = pool.m.sanitizer_report()
        t.ok(rep is None, "no sanitizer report in the daemon log")
        if rep:
            t.diag(rep[-3000:])
        check_writeback(t, pool)
    except Exception as e:
        t.ok(False, f"oracle test ran: {e!r}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()


def check_enxio(t, pool):
    for vol in pool.layouts:
        path = os.path.join(pool.mnt, vol, "tail")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(fd, b"z" * 100, 0)
        os.ftruncate(fd, 5 * MiB)
        got = [seek(fd, 5 * MiB, os.SEEK_DATA), seek(fd, 5 * MiB, os.SEEK_HOLE),
               seek(fd, 6 * MiB, os.SEEK_HOLE), seek(fd, MiB, os.SEEK_DATA),
               seek(fd, MiB, os.SEEK_HOLE), seek(fd, 50, os.SEEK_DATA), seek(fd, 50, os.SEEK_HOLE)]
        # written past the end, only in memory so far: the new end is seen
        os.pwrite(fd, b"w" * 10, 9 * MiB)
        got += [seek(fd, 6 * MiB, os.SEEK_DATA), seek(fd, 9 * MiB + 5, os.SEEK_HOLE)]
        t.eq(got, ["ENXIO", "ENXIO", "ENXIO", "ENXIO", MiB, 50, BLK, 9 * MiB, 9 * MiB + 10],
             f"{vol}: ENXIO at and past the end and in a trailing hole; a write past the end "
             f"is found at once")
        os.close(fd)


def check_cp(t, pool, oracle):
    """cp out of spacefs keeps the holes: auto mode (SEEK_DATA only) and
    --sparse=always."""
    rng = random.Random(5)
    opath = os.path.join(oracle, "big")
    with open(opath, "wb") as f:
        f.truncate(64 * MiB)
        for off in (0, 7 * MiB + 12345, 40 * MiB, 64 * MiB - 3000):
            f.seek(off)
            f.write(rng.randbytes(200000 if off < 60 * MiB else 3000))
    want_blocks = os.stat(opath).st_blocks
    for vol in ("mirror2", "parity1"):
        src = os.path.join(pool.mnt, vol, "big")
        run(["cp", opath, src])
        for mode in ("auto", "always"):
            dst = os.path.join(pool.dir, f"copy-{vol}-{mode}")
            fd = os.open(src, os.O_RDONLY)  # nothing of it cached: cp's reads reach the daemon
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            before = volume_read_bytes(pool, vol)
            run(["cp", f"--sparse={mode}", src, dst])
            read = volume_read_bytes(pool, vol) - before
            blocks = os.stat(dst).st_blocks
            t.ok(read_all(dst) == read_all(opath) and blocks <= 2 * want_blocks,
                 f"{vol}: cp --sparse={mode} out of spacefs: same bytes, {blocks} blocks "
                 f"(ext4 original {want_blocks}, file {64 * MiB // 512})")
            # cp detects zeros by itself; what SEEK_DATA spares is reading the holes
            t.ok(read < 8 * MiB, f"{vol}: cp --sparse={mode} read {read // 1024} KiB of the "
                 f"64 MiB file (only its data)")
            os.unlink(dst)


def volume_read_bytes(pool, vol):
    import json
    st = json.loads(pool.ctl("status", pool.good_source(), "--json").stdout)
    return next(v["read_bytes"] for v in st["daemon"]["volumes"] if v["name"] == vol)


def check_reserved_hole(t, pool, oracle):
    """fallocate'd, never written: zeros, and what ext4 says for SEEK_DATA."""
    opath = os.path.join(oracle, "resv")
    fd = os.open(opath, os.O_RDWR | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, 0, 2 * MiB)
    os.pwrite(fd, b"q" * BLK, MiB)
    want = extents(fd)
    os.close(fd)
    for vol in pool.layouts:
        path = os.path.join(pool.mnt, vol, "resv")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(fd, 0, 2 * MiB)
        os.pwrite(fd, b"q" * BLK, MiB)
        got = extents(fd)
        st = os.fstat(fd)
        os.close(fd)
        t.ok(got == want and read_all(path) == read_all(opath) and st.st_blocks * 512 >= 2 * MiB,
             f"{vol}: a reserved range reads as zeros and seeks as on ext4 ({got} vs {want}); "
             f"st_blocks {st.st_blocks} counts the reservation")
        # KEEP_SIZE reserves past the end without growing the file
        fd = os.open(path, os.O_RDWR)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 2 * MiB, MiB)
        st2 = os.fstat(fd)
        os.close(fd)
        t.ok(st2.st_size == 2 * MiB and st2.st_blocks > st.st_blocks,
             f"{vol}: KEEP_SIZE keeps the size and reserves ({st.st_blocks} -> {st2.st_blocks})")


def check_writeback(t, pool):
    """With writeback_cache the kernel holds data the daemon cannot see:
    the daemon declines and the kernel answers all data, never a hole."""
    pool.mount("writeback_cache")
    try:
        path = os.path.join(pool.mnt, "mirror2", "wb")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(fd, 4 * MiB)
        os.pwrite(fd, b"d" * 100, 2 * MiB)
        t.eq([seek(fd, 0, os.SEEK_DATA), seek(fd, 0, os.SEEK_HOLE)], [0, 4 * MiB],
             "writeback_cache: no hole is reported (the kernel's answer)")
        os.close(fd)
    finally:
        pool.m.stop()


# ---- reservations on full disks ---------------------------------------------------

class LoopFs:
    """A small ext4 on a loop device, mounted in a scratch directory."""

    def __init__(self, base, name, size_mb):
        self.img = os.path.join(base, name + ".img")
        self.mnt = os.path.join(base, name)
        os.makedirs(self.mnt)
        with open(self.img, "wb") as f:
            f.truncate(size_mb * MiB)
        run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", self.img])
        run(["mount", "-o", "loop", self.img, self.mnt])
        self.ballast = os.path.join(self.mnt, "ballast")

    def weigh(self, mb):
        """Take mb MiB of its space away (0: give it back)."""
        with open(self.ballast, "wb") as f:
            f.truncate(0)
            if mb:
                os.posix_fallocate(f.fileno(), 0, mb * MiB)

    def free(self):
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def close(self):
        run(["umount", self.mnt], check=False)


class SmallPool(harness.Pool):
    """A pool whose 4 disks are on the small filesystem `root`; mount
    point, run directory and daemon log stay in the scratch directory."""

    def __init__(self, root):
        self.dir = tempfile.mkdtemp(prefix="spacefs-it-", dir=os.environ.get(
            "SPACEFS_TEST_DIR", "/var/tmp"))
        self.disks = [os.path.join(root, f"d{i}") for i in range(4)]
        for d in self.disks:
            os.makedirs(d)
        self.mnt = os.path.join(self.dir, "mnt")
        self.rundir = os.path.join(self.dir, "run")
        os.makedirs(self.rundir)
        os.environ["SPACEFS_RUN_DIR"] = self.rundir
        self.mounts = []
        self.spacectl("pool", "create", "small", *self.disks)


def fill(path):
    """Write to path until the disks are full; bytes written.  The store
    reports a full disk under a write as EIO (docs/OPERATIONS.md)."""
    n, chunk = 0, os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY)
    try:
        for size in (MiB, 64 * 1024, BLK):
            while True:
                try:
                    os.write(fd, chunk[:size])
                    n += size
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EIO):
                        raise
                    break
    finally:
        os.close(fd)  # no fsync: its metadata commit would meet full disks
    return n


def reserve_test(t):
    base = tempfile.mkdtemp(prefix="spacefs-it-sparse-", dir=os.environ.get("SPACEFS_TEST_DIR",
                                                                            "/var/tmp"))
    fss, pool = [], None
    try:
        lfs = LoopFs(base, "small", 128)
        fss.append(lfs)
        pool = SmallPool(lfs.mnt)
        layouts = {"mirror2": (["mirror", "--copies", "2", "--columns", "2"], 2.0),
                   # the parity journal must fit these 128 MiB disks: its copies
                   # are preallocated when the volume opens, before the fill
                   "parity1": (["parity", "--parity", "1", "--columns", "4",
                                "--journal-size", "8M"], 4 / 3)}
        for vol, (args, _) in layouts.items():
            pool.volume(vol, *args, "--interleave", "64K")
        m = pool.mount("flush_interval=3600")
        rng = random.Random(9)
        want = {}
        for vol, (_, overhead) in layouts.items():
            path = os.path.join(pool.mnt, vol, "vm.img")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            os.posix_fallocate(fd, 0, 10 * MiB)
            st = os.fstat(fd)
            os.close(fd)
            t.ok(st.st_size == 10 * MiB and st.st_blocks * 512 >= overhead * 10 * MiB,
                 f"{vol}: posix_fallocate 10 MiB: size {st.st_size}, st_blocks {st.st_blocks} "
                 f"(reserved {st.st_blocks * 512 / MiB:.1f} MiB, {overhead:.2f}x wanted)")
        # The disks' metadata (SQLite, dirty-region log) needs room to
        # commit, and a full metadata disk is another matter
        # (docs/OPERATIONS.md): a 3 MiB margin is given back once the
        # disks are full -- far less than writing the ranges would take
        # without their reservation (33 MiB).
        # The fillers are created first and the attribute write-back is
        # held off (flush_interval), so no metadata commit meets the full
        # disks.
        lfs.weigh(3)
        fillers = [os.path.join(pool.mnt, vol, "filler") for vol in layouts]
        for f in fillers:
            open(f, "wb").close()
        filled = sum(fill(f) for f in fillers)
        full = lfs.free()
        lfs.weigh(0)
        t.ok(full < 256 * 1024 and lfs.free() < 4 * MiB,
             f"the disks are full ({filled // MiB} MiB of filler, {full // 1024} KiB left, "
             f"{lfs.free() // 1024} KiB with the margin back)")
        for vol in layouts:
            path = os.path.join(pool.mnt, vol, "vm.img")
            data_bytes = rng.randbytes(10 * MiB)
            err = None
            fd = os.open(path, os.O_WRONLY)
            try:
                for off in range(0, 10 * MiB, MiB):
                    os.pwrite(fd, data_bytes[off:off + MiB], off)
                os.fsync(fd)
            except OSError as e:
                err = e
            os.close(fd)
            t.ok(err is None, f"{vol}: writing the whole reserved range on full disks "
                 f"succeeds ({err})")
            want[vol] = data_bytes
        t.eq(m.stop(), 0, "unmount")
        pool.mount()
        for vol in layouts:
            got = read_all(os.path.join(pool.mnt, vol, "vm.img"))
            t.ok(got == want[vol], f"{vol}: after a remount the reserved range reads back equal")
        t.eq(pool.mounts[-1].stop(), 0, "unmount")
        rep = pool.mounts[-1].sanitizer_report()
        t.ok(rep is None, "no sanitizer report in the daemon log")
    except Exception as e:
        t.ok(False, f"reservation test ran: {e!r}")
        if pool:
            t.diag(log_tail(pool))
    finally:
        if pool:
            pool.cleanup()
        for f in fss:
            f.close()
        subprocess.run(["rm", "-rf", base])


def allocated(disk, vol):
    """Bytes allocated to volume vol's chunk files (and sidecars) on disk."""
    total = 0
    for root, _, files in os.walk(os.path.join(disk, "vol", vol, "data")):
        total += sum(os.stat(os.path.join(root, f)).st_blocks * 512 for f in files)
    return total


def reserve_rebuild_test(t):
    """A disk replaced (its positions rebuilt) or retired (its positions
    copied) keeps the files' reservations: zeros reserved by fallocate are
    holes to a rebuild and to a sparse copy, so both must carry them."""
    pool = harness.Pool(ndisks=6, prefix="spacefs-it-resv-")
    try:
        layouts = {"mirror2": ["mirror", "--copies", "2", "--columns", "2"],
                   "parity1": ["parity", "--parity", "1", "--columns", "4",
                               "--journal-size", "8M"]}
        for vol, args in layouts.items():
            pool.volume(vol, *args, "--interleave", "64K")
        pool.mount()
        blocks = {}
        for vol in layouts:
            path = os.path.join(pool.mnt, vol, "vm.img")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            os.pwrite(fd, b"head" * 1024, 0)  # some data beside the reservation
            os.posix_fallocate(fd, 0, 10 * MiB)
            os.close(fd)
        os.sync()
        # the disk that holds a position of both files' chunks
        both = [i for i, d in enumerate(pool.disks)
                if all(allocated(d, v) > MiB for v in layouts)]
        t.ok(both, f"a disk holds reserved chunks of both volumes "
                   f"{[[allocated(d, v) // 1024 for v in layouts] for d in pool.disks]}")
        i = both[0]
        old = {v: allocated(pool.disks[i], v) for v in layouts}
        new = os.path.join(pool.dir, "new")
        os.makedirs(new)
        p = pool.spacectl("disk", "replace", pool.source if i else pool.disks[1], str(i), new,
                          "--wait", check=False)
        t.eq(p.returncode, 0, f"disk replace {i} --wait {p.stderr.strip()}")
        for v in layouts:
            t.ok(allocated(new, v) >= old[v],
                 f"{v}: the replacement holds the old disk's reservation "
                 f"({allocated(new, v) // 1024} KiB, the old disk {old[v] // 1024} KiB)")
        pool.mounts[-1].stop()
        pool.disks[i] = new
        pool.mount()
        for v in layouts:
            blocks[v] = os.stat(os.path.join(pool.mnt, v, "vm.img")).st_blocks
        # retire a disk of the parity volume's file (mirror's 4 positions
        # with 2 columns leave 2 free disks too)
        j = next(k for k in range(6) if k != i and allocated(pool.disks[k], "parity1") > MiB)
        old = {v: allocated(pool.disks[j], v) for v in layouts}
        p = pool.spacectl("disk", "retire", pool.disks[0 if j else 1], str(j), "--wait",
                          check=False)
        t.eq(p.returncode, 0, f"disk retire {j} --wait {p.stderr.strip()}")
        moved = {v: sum(allocated(d, v) for k, d in enumerate(pool.disks) if k != j)
                 for v in layouts}
        pool.mounts[-1].stop()
        m = pool.mount()
        want = {}
        rng = random.Random(3)
        for v in layouts:
            path = os.path.join(pool.mnt, v, "vm.img")
            st = os.stat(path).st_blocks
            t.ok(st >= blocks[v], f"{v}: st_blocks after replace, retire and a remount "
                                  f"{st} >= {blocks[v]} after the replace")
            want[v] = rng.randbytes(10 * MiB)
            with open(path, "r+b") as f:
                f.write(want[v])
        t.ok(all(moved[v] >= blocks[v] * 512 for v in layouts),
             f"the other disks hold every reservation after the retire {moved} "
             f"(st_blocks {blocks})")
        t.eq(m.stop(), 0, "unmount")
        pool.mount()
        for v in layouts:
            t.ok(read_all(os.path.join(pool.mnt, v, "vm.img")) == want[v],
                 f"{v}: the reserved range written after the moves reads back equal")
        t.eq(pool.mounts[-1].stop(), 0, "unmount")
        t.ok(pool.mounts[-1].sanitizer_report() is None, "no sanitizer report")
    except Exception as e:
        t.ok(False, f"reservation rebuild test ran: {e!r}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()


def main():
    t = Tap()
    oracle_test(t)
    reserve_test(t)
    reserve_rebuild_test(t)
    t.done()


if __name__ == "__main__":
    main()
