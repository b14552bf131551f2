#!/usr/bin/env python3
"""Unmount, then mount again at once: the two daemons never overlap, and
bit rot made in between is healed, never blessed.

An outside run found a rotten block served as good data: copy a file in,
`sync` (here: fsync), `fusermount3 -u`, and at once (the old daemon still finishing: the
unmount returns before it exits) overwrite 4 bytes of one data block in a
chunk file, then mount again and read.  Two faults met there:
  - the new daemon started beside the old one, found the dirty-region log
    still unclean and resynced;
  - the resync took the data block that disagreed with its checksum as a
    write torn by a crash, re-derived its checksum from it and recomputed
    parity from it: the damage became "good" data.
Each round here, on every redundant layout:
  quick remount  unmount, flip 4 bytes at chunk offset 4096 of a data
                 block while the old daemon may still run, mount at once;
  kill -9        kill the daemon (dirty regions stay dirty), flip, mount:
                 the unclean-mount resync runs over the rotten block.
Then read every file back: the bytes must be the ones written, the log
must name the checksum mismatch, and a scrub must find nothing left.

The overlap itself, made certain by stopping the old daemon (SIGSTOP)
before its unmount: a new mount waits for it and says so, spacectl does
not act offline beside it, and once it goes on both finish in order.  A
mount of a pool this node already has mounted is refused at once.
"""
import os
import re
import signal
import subprocess
import time

from harness import LAYOUTS, SPACECTL, SPACEFS, Mount, Pool, Tap, log_tail, run, sha256_file
import ondisk

INTERLEAVE = 64 * 1024
FILE_SIZE = 48 << 20
REDUNDANT = ["mirror2", "mirror3", "parity1", "parity2"]
NDISKS = 6


def geom(name):
    args = LAYOUTS[name]
    if args[0] == "mirror":
        copies = int(args[args.index("--copies") + 1])
        return dict(kind="mirror", copies=copies, parity=0, columns=NDISKS // copies,
                    interleave=INTERLEAVE)
    m = int(args[args.index("--parity") + 1])
    return dict(kind="parity", copies=1, parity=m, columns=ondisk.default_parity_columns(NDISKS, m),
                interleave=INTERLEAVE)


def chunk_of(pool, vol, pos):
    """The chunk file of the single file of `vol` at position `pos`."""
    found = []
    for d in pool.disks:
        data = os.path.join(d, "vol", vol, "data")
        for root, _, files in os.walk(data):
            found += [os.path.join(root, f) for f in files if f.endswith(f".{pos}")]
    return found


def flip(pool, vol):
    """Overwrite 4 bytes at chunk offset 4096 of the block of data column 0,
    stripe 0 (the file's bytes 4096..4099).  Returns the chunk path."""
    pos = ondisk.slot_position(geom(vol), 0, 0)
    paths = chunk_of(pool, vol, pos)
    assert len(paths) == 1, paths
    with open(paths[0], "r+b") as f:
        f.seek(4096)
        old = f.read(4)
        f.seek(4096)
        f.write(bytes(b ^ 0xA5 for b in old))
        f.flush()
        os.fsync(f.fileno())
    return paths[0]


def write_files(pool):
    digests = {}
    for vol in REDUNDANT:
        path = os.path.join(pool.mnt, vol, "f.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(FILE_SIZE))
            os.fsync(f.fileno())  # libfuse 3.14 has no syncfs: sync(1) does not reach spacefs
        digests[vol] = sha256_file(path)
    return digests


def check_files(t, pool, digests, what):
    for vol in REDUNDANT:
        path = os.path.join(pool.mnt, vol, "f.bin")
        try:
            got = sha256_file(path)
        except OSError as e:
            got = f"error {e}"
        t.eq(got, digests[vol], f"{what}: {vol}: the file reads back as written")


JOB_RE = re.compile(r"blocks checked (\d+), bad (\d+), repaired (\d+), unrecoverable (\d+)")


def scrub_clean(t, pool, what):
    """Reads healed the blocks they touched: a scrub finds nothing left."""
    p = pool.spacectl("scrub", pool.source, "--wait", check=False)
    got = JOB_RE.search(p.stdout)
    t.ok(p.returncode == 0 and got, f"{what}: scrub runs")
    if got:
        t.eq(tuple(map(int, got.groups()[1:])), (0, 0, 0),
             f"{what}: scrub finds no bad, repaired or unrecoverable block")
    else:
        t.diag(p.stdout + p.stderr)


def quick_remount(t, pool, m):
    digests = write_files(pool)
    mark = len(log_tail(pool, 10 ** 9))
    run(["fusermount3", "-u", pool.mnt])
    old = m.proc
    for vol in REDUNDANT:
        flip(pool, vol)
    t.diag(f"old daemon still running at the flip: {old.poll() is None}")
    m2 = Mount(pool.source, pool.mnt, "", os.path.join(pool.dir, "spacefs.log"))
    m2.start(timeout=90)
    pool.mounts.append(m2)
    rc = old.wait(timeout=60)
    m.proc = None
    m.logf.close()
    t.eq(rc, 0, "quick remount: the old daemon exits 0")
    check_files(t, pool, digests, "quick remount")
    log = log_tail(pool, 10 ** 9)[mark:]
    t.ok(log.count("checksum mismatch") >= len(REDUNDANT),
         "quick remount: the damage is detected and named in the log")
    t.ok("torn write" not in log, "quick remount: no rotten block taken for a torn write")
    return m2


def kill9_remount(t, pool, m):
    digests = write_files(pool)
    # The dirty-region log forgets a region idle for a cleaning pass (about
    # a second): rewrite one block of each file with its own bytes just
    # before the kill, so every file's region is surely dirty.
    for vol in REDUNDANT:
        fd = os.open(os.path.join(pool.mnt, vol, "f.bin"), os.O_RDWR)
        os.pwrite(fd, os.pread(fd, 4096, 8 << 20), 8 << 20)
        os.fsync(fd)
        os.close(fd)
    mark = len(log_tail(pool, 10 ** 9))
    m.kill9()
    for vol in REDUNDANT:
        flip(pool, vol)
    m2 = pool.mount()
    check_files(t, pool, digests, "kill -9")
    log = log_tail(pool, 10 ** 9)[mark:]
    t.ok("unclean shutdown: resynced" in log, "kill -9: the mount resynced dirty regions")
    t.ok("torn write" not in log, "kill -9: no rotten block taken for a torn write")
    t.ok(log.count("checksum mismatch") >= len(REDUNDANT),
         "kill -9: the damage is detected and named in the log")
    return m2


def overlap(t, pool, m):
    """The old daemon is held (SIGSTOP) between its unmount and its exit."""
    digests = write_files(pool)
    old = m.proc
    old.send_signal(signal.SIGSTOP)
    t.eq(run(["fusermount3", "-u", pool.mnt], check=False).returncode, 0,
         "overlap: fusermount3 -u returns while the daemon is stopped")
    log = os.path.join(pool.dir, "second.log")
    with open(log, "wb") as lf:
        new = subprocess.Popen([SPACEFS, pool.source, pool.mnt, "-f"], stdout=lf, stderr=lf)
    ctl = subprocess.Popen([SPACECTL, "volume", "create", pool.source, "late", "--layout",
                            "mirror"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    t.ok(new.poll() is None and not os.path.ismount(pool.mnt),
         "overlap: the new daemon waits and does not mount beside the old one")
    with open(log, errors="replace") as f:
        t.ok("waiting for the previous spacefs" in f.read(), "overlap: it says what it waits for")
    t.ok(ctl.poll() is None, "overlap: spacectl waits instead of changing the pool offline")
    old.send_signal(signal.SIGCONT)
    t.eq(old.wait(timeout=60), 0, "overlap: the old daemon finishes and exits 0")
    m.proc = None
    m.logf.close()
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.ismount(pool.mnt):
        time.sleep(0.05)
    t.ok(os.path.ismount(pool.mnt), "overlap: then the new daemon mounts")
    out = ctl.communicate(timeout=90)[0]
    t.eq(ctl.returncode, 0, "overlap: spacectl then creates the volume through the new daemon")
    t.ok(os.path.isdir(os.path.join(pool.mnt, "late")), "overlap: the new volume is mounted")
    if ctl.returncode:
        t.diag(out)
    check_files(t, pool, digests, "overlap")
    nm = Mount(pool.source, pool.mnt, "", log)
    nm.proc, nm.logf = new, open(log, "ab")
    pool.mounts.append(nm)
    # A second mount of a pool this node serves is refused at once.
    other = os.path.join(pool.dir, "mnt2")
    os.makedirs(other)
    t0 = time.time()
    try:
        p = run([SPACEFS, pool.source, other, "-f"], check=False, timeout=60)
    finally:  # a daemon that mounted beside the first one (the old bug) is killed: detach
        if os.path.ismount(other):
            run(["fusermount3", "-u", "-z", other], check=False)
    t.ok(p.returncode != 0 and time.time() - t0 < 10 and "already mounted at" in p.stderr,
         "a second mount by the same node is refused at once, naming the mount point")
    t.diag(p.stderr.strip())
    return nm


def main():
    t = Tap()
    pool = Pool(NDISKS)
    try:
        for vol in REDUNDANT:
            args = LAYOUTS[vol]
            pool.volume(vol, args[0], *args[1:], "--interleave", "64K", "--integrity", "on")
        m = pool.mount()
        for rnd in range(2):
            m = quick_remount(t, pool, m)
            m = kill9_remount(t, pool, m)
        m = overlap(t, pool, m)
        scrub_clean(t, pool, "end")
        t.eq(m.stop(), 0, "daemon exits 0 on unmount")
        t.ok(all(x.sanitizer_report() is None for x in pool.mounts), "no sanitizer report")
        m = pool.mount()
        for vol in REDUNDANT:
            path = os.path.join(pool.mnt, vol, "f.bin")
            t.ok(os.path.getsize(path) == FILE_SIZE, f"{vol}: size kept after remount")
        t.eq(m.stop(), 0, "final unmount")
    except Exception as e:  # a crash of the test itself is a failure, not a hang
        t.ok(False, f"exception: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
