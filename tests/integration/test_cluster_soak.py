#!/usr/bin/env python3
"""The whole cluster at once (issue 14, "What must be shown").

Three nodes in three network namespaces (sfs1-TAG..sfs3-TAG, 10.213.78.1-3) whose
veth pairs meet on one bridge; six volumes (mirror 2, parity 1, parity 2,
two of each) on six disks.  Each volume has a writer that runs fio with
verify, round after round, through a node that does not own the volume
when it starts (n1 or n2: n3 is the node that gets killed).  While they
run:

  - disk 5 is pulled, then replaced through n1 (`disk replace --wait`);
  - a scrub of every volume is asked on n2 (`scrub --wait`);
  - owners move ten times (`owner move`, asked on various nodes);
  - n3 is killed with kill -9 and started again (takeover time printed);
  - n2 is drained (`node drain` returns once it owns nothing) and resumed.

At the end: every fio round of every volume verified, both waiting
commands returned 0, the disk is healthy, status on all three nodes
agrees on the owners and on the jobs (kind, volume, node, state: all
done), the nodes unmount cleanly (no sanitizer report) and a single node
mounted at once reads every volume's files with the digests they had.

SPACEFS_SOAK_SIZE (default 4m) is each fio round's size per volume;
SPACEFS_SOAK_ROUNDS (default 1) the rounds every writer must finish after
the disruptions, SPACEFS_SOAK_RATE (default 1) the jobs' rate in MB/s; the soak suite (`meson test -C build-asan --suite soak`)
runs this with more (see docs/OPERATIONS.md).
"""
import collections
import json
import os
import subprocess
import time

from failures import remove_disk
from harness import SPACECTL, Mount, Pool, Tap, run, tree_digest
from nodes import Cluster, FioWriter, Node, disk_state, fio_job, owners, wait_for

# per run (suffixed with the run's tag in main): two soaks at once (two
# engineers, two worktrees) must not delete each other's namespaces
NS = ["sfs1", "sfs2", "sfs3"]
IP = ("10.213.78.1", "10.213.78.2", "10.213.78.3")
# lease 6 s: with ASan daemons, six fio writers and the jobs on two shared
# cores, renewals were seen 2.4 s late (lease 3 s: a slow owner fenced
# itself and failed a local write with EIO, see docs/OPERATIONS.md)
OPTS = "heartbeat=0.5,lease=6"
VOLS = {"m1": ["mirror", "--copies", "2"], "m2": ["mirror", "--copies", "2"],
        "p1": ["parity", "--parity", "1"], "p2": ["parity", "--parity", "1"],
        "q1": ["parity", "--parity", "2"], "q2": ["parity", "--parity", "2"]}
SIZE = os.environ.get("SPACEFS_SOAK_SIZE", "4m")
ROUNDS_AFTER = int(os.environ.get("SPACEFS_SOAK_ROUNDS", "1"))
RATE = os.environ.get("SPACEFS_SOAK_RATE", "1")  # MB/s: the jobs still run as owners move


def setup_netns(tag):
    cleanup_netns(tag)
    br = f"sfbr{tag}"
    run(["ip", "link", "add", br, "type", "bridge"])
    run(["ip", "link", "set", br, "up"])
    for i, (ns, ip) in enumerate(zip(NS, IP)):
        run(["ip", "netns", "add", ns])
        a, b = f"sfv{i}h{tag}", f"sfv{i}n{tag}"
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        run(["ip", "link", "set", a, "master", br])
        run(["ip", "link", "set", a, "up"])
        run(["ip", "link", "set", b, "netns", ns])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", b])
        run(["ip", "-n", ns, "link", "set", b, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])


def cleanup_netns(tag):
    for ns in NS:
        run(["ip", "netns", "del", ns], check=False)
    run(["ip", "link", "del", f"sfbr{tag}"], check=False)


def jobs(node):
    env = dict(os.environ, SPACEFS_NODE=node.name)
    p = run([SPACECTL, "status", node.pool.source, "--json"], check=False, env=env)
    try:
        return sorted((j["kind"], j["volume"], j["node"], j["state"])
                      for j in json.loads(p.stdout)["daemon"]["jobs"])
    except (ValueError, KeyError, TypeError):
        return None


def spread(node):
    own = owners(node)
    if len(own) != len(VOLS) or "" in own.values():
        return None
    return dict(collections.Counter(own.values()))


def balanced(t, node, what):
    """2 + 2 + 2 by the automatic rule; if a hand-over failed under load
    (the volume then stays where the next heartbeat puts it, and the rule
    runs again only when the live nodes change), said, and asked again
    with `owner balance`, as an administrator would."""
    want = {"n1": 2, "n2": 2, "n3": 2}
    if wait_for(lambda: spread(node) == want, 30, 0.2):
        return True
    t.diag(f"{what}: not balanced after 30 s {owners(node)}; spacectl owner balance")
    node.spacectl("owner", "balance", node.pool.source, check=False)
    return wait_for(lambda: spread(node) == want, 30, 0.2) is not None


def main():
    t = Tap()
    tag = str(os.getpid() % 100000)
    NS[:] = [f"sfs{i + 1}-{tag}" for i in range(3)]
    pool = Pool(ndisks=6, prefix="spacefs-soak-")
    writers = []
    with Cluster(t, pool, log_tail=2500) as c:
        nodes = c.nodes
        c.cleanups += [lambda: [w.stop.set() for w in writers], lambda: cleanup_netns(tag)]
        setup_netns(tag)
        for v, layout in VOLS.items():
            pool.volume(v, *layout)
        mk = [lambda i=i: Node(pool, f"n{i + 1}", f"{IP[i]}:7411", OPTS,
                               wrap=["nsenter", f"--net=/run/netns/{NS[i]}"]) for i in range(3)]
        nodes[:] = [m() for m in mk]
        for n in nodes:
            n.start()
        n1, n2, n3 = nodes
        p = run(["ip", "netns", "exec", NS[2], "python3", "-c",
                 f"import socket; socket.create_connection(('{IP[0]}', 7411), 5)"], check=False)
        t.ok(p.returncode == 0, f"n3's namespace reaches n1's redirect port over the bridge "
             f"{p.stderr.strip()[-200:]}")
        t.ok(wait_for(lambda: spread(n1) == {"n1": 2, "n2": 2, "n3": 2}, 30, 0.2),
             f"balancing: 2 + 2 + 2 {owners(n1)}")
        own = owners(n1)
        for v in VOLS:  # through n1 or n2, never the owner (and never n3)
            via = n2 if own[v] == "n1" else n1
            d = os.path.join(via.mnt, v, "fio")
            job = fio_job(os.path.join(pool.dir, f"{v}.fio"), d, size=SIZE, jobs=1)
            writers.append(FioWriter(via, v, job, d, after=ROUNDS_AFTER))
        for w in writers:
            w.start()
        t.ok(wait_for(lambda: all(w.rounds or w.failed for w in writers) or
                      any(w.failed for w in writers), 300, 0.5) is not None,
             "every writer finished a first round")
        t0 = time.monotonic()

        # a disk pulled and replaced; a scrub; both followed with --wait
        remove_disk(pool.disks[5])
        t.ok(wait_for(lambda: disk_state(pool, 5) == "failed", 30, 0.3),
             f"disk 5 pulled is recorded failed ({disk_state(pool, 5)})")
        new = os.path.join(pool.dir, "new5")
        os.makedirs(new)
        env = lambda n: dict(os.environ, SPACEFS_NODE=n.name)  # noqa: E731
        rep = subprocess.Popen([SPACECTL, "disk", "replace", pool.source, "5", new, "--wait",
                                "--rate", RATE], env=env(n1), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        scr = subprocess.Popen([SPACECTL, "scrub", pool.source, "--wait", "--rate", RATE],
                               env=env(n2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)

        # ten owner moves, asked on whichever node
        vols, moved = sorted(VOLS), 0
        for i in range(10):
            v = vols[i % len(vols)]
            cur = owners(n1).get(v)
            target = [n for n in nodes if n.name != cur][i % 2]
            for attempt in range(3):  # a move may fail under load; say so, try again
                p = nodes[(i + attempt) % 3].spacectl("owner", "move", pool.source, v,
                                                      target.name, check=False)
                if p.returncode == 0:
                    break
                t.diag(f"move {v} {cur} -> {target.name}, attempt {attempt + 1}: "
                       f"{p.stderr.strip()}")
            moved += p.returncode == 0
        t.eq(moved, 10, "ten owner moves while the writers run (each within three attempts)")

        # kill -9 of n3 and its restart
        before = owners(n1)
        n3.m.kill9()
        k0 = time.monotonic()
        took = wait_for(lambda: (lambda o: o if len(o) == len(VOLS) and
                                 all(x in ("n1", "n2") for x in o.values()) else None)(
            owners(n1)), 60, 0.05)
        t.ok(took, f"n3's volumes {[v for v, o in before.items() if o == 'n3']} were taken "
             f"over after kill -9")
        t.diag(f"takeover after kill -9: {time.monotonic() - k0:.2f} s "
               f"({OPTS})")
        n3.start()
        t.ok(balanced(t, n1, "n3 back"), f"n3 back: 2 + 2 + 2 {owners(n1)}")

        # drain n2 and resume it
        p = n1.spacectl("node", "drain", pool.source, "n2", check=False)
        t.eq(p.returncode, 0, f"node drain n2 {p.stderr.strip()}")
        t.ok("n2" not in owners(n1).values(), f"n2 owns nothing when drain returns {owners(n1)}")
        p = n3.spacectl("node", "resume", pool.source, "n2", check=False)
        t.eq(p.returncode, 0, f"node resume n2 {p.stderr.strip()}")
        t.ok(balanced(t, n1, "n2 resumed"), f"n2 resumed: 2 + 2 + 2 {owners(n1)}")

        # the jobs end; the writers finish their rounds
        out, err = rep.communicate(timeout=600)
        t.eq(rep.returncode, 0, f"disk replace --wait exits 0 {err.strip()}")
        t.diag(out.strip()[-1500:])
        t.eq(disk_state(pool, 5), "healthy", "disk 5 is healthy (repaired)")
        out, err = scr.communicate(timeout=600)
        t.eq(scr.returncode, 0, f"scrub --wait exits 0 {err.strip()}")
        t.diag(out.strip()[-1500:])
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(timeout=900)
        t.diag(f"disruptions and jobs took {time.monotonic() - t0:.1f} s")
        for w in writers:
            t.ok(not w.failed and w.after >= ROUNDS_AFTER,
                 f"fio verify on {w.vol} through {w.node.name}: {w.rounds} round(s), all "
                 f"verified {w.failed[:1]}")

        # every node agrees
        t.ok(wait_for(lambda: owners(n1) == owners(n2) == owners(n3), 10, 0.2),
             f"status on the three nodes agrees on the owners {owners(n1)}")
        views = [jobs(n) for n in nodes]
        t.ok(views[0] and all(v == views[0] for v in views) and
             {r[3] for r in views[0]} == {"done"} and
             {(r[0], r[1]) for r in views[0]} ==
             {(k, v) for k in ("repair", "scrub") for v in VOLS},
             f"status on the three nodes agrees on the jobs, all done {views[0]}")

        digests = {v: tree_digest(os.path.join(n1.mnt, v)) for v in VOLS}
        for n in reversed(nodes):
            t.eq(n.m.stop(), 0, f"{n.name} unmounts cleanly (fusermount3 -u), exits 0")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
        m = Mount(pool.source, pool.mnt, "", os.path.join(pool.dir, "single.log")).start()
        bad = [v for v in VOLS if tree_digest(os.path.join(pool.mnt, v)) != digests[v]]
        t.ok(not bad and all(digests.values()),
             f"remounted at once, every volume's files read back with their digests {bad}")
        t.eq(m.stop(), 0, "the single node exits 0")
        t.ok(m.sanitizer_report() is None, "no sanitizer report from the single node")
    t.done()


if __name__ == "__main__":
    main()
