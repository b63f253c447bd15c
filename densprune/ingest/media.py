"""Image file types (extensions a folder source lists, the type of encoded bytes from their magic number),
and the one place input files are checked and read: regular files only, of bounded size, links out of a
source folder refused, tar members grouped with duplicates, links and unsafe names set apart."""

from __future__ import annotations

import os
import re
import stat
import tarfile
from pathlib import Path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_FILE_BYTES = 1 << 30  # an image file (or tar member) larger than 1 GiB is rejected, never read
MAX_TEXT_BYTES = 16 << 20  # a caption sidecar / tar .txt or .json member larger than 16 MiB likewise
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
    """The files of an open tar grouped by sample key, in tar order: {key: {ext: TarInfo}}, the first
    member of each name (what :func:`collect_tar_members` keeps; a corrupt tar raises tarfile.TarError)."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    problem = collect_tar_members(tf, groups, [])
    if problem:
        raise tarfile.ReadError(problem)
    return groups


def tar_sample_instances(tf: tarfile.TarFile) -> dict[str, list[dict[str, tarfile.TarInfo]]]:
    """Every instance of every sample key of an open tar: {key: [first {ext: TarInfo}, repeats...]}."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    dups: dict[tuple[str, int], dict[str, tarfile.TarInfo]] = {}
    problem = collect_tar_members(tf, groups, [], dups)
    if problem:
        raise tarfile.ReadError(problem)
    out = {k: [g] for k, g in groups.items()}
    for (k, _), g in sorted(dups.items(), key=lambda kv: kv[0][1]):
        out[k].append(g)
    return out


def collect_tar_members(tf: tarfile.TarFile, groups: dict[str, dict[str, tarfile.TarInfo]],
                        strays: list[tarfile.TarInfo],
                        dups: dict[tuple[str, int], dict[str, tarfile.TarInfo]] | None = None,
                        others: list[tarfile.TarInfo] | None = None) -> str | None:
    """The members of an open tar, sorted as they are read (so what was read before a corrupt header
    is kept): regular files into ``groups`` ({sample key: {ext: TarInfo}}, the first member of each
    name), a repeated name into ``dups`` under (key, n), its n-th occurrence (2, 3, ...), files without
    an extension into ``strays``, links, devices, FIFOs and sparse files into ``others`` (never read;
    folders are skipped). Returns why the reading stopped early, or None."""
    seen: dict[tuple[str, str], int] = {}
    try:
        for info in tf:
            if info.isdir():
                continue
            if not info.isfile() or info.issparse():
                if others is not None:
                    others.append(info)
                continue
            kx = tar_sample_key(info.name)
            if kx is None:
                strays.append(info)
                continue
            n = seen[kx] = seen.get(kx, 0) + 1
            if n == 1:
                groups.setdefault(kx[0], {})[kx[1]] = info
            elif dups is not None:
                dups.setdefault((kx[0], n), {})[kx[1]] = info
    except tarfile.TarError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def tar_member_kind(info: tarfile.TarInfo) -> str:
    """What a tar member that is not a regular file is ("symbolic link to 'x'", "FIFO", ...)."""
    if info.issym():
        return f"symbolic link to {info.linkname!r}"
    if info.islnk():
        return f"hard link to {info.linkname!r}"
    if info.issparse():
        return "sparse file"
    return {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
            tarfile.FIFOTYPE: "FIFO"}.get(info.type, f"member of type {info.type!r}")


_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member name would write outside the folder it is extracted into ("absolute",
    "with a '..' part"), or None when it is safe. Backslashes count as separators (Windows extractors)."""
    parts = name.replace("\\", "/")
    if parts.startswith("/") or _DRIVE.match(parts):
        return "absolute"
    if ".." in parts.split("/"):
        return "with a '..' part"
    return None


# --------------------------------------------------------------------------------------------
# input files: regular, bounded, inside their source folder
# --------------------------------------------------------------------------------------------

def _mode_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return kind
    return "special file"


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def file_problem(path: str | os.PathLike, *, root: str | os.PathLike | None = None, follow_links: bool = False,
                 max_bytes: int | None = MAX_FILE_BYTES) -> str | None:
    """Why an input file cannot be read, or None: "file not found", "broken symbolic link (to X)",
    "not a regular file (FIFO)" (devices, sockets, folders likewise), "file too large (N bytes, the
    limit is M)", "invalid path (...)"; with a source folder ``root``, also "symbolic link out of the
    source folder (to X)" when ``path`` is a link whose target lies outside ``root`` and
    ``follow_links`` is off. Links are otherwise followed; the target is what is checked. Nothing is
    opened: a FIFO is never waited on, a device never read."""
    try:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                return f"broken symbolic link (to {os.readlink(path)!r})"
            return "file not found"
        if not stat.S_ISREG(st.st_mode):
            via = f" via a symbolic link to {os.path.realpath(path)!r}" if os.path.islink(path) else ""
            return f"not a regular file ({_mode_kind(st.st_mode)}{via})"
        if root is not None and not follow_links and os.path.islink(path):
            target = os.path.realpath(path)
            if not _within(target, os.path.realpath(root)):
                return f"symbolic link out of the source folder (to {target!r}); pass --follow-links to read it"
        if max_bytes is not None and st.st_size > max_bytes:
            return f"file too large ({st.st_size:,} bytes, the limit is {max_bytes:,})"
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the file system, a link loop
        return f"invalid path ({type(exc).__name__}: {str(exc)[:80]})"
    return None


class InputFileError(OSError):
    """An input file that is not a regular file, or too large to read (the message names it)."""


def read_regular(path: str | os.PathLike, offset: int = 0, size: int | None = None,
                 max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file (``size`` bytes from ``offset``; the rest of it without ``size``).

    Opened without blocking (a FIFO put in a file's place is refused at once, never waited on) and
    checked once open: anything but a regular file, or more than ``max_bytes`` to read, raises
    :class:`InputFileError` (an OSError)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    st0 = os.stat(path)
    if not stat.S_ISREG(st0.st_mode):  # checked before opening: a device is never opened
        raise InputFileError(f"{os.fspath(path)}: not a regular file ({_mode_kind(st0.st_mode)})")
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(f"{os.fspath(path)}: not a regular file ({_mode_kind(st.st_mode)})")
        want = max(0, st.st_size - offset) if size is None else size
        if max_bytes is not None and want > max_bytes:
            raise InputFileError(f"{os.fspath(path)}: file too large ({want:,} bytes to read, "
                                 f"the limit is {max_bytes:,})")
        fh.seek(offset)
        return fh.read(want)


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
