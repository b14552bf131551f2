#!/usr/bin/env python3
"""Data fencing of a stalled owner (issue 14, item 3).

Two nodes (heartbeat 0.5 s, lease 2 s) on a pool with a parity volume M
that node A owns.  Writer threads write 1 MiB blocks without pause: three
through B's mount (redirected to A, files b*) and two through A's own
mount (local on A, files a*), so A always has chunk writes in flight.
The daemons run with SPACEFS_TEST_SUBMIT_DELAY_MS, a pause just before
each fencing check, so that a SIGSTOP nearly always catches A between a
request's start and its chunk writes' submission (a real stall rarely
lands there on cue).  Each round:

 1. SIGSTOP A under those writes; B takes M over once A's lease has run
    out (the takeover instant: B's status names B as owner);
 2. with M pinned to B, the writers through B are stopped (their requests
    that A held are resent to B and complete), and every block of the b*
    files is overwritten through B with this round's data;
 3. SIGCONT A: the requests A had started before the stall resume and
    reach the chunk write submission, where the lease check refuses them
    ("FENCED" in A's log);
 4. every block of the b* files still reads back, through B, as this
    round's data: no chunk write of A landed after the takeover (before
    this fence, a resumed request wrote its old data over the new);
 5. M goes back to A (prefer A, owner balance), the writers restart.

ROUNDS: env SPACEFS_FENCE_ROUNDS, default 5 (about 40 s); the issue's
20 are test_fence_long in the soak suite.  Printed: the takeover time after a stall, how late
(after A's own lease deadline) the refused submissions came, and the
takeover time after a kill -9 of A.  Both daemons unmount cleanly with no
sanitizer report.
"""
import os
import random
import re
import signal
import threading
import time

from harness import Pool, Tap
from nodes import Cluster, Node, free_port, owners, wait_for

ROUNDS = int(os.environ.get("SPACEFS_FENCE_ROUNDS", "5"))
OPTS = "heartbeat=0.5,lease=2"
LEASE = 2.0
BLOCK = 1 << 20
FILE_BLOCKS = 8
DELAY_MS = "3"


def block(tag, b):
    return (f"{tag}:{b}:".encode() * (BLOCK // 4))[:BLOCK]


class Writer(threading.Thread):
    """Writes blocks of one file at random until stopped."""

    def __init__(self, path, seed):
        super().__init__(daemon=True)
        self.path, self.seed = path, seed
        self.stop = threading.Event()
        self.ok = self.failed = 0
        self.errors = set()

    def run(self):
        rnd = random.Random(self.seed)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        n = 0
        try:
            while not self.stop.is_set():
                b = rnd.randrange(FILE_BLOCKS)
                n += 1
                try:
                    os.pwrite(fd, block(f"w{self.seed}.{n}", b), b * BLOCK)
                    self.ok += 1
                except OSError as e:
                    self.failed += 1
                    self.errors.add(e.errno)
                    time.sleep(0.05)
        finally:
            os.close(fd)


def owner_is(node, who):
    return owners(node).get("M") == who


def start_writers(b, seed):
    ws = [Writer(os.path.join(b.mnt, "M", f"b{i}"), seed + i) for i in range(3)]
    for w in ws:
        w.start()
    return ws


def stop_writers(ws):
    for w in ws:
        w.stop.set()
    for w in ws:
        w.join(60)
    return all(not w.is_alive() for w in ws)


def overwrite(b, tag):
    for i in range(3):
        with open(os.path.join(b.mnt, "M", f"b{i}"), "r+b") as f:
            for blk in range(FILE_BLOCKS):
                f.seek(blk * BLOCK)
                f.write(block(f"{tag}.{i}", blk))
            f.flush()
            os.fsync(f.fileno())


def stale_blocks(b, tag):
    bad = []
    for i in range(3):
        with open(os.path.join(b.mnt, "M", f"b{i}"), "rb") as f:
            for blk in range(FILE_BLOCKS):
                f.seek(blk * BLOCK)
                if f.read(BLOCK) != block(f"{tag}.{i}", blk):
                    bad.append(f"b{i}@{blk}")
    return bad


def main():
    t = Tap()
    pool = Pool(ndisks=4)
    bw, aw = [], []
    os.environ["SPACEFS_TEST_SUBMIT_DELAY_MS"] = DELAY_MS
    with Cluster(t, pool) as c:
        nodes = c.nodes
        c.cleanups.append(lambda: [w.stop.set() for w in bw + aw])
        pool.volume("M", "parity", "--parity", "1")
        pool.spacectl("owner", "prefer", pool.source, "M", "A")
        a = Node(pool, "A", f"127.0.0.1:{free_port()}", OPTS).start()
        b = Node(pool, "B", f"127.0.0.1:{free_port()}", OPTS).start()
        nodes[:] = [a, b]
        t.ok(wait_for(lambda: owner_is(a, "A") and owner_is(b, "A"), 20),
             "A owns M (its preferred owner)")
        for i in range(3):  # the b* files at full size
            with open(os.path.join(b.mnt, "M", f"b{i}"), "wb") as f:
                f.write(b"\0" * BLOCK * FILE_BLOCKS)
        aw = [Writer(os.path.join(a.mnt, "M", f"a{i}"), 20 + i) for i in range(2)]
        for w in aw:
            w.start()
        bw = start_writers(b, 100)
        time.sleep(1.0)

        stall_s, late_ms, stale, fenced_rounds, done = [], [], [], 0, 0
        for r in range(ROUNDS):
            if not wait_for(lambda: owner_is(a, "A") and owner_is(b, "A"), 15, 0.1):
                t.ok(False, f"round {r}: M back on A")
                break
            time.sleep(0.4)  # writes in flight on A
            log0 = len(a.m.log_text())
            a.m.proc.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            took = wait_for(lambda: owner_is(b, "B"), 4 * LEASE + 5, 0.05)
            stall_s.append(time.monotonic() - t0)
            if not took:
                a.m.proc.send_signal(signal.SIGCONT)
                t.ok(False, f"round {r}: B took M over from stalled A")
                break
            b.spacectl("owner", "prefer", pool.source, "M", "B")
            if not stop_writers(bw):
                a.m.proc.send_signal(signal.SIGCONT)
                t.ok(False, f"round {r}: the writers through B finish once B owns M")
                break
            tag = f"round{r}"
            overwrite(b, tag)
            a.m.proc.send_signal(signal.SIGCONT)
            time.sleep(1.5)  # A's resumed requests run into the fence
            bad = stale_blocks(b, tag)
            stale += [f"round {r}: {x}" for x in bad]
            m = re.findall(r"FENCED: volume M: lease deadline passed (\d+) ms ago",
                           a.m.log_text()[log0:])
            if m:
                fenced_rounds += 1
                late_ms += [int(x) for x in m]
            done += 1
            bw = start_writers(b, 1000 * (r + 1))
            b.spacectl("owner", "prefer", pool.source, "M", "A")
            b.spacectl("owner", "balance", pool.source, check=False)
        t.eq(done, ROUNDS, f"{ROUNDS} rounds of stall, takeover and resume ran")
        t.ok(not stale,
             f"no chunk write of stalled A landed after a takeover ({len(stale)} stale "
             f"blocks: {stale[:4]})")
        t.ok(fenced_rounds > 0,
             f"A refused resumed chunk writes at the fence in {fenced_rounds} of {done} rounds")
        if stall_s:
            t.diag(f"takeover after a stall (lease {LEASE:.0f} s, heartbeat 0.5 s): "
                   f"min {min(stall_s):.2f} s, max {max(stall_s):.2f} s, "
                   f"mean {sum(stall_s) / len(stall_s):.2f} s over {len(stall_s)}")
        if late_ms:
            t.diag(f"refused submissions came {min(late_ms)}..{max(late_ms)} ms after A's "
                   f"own lease deadline ({len(late_ms)} logged)")

        # kill -9 of the owner: takeover time
        wait_for(lambda: owner_is(a, "A") and owner_is(b, "A"), 15, 0.1)
        b.spacectl("owner", "prefer", pool.source, "M", "none")
        t0 = time.monotonic()
        a.m.kill9()
        took = wait_for(lambda: owner_is(b, "B"), 4 * LEASE + 5, 0.02)
        dt = time.monotonic() - t0
        t.ok(took, f"B took M over after kill -9 of A ({dt:.2f} s)")
        t.diag(f"takeover after kill -9: {dt:.2f} s")
        t.ok(stop_writers(bw) and stop_writers(aw), "every writer finished")
        t.ok(sum(w.ok for w in bw) > 0,
             f"the writers through B got acknowledgements after it all "
             f"({[w.ok for w in bw]} ok, {[w.failed for w in bw]} failed)")
        t.eq(b.m.stop(), 0, "B exits 0 on unmount")
        t.ok(b.m.sanitizer_report() is None, "no sanitizer report from B")
        t.ok("AddressSanitizer" not in a.m.log_text(), "no sanitizer report from A")
    t.done()


if __name__ == "__main__":
    main()
