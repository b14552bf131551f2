#!/usr/bin/env python3
"""A file's size survives its inode being forgotten while it is in use.

The daemon caches a regular file's size (authoritative while cached) and
writes it to the metadata store later.  When the kernel forgets the inode
and no one holds it, the daemon writes the size back and frees its entry
(fs/inode.c "retire").  A lookup, a write, an unlink or another node's
redirected write that comes while that write-back runs finds the entry
and uses it; found in review: when it went away again before the
write-back ended, the entry was freed with the newer size never written
(the size of a write acknowledged, lost: reads came back short, and
after the next write-back for good).

SPACEFS_FAULT=iretire:MS (pool/fault.h) makes each retire's write-back
wait MS ms between taking its copy and committing it, so the window is
certain:
  1. write 1 MiB to a new file, close; drop the kernel's caches: the
     kernel forgets the inode, its retire starts (and waits);
  2. meanwhile open the file, append 4 KiB, close, drop the caches
     again (the second forget finds the entry retiring);
  3. after both could have ended: the size is 1 MiB + 4 KiB through a
     fresh lookup, and again after unmount and mount, with the bytes;
  4. the same with an unlink in step 2 instead of the append: the
     file's chunk files are gone before the unmount (they were kept
     until the next mount's orphan reap);
  5. the flusher's write-back, not a retire's: with flush_interval=1 the
     flusher takes the copies of files just written and waits before its
     commit; a forget in that wait found the inode clean and freed it at
     once, and a stat then read the store's older row (size 0) and
     cached it (found in the third review).  Six files, each forgotten
     at another moment of the flusher's second: every stat must say
     1 MiB, and so must the store after a remount.
"""
import glob
import os
import random
import time

from harness import Pool, Tap, log_tail

MIB = 1 << 20
DELAY_MS = 1500


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    time.sleep(0.3)  # the kernel sends its FORGETs on its own time


def chunks(pool):
    return [p for d in pool.disks for p in glob.glob(os.path.join(d, "vol", "v", "data", "*", "*"))
            if not p.endswith(".crc")]


def flusher_case(t, pool):
    os.environ["SPACEFS_FAULT"] = f"iretire:{DELAY_MS}"
    try:
        m = pool.mount("flush_interval=1")
    finally:
        os.environ.pop("SPACEFS_FAULT", None)
    rng = random.Random(5)
    sizes = {}
    for i in range(6):
        p = os.path.join(pool.mnt, "v", f"h{i}")
        with open(p, "wb") as f:
            f.write(os.urandom(MIB))
        time.sleep(rng.uniform(0.2, 1.4))  # the flusher takes its copy meanwhile, or not
        drop_caches()
        sizes[p] = os.stat(p).st_size
    t.eq(sorted(set(sizes.values())), [MIB],
         "a forget while the flusher commits: every file's size is 1 MiB after it")
    t.eq(m.stop(), 0, "flusher case: clean unmount")
    m = pool.mount()
    t.eq(sorted({os.stat(p).st_size for p in sizes}), [MIB],
         "flusher case: after a remount, every size is in the store")
    t.eq(m.stop(), 0, "flusher case: clean unmount")


def main():
    t = Tap()
    pool = Pool(3, prefix="spacefs-it-iretire-")
    try:
        pool.volume("v", "mirror", "--copies", "2", "--columns", "1")
        os.environ["SPACEFS_FAULT"] = f"iretire:{DELAY_MS}"
        try:
            m = pool.mount("flush_interval=3600")  # sizes stay cached, dirty
        finally:
            os.environ.pop("SPACEFS_FAULT", None)
        path = os.path.join(pool.mnt, "v", "f")
        first = os.urandom(MIB)
        with open(path, "wb") as f:
            f.write(first)
        drop_caches()  # retire 1 starts: copies size 1 MiB, waits
        tail = os.urandom(4096)
        with open(path, "ab") as f:
            f.write(tail)  # revives the entry: size 1 MiB + 4 KiB, dirty again
        drop_caches()  # the entry is retiring: left to retire 1
        time.sleep(2 * DELAY_MS / 1000 + 1)
        drop_caches()
        t.eq(os.stat(path).st_size, MIB + 4096,
             "a write while the inode's retire ran: its size is kept (fresh lookup)")
        t.eq(m.stop(), 0, "clean unmount")
        m = pool.mount()
        t.eq(os.stat(path).st_size, MIB + 4096, "after a remount: the size of the last write")
        with open(path, "rb") as f:
            t.ok(f.read() == first + tail, "after a remount: every byte written")
        t.eq(m.stop(), 0, "clean unmount")

        os.environ["SPACEFS_FAULT"] = f"iretire:{DELAY_MS}"
        try:
            m = pool.mount("flush_interval=3600")
        finally:
            os.environ.pop("SPACEFS_FAULT", None)
        g = os.path.join(pool.mnt, "v", "g")
        before = set(chunks(pool))
        with open(g, "wb") as f:
            f.write(first)
        mine = set(chunks(pool)) - before
        t.ok(len(mine) == 2, f"g has its two chunk files ({len(mine)})")
        drop_caches()  # retire of g starts, waits
        os.unlink(g)   # takes its last link while the write-back runs
        drop_caches()
        time.sleep(2 * DELAY_MS / 1000 + 1)
        left = [p for p in mine if os.path.exists(p)]
        t.eq(left, [], "an unlink while the inode's retire ran: its chunk files are removed "
             "at once, not at the next mount")
        t.eq(m.stop(), 0, "clean unmount")
        flusher_case(t, pool)
    except Exception as e:  # a crash of the test itself is a failure, not a hang
        t.ok(False, f"exception: {e}")
        t.diag(log_tail(pool))
    finally:
        os.environ.pop("SPACEFS_FAULT", None)
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
