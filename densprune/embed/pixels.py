"""Pixels for the model: uint8 images -> resized, cropped, normalised batches, on the CPU or the GPU.

Workers hand the main process uint8 pixels (4x smaller than float32) or, for the GPU decoding
path, the encoded JPEG bytes themselves; normalisation (and there, decoding and resizing) happens
on the model's device. :class:`PixelSpec` is what an open_clip preprocess does to a PIL image,
reproduced on tensors: resize (shortest side, antialiased), centre crop, scale to [0, 1], normalise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

DEVICE_DECODE_MAX_PIXELS = 16_000_000  # larger JPEGs take the CPU path (PIL decodes them at reduced size)


@dataclass(frozen=True, slots=True)
class PixelSpec:
    """The tensor side of an open_clip image preprocess (``model.visual.preprocess_cfg``)."""

    size: int  # output side, square
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # "bicubic" | "bilinear"
    resize_mode: str = "shortest"  # "shortest" (resize + centre crop) | "squash"


def spec_from_preprocess_cfg(cfg: dict) -> PixelSpec | None:
    """A PixelSpec from open_clip's ``preprocess_cfg``, or None when it asks for something not reproduced here."""
    size = cfg.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            return None
        size = size[0]
    interpolation, resize_mode = cfg.get("interpolation", "bicubic"), cfg.get("resize_mode", "shortest")
    if interpolation not in ("bicubic", "bilinear") or resize_mode not in ("shortest", "squash"):
        return None
    return PixelSpec(int(size), tuple(cfg["mean"]), tuple(cfg["std"]), interpolation, resize_mode)


def normalize(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (n, 3, S, S) -> float32 (n, 3, S, S): ``/255`` then ``(x - mean) / std``, the same float
    operations in the same order as torchvision's ToTensor + Normalize (bit-identical on the CPU)."""
    x = pixels.to(torch.float32).div_(255)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def resize_crop(images: list[torch.Tensor], spec: PixelSpec) -> torch.Tensor:
    """Decoded images, each uint8 (3, h_i, w_i) on one device -> uint8 (n, 3, S, S) on that device.

    Images of the same shape are resized together (one call for a whole img2dataset batch).
    Resizing is antialiased, as PIL's is, and rounded back to uint8 as the PIL path does.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if not images:
        raise ValueError("resize_crop needs at least one image")
    mode = InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR
    out = torch.empty((len(images), 3, spec.size, spec.size), dtype=torch.uint8, device=images[0].device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[-2:]), []).append(i)
    for (h, w), members in groups.items():
        batch = torch.stack([images[i] for i in members])
        if spec.resize_mode == "squash":
            batch = F.resize(batch, [spec.size, spec.size], interpolation=mode, antialias=True)
        else:
            if min(h, w) != spec.size:
                batch = F.resize(batch, [spec.size], interpolation=mode, antialias=True)
            batch = F.center_crop(batch, [spec.size, spec.size])
        out[torch.as_tensor(members, device=out.device)] = batch
    return out


def decode_jpegs(data: torch.Tensor, offsets: np.ndarray,
                 device: torch.device) -> tuple[list[torch.Tensor | None], list[str]]:
    """Decode JPEGs stored back to back on ``device`` (nvJPEG on CUDA, libjpeg-turbo on the CPU).

    Args:
        data: (total,) uint8, the encoded files one after the other (CPU, pinned for CUDA).
        offsets: (j + 1,) int64, file i is ``data[offsets[i]:offsets[i + 1]]``.
    Returns:
        (j,) RGB uint8 (3, h, w) tensors on ``device``, None where decoding failed, and (j,) reasons
        ("" where it worked). The whole batch is tried at once; when that raises, file by file.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    files = [data[int(a):int(b)] for a, b in zip(offsets[:-1], offsets[1:])]
    try:
        return list(decode_jpeg(files, mode=ImageReadMode.RGB, device=device)), [""] * len(files)
    except RuntimeError as exc:
        log.debug("batched JPEG decode failed (%s); decoding file by file", exc)
    images: list[torch.Tensor | None] = []
    reasons: list[str] = []
    for f in files:
        try:
            images.append(decode_jpeg(f, mode=ImageReadMode.RGB, device=device))
            reasons.append("")
        except RuntimeError as exc:
            images.append(None)
            reasons.append(f"cannot decode image on {device.type}: {str(exc).splitlines()[-1]}")
    return images, reasons


def device_decodable(fmt: str, mode: str, width: int, height: int, data: bytes) -> bool:
    """Whether a JPEG (header already read) goes to the device decoder: RGB or grey, not huge, and
    complete (ends with the EOI marker; PIL rejects truncated files, so they take the PIL path)."""
    return (fmt == "JPEG" and mode in ("RGB", "L") and width * height <= DEVICE_DECODE_MAX_PIXELS
            and data[-2:] == b"\xff\xd9")
