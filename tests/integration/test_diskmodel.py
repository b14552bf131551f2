#!/usr/bin/env python3
"""Emulated disks: models set, shown, kept, and obeyed.

- A new pool's disks have model `none` (status and status --json), and
  its superblock is still format version 1, byte-compatible with spacefs
  before models.
- `spacectl disk set` offline (--model hdd-7200) and through the mounted
  daemon (--iops/--mbps/--latency, a custom model): status shows each
  disk's model, the daemon's disk_busy counts the modelled disk's I/Os and
  busy time; the superblock becomes version 2.
- The model is obeyed: 12 synchronous O_DIRECT 4 KiB reads on disks of a
  custom 25 ms model take at least 12 x 25 ms (a lower bound only: the
  machine is shared, so no upper bound is asserted here; the figures
  against the model are bench/diskmodel-check's job).
- Data written on modelled disks reads back identical after an unmount
  and a remount, and the models are still there.
- `--model none` again: status shows none, the superblock returns to
  version 1.  `pool create --model nvme` gives every disk the model.
- Bad input: an unknown model, --iops 0, a missing --latency unit, an
  unknown disk: one line, exit 2 (usage) or 1, nothing changed.
"""
import hashlib
import json
import mmap
import os
import random
import struct
import time

from harness import Pool, Tap, log_tail, run, SPACECTL

BLK = 4096
MiB = 1 << 20


def status(pool):
    return json.loads(pool.spacectl("status", pool.source, "--json").stdout)


def models(pool):
    return [d["model"] for d in status(pool)["disks"]]


def sb_version(disk):
    with open(os.path.join(disk, "spacefs.pool"), "rb") as f:
        head = f.read(12)
    return struct.unpack_from("<I", head, 8)[0]


def write_file(path, size, seed):
    rnd = random.Random(seed)
    data = rnd.randbytes(size)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def direct_reads(path, n, seed):
    """n synchronous O_DIRECT 4 KiB reads at random blocks; seconds."""
    size = os.path.getsize(path)
    rnd = random.Random(seed)
    buf = mmap.mmap(-1, BLK)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        t0 = time.monotonic()
        for _ in range(n):
            off = rnd.randrange(size // BLK) * BLK
            os.preadv(fd, [buf], off)
        return time.monotonic() - t0
    finally:
        os.close(fd)


def repair_bounded(t, pool):
    """A replacement disk with a 10 MB/s model is rebuilt no faster."""
    f = os.path.join(pool.mnt, "v", "big")
    want = write_file(f, 24 * MiB, 3)
    def used(d):  # bytes allocated to the volume's chunk files on disk d
        return sum(os.stat(os.path.join(root, x)).st_blocks * 512 for root, _, files in
                   os.walk(os.path.join(d, "vol", "v", "data")) for x in files)
    i = max(range(len(pool.disks)), key=lambda k: used(pool.disks[k]))  # holds a copy of f
    pool.spacectl("disk", "set", pool.source, str(i), "--iops", "5000", "--mbps", "10",
                  "--latency", "100us")
    new = os.path.join(pool.dir, "new")
    os.makedirs(new)
    t0 = time.monotonic()
    r = pool.spacectl("disk", "replace", pool.source, str(i), new, "--wait", check=False)
    secs = time.monotonic() - t0
    pool.disks[i] = new
    t.ok(r.returncode == 0, f"replace --wait onto a 10 MB/s disk ({r.stderr.strip()[-200:]})")
    least = 24 * MiB / 10e6  # a copy of f at least goes to the new disk
    t.ok(secs >= 0.9 * least,
         f"the rebuild took {secs:.1f} s >= 0.9 x {least:.1f} s: bounded by the replacement's "
         "model")
    t.eq(models(pool)[i], "custom", "the replacement keeps its slot's model")
    t.eq(digest(f), want, "the rebuilt file reads back")
    pool.spacectl("disk", "set", pool.source, str(i), "--model", "none")


def bad_input(t, pool):
    cases = [
        (["--model", "floppy"], 2, "unknown disk model 'floppy'"),
        (["--iops", "0", "--mbps", "10", "--latency", "1ms"], 2, "--iops"),
        (["--iops", "10", "--mbps", "10", "--latency", "5"], 2, "--latency"),
        (["--model", "nvme", "--iops", "5"], 2, "not both"),
    ]
    before = models(pool)
    for args, code, text in cases:
        r = pool.spacectl("disk", "set", pool.source, "0", *args, check=False)
        lines = r.stderr.strip().splitlines()
        t.ok(r.returncode == code and len(lines) == 1 and text in r.stderr,
             f"disk set {' '.join(args)}: exit {code}, one line naming it ({r.stderr.strip()})")
    r = pool.spacectl("disk", "set", pool.source, "9", "--model", "nvme", check=False)
    t.ok(r.returncode == 1 and "not a disk" in r.stderr,
         f"disk set on an unknown disk: exit 1 ({r.stderr.strip()})")
    t.eq(models(pool), before, "refused commands changed no model")


def main():
    t = Tap()
    pool = Pool(ndisks=3, name="models")
    try:
        t.eq(models(pool), ["none"] * 3, "a new pool's disks have model none")
        t.eq(sb_version(pool.source), 1, "and its superblock is still format version 1")
        text = pool.spacectl("status", pool.source).stdout
        t.ok("MODEL" in text and " none " in text, "status shows a MODEL column")
        bad_input(t, pool)

        pool.volume("v", "mirror", "--copies", "2", "--columns", "1", "--interleave", "64K")
        r = pool.spacectl("disk", "set", pool.source, "0", "--model", "hdd-7200")
        t.ok("hdd-7200" in r.stdout, f"disk set offline: {r.stdout.strip()}")
        t.eq(models(pool), ["hdd-7200", "none", "none"], "status shows the offline model")
        t.eq(sb_version(pool.disks[1]), 2, "a pool with a model is format version 2")

        m = pool.mount()
        busy = {d["index"]: d for d in status(pool)["daemon"]["disk_busy"]}
        t.eq(busy[0]["model"], "hdd-7200", "the daemon serves disk 0 by its model")
        for i in (1, 2):
            r = pool.spacectl("disk", "set", pool.source, pool.disks[i], "--iops", "40",
                              "--mbps", "50", "--latency", "25ms")
            t.ok(r.returncode == 0 and "daemon" in r.stdout,
                 f"disk set {i} through the daemon: {r.stdout.strip()}")
        t.eq(models(pool), ["hdd-7200", "custom", "custom"], "status shows the custom models")

        f = os.path.join(pool.mnt, "v", "data")
        want = write_file(f, 4 * MiB, 1)
        t.eq(digest(f), want, "data written on modelled disks reads back")
        # every copy on a 25 ms disk, whichever two disks hold the file
        pool.spacectl("disk", "set", pool.source, "0", "--iops", "40", "--mbps", "50",
                      "--latency", "25ms")
        secs = direct_reads(f, 12, 2)
        t.ok(secs >= 12 * 0.025, f"12 O_DIRECT reads on 25 ms disks took {secs:.3f} s >= 0.3 s")
        busy = {d["index"]: d for d in status(pool)["daemon"]["disk_busy"]}
        ios = sum(busy[i]["ios"] for i in range(3))
        t.ok(ios >= 12 and sum(busy[i]["busy_ns"] for i in range(3)) > 0,
             f"disk_busy counts the modelled I/Os ({ios}) and busy time")
        text = pool.spacectl("status", pool.source).stdout
        t.ok("emulated disks since mount" in text and "custom" in text,
             "status shows the busy-time table")
        t.eq(m.stop(), 0, "unmount")
        t.ok(m.sanitizer_report() is None, "no sanitizer report")

        m = pool.mount()
        t.eq(models(pool), ["custom"] * 3, "the models survive a remount")
        t.eq(digest(f), want, "data reads back after the remount")
        for i in range(3):
            pool.spacectl("disk", "set", pool.source, str(i), "--model", "none")
        busy = [d["model"] for d in status(pool)["daemon"]["disk_busy"]]
        t.eq(busy, ["none"] * 3, "model none again, online")
        repair_bounded(t, pool)
        t.eq(m.stop(), 0, "unmount")
        t.eq(sb_version(pool.source), 1, "no model left: the superblock is version 1 again")

        other = Pool(ndisks=2, name="fast", prefix="spacefs-it-nvme-")
        try:
            for d in other.disks:
                os.remove(os.path.join(d, "spacefs.pool"))
            r = run([SPACECTL, "pool", "create", "fast2", *other.disks, "--model", "nvme"])
            t.ok("nvme" in r.stdout, f"pool create --model: {r.stdout.strip()}")
            t.eq(models(other), ["nvme", "nvme"], "every disk of the new pool has the model")
        finally:
            other.cleanup()
    except Exception as e:  # report, do not hide
        t.ok(False, f"unexpected {type(e).__name__}: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
