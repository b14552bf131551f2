#!/usr/bin/env python3
"""Checkpoints with two nodes (issue 13, item 6): requests and reads through
a node that does not own the volume.

Two nodes (heartbeat 0.5 s, lease 3 s) on a pool with a mirror volume S
owned by n1 (its preferred owner).  A file is written through n2, then:

 1. `spacectl checkpoint create` asked on n2 (not the owner): it is taken on
    n1 (its reply comes back through n2), `checkpoint list` on n2 shows it;
 2. the file is written again through both nodes; the checkpoint read
    through n2's mount (MNT/S/.checkpoints/c1/...) and through n1's is the
    instant's content and size, SEEK_DATA/SEEK_HOLE answer the same through
    both; a write to it through n2 is refused with EROFS;
 3. `spacectl backup` run on n2: status on n2 shows its copy step as a
    backup job on n1 with progress; the copy (read through n2's mount) is
    the file's content, no checkpoint is left;
 4. a merge of c1 asked on n2, rate-limited; `spacectl status` on n1 lists
    it as a merge job (table and JSON), on n2 as one running on n1;
    half-way `spacectl owner move S n2`: the merge goes
    on on n2 and finishes; the file reads back as last written through
    both nodes, no differencing data is left on the disks; both daemons
    unmount cleanly with no sanitizer report.
 5. once a backup or a merge is over, `spacectl status` (table and JSON) on
    both nodes shows it done, by the node that finished it, the same rows on
    both (the volume's merge record, as scrubs' are);
 6. `disk replace --wait --rate 4` asked on n2 then returns only once the
    new disk is healthy: the volume's merge row is no part of the repair.
"""
import errno
import glob
import hashlib
import json
import os
import random
import re
import shutil
import subprocess

from harness import SPACECTL, Pool, Tap
from nodes import Node, disk_state, free_port, owners, wait_for

OPTS = "heartbeat=0.5,lease=3"
MiB = 1 << 20
FSIZE = 16 * MiB


def sha(b):
    return hashlib.sha256(b).hexdigest()


def sha_path(p):
    with open(p, "rb") as f:
        return sha(f.read())


def write_at(path, off, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def extents(path):
    """SEEK_DATA/SEEK_HOLE answers (or errno) from a few offsets."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in (0, 3 * MiB, 5 * MiB, 7 * MiB, FSIZE - 1):
            for wh in (os.SEEK_DATA, os.SEEK_HOLE):
                try:
                    out.append(os.lseek(fd, off, wh))
                except OSError as e:
                    out.append(-e.errno)
    finally:
        os.close(fd)
    return out


def listed(node, vol):
    p = node.spacectl("checkpoint", "list", node.pool.source, vol, check=False)
    return [l.split()[0] for l in p.stdout.splitlines()[1:] if l.strip()]


def merge_row(node, kind="merge"):
    out = node.spacectl("status", node.pool.source, check=False).stdout
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+" + kind + r"\s+(\w+)\s+volume S \((\S+)\)\s+([\d.]+)%\s+\d+\s+\d+"
                     r"\s+(\S+)\s+([\d.]+)", line)
        if m:
            return m.groups()
    return None


def ck_rows(node):
    """[(kind, volume, node, state, checkpoint)] of the merge and backup rows
    of `node`'s `spacectl status --json`."""
    p = node.spacectl("status", node.pool.source, "--json", check=False)
    try:
        js = json.loads(p.stdout)["daemon"]["jobs"]
    except (ValueError, KeyError, TypeError):
        return []
    return sorted((j["kind"], j["volume"], j["node"], j["state"], j.get("checkpoint"))
                  for j in js if j.get("kind") in ("merge", "backup"))


def agreed(nodes):
    """The merge/backup rows if every node lists the same, else None."""
    views = [ck_rows(n) for n in nodes]
    return views[0] if all(v == views[0] for v in views) else None


def chunk_ids(pool):
    ids = set()
    for c in glob.glob(os.path.join(pool.dir, "d*", "vol", "S", "data", "*", "*")):
        if not c.endswith(".crc"):
            ids.add(int(os.path.basename(c).split(".")[0], 16))
    return ids


def main():
    t = Tap()
    pool = Pool(ndisks=4)
    nodes = []
    try:
        pool.volume("S", "mirror", "--copies", "2", "--interleave", "64K")
        pool.spacectl("owner", "prefer", pool.source, "S", "n1")
        n1 = Node(pool, "n1", f"127.0.0.1:{free_port()}", OPTS).start()
        n2 = Node(pool, "n2", f"127.0.0.1:{free_port()}", OPTS).start()
        nodes = [n1, n2]
        t.ok(wait_for(lambda: owners(n2) == {"S": "n1"}, 20), f"n1 owns S: {owners(n2)}")
        rng = random.Random(5)
        os.makedirs(os.path.join(n2.mnt, "S", "vm"))
        f2 = os.path.join(n2.mnt, "S", "vm", "disk.img")
        f1 = os.path.join(n1.mnt, "S", "vm", "disk.img")
        model = bytearray(rng.randbytes(FSIZE))
        model[4 * MiB:6 * MiB] = bytes(2 * MiB)  # a hole
        with open(f2, "wb") as f:
            f.write(model[:4 * MiB])
            f.seek(6 * MiB)
            f.write(model[6 * MiB:])
            os.fsync(f.fileno())
        instant = sha(bytes(model))

        # 1. create through the non-owner
        p = n2.spacectl("checkpoint", "create", pool.source, "S", "c1", "vm", check=False)
        t.eq(p.returncode, 0, f"checkpoint create asked on n2 exits 0 {p.stderr.strip()}")
        t.eq(listed(n2, "S"), ["c1"], "checkpoint list on n2 shows c1")
        t.eq(listed(n1, "S"), ["c1"], "checkpoint list on n1 shows c1")

        # 2. writes go on through both nodes; the checkpoint reads as the instant
        for i in range(64):
            n = rng.choice([4096, 65536, 300000])
            off = rng.randrange(0, FSIZE - n)
            b = rng.randbytes(n)
            write_at(f2 if i % 2 else f1, off, b)
            model[off:off + n] = b
        for n in nodes:
            c = os.path.join(n.mnt, "S", ".checkpoints", "c1", "vm", "disk.img")
            t.eq(sha_path(c), instant, f"the checkpoint read through {n.name} is the instant")
            t.eq(os.stat(c).st_size, FSIZE, f"its size through {n.name}")
        c2 = os.path.join(n2.mnt, "S", ".checkpoints", "c1", "vm", "disk.img")
        c1 = os.path.join(n1.mnt, "S", ".checkpoints", "c1", "vm", "disk.img")
        t.eq(extents(c2), extents(c1),
             "SEEK_DATA/SEEK_HOLE through n2 find what they find through n1")
        try:
            os.open(c2, os.O_WRONLY)
            t.ok(False, "a write to the checkpoint through n2 is refused")
        except OSError as e:
            t.eq(e.errno, errno.EROFS, "a write to the checkpoint through n2: EROFS")
        t.ok("c1" in os.listdir(os.path.join(n2.mnt, "S", ".checkpoints")),
             "n2 lists .checkpoints")

        # 3. backup on the non-owner
        dest = os.path.join(pool.dir, "backup")
        os.makedirs(dest)
        bk = subprocess.Popen([SPACECTL, "backup", pool.source, "S/vm", dest, "--wait",
                               "--rate", "4"], env=dict(os.environ, SPACEFS_NODE="n2"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        row = wait_for(lambda: (lambda r: r if r and float(r[2]) > 0 else None)(
            merge_row(n2, "backup")), 20, 0.2)
        t.ok(row and row[3] == "n1",
             f"status on n2 shows the backup's copy running on n1 with progress {row}")
        out, err = bk.communicate(timeout=120)
        t.eq(bk.returncode, 0, f"backup run on n2 exits 0 {err.strip()}")
        t.eq(sha_path(os.path.join(dest, "vm", "disk.img")), sha(bytes(model)),
             "the backup copy through n2 is the file")
        t.eq(listed(n2, "S"), ["c1"], "the backup left no checkpoint of its own")
        rows = wait_for(lambda: agreed(nodes), 10, 0.2)
        t.ok(rows and len(rows) == 1 and rows[0][:4] == ("backup", "S", "n1", "done"),
             f"once over, status on both nodes shows the backup done on n1, the same rows {rows}")

        # 4. merge asked on n2, owner move half-way
        p = n2.spacectl("checkpoint", "merge", pool.source, "S", "c1", "--rate", "2",
                        check=False)
        t.eq(p.returncode, 0, f"merge asked on n2 exits 0 {p.stderr.strip()}")
        row = wait_for(lambda: merge_row(n1), 10, 0.1)
        t.ok(row and row[1] == "c1", f"status on n1 lists the merge of c1 as a job {row}")
        t.ok(wait_for(lambda: (lambda r: r and float(r[2]) > 0)(merge_row(n1)), 15, 0.1),
             "the merge made progress on n1")
        r2 = wait_for(lambda: merge_row(n2), 10, 0.1)
        t.ok(r2 and r2[1] == "c1" and r2[3] == "n1" and float(r2[4]) > 0,
             f"status on n2 lists it as running on n1, with its rate {r2}")
        js = json.loads(n1.spacectl("status", pool.source, "--json").stdout)["daemon"]["jobs"]
        mj = [j for j in js if j.get("kind") == "merge"]
        t.ok(mj and mj[0]["checkpoint"] == "c1" and mj[0]["volume"] == "S" and
             mj[0]["node"] == "n1" and mj[0]["rate_limit"] == 2e6 and mj[0]["total"] > 0,
             f"status --json on n1: a merge job with its checkpoint, rate limit, progress {mj}")
        p = n1.spacectl("owner", "move", pool.source, "S", "n2", check=False)
        t.eq(p.returncode, 0, f"owner move S n2 during the merge {p.stderr.strip()}")
        t.ok(wait_for(lambda: owners(n1) == {"S": "n2"}, 15, 0.2), f"n2 owns S: {owners(n1)}")
        n2.spacectl("checkpoint", "merge", pool.source, "S", "c1", check=False)  # full speed
        t.ok(wait_for(lambda: listed(n1, "S") == [], 120, 0.3),
             "the merge finished on n2 (list through n1: no checkpoint)")
        # n2 may finish it, or n1 once S goes back to its preferred owner;
        # a finished job's row names its node on every node, that one too
        rows = wait_for(lambda: agreed(nodes), 10, 0.2)
        t.ok(rows and len(rows) == 1 and rows[0][:2] == ("merge", "S") and
             rows[0][2] in ("n1", "n2") and rows[0][3:] == ("done", "c1"),
             f"status on both nodes: the merge of c1 done, by the same node, same rows {rows}")
        by = rows[0][2] if rows else "?"
        for n in nodes:
            row = merge_row(n)
            t.ok(row and row[0] == "done" and row[1] == "c1" and row[3] == by,
                 f"the status table on {n.name}: merge done, volume S (c1), node {by} {row}")
        # 6. a disk job's --wait is not taken in by the volume's merge row
        new = os.path.join(pool.dir, "new3")
        os.makedirs(new)
        p = n2.spacectl("disk", "replace", pool.source, "3", new, "--wait", "--rate", "4",
                        check=False)
        t.eq(p.returncode, 0, f"disk replace --wait --rate 4 on n2 exits 0 {p.stderr.strip()}")
        t.eq(disk_state(pool, 3), "healthy",
             "when disk replace --wait returns, the new disk is healthy (the merge's done "
             "row of S is no part of the repair)")
        pool.disks[3] = new
        for n in nodes:
            t.eq(sha_path(os.path.join(n.mnt, "S", "vm", "disk.img")), sha(bytes(model)),
                 f"the file reads back as last written through {n.name}")
        live = os.stat(f2).st_ino & ((1 << 48) - 1)
        left = {i for i in chunk_ids(pool) if i != live}
        t.eq(left, set(), "no differencing data left on the disks")
        for n in (n2, n1):
            t.eq(n.m.stop(), 0, f"{n.name} exits 0 on unmount")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
    except Exception as e:  # noqa: BLE001 -- report, then clean up
        t.ok(False, f"unexpected {type(e).__name__}: {e}")
        for n in nodes:
            t.diag(f"--- {n.name} log ---\n{n.m.log_text()[-3000:]}")
    finally:
        for n in nodes:
            if n.m.proc is not None:
                n.m.stop()
        shutil.rmtree(os.path.join(pool.dir, "backup"), ignore_errors=True)
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
