"""Finding DFDC parts under an input URI and reading their members through Beam's FileSystems,
so local paths, gs:// and s3:// all work. Zip members are read by ranged reads from the archive
(zipfile seeks the file handle), never by extracting or loading the whole archive."""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import zipfile
import zlib
from dataclasses import dataclass

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from dfd import dfdc
from dfd.output_tree import join
from dfd.video import BadZipMember, VideoTooLarge

# What zipfile and its decompressors raise for a damaged or lying member (bz2 raises OSError,
# an unknown method NotImplementedError, an encrypted one RuntimeError).
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
                  NotImplementedError, RuntimeError, ValueError)


@dataclass(frozen=True)
class PartSpec:
    part: int
    uri: str  # the zip, or the folder
    kind: str  # "zip" | "folder" | "ambiguous" (two sources claim the part: never read)
    size: int
    checksum: str
    warnings: tuple[str, ...] = ()  # kept in the part's manifest entry


def open_read(uri: str):
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as f:
        return f.read()


def _zip_checksum(uri: str) -> tuple[str, set[str]]:
    """The archive's identity, and the top-level folders its members sit in."""
    # The central directory lists every member's CRC-32 and size: hashing it identifies the
    # archive's content without reading 10 GB.
    try:
        with open_read(uri) as f, zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            ident = sorted((i.filename, i.CRC, i.file_size) for i in infos)
            folders = {i.filename.replace("\\", "/").split("/", 1)[0] for i in infos
                       if "/" in i.filename.replace("\\", "/")}
    except _MEMBER_ERRORS:
        # Not a zip (a failed download, a cut-off copy): the part fails when it is read, with
        # its reason recorded; its neighbours go on. A broken part is never committed, so this
        # checksum is never compared.
        return "unreadable-zip", set()
    return "zipcd-sha256:" + hashlib.sha256(json.dumps(ident).encode()).hexdigest(), folders


def _folder_mismatch(name: str, part: int, folders: set[str]) -> tuple[str, ...]:
    """A warning when a part's zip unpacks to another part's folder (it is read as the part
    its name says)."""
    numbers = {dfdc.parse_part_name(f) for f in folders} - {None}
    if len(numbers) == 1 and numbers != {part}:
        [inner] = sorted(f for f in folders if dfdc.parse_part_name(f) is not None)
        return (f"{name} holds folder {inner}/, not {dfdc.part_folder_name(part)}/: read as "
                f"part {part}, the number in its file name",)
    return ()


def _folder_listing(uri: str) -> list:
    [result] = FileSystems.match([join(uri, "*")])
    return [m for m in result.metadata_list if "/" not in m.path[len(uri):].strip("/")]


def _folder_checksum(uri: str, files: list) -> str:
    ident = sorted((m.path.rsplit("/", 1)[-1], m.size_in_bytes) for m in files)
    meta = join(uri, dfdc.METADATA)
    digest = hashlib.sha256(read_bytes(meta)).hexdigest() if FileSystems.exists(meta) else ""
    return "listing-sha256:" + hashlib.sha256(json.dumps([ident, digest]).encode()).hexdigest()


def _part_folders(input_uri: str) -> list[str]:
    """Names of the part folders directly under input_uri that hold any file. Found by their
    files, not by metadata.json: a folder without one is a broken part to report, not to
    skip silently (object stores have no empty folders to find anyway)."""
    base = input_uri.rstrip("/") + "/"
    names = set()
    for pattern in (join(input_uri, "dfdc_train_part_*", "*"),
                    join(input_uri, dfdc.SAMPLE_FOLDER, "*"),
                    # a padded outer folder: dfdc_train_part_00/dfdc_train_part_0/...
                    join(input_uri, "dfdc_train_part_*", "dfdc_train_part_*", dfdc.METADATA)):
        [found] = FileSystems.match([pattern])
        names |= {m.path[len(base):].split("/", 1)[0] for m in found.metadata_list
                  if m.path.startswith(base) and "/" in m.path[len(base):]}
    return sorted(names)


def _inner_folder(input_uri: str, name: str) -> tuple[str, tuple[str, ...]]:
    """The folder a part's files are in: the named one, or the one inside a padded outer folder
    (``dfdc_train_part_00/dfdc_train_part_0/``), with a warning if their numbers differ."""
    uri = join(input_uri, name)
    if FileSystems.exists(join(uri, dfdc.METADATA)):
        return uri, ()
    [found] = FileSystems.match([join(uri, "dfdc_train_part_*", dfdc.METADATA)])
    inner = sorted({m.path.rstrip("/").rsplit("/", 2)[-2] for m in found.metadata_list})
    if len(inner) != 1:
        return uri, ()  # no metadata.json (a broken part, reported when read) or several
    outer_part, inner_part = dfdc.parse_part_name(name), dfdc.parse_part_name(inner[0])
    warnings = ()
    if inner_part != outer_part:
        warnings = (f"{name}/ holds folder {inner[0]}/: read as part {outer_part}, the number "
                    f"of the outer folder",)
    return join(uri, inner[0]), warnings


def _ambiguous(part: int, uris: list[str]) -> PartSpec:
    names = " and ".join(u.rstrip("/").rsplit("/", 1)[-1] for u in sorted(uris))
    return PartSpec(part, sorted(uris)[0], "ambiguous", 0,
                    "ambiguous:" + hashlib.sha256("|".join(sorted(uris)).encode()).hexdigest(),
                    (f"{names} both name part {part}: remove or rename one, so that it is "
                     f"never a silent choice",))


def discover_parts(input_uri: str, selection: set[int] | None = None) -> list[PartSpec]:
    """Every DFDC part (zip or folder) directly under input_uri, optionally selected by number.

    Besides ``dfdc_train_part_NN.zip`` and ``dfdc_train_part_N/``, the real layouts are read:
    a padded outer folder (``dfdc_train_part_00/dfdc_train_part_0/``), and the labelled sample
    ``train_sample_videos`` (folder or zip) as part ``dfdc.SAMPLE_PART``. A part present both
    zipped and unpacked is read from the zip. Two zips (or two folders) of one part, e.g.
    ``_0`` and ``_00``, are never chosen between: the part fails, naming both. A zip whose
    folder is another part's is read as the part its name says, with a warning kept in its
    manifest entry. Never raises for a broken part: reading it does, so that the reason is
    recorded for that part alone."""
    zips: dict[int, list[PartSpec]] = {}
    found_zips = []
    for pattern in ("dfdc_train_part_*.zip", dfdc.SAMPLE_FOLDER + ".zip"):
        [matched] = FileSystems.match([join(input_uri, pattern)])
        found_zips.extend(matched.metadata_list)
    for m in found_zips:
        name = m.path.rstrip("/").rsplit("/", 1)[-1]
        part = dfdc.parse_part_name(name)
        if part is None or (selection is not None and part not in selection):
            continue
        checksum, folders = _zip_checksum(m.path)
        zips.setdefault(part, []).append(PartSpec(part, m.path, "zip", m.size_in_bytes, checksum,
                                                  _folder_mismatch(name, part, folders)))
    folders: dict[int, list[str]] = {}
    for name in _part_folders(input_uri):
        part = dfdc.parse_part_name(name)
        if part is None or (selection is not None and part not in selection):
            continue
        folders.setdefault(part, []).append(name)
    found: dict[int, PartSpec] = {}
    for part in sorted(set(zips) | set(folders)):
        if len(zips.get(part, [])) > 1:
            found[part] = _ambiguous(part, [z.uri for z in zips[part]])
        elif part in zips:
            found[part] = zips[part][0]
        elif len(folders[part]) > 1:
            found[part] = _ambiguous(part, [join(input_uri, n) for n in folders[part]])
        else:
            uri, warnings = _inner_folder(input_uri, folders[part][0])
            files = _folder_listing(uri)
            found[part] = PartSpec(part, uri, "folder", sum(m.size_in_bytes for m in files),
                                   _folder_checksum(uri, files), warnings)
    return [found[p] for p in sorted(found)]


@dataclass(frozen=True)
class ZipMember:
    """A picklable opener of one video inside a zipped part, resolved on the worker."""
    archive: str
    member: str
    max_bytes: int

    def __call__(self):
        with open_read(self.archive) as f, zipfile.ZipFile(f) as zf:
            try:
                data = dfdc.read_member(zf, self.member, max_bytes=self.max_bytes)
            except _MEMBER_ERRORS as exc:
                # The member's bytes contradict its header (a CRC or size that lies, as zip
                # bombs do, or bit rot): zipfile stopped at the declared size.
                raise BadZipMember(f"{self.member!r}: {type(exc).__name__}: {exc}") from None
        return io.BytesIO(data)


@dataclass(frozen=True)
class FolderFile:
    """A picklable opener of one video in an unpacked part folder."""
    uri: str

    def __call__(self):
        return open_read(self.uri)


def read_part(spec: PartSpec, *, max_member_bytes: int, max_video_bytes: int | None = None
              ) -> tuple[bytes, dict, list[dict]]:
    """Metadata bytes, video name -> opener, and rejects for the files that will not be opened:
    zip members refused by ``dfdc.scan_zip``, empty files, and videos over max_video_bytes
    (``too_large``, as the decoder would say). Sizes come from the listing or the central
    directory: nothing is read or inflated to judge them.

    Raises dfdc.BrokenPart when the archive or its metadata.json cannot be read, or when two
    sources claim the part."""
    if spec.kind == "ambiguous":
        raise dfdc.BrokenPart(spec.part, "ambiguous_part", spec.warnings[0])
    max_video_bytes = max_member_bytes if max_video_bytes is None else max_video_bytes
    if spec.kind == "zip":
        try:
            with open_read(spec.uri) as f, zipfile.ZipFile(f) as zf:
                members, rejects = dfdc.scan_zip(zf, part=spec.part,
                                                 max_member_bytes=max_member_bytes,
                                                 name_by_file=True)
                if members.metadata is None:
                    why = [f"{r['reason']}: {r['detail']}" for r in rejects
                           if r["video"] == dfdc.METADATA]
                    raise dfdc.BrokenPart(spec.part, "no_metadata",
                                          "no usable metadata.json in the archive"
                                          + (f" ({why[0]})" if why else ""))
                raw = dfdc.read_member(zf, members.metadata, max_bytes=max_member_bytes)
                sizes = {name: zf.getinfo(m).file_size for name, m in members.videos.items()}
        except _MEMBER_ERRORS as exc:
            raise dfdc.BrokenPart(spec.part, "bad_archive",
                                  f"{type(exc).__name__}: {exc}") from None
        openers = {}
        for name, m in members.videos.items():
            if sizes[name] > max_video_bytes:
                rejects.append(_too_large(name, spec.part, sizes[name], max_video_bytes))
            else:
                openers[name] = ZipMember(spec.uri, m, max_member_bytes)
        return raw, openers, rejects
    files = _folder_listing(spec.uri)
    by_name = {m.path.rsplit("/", 1)[-1]: m for m in files}
    if dfdc.METADATA not in by_name:
        raise dfdc.BrokenPart(spec.part, "no_metadata", f"no metadata.json in {spec.uri}")
    meta_size = by_name[dfdc.METADATA].size_in_bytes
    if meta_size > max_member_bytes:
        raise dfdc.BrokenPart(spec.part, "bad_metadata",
                              f"metadata.json is {meta_size} bytes, limit {max_member_bytes}")
    raw = read_bytes(by_name[dfdc.METADATA].path)
    openers, rejects = {}, []
    for name, m in sorted(by_name.items()):
        if not name.endswith(".mp4"):
            continue
        if m.size_in_bytes > max_video_bytes:
            rejects.append(_too_large(name, spec.part, m.size_in_bytes, max_video_bytes))
        elif m.size_in_bytes == 0:
            rejects.append(dfdc.reject(name, spec.part, "empty_file", "0 bytes"))
        else:
            openers[name] = FolderFile(m.path)
    return raw, openers, rejects


def _too_large(name: str, part: int, size: int, limit: int) -> dict:
    return dfdc.reject(name, part, VideoTooLarge.reason, f"{size} bytes, limit {limit}")
