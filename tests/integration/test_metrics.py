#!/usr/bin/env python3
"""Prometheus metrics: scraped over HTTP during a fio run, parsed with the
real client parser, and held to fio's own figures.

A pool of 4 disks with a Mirror2 volume (every byte written twice) and a
Parity1 volume of 3 columns with 64 KiB interleave (2 data + 1 parity: a
128 KiB stripe, so 128 KiB-aligned writes cost exactly 1.5x) is mounted
with -o direct_io (every application byte reaches the daemon) and
-o metrics=127.0.0.1:PORT.  fio writes each volume sequentially with
1 MiB blocks, rate-limited so the run lasts a few seconds, then reads it
back.  While it runs the endpoint is scraped repeatedly:
  - every scrape parses with prometheus_client's text parser;
  - the counters never go back, and move while fio runs;
  - application bytes written per volume = fio's bytes (within 5%);
  - chunk bytes written = fio's bytes x 2 (mirror) or x 1.5 (parity);
  - chunk bytes read = fio's bytes read (healthy: data columns only);
  - the latency histogram counts every chunk I/O the counters count;
and `spacectl metrics` prints the same families as the HTTP endpoint.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

from harness import Pool, Tap, log_tail
from nodes import free_port

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # python3 from another prefix: Debian's module is plain Python
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

# Two runs: fio lays out the files of read jobs at start-up, so reading
# in the same run as writing would write every file twice.
FIO_WRITE = """
[global]
ioengine=psync
bs=1m
size=48m
fallocate=none
rate=32m
rw=write
[m2]
filename={mnt}/m2/f
[p1]
filename={mnt}/p1/f
"""
FIO_READ = FIO_WRITE.replace("rate=32m", "rate=64m").replace("rw=write", "rw=read")


def scrape(url):
    """{(name, frozenset(labels)): value} of every sample, and the family names."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples, families = {}, {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def total(samples, name, **want):
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == w for k, w in want.items()))


def main():
    t = Tap()
    pool = Pool(ndisks=4, prefix="spacefs-metrics-")
    try:
        pool.volume("m2", "mirror", "--copies", "2", "--interleave", "64K")
        pool.volume("p1", "parity", "--parity", "1", "--columns", "3", "--interleave", "64K")
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        pool.mount(f"direct_io,metrics=127.0.0.1:{port}")

        base, fams = scrape(url)
        t.ok(fams.get("spacefs_chunk_latency_seconds") == "histogram"
             and fams.get("spacefs_chunk_write_bytes") == "counter"
             and fams.get("spacefs_volume_owner") == "gauge",
             "the endpoint parses: histogram, counters and gauges typed as such")

        during, went_back, res = [], False, {}
        for phase, job in (("write", FIO_WRITE), ("read", FIO_READ)):
            jobfile = os.path.join(pool.dir, f"{phase}.fio")
            with open(jobfile, "w") as f:
                f.write(job.format(mnt=pool.mnt))
            fio = subprocess.Popen(["fio", "--output-format=json", jobfile],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while fio.poll() is None:
                s, _ = scrape(url)
                if during:
                    prev = during[-1]
                    went_back |= any(v < prev.get(k, 0) for k, v in s.items()
                                     if k[0].endswith(("_total", "_count", "_bucket")))
                during.append(s)
                time.sleep(0.25)
            out, err = fio.communicate()
            if not t.ok(fio.returncode == 0, f"fio {phase} ran"):
                t.diag(err[-2000:])
                t.done()
            for j in json.loads(out)["jobs"]:
                res[(j["jobname"], phase)] = j[phase]["io_bytes"]
        moves = [total(s, "spacefs_chunk_write_bytes_total") for s in during]
        t.ok(len(during) >= 3 and len(set(moves)) >= 3,
             f"the counters move during the run ({len(during)} scrapes, "
             f"{len(set(moves))} distinct chunk-write totals)")
        t.ok(not went_back, "no counter ever went back between scrapes")

        after, _ = scrape(url)
        for vol, amp in (("m2", 2.0), ("p1", 1.5)):
            wrote, read = res[(vol, "write")], res[(vol, "read")]
            app = (total(after, "spacefs_volume_write_bytes_total", volume=vol)
                   - total(base, "spacefs_volume_write_bytes_total", volume=vol))
            chunk_w = (total(after, "spacefs_chunk_write_bytes_total", volume=vol)
                       - total(base, "spacefs_chunk_write_bytes_total", volume=vol))
            chunk_r = (total(after, "spacefs_chunk_read_bytes_total", volume=vol)
                       - total(base, "spacefs_chunk_read_bytes_total", volume=vol))
            t.diag(f"{vol}: fio wrote {wrote} read {read}; daemon app {app}, "
                   f"chunk written {chunk_w} ({chunk_w / max(wrote, 1):.3f}x), "
                   f"chunk read {chunk_r} ({chunk_r / max(read, 1):.3f}x)")
            t.ok(wrote > 0 and abs(app - wrote) <= 0.05 * wrote,
                 f"{vol}: application bytes written = fio's (within 5%)")
            t.ok(wrote > 0 and abs(chunk_w - amp * wrote) <= 0.05 * amp * wrote,
                 f"{vol}: chunk bytes written = fio's x {amp} (within 5%)")
            t.ok(read > 0 and abs(chunk_r - read) <= 0.05 * read,
                 f"{vol}: chunk bytes read = fio's bytes read (within 5%)")
            ios = (total(after, "spacefs_chunk_reads_total", volume=vol)
                   + total(after, "spacefs_chunk_writes_total", volume=vol))
            hist = total(after, "spacefs_chunk_latency_seconds_count", volume=vol)
            inf = sum(v for (n, lab), v in after.items()
                      if n == "spacefs_chunk_latency_seconds_bucket"
                      and dict(lab).get("volume") == vol and dict(lab).get("le") == "+Inf")
            t.ok(ios > 0 and hist == ios and inf == ios,
                 f"{vol}: the latency histogram counts every chunk I/O ({hist} of {ios})")

        ctl = pool.spacectl("metrics", pool.source)
        names = {f.name for f in text_string_to_metric_families(ctl.stdout)}
        _, fams = scrape(url)
        t.eq(names, set(fams), "spacectl metrics prints the families the endpoint serves")
        bad = pool.spacectl("metrics", pool.dir, check=False)
        t.ok(bad.returncode == 1 and bad.stderr.count("\n") == 1,
             "spacectl metrics on a directory that is no pool: one line, exit 1")

        for m in pool.mounts:
            t.eq(m.stop(), 0, "the daemon exits 0 at unmount")
        try:
            urllib.request.urlopen(url, timeout=2)
            t.ok(False, "the listener is gone after unmount")
        except OSError:
            t.ok(True, "the listener is gone after unmount")
        t.ok(not any(m.sanitizer_report() for m in pool.mounts), "no sanitizer report")
    except Exception as e:  # pylint: disable=broad-except
        t.ok(False, f"unexpected: {e}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
