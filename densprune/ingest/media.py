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


def group_tar_members(tf: tarfile.TarFile) -> dict[str, dict[str, tarfile.TarInfo]]:
    """The files of an open tar grouped by sample key, in tar order: {key: {ext: TarInfo}}."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    for info in tf:
        if info.isfile() and (kx := tar_sample_key(info.name)) is not None:
            groups.setdefault(kx[0], {})[kx[1]] = info
    return groups
