"""Row-wise vector helpers shared by every stage (embeddings, centroids, evaluation features)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12, dtype: type = np.float32) -> np.ndarray:
    """Row-wise L2 normalisation. x: (n, d) -> (n, d) of ``dtype``; zero rows stay zero."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
