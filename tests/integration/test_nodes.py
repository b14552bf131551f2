#!/usr/bin/env python3
"""Several nodes on one pool: ownership, redirected I/O, takeover, balancing.

Two (for a moment three) spacefs daemons on this machine mount the same
pool of disk directories, each at its own mount point with its own
redirect port on 127.0.0.1.  With two volumes:

 1. after start each node owns one; `spacectl status` shows owner, epoch,
    access mode; getfattr user.spacefs.owner names the owner everywhere;
 2. fio with verify through the non-owner (redirected) and the owner
    (direct) on both volumes; every file reads identically on both nodes;
    fanotify shows the non-owner wrote nothing under the volume it does
    not own while fio ran through it;
 3. a third node with ro-others reads but cannot write;
 4. `spacectl owner move` back and forth while fio runs through the
    non-owner's mount (redirected I/O): each move has happened when it
    returns, no client error, data verifies (the long version, 50 moves
    on mirror and parity volumes, is test_owner_move.py);
 5. kill -9 of an owner while the other node runs fio with verify on that
    volume: takeover time measured (lease 5 s), fio passes, epoch went up;
    the restarted node gets a volume back by balancing;
 6. SIGSTOP of an owner past its lease: the other node takes over; after
    SIGCONT the stalled node writes nothing to the volume (fanotify), its
    queued write is redirected and lands, and the volume's metadata
    replicas are consistent and equal;
 7. the redirect port refuses a wrong secret and survives garbage;
 8. `spacectl owner prefer` + balance moves a volume to its preferred
    owner.
"""
import os
import random
import signal
import socket
import sqlite3
import struct
import time

from harness import LAYOUTS, Pool, Tap, run, tree_digest
from nodes import (Fanotify, Node, fio_job, frame, free_port, owners, read_frame, req_body,
                   wait_for)

LEASE = 5.0


def start_nodes(pool):
    a = Node(pool, "A", f"127.0.0.1:{free_port()}").start()
    b = Node(pool, "B", f"127.0.0.1:{free_port()}").start()
    return a, b


def split_owned(t, a, b):
    got = wait_for(lambda: (lambda o: o if sorted(o.values()) == ["A", "B"] else None)(owners(a)),
                   20)
    t.ok(got is not None, f"after start each node owns one volume: {owners(a)}")
    return got or {}


def fio(t, job, desc):
    p = run(["fio", "--output-format=terse", job], check=False)
    if not t.ok(p.returncode == 0, desc):
        t.diag((p.stdout[-2000:] + p.stderr[-2000:]))
    return p.returncode == 0


def vol_dirs(pool, vol):
    return [os.path.join(d, "vol", vol) + "/" for d in pool.disks]


def check_status(t, a, b, va):
    sa, sb = a.status(), b.status()
    t.eq(sa[va].get("access"), "direct", f"status on A: {va} direct")
    t.eq(sb[va].get("access"), "redirected", f"status on B: {va} redirected")
    t.eq(sb[va].get("owner"), "A", f"status on B names A as owner of {va}")
    t.ok(sb[va].get("redirected_ops", 0) > 0 and sb[va].get("redirected_bytes", 0) > 0,
         f"B counts redirected requests and bytes ({sb[va].get('redirected_ops')} ops, "
         f"{sb[va].get('redirected_bytes')} bytes)")
    table = b.spacectl("status", a.pool.source).stdout
    t.ok("redirected" in table and "OWNER" in table, "status table shows owners and access")


def owner_xattr(path):
    p = run(["getfattr", "--only-values", "-n", "user.spacefs.owner", path], check=False)
    return p.stdout.strip()


def scenario_io(t, pool, a, b, own):
    va = [v for v, o in own.items() if o == "A"][0]
    vb = [v for v, o in own.items() if o == "B"][0]
    fan = Fanotify(pool.dir)
    ok = fio(t, fio_job(os.path.join(pool.dir, "r1.fio"), os.path.join(b.mnt, va)),
             f"fio verify through B on {va} (redirected to A)")
    bad = fan.writes_by(b.pid, vol_dirs(pool, va))
    t.ok(ok and not bad, f"B wrote nothing under vol/{va} while redirecting ({bad[:3]})")
    fan.close()
    fio(t, fio_job(os.path.join(pool.dir, "r2.fio"), os.path.join(a.mnt, va) + "/direct"),
        f"fio verify through A on {va} (direct)") if os.makedirs(
            os.path.join(a.mnt, va, "direct"), exist_ok=True) is None else None
    fio(t, fio_job(os.path.join(pool.dir, "r3.fio"), os.path.join(a.mnt, vb)),
        f"fio verify through A on {vb} (redirected to B)")
    for v in (va, vb):
        da, db = tree_digest(os.path.join(a.mnt, v)), tree_digest(os.path.join(b.mnt, v))
        t.ok(da == db and len(da) > 0, f"{v}: {len(da)} files read identically on A and B")
    check_status(t, a, b, va)
    x = owner_xattr(os.path.join(b.mnt, va, "direct"))
    t.ok(x.startswith(f"A {a.addr} epoch "), f"getfattr user.spacefs.owner on B: '{x}'")
    t.eq(owner_xattr(os.path.join(a.mnt, va)), x, "the same answer on the owner")
    return va, vb


def scenario_ro_others(t, pool, va):
    c = Node(pool, "C", f"127.0.0.1:{free_port()}", "ro-others").start()
    try:
        vol = os.path.join(c.mnt, va)
        names = sorted(os.listdir(vol))
        t.ok(len(names) > 0, f"ro-others node C lists {va}")
        try:
            with open(os.path.join(vol, "c-was-here"), "w") as f:
                f.write("x")
            t.ok(False, "ro-others node C refuses a write")
        except OSError as e:
            t.ok(e.errno == 30, f"ro-others node C refuses a write (errno {e.errno})")
    finally:
        c.m.stop()


def scenario_move(t, pool, a, b, va):
    # fio through B, the non-owner: redirected to A until va moves to B
    d = os.path.join(b.mnt, va, "move")
    os.makedirs(d, exist_ok=True)
    job = fio_job(os.path.join(pool.dir, "mv.fio"), d, size="24m", extra="runtime=12\ntime_based=0")
    import subprocess
    p = subprocess.Popen(["fio", "--output-format=terse", job], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)
    # `owner move` returns once the target owns the volume: check at once
    r1 = a.spacectl("owner", "move", pool.source, va, "B", check=False)
    moved = owners(a).get(va) == "B" and owners(b).get(va) == "B"
    if not moved:
        t.diag(f"owners seen by A: {owners(a)}, by B: {owners(b)}")
        t.diag(a.m.log_text()[-1500:])
        t.diag(b.m.log_text()[-1500:])
    time.sleep(1.5)
    r2 = b.spacectl("owner", "move", pool.source, va, "A", check=False)
    back = owners(b).get(va) == "A" and owners(a).get(va) == "A"
    out, _ = p.communicate(timeout=300)
    t.ok(r1.returncode == 0 and moved, f"owner move {va} A -> B under load, owned by B when it "
                                       f"returns ({r1.stderr.strip()})")
    t.ok(r2.returncode == 0 and back, f"owner move {va} B -> A under load, owned by A when it "
                                      f"returns ({r2.stderr.strip()})")
    if not t.ok(p.returncode == 0, "fio through B (redirected, then local) saw no error across "
                                   "both moves"):
        t.diag(out[-3000:])


def epoch_of(node, vol):
    return node.status().get(vol, {}).get("epoch", 0)


def scenario_kill(t, pool, a, b, va):
    import subprocess
    e0 = epoch_of(b, va)
    d = os.path.join(b.mnt, va, "kill")
    os.makedirs(d, exist_ok=True)
    job = fio_job(os.path.join(pool.dir, "k.fio"), d, size="16m", extra="fsync=8")
    p = subprocess.Popen(["fio", "--output-format=terse", job], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    time.sleep(2.0)
    t0 = time.time()
    a.m.kill9()
    took = wait_for(lambda: owners(b).get(va) == "B", LEASE + 10, step=0.02)
    dt = time.time() - t0
    print(f"# takeover after kill -9: {dt:.2f} s (lease {LEASE:.0f} s)", flush=True)
    t.ok(took and dt <= LEASE + 1.5, f"B took {va} over within lease + 1.5 s ({dt:.2f} s)")
    out, _ = p.communicate(timeout=300)
    if not t.ok(p.returncode == 0, "fio with verify on B across the kill passes"):
        t.diag(out[-3000:])
        t.diag("--- B's log\n" + b.m.log_text()[-4000:])
    e1 = epoch_of(b, va)
    t.ok(e1 > e0, f"epoch went up ({e0} -> {e1})")
    a.start()
    back = wait_for(lambda: sorted(owners(b).values()) == ["A", "B"], 20)
    t.ok(back, f"restarted A rejoined and balancing gave it a volume back: {owners(b)}")


def meta_rows(pool, vol):
    rows = []
    for d in pool.disks:
        db = os.path.join(d, "vol", vol, "meta.db")
        if not os.path.exists(db):
            continue
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        txn = con.execute("SELECT value FROM meta WHERE key='txn'").fetchone()[0]
        n = con.execute("SELECT count(*) FROM inodes").fetchone()[0]
        con.close()
        rows.append((ok, txn, n))
    return rows


def scenario_stall(t, pool, a, b):
    import subprocess
    own = owners(b)
    va = [v for v, o in own.items() if o == "A"]
    if not t.ok(len(va) == 1, f"A owns a volume before the stall: {own}"):
        return
    va = va[0]
    e0 = epoch_of(b, va)
    a.m.proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    target = os.path.join(a.mnt, va, "queued.bin")
    payload = random.Random(7).randbytes(3 * 1024 * 1024 + 123)
    src = os.path.join(pool.dir, "payload.bin")
    with open(src, "wb") as f:
        f.write(payload)
    # a client of the stalled node: its requests queue in the kernel
    w = subprocess.Popen(["dd", f"if={src}", f"of={target}", "bs=256k", "conv=fsync"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = wait_for(lambda: owners(b).get(va) == "B", 3 * LEASE + 5, step=0.1)
    dt = time.time() - t0
    print(f"# takeover from a stalled owner: {dt:.2f} s (lease {LEASE:.0f} s)", flush=True)
    t.ok(took, f"B took {va} over from stalled A after its lease ({dt:.2f} s)")
    # keep it on B while we watch (else balancing may rightly give it back)
    b.spacectl("owner", "prefer", pool.source, va, "B")
    fan = Fanotify(pool.dir)
    a.m.proc.send_signal(signal.SIGCONT)
    try:
        w.wait(timeout=120)
    except subprocess.TimeoutExpired:
        w.kill()
    time.sleep(2 * 1.0 + 0.5)
    # A renewal caught mid-update by SIGSTOP may still land on one lock
    # file (never a majority; the new owner restores it): data and
    # metadata are what must not change.
    bad = [f for f in fan.writes_by(a.pid, vol_dirs(pool, va)) if not f.endswith("/owner.lock")]
    fan.close()
    t.ok(not bad, f"stalled A wrote no data or metadata under vol/{va} after SIGCONT "
                  f"({bad[:3]})")
    t.eq(w.returncode, 0, f"the stalled node's queued write was redirected and completed "
                          f"({(w.stderr.read() if w.stderr else '').strip()[:200]})")
    with open(os.path.join(b.mnt, va, "queued.bin"), "rb") as f:
        t.ok(f.read() == payload, "its data reads back correctly on the new owner")
    t.ok("LOST volume " + va in a.m.log_text(), "A logged that it lost the volume")
    t.ok(epoch_of(b, va) > e0, "epoch went up")
    rows = meta_rows(pool, va)
    t.ok(len(rows) >= 2 and all(r[0] == "ok" for r in rows) and len(set(rows)) == 1,
         f"metadata replicas of {va} pass integrity_check and agree: {rows}")
    da, db = tree_digest(os.path.join(a.mnt, va)), tree_digest(os.path.join(b.mnt, va))
    t.ok(da == db, f"{va}: {len(da)} files read identically on both nodes after the stall")
    b.spacectl("owner", "prefer", pool.source, va, "none")
    b.spacectl("owner", "balance", pool.source)
    t.ok(wait_for(lambda: sorted(owners(b).values()) == ["A", "B"], 20),
         f"balanced again after the stall: {owners(b)}")


def scenario_auth(t, pool, a):
    host, port = a.addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    uuid = a.status and None
    with open(os.path.join(pool.disks[0], "spacefs.secret"), "rb") as f:
        f.read()
    st = os.stat(os.path.join(pool.disks[0], "spacefs.secret"))
    t.eq(st.st_mode & 0o777, 0o600, "spacefs.secret has mode 0600")
    # the pool uuid, from spacectl
    import json
    info = json.loads(run([os.environ.get("SPACECTL", "spacectl"), "status", pool.source,
                           "--json"]).stdout)
    uuid = info["pool"]["uuid"].encode()
    s.sendall(frame(1, req_body(name=b"mallory", name2=uuid, data=os.urandom(32))))
    got = read_frame(s)
    t.ok(got is not None and got[0] == (2 | 0x8000), "server answers HELLO with a challenge")
    s.sendall(frame(3, req_body(data=os.urandom(32)), rid=2))
    got = read_frame(s)
    err = struct.unpack_from("<i", got[1])[0] if got else None
    t.eq(err, -13, "a wrong secret gets -EACCES")
    t.ok(read_frame(s) is None, "and the connection is closed")
    s.close()
    rng = random.Random(99)
    for i in range(200):
        s = socket.create_connection((host, int(port)), timeout=5)
        if i % 2:
            s.sendall(rng.randbytes(rng.randrange(1, 4000)))
        else:  # a plausible header with a lying length or type
            s.sendall(struct.pack("<IHHQ", rng.randrange(0, 1 << 32), rng.randrange(0, 1 << 16),
                                  0, 1) + rng.randbytes(rng.randrange(0, 300)))
        s.close()
    t.ok(a.m.proc.poll() is None and owners(a), "A survives 200 garbage connections")
    t.ok("wrong pool secret" in a.m.log_text(), "A logged the refused handshake")


def scenario_prefer(t, pool, a, b):
    own = owners(a)
    vol = [v for v, o in own.items() if o == "A"][0]
    r = a.spacectl("owner", "prefer", pool.source, vol, "B", check=False)
    t.eq(r.returncode, 0, f"owner prefer {vol} B ({r.stderr.strip()})")
    moved = wait_for(lambda: owners(a).get(vol) == "B", 15)
    t.ok(moved, f"balancing moved {vol} to its preferred owner B: {owners(a)}")
    a.spacectl("owner", "prefer", pool.source, vol, "none")


def main():
    t = Tap()
    pool = Pool(4, prefix="spacefs-nodes-")
    nodes = []
    try:
        for name in ("V1", "V2"):
            pool.volume(name, "mirror", "--copies", "2", "--interleave", "64K")
        a, b = start_nodes(pool)
        nodes += [a, b]
        own = split_owned(t, a, b)
        va, vb = scenario_io(t, pool, a, b, own)
        scenario_ro_others(t, pool, va)
        scenario_move(t, pool, a, b, va)
        scenario_kill(t, pool, a, b, va)
        scenario_stall(t, pool, a, b)
        scenario_auth(t, pool, a)
        scenario_prefer(t, pool, a, b)
        for n in (a, b):
            t.eq(n.m.stop(), 0, f"node {n.name} exits 0 on unmount")
            t.ok(n.m.sanitizer_report() is None, f"no sanitizer report from {n.name}")
    except Exception as e:  # a crash of the harness is a failed test
        import traceback
        t.ok(False, f"unexpected error: {e}")
        t.diag(traceback.format_exc())
        for n in nodes:
            t.diag(f"--- {n.name}.log ---\n" + n.m.log_text()[-3000:])
    finally:
        for n in nodes:
            if n.m.proc is not None:
                try:
                    n.m.proc.send_signal(signal.SIGCONT)
                except OSError:
                    pass
                n.m.stop()
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
