"""Names that become file and folder names (plans, runs): one rule, checked at every entry point."""

from __future__ import annotations

import re

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


def validate_name(name: str, what: str = "name", max_len: int = 96) -> str:
    """``name`` unchanged when it is a safe file name (letters, digits, '_', '.', '-', starting with a
    letter or digit, at most ``max_len`` characters), else ValueError naming ``what``."""
    if not isinstance(name, str) or len(name) > max_len or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '_', '.', '-', starting with a letter or "
                         f"digit (at most {max_len} characters)")
    return name
