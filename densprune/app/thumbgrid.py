"""Thumbnails for the app: read them from a workspace's thumbs.bin (or the source) and lay them out as HTML.

Thumbnails come from ``DIR/thumbs.bin`` (offsets checked against the file size). A row without one
(``--thumbnails sample`` or ``none``) is read from its source at ``samples.image_loc``, which only
precompute writes, and served only as a thumbnail re-encoded from a decoded image. Every caption is
HTML-escaped, so a caption can neither inject markup nor make the app serve other files. The grid
embeds the images as ``data:`` URIs: one response, no extra routes, nothing to clean up.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from densprune.cluster.labels import shorten
from densprune.ingest.images import ImageDecodeError, thumbnail_from_bytes
from densprune.ingest.media import image_mime
from densprune.ingest.sources import read_bytes

log = logging.getLogger(__name__)

THUMBS_NAME = "thumbs.bin"
MAX_THUMB_BYTES = 1 << 20  # a thumbnail is a few KB; anything bigger is a corrupt offset
MAX_SHOWN_CAPTION = 300  # characters of a caption shown under a tile or in its tooltip


def read_thumbs(workspace: str | os.PathLike, offsets: Sequence[int] | np.ndarray,
                sizes: Sequence[int] | np.ndarray, locs: Sequence[str] | None = None) -> list[bytes]:
    """The encoded thumbnails at ``offsets``/``sizes`` (samples.thumb_offset/thumb_size) of thumbs.bin.

    An entry with no thumbnail there (size 0) is made from its source when ``locs`` (samples.image_loc)
    is given. An entry outside the file (or absurdly large), or an unreadable source, comes back as
    ``b""`` instead of raising.
    """
    path = Path(workspace) / THUMBS_NAME
    total = path.stat().st_size if path.exists() else 0
    out: list[bytes] = []
    with open(path, "rb") if total else contextlib.nullcontext() as fh:  # no file: every span is out of range
        for i, (off, size) in enumerate(zip(offsets, sizes)):
            off, size = int(off), int(size)
            if size == 0 and locs is not None:
                out.append(source_thumbnail(locs[i]))
            elif off < 0 or size <= 0 or size > MAX_THUMB_BYTES or off + size > total:
                out.append(b"")
            else:
                fh.seek(off)
                out.append(fh.read(size))
    return out


def source_thumbnail(image_loc: str | None) -> bytes:
    """A thumbnail made from a sample's source image (``samples.image_loc``: the JSON of its location,
    a file, a tar member or a parquet row); ``b""`` when it cannot be read or decoded."""
    try:
        loc = tuple(json.loads(image_loc or "null") or ())
        return thumbnail_from_bytes(read_bytes(loc)) if loc else b""
    except (OSError, ValueError, TypeError, ImageDecodeError) as exc:  # ImageDecodeError is a ValueError
        log.debug("no thumbnail from %s: %s", image_loc, exc)
        return b""


def data_uri(data: bytes) -> str | None:
    mime = image_mime(data)
    return None if mime is None else f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class Tile:
    """One cell of a thumbnail grid."""

    image: bytes
    caption: str = ""
    note: str = ""  # a short line under the caption (distance, similarity, ...)
    tone: str = ""  # "", "kept" (green frame) or "dropped" (faded, red frame)
    url: str = ""  # where the original image is on the web (workspaces without thumbnails)
    size: str = ""  # its original size, "640×480"


def web_url(url: str) -> str | None:
    """``url`` when it is an http(s) address (the only kind the app links to), else None."""
    u = (url or "").strip()
    return u if u.lower().startswith(("http://", "https://")) else None


def missing_html(t: Tile) -> str:
    """The stand-in for a tile without a thumbnail: its size and, for an http(s) URL, a link that opens
    the image in the viewer's browser only when clicked (the app itself never fetches it)."""
    size = html.escape(t.size) if t.size else "no thumbnail"
    url = web_url(t.url)
    if url is None:
        text = html.escape(t.url or "")
        link = f'<div class="dp-url">{text}</div>' if text else ""
    else:
        href = html.escape(url, quote=True)
        link = (f'<a class="dp-url" href="{href}" target="_blank" rel="noopener noreferrer nofollow" '
                f'title="{href}">{html.escape(url)}</a>')
    return f'<div class="dp-miss"><div>{size}</div>{link}</div>'


_CSS = """<style>
.dp-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(%(px)dpx,1fr));gap:8px;margin:2px 0 10px 0}
.dp-tile{margin:0;border:1px solid rgba(128,128,128,.35);border-radius:6px;padding:4px;background:#fff;min-width:0}
.dp-tile img{display:block;width:100%%;height:%(px)dpx;object-fit:contain;background:#fff}
.dp-miss{height:%(px)dpx;display:flex;flex-direction:column;align-items:center;justify-content:center;color:#888;
 font-size:11px;gap:4px;background:#f6f6f6;min-width:0}
.dp-url{font-size:10px;max-width:100%%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding:0 3px}
.dp-tile figcaption{font-size:11px;line-height:1.25;color:#333;margin-top:3px;overflow:hidden;display:-webkit-box;
 -webkit-line-clamp:%(lines)d;-webkit-box-orient:vertical;word-break:break-word}
.dp-note{font-size:10px;color:#777;margin-top:1px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.dp-kept{border:2px solid #2e9d57}
.dp-dropped{border:2px solid #d1495b;opacity:.55}
</style>"""


def grid_html(tiles: Iterable[Tile], tile_px: int = 112, caption_lines: int = 2) -> str:
    """An HTML grid of thumbnails; captions (cut to MAX_SHOWN_CAPTION characters, also in the tooltip) and
    notes are escaped."""
    cells = []
    for t in tiles:
        cap = html.escape(shorten(t.caption, MAX_SHOWN_CAPTION), quote=True)
        uri = data_uri(t.image) if t.image else None
        img = f'<img src="{uri}" alt="{cap[:120]}" loading="lazy">' if uri else missing_html(t)
        cls = {"kept": " dp-kept", "dropped": " dp-dropped"}.get(t.tone, "")
        note = f'<div class="dp-note">{html.escape(t.note)}</div>' if t.note else ""
        cells.append(f'<figure class="dp-tile{cls}" title="{cap}">{img}'
                     f'<figcaption>{cap or "&nbsp;"}</figcaption>{note}</figure>')
    css = _CSS % {"px": int(tile_px), "lines": int(caption_lines)}
    return f'{css}<div class="dp-grid">{"".join(cells)}</div>'


_PAIR_CSS = """<style>
.dp-pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(%(w)dpx,1fr));gap:10px;margin:2px 0 10px 0}
.dp-pair{border:1px solid rgba(128,128,128,.35);border-radius:6px;padding:4px;background:#fff;min-width:0}
.dp-pair-imgs{display:flex;gap:4px}
.dp-pair-imgs img,.dp-pair-imgs .dp-miss{flex:1;min-width:0;height:%(px)dpx;object-fit:contain;background:#fff}
.dp-miss{display:flex;flex-direction:column;align-items:center;justify-content:center;color:#888;font-size:11px;
 gap:4px;background:#f6f6f6}
.dp-url{font-size:10px;max-width:100%%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding:0 3px}
.dp-pair-sim{font-size:11px;font-weight:600;color:#333;margin-top:3px}
.dp-pair-cap{font-size:10px;color:#666;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
</style>"""


def pairs_html(pairs: Iterable[tuple[Tile, Tile, str]], tile_px: int = 88) -> str:
    """Pairs of thumbnails side by side with a heading each (e.g. their similarity); text escaped."""
    cells = []
    for a, b, head in pairs:
        imgs = []
        for t in (a, b):
            uri = data_uri(t.image) if t.image else None
            cap = html.escape(shorten(t.caption, MAX_SHOWN_CAPTION), quote=True)
            imgs.append(f'<img src="{uri}" alt="{cap[:120]}" title="{cap}">' if uri else missing_html(t))
        caps = " | ".join(html.escape(shorten(t.caption, MAX_SHOWN_CAPTION)) for t in (a, b))
        cells.append(f'<div class="dp-pair"><div class="dp-pair-imgs">{"".join(imgs)}</div>'
                     f'<div class="dp-pair-sim">{html.escape(head)}</div>'
                     f'<div class="dp-pair-cap" title="{html.escape(caps, quote=True)}">{caps}</div></div>')
    css = _PAIR_CSS % {"px": int(tile_px), "w": int(2 * tile_px + 16)}
    return f'{css}<div class="dp-pairs">{"".join(cells)}</div>'
