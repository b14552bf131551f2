#!/usr/bin/env python3
"""An acknowledged create survives kill -9, on every metadata replica.

pool/meta.c batches the creates of concurrent FUSE threads into one
transaction (group commit), and with one node holds creates in an open
transaction for up to 10 ms (a create window), answering each once its
record is in every replica's meta.log; the next open replays the records
of a window that never committed.  This test holds it to "acknowledged
means it survives kill -9", with nothing fsync'd by the application (the
deterministic replay cases are in tests/pool/test_meta.c, test_window_*):

1. On a mirror 2 volume, 4 threads create 1500 empty files (and one thread
   30 directories), each thread in its own directory (the kernel runs the
   creates of one directory one at a time, so only several directories
   give the daemon concurrent creates to batch), recording each name and
   the inode number fstat gave once open() returned; the daemon is killed
   with SIGKILL the moment the last create returned.
2. After a remount every recorded name is there, with the same inode
   number and type.
3. After a clean unmount the metadata replicas (meta.db on 3 disks) hold
   the same transaction counter and exactly the same names and inode
   numbers, and every recorded name is in each of them.
"""
import glob
import os
import sqlite3
import stat
import threading

from harness import Pool, Tap, log_tail

NFILES = 1500
NTHREADS = 4
NDIRS = 30


def creator(root, first, step, out, errors):
    for i in range(first, NFILES, step):
        name = f"t{first}/f{i:05d}"
        try:
            fd = os.open(os.path.join(root, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            out[name] = (os.fstat(fd).st_ino, "f")
            os.close(fd)
        except OSError as e:
            errors.append(f"{name}: {e}")
            return


def mkdirs(root, out, errors):
    for i in range(NDIRS):
        name = f"t{NTHREADS}/d{i:03d}"
        try:
            os.mkdir(os.path.join(root, name))
            out[name] = (os.lstat(os.path.join(root, name)).st_ino, "d")
        except OSError as e:
            errors.append(f"{name}: {e}")
            return


def replica_state(path):
    """(txn, {(parent, name): ino}, {ino: mode}) of one meta.db, read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        txn = db.execute("SELECT value FROM meta WHERE key = 'txn'").fetchone()[0]
        names = {(p, n): i for p, n, i in db.execute("SELECT parent, name, ino FROM dentries")}
        inodes = dict(db.execute("SELECT ino, mode FROM inodes"))
    finally:
        db.close()
    return txn, names, inodes


def main():
    t = Tap()
    pool = Pool(6)
    try:
        pool.volume("m2", "mirror", "--copies", "2")
        m = pool.mount()
        root = os.path.join(pool.mnt, "m2", "many")
        os.mkdir(root)
        for k in range(NTHREADS + 1):
            os.mkdir(os.path.join(root, f"t{k}"))
        got, errors = {}, []
        threads = [threading.Thread(target=creator, args=(root, k, NTHREADS, got, errors))
                   for k in range(NTHREADS)]
        threads.append(threading.Thread(target=mkdirs, args=(root, got, errors)))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        m.kill9()
        t.eq(errors, [], "every create returned without error before kill -9")
        t.eq(len(got), NFILES + NDIRS, "creates acknowledged")

        # 2. after the remount (the creates of the last window were held in an
        # open transaction, their records in meta.log: the open replays them)
        m = pool.mount()
        replayed = [ln for ln in m.log_text().splitlines() if "replayed from" in ln]
        t.diag(replayed[-1] if replayed else "no create window was open at the kill")
        listed = {f"t{k}/{n}" for k in range(NTHREADS + 1)
                  for n in os.listdir(os.path.join(root, f"t{k}"))}
        missing = sorted(set(got) - listed)
        t.eq(missing[:10], [], f"every acknowledged name is there after kill -9 "
                               f"({len(missing)} missing)")
        wrong = []
        for name, (ino, kind) in sorted(got.items()):
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError as e:
                wrong.append(f"{name}: {e}")
                continue
            isdir = stat.S_ISDIR(st.st_mode)
            if st.st_ino != ino or isdir != (kind == "d"):
                wrong.append(f"{name}: ino {st.st_ino} (was {ino}), dir {isdir}")
        t.eq(wrong[:10], [], "same inode numbers and types as acknowledged")
        t.eq(m.stop(), 0, "clean unmount after the remount")

        # 3. the replicas agree, name by name
        dbs = sorted(glob.glob(os.path.join(pool.dir, "d*", "vol", "m2", "meta.db")))
        t.eq(len(dbs), 3, "three metadata replicas")
        states = [replica_state(p) for p in dbs]
        t.diag(f"{NFILES + NDIRS} creates in {states[0][0]} metadata transactions "
               f"(the rest batched by group commit)")
        t.ok(len({s[0] for s in states}) == 1,
             f"same transaction counter on every replica: {[s[0] for s in states]}")
        t.ok(all(s[1] == states[0][1] for s in states),
             "same names and inode numbers on every replica")
        t.ok(all(s[2] == states[0][2] for s in states), "same inodes on every replica")
        for path, (_, names, _) in zip(dbs, states):
            vinos = {n: i for (p, n), i in names.items()}
            base = os.path.basename
            absent = [n for n in got if base(n) not in vinos]
            wrong = [n for n, (ino, _) in got.items()
                     if base(n) in vinos and vinos[base(n)] != ino & ((1 << 48) - 1)]
            t.ok(not absent and not wrong,
                 f"{os.path.relpath(path, pool.dir)}: every acknowledged name with its inode "
                 f"({len(absent)} absent, {len(wrong)} wrong)")
    except Exception as e:  # noqa: BLE001 - report, then fail the plan
        t.ok(False, f"test raised {e!r}")
        t.diag(log_tail(pool))
    finally:
        pool.cleanup()
    t.done()


if __name__ == "__main__":
    main()
