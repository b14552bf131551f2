#!/usr/bin/env python3
"""fio verify on a mirror volume while its owner moves and stalls (issue 14).

The long cluster soak once failed with fio's verify finding wrong data
(EILSEQ) on a mirror volume, and with EIO on others.  This is that
situation made small: two nodes (heartbeat 0.5 s, lease 3 s), one mirror
volume M (copies 2) on four disks, and two fio verify writers on M that
run round after round, one through each node (so one is redirected and
the other is local, whichever node owns M).  While they run, for ROUNDS
rounds:

  - M moves to the other node (`owner move`, asked alternately on the
    owner and on the other node);
  - every second round the owner is stopped (SIGSTOP) for longer than its
    lease: the other node takes M over, then the stalled node resumes
    (its requests in flight meet the fence, and must be resent to the new
    owner, not fail).

At the end every fio round of both writers verified (no EIO, no EILSEQ),
every move succeeded, a scrub finds the copies in agreement with each
other and with their checksums, and both daemons unmount with no
sanitizer report.

SPACEFS_MIRROR_ROUNDS (default 6) sets the rounds.
"""
import os
import re
import signal
import time

from harness import Pool, Tap
from nodes import Cluster, FioWriter, Node, fio_job, free_port, owners, wait_for

ROUNDS = int(os.environ.get("SPACEFS_MIRROR_ROUNDS", "6"))
LEASE = 3.0
OPTS = f"heartbeat=0.5,lease={LEASE:g}"
SIZE = os.environ.get("SPACEFS_MIRROR_SIZE", "8m")


def main():
    t = Tap()
    pool = Pool(ndisks=4, prefix="spacefs-mfio-")
    writers = []
    with Cluster(t, pool, log_tail=4000) as c:
        c.cleanups.append(lambda: [w.stop.set() for w in writers])
        pool.volume("M", "mirror", "--copies", "2")
        pool.spacectl("owner", "prefer", pool.source, "M", "A")
        a = Node(pool, "A", f"127.0.0.1:{free_port()}", OPTS).start()
        b = Node(pool, "B", f"127.0.0.1:{free_port()}", OPTS).start()
        c.nodes[:] = [a, b]
        by = {"A": a, "B": b}
        t.ok(wait_for(lambda: owners(a).get("M") == "A" == owners(b).get("M"), 20),
             "A owns M (its preferred owner)")
        pool.spacectl("owner", "prefer", pool.source, "M", "none")
        writers[:] = [FioWriter(n, "M", fio_job(os.path.join(pool.dir, f"{n.name}.fio"),
                                                os.path.join(n.mnt, "M", f"fio-{n.name}"),
                                                size=SIZE, jobs=2),
                                os.path.join(n.mnt, "M", f"fio-{n.name}")) for n in (a, b)]
        for w in writers:
            w.start()
        t.ok(wait_for(lambda: all(w.rounds for w in writers) or
                      any(w.failed for w in writers), 300, 0.5),
             "both writers finished a first round")

        moves, stalls = 0, 0
        for r in range(ROUNDS):
            if any(w.failed for w in writers):
                break
            cur = owners(a).get("M")
            if cur not in by:
                wait_for(lambda: owners(a).get("M") in by, 30, 0.1)
                cur = owners(a).get("M")
            other = "B" if cur == "A" else "A"
            asked = by[cur] if r % 2 else by[other]
            p = asked.spacectl("owner", "move", pool.source, "M", other, check=False)
            if p.returncode == 0:
                moves += 1
            else:
                t.diag(f"round {r}: move {cur} -> {other} asked on {asked.name}: "
                       f"{p.stderr.strip()}")
            time.sleep(1.0)  # requests in flight on the new owner
            if r % 2 == 0:
                own = by[other]
                own.m.proc.send_signal(signal.SIGSTOP)
                rest = by[cur]
                took = wait_for(lambda: owners(rest).get("M") == rest.name,
                                4 * LEASE + 10, 0.1)
                time.sleep(0.5)
                own.m.proc.send_signal(signal.SIGCONT)
                stalls += bool(took)
                if not took:
                    t.diag(f"round {r}: {rest.name} did not take M from stalled {own.name}")
            time.sleep(1.0)
        t.eq(moves, ROUNDS, f"{ROUNDS} owner moves while fio runs")
        t.eq(stalls, (ROUNDS + 1) // 2, "every stalled owner was taken over")
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(600)
        for w in writers:
            t.ok(not w.failed and not w.is_alive(),
                 f"fio verify through {w.node.name}: {w.rounds} round(s), all verified "
                 f"{w.failed[:1]}")
        # the copies agree with each other and with their checksums: a
        # stale copy (a write landed on one copy only, or after a
        # takeover) is what would make reads of a mirror disagree
        p = a.spacectl("scrub", pool.source, "--wait", check=False)
        t.eq(p.returncode, 0, f"scrub --wait exits 0 {p.stderr.strip()[-300:]}")
        done = re.findall(r"scrub volume M done: .*bad (\d+), repaired (\d+), unrecoverable (\d+)",
                          a.m.log_text() + b.m.log_text())
        t.ok(done and done[-1] == ("0", "0", "0"),
             f"scrub of M finds every block and copy in agreement (bad, repaired, "
             f"unrecoverable: {done[-1:]})")
        for n in (b, a):
            log = n.m.log_text()
            t.diag(f"{n.name}: " + ", ".join(f"{k} x{log.count(k)}" for k in
                                             ("FENCED", "LOST", "owner of volume", "late")))
            t.eq(n.m.stop(), 0, f"{n.name} unmounts cleanly, exits 0")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
    t.done()


if __name__ == "__main__":
    main()
