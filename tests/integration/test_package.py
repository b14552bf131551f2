#!/usr/bin/env python3
"""The Debian package, end to end, as an admin meets it.

Builds the .deb from this tree (tools/package, which also runs lintian),
installs it with `apt-get install ./spacefs_*.deb`, and then uses only
what the package installed (/usr/bin/spacectl, /usr/bin/spacefs via
/sbin/mount.fuse.spacefs):
  - mount -T FSTAB MOUNTPOINT and mount -a -T FSTAB from an fstab line with
    the boot options (nofail, _netdev, x-systemd.requires=, metrics=):
    the mount is fuse.spacefs, data written survives umount + mount -a,
    and the -o metrics= endpoint answers (options reach the daemon,
    the ones for systemd and mount do not break it);
  - systemd-fstab-generator turns the same fstab into a .mount unit with
    the pool's type, options, the disk requirement and remote-fs ordering;
  - systemd-analyze verify accepts spacefs-smbconf@.service;
  - man spacectl renders, spacefs(8) and spacebench(1) are there;
  - bash completion: `spacectl vol<TAB>` gives volume, the volume names of
    the pool on the line are offered;
  - apt-get purge removes every file the package installed.
The package is purged at the end even when a check fails or raises, and
the test refuses to run where spacefs is already installed (it would
purge the admin's copy).  Runs as root on a throwaway machine (CI).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from harness import Tap, run

SRC = os.environ.get("SPACEFS_SRC",
                     os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INSTALLED = ["/usr/bin/spacefs", "/usr/bin/spacectl", "/usr/bin/spacebench",
             "/sbin/mount.fuse.spacefs", "/usr/share/man/man8/spacectl.8.gz",
             "/usr/share/man/man8/spacefs.8.gz", "/usr/share/man/man1/spacebench.1.gz",
             "/usr/share/bash-completion/completions/spacectl",
             "/lib/systemd/system/spacefs-smbconf@.service",
             "/usr/share/doc/spacefs/grafana-dashboard.json"]
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def installed():
    r = run(["dpkg-query", "-W", "-f=${Status}", "spacefs"], check=False)
    return "ok installed" in r.stdout or "config-files" in r.stdout


def complete(line, env):
    """What bash completion offers at the end of `line` (a word list)."""
    words = " ".join(f"'{w}'" for w in line)
    script = f"""
source /usr/share/bash-completion/bash_completion
_completion_loader spacectl
complete -p spacectl >/dev/null || exit 3
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
$(complete -p spacectl | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p') spacectl "${{COMP_WORDS[-1]}}" "${{COMP_WORDS[-2]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=False)
    return r.stdout.split(), r


def wait_unmounted(mnt, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline and os.path.ismount(mnt):
        time.sleep(0.1)
    # the daemon writes back and exits after the kernel lets go
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run(["pgrep", "-f", f"^spacefs .* {mnt} "], check=False).returncode != 0:
            return True
        time.sleep(0.1)
    return False


def writeback_applied(t, mnt, source, env):
    """A daemonized mount (fuse_daemonize forks) must run the write-back
    journal's flusher in the child: it was once started before the fork,
    so records were never applied and the journal filled and hung."""
    path = os.path.join(mnt, "Archive", "wb.img")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for i in range(16):  # small writes: partial stripes, journaled
            os.pwrite(fd, bytes([i + 1]) * 4096, i * 65536)
        os.fsync(fd)
    finally:
        os.close(fd)
    left = None
    for _ in range(100):
        st = json.loads(run(["/usr/bin/spacectl", "status", source, "--json"], env=env).stdout)
        vol = [v for v in st.get("volumes", []) if v.get("name") == "Archive"]
        left = ((vol[0].get("journal_live") or {}).get("unapplied") if vol else None)
        if left == 0:
            break
        time.sleep(0.1)
    t.eq(left, 0, "write-back records are applied by the daemonized mount's flusher")


def fstab_checks(t, tmp, env):
    disks = [os.path.join(tmp, f"d{i}") for i in range(3)]
    for d in disks:
        os.makedirs(d)
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    sc = ["/usr/bin/spacectl"]
    run(sc + ["pool", "create", "pkgpool", *disks], env=env)
    run(sc + ["volume", "create", disks[0], "VMs", "--layout", "mirror", "--copies", "2"], env=env)
    run(sc + ["volume", "create", disks[0], "Archive", "--layout", "parity",
              "--journal-mode", "write-back", "--journal-size", "8M"], env=env)

    port = 9100 + os.getpid() % 800
    fstab = os.path.join(tmp, "fstab")
    opts = (f"allow_other,nofail,_netdev,x-systemd.requires={disks[0]},"
            f"metrics=127.0.0.1:{port}")
    with open(fstab, "w") as f:
        f.write(f"# a test fstab\n{disks[0]} {mnt} fuse.spacefs {opts} 0 0\n")

    r = run(["mount", "-T", fstab, mnt], check=False, env=env)
    t.ok(r.returncode == 0 and os.path.ismount(mnt),
         "mount -T FSTAB MOUNTPOINT mounts the pool through mount.fuse.spacefs")
    if r.returncode:
        t.diag(r.stderr)
        return
    fstype = [l.split()[2] for l in open("/proc/mounts") if l.split()[1] == mnt]
    t.eq(fstype, ["fuse.spacefs"], "the mount is of type fuse.spacefs")
    t.eq(sorted(os.listdir(mnt)), ["Archive", "VMs"], "the volumes are the top-level directories")
    data = os.urandom(3 * 1024 * 1024 + 5)
    with open(os.path.join(mnt, "VMs", "disk.img"), "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        t.ok(b'spacefs_volume_write_bytes_total{volume="VMs"}' in text,
             "metrics= from the fstab line reached the daemon: the endpoint answers")
    except OSError as e:
        t.ok(False, f"metrics endpoint: {e}")
    writeback_applied(t, mnt, disks[0], env)
    r = run(["umount", mnt], check=False)
    t.ok(r.returncode == 0 and wait_unmounted(mnt), "umount unmounts, the daemon exits")
    r = run(["mount", "-a", "-T", fstab], check=False, env=env)
    t.ok(r.returncode == 0 and os.path.ismount(mnt), "mount -a -T FSTAB mounts it again")
    if os.path.ismount(mnt):
        with open(os.path.join(mnt, "VMs", "disk.img"), "rb") as f:
            t.ok(f.read() == data, "the file written before umount reads back identical")
        run(["umount", mnt], check=False)
        t.ok(wait_unmounted(mnt), "unmounted again")

    # systemd-fstab-generator on the same line, into a scratch directory.
    gen = "/lib/systemd/system-generators/systemd-fstab-generator"
    if not os.access(gen, os.X_OK):
        t.ok(True, "# SKIP no systemd-fstab-generator here")
        return
    out = os.path.join(tmp, "gen")
    for sub in ("normal", "early", "late"):
        os.makedirs(os.path.join(out, sub))
    r = subprocess.run([gen, *(os.path.join(out, s) for s in ("normal", "early", "late"))],
                       env=dict(env, SYSTEMD_FSTAB=fstab, SYSTEMD_PROC_CMDLINE=""),
                       capture_output=True, text=True, check=False)
    unit = run(["systemd-escape", "-p", "--suffix=mount", mnt]).stdout.strip()
    path = os.path.join(out, "normal", unit)
    body = open(path).read() if os.path.exists(path) else ""
    if not t.ok(body != "", f"the generator writes {unit}"):
        t.diag(r.stderr)
        return
    t.ok(f"What={disks[0]}" in body and "Type=fuse.spacefs" in body,
         "the .mount unit mounts the pool's disk as fuse.spacefs")
    t.ok(f"metrics=127.0.0.1:{port}" in body and "allow_other" in body,
         "the unit's Options= carry the daemon's options")
    t.ok("_netdev" in body.split("Options=")[-1].split("\n")[0],
         "_netdev stays in Options= (systemd orders such a mount after the network)")
    req = os.path.join(out, "normal", "remote-fs.target.wants", unit)
    t.ok(os.path.lexists(req), "_netdev + nofail: remote-fs.target wants it (not requires)")
    dep = run(["systemd-escape", "-p", "--suffix=mount", disks[0]]).stdout.strip()
    t.ok(f"Requires={dep}" in body and f"After={dep}" in body,
         f"x-systemd.requires=: the unit requires and follows {dep}")


def completion_checks(t, tmp, env):
    got, r = complete(["spacectl", "vol"], env)
    t.eq(got, ["volume"], "completion: spacectl vol<TAB> -> volume")
    if r.returncode:
        t.diag(r.stderr)
    src = os.path.join(tmp, "d0")
    got, _ = complete(["spacectl", "volume", "delete", src, ""], env)
    t.eq(sorted(got), ["Archive", "VMs"], "completion: the volumes of the pool named as SOURCE")
    got, _ = complete(["spacectl", "disk", "retire", src, ""], env)
    t.ok("0" in got and src in got, "completion: the disks of the pool (index and path)")


def main():
    t = Tap()
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root (installs a package)")
        return
    if installed():
        print("1..0 # SKIP a spacefs package is already installed here; not touching it")
        return
    if not shutil.which("apt-get"):
        print("1..0 # SKIP no apt-get")
        return
    tmp = tempfile.mkdtemp(prefix="spacefs-pkg-", dir=os.environ.get("SPACEFS_TEST_DIR", "/var/tmp"))
    env = dict(ENV, SPACEFS_RUN_DIR=os.path.join(tmp, "run"), PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    os.makedirs(env["SPACEFS_RUN_DIR"])
    try:
        start = time.time()
        r = run([os.path.join(SRC, "tools", "package"), os.path.join(tmp, "dist")], check=False)
        t.diag(r.stdout[-1500:])
        lint = [l for l in r.stdout.splitlines() if l.startswith("package: lintian: ")
                and not l.endswith("running with root privileges is not recommended!")]
        if not t.ok(r.returncode == 0, f"tools/package builds the .deb ({time.time() - start:.0f} s)"):
            t.diag(r.stderr[-3000:])
            t.done()
        t.eq(lint, [], "lintian reports nothing (tags that remain are overridden with a reason)")
        deb = [f for f in os.listdir(os.path.join(tmp, "dist")) if f.endswith(".deb")]
        r = run(["apt-get", "install", "-y", "--no-install-recommends",
                 os.path.join(tmp, "dist", deb[0])], check=False, env=ENV)
        if not t.ok(r.returncode == 0 and installed(), "apt-get install ./spacefs_*.deb"):
            t.diag(r.stdout[-2000:] + r.stderr[-2000:])
            t.done()
        missing = [p for p in INSTALLED if not os.path.lexists(p)]
        t.eq(missing, [], "the package installed the programs, mount helper, pages, completion, unit")
        t.eq(os.readlink("/sbin/mount.fuse.spacefs"), "mount.fuse3",
             "mount.fuse.spacefs is FUSE's mount helper under the type's name")
        man = subprocess.run(["man", "spacectl"], capture_output=True, text=True,
                             env=dict(ENV, MANPAGER="cat", MANWIDTH="80"), check=False)
        t.ok(man.returncode == 0 and "administer spacefs storage pools" in man.stdout
             and "metrics SOURCE" in man.stdout, "man spacectl renders the installed page")
        for page in ("spacefs", "spacebench"):
            t.ok(run(["man", "-w", page], check=False).returncode == 0, f"man -w {page} finds it")
        unit = "/lib/systemd/system/spacefs-smbconf@.service"
        inst = os.path.join(tmp, "spacefs-smbconf@var-tmp-pool-d0.service")
        shutil.copy(unit, inst)
        r = run(["systemd-analyze", "verify", inst], check=False)
        if not t.ok(r.returncode == 0, "systemd-analyze verify spacefs-smbconf@.service"):
            t.diag(r.stdout + r.stderr)

        fstab_checks(t, tmp, env)
        completion_checks(t, tmp, env)
    except Exception as e:  # pylint: disable=broad-except
        t.ok(False, f"unexpected: {e}")
    finally:
        mnt = os.path.join(tmp, "mnt")
        if os.path.ismount(mnt):
            run(["umount", "-l", mnt], check=False)
        wait_unmounted(mnt, timeout=10)
        if installed():
            r = run(["apt-get", "purge", "-y", "spacefs"], check=False, env=ENV)
            t.ok(r.returncode == 0 and not installed(), "apt-get purge spacefs")
            left = [p for p in INSTALLED if os.path.lexists(p)]
            t.eq(left, [], "nothing the package installed is left")
        shutil.rmtree(tmp, ignore_errors=True)
    t.done()


if __name__ == "__main__":
    sys.exit(main())
