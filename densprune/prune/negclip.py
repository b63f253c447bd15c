"""negCLIPLoss (Wang et al. 2024, "CLIPLoss and Norm-Based Data Selection Methods for Multimodal
Contrastive Learning"): the CLIP score with the contrastive loss's normalisation taken out.

A teacher CLIP model's score ``s_ii = x_i . y_i`` (image i, its caption) ranks pairs whose image and
caption match *and* pairs that are just generically similar to everything (a bland caption scores well
against its image and against every other image). negCLIPLoss subtracts what the CLIP loss subtracts,
over random batches B the pair is drawn into:

    negCLIPLoss_i = mean over draws of  s_ii - (tau / 2) * [ logsumexp_{j in B} (s_ij / tau)
                                                             + logsumexp_{j in B} (s_ji / tau) ]

with ``tau`` the teacher's temperature (0.01 for OpenAI's CLIP models), so it is tau times minus the
CLIP loss of the pair in that batch. Wang et al. use batches of 32,768 and 10 draws; keeping the top
fraction by negCLIPLoss replaces the CLIP score filter.

Every draw is a random partition of the rows into batches of ``batch`` (the last one filled up with
rows of the others, which only serve as negatives there), so every row is scored in every draw against
``batch - 1`` others. Pure: vectors in, (N,) scores out; the block products run in torch (CUDA when
asked: the cost is N x batch x d per draw).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["BATCH", "DRAWS", "TAU", "neg_clip_loss"]

BATCH = 32_768  # Wang et al.'s batch size
DRAWS = 10  # Wang et al.'s number of random batches per sample
TAU = 0.01  # the OpenAI CLIP teacher's temperature


def neg_clip_loss(image: np.ndarray, text: np.ndarray, *, batch: int = BATCH, draws: int = DRAWS, tau: float = TAU,
                  seed: int = 0, device: str = "cpu", block_rows: int | None = None) -> np.ndarray:
    """negCLIPLoss of every image-caption pair.

    Args:
        image: (N, d) L2-normalised image vectors (array or memmap).
        text: (N, d) L2-normalised caption vectors of the same rows.
        batch: rows per random batch (clipped to N).
        draws: random partitions averaged.
        tau: the teacher's temperature (> 0).
        seed: seeds the partitions.
        device: torch device for the products.
    Returns:
        (N,) float64 scores (higher: a better pair, as the CLIP score).
    """
    import torch

    n = image.shape[0]
    if text.shape != image.shape:
        raise ValueError(f"image {image.shape} and text {text.shape} vectors must have the same shape")
    if not (tau > 0 and batch >= 1 and draws >= 1):
        raise ValueError(f"need tau > 0, batch >= 1, draws >= 1; got tau={tau}, batch={batch}, draws={draws}")
    if n == 0:
        return np.zeros(0)
    b = min(int(batch), n)
    rng = np.random.default_rng(seed)
    total = np.zeros(n, dtype=np.float64)
    dev = torch.device(device)
    for draw in range(draws):
        perm = rng.permutation(n)
        n_batches = -(-n // b)
        pad = n_batches * b - n
        if pad:  # the last batch filled up with rows drawn from the others: negatives only, not scored twice
            perm = np.concatenate([perm, rng.choice(perm[:n - (n % b)], size=pad, replace=False)])
        for k in range(n_batches):
            idx = perm[k * b:(k + 1) * b]
            scored = b if k < n_batches - 1 or not pad else b - pad
            x = torch.as_tensor(np.asarray(image[idx], dtype=np.float32), device=dev)
            y = torch.as_tensor(np.asarray(text[idx], dtype=np.float32), device=dev)
            s = (x @ y.T).double() / tau  # (b, b)
            own = torch.diagonal(s)
            row = torch.logsumexp(s, dim=1)  # image i against every caption of the batch
            col = torch.logsumexp(s, dim=0)  # caption i against every image
            val = (tau * (own - (row + col) / 2)).cpu().numpy()
            total[idx[:scored]] += val[:scored]
        log.debug("negCLIPLoss: draw %d of %d", draw + 1, draws)
    return total / draws
