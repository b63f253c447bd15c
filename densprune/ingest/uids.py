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
