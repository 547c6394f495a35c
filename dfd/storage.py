"""Small URI helpers: local paths, file://, gs:// and s3://, all through pyarrow.fs.

``dfd/`` may not import Beam, so remote reads and writes here go through ``pyarrow.fs`` (already a
dependency, with GCS and S3 built in) rather than Beam's FileSystems; both address the same
objects, so what this module writes the Beam pipeline reads.

Commits are atomic in the way each store allows: a local file is written under a temporary
name and renamed; an object in GCS or S3 becomes visible only when its upload completes, so it
is written under its final name (a rename there is a full server-side copy).
"""
from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Callable

import pyarrow.fs as pafs

_CHUNK = 8 * 2**20


def is_local(uri: str) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (a plain path or file://)."""
    uri = str(uri)
    if not is_local(uri):
        raise ValueError(f"{uri} is not a local path")
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding uri, and the path inside it."""
    if is_local(uri):
        return pafs.LocalFileSystem(), str(local_path(uri).absolute())
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) and OSError
        raise ValueError(f"cannot open {uri}: {exc}") from None


def file_size(uri: str) -> int | None:
    """Size in bytes of the file at uri, or None if there is no file there."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def read_text(uri: str) -> str | None:
    """The text of the file at uri, or None if there is no file there."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def open_read(uri: str):
    """A binary stream over the file at uri."""
    fs, path = resolve(uri)
    return fs.open_input_stream(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a small file so that readers see either the old content or all of the new."""
    if is_local(uri):
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique name opened with "x" (not mkstemp) so the file gets the usual umask mode.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = resolve(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def commit_file(src: Path, uri: str, *, on_bytes: Callable[[int], None] | None = None) -> None:
    """Move a finished local file to uri, atomically.

    Locally this is a rename when src is on the same filesystem (the caller should stage it
    beside the destination); otherwise a copy under a temporary name, then a rename. Remotely
    it is one streamed upload, which the store publishes only once complete; src is left for
    the caller to delete.
    """
    src = Path(src)
    if is_local(uri):
        dest = local_path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dest)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # src is on another filesystem: copy instead
                raise
        tmp = dest.with_name(f".{dest.name}.incoming")
        _copy_stream(src, pafs.LocalFileSystem(), str(tmp), on_bytes)
        os.replace(tmp, dest)
        src.unlink()
        return
    fs, path = resolve(uri)
    _copy_stream(src, fs, path, on_bytes)


def _copy_stream(src: Path, fs: pafs.FileSystem, path: str,
                 on_bytes: Callable[[int], None] | None) -> None:
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.create_dir(parent, recursive=True)
    with open(src, "rb") as fin, fs.open_output_stream(path) as fout:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            if on_bytes:
                on_bytes(len(chunk))


def remove(uri: str) -> None:
    """Delete the file at uri if there is one."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)
