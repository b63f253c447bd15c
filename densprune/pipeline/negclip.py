"""``densprune negclip``: score every image-caption pair of a workspace by negCLIPLoss
(densprune.prune.negclip) and store the scores for the ``negclip`` plan method.

The scores go to ``DIR/embeddings/negclip.npy`` ((N,) float32, row order, written whole or not at all)
and their settings to meta ``negclip`` ({batch, draws, tau, seed, n}); the plan index of the workspace
is keyed by them, so the next plan builds an index that holds the new order.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from densprune import db
from densprune.prune.negclip import BATCH, DRAWS, TAU, neg_clip_loss
from densprune.workspace import image_vectors, negclip_scores, save_npy, text_vectors

log = logging.getLogger(__name__)

__all__ = ["score_workspace"]


def score_workspace(workspace: str | os.PathLike, *, batch: int = BATCH, draws: int = DRAWS, tau: float = TAU,
                    seed: int = 0, device: str = "cpu") -> dict:
    """Compute and store the workspace's negCLIPLoss scores; returns the meta entry written.

    Needs image and caption vectors made by one CLIP model (``embeddings/text.npy``: an open_clip
    embedder, or released embeddings with caption vectors). Holds the exclusive writer lock."""
    from densprune.workspace_lock import exclusive_lock

    ws = Path(workspace)
    if not db.is_complete(ws):
        raise db.WorkspaceNotFound(f"no workspace at {ws} (missing {db.DB_NAME}); build one with "
                                   "`densprune precompute`")
    if not text_vectors(ws).is_file():
        raise ValueError(f"{ws} has no caption vectors ({text_vectors(ws)}): negCLIPLoss needs image and caption "
                         "vectors of one CLIP model; precompute with --embedder openclip (the offline embedder "
                         "has none), or from released embeddings that include caption vectors")
    with exclusive_lock(ws, "densprune negclip"):
        image = np.load(image_vectors(ws), mmap_mode="r")
        text = np.load(text_vectors(ws), mmap_mode="r")
        if image.shape != text.shape:
            raise ValueError(f"{ws}: image vectors {image.shape} and caption vectors {text.shape} differ in shape; "
                             "rebuild the workspace")
        t0 = time.perf_counter()
        scores = neg_clip_loss(image, text, batch=batch, draws=draws, tau=tau, seed=seed, device=device)
        save_npy(negclip_scores(ws), scores, np.float32)
        entry = {"batch": int(min(batch, image.shape[0])), "draws": int(draws), "tau": float(tau), "seed": int(seed),
                 "n": int(image.shape[0])}
        db.set_meta(ws, "negclip", entry)
        log.info("negCLIPLoss of %d pairs in %.1f s", image.shape[0], time.perf_counter() - t0)
    return entry
