#!/usr/bin/env python3
"""The mount as an admin sees it: volumes, root rules, statfs, the
control socket, the mount helper, read-only mounts, --help.
"""
import errno
import json
import mmap
import os
import random
import subprocess
import time

from harness import SPACECTL, SPACEFS, LAYOUTS, Pool, Tap, log_tail, make_layout_volumes, run


def errno_of(fn):
    try:
        fn()
        return 0
    except OSError as e:
        return e.errno


def helper_daemons(mnt):
    """Pids of spacefs processes serving mnt (started by the mount helper)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "spacefs" and mnt in argv[1:]:
            pids.append(int(d))
    return pids


def main():
    t = Tap()
    pool = Pool(6)
    rng = random.Random(9)
    try:
        p = run([SPACEFS, "--help"], check=False)
        t.ok(p.returncode == 0 and "node=NAME" in p.stdout and "SOURCE MOUNTPOINT" in p.stdout,
             "spacefs --help describes usage and options")
        make_layout_volumes(pool)
        m = pool.mount()
        t.eq(sorted(os.listdir(pool.mnt)), sorted(LAYOUTS), "root lists one directory per volume")
        t.eq(errno_of(lambda: os.mkdir(os.path.join(pool.mnt, "newvol"))), errno.EPERM,
             "mkdir in the root: EPERM")
        t.eq(errno_of(lambda: open(os.path.join(pool.mnt, "f"), "w")), errno.EPERM,
             "creating a file in the root: EPERM")
        t.ok("spacectl volume create" in log_tail(pool), "the refusal is logged with the fix")
        t.eq(errno_of(lambda: os.rmdir(os.path.join(pool.mnt, "simple"))), errno.EPERM,
             "removing a volume directory: EPERM")

        # statfs tells the layout's truth: simple holds ~2x mirror2, ~3x mirror3
        cap = {n: os.statvfs(os.path.join(pool.mnt, n)) for n in LAYOUTS}
        size = {n: c.f_blocks * c.f_frsize for n, c in cap.items()}
        r2 = size["simple"] / size["mirror2"]
        r3 = size["simple"] / size["mirror3"]
        t.ok(1.8 < r2 < 2.2, f"statfs: simple/mirror2 capacity ratio {r2:.2f} ~ 2")
        t.ok(2.7 < r3 < 3.3, f"statfs: simple/mirror3 capacity ratio {r3:.2f} ~ 3")
        rp = size["simple"] / size["parity1"]
        t.ok(1.1 < rp < 1.3, f"statfs: simple/parity1 ratio {rp:.2f} ~ 6/5")

        # st_blocks counts what is allocated (a sparse file stays small)
        sp = os.path.join(pool.mnt, "mirror2", "sparse")
        with open(sp, "wb") as f:
            f.truncate(1 << 30)
            f.seek(500 << 20)
            f.write(b"x" * 4096)
        st = os.stat(sp)
        t.ok(0 < st.st_blocks * 512 < (4 << 20), f"sparse 1 GiB file allocates {st.st_blocks * 512} bytes")

        # shared writable mmap works in the default (page cache) mode
        mp = os.path.join(pool.mnt, "parity1", "mapped")
        with open(mp, "wb") as f:
            f.truncate(1 << 20)
        with open(mp, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 1 << 20)
            mm[4096:4096 + 11] = b"hello, mmap"
            mm.flush()
            mm.close()
        m.stop()
        m = pool.mount()
        with open(mp, "rb") as f:
            f.seek(4096)
            t.eq(f.read(11), b"hello, mmap", "shared writable mmap data survives remount")

        # the control socket: live counters, online volume create
        data = rng.randbytes(1 << 20)
        with open(os.path.join(pool.mnt, "mirror2", "count.bin"), "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
        p = pool.spacectl("status", pool.source, "--json", check=False)
        t.eq(p.returncode, 0, "spacectl status --json while mounted")
        try:
            st = json.loads(p.stdout)
        except ValueError:
            st = {}
        text = json.dumps(st)
        t.ok("write_bytes" in text and "daemon" in text, "status shows the daemon's I/O counters")
        p2 = pool.spacectl("status", pool.source, check=False)
        t.ok(p2.returncode == 0 and "mirror2" in p2.stdout, "spacectl status (table) while mounted")
        p = pool.spacectl("volume", "create", pool.source, "online", "--layout", "mirror", check=False)
        t.eq(p.returncode, 0, "spacectl volume create while mounted")
        t.ok("online" in os.listdir(pool.mnt), "the new volume appears in the mount")
        op = os.path.join(pool.mnt, "online", "x")
        with open(op, "wb") as f:
            f.write(data)
        with open(op, "rb") as f:
            t.eq(f.read(), data, "the new volume takes writes")
        t.eq(m.stop(), 0, "clean unmount")

        # read-only mount
        m = pool.mount("ro")
        t.eq(errno_of(lambda: open(os.path.join(pool.mnt, "simple", "nope"), "w")), errno.EROFS,
             "ro mount: creating a file gives EROFS")
        with open(op, "rb") as f:
            t.eq(f.read(), data, "ro mount: files read")
        t.eq(m.stop(), 0, "clean unmount of the ro mount")

        # the mount helper convention: mount -t fuse.spacefs SOURCE DIR.
        # mount.fuse3 runs the helper with an empty environment, so it must
        # be on the default PATH, as `meson install` puts it; link the build
        # there for the test unless an installed spacefs is already there.
        link = "/usr/local/sbin/spacefs"
        made_link = not os.path.lexists(link)
        if made_link:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.abspath(SPACEFS), link)
        try:
            p = subprocess.run(["mount", "-t", "fuse.spacefs", pool.source, pool.mnt],
                               capture_output=True, text=True)
        finally:
            if made_link:
                os.unlink(link)
        t.ok(p.returncode == 0 and os.path.ismount(pool.mnt),
             f"mount -t fuse.spacefs works {p.stderr.strip()}")
        with open(op, "rb") as f:
            t.eq(f.read(), data, "files read through the helper-made mount")
        helper = helper_daemons(pool.mnt)
        t.eq(len(helper), 1, "the helper-made mount is served by one daemon in the background")
        subprocess.run(["umount", pool.mnt], check=False)
        t.ok(not os.path.ismount(pool.mnt), "umount detaches it")
        # the background daemon (forked by fuse_daemonize) must finish: it
        # once hung joining a thread started before the fork
        deadline = time.monotonic() + 30
        while helper_daemons(pool.mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = helper_daemons(pool.mnt)
        t.eq(left, [], "the background daemon exits after umount")
        for pid in left:
            os.kill(pid, 9)
        t.ok(m.sanitizer_report() is None, "no sanitizer report")
    except Exception as e:
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        subprocess.run(["umount", pool.mnt], capture_output=True)
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
