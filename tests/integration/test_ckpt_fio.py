#!/usr/bin/env python3
"""A file under fio verify writes through a checkpoint, a backup and a merge
(issue 13, "What must be shown", first item), on every redundant layout.

Per volume (mirror 2, mirror 3, parity 1, parity 2 on four disks), one file
of SIZE (env SPACEFS_CKPT_FIO_SIZE, default 256m; 1g for the issue's
figure) laid out sequentially, then fio writes it at random, rate-limited
(16 KiB blocks, libaio O_DIRECT, queue depth 8) with crc32c verify headers
and verify_backlog (blocks read back and checked while it writes), for
RUNTIME seconds (env SPACEFS_CKPT_FIO_TIME, default 150) of writes (env
SPACEFS_CKPT_FIO_LAYOUTS=m2,p1 runs only those volumes); meanwhile:

 1. fio is stopped (SIGSTOP; its queued I/O drains), the file's sha256
    taken, `checkpoint create c1` run, fio continued: the checkpoint's
    sha256 is that instant's, read while fio writes;
 2. fio stopped again, the file's sha256 taken, `spacectl backup VOL/FILE
    DEST --wait` started, fio continued as soon as the backup's checkpoint
    is listed: the backup copy is that second instant, byte for byte (the
    backup equals its checkpoint), and c1 still reads as the first;
 3. `checkpoint merge c1 --wait` while fio writes on;
 4. fio, still writing at the end of each step (checked), then verifies
    every block it wrote: it passes, so the file after the merges is what
    fio last wrote; no checkpoint is listed and no chunk file is left on
    the disks but the live file's (no differencing data);
 5. after an unmount and a remount the file's sha256 is unchanged; the
    daemon exits cleanly with no sanitizer report.
"""
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

from harness import Pool, Tap, log_tail, stop_clean
from nodes import wait_for

SIZE = os.environ.get("SPACEFS_CKPT_FIO_SIZE", "256m")
RUNTIME = int(os.environ.get("SPACEFS_CKPT_FIO_TIME", "150"))
RATE_MB = 4
LAYOUTS = {"m2": ["mirror", "--copies", "2"], "m3": ["mirror", "--copies", "3"],
           "p1": ["parity", "--parity", "1"], "p2": ["parity", "--parity", "2"]}
# env SPACEFS_CKPT_FIO_LAYOUTS=m2,p1: only those (a long run at 1g)
_only = os.environ.get("SPACEFS_CKPT_FIO_LAYOUTS")
if _only:
    LAYOUTS = {k: v for k, v in LAYOUTS.items() if k in _only.split(",")}


def sha_path(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def listed(p, vol):
    out = p.spacectl("checkpoint", "list", p.source, vol, check=False).stdout.splitlines()[1:]
    return [l.split()[0] for l in out if l.strip()]


def chunk_ids(p, vol):
    ids = set()
    for c in glob.glob(os.path.join(p.dir, "d*", "vol", vol, "data", "*", "*")):
        if not c.endswith(".crc"):
            ids.add(int(os.path.basename(c).split(".")[0], 16))
    return ids


def pause(fio):
    """Stop fio and let the I/O it queued drain through the daemon."""
    fio.send_signal(signal.SIGSTOP)
    time.sleep(1.0)


def one(t, p, vol):
    d = os.path.join(p.mnt, vol)
    f = os.path.join(d, "vm.img")
    fill = subprocess.run(["fio", "--name=fill", f"--filename={f}", f"--size={SIZE}",
                           "--rw=write", "--bs=1M", "--ioengine=psync", "--direct=1",
                           "--end_fsync=1"], capture_output=True, text=True)
    t.eq(fill.returncode, 0, f"{vol}: file laid out ({fill.stderr.strip()[-200:]})")
    out = os.path.join(p.dir, f"{vol}.fio")
    fio = subprocess.Popen(
        # --thread: one process, so that SIGSTOP stops the job itself (fio
        # otherwise forks it and a stopped parent leaves it writing)
        ["fio", "--name=vm", "--thread", f"--filename={f}", f"--size={SIZE}", "--rw=randwrite",
         "--bs=16k", "--ioengine=libaio", "--direct=1", "--iodepth=8",
         f"--io_size={RATE_MB * RUNTIME}m", f"--rate={RATE_MB}m", "--verify=crc32c",
         "--verify_backlog=256", "--do_verify=1", "--verify_fatal=1", "--randrepeat=0",
         f"--output={out}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        # 1. the checkpoint at a known instant
        pause(fio)
        instant = sha_path(f)
        r = p.spacectl("checkpoint", "create", p.source, vol, "c1", "vm.img", check=False)
        fio.send_signal(signal.SIGCONT)
        t.eq(r.returncode, 0, f"{vol}: checkpoint create under fio ({r.stderr.strip()})")
        cf = os.path.join(d, ".checkpoints", "c1", "vm.img")
        t.eq(sha_path(cf), instant, f"{vol}: the checkpoint is the instant, read while fio writes")
        # 2. a backup at a second known instant
        pause(fio)
        second = sha_path(f)
        dest = os.path.join(p.dir, f"bk-{vol}")
        os.makedirs(dest)
        bk = subprocess.Popen([os.environ.get("SPACECTL", "build/tools/spacectl"), "backup",
                               p.source, f"{vol}/vm.img", dest, "--wait"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ok = wait_for(lambda: len(listed(p, vol)) == 2 or bk.poll() is not None, 30, 0.1)
        fio.send_signal(signal.SIGCONT)
        t.ok(ok and bk.poll() is None, f"{vol}: the backup's checkpoint taken, fio continued")
        _, err = bk.communicate(timeout=1200)
        t.eq(bk.returncode, 0, f"{vol}: backup --wait while fio writes ({err.strip()[-200:]})")
        t.ok(fio.poll() is None, f"{vol}: fio was still writing when the backup ended")
        t.eq(sha_path(os.path.join(dest, "vm.img")), second,
             f"{vol}: the backup is its checkpoint's instant")
        t.eq(sha_path(cf), instant, f"{vol}: c1 still the first instant after the backup")
        shutil.rmtree(dest)
        # 3. the merge of c1 while fio writes
        r = p.spacectl("checkpoint", "merge", p.source, vol, "c1", "--wait", check=False)
        t.eq(r.returncode, 0, f"{vol}: merge --wait while fio writes ({r.stderr.strip()})")
        t.ok(fio.poll() is None, f"{vol}: fio was still writing when the merge ended")
    finally:
        if fio.poll() is None:  # never leave it stopped
            fio.send_signal(signal.SIGCONT)
    # 4. fio's own verify of every block it wrote
    try:
        _, ferr = fio.communicate(timeout=RUNTIME * 10 + 600)
    except subprocess.TimeoutExpired:
        fio.kill()
        _, ferr = fio.communicate()
    report = open(out).read() if os.path.exists(out) else ""
    t.eq(fio.returncode, 0, f"{vol}: fio verify passes after checkpoint, backup and merge "
                            f"({(ferr or '').strip()[-300:]})")
    t.ok("err= 0" in report, f"{vol}: fio reports no error")
    if fio.returncode:
        t.diag(report[-2000:])
    t.eq(listed(p, vol), [], f"{vol}: no checkpoint left")
    live = os.stat(f).st_ino & ((1 << 48) - 1)
    t.eq(chunk_ids(p, vol) - {live}, set(), f"{vol}: no differencing data left on the disks")
    return sha_path(f)


def main():
    t = Tap()
    p = Pool(ndisks=4)
    try:
        for name, args in LAYOUTS.items():
            p.volume(name, *args, "--interleave", "64K")
        p.mount()
        final = {vol: one(t, p, vol) for vol in LAYOUTS}
        js = json.loads(p.spacectl("status", p.source, "--json").stdout)["daemon"]["jobs"]
        kinds = sorted((j["volume"], j["kind"], j["state"]) for j in js
                       if j["kind"] in ("merge", "backup"))
        t.eq(kinds, [(v, "merge", "done") for v in sorted(LAYOUTS)],
             f"status lists each volume's last merge done {kinds}")
        m = p.mounts[-1]
        t.eq(m.stop(), 0, "daemon exits cleanly")
        p.mount()
        for vol, h in final.items():
            t.eq(sha_path(os.path.join(p.mnt, vol, "vm.img")), h,
                 f"{vol}: file unchanged after unmount and remount")
        stop_clean(t, p.mounts[-1], "daemon exits cleanly after the remount")
    except Exception as e:  # noqa: BLE001 -- report, then clean up
        t.ok(False, f"exception: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()
    t.done()


if __name__ == "__main__":
    main()
