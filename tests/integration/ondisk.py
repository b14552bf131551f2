"""ondisk.py -- an independent reader and checker of spacefs's on-disk format.

Nothing here is shared with the C implementation: GF(2^8) arithmetic, the
Cauchy generator matrix, CRC-32C, the stripe-position rotation and the
chunk-file naming are re-derived from the written specification
(layout/layout.h header comment, pool/store.h, pool/meta.h,
docs/DESIGN.md), so a bug in the C mapping cannot hide behind the checker.
Standard library only (Python 3.11).

Main entry points:
  crc32c(data)                          CRC-32C (Castagnoli), check value
                                        crc32c(b"123456789") == 0xE3069283
  cauchy1_matrix(rows, k)               ISA-L gf_gen_cauchy1_matrix(a, rows, k)
  parity_of(k, m, columns)              parity blocks of one stripe
  slot_position(geom, stripe, slot, copy)
  chunk_path(disk, volume, file_id, pos)
  check_file(disks, volume, geom, ino_row, size, integrity)
                                        -> (reconstructed bytes, [problems])
  read_inodes(meta_db_path)             -> ({ino: InodeRow}, {ino: path})

A `geom` is a dict: kind ("simple" | "mirror" | "parity"), copies, parity
(m), columns (Storage Spaces count: k + m for parity, data columns
otherwise) and interleave (bytes).
"""
import os
import sqlite3
import struct
from dataclasses import dataclass, field

BLOCK = 4096  # checksum unit (LAYOUT_BLOCK)
_ZERO = bytes(BLOCK)  # compared with ==: a memcmp, where any() walks every byte in Python

# ---------------------------------------------------------------------------
# GF(2^8), polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11D), generator 2 --
# the field ISA-L's erasure code works in.

GF_POLY = 0x11D

GF_EXP = [0] * 512
GF_LOG = [0] * 256


def _init_gf():
    x = 1
    for i in range(255):
        GF_EXP[i] = x
        GF_LOG[x] = i
        x <<= 1
        if x & 0x100:
            x ^= GF_POLY
    for i in range(255, 512):
        GF_EXP[i] = GF_EXP[i - 255]


_init_gf()


def gf_mul(a, b):
    if a == 0 or b == 0:
        return 0
    return GF_EXP[GF_LOG[a] + GF_LOG[b]]


def gf_inv(a):
    """Multiplicative inverse; ISA-L's gf_inv(0) returns 0, so does this."""
    if a == 0:
        return 0
    return GF_EXP[255 - GF_LOG[a]]


def gf_mul_slow(a, b):
    """Carry-less multiply and reduce: a cross-check of the table version."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a & 0x100:
            a ^= GF_POLY
    return r


def cauchy1_matrix(rows, k):
    """ISA-L gf_gen_cauchy1_matrix(a, rows, k) as a list of rows: the first k
    rows are the identity, row i (k <= i < rows) has a[i][j] = 1/(i ^ j)."""
    a = []
    for i in range(rows):
        if i < k:
            a.append([1 if j == i else 0 for j in range(k)])
        else:
            a.append([gf_inv(i ^ j) for j in range(k)])
    return a


_MUL_TABLES = {}


def gf_mul_table(c):
    """256-byte translation table t with t[x] = c * x."""
    t = _MUL_TABLES.get(c)
    if t is None:
        t = bytes(gf_mul(c, x) for x in range(256))
        _MUL_TABLES[c] = t
    return t


def xor_bytes(a, b):
    """a ^ b for equal-length byte strings, fast (big-int XOR)."""
    n = len(a)
    if n != len(b):
        raise ValueError("xor of unequal lengths")
    if n == 0:
        return b""
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def gf_scale(c, data):
    if c == 0:
        return bytes(len(data))
    if c == 1:
        return bytes(data)
    return bytes(data).translate(gf_mul_table(c))


def parity_of(k, m, columns):
    """Parity blocks of one stripe: parity_j = sum_d M[k+j][d] * data_d, with
    M the Cauchy matrix of k + m rows.  columns: k equal-length byte strings."""
    if len(columns) != k:
        raise ValueError("need k data columns")
    mat = cauchy1_matrix(k + m, k)
    n = len(columns[0])
    out = []
    for j in range(m):
        acc = bytes(n)
        for d in range(k):
            acc = xor_bytes(acc, gf_scale(mat[k + j][d], columns[d]))
        out.append(acc)
    return out


# ---------------------------------------------------------------------------
# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, init/xorout ~0.

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


_ZERO_BLOCK_CRC = None


def zero_block_crc():
    global _ZERO_BLOCK_CRC
    if _ZERO_BLOCK_CRC is None:
        _ZERO_BLOCK_CRC = crc32c(bytes(BLOCK))
    return _ZERO_BLOCK_CRC


# ---------------------------------------------------------------------------
# Geometry and mapping (layout.h header comment: the on-disk format).

def default_parity_columns(ndisks, m):
    """Columns `spacectl volume create --layout parity` gives by default
    (layout/geom.c): as many disks as allowed up to 8, the data columns
    cut to a power of two so that stripes fill with 1 MiB writes."""
    n = min(8, ndisks)
    if n <= m + 2:
        return n
    k = 2
    while k * 2 <= n - m:
        k *= 2
    return k + m


def data_columns(geom):
    """k."""
    if geom["kind"] == "parity":
        return geom["columns"] - geom["parity"]
    return geom["columns"]


def positions(geom):
    """Disks one file spans."""
    kind = geom["kind"]
    if kind == "simple":
        return geom["columns"]
    if kind == "mirror":
        return geom["columns"] * geom["copies"]
    if kind == "parity":
        return geom["columns"]
    raise ValueError(f"unknown layout kind {kind!r}")


def stripe_bytes(geom):
    return data_columns(geom) * geom["interleave"]


def slot_position(geom, stripe, slot, copy=0):
    """Position holding `slot` (data column d, or k + j for parity j) of
    stripe `stripe`, copy `copy` (mirror)."""
    kind = geom["kind"]
    k = data_columns(geom)
    if kind == "simple":
        return slot
    if kind == "mirror":
        return copy * k + slot
    m = geom["parity"]
    n = k + m
    pd = (n - 1) - (stripe % n)
    if slot >= k:
        return (pd + (slot - k)) % n
    return (pd + m + slot) % n


def chunk_path(disk, volume, file_id, pos):
    return os.path.join(disk, "vol", volume, "data", f"{file_id % 256:02x}",
                        f"{file_id:016x}.{pos}")


class Chunk:
    """One position's chunk file, read whole (missing = empty = zeros), with
    its .crc sidecar."""

    def __init__(self, path):
        self.path = path
        self.exists = os.path.exists(path)
        self.data = b""
        if self.exists:
            with open(path, "rb") as f:
                self.data = f.read()
        self.crc_path = path + ".crc"
        self.crc_exists = os.path.exists(self.crc_path)
        self.crc = b""
        if self.crc_exists:
            with open(self.crc_path, "rb") as f:
                self.crc = f.read()

    def read(self, off, length):
        """Bytes [off, off+length); past the end of the file = zeros."""
        b = self.data[off:off + length]
        if len(b) < length:
            b += bytes(length - len(b))
        return b

    def stored_crc(self, block):
        o = block * 4
        if o + 4 > len(self.crc):
            return 0
        return struct.unpack_from("<I", self.crc, o)[0]


@dataclass
class InodeRow:
    ino: int
    size: int
    npos: int
    disks: list = field(default_factory=list)
    mode: int = 0


def check_crcs(chunk, label, problems, limit=None):
    """Verify every 4 KiB block of the chunk against its sidecar: stored 0
    means never written (block must be zeros, or have CRC 0)."""
    nblocks = (len(chunk.data) + BLOCK - 1) // BLOCK
    if limit is not None:
        nblocks = max(nblocks, (limit + BLOCK - 1) // BLOCK)
    bad = 0
    for b in range(nblocks):
        blk = chunk.read(b * BLOCK, BLOCK)
        stored = chunk.stored_crc(b)
        if stored == 0:
            if blk != _ZERO and crc32c(blk) != 0:
                bad += 1
                if bad <= 5:
                    problems.append(f"crc: {label}: block {b} (chunk off {b * BLOCK}) has data but "
                                    f"stored CRC 0 (never written) in {chunk.crc_path}")
            continue
        actual = crc32c(blk) if blk != _ZERO else zero_block_crc()
        if actual != stored:
            bad += 1
            if bad <= 5:
                problems.append(f"crc: {label}: block {b} (chunk off {b * BLOCK}) CRC mismatch: "
                                f"stored {stored:#010x}, computed {actual:#010x}")
    if bad > 5:
        problems.append(f"crc: {label}: {bad} bad CRC blocks in total")
    # Sidecar entries past the end of the chunk: must describe zero blocks.
    extra = len(chunk.crc) // 4
    for b in range(nblocks, extra):
        stored = chunk.stored_crc(b)
        if stored not in (0, zero_block_crc()):
            problems.append(f"crc: {label}: CRC entry {b} past the chunk's end is {stored:#010x} "
                            f"(expected 0 or the zero-block CRC)")
            break


def check_file(disks, volume, geom, ino_row, size, integrity):
    """Reassemble a file from its chunk files and check it.

    disks: pool disk directories in disk-index order.  ino_row: an InodeRow
    (or a tuple (ino, size, npos, disks)).  size: file size to reassemble.
    Returns (bytes, problems): the file's contents as the chunks say, and a
    list of human-readable problems (empty when everything is consistent).
    Each problem starts with its category and a colon:
      placement:  npos wrong, positions not on distinct disks, stray chunk
                  files (a position's chunk on a disk it was not placed on)
      mirror:     mirror copies that differ
      parity:     stored parity that does not match the data columns
      crc:        CRC-32C blocks that do not match their sidecar
      extent:     non-zero data past the file size
    """
    if not isinstance(ino_row, InodeRow):
        ino, _sz, npos, dl = ino_row
        ino_row = InodeRow(ino, _sz, npos, list(dl))
    problems = []
    fid = ino_row.ino
    kind = geom["kind"]
    k = data_columns(geom)
    npos = positions(geom)
    il = geom["interleave"]
    sb = k * il
    tag = f"file {fid:#x}"

    if ino_row.npos != npos:
        problems.append(f"placement: {tag}: npos {ino_row.npos} but the layout needs {npos}")
    dl = list(ino_row.disks)
    if len(dl) < npos:
        problems.append(f"placement: {tag}: only {len(dl)} disks recorded for {npos} positions")
        return b"", problems
    dl = dl[:npos]
    if len(set(dl)) != len(dl):
        problems.append(f"placement: {tag}: positions not on distinct disks: {dl}")
    for p, d in enumerate(dl):
        if d >= len(disks):
            problems.append(f"placement: {tag}: position {p} on disk index {d}, pool has {len(disks)}")
            return b"", problems

    chunks = [Chunk(chunk_path(disks[dl[p]], volume, fid, p)) for p in range(npos)]
    labels = [f"{tag} pos {p} (disk {dl[p]}: {chunks[p].path})" for p in range(npos)]

    # Any chunk files of this file on any disk that are not its positions?
    for di, disk in enumerate(disks):
        ddir = os.path.join(disk, "vol", volume, "data", f"{fid % 256:02x}")
        try:
            names = os.listdir(ddir)
        except OSError:
            continue
        prefix = f"{fid:016x}."
        for nm in names:
            if not nm.startswith(prefix) or nm.endswith(".crc"):
                continue
            suffix = nm[len(prefix):]
            if not suffix.isdigit():
                continue
            p = int(suffix)
            if p >= npos or dl[p] != di:
                problems.append(f"placement: {tag}: stray chunk file {os.path.join(ddir, nm)} "
                                f"(position {p} belongs on disk "
                                f"{dl[p] if p < npos else 'none'})")

    nstripes = (size + sb - 1) // sb
    # Stripes for which any chunk has bytes: checked too (must be zeros past EOF).
    longest = max((len(c.data) for c in chunks), default=0)
    check_stripes = max(nstripes, (longest + il - 1) // il)

    out = bytearray()
    for s in range(check_stripes):
        off = s * il
        cols = []
        for d in range(k):
            if kind == "mirror":
                copies = [chunks[slot_position(geom, s, d, c)].read(off, il)
                          for c in range(geom["copies"])]
                for c in range(1, len(copies)):
                    if copies[c] != copies[0]:
                        p0 = slot_position(geom, s, d, 0)
                        pc = slot_position(geom, s, d, c)
                        first = next(i for i in range(il) if copies[c][i] != copies[0][i])
                        problems.append(
                            f"mirror: {tag}: stripe {s} column {d}: copy {c} (pos {pc}) differs from "
                            f"copy 0 (pos {p0}) first at chunk off {off + first}")
                cols.append(copies[0])
            else:
                cols.append(chunks[slot_position(geom, s, d)].read(off, il))
        if kind == "parity":
            m = geom["parity"]
            want = parity_of(k, m, cols)
            for j in range(m):
                pp = slot_position(geom, s, k + j)
                got = chunks[pp].read(off, il)
                if got != want[j]:
                    first = next(i for i in range(il) if got[i] != want[j][i])
                    problems.append(
                        f"parity: {tag}: stripe {s} parity {j} (pos {pp}) does not match the data, "
                        f"first at chunk off {off + first}: stored {got[first]:#04x}, "
                        f"computed {want[j][first]:#04x}")
        stripe = b"".join(cols)
        if s < nstripes:
            out += stripe
        else:
            # beyond the last stripe of the file: must be zeros
            if stripe.count(0) != len(stripe):
                problems.append(f"extent: {tag}: stripe {s} lies past the size {size} but holds data")
    data = bytes(out[:size])
    tail = out[size:]
    if tail.count(0) != len(tail):
        first = next(i for i, b in enumerate(tail) if b)
        problems.append(f"extent: {tag}: data past the file size {size} at file offset {size + first}")

    if integrity:
        for p in range(npos):
            check_crcs(chunks[p], labels[p], problems)
    return data, problems


def problem_categories(problems):
    """{category: [problems]} of a check_file problem list."""
    out = {}
    for p in problems:
        out.setdefault(p.split(":", 1)[0], []).append(p)
    return out


# ---------------------------------------------------------------------------
# Pool superblock (pool/superblock.c, docs/FORMAT.md): only what a checker
# needs -- this disk's index, the member paths and usages, the volume
# catalogue.  The layout is fixed little endian: a 256-byte header, nmembers
# member records, nvolumes volume records, from version 2 nmembers disk
# model records (version 3: the member's usage at byte 44 of each),
# CRC-32C of everything before it.

SB_FILE = "spacefs.pool"
SB_MAGIC = b"SPACEFSP"
LAYOUT_KINDS = {1: "simple", 2: "mirror", 3: "parity"}


def read_superblock(disk):
    """Decode <disk>/spacefs.pool.  Returns a dict: version, disk_index,
    generation, members [(index, path)], usage [per member: "data" or
    "journal"], volumes {name: dict(kind, copies, parity,
    columns, interleave, integrity, meta [disk indices])}.  Raises
    ValueError naming the problem."""
    path = os.path.join(disk, SB_FILE)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 256 or buf[:8] != SB_MAGIC:
        raise ValueError(f"{path}: not a spacefs pool file")
    (version, fsize, hsize, msize, vsize, nmem, nvol, disk_index) = struct.unpack_from("<8I", buf, 8)
    generation = struct.unpack_from("<Q", buf, 40)[0]
    if fsize != len(buf):
        raise ValueError(f"{path}: size field {fsize}, file has {len(buf)} bytes")
    if version > 3:
        raise ValueError(f"{path}: format version {version} is newer than this checker (3)")
    dsize = struct.unpack_from("<I", buf, 168)[0] if version >= 2 else 0
    if hsize + nmem * msize + nvol * vsize + nmem * dsize + 4 != fsize:
        raise ValueError(f"{path}: record sizes do not add up to the file size")
    crc = struct.unpack_from("<I", buf, fsize - 4)[0]
    if crc32c(buf[:fsize - 4]) != crc:
        raise ValueError(f"{path}: CRC-32C mismatch")
    members = []
    for i in range(nmem):
        o = hsize + i * msize
        idx = struct.unpack_from("<I", buf, o + 16)[0]
        p = buf[o + 24:o + msize].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        members.append((idx, p))
    volumes = {}
    for i in range(nvol):
        o = hsize + nmem * msize + i * vsize
        name = buf[o:o + 72].split(b"\0", 1)[0].decode()
        kind, copies, parity, columns, interleave, integrity, state, nmeta = \
            struct.unpack_from("<8I", buf, o + 88)
        volumes[name] = dict(kind=LAYOUT_KINDS.get(kind, f"kind{kind}"), copies=copies,
                             parity=parity, columns=columns, interleave=interleave,
                             integrity=integrity, state=state,
                             meta=list(buf[o + 120:o + 120 + min(nmeta, 3)]))
    usage = []
    for i in range(nmem):
        u = 0
        if version >= 3:
            u = struct.unpack_from("<I", buf, hsize + nmem * msize + nvol * vsize + i * dsize + 44)[0]
        if u not in (0, 1):
            raise ValueError(f"{path}: member {i} has unknown usage {u}")
        usage.append(("data", "journal")[u])
    return dict(version=version, disk_index=disk_index, generation=generation,
                members=members, usage=usage, volumes=volumes)


# ---------------------------------------------------------------------------
# Metadata (SQLite, pool/meta.h).

def meta_txn(meta_db_path):
    """Transaction counter of one replica (table meta, key 'txn'), or -1."""
    uri = "file:" + os.path.abspath(meta_db_path) + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'txn'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return -1
    if row is None:
        return -1
    try:
        return int(row[0])
    except (TypeError, ValueError):
        return -1


def find_meta_db(disks, volume):
    """The newest replica <disk>/vol/<volume>/meta.db over all disks, and
    the list of (path, txn) of every replica found."""
    found = []
    for d in disks:
        p = os.path.join(d, "vol", volume, "meta.db")
        if os.path.exists(p):
            found.append((p, meta_txn(p)))
    if not found:
        return None, found
    return max(found, key=lambda x: x[1])[0], found

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
ROOT_INO = 1


def _disks_of(blob, npos):
    if blob is None:
        return []
    b = bytes(blob)
    return list(b[:npos]) if npos else list(b)


def read_inodes(meta_db_path):
    """Regular files of a volume's metadata database.

    Returns (files, paths): files maps ino -> InodeRow(ino, size, npos,
    disks list, mode) for every regular-file inode; paths maps ino -> a
    path inside the volume ("a/b/c") reached by walking dentries from the
    root inode 1 (one path per inode, hard links give the first found).
    The database is opened read-only and immutable, so a crashed WAL is
    not replayed into it (run this after a clean unmount)."""
    uri = "file:" + os.path.abspath(meta_db_path) + "?mode=ro"
    con = sqlite3.connect(uri, uri=True)
    try:
        files = {}
        for ino, mode, size, npos, blob in con.execute(
                "SELECT ino, mode, size, npos, disks FROM inodes"):
            if (mode & S_IFMT) != S_IFREG:
                continue
            files[ino] = InodeRow(ino, size, npos or 0, _disks_of(blob, npos or 0), mode)
        children = {}
        for parent, name, ino in con.execute("SELECT parent, name, ino FROM dentries"):
            if isinstance(name, bytes):
                name = name.decode("utf-8", "surrogateescape")
            children.setdefault(parent, []).append((name, ino))
    finally:
        con.close()
    paths = {}
    stack = [(ROOT_INO, "")]
    seen = {ROOT_INO}
    while stack:
        d, prefix = stack.pop()
        for name, ino in sorted(children.get(d, [])):
            path = f"{prefix}/{name}" if prefix else name
            if ino not in paths:
                paths[ino] = path
            if ino in children and ino not in seen:
                seen.add(ino)
                stack.append((ino, path))
    return files, paths


def self_test():
    """Quick checks of the math; raises AssertionError on failure."""
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # tables against carry-less multiplication, and inverses
    for a in range(256):
        for b in range(0, 256, 7):
            assert gf_mul(a, b) == gf_mul_slow(a, b)
        if a:
            assert gf_mul(a, gf_inv(a)) == 1
    assert GF_EXP[8] == 0x1D
    # parity of a single data column: p_j = M[k+j][d] * x
    m = cauchy1_matrix(6, 4)
    assert m[:4] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    cols = [bytes([0] * 4)] * 4
    cols = [b"\x01\x02\x03\x04", bytes(4), bytes(4), bytes(4)]
    par = parity_of(4, 2, cols)
    assert par[0] == bytes(gf_mul(m[4][0], x) for x in cols[0])
    return True


if __name__ == "__main__":
    import sys
    self_test()
    if len(sys.argv) > 2 and sys.argv[1] == "cauchy":
        k, rows = int(sys.argv[2]), int(sys.argv[3])
        for r in cauchy1_matrix(rows, k):
            print(" ".join(f"{x:3d}" for x in r))
    else:
        print("ondisk self-test ok")
