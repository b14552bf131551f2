#!/usr/bin/env python3
"""A 2 GiB sparse VHDX-like image under 4 concurrent random writers.

The image is created sparse (truncate), then four fio jobs each own a
512 MiB region and write 4-64 KiB random blocks into it with
verify=crc32c, on a mirror and on both parity layouts (parity is where
read-modify-write happens).  After the run the pool is remounted and the
image must hash the same (data extents, hole map, and zeros at the start
of every hole: harness.sparse_digest); untouched parts must still be
holes (the file stays thin: far fewer bytes allocated than its size).
"""
import os

from harness import LAYOUTS, Pool, Tap, log_tail, make_layout_volumes, run, sparse_digest

IMAGE_SIZE = 2 << 30

FIO_JOB = """
[global]
filename={path}
ioengine=psync
rw=randwrite
bsrange=4k-64k
bs_unaligned=0
size=512m
offset_increment=512m
io_size=24m
numjobs=4
verify=crc32c
verify_fatal=1
verify_state_save=0
fallocate=none
file_service_type=sequential
group_reporting=1

[vhdx-writers]
"""


def main():
    t = Tap()
    pool = Pool(6)
    layouts = {k: LAYOUTS[k] for k in ("mirror2", "parity1", "parity2")}
    try:
        make_layout_volumes(pool, interleave="64K", integrity="on", layouts=layouts)
        m = pool.mount()
        digests = {}
        for name in layouts:
            path = os.path.join(pool.mnt, name, "disk.vhdx")
            with open(path, "wb") as f:
                f.truncate(IMAGE_SIZE)
            job = os.path.join(pool.dir, f"{name}.fio")
            with open(job, "w") as f:
                f.write(FIO_JOB.format(path=path))
            p = run(["fio", job], check=False)
            if not t.ok(p.returncode == 0, f"{name}: 4 writers, random 4-64K, verified"):
                t.diag(p.stdout[-3000:] + p.stderr[-3000:])
            st = os.stat(path)
            t.eq(st.st_size, IMAGE_SIZE, f"{name}: image keeps its 2 GiB size")
            t.ok(st.st_blocks * 512 < IMAGE_SIZE // 2,
                 f"{name}: image is thin ({st.st_blocks * 512 >> 20} MiB allocated)")
            digests[name] = sparse_digest(path)
        t.eq(m.stop(), 0, "daemon exits 0 on unmount")
        m = pool.mount()
        for name in layouts:
            path = os.path.join(pool.mnt, name, "disk.vhdx")
            t.eq(sparse_digest(path), digests[name], f"{name}: image identical after remount")
        t.eq(m.stop(), 0, "daemon exits 0 on second unmount")
        t.ok(m.sanitizer_report() is None, "no sanitizer report")
    except Exception as e:
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
