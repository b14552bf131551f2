#!/usr/bin/env python3
"""Checkpoints under faults (issue 13): kill -9 in rounds, a disk lost
during a merge, the granule log kept bounded.

1. kill -9 of the daemon during a merge, ROUNDS rounds (env
   SPACEFS_CKPT_KILL_ROUNDS, default 10, the issue's figure: the soak
   suite's test_ckpt_faults_long; the default run does 5), on a
   parity 1 volume: each round
   a checkpoint, spacebench writes with a log through it (first writes copy
   granules up), a merge at 2 MB/s, kill -9 of the daemon while both run
   (checked: the checkpoint is still listed merging just before); after the remount the merge finishes by itself and spacebench
   verify finds 0 lost/torn/corrupt/misplaced/stale blocks.
2. The same with `spacectl backup` in the place of the merge (ROUNDS
   rounds, the backup's checkpoint listed just before the kill): after the remount no checkpoint is left and verify is clean.
   The daemon runs with SPACEFS_CKPT_LOG_BOUND=50: first, with a
   checkpoint live, 200 first writes make its granule log pass the bound;
   it is compacted while the daemon serves (the daemon says so); after a
   kill -9 and a remount the checkpoint and the file read as they should;
   at the end, with no checkpoint, the log is small again.
3. A disk taken away (one rename, then deleted) while checkpoints of a
   mirror 2 and a parity 1 volume merge (both listed merging just before):
   both merges finish degraded (status lists both done), the
   files are exact; `disk replace --wait` restores redundancy (every disk
   healthy); after a remount with another disk away the files are still
   exact.
"""
import glob
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import time

from failures import remove_disk
from harness import Pool, Tap, log_tail

MiB = 1 << 20
ROUNDS = int(os.environ.get("SPACEFS_CKPT_KILL_ROUNDS", "10"))
SPACEBENCH = os.environ.get("SPACEBENCH", "build/bench/spacebench")
KINDS = "lost|torn|corrupt|misplaced|stale|in-flight-old"


def sha(b):
    return hashlib.sha256(b).hexdigest()


def sha_path(p):
    with open(p, "rb") as f:
        return sha(f.read())


def listed(p, vol):
    out = p.spacectl("checkpoint", "list", p.source, vol, check=False).stdout.splitlines()[1:]
    return [l.split()[0] for l in out if l.strip()]


def wait_none(p, vol, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not listed(p, vol):
            return True
        time.sleep(0.2)
    return False


def counts(out):
    line = [x for x in out.splitlines() if x.startswith("spacebench verify:")]
    return {k: int(n) for n, k in re.findall(rf"(\d+) ({KINDS})\b", line[-1] if line else "")}


def clean(c):
    return all(c.get(k) == 0 for k in ("lost", "torn", "corrupt", "misplaced", "stale"))


def start_writer(f, lg, seed):
    w = subprocess.Popen([SPACEBENCH, "write", f, "--log", lg, "--size", "8M", "--time", "60",
                          "--qd", "8", "--seed", str(seed)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline and (not os.path.exists(lg) or
                                      os.path.getsize(lg) < 64 + 32 * 300):
        time.sleep(0.02)
    return w


def stop_writer(w):
    try:
        w.wait(timeout=30)
    except subprocess.TimeoutExpired:
        w.kill()
        w.wait()


def kill_rounds(t, p, vol, kind):
    """kill -9 of the daemon during a merge (kind 'merge') or a backup."""
    f = os.path.join(p.mnt, vol, "sb.dat")
    rng = random.Random(7 if kind == "merge" else 8)
    bad, caught = [], []
    if not os.path.exists(f):  # so that round 0's checkpoint holds it too
        with open(f, "wb") as fh:
            fh.write(random.Random(1).randbytes(8 * MiB))
            os.fsync(fh.fileno())
    for r in range(ROUNDS):
        lg = os.path.join(p.dir, f"{kind}{r}.sblog")
        if kind == "merge":
            p.spacectl("checkpoint", "create", p.source, vol, f"k{r}")
        w = start_writer(f, lg, 100 * r + (1 if kind == "merge" else 2))
        if kind == "merge":
            p.spacectl("checkpoint", "merge", p.source, vol, f"k{r}", "--rate", "2")
            proc = None
        else:
            dest = os.path.join(p.dir, f"bk{r}")
            os.makedirs(dest)
            proc = subprocess.Popen([os.environ.get("SPACECTL", "build/tools/spacectl"),
                                     "backup", p.source, vol, dest, "--wait", "--rate", "4"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 20
            while not listed(p, vol) and time.time() < deadline and proc.poll() is None:
                time.sleep(0.02)
        time.sleep(rng.uniform(0.1, 0.6))
        # the kill must find the job under way, or the round shows nothing
        state = [l.split()[1] for l in p.spacectl("checkpoint", "list", p.source, vol,
                                                   check=False).stdout.splitlines()[1:] if l]
        if kind == "merge" and state != ["merging"] or kind == "backup" and not state:
            caught.append(r)
        p.mounts[-1].kill9()
        stop_writer(w)
        if proc:
            proc.wait(60)
            shutil.rmtree(os.path.join(p.dir, f"bk{r}"), ignore_errors=True)
        p.mount()
        if not wait_none(p, vol):
            bad.append(f"round {r}: a checkpoint is left: {listed(p, vol)}")
        v = subprocess.run([SPACEBENCH, "verify", f, "--log", lg], capture_output=True,
                           text=True)
        c = counts(v.stdout)
        if v.returncode != 0 or not clean(c):
            bad.append(f"round {r}: verify exit {v.returncode} {c}")
            t.diag(v.stdout[-800:])
        os.unlink(lg)
    t.eq(caught, [], f"{vol}: in every round the kill -9 came while the {kind} ran "
                     "(rounds where it had ended before)")
    t.eq(bad, [], f"{vol}: {ROUNDS} rounds of kill -9 during a {kind}: nothing left, "
                  "spacebench verify 0 lost/torn/corrupt/misplaced/stale each time")


def compaction(t, p, vol):
    """A live checkpoint and more first writes than the log's bound: the
    log is compacted while the daemon serves; kill -9 after it, and the
    checkpoint and the file read the same after the remount."""
    f = os.path.join(p.mnt, vol, "c.bin")
    rng = random.Random(4)
    model = bytearray(rng.randbytes(16 * MiB))
    with open(f, "wb") as fh:
        fh.write(model)
        os.fsync(fh.fileno())
    instant = sha(bytes(model))
    p.spacectl("checkpoint", "create", p.source, vol, "hold", "c.bin")
    fd = os.open(f, os.O_WRONLY)
    for g in rng.sample(range(256), 200):  # 200 first writes: 200 records
        b = rng.randbytes(4096)
        os.pwrite(fd, b, g * 65536 + 8192)
        model[g * 65536 + 8192:g * 65536 + 12288] = b
    os.fsync(fd)
    os.close(fd)
    pat = rf"volume {vol}: checkpoint log compacted with \d+ checkpoint\(s\) live"
    deadline = time.time() + 20
    while time.time() < deadline and not re.search(pat, log_tail(p, 1 << 20)):
        time.sleep(0.2)
    t.ok(re.search(pat, log_tail(p, 1 << 20)),
         f"{vol}: the granule log was compacted with the checkpoint live")
    p.mounts[-1].kill9()
    p.mount()
    c = os.path.join(p.mnt, vol, ".checkpoints", "hold", "c.bin")
    t.eq(sha_path(c), instant, f"{vol}: after kill -9 the compacted log gives the checkpoint")
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: and the file as last written")
    p.spacectl("checkpoint", "merge", p.source, vol, "hold", "--wait")
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: the file as last written after the merge")
    os.unlink(f)


def ckpt_log_sizes(p, vol):
    return [os.path.getsize(x) for x in glob.glob(os.path.join(p.dir, "d*", "vol", vol, "ckpt"))]


def faults():
    t = Tap()
    p = Pool(ndisks=4)
    os.environ["SPACEFS_CKPT_LOG_BOUND"] = "50"
    try:
        p.volume("p1", "parity", "--parity", "1", "--interleave", "64K")
        p.mount()
        compaction(t, p, "p1")
        kill_rounds(t, p, "p1", "merge")
        kill_rounds(t, p, "p1", "backup")
        log = log_tail(p, 1 << 22)
        sizes = ckpt_log_sizes(p, "p1")
        t.ok(sizes and max(sizes) < 4096, f"with no checkpoint left the log is small {sizes}")
        lost = [l for l in log.splitlines() if "checkpoint data is lost" in l]
        t.eq(lost, [], "every mount found every layer it replayed")
        t.eq(p.mounts[-1].stop(), 0, "the last daemon exits cleanly")
        t.ok(p.mounts[-1].sanitizer_report() is None, "no sanitizer report from it")
    except Exception as e:  # noqa: BLE001
        t.ok(False, f"exception: {e!r}")
        t.diag(log_tail(p))
    finally:
        del os.environ["SPACEFS_CKPT_LOG_BOUND"]
        p.cleanup()
    return t


def disk_lost(t):
    p = Pool(ndisks=4)
    try:
        vols = {"m2": ["mirror", "--copies", "2"], "p1": ["parity", "--parity", "1"]}
        for name, args in vols.items():
            p.volume(name, *args, "--interleave", "64K")
        p.mount()
        rng = random.Random(3)
        model = {}
        for vol in vols:
            f = os.path.join(p.mnt, vol, "f.bin")
            model[vol] = bytearray(rng.randbytes(16 * MiB))
            with open(f, "wb") as fh:
                fh.write(model[vol])
            p.spacectl("checkpoint", "create", p.source, vol, "c")
            fd = os.open(f, os.O_WRONLY)
            for _ in range(150):
                n = rng.choice([4096, 65536, 200000])
                off = rng.randrange(0, len(model[vol]) - n)
                b = rng.randbytes(n)
                os.pwrite(fd, b, off)
                model[vol][off:off + n] = b
            os.fsync(fd)
            os.close(fd)
        for vol in vols:
            p.spacectl("checkpoint", "merge", p.source, vol, "c", "--rate", "2")
        time.sleep(1.0)
        going = {vol: [l.split()[1] for l in p.spacectl("checkpoint", "list", p.source, vol)
                       .stdout.splitlines()[1:] if l] for vol in vols}
        t.eq(going, {vol: ["merging"] for vol in vols}, "both merges under way when disk 3 goes")
        remove_disk(p.disks[3])
        for vol in vols:  # the rest at full speed
            p.spacectl("checkpoint", "merge", p.source, vol, "c", check=False)
        for vol in vols:
            t.ok(wait_none(p, vol), f"{vol}: the merge finished with disk 3 gone")
            t.eq(sha_path(os.path.join(p.mnt, vol, "f.bin")), sha(bytes(model[vol])),
                 f"{vol}: file exact after the degraded merge")
        js = json.loads(p.spacectl("status", p.source, "--json").stdout)["daemon"]["jobs"]
        t.eq(sorted((j["volume"], j["state"]) for j in js if j["kind"] == "merge"),
             [(vol, "done") for vol in sorted(vols)],
             "status lists both degraded merges done")
        new = os.path.join(p.dir, "r3")
        os.makedirs(new)
        r = p.spacectl("disk", "replace", p.source, "3", new, "--wait", check=False)
        t.eq(r.returncode, 0, f"disk replace --wait ({r.stderr.strip()[-200:]})")
        p.disks[3] = new
        st = json.loads(p.spacectl("status", p.source, "--json").stdout)
        states = [d["state"] for d in st["disks"]]
        t.ok(all(s == "healthy" for s in states), f"every disk healthy after repair {states}")
        t.eq(p.mounts[-1].stop(), 0, "daemon exits cleanly")
        rep = p.mounts[-1].sanitizer_report()
        t.ok(rep is None, "no sanitizer report")
        os.rename(p.disks[1], p.disks[1] + ".away")  # redundancy is back: lose another
        p.mount()
        for vol in vols:
            t.eq(sha_path(os.path.join(p.mnt, vol, "f.bin")), sha(bytes(model[vol])),
                 f"{vol}: exact after the repair with disk 1 away")
        p.mounts[-1].stop()
        os.rename(p.disks[1] + ".away", p.disks[1])
    except Exception as e:  # noqa: BLE001
        t.ok(False, f"exception: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()


def main():
    t = faults()
    disk_lost(t)
    t.done()


if __name__ == "__main__":
    main()
