#!/usr/bin/env python3
"""`--wait` and `spacectl status` follow every node's parts of a job (issue 14).

Three nodes (heartbeat 0.5 s, lease 3 s) on four disks; volumes A (mirror
2, preferred owner n1), B (parity 1, n2) and C (mirror 2, n3).

 1. `spacectl scrub SOURCE --wait --rate 4` asked on n1: while it runs,
    status on every node lists the scrub of every volume with its node
    (the volume's owner), progress and rate; C is moved from n3 to n2
    half-way; the command returns 0 only once every part is done, with a
    line per volume naming the node that finished it; at that moment
    status on all three nodes shows every part done, and the nodes agree
    (kind, volume, node, state);
 2. disk 3 pulled, then `spacectl disk replace SOURCE 3 NEW --wait` asked
    on n3 (which owns neither A nor B): it returns 0 once every volume's
    repair part is done, the disk is healthy in the pool at that moment,
    and the three nodes agree on the repair's rows;
 3. the same 4 KiB damaged in both copies of a chunk of A: `spacectl
    scrub SOURCE A --wait` asked on n3 (not A's owner) exits 1 with one
    error line naming volume A and the unrecoverable block;
 4. every other file reads back as written through every node; the three
    nodes unmount cleanly (no sanitizer report), and a single node
    mounted at once reads every file back.
"""
import glob
import hashlib
import json
import os
import re
import subprocess

from failures import remove_disk
from harness import SPACECTL, Mount, Pool, Tap, run
from nodes import Cluster, Node, disk_state, free_port, owners, read_all, wait_for

OPTS = "heartbeat=0.5,lease=3"
PREF = {"A": "n1", "B": "n2", "C": "n3"}


def jobs(node):
    """[(kind, volume, node, state, done, total, elapsed_ms)] in `node`'s status."""
    env = dict(os.environ, SPACEFS_NODE=node.name)
    p = run([SPACECTL, "status", node.pool.source, "--json"], check=False, env=env)
    try:
        js = json.loads(p.stdout)["daemon"]["jobs"]
    except (ValueError, KeyError, TypeError):
        return []
    return sorted((j["kind"], j["volume"], j["node"], j["state"], j["done"], j["total"],
                   j.get("elapsed_ms", 0)) for j in js)


def table_nodes(node):
    """{volume: NODE column} of the scrub rows of `node`'s `spacectl status`."""
    out = node.spacectl("status", node.pool.source, check=False).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+scrub\s+\w+\s+volume (\S+)\s+[\d.]+%\s+\d+\s+\d+\s+(\S+)\s+",
                     line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def agreed(nodes, kinds):
    """The (kind, volume, node, state) rows of `kinds` if every node lists the same."""
    views = [[r[:4] for r in jobs(n) if r[0] in kinds] for n in nodes]
    return views[0] if views[0] and all(v == views[0] for v in views) else None


def spacectl_bg(node, *args):
    env = dict(os.environ, SPACEFS_NODE=node.name)
    return subprocess.Popen([SPACECTL, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def main():
    t = Tap()
    pool = Pool(ndisks=4)
    with Cluster(t, pool) as c:
        nodes = c.nodes
        pool.volume("A", "mirror", "--copies", "2")
        pool.volume("B", "parity", "--parity", "1")
        pool.volume("C", "mirror", "--copies", "2")
        for v, n in PREF.items():
            pool.spacectl("owner", "prefer", pool.source, v, n)
        nodes[:] = [Node(pool, f"n{i}", f"127.0.0.1:{free_port()}", OPTS).start()
                    for i in (1, 2, 3)]
        n1, n2, n3 = nodes
        t.ok(wait_for(lambda: all(owners(n) == PREF for n in nodes), 20),
             f"each node owns its preferred volume: {owners(n1)}")
        sums = {}
        for k, vol in enumerate(("A", "B", "C")):
            for i in range(16):
                data = os.urandom(1 << 20)
                with open(os.path.join(nodes[(k + 1) % 3].mnt, vol, f"f{i:03d}"), "wb") as f:
                    f.write(data)
                sums[(vol, i)] = hashlib.sha256(data).hexdigest()
        os.sync()

        # 1. a scrub of every volume, asked on n1, followed to its end
        w = spacectl_bg(n1, "scrub", pool.source, "--wait", "--rate", "4")
        want = {("A", "n1"), ("B", "n2"), ("C", "n3")}
        seen = wait_for(lambda: all(
            {(r[1], r[2]) for r in jobs(n) if r[0] == "scrub" and r[3] == "running"} == want
            for n in nodes), 20, 0.2)
        t.ok(seen, "status on every node lists the scrub of A on n1, B on n2, C on n3, running")
        prog = wait_for(lambda: [r for r in jobs(n2) if r[0] == "scrub" and r[1] == "C"
                                 and r[4] > 0 and r[6] > 0 and r[3] == "running"], 30, 0.2)
        t.ok(prog, f"n2 shows C's part on n3 with progress and a rate {prog}")
        p = n1.spacectl("owner", "move", pool.source, "C", "n2", check=False)
        t.eq(p.returncode, 0, f"C moved from n3 to n2 during the scrub {p.stderr.strip()}")
        t.ok(w.poll() is None, "the waiting scrub command has not returned yet")
        out, err = w.communicate(timeout=300)
        t.eq(w.returncode, 0, f"scrub --wait asked on n1 exits 0 {err.strip()}")
        after = [jobs(n) for n in nodes]
        for n, rows in zip(nodes, after):
            t.ok({(r[1], r[3]) for r in rows if r[0] == "scrub"} ==
                 {("A", "done"), ("B", "done"), ("C", "done")},
                 f"when it returned, {n.name} shows every part done "
                 f"{[r[:4] for r in rows]}")
        for v, n in (("A", "n1"), ("B", "n2"), ("C", "n2")):
            t.ok(f"scrub: volume {v} on node {n}: done" in out,
                 f"--wait reports volume {v} done on {n}")
        t.diag(out.strip())
        for n in nodes:  # finished parts: the node's name, also on that node
            t.eq(table_nodes(n), {"A": "n1", "B": "n2", "C": "n2"},
                 f"{n.name}'s status table names each part's node")
        ag = agreed(nodes, {"scrub"})
        t.ok(ag and ("scrub", "C", "n2", "done") in ag,
             f"the three nodes agree on the scrub's rows {ag}")

        # 2. a disk pulled and replaced, asked on n3, followed to its end
        remove_disk(pool.disks[3])
        t.ok(wait_for(lambda: disk_state(pool, 3) == "failed", 30, 0.3),
             f"disk 3 pulled is recorded failed ({disk_state(pool, 3)})")
        new = os.path.join(pool.dir, "new3")
        os.makedirs(new)
        w = spacectl_bg(n3, "disk", "replace", pool.source, "3", new, "--wait", "--rate", "8")
        out, err = w.communicate(timeout=300)
        t.eq(w.returncode, 0, f"disk replace --wait asked on n3 exits 0 {err.strip()}")
        t.eq(disk_state(pool, 3), "healthy", "the disk is healthy when the command returns")
        for v in ("A", "B", "C"):
            t.ok(f"volume {v} on node" in out and ": done" in out,
                 f"--wait reports the repair of volume {v}")
        t.diag(out.strip())
        ag = agreed(nodes, {"repair"})
        t.ok(ag and {(r[1], r[3]) for r in ag} == {("A", "done"), ("B", "done"),
                                                    ("C", "done")},
             f"the three nodes agree on the repair's rows {ag}")

        # 3. a part that cannot finish cleanly: one error line, exit 1
        # a mirror's copy c of column d is position c * k + d (docs/FORMAT.md):
        # with k columns, positions 0 and k hold the same bytes
        rel = {}  # file id: {position: chunk file} (data/NN/ID.POSITION)
        for ch in glob.glob(os.path.join(pool.dir, "*", "vol", "A", "data", "*", "*")):
            if not ch.endswith(".crc") and os.path.getsize(ch) >= 65536:
                fid, pos = os.path.basename(ch).rsplit(".", 1)
                rel.setdefault(fid, {})[int(pos)] = ch
        chunks = next(v for _, v in sorted(rel.items()) if len(v) % 2 == 0 and 0 in v and
                      len(v) // 2 in v)
        pair = [chunks[0], chunks[len(chunks) // 2]]
        for ch in pair:
            with open(ch, "r+b") as f:
                f.seek(8192)
                b = f.read(4096)
                f.seek(8192)
                f.write(bytes(x ^ 0x5A for x in b))
                os.fsync(f.fileno())
        t.diag(f"damaged 4 KiB at 8192 in both copies: {pair}")
        p = n3.spacectl("scrub", pool.source, "A", "--wait", check=False)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        t.eq(p.returncode, 1, "scrub --wait of A with a block lost in both copies exits 1")
        t.ok(len(lines) == 1 and "volume A" in lines[0] and "could not be recovered" in lines[0],
             f"one error line names the volume and the loss: {lines}")

        # 4. the data, the unmount, a remount
        damaged = {k for k in sums if k[0] == "A"}  # which file holds the block: unknown
        keep = {k: v for k, v in sums.items() if k not in damaged}
        for n in nodes:
            read_all(t, n.mnt, keep, f"through {n.name}")
        for n in reversed(nodes):
            t.eq(n.m.stop(), 0, f"{n.name} exits 0 on unmount")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
        m = Mount(pool.source, pool.mnt, "", os.path.join(pool.dir, "single.log")).start()
        read_all(t, pool.mnt, keep, "through a single node mounted at once")
        t.eq(m.stop(), 0, "the single node exits 0")
        t.ok(m.sanitizer_report() is None, "no sanitizer report from the single node")
    t.done()


if __name__ == "__main__":
    main()
