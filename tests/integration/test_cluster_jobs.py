#!/usr/bin/env python3
"""Jobs while several nodes run: scrub, resync, retire (issue 14, item 1).

Two nodes (heartbeat 0.5 s, lease 3 s) on a pool with a mirror volume S
owned by n1 (its preferred owner) and a parity volume T.  One block of a
chunk file of S is damaged on one disk, behind the daemons' backs.

 1. `spacectl scrub SOURCE S --rate 4` asked on n2, which does not own S:
    it says the scrub runs on the owner, n1; `spacectl status` on n2 and
    on n1 show the job with its node (n1), progress and rate;
 2. half-way, `spacectl owner move S n2`: the scrub stops on n1 and goes
    on on n2 from its checkpoint (not from the start), status on both
    nodes shows it on n2, and it finishes there;
 3. the damaged block is repaired on the disk (its bytes are the
    original's again), every file of S and T reads back as written on
    both nodes, and no node shows a running job at the end;
 4. disk 1 taken away (recorded failed), files written meanwhile, the
    disk put back: each volume's owner resyncs what its volume missed,
    the disk is healthy again, every file reads back on both nodes;
 5. a fifth disk added through n1, then `spacectl disk retire SOURCE 3`
    asked on n2: each volume's owner
    moves its volume's positions off disk 3; the last part says the disk
    is empty, no chunk is left on it, every file reads back on both
    nodes; both daemons unmount cleanly, no sanitizer report; with disk 2
    away a single node reads every file back (disk 1 got the missed
    writes, disk 3's positions moved).
"""
import glob
import hashlib
import os
import re
import time

from harness import SPACECTL, Mount, Pool, Tap, run
from nodes import Cluster, Node, disk_state, free_port, owners, wait_for

OPTS = "heartbeat=0.5,lease=3"
NFILES = 48
FSIZE = 1 << 20


def job_rows(node):
    """{volume: (node, state, percent)} of scrub rows in `spacectl status`."""
    out = node.spacectl("status", node.pool.source, check=False).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+scrub\s+(\w+)\s+volume (\S+)\s+([\d.]+)%\s+\d+\s+\d+\s+(\S+)\s+"
                     r"([\d.]+)", line)
        if m:
            rows[m.group(2)] = (m.group(4), m.group(1), float(m.group(3)), float(m.group(5)))
    return rows


def running_on(node, vol):
    r = job_rows(node).get(vol)
    return r if r and r[1] == "running" else None


def main():
    t = Tap()
    pool = Pool(ndisks=4)
    with Cluster(t, pool) as c:
        nodes = c.nodes
        pool.volume("S", "mirror", "--copies", "2")
        pool.volume("T", "parity", "--parity", "1")
        pool.spacectl("owner", "prefer", pool.source, "S", "n1")
        pool.spacectl("owner", "prefer", pool.source, "T", "n2")
        n1 = Node(pool, "n1", f"127.0.0.1:{free_port()}", OPTS).start()
        n2 = Node(pool, "n2", f"127.0.0.1:{free_port()}", OPTS).start()
        nodes[:] = [n1, n2]
        t.ok(wait_for(lambda: owners(n2) == {"S": "n1", "T": "n2"}, 20),
             f"n1 owns S, n2 owns T: {owners(n2)}")
        sums = {}
        for vol, n in (("S", n2), ("T", n1)):
            for i in range(NFILES if vol == "S" else 4):
                data = os.urandom(FSIZE)
                with open(os.path.join(n.mnt, vol, f"f{i:03d}"), "wb") as f:
                    f.write(data)
                sums[(vol, i)] = hashlib.sha256(data).hexdigest()
        for n in nodes:  # flush: close-to-open, and the chunk files on disk
            os.sync()
        # damage one block of one chunk file of S on one disk
        chunks = sorted(c for c in glob.glob(os.path.join(pool.dir, "d*", "vol", "S", "data",
                                                          "*", "*"))
                        if not c.endswith(".crc") and os.path.getsize(c) >= 65536)
        victim = chunks[len(chunks) // 2]
        with open(victim, "r+b") as f:
            f.seek(8192)
            orig = f.read(4096)
            f.seek(8192)
            f.write(bytes(b ^ 0xFF for b in orig))
            os.fsync(f.fileno())
        t.diag(f"damaged 4 KiB at 8192 of {os.path.relpath(victim, pool.dir)}")

        # 1. scrub asked on the non-owner
        p = n2.spacectl("scrub", pool.source, "S", "--rate", "4", check=False)
        t.eq(p.returncode, 0, f"scrub asked on n2 exits 0 {p.stderr.strip()}")
        t.ok("runs on its owner, node n1" in p.stdout, f"it says where it runs: {p.stdout.strip()}")
        r1 = wait_for(lambda: (lambda r: r if r and r[0] == "here" else None)(
            running_on(n1, "S")), 10, 0.2)
        r2 = wait_for(lambda: (lambda r: r if r and r[2] > 0 else None)(
            running_on(n2, "S")), 15, 0.2)
        t.ok(r1 and r1[0] == "here", f"status on n1: the scrub of S runs here {r1}")
        t.ok(r2 and r2[0] == "n1" and r2[3] > 0,
             f"status on n2: the scrub of S runs on n1, with progress and rate {r2}")

        # 2. move S half-way
        mid = wait_for(lambda: (lambda r: r if r and 20 <= r[2] <= 70 else None)(
            running_on(n1, "S")), 60, 0.2)
        t.ok(mid, f"the scrub got part of the way on n1 {mid}")
        p = n1.spacectl("owner", "move", pool.source, "S", "n2", check=False)
        t.eq(p.returncode, 0, f"owner move S n2 during the scrub {p.stderr.strip()}")
        moved = wait_for(lambda: (lambda r: r if r and r[0] == "here" else None)(
            running_on(n2, "S")), 10, 0.2)
        t.ok(moved, f"status on n2: the scrub of S runs here now {moved}")
        r1b = wait_for(lambda: (lambda r: r if r and r[0] == "n2" else None)(
            running_on(n1, "S")), 10, 0.2)
        t.ok(r1b, f"status on n1: the scrub of S runs on n2 {r1b}")
        m = re.search(r"volume S: scrub runs here \(job \d+\) after inode (\d+)", n2.m.log_text())
        t.ok(m and int(m.group(1)) > 0,
             f"n2 went on from the checkpoint, not from the start (after inode "
             f"{m and m.group(1)})")
        t.ok(wait_for(lambda: "scrub volume S done" in n2.m.log_text(), 120, 0.5),
             "the scrub finished on n2")
        t.ok(wait_for(lambda: not running_on(n1, "S") and not running_on(n2, "S"), 10, 0.5),
             "no node shows a running scrub of S any more")

        # 3. the damage is repaired on the disk; data reads back everywhere
        with open(victim, "rb") as f:
            f.seek(8192)
            t.ok(f.read(4096) == orig, "the damaged block holds the original bytes again")
        for n in nodes:
            bad = 0
            for (vol, i), want in sums.items():
                with open(os.path.join(n.mnt, vol, f"f{i:03d}"), "rb") as f:
                    bad += hashlib.sha256(f.read()).hexdigest() != want
            t.eq(bad, 0, f"every file of S and T reads back as written through {n.name}")

        # 4. a disk away and back: each owner resyncs what its volume missed
        n2.spacectl("owner", "move", pool.source, "S", "n1", check=False)
        t.ok(wait_for(lambda: owners(n1) == {"S": "n1", "T": "n2"}, 10, 0.2),
             f"S on n1, T on n2 again: {owners(n1)}")
        os.rename(pool.disks[1], pool.disks[1] + ".away")
        t.ok(wait_for(lambda: disk_state(pool, 1) == "failed", 30, 0.3),
             f"disk 1 taken away is recorded failed ({disk_state(pool, 1)})")
        for vol, n, base in (("S", n2, 200), ("T", n1, 300)):
            for i in range(base, base + 8):
                data = os.urandom(256 << 10)
                with open(os.path.join(n.mnt, vol, f"f{i:03d}"), "wb") as f:
                    f.write(data)
                sums[(vol, i)] = hashlib.sha256(data).hexdigest()
        os.sync()
        os.rename(pool.disks[1] + ".away", pool.disks[1])
        t.ok(wait_for(lambda: disk_state(pool, 1) == "healthy", 60, 0.3),
             f"disk 1 back: resynced and healthy again ({disk_state(pool, 1)})")
        for n in nodes:
            t.ok("resync runs here" in n.m.log_text(),
                 f"{n.name} resynced its volume's part")
            bad = 0
            for (vol, i), want in sums.items():
                with open(os.path.join(n.mnt, vol, f"f{i:03d}"), "rb") as f:
                    bad += hashlib.sha256(f.read()).hexdigest() != want
            t.eq(bad, 0, f"every file reads back as written through {n.name} after the resync")

        # 5. retire disk 3, asked on n2: each owner moves its volume's part
        # (S's files use all four disks: a fifth to move to, added live)
        extra = os.path.join(pool.dir, "d4")
        os.makedirs(extra)
        p = n1.spacectl("disk", "add", pool.source, extra, check=False)
        t.eq(p.returncode, 0, f"disk add through n1 exits 0 {p.stderr.strip()}")
        t.ok(wait_for(lambda: "disk 4 is active now" in n2.m.log_text(), 10, 0.2),
             "n2 took the new disk too")
        p = n2.spacectl("disk", "retire", pool.source, "3", check=False)
        t.eq(p.returncode, 0, f"disk retire asked on n2 exits 0 {p.stderr.strip()}")
        t.ok("volume S: runs on its owner, node n1" in p.stdout,
             f"it says where the parts run: {p.stdout.strip()}")
        t.ok(wait_for(lambda: any("is empty: every volume's part moved off it" in n.m.log_text()
                                  for n in nodes), 90, 0.3),
             "the last part to finish says disk 3 is empty")
        left = [f for f in glob.glob(os.path.join(pool.disks[3], "vol", "*", "data", "*", "*"))
                if not f.endswith(".crc") and os.path.getsize(f) > 0]
        t.eq(left, [], "no chunk of S or T is left on disk 3")
        t.eq(disk_state(pool, 3), "retired", "disk 3 is retired in the pool")
        for n in nodes:
            bad = 0
            for (vol, i), want in sums.items():
                with open(os.path.join(n.mnt, vol, f"f{i:03d}"), "rb") as f:
                    bad += hashlib.sha256(f.read()).hexdigest() != want
            t.eq(bad, 0, f"every file reads back as written through {n.name} after the retire")

        for n in (n2, n1):
            t.eq(n.m.stop(), 0, f"{n.name} exits 0 on unmount")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
        # the missed writes are on disk 1: read everything with disk 2 away
        os.rename(pool.disks[2], pool.disks[2] + ".away")
        m = Mount(pool.disks[0], pool.mnt, "", os.path.join(pool.dir, "single.log")).start()
        bad = 0
        for (vol, i), want in sums.items():
            with open(os.path.join(pool.mnt, vol, f"f{i:03d}"), "rb") as f:
                bad += hashlib.sha256(f.read()).hexdigest() != want
        t.eq(bad, 0, "with disk 2 away one node reads every file back (disk 1 was resynced)")
        t.eq(m.stop(), 0, "the single node exits 0")
        os.rename(pool.disks[2] + ".away", pool.disks[2])
    t.done()


if __name__ == "__main__":
    main()
