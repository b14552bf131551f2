#!/usr/bin/env python3
"""Damaged metadata and chunk files: clear errors, nothing lost, no crash.

- One metadata replica deleted, or overwritten with garbage: the mount
  names it, restores it from the newest replica, and every file is intact.
- Every replica garbage: the mount refuses with a message naming the
  files, and exits non-zero without mounting.
- An inode row with an impossible value: EIO on that file, a log line
  naming the database and inode, other files fine.
- A chunk file cut short on a checksummed volume: EIO and a log line
  naming the disk and the chunk offset, never wrong bytes.
"""
import glob
import os
import random
import sqlite3
import subprocess

from harness import SPACEFS, Pool, Tap, log_tail, sha256_file, tree_digest


def meta_dbs(pool, vol):
    return sorted(glob.glob(os.path.join(pool.dir, "d*", "vol", vol, "meta.db")))


def remove_db(path):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


def populate(root, rng):
    os.makedirs(os.path.join(root, "a", "b"), exist_ok=True)
    for i in range(20):
        with open(os.path.join(root, "a" if i % 2 else "a/b", f"f{i}"), "wb") as f:
            f.write(rng.randbytes(rng.randrange(0, 300000)))
    os.symlink("a/f1", os.path.join(root, "link"))


def main():
    t = Tap()
    pool = Pool(6)
    rng = random.Random(5)
    try:
        pool.volume("mir", "mirror", "--copies", "2", "--interleave", "64K")
        pool.volume("plain", "simple", "--interleave", "64K", "--integrity", "on")
        m = pool.mount()
        populate(os.path.join(pool.mnt, "mir"), rng)
        big = os.path.join(pool.mnt, "plain", "big.bin")
        with open(big, "wb") as f:
            f.write(rng.randbytes(4 << 20))
        before = tree_digest(os.path.join(pool.mnt, "mir"))
        t.eq(m.stop(), 0, "clean unmount")

        dbs = meta_dbs(pool, "mir")
        t.ok(len(dbs) >= 3, f"metadata kept on {len(dbs)} disks")

        # one replica lost
        remove_db(dbs[0])
        m = pool.mount()
        t.eq(tree_digest(os.path.join(pool.mnt, "mir")), before, "replica deleted: files intact")
        t.eq(m.stop(), 0, "clean unmount")
        t.ok(os.path.exists(dbs[0]), "deleted replica restored")
        t.ok("restored" in log_tail(pool, 100000) and dbs[0] in log_tail(pool, 100000),
             "the restore is logged with the replica's path")

        # one replica garbage
        with open(dbs[1], "wb") as f:
            f.write(rng.randbytes(50000))
        m = pool.mount()
        t.eq(tree_digest(os.path.join(pool.mnt, "mir")), before, "garbage replica: files intact")
        t.eq(m.stop(), 0, "clean unmount")
        with sqlite3.connect(dbs[1]) as c:
            ok = c.execute("PRAGMA quick_check").fetchone()[0]
        t.eq(ok, "ok", "garbage replica rewritten as a valid database")

        # every replica garbage: refuse to mount, name the files
        saved = {}
        for db in dbs:
            with open(db, "rb") as f:
                saved[db] = f.read()
            for s in ("-wal", "-shm"):
                if os.path.exists(db + s):
                    os.unlink(db + s)
            with open(db, "wb") as f:
                f.write(b"this is not a database " * 100)
        p = subprocess.run([SPACEFS, pool.source, pool.mnt, "-f"], capture_output=True,
                           text=True, timeout=60)
        t.ok(p.returncode != 0, "all replicas garbage: spacefs exits non-zero")
        t.ok(not os.path.ismount(pool.mnt), "... and mounts nothing")
        t.ok(all(db in p.stderr for db in dbs), "... naming every damaged file")
        t.ok("Sanitizer" not in p.stderr and "runtime error" not in p.stderr, "... without a crash")
        for db, data in saved.items():
            with open(db, "wb") as f:
                f.write(data)

        # an impossible inode row on every replica
        for db in dbs:
            with sqlite3.connect(db) as c:
                ino = c.execute("SELECT ino FROM dentries WHERE name='f3'").fetchone()[0]
                c.execute("UPDATE inodes SET npos=200 WHERE ino=?", (ino,))
        m = pool.mount()
        try:
            os.stat(os.path.join(pool.mnt, "mir", "a", "f3"))
            got = "no error"
        except OSError as e:
            got = e.errno
        t.eq(got, 5, "bad inode row: EIO")
        t.ok(f"inode {ino}" in log_tail(pool, 100000), "bad inode row: log names the inode")
        t.ok(os.path.exists(os.path.join(pool.mnt, "mir", "a", "f1")), "other files still served")
        t.eq(m.stop(), 0, "clean unmount")

        # a chunk file cut short on a checksummed simple volume
        chunks = sorted(glob.glob(os.path.join(pool.dir, "d*", "vol", "plain", "data", "*", "*.[0-9]")))
        chunks = [c for c in chunks if os.path.getsize(c) > 256 * 1024]
        t.ok(len(chunks) > 0, "found the big file's chunk files")
        os.truncate(chunks[0], 64 * 1024)
        m = pool.mount()
        try:
            sha256_file(big)
            got = "no error"
        except OSError as e:
            got = e.errno
        t.eq(got, 5, "chunk cut short: reading the file gives EIO")
        disk = chunks[0].split("/vol/")[0]
        t.ok(disk in log_tail(pool, 100000), "chunk cut short: log names the disk")
        t.eq(m.stop(), 0, "daemon still exits 0")
        t.ok(m.sanitizer_report() is None, "no sanitizer report")
    except Exception as e:
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
