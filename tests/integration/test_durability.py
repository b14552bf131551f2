#!/usr/bin/env python3
"""Durability contract: fsync survives kill -9; metadata reaches disk in time.

1. On every layout, files are written and fsync'd (and one directory
   fsync'd), then the daemon is killed with SIGKILL at once.  After
   `fusermount3 -u` and a remount every fsync'd byte must be there.
2. Without fsync, metadata reaches disk within flush_interval: files
   written, then after flush_interval + margin the daemon is killed; after
   the remount the files exist with their full sizes and contents (the
   data was written through to the chunk files before write() returned).
3. A file unlinked while open when the daemon dies is reaped at the next
   mount (no orphan left behind).
"""
import os
import random
import time

from harness import LAYOUTS, Pool, Tap, log_tail, make_layout_volumes, sha256_file


def write_file(path, data, fsync=True):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def main():
    t = Tap()
    pool = Pool(6)
    rng = random.Random(77)
    try:
        make_layout_volumes(pool, interleave="64K", integrity="on")
        m = pool.mount("flush_interval=2")
        expect = {}
        for name in LAYOUTS:
            vol = os.path.join(pool.mnt, name)
            os.makedirs(os.path.join(vol, "dir"))
            for i, size in enumerate([1, 4096, 100000, 1 << 20, 3 * 1024 * 1024 + 333]):
                data = rng.randbytes(size)
                p = os.path.join(vol, "dir", f"f{i}")
                write_file(p, data)
                expect[p] = data
            dfd = os.open(os.path.join(vol, "dir"), os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
        m.kill9()
        t.ok(not os.path.ismount(pool.mnt), "kill -9 right after fsync: mount detached")
        m = pool.mount("flush_interval=2")
        for p, data in expect.items():
            try:
                with open(p, "rb") as f:
                    got = f.read()
            except OSError as e:
                got = repr(e).encode()
            t.ok(got == data, f"fsync'd file intact after kill -9: {os.path.relpath(p, pool.mnt)}")

        # 2. no fsync: wait for the metadata write-back, then crash
        late = {}
        for name in LAYOUTS:
            p = os.path.join(pool.mnt, name, "nofsync.bin")
            data = rng.randbytes(700001)
            write_file(p, data, fsync=False)
            late[p] = data
        time.sleep(2 + 2)
        # 3. an open, unlinked file at the time of the crash
        victim = os.path.join(pool.mnt, "mirror2", "open-unlinked.bin")
        write_file(victim, rng.randbytes(1 << 20))
        fd = os.open(victim, os.O_RDONLY)
        os.unlink(victim)
        m.kill9()
        try:
            os.close(fd)
        except OSError:
            pass  # the connection died with the daemon
        m = pool.mount("flush_interval=2")
        for p, data in late.items():
            with open(p, "rb") as f:
                got = f.read()
            t.ok(got == data, f"unsynced file complete after flush interval + crash: "
                              f"{os.path.relpath(p, pool.mnt)}")
        t.ok("removed 1 files unlinked while open" in log_tail(pool, 100000),
             "orphan of the crash reaped at the next mount")
        t.eq(m.stop(), 0, "daemon exits 0 on unmount")
        t.ok(m.sanitizer_report() is None, "no sanitizer report")
    except Exception as e:
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
