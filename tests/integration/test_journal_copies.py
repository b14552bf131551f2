#!/usr/bin/env python3
"""A parity journal gets its copies back while mounted (issue 12: the
journal is kept with at least the volume's redundancy).

A parity volume's journal keeps parity + 1 copies on distinct disks.  When
the disk of one fails while the volume is open, the copy is dropped at
once, and the volume moves its copies, at a journal checkpoint, to where
its next open would put them (docs/ARCHITECTURE.md, "Journal disks"): the
journal is back at parity + 1 copies without a remount.  Before, it stayed
one copy short until the next mount: write-back keeps acknowledged writes
only in the journal, so a second disk lost then lost them.

For parity 1 and parity 2, each in a pool of 5 (parity 2: 6) data disks
and one journal disk, one write-back volume with one file whose every 4 KiB
block holds known content:

  1. mounted with write-back held (wbhold): the first copy on the journal
     disk, parity + 1 copies;
  2. the journal disk's directory renamed away: `spacectl status` (json
     and text) shows parity + 1 copies in service again, none on it,
     no copy "(out)", without a remount;
  3. random writes, acknowledged and held in the journal only; kill -9;
     every disk that held one of the original copies on a data disk
     removed (1 for parity 1, 2 for parity 2: as many as the volume
     survives, with the journal disk already gone); remount degraded: the
     journal replayed from the copies made in step 2, every block holds
     its last acknowledged content;
  4. (parity 1) the failed journal disk replaced while mounted (disk
     replace --wait): the first copy is back on the journal disk without a remount,
     the copy on the data disk it replaces removed; more held writes, kill
     -9, remount: every block exact.

Then parity 1 without a journal disk, the copies on the volume's own
disks: the disk of one copy fails (the copies move to another of its
disks), is replaced with disk replace --wait (they move back), held
writes, kill -9, the disk of the other original copy lost: the degraded
remount replays the journal from the replacement, every block exact.

On main before this change, step 2 finds parity copies (one short) and
step 3 loses the held writes; so does the last case.
"""
import json
import os
import random
import re
import struct
import time

from harness import Pool, Tap, log_tail, no_sanitizer_reports

BLK = 4096
NBLK = 240


def block(b, g):
    head = struct.pack("<QQ", b, g)
    return head + random.Random(b << 24 | g).randbytes(BLK - len(head))


class SrcPool(Pool):
    """A pool whose daemon and spacectl are pointed at a disk we keep."""
    src = None

    @property
    def source(self):
        return self.src or self.disks[0]


class Case:
    def __init__(self, t, parity, seed):
        self.t, self.par = t, parity
        self.rng = random.Random(seed)
        # a majority of the pool's disks must stay for the degraded mount
        self.jd = 5 if parity == 1 else 6
        self.pool = SrcPool(self.jd, prefix=f"spacefs-jc{parity}-")
        self.acked = {b: 0 for b in range(NBLK)}
        self.v = f"p{parity}wb"

    def status(self):
        return json.loads(self.pool.spacectl("status", self.pool.source, "--json").stdout)

    def journal(self):
        for v in self.status()["volumes"]:
            if v["name"] == self.v:
                return v.get("journal_live") or {}
        return {}

    def mount(self, fault=None):
        if fault:
            os.environ["SPACEFS_FAULT"] = fault
        try:
            return self.pool.mount()
        finally:
            os.environ.pop("SPACEFS_FAULT", None)

    def path(self):
        return os.path.join(self.pool.mnt, self.v, "f")

    def write_random(self, n):
        fd = os.open(self.path(), os.O_WRONLY)
        failed = []
        try:
            for _ in range(n):
                b = self.rng.randrange(NBLK)
                g = self.acked[b] + 1
                try:
                    os.pwrite(fd, block(b, g), b * BLK)
                    self.acked[b] = g
                except OSError as e:
                    failed.append((b, str(e)))
        finally:
            os.close(fd)
        return failed

    def check(self, what):
        bad = []
        fd = os.open(self.path(), os.O_RDONLY)
        try:
            for b in range(NBLK):
                try:
                    data = os.pread(fd, BLK, b * BLK)
                except OSError:
                    data = b""
                if data != block(b, self.acked[b]):
                    bad.append(b)
        finally:
            os.close(fd)
        if not self.t.eq(len(bad), 0, f"parity {self.par}: {what}: every block holds its "
                         f"last acknowledged write (bad: {bad[:10]})"):
            self.t.diag(log_tail(self.pool))

    def wait_copies(self, cond, what, timeout=45):
        """Poll the live journal until cond(journal) holds (no remount).
        Longer than the 30 s a move that could not be made waits before it
        is forced again; it returns as soon as cond holds."""
        deadline = time.time() + timeout
        j = {}
        while time.time() < deadline:
            j = self.journal()
            if cond(j):
                break
            time.sleep(0.25)
        disks = j.get("copy_disk", [])
        live = j.get("copy_in_service", [])
        self.t.ok(cond(j), f"parity {self.par}: {what}: copies {disks} in service {live}")
        return j

    def full(self, j, jdisk):
        disks, live = j.get("copy_disk", []), j.get("copy_in_service", [])
        return (j.get("copies") == self.par + 1 and len(disks) == self.par + 1
                and len(set(disks)) == self.par + 1 and all(live)
                and (disks[:1] == [self.jd]) == jdisk and (jdisk or self.jd not in disks))

    def files(self):
        return [i for i, d in enumerate(self.pool.disks)
                if os.path.exists(os.path.join(d, "vol", self.v, "journal"))]

    def lay_out(self, who):
        """Every block at generation 0, synced, then a clean unmount."""
        m = self.pool.mount()
        with open(self.path(), "wb") as f:
            for b in range(NBLK):
                f.write(block(b, 0))
            f.flush()
            os.fsync(f.fileno())
        self.t.eq(m.stop(), 0, f"{who}: file laid out, clean unmount")

    def run(self):
        try:
            self._run()
        finally:
            os.environ.pop("SPACEFS_FAULT", None)
            self.pool.cleanup()

    def _run(self):
        t, pool, par = self.t, self.pool, self.par
        pool.volume(self.v, "parity", "--parity", str(par), "--columns", "4", "--interleave",
                    "16K", "--journal-mode", "write-back", "--journal-size", "16M")
        jdir = os.path.join(pool.dir, "j0")
        os.makedirs(jdir)
        pool.spacectl("disk", "add", pool.source, jdir, "--usage", "journal")
        pool.disks.append(jdir)
        self.lay_out(f"parity {par}")

        # 1
        m = self.mount("wbhold:600000")
        j = self.journal()
        orig = j.get("copy_disk", [])
        t.ok(self.full(j, True), f"parity {par}: {par + 1} copies, the first on the journal "
             f"disk {orig}")
        data_copies = [d for d in orig if d != self.jd]
        keep = next(i for i in range(self.jd) if i not in data_copies)
        pool.src = pool.disks[keep]

        # 2
        os.rename(jdir, jdir + ".gone")
        j = self.wait_copies(lambda j: self.full(j, False),
                             f"journal disk {self.jd} failed: {par + 1} copies in service "
                             "again, none on it, no remount")
        moved = j.get("copy_disk", [])
        text = pool.spacectl("status", pool.source).stdout
        row = next((ln for ln in text.splitlines() if ln.startswith(self.v + " ")
                    and ("write-back" in ln)), "")
        t.ok(row and "(out)" not in row and "out of service" not in text,
             f"parity {par}: spacectl status shows the copies live, none out: {row.strip()}")
        t.ok(set(data_copies) <= set(moved),
             f"parity {par}: the copies on data disks stay where they were {moved}")

        # 3
        t.eq(self.write_random(150), [], f"parity {par}: 150 random 4 KiB writes acknowledged")
        j = self.journal()
        t.ok(j.get("unapplied", 0) > 0 and j.get("copies") == par + 1,
             f"parity {par}: {j.get('unapplied')} records held in the journal only, "
             f"{j.get('copies')} copies")
        m.kill9()
        for d in data_copies:
            os.rename(pool.disks[d], pool.disks[d] + ".gone")
        mark = len(log_tail(pool, 10**9))
        m = self.mount("wbhold:600000")
        log = log_tail(pool, 10**9)[mark:]
        hit = re.search(rf"volume {self.v}: journal: replayed ([0-9]+)", log)
        t.ok(hit is not None and int(hit.group(1)) > 0,
             f"parity {par}: killed -9, disks {data_copies} (original copies) and the journal "
             f"disk gone: {hit.group(0) if hit else 'no replay'}")
        self.check("degraded remount after kill -9")

        if par == 1:
            m = self.replace(m)
        t.eq(m.stop(), 0, f"parity {par}: clean unmount")
        no_sanitizer_reports(t, pool.mounts)

    def replace(self, m):
        t, pool, par = self.t, self.pool, self.par
        # 4: the failed journal disk replaced while mounted
        newj = os.path.join(pool.dir, "j1")
        os.makedirs(newj)
        before = self.journal().get("copy_disk", [])
        r = pool.spacectl("disk", "replace", pool.source, str(self.jd), newj, "--wait",
                          check=False)
        t.eq(r.returncode, 0, f"failed journal disk replaced ({r.stderr.strip()[-200:]})")
        pool.disks[self.jd] = newj
        self.wait_copies(lambda j: self.full(j, True),
                         f"replaced: the first copy back on disk {self.jd} (was {before}), "
                         "no remount")
        files = self.files()
        t.eq(len(files), par + 1,
             f"parity {par}: journal files only where the copies are {files}")
        t.eq(self.write_random(100), [], f"parity {par}: 100 more writes, held")
        j = self.journal()
        t.ok(j.get("copy_bytes", [0])[0] > 0,
             f"parity {par}: records land on the replacement ({j.get('copy_bytes')})")
        m.kill9()
        m = self.mount()
        self.check("replaced journal disk, kill -9, remount")
        return m


class DataCase(Case):
    """Parity 1, no journal disk: the copies on the volume's own disks.  The
    disk of one fails, is replaced (disk replace --wait rebuilds it), then
    the disk of the other original copy is lost: the journal must have
    come back to the replacement meanwhile."""

    def __init__(self, t, seed):
        super().__init__(t, 1, seed)
        self.jd = -1
        self.v = "p1data"

    def _run(self):
        t, pool = self.t, self.pool
        pool.volume(self.v, "parity", "--parity", "1", "--columns", "3", "--interleave",
                    "16K", "--journal-mode", "write-back", "--journal-size", "16M")
        self.lay_out("data disks")
        m = self.mount("wbhold:600000")
        orig = self.journal().get("copy_disk", [])
        t.ok(self.full(self.journal(), False), f"data disks: 2 copies {orig}")
        first, second = orig[0], orig[1]
        pool.src = pool.disks[next(i for i in range(5) if i not in orig)]
        os.rename(pool.disks[first], pool.disks[first] + ".gone")
        self.wait_copies(lambda j: self.full(j, False) and first not in j["copy_disk"],
                         f"data disks: disk {first} failed: 2 copies in service again")
        newd = os.path.join(pool.dir, "r0")
        os.makedirs(newd)
        r = pool.spacectl("disk", "replace", pool.source, str(first), newd, "--wait",
                          check=False)
        t.eq(r.returncode, 0, f"data disks: disk {first} replaced and rebuilt "
             f"({r.stderr.strip()[-200:]})")
        pool.disks[first] = newd
        self.wait_copies(lambda j: self.full(j, False) and sorted(j["copy_disk"]) == sorted(orig),
                         f"data disks: the copies back on disks {orig} after the replace")
        files = self.files()
        t.eq(sorted(files), sorted(orig), f"data disks: journal files only on {orig}: {files}")
        t.eq(self.write_random(150), [], "data disks: 150 writes acknowledged, held")
        m.kill9()
        os.rename(pool.disks[second], pool.disks[second] + ".gone")
        mark = len(log_tail(pool, 10**9))
        m = self.mount()
        log = log_tail(pool, 10**9)[mark:]
        hit = re.search(rf"volume {self.v}: journal: replayed ([0-9]+)", log)
        t.ok(hit is not None and int(hit.group(1)) > 0,
             f"data disks: killed -9, disk {second} lost after the repair: "
             f"{hit.group(0) if hit else 'no replay'}")
        self.check("a second disk lost after the repair, degraded remount")
        t.eq(m.stop(), 0, "data disks: clean unmount")
        no_sanitizer_reports(t, pool.mounts)


class MoveCrash(Case):
    """The daemon ends (SPACEFS_FAULT=jmove:N, _exit as a power cut leaves
    the disks) at point N of a move of the copies: 1 new copy files
    created, 2 the new epoch's header on the first copy only, 3 on every
    copy with the copy left behind not removed yet, 4 done.  The move is
    either away from a failed journal disk ("fail") or onto a journal disk
    added through the daemon, which also removes the copy a data disk no
    longer needs ("add").  The next mount replays and places the copies
    as the move meant; then held writes, kill -9, the disk of a data copy
    lost: every block exact."""

    def __init__(self, t, seed, how, point):
        super().__init__(t, 1, seed)
        self.how, self.point = how, point
        self.v = f"mv{how}{point}"

    def died(self, m, what):
        """Wait for the daemon to end itself at the fault; detach its mount."""
        try:
            rc = m.proc.wait(timeout=30)
        except Exception:
            m.proc.kill()
            rc = m.proc.wait()
        m.proc = None
        m.logf.close()
        os.system(f"fusermount3 -u -z {self.pool.mnt} 2>/dev/null")
        log = log_tail(self.pool, 4000)
        self.t.ok(rc == 99 and "journal move" in log,
                  f"{self.v}: {what}: the daemon ended at move point {self.point} (exit {rc})")

    def _run(self):
        t, pool, k = self.t, self.pool, self.point
        pool.volume(self.v, "parity", "--parity", "1", "--columns", "3", "--interleave",
                    "16K", "--journal-mode", "write-back", "--journal-size", "16M")
        jdir = os.path.join(pool.dir, "j0")
        os.makedirs(jdir)
        if self.how == "fail":
            pool.spacectl("disk", "add", pool.source, jdir, "--usage", "journal")
        self.lay_out(self.v)
        m = self.mount(f"jmove:{k}")
        orig = self.journal().get("copy_disk", [])
        data = [d for d in orig if d != 5]
        pool.src = pool.disks[next(i for i in range(5) if i not in orig)]
        t.eq(self.write_random(60), [], f"{self.v}: 60 writes acknowledged (copies {orig})")
        if self.how == "fail":
            os.rename(jdir, jdir + ".gone")
            self.died(m, "journal disk failed")
        else:
            pool.spacectl("disk", "add", pool.source, jdir, "--usage", "journal")
            self.died(m, "journal disk added")
        m = self.mount("wbhold:600000")
        self.check(f"jmove:{k} ({self.how}), remount")
        j = self.wait_copies(lambda j: self.full(j, self.how == "add"),
                             f"{self.v}: after the crash, 2 copies as the move meant")
        now = j.get("copy_disk", [])
        files = self.files() + ([5] if os.path.exists(os.path.join(jdir, "vol", self.v,
                                                                    "journal")) else [])
        t.eq(sorted(files), sorted(now), f"{self.v}: journal files only where the copies "
             f"are {now}: {files}")
        # the copy kept through the move is lost: the replay must come
        # from the copy the move created
        kept = [d for d in now if d in orig and d != 5]
        t.ok(len(kept) == 1 and len(set(now) - set(orig)) == 1,
             f"{self.v}: one copy kept {kept}, one made by the move (copies {orig} -> {now})")
        t.eq(self.write_random(60), [], f"{self.v}: 60 more writes, held")
        m.kill9()
        lose = kept[0] if kept else next(d for d in now if d != 5)
        os.rename(pool.disks[lose], pool.disks[lose] + ".gone")
        m = self.mount()
        self.check(f"jmove:{k} ({self.how}), kill -9, disk {lose} lost")
        t.eq(m.stop(), 0, f"{self.v}: clean unmount")
        no_sanitizer_reports(t, pool.mounts)


def main():
    t = Tap()
    seed = int(os.environ.get("SPACEFS_SEED", time.time()))
    t.diag(f"seed {seed}")
    for par in (1, 2):
        Case(t, par, seed + par).run()
    DataCase(t, seed).run()
    for how in ("fail", "add"):
        for point in (1, 2, 3, 4):
            MoveCrash(t, seed + point, how, point).run()
    t.done()


if __name__ == "__main__":
    main()
