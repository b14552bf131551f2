#!/usr/bin/env python3
"""Checksums written lazily survive kill -9: bit rot made after the crash
is detected, and no good block reads as bad.

The data path stores a write's checksums into a shared mapping of the
chunk's sidecar (pool/csum.h) instead of writing them with the data; they
reach the disk later, in batches (writeback, fsync, syncfs).  What must
still hold across a kill -9 of the daemon, on simple, mirror 2 and parity
1 (the default 4+1 columns), integrity on:

  - a file is written and fsync'd, then 4 KiB blocks 1-8 are overwritten
    with O_DIRECT and no fsync (their checksums exist only as lazily
    written pages), and the daemon is killed at once;
  - while it is down, 4 bytes of block 1 are flipped in its chunk file;
  - after the remount (an unclean one: the dirty regions are resynced),
    every overwritten block reads back as written (a good block whose
    checksum was never flushed is not taken for bad), and the rotten
    block is detected: the log names the checksum mismatch, mirror and
    parity serve and heal the right bytes, never taking the rot for a
    torn write, and simple answers EIO for that block alone.

A design that kept checksums in the daemon's memory and relied on the
resync to re-derive them fails this: the rot would be blessed (mirror,
parity) or the good overwritten blocks would read as bad (simple).
"""
import mmap
import os

import ondisk
from harness import Pool, Tap, log_tail

INTERLEAVE = 64 * 1024
NDISKS = 6
FILE_SIZE = 1 << 20
BLK = 4096
LAYOUTS = {
    "simple": (["simple"], dict(kind="simple", copies=1, parity=0, columns=NDISKS)),
    "mirror2": (["mirror", "--copies", "2"],
                dict(kind="mirror", copies=2, parity=0, columns=NDISKS // 2)),
    "parity1": (["parity", "--parity", "1"],
                dict(kind="parity", copies=1, parity=1,
                     columns=ondisk.default_parity_columns(NDISKS, 1))),
}


def chunk_of(pool, vol, pos):
    found = []
    for d in pool.disks:
        data = os.path.join(d, "vol", vol, "data")
        for root, _, files in os.walk(data):
            found += [os.path.join(root, f) for f in files if f.endswith(f".{pos}")]
    return found


def flip_block1(pool, vol):
    """Flip 4 bytes at chunk offset 4096 of data column 0, stripe 0: the
    file's block 1."""
    geom = dict(LAYOUTS[vol][1], interleave=INTERLEAVE)
    paths = chunk_of(pool, vol, ondisk.slot_position(geom, 0, 0))
    assert len(paths) == 1, paths
    with open(paths[0], "r+b") as f:
        f.seek(BLK)
        old = f.read(4)
        f.seek(BLK)
        f.write(bytes(b ^ 0xA5 for b in old))
        f.flush()
        os.fsync(f.fileno())


def write_direct(path, off, data):
    buf = mmap.mmap(-1, len(data))  # page aligned, as O_DIRECT wants
    buf.write(data)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [buf], off) == len(data)
    finally:
        os.close(fd)
        buf.close()


def read_block(path, off):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, BLK, off)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def main():
    t = Tap()
    pool = Pool(NDISKS)
    try:
        for vol, (args, _) in LAYOUTS.items():
            pool.volume(vol, args[0], *args[1:], "--interleave", "64K")
        m = pool.mount()
        want = {}
        for vol in LAYOUTS:
            path = os.path.join(pool.mnt, vol, "f.bin")
            data = bytearray(os.urandom(FILE_SIZE))
            with open(path, "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
            new = os.urandom(8 * BLK)
            write_direct(path, BLK, new)  # blocks 1-8, no fsync
            data[BLK:9 * BLK] = new
            want[vol] = bytes(data)
        mark = len(log_tail(pool, 10 ** 9))
        m.kill9()
        for vol in LAYOUTS:
            flip_block1(pool, vol)
        pool.mount()

        for vol in LAYOUTS:
            path = os.path.join(pool.mnt, vol, "f.bin")
            got = [read_block(path, off) for off in range(0, FILE_SIZE, BLK)]
            exp = [want[vol][off:off + BLK] for off in range(0, FILE_SIZE, BLK)]
            good = [i for i in range(len(exp)) if got[i] == exp[i]]
            if vol == "simple":
                t.eq(got[1], 5, f"{vol}: the rotten block 1 reads as EIO (no redundancy)")
                t.eq(len(good), len(exp) - 1,
                     f"{vol}: every other block, the overwritten ones included, reads as written")
            else:
                t.eq(len(good), len(exp),
                     f"{vol}: every block reads as written, the rotten one served from "
                     "redundancy and the overwritten ones as overwritten")
        log = log_tail(pool, 10 ** 9)[mark:]
        t.ok("unclean shutdown: resynced" in log, "the mount resynced the dirty regions")
        t.ok("torn write" not in log, "no rotten block was taken for a torn write")
        t.ok(log.count("checksum mismatch") >= len(LAYOUTS),
             "the rot is detected and named in the log on every layout")
        if t.failed:
            t.diag(log[-4000:])
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
