"""Finding DFDC parts under an input URI and reading their members through Beam's FileSystems,
so local paths, gs:// and s3:// all work. Zip members are read by ranged reads from the archive
(zipfile seeks the file handle), never by extracting or loading the whole archive."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from dfd import dfdc
from dfd.output_tree import join


@dataclass(frozen=True)
class PartSpec:
    part: int
    uri: str  # the zip, or the folder
    kind: str  # "zip" | "folder"
    size: int
    checksum: str


def open_read(uri: str):
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as f:
        return f.read()


def _zip_checksum(uri: str) -> str:
    # The central directory lists every member's CRC-32 and size: hashing it identifies the
    # archive's content without reading 10 GB.
    with open_read(uri) as f, zipfile.ZipFile(f) as zf:
        ident = sorted((i.filename, i.CRC, i.file_size) for i in zf.infolist())
    return "zipcd-sha256:" + hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def _folder_listing(uri: str) -> list:
    [result] = FileSystems.match([join(uri, "*")])
    return [m for m in result.metadata_list if "/" not in m.path[len(uri):].strip("/")]


def _folder_checksum(uri: str, files: list) -> str:
    ident = sorted((m.path.rsplit("/", 1)[-1], m.size_in_bytes) for m in files)
    meta = join(uri, dfdc.METADATA)
    digest = hashlib.sha256(read_bytes(meta)).hexdigest() if FileSystems.exists(meta) else ""
    return "listing-sha256:" + hashlib.sha256(json.dumps([ident, digest]).encode()).hexdigest()


def discover_parts(input_uri: str, selection: set[int] | None = None) -> list[PartSpec]:
    """Every DFDC part (zip or folder) directly under input_uri, optionally selected by number.
    A part present both zipped and unpacked is read from the zip."""
    found: dict[int, PartSpec] = {}
    [zips] = FileSystems.match([join(input_uri, "dfdc_train_part_*.zip")])
    for m in zips.metadata_list:
        part = dfdc.parse_part_name(m.path.rstrip("/").rsplit("/", 1)[-1])
        if part is None or (selection is not None and part not in selection):
            continue
        found[part] = PartSpec(part, m.path, "zip", m.size_in_bytes, _zip_checksum(m.path))
    [metas] = FileSystems.match([join(input_uri, "dfdc_train_part_*", dfdc.METADATA)])
    folders = {m.path.rsplit("/", 2)[-2] for m in metas.metadata_list}
    for name in sorted(folders):
        part = dfdc.parse_part_name(name)
        if part is None or part in found or (selection is not None and part not in selection):
            continue
        uri = join(input_uri, name)
        files = _folder_listing(uri)
        found[part] = PartSpec(part, uri, "folder", sum(m.size_in_bytes for m in files),
                               _folder_checksum(uri, files))
    return [found[p] for p in sorted(found)]


@dataclass(frozen=True)
class ZipMember:
    """A picklable opener of one video inside a zipped part, resolved on the worker."""
    archive: str
    member: str
    max_bytes: int

    def __call__(self):
        with open_read(self.archive) as f, zipfile.ZipFile(f) as zf:
            return io.BytesIO(dfdc.read_member(zf, self.member, max_bytes=self.max_bytes))


@dataclass(frozen=True)
class FolderFile:
    """A picklable opener of one video in an unpacked part folder."""
    uri: str

    def __call__(self):
        return open_read(self.uri)


def read_part(spec: PartSpec, *, max_member_bytes: int) -> tuple[bytes, dict, list[dict]]:
    """Metadata bytes, video name -> opener, and rejects for unusable members.

    Raises dfdc.BrokenPart when the archive or its metadata.json cannot be read."""
    if spec.kind == "zip":
        try:
            with open_read(spec.uri) as f, zipfile.ZipFile(f) as zf:
                members, rejects = dfdc.scan_zip(zf, part=spec.part,
                                                 max_member_bytes=max_member_bytes)
                if members.metadata is None:
                    raise dfdc.BrokenPart(spec.part, "no_metadata", "no metadata.json in archive")
                raw = dfdc.read_member(zf, members.metadata, max_bytes=max_member_bytes)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise dfdc.BrokenPart(spec.part, "bad_archive", str(exc)) from None
        openers = {name: ZipMember(spec.uri, member, max_member_bytes)
                   for name, member in members.videos.items()}
        return raw, openers, rejects
    files = _folder_listing(spec.uri)
    by_name = {m.path.rsplit("/", 1)[-1]: m for m in files}
    if dfdc.METADATA not in by_name:
        raise dfdc.BrokenPart(spec.part, "no_metadata", f"no metadata.json in {spec.uri}")
    raw = read_bytes(by_name[dfdc.METADATA].path)
    openers, rejects = {}, []
    for name, m in sorted(by_name.items()):
        if not name.endswith(".mp4"):
            continue
        if m.size_in_bytes > max_member_bytes:
            rejects.append(dfdc.reject(name, spec.part, "member_too_large",
                                       f"{m.size_in_bytes} bytes, limit {max_member_bytes}"))
            continue
        openers[name] = FolderFile(m.path)
    return raw, openers, rejects
