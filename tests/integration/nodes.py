"""nodes.py -- helpers for the multi-node integration tests.

Several spacefs daemons (nodes) over the same disk directories, each with
its own mount point, log and redirect port; `spacectl` pointed at one of
them with SPACEFS_NODE; fanotify (through ctypes) to see which process
writes which file under the disk directories.
"""
import ctypes
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import SPACECTL, Mount, run

FAN_CLASS_NOTIF, FAN_CLOEXEC, FAN_NONBLOCK = 0, 1, 2
FAN_MODIFY = 0x2
FAN_MARK_ADD, FAN_MARK_FILESYSTEM = 1, 0x100


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, pool, name, addr, extra="", wrap=None):
        self.pool, self.name, self.addr = pool, name, addr
        self.mnt = os.path.join(pool.dir, f"mnt-{name}")
        opts = f"node={name},listen={addr}" + (f",{extra}" if extra else "")
        self.m = Mount(pool.source, self.mnt, opts, os.path.join(pool.dir, f"{name}.log"))
        self.wrap = wrap or []

    def start(self, timeout=20):
        import harness
        os.makedirs(self.mnt, exist_ok=True)
        cmd = self.wrap + [harness.SPACEFS, self.pool.source, self.mnt, "-f", "-o", self.m.opts]
        self.m.logf = open(self.m.log, "ab")
        self.m.proc = subprocess.Popen(cmd, stdout=self.m.logf, stderr=self.m.logf)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.ismount(self.mnt):
                return self
            if self.m.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.m.proc.returncode}:\n"
                                   f"{self.m.log_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not mount:\n{self.m.log_text()}")

    @property
    def pid(self):
        return self.m.proc.pid if self.m.proc else None

    def status(self):
        env = dict(os.environ, SPACEFS_NODE=self.name)
        p = run([SPACECTL, "status", self.pool.source, "--json"], check=False, env=env)
        try:
            d = json.loads(p.stdout).get("daemon")
        except ValueError:
            return {}
        return {v["name"]: v for v in (d or {}).get("volumes", [])}

    def spacectl(self, *args, check=True):
        env = dict(os.environ, SPACEFS_NODE=self.name)
        return run([SPACECTL, *map(str, args)], check=check, env=env)


class Cluster:
    """The end every multi-node test shares, as a `with` block:

        with Cluster(t, pool) as c:
            c.nodes[:] = [Node(...).start(), ...]
            ...

    An unexpected exception in the block is reported as a failed test point
    with the tail of every node's log; then, always, the `c.cleanups`
    callables run (writers to stop, files to close), every node still
    running is resumed (a test may have stopped it) and unmounted, and the
    pool's directory goes.  The exception is not raised again: t.done()
    after the block reports the plan."""

    def __init__(self, t, pool, log_tail=3000):
        self.t, self.pool, self.log_tail = t, pool, log_tail
        self.nodes, self.cleanups = [], []

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if isinstance(e, Exception):
            self.t.ok(False, f"unexpected {type(e).__name__}: {e}")
            for n in self.nodes:
                self.t.diag(f"--- {n.name} log ---\n{n.m.log_text()[-self.log_tail:]}")
        for fn in self.cleanups:
            try:
                fn()
            except Exception as ce:  # noqa: BLE001 -- clean up the rest anyway
                self.t.diag(f"cleanup {fn}: {ce}")
        for n in self.nodes:
            if n.m.proc is not None:
                try:
                    n.m.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                n.m.stop()
        self.pool.cleanup()
        return isinstance(e, Exception)


def disk_state(pool, i):
    """Disk i's state in `spacectl status` (None if it cannot be read)."""
    p = run([SPACECTL, "status", pool.disks[0], "--json"], check=False)
    try:
        return json.loads(p.stdout)["disks"][i]["state"]
    except (ValueError, KeyError, IndexError):
        return None


def read_all(t, mnt, sums, what):
    """Every file VOL/fNNN of sums {(vol, n): sha256 hex} reads back as written."""
    bad = []
    for (vol, i), want in sums.items():
        try:
            with open(os.path.join(mnt, vol, f"f{i:03d}"), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != want:
                    bad.append(f"{vol}/f{i:03d}: wrong bytes")
        except OSError as e:
            bad.append(f"{vol}/f{i:03d}: {e}")
    t.ok(not bad, f"every file reads back as written {what} {bad[:4]}")


def owners(node):
    """{volume: owner} as `node` sees it."""
    return {v: s.get("owner", "") for v, s in node.status().items()}


def wait_for(cond, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    return None


class Fanotify:
    """Every write (FAN_MODIFY) on the filesystem holding `path`: (pid, file)."""

    def __init__(self, path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        self.libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                            ctypes.c_int, ctypes.c_char_p]
        self.fd = self.libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK,
                                          os.O_RDONLY)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "fanotify_init")
        if self.libc.fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_MODIFY,
                                   -100, path.encode()) < 0:
            raise OSError(ctypes.get_errno(), "fanotify_mark")
        self.events = []

    def drain(self):
        while True:
            try:
                b = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.events
            off = 0
            while off + 24 <= len(b):
                ln, _v, _r, _m, _mask, efd, pid = struct.unpack_from("IBBHQii", b, off)
                if efd >= 0:
                    try:
                        self.events.append((pid, os.readlink(f"/proc/self/fd/{efd}")))
                    except OSError:
                        pass
                    os.close(efd)
                off += max(ln, 24)

    def writes_by(self, pid, prefixes):
        self.drain()
        return [f for p, f in self.events if p == pid and any(f.startswith(x) for x in prefixes)]

    def close(self):
        os.close(self.fd)


def fio_job(path, dirname, size="12m", jobs=2, extra=""):
    with open(path, "w") as f:
        f.write(f"""
[global]
directory={dirname}
ioengine=psync
verify=crc32c
verify_fatal=1
do_verify=1
group_reporting=1
fallocate=none
randrepeat=0
verify_state_save=0
{extra}

[rand]
rw=randwrite
bssplit=4k/40:64k/30:256k/20:1m/10
size={size}
numjobs={jobs}
""")
    return path


class FioWriter(threading.Thread):
    """Rounds of the fio job file `job` (fio_job, with verify) writing into
    `dirname` through `node`, until `stop` is set, then `after` more: the
    rounds that must pass once the disruptions are over.  `rounds` counts
    the runs; the first failed run ends the thread, its output's tail in
    `failed`."""

    def __init__(self, node, vol, job, dirname, after=1):
        super().__init__(daemon=True)
        self.node, self.vol, self.job, self.dir, self.want = node, vol, job, dirname, after
        self.stop, self.rounds, self.failed, self.after = threading.Event(), 0, [], 0

    def run(self):
        os.makedirs(self.dir, exist_ok=True)
        while self.after < self.want:
            stopping = self.stop.is_set()
            p = run(["fio", "--output-format=terse", self.job], check=False)
            self.rounds += 1
            if p.returncode != 0:
                self.failed.append((p.stdout + p.stderr)[-1500:])
                return
            self.after += stopping


def frame(typ, body, rid=1):
    return struct.pack("<IHHQ", len(body), typ, 0, rid) + body


def req_body(name=b"", name2=b"", data=b"", volid=0, vino=0):
    head = struct.pack("<IQQQQIIIIIQQQQQ", volid, vino, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return (head + struct.pack("<I", len(name)) + name + struct.pack("<I", len(name2)) + name2 +
            struct.pack("<I", len(data)) + data)


def read_frame(s):
    hdr = b""
    while len(hdr) < 16:
        c = s.recv(16 - len(hdr))
        if not c:
            return None
        hdr += c
    ln, typ, _z, rid = struct.unpack("<IHHQ", hdr)
    body = b""
    while len(body) < ln:
        c = s.recv(ln - len(body))
        if not c:
            return None
        body += c
    return typ, body
