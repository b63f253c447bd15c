"""Stable 32-hex-character sample uids (DataComp's format)."""

from __future__ import annotations

import hashlib
import re

import numpy as np

_UID_RE = re.compile(r"^[0-9a-f]{32}$")


def uid_from_key(key: str) -> str:
    """A stable uid for a sample without one of its own: md5 of its shard/key or relative path (a name with
    undecodable bytes, held as lone surrogates, hashes those as they are)."""
    return hashlib.md5(key.encode("utf-8", errors="surrogatepass")).hexdigest()


def normalize_uid(value: object) -> str | None:
    """Return ``value`` as a lowercase 32-hex uid, or None when it is not one."""
    if value is None:
        return None
    text = str(value).strip().lower()
    return text if _UID_RE.match(text) else None


def uids_to_datacomp(uids: list[str] | np.ndarray) -> np.ndarray:
    """Convert 32-hex uids to DataComp's subset array: dtype ``u8,u8``, sorted.

    Args:
        uids: (n,) 32-hex-character strings.
    Returns:
        (n,) structured array of (int(uid[:16], 16), int(uid[16:32], 16)), sorted.
    """
    arr = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], dtype=np.dtype("u8,u8"))
    arr.sort()
    return arr


_HEX = np.full(256, 255, dtype=np.uint8)  # ASCII byte -> its hex digit value (255: not a hex digit)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def hex_chars_to_pairs(chars: np.ndarray, first_row: int = 0) -> np.ndarray:
    """32-hex uids given as their ASCII bytes, (n, 32) uint8, as integers: (n, 2) uint64 (first and last
    16 hex digits), vectorised. Raises ValueError naming the first row (counted from ``first_row``)
    that is not 32 hex digits."""
    nib = _HEX[chars]
    if nib.size and nib.max() == 255:
        i = int(np.flatnonzero((nib == 255).any(axis=1))[0])
        raise ValueError(f"uid {bytes(chars[i]).decode('ascii', 'replace')!r} (row {first_row + i}) "
                         "is not 32 hex digits")
    raw = np.ascontiguousarray((nib[:, 0::2] << 4) | nib[:, 1::2])  # (n, 16) bytes, big-endian halves
    return raw.view(">u8").astype(np.uint64)


def arrow_uids_to_datacomp(uids) -> np.ndarray:
    """:func:`uids_to_datacomp` for a pyarrow string array (or chunked array) of 32-hex uids, read
    straight from its buffers (no Python string per row): (n,) ``u8,u8``, sorted.

    Raises ValueError for a null uid or one that is not 32 hex digits (naming the row)."""
    import pyarrow as pa

    chunks = uids.chunks if isinstance(uids, pa.ChunkedArray) else [uids]
    parts, seen = [], 0
    for chunk in chunks:
        if chunk.null_count:
            raise ValueError(f"a uid is missing (null) near row {seen}: every sample needs a 32-hex uid")
        if not pa.types.is_string(chunk.type) and not pa.types.is_large_string(chunk.type):
            chunk = chunk.cast(pa.string())
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if pa.types.is_large_string(chunk.type)
                                else np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
        lengths = np.diff(offsets)
        if lengths.size and (lengths != 32).any():
            i = int(np.flatnonzero(lengths != 32)[0])
            raise ValueError(f"uid {chunk[i].as_py()!r} (row {seen + i}) is not 32 hex digits")
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]] if len(chunk) else \
            np.zeros(0, np.uint8)
        parts.append(hex_chars_to_pairs(data.reshape(-1, 32), seen))
        seen += len(chunk)
    pairs = np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)
    order = sort_pairs(pairs)
    out = np.empty(len(pairs), dtype=np.dtype("u8,u8"))
    out["f0"], out["f1"] = pairs[order, 0], pairs[order, 1]
    return out


def sort_pairs(pairs: np.ndarray) -> np.ndarray:
    """The order (n,) that sorts (n, 2) uint64 rows by the first, then the second column. One argsort of
    the first column (ties between 64-bit halves of distinct uids are rare: only their rows are
    re-sorted by both columns), several times faster than ``np.lexsort`` or a structured sort."""
    hi, lo = pairs[:, 0], pairs[:, 1]
    order = np.argsort(hi)
    h = hi[order]
    tie = np.flatnonzero(h[1:] == h[:-1])
    if tie.size:  # the runs of equal first halves, re-sorted by both halves in place
        at = np.unique(np.concatenate([tie, tie + 1]))
        sub = order[at]
        order[at] = sub[np.lexsort((lo[sub], hi[sub]))]
    return order


def uid_ints(uids: list[str]) -> np.ndarray:
    """32-hex uids as integers, in the given order: (n,) -> (n, 2) uint64 (first and last 16 hex digits)."""
    if not uids:
        return np.zeros((0, 2), dtype=np.uint64)
    raw = bytes.fromhex("".join(uids))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)


def first_occurrences(pairs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Which valid rows hold the first occurrence of their uid.

    Args:
        pairs: (n, 2) uint64 uids from :func:`uid_ints` (rows that are not valid are ignored).
        valid: (n,) bool.
    Returns:
        (n,) bool: valid and no earlier valid row has the same uid. One sort, 16 bytes a row.
    """
    idx = np.flatnonzero(valid)
    order = np.lexsort((pairs[idx, 1], pairs[idx, 0]))  # by uid; stable, so the first row of a uid comes first
    s = idx[order]
    same = np.zeros(s.size, dtype=bool)
    same[1:] = (pairs[s[1:], 0] == pairs[s[:-1], 0]) & (pairs[s[1:], 1] == pairs[s[:-1], 1])
    out = np.zeros(valid.shape[0], dtype=bool)
    out[s[~same]] = True
    return out
