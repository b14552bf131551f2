#!/usr/bin/env python3
"""Volumes shared through Samba, as a Scale-Out File Server shares CSVs.

A private smbd (its own config, state, lock and pid directories, bound to
127.0.0.1 on an unprivileged port) serves the shares `spacectl smbconf`
writes for a mounted pool; smbclient is the hypervisor.  Checks:
- the generated shares: one per volume, path on the mount, reasons given;
- smbclient puts a 256 MiB file on a mirror share and gets it back, the
  checksums match, and the same bytes are read straight from the mount;
- four smbclient processes write different files to one share at once,
  all intact;
- --watch rewrites its file when the volumes change.
The test is skipped (one TAP line saying why) when Samba is not installed.
"""
import hashlib
import os
import signal
import socket
import subprocess
import time

from harness import Pool, Tap, log_tail, run, sha256_file

ADDR = "127.0.0.1"


def pick_port(addrs=("127.0.0.1", "127.0.0.2"), first=4455):
    """An unprivileged port free on the loopback addresses the Samba tests
    use: 4455 unless something holds it -- an smbd left by an interrupted
    run answered in place of the test's own, and every transfer failed --
    else the next free one."""
    for port in range(first, first + 200):
        try:
            for a in addrs:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port for smbd in {first}..{first + 199}")


PORT = pick_port()


def port_open(addr, port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((addr, port)) == 0


def stop_group(proc):
    """Stop smbd and every child it forked (they hold the mount busy)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def smb_conf(d, shares, addr=ADDR, name="SPACEFSTEST"):
    """A self-contained smbd config: nothing under /etc or /var is used.
    The address goes with its /8 mask: smbd binds any 127.0.0.0/8 address
    that way, though only 127.0.0.1 is configured on lo."""
    for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    path = os.path.join(d, "smb.conf")
    with open(path, "w") as f:
        f.write(f"""[global]
  netbios name = {name}
  workgroup = LAB
  server role = standalone server
  interfaces = {addr}/8
  bind interfaces only = yes
  smb ports = {PORT}
  private dir = {d}/private
  lock directory = {d}/lock
  state directory = {d}/state
  cache directory = {d}/cache
  pid directory = {d}/pid
  ncalrpc dir = {d}/ncalrpc
  log file = {d}/log/log.%m
  max log size = 1000
  server min protocol = SMB2
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  # test only: anonymous clients act as root, so no accounts are needed
  map to guest = Bad User
  guest ok = yes
  force user = root
  include = {shares}
""")
    return path


def smbclient(share, cmd, conf):
    return subprocess.run(
        ["smbclient", f"//{ADDR}/{share}", "-p", str(PORT), "-N", "-m", "SMB3", "-s", conf,
         "-c", cmd], capture_output=True, text=True, timeout=600)


def main():
    t = Tap()
    if subprocess.run(["which", "smbd", "smbclient"], capture_output=True).returncode != 0:
        t.ok(True, "# SKIP samba or smbclient not installed")
        t.done()
    pool = Pool(6)
    smbd = None
    try:
        pool.volume("VMs", "mirror", "--copies", "2", "--interleave", "64K")
        pool.volume("Data", "parity", "--parity", "1", "--interleave", "64K")
        pool.mount("allow_other")
        sd = os.path.join(pool.dir, "samba")
        os.makedirs(sd)
        shares = os.path.join(sd, "shares.conf")
        p = pool.spacectl("smbconf", pool.source, check=False)
        t.eq(p.returncode, 0, "spacectl smbconf succeeds on a mounted pool")
        with open(shares, "w") as f:
            f.write(p.stdout)
        text = p.stdout
        t.ok("[VMs]" in text and "[Data]" in text, "one share per volume")
        t.ok(f"path = {pool.mnt}/VMs" in text, "share path is the volume's directory on the mount")
        t.ok("kernel oplocks = no" in text and "# " in text, "settings come with their reasons")
        t.ok("WARNING" not in text, "no allow_other warning for an allow_other mount")

        conf = smb_conf(sd, shares)
        p = subprocess.run(["testparm", "-s", conf], capture_output=True, text=True)
        t.eq(p.returncode, 0, "testparm accepts the generated configuration")
        if p.returncode:
            t.diag(p.stderr[-2000:])
        # its own session, so the whole process group (smbd forks one child
        # per client) can be stopped at the end
        smbd = subprocess.Popen(["smbd", "--foreground", "--no-process-group", "-s", conf],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline and not port_open(ADDR, PORT):
            time.sleep(0.2)
        t.ok(port_open(ADDR, PORT), f"smbd listens on {ADDR}:{PORT}")

        # 256 MiB round trip through SMB
        big = os.path.join(pool.dir, "big.bin")
        h = hashlib.sha256()
        with open(big, "wb") as f:
            for _ in range(256):
                chunk = os.urandom(1 << 20)
                h.update(chunk)
                f.write(chunk)
        want = h.hexdigest()
        p = smbclient("VMs", f"put {big} disk.vhdx", conf)
        t.eq(p.returncode, 0, "smbclient puts a 256 MiB file on the mirror share")
        if p.returncode:
            t.diag(p.stdout[-1500:] + p.stderr[-1500:])
        back = os.path.join(pool.dir, "back.bin")
        p = smbclient("VMs", f"get disk.vhdx {back}", conf)
        t.eq(p.returncode, 0, "smbclient gets it back")
        t.eq(sha256_file(back) if os.path.exists(back) else None, want,
             "the file read back over SMB is identical")
        t.eq(sha256_file(os.path.join(pool.mnt, "VMs", "disk.vhdx")), want,
             "the same bytes read straight from the spacefs mount")
        os.unlink(back)

        # four writers at once on the parity share
        srcs = []
        for i in range(4):
            s = os.path.join(pool.dir, f"w{i}.bin")
            with open(s, "wb") as f:
                f.write(os.urandom((24 << 20) + i * 4097))
            srcs.append(s)
        procs = [subprocess.Popen(
            ["smbclient", f"//{ADDR}/Data", "-p", str(PORT), "-N", "-m", "SMB3", "-s", conf,
             "-c", f"put {s} w{i}.bin"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for i, s in enumerate(srcs)]
        codes = [pr.wait(timeout=600) for pr in procs]
        t.eq(codes, [0, 0, 0, 0], "four concurrent smbclient writers succeed")
        for i, s in enumerate(srcs):
            got = os.path.join(pool.mnt, "Data", f"w{i}.bin")
            t.eq(sha256_file(got) if os.path.exists(got) else None, sha256_file(s),
                 f"concurrent writer {i}: file intact on the volume")

        # --watch: a new volume appears in the watched file
        watched = os.path.join(sd, "watched.conf")
        w = subprocess.Popen([os.environ.get("SPACECTL", "spacectl"), "smbconf", pool.source,
                              "--watch", watched, "--smb-conf", conf, "--interval", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        pool.volume("Scratch", "simple")
        deadline = time.time() + 15
        seen = False
        while time.time() < deadline and not seen:
            time.sleep(0.5)
            seen = os.path.exists(watched) and "[Scratch]" in open(watched).read()
        w.terminate()
        out = w.communicate(timeout=10)[0]
        t.ok(seen, "--watch rewrites the file when a volume is added")
        t.ok("rewritten" in out and "reload-config failed" not in out,
             "--watch tells smbd to reload")
    except Exception as e:
        t.ok(False, f"unexpected error: {e}")
        t.diag(log_tail(pool))
    finally:
        if smbd:
            stop_group(smbd)
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
