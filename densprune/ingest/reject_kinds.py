"""Rejects grouped by kind: the reason of each reject without its file names, sizes and row numbers.

The rejects table keeps every reason whole ("images/a.png row 7: file not found: /x/a.png"); a summary
counts them by kind ("file not found"), for ``densprune info`` and the Overview page.
"""

from __future__ import annotations

import re

import pandas as pd

__all__ = ["reason_kind", "summarise_rejects"]

# (pattern searched in the reason, kind); the first that matches names the kind
_KINDS: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), k) for p, k in (
    (r"^empty image file$", "empty image file"),
    (r"pixels exceeds --max-pixels", "too many pixels (--max-pixels)"),
    (r"^decompression bomb", "decompression bomb"),
    (r"^cannot decode image: (\w+)", "cannot decode image ({0})"),
    (r"row \d+: empty ", "empty image column"),
    (r"^shard not found", "tar shard not found"),
    (r"unreadable tar shard", "unreadable tar shard"),
    (r": its caption file ", "unreadable caption file"),
    (r"unsafe member name", "unsafe tar member name"),
    (r"\bduplicate sample .*: the first one is kept$", "duplicate sample name in its tar shard"),
    (r", not a file: tar links and special files", "tar link or special file"),
    (r": file not found(: |$)", "file not found"),
    (r": broken symbolic link \(", "broken symbolic link"),
    (r"symbolic link to a folder out of the source folder", "link to a folder out of the source folder"),
    (r"symbolic link out of the source folder", "link out of the source folder"),
    (r"not a regular file \((FIFO|character device|block device|socket|folder|special file)",
     "not a regular file ({0})"),
    (r"file too large \(", "file too large"),
    (r": not a file: ", "not a file"),
    (r": invalid path \(", "invalid path"),
    (r": folder cannot be listed", "folder cannot be listed"),
    (r"fields, the header has \d+", "table line with more fields than its header"),
    (r"belongs to no sample", "tar member of no sample"),
    (r"has no image member", "sample without an image in its tar shard"),
    (r"(^|: )duplicate uid ", "duplicate uid"),  # a released-embeddings row names its file and row first
))


def reason_kind(reason: str) -> str:
    """The kind of a reject reason; a reason of no known kind is its own kind (cut at 80 characters)."""
    text = str(reason)
    for pattern, kind in _KINDS:
        m = pattern.search(text)
        if m:
            return kind.format(*m.groups())
    return text if len(text) <= 80 else text[:79] + "…"


def summarise_rejects(by_reason: pd.DataFrame) -> pd.DataFrame:
    """Counts by (stage, kind), most frequent first, from ``by_reason`` (stage, reason, count: one row per
    distinct reason, as densprune.db.reject_summary gives). Columns: stage, kind, count, example."""
    if by_reason.empty:
        return pd.DataFrame(columns=["stage", "kind", "count", "example"])
    df = by_reason.assign(kind=by_reason["reason"].map(reason_kind))
    out = (df.groupby(["stage", "kind"], sort=False)
             .agg(count=("count", "sum"), example=("reason", "first")).reset_index())
    out["example"] = out["example"].map(lambda t: t if len(t) <= 160 else t[:159] + "…")
    return out.sort_values(["count", "stage", "kind"], ascending=[False, True, True], ignore_index=True)
