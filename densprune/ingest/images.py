"""Image decoding with a pixel cap, RGB conversion onto white, and thumbnails.

The pixel cap is ``--max-pixels`` and nothing else: PIL's own decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``, 89.5M pixels by default) is ``max_pixels`` while a decode or probe runs
(in every process that decodes: DataLoader workers, Ray actors, the app), and an image over it gets
the ``--max-pixels`` reason whichever of the two checks saw it first. The embedding workers also
make it their process-wide limit (:func:`set_pil_pixel_limit`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings

import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 100_000_000  # reject decodes above this (a 10k x 10k image)
THUMB_SIZE = 128
REUSE_MAX_BYTES = 64_000  # a source image this small (and <= 2x the thumbnail size) is its own thumbnail


class ImageDecodeError(ValueError):
    """An image that cannot be used; the message is the reason recorded in the rejects table."""


def set_pil_pixel_limit(max_pixels: int) -> None:
    """Make ``max_pixels`` PIL's decompression-bomb limit in this process (for a worker process that
    only decodes for densprune; PIL warns above it and refuses twice it)."""
    if Image.MAX_IMAGE_PIXELS != max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


_LIMIT_LOCK = threading.RLock()


def _new_lock() -> None:  # a fork while another thread held the lock must not leave the child locked
    global _LIMIT_LOCK
    _LIMIT_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


@contextlib.contextmanager
def pil_pixel_limit(max_pixels: int):
    """PIL's decompression-bomb limit is ``max_pixels`` inside the block and what it was after it (one
    block at a time in a process, so that threads with other caps do not see each other's)."""
    with _LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _too_many(width: int, height: int, max_pixels: int) -> ImageDecodeError:
    return ImageDecodeError(f"{width}x{height} = {width * height:,} pixels exceeds --max-pixels {max_pixels:,}")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """``Image.open`` under the one pixel limit: an image over ``max_pixels`` raises ImageDecodeError with
    the --max-pixels reason (from its size, or from PIL's bomb check when that refused it first).
    Call it inside :func:`pil_pixel_limit`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked just below
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # more than twice PIL's limit (= max_pixels)
        m = _BOMB_PIXELS.search(str(exc))
        pixels = f"{int(m.group(1)):,}" if m else f"more than {2 * max_pixels:,}"
        raise ImageDecodeError(f"{pixels} pixels exceeds --max-pixels {max_pixels:,}") from exc
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise _too_many(width, height, max_pixels)
    return img


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, target: int = 512) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image, refusing more than ``max_pixels``.

    JPEGs are decoded at reduced size through ``draft`` when they are much larger than ``target``.
    Transparency is composited onto white.
    """
    if not data:
        raise ImageDecodeError("empty image file")
    try:
        with pil_pixel_limit(max_pixels), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a frame PIL checks later
            img = _open(data, max_pixels)
            width, height = img.size
            if img.format == "JPEG" and min(width, height) > 2 * target:
                img.draft("RGB", (target, target))
            img.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from exc
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    rgb = to_rgb(img)
    rgb.info["original_size"] = (width, height)
    return rgb


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency onto a white background."""
    if img.mode == "RGB":
        return img
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        return Image.fromarray((arr / hi * 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def probe_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, str, int, int]:
    """Read only the header of encoded image bytes: (format, mode, width, height), with the pixel cap.

    Raises ImageDecodeError with the reasons :func:`decode_image` gives for empty, unreadable, too
    large images and decompression bombs (nothing is decoded: a corrupt body is found when decoding).
    """
    if not data:
        raise ImageDecodeError("empty image file")
    try:
        with pil_pixel_limit(max_pixels), _open(data, max_pixels) as img:
            fmt, mode, (width, height) = img.format or "", img.mode, img.size
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from exc
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    return fmt, mode, width, height


def reusable_thumbnail(source: bytes, width: int, height: int, size: int = THUMB_SIZE) -> bool:
    """Whether encoded ``source`` bytes can serve as the thumbnail as they are: a JPEG or WebP whose
    longest side is at most twice ``size`` (sharp on high-density screens) and at most ``REUSE_MAX_BYTES``."""
    return (max(width, height) <= 2 * size and len(source) <= REUSE_MAX_BYTES
            and (source[:2] == b"\xff\xd8" or (source[:4] == b"RIFF" and source[8:12] == b"WEBP")))


def thumbnail_bytes(img: Image.Image, size: int = THUMB_SIZE, quality: int = 80, source: bytes | None = None) -> bytes:
    """Thumbnail of a decoded RGB image: longest side at most ``size`` px, JPEG bytes.

    ``source`` (the encoded original) is returned as is when :func:`reusable_thumbnail` allows it.
    Otherwise the image is shrunk by an integer box ``reduce`` then bilinear (``reducing_gap=1``) and
    encoded as JPEG (libjpeg-turbo): several times faster than a LANCZOS resize + WebP encode, for
    thumbnails ~1.7x larger.
    """
    if source is not None and reusable_thumbnail(source, *img.info.get("original_size", img.size), size=size):
        return source
    width, height = img.size
    scale = size / max(width, height)
    thumb = img
    if scale < 1:
        thumb = img.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR,
                           reducing_gap=1.0)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail_from_bytes(data: bytes, size: int = THUMB_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Thumbnail of encoded image bytes (the source bytes when reusable; JPEGs decoded at reduced size)."""
    img = decode_image(data, max_pixels, target=size)
    return thumbnail_bytes(img, size, source=data)
