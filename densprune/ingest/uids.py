"""Stable 32-hex-character sample uids (DataComp's format)."""

from __future__ import annotations

import hashlib
import re

import numpy as np

_UID_RE = re.compile(r"^[0-9a-f]{32}$")


def uid_from_key(key: str) -> str:
    """A stable uid for a sample without one of its own: md5 of its shard/key or relative path."""
    return hashlib.md5(key.encode("utf-8")).hexdigest()


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
