#!/usr/bin/env python3
"""A full disk: `spacectl status` says so, names the volumes that can no
longer place new data, and clears when space comes back.

Pool of 3 disks; disk 1 is a 12 MiB tmpfs (mounted in the pool's scratch
directory, unmounted at the end).  Volume "wide" is simple over 3 columns
(every file spans all 3 disks), "mir" is a 2-way mirror (2 disks).
1. Before: health "healthy", no disk full, no volume flagged.
2. Writing 48 MiB to wide fails with ENOSPC once disk 1 is full.  Status
   (table and --json): health "healthy, full (disk 1)", disk 1 "healthy,
   full" with its ENOSPC count, wide "cannot allocate: disk d1 full"; mir,
   which still has 2 disks with space, is not flagged, and a file written
   to it reads back right.
3. The file on wide deleted: within a few seconds status is plain
   "healthy" again, wide takes a new file, and after a remount both
   files read back right.
4. Write-back parity (acknowledged once journaled, written in place
   later): on a fresh pool of 3 disks, disk 1 a 40 MiB tmpfs, a parity 1
   volume in write-back mode with an 8 MiB journal; a 6 MiB file laid
   out, then disk 1 filled from outside spacefs (another user of the
   disk).  4 KiB O_DIRECT overwrites of the laid-out file still succeed
   (their blocks are allocated: nothing to reserve); writes into a new
   file, or into a hole between data of another file, fail with ENOSPC
   at once instead of being acknowledged and then unwritable; after freeing the space and a remount every acknowledged
   overwrite reads back.
"""
import errno
import json
import mmap
import os
import random
import re
import shutil
import subprocess
import time

from harness import Pool, Tap, log_tail, run, sha256_file
import ondisk


def put_tmpfs(pool, idx, size):
    """Move disk idx of a created, unmounted pool onto a tmpfs."""
    d = pool.disks[idx]
    keep = d + ".orig"
    os.rename(d, keep)
    os.makedirs(d)
    run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d])
    subprocess.run(["cp", "-a", keep + "/.", d + "/"], check=True)
    shutil.rmtree(keep)
    return d


def fill(path, total):
    """Write up to total bytes in 1 MiB pieces; the errno that stopped it."""
    piece = os.urandom(1 << 20)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for _ in range(total >> 20):
            os.write(fd, piece)
        os.fsync(fd)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)
    return 0


def teardown(pool, small):
    """Stop what still runs, unmount the tmpfs disk, remove the pool."""
    for mt in pool.mounts:
        if mt.proc is not None:
            mt.stop()
    if small:
        run(["umount", small], check=False)
    pool.cleanup()


def status(pool):
    text = pool.spacectl("status", pool.source).stdout
    j = json.loads(pool.spacectl("status", pool.source, "--json").stdout)
    return text, j


def vol(j, name):
    return [v for v in j["volumes"] if v["name"] == name][0]


def line(text, start):
    return ([x for x in text.splitlines() if x.startswith(start)] + [""])[0]


def write_check(path, size):
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return data


def main():
    t = Tap()
    pool = Pool(3)
    small = None
    try:
        pool.volume("wide", "simple", "--columns", "3", "--interleave", "64K")
        pool.volume("mir", "mirror", "--copies", "2", "--interleave", "64K")
        small = put_tmpfs(pool, 1, "12m")
        m = pool.mount()

        text, j = status(pool)
        t.ok(line(text, "health").split() == ["health", "healthy"],
             f"before: health line is plain healthy ({line(text, 'health')!r})")
        t.ok(j["pool"].get("full_disks") == [] and vol(j, "wide").get("cannot_allocate", 0) is None,
             "before: --json lists no full disk and wide can allocate")

        big = os.path.join(pool.mnt, "wide", "big.dat")
        err = fill(big, 48 << 20)
        t.eq(err, errno.ENOSPC, "writing 48 MiB to wide stops with ENOSPC (disk 1 full)")

        text, j = status(pool)
        t.diag(text)
        t.ok(line(text, "health") == "health      healthy, full (disk 1)",
             f"full: health line says so ({line(text, 'health')!r})")
        rows = {x.split()[0]: x for x in text.splitlines() if x.strip()[:1].isdigit()}
        t.ok("healthy, full" in rows.get("1", "") and "full" not in rows.get("0", "") +
             rows.get("2", ""), "full: disk table marks disk 1, and only it, full")
        t.ok("disk 1: full:" in text and "ENOSPC" in text, "full: a line under the disks says why")
        wide_row = line(text, "wide")
        mir_row = line(text, "mir")
        t.ok("cannot allocate: disk d1 full" in wide_row,
             f"full: volume wide cannot allocate ({wide_row.split()[-4:]})")
        t.ok("cannot allocate" not in mir_row, "full: mir (2 disks with space left) is not flagged")
        d1 = j["disks"][1]
        t.ok(j["pool"].get("full_disks") == [1] and d1.get("full") is True and
             d1.get("enospc", 0) > 0 and j["disks"][0].get("full") is False,
             f"full: --json disk 1 full, {d1.get('enospc')} ENOSPC")
        t.ok(vol(j, "wide").get("cannot_allocate") == "disk d1 full" and
             vol(j, "mir").get("cannot_allocate", 0) is None,
             "full: --json wide cannot_allocate 'disk d1 full', mir null")
        t.eq(j["pool"]["health"], "healthy", "full: --json health keeps its meaning (no disk failed)")
        ds = ([x for x in j["daemon"].get("disk_space", []) if x["index"] == 1] + [{}])[0]
        t.ok(ds.get("full") and ds.get("last_enospc", 0) > 0 and ds.get("free") is not None,
             "full: the daemon's disk_space entry has the last ENOSPC time and free bytes")

        mfile = os.path.join(pool.mnt, "mir", "m.dat")
        mdata = write_check(mfile, 2 << 20)
        t.ok(open(mfile, "rb").read() == mdata, "full: a file on mir writes and reads back")

        os.unlink(big)
        deadline = time.time() + 15
        while time.time() < deadline:
            text, j = status(pool)  # two calls: both must have seen the change
            if not j["pool"].get("full_disks") and "healthy, full" not in text:
                break
            time.sleep(0.5)
        t.ok(line(text, "health").split() == ["health", "healthy"] and
             "full" not in text.replace("full (", ""),
             f"space back: health plain healthy again ({line(text, 'health')!r})")
        t.ok(j["pool"].get("full_disks") == [] and
             vol(j, "wide").get("cannot_allocate", 0) is None and
             j["disks"][1].get("full") is False, "space back: --json clear")
        wfile = os.path.join(pool.mnt, "wide", "w.dat")
        wdata = write_check(wfile, 3 << 20)
        t.eq(m.stop(), 0, "clean unmount")
        m = pool.mount()
        t.ok(open(wfile, "rb").read() == wdata and open(mfile, "rb").read() == mdata,
             "after a remount the files on wide and mir read back right")
        t.ok(m.sanitizer_report() is None, "no sanitizer report in the daemon log")
        t.eq(m.stop(), 0, "clean unmount")
    except Exception as e:  # report, then fail the plan
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        teardown(pool, small)
    wb_full(t)
    wt_failed_replay(t)
    full_parity_disk(t)
    t.done()


def odirect_write(path, off, data, create=False):
    """One O_DIRECT write of data (a multiple of 4 KiB) at off; the errno, or 0."""
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    flags = os.O_WRONLY | os.O_DIRECT | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o644)
    try:
        os.pwritev(fd, [buf], off)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)
        buf.close()
    return 0


def wb_full(t):
    """Step 4: write-back on a full disk (see the top)."""
    pool = Pool(3)
    small = None
    try:
        pool.volume("par", "parity", "--parity", "1", "--columns", "3", "--interleave", "64K",
                    "--journal-mode", "write-back", "--journal-size", "8M")
        small = put_tmpfs(pool, 1, "40m")
        m = pool.mount()
        path = os.path.join(pool.mnt, "par", "vm.img")
        size = 6 << 20
        want = bytearray(write_check(path, size))
        # a file with data at both ends and holes between: its chunk
        # files end past the holes, so a write into one is inside EOF
        holey = os.path.join(pool.mnt, "par", "holey.img")
        t.eq(odirect_write(holey, 0, os.urandom(128 << 10), create=True) +
             odirect_write(holey, 4 << 20, os.urandom(128 << 10)), 0,
             "write-back full: a file with data at both ends, holes between")
        filler = os.path.join(small, "filler")
        err = fill(filler, 64 << 20)
        t.eq(err, errno.ENOSPC, "write-back full: disk 1 filled from outside spacefs")
        rng = random.Random(12)
        errs = []
        for _ in range(200):
            off = rng.randrange(size // 4096) * 4096
            data = rng.randbytes(4096)
            rc = odirect_write(path, off, data)
            errs.append(rc)
            if rc == 0:
                want[off:off + 4096] = data
        t.eq(sorted(set(errs)), [0], "write-back full: 200 overwrites of allocated blocks succeed")
        rc = odirect_write(os.path.join(pool.mnt, "par", "new.img"), 0, rng.randbytes(64 << 10),
                           create=True)
        t.eq(rc, errno.ENOSPC, "write-back full: a write into a new file fails with ENOSPC")
        rc = odirect_write(holey, 2 << 20, rng.randbytes(64 << 10))
        t.eq(rc, errno.ENOSPC, "write-back full: a write into a hole of a file fails with ENOSPC")
        t.ok(open(path, "rb").read() == want, "write-back full: the overwrites read back")
        os.unlink(filler)
        t.eq(m.stop(), 0, "write-back full: clean unmount (the flusher wrote everything)")
        m = pool.mount()
        t.ok(open(path, "rb").read() == want,
             "write-back full: after a remount every acknowledged overwrite is there")
        t.ok(m.sanitizer_report() is None, "write-back full: no sanitizer report")
        t.eq(m.stop(), 0, "write-back full: clean unmount")
    except Exception as e:  # report, then fail the plan
        t.ok(False, f"write-back full: unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        teardown(pool, small)


def chunk_disk(pool, vol, pos):
    """The pool disk holding position pos of the volume's one file."""
    for i, d in enumerate(pool.disks):
        for root, _, files in os.walk(os.path.join(d, "vol", vol, "data")):
            if any(f.endswith(f".{pos}") for f in files):
                return i
    return None


# Steps 5 and 6: parity 1 over 3 columns of 16 KiB, "par" on 3 disks.
GEOM = dict(kind="parity", parity=1, columns=3, interleave=16384, copies=1)


def parity_laid_out(t, pool, what):
    """Mount, write a file "par/f" of two stripes: (mount, path, the disk of
    each position of it)."""
    m = pool.mount()
    path = os.path.join(pool.mnt, "par", "f")
    t.eq(odirect_write(path, 0, os.urandom(64 << 10), create=True), 0,
         f"{what}: two stripes laid out")
    return m, path, {p: chunk_disk(pool, "par", p) for p in range(3)}


def wt_failed_replay(t):
    """Step 5: a journaled write that failed is not replayed.  Parity 1
    write-through, 3 columns of 16 KiB, disk 1 a small tmpfs.  In one
    stripe, column X on disk 1 is still a hole and column Y is written;
    disk 1 is filled; a 4 KiB write to X fails with ENOSPC (its record is
    in the journal, its parity landed and was recomputed from the disks
    by the failed write's settle), then a 4 KiB write to Y succeeds, its
    parity computed with X's hole.  kill -9, space freed, mount: found in
    review, the replay applied the failed write's record and then Y's, so
    X held bytes the stripe's parity disagreed with, and with disk 1 lost
    X rebuilt as other bytes than it read before."""
    pool = Pool(3)
    small = None
    what = "write-through, a failed write after a kill -9"
    try:
        pool.volume("par", "parity", "--parity", "1", "--columns", "3", "--interleave", "16K",
                    "--journal-size", "8M")
        small = put_tmpfs(pool, 1, "24m")
        m, path, pos_disk = parity_laid_out(t, pool, what)
        with open(path, "r+b") as f:  # the size covers what follows, durably
            f.truncate(2 << 20)
            os.fsync(f.fileno())
        st = next(s for s in range(4, 40)
                  if pos_disk[ondisk.slot_position(GEOM, s, 2)] != 1
                  and 1 in (pos_disk[ondisk.slot_position(GEOM, s, c)] for c in range(2)))
        x = next(c for c in range(2) if pos_disk[ondisk.slot_position(GEOM, st, c)] == 1)
        xoff, yoff = st * 32768 + x * 16384, st * 32768 + (1 - x) * 16384
        # the stripe lies past the laid-out ones: Y written, X a hole
        t.eq(odirect_write(path, yoff, os.urandom(16384)), 0, f"{what}: column Y of stripe {st}")
        err = fill(os.path.join(small, "filler"), 64 << 20)
        t.eq(err, errno.ENOSPC, f"{what}: disk 1 filled from outside spacefs")
        t.eq(odirect_write(path, xoff, os.urandom(4096)), errno.ENOSPC,
             f"{what}: the write to X (disk 1) fails with ENOSPC")
        ynew = os.urandom(4096)
        t.eq(odirect_write(path, yoff, ynew), 0, f"{what}: then a write to Y succeeds")
        time.sleep(3)  # the dirty-region log cleans the idle region: no resync to hide it
        m.kill9()
        os.unlink(os.path.join(small, "filler"))
        mark = len(log_tail(pool, 10**9))
        m = pool.mount()
        t.diag("\n".join(x for x in log_tail(pool, 10**9)[mark:].splitlines()
                         if "journal" in x or "resync" in x))
        with open(path, "rb") as f:
            f.seek(xoff)
            xa = f.read(4096)
            f.seek(yoff)
            if not t.ok(f.read(4096) == ynew, f"{what}: after the replay Y reads its write"):
                t.diag(log_tail(pool))
        t.eq(m.stop(), 0, f"{what}: clean unmount")
        run(["umount", small])
        small = None
        m = pool.mount()
        with open(path, "rb") as f:
            f.seek(xoff)
            xb = f.read(4096)
        t.ok(xa == xb, f"{what}: with disk 1 lost, X rebuilds as it read before "
             f"({'same' if xa == xb else 'different'}; zeros before: {xa == bytes(4096)})")
        t.eq(m.stop(), 0, f"{what}: clean unmount")
    except Exception as e:  # report, then fail the plan
        t.ok(False, f"{what}: unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        teardown(pool, small)


def full_parity_disk(t):
    """Step 6: a write whose stripe's parity sits on a full disk: the data
    lands, the parity cannot, nor can the settle's (pool/store.c): the
    disk is failed, so its stale parity is never trusted.  While it is
    full it must not be taken back (found in review: it was, its resync
    failed for want of space, and again every second); once space comes
    back it is, and resynced."""
    pool = Pool(3)
    small = None
    what = "a full disk holding parity"
    try:
        pool.volume("par", "parity", "--parity", "1", "--columns", "3", "--interleave", "16K",
                    "--journal-size", "8M")
        small = put_tmpfs(pool, 1, "24m")
        m, path, pos_disk = parity_laid_out(t, pool, what)
        st = next(s for s in range(4, 40) if pos_disk[ondisk.slot_position(GEOM, s, 2)] == 1)
        col = next(c for c in range(2) if pos_disk[ondisk.slot_position(GEOM, st, c)] != 1)
        filler = os.path.join(small, "filler")
        t.eq(fill(filler, 64 << 20), errno.ENOSPC, f"{what}: disk 1 filled from outside spacefs")
        mark = len(log_tail(pool, 10**9))
        rc = odirect_write(path, st * 32768 + col * 16384, os.urandom(4096))
        t.eq(rc, errno.ENOSPC, f"{what}: a write to stripe {st} (parity on disk 1) fails")
        deadline = time.time() + 10
        while time.time() < deadline and status(pool)[1]["disks"][1]["state"] == "healthy":
            time.sleep(0.2)
        state = status(pool)[1]["disks"][1]["state"]
        t.ok(state in ("failed", "stale"),
             f"{what}: disk 1 is out of service ({state}): its parity could not be made right")
        time.sleep(3)  # the health watcher looks for returns once a second
        log = log_tail(pool, 10**9)[mark:]
        t.ok(re.search(r"disk 1 \(.*\) is back", log) is None,
             f"{what}: while full, disk 1 is not taken back")
        os.unlink(filler)
        deadline = time.time() + 30
        while time.time() < deadline and "resync disk 1 done" not in log_tail(pool, 10**9)[mark:]:
            time.sleep(0.3)
        log = log_tail(pool, 10**9)[mark:]
        t.ok("has space again" in log and "resync disk 1 done" in log,
             f"{what}: with space again, disk 1 is taken back and resynced")
        t.eq(m.stop(), 0, f"{what}: clean unmount")
    except Exception as e:  # report, then fail the plan
        t.ok(False, f"{what}: unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        teardown(pool, small)


if __name__ == "__main__":
    main()
