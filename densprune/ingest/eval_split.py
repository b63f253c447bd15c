"""The held-out evaluation split, chosen once at precompute time and never part of the pruning pool."""

from __future__ import annotations

import numpy as np
import pandas as pd


def choose_eval_split(top_category: np.ndarray, per_category: int, min_category: int, seed: int) -> np.ndarray:
    """Held-out evaluation rows, balanced over the top-level categories with enough images.

    top_category: (N,) strings or None -> (N,) bool, True for eval rows (``per_category`` per category).
    """
    is_eval = np.zeros(top_category.size, dtype=bool)
    if per_category <= 0:
        return is_eval
    rng = np.random.default_rng(seed)
    cats = pd.Series(top_category)
    for cat, rows in sorted(cats.groupby(cats, dropna=True).indices.items()):
        if cat and rows.size >= min_category:
            is_eval[rng.choice(rows, size=per_category, replace=False)] = True
    return is_eval


COPY_SIMS = (0.95, 0.99, 0.999)  # the similarities `densprune info` reports eval copies at
EVAL_COPY = "eval-copy"  # the split of a pool row that copies an eval image (decontaminated: never in the pool)


def caption_key(caption: object) -> str:
    """A caption compared for identity: lower case, whitespace collapsed ('' for none)."""
    return " ".join(str(caption).lower().split()) if isinstance(caption, str) else ""


def max_similarity_to(vectors: np.ndarray, rows: np.ndarray, targets: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """(len(rows),) float32: each row's highest cosine similarity to the ``targets`` rows of ``vectors``
    (N, d) (typically a memmap; read in blocks of ``block`` rows); -1 with no targets."""
    out = np.full(rows.size, -1.0, dtype=np.float32)
    if rows.size == 0 or targets.size == 0:
        return out
    t = np.asarray(vectors[np.sort(targets)], dtype=np.float32)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    for lo in range(0, rows.size, block):
        v = np.asarray(vectors[rows[lo:lo + block]], dtype=np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        out[lo:lo + block] = (v @ t.T).max(axis=1)
    return out


def eval_copies(vectors: np.ndarray, is_eval: np.ndarray, captions: list | np.ndarray, min_sim: float) -> np.ndarray:
    """(N,) bool: the non-eval rows that copy an eval row: image cosine similarity >= ``min_sim`` to any eval
    image, or the same caption (:func:`caption_key`, non-empty) as one. DataComp's practice: the pool is
    deduplicated against the evaluation set, so no pool image is within ``min_sim`` of an eval image."""
    if not -1.0 <= float(min_sim) <= 1.0:
        raise ValueError(f"a decontamination similarity is a cosine similarity in [-1, 1], got {min_sim}")
    is_eval = np.asarray(is_eval, dtype=bool)
    others = np.flatnonzero(~is_eval)
    out = np.zeros(is_eval.size, dtype=bool)
    if not is_eval.any():
        return out
    out[others] = max_similarity_to(vectors, others, np.flatnonzero(is_eval)) >= float(min_sim)
    keys = np.array([caption_key(c) for c in captions], dtype=object)
    eval_keys = {k for k in keys[is_eval] if k}
    out[others] |= np.array([k in eval_keys for k in keys[others]], dtype=bool)
    return out


def contamination(vectors: np.ndarray, split: np.ndarray, captions: list | np.ndarray,
                  sims: tuple[float, ...] = COPY_SIMS) -> dict:
    """How much the pool still copies the eval split (split (N,): 'pool', 'eval', 'eval-copy'): per
    similarity, the eval images with a pool image at least that similar and those pool images; the pool
    rows with an eval image's caption; the rows already set aside as eval copies."""
    split = np.asarray(split, dtype=object)
    ev, pool = np.flatnonzero(split == "eval"), np.flatnonzero(split == "pool")
    out = {"eval": int(ev.size), "pool": int(pool.size), "set_aside": int((split == EVAL_COPY).sum()),
           "by_similarity": [], "same_caption_pool_rows": 0}
    if ev.size == 0 or pool.size == 0:
        return out
    best_pool = max_similarity_to(vectors, pool, ev)
    best_eval = max_similarity_to(vectors, ev, pool)
    for s in sims:
        out["by_similarity"].append({"similarity": s, "eval_with_copy": int((best_eval >= s).sum()),
                                     "pool_copies": int((best_pool >= s).sum())})
    keys = np.array([caption_key(c) for c in captions], dtype=object)
    eval_keys = {k for k in keys[ev] if k}
    out["same_caption_pool_rows"] = int(sum(k in eval_keys for k in keys[pool]))
    return out
