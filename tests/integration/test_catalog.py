#!/usr/bin/env python3
"""A live catalogue with several nodes (issue 14, item 2).

Three nodes (heartbeat 0.5 s, lease 3 s) on one pool with one volume:

 1. `spacectl volume create` through n1: the volume shows up in n2's and
    n3's mounts within 2 s, without a restart, and gets one owner at once,
    the same on every node; a file written through n3 reads back
    byte-identical through n2 and n1;
 2. a second volume created through n3 gets an owner too, and the two new
    volumes have different owners (the balancing rule: the least loaded
    node);
 3. `spacectl volume delete` through n2 while a file of the volume is
    open on n1 and n3: it exits 0, the volume is gone from all three
    mounts within 2 s, from the catalogue and from every disk; a read or
    write on the open files fails at once (ESTALE/ENOENT/EIO), never
    hangs, and the nodes log why;
 4. a volume of the same name created again through n3 is a new, empty
    volume usable through n1;
 5. the untouched volume's data survived, every node unmounts cleanly
    (exit 0, no sanitizer report), and a single-node remount sees
    exactly the volumes the catalogue lists, with their data.
"""
import errno
import os
import threading
import time

from harness import Pool, Tap
from nodes import Cluster, Node, free_port, owners, wait_for

OPTS = "heartbeat=0.5,lease=3"
VISIBLE_S = 2.0


def create(node, name, *layout):
    return node.spacectl("volume", "create", node.pool.source, name, "--layout", *layout,
                         check=False)


def seen_by(nodes, name):
    return all(os.path.isdir(os.path.join(n.mnt, name)) for n in nodes)


def gone_from(nodes, name):
    return all(name not in os.listdir(n.mnt) for n in nodes)


def agreed_owner(nodes, name):
    got = {owners(n).get(name, "") for n in nodes}
    return got.pop() if len(got) == 1 and "" not in got else None


def io_outcome(fd, write):
    """errno of one read or write on fd (0: it worked), or None if it hung."""
    box = []

    def go():
        try:
            if write:
                os.pwrite(fd, b"x" * 4096, 0)
            else:
                os.pread(fd, 4096, 0)
            box.append(0)
        except OSError as e:
            box.append(e.errno)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(20)
    return box[0] if box else None


def main():
    t = Tap()
    pool = Pool(ndisks=6)
    fds = []
    with Cluster(t, pool) as c:
        nodes = c.nodes
        c.cleanups.append(lambda: [os.close(fd) for fd in fds])
        pool.volume("keep", "mirror", "--copies", "2")
        nodes[:] = [Node(pool, f"n{i}", f"127.0.0.1:{free_port()}", OPTS).start()
                 for i in (1, 2, 3)]
        n1, n2, n3 = nodes
        keep = os.urandom(1 << 20)
        with open(os.path.join(n2.mnt, "keep", "data"), "wb") as f:
            f.write(keep)

        # 1. create on n1, seen everywhere within 2 s
        t0 = time.monotonic()
        p = create(n1, "V1", "mirror", "--copies", "2")
        t.eq(p.returncode, 0, f"volume create V1 through n1 exits 0 {p.stderr.strip()}")
        seen = wait_for(lambda: seen_by(nodes, "V1"), 10, 0.02)
        dt = time.monotonic() - t0
        t.ok(seen and dt <= VISIBLE_S, f"V1 in every node's mount {dt:.2f} s after the create")
        t.diag(f"create -> visible on all three nodes: {dt:.2f} s")
        own = wait_for(lambda: agreed_owner(nodes, "V1"), 10)
        t.ok(own in ("n1", "n2", "n3"), f"V1 has one owner on every node's status: {own}")
        data = os.urandom(3 << 20)
        with open(os.path.join(n3.mnt, "V1", "f"), "wb") as f:
            f.write(data)
        for n in (n2, n1):
            with open(os.path.join(n.mnt, "V1", "f"), "rb") as f:
                t.ok(f.read() == data, f"a file written through n3 reads back through {n.name}")

        # 2. a second new volume: balancing gives it another owner
        p = create(n3, "V2", "parity", "--parity", "1")
        t.eq(p.returncode, 0, f"volume create V2 through n3 exits 0 {p.stderr.strip()}")
        t.ok(wait_for(lambda: seen_by(nodes, "V2"), VISIBLE_S, 0.02),
             "V2 in every node's mount within 2 s")
        own2 = wait_for(lambda: agreed_owner(nodes, "V2"), 10)
        t.ok(own2 and own2 != own, f"V2 gets an owner other than V1's ({own2} vs {own})")
        with open(os.path.join(n1.mnt, "V2", "g"), "wb") as f:
            f.write(data[:65536])

        # 3. delete V1 through n2 while files are open on n1 and n3
        for n in (n1, n3):
            fds.append(os.open(os.path.join(n.mnt, "V1", "f"), os.O_RDWR))
        t0 = time.monotonic()
        p = n2.spacectl("volume", "delete", pool.source, "V1", check=False)
        t.eq(p.returncode, 0, f"volume delete V1 through n2 exits 0 {p.stderr.strip()}")
        t.diag(f"volume delete took {time.monotonic() - t0:.2f} s")
        t.ok(wait_for(lambda: gone_from(nodes, "V1"), VISIBLE_S, 0.02),
             "V1 gone from every node's mount within 2 s of the delete")
        for fd, n in zip(fds, (n1, n3)):
            for write in (False, True):
                e = io_outcome(fd, write)
                t.ok(e in (errno.ESTALE, errno.ENOENT, errno.EIO),
                     f"{'write' if write else 'read'} on a file of V1 open on {n.name} fails "
                     f"at once: {e and errno.errorcode.get(e)}")
        for fd in fds:
            os.close(fd)
        fds = []
        def logged(n):
            text = n.m.log_text()
            return "V1 " in text and "no longer mounted here" in text or "volume V1 deleted" in text
        for n in nodes:
            # the line is written as the node retires the volume, which may be
            # just after its mount stops listing it
            t.ok(wait_for(lambda: logged(n), 5, 0.05), f"{n.name} logs that V1 went away")
        lst = pool.spacectl("volume", "list", pool.source).stdout
        t.ok("V1" not in lst, "V1 is no longer in the catalogue")
        t.ok(not any(os.path.exists(os.path.join(d, "vol", "V1")) for d in pool.disks),
             "V1's files are gone from every disk")
        own2b = agreed_owner(nodes, "V2")
        t.eq(own2b, own2, "V2 kept its owner through the delete")

        # 4. the same name again: a new, empty volume
        p = create(n3, "V1", "simple")
        t.eq(p.returncode, 0, f"V1 created again through n3 {p.stderr.strip()}")
        t.ok(wait_for(lambda: seen_by(nodes, "V1"), VISIBLE_S, 0.02),
             "the new V1 is in every node's mount within 2 s")
        t.eq(wait_for(lambda: os.listdir(os.path.join(n1.mnt, "V1")) == [] or None, 5), True,
             "the new V1 is empty through n1")
        with open(os.path.join(n1.mnt, "V1", "h"), "wb") as f:
            f.write(b"again")
        with open(os.path.join(n2.mnt, "V1", "h"), "rb") as f:
            t.eq(f.read(), b"again", "the new V1 works through n1 and n2")

        # 5. clean stops, then a single-node remount
        for n in nodes:
            with open(os.path.join(n.mnt, "keep", "data"), "rb") as f:
                t.ok(f.read() == keep, f"keep/data intact through {n.name}")
        for n in reversed(nodes):
            t.eq(n.m.stop(), 0, f"{n.name} exits 0 on unmount")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
        m = pool.mount()
        t.eq(sorted(os.listdir(pool.mnt)), ["V1", "V2", "keep"],
             "a single-node remount shows keep, V2 and the new V1")
        with open(os.path.join(pool.mnt, "keep", "data"), "rb") as f:
            t.ok(f.read() == keep, "keep/data intact after the remount")
        with open(os.path.join(pool.mnt, "V2", "g"), "rb") as f:
            t.ok(f.read() == data[:65536], "V2/g intact after the remount")
        p = pool.spacectl("volume", "delete", pool.source, "V2", check=False)
        t.ok(p.returncode != 0 and "unmount it first" in p.stderr,
             f"a single-node daemon still refuses volume delete: {p.stderr.strip()}")
        t.eq(m.stop(), 0, "single-node daemon exits 0")
    t.done()


if __name__ == "__main__":
    main()
