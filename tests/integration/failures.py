"""failures.py -- shared helpers of the fault-injection tests.

A FailPool is a harness.Pool whose disks can be failed in the four ways
the issue names, while mounted or not, and replaced; it remembers the
bytes of every file written so every check compares against them.
"""
import errno
import os
import random
import shutil
import subprocess
import time

from harness import SPACECTL, Mount, Pool, run

MODES = ["removed", "chmod000", "emptied", "foreign"]


def remove_disk(d):
    """Take a live disk directory away as `rm -rf` would, in one step.

    The daemon may be replacing its superblock right now (a temp file
    created, then renamed over spacefs.pool); a plain rmtree that lists the
    directory first then fails on the temp file that has since vanished.
    One rename takes the disk away atomically; the renamed tree, which
    nothing reaches by path any more, is then deleted at leisure.
    """
    gone = f"{d}.gone{time.monotonic_ns()}"
    os.rename(d, gone)
    shutil.rmtree(gone)


class FailPool(Pool):
    def __init__(self, layouts, ndisks=6, seed=1):
        super().__init__(ndisks)
        self.layouts = layouts
        self.rng = random.Random(seed)
        self.want = {}  # path inside the mount -> bytes
        self.failed = set()
        self.m = None
        self.nrepl = 0
        self.locked = []  # chmod 000 directories to restore at cleanup
        for name, args in layouts.items():
            self.volume(name, args[0], *args[1:], "--interleave", "64K")

    # ---- mounting ----
    def good_source(self):
        for i, d in enumerate(self.disks):
            if i not in self.failed:
                return d
        raise RuntimeError("no good disk left")

    def mount(self, opts=""):
        self.m = Mount(self.good_source(), self.mnt, opts, os.path.join(self.dir, "spacefs.log"))
        self.m.start()
        self.mounts.append(self.m)
        return self.m

    def ctl(self, *args, check=True):
        return run([SPACECTL, *map(str, args)], check=check)

    # ---- data ----
    def write_files(self, n, tag, maxsize=400000, volumes=None):
        for vol in volumes or self.layouts:
            os.makedirs(os.path.join(self.mnt, vol, "d"), exist_ok=True)
            for i in range(n):
                rel = os.path.join(vol, "d" if i % 2 else "", f"{tag}-{i}")
                data = self.rng.randbytes(self.rng.randrange(1, maxsize))
                with open(os.path.join(self.mnt, rel), "wb") as f:
                    f.write(data)
                self.want[rel] = data

    def fsync_all(self):
        for rel in self.want:
            fd = os.open(os.path.join(self.mnt, rel), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    def overwrite_some(self, n, volumes=None):
        keys = [k for k in sorted(self.want) if volumes is None or k.split("/")[0] in volumes]
        for rel in self.rng.sample(keys, min(n, len(keys))):
            data = bytearray(self.want[rel])
            off = self.rng.randrange(0, len(data) + 1)
            patch = self.rng.randbytes(self.rng.randrange(1, 200000))
            with open(os.path.join(self.mnt, rel), "r+b") as f:
                f.seek(off)
                f.write(patch)
            data[off:off + len(patch)] = patch
            self.want[rel] = bytes(data)

    def check(self, volumes=None, allow_eio=False):
        """Files that differ; with allow_eio, EIO counts as fine (past
        redundancy) and the number of EIO reads is returned too."""
        bad, eio = [], 0
        for rel, data in sorted(self.want.items()):
            if volumes is not None and rel.split("/")[0] not in volumes:
                continue
            try:
                with open(os.path.join(self.mnt, rel), "rb") as f:
                    got = f.read()
            except OSError as e:
                if allow_eio and e.errno == errno.EIO:
                    eio += 1
                    continue
                bad.append(f"{rel}: {e}")
                continue
            if got != data:
                bad.append(f"{rel}: wrong bytes")
        return (bad, eio) if allow_eio else bad

    # ---- failing disks ----
    def fail(self, i, mode):
        d = self.disks[i]
        if mode == "removed":
            remove_disk(d)
        elif mode == "chmod000":
            os.chmod(d, 0)
            self.locked.append(d)
        elif mode == "emptied":
            remove_disk(d)
            os.makedirs(d)
        elif mode == "foreign":
            remove_disk(d)
            other = os.path.join(self.dir, f"other{i}-{self.nrepl}")
            os.makedirs(other + "a")
            os.makedirs(other + "b")
            self.ctl("pool", "create", f"other{i}", other + "a", other + "b")
            os.rename(other + "a", d)
        else:
            raise ValueError(mode)
        self.failed.add(i)

    def away(self, i):
        """Take disk i away so it can come back (rename)."""
        os.rename(self.disks[i], self.disks[i] + ".away")
        self.failed.add(i)

    def back(self, i):
        os.rename(self.disks[i] + ".away", self.disks[i])
        self.failed.discard(i)

    def replace(self, i, wait=True):
        self.nrepl += 1
        new = os.path.join(self.dir, f"r{self.nrepl}-d{i}")
        os.makedirs(new)
        args = ["disk", "replace", self.good_source(), str(i), new]
        if wait:
            args.append("--wait")
        p = self.ctl(*args, check=False)
        self.disks[i] = new
        self.failed.discard(i)
        return p

    def wait_state(self, pred, timeout=20):
        """Poll `spacectl status --json` until pred(json) or timeout."""
        import json
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            p = self.ctl("status", self.good_source(), "--json", check=False)
            if p.returncode == 0:
                last = json.loads(p.stdout)
                if pred(last):
                    return last
            time.sleep(0.2)
        return last

    def disk_states(self):
        st = self.wait_state(lambda j: True, timeout=5)
        return [d["state"] for d in st["disks"]] if st else []

    def cleanup(self):
        for d in self.locked:
            try:
                os.chmod(d, 0o755)
            except OSError:
                pass
        super().cleanup()


def log_since(pool, mark):
    with open(os.path.join(pool.dir, "spacefs.log"), errors="replace") as f:
        f.seek(mark)
        return f.read()


def log_mark(pool):
    try:
        return os.path.getsize(os.path.join(pool.dir, "spacefs.log"))
    except OSError:
        return 0
