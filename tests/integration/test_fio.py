#!/usr/bin/env python3
"""fio with verify on every layout, then unmount, remount, compare.

For each layout (simple, mirror 2 and 3 copies, parity 1 and 2) on 6 disk
directories with interleave 64 KiB: fio writes with verify=crc32c and
mixed block sizes from 4 KiB to 1 MiB in several jobs (random and
sequential, files larger than a stripe), Python adds files of unaligned
sizes and partial overwrites; every file's SHA-256 is taken, the pool is
unmounted and remounted, and every file must read back byte-identical.
"""
import os
import random

from harness import LAYOUTS, Pool, Tap, log_tail, make_layout_volumes, run, tree_digest

FIO_JOB = """
[global]
directory={dir}
ioengine=psync
verify=crc32c
verify_fatal=1
verify_state_save=0
do_verify=1
group_reporting=1
fallocate=none
randrepeat=0

[rand-mixed]
rw=randwrite
bssplit=4k/30:8k/15:64k/20:256k/20:1m/15
size=24m
numjobs=3

[seq-1m]
rw=write
bs=1m
size=16m

[seq-unaligned]
rw=write
bs=12k
size=5m
"""


def write_unaligned(vol_dir, rng):
    """Files of awkward sizes plus small overwrites inside them."""
    sizes = [0, 1, 511, 4095, 4097, 65535, 65537, 327679, 1000003, 3 * 1024 * 1024 + 7]
    for i, size in enumerate(sizes):
        data = bytearray(rng.randbytes(size))
        path = os.path.join(vol_dir, f"odd-{i}.bin")
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "r+b") as f:
            for _ in range(5 if size > 10 else 0):
                off = rng.randrange(0, size)
                patch = rng.randbytes(rng.randrange(1, 9000))
                f.seek(off)
                f.write(patch)
                end = off + len(patch)
                if end > len(data):
                    data.extend(b"\0" * (end - len(data)))
                data[off:end] = patch
        with open(path, "rb") as f:
            if f.read() != bytes(data):
                return False
    return True


def main():
    t = Tap()
    pool = Pool(6)
    rng = random.Random(1234)
    try:
        make_layout_volumes(pool, interleave="64K", integrity="on")
        m = pool.mount()
        digests = {}
        for name in LAYOUTS:
            vol = os.path.join(pool.mnt, name)
            job = os.path.join(pool.dir, f"{name}.fio")
            with open(job, "w") as f:
                f.write(FIO_JOB.format(dir=vol))
            p = run(["fio", "--output-format=terse", job], check=False)
            if not t.ok(p.returncode == 0, f"{name}: fio write+verify, 4K-1M mixed, 5 jobs"):
                t.diag(p.stdout[-3000:] + p.stderr[-3000:])
            t.ok(write_unaligned(vol, rng), f"{name}: unaligned sizes and overwrites read back")
            digests[name] = tree_digest(vol)
        t.eq(m.stop(), 0, "daemon exits 0 on unmount")
        t.ok(m.sanitizer_report() is None, "no sanitizer report")
        m = pool.mount()
        for name in LAYOUTS:
            got = tree_digest(os.path.join(pool.mnt, name))
            t.ok(len(got) >= 14, f"{name}: files present after remount ({len(got)})")
            t.eq(got, digests[name], f"{name}: every file byte-identical after remount")
        t.eq(m.stop(), 0, "daemon exits 0 on second unmount")
        t.ok(m.sanitizer_report() is None, "no sanitizer report after remount")
    except Exception as e:  # a crash of the harness is a failed test, not a skip
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
