#!/usr/bin/env python3
"""Checkpoints and backups (issue 13), with real data end to end.

On simple, mirror 2 and parity 1 volumes:
1. A writer thread keeps writing random ranges of a file (its expected
   content kept in memory).  It is paused around the instant: the file's
   sha256 then is taken, `spacectl checkpoint create` runs, the writer
   resumes.  The checkpoint (MNT/VOL/.checkpoints/NAME/...) has that
   sha256, the instant's size and mtime, and a sparse file's holes
   (SEEK_DATA/SEEK_HOLE) of that instant even after the live file's hole
   is written; it is not in the volume's listing, is reachable by name,
   and refuses writes with EROFS.  Unlink, rename and truncate of live
   files do not change it.  The same after an unmount and remount.
2. The merge runs while the writer goes on; afterwards the file equals
   what the writer last wrote, the checkpoint is gone, and no chunk file
   is left on the disks but those of live files.
3. 8 checkpoints of one file at 8 instants, each readable as its instant,
   merged in a random order, the others checked after each merge.
4. kill -9 of the daemon during a merge (ROUNDS rounds, env
   SPACEFS_CKPT_ROUNDS, default 3; 10 for the issue's figure): after a
   remount the merge finishes by itself, the file is exact, nothing left.
6. If qemu-img is installed (qemu-utils, in tests/run's BOOTSTRAP_EXTRA):
   a dynamic VHDX made by qemu-img is written by qemu-io while
   `spacectl backup` runs; `qemu-img check` passes on the backup copy and
   on the live file after the merge.
   An unmount during a merge at 1 MB/s returns at once (the merge stops
   between batches) and the next mount finishes it.
5. `spacectl backup` while the writer goes on: the copy equals the
   instant, a sparse file stays sparse, no checkpoint is left; a backup
   whose spacectl is killed -9 mid-copy is cleaned up by the next backup,
   one whose daemon is killed -9 by the next mount; a symlink in DEST is
   replaced, not written through; a backup whose checkpoint starts merging
   mid-copy fails and leaves no full-size copy; another host's backup
   checkpoint is left alone by a new backup.
"""
import errno
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import harness
from harness import Pool, Tap, data_extents, log_tail, stop_clean

MiB = 1 << 20
FILE = 8 * MiB
ROUNDS = int(os.environ.get("SPACEFS_CKPT_ROUNDS", "3"))
LAYOUTS = {"simple": ["simple"], "mirror2": ["mirror", "--copies", "2"],
           "parity1": ["parity", "--parity", "1"]}


def sha(b):
    return hashlib.sha256(b).hexdigest()


def sha_path(p):
    with open(p, "rb") as f:
        return sha(f.read())


class Writer:
    """Random writes to one file; pause() waits until no write is in flight."""

    def __init__(self, path, model, seed):
        self.path, self.model, self.rng = path, model, random.Random(seed)
        self.go = threading.Event()
        self.idle = threading.Event()
        self.stop_ = False
        self.writes = 0
        self.error = None
        self.go.set()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        try:
            fd = os.open(self.path, os.O_RDWR)
            while not self.stop_:
                if not self.go.is_set():
                    self.idle.set()
                    self.go.wait()
                    continue
                self.idle.clear()
                n = self.rng.choice([512, 4096, 65536, 200000])
                off = self.rng.randrange(0, FILE - n)
                buf = self.rng.randbytes(n)
                os.pwrite(fd, buf, off)
                self.model[off:off + n] = buf
                self.writes += 1
            os.close(fd)
        except Exception as e:  # reported by the test
            self.error = e
        self.idle.set()

    def pause(self):
        self.go.clear()
        self.idle.wait(30)

    def resume(self):
        self.go.set()

    def stop(self):
        self.stop_ = True
        self.go.set()
        self.t.join(60)


def ckpt(p, vol, name, *paths):
    p.spacectl("checkpoint", "create", p.source, vol, name, *paths)


def merge(p, vol, name):
    p.spacectl("checkpoint", "merge", p.source, vol, name, "--wait")


def listed(p, vol):
    out = p.spacectl("checkpoint", "list", p.source, vol).stdout.splitlines()[1:]
    return [l.split()[0] for l in out if l.strip()]


def wait_none(p, vol, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not listed(p, vol):
            return True
        time.sleep(0.2)
    return False


def merge_jobs(p, vol):
    """The merge rows of volume `vol` in `spacectl status --json`."""
    js = json.loads(p.spacectl("status", p.source, "--json").stdout)["daemon"]["jobs"]
    return [j for j in js if j["kind"] == "merge" and j["volume"] == vol]


def chunk_ids(p, vol):
    ids = set()
    for f in glob.glob(os.path.join(p.dir, "d*", "vol", vol, "data", "*", "*")):
        ids.add(int(os.path.basename(f).split(".")[0], 16))
    return ids


def live_ids(root):
    ids = set()
    for dp, _, files in os.walk(root):
        for f in files:
            ids.add(os.stat(os.path.join(dp, f)).st_ino & ((1 << 48) - 1))
    return ids


def write_at(path, off, data, mode="r+b", sync=False):
    with open(path, mode) as f:
        f.seek(off)
        f.write(data)
        if sync:  # sizes reach the metadata lazily; kill -9 tests need them there
            f.flush()
            os.fsync(f.fileno())


def one_layout(t, p, vol, seed):
    root = os.path.join(p.mnt, vol)
    rng = random.Random(seed)
    f = os.path.join(root, "vm.vhdx")
    model = bytearray(rng.randbytes(FILE))
    write_at(f, 0, model, "wb")
    sparse = os.path.join(root, "sparse.bin")
    write_at(sparse, 0, b"a" * 65536, "wb")
    write_at(sparse, 4 * MiB, b"b" * 8192)
    os.truncate(sparse, 8 * MiB)
    os.makedirs(os.path.join(root, "d"))
    others = {}
    for n in ("unlinked", "renamed", "cut"):
        others[n] = rng.randbytes(300000)
        write_at(os.path.join(root, "d", n), 0, others[n], "wb")

    w = Writer(f, model, seed)
    time.sleep(0.3)
    w.pause()
    want = sha(bytes(model))
    st = os.stat(f)
    t0 = time.time()
    ckpt(p, vol, "c1")
    took = time.time() - t0
    w.resume()
    t.ok(w.writes > 0, f"{vol}: writes before the instant ({w.writes})")
    t.diag(f"{vol}: checkpoint create took {took:.3f} s (spacectl round trip)")
    sparse_ext = data_extents(sparse)
    write_at(sparse, 2 * MiB, b"c" * 4096)  # into the hole, after the instant
    os.unlink(os.path.join(root, "d", "unlinked"))
    os.rename(os.path.join(root, "d", "renamed"), os.path.join(root, "moved"))
    os.truncate(os.path.join(root, "d", "cut"), 1000)
    write_at(os.path.join(root, "d", "cut"), 5000, b"new")
    time.sleep(0.5)

    cdir = os.path.join(root, ".checkpoints", "c1")

    def check_ckpt(when):
        cf = os.path.join(cdir, "vm.vhdx")
        t.eq(sha_path(cf), want, f"{vol}: checkpoint sha256 is the instant's ({when})")
        cst = os.stat(cf)
        t.eq((cst.st_size, cst.st_mtime_ns), (st.st_size, st.st_mtime_ns),
             f"{vol}: checkpoint size and mtime are the instant's ({when})")
        t.eq(data_extents(os.path.join(cdir, "sparse.bin")), sparse_ext,
             f"{vol}: checkpoint holes are the instant's ({when})")
        t.eq(open(os.path.join(cdir, "sparse.bin"), "rb").read(2 * MiB + 4096)[2 * MiB:],
             bytes(4096), f"{vol}: checkpoint reads the old hole as zeros ({when})")
        got = {n: open(os.path.join(cdir, "d", n), "rb").read() for n in others}
        t.ok(got == others, f"{vol}: unlinked, renamed, truncated files unchanged in it ({when})")
        t.ok(".checkpoints" not in os.listdir(root), f"{vol}: .checkpoints not listed ({when})")
        t.eq(os.listdir(os.path.join(root, ".checkpoints")), ["c1"],
             f"{vol}: reachable by name, lists its checkpoint ({when})")
        for what, fn in (("open for write", lambda: os.open(cf, os.O_WRONLY)),
                         ("mkdir", lambda: os.mkdir(os.path.join(cdir, "x"))),
                         ("unlink", lambda: os.unlink(cf)),
                         ("truncate", lambda: os.truncate(cf, 0))):
            try:
                fn()
                t.ok(False, f"{vol}: {what} in the checkpoint refused")
            except OSError as e:
                t.eq(errno.errorcode.get(e.errno), "EROFS",
                     f"{vol}: {what} in the checkpoint refused ({when})")

    check_ckpt("live")
    w.pause()
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: live file reads the newest data")
    w.stop()
    t.ok(w.error is None, f"{vol}: writer ran without error ({w.error})")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: daemon exits 0 on unmount with checkpoints")
    p.mount()
    check_ckpt("after remount")
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: live file exact after remount")
    t.eq(open(os.path.join(root, "d", "cut"), "rb").read(),
         others["cut"][:1000] + bytes(4000) + b"new", f"{vol}: truncated live file right")

    w = Writer(f, model, seed + 1)
    time.sleep(0.3)
    merge(p, vol, "c1")
    time.sleep(0.2)
    w.stop()
    t.ok(w.error is None, f"{vol}: writer ran through the merge ({w.error})")
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: after merge the file is the last written")
    t.eq(listed(p, vol), [], f"{vol}: no checkpoint left")
    mj = merge_jobs(p, vol)
    t.ok(len(mj) == 1 and mj[0]["state"] == "done" and mj[0]["checkpoint"] == "c1" and
         mj[0]["done"] == mj[0]["total"] > 0,
         f"{vol}: status --json lists the merge of c1 as a done job with its progress {mj}")
    t.ok("c1" not in os.listdir(os.path.join(root, ".checkpoints")),
         f"{vol}: checkpoint gone from the namespace")
    left = chunk_ids(p, vol) - live_ids(root)
    t.eq(left, set(), f"{vol}: no differencing or unlinked chunk files left on the disks")
    logs = glob.glob(os.path.join(p.dir, "d*", "vol", vol, "ckpt"))
    t.ok(logs and all(os.path.getsize(l) < 64 for l in logs),
         f"{vol}: checkpoint log compacted to one record on {len(logs)} metadata disks")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: daemon exits 0 on unmount after the merges")
    p.mount()
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: file exact after merge and remount")
    t.eq([(j["state"], j["checkpoint"]) for j in merge_jobs(p, vol)], [("done", "c1")],
         f"{vol}: after a remount status still shows the last merge done (its record)")


def many(t, p, vol):
    root = os.path.join(p.mnt, vol)
    f = os.path.join(root, "many.bin")
    rng = random.Random(8)
    model = bytearray(rng.randbytes(2 * MiB))
    write_at(f, 0, model, "wb")
    want = {}
    for i in range(8):
        want[f"k{i}"] = bytes(model)
        ckpt(p, vol, f"k{i}", "many.bin")
        for _ in range(20):
            n = rng.choice([100, 4096, 70000])
            off = rng.randrange(0, len(model) - n)
            b = rng.randbytes(n)
            write_at(f, off, b)
            model[off:off + n] = b
    order = list(want)
    rng.shuffle(order)
    ok = all(sha_path(os.path.join(root, ".checkpoints", k, "many.bin")) == sha(v)
             for k, v in want.items())
    t.ok(ok, f"{vol}: 8 checkpoints each read as their instant")
    for k in order:
        merge(p, vol, k)
        del want[k]
        ok = all(sha_path(os.path.join(root, ".checkpoints", k2, "many.bin")) == sha(v)
                 for k2, v in want.items())
        ok = ok and sha_path(f) == sha(bytes(model))
        t.ok(ok, f"{vol}: after merging {k}, the others and the live file are exact")
    t.eq(chunk_ids(p, vol) - live_ids(root), set(), f"{vol}: no differencing data left")


def kill_during_merge(t, p, vol):
    root = os.path.join(p.mnt, vol)
    f = os.path.join(root, "k.bin")
    rng = random.Random(9)
    model = bytearray(rng.randbytes(16 * MiB))
    write_at(f, 0, model, "wb", sync=True)
    for r in range(ROUNDS):
        ckpt(p, vol, f"r{r}")
        for _ in range(200):
            off = rng.randrange(0, len(model) - 65536)
            b = rng.randbytes(rng.choice([4096, 65536]))
            write_at(f, off, b)
            model[off:off + len(b)] = b
        p.spacectl("checkpoint", "merge", p.source, vol, f"r{r}", "--rate", "20")
        time.sleep(rng.uniform(0.05, 0.4))
        p.mounts[-1].kill9()
        p.mount()
        t.ok(wait_none(p, vol), f"{vol}: round {r}: merge resumed and finished after kill -9")
        t.eq(sha_path(f), sha(bytes(model)), f"{vol}: round {r}: file exact")
    t.eq(chunk_ids(p, vol) - live_ids(root), set(), f"{vol}: no differencing data left")
    lost = [l for l in log_tail(p, 1 << 20).splitlines() if "checkpoint data is lost" in l]
    t.eq(lost, [], f"{vol}: every mount found every layer it replayed")


def unmount_during_merge(t, p, vol):
    """An unmount does not wait for a slow merge to finish: the merge stops
    between batches and the next mount goes on with it."""
    root = os.path.join(p.mnt, vol)
    f = os.path.join(root, "u.bin")
    rng = random.Random(10)
    model = bytearray(rng.randbytes(32 * MiB))
    write_at(f, 0, model, "wb", sync=True)
    ckpt(p, vol, "u")
    b = rng.randbytes(32 * MiB)  # every granule redirected: 32 MiB to fold
    write_at(f, 0, b, sync=True)
    model[:] = b
    p.spacectl("checkpoint", "merge", p.source, vol, "u", "--rate", "1")
    time.sleep(1.5)
    t0 = time.monotonic()
    rc = p.mounts[-1].stop()
    took = time.monotonic() - t0
    t.eq(rc, 0, f"{vol}: unmount during a merge at 1 MB/s exits 0")
    # the 30 MiB left would take 30 s at the rate asked
    t.ok(took < 15, f"{vol}: the unmount did not wait for the merge ({took:.1f} s)")
    p.mount()
    t.eq(listed(p, vol), ["u"], f"{vol}: the merge is still to finish after the remount")
    merge(p, vol, "u")  # the rest at full speed
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: file exact after the resumed merge")
    t.eq(chunk_ids(p, vol) - live_ids(root), set(), f"{vol}: no differencing data left")


def backups(t, p, vol):
    root = os.path.join(p.mnt, vol)
    os.makedirs(os.path.join(root, "vm"))
    f = os.path.join(root, "vm", "disk.img")
    rng = random.Random(10)
    model = bytearray(rng.randbytes(FILE))
    write_at(f, 0, model, "wb", sync=True)
    sp = os.path.join(root, "vm", "sparse.img")
    write_at(sp, 3 * MiB, b"s" * 65536, "wb")
    os.truncate(sp, 64 * MiB)
    write_at(sp, 0, b"", sync=True)
    dest = os.path.join(p.dir, "backup")
    os.makedirs(dest)
    w = Writer(f, model, 11)
    time.sleep(0.2)
    w.pause()
    want = sha(bytes(model))
    proc = subprocess.Popen([harness.SPACECTL, "backup", p.source, f"{vol}/vm", dest, "--wait",
                             "--rate", "8"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 30
    while not listed(p, vol) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    w.resume()
    out, _ = proc.communicate(timeout=120)
    w.stop()
    t.eq(proc.returncode, 0, f"{vol}: backup ran ({out.strip().splitlines()[-1:]})")
    t.eq(sha_path(os.path.join(dest, "vm", "disk.img")), want,
         f"{vol}: backup copy is the instant (writes went on)")
    bst = os.stat(os.path.join(dest, "vm", "sparse.img"))
    t.ok(bst.st_size == 64 * MiB and bst.st_blocks * 512 < 4 * MiB,
         f"{vol}: sparse file stays sparse ({bst.st_blocks * 512} bytes allocated)")
    t.eq(listed(p, vol), [], f"{vol}: no checkpoint left after backup")
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: live file is the last written")

    # spacectl killed mid-copy: the next backup merges what it left
    d2 = os.path.join(p.dir, "backup2")
    os.makedirs(d2)
    proc = subprocess.Popen([harness.SPACECTL, "backup", p.source, f"{vol}/vm", d2, "--rate",
                             "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not listed(p, vol) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t.eq(len(listed(p, vol)), 1, f"{vol}: a killed backup leaves its checkpoint")
    # an existing DEST entry is replaced, not written through (a symlink)
    victim = os.path.join(p.dir, "victim")
    write_at(victim, 0, b"v" * 4096, "wb")
    copy = os.path.join(d2, "vm", "disk.img")
    if os.path.lexists(copy):
        os.unlink(copy)
    os.symlink(victim, copy)
    p.spacectl("backup", p.source, f"{vol}/vm", d2, "--wait")
    t.eq(listed(p, vol), [], f"{vol}: the next backup cleaned it up")
    t.eq(sha_path(copy), sha(bytes(model)), f"{vol}: second backup exact")
    t.ok(not os.path.islink(copy) and sha_path(victim) == sha(b"v" * 4096),
         f"{vol}: a symlink in DEST was replaced, its target untouched")

    # daemon killed mid-backup: the next mount merges it
    proc = subprocess.Popen([harness.SPACECTL, "backup", p.source, f"{vol}/vm", d2, "--rate",
                             "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not listed(p, vol) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    p.mounts[-1].kill9()
    proc.wait(60)
    p.mount()
    t.ok(wait_none(p, vol), f"{vol}: after kill -9 mid-backup the mount left no checkpoint")
    t.eq(sha_path(f), sha(bytes(model)), f"{vol}: file unchanged by the interrupted backup")


def backup_merged_midway(t, p, vol):
    """The backup's checkpoint starts merging mid-copy (as at an owner move):
    the backup fails, naming the file, and leaves no full-size copy; the
    older copy already in DEST stays as it was (the new one is written
    beside it and renamed over it only when complete)."""
    root = os.path.join(p.mnt, vol, "holey")
    os.makedirs(root)
    f = os.path.join(root, "h.img")
    with open(f, "wb") as fh:
        for i in range(32):  # 32 extents of 64 KiB: a SEEK_DATA after each
            fh.seek(i * MiB)
            fh.write(os.urandom(65536))
        fh.truncate(32 * MiB)
        os.fsync(fh.fileno())
    dest = os.path.join(p.dir, "backup-merged")
    os.makedirs(dest)
    with open(os.path.join(dest, "h.img"), "wb") as fh:  # last night's copy
        fh.write(b"OLD" * 1000)
    proc = subprocess.Popen([harness.SPACECTL, "backup", p.source, f"{vol}/holey/h.img", dest,
                             "--rate", "0.25"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while not listed(p, vol) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(1)
    names = listed(p, vol)
    if names:
        merge(p, vol, names[0])
    out, _ = proc.communicate(timeout=120)
    t.ok(proc.returncode != 0 and "h.img: Stale file handle" in out,
         f"{vol}: a backup whose checkpoint merged mid-copy fails ({out.strip()[-200:]})")
    copy = os.path.join(dest, "h.img")
    t.ok(not os.path.exists(copy) or os.path.getsize(copy) < 32 * MiB,
         f"{vol}: the incomplete copy is not given its full size")
    t.ok(open(copy, "rb").read() == b"OLD" * 1000 and sorted(os.listdir(dest)) == ["h.img"],
         f"{vol}: the older copy in DEST stays as it was, and no partial file is left "
         f"({sorted(os.listdir(dest))})")
    t.ok(wait_none(p, vol), f"{vol}: no checkpoint left")


def backup_other_host(t, p, vol):
    """A backup checkpoint of another host (its spacectl may run there) is
    left alone by a new backup; this host's stale ones are merged."""
    d = os.path.join(p.dir, "backup-other")
    os.makedirs(d)
    proc = subprocess.Popen(["unshare", "-u", "sh", "-c", 'hostname nodeb-x && exec "$0" "$@"',
                             harness.SPACECTL, "backup", p.source, f"{vol}/vm", d, "--rate", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not listed(p, vol) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = listed(p, vol)
    t.ok(len(names) == 1 and names[0].endswith("-nodeb-x"),
         f"{vol}: a backup checkpoint names its host ({names})")
    b = p.spacectl("backup", p.source, f"{vol}/vm", d, "--wait")
    t.eq(listed(p, vol), names, f"{vol}: another host's backup checkpoint is not merged")
    t.ok("other hosts left alone" in b.stdout, f"{vol}: and the backup says so")
    for n in names:
        p.spacectl("checkpoint", "merge", p.source, vol, n, "--wait", check=False)


def vhdx(t, p, vol):
    if not shutil.which("qemu-img") or not shutil.which("qemu-io"):
        t.ok(True, "# SKIP qemu-img/qemu-io not installed (qemu-utils)")
        return
    root = os.path.join(p.mnt, vol)
    os.makedirs(os.path.join(root, "hv"))
    img = os.path.join(root, "hv", "guest.vhdx")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic", img,
                    "256M"], check=True)
    rng = random.Random(12)
    cmds = []
    for i in range(400):
        n = rng.choice([4096, 65536, 1 << 20])
        off = rng.randrange(0, (256 << 20) - n) // 4096 * 4096
        cmds += ["-c", f"write -P {i % 250 + 1} {off} {n}"]
    qio = subprocess.Popen(["qemu-io", "-f", "vhdx", *cmds, img], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    dest = os.path.join(p.dir, "vhdx-backup")
    os.makedirs(dest)
    b = p.spacectl("backup", p.source, f"{vol}/hv", dest, "--wait", check=False)
    if not t.eq(b.returncode, 0,
                f"{vol}: backup of a VHDX under qemu-io writes ({b.stderr.strip()})"):
        t.diag(log_tail(p))
    _, err = qio.communicate(timeout=300)
    t.eq(qio.returncode, 0, f"{vol}: qemu-io wrote through checkpoint, backup, merge ({err[-200:]})")
    copy = os.path.join(dest, "hv", "guest.vhdx")
    # A crash-consistent copy may hold a VHDX log that writes in flight at
    # the instant left open, as after a power cut: a read-write open replays
    # it, as the hypervisor does when the VM boots ("-r leaks" opens
    # read-write and repairs nothing else); then the plain check must pass.
    subprocess.run(["qemu-img", "check", "-q", "-r", "leaks", "-f", "vhdx", copy],
                   capture_output=True, text=True)
    for what, path in (("backup copy", copy), ("live file after merge", img)):
        c = subprocess.run(["qemu-img", "check", "-f", "vhdx", path], capture_output=True,
                           text=True)
        t.eq(c.returncode, 0, f"{vol}: qemu-img check passes on the {what} "
                              f"({(c.stdout + c.stderr).strip()[-200:]})")
    t.eq(listed(p, vol), [], f"{vol}: no checkpoint left after the VHDX backup")


def grown_scrub(t, p, vol):
    """A file that grows after its checkpoint writes its new end into the
    checkpoint's layer, past the layer's recorded size (the file's size at
    the checkpoint): a scrub (and a repair, same walk) must still cover it.
    A byte flipped there in one mirror copy is found and repaired."""
    rng = random.Random(7)
    root = os.path.join(p.mnt, vol)
    path = os.path.join(root, "grown.bin")
    model = bytearray(rng.randbytes(256 * 1024))
    write_at(path, 0, model, mode="wb", sync=True)
    before = chunk_ids(p, vol)
    ckpt(p, vol, "grow", "grown.bin")
    more = rng.randbytes(1 << 20)
    write_at(path, len(model), more, sync=True)
    model += more
    layer = chunk_ids(p, vol) - before
    t.eq(len(layer), 1, f"{vol}: the grown file's layer has chunk files ({sorted(layer)})")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: clean unmount before the damage")
    hit = None
    for f in sorted(glob.glob(os.path.join(p.dir, "d*", "vol", vol, "data", "*",
                                           f"{min(layer or {0}):016x}.*"))):
        if f.endswith(".crc"):
            continue
        with open(f, "r+b") as fh:  # past the chunk bytes the recorded size maps to
            fh.seek(300 * 1024 + 123)
            b = fh.read(1)
            if b and b != b"\0":
                fh.seek(-1, 1)
                fh.write(bytes([b[0] ^ 0xFF]))
                hit = f
                break
    t.ok(hit is not None, f"{vol}: a byte of the layer's grown part flipped on one copy ({hit})")
    p.mount()
    out = p.spacectl("scrub", p.source, vol, "--wait").stdout
    t.ok("bad 1, repaired 1," in out, f"{vol}: scrub finds and repairs it "
                                       f"({out.strip().splitlines()[-1:]})")
    t.eq(sha_path(path), sha(bytes(model)), f"{vol}: the grown file reads exact")
    t.eq(sha_path(os.path.join(root, ".checkpoints", "grow", "grown.bin")),
         sha(bytes(model[:256 * 1024])), f"{vol}: the checkpoint reads its instant")
    fsync_layers(t, p, vol, path, model, min(layer or {0}))
    merge(p, vol, "grow")
    t.eq(sha_path(path), sha(bytes(model)), f"{vol}: exact after the merge")
    os.unlink(path)


def fsync_layers(t, p, vol, path, model, layer):
    """fsync of a checkpointed file makes its layer's chunk files and the
    checkpoint log durable too (fdatasync of each, seen with strace -y on
    the daemon), not only the file's own chunk files: a power cut must not
    take writes made since the checkpoint that fsync answered."""
    if not shutil.which("strace"):
        t.ok(True, f"{vol}: fsync syncs the layers # SKIP no strace")
        return
    trace = os.path.join(p.dir, "fsync.strace")
    tr = subprocess.Popen(["strace", "-f", "-y", "-e", "trace=fdatasync,fsync", "-o", trace,
                           "-p", str(p.mounts[-1].proc.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached to every thread
    if tr.poll() is not None:
        why = tr.stderr.read().decode(errors="replace").strip()[-120:]
        t.ok(True, f"{vol}: fsync syncs the layers # SKIP strace cannot attach: {why}")
        return
    data = random.Random(8).randbytes(4096)
    write_at(path, 8192, data, sync=True)  # a first write since the checkpoint, and fsync
    model[8192:8192 + 4096] = data
    time.sleep(0.5)
    tr.terminate()
    tr.wait()
    with open(trace) as f:
        text = f.read()
    synced = [ln for ln in text.splitlines() if "sync(" in ln]
    t.ok(any(f"{layer:016x}." in ln for ln in synced),
         f"{vol}: fsync synced the layer's chunk files ({len(synced)} syncs)")
    t.ok(any("/ckpt>" in ln for ln in synced), f"{vol}: fsync synced the checkpoint log")
    t.eq(sha_path(path), sha(bytes(model)), f"{vol}: the file reads its fsynced write")


def main():
    t = Tap()
    p = Pool(ndisks=4)
    try:
        for i, (name, args) in enumerate(LAYOUTS.items()):
            p.volume(name, args[0], *args[1:], "--interleave", "64K")
        p.mount()
        for i, name in enumerate(LAYOUTS):
            one_layout(t, p, name, 100 + i)
        many(t, p, "simple")
        kill_during_merge(t, p, "parity1")
        unmount_during_merge(t, p, "mirror2")
        backups(t, p, "mirror2")
        backup_merged_midway(t, p, "simple")
        backup_other_host(t, p, "mirror2")
        vhdx(t, p, "parity1")
        grown_scrub(t, p, "mirror2")
        stop_clean(t, p.mounts[-1])
    except Exception as e:
        t.ok(False, f"exception: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()
    t.done()


if __name__ == "__main__":
    main()
