#!/usr/bin/env python3
"""Build the bundled ``openclipart`` demo dataset for densprune.

The source is the Open Clip Art Library 0.18 as packaged by Debian
(``openclipart-png`` and ``openclipart-svg``, version ``1:0.18+dfsg-19``).
The PNG package provides the images; the SVG package provides the metadata,
stored as Dublin Core RDF inside each SVG (``dc:title``, ``dc:description``
and the ``rdf:li`` keywords of ``dc:subject``).  The category of an image is
the folder path relative to the clipart root (e.g. ``animals/birds``).

The output is a small bundle of Parquet shards holding WebP thumbnails plus
captions and metadata, together with ``categories.json`` (counts) and
``skipped.json`` (images that could not be decoded, with the reason).

The caption is what describes the image, ``"<title>: <keywords>. <description>"``, computed by
:func:`demo_caption` from the raw fields, which stay in the table (``title``, ``description``,
``keywords``, ``creator``, ``key``): collection titles ("Part of the Flat Icon Collection (...)",
"gramastar", "Lemon SVG theme") and credits ("Clipart by Nicu Buculei - x") give way to the file
name in words; author names, dates, urls, e-mail addresses, file formats and catalogue keywords
("hash", "icons", "theme") are removed; a description is kept when it says something.
``--recaption`` recomputes the caption column of an existing bundle from its raw fields (no
download, images untouched).

Usage::

    # use already extracted packages (the roots may point either at the
    # clipart root, e.g. .../usr/share/openclipart/png, or at the dpkg -x dir)
    python data/build_demo.py --png-root /tmp/oca/png --svg-root /tmp/oca/svg \
        --out data/openclipart

    # download the Debian packages with apt-get and extract them to a temp dir
    python data/build_demo.py --out data/openclipart

    # recompute only the caption column from the bundled raw fields (after changing demo_caption)
    python data/build_demo.py --recaption --out data/openclipart

Requirements: Python >= 3.9, Pillow (with WebP support), pyarrow.  Optional
but recommended: ``rsvg-convert`` (Debian package ``librsvg2-bin``), used to
render the few gigantic images (hundreds of megapixels) from their SVG at
thumbnail size instead of decoding the full PNG.  Download mode needs
``apt-get`` and ``dpkg`` (Debian/Ubuntu).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

LOG = logging.getLogger("build_demo")

DEBIAN_PACKAGES = ("openclipart-png", "openclipart-svg")
DEBIAN_VERSION = "1:0.18+dfsg-19"
PNG_SUBDIR = Path("usr/share/openclipart/png")
SVG_SUBDIR = Path("usr/share/openclipart/svg")

# Hard limit for PIL.  Images above --max-decode-pixels are rendered from
# their SVG; only if that fails is a full decode attempted, and PIL refuses
# (DecompressionBombError) anything above this bound, so memory stays bounded
# (250 Mpx RGBA is ~1 GB).
PIL_MAX_IMAGE_PIXELS = 250_000_000
DEFAULT_MAX_DECODE_PIXELS = 50_000_000

DEFAULT_THUMB_SIZE = 160
DEFAULT_WEBP_QUALITY = 90
WEBP_METHOD = 6
DEFAULT_ROWS_PER_SHARD = 2000
CAPTION_MAX_CHARS = 250
DESCRIPTION_MAX_CHARS = 160
RSVG_TIMEOUT_S = 120

NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "cc": "http://web.resource.org/cc/",
    "svg": "http://www.w3.org/2000/svg",
}
DC_TITLE = f"{{{NS['dc']}}}title"
DC_DESCRIPTION = f"{{{NS['dc']}}}description"
DC_SUBJECT = f"{{{NS['dc']}}}subject"
DC_CREATOR = f"{{{NS['dc']}}}creator"
RDF_RDF = f"{{{NS['rdf']}}}RDF"
RDF_LI = f"{{{NS['rdf']}}}li"
SVG_METADATA = f"{{{NS['svg']}}}metadata"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("key", pa.string()),
        ("image", pa.binary()),
        ("image_format", pa.string()),
        ("caption", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("keywords", pa.string()),
        ("creator", pa.string()),
        ("category", pa.string()),
        ("top_category", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)


@dataclass(frozen=True)
class Task:
    """One source image to process."""

    rel_png: str  # e.g. "animals/birds/foo.png" (POSIX separators)
    png_path: str
    svg_path: Optional[str]
    width: int
    height: int


@dataclass(frozen=True)
class Settings:
    """Settings shared by all worker processes."""

    thumb_size: int
    webp_quality: int
    max_decode_pixels: int
    rsvg: Optional[str]


# --------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------

_WS_RE = re.compile(r"\s+")
# Some 0.18 SVGs carry a stringified Perl reference instead of a description.
_JUNK_RE = re.compile(r"^HASH\(0x[0-9a-fA-F]+\)$")


def collapse_ws(text: str) -> str:
    """Collapse runs of whitespace into single spaces and strip the ends."""
    return _WS_RE.sub(" ", text).strip()


def truncate_words(text: str, limit: int) -> str:
    """Shorten ``text`` to at most ``limit`` characters at a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "\u2026"


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.casefold())


# --------------------------------------------------------------------------
# Captions: what describes the image (the rule is demo_caption below)
# --------------------------------------------------------------------------

# Titles that name a collection, a theme or a tool rather than the image ("gramastar" is the
# generator of the 1,375 star renders; "AIGA" the organisation of the 243 symbol signs).
_COLLECTION_RE = re.compile(
    r"\b(collection|theme|themes|iconset|icon set|icons|cliparts?|clip art|submission|sibmission|"
    r"gramastar|aiga)\b", re.I)
# "Clipart by Nicu Buculei - segmented": a credit, then the file name.
_CREDIT_PREFIX_RE = re.compile(r"^\s*(?:clip\s*art|image|drawing|picture)s?\s+by\s+[^-]+?\s+-\s+(?P<rest>.+)$", re.I)
_URL_RE = re.compile(r"(?:https?://|ftp://|www\.)\S+|\b[\w.-]+\.(?:org|com|net|de|fr|es|it|edu|gov)(?:/\S*)?\b",
                     re.I)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*"
_DATE_RES = (
    re.compile(rf"\b{_DAY}\.?,?\s+{_MONTH}\.?\s+\d{{1,2}}"
               rf"(?:\s+\d{{1,2}}:\d{{2}}(?::\d{{2}})?)?(?:\s+\d{{4}})?\b", re.I),
    re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", re.I),
    re.compile(rf"\b\d{{1,2}}\s+{_MONTH}\.?,?\s+\d{{4}}\b", re.I),
    re.compile(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"),
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"),
    re.compile(r"\b(?:19|20)\d{2}\b"),
)
_FORMAT_RE = re.compile(r"\b(?:svg|eps|png|jpe?g|gif|pdf|xcf|ai|wmf|bmp|tiff?)\b|\.(?:svg|eps|png|jpe?g|gif|pdf)\b",
                        re.I)
# Phrases that say where a file came from, not what it shows (whole descriptions or title parts).
_PROVENANCE_RE = re.compile(r"\b(?:converted|created|made|drawn|traced|uploaded|contact|data|derived)\s+"
                            r"(?:from|by|with)\b|\bbased on\b|^\s*(?:contact|source)\s*:|\bpart of\b", re.I)
# Keywords that are catalogue plumbing, not content ("hash" is a Perl artefact of the 0.18 export).
DROP_KEYWORDS = frozenset({
    "hash", "icons", "theme", "lemon theme icon", "unsorted", "mapsym", "networksym", "appicon", "mimetypes",
    "mime types", "magick", "special", "signs and symbols", "united nations member", "subnational", "clipart",
    "clip art", "svg", "png", "eps", "openclipart", "inkscape", "aiga",
})


@functools.lru_cache(maxsize=8)
def _full_names(authors: tuple[str, ...]) -> tuple[str, ...]:
    """The names of two words or more among ``authors``, longest first ("Nicu Buculei" before "Nicu")."""
    names = {collapse_ws(a) for a in authors}
    return tuple(sorted((n for n in names if len(n.split()) >= 2), key=lambda n: (-len(n), n)))


@functools.lru_cache(maxsize=2048)
def _names_re(names: tuple[str, ...]) -> re.Pattern:
    """One pattern for all ``names`` (longest first), with an optional "by " and "'s"."""
    alts = "|".join(re.escape(n) for n in names)
    return re.compile(rf"(?<!\w)(?:by\s+)?(?:{alts})(?:'s|s'|s)?(?!\w)", re.I)


def _scrub(text: str, names: tuple[tuple[str, ...], ...]) -> str:
    """Remove urls, e-mail addresses, dates, file formats and the author ``names`` (groups of names,
    each longest first) from ``text``."""
    text = _URL_RE.sub(" ", _EMAIL_RE.sub(" ", text))
    for rx in _DATE_RES:
        text = rx.sub(" ", text)
    for group in names:
        if group:
            text = _names_re(group).sub(" ", text)
    text = re.sub(r"\b0x[0-9a-f]+\b", " ", text, flags=re.I)  # Perl addresses ("hash_0x89c79")
    text = _FORMAT_RE.sub(" ", text)
    text = re.sub(r"[\(\[\{]\s*[,;:.\-]*\s*[\)\]\}]", " ", text)  # brackets left empty
    text = re.sub(r"\s+([,;:.!?])", r"\1", collapse_ws(text))
    text = re.sub(r"([,;:.\-])(?:\s*[,;:.\-])+", r"\1", text)
    return text.strip(" ,;:-_/")


def _name_tokens(creator: str) -> set[str]:
    return {t for t in re.findall(r"[^\W\d_]+", creator.casefold()) if len(t) >= 2}


def _file_words(name: str) -> list[str]:
    """``aiga_ground_transportation1`` -> [aiga, ground, transportation]: split at non-letters, digits
    cut off both ends of words; tokens that are numbers or codes (``05pt02step``) dropped."""
    tokens = (re.sub(r"^\d+(?=[^\W\d_]{2})|(?<=[^\W\d_]{2})\d+$", "", t) for t in re.split(r"[\W_]+", name))
    return [t for t in tokens if len(t) >= 2 and not any(ch.isdigit() for ch in t)]


def _stem_words(key: str, creator: str, names: tuple[tuple[str, ...], ...] = ()) -> str:
    """The file name in words, without its trailing number, the author abbreviation before it (Open
    Clip Art names files ``<title>_<author prefix>_<nn>``), author ``names``, credits and collection names."""
    raw = [t for t in re.split(r"[\W_]+", key.rsplit("/", 1)[-1]) if t]
    while raw and raw[-1].isdigit():
        raw.pop()
    own = _name_tokens(creator)
    while len(raw) > 1 and any(len(raw[-1]) >= 3 and n.startswith(raw[-1].casefold()) for n in own):
        raw.pop()
    words = " ".join(t for t in _file_words("_".join(raw)) if not _COLLECTION_RE.fullmatch(t))
    return collapse_ws(re.sub(r"^by\b", " ", _scrub(words, names)))


def _clean_title(title: str, key: str, creator: str, names: tuple[tuple[str, ...], ...]) -> str:
    spaced = title.replace("_", " ")
    if (not title.strip() or _CREDIT_PREFIX_RE.match(title) or _COLLECTION_RE.search(spaced)
            or re.search(r"\bpart of\b", spaced, re.I)):
        return _stem_words(key, creator, names)
    if " " not in title.strip() and "_" in title:  # a file name: "pink_cake", "smiley111"
        spaced = " ".join(_file_words(title))
    spaced = re.sub(r"\b([^\W\d_]{3,})\d+\b", r"\1", spaced)  # "Aircraft3" -> "Aircraft"
    return _scrub(spaced, names)


def _clean_keywords(keywords: str, creator: str, names: tuple[tuple[str, ...], ...], title: str) -> list[str]:
    name_words = _name_tokens(creator)
    seen = set(re.findall(r"[^\W\d_]+", title.casefold()))
    out = []
    for raw in keywords.split(","):
        kw = collapse_ws(_scrub(raw.replace("_", " "), names)).casefold()
        words = re.findall(r"[^\W\d_]+", kw)
        if (not words or kw in DROP_KEYWORDS or all(w in name_words for w in words)
                or (len(words) == 1 and words[0] in seen)):
            continue
        seen.update(words)
        out.append(kw)
    return list(dict.fromkeys(out))


def _clean_description(description: str, names: tuple[tuple[str, ...], ...], title: str) -> str:
    if not description or _JUNK_RE.match(description) or _PROVENANCE_RE.search(description) \
            or _COLLECTION_RE.search(description):
        return ""
    text = _scrub(description, names)
    if len(re.findall(r"[^\W\d_]{2,}", text)) == 0 or len(text) > DESCRIPTION_MAX_CHARS:
        return ""
    if _norm(text) in _norm(title) or _norm(title) == _norm(text):
        return ""
    return text


def caption_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set every row's ``caption`` with :func:`demo_caption` from its raw fields (title, description,
    keywords, key, creator); the creators of all rows are the author names removed everywhere."""
    authors = tuple(sorted({r.get("creator") or "" for r in rows} - {""}))
    for r in rows:
        r["caption"] = demo_caption(r["title"], r["description"], r["keywords"], r["key"],
                                    r.get("creator") or "", authors)
    return rows


def recaption(out: Path) -> int:
    """Recompute the ``caption`` column of the bundle in ``out`` from its raw fields, in place.

    The shards are rewritten with the same writer settings, so a bundle built by :func:`build`
    comes back byte-identical. Returns the number of captions that changed.
    """
    paths = sorted(out.glob("shard-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no shard-*.parquet in {out}")
    tables = [pq.read_table(p) for p in paths]
    missing = set(SCHEMA.names) - set(tables[0].column_names)
    if missing:
        raise ValueError(f"{paths[0]} lacks columns {sorted(missing)}: rebuild the bundle from the "
                         "Debian packages (python data/build_demo.py --out ...)")
    rows = [r for t in tables for r in t.select(SCHEMA.names).to_pylist()]
    before = [r["caption"] for r in rows]
    caption_rows(rows)
    changed = sum(a != r["caption"] for a, r in zip(before, rows))
    per = [t.num_rows for t in tables]
    starts = [sum(per[:i]) for i in range(len(per))]
    for path, start, n in zip(paths, starts, per):
        _write_shard(rows[start:start + n], path)
    LOG.info("recaptioned %d rows in %d shards of %s: %d captions changed", len(rows), len(paths), out, changed)
    return changed


def demo_caption(title: str, description: str, keywords: str, key: str, creator: str = "",
                 authors: Iterable[str] = ()) -> str:
    """The demo's caption of one image, from what describes it: ``"<title>: <keywords>. <description>"``.

    - title: the ``dc:title`` without urls, e-mail
      addresses, dates, file formats and author names (``creator``, and every name of two words or
      more in ``authors``, the bundle's creators; with a "by" before or an "'s" after).
      A title that names a collection, theme or
      tool ("Part of the Flat Icon Collection (...)", "Lemon SVG theme", "gramastar", "AIGA_Symbol_Signs"),
      a credit ("Clipart by Nicu Buculei - segmented", often naming another file of the series) or is
      empty is replaced by the file name in words, less its number and author abbreviation
      (``computer/icons/flat-theme/action/editcopy`` gives "editcopy").
    - keywords: the ``dc:subject`` keywords, underscores as spaces, without catalogue plumbing
      (:data:`DROP_KEYWORDS`), numbers, author names and one-word repeats of the title.
    - description: kept when it says something: at most ``DESCRIPTION_MAX_CHARS`` characters after the
      same scrubbing, not a provenance note ("EPS converted from http://aiga.org", "Part of Hotel Icons
      Collection", an e-mail address), not a repeat of the title.

    Pure: the same fields always give the same caption, capped at ``CAPTION_MAX_CHARS`` characters.
    """
    title = collapse_ws(title or "")
    creator = collapse_ws(creator or "")
    names = ((creator,) if len(creator) >= 2 else (), _full_names(tuple(authors)))
    head = collapse_ws(_clean_title(title, key, creator, names))
    kws = _clean_keywords(keywords or "", creator, names, head)
    desc = _clean_description(collapse_ws(description or ""), names, head)
    parts = [head] if head else []
    if kws:
        parts = [(head + ": " if head else "") + ", ".join(kws)]
    caption = ". ".join(p.rstrip(" .") for p in parts + ([desc] if desc else []))
    if not caption:
        caption = _stem_words(key, creator, names) or key.rsplit("/", 1)[-1]
    caption = caption[:1].upper() + caption[1:]
    return truncate_words(collapse_ws(caption), CAPTION_MAX_CHARS)


# --------------------------------------------------------------------------
# SVG metadata
# --------------------------------------------------------------------------


def _text(elem: ET.Element) -> str:
    return collapse_ws("".join(elem.itertext()))


def _keywords_from_subject(subject: ET.Element) -> list[str]:
    items = [_text(li) for li in subject.iter(RDF_LI)]
    if not items:  # plain-text subject, e.g. "a, b, c"
        items = re.split(r"[,;]", _text(subject))
    return [k for k in (collapse_ws(i) for i in items) if k]


def _metadata_from_rdf(rdf: ET.Element) -> dict[str, Any]:
    """Extract title/description/keywords from an ``rdf:RDF`` element.

    The work itself is the first child of ``rdf:RDF`` that carries a
    ``dc:title`` (usually ``cc:Work``); the ``dc:title`` elements nested in
    ``cc:Agent`` (creator, publisher, rights) are deliberately ignored.
    """
    title = description = creator = ""
    keywords: list[str] = []
    for work in rdf:
        t = work.find(DC_TITLE)
        d = work.find(DC_DESCRIPTION)
        s = work.find(DC_SUBJECT)
        if t is None and d is None and s is None:
            continue
        title = _text(t) if t is not None else ""
        description = _text(d) if d is not None else ""
        keywords = _keywords_from_subject(s) if s is not None else []
        c = work.find(DC_CREATOR)
        creator = _text(c) if c is not None else ""
        break
    return {"title": title, "description": description, "keywords": keywords, "creator": creator}


_RE_TITLE = re.compile(r"<cc:Work\b.*?<dc:title>(.*?)</dc:title>", re.S)
_RE_DESC = re.compile(r"<cc:Work\b.*?<dc:description>(.*?)</dc:description>", re.S)
_RE_SUBJECT = re.compile(r"<dc:subject>(.*?)</dc:subject>", re.S)
_RE_CREATOR = re.compile(r"<dc:creator>.*?<dc:title>(.*?)</dc:title>", re.S)
_RE_LI = re.compile(r"<rdf:li>(.*?)</rdf:li>", re.S)
_RE_TAG = re.compile(r"<[^>]+>")


def _unescape(text: str) -> str:
    from html import unescape

    return collapse_ws(unescape(_RE_TAG.sub(" ", text)))


def _metadata_regex(path: str) -> dict[str, Any]:
    """Fallback metadata extraction for SVG files that are not valid XML."""
    with open(path, "rb") as fh:
        raw = fh.read(2_000_000).decode("utf-8", errors="replace")
    m = re.search(r"<rdf:RDF\b.*?</rdf:RDF>", raw, re.S)
    block = m.group(0) if m else ""
    title = _RE_TITLE.search(block)
    desc = _RE_DESC.search(block)
    subj = _RE_SUBJECT.search(block)
    creator = _RE_CREATOR.search(block)
    keywords = [_unescape(k) for k in _RE_LI.findall(subj.group(1))] if subj else []
    return {
        "title": _unescape(title.group(1)) if title else "",
        "description": _unescape(desc.group(1)) if desc else "",
        "keywords": [k for k in keywords if k],
        "creator": _unescape(creator.group(1)) if creator else "",
    }


def read_svg_metadata(path: Optional[str]) -> tuple[dict[str, Any], Optional[str]]:
    """Read the Dublin Core metadata from an SVG file.

    Returns the metadata dict and a warning string (or ``None``).  The parse
    stops at the end of the first ``rdf:RDF`` element, so large drawings are
    not parsed completely.
    """
    empty: dict[str, Any] = {"title": "", "description": "", "keywords": [], "creator": ""}
    if path is None:
        return empty, "no matching SVG"
    try:
        for _event, elem in ET.iterparse(path, events=("end",)):
            if elem.tag == RDF_RDF:
                return _metadata_from_rdf(elem), None
        return empty, "SVG has no rdf:RDF metadata"
    except (ET.ParseError, UnicodeError, ValueError) as exc:
        try:
            return _metadata_regex(path), f"SVG not well-formed ({exc}); regex fallback"
        except OSError as exc2:
            return empty, f"cannot read SVG: {exc2}"
    except OSError as exc:
        return empty, f"cannot read SVG: {exc}"


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def png_header_size(path: str) -> tuple[int, int]:
    """Return ``(width, height)`` from the IHDR chunk without decoding."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError("not a PNG file (bad signature or IHDR)")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def thumb_size(width: int, height: int, limit: int) -> tuple[int, int]:
    """Thumbnail size with the longest side at most ``limit`` (no upscaling)."""
    scale = min(1.0, limit / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def flatten_to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode to RGB, compositing transparency onto white."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = im.convert("RGBA")
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")
    return im.convert("RGB")


def decode_png_thumbnail(path: str, limit: int) -> Image.Image:
    """Decode a PNG with Pillow and return an RGB thumbnail."""
    with Image.open(path) as im:
        im.load()
        if "transparency" in im.info or im.mode in ("LA", "PA", "P"):
            im = im.convert("RGBA")
        elif im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGB") if im.mode in ("1", "L", "CMYK") else im
        im.thumbnail((limit, limit), Image.Resampling.LANCZOS)
        return flatten_to_rgb(im)


def render_svg_thumbnail(
    rsvg: str, svg_path: str, size: tuple[int, int]
) -> Image.Image:
    """Render an SVG with ``rsvg-convert`` at 2x ``size`` and downsample."""
    w2, h2 = size[0] * 2, size[1] * 2
    proc = subprocess.run(
        [rsvg, "--format=png", f"--width={w2}", f"--height={h2}", svg_path],
        capture_output=True,
        timeout=RSVG_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"rsvg-convert failed: {err[-1] if err else proc.returncode}")
    with Image.open(io.BytesIO(proc.stdout)) as im:
        im = im.convert("RGBA")
        im = im.resize(size, Image.Resampling.LANCZOS)
        return flatten_to_rgb(im)


def encode_webp(im: Image.Image, quality: int) -> bytes:
    """Encode an RGB image as lossy WebP with fixed, deterministic settings."""
    buf = io.BytesIO()
    im.save(buf, format="WEBP", quality=quality, method=WEBP_METHOD)
    return buf.getvalue()


# --------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------

_SETTINGS: Optional[Settings] = None


def _init_worker(settings: Settings) -> None:
    global _SETTINGS
    _SETTINGS = settings
    Image.MAX_IMAGE_PIXELS = PIL_MAX_IMAGE_PIXELS


def process_task(task: Task) -> dict[str, Any]:
    """Process one image: metadata, thumbnail, WebP.  Never raises."""
    settings = _SETTINGS
    assert settings is not None, "worker not initialised"
    rel = task.rel_png
    key = rel[: -len(".png")] if rel.lower().endswith(".png") else rel
    category = key.rsplit("/", 1)[0] if "/" in key else ""
    result: dict[str, Any] = {"key": key, "warnings": [], "method": None}

    meta, warning = read_svg_metadata(task.svg_path)
    if warning:
        result["warnings"].append(warning)

    pixels = task.width * task.height
    size = thumb_size(task.width, task.height, settings.thumb_size)
    im: Optional[Image.Image] = None
    errors: list[str] = []
    if pixels > settings.max_decode_pixels and settings.rsvg and task.svg_path:
        try:
            im = render_svg_thumbnail(settings.rsvg, task.svg_path, size)
            result["method"] = "svg"
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"SVG render: {exc}")
    if im is None:
        try:
            im = decode_png_thumbnail(task.png_path, settings.thumb_size)
            result["method"] = "png"
        except Image.DecompressionBombError as exc:
            errors.append(f"PNG decode refused ({task.width}x{task.height} px): {exc}")
        except Exception as exc:  # noqa: BLE001 - any decoder failure => skip
            errors.append(f"PNG decode: {type(exc).__name__}: {exc}")
    if im is None:
        result["error"] = "; ".join(errors) or "unknown error"
        return result
    if errors:
        result["warnings"].extend(errors)

    title = meta["title"]
    description = meta["description"]
    if _JUNK_RE.match(description):
        description = ""
    if _JUNK_RE.match(title):
        title = ""
    keywords = ", ".join(dict.fromkeys(meta["keywords"]))
    result["row"] = {
        "uid": hashlib.md5(rel.encode("utf-8")).hexdigest(),
        "key": key,
        "image": encode_webp(im, settings.webp_quality),
        "image_format": "webp",
        "caption": "",  # set by caption_rows() once every row's creator is known
        "title": title,
        "description": description,
        "keywords": keywords,
        "creator": meta["creator"],
        "category": category,
        "top_category": category.split("/", 1)[0],
        "width": task.width,
        "height": task.height,
    }
    return result


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def resolve_root(path: Path, subdir: Path) -> Path:
    """Accept either the clipart root or a ``dpkg -x`` extraction dir."""
    if (path / subdir).is_dir():
        return path / subdir
    if path.is_dir():
        return path
    raise FileNotFoundError(f"not a directory: {path}")


def download_and_extract(workdir: Path, version: str) -> tuple[Path, Path]:
    """Download the Debian packages with apt-get and extract them with dpkg."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"download mode needs {tool!r}; pass --png-root/--svg-root")
    specs = [f"{p}={version}" if version else p for p in DEBIAN_PACKAGES]
    LOG.info("downloading %s into %s", " ".join(specs), workdir)
    subprocess.run(["apt-get", "download", *specs], cwd=workdir, check=True)
    roots = []
    for pkg in DEBIAN_PACKAGES:
        debs = sorted(workdir.glob(f"{pkg}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download produced no {pkg} .deb")
        target = workdir / pkg
        target.mkdir()
        got = subprocess.run(
            ["dpkg-deb", "-f", str(debs[-1]), "Version"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        LOG.info("extracting %s (version %s)", debs[-1].name, got)
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(target)], check=True)
        roots.append(target)
    return (
        resolve_root(roots[0], PNG_SUBDIR),
        resolve_root(roots[1], SVG_SUBDIR),
    )


def collect_tasks(png_root: Path, svg_root: Path) -> list[Task]:
    """List all PNGs (including symlinked duplicates) sorted by relative path."""
    tasks: list[Task] = []
    for dirpath, dirnames, filenames in os.walk(png_root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(".png"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(png_root).as_posix()
            svg = svg_root / (rel[: -len(".png")] + ".svg")
            try:
                width, height = png_header_size(str(path))
            except (OSError, ValueError) as exc:
                LOG.warning("bad PNG header %s: %s", rel, exc)
                width = height = 0
            tasks.append(
                Task(
                    rel_png=rel,
                    png_path=str(path),
                    svg_path=str(svg) if svg.exists() else None,
                    width=width,
                    height=height,
                )
            )
    tasks.sort(key=lambda t: t.rel_png)
    return tasks


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def write_shards(rows: list[dict[str, Any]], out: Path, rows_per_shard: int) -> list[Path]:
    """Write rows (already sorted) into evenly sized Parquet shards."""
    n_shards = max(1, round(len(rows) / rows_per_shard))
    per = math.ceil(len(rows) / n_shards) if rows else 0
    paths = []
    for i in range(n_shards):
        path = out / f"shard-{i:05d}.parquet"
        _write_shard(rows[i * per : (i + 1) * per], path)
        paths.append(path)
    return paths


def _write_shard(chunk: list[dict[str, Any]], path: Path) -> None:
    """One Parquet shard with fixed settings (zstd 9, one row group), so rebuilds are byte-identical."""
    pq.write_table(
        pa.Table.from_pylist(chunk, schema=SCHEMA),
        path,
        compression="zstd",
        compression_level=9,
        row_group_size=len(chunk) or 1,
        write_statistics=[c for c in SCHEMA.names if c != "image"],
    )


def write_json(path: Path, obj: Any) -> None:
    """Write JSON deterministically (sorted keys, UTF-8, trailing newline)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")


def build(
    png_root: Path,
    svg_root: Path,
    out: Path,
    settings: Settings,
    rows_per_shard: int,
    workers: int,
) -> int:
    """Run the whole build.  Returns the number of rows written."""
    start = time.monotonic()
    tasks = collect_tasks(png_root, svg_root)
    LOG.info("found %d PNG files under %s", len(tasks), png_root)
    if not tasks:
        raise RuntimeError("no PNG files found; wrong --png-root?")
    n_no_svg = sum(t.svg_path is None for t in tasks)
    if n_no_svg:
        LOG.warning("%d PNGs have no matching SVG (metadata from file name)", n_no_svg)

    # Unreadable headers are skipped up front.
    results: list[dict[str, Any]] = []
    good: list[Task] = []
    for t in tasks:
        if t.width <= 0 or t.height <= 0:
            results.append({"key": t.rel_png[:-4], "error": "unreadable PNG header",
                            "warnings": []})
        else:
            good.append(t)
    # Biggest images first so the slow ones do not end up alone at the tail.
    good.sort(key=lambda t: (-(t.width * t.height), t.rel_png))

    ctx = multiprocessing.get_context("spawn")
    done = 0
    with ctx.Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
        for res in pool.imap_unordered(process_task, good, chunksize=8):
            results.append(res)
            done += 1
            if done % 1000 == 0:
                LOG.info("processed %d/%d images (%.0fs)", done, len(good),
                         time.monotonic() - start)

    rows = caption_rows(sorted((r["row"] for r in results if "row" in r), key=lambda r: r["key"]))
    skipped = sorted(
        ({"key": r["key"], "reason": r["error"]} for r in results if "error" in r),
        key=lambda s: s["key"],
    )
    for s in skipped:
        LOG.warning("skipped %s: %s", s["key"], s["reason"])
    for r in sorted(results, key=lambda r: r["key"]):
        if r.get("method") == "svg":
            LOG.info("rendered from SVG (huge PNG): %s", r["key"])
        for w in r.get("warnings", []):
            LOG.debug("%s: %s", r["key"], w)
    n_warn = Counter(w.split(" (")[0].split(":")[0] for r in results for w in r["warnings"])
    for what, n in sorted(n_warn.items()):
        LOG.info("metadata/decode note: %s (%d files)", what, n)

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.parquet"):
        old.unlink()
    shards = write_shards(rows, out, rows_per_shard)

    cat = Counter(r["category"] for r in rows)
    top = Counter(r["top_category"] for r in rows)
    write_json(
        out / "categories.json",
        {
            "total_rows": len(rows),
            "num_categories": len(cat),
            "num_top_categories": len(top),
            "top_categories": dict(sorted(top.items())),
            "categories": dict(sorted(cat.items())),
        },
    )
    write_json(out / "skipped.json", skipped)

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    LOG.info(
        "wrote %d rows in %d shards to %s (%.2f MB total), skipped %d, "
        "%d rendered from SVG, in %.1fs",
        len(rows), len(shards), out, total / 1e6, len(skipped),
        sum(r.get("method") == "svg" for r in results), time.monotonic() - start,
    )
    return len(rows)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--png-root", type=Path,
                   help="extracted openclipart-png (dpkg -x dir or .../openclipart/png); "
                        "omit both roots to download the Debian packages")
    p.add_argument("--svg-root", type=Path,
                   help="extracted openclipart-svg (dpkg -x dir or .../openclipart/svg)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "openclipart",
                   help="output folder")
    p.add_argument("--package-version", default=DEBIAN_VERSION,
                   help="Debian version to download ('' for the candidate version)")
    p.add_argument("--workdir", type=Path,
                   help="download/extract here instead of a temporary folder (kept)")
    p.add_argument("--thumb-size", type=int, default=DEFAULT_THUMB_SIZE,
                   help="longest thumbnail side in pixels")
    p.add_argument("--webp-quality", type=int, default=DEFAULT_WEBP_QUALITY)
    p.add_argument("--rows-per-shard", type=int, default=DEFAULT_ROWS_PER_SHARD)
    p.add_argument("--max-decode-pixels", type=int, default=DEFAULT_MAX_DECODE_PIXELS,
                   help="PNGs with more pixels are rendered from the SVG with rsvg-convert")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--recaption", action="store_true",
                   help="only recompute the caption column of the bundle in --out from its raw fields "
                        "(title, description, keywords, key, creator); no download, images untouched")
    p.add_argument("--log-file", type=Path, help="also write the build log here")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    if args.recaption and (args.png_root or args.svg_root):
        p.error("--recaption works on the bundle in --out alone; drop --png-root/--svg-root")
    if (args.png_root is None) != (args.svg_root is None):
        p.error("give both --png-root and --svg-root, or neither (download mode)")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=handlers,
    )
    if args.recaption:
        recaption(args.out.resolve())
        return 0
    Image.MAX_IMAGE_PIXELS = PIL_MAX_IMAGE_PIXELS
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        LOG.warning("rsvg-convert not found (apt-get install librsvg2-bin); huge PNGs "
                    "will be decoded with Pillow if under %d px, else skipped",
                    PIL_MAX_IMAGE_PIXELS)
    settings = Settings(
        thumb_size=args.thumb_size,
        webp_quality=args.webp_quality,
        max_decode_pixels=args.max_decode_pixels,
        rsvg=rsvg,
    )

    def run(png_root: Path, svg_root: Path) -> int:
        build(png_root, svg_root, args.out.resolve(), settings,
              args.rows_per_shard, args.workers)
        return 0

    if args.png_root is not None:
        return run(resolve_root(args.png_root, PNG_SUBDIR),
                   resolve_root(args.svg_root, SVG_SUBDIR))
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(*download_and_extract(args.workdir.resolve(), args.package_version))
    with tempfile.TemporaryDirectory(prefix="openclipart-") as tmp:
        return run(*download_and_extract(Path(tmp), args.package_version))


if __name__ == "__main__":
    sys.exit(main())
