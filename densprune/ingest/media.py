"""Image file types: extensions a folder source lists, and the type of encoded bytes from their magic number."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_MIME_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


def image_mime(data: bytes) -> str | None:
    """MIME type of encoded image bytes from their magic number (None when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"\xff\xd8":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def image_ext(data: bytes, ref: str = "") -> str:
    """File extension for encoded bytes: from the magic number, else the suffix of ``ref``, else 'img'."""
    ext = _MIME_EXT.get(image_mime(data) or "")
    if ext:
        return ext
    return Path(ref.split("#")[0]).suffix.lstrip(".").lower() or "img"


def tar_sample_key(member_name: str) -> tuple[str, str] | None:
    """webdataset grouping: ``dir/000123.jpg`` -> (``dir/000123``, ``jpg``); None for names without an extension."""
    base = os.path.basename(member_name)
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return os.path.join(os.path.dirname(member_name), stem), ext.lower()


def _keyed_members(tf: tarfile.TarFile):
    """The file members of an open tar in order, each with its (sample key, ext) or None (no extension)."""
    for info in tf:
        if info.isfile():
            yield info, tar_sample_key(info.name)


def group_tar_members(tf: tarfile.TarFile) -> dict[str, dict[str, tarfile.TarInfo]]:
    """The files of an open tar grouped by sample key, in tar order: {key: {ext: TarInfo}} (a corrupt
    tar raises tarfile.TarError)."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    for info, kx in _keyed_members(tf):
        if kx is not None:
            groups.setdefault(kx[0], {})[kx[1]] = info
    return groups


def collect_tar_members(tf: tarfile.TarFile, groups: dict[str, dict[str, tarfile.TarInfo]],
                        strays: list[tarfile.TarInfo]) -> str | None:
    """:func:`group_tar_members` into ``groups`` as the members are read, so what was read before a
    corrupt header is kept; files without an extension go to ``strays``. Returns why the reading
    stopped early, or None."""
    try:
        for info, kx in _keyed_members(tf):
            if kx is None:
                strays.append(info)
            else:
                groups.setdefault(kx[0], {})[kx[1]] = info
    except tarfile.TarError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def tar_end_problem(tf: tarfile.TarFile, path: str) -> str | None:
    """Why a tar whose members were all read has no proper end (None when it has one).

    Python's tarfile stops quietly at a header cut short or at garbage after the first member; a
    complete tar ends with a zero block right after its last member's data. A member whose data the
    file cuts short is reported too.
    """
    size = os.path.getsize(path)
    for info in tf.getmembers()[-1:]:
        if info.offset_data + info.size > size:
            return f"truncated: {info.name!r} needs {info.offset_data + info.size:,} bytes, the file has {size:,}"
    tf.fileobj.seek(tf.offset)
    block = tf.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        return f"truncated or corrupt at byte {tf.offset:,} of {size:,}: no end-of-archive block after the last member"
    return None
