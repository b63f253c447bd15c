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
