#!/usr/bin/env python3
"""A node leaves while another redirects to it, and comes back at once.

What an administrator does to a node of a running cluster: `fusermount3
-u` on it, then mount it again right away, while the other node's users
keep writing through volumes the leaving node owns and owners are being
moved.  Two nodes A and B on one pool, a mirror 2 and a parity 1 volume,
at least one owned by A.  fio with crc32c verify runs round after round
through B on both (every request to A's volume redirected to A), and a
mover moves the parity volume between A and B every half second.  Then, with all of that going:

 1. A unmounts (`fusermount3 -u`): its daemon exits 0 and hands its
    volumes over; B owns both within the lease;
 2. A is mounted again at once (same options), owns its share again
    within 30 s (the balancing rule), and the mover keeps moving;
 3. the moves asked while A was away fail with a clear message or go
    to B; none hangs (each returns within 30 s);
 4. every fio round through B verified, before, across and after;
 5. both daemons unmount with exit 0 and no sanitizer report, and a
    single node mounted at once reads every file with the digests the
    cluster had.
"""
import os
import subprocess
import threading
import time

from harness import Pool, Tap, tree_digest
from nodes import Cluster, FioWriter, Node, fio_job, free_port, owners, wait_for

OPTS = "heartbeat=0.5,lease=3"
VOLS = {"M": ["mirror", "--copies", "2"], "P": ["parity", "--parity", "1"]}


class Mover(threading.Thread):
    """Moves volume vol to the node that does not own it, through B."""

    def __init__(self, pool, b, vol):
        super().__init__(daemon=True)
        self.pool, self.b, self.vol = pool, b, vol
        self.stop = threading.Event()
        self.done, self.refused, self.slow = 0, [], []

    def run(self):
        while not self.stop.is_set():
            to = "B" if owners(self.b).get(self.vol) == "A" else "A"
            t0 = time.monotonic()
            try:
                p = self.b.spacectl("owner", "move", self.pool.source, self.vol, to, check=False)
                rc, err = p.returncode, p.stderr.strip()
            except subprocess.TimeoutExpired:
                rc, err = -1, "timed out"
            if time.monotonic() - t0 > 30:
                self.slow.append(f"{to}: {time.monotonic() - t0:.1f} s")
            if rc == 0:
                self.done += 1
            else:
                self.refused.append(f"to {to}: {err[-160:]}")
            time.sleep(0.5)


def main():
    t = Tap()
    pool = Pool(ndisks=5, prefix="spacefs-leave-")
    with Cluster(t, pool) as c:
        for v, layout in VOLS.items():
            pool.volume(v, *layout)
        a = Node(pool, "A", f"127.0.0.1:{free_port()}", OPTS)
        b = Node(pool, "B", f"127.0.0.1:{free_port()}", OPTS)
        c.nodes[:] = [a.start(), b.start()]
        # the balancing rule gives each node one volume; A must own one
        if wait_for(lambda: "A" not in owners(b).values(), 3, 0.2):
            a.spacectl("owner", "move", pool.source, "M", "A", check=False)
        own = wait_for(lambda: (lambda o: o if "A" in o.values() and "" not in o.values()
                                else None)(owners(b)), 20, 0.2)
        t.ok(own, f"A owns a volume B will redirect to {own}")

        writers = [FioWriter(b, v, fio_job(os.path.join(pool.dir, f"{v}.fio"),
                                           os.path.join(b.mnt, v, "fio"), size="8m", jobs=1),
                             os.path.join(b.mnt, v, "fio")) for v in VOLS]
        mover = Mover(pool, b, "P")
        c.cleanups += [lambda: [w.stop.set() for w in writers], mover.stop.set]
        for w in writers:
            w.start()
        t.ok(wait_for(lambda: all(w.rounds for w in writers) or
                      any(w.failed for w in writers), 240, 0.2),
             "a first fio round through B verified on both volumes")
        mover.start()
        time.sleep(2)

        # 1. A leaves, cleanly, mid-I/O and mid-moves
        t0 = time.monotonic()
        rc = a.m.stop()
        if not t.eq(rc, 0, f"A unmounts with fusermount3 -u while B redirects to it and "
                           f"owners move: exit 0 ({time.monotonic() - t0:.1f} s)"):
            t.diag(a.m.log_text()[-6000:])
        took = wait_for(lambda: set(owners(b).values()) == {"B"}, 10, 0.05)
        t.ok(took, f"B owns both volumes after A left {owners(b)}")
        t.diag(f"B owned everything {time.monotonic() - t0:.2f} s after A's unmount began")

        # 2. and comes back at once
        a.start()
        t.ok(wait_for(lambda: "A" in owners(b).values() and owners(a) == owners(b), 30, 0.2),
             f"A remounted at once owns a volume again, both nodes agree "
             f"(A: {owners(a)}, B: {owners(b)})")
        time.sleep(3)
        mover.stop.set()
        mover.join(timeout=120)
        t.ok(mover.done >= 3, f"owner moves went on around the leave ({mover.done} done, "
                              f"{len(mover.refused)} refused {mover.refused[:3]})")
        t.ok(not mover.slow, f"no owner move took more than 30 s {mover.slow}")

        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(timeout=600)
        for v, w in zip(VOLS, writers):
            t.ok(not w.failed and w.rounds >= 2,
                 f"{v}: every fio round through B verified across the leave "
                 f"({w.rounds} rounds) {w.failed[:1]}")

        digests = {v: tree_digest(os.path.join(b.mnt, v)) for v in VOLS}
        t.ok(all(digests.values()), "the cluster reads every volume")
        for n in (a, b):
            t.eq(n.m.stop(), 0, f"{n.name} unmounts cleanly, exits 0")
            rep = n.m.sanitizer_report()
            if not t.ok(rep is None, f"no sanitizer report from {n.name}"):
                t.diag(rep[-6000:])
        m = pool.mount()
        bad = [v for v in VOLS if tree_digest(os.path.join(pool.mnt, v)) != digests[v]]
        t.ok(not bad, f"a single node mounted at once reads every file as the cluster did {bad}")
        t.eq(m.stop(), 0, "the single node exits 0")
        t.ok(m.sanitizer_report() is None, "no sanitizer report from the single node")
    t.done()


if __name__ == "__main__":
    main()
