#!/usr/bin/env python3
"""Journal disks (spacectl disk add --usage journal): the parity journals
of a pool's parity volumes on a disk of their own.

One pool of 6 data disks and one journal disk (index 6), four parity
volumes: parity 1 and parity 2, each in write-back and write-through
mode, each with one file whose every 4 KiB block holds known content
(block number, generation, bytes derived from both).  Each volume keeps
parity + 1 journal copies: one on the journal disk, the rest on its own
metadata disks (docs/ARCHITECTURE.md, "Journal disks").

  1. journal records land on the journal disk: status --json counts the
     record bytes of each copy (copy_disk, copy_bytes), the first copy on
     disk 6, as many bytes there as on the others; the journal disk gets
     no chunk I/O and holds no chunk file;
  2. kill -9 with records not applied (write-back held by wbhold), the
     copies on the data disks deleted, remount: the replay can only read
     the journal disk, and every block holds its last written content;
  3. the journal disk removed mid-write: every write still succeeds, the
     volumes stay healthy; the write-through journals are back at parity
     + 1 copies on data disks without a remount (moved at a checkpoint,
     test_journal_copies); the write-back ones, whose records wbhold keeps
     unapplied, cannot checkpoint, so their copy on disk 6 stays out of
     service (status --json and the status text say so); kill -9,
     remount without it: the journals fall back to the data disks (parity
     + 1 copies, none on disk 6), replayed, data exact;
  4. the failed journal disk replaced (disk replace --wait): after the
     next mount the first copy is on disk 6 again, records land there,
     the older copy a data disk no longer needs is removed, data exact
     after a kill -9 and a remount;
  5. the journal disk retired: after the next mount no copy is on it;
  6. a journal disk added through the mounted daemon: the copies move
     there without a remount, and stay there after one.
"""
import json
import os
import random
import re
import struct
import time

import ondisk
from harness import Pool, Tap, log_tail

BLK = 4096
NBLK = 480  # 30 stripes of parity 1 (4 x 16 KiB), 40 of parity 2 (3 x 16 KiB)
JDISK = 6
VOLS = {  # name: (parity, journal mode)
    "p1wb": (1, "write-back"),
    "p1wt": (1, "write-through"),
    "p2wb": (2, "write-back"),
    "p2wt": (2, "write-through"),
}


def block(b, g):
    """Content of generation g of block b."""
    head = struct.pack("<QQ", b, g)
    return head + random.Random(b << 24 | g).randbytes(BLK - len(head))


class JournalDisk:
    def __init__(self, t, seed):
        self.t = t
        self.rng = random.Random(seed)
        self.pool = Pool(6, prefix="spacefs-jd-")
        self.acked = {v: {b: 0 for b in range(NBLK)} for v in VOLS}

    def status(self):
        return json.loads(self.pool.spacectl("status", self.pool.source, "--json").stdout)

    def journals(self):
        st = self.status()
        return {v["name"]: v.get("journal_live") or {} for v in st["volumes"]}, st

    def mount(self, fault=None, opts=""):
        if fault:
            os.environ["SPACEFS_FAULT"] = fault
        try:
            return self.pool.mount(opts)
        finally:
            os.environ.pop("SPACEFS_FAULT", None)

    def path(self, v):
        return os.path.join(self.pool.mnt, v, "f")

    def write_random(self, n, midway=None):
        """n random 4 KiB writes per volume, interleaved; midway() after
        half of them.  Returns the writes that failed."""
        fds = {v: os.open(self.path(v), os.O_WRONLY) for v in VOLS}
        failed = []
        try:
            for i in range(n):
                if midway and i == n // 2:
                    midway()
                for v in VOLS:
                    b = self.rng.randrange(NBLK)
                    g = self.acked[v][b] + 1
                    try:
                        os.pwrite(fds[v], block(b, g), b * BLK)
                        self.acked[v][b] = g
                    except OSError as e:
                        failed.append((v, b, str(e)))
        finally:
            for fd in fds.values():
                os.close(fd)
        return failed

    def check(self, what):
        """Every block of every volume holds its last written content."""
        bad = {}
        for v in VOLS:
            fd = os.open(self.path(v), os.O_RDONLY)
            try:
                for b in range(NBLK):
                    try:
                        data = os.pread(fd, BLK, b * BLK)
                    except OSError:
                        data = b""
                    if data != block(b, self.acked[v][b]):
                        bad.setdefault(v, []).append(b)
            finally:
                os.close(fd)
        if not self.t.eq(bad, {}, f"{what}: every block of the 4 volumes holds its last write"):
            self.t.diag(log_tail(self.pool))

    def journal_files(self, v):
        """Disk indexes holding a journal file of volume v."""
        disks = self.pool.disks + [self.jdir]
        return [i for i, d in enumerate(disks)
                if os.path.exists(os.path.join(d, "vol", v, "journal"))]

    def copies_ok(self, jl, want_jdisk, what):
        t = self.t
        for v, (par, mode) in VOLS.items():
            j = jl.get(v, {})
            disks = j.get("copy_disk", [])
            t.ok(j.get("mode") == mode and len(disks) == par + 1 and len(set(disks)) == par + 1,
                 f"{what}: {v} keeps {par + 1} journal copies on distinct disks {disks}")
            t.eq(disks[:1] == [JDISK], want_jdisk,
                 f"{what}: {v}: first copy {'on' if want_jdisk else 'not on'} the journal disk")
            if not want_jdisk:
                t.ok(JDISK not in disks, f"{what}: {v}: no copy on disk {JDISK}")

    def run(self):
        try:
            self._run()
        finally:
            os.environ.pop("SPACEFS_FAULT", None)
            self.pool.cleanup()

    def _run(self):
        t, pool = self.t, self.pool
        for v, (par, mode) in VOLS.items():
            pool.volume(v, "parity", "--parity", str(par), "--columns", "5", "--interleave",
                        "16K", "--journal-mode", mode, "--journal-size", "64M")
        self.jdir = os.path.join(pool.dir, "j0")
        os.makedirs(self.jdir)
        r = pool.spacectl("disk", "add", pool.source, self.jdir, "--usage", "journal")
        t.ok(f"disk {JDISK} added as a journal disk" in r.stdout,
             f"journal disk added to a pool with parity volumes: {r.stdout.strip()}")
        # docs/FORMAT.md read independently (tests/integration/ondisk.py)
        sbs = [ondisk.read_superblock(d) for d in pool.disks + [self.jdir]]
        t.ok(all(sb["version"] == 3 and sb["usage"] == ["data"] * 6 + ["journal"] for sb in sbs),
             "every disk's superblock: format 3, usage journal for disk 6 only")
        t.ok(all(JDISK not in v["meta"] for v in sbs[0]["volumes"].values()),
             "no volume's metadata on the journal disk")
        m = pool.mount()
        for v in VOLS:
            with open(self.path(v), "wb") as f:
                for b in range(NBLK):
                    f.write(block(b, 0))
                f.flush()
                os.fsync(f.fileno())
        t.eq(m.stop(), 0, "files laid out, clean unmount")

        # 1-2: records land on the journal disk; kill -9 and replay from it
        m = self.mount("wbhold:600000")
        t.eq(self.write_random(120), [], "480 random 4 KiB writes acknowledged")
        jl, st = self.journals()
        self.copies_ok(jl, True, "journal disk")
        for v in VOLS:
            j = jl.get(v, {})
            b = j.get("copy_bytes", [0])
            t.ok(b[0] > 0 and len(set(b)) == 1 and j.get("records", 0) >= 100,
                 f"{v}: {j.get('records')} records, {b[0]} bytes on the journal disk, "
                 f"the same on every copy {b}")
            if VOLS[v][1] == "write-back":
                t.ok(j.get("unapplied", 0) > 0, f"{v}: {j.get('unapplied')} records held unapplied")
        dvols = (st.get("daemon") or {}).get("volumes", [])
        jio = sum(d["reads"] + d["writes"] for dv in dvols for d in dv.get("disks", [])
                  if d["index"] == JDISK)
        chunks = [os.path.join(r, f) for r, _, fs in os.walk(self.jdir) for f in fs
                  if f not in ("journal", "spacefs.pool")]
        t.ok(len(dvols) == 4 and jio == 0 and chunks == [],
             f"the journal disk gets no chunk I/O ({jio}) and holds no chunk file {chunks[:3]}")
        m.kill9()
        gone = 0
        for v in VOLS:
            for i in self.journal_files(v):
                if i != JDISK:
                    os.unlink(os.path.join(pool.disks[i], "vol", v, "journal"))
                    gone += 1
        t.eq(gone, sum(p for p, _ in VOLS.values()),
             "killed -9; the journal copies on the data disks deleted")
        mark = len(log_tail(pool, 10**9))
        m = self.mount()
        log = log_tail(pool, 10**9)[mark:]
        for v in VOLS:
            hit = re.search(rf"volume {v}: journal: replayed ([0-9]+)", log)
            t.ok(hit is not None and int(hit.group(1)) > 0,
                 f"{v}: replayed from the journal disk alone ({hit.group(0) if hit else 'no replay'})")
        self.check("kill -9, replay from the journal disk")
        self.copies_ok(self.journals()[0], True, "after the replay")
        t.eq(m.stop(), 0, "clean unmount")

        # 3: the journal disk removed mid-write
        m = self.mount("wbhold:600000")

        def remove():
            os.rename(self.jdir, self.jdir + ".gone")
            time.sleep(2.0)  # the health watcher looks once a second
        t.eq(self.write_random(100, remove), [],
             "journal disk removed mid-write: every write acknowledged")
        jl, st = self.journals()
        t.eq(st["disks"][JDISK]["state"], "failed", "the journal disk is marked failed")
        # the write-through journals move at a checkpoint; up to 45 s: a
        # move that could not be made is forced again after 30 s
        deadline = time.time() + 45
        while time.time() < deadline:
            if all(jl.get(v, {}).get("copies") == par + 1
                   for v, (par, mode) in VOLS.items() if mode == "write-through"):
                break
            time.sleep(0.25)
            jl, st = self.journals()
        for v, (par, mode) in VOLS.items():
            j = jl.get(v, {})
            live = dict(zip(j.get("copy_disk", []), j.get("copy_in_service", [])))
            if mode == "write-back":
                t.ok(live.get(JDISK) == 0 and j.get("copies") == par,
                     f"{v}: records held unapplied, no checkpoint: the copy on disk {JDISK} "
                     f"out of service, {j.get('copies')} carry the journal")
            else:
                t.ok(JDISK not in live and j.get("copies") == par + 1 and all(live.values()),
                     f"{v}: {j.get('copies')} copies in service again, none on disk {JDISK}: "
                     f"{live}")
        vstate = {v["name"]: v["state"] for v in st["volumes"]}
        t.eq(set(vstate.values()), {"healthy"}, "the volumes stay healthy (no data on the journal disk)")
        text = pool.spacectl("status", pool.source).stdout
        t.ok(f"journal copy on disk {JDISK} out of service" in text,
             "spacectl status names the journal copy out of service")
        m.kill9()
        mark = len(log_tail(pool, 10**9))
        m = self.mount()
        log = log_tail(pool, 10**9)[mark:]
        t.ok(len(re.findall(r"journal: replayed [1-9]", log)) == 4,
             "killed -9, remounted without the journal disk: all 4 journals replayed")
        self.check("journal disk lost mid-write, kill -9, remount")
        self.copies_ok(self.journals()[0], False, "without the journal disk")

        # 4: replaced
        newj = os.path.join(pool.dir, "j1")
        os.makedirs(newj)
        r = pool.spacectl("disk", "replace", pool.source, str(JDISK), newj, "--wait", check=False)
        t.eq(r.returncode, 0, f"failed journal disk replaced ({r.stderr.strip()[-200:]})")
        t.eq(self.status()["disks"][JDISK]["state"], "healthy", "the replacement is healthy")
        t.eq(m.stop(), 0, "clean unmount")
        self.jdir = newj
        m = self.mount()
        t.eq(self.write_random(60), [], "240 more writes")
        jl, _ = self.journals()
        self.copies_ok(jl, True, "replaced journal disk")
        for v in VOLS:
            b = jl.get(v, {}).get("copy_bytes", [0])
            t.ok(b[0] > 0, f"{v}: records land on the replacement ({b[0]} bytes)")
            files = self.journal_files(v)
            t.eq(len(files), VOLS[v][0] + 1, f"{v}: journal files only where its copies are {files}")
        m.kill9()
        m = self.mount()
        self.check("replaced journal disk, kill -9, remount")

        # 5: retired
        r = pool.spacectl("disk", "retire", pool.source, str(JDISK), "--wait", check=False)
        t.eq(r.returncode, 0, f"journal disk retired ({r.stderr.strip()[-200:]})")
        t.eq(m.stop(), 0, "clean unmount")
        m = self.mount()
        self.copies_ok(self.journals()[0], False, "retired journal disk")
        self.check("retired journal disk, remount")

        # 6: another journal disk added through the mounted daemon: the
        # journals move there while open (at a checkpoint)
        j2 = os.path.join(pool.dir, "j2")
        os.makedirs(j2)
        r = pool.spacectl("disk", "add", pool.source, j2, "--usage", "journal", check=False)
        t.ok(r.returncode == 0 and "disk 7 added as a journal disk" in r.stdout,
             f"journal disk added through the daemon: {(r.stdout + r.stderr).strip()}")
        deadline = time.time() + 45  # past the 30 s before a move is forced again
        while time.time() < deadline:
            jl, _ = self.journals()
            if all(j.get("copy_disk", [None])[0] == 7 for j in jl.values()):
                break
            time.sleep(0.25)
        t.ok(all(j.get("copy_disk", [None])[0] == 7 and all(j.get("copy_in_service", [0]))
                 for j in jl.values()),
             f"without a remount every journal's first copy moved to disk 7 "
             f"{[j.get('copy_disk') for j in jl.values()]}")
        self.check("journal disk added live, copies moved")
        t.eq(m.stop(), 0, "clean unmount")
        m = self.mount()
        jl, _ = self.journals()
        t.ok(all(j.get("copy_disk", [None])[0] == 7 for j in jl.values()),
             f"after a remount every journal's first copy is on disk 7 "
             f"{[j.get('copy_disk') for j in jl.values()]}")
        self.check("journal disk added live, remount")
        t.eq(m.stop(), 0, "clean unmount")
        for mm in pool.mounts:
            rep = mm.sanitizer_report()
            if rep:
                t.ok(False, "no sanitizer report")
                t.diag(rep[-3000:])
                break


def main():
    t = Tap()
    seed = int(os.environ.get("SPACEFS_SEED", time.time()))
    t.diag(f"seed {seed}")
    JournalDisk(t, seed).run()
    t.done()


if __name__ == "__main__":
    main()
