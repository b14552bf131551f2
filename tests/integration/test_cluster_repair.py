#!/usr/bin/env python3
"""A disk replaced and repaired while two nodes run (issue 14, item 1).

Two nodes (heartbeat 0.5 s, lease 3 s), four disks, a mirror volume S
owned by n1 and a parity volume T owned by n2, with data.

 1. disk 3 is removed behind the daemons' backs: the pool records it
    failed (one node's health watcher, under the catalogue lock), both
    nodes adopt it, every file still reads on both;
 2. `spacectl disk replace SOURCE 3 NEW --rate 6` asked on n2: T's part
    of the repair starts on n2, S's on its owner n1 (the command says so);
    status on n2 shows S's part running on n1;
 3. half-way through S's part, `owner move S n2`: the part goes on on n2
    from its checkpoint; when the last part ends the disk is healthy in
    the pool, for both nodes;
 4. every file reads back on both nodes;
 5. `spacectl disk add` through n1: both nodes take the new disk, and new
    files of both volumes (each owned by a different node) get chunks on
    it; then, both nodes stopped and disk 0 taken away, a single-node
    mount reads every file back: the data the replacement and the new
    disk were given is right.
"""
import hashlib
import json
import os
import re
import shutil
import time

from harness import SPACECTL, Mount, Pool, Tap, run
from nodes import Cluster, Node, free_port, owners, read_all, wait_for

OPTS = "heartbeat=0.5,lease=3"


def disk_state(pool, i):
    p = run([SPACECTL, "status", pool.disks[1], "--json"], check=False)
    try:
        return json.loads(p.stdout)["disks"][i]["state"]
    except (ValueError, KeyError, IndexError):
        return None


def repair_row(node, vol):
    """(node, state, percent) of the repair jobs of `vol` in `node`'s status."""
    env = dict(os.environ, SPACEFS_NODE=node.name)
    p = run([SPACECTL, "status", node.pool.source, "--json"], check=False, env=env)
    try:
        jobs = json.loads(p.stdout)["daemon"]["jobs"]
    except (ValueError, KeyError, TypeError):
        return []
    return [(j.get("node"), j.get("state"),
             100.0 * j["done"] / j["total"] if j.get("total") else 0.0)
            for j in jobs if j.get("kind") == "repair" and j.get("volume") == vol]


def main():
    t = Tap()
    pool = Pool(ndisks=4)
    with Cluster(t, pool, log_tail=4000) as c:
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
        for vol, n, count in (("S", n2, 40), ("T", n1, 12)):
            for i in range(count):
                data = os.urandom(1 << 20)
                with open(os.path.join(n.mnt, vol, f"f{i:03d}"), "wb") as f:
                    f.write(data)
                sums[(vol, i)] = hashlib.sha256(data).hexdigest()
        os.sync()

        # 1. disk 3 goes away
        os.rename(pool.disks[3], pool.disks[3] + ".gone")  # atomic, as a pulled disk
        shutil.rmtree(pool.disks[3] + ".gone", ignore_errors=True)
        t.ok(wait_for(lambda: disk_state(pool, 3) == "failed", 30, 0.3),
             f"the pool records disk 3 failed ({disk_state(pool, 3)})")
        for n in nodes:
            read_all(t, n.mnt, sums, f"through {n.name} with disk 3 gone")

        # 2. replace, asked on n2
        new = os.path.join(pool.dir, "new3")
        os.makedirs(new)
        p = n2.spacectl("disk", "replace", pool.source, "3", new, "--rate", "6", check=False)
        t.eq(p.returncode, 0, f"disk replace asked on n2 exits 0 {p.stderr.strip()}")
        t.ok("job" in p.stdout and "volume S: runs on its owner, node n1" in p.stdout,
             f"T's part here, S's on n1: {p.stdout.strip()}")
        r = wait_for(lambda: [x for x in repair_row(n2, "S") if x[0] == "n1" and x[2] > 0],
                     20, 0.2)
        t.ok(r, f"status on n2 shows S's repair part running on n1 {r}")

        # 3. move S half-way
        mid = wait_for(lambda: [x for x in repair_row(n1, "S")
                                if x[0] == "n1" and x[1] == "running" and 30 <= x[2] <= 75],
                       90, 0.2)
        t.ok(mid, f"S's part got part of the way on n1 {mid}")
        p = n1.spacectl("owner", "move", pool.source, "S", "n2", check=False)
        t.eq(p.returncode, 0, f"owner move S n2 during the repair {p.stderr.strip()}")
        m = wait_for(lambda: re.search(r"volume S: repair runs here \(job \d+\) after inode (\d+)",
                                       n2.m.log_text()), 15, 0.2)
        t.ok(m and int(m.group(1)) > 0,
             f"n2 went on with S's part from its checkpoint (after inode {m and m.group(1)})")
        t.ok(wait_for(lambda: disk_state(pool, 3) == "healthy", 180, 0.5),
             f"when the last part ended disk 3 is healthy in the pool ({disk_state(pool, 3)})")
        t.ok(wait_for(lambda: "disk 3 is active now" in n1.m.log_text()
                      or "every volume's part is done" in n1.m.log_text(), 10, 0.2),
             "n1 saw the disk healthy again too")

        # 4. data
        for n in nodes:
            read_all(t, n.mnt, sums, f"through {n.name} after the repair")

        # 5. a disk added through n1 is used by both nodes' volumes
        n2.spacectl("owner", "move", pool.source, "S", "n1", check=False)
        t.ok(wait_for(lambda: owners(n1) == {"S": "n1", "T": "n2"}, 10, 0.2),
             f"S back on n1, T on n2: {owners(n1)}")
        extra = os.path.join(pool.dir, "d4")
        os.makedirs(extra)
        p = n1.spacectl("disk", "add", pool.source, extra, check=False)
        t.eq(p.returncode, 0, f"disk add through n1 exits 0 {p.stderr.strip()}")
        t.ok(wait_for(lambda: disk_state(pool, 4) == "healthy"
                      and "disk 4 is active now" in n2.m.log_text(), 10, 0.2),
             "the new disk 4 is healthy in the pool and n2 took it too")
        for vol, n in (("S", n1), ("T", n1), ("S", n2), ("T", n2)):
            for i in range(100, 112):
                data = os.urandom(256 << 10)
                name = f"f{i + (0 if n is n1 else 50):03d}"
                with open(os.path.join(n.mnt, vol, name), "wb") as f:
                    f.write(data)
                sums[(vol, i + (0 if n is n1 else 50))] = hashlib.sha256(data).hexdigest()
        os.sync()
        used = {v for v in ("S", "T")
                if any(files for _, _, files in os.walk(os.path.join(extra, "vol", v, "data")))}
        t.eq(used, {"S", "T"}, "new files of both volumes (owned by different nodes) have "
                               "chunks on the new disk")
        for n in nodes:
            read_all(t, n.mnt, sums, f"through {n.name} after the disk add")
        for n in (n2, n1):
            t.eq(n.m.stop(), 0, f"{n.name} exits 0 on unmount")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
        os.rename(pool.disks[0], pool.disks[0] + ".away")
        m = Mount(pool.disks[1], pool.mnt, "", os.path.join(pool.dir, "single.log")).start()
        read_all(t, pool.mnt, sums, "on one node with disk 0 away (the new disk 3 serves)")
        t.eq(m.stop(), 0, "the single node exits 0")
        os.rename(pool.disks[0] + ".away", pool.disks[0])
    t.done()


if __name__ == "__main__":
    main()
