"""Per-concept summaries of a plan index: every number a plan shows, at a cost that does not grow with N.

A DBP or SSP plan (and the random baseline) needs, per concept j, only two numbers of the rows that
survive its filters: how many are eligible and the sum of their distances to the centroid (d_intra of
what remains). The filters take few values in practice (the Budget page's sliders), so the summary
holds both numbers for every filter level, built once with the plan index:

    counts[b, c, j]  eligible members of concept j under dedup level b and CLIP level c  (int64)
    qsum[b, c, j]    the sum of their fixed-point distances                                (int64)

Level b = 0 is "no dedup", b >= 1 the SemDeDup eps of :data:`EPS_GRID`; level c = 0 is "no CLIP
filter", c >= 1 the CLIP top fractions of :data:`CLIP_GRID` (of what dedup left, as the plan does).
A plan on those levels is then K-sized arithmetic: the budget, the complexity, the quotas and the
kept counts of :meth:`PlanIndex.compute <densprune.prune.selection.PlanIndex.compute>` follow exactly.

Exact, not close: distances enter d_intra as integers (``round(dist * 2**31)``, resolution 4.7e-10),
so the summary's sums and the full pass's sums are the same integers in any summation order, and
both engines see the same d_intra bit for bit. What a summary cannot answer (an eps or CLIP fraction
off the grid, a CLIP score threshold, the clip-score and dedup methods, whose kept counts depend on
a global order of the rows) is answered by the full pass, and :meth:`PlanSummary.level` says so.

Size: (1 + len(EPS_GRID)) x (1 + len(CLIP_GRID)) x K x 16 bytes, at most 62 x 21 x K x 16 bytes
(10.4 MB at K = 500, 104 MB at K = 5,000 with CLIP scores; 62 x K x 16 without), whatever N is.
Build: a histogram of (concept, dedup level) per CLIP cut, accumulated along the global CLIP order:
two passes over the rows and a running count per dedup level (PlanSummary.build).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from densprune.prune.semdedup import dup_threshold

log = logging.getLogger(__name__)

__all__ = ["CLIP_GRID", "EPS_GRID", "Q_SCALE", "PlanSummary", "budget_count", "dedup_levels", "fixed_point",
           "intra_from_sums", "segment_sums"]

EPS_GRID: tuple[float, ...] = tuple(round(i * 0.005, 3) for i in range(61))  # 0 .. 0.3: the Budget page's slider
CLIP_GRID: tuple[float, ...] = tuple(i / 100 for i in range(5, 101, 5))  # 5% .. 100%: the Budget page's slider
Q_SCALE = 2**31  # fixed-point distances: dist in [0, 2] -> [0, 2**32]; a sum over 2**31 rows fits int64


def is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v: object) -> bool:
    return (is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(float(v))


def budget_count(keep: float | int, remaining: int) -> int:
    """Samples to keep: an int is a count; a float in [0, 1] a fraction of ``remaining`` (half rounds
    up). For a plan, ``remaining`` is what survives dedup and the CLIP filter (the paper's convention)."""
    if not (is_int(remaining) and remaining >= 0):
        raise ValueError(f"remaining must be an integer >= 0, got {remaining!r}")
    if is_int(keep):
        if keep < 0:
            raise ValueError(f"keep as a count must be >= 0, got {keep}")
        return int(keep)
    if is_real(keep) and 0.0 <= float(keep) <= 1.0:
        return min(int(math.floor(float(keep) * remaining + 0.5)), int(remaining))
    raise ValueError(f"keep must be a float fraction in [0, 1] or an int count >= 0, got {keep!r}")


def fixed_point(dist: np.ndarray) -> np.ndarray:
    """(N,) float distances -> (N,) int64 ``round(dist * Q_SCALE)``: sums of these are exact in any order."""
    return np.rint(np.asarray(dist, dtype=np.float64) * Q_SCALE).astype(np.int64)


def intra_from_sums(qsum: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(K,) d_intra from fixed-point distance sums (K,) int64 and member counts (K,): NaN where none.
    The one formula both the summary and the full pass use, so they agree bit for bit."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (qsum / Q_SCALE) / np.maximum(counts, 1), np.nan)


def segment_sums(values: np.ndarray, starts: np.ndarray, nonempty: np.ndarray) -> np.ndarray:
    """(K,) int64 sums of ``values`` (N,) over the cluster segments of the hard order (rows grouped by
    cluster): ``starts`` are the first positions of the non-empty clusters, ``nonempty`` (K,) bool."""
    out = np.zeros(nonempty.size, dtype=np.int64)
    if starts.size:
        out[nonempty] = np.add.reduceat(values, starts, dtype=np.int64)
    return out


def _exact_weighted_bincount(codes: np.ndarray, q: np.ndarray, size: int) -> np.ndarray:
    """(size,) int64 sums of ``q`` (int64 in [0, 2**33)) per code, exact: bincount's float64 weights in
    two parts, the low 17 bits and the rest (each bin's partial sums stay far below 2**53)."""
    lo = np.bincount(codes, weights=(q & 0x1FFFF).astype(np.float64), minlength=size)
    hi = np.bincount(codes, weights=(q >> 17).astype(np.float64), minlength=size)
    return np.rint(hi).astype(np.int64) * (1 << 17) + np.rint(lo).astype(np.int64)


def dedup_levels(pool_h: np.ndarray, dup_h: np.ndarray | None) -> np.ndarray:
    """(N,) uint8 dedup level ``dl`` of every row: eligible at the summary's dedup level b iff b < dl
    (0 for rows outside the pool; 1 + the number of :data:`EPS_GRID` eps at which the row is not a
    duplicate, since the thresholds only fall as eps grows).

    Args:
        pool_h: (N,) bool pool membership.
        dup_h: (N,) float SemDeDup max similarity, compared in its own dtype as the full pass's
            ``dup_h > threshold`` is; None: every pool row is eligible at level 0 only (dl = 1).
    """
    dl = np.asarray(pool_h, dtype=np.uint8)
    if dup_h is not None:  # eligible at b >= 1 iff dup <= threshold(eps_b): a prefix of the levels
        dup = np.asarray(dup_h)
        thr_desc = np.asarray(dup_threshold(np.asarray(EPS_GRID))).astype(dup.dtype)
        n_ok = thr_desc.size - np.searchsorted(thr_desc[::-1], dup, side="left")
        dl = dl * (1 + n_ok).astype(np.uint8)
    return dl


@dataclass(frozen=True, slots=True, eq=False)
class PlanSummary:
    """The per-concept summaries of one plan index (see the module docstring)."""

    eps: np.ndarray  # (B,) float64 dedup eps per level; level 0 (NaN) = no dedup; B = 1 without dedup data
    clip: np.ndarray  # (C,) float64 CLIP top fraction per level; level 0 (NaN) = no filter; C = 1 without scores
    counts: np.ndarray  # (B, C, K) int64 eligible members
    qsum: np.ndarray  # (B, C, K) int64 sums of their fixed-point distances
    clip_cut: np.ndarray  # (B, C) int64: at CLIP level c a row is in the filter iff its CLIP rank <= this
    #                       (-1: none; level 0: every row)

    STORED = ("eps", "clip", "counts", "qsum", "clip_cut")

    @property
    def n_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays().values())

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.STORED}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], n_clusters: int) -> "PlanSummary":
        """The summary :meth:`arrays` described; shapes that do not fit ``n_clusters`` are a ValueError."""
        missing = set(cls.STORED) - set(a)
        if missing:
            raise ValueError(f"a stored plan summary needs the arrays {sorted(missing)}")
        shape = (np.asarray(a["eps"]).size, np.asarray(a["clip"]).size, n_clusters)
        if np.asarray(a["clip_cut"]).shape != shape[:2]:
            raise ValueError(f"stored plan summary: clip_cut has shape {np.asarray(a['clip_cut']).shape}, "
                             f"expected {shape[:2]}")
        for name in ("counts", "qsum"):
            if np.asarray(a[name]).shape != shape:
                raise ValueError(f"stored plan summary: {name} has shape {np.asarray(a[name]).shape}, expected {shape}")
        return cls(*(np.asarray(a[name]) for name in cls.STORED))

    @classmethod
    def build(cls, *, pool_h: np.ndarray, dist_h: np.ndarray, sizes: np.ndarray, dup_h: np.ndarray | None,
              clip_rank: np.ndarray | None) -> "PlanSummary":
        """Summarise a plan index's rows (all in hard order, grouped by cluster).

        Every row gets its dedup level ``dl``: it is eligible at dedup level b iff b < dl (0 for rows
        outside the pool; the dedup thresholds only fall as eps grows). Without CLIP levels the
        summary is one bincount of (cluster, dl). With them, the rows are walked in the global CLIP
        order (where a row's position is its CLIP rank), the cut of every (b, c) found from the
        running count of rows eligible at b, and a (cluster, dl) histogram accumulated up to each cut
        in turn: two passes over the rows plus one cumulative count per dedup level.

        Args:
            pool_h: (N,) bool pool membership.
            dist_h: (N,) float distance to the centroid.
            sizes: (K,) int members per cluster (the segments of the hard order).
            dup_h: (N,) float SemDeDup max similarity, or None (no dedup levels).
            clip_rank: (N,) int rank in the global CLIP order (0 = best score), or None (no CLIP levels).
        """
        k = sizes.size
        eps = np.array([np.nan] + (list(EPS_GRID) if dup_h is not None else []))
        clip = np.array([np.nan] + (list(CLIP_GRID) if clip_rank is not None else []))
        n_b, n_c = eps.size, clip.size
        dl = dedup_levels(pool_h, dup_h)
        cl = np.repeat(np.arange(k, dtype=np.int64), sizes)
        q = fixed_point(dist_h)
        width = n_b + 1  # dl in [0, n_b]
        counts = np.zeros((n_b, n_c, k), dtype=np.int64)
        qsum = np.zeros_like(counts)
        clip_cut = np.full((n_b, n_c), np.iinfo(np.int64).max, dtype=np.int64)

        def record(hist: np.ndarray, qhist: np.ndarray, b: int, c: int) -> None:
            # eligible at b: dl > b, i.e. the histogram columns b+1 .. n_b
            counts[b, c] = hist[:, b + 1:].sum(axis=1)
            qsum[b, c] = qhist[:, b + 1:].sum(axis=1)

        if n_c == 1:
            codes = cl * width + dl
            hist = np.bincount(codes, minlength=k * width).reshape(k, width)
            qhist = _exact_weighted_bincount(codes, q, k * width).reshape(k, width)
            for b in range(n_b):
                record(hist, qhist, b, 0)
        else:
            by_clip = np.empty(clip_rank.size, dtype=np.intp)
            by_clip[np.asarray(clip_rank, dtype=np.intp)] = np.arange(clip_rank.size)  # rank -> hard position
            codes = (cl * width + dl)[by_clip]  # in the CLIP order
            q_c, dl_c = q[by_clip], dl[by_clip]
            del by_clip
            n_dedup = np.bincount(dl, minlength=width)[::-1].cumsum()[::-1][1:]  # (B,) eligible at each b
            queries = []  # (cut, b, c): at CLIP level c of dedup level b, rows of rank <= cut are in the filter
            for b in range(n_b):
                tops = np.array([budget_count(float(f), int(n_dedup[b])) for f in clip[1:]], dtype=np.int64)
                running = np.cumsum(dl_c > b)
                cuts = np.where(tops > 0, np.searchsorted(running, tops, side="left"), -1)
                clip_cut[b, 1:] = cuts
                queries += [(int(cut), b, c + 1) for c, cut in enumerate(cuts)]
            hist = np.zeros((k, width), dtype=np.int64)
            qhist = np.zeros_like(hist)
            done = 0  # rows of the CLIP order already in the histograms
            for cut, b, c in sorted(queries):
                if cut + 1 > done:
                    seg = codes[done:cut + 1]
                    hist += np.bincount(seg, minlength=k * width).reshape(k, width)
                    qhist += _exact_weighted_bincount(seg, q_c[done:cut + 1], k * width).reshape(k, width)
                    done = cut + 1
                record(hist, qhist, b, c)
            seg = codes[done:]
            hist += np.bincount(seg, minlength=k * width).reshape(k, width)
            qhist += _exact_weighted_bincount(seg, q_c[done:], k * width).reshape(k, width)
            for b in range(n_b):
                record(hist, qhist, b, 0)
            del dl_c
        log.info("plan summary: %d dedup x %d CLIP levels x %d concepts (%.1f MB)", n_b, n_c, k,
                 (counts.nbytes + qsum.nbytes) / 1e6)
        return cls(eps=eps, clip=clip, counts=counts, qsum=qsum, clip_cut=clip_cut)

    def level(self, dedup_eps: float | None, clip_keep: float | None,
              clip_threshold: float | None = None) -> tuple[int, int] | None:
        """The (dedup, CLIP) level of a plan's filters, or None when the summary cannot answer it exactly
        (a CLIP threshold, or an eps / CLIP fraction that is not one of the levels)."""
        if clip_threshold is not None:
            return None
        b = 0 if dedup_eps is None else _find(self.eps, dedup_eps)
        c = 0 if clip_keep is None else _find(self.clip, clip_keep)
        return None if b is None or c is None else (b, c)


def _find(levels: np.ndarray, value: float) -> int | None:
    hit = np.flatnonzero(levels[1:] == float(value))
    return int(hit[0]) + 1 if hit.size else None
