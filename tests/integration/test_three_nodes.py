#!/usr/bin/env python3
"""Three nodes: balancing, a node dying and coming back, drain and resume
(issue 14, items 4 and 5).

Three nodes (heartbeat 0.5 s, lease 3 s) on six disks with six volumes
(mirror 2, parity 1, parity 2, two of each):

 1. balancing gives each node two volumes; every node's status agrees;
 2. a file written in each volume through a node that does not own it
    (redirected) reads back through the other two;
 3. kill -9 of n3: its two volumes go one each to n1 and n2 (3 + 3),
    takeover time printed;
 4. n3 starts again: it gets its share back (2 + 2 + 2), at once by the
    balancing rule, and `spacectl owner balance` keeps it so;
 5. `spacectl node drain SOURCE n2` returns once n2 owns nothing (3 + 3 on
    n1 and n3); n2 still serves its clients (reads and writes through its
    mount, redirected); a balance and a restart of n2 do not give it
    anything back;
 6. `spacectl node resume SOURCE n2`: 2 + 2 + 2 again;
 7. every file reads back as written through all three nodes; every node
    unmounts cleanly, no sanitizer report.
"""
import collections
import os
import time

from harness import Pool, Tap
from nodes import Cluster, Node, free_port, owners, wait_for

OPTS = "heartbeat=0.5,lease=3"
VOLS = {"m1": ["mirror", "--copies", "2"], "m2": ["mirror", "--copies", "2"],
        "p1": ["parity", "--parity", "1"], "p2": ["parity", "--parity", "1"],
        "q1": ["parity", "--parity", "2"], "q2": ["parity", "--parity", "2"]}


def spread(node):
    own = owners(node)
    if len(own) != len(VOLS) or "" in own.values():
        return None
    return dict(collections.Counter(own.values()))


def agreed(nodes, want):
    """The per-node counts when every node sees the same owners and the
    counts are `want` ({node: n})."""
    views = [owners(n) for n in nodes]
    if any(v != views[0] for v in views):
        return None
    c = dict(collections.Counter(views[0].values()))
    return c if c == want else None


def main():
    t = Tap()
    pool = Pool(ndisks=6)
    with Cluster(t, pool) as c:
        nodes = c.nodes
        for v, layout in VOLS.items():
            pool.volume(v, *layout)
        nodes[:] = [Node(pool, f"n{i}", f"127.0.0.1:{free_port()}", OPTS).start()
                 for i in (1, 2, 3)]
        n1, n2, n3 = nodes
        even = {"n1": 2, "n2": 2, "n3": 2}
        t.ok(wait_for(lambda: agreed(nodes, even), 30, 0.2),
             f"two volumes per node, the same on every node: {spread(n1)}")

        data = {}
        own = owners(n1)
        for v in VOLS:
            via = next(n for n in nodes if n.name != own[v])
            data[v] = os.urandom(2 << 20)
            with open(os.path.join(via.mnt, v, "f"), "wb") as f:
                f.write(data[v])
        bad = [(v, n.name) for v in VOLS for n in nodes
               if open(os.path.join(n.mnt, v, "f"), "rb").read() != data[v]]
        t.ok(not bad, f"a file written in each volume through a non-owner reads back on all "
                      f"three nodes {bad}")

        # 3. kill -9 n3
        t0 = time.monotonic()
        n3.m.kill9()
        got = wait_for(lambda: agreed([n1, n2], {"n1": 3, "n2": 3}), 30, 0.1)
        dt = time.monotonic() - t0
        t.ok(got, f"n3's volumes spread over n1 and n2 after kill -9: {spread(n1)}")
        t.diag(f"takeover of both of n3's volumes after kill -9: {dt:.2f} s")

        # 4. n3 comes back
        n3 = Node(pool, "n3", n3.addr, OPTS).start()
        nodes[2] = n3
        t0 = time.monotonic()
        got = wait_for(lambda: agreed(nodes, even), 30, 0.1)
        t.ok(got, f"n3 back: it gets its share at once (balancing on join): {spread(n1)}")
        t.diag(f"rebalanced {time.monotonic() - t0:.2f} s after n3 mounted")
        p = n1.spacectl("owner", "balance", pool.source, check=False)
        time.sleep(1.5)
        t.ok(p.returncode == 0 and agreed(nodes, even), f"owner balance keeps 2 + 2 + 2: "
                                                        f"{spread(n1)}")

        # 5. drain n2
        t0 = time.monotonic()
        p = n1.spacectl("node", "drain", pool.source, "n2", check=False)
        t.eq(p.returncode, 0, f"node drain n2 exits 0: {p.stdout.strip()} {p.stderr.strip()}")
        t.ok(not [v for v, o in owners(n1).items() if o == "n2"],
             f"when it returns n2 owns nothing ({time.monotonic() - t0:.2f} s)")
        drained = {"n1": 3, "n3": 3}
        t.ok(wait_for(lambda: agreed(nodes, drained), 10, 0.1),
             f"n2's volumes went to n1 and n3: {spread(n1)}")
        with open(os.path.join(n2.mnt, "m1", "g"), "wb") as f:
            f.write(b"through drained n2")
        with open(os.path.join(n3.mnt, "m1", "g"), "rb") as f:
            t.eq(f.read(), b"through drained n2", "the drained node still serves its clients")
        n2.spacectl("owner", "balance", pool.source, check=False)
        time.sleep(1.5)
        t.ok(agreed(nodes, drained), f"a balance does not give n2 anything: {spread(n1)}")
        t.eq(n2.m.stop(), 0, "drained n2 unmounts cleanly")
        n2 = Node(pool, "n2", n2.addr, OPTS).start()
        nodes[1] = n2
        time.sleep(2.0)
        t.ok(wait_for(lambda: agreed(nodes, drained), 10, 0.1),
             f"restarted, n2 stays drained (the mark is on the disks): {spread(n1)}")

        # 6. resume
        p = n3.spacectl("node", "resume", pool.source, "n2", check=False)
        t.eq(p.returncode, 0, f"node resume n2 exits 0 {p.stderr.strip()}")
        t.ok(wait_for(lambda: agreed(nodes, even), 15, 0.1),
             f"resumed, n2 gets its share back: {spread(n1)}")

        # 7. data and clean stops
        bad = [(v, n.name) for v in VOLS for n in nodes
               if open(os.path.join(n.mnt, v, "f"), "rb").read() != data[v]]
        t.ok(not bad, f"every file reads back as written through all three nodes {bad}")
        for n in reversed(nodes):
            t.eq(n.m.stop(), 0, f"{n.name} exits 0 on unmount")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
    t.done()


if __name__ == "__main__":
    main()
