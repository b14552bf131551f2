#!/usr/bin/env python3
"""Checkpoints: concurrent first writes whose block records share log
appends (group commit of BLKS records, fs/ckpt.c log_blks), real data end
to end, ASan daemon, on a mirror 2 and a parity 1 volume (interleave 64K).

1. 16 files of 1 MiB in a directory and checkpoint c1 of it; 16 threads
   write 4 KiB blocks with O_DIRECT, each into a file of its own (the
   kernel runs writes to one FUSE file one at a time; the group commit is
   per volume), every write the first to its block (so every one logs a
   BLKS record), until the daemon's counters show records that shared an
   append (spacefs_ckpt_log_records_total > spacefs_ckpt_log_appends_total:
   the batched path ran).  The live files read every block written, c1
   the instant.
2. kill -9 of the daemon after those writes were answered, remount: the
   same (an answered write's record is in the log).
3. The threads write again (new first writes under a second checkpoint
   c2) and the daemon is killed -9 a third of the way in: after a
   remount c1 and c2 read their instants exactly, every block answered
   before the kill reads its new bytes, and every block in flight reads
   either its old or its new bytes, nothing else.
4. Merge c2 then c1: the files are what the remounted live files read,
   and stay so after a remount.
5. (mirror 2) The log lost: remounted with SPACEFS_FAULT=cklog:N, every
   group append from the Nth on fails.  The threads write first writes
   again under a checkpoint c3 until a failed append carried several
   writers' records: each of those writers is answered EIO (none 0), and
   the daemon's log names the failure.  Live files and c3 read: answered
   blocks new, failed and untouched blocks old -- before and after a
   clean remount without the fault (a failed write's record was never
   written, so it must not have been answered as written).
Checked to fail: with the leader appending only its own record of a
batch (and answering all), steps 2 and 3 fail; with a failed append
answering 0 to every writer but one, step 5 fails.
"""
import errno
import hashlib
import mmap
import os
import random
import re
import threading
import time

from harness import Pool, Tap, log_tail, stop_clean

MiB, B = 1 << 20, 4096
FILE = 1 * MiB
THREADS = 16


def sha(b):
    return hashlib.sha256(b).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def counters(p, vol):
    out = p.spacectl("metrics", p.source).stdout
    val = {}
    for name in ("records", "appends"):
        m = re.search(r'^spacefs_ckpt_log_%s_total\{volume="%s"\} (\d+)' % (name, vol), out,
                      re.M)
        val[name] = int(m.group(1)) if m else -1
    return val


class Writers:
    """THREADS threads writing 4 KiB blocks, thread i into paths[i], each
    block once, in random order.  acked[(i, blk)] = bytes answered;
    inflight[(i, blk)] = bytes sent and not (yet) answered."""

    def __init__(self, paths, rng):
        self.paths, self.acked, self.inflight = paths, {}, {}
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.plans = []
        for i in range(THREADS):
            blks = list(range(FILE // B))
            rng.shuffle(blks)
            self.plans.append(blks)
        self.seed = rng.randrange(1 << 30)

    def run(self, limit):
        def work(i):
            fd = os.open(self.paths[i], os.O_WRONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, B)
            rng = random.Random(self.seed + i)
            try:
                n = 0
                while self.plans[i] and n < limit and not self.stop.is_set():
                    blk = (i, self.plans[i].pop())
                    data = rng.randbytes(B)
                    buf[:] = data
                    with self.lock:
                        self.inflight[blk] = data
                    try:
                        os.pwrite(fd, buf, blk[1] * B)
                    except OSError:
                        return  # the daemon died under it: stays in flight
                    with self.lock:
                        del self.inflight[blk]
                        self.acked[blk] = data
                    n += 1
            finally:
                buf.close()
                os.close(fd)
        self.threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        for th in self.threads:
            th.start()

    def join(self):
        for th in self.threads:
            th.join()


def apply(models, acked):
    for (i, blk), data in acked.items():
        models[i][blk * B:(blk + 1) * B] = data


def digests(paths):
    return [sha(read(x)) for x in paths]


def shas(models):
    return [sha(bytes(m)) for m in models]


def lay_out(root, d, size, rng):
    """THREADS files of `size` random bytes in directory d of root: their
    names (relative to root), paths and contents."""
    names = [f"{d}/f{i:02d}.bin" for i in range(THREADS)]
    os.mkdir(os.path.join(root, d))
    paths = [os.path.join(root, n) for n in names]
    base = [rng.randbytes(size) for _ in names]
    for path, data in zip(paths, base):
        with open(path, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
    return names, paths, base


def one(t, p, vol, seed):
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    names, paths, base = lay_out(root, "vm", FILE, rng)  # a directory's files
    cp = lambda ck: [os.path.join(root, ".checkpoints", ck, n) for n in names]

    p.spacectl("checkpoint", "create", p.source, vol, "c1", "vm")
    before = counters(p, vol)
    w = Writers(paths, rng)
    batched, rounds = False, 0
    while not batched and rounds < 30:  # ASan and 16 threads: one round nearly always
        w.run(8)
        w.join()
        rounds += 1
        now = counters(p, vol)
        recs, apps = now["records"] - before["records"], now["appends"] - before["appends"]
        batched = recs > apps > 0
    t.ok(batched, f"{vol}: concurrent first writes shared log appends "
                  f"({recs} records in {apps} appends, {rounds} round(s))")
    t.eq(len(w.inflight), 0, f"{vol}: every write answered")
    live = [bytearray(b) for b in base]
    apply(live, w.acked)
    t.eq(digests(paths), shas(live), f"{vol}: live files read every first write")
    t.eq(digests(cp("c1")), shas(base), f"{vol}: c1 reads its instant")

    p.mounts[-1].kill9()
    p.mount()
    t.eq(digests(paths), shas(live), f"{vol}: live files after kill -9 and remount")
    t.eq(digests(cp("c1")), shas(base), f"{vol}: c1 after kill -9 and remount")

    p.spacectl("checkpoint", "create", p.source, vol, "c2", "vm")
    inst2 = [bytes(m) for m in live]
    w2 = Writers(paths, rng)
    w2.run(1 << 30)
    end = time.time() + 60  # kill a third of the way in: writes surely in flight
    while len(w2.acked) < THREADS * (FILE // B) // 3 and time.time() < end:
        time.sleep(0.01)
    p.mounts[-1].kill9()
    w2.join()
    t.ok(len(w2.acked) > 0 and len(w2.inflight) > 0,
         f"{vol}: writes answered before the kill and in flight at it "
         f"({len(w2.acked)}, {len(w2.inflight)})")
    p.mount()
    got = [read(x) for x in paths]
    bad = []
    for i in range(THREADS):
        for blk in range(FILE // B):
            have = got[i][blk * B:(blk + 1) * B]
            old = inst2[i][blk * B:(blk + 1) * B]
            if (i, blk) in w2.acked:
                ok = have == w2.acked[(i, blk)]
            elif (i, blk) in w2.inflight:
                ok = have in (old, w2.inflight[(i, blk)])
            else:
                ok = have == old
            if not ok:
                bad.append((i, blk))
    t.eq(bad[:8], [], f"{vol}: after kill -9 mid-writes every block is answered-new, "
                      f"in-flight old-or-new, or untouched")
    t.eq(digests(cp("c1")), shas(base), f"{vol}: c1 exact after kill -9 mid-writes")
    t.eq(digests(cp("c2")), shas(inst2), f"{vol}: c2 exact after kill -9 mid-writes")

    p.spacectl("checkpoint", "merge", p.source, vol, "c2", "--wait")
    t.eq(digests(cp("c1")), shas(base), f"{vol}: c1 exact after merging c2")
    p.spacectl("checkpoint", "merge", p.source, vol, "c1", "--wait")
    want = [sha(g) for g in got]
    t.eq(digests(paths), want, f"{vol}: files after both merges are what the live files read")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: daemon exits 0 on unmount")
    p.mount()
    t.eq(digests(paths), want, f"{vol}: files exact after a remount")
    for x in paths:
        os.unlink(x)
    os.rmdir(os.path.join(root, "vm"))


def log_lost(t, p, vol, seed):
    """Step 5: first writes whose group appends fail (SPACEFS_FAULT=cklog)."""
    size, ok_appends = 256 * 1024, 3
    rng = random.Random(seed)
    root = os.path.join(p.mnt, vol)
    names, paths, base = lay_out(root, "lost", size, rng)
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: clean unmount before the lost-log mount")
    os.environ["SPACEFS_FAULT"] = f"cklog:{ok_appends + 1}"
    try:
        p.mount()
    finally:
        os.environ.pop("SPACEFS_FAULT", None)
    p.spacectl("checkpoint", "create", p.source, vol, "c3", "lost")
    cp = [os.path.join(root, ".checkpoints", "c3", n) for n in names]
    before = counters(p, vol)
    plans = [rng.sample(range(size // B), size // B) for _ in names]
    acked, failed, other = {}, {}, []
    lock = threading.Lock()

    def work(i, count):
        fd = os.open(paths[i], os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, B)
        wr = random.Random(seed * 1000 + i + len(plans[i]))
        try:
            for _ in range(count):
                if not plans[i]:
                    return
                blk = plans[i].pop()
                data = wr.randbytes(B)
                buf[:] = data
                try:
                    os.pwrite(fd, buf, blk * B)
                    with lock:
                        acked[(i, blk)] = data
                except OSError as e:
                    with lock:
                        if e.errno == errno.EIO:
                            failed[(i, blk)] = data
                        else:
                            other.append(e.errno)
        finally:
            buf.close()
            os.close(fd)

    shared, rounds = False, 0
    while not shared and rounds < 20:
        ths = [threading.Thread(target=work, args=(i, 4)) for i in range(THREADS)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        rounds += 1
        now = counters(p, vol)
        apps = now["appends"] - before["appends"]
        # failed appends = apps - ok_appends; more failed writes than
        # failed appends: some failed append carried several writers
        shared = len(failed) > apps - ok_appends > 0
    t.ok(shared, f"{vol}: failed appends carried several writers' records "
                 f"({len(failed)} writes failed in {apps - ok_appends} failed appends, "
                 f"{rounds} round(s))")
    t.ok(len(acked) > 0, f"{vol}: writes before the log was lost were answered ({len(acked)})")
    t.eq(other, [], f"{vol}: every failed first write was answered EIO")
    t.ok("checkpoint log append failed" in p.mounts[-1].log_text(),
         f"{vol}: the daemon's log names the failed append")
    live = [bytearray(b) for b in base]
    apply(live, acked)
    t.eq(digests(paths), shas(live), f"{vol}: live files: answered blocks new, failed ones old")
    t.eq(digests(cp), shas(base), f"{vol}: c3 reads its instant with the log lost")
    t.eq(p.mounts[-1].stop(), 0, f"{vol}: daemon exits 0 on unmount with the log lost")
    p.mount()
    t.eq(digests(paths), shas(live), f"{vol}: after a remount: answered blocks new, failed old")
    t.eq(digests(cp), shas(base), f"{vol}: c3 exact after the remount")
    p.spacectl("checkpoint", "merge", p.source, vol, "c3", "--wait")
    t.eq(digests(paths), shas(live), f"{vol}: files exact after merging c3")


def main():
    t = Tap()
    p = Pool(ndisks=4)
    try:
        p.volume("m2", "mirror", "--copies", "2", "--interleave", "64K")
        p.volume("p1", "parity", "--parity", "1", "--interleave", "64K")
        p.mount()
        one(t, p, "m2", 1)
        one(t, p, "p1", 2)
        log_lost(t, p, "m2", 3)
        stop_clean(t, p.mounts[-1])
    except Exception as e:
        t.ok(False, f"exception: {e!r}")
        t.diag(log_tail(p))
    finally:
        p.cleanup()
    t.done()


if __name__ == "__main__":
    main()
