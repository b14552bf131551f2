"""diskmodel_expect -- what an emulated disk should deliver, from its model.

The same maths as pool/diskmodel.c (docs/BENCHMARKS.md, "Emulated
disks"), for the benchmarks that print measured beside expected
(bench/diskmodel-check, bench/compare --model).  `p` is a disk's
"model_params" from `spacectl status --json`.

Costs are disk time per chunk I/O, in seconds:
  HDD    random: average seek + half a rotation + bytes / MB/s
         sequential: bytes / MB/s
  FLASH  max(1 / IOPS, bytes / MB/s) (throughput), and each request takes
         at least latency + bytes / MB/s.
"""

HDD, FLASH = 1, 2


def cost(p, write, nbytes, sequential):
    """Disk time (s) one chunk I/O keeps the disk busy."""
    mbps = p["write_mbps"] if write else p["read_mbps"]
    xfer = nbytes / (mbps * 1e6) if mbps else 0.0
    if p["kind"] == HDD:
        if sequential:
            return xfer
        return p["seek_avg_us"] / 1e6 + 30.0 / p["rpm"] + xfer
    if p["kind"] == FLASH:
        iops = p["write_iops"] if write else p["read_iops"]
        return max(1.0 / iops, xfer)
    return 0.0


def latency(p, write, nbytes):
    """The least time (s) one request takes on an idle flash disk."""
    if p["kind"] != FLASH:
        return 0.0
    mbps = p["write_mbps"] if write else p["read_mbps"]
    lat = (p["write_lat_us"] if write else p["read_lat_us"]) / 1e6
    return lat + nbytes / (mbps * 1e6)


def one_disk(p, write, nbytes, sequential, qd):
    """I/Os per second of one workload on one disk at queue depth qd."""
    c = cost(p, write, nbytes, sequential)
    if p["kind"] == FLASH:
        return min(1.0 / c, qd / max(latency(p, write, nbytes), c))
    return 1.0 / c if c else float("inf")


def from_counts(params, per_disk, app_ios, sequential):
    """Application I/Os per second the disks allow, from counted chunk I/Os.

    per_disk: [{"reads", "writes", "read_bytes", "write_bytes"}] by disk
    index (the counters' delta over the run).  The busiest disk bounds
    the run: its disk time for these chunk I/Os is the run's shortest
    possible duration."""
    busiest = 0.0
    for i, d in enumerate(per_disk):
        p = params[i]
        t = 0.0
        for write, n, b in ((0, d["reads"], d["read_bytes"]), (1, d["writes"], d["write_bytes"])):
            if n:
                t += n * cost(p, write, b / n, sequential)
        busiest = max(busiest, t)
    return app_ios / busiest if busiest else None
