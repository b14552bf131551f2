#!/usr/bin/env python3
"""A disk away at an unclean mount misses that mount's resync, and must be
resynced when it returns.

After a crash the dirty-region log names the regions whose writes may have
reached some copies and not others.  The mount's resync makes them agree
again -- but only on the disks it has.  A mirror 2 volume (one column, so
the file's two copies are whole chunk files on two disks):
  1. a file is laid out (generation 0 of every 4 KiB block), clean unmount;
  2. mount, write generation 1 of one block, kill -9 at once: its region
     is dirty;
  3. copy 1 of that block is put back to its generation-0 bytes and
     checksum, as if the write had reached copy 0 only when the power
     went (kill -9 itself cannot tear it: submitted writes complete);
  4. copy 1's disk is away at the next mount: the resync has copy 0
     only, and the block reads generation 1; clean unmount;
  5. the disk is back; mount, wait for its resync, unmount;
  6. copy 0's disk is lost: the block must still read generation 1.
Before the fix the mount in step 4 cleared the region's dirty mark
without saying the absent disk missed it, so the returning disk was not
resynced and step 6 read generation 0: data going back in time, with a
checksum that matches.
"""
import os
import shutil
import struct
import time

from harness import Mount, Pool, Tap, log_tail

BLK = 4096
NBLK = 256
B = 77  # the block written at the crash


def block(b, g):
    return struct.pack("<QQ", b, g) + bytes([(b * 7 + g) & 0xFF]) * (BLK - 16)


def chunks(pool):
    """{position: (disk index, chunk path)} of the volume's single file."""
    out = {}
    for i, d in enumerate(pool.disks):
        for root, _, files in os.walk(os.path.join(d, "vol", "v", "data")):
            for f in files:
                if not f.endswith(".crc"):
                    out[int(f.rsplit(".", 1)[1])] = (i, os.path.join(root, f))
    return out


def mount_from(pool, src):
    """Mount through disk `src` (the pool's first disk may be the one away)."""
    m = Mount(pool.disks[src], pool.mnt, "", os.path.join(pool.dir, "spacefs.log"))
    m.start()
    pool.mounts.append(m)
    return m


def read_block(pool, b):
    with open(os.path.join(pool.mnt, "v", "f"), "rb") as f:
        f.seek(b * BLK)
        return f.read(BLK)


def main():
    t = Tap()
    pool = Pool(3, prefix="spacefs-it-raway-")
    try:
        pool.volume("v", "mirror", "--copies", "2", "--columns", "1", "--integrity", "on")
        m = pool.mount()
        with open(os.path.join(pool.mnt, "v", "f"), "wb") as f:
            for b in range(NBLK):
                f.write(block(b, 0))
            os.fsync(f.fileno())
        t.eq(m.stop(), 0, "file laid out, clean unmount")
        ch = chunks(pool)
        t.eq(sorted(ch), [0, 1], "the file has two copies, positions 0 and 1")
        x, path1 = ch[1]
        with open(path1, "rb") as f:
            f.seek(B * BLK)
            old = f.read(BLK)
        with open(path1 + ".crc", "rb") as f:
            f.seek(B * 4)
            old_crc = f.read(4)
        t.eq(old, block(B, 0), "copy 1 holds generation 0 of the block")

        m = pool.mount()
        fd = os.open(os.path.join(pool.mnt, "v", "f"), os.O_WRONLY)
        os.pwrite(fd, block(B, 1), B * BLK)
        os.fsync(fd)
        os.close(fd)
        m.kill9()  # at once: the region is still dirty
        with open(path1, "r+b") as f:
            f.seek(B * BLK)
            f.write(old)
        with open(path1 + ".crc", "r+b") as f:
            f.seek(B * 4)
            f.write(old_crc)

        os.rename(pool.disks[x], pool.disks[x] + ".away")
        src = next(i for i in range(3) if i != x)
        mark = len(log_tail(pool, 10**9))
        m = mount_from(pool, src)
        log = log_tail(pool, 10**9)[mark:]
        t.ok("unclean shutdown: resynced" in log,
             f"disk {x} (copy 1) away: the unclean mount resynced the dirty region")
        t.eq(read_block(pool, B), block(B, 1), "degraded: the block reads generation 1")
        t.eq(m.stop(), 0, "degraded: clean unmount")

        os.rename(pool.disks[x] + ".away", pool.disks[x])
        mark = len(log_tail(pool, 10**9))
        m = mount_from(pool, src)
        deadline = time.time() + 60
        while time.time() < deadline and f"resync disk {x} done" not in log_tail(pool, 10**9)[mark:]:
            time.sleep(0.3)
        log = log_tail(pool, 10**9)[mark:]
        t.ok(f"resync disk {x} done" in log, f"disk {x} back: resynced")
        t.eq(m.stop(), 0, f"disk {x} back: clean unmount")

        y, _ = ch[0]
        shutil.rmtree(pool.disks[y])
        m = mount_from(pool, x)
        got = read_block(pool, B)
        t.ok(got == block(B, 1),
             f"copy 0's disk {y} lost: the block reads generation 1 (got generation "
             f"{struct.unpack_from('<Q', got, 8)[0]})")
        t.eq(m.stop(), 0, "clean unmount")
    except Exception as e:  # a crash of the test itself is a failure, not a hang
        t.ok(False, f"exception: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
