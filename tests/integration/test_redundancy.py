#!/usr/bin/env python3
"""Past redundancy, bit rot and scrub, crashes and returning disks.

- One disk past redundancy (mirror 2 and parity 1 with two disks gone
  while mounted): every read is either the right bytes or EIO, never
  wrong bytes; the log and status say the volumes are offline and name
  the disks; when the disks return, they are resynced and every file is
  intact.
- Random bit flips in random chunk files, data and parity positions, on
  every redundant layout: reads return the right bytes (self-healing);
  scrub repairs every flipped block and counts it; a second scrub finds
  nothing.  With integrity off, scrub still finds every mismatch.
- kill -9 during heavy writes on every layout: the remount resyncs only
  dirty regions (it logs how many bytes, far below the volume size), and
  a scrub afterwards finds nothing inconsistent.
- A stale disk that returns (while mounted, and while unmounted) resyncs
  only the regions written while it was away (logged bytes well below
  the disk's data).  Files cut while it was away are cut on it too: its
  chunks end where the files do, and files grown again read zeros.
- Repair and scrub jobs resume after a daemon restart (rate-limited so
  the restart lands mid-job).
- A retired disk is emptied (every position moved to other disks while it
  still reads), new files avoid it, and the volume then survives it and
  one more disk going away.
"""
import errno
import glob
import json
import os
import random
import re
import threading
import time

from failures import FailPool, log_mark, log_since
from harness import Tap, data_extents, log_tail

ALL4 = {"mirror2": ["mirror", "--copies", "2"], "mirror3": ["mirror", "--copies", "3"],
        "parity1": ["parity", "--parity", "1"], "parity2": ["parity", "--parity", "2"]}
R1 = {"mirror2": ["mirror", "--copies", "2"], "parity1": ["parity", "--parity", "1"]}
JOB_RE = re.compile(r"blocks checked (\d+), bad (\d+), repaired (\d+), unrecoverable (\d+)")


def scrub(pool, vol=None):
    args = ["scrub", pool.good_source()] + ([vol] if vol else []) + ["--wait"]
    p = pool.ctl(*args, check=False)
    m = JOB_RE.search(p.stdout)
    if not m:
        raise RuntimeError(f"scrub said: {p.stdout}{p.stderr}")
    checked, bad, repaired, unrec = map(int, m.groups())
    return {"checked": checked, "bad": bad, "repaired": repaired, "unrecoverable": unrec,
            "rc": p.returncode, "out": p.stdout}


def status(pool):
    p = pool.ctl("status", pool.good_source(), "--json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


# ---- past redundancy ------------------------------------------------------------

def past_redundancy(t):
    pool = FailPool(R1, seed=11)
    try:
        pool.mount()
        pool.write_files(10, "f")
        mark = log_mark(pool)
        pool.away(1)
        pool.away(2)
        time.sleep(1.5)
        bad, eio = pool.check(allow_eio=True)
        t.eq(bad, [], "two disks out (past redundancy): no wrong bytes")
        t.ok(eio > 0, f"... files on both missing disks give EIO ({eio} of {len(pool.want)})")
        log = log_since(pool, mark)
        t.ok("OFFLINE" in log and pool.disks[1] in log and pool.disks[2] in log,
             "... the log says the volumes are offline and names the disks")
        st = status(pool)
        t.ok(st and all(v["state"] == "offline" for v in st["volumes"]),
             "... status shows the volumes offline")
        t.ok(st and st["disks"][1]["state"] == "failed" and st["disks"][2]["state"] == "failed",
             "... and the two disks failed")
        pool.back(1)
        pool.back(2)
        st = pool.wait_state(lambda j: all(d["state"] == "healthy" for d in j["disks"]), 30)
        t.ok(st and all(d["state"] == "healthy" for d in st["disks"]),
             "the disks return and are resynced")
        t.eq(pool.check(), [], "... every file intact")
        t.eq(pool.m.stop(), 0, "clean unmount")
    except Exception as e:
        t.ok(False, f"past redundancy: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


# ---- bit flips and scrub ---------------------------------------------------------

def data_blocks(path):
    """4 KiB block offsets of a chunk file that hold data (not holes)."""
    return [b for d, h in data_extents(path) for b in range(d // 4096, (h + 4095) // 4096)]


def flip_bits(pool, vols, n, rng):
    """Flip one bit in n blocks of chunk files of the volumes, at most one
    per (volume, file, stripe).  Returns {volume: blocks flipped}."""
    done, used = {v: 0 for v in vols}, set()
    chunks = []
    for v in vols:
        for c in glob.glob(os.path.join(pool.dir, "*", "vol", v, "data", "*", "*")):
            if re.search(r"\.\d+$", c):
                chunks.append((v, c))
    rng.shuffle(chunks)
    for v, c in chunks:
        if sum(done.values()) >= n:
            break
        blocks = data_blocks(c)
        if not blocks:
            continue
        b = rng.choice(blocks)
        key = (v, os.path.basename(c).split(".")[0], b * 4096 // 65536)
        if key in used:
            continue
        used.add(key)
        with open(c, "r+b") as f:
            f.seek(b * 4096 + rng.randrange(4096))
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ (1 << rng.randrange(8))]))
        done[v] += 1
    return done


def bit_flips(t):
    layouts = dict(ALL4)
    layouts.update({"m2off": ["mirror", "--copies", "2", "--integrity", "off"],
                    "p1off": ["parity", "--parity", "1", "--integrity", "off"]})
    pool = FailPool(layouts, seed=12)
    rng = random.Random(12)
    on, off = list(ALL4), ["m2off", "p1off"]
    try:
        pool.mount()
        pool.write_files(8, "f", maxsize=700000)
        t.eq(pool.m.stop(), 0, "flips: clean unmount")
        flipped = flip_bits(pool, on, 24, rng)
        pool.mount()
        t.eq(pool.check(volumes=on), [], f"flips {flipped}: reads return the right bytes")
        # Reads healed what they touched; a scrub fixes the copies and
        # parity they did not read.
        left = scrub(pool)
        t.ok(left["repaired"] <= sum(flipped.values()) and left["unrecoverable"] == 0,
             f"flips: a scrub repairs what the reads did not touch ({left['repaired']})")
        t.eq(pool.m.stop(), 0, "flips: clean unmount")
        flipped = flip_bits(pool, on + off, 36, rng)
        pool.mount()
        for v in on:
            s = scrub(pool, v)
            t.eq((s["bad"], s["repaired"], s["unrecoverable"]), (flipped[v], flipped[v], 0),
                 f"scrub {v}: repaired every flipped block ({flipped[v]})")
            if flipped[v]:
                t.ok("file " in s["out"], f"scrub {v}: names the files")
            s = scrub(pool, v)
            t.eq((s["bad"], s["unrecoverable"]), (0, 0), f"second scrub of {v} finds nothing")
        for v in off:
            s = scrub(pool, v)
            t.eq(s["bad"], flipped[v], f"integrity off, {v}: scrub finds every mismatch "
                 f"({flipped[v]})")
        t.eq(pool.check(volumes=on), [], "flips: every file right after the scrubs")
        t.eq(pool.m.stop(), 0, "flips: clean unmount")
    except Exception as e:
        t.ok(False, f"flips: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


# ---- kill -9 during heavy writes ----------------------------------------------------

def writer(path, stop, rng):
    buf = rng.randbytes(1 << 20)
    try:
        with open(path, "r+b" if os.path.exists(path) else "w+b") as f:
            while not stop.is_set():
                f.seek(rng.randrange(0, 24) << 20)
                f.write(buf[: rng.randrange(4096, 1 << 20)])
    except OSError:
        pass


def crash(t):
    pool = FailPool(ALL4, seed=13)
    try:
        pool.mount()
        pool.write_files(4, "f")
        pool.fsync_all()  # sizes of unsynced files may be lost (ARCHITECTURE.md)
        stop = threading.Event()
        ths = [threading.Thread(target=writer, args=(os.path.join(pool.mnt, v, f"hot{i}"), stop,
                                                     random.Random(i)))
               for v in ALL4 for i in range(2)]
        for th in ths:
            th.start()
        time.sleep(2.5)
        pool.m.kill9()
        stop.set()
        for th in ths:
            th.join()
        mark = log_mark(pool)
        pool.mount()
        log = log_since(pool, mark)
        got = {m.group(1): int(m.group(3)) for m in re.finditer(
            r"volume (\S+): unclean shutdown: resynced (\d+) dirty region\(s\), (\d+) bytes", log)}
        st = status(pool)
        usable = {v["name"]: v["usable"] for v in st["volumes"]} if st else {}
        for v in ALL4:
            t.ok(v in got and got[v] < usable.get(v, 0) // 100,
                 f"kill -9, {v}: the remount resynced dirty regions only "
                 f"({got.get(v)} bytes, volume {usable.get(v)} bytes)")
        s = scrub(pool)
        t.eq((s["bad"], s["unrecoverable"]), (0, 0), "a scrub after the resync finds nothing")
        t.eq(pool.check(), [], "files written before the crash intact")
        t.eq(pool.m.stop(), 0, "clean unmount")
    except Exception as e:
        t.ok(False, f"crash: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


# ---- a stale disk returns ------------------------------------------------------------

def disk_bytes(path):
    total = 0
    for d, _, files in os.walk(os.path.join(path, "vol")):
        for f in files:
            if re.search(r"\.\d+$", f):
                total += os.stat(os.path.join(d, f)).st_blocks * 512
    return total


def stale(t, mounted):
    what = "mounted" if mounted else "unmounted"
    pool = FailPool(R1, seed=14)
    try:
        pool.mount()
        pool.write_files(12, "f", maxsize=3000000)
        held = disk_bytes(pool.disks[3])
        if not mounted:
            t.eq(pool.m.stop(), 0, f"stale {what}: clean unmount")
        pool.away(3)
        if mounted:
            time.sleep(1.5)
        else:
            pool.mount()
        pool.overwrite_some(2)
        pool.write_files(2, "new")
        if not mounted:
            t.eq(pool.m.stop(), 0, f"stale {what}: clean unmount")
        mark = log_mark(pool)
        pool.back(3)
        if not mounted:
            pool.mount()
        st = pool.wait_state(lambda j: all(d["state"] == "healthy" for d in j["disks"]), 30)
        t.ok(st and all(d["state"] == "healthy" for d in st["disks"]),
             f"stale {what}: the returning disk is resynced and healthy")
        log = log_since(pool, mark)
        moved = sum(int(m.group(1)) for m in re.finditer(
            r"resync: volume \S+: disk 3: (\d+) bytes of file data in regions it missed", log))
        t.ok(0 < moved < held // 2,
             f"stale {what}: only what changed is resynced ({moved} of {held} bytes)")
        t.eq(pool.check(), [], f"stale {what}: every file identical")
        pool.away(0)  # the resynced disk must now carry its share
        time.sleep(1.5)
        t.eq(pool.check(), [], f"stale {what}: identical with another disk out")
        t.eq(pool.m.stop(), 0, f"stale {what}: clean unmount")
    except Exception as e:
        t.ok(False, f"stale {what}: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


def chunk_sizes(path):
    """Sizes of the chunk files (data and .crc) on one disk."""
    out = []
    for d, _, files in os.walk(os.path.join(path, "vol")):
        out += [os.stat(os.path.join(d, f)).st_size for f in files
                if re.search(r"\.\d+(\.crc)?$", f)]
    return out


def stale_cut(t):
    """Files cut while a disk is away: its resync must cut them there too,
    or growing a file again would bring the old bytes back."""
    pool = FailPool(R1, seed=16)
    try:
        pool.mount()
        pool.write_files(8, "c", maxsize=600000)
        pool.away(3)
        time.sleep(1.5)
        for rel in pool.want:
            os.truncate(os.path.join(pool.mnt, rel), 0)
        pool.back(3)
        st = pool.wait_state(lambda j: all(d["state"] == "healthy" for d in j["disks"]), 30)
        t.ok(st and all(d["state"] == "healthy" for d in st["disks"]),
             "stale cut: the returning disk is resynced and healthy")
        sizes = chunk_sizes(pool.disks[3])
        t.ok(sizes and max(sizes) == 0,
             f"stale cut: the returned disk's chunks are cut ({len(sizes)} files, "
             f"largest {max(sizes, default=0)} bytes)")
        for i, rel in enumerate(sorted(pool.want)):
            n = len(pool.want[rel])
            path = os.path.join(pool.mnt, rel)
            if i % 2:
                os.truncate(path, n)  # grown back: zeros
                pool.want[rel] = bytes(n)
            else:
                with open(path, "r+b") as f:  # a write further out: a hole before it
                    f.seek(n)
                    f.write(b"x")
                pool.want[rel] = bytes(n) + b"x"
        pool.away(0)  # reads of the copies on disks 0 and 3 go to disk 3
        time.sleep(1.5)
        t.eq(pool.check(), [], "stale cut: grown files read zeros, with disk 0 out")
        t.eq(pool.m.stop(), 0, "stale cut: clean unmount")
    except Exception as e:
        t.ok(False, f"stale cut: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


# ---- jobs resume after a restart -------------------------------------------------------

def resume(t):
    pool = FailPool({"mirror2": ["mirror", "--copies", "2"]}, seed=15)
    try:
        pool.mount()
        pool.write_files(24, "f", maxsize=1500000)
        p = pool.ctl("scrub", pool.good_source(), "mirror2", "--rate", "4")
        time.sleep(1.5)
        t.eq(pool.m.stop(), 0, "resume: unmount in the middle of a scrub")
        mark = log_mark(pool)
        pool.mount()
        time.sleep(0.5)
        t.ok("resuming the scrub after inode" in log_since(pool, mark),
             "resume: the scrub resumes from its checkpoint")
        pool.away(2)
        time.sleep(1.5)
        new = os.path.join(pool.dir, "rnew")
        os.makedirs(new)
        p = pool.ctl("disk", "replace", pool.good_source(), "2", new, "--rate", "4")
        pool.disks[2] = new
        pool.failed.discard(2)
        time.sleep(1.5)
        t.eq(pool.m.stop(), 0, "resume: unmount in the middle of a repair")
        mark = log_mark(pool)
        pool.mount()
        st = pool.wait_state(lambda j: all(d["state"] == "healthy" for d in j["disks"]), 60)
        t.ok("repair of disk 2 started" in log_since(pool, mark), "resume: the repair resumes")
        t.ok(st and all(d["state"] == "healthy" for d in st["disks"]),
             "resume: the repair completes")
        t.eq(pool.check(), [], "resume: every file identical")
        pool.away(3)
        time.sleep(1.5)
        t.eq(pool.check(), [], "resume: identical with another disk out")
        t.eq(pool.m.stop(), 0, "resume: clean unmount")
        del p
    except Exception as e:
        t.ok(False, f"resume: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


# ---- retire ------------------------------------------------------------------------

def retire(t):
    layouts = {"m2": ["mirror", "--copies", "2", "--columns", "2"],
               "p1": ["parity", "--parity", "1", "--columns", "4"]}
    pool = FailPool(layouts, seed=16)
    try:
        pool.mount()
        pool.write_files(10, "f", maxsize=800000)
        held = glob.glob(os.path.join(pool.disks[1], "vol", "*", "data", "*", "*"))
        t.ok(len(held) > 0, f"retire: the disk holds {len(held)} chunk files first")
        p = pool.ctl("disk", "retire", pool.good_source(), "1", "--wait", check=False)
        t.eq(p.returncode, 0, "retire: the job moves the disk's data off")
        if p.returncode:
            t.diag(p.stdout + p.stderr)
        left = [c for c in glob.glob(os.path.join(pool.disks[1], "vol", "*", "data", "*", "*"))]
        t.eq(left, [], "retire: no chunk file left on the disk")
        st = status(pool)
        t.ok(st and st["disks"][1]["state"] == "retired", "retire: status shows it retired")
        t.eq(pool.check(), [], "retire: every file identical")
        pool.write_files(3, "g")
        left = [c for c in glob.glob(os.path.join(pool.disks[1], "vol", "*", "data", "*", "*"))]
        t.eq(left, [], "retire: new files do not go there")
        pool.away(1)
        pool.away(2)  # the retired disk and one more: still within redundancy
        time.sleep(1.5)
        t.eq(pool.check(), [], "retire: identical without the retired disk and another")
        t.eq(pool.m.stop(), 0, "retire: clean unmount")
    except Exception as e:
        t.ok(False, f"retire: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


def main():
    t = Tap()
    past_redundancy(t)
    bit_flips(t)
    crash(t)
    stale(t, True)
    stale(t, False)
    stale_cut(t)
    resume(t)
    retire(t)
    t.done()


if __name__ == "__main__":
    main()
