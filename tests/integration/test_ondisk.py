#!/usr/bin/env python3
"""test_ondisk.py -- the bytes are where the layout says.

Writes files of many sizes to a volume of every layout through a real
mount, unmounts, and then reads the chunk files straight from the disk
directories with tests/integration/ondisk.py -- an independent Python
implementation of the on-disk format (layout.h position rotation,
store.h chunk naming and CRC sidecars, ISA-L's Cauchy Reed-Solomon
parity) that shares no code with spacefs.  For every file it checks:

  1. the file reassembled from the data chunks equals what was written;
  2. the redundancy is consistent: mirror copies identical, parity equal
     to the parity recomputed from the data columns, nothing past EOF;
  3. every 4 KiB block matches its CRC-32C in the .crc sidecar;
  4. the file's positions are on distinct disks (and no chunk file of it
     sits anywhere else).

A negative control then flips one byte of one data chunk of one
parity-volume file (and one mirror copy) and checks that the checker
flags exactly that file.

Environment: SPACEFS, SPACECTL (harness.py), SPACEFS_TEST_DIR, ONDISK_SEED.
"""
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ondisk  # noqa: E402
from harness import LAYOUTS, Pool, Tap, make_layout_volumes  # noqa: E402

NDISKS = 6
INTERLEAVE = 64 * 1024
KiB, MiB = 1024, 1024 * 1024


def default_geom(name, ndisks):
    """The geometry `spacectl volume create --layout ...` gives by default
    (layout.h: columns as many as the disks allow, up to 8; parity with a
    power of two of data columns)."""
    args = LAYOUTS[name]
    kind = args[0]
    if kind == "simple":
        return dict(kind="simple", copies=1, parity=0, columns=min(8, ndisks),
                    interleave=INTERLEAVE)
    if kind == "mirror":
        copies = int(args[args.index("--copies") + 1])
        return dict(kind="mirror", copies=copies, parity=0, columns=min(8, ndisks // copies),
                    interleave=INTERLEAVE)
    m = int(args[args.index("--parity") + 1])
    return dict(kind="parity", copies=1, parity=m, columns=ondisk.default_parity_columns(ndisks, m),
                interleave=INTERLEAVE)


def file_plan(k, rng):
    """[(name, writer)] where writer(path) writes the file and returns the
    expected contents."""
    sb = k * INTERLEAVE

    def plain(size):
        def w(path):
            data = rng.randbytes(size)
            with open(path, "wb") as f:
                f.write(data)
            return data
        return w

    def sparse(path):
        data = rng.randbytes(100000)
        with open(path, "wb") as f:
            f.seek(10 * MiB)
            f.write(data)
        return bytes(10 * MiB) + data

    def overwritten(path):
        size = 2 * sb + 5000
        buf = bytearray(rng.randbytes(size))
        with open(path, "wb") as f:
            f.write(buf)
        # small ranges: partial stripes, read-modify-write on parity,
        # unaligned edges, column and stripe boundaries, one extension
        ranges = [(INTERLEAVE - 100, 200), (sb - 3000, 6000), (4096, 1), (12345, 4096),
                  (size - 10, 2000)]
        for _ in range(20):
            ln = rng.randrange(1, 9000)
            ranges.append((rng.randrange(0, len(buf) - 1), ln))
        fd = os.open(path, os.O_RDWR)
        try:
            for off, ln in ranges:
                piece = rng.randbytes(ln)
                os.pwrite(fd, piece, off)
                if off + ln > len(buf):
                    buf.extend(bytes(off + ln - len(buf)))
                buf[off:off + ln] = piece
        finally:
            os.close(fd)
        # a second open, as another writer would
        with open(path, "r+b") as f:
            for _ in range(5):
                off, ln = rng.randrange(0, len(buf) - 1), rng.randrange(1, 5000)
                piece = rng.randbytes(ln)
                f.seek(off)
                f.write(piece)
                if off + ln > len(buf):
                    buf.extend(bytes(off + ln - len(buf)))
                buf[off:off + ln] = piece
        return bytes(buf)

    return [
        ("empty", plain(0)),
        ("one", plain(1)),
        ("b4095", plain(4095)),
        ("b4096", plain(4096)),
        ("il_plus_1", plain(INTERLEAVE + 1)),
        ("stripe", plain(sb)),
        ("3stripes", plain(3 * sb + 12345)),
        ("5mib", plain(5 * MiB + 4321)),
        ("sparse10m", sparse),
        ("overwritten", overwritten),
    ]


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if a[j] != b[j]:
                    return j
    return n if len(a) != len(b) else None


def describe_diff(geom, got, want):
    off = first_diff(got, want)
    if off is None:
        return "identical"
    k = ondisk.data_columns(geom)
    il = geom["interleave"]
    s, within = divmod(off, k * il)
    col, col_off = divmod(within, il)
    pos = ondisk.slot_position(geom, s, col)
    return (f"first difference at file offset {off} (stripe {s}, column {col}, "
            f"position {pos}, chunk off {s * il + col_off}); lengths got {len(got)} "
            f"want {len(want)}")


def main():
    t = Tap()
    seed = int(os.environ.get("ONDISK_SEED", "20240611"))
    rng = random.Random(seed)
    t.diag(f"seed {seed}")
    ondisk.self_test()
    t.ok(ondisk.crc32c(b"123456789") == 0xE3069283, "ondisk: CRC-32C check value")

    pool = Pool(ndisks=NDISKS, prefix="spacefs-ondisk-")
    try:
        run_checks(t, pool, rng)
    except Exception as e:  # keep the TAP stream, name the failure
        t.ok(False, f"test aborted: {type(e).__name__}: {e}")
        for m in pool.mounts:
            if m.proc is not None or os.path.exists(m.log):
                t.diag(m.log_text()[-4000:])
                break
    finally:
        pool.cleanup()
    t.done()


def run_checks(t, pool, rng):
    disks = pool.disks  # assumption: disk index i is the i-th disk given to `pool create`
    make_layout_volumes(pool, interleave="64K", integrity="on")

    # -- disk order and geometry from the superblocks (cross-check) --------
    geoms = {name: default_geom(name, NDISKS) for name in LAYOUTS}
    sb0 = None
    try:
        sbs = [ondisk.read_superblock(d) for d in disks]
        sb0 = sbs[0]
    except (OSError, ValueError, struct.error) as e:
        t.diag(f"superblock not readable by ondisk.py ({e}); using the default geometry")
    if sb0 is not None:
        order_ok = all(sb["disk_index"] == i for i, sb in enumerate(sbs))
        members = sb0["members"]
        paths_ok = (len(members) == NDISKS and
                    all(idx == i and os.path.realpath(p) == os.path.realpath(disks[i])
                        for i, (idx, p) in enumerate(members)))
        if not t.ok(order_ok and paths_ok,
                    "superblock: disk index i is the i-th disk given to `pool create`"):
            t.diag(f"disk_index per disk: {[sb['disk_index'] for sb in sbs]}")
            t.diag(f"members: {members}")
        for name in LAYOUTS:
            v = sb0["volumes"].get(name)
            if v is None:
                t.ok(False, f"superblock: volume {name} catalogued")
                continue
            want = geoms[name]
            got = {key: v[key] for key in ("kind", "copies", "parity", "columns", "interleave")}
            if got != want:
                t.diag(f"volume {name}: superblock geometry {got}, default expected {want}; "
                       "using the superblock's")
            geoms[name] = got
            t.ok(v["integrity"] == 1 and got["interleave"] == INTERLEAVE,
                 f"superblock: volume {name} has integrity on, interleave 64K")

    # -- write ------------------------------------------------------------
    mount = pool.mount()
    expected = {}  # (volume, name) -> bytes
    for vol in LAYOUTS:
        k = ondisk.data_columns(geoms[vol])
        vdir = os.path.join(pool.mnt, vol)
        for name, writer in file_plan(k, rng):
            expected[(vol, name)] = writer(os.path.join(vdir, name))
    for vol in LAYOUTS:
        bad = []
        for (v, name), want in expected.items():
            if v != vol:
                continue
            with open(os.path.join(pool.mnt, vol, name), "rb") as f:
                got = f.read()
            if got != want:
                bad.append(f"{name}: {describe_diff(geoms[vol], got, want)}")
        if not t.ok(not bad, f"{vol}: every file reads back through the mount"):
            t.diag("\n".join(bad))
    rc = mount.stop()
    t.ok(rc == 0, f"clean unmount (exit {rc})")
    if mount.sanitizer_report():
        t.ok(False, "no sanitizer report in the daemon log")
        t.diag(mount.sanitizer_report()[-4000:])

    # -- check every file from the chunks -------------------------------------
    rows_by_vol = {}
    for vol in LAYOUTS:
        geom = geoms[vol]
        db, replicas = ondisk.find_meta_db(disks, vol)
        if not t.ok(db is not None, f"{vol}: metadata database found"):
            continue
        t.diag(f"{vol}: geometry {geom}; metadata replicas {replicas}")
        files, paths = ondisk.read_inodes(db)
        byname = {paths.get(ino): row for ino, row in files.items()}
        names = sorted(n for (v, n) in expected if v == vol)
        t.eq(sorted(p for p in byname if p is not None), names,
             f"{vol}: the metadata lists exactly the files written")
        rows_by_vol[vol] = byname
        for name in names:
            want = expected[(vol, name)]
            row = byname.get(name)
            label = f"{vol}/{name} ({len(want)} bytes)"
            if row is None:
                for what in ("reassembled", "redundancy", "CRCs", "distinct disks"):
                    t.ok(False, f"{label}: {what} (no inode)")
                continue
            label = f"{vol}/{name} ino {row.ino} ({len(want)} bytes)"
            if row.size != len(want):
                t.diag(f"{label}: metadata size {row.size}")
            data, problems = ondisk.check_file(disks, vol, geom, row, row.size, integrity=True)
            cats = ondisk.problem_categories(problems)
            if not t.ok(data == want,
                        f"{label}: reassembled from the chunk files equals what was written"):
                t.diag(describe_diff(geom, data, want))
            redundancy = cats.get("parity", []) + cats.get("mirror", []) + cats.get("extent", [])
            what = {"parity": "parity matches the data", "mirror": "mirror copies identical",
                    "simple": "nothing past EOF"}[geom["kind"]]
            if not t.ok(not redundancy, f"{label}: {what}"):
                t.diag("\n".join(redundancy[:10]))
            if not t.ok("crc" not in cats, f"{label}: every 4 KiB block matches its CRC-32C"):
                t.diag("\n".join(cats["crc"][:10]))
            distinct = len(set(row.disks[:row.npos])) == row.npos == ondisk.positions(geom)
            if not t.ok(distinct and "placement" not in cats,
                        f"{label}: {row.npos} positions on distinct disks {row.disks}"):
                t.diag("\n".join(cats.get("placement", [])[:10]))
            other = [p for c, ps in cats.items()
                     if c not in ("parity", "mirror", "extent", "crc", "placement") for p in ps]
            if other:
                t.diag("\n".join(other))

    # -- negative controls: the checker must be able to fail ----------------
    corrupt(t, disks, geoms, rows_by_vol, expected, "parity1", "3stripes", stripe=1, col=1,
            copy=0, expect=("crc", "parity"))
    corrupt(t, disks, geoms, rows_by_vol, expected, "mirror2", "3stripes", stripe=2, col=0,
            copy=1, expect=("crc", "mirror"))


def corrupt(t, disks, geoms, rows_by_vol, expected, vol, victim, stripe, col, copy, expect):
    """Flip one byte of one chunk of `victim` and check that exactly that
    file is reported, with problems of every category in `expect`."""
    rows = rows_by_vol.get(vol)
    if not rows or victim not in rows:
        t.ok(False, f"negative control {vol}/{victim}: file not found")
        return
    geom = geoms[vol]
    row = rows[victim]
    pos = ondisk.slot_position(geom, stripe, col, copy)
    path = ondisk.chunk_path(disks[row.disks[pos]], vol, row.ino, pos)
    off = stripe * geom["interleave"] + 100
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x5A]))
    t.diag(f"negative control: flipped byte {off} of {path} "
           f"({vol}/{victim} stripe {stripe} column {col} copy {copy} position {pos})")
    flagged = []
    for name, r in sorted(rows.items()):
        if name is None:
            continue
        _data, problems = ondisk.check_file(disks, vol, geom, r, r.size, integrity=True)
        if problems:
            flagged.append(name)
            if name == victim:
                cats = ondisk.problem_categories(problems)
                for c in expect:
                    if not t.ok(c in cats, f"negative control {vol}/{victim}: {c} problem "
                                           "reported for the flipped byte"):
                        t.diag("\n".join(problems[:10]))
                    else:
                        t.diag(cats[c][0])
    t.eq(flagged, [victim], f"negative control {vol}: exactly {victim} is flagged")
    if victim not in flagged:
        for c in expect:
            t.ok(False, f"negative control {vol}/{victim}: {c} problem reported")


if __name__ == "__main__":
    main()
