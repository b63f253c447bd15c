"""The compiled mask kernels (densprune.prune.masks) against a direct per-concept implementation."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.prune import masks


def _reference(sizes, quota, from_end, frame, dl_h, level, clip_h, clip_cut, skip, inv):
    """Per concept: the eligible frame positions in order, the first (last) quota of them kept."""
    n = int(sizes.sum())
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    keep_h = np.zeros(n, dtype=bool)
    for j in range(sizes.size):
        seg = np.arange(offsets[j], offsets[j + 1])
        h = frame[seg] if frame is not None else seg
        ok = dl_h[h] > level
        if clip_h is not None:
            ok &= clip_h[h] <= clip_cut
        ok &= ~np.isin(h, skip)
        chosen = h[ok]
        chosen = chosen[len(chosen) - quota[j]:] if from_end else chosen[:quota[j]]
        keep_h[chosen] = True
    return keep_h[inv]


@pytest.mark.parametrize("seed", range(6))
def test_kernels_equal_a_direct_implementation(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 30))
    sizes = rng.integers(0, 400, size=k)
    n = int(sizes.sum())
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    lo, hi = offsets[:-1], offsets[1:]
    order = rng.permutation(n)
    inv = np.empty(n, dtype=np.int32)
    inv[order] = np.arange(n)
    cl_h = np.repeat(np.arange(k, dtype=np.int16), sizes)
    dl_h = rng.integers(0, 5, size=n).astype(np.uint8)
    level = int(rng.integers(0, 3))
    with_clip = bool(rng.random() < 0.6)
    clip_h = rng.permutation(n).astype(np.int32) if with_clip else None
    clip_cut = int(rng.integers(0, max(n, 1)))
    skip = np.unique(rng.integers(0, max(n, 1), size=int(rng.integers(0, 50)))) if n else np.zeros(0, np.int64)
    randomised = bool(rng.random() < 0.4)
    frame = None
    if randomised:  # a random order inside every segment
        frame = np.concatenate([lo[j] + rng.permutation(sizes[j]) for j in range(k)]).astype(np.int64)
    from_end = bool(rng.random() < 0.5) and not randomised
    # quotas up to each concept's eligible count
    elig_h = (dl_h > level) & (True if clip_h is None else clip_h <= clip_cut) & ~np.isin(np.arange(n), skip)
    counts = np.add.reduceat(elig_h, lo) if n else np.zeros(k, dtype=np.int64)
    counts = np.where(sizes > 0, counts, 0)
    quota = np.array([rng.integers(0, c + 1) for c in counts], dtype=np.int64)

    in_frame = (lambda a: a) if frame is None else (lambda a: a[frame])  # the columns in the frame's order
    cuts = masks.frame_cuts(lo, hi, quota, from_end=from_end, frame=frame, dl_f=in_frame(dl_h), level=level,
                            clip_f=None if clip_h is None else in_frame(clip_h), clip_cut=clip_cut, skip=skip)
    assert ((cuts >= lo) & (cuts <= hi)).all()
    if frame is None:
        pos = inv
    else:
        fpos = np.empty(n, dtype=np.int32)
        fpos[frame] = np.arange(n)
        pos = fpos[inv]
    keep = masks.write_mask(pos, cl_h[inv], cuts, from_end=from_end, dl=dl_h[inv], level=level,
                            clip=None if clip_h is None else clip_h[inv], clip_cut=clip_cut)
    keep[order[skip]] = False  # what the caller does with the skipped (tagged) rows
    want = _reference(sizes, quota, from_end, frame, dl_h, level, clip_h, clip_cut, skip, inv)
    np.testing.assert_array_equal(keep, want)
    assert keep.sum() == quota.sum()


def test_a_mask_of_a_million_rows_on_every_core_equals_the_numpy_fill(monkeypatch):
    """Large enough that every thread gets work: the parallel pass agrees with selection.py's numpy path."""
    from densprune.prune.selection import PlanIndex, PlanParams

    monkeypatch.setattr(PlanIndex, "COMPILED_MASK_ROWS", 0)
    rng = np.random.default_rng(3)
    n, k = 1_000_000, 300
    clusters = rng.choice(k, size=n, p=(s := rng.lognormal(0, 1, k)) / s.sum())
    index = PlanIndex.build(clusters, rng.uniform(0.05, 0.9, n), rng.normal(size=(k, 8)), rng.random(n) > 0.05,
                            rng.beta(5, 1.5, n), rng.normal(0.3, 0.05, n))
    for p in (PlanParams(keep=0.3), PlanParams(keep=0.3, dedup_eps=0.05, clip_keep=0.5, within="easy"),
              PlanParams(method="random", keep=0.2, dedup_eps=0.1, seed=4)):
        fast, full = index.compute(p), index.compute(p, summary=False)
        np.testing.assert_array_equal(fast.keep, full.keep)
