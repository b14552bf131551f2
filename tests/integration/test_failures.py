#!/usr/bin/env python3
"""Disk failures within redundancy: degraded service, replace, repair.

For each redundancy class (1: mirror 2 + parity 1, 2: mirror 3 + parity
2), one pool of 6 disks holds a volume of each layout of the class.
Files are written and their bytes kept first.  Then, for each way a disk
fails (directory removed, permissions 000, replaced by an empty
directory, replaced by another pool's disk), once while mounted and once
while unmounted, as many disks fail as the layouts tolerate:

- every file reads back identical, and writes go on (new files and
  overwrites, also read back);
- spacectl status shows the disks failed and the volumes degraded;
- the failed disks are replaced and repaired (spacectl disk replace
  --wait), every file is still identical, and the next round fails a
  different set of disks -- which only works if the rebuild restored
  redundancy.

A last remount checks everything once more.
"""
import os
import time

from failures import MODES, FailPool, log_mark, log_since
from harness import Tap, log_tail

CLASSES = {
    1: {"mirror2": ["mirror", "--copies", "2"], "parity1": ["parity", "--parity", "1"]},
    2: {"mirror3": ["mirror", "--copies", "3"], "parity2": ["parity", "--parity", "2"]},
}


def degraded_ok(t, pool, fails, what):
    st = pool.wait_state(
        lambda j: all(j["disks"][i]["state"] == "failed" for i in fails), timeout=15)
    t.ok(st is not None and all(st["disks"][i]["state"] == "failed" for i in fails),
         f"{what}: status shows disks {sorted(fails)} failed")
    t.ok(st is not None and all(v["state"] == "degraded" for v in st["volumes"]),
         f"{what}: status shows every volume degraded")


def one_round(t, pool, r, mode, mounted, fails, rnd):
    what = f"r{r} {mode} {'mounted' if mounted else 'unmounted'} disks {sorted(fails)}"
    mark = log_mark(pool)
    if mounted:
        for i in fails:
            pool.fail(i, mode)
        time.sleep(1.5)  # the health check runs every second
    else:
        t.eq(pool.m.stop(), 0, f"{what}: clean unmount")
        for i in fails:
            pool.fail(i, mode)
        pool.mount()
        t.ok("MOUNTED DEGRADED" in log_since(pool, mark), f"{what}: the mount says it is degraded")
    t.eq(pool.check(), [], f"{what}: every file identical")
    pool.write_files(3, f"w{rnd}")
    pool.overwrite_some(4)
    t.eq(pool.check(), [], f"{what}: writes continue, read back identical")
    degraded_ok(t, pool, fails, what)
    for i in sorted(fails):
        p = pool.replace(i)
        t.eq(p.returncode, 0, f"{what}: disk {i} replaced and repaired")
        if p.returncode:
            t.diag(p.stdout + p.stderr)
    st = pool.wait_state(lambda j: all(d["state"] == "healthy" for d in j["disks"]))
    t.ok(st is not None and all(d["state"] == "healthy" for d in st["disks"]),
         f"{what}: every disk healthy after the repair")
    t.eq(pool.check(), [], f"{what}: every file identical after the repair")


def run_class(t, r):
    pool = FailPool(CLASSES[r], seed=r)
    try:
        pool.mount()
        pool.write_files(6, "base")
        t.eq(pool.check(), [], f"r{r}: files written")
        rnd = 0
        for mode in MODES:
            for mounted in (True, False):
                fails = {(rnd * r + k) % 6 for k in range(r)}
                one_round(t, pool, r, mode, mounted, fails, rnd)
                rnd += 1
        t.eq(pool.m.stop(), 0, f"r{r}: clean unmount")
        pool.mount()
        t.eq(pool.check(), [], f"r{r}: every file identical after a remount")
        t.eq(pool.m.stop(), 0, f"r{r}: clean unmount")
        t.ok(pool.m.sanitizer_report() is None, f"r{r}: no sanitizer report")
    except Exception as e:
        t.ok(False, f"r{r}: unexpected error: {e}")
        t.diag(log_tail(pool, 6000))
    finally:
        pool.cleanup()


def main():
    t = Tap()
    for r in (1, 2):
        run_class(t, r)
    t.done()


if __name__ == "__main__":
    main()
