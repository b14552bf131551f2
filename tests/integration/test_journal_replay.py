#!/usr/bin/env python3
"""A journal replay whose checkpoint cannot finish leaves the journal as
a crash would: the next mount replays it all again.

Pool of 6 disks, a parity 1 volume (5 columns, 16 KiB interleave,
write-through journal).  A 2 MiB file is laid out, then 200 random 4 KiB
O_DIRECT writes are made (each a partial-stripe update, so each one a
journal record) and the daemon is killed with kill -9: no checkpoint
came, so the records stay in the journal.  Then:
1. a mount with SPACEFS_FAULT=jsync:1 (the checkpoint after the replay
   cannot sync its disks, pool/fault.h) fails and says the replay failed;
2. a plain mount replays the records again -- before the fix the failed
   mount's clean close checkpointed with a sync that worked by then,
   ending the epoch, and this mount replayed none -- and the file reads
   back exactly as written;
3. after a clean unmount, the next mount has nothing to replay.
"""
import mmap
import os
import random
import re
import time

from harness import Pool, Tap, log_tail, no_sanitizer_reports

FILE = 2 << 20
BLOCK = 4096
WRITES = 200


def replayed(text):
    """The record counts of the replays logged in text, in order."""
    return [int(n) for n in re.findall(r"journal: replayed (\d+) record", text)]


def main():
    t = Tap()
    seed = int(os.environ.get("SPACEFS_SEED", time.time()))
    t.diag(f"seed {seed}")
    rng = random.Random(seed)
    pool = Pool(6, prefix="spacefs-it-jreplay-")
    os.environ.pop("SPACEFS_FAULT", None)
    try:
        pool.volume("v", "parity", "--parity", "1", "--columns", "5", "--interleave", "16K")
        m = pool.mount()
        path = os.path.join(pool.mnt, "v", "f")
        model = bytearray(rng.randbytes(FILE))
        with open(path, "wb") as f:  # laid out and made durable first
            f.write(model)
            os.fsync(f.fileno())
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, BLOCK)
        for _ in range(WRITES):
            b = rng.randrange(FILE // BLOCK)
            data = rng.randbytes(BLOCK)
            buf.seek(0)
            buf.write(data)
            t_ok = os.pwrite(fd, buf, b * BLOCK) == BLOCK
            if not t_ok:
                break
            model[b * BLOCK:(b + 1) * BLOCK] = data
        os.close(fd)
        t.ok(t_ok, f"{WRITES} random 4 KiB O_DIRECT writes acknowledged")
        m.kill9()
        mark = len(log_tail(pool, 10**9))

        # 1. the replay's checkpoint cannot sync: the mount fails
        os.environ["SPACEFS_FAULT"] = "jsync:1"
        failed = False
        try:
            pool.mount()
        except RuntimeError:
            failed = True
        finally:
            os.environ.pop("SPACEFS_FAULT", None)
        log = log_tail(pool, 10**9)[mark:]
        t.ok(failed, "the mount whose journal checkpoint cannot sync fails")
        t.ok("journal replay failed" in log, "and says the journal replay failed")
        first = replayed(log)
        t.ok(first == [] or first[0] > 0, f"it had records to replay {first}")

        # 2. the next mount replays them again; the file is as written
        mark = len(log_tail(pool, 10**9))
        m = pool.mount()
        log = log_tail(pool, 10**9)[mark:]
        again = replayed(log)
        t.ok(len(again) == 1 and again[0] > 0,
             f"the next mount replays the journal again {again}")
        with open(path, "rb") as f:
            got = f.read()
        t.ok(got == bytes(model), "the file reads back as written")
        t.eq(m.stop(), 0, "clean unmount")

        # 3. a clean unmount ended the epoch
        mark = len(log_tail(pool, 10**9))
        m = pool.mount()
        log = log_tail(pool, 10**9)[mark:]
        t.eq(replayed(log), [], "after a clean unmount nothing is replayed")
        t.eq(m.stop(), 0, "clean unmount")
        no_sanitizer_reports(t, pool.mounts)  # the failed mount's lines too: one log
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
