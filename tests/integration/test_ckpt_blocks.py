#!/usr/bin/env python3
"""Checkpoints: first writes redirected by 4 KiB blocks inside a 64 KiB
granule (PART granules, docs/FORMAT.md), with real data end to end.

On a mirror 2 and a parity 1 volume (interleave 64K, ASan daemon):
1. A 4 MiB file and checkpoint c1; then first writes of every shape into
   its granules: one aligned block, 100 bytes inside a block, a write over
   three blocks cut at both ends, one across a granule boundary, a granule
   filled block by block (turns whole), a partial then a whole-granule
   write, overlapping partial writes, a write into a granule cut by a
   truncate (ZERO: the rest must read zeros, not the old bytes), and 300
   random writes of 1..9000 bytes.  The live file reads what was written,
   the checkpoint reads the instant, SEEK_DATA/SEEK_HOLE of a sparse file
   in the checkpoint are the instant's.
2. Checkpoint c2 over those partly redirected granules, more partial
   writes (some into blocks c1's layer has, some beside them, some into
   the ZERO granule): live, c1 and c2 each read their own bytes.
3. The same after an unmount and remount, and after kill -9 (writes
   fsynced before it) and a remount; the log then starts with the
   FORMAT record, version 3.
4. Merge c2 first (its partial granules fold into c1's layer: into
   partial, whole, ZERO and absent granules there), check live and c1;
   then c1: the file is exact and no differencing chunk file is left.
5. Two checkpoints l1 < l2 of another file, the older one (l1) merged
   first: l2 still reads its instant, and the daemon exits 0 on unmount
   (it freed the merged layer's maps twice and died of it) and after a
   remount l2 and the live file still read right.
6. A version 1 log (FORMAT, BLKS and FILL records removed; what older
   builds wrote) is read as it is and rewritten as version 2 (no fill
   file); a log claiming version 4 is refused with one clear line and
   the volume's data left alone (the next mount with the log put back
   reads everything).
7. Slots (fs/ckpt.c): first writes once the layer's fill file is zeroed
   ahead go to slots there (the log's BLKS records name them; the very
   first write, before the fill file exists, goes to its offsets): every
   shape of write, rewrites of slotted blocks, fsync, kill -9, remount:
   live file and checkpoint exact; a second checkpoint's layer merged
   into the slotted one, then that one: exact, no layer data left.
8. A format 2 log (first writes made with slots off,
   SPACEFS_CKPT_FILL_KIB=0: the log is written as format 2) mounts,
   reads exactly, stays format 2 until the first fill file appends a
   FORMAT 3 record, takes slotted first writes beside its blocks at
   offsets; merged: exact, and the next mount writes format 2 again.
9. Generations of 256 KiB (SPACEFS_CKPT_FILL_KIB) in turns in the two
   fill files (FILL records in both places, slots from several
   generations), kill -9, slots from the next generation on after the
   remount, then a mount with the default generation: that layer takes
   no more slots and reads exactly; merged: no fill data left.
10. The fill cap (SPACEFS_CKPT_FILL_MAX_KIB): no slot past it, one log
   line; SPACEFS_FAULT=fill:1 (no fill file can be made): one log line,
   an idle daemon (no spinning zeroer), first writes at offsets; exact.
11. Replay refuses, each with one line: a BLKS slot with no fill file, a
   slot past its fill file's recorded size, a second fill file in one
   place, a FILL record naming a missing file its BLKS records use; the
   log put back reads.  A FILL record naming a missing file no slot is in
   (a create lost to power loss) is dropped with one line: exact.
12. fsync syncs the fill files, a merge into a layer with slots syncs
   them (strace -y), and scrub finds and repairs a byte flipped in a
   slotted block on one mirror copy.
13. Generations of 64 KiB (one lane, slots in order): neighbouring
   blocks in slots across a generation's end (the other fill file):
   live file, checkpoint, after a remount a read over the two blocks and
   the file (a plain layer_io without the split fails these), a fold, a
   merge: exact.
"""
import glob
import hashlib
import os
import random
import struct
import time

from harness import Pool, Tap, data_extents, log_tail, stop_clean, strace_during

KiB, MiB, G = 1 << 10, 1 << 20, 64 << 10
FILE = 4 * MiB


def sha(b):
    return hashlib.sha256(b).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


class File:
    """A file of the mount and the bytes it should hold."""

    def __init__(self, path, model):
        self.path, self.model = path, bytearray(model)
        with open(path, "wb") as f:
            f.write(model)
            os.fsync(f.fileno())

    def write(self, off, data):
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, off)
        finally:
            os.close(fd)
        end = off + len(data)
        if end > len(self.model):
            self.model.extend(bytes(end - len(self.model)))
        self.model[off:end] = data

    def truncate(self, n):
        os.truncate(self.path, n)
        if n < len(self.model):
            del self.model[n:]
        else:
            self.model.extend(bytes(n - len(self.model)))

    def sync(self):
        fd = os.open(self.path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def shapes(f, rng, base):
    """First writes of every shape into granules base.. of f."""
    g = lambda i: (base + i) * G
    f.write(g(0) + 2 * 4096, rng.randbytes(4096))            # one aligned block
    f.write(g(1) + 5000, rng.randbytes(100))                 # inside one block
    f.write(g(2) + 3 * 4096 + 7, rng.randbytes(2 * 4096 + 100))  # 3 blocks, cut ends
    f.write(g(4) - 3000, rng.randbytes(6000))                # across granules 3|4
    for b in rng.sample(range(16), 16):                      # block by block: whole
        f.write(g(5) + b * 4096, rng.randbytes(4096))
    f.write(g(6) + 777, rng.randbytes(3000))                 # partial, then whole
    f.write(g(6), rng.randbytes(G))
    f.write(g(7) + 4096, rng.randbytes(8192))                # overlapping partials
    f.write(g(7) + 10000, rng.randbytes(9000))
    f.write(g(7) + 100, rng.randbytes(4000))


def random_writes(f, rng, n, lo, hi):
    for _ in range(n):
        size = rng.randrange(1, 9000)
        f.write(rng.randrange(lo, hi - size), rng.randbytes(size))


def log_paths(p, vol):
    return sorted(glob.glob(os.path.join(p.dir, "d*", "vol", vol, "ckpt")))


def records(path):
    """(type, payload, raw bytes) of each record of a checkpoint log."""
    return records_of(read(path))


def records_of(b):
    """(type, payload, raw bytes) of each record in b."""
    off, out = 0, []
    while off + 24 <= len(b):
        magic, typ, plen = struct.unpack_from("<III", b, off)
        if magic != 0x4B435053:
            break
        end = off + 20 + plen + 4
        out.append((typ, b[off + 20:off + 20 + plen], b[off:end]))
        off = end
    return out


def crc32c(data):
    crc = 0xFFFFFFFF
    for x in data:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def record(typ, payload, seq):
    r = struct.pack("<IIIQ", 0x4B435053, typ, len(payload), seq) + payload
    return r + struct.pack("<I", crc32c(r))


def checkpointed(p, vol, name, ck, rng, size=FILE):
    """File `name` of volume vol, `size` random bytes, and checkpoint `ck`
    of it taken: (the File, its content at the checkpoint)."""
    f = File(os.path.join(p.mnt, vol, name), rng.randbytes(size))
    p.spacectl("checkpoint", "create", p.source, vol, ck, name)
    return f, bytes(f.model)


def names_in(root):
    """The pool inode numbers of the files named in directory root."""
    return {os.stat(os.path.join(root, n)).st_ino & ((1 << 48) - 1) for n in os.listdir(root)}


def differencing_left(p, vol, live):
    ids = set()
    for c in glob.glob(os.path.join(p.dir, "d*", "vol", vol, "data", "*", "*")):
        ids.add(int(os.path.basename(c).split(".")[0], 16))
    return sorted(ids - live)


def one(t, p, vol, seed):
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    f = File(os.path.join(root, "f.bin"), rng.randbytes(FILE))
    sp = File(os.path.join(root, "sparse.bin"), b"")
    sp.write(0, rng.randbytes(G))
    sp.write(MiB + 4096, rng.randbytes(4096))
    sp.truncate(2 * MiB)
    sp.sync()
    live_ids = {os.stat(x.path).st_ino & ((1 << 48) - 1) for x in (f, sp)}

    p.spacectl("checkpoint", "create", p.source, vol, "c1", "f.bin", "sparse.bin")
    m1, s1, ext1 = bytes(f.model), bytes(sp.model), data_extents(sp.path)
    shapes(f, rng, 0)
    f.truncate(FILE - 5 * G - 1000)                  # granules past it: ZERO in c1's layer
    f.truncate(FILE)
    f.write(FILE - 3 * G + 4096 + 10, rng.randbytes(500))  # a block into a ZERO granule
    random_writes(f, rng, 300, 16 * G, FILE - 6 * G)
    sp.write(MiB // 2 + 100, rng.randbytes(300))     # into the hole
    c1 = lambda n: os.path.join(root, ".checkpoints", "c1", n)
    c2 = lambda n: os.path.join(root, ".checkpoints", "c2", n)

    def check(when, views):
        t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file reads what was written "
                                                     f"({when})")
        t.eq(sha(read(sp.path)), sha(bytes(sp.model)), f"{vol}: live sparse file ({when})")
        for name, fn, want, swant in views:
            t.eq(sha(read(fn("f.bin"))), sha(want), f"{vol}: {name} reads its instant ({when})")
            t.eq(sha(read(fn("sparse.bin"))), sha(swant),
                 f"{vol}: {name} sparse file reads its instant ({when})")
        t.eq(data_extents(c1("sparse.bin")), ext1, f"{vol}: c1's holes are the instant's ({when})")

    v1 = ("c1", c1, m1, s1)
    check("c1, partial first writes", [v1])

    p.spacectl("checkpoint", "create", p.source, vol, "c2", "f.bin", "sparse.bin")
    m2, s2 = bytes(f.model), bytes(sp.model)
    v2 = ("c2", c2, m2, s2)
    f.write(0 * G + 5 * 4096, rng.randbytes(4096))   # beside c1's block in granule 0
    f.write(0 * G + 2 * 4096 + 50, rng.randbytes(100))  # over c1's block
    f.write(2 * G + 2 * 4096, rng.randbytes(3 * 4096))  # half over c1's blocks
    f.write(20 * G + 300, rng.randbytes(5000))       # where c1's layer has nothing
    f.write(FILE - 2 * G + 8192, rng.randbytes(4096))  # ZERO in c1's layer
    f.write(6 * G + 4096, rng.randbytes(4096))       # whole in c1's layer
    random_writes(f, rng, 200, 0, FILE)
    sp.write(MiB + 4096 + 1000, rng.randbytes(10))
    check("c1 and c2", [v1, v2])

    t.eq(p.mounts[-1].stop(), 0, f"{vol}: daemon exits 0 on unmount with two checkpoints")
    p.mount()
    check("after unmount and remount", [v1, v2])

    random_writes(f, rng, 100, 0, FILE)
    f.sync()
    p.mounts[-1].kill9()
    p.mount()
    check("after kill -9 and remount", [v1, v2])
    recs = [records(x) for x in log_paths(p, vol)]
    t.ok(recs and all(r and r[0][0] == 9 and struct.unpack_from("<I", r[0][1])[0] == 3
                      for r in recs), f"{vol}: every log replica starts with FORMAT 3")
    t.ok(any(typ == 10 for r in recs for typ, _, _ in r),
         f"{vol}: the log holds BLKS records (partial granules)")

    random_writes(f, rng, 50, 0, FILE)
    p.spacectl("checkpoint", "merge", p.source, vol, "c2", "--wait")
    check("after merging c2 (into c1's layer)", [v1])
    random_writes(f, rng, 50, 0, FILE)
    p.spacectl("checkpoint", "merge", p.source, vol, "c1", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: file exact after both merges")
    t.eq(sha(read(sp.path)), sha(bytes(sp.model)), f"{vol}: sparse file exact after merges")
    t.eq(differencing_left(p, vol, live_ids), [], f"{vol}: no differencing data left")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: daemon exits 0 on unmount after the merges")
    p.mount()
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: file exact after a remount")
    os.unlink(f.path)
    os.unlink(sp.path)


def formats(t, p, vol):
    """A version 1 log is read; a version 3 one is refused."""
    rng = random.Random(9)
    root = os.path.join(p.mnt, vol)
    f, m = checkpointed(p, vol, "old.bin", "old", rng, MiB)
    f.write(3 * G, rng.randbytes(G))                 # whole granule: a MAP record
    f.write(5 * G + 4096, rng.randbytes(4096))       # one block: BLKS
    p.mounts[-1].stop()
    logs = log_paths(p, vol)
    saved = {x: read(x) for x in logs}
    for x in logs:  # version 1: no FORMAT record, whole granules only (no BLKS, no FILL)
        rs = [r for r in records(x) if r[0] not in (9, 10, 11)]
        with open(x, "wb") as fh:
            fh.write(b"".join(raw for _, _, raw in rs))
    # the v1 log knows nothing of the block: the file reads it from below
    want_v1 = bytearray(f.model)
    want_v1[5 * G + 4096:5 * G + 8192] = m[5 * G + 4096:5 * G + 8192]
    p.mount()
    ck = os.path.join(root, ".checkpoints", "old", "old.bin")
    t.eq(sha(read(ck)), sha(m), f"{vol}: a version 1 log is read (the checkpoint)")
    t.eq(sha(read(f.path)), sha(bytes(want_v1)), f"{vol}: and the file's whole granules")
    t.ok(all(log_format(x) == [2] for x in logs),
         f"{vol}: it is rewritten as version 2 (no fill file: {log_format(logs[0])})")
    p.mounts[-1].stop()
    # version 4, ahead of this build
    v4 = {x: record(9, struct.pack("<II", 4, 0), struct.unpack_from("<Q", records(x)[0][2], 12)[0])
          + b"".join(raw for _, _, raw in records_of(saved[x])[1:]) for x in logs}
    refused(t, p, f.path, v4, f"{vol}: a version 4 log",
            "checkpoint log format 4 is newer than this build's (3)")
    # a BLKS record naming granule 2^40 (64 PiB into the file), its CRC
    # right: refused by name, not an attempt at a map of 2^40 granules
    far = {x: b"".join(record(10, pay[:8] + struct.pack("<Q", 1 << 40) + pay[16:],
                              struct.unpack_from("<Q", raw, 12)[0]) if typ == 10 else raw
                       for typ, pay, raw in records_of(saved[x])) for x in logs}
    refused(t, p, f.path, far, f"{vol}: a BLKS record past any file", "impossible BLKS record")
    for x, b in saved.items():
        with open(x, "wb") as fh:
            fh.write(b)
    p.mount()
    t.eq(sha(read(ck)), sha(m), f"{vol}: the refused log put back: checkpoint read")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: and the file as written")
    p.spacectl("checkpoint", "merge", p.source, vol, "old", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: file exact after the merge")


def blks_slots(p, vol):
    """(BLKS records at offsets, BLKS records naming a slot, FILL records)
    over the log replicas."""
    at = slot = fill = 0
    for x in log_paths(p, vol):
        for typ, pay, _ in records(x):
            if typ == 10:
                if struct.unpack_from("<QQII", pay)[3]:
                    slot += 1
                else:
                    at += 1
            fill += typ == 11
    return at, slot, fill


DEADLINE = 25.0  # s: a loaded 2-core CI box runs the ASan daemon


def fill_ids(p, vol):
    """(delta, fill file) of every FILL record over the log replicas."""
    return {(d, fl) for x in log_paths(p, vol) for d, fl, _, _ in fill_recs(x)}


def probes():
    """Blocks 2..127 of a file (granules 0-7): the sections leave them to
    probe first writes (first_writes starts past them)."""
    return list(range(2, 128))


def probe_until(f, rng, free, cond, deadline=DEADLINE):
    """First writes of 4 KiB into blocks taken from free, one at a time
    (a first write is what asks the zeroer for slots), until cond() holds;
    every 0.1 s, every 0.25 s after 2 s.  True if it did in time."""
    t0 = time.monotonic()
    while not cond():
        now = time.monotonic() - t0
        if now > deadline or not free:
            return cond()
        f.write(free.pop(0) * 4096, rng.randbytes(4096))
        time.sleep(0.1 if now < 2 else 0.25)
    return True


def wait_fill(t, p, vol, what, known, f, rng, free):
    """Wait until the layer taking f's first writes has a new fill file
    (FILL records not in known) and a first write took a slot there: a
    generation is zeroed.  Probe first writes take blocks from free."""
    layer = []

    def ready():
        if not layer:
            new = fill_ids(p, vol) - known
            if not new:
                return False
            layer.append(min(new)[0])
        return any(d == layer[0] for x in log_paths(p, vol) for d, _, _ in slot_list(x))

    ok = probe_until(f, rng, free, ready)
    t.ok(layer, f"{vol}: {what}: the layer got a fill file")
    t.ok(ok, f"{vol}: {what}: a first write took a slot (a generation zeroed)")


def slots(t, p, vol, seed):
    """First writes into slots of a fill file; kill -9; merges."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    f, m1 = checkpointed(p, vol, "slots.bin", "s1", rng)
    s1 = lambda: read(os.path.join(root, ".checkpoints", "s1", "slots.bin"))
    s2 = lambda: read(os.path.join(root, ".checkpoints", "s2", "slots.bin"))
    known, free = fill_ids(p, vol), [b for b in probes() if b != 19]
    f.write(G + 3 * 4096, rng.randbytes(4096))  # before any fill file: at its offset
    wait_fill(t, p, vol, "s1", known, f, rng, free)
    shapes(f, rng, 8)
    blocks = rng.sample(range(16 * 16, FILE // 4096), 120)
    for b in blocks:                             # 4 KiB first writes
        f.write(b * 4096, rng.randbytes(4096))
    for b in blocks[:30]:                        # rewrites of slotted blocks
        f.write(b * 4096 + rng.randrange(4000), rng.randbytes(90))
    random_writes(f, rng, 60, 16 * G, FILE)
    f.sync()
    at, sl, _ = blks_slots(p, vol)
    t.ok(at > 0 and sl > 0, f"{vol}: first writes at offsets ({at}) and in slots ({sl})")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact (slots)")
    t.eq(sha(s1()), sha(m1), f"{vol}: s1 reads its instant (slots)")
    p.mounts[-1].kill9()
    p.mount()
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact after kill -9 (slots)")
    t.eq(sha(s1()), sha(m1), f"{vol}: s1 reads its instant after kill -9 (slots)")
    t.ok(blks_slots(p, vol)[1] > 0, f"{vol}: the compacted log still names slots")
    p.spacectl("checkpoint", "create", p.source, vol, "s2", "slots.bin")
    m2 = bytes(f.model)
    known, free = fill_ids(p, vol), probes()
    f.write(blocks[40] * 4096, rng.randbytes(4096))
    wait_fill(t, p, vol, "s2", known, f, rng, free)
    for b in blocks[30:90]:                      # over s1's slotted blocks
        f.write(b * 4096 + 512, rng.randbytes(5000))
    random_writes(f, rng, 40, 0, FILE)
    t.eq(sha(s2()), sha(m2), f"{vol}: s2 reads its instant (slots)")
    p.spacectl("checkpoint", "merge", p.source, vol, "s2", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after merging s2 into s1's slots")
    t.eq(sha(s1()), sha(m1), f"{vol}: s1 still reads its instant")
    p.spacectl("checkpoint", "merge", p.source, vol, "s1", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after merging s1 (slots)")
    t.eq(differencing_left(p, vol, names_in(root)), [], f"{vol}: no layer or fill data left")
    os.unlink(f.path)


def format2(t, p, vol, seed):
    """A format 2 log: every block at its offset."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    p.mounts[-1].stop()
    os.environ["SPACEFS_CKPT_FILL_KIB"] = "0"
    try:
        p.mount()
        f, m = checkpointed(p, vol, "v2.bin", "v2", rng, MiB)
        random_writes(f, rng, 60, 0, MiB)
        f.sync()
        p.mounts[-1].stop()
    finally:
        del os.environ["SPACEFS_CKPT_FILL_KIB"]
    t.eq(blks_slots(p, vol)[1:], (0, 0), f"{vol}: slots off: no slot and no fill file logged")
    t.ok(all(log_format(x) == [2] for x in log_paths(p, vol)),
         f"{vol}: slots off: the log is written as format 2 ({log_format(log_paths(p, vol)[0])})")
    for x in log_paths(p, vol):
        rs = records(x)
        seq = struct.unpack_from("<Q", rs[0][2], 12)[0]
        with open(x, "wb") as fh:
            fh.write(record(9, struct.pack("<II", 2, 0), seq) + b"".join(r[2] for r in rs[1:]))
    p.mount()
    ck = lambda: read(os.path.join(root, ".checkpoints", "v2", "v2.bin"))
    t.eq(sha(ck()), sha(m), f"{vol}: a format 2 log: the checkpoint reads its instant")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: a format 2 log: the file")
    t.ok(all(log_format(x) == [2] for x in log_paths(p, vol)),
         f"{vol}: a format 2 log without fill files is rewritten as 2")
    f.write(100, rng.randbytes(10))
    wait_fill(t, p, vol, "format 2 log", set(), f, rng, probes())
    random_writes(f, rng, 60, 0, MiB)
    t.ok(blks_slots(p, vol)[1] > 0, f"{vol}: then first writes take slots")
    t.ok(all(log_format(x) == [2, 3] for x in log_paths(p, vol)),
         f"{vol}: the first fill file turns the log to format 3 "
         f"({log_format(log_paths(p, vol)[0])})")
    t.eq(sha(ck()), sha(m), f"{vol}: format 2 and 3 blocks: the checkpoint")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: format 2 and 3 blocks: the file")
    p.spacectl("checkpoint", "merge", p.source, vol, "v2", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after the merge (format 2)")
    os.unlink(f.path)
    p.mounts[-1].stop()
    p.mount()
    t.ok(all(log_format(x) == [2] for x in log_paths(p, vol)),
         f"{vol}: the merge removed every fill file: the log is format 2 again")


def log_format(path):
    """The versions of the FORMAT records of a log, in order."""
    return [struct.unpack_from("<I", pay)[0] for typ, pay, _ in records(path) if typ == 9]


def fill_recs(path):
    """(delta, fill, which, gen_kib) of each FILL record of a log."""
    return [struct.unpack_from("<QQII", pay) for typ, pay, _ in records(path) if typ == 11]


def slot_list(path):
    """(delta, first slot, blocks) of each BLKS record naming a slot."""
    out = []
    for typ, pay, _ in records(path):
        if typ == 10:
            delta, _, mask, slot1 = struct.unpack_from("<QQII", pay)
            if slot1:
                out.append((delta, slot1 - 1, bin(mask).count("1")))
    return out


def with_env(p, env, fn):
    """Unmount, mount with the environment variables env set, run fn(),
    unmount, mount again without them."""
    p.mounts[-1].stop()
    os.environ.update(env)
    try:
        p.mount()
        fn()
    finally:
        for k in env:
            del os.environ[k]
        if p.mounts[-1].proc is not None:
            p.mounts[-1].stop()
    p.mount()


def first_writes(f, rng, n, lo=128):
    """n 4 KiB first writes into distinct blocks from block lo on (the
    blocks before are probes', see probes())."""
    blocks = rng.sample(range(lo, len(f.model) // 4096), n)
    for b in blocks:
        f.write(b * 4096, rng.randbytes(4096))
    return blocks


def bursts(f, rng, todo, cond, deadline=2 * DEADLINE):
    """4 KiB first writes into blocks taken from todo, 30 at a time with a
    pause of 0.3 s after each burst (the zeroer turns a generation
    meanwhile), until cond() holds: as many bursts as a loaded box needs."""
    t0 = time.monotonic()
    while todo and not cond() and time.monotonic() - t0 < deadline:
        for b in todo[:30]:
            f.write(b * 4096, rng.randbytes(4096))
        del todo[:30]
        if not cond():
            time.sleep(0.3)


def generations(t, p, vol, seed):
    """Generations of 256 KiB (SPACEFS_CKPT_FILL_KIB) in turns in the two
    fill files; kill -9; then a mount with the default generation (that
    layer takes no more slots but reads its own)."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    ck = lambda: read(os.path.join(root, ".checkpoints", "gen", "gens.bin"))
    st = {}

    def run():
        f, st["m"] = checkpointed(p, vol, "gens.bin", "gen", rng)
        st["f"] = f
        known, free = fill_ids(p, vol), probes()
        st["free"] = free
        f.write(4096, rng.randbytes(4096))
        wait_fill(t, p, vol, "generations", known, f, rng, free)
        todo = rng.sample(range(128, FILE // 4096), FILE // 4096 - 128)
        bursts(f, rng, todo, lambda: len({s // 64 for _, s, _ in
                                          slot_list(log_paths(p, vol)[0])}) >= 4)
        st["todo"] = todo
        f.sync()
        x = log_paths(p, vol)[0]
        fills = fill_recs(x)
        t.eq(sorted({w for _, _, w, _ in fills}), [0, 1],
             f"{vol}: fill files in both places ({len(fills)} FILL records)")
        t.ok(all(k == 256 for _, _, _, k in fills), f"{vol}: FILL records say 256 KiB generations")
        gens = {s // 64 for _, s, _ in slot_list(x)}
        t.ok(len(gens) >= 4, f"{vol}: slots from {len(gens)} generations ({sorted(gens)[:12]})")
        t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact (generations)")
        t.eq(sha(ck()), sha(st["m"]), f"{vol}: checkpoint exact (generations)")
        p.mounts[-1].kill9()
        p.mount()
        t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact after kill -9 (gen)")
        before = {s for _, s, _ in slot_list(log_paths(p, vol)[0])}
        past = lambda: {s for _, s, _ in slot_list(log_paths(p, vol)[0])} - before
        t.ok(probe_until(f, rng, st["free"], past),
             f"{vol}: after the remount a first write took a slot")
        for b in st["todo"][:60]:
            f.write(b * 4096, rng.randbytes(4096))
        after = past()
        t.ok(after and min(after) // 64 > max(before) // 64,
             f"{vol}: after the remount slots from the next generation on "
             f"({max(before) // 64} -> {min(after or {0}) // 64})")
        t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after the remount (gen)")

    with_env(p, {"SPACEFS_CKPT_FILL_KIB": "256"}, run)
    f = st["f"]
    n0 = len(slot_list(log_paths(p, vol)[0]))
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: default generation: the file reads")
    t.eq(sha(ck()), sha(st["m"]), f"{vol}: default generation: the checkpoint reads")
    random_writes(f, rng, 40, 0, FILE)
    t.eq(len(slot_list(log_paths(p, vol)[0])), n0,
         f"{vol}: a layer with another generation size takes no more slots")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: and its first writes read back")
    p.spacectl("checkpoint", "merge", p.source, vol, "gen", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after the merge (generations)")
    t.eq(differencing_left(p, vol, names_in(root)), [], f"{vol}: no layer or fill data left (gen)")
    os.unlink(f.path)


def gen_boundary(t, p, vol, seed):
    """Generations of 64 KiB (16 slots, one lane: slots are taken in
    order): 4 KiB first writes block after block give neighbouring blocks
    slots k and k + 1 across a generation's end (k + 1 in the other fill
    file), which a read or a fold must split (layer_io's t % gs == 0)."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    ck = lambda: read(os.path.join(root, ".checkpoints", "gb", "gb.bin"))
    st = {}

    def crossing():
        """(granule, block) of a block whose slot ends a generation and
        whose next block has the next slot, in the layer's BLKS records."""
        at = {}
        for x in log_paths(p, vol)[:1]:
            for typ, pay, _ in records(x):
                if typ == 10:
                    d, g, mask, s1 = struct.unpack_from("<QQII", pay)
                    if d == st["delta"] and s1:
                        bs = [b for b in range(16) if mask >> b & 1]
                        for i, b in enumerate(bs):
                            at[(g, b)] = s1 - 1 + i
        return [(g, b) for (g, b), k in at.items()
                if k % 16 == 15 and at.get((g, b + 1)) == k + 1]

    def run():
        f, st["m"] = checkpointed(p, vol, "gb.bin", "gb", rng)
        st["f"] = f
        known = fill_ids(p, vol)
        f.write(4096, rng.randbytes(4096))
        wait_fill(t, p, vol, "64 KiB generations", known, f, rng, probes())
        new = fill_ids(p, vol) - known
        st["delta"] = min(new)[0] if new else None
        t0, g = time.monotonic(), 8
        # granules 8.. block by block, a pause between granules (the
        # zeroer zeroes the next generation), until a run crosses
        while not crossing() and g < FILE // G and time.monotonic() - t0 < DEADLINE:
            f.write(g * G + 4096 * rng.randrange(16), rng.randbytes(4096))  # shifts the phase
            for b in range(16):
                f.write(g * G + 4096 * b, rng.randbytes(4096))
            g += 2
            time.sleep(0.1)
        f.sync()
        where = crossing()
        t.ok(where, f"{vol}: neighbouring blocks in slots across a generation's end ({where[:3]})")
        t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact (gen boundary)")
        t.eq(sha(ck()), sha(st["m"]), f"{vol}: checkpoint exact (gen boundary)")
        st["where"] = where

    with_env(p, {"SPACEFS_CKPT_FILL_KIB": "64"}, run)
    f = st["f"]
    for g, b in st["where"][:4]:  # remounted (no page cache): a read of the two blocks
        with open(f.path, "rb") as fh:
            fh.seek(g * G + b * 4096 + 100)
            got = fh.read(8192)
        t.eq(got, bytes(f.model[g * G + b * 4096 + 100:g * G + b * 4096 + 8292]),
             f"{vol}: a read over the two blocks after a remount (granule {g}, block {b})")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: remounted: exact (gen boundary)")
    p.spacectl("checkpoint", "create", p.source, vol, "gb2", "gb.bin")
    random_writes(f, rng, 60, 0, FILE)
    p.spacectl("checkpoint", "merge", p.source, vol, "gb2", "--wait")  # folds into the slots
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after a fold (gen boundary)")
    t.eq(sha(ck()), sha(st["m"]), f"{vol}: checkpoint exact after the fold (gen boundary)")
    p.spacectl("checkpoint", "merge", p.source, vol, "gb", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after the merge (gen boundary)")
    os.unlink(f.path)


def daemon_cpu(p):
    """CPU seconds the daemon has used."""
    with open(f"/proc/{p.mounts[-1].proc.pid}/stat") as fh:
        v = fh.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def cap_and_fault(t, p, vol, seed):
    """The fill cap (SPACEFS_CKPT_FILL_MAX_KIB): past it first writes go
    to their offsets; a fill file that cannot be made (SPACEFS_FAULT=
    fill:1): one line, no spinning zeroer, first writes at offsets."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    st = {}

    def capped():
        f, st["m"] = checkpointed(p, vol, "cap.bin", "cap", rng)
        st["f"] = f
        known = fill_ids(p, vol)
        before = len(log_tail(p, 1 << 22))
        f.write(4096, rng.randbytes(4096))
        wait_fill(t, p, vol, "cap", known, f, rng, probes())
        bursts(f, rng, rng.sample(range(128, FILE // 4096), FILE // 4096 - 128),
               lambda: "fill files at their cap" in log_tail(p, 1 << 22)[before:])
        f.sync()
        sl = [s for _, s, _ in slot_list(log_paths(p, vol)[0])]
        t.ok(sl and max(sl) < 128, f"{vol}: slots only within the cap ({len(sl)}, "
                                   f"highest {max(sl or [0])})")
        t.ok("fill files at their cap (512 KiB)" in log_tail(p, 1 << 22)[before:],
             f"{vol}: the cap is said in the log")
        t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact (cap)")

    with_env(p, {"SPACEFS_CKPT_FILL_KIB": "256", "SPACEFS_CKPT_FILL_MAX_KIB": "512"}, capped)
    f = st["f"]
    ck = os.path.join(root, ".checkpoints", "cap", "cap.bin")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: remounted: live file exact (cap)")
    t.eq(sha(read(ck)), sha(st["m"]), f"{vol}: remounted: checkpoint exact (cap)")
    p.spacectl("checkpoint", "merge", p.source, vol, "cap", "--wait")

    def fault():
        f, st["m"] = checkpointed(p, vol, "nofill.bin", "nf", rng)
        st["f"] = f
        before = len(log_tail(p, 1 << 22))
        f.write(4096, rng.randbytes(4096))
        said = lambda: "cannot create a fill file" in log_tail(p, 1 << 22)[before:]
        t0 = time.monotonic()
        while not said() and time.monotonic() - t0 < DEADLINE:
            time.sleep(0.1)
        first_writes(f, rng, 100)
        cpu0 = daemon_cpu(p)
        time.sleep(2.0)
        cpu = daemon_cpu(p) - cpu0
        t.ok(cpu < 0.5, f"{vol}: idle daemon after the failed fill file ({cpu:.2f} s CPU in 2 s)")
        lines = [ln for ln in log_tail(p, 1 << 22)[before:].splitlines()
                 if "cannot create a fill file" in ln]
        t.eq(len(lines), 1, f"{vol}: one line says so ({lines[:1]})")
        t.eq(blks_slots(p, vol)[1:], (0, 0), f"{vol}: no slots, no fill file logged")
        t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact (no fill)")

    with_env(p, {"SPACEFS_FAULT": "fill:1"}, fault)
    f = st["f"]
    ck = os.path.join(root, ".checkpoints", "nf", "nofill.bin")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: remounted: live file exact (no fill)")
    t.eq(sha(read(ck)), sha(st["m"]), f"{vol}: remounted: checkpoint exact (no fill)")
    p.spacectl("checkpoint", "merge", p.source, vol, "nf", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after the merge (no fill)")
    os.unlink(f.path)
    os.unlink(os.path.join(root, "cap.bin"))


def bad_fills(t, p, vol, seed):
    """Replay refuses impossible slots and FILL records, each with one
    line; the log put back, everything reads."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    f, m = checkpointed(p, vol, "bad.bin", "bad", rng)
    known = fill_ids(p, vol)
    f.write(4096, rng.randbytes(4096))
    wait_fill(t, p, vol, "bad", known, f, rng, probes())
    t0 = time.monotonic()  # the second fill file: made right after the first is zeroed
    while len(fill_recs(log_paths(p, vol)[0])) < 2 and time.monotonic() - t0 < DEADLINE:
        time.sleep(0.1)
    first_writes(f, rng, 40)
    f.sync()
    p.mounts[-1].stop()
    logs = log_paths(p, vol)
    saved = {x: read(x) for x in logs}
    fills = fill_recs(logs[0])
    t.eq(len(fills), 2, f"{vol}: the layer has two fill files ({fills})")
    gs = fills[0][3] // 4

    def edit(fn):
        out = {}
        for x in logs:
            parts = []
            for typ, pay, raw in records_of(saved[x]):
                seq = struct.unpack_from("<Q", raw, 12)[0]
                new = fn(typ, pay)
                if new is not None:
                    parts.append(record(typ, new, seq) if new != pay else raw)
            out[x] = b"".join(parts)
        return out

    def drop_fill(typ, pay):
        return None if typ == 11 else pay

    def far_slot(typ, pay):
        if typ == 10 and struct.unpack_from("<QQII", pay)[3]:
            d, g, mk, s1 = struct.unpack_from("<QQII", pay)
            return struct.pack("<QQII", d, g, mk, s1 + 2 * gs * 100)
        return pay

    def same_place(typ, pay):
        if typ == 11 and struct.unpack_from("<QQII", pay)[2] == 1:
            d, fl, w, k = struct.unpack_from("<QQII", pay)
            return struct.pack("<QQII", d, fl, 0, k)
        return pay

    def missing(typ, pay):
        if typ == 11:
            d, fl, w, k = struct.unpack_from("<QQII", pay)
            return struct.pack("<QQII", d, fl + (1 << 40), w, k)
        return pay

    refused(t, p, f.path, edit(drop_fill), f"{vol}: a BLKS slot without a fill file",
            "has no fill file there")
    refused(t, p, f.path, edit(far_slot), f"{vol}: a slot past its fill file's size",
            "is shorter than its slots in BLKS records reach")
    refused(t, p, f.path, edit(same_place), f"{vol}: a second fill file in one place",
            "a second fill file in the same place")
    refused(t, p, f.path, edit(missing), f"{vol}: a FILL record naming no file",
            "named by a FILL record is missing")
    for x, b in saved.items():
        with open(x, "wb") as fh:
            fh.write(b)
    p.mount()
    ck = os.path.join(root, ".checkpoints", "bad", "bad.bin")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: the logs put back: the file reads")
    t.eq(sha(read(ck)), sha(m), f"{vol}: the logs put back: the checkpoint reads")
    p.mounts[-1].stop()
    # a FILL record naming a missing file no slot is in: a create lost to
    # power loss (its record written, the metadata commit not; a slot is
    # named only after a commit): the mount drops it with one line
    used = {(s // gs) & 1 for _, s, _ in slot_list(logs[0])}
    w = next((k for k in (1, 0) if k not in used), None)
    t.ok(w is not None, f"{vol}: a fill file holds no slot yet (slots in {sorted(used)})")

    def lost(typ, pay):
        if typ == 11 and struct.unpack_from("<QQII", pay)[2] == w:
            d, fl, wh, k = struct.unpack_from("<QQII", pay)
            return struct.pack("<QQII", d, fl + (1 << 40), wh, k)
        return pay

    for x, b in edit(lost).items():
        with open(x, "wb") as fh:
            fh.write(b)
    before = len(log_tail(p, 1 << 22))
    p.mount()
    said = [ln for ln in log_tail(p, 1 << 22)[before:].splitlines()
            if "named by a FILL record is missing and holds no slot" in ln]
    t.eq(len(said), 1, f"{vol}: a lost unused fill file: mounted, one line ({said[:1]})")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: a lost unused fill file: the file")
    t.eq(sha(read(ck)), sha(m), f"{vol}: a lost unused fill file: the checkpoint")
    first_writes(f, rng, 40)
    f.sync()
    p.mounts[-1].stop()
    p.mount()
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: and after more writes and a remount")
    t.eq(sha(read(ck)), sha(m), f"{vol}: and its checkpoint")
    p.spacectl("checkpoint", "merge", p.source, vol, "bad", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after the merge (bad)")
    os.unlink(f.path)


def synced_during(p, action):
    """The fdatasync/fsync calls (strace -y lines) the daemon makes while
    action() runs, or None without a working strace."""
    lines = strace_during(p, "fdatasync,fsync", action, DEADLINE)
    return None if lines is None else [ln for ln in lines if "sync(" in ln]


def fill_scrub(t, p, vol, seed):
    """fsync of a checkpointed file syncs its fill files; a merge into a
    layer with slots syncs that layer's fill files before dropping the
    merged one; scrub finds and repairs a byte flipped in a slotted block
    on one mirror copy."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    known = {fl for _, fl, _, _ in fill_recs(log_paths(p, vol)[0])}
    f, m1 = checkpointed(p, vol, "scrub.bin", "sc1", rng)
    ck = os.path.join(root, ".checkpoints", "sc1", "scrub.bin")
    known = fill_ids(p, vol)
    f.write(4096, rng.randbytes(4096))
    wait_fill(t, p, vol, "scrub", known, f, rng, probes())
    blocks = first_writes(f, rng, 60)
    f.sync()
    fills = {fl for _, fl, _, _ in fill_recs(log_paths(p, vol)[0])} - known
    names = lambda lines: any(f"{fl:016x}." in ln for fl in fills for ln in lines)

    def one_fsynced_write():
        b = first_writes(f, rng, 1)
        f.sync()
        blocks.extend(b)

    lines = synced_during(p, one_fsynced_write)
    if lines is None:
        t.ok(True, f"{vol}: fsync syncs fill files # SKIP no working strace")
    else:
        t.ok(names(lines), f"{vol}: fsync synced the layer's fill files ({len(lines)} syncs)")
    p.spacectl("checkpoint", "create", p.source, vol, "sc2", "scrub.bin")
    for b in blocks[:30]:  # over sc1's slotted blocks: the fold rewrites those slots
        f.write(b * 4096 + 512, rng.randbytes(3000))
    lines = synced_during(p, lambda: p.spacectl("checkpoint", "merge", p.source, vol, "sc2",
                                                "--wait"))
    if lines is None:
        t.ok(True, f"{vol}: a merge syncs fill files # SKIP no working strace")
    else:
        t.ok(names(lines), f"{vol}: a merge into the slotted layer synced its fill files")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after merging sc2 (scrub)")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: clean unmount before the damage")
    hit = None
    for fl in sorted(fills):
        for c in sorted(glob.glob(os.path.join(p.dir, "d*", "vol", vol, "data", "*",
                                               f"{fl:016x}.*"))):
            if c.endswith(".crc") or hit:
                continue
            b = bytearray(read(c))
            i = next((k for k in range(0, len(b), 61) if b[k]), None)
            if i is not None:
                b[i] ^= 0xFF
                with open(c, "r+b") as fh:
                    fh.seek(i)
                    fh.write(bytes([b[i]]))
                hit = (c, i)
    t.ok(hit is not None, f"{vol}: a byte of a slotted block flipped on one copy ({hit})")
    p.mount()
    out = p.spacectl("scrub", p.source, vol, "--wait").stdout
    t.ok("bad 1, repaired 1," in out, f"{vol}: scrub finds and repairs it in the fill file "
                                       f"({out.strip().splitlines()[-1:]})")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: the file reads exact (scrub)")
    t.eq(sha(read(ck)), sha(m1), f"{vol}: the checkpoint reads its instant (scrub)")
    p.spacectl("checkpoint", "merge", p.source, vol, "sc1", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: exact after the merge (scrub)")
    os.unlink(f.path)


def refused(t, p, path, logs, what, line):
    """Write logs ({path: bytes}) and mount: the volume is not served
    (path absent) and the daemon says `line`; then unmount."""
    for x, b in logs.items():
        with open(x, "wb") as fh:
            fh.write(b)
    before = len(log_tail(p, 1 << 22))
    try:
        p.mount()
        ok = not os.path.exists(path)
    except RuntimeError:
        ok = True
    t.ok(ok, f"{what} is refused (volume not served)")
    t.ok(line in log_tail(p, 1 << 22)[before:], f"{what}: refused with one clear line")
    if p.mounts[-1].proc is not None:
        p.mounts[-1].stop()


def merge_lower(t, p, vol, seed):
    """The older of two checkpoints merged first, then unmount: the daemon
    freed the merged layer's maps twice at exit (a stale copy of the
    moved-down layer's pointers left in the slot past the top)."""
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    f = File(os.path.join(root, "lower.bin"), rng.randbytes(MiB))
    p.spacectl("checkpoint", "create", p.source, vol, "l1", "lower.bin")
    random_writes(f, rng, 20, 0, MiB)
    p.spacectl("checkpoint", "create", p.source, vol, "l2", "lower.bin")
    m2 = bytes(f.model)
    random_writes(f, rng, 20, 0, MiB)
    p.spacectl("checkpoint", "merge", p.source, vol, "l1", "--wait")
    l2 = os.path.join(root, ".checkpoints", "l2", "lower.bin")
    t.eq(sha(read(l2)), sha(m2), f"{vol}: l2 reads its instant after l1 (below it) merged")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: daemon exits 0 on unmount after merging the lower one")
    p.mount()
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact after the remount")
    t.eq(sha(read(l2)), sha(m2), f"{vol}: l2 still reads its instant after the remount")
    p.spacectl("checkpoint", "merge", p.source, vol, "l2", "--wait")
    t.eq(sha(read(f.path)), sha(bytes(f.model)), f"{vol}: live file exact after both merges")
    os.unlink(f.path)


def main():
    t = Tap()
    p = Pool(ndisks=4)
    try:
        p.volume("m2", "mirror", "--copies", "2", "--interleave", "64K")
        p.volume("p1", "parity", "--parity", "1", "--interleave", "64K")
        p.mount()
        one(t, p, "m2", 1)
        one(t, p, "p1", 2)
        merge_lower(t, p, "m2", 3)
        merge_lower(t, p, "p1", 4)
        formats(t, p, "m2")
        slots(t, p, "m2", 5)
        slots(t, p, "p1", 6)
        format2(t, p, "m2", 7)
        generations(t, p, "m2", 8)
        generations(t, p, "p1", 9)
        gen_boundary(t, p, "m2", 13)
        gen_boundary(t, p, "p1", 14)
        cap_and_fault(t, p, "m2", 10)
        bad_fills(t, p, "m2", 11)
        fill_scrub(t, p, "m2", 12)
        stop_clean(t, p.mounts[-1])
    except Exception as e:
        t.ok(False, f"exception: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()
    t.done()


if __name__ == "__main__":
    main()
