#!/usr/bin/env python3
"""Checkpoint chains against the log, the jobs and replay (review fixes).

1. Layer order: checkpoint A, write "a"; B, write "b"; merge A; C (it
   takes A's free slot in the daemon's table), write "c" + fsync.  Live
   reads c, B reads a, C reads b, before and after two remounts (before the fix the
   compaction at mount wrote the checkpoints in table order, C before B,
   and replay stacked the layers in record order: live read b).  The log
   then lists the checkpoints by id; a log with C's records before B's
   (what older builds wrote) loads right too.
2. Repair and scrub of a file truncated after its checkpoint walk as far
   as the checkpoint's size: a byte flipped past the live size is found
   by scrub; `disk replace` rebuilds the checkpoint's 1 MiB, not the live
   64 KiB, so losing the other copy then loses nothing (before the fix
   both walked the live 64 KiB only).
3. `disk retire` of a disk holding a checkpointed file's own chunk file,
   or only its layer's: the job stops with one line naming the volume
   and the disk and saying to merge or delete the checkpoints first;
   nothing of the file moved, live file and checkpoint read right (they
   read zeros before the fix: the chain kept the old placement); after the
   merge the retire empties the disk.
4. A merge makes the log durable (fdatasync of the log, strace -y) before
   it deletes the merged layer's chunk files; a log whose DROP and GONE
   records were lost while the layer's files went (a power cut) mounts
   with just that layer dropped: the newer checkpoint and the live file
   read right (before the fix every layer of the file was dropped).
5. A NODE record whose name has no NUL within the field: cut at load with
   one log line naming the volume; the name lists as its 255 bytes.
"""
import glob
import hashlib
import os
import shutil
import struct
import time

from harness import Mount, Pool, Tap, log_tail, stop_clean, strace_during

KiB, MiB = 1 << 10, 1 << 20
R_CKPT, R_NODE, R_COMMIT, R_MERGE, R_DROP, R_GONE = 2, 3, 4, 6, 7, 8
NODE = struct.Struct("<IIQQIIIIQqqq256s")


def sha(b):
    return hashlib.sha256(b).hexdigest()


def pread(path, off=0, n=64 * KiB):
    """n bytes at off, from the daemon (the page cache dropped first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def pwrite(path, off, data, create=True):
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def ino_of(path):
    return os.stat(path).st_ino & ((1 << 48) - 1)


def chunks(p, vol, ino):
    """{disk index: [chunk files]} of pool file ino."""
    out = {}
    for c in glob.glob(os.path.join(p.dir, "*", "vol", vol, "data", "*", f"{ino:016x}.*")):
        if not c.endswith(".crc"):
            d = os.path.basename(c.split("/vol/")[0])
            out.setdefault(d, []).append(c)
    return out


def log_paths(p, vol):
    return sorted(glob.glob(os.path.join(p.dir, "*", "vol", vol, "ckpt")))


def records_of(b):
    """(type, payload, sequence) of each record of a checkpoint log."""
    off, out = 0, []
    while off + 24 <= len(b):
        magic, typ, plen, seq = struct.unpack_from("<IIIQ", b, off)
        if magic != 0x4B435053:
            break
        out.append((typ, b[off + 20:off + 20 + plen], seq))
        off += 20 + plen + 4
    return out


def crc32c(data):
    crc = 0xFFFFFFFF
    for x in data:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def encode(recs):
    """Records (type, payload) numbered in order from sequence 1."""
    out = b""
    for i, (typ, pay) in enumerate(recs):
        r = struct.pack("<IIIQ", 0x4B435053, typ, len(pay), i + 1) + pay
        out += r + struct.pack("<I", crc32c(r))
    return out


def rewrite_logs(p, vol, fn):
    """Replace every replica of vol's log with fn(records) (daemon stopped)."""
    for x in log_paths(p, vol):
        with open(x, "rb") as fh:
            recs = [(typ, pay) for typ, pay, _ in records_of(fh.read())]
        with open(x, "wb") as fh:
            fh.write(encode(fn(recs)))


def ckpt_ids(p, vol):
    """{name: id} of the checkpoints in vol's log, in log order."""
    with open(log_paths(p, vol)[0], "rb") as fh:
        recs = records_of(fh.read())
    out = {}
    for typ, pay, _ in recs:
        if typ == R_CKPT:
            cid, _, _, name = struct.unpack_from("<IIq64s", pay)
            out[name.rstrip(b"\0").decode()] = cid
    return out


def deltas(p, vol, cid):
    """The layer files checkpoint cid's NODE records name."""
    with open(log_paths(p, vol)[0], "rb") as fh:
        recs = records_of(fh.read())
    return [NODE.unpack(pay)[3] for typ, pay, _ in recs
            if typ == R_NODE and NODE.unpack(pay)[0] == cid and NODE.unpack(pay)[3]]


def log_text(p):
    with open(os.path.join(p.dir, "spacefs.log"), errors="replace") as fh:
        return fh.read()


# ---- 1. layer order ----------------------------------------------------------------

def order(t):
    p = Pool(ndisks=3)
    try:
        p.volume("v", "simple", "--interleave", "64K")
        m = p.mount()
        root = os.path.join(p.mnt, "v")
        f = os.path.join(root, "f")
        pwrite(f, 0, b"0" * (2 * MiB))
        for name, data in (("A", b"a"), ("B", b"b")):
            p.spacectl("checkpoint", "create", p.source, "v", name)
            pwrite(f, 0, data * (64 * KiB))
        p.spacectl("checkpoint", "merge", p.source, "v", "A", "--wait")
        p.spacectl("checkpoint", "create", p.source, "v", "C")  # A's slot, a newer id
        pwrite(f, 0, b"c" * (64 * KiB))

        def views(when):
            got = {v: pread(os.path.join(root, ".checkpoints", v, "f"))[:1] for v in "BC"}
            got["live"] = pread(f)[:1]
            t.eq(got, {"live": b"c", "B": b"a", "C": b"b"}, f"order: live, B and C {when}")

        views("before a remount")
        for i in (1, 2):
            m.stop()
            m = p.mount()
            views(f"after remount {i}")
        m.stop()
        ids = ckpt_ids(p, "v")
        t.eq(list(ids), sorted(ids, key=ids.get), f"order: the log lists them by id ({ids})")

        def older(recs):
            """C's records (CKPT up to COMMIT/MERGE) moved before B's."""
            groups, rest, cur = [], [], None
            for typ, pay in recs:
                if typ == R_CKPT:
                    cur = [(typ, pay)]
                    groups.append(cur)
                elif cur is not None and typ in (R_NODE, R_COMMIT, R_MERGE):
                    cur.append((typ, pay))
                else:
                    cur = None
                    rest.append((typ, pay))
            groups.sort(key=lambda g: -struct.unpack_from("<I", g[0][1])[0])
            return rest[:2] + [r for g in groups for r in g] + rest[2:]

        rewrite_logs(p, "v", older)
        t.eq(list(ckpt_ids(p, "v")), ["C", "B"], "order: a log written C before B")
        m = p.mount()
        views("from a log with C before B")
        for name in "BC":
            p.spacectl("checkpoint", "merge", p.source, "v", name, "--wait")
        t.eq(pread(f)[:1], b"c", "order: live reads c after both merges")
        stop_clean(t, m, "order: daemon exits cleanly")
    except Exception as e:
        t.ok(False, f"order: unexpected error: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()


# ---- 2. repair and scrub past the live size ------------------------------------------

def repair(t):
    p = Pool(ndisks=3)
    try:
        p.volume("v", "mirror", "--copies", "2", "--interleave", "64K", "--columns", "1",
                 "--integrity", "on")
        m = p.mount()
        root = os.path.join(p.mnt, "v")
        f = os.path.join(root, "f")
        ck = os.path.join(root, ".checkpoints", "A", "f")
        pwrite(f, 0, b"X" * MiB)
        p.spacectl("checkpoint", "create", p.source, "v", "A")
        os.truncate(f, 64 * KiB)  # the checkpoint still needs the base's 1 MiB
        copies = chunks(p, "v", ino_of(f))
        t.eq(len(copies), 2, f"repair: the file's two copies ({sorted(copies)})")
        # scrub: a byte past the live size flipped on one copy
        m.stop()
        c = sorted(copies.values())[0][0]
        with open(c, "r+b") as fh:
            fh.seek(512 * KiB)
            fh.write(b"Z")
        m = p.mount()
        out = p.spacectl("scrub", p.source, "v", "--wait", check=False).stdout
        t.ok("bad 1, repaired 1," in out,
             f"repair: scrub repairs a byte past the live size ({out.strip().splitlines()[-1:]})")
        # repair: one copy's disk replaced, then the other copy lost
        bad = max(copies)
        other = min(copies)
        new = os.path.join(p.dir, "new")
        os.makedirs(new)
        m.stop()
        shutil.rmtree(os.path.join(p.dir, bad))
        os.makedirs(os.path.join(p.dir, bad))
        m = p.mount()
        r = p.spacectl("disk", "replace", p.source if bad != "d0" else p.disks[1], bad[1:], new,
                       "--wait", check=False)
        t.eq(r.returncode, 0, f"repair: disk {bad} replaced ({r.stdout.strip()[-200:]})")
        m.stop()
        shutil.rmtree(os.path.join(p.dir, other))
        os.makedirs(os.path.join(p.dir, other))
        m = Mount(new, p.mnt, "", os.path.join(p.dir, "spacefs.log")).start()
        p.mounts.append(m)
        try:
            got = open(ck, "rb").read()
        except OSError as e:
            got = repr(e).encode()
        t.ok(got == b"X" * MiB, f"repair: the checkpoint's 1 MiB was rebuilt "
                                 f"({len(got)} bytes, {got.count(b'X')} X)")
        t.eq(open(f, "rb").read(), b"X" * (64 * KiB), "repair: the live 64 KiB read right")
        stop_clean(t, m, "repair: daemon exits cleanly")
    except Exception as e:
        t.ok(False, f"repair: unexpected error: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()


# ---- 3. retire -----------------------------------------------------------------------

def retire(t):
    p = Pool(ndisks=3)
    try:
        p.volume("v", "simple", "--interleave", "64K", "--columns", "1")
        m = p.mount()
        root = os.path.join(p.mnt, "v")
        f, g = os.path.join(root, "f"), os.path.join(root, "g")
        ck = os.path.join(root, ".checkpoints", "A", "f")
        pwrite(f, 0, b"X" * (256 * KiB))
        pwrite(g, 0, b"Y" * (256 * KiB))
        p.spacectl("checkpoint", "create", p.source, "v", "A", "f")
        pwrite(f, 0, b"a" * (64 * KiB))  # into A's layer
        base = ino_of(f)
        layer = deltas(p, "v", ckpt_ids(p, "v")["A"])[0]
        bdisk, ldisk = list(chunks(p, "v", base))[0], list(chunks(p, "v", layer))[0]

        def reads(when):
            got = (pread(f)[:1], pread(f, 128 * KiB)[:1], pread(ck)[:1], pread(ck, 128 * KiB)[:1],
                   pread(g, 128 * KiB)[:1])
            t.eq(got, (b"a", b"X", b"X", b"X", b"Y"), f"retire: live, checkpoint, g {when}")

        # each disk the chain is on: the file's own, its layer's (if another)
        for d, what in sorted({(ldisk, "its layer's"), (bdisk, "its own")}):
            idx = int(d[1:])
            r = p.spacectl("disk", "retire", p.source, idx, "--wait", check=False)
            out = (r.stdout + r.stderr).strip()
            line = next((ln for ln in out.splitlines() if "merge or delete" in ln), out[-200:])
            t.ok(r.returncode != 0 and "volume v" in line and f"disk {idx}" in line,
                 f"retire: disk {idx} with {what} chunk refused: {line}")
            t.eq((list(chunks(p, "v", base)), list(chunks(p, "v", layer))), ([bdisk], [ldisk]),
                 f"retire: nothing of the chain moved off disk {idx}")
            reads(f"after retiring disk {idx}")
        m.stop()
        m = p.mount()
        reads("after a remount")
        p.spacectl("checkpoint", "merge", p.source, "v", "A", "--wait")
        for d in sorted({bdisk, ldisk}):
            r = p.spacectl("disk", "retire", p.source, int(d[1:]), "--wait", check=False)
            t.eq(r.returncode, 0, f"retire: disk {d} after the merge ({r.stdout.strip()[-200:]})")
        left = [c for d in {bdisk, ldisk}
                for c in glob.glob(os.path.join(p.dir, d, "vol", "v", "data", "*", "*"))]
        t.eq(left, [], "retire: the retired disks hold no chunk file")
        t.eq((pread(f)[:1], pread(f, 128 * KiB)[:1], pread(g)[:1]), (b"a", b"X", b"Y"),
             "retire: the files read right after the retire")
        stop_clean(t, m, "retire: daemon exits cleanly")
    except Exception as e:
        t.ok(False, f"retire: unexpected error: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()


# ---- 4. a merge's log durable before its deletes; a lost tail ------------------------

def trace_during(p, action):
    """strace -f -y lines of syncs and unlinks while action() runs, or None."""
    return strace_during(p, "fsync,fdatasync,unlink,unlinkat", action, 20)


def lost_tail(t):
    p = Pool(ndisks=3)
    try:
        p.volume("v", "simple", "--interleave", "64K")
        p.mount()
        root = os.path.join(p.mnt, "v")
        f = os.path.join(root, "f")
        ckb = os.path.join(root, ".checkpoints", "B", "f")
        model = bytearray(os.urandom(MiB))
        pwrite(f, 0, bytes(model))
        p.spacectl("checkpoint", "create", p.source, "v", "A", "f")
        model[0:64 * KiB] = os.urandom(64 * KiB)  # into A's layer
        pwrite(f, 0, bytes(model[0:64 * KiB]))
        p.spacectl("checkpoint", "create", p.source, "v", "B", "f")
        at_b = bytes(model)
        model[256 * KiB:320 * KiB] = os.urandom(64 * KiB)  # into B's layer
        pwrite(f, 256 * KiB, bytes(model[256 * KiB:320 * KiB]))
        ids = ckpt_ids(p, "v")
        la = deltas(p, "v", ids["A"])[0]
        lines = trace_during(p, lambda: p.spacectl("checkpoint", "merge", p.source, "v", "A",
                                                   "--wait"))
        if lines is None:
            t.ok(True, "lost tail: log synced before the deletes # SKIP no working strace")
        else:
            gone = next((i for i, ln in enumerate(lines) if "unlink" in ln and
                         f"{la:016x}." in ln), None)
            synced = [ln for ln in lines[:gone] if "sync(" in ln and "/ckpt>" in ln]
            t.ok(gone is not None and synced,
                 f"lost tail: the log is synced before the merged layer's chunk files go "
                 f"({len(synced)} syncs before unlink #{gone})")
        t.eq(sha(open(f, "rb").read()), sha(bytes(model)), "lost tail: live exact after merge A")
        p.mounts[-1].stop()

        def lose(recs):  # the merge's deletes persisted, its last records not
            return [(typ, pay) for typ, pay in recs
                    if not (typ in (R_DROP, R_GONE) and struct.unpack_from("<I", pay)[0] == ids["A"])]

        rewrite_logs(p, "v", lose)
        m = p.mount()
        t.eq(sha(open(f, "rb").read()), sha(bytes(model)),
             "lost tail: live exact with A's layer file gone and its DROP lost")
        t.eq(sha(open(ckb, "rb").read()), sha(at_b), "lost tail: B reads its instant")
        txt = log_text(p)
        t.ok(f"layer {la}" in txt and "missing" in txt,
             "lost tail: one line says the missing layer was dropped")
        deadline = time.monotonic() + 20
        while "A" in os.listdir(os.path.join(root, ".checkpoints")) and time.monotonic() < deadline:
            time.sleep(0.2)
        t.eq(sorted(os.listdir(os.path.join(root, ".checkpoints"))), ["B"],
             "lost tail: A's merge finished by itself")
        p.spacectl("checkpoint", "merge", p.source, "v", "B", "--wait")
        t.eq(sha(open(f, "rb").read()), sha(bytes(model)), "lost tail: live exact after merge B")
        stop_clean(t, m, "lost tail: daemon exits cleanly")
    except Exception as e:
        t.ok(False, f"lost tail: unexpected error: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()


# ---- 5. a NODE name without its NUL ------------------------------------------------

def node_name(t):
    p = Pool(ndisks=3)
    try:
        p.volume("v", "simple", "--interleave", "64K")
        m = p.mount()
        f = os.path.join(p.mnt, "v", "f")
        pwrite(f, 0, b"N" * (64 * KiB))
        p.spacectl("checkpoint", "create", p.source, "v", "N", "f")
        m.stop()

        def unended(recs):
            out = []
            for typ, pay in recs:
                if typ == R_NODE and NODE.unpack(pay)[-1].rstrip(b"\0") == b"f":
                    pay = pay[:NODE.size - 256] + b"n" * 256
                out.append((typ, pay))
            return out

        rewrite_logs(p, "v", unended)
        m = p.mount()
        names = os.listdir(os.path.join(p.mnt, "v", ".checkpoints", "N"))
        t.eq(names, ["n" * 255], "node name: cut to its 255 bytes")
        t.eq(pread(os.path.join(p.mnt, "v", ".checkpoints", "N", "n" * 255))[:4], b"NNNN",
             "node name: the file reads")
        t.ok("volume v: checkpoint log: NODE record" in log_text(p),
             "node name: one log line names the volume")
        stop_clean(t, m, "node name: daemon exits cleanly")
    except Exception as e:
        t.ok(False, f"node name: unexpected error: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()


def main():
    t = Tap()
    only = os.environ.get("SPACEFS_CKPT_CHAIN", "order,repair,retire,lost_tail,node_name")
    for name in only.split(","):
        globals()[name](t)
    t.done()


if __name__ == "__main__":
    main()
