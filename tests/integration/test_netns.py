#!/usr/bin/env python3
"""Two nodes in two network namespaces joined by a veth pair.

Node A runs in namespace sfnA (10.213.77.1), node B in sfnB
(10.213.77.2); the only link between them is the veth pair, so B's
redirected I/O really crosses a network.  Daemons enter only the network
namespace (nsenter --net): `ip netns exec` would also give them a private
mount namespace, hiding their FUSE mounts from this test.  fio with verify
runs through B on the volume A owns; files read identically on both
mounts; status counts B's redirected requests.  The namespaces are
removed at the end, even on failure.
"""
import os
import subprocess

from harness import Pool, Tap, run, tree_digest
from nodes import Node, fio_job, owners, wait_for

NS = ("sfnA", "sfnB")
IP = ("10.213.77.1", "10.213.77.2")


def setup_netns():
    cleanup_netns()
    for ns in NS:
        run(["ip", "netns", "add", ns])
    tag = str(os.getpid() % 100000)
    va, vb = f"sfa{tag}", f"sfb{tag}"
    run(["ip", "link", "add", va, "type", "veth", "peer", "name", vb])
    for ns, dev, ip in ((NS[0], va, IP[0]), (NS[1], vb, IP[1])):
        run(["ip", "link", "set", dev, "netns", ns])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
        run(["ip", "-n", ns, "link", "set", dev, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])


def cleanup_netns():
    for ns in NS:
        run(["ip", "netns", "del", ns], check=False)


def main():
    t = Tap()
    pool = Pool(4, prefix="spacefs-netns-")
    nodes = []
    try:
        setup_netns()
        p = run(["ip", "-n", NS[1], "route", "get", IP[0]], check=False)
        t.ok(p.returncode == 0 and "sfb" in p.stdout,
             f"B's namespace routes to A over the veth pair: {p.stdout.strip()}")
        for name in ("V1", "V2"):
            pool.volume(name, "mirror", "--copies", "2", "--interleave", "64K")
        a = Node(pool, "A", f"{IP[0]}:7411", wrap=["nsenter", f"--net=/run/netns/{NS[0]}"])
        nodes.append(a.start())
        b = Node(pool, "B", f"{IP[1]}:7411", wrap=["nsenter", f"--net=/run/netns/{NS[1]}"])
        nodes.append(b.start())
        got = wait_for(lambda: sorted(owners(a).values()) == ["A", "B"], 20)
        t.ok(got, f"each node owns one volume: {owners(a)}")
        va = [v for v, o in owners(a).items() if o == "A"][0]
        job = fio_job(os.path.join(pool.dir, "ns.fio"), os.path.join(b.mnt, va), size="8m")
        p = run(["fio", "--output-format=terse", job], check=False)
        if not t.ok(p.returncode == 0, f"fio verify through B on {va}, redirected over veth"):
            t.diag(p.stdout[-2000:] + p.stderr[-2000:])
        da, db = tree_digest(os.path.join(a.mnt, va)), tree_digest(os.path.join(b.mnt, va))
        t.ok(da == db and da, f"{len(da)} files read identically in both namespaces")
        s = b.status().get(va, {})
        t.ok(s.get("access") == "redirected" and s.get("redirected_ops", 0) > 0,
             f"B redirected {s.get('redirected_ops')} requests to {s.get('owner')} at "
             f"{s.get('owner_addr')}")
        t.eq(s.get("owner_addr"), f"{IP[0]}:7411", "the owner's address is A's veth address")
        for n in nodes:
            t.eq(n.m.stop(), 0, f"node {n.name} exits 0")
    except Exception as e:
        import traceback
        t.ok(False, f"unexpected error: {e}")
        t.diag(traceback.format_exc())
        for n in nodes:
            t.diag(n.m.log_text()[-2000:])
    finally:
        for n in nodes:
            if n.m.proc is not None:
                n.m.stop()
        cleanup_netns()
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
