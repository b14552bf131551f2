#!/usr/bin/env python3
"""A replacement disk that goes away half way through its rebuild must be
rebuilt whole when it comes back.

Found in review: the disk, once failed, came back like any failed disk,
resynced only over the regions the dirty-region log said it had missed;
the files the interrupted rebuild had not reached yet were in none of
them.  It was marked healthy without them, and when the other copy was
lost next, those files read back wrong bytes, not EIO.

Pool of 3 disks, a mirror 2 volume of one column (each file on two
disks), 30 files of 512 KiB.  Two ways, one round each:
  mounted   disk 0 is failed and replaced with `--rate 1` (1 MB/s: the
            rebuild takes about 15 s); two seconds in, the replacement
            directory goes away (renamed), the rebuild stops; it comes
            back, the daemon takes it back;
  unmounted the same, but the daemon is unmounted while the replacement
            is away, and mounted again with it back.
Then, once the daemon says the disk is done, the disk holding the other
copies is lost, and every file must read back its bytes.
"""
import os
import re
import time

from failures import FailPool
from harness import Tap, log_tail

NFILES = 30
SIZE = 512 << 10


def wait_log(pool, mark, pattern, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if re.search(pattern, log_tail(pool, 10**9)[mark:]):
            return True
        time.sleep(0.3)
    return False


def one_round(t, how):
    pool = FailPool({"m": ["mirror", "--copies", "2", "--columns", "1"]}, ndisks=3, seed=9)
    try:
        pool.mount()
        for i in range(NFILES):
            rel = f"m/f{i}"
            data = pool.rng.randbytes(SIZE)
            with open(os.path.join(pool.mnt, rel), "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
            pool.want[rel] = data
        pool.fail(0, "removed")
        time.sleep(1.5)  # the health watcher records it
        mark = len(log_tail(pool, 10**9))
        new = os.path.join(pool.dir, "r1-d0")
        os.makedirs(new)
        p = pool.ctl("disk", "replace", pool.good_source(), 0, new, "--rate", "1", check=False)
        t.eq(p.returncode, 0, f"{how}: disk 0 replaced, rebuilt at 1 MB/s ({p.stderr.strip()})")
        pool.disks[0] = new
        pool.failed.discard(0)
        time.sleep(2)  # a few files rebuilt, most not
        os.rename(new, new + ".away")
        if how == "unmounted":  # and a mount without it, then one with it
            t.eq(pool.m.stop(), 0, f"{how}: clean unmount with the replacement away")
            pool.failed.add(0)
            pool.mount()
            t.eq(pool.m.stop(), 0, f"{how}: a mount without the replacement, clean unmount")
            pool.failed.discard(0)
            os.rename(new + ".away", new)
            mark = len(log_tail(pool, 10**9))
            pool.mount()
        else:
            t.ok(wait_log(pool, mark, r"DISK FAILED: disk 0", 15),
                 f"{how}: the replacement's going away is seen")
            mark = len(log_tail(pool, 10**9))
            os.rename(new + ".away", new)
        done = wait_log(pool, mark, r"(repair|resync) disk 0 done", 120)
        t.ok(done, f"{how}: disk 0 rebuilt after it came back")
        t.eq(pool.m.stop(), 0, f"{how}: clean unmount")
        other = 1  # within redundancy; files on disks 0 and 1 need disk 0's copy
        pool.fail(other, "removed")
        pool.mount()
        bad = pool.check()
        t.eq(bad[:5], [], f"{how}: with disk {other} lost, every file reads from disk 0")
        t.eq(pool.m.stop(), 0, f"{how}: clean unmount")
    except Exception as e:  # a crash of the test itself is a failure, not a hang
        t.ok(False, f"{how}: exception: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()


def main():
    t = Tap()
    for how in ("mounted", "unmounted"):
        one_round(t, how)
    t.done()


if __name__ == "__main__":
    main()
