#!/usr/bin/env python3
"""test_posix.py -- the differential POSIX suite (posix_suite.py) on spacefs.

Builds a 6-disk pool with two volumes,

    mirror   --layout mirror --copies 2 --interleave 64K
    parity   --layout parity --parity 1 --interleave 64K

mounts it with -o allow_other,default_permissions (the uid-65534 scenarios
need both), and runs every scenario of posix_suite.py on each volume
against a reference directory on ext4 (a scratch directory next to the
pool's disks; /var/tmp is ext4 on the build hosts).  One TAP line per
scenario per volume, named "<volume>: <scenario>".

KNOWN_FAILURES lists scenarios that fail for a known reason (keys are a
scenario name, for every volume, or "<scenario>@<volume>").  A known
failure is printed as a TAP TODO, "not ok N - ... # TODO reason", which
meson counts as an expected failure: visible, but the build stays green.
(TAP's "ok ... # TODO" would be an *unexpected pass*, which meson counts as
a failure.)  A known failure that passes prints "ok" and a diag line saying
to remove it from the list.

A watchdog kills the daemon if no scenario finishes for STALL seconds
(env SPACEFS_POSIX_STALL, default 300): blocked calls then fail with
ENOTCONN, the rest of the run fails fast, and the log says which scenario
hung.  At the end the mount is unmounted, the daemon must exit 0, and its
log must hold no sanitizer report.

Environment: SPACEFS, SPACECTL (harness.py), SPACEFS_TEST_DIR,
SPACEFS_POSIX_K (a regex selecting scenarios, like posix_suite.py -k),
SPACEFS_POSIX_VERBOSE=1 (full observations of failing scenarios).
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import posix_suite  # noqa: E402
from harness import Pool, Tap  # noqa: E402

VOLUMES = {
    "mirror": ["mirror", "--copies", "2", "--interleave", "64K"],
    "parity": ["parity", "--parity", "1", "--interleave", "64K"],
}

# scenario (or "scenario@volume") -> reason.  See docs/POSIX.md.
KNOWN_FAILURES = {
    "open/tmpfile": "not implemented: O_TMPFILE (spacefs has no FUSE tmpfile op): EOPNOTSUPP",
}

STALL = float(os.environ.get("SPACEFS_POSIX_STALL", "300"))


def known(name, vol):
    return KNOWN_FAILURES.get(f"{name}@{vol}", KNOWN_FAILURES.get(name))


class Watchdog(threading.Thread):
    """Kills the daemon when the suite makes no progress for STALL s."""

    def __init__(self, mount, tap):
        super().__init__(daemon=True)
        self.mount, self.tap = mount, tap
        self.last = time.monotonic()
        self.current = None
        self.fired = False
        self.stop_ev = threading.Event()

    def progress(self, current):
        self.last = time.monotonic()
        self.current = current

    def run(self):
        while not self.stop_ev.wait(2):
            if time.monotonic() - self.last > STALL and self.mount.proc is not None:
                self.fired = True
                self.tap.diag(f"watchdog: no progress for {STALL:.0f}s after {self.current!r}; "
                              "killing spacefs (the rest of the run will fail)")
                self.tap.diag(self.mount.log_text()[-4000:])
                self.mount.kill9()
                return


def run_volume(tap, pool, mount, vol, dog, pattern, verbose):
    ref = os.path.join(pool.dir, f"ref-{vol}")
    test = os.path.join(mount.mnt, vol, "posix")
    os.makedirs(ref)
    try:
        os.mkdir(test)
    except OSError as e:
        tap.ok(False, f"{vol}: mkdir {test}: {e}")
        return
    counts = {"pass": 0, "fail": 0, "todo": 0, "skip": 0, "fixed": []}
    died = {"said": False}

    def on_result(name, passed, detail):
        dog.progress(f"{vol}: {name}")
        reason = known(name, vol)
        tap.n += 1
        if detail.startswith("SKIP "):
            print(f"ok {tap.n} - {vol}: {name} # SKIP {detail[5:]}", flush=True)
            counts["skip"] += 1
            return
        if passed:
            print(f"ok {tap.n} - {vol}: {name}", flush=True)
            counts["pass"] += 1
            if reason is not None:
                counts["fixed"].append(name)
                tap.diag(f"known failure {name!r} passes now: remove it from KNOWN_FAILURES "
                         "in tests/integration/test_posix.py")
            return
        if reason is not None:
            print(f"not ok {tap.n} - {vol}: {name} # TODO {reason}", flush=True)
            counts["todo"] += 1
        else:
            print(f"not ok {tap.n} - {vol}: {name}", flush=True)
            tap.failed += 1
            counts["fail"] += 1
        tap.diag(detail)
        if mount.proc is not None and mount.proc.poll() is not None and not died["said"]:
            died["said"] = True
            tap.diag(f"spacefs exited {mount.proc.returncode} during {name}:")
            tap.diag(mount.log_text()[-4000:])

    t0 = time.monotonic()
    posix_suite.run_suite(ref, test, 65534, pattern, verbose, on_result)
    tap.diag(f"{vol}: {counts['pass']} passed, {counts['fail']} failed, "
             f"{counts['todo']} known failures, {counts['skip']} skipped "
             f"({time.monotonic() - t0:.0f}s)")
    if counts["fixed"]:
        tap.diag(f"{vol}: known failures now passing: {', '.join(counts['fixed'])}")


def main():
    if os.geteuid() != 0:
        print("1..0 # SKIP the POSIX suite needs root (FUSE mounts, chown, setresuid)")
        return 0
    if not os.path.exists("/dev/fuse"):
        print("1..0 # SKIP no /dev/fuse")
        return 0
    tap = Tap()
    pattern = os.environ.get("SPACEFS_POSIX_K") or None
    verbose = 1 if os.environ.get("SPACEFS_POSIX_VERBOSE") else 0
    pool = Pool(ndisks=6, name="posixpool", prefix="spacefs-posix-")
    try:
        for vol, args in VOLUMES.items():
            pool.volume(vol, *args)
        mount = pool.mount("allow_other,default_permissions")
        dog = Watchdog(mount, tap)
        dog.start()
        try:
            for vol in VOLUMES:
                if mount.proc is None:
                    tap.ok(False, f"{vol}: not run, spacefs was killed")
                    continue
                run_volume(tap, pool, mount, vol, dog, pattern, verbose)
        finally:
            dog.stop_ev.set()
        if dog.fired:
            tap.ok(False, "daemon did not hang (watchdog fired)")
        else:
            rc = mount.stop()
            if not tap.eq(rc, 0, "spacefs exits 0 after unmount"):
                tap.diag(mount.log_text()[-4000:])
            report = mount.sanitizer_report()
            if not tap.ok(report is None, "no sanitizer report in the daemon log"):
                tap.diag(report[-8000:])
    finally:
        pool.cleanup()
    tap.done()


if __name__ == "__main__":
    main()
