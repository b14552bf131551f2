#!/usr/bin/env python3
"""spacebench on a real mount: its verifier catches what it claims, and the
chunk I/O counters show read-modify-write.

- write + verify on a mirror volume: clean, exit 0.
- An acknowledged write dropped through spacebench's own test hook
  (--test-drop-write N): verify names that block's offset, exit 1.
- A block corrupted underneath: on an integrity-off simple volume with one
  column (chunk offset = file offset), one byte of the chunk file is
  flipped while unmounted; after the remount verify names that offset as
  corrupt, exit 1.
- A crashed run on a reused file: the file holds other bytes, run 1
  writes over part of it to completion, run 2 is stopped mid-run with
  writes in flight (the daemon SIGSTOPped so they stay queued, then
  kill -9); after the remount verify of run 2 finds 0 problems and counts
  the blocks whose write was in flight and that hold their older content
  (run 1's block, or the file's old bytes) as in-flight-old, allowed.
  Before log version 2 those were reported corrupt or misplaced.
- Real damage is still caught: a byte flipped, and a block overwritten
  with bytes never written to it, underneath an integrity-off volume,
  are named corrupt by offset.
- A damaged log: verify refuses with one line naming the byte, exit 2.
- run: JSON with figures; the per-disk counters of the daemon show 0 chunk
  reads and 2 chunk writes per 4 KiB write on mirror 2, and 2 reads and 2
  writes on parity 1 (read-modify-write).
The log is read here with struct, independently of spacebench's C reader.
"""
import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time

from harness import Pool, Tap, log_tail, run

SPACEBENCH = os.environ.get("SPACEBENCH", "build/bench/spacebench")


def sb(*args, check=False):
    return run([SPACEBENCH, *map(str, args)], check=check)


def log_records(path):
    """[(type, offset, generation)] from a spacebench log (sb.h layout)."""
    data = open(path, "rb").read()
    assert data[:8] == b"SPCBLOG1", "not a spacebench log"
    assert struct.unpack_from("<I", data, 8)[0] == 2, "not a version 2 log"
    out = []
    for pos in range(64, len(data), 32):
        typ, _crc, off, gen, _aux = struct.unpack_from("<IIQQQ", data, pos)
        out.append((typ, off, gen))
    return out


def acked_blocks(recs):
    """{offset: last acknowledged generation}."""
    last = {}
    for typ, off, gen in recs:
        if typ == 2:
            last[off] = gen
    return last


def in_flight(recs):
    """{offset: generation} of the writes submitted and never acknowledged."""
    sub = {}
    for typ, off, gen in recs:
        if typ == 1:
            sub[off] = gen
        elif typ == 2 and sub.get(off) == gen:
            del sub[off]
    return sub


def summary_counts(out):
    """{'lost': n, ..., 'in-flight-old': n} from verify's summary line."""
    line = [x for x in out.splitlines() if x.startswith("spacebench verify:")]
    kinds = "lost|torn|corrupt|misplaced|stale|in-flight-old"
    return {k: int(n) for n, k in re.findall(rf"(\d+) ({kinds})\b", line[-1] if line else "")}


def crash_reused_file(t, pool, m, logs):
    """Run 2 on a file run 1 wrote, stopped with writes in flight: verify
    must not call the blocks still holding their older content damage.
    Returns the new mount."""
    f = os.path.join(pool.mnt, "mir", "crash.dat")
    lg1, lg2 = os.path.join(logs, "crash1.log"), os.path.join(logs, "crash2.log")
    with open(f, "wb") as fh:  # the file's previous bytes: not spacebench blocks
        fh.write(os.urandom(2 << 20))
    p = sb("write", f, "--log", lg1, "--size", "2M", "--count", "600", "--seed", "11")
    t.eq(p.returncode, 0, "crash: run 1 over part of a 2 MiB file of other bytes: exit 0")
    run2 = subprocess.Popen([SPACEBENCH, "write", f, "--log", lg2, "--size", "2M", "--time",
                             "60", "--qd", "16", "--seed", "12"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline and (not os.path.exists(lg2) or
                                      os.path.getsize(lg2) < 64 + 32 * 400):
        time.sleep(0.05)
    m.proc.send_signal(signal.SIGSTOP)  # what is queued now stays unwritten
    time.sleep(0.5)
    m.kill9()
    try:
        _, err = run2.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        run2.kill()
        _, err = run2.communicate()
    t.ok(run2.returncode not in (0, None), f"crash: run 2 stopped by the kill -9 "
         f"(exit {run2.returncode}: {err.strip()[:120]})")
    pending = in_flight(log_records(lg2))
    t.ok(len(pending) > 0, f"crash: run 2's log has {len(pending)} writes in flight")
    m = pool.mount()
    p = sb("verify", f, "--log", lg2)
    c = summary_counts(p.stdout)
    t.diag(p.stdout.strip()[-1500:])
    t.ok(p.returncode == 0 and c.get("corrupt") == 0 and c.get("misplaced") == 0 and
         c.get("lost") == 0 and c.get("torn") == 0 and c.get("stale") == 0,
         "crash: verify of run 2 after the remount: 0 lost/torn/corrupt/misplaced/stale, "
         "exit 0")
    t.ok(0 < c.get("in-flight-old", 0) <= len(pending),
         f"crash: {c.get('in-flight-old')} of the {len(pending)} blocks in flight hold "
         "their older content, counted as in-flight-old")
    return m


def counters(pool, volume):
    j = json.loads(pool.spacectl("status", pool.source, "--json").stdout)
    for v in j["daemon"]["volumes"]:
        if v["name"] == volume:
            return (sum(d["reads"] for d in v["disks"]), sum(d["writes"] for d in v["disks"]))
    raise RuntimeError(f"no counters for {volume}")


def check_rmw(t, pool, volume, want_reads, want_writes):
    path = os.path.join(pool.mnt, volume, "rmw.dat")
    sb("run", path, "-w", "seqwrite1m", "--size", "32M", "--prefill-only", "-q", check=True)
    r0, w0 = counters(pool, volume)
    p = sb("run", path, "-w", "randwrite4k", "--size", "32M", "--ios", "2000", "--time", "60",
           "--no-prefill", "--json", "-q")
    r1, w1 = counters(pool, volume)
    j = json.loads(p.stdout) if p.returncode == 0 else {"writes": 0}
    n = j["writes"]
    t.ok(p.returncode == 0 and n >= 2000, f"{volume}: randwrite4k ran ({n} writes)")
    if n:
        rpw, wpw = (r1 - r0) / n, (w1 - w0) / n
        t.ok(abs(rpw - want_reads) < 0.05 and abs(wpw - want_writes) < 0.05,
             f"{volume}: {rpw:.2f} chunk reads and {wpw:.2f} chunk writes per 4 KiB write "
             f"(want {want_reads} and {want_writes})")


def main():
    t = Tap()
    pool = Pool(6)
    logs = os.path.join(pool.dir, "logs")  # logs live outside the mount
    os.makedirs(logs)
    try:
        pool.volume("mir", "mirror", "--copies", "2", "--interleave", "64K")
        pool.volume("plain", "simple", "--columns", "1", "--interleave", "64K",
                    "--integrity", "off")
        pool.volume("par", "parity", "--parity", "1", "--columns", "5", "--interleave", "64K")
        m = pool.mount()

        # clean write + verify
        f, lg = os.path.join(pool.mnt, "mir", "v.dat"), os.path.join(logs, "mir.log")
        p = sb("write", f, "--log", lg, "--size", "16M", "--count", "3000", "--fsync-every", "500")
        t.eq(p.returncode, 0, "write on mirror: exit 0")
        p = sb("verify", f, "--log", lg)
        if not t.eq(p.returncode, 0, "verify on mirror: clean, exit 0"):
            t.diag(p.stdout[-2000:] + p.stderr)
        t.ok(" 0 lost, 0 torn, 0 corrupt, 0 misplaced, 0 stale; 0 in-flight-old" in p.stdout,
             "verify summary counts no problem")

        m = crash_reused_file(t, pool, m, logs)

        # a dropped acknowledged write (spacebench's test hook)
        f, lg = os.path.join(pool.mnt, "plain", "v.dat"), os.path.join(logs, "plain.log")
        p = sb("write", f, "--log", lg, "--size", "8M", "--count", "1500", "--seed", "7",
               "--test-drop-write", "700")
        t.eq(p.returncode, 0, "write with --test-drop-write 700: exit 0")
        recs = log_records(lg)
        dropped = [off for typ, off, gen in recs if typ == 1 and gen == 700][0]
        acked = acked_blocks(recs)
        t.eq(acked.get(dropped), 700, "the log records write 700 as acknowledged")
        p = sb("verify", f, "--log", lg)
        t.eq(p.returncode, 1, "verify after a dropped write: exit 1")
        t.ok(f"offset {dropped}: lost" in p.stdout or f"offset {dropped}: stale" in p.stdout,
             f"verify names the dropped write's offset {dropped}")
        t.ok(p.stdout.count("offset ") == 1, "and nothing else")

        # a block corrupted underneath the mount (integrity off, one column)
        ordered = sorted(o for o in acked if o != dropped)
        victim, garbage = ordered[len(ordered) // 2], ordered[len(ordered) // 3]
        t.eq(m.stop(), 0, "clean unmount")
        chunks = [c for c in glob.glob(os.path.join(pool.dir, "d*", "vol", "plain", "data",
                                                    "*", "*.0"))]
        t.eq(len(chunks), 1, "the simple one-column volume has one chunk file")
        with open(chunks[0], "r+b") as fh:
            fh.seek(victim + 1000)
            b = fh.read(1)
            fh.seek(victim + 1000)
            fh.write(bytes([b[0] ^ 0x5A]))
            fh.seek(garbage)  # a whole block of bytes never written there
            fh.write(os.urandom(4096))
        m = pool.mount()
        p = sb("verify", f, "--log", lg)
        t.eq(p.returncode, 1, "verify after corruption underneath: exit 1")
        t.ok(f"offset {victim}: corrupt" in p.stdout,
             f"verify names the corrupted offset {victim} as corrupt")
        t.ok(f"offset {garbage}: corrupt" in p.stdout,
             f"verify names the block of never-written bytes at {garbage} as corrupt")
        t.ok(f"offset {dropped}: " in p.stdout and p.stdout.count("offset ") == 3,
             "and still the dropped one, and nothing else")
        t.diag(p.stdout.strip())

        # a damaged log
        bad = os.path.join(logs, "bad.log")
        shutil.copy(lg, bad)
        with open(bad, "r+b") as fh:
            fh.seek(64 + 32 * 10 + 12)
            fh.write(b"\xff")
        p = sb("verify", f, "--log", bad)
        t.eq(p.returncode, 2, "damaged log: exit 2")
        t.ok("record CRC mismatch at byte 384" in p.stderr and p.stderr.count("\n") == 1,
             "damaged log: one line naming the byte")
        p = sb("verify", f, "--log", os.path.join(logs, "missing.log"))
        t.eq(p.returncode, 2, "missing log: exit 2")

        # workloads and counted chunk I/O
        p = sb("run", os.path.join(pool.mnt, "mir", "w.dat"), "-w", "vhdx", "--grow",
               "--size", "64M", "--time", "1", "--json")
        j = json.loads(p.stdout) if p.returncode == 0 else {}
        t.ok(j.get("iops", 0) > 0 and j.get("grow_writes", 0) > 0 and j["lat"]["p99_us"] > 0,
             "run vhdx --grow: IOPS, grow writes and p99 in the JSON")
        check_rmw(t, pool, "mir", 0, 2)
        check_rmw(t, pool, "par", 2, 2)

        p = sb("run", "x", "-w", "nope")
        t.ok(p.returncode == 2 and "vhdx" in p.stderr, "unknown workload: exit 2, names choices")
        p = sb("--help")
        t.ok(p.returncode == 0 and all(w in p.stdout for w in
                                       ("vhdx", "randread4k", "--test-drop-write", "verify",
                                        "in-flight-old", "version 2")),
             "--help lists workloads, modes and the test hook")
        t.eq(m.stop(), 0, "clean unmount")
    except Exception as e:  # report, then fail the plan
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
