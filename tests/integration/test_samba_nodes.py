#!/usr/bin/env python3
"""SMB clients sent to the volume's owner, as a Scale-Out File Server does.

Two spacefs nodes mount one pool (node A listening on 127.0.0.1, node B
on 127.0.0.2); each runs its own smbd on its own loopback address over
its own mount, with the shares `spacectl smbconf --node` writes for it.
A volume's share on the node that does not own it is a DFS proxy, so:
- a client that opens the non-owner's share is referred to the owner
  (smbclient follows the referral), its file lands on the volume and reads
  back identical from both nodes' mounts;
- after `spacectl owner move` and a rewrite of the shares, the referral
  follows the new owner.
"""
import os
import signal
import subprocess
import time

from harness import Pool, Tap, log_tail, sha256_file
from nodes import Node, free_port, owners, wait_for
from test_samba import PORT, port_open, smb_conf, stop_group


def node_smb_conf(d, addr, shares):
    return smb_conf(d, shares, addr=addr, name=f"SPACEFS-{addr.split('.')[-1]}")


def client_conf(d):
    """smbclient's own config: follow referrals to the same unprivileged port."""
    path = os.path.join(d, "client.conf")
    with open(path, "w") as f:
        f.write(f"[global]\n  smb ports = {PORT}\n  client min protocol = SMB2\n")
    return path


def smbclient(addr, share, cmd, conf):
    return subprocess.run(["smbclient", f"//{addr}/{share}", "-p", str(PORT), "-N", "-s", conf,
                           "-c", cmd],
                          capture_output=True, text=True, timeout=300)


def write_shares(node, path):
    p = node.spacectl("smbconf", node.pool.source, "--node", node.name, check=False)
    with open(path, "w") as f:
        f.write(p.stdout)
    return p


def main():
    t = Tap()
    if subprocess.run(["which", "smbd", "smbclient"], capture_output=True).returncode != 0:
        t.ok(True, "# SKIP samba or smbclient not installed")
        t.done()
    pool = Pool(6)
    smbds = []
    nodes = []
    try:
        pool.volume("VMs", "mirror", "--copies", "2", "--interleave", "64K")
        pool.volume("Data", "parity", "--parity", "1", "--interleave", "64K")
        a = Node(pool, "A", f"127.0.0.1:{free_port()}", extra="allow_other").start()
        b = Node(pool, "B", f"127.0.0.2:{free_port()}", extra="allow_other").start()
        nodes = [a, b]
        own = wait_for(lambda: (lambda o: o if sorted(o.values()) == ["A", "B"] else None)(
            owners(a)), 20) or {}
        t.ok(len(own) == 2, f"each node owns one volume: {own}")
        by_node = {n: v for v, n in own.items()}
        addr = {"A": "127.0.0.1", "B": "127.0.0.2"}
        confs, shares = {}, {}
        for n in nodes:
            d = os.path.join(pool.dir, f"samba-{n.name}")
            os.makedirs(d)
            shares[n.name] = os.path.join(d, "shares.conf")
            p = write_shares(n, shares[n.name])
            t.eq(p.returncode, 0, f"spacectl smbconf --node {n.name}")
            other = by_node["B" if n.name == "A" else "A"]
            t.ok(f"msdfs proxy = \\\\{addr['B' if n.name == 'A' else 'A']}\\{other}" in p.stdout,
                 f"node {n.name}: the volume it does not own ({other}) is a DFS proxy")
            section = p.stdout.split(f"[{other}]", 1)[-1].split("\n[", 1)[0]
            t.ok("path =" not in section,
                 f"node {n.name}: the proxy share has no path, so only the referral serves it")
            confs[n.name] = node_smb_conf(d, addr[n.name], shares[n.name])
            smbds.append(subprocess.Popen(
                ["smbd", "--foreground", "--no-process-group", "-s", confs[n.name]],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        for n in nodes:
            ok = wait_for(lambda: port_open(addr[n.name], PORT), 30)
            t.ok(ok, f"smbd of node {n.name} listens on {addr[n.name]}:{PORT}")
        cconf = client_conf(pool.dir)

        def through_non_owner(vol, name, tag):
            owner = own[vol]
            wrong = "B" if owner == "A" else "A"
            src = os.path.join(pool.dir, f"{name}.src")
            with open(src, "wb") as f:
                f.write(os.urandom((8 << 20) + 123))
            p = smbclient(addr[wrong], vol, f"put {src} {name}", cconf)
            if not t.ok(p.returncode == 0,
                        f"{tag}: put via {wrong}'s share of {vol} (owner {owner}) succeeds"):
                t.diag(p.stdout[-1500:] + p.stderr[-1500:])
            want = sha256_file(src)
            for n in nodes:
                got = os.path.join(n.mnt, vol, name)
                t.eq(sha256_file(got) if os.path.exists(got) else None, want,
                     f"{tag}: {name} identical on node {n.name}'s mount")
            back = os.path.join(pool.dir, f"{name}.back")
            p = smbclient(addr[wrong], vol, f"get {name} {back}", cconf)
            t.eq(sha256_file(back) if p.returncode == 0 else p.stderr[-300:], want,
                 f"{tag}: read back through the referral")

        vol = by_node["A"]
        through_non_owner(vol, "first.vhdx", "referral")

        # move the owner; rewrite both nodes' shares; the referral follows
        p = a.spacectl("owner", "move", pool.source, vol, "B", check=False)
        t.eq(p.returncode, 0, f"spacectl owner move {vol} B")
        moved = wait_for(lambda: owners(a).get(vol) == "B" and owners(b).get(vol) == "B", 30)
        t.ok(moved, f"{vol} is now owned by B")
        own = owners(a)
        for i, n in enumerate(nodes):
            write_shares(n, shares[n.name])
            r = subprocess.run(["smbcontrol", "-s", confs[n.name], "smbd", "reload-config"],
                               capture_output=True, text=True)
            t.eq(r.returncode, 0, f"smbd of {n.name} reloads the rewritten shares")
        time.sleep(1)
        with open(shares["A"]) as f:
            t.ok(f"msdfs proxy = \\\\127.0.0.2\\{vol}" in f.read(),
                 f"node A now refers {vol} clients to B")
        through_non_owner(vol, "second.vhdx", "after move")
    except Exception as e:
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        for s in smbds:
            stop_group(s)
        for n in nodes:
            n.m.stop()
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
