"""Hostile and broken DFDC inputs, made by the test suite from real H.264 clips.

Three layers:

* video bytes: truncated, empty, not a video, faceless, and valid files whose headers claim
  absurd frame sizes (a rewritten H.264 SPS) or frame counts (a rewritten ``stts``/``stsz``);
* zip archives written member by member (``Member``, ``zip_bytes``), so that headers can lie,
  names can escape the part folder, members can be symlinks or zip bombs;
* whole parts, as a folder or a zip, with a metadata.json written pair by pair (so that a
  name can be listed twice).

``build_hostile_source`` lays every case out side by side with good face videos and returns
what the pipeline must do with each (``HostileSource``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import struct
import zlib
from pathlib import Path

from dfd.dfdc import METADATA, part_folder_name, part_zip_name
from tests.video_fixtures import _ROOT, background, clip, write_clip

NOT_A_VIDEO = b"<html><body><h1>403 Forbidden</h1>Request has expired</body></html>\n" * 20
"""What a failed download saves under the video's name."""

LANDS = "records"  # expected outcome of a good video: face records in the shards
LEFT_OUT = "left_out"  # a fake dropped by balancing, never decoded


# ---- videos -------------------------------------------------------------------------------------

def face_clip(name: str, *, frames: int = 12, face: str = "astronaut", seed: int = 0,
              faststart: bool = False) -> bytes:
    """A 320x240 H.264 clip of a real face photograph (RetinaFace finds it in every frame)."""
    return clip(name, frames, face=face, seed=seed, faststart=faststart).read_bytes()


@functools.cache
def plain_clip(name: str, *, frames: int = 10, width: int = 160, height: int = 120,
               moving: bool = False) -> bytes:
    """A valid faceless clip. Still frames make a small file whatever its size or length;
    moving ones (a new background every frame) make a large one."""
    still = background(width, height)
    pictures = (background(width, height, seed=i) if moving else still for i in range(frames))
    return write_clip(_ROOT / name, pictures).read_bytes()


def truncated(data: bytes, keep: float) -> bytes:
    """The first ``keep`` fraction of the bytes, as an interrupted download leaves a file."""
    return data[:int(len(data) * keep)]


# -- MP4 boxes (ISO/IEC 14496-12): size, type, payload; the sample table lives in
#    moov/trak/mdia/minf/stbl.

_SAMPLE_TABLE = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


def _children(data: bytes, start: int, end: int):
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if size < 8:
            raise ValueError(f"box {kind!r} at {start} has size {size}")
        yield kind, start, size
        start += size


def _box_path(data: bytes, path: tuple[bytes, ...]) -> list[tuple[int, int]]:
    """(offset, size) of each box along path from the top level (first match at each level).
    stsd and avc1 have fixed fields before their children."""
    found, start, end = [], 0, len(data)
    for kind in path:
        box = next(((off, size) for k, off, size in _children(data, start, end) if k == kind),
                   None)
        if box is None:
            raise ValueError(f"no {kind!r} box")
        off, size = box
        found.append(box)
        skip = {b"stsd": 16, b"avc1": 86}.get(kind, 8)  # full-box header / sample entry
        start, end = off + skip, off + size
    return found


def _avcc_path(data: bytes) -> tuple[bytes, ...]:
    return _SAMPLE_TABLE + (b"stsd", b"avc1", b"avcC")


# -- H.264 sequence parameter set (ITU-T H.264 7.3.2.1.1): Exp-Golomb fields up to the frame
#    size in macroblocks; everything after is copied bit for bit.

class _BitReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            bit = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
            value, self.pos = (value << 1) | bit, self.pos + 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)


class _BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(code.bit_length() - 1, 0)
        self.u(code.bit_length(), code)

    def to_bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def _unescape(nal: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in nal:
        if zeros >= 2 and byte == 3:  # emulation prevention byte
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def _sps_with_size(nal: bytes, width_mbs: int, height_mbs: int) -> bytes:
    r, w = _BitReader(_unescape(nal[1:])), _BitWriter()
    profile = r.u(8)
    w.u(8, profile)
    w.u(16, r.u(16))  # constraint flags, level
    w.ue(r.ue())  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        w.ue(chroma)
        if chroma == 3:
            w.u(1, r.u(1))
        w.ue(r.ue())
        w.ue(r.ue())
        w.u(1, r.u(1))
        if r.u(1):
            raise ValueError("SPS with scaling matrices: not rewritten")
        w.u(1, 0)
    w.ue(r.ue())  # log2_max_frame_num_minus4
    poc_type = r.ue()
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(r.ue())
    elif poc_type == 1:
        raise ValueError("SPS with pic_order_cnt_type 1: not rewritten")
    w.ue(r.ue())  # max_num_ref_frames
    w.u(1, r.u(1))
    r.ue(), r.ue()  # the real size, replaced
    w.ue(width_mbs - 1)
    w.ue(height_mbs - 1)
    while r.pos < len(r.data) * 8:  # the rest, with its stop bit and alignment
        w.u(1, r.u(1))
    return nal[:1] + _escape(w.to_bytes())


def _replace_box_payload(data: bytes, path: tuple[bytes, ...], start: int, old_len: int,
                         new: bytes) -> bytes:
    """Replace old_len bytes at start (inside the last box of path) and grow every box on the
    path by the difference. Only for files whose moov follows mdat (chunk offsets unchanged)."""
    boxes = _box_path(data, path)
    if boxes[0][0] < _box_path(data, (b"mdat",))[0][0]:
        raise ValueError("moov before mdat: chunk offsets would move")
    delta = len(new) - old_len
    out = bytearray(data[:start] + new + data[start + old_len:])
    for off, size in boxes:
        struct.pack_into(">I", out, off, size + delta)
    return bytes(out)


def claim_frame_size(mp4: bytes, width: int, height: int, *,
                     in_sample_entry: bool = False) -> bytes:
    """The same file, its H.264 SPS claiming width x height (FFmpeg takes the size from the
    SPS; the sample entry's is only a hint, rewritten too with ``in_sample_entry``)."""
    path = _avcc_path(mp4)
    avcc_off, avcc_size = _box_path(mp4, path)[-1]
    sps_len_at = avcc_off + 8 + 6
    if mp4[avcc_off + 8 + 5] & 0x1F != 1:
        raise ValueError("expected one SPS in avcC")
    (sps_len,) = struct.unpack(">H", mp4[sps_len_at:sps_len_at + 2])
    sps = mp4[sps_len_at + 2:sps_len_at + 2 + sps_len]
    new_sps = _sps_with_size(sps, -(-width // 16), -(-height // 16))
    out = _replace_box_payload(mp4, path, sps_len_at, 2 + sps_len,
                               struct.pack(">H", len(new_sps)) + new_sps)
    if in_sample_entry:
        entry_off = _box_path(out, path[:-1])[-1][0]
        out = bytearray(out)
        struct.pack_into(">HH", out, entry_off + 32, min(width, 0xFFFF), min(height, 0xFFFF))
        out = bytes(out)
    return out


def claim_frame_count(mp4: bytes, frames: int) -> bytes:
    """The same file, its time-to-sample table (``stts``) claiming ``frames`` samples: what
    FFmpeg reports as the stream's frame count."""
    off, _ = _box_path(mp4, _SAMPLE_TABLE + (b"stts",))[-1]
    (entries,) = struct.unpack(">I", mp4[off + 12:off + 16])
    counts = [struct.unpack(">I", mp4[off + 16 + 8 * i:off + 20 + 8 * i])[0]
              for i in range(entries)]
    out = bytearray(mp4)
    struct.pack_into(">I", out, off + 16, counts[0] + frames - sum(counts))
    return bytes(out)


def claim_sample_count(mp4: bytes, samples: int) -> bytes:
    """The same file, its sample-size table (``stsz``) claiming ``samples`` entries that the
    file does not hold."""
    off, _ = _box_path(mp4, _SAMPLE_TABLE + (b"stsz",))[-1]
    out = bytearray(mp4)
    struct.pack_into(">I", out, off + 16, samples)
    return bytes(out)


# ---- zip archives -------------------------------------------------------------------------------

_STORED, _DEFLATED = 0, 8
_UNIX = 3  # "version made by" host system: permissions and file type in external_attr
_REGULAR, _SYMLINK = 0o100644, 0o120777


@dataclasses.dataclass(frozen=True)
class Member:
    """One zip member exactly as written: ``payload`` is stored as is (already deflated when
    ``method`` is 8), and the central directory declares ``size`` and ``crc``, true or not."""
    name: str
    payload: bytes
    size: int
    crc: int
    method: int = _STORED
    symlink: bool = False
    flags: int = 0  # general purpose bits; 0x1 marks the member encrypted


def member(name: str, content: bytes, *, deflate: bool = True) -> Member:
    """An honest member holding content."""
    if not deflate:
        return Member(name, content, len(content), zlib.crc32(content))
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return Member(name, c.compress(content) + c.flush(), len(content), zlib.crc32(content),
                  _DEFLATED)


def symlink(name: str, target: str) -> Member:
    """A Unix symbolic link member (its content is the target path)."""
    return dataclasses.replace(member(name, target.encode(), deflate=False), symlink=True)


@functools.cache
def _zeros_deflated(mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of mib MiB of zeros, and their CRC-32. After a full flush deflate
    starts afresh, so one compressed MiB repeats: building it costs a MiB, not a GiB."""
    chunk = bytes(2**20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH) == block
    stream = block * (mib - 1) + c.compress(chunk) + c.flush()
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return stream, crc


def zip_bomb(name: str, *, mib: int = 1024) -> Member:
    """A member that honestly declares mib MiB of zeros, from about mib KiB compressed."""
    stream, crc = _zeros_deflated(mib)
    return Member(name, stream, mib * 2**20, crc, _DEFLATED)


def lying_zip_bomb(name: str, *, declared: int = 64 * 1024, mib: int = 1024) -> Member:
    """A member that inflates to mib MiB of zeros while its headers declare ``declared``
    bytes (with the CRC of the whole): it slips under any size limit read from the header."""
    stream, crc = _zeros_deflated(mib)
    return Member(name, stream, declared, crc, _DEFLATED)


def corrupted(m: Member) -> Member:
    """The member with its compressed bytes damaged (bit rot, a bad copy); headers intact."""
    middle = len(m.payload) // 2
    damaged = m.payload[:middle] + bytes(b ^ 0x5A for b in m.payload[middle:middle + 64]) \
        + m.payload[middle + 64:]
    return dataclasses.replace(m, payload=damaged)


def zip_bytes(members: list[Member]) -> bytes:
    """A zip archive (no zip64, names in UTF-8) holding the members exactly as given, with
    the same declared sizes in the local headers and the central directory."""
    body, directory = bytearray(), bytearray()
    dos_time, dos_date = 0, (1980 - 1980) << 9 | 1 << 5 | 1
    for m in members:
        name = m.name.encode("utf-8")
        flags = 0x800 | m.flags  # names are UTF-8
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, m.method, dos_time, dos_date,
                            m.crc, len(m.payload), m.size, len(name), 0) + name + m.payload
        mode = _SYMLINK if m.symlink else _REGULAR
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _UNIX << 8 | 20, 20, flags,
                                 m.method, dos_time, dos_date, m.crc, len(m.payload), m.size,
                                 len(name), 0, 0, 0, 0, mode << 16, offset) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                      len(directory), len(body), 0)
    return bytes(body + directory + end)


# ---- parts --------------------------------------------------------------------------------------

def metadata_json(pairs: list[tuple[str, object]]) -> bytes:
    """metadata.json from (name, entry) pairs in order; a name may repeat, as json.dumps of a
    dict never allows."""
    return ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs)
            + "}").encode()


def real(**extra) -> dict:
    return {"label": "REAL", "split": "train", **extra}


def fake(original: str) -> dict:
    return {"label": "FAKE", "split": "train", "original": original}


def write_folder_part(src: Path, part: int, files: dict[str, bytes],
                      metadata: bytes | None) -> Path:
    """An unpacked part ``dfdc_train_part_N/`` (metadata.json left out when None)."""
    folder = src / part_folder_name(part)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    if metadata is not None:
        (folder / METADATA).write_bytes(metadata)
    return folder


def write_zip_part(src: Path, part: int, members: list[Member]) -> Path:
    path = src / part_zip_name(part)
    path.write_bytes(zip_bytes(members))
    return path


def in_folder(part: int, name: str) -> str:
    """A member name inside the part's folder, as the real zips hold them."""
    return f"{part_folder_name(part)}/{name}"


# ---- the whole hostile source -------------------------------------------------------------------

@dataclasses.dataclass
class HostileSource:
    src: Path
    listed: dict[int, int]  # committed part -> distinct names its metadata.json lists
    outcomes: dict[int, dict[str, str]]  # part -> video -> LANDS, LEFT_OUT or reject reason
    broken: dict[int, str]  # part -> reason the whole part fails
    escapes: list[Path]  # where members with hostile paths would land if extracted
    limit_flags: list[str]  # `dfd preprocess` limit flags the outcomes assume
    either_fake: tuple[str, str] = ("", "")  # two fakes of one original: one lands, one left out


# Limits for the run, chosen so each limit refuses exactly its own planted video: good clips
# are 320x240, 12 frames, about 40 KB.
MAX_FRAMES = 40
MAX_FRAME_PIXELS = 320 * 240
MAX_VIDEO_BYTES = 100_000
MAX_MEMBER_BYTES = 64 * 2**20
LIMIT_FLAGS = ["--max-frames", str(MAX_FRAMES), "--max-frame-pixels", str(MAX_FRAME_PIXELS),
               "--max-video-bytes", str(MAX_VIDEO_BYTES), "--max-member-bytes", "64MiB"]


def _folder_part_0(src: Path) -> tuple[int, dict[str, str]]:
    """A folder part holding every per-video and per-entry case next to good videos."""
    good = face_clip("hostile-real.mp4")
    faceless = plain_clip("hostile-faceless.mp4")
    files = {
        "goodreal00.mp4": good,
        "goodfake00.mp4": face_clip("hostile-fake0.mp4", face="grace_hopper"),
        "goodfake01.mp4": face_clip("hostile-fake1.mp4", face="grace_hopper", seed=1),
        "sharedname.mp4": face_clip("hostile-shared.mp4", seed=2),
        # uniform sampling of 3 frames takes the last one, which the cut removed
        "truncated0.mp4": truncated(face_clip("hostile-fast.mp4", faststart=True), 0.7),
        "cutmoov000.mp4": truncated(good, 0.5),  # moov was written last: it is gone
        "zerobytes0.mp4": b"",
        "notavideo0.mp4": NOT_A_VIDEO,
        "faceless00.mp4": faceless,
        "claims16k0.mp4": claim_frame_size(faceless, 15360, 8640),
        "claims60k0.mp4": claim_frame_size(faceless, 60000, 60000, in_sample_entry=True),
        "claimsbn00.mp4": claim_frame_count(faceless, 10**9),
        "claimsstsz.mp4": claim_sample_count(faceless, 10**9),
        "longclip00.mp4": plain_clip("hostile-long.mp4", frames=MAX_FRAMES + 8),
        "bigframe00.mp4": plain_clip("hostile-big.mp4", frames=4, width=640, height=480),
        "bigfile000.mp4": plain_clip("hostile-moving.mp4", frames=60, moving=True),
        "weirdlabel.mp4": good, "listlabel0.mp4": good, "orphanfake.mp4": good,
        "fakeoffake.mp4": good, "twicelisted.mp4": good, "notanobject.mp4": good,
        "unlisted00.mp4": good,
    }
    assert len(files["bigfile000.mp4"]) > MAX_VIDEO_BYTES > max(
        len(v) for k, v in files.items() if k != "bigfile000.mp4")
    pairs = [
        ("goodreal00.mp4", real()), ("goodfake00.mp4", fake("goodreal00.mp4")),
        ("goodfake01.mp4", fake("goodreal00.mp4")), ("sharedname.mp4", real()),
        *[(name, real()) for name in (
            "truncated0.mp4", "cutmoov000.mp4", "zerobytes0.mp4", "notavideo0.mp4",
            "faceless00.mp4", "claims16k0.mp4", "claims60k0.mp4", "claimsbn00.mp4",
            "claimsstsz.mp4", "longclip00.mp4", "bigframe00.mp4", "bigfile000.mp4",
            "missingfile.mp4")],
        ("weirdlabel.mp4", {"label": "SORT-OF"}), ("listlabel0.mp4", {"label": ["REAL"]}),
        ("orphanfake.mp4", fake("nowhere0000.mp4")), ("fakeoffake.mp4", fake("goodfake00.mp4")),
        ("twicelisted.mp4", real()), ("twicelisted.mp4", fake("goodreal00.mp4")),
        ("notanobject.mp4", "REAL"),
        ("../evil00.mp4", real()), ("\ud800lone.mp4", real()), ("newline0.mp4\n", real()),
        ("__duplicate_keys__", 5),
    ]
    write_folder_part(src, 0, files, metadata_json(pairs))
    outcomes = {
        "goodreal00.mp4": LANDS, "sharedname.mp4": LANDS,
        "truncated0.mp4": "truncated", "cutmoov000.mp4": "unreadable",
        "zerobytes0.mp4": "empty_file", "notavideo0.mp4": "unreadable",
        "faceless00.mp4": "no_face", "claims16k0.mp4": "frame_too_large",
        "claims60k0.mp4": "unreadable", "claimsbn00.mp4": "too_many_frames",
        "claimsstsz.mp4": "unreadable", "longclip00.mp4": "too_many_frames",
        "bigframe00.mp4": "frame_too_large", "bigfile000.mp4": "too_large",
        "missingfile.mp4": "no_file", "weirdlabel.mp4": "unknown_label",
        "listlabel0.mp4": "unknown_label", "orphanfake.mp4": "original_missing",
        "fakeoffake.mp4": "original_missing", "twicelisted.mp4": "duplicate_entry",
        "notanobject.mp4": "bad_entry", "../evil00.mp4": "bad_name",
        "\\ud800lone.mp4": "bad_name", "newline0.mp4\\n": "bad_name",
        "__duplicate_keys__": "bad_name", "unlisted00.mp4": "not_in_metadata",
    }
    return len({k for k, _ in pairs}), outcomes


def _zip_part_1(src: Path, root: Path) -> tuple[int, dict[str, str], list[Path]]:
    """A zipped part holding every hostile-member case next to good videos; one video has the
    same name as one in part 0."""
    good = face_clip("hostile-real1.mp4", face="grace_hopper", seed=3)
    absolute = root / "planted" / "absolute00.mp4"
    members = [
        member(in_folder(1, "goodreal01.mp4"), good),
        member(in_folder(1, "goodfake10.mp4"), face_clip("hostile-fake10.mp4", seed=4)),
        member(in_folder(1, "sharedname.mp4"), face_clip("hostile-shared.mp4", seed=2)),
        member("../escaped00.mp4", good),
        member(str(absolute), good),
        member(in_folder(1, "..\\..\\winescape0.mp4"), good),
        member("C:/dfd/drive00000.mp4", good),
        symlink(in_folder(1, "linked0000.mp4"), "/etc/passwd"),
        zip_bomb(in_folder(1, "zipbomb000.mp4")),
        lying_zip_bomb(in_folder(1, "zipliar000.mp4")),
        corrupted(member(in_folder(1, "bitrot0000.mp4"), good)),
        dataclasses.replace(member(in_folder(1, "locked0000.mp4"), good), flags=0x1),
        member(in_folder(1, "twice00000.mp4"), good),
        member("twice00000.mp4", good),
        member(in_folder(1, "sub/deep000000.mp4"), good),
        member(in_folder(1, "emptymember.mp4"), b""),
    ]
    outcomes = {
        "goodreal01.mp4": LANDS, "goodfake10.mp4": LANDS, "sharedname.mp4": LANDS,
        "escaped00.mp4": "unsafe_member", "absolute00.mp4": "unsafe_member",
        "winescape0.mp4": "unsafe_member", "drive00000.mp4": "unsafe_member",
        "linked0000.mp4": "unsafe_member", "zipbomb000.mp4": "member_too_large",
        "zipliar000.mp4": "bad_member", "bitrot0000.mp4": "bad_member",
        "locked0000.mp4": "encrypted_member",
        "twice00000.mp4": "duplicate_member", "deep000000.mp4": "unexpected_member",
        "emptymember.mp4": "empty_file",
    }
    pairs = [(name, fake("goodreal01.mp4") if name == "goodfake10.mp4" else real())
             for name in outcomes]
    members.append(member(in_folder(1, METADATA), metadata_json(pairs)))
    write_zip_part(src, 1, members)
    escapes = [absolute, src / "escaped00.mp4", src.parent / "escaped00.mp4",
               src.parent / "winescape0.mp4", src / "winescape0.mp4"]
    return len(pairs), outcomes, escapes


def _broken_parts(src: Path) -> dict[int, str]:
    """Parts that cannot be read at all; each holds a good video that must not land."""
    good = face_clip("hostile-real.mp4")
    write_folder_part(src, 2, {"brokenmeta.mp4": good}, b'{"brokenmeta.mp4": {"label": "RE')
    write_folder_part(src, 3, {"nometadata.mp4": good}, None)
    (src / part_zip_name(4)).write_bytes(NOT_A_VIDEO)
    write_zip_part(src, 5, [member(in_folder(5, "nometadata.mp4"), good)])
    whole = zip_bytes([member(in_folder(6, "cutshort00.mp4"), good),
                       member(in_folder(6, METADATA), metadata_json([("cutshort00.mp4",
                                                                     real())]))])
    (src / part_zip_name(6)).write_bytes(truncated(whole, 0.5))
    return {2: "bad_metadata", 3: "no_metadata", 4: "bad_archive", 5: "no_metadata",
            6: "bad_archive"}


def build_hostile_source(root: Path) -> HostileSource:
    """Every hostile case at once under root/src: parts 0 (folder) and 1 (zip) mix good and bad
    videos; parts 2-6 are broken as a whole."""
    src = root / "src"
    src.mkdir(parents=True)
    listed0, outcomes0 = _folder_part_0(src)
    listed1, outcomes1, escapes = _zip_part_1(src, root)
    broken = _broken_parts(src)
    return HostileSource(src=src, listed={0: listed0, 1: listed1},
                         outcomes={0: outcomes0, 1: outcomes1}, broken=broken,
                         escapes=escapes, limit_flags=list(LIMIT_FLAGS),
                         either_fake=("goodfake00.mp4", "goodfake01.mp4"))
