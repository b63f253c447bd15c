"""``densprune precompute``: picks the path for SOURCE, from released embeddings
(pipeline/from_released.py) or from images (pipeline/from_images.py)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from densprune.ingest.released import ReleasedSource, detect_layout, open_released
from densprune.ingest.sources import SourceError
from densprune.pipeline.config import PrecomputeConfig

log = logging.getLogger(__name__)


def absolute_source(spec: str) -> str:
    """SOURCE as an absolute path (``demo`` as it is), so that every image location stored in the
    workspace names its file whatever the current directory of a later reader. Globs and brace
    patterns stay patterns (their directory part is made absolute); symlinks are not resolved."""
    if spec == "demo" or os.path.isabs(spec):
        return spec
    return os.path.abspath(spec)


def released_source(cfg: PrecomputeConfig) -> ReleasedSource | None:
    """The released-embeddings folder ``cfg.source`` (validated), or None when SOURCE is to be embedded."""
    layout = cfg.embeddings_layout
    if layout is None:
        layout = detect_layout(cfg.source)
        if layout is None:
            if cfg.embedding_key:
                raise SourceError(f"--embedding-key applies to released embeddings, and {cfg.source} is in neither "
                                  "released layout (clip-retrieval or datacomp)")
            return None
        log.info("%s holds released embeddings (%s layout): no image is decoded or embedded", cfg.source, layout)
    return open_released(cfg.source, layout, cfg.embedding_key)


def precompute(cfg: PrecomputeConfig) -> Path:
    """Build (or resume building) the workspace ``cfg.workspace`` from ``cfg.source``.

    SOURCE is made absolute first; then the released-embeddings path or the images path checks the
    inputs under the workspace's exclusive lock, and only then does ``--force`` remove the old build."""
    cfg = replace(cfg, source=absolute_source(cfg.source))
    released = released_source(cfg)
    if released is None and cfg.concept_vectors:
        raise SourceError(f"--concept-vectors applies to released embeddings, and {cfg.source} is images: use "
                          "--concept-embedder timm to embed them for the concepts")
    if released is not None and cfg.concept_embedder:
        raise SourceError(f"--concept-embedder embeds images, and {cfg.source} holds released embeddings (no "
                          "images to decode): give precomputed concept vectors with --concept-vectors FILE.npy")
    if released is not None:
        from densprune.pipeline.from_released import precompute_released

        return precompute_released(cfg, released)
    from densprune.pipeline.from_images import precompute_images

    return precompute_images(cfg)
