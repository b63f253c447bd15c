"""Text from untrusted sources: captions decoded as UTF-8 with U+FFFD replacement (and flagged), names made storable.

A caption that was not valid UTF-8 keeps its readable parts, each undecodable byte sequence becomes
U+FFFD, and the row carries the flag :data:`INVALID_UTF8` in ``samples.caption_flag``. Names read
from the file system or a tar (which Python decodes with ``surrogateescape``) are stored with their
undecodable bytes as U+FFFD too; the sample's location keeps the real name, so it can still be read.
"""

from __future__ import annotations

import math

INVALID_UTF8 = "invalid UTF-8"  # samples.caption_flag: the caption was decoded with U+FFFD replacement


def decode_text(value: object) -> tuple[str, str | None]:
    """A cell of any type as text, and :data:`INVALID_UTF8` when it was not valid UTF-8 (else None).

    bytes are decoded as UTF-8 with replacement; a str holding lone surrogates (``surrogateescape``
    decoding, a JSON ``\\udcff`` escape) gets U+FFFD in their place; None and NaN are ""; any other
    value is ``str(value)``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return data.decode("utf-8", errors="replace"), INVALID_UTF8
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        return _replace_surrogates(text), INVALID_UTF8


def storable(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes of a file or member name) as U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _replace_surrogates(text)


def _replace_surrogates(text: str) -> str:
    """Escaped bytes (U+DC80..U+DCFF) decoded as UTF-8 with replacement; any other lone surrogate is U+FFFD."""
    data = text.encode("utf-8", errors="surrogateescape") if _only_escapes(text) else \
        text.encode("utf-8", errors="surrogatepass")
    return data.decode("utf-8", errors="replace")


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(ch) <= 0xDFFF or 0xDC80 <= ord(ch) <= 0xDCFF for ch in text)

