"""harness.py -- shared helpers for the integration tests (real mounts, root).

Every integration test is a Python program speaking TAP, so meson counts
each check.  A test builds a pool of disk directories under a scratch
directory on the same filesystem as the build (ext4 here, so chunk files
get O_DIRECT), mounts it with the freshly built daemon, does real I/O,
unmounts, remounts, and compares bytes.

Environment (set by tests/integration/meson.build):
  SPACEFS    path of the spacefs daemon under test
  SPACECTL   path of spacectl
  SPACEFS_TEST_DIR  where scratch pools go (default /var/tmp)

Daemons run in the foreground (-f) as children, with stderr in a log file
that the test prints on failure.  A daemon built with ASan writes its
reports there too; unmount() fails the test if it finds one.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SPACEFS = os.environ.get("SPACEFS", "build/fs/spacefs")
SPACECTL = os.environ.get("SPACECTL", "build/tools/spacectl")


class Tap:
    """Minimal TAP producer: ok(), plan at the end, diag() for context."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, desc):
        self.n += 1
        desc = " ".join(str(desc).split())  # one line: TAP has no multi-line descriptions
        print(f"{'ok' if cond else 'not ok'} {self.n} - {desc}", flush=True)
        if not cond:
            self.failed += 1
        return cond

    def eq(self, got, want, desc):
        good = got == want
        if not good:
            self.diag(f"got:  {got!r}"[:2000])
            self.diag(f"want: {want!r}"[:2000])
        return self.ok(good, desc)

    def diag(self, msg):
        for line in str(msg).splitlines():
            print(f"# {line}", flush=True)

    def done(self):
        print(f"1..{self.n}", flush=True)
        sys.exit(1 if self.failed else 0)


def run(cmd, check=True, **kw):
    """Run a command, returning CompletedProcess with text output."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def sha256_file(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def remove_later(path):
    """Delete a scratch tree in a detached `rm -rf`, so the test ends now.
    The lab disk is mounted with `discard`: unlinking the fragmented chunk
    files of a test that wrote randomly waits for the device's discards
    (30 s for 2 GiB of test_vhdx's chunks), time no check needs."""
    try:
        subprocess.Popen(["rm", "-rf", "--", path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def data_extents(path):
    """[(start, end)] of a file's data, as SEEK_DATA and SEEK_HOLE find it."""
    out, off = [], 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: a hole to the end
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, h))
            off = h
    finally:
        os.close(fd)
    return out


def sparse_digest(path, bufsize=1 << 20):
    """sha256 of a sparse file's data extents and hole map (data_extents),
    reading the first 64 KiB of every hole, which must be zeros.  Equal
    digests mean equal content and equal layout, at a fraction of the
    reads sha256_file needs for a big, mostly-hole file (the holes' reads
    are what test_sparse checks in full)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        for data, end in data_extents(path) + [(size, size)]:
            if data > off:
                head = os.pread(fd, min(data - off, 64 << 10), off)
                if head.count(0) != len(head):
                    raise AssertionError(f"{path}: hole at {off} reads non-zero bytes")
                h.update(f"hole {off} {data - off}\n".encode())
            if data >= size:
                break
            h.update(f"data {data} {end - data}\n".encode())
            pos = data
            while pos < end:
                b = os.pread(fd, min(bufsize, end - pos), pos)
                if not b:
                    raise AssertionError(f"{path}: short read at {pos}")
                h.update(b)
                pos += len(b)
            off = end
    return h.hexdigest()


def tree_digest(root):
    """{relative path: sha256} for every regular file under root."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                out[os.path.relpath(p, root)] = sha256_file(p)
    return out


class Mount:
    """One running spacefs daemon and its mount point."""

    def __init__(self, source, mnt, opts, log):
        self.source, self.mnt, self.opts, self.log = source, mnt, opts, log
        self.proc = None

    def start(self, timeout=20):
        os.makedirs(self.mnt, exist_ok=True)
        cmd = [SPACEFS, self.source, self.mnt, "-f"]
        if self.opts:
            cmd += ["-o", self.opts]
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=self.logf)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.ismount(self.mnt):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"spacefs exited {self.proc.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"spacefs did not mount within {timeout}s:\n{self.log_text()}")

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-20000:]
        except OSError:
            return ""

    def stop(self, timeout=60):
        """Unmount cleanly; return the daemon's exit code."""
        if self.proc is None:
            return 0
        run(["fusermount3", "-u", self.mnt], check=False)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            rc = rc if rc else -9
        self.proc = None
        self.logf.close()
        return rc

    def kill9(self):
        """kill -9 the daemon and detach the dead mount, as an admin would."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.logf.close()
        run(["fusermount3", "-u", "-z", self.mnt], check=False)

    def sanitizer_report(self):
        text = self.log_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                return text
        return None


class Pool:
    """A pool of `ndisks` disk directories in a scratch directory."""

    def __init__(self, ndisks=6, name="testpool", prefix="spacefs-it-"):
        base = os.environ.get("SPACEFS_TEST_DIR", "/var/tmp")
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=base)
        self.disks = [os.path.join(self.dir, f"d{i}") for i in range(ndisks)]
        for d in self.disks:
            os.makedirs(d)
        self.mnt = os.path.join(self.dir, "mnt")
        self.rundir = os.path.join(self.dir, "run")
        os.makedirs(self.rundir)
        os.environ["SPACEFS_RUN_DIR"] = self.rundir
        self.mounts = []
        self.spacectl("pool", "create", name, *self.disks)

    @property
    def source(self):
        return self.disks[0]

    def spacectl(self, *args, check=True):
        return run([SPACECTL, *map(str, args)], check=check)

    def volume(self, name, layout, *extra):
        self.spacectl("volume", "create", self.source, name, "--layout", layout, *extra)

    def mount(self, opts="", mnt=None):
        m = Mount(self.source, mnt or self.mnt, opts, os.path.join(self.dir, "spacefs.log"))
        m.start()
        self.mounts.append(m)
        return m

    def cleanup(self):
        for m in self.mounts:
            if m.proc is not None:
                m.stop()
        if os.environ.get("SPACEFS_KEEP"):
            print(f"# kept {self.dir}")
            return
        remove_later(self.dir)


LAYOUTS = {
    # name: spacectl volume create arguments
    "simple": ["simple"],
    "mirror2": ["mirror", "--copies", "2"],
    "mirror3": ["mirror", "--copies", "3"],
    "parity1": ["parity", "--parity", "1"],
    "parity2": ["parity", "--parity", "2"],
}


def no_sanitizer_reports(t, mounts):
    """After the daemons of `mounts` stopped: one failed check, with the
    first sanitizer report found in the TAP diagnostics, if any has one
    (nothing is counted when none has)."""
    for mm in mounts:
        rep = mm.sanitizer_report()
        if rep:
            t.ok(False, "no sanitizer report")
            t.diag(rep[-3000:])
            return


def stop_clean(t, m, what="daemon exits cleanly"):
    """Unmount m and check what every test ends with: exit status 0 and no
    sanitizer report (the report, if any, goes to the TAP diagnostics)."""
    t.eq(m.stop(), 0, what)
    rep = m.sanitizer_report()
    t.ok(rep is None, "no sanitizer report")
    if rep:
        t.diag(rep[-3000:])


def make_layout_volumes(pool, interleave="64K", integrity="on", layouts=LAYOUTS):
    for name, args in layouts.items():
        pool.volume(name, args[0], *args[1:], "--interleave", interleave, "--integrity", integrity)


def log_tail(pool, n=4000):
    """The shared daemon log of a pool's mounts, for failure diagnostics."""
    try:
        with open(os.path.join(pool.dir, "spacefs.log"), errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def traced(pid):
    """True once every thread of pid has a tracer (strace attached)."""
    tids = os.listdir(f"/proc/{pid}/task")
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                tp = [ln for ln in fh if ln.startswith("TracerPid:")]
        except FileNotFoundError:
            continue  # a thread that ended
        if not tp or tp[0].split()[1] == "0":
            return False
    return bool(tids)


def strace_during(pool, syscalls, action, timeout=25.0):
    """The `strace -f -y -e trace=SYSCALLS` lines of the pool's last
    daemon while action() runs, or None without a working strace (not
    installed, or not attached to every thread within timeout s)."""
    if not shutil.which("strace"):
        return None
    out = os.path.join(pool.dir, "daemon.strace")
    pid = pool.mounts[-1].proc.pid
    tr = subprocess.Popen(["strace", "-f", "-y", "-e", f"trace={syscalls}", "-o", out,
                           "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while tr.poll() is None and not traced(pid) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    if tr.poll() is not None or not traced(pid):
        tr.terminate()
        tr.wait()
        return None
    try:
        action()
        time.sleep(0.5)
    finally:
        tr.terminate()
        tr.wait()
    with open(out) as fh:
        return fh.read().splitlines()
