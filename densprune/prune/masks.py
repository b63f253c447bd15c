"""Materialising a plan's (N,) keep mask at memory speed: two compiled passes, no scatter or gather.

A quota plan (DBP, SSP, balanced, random) keeps, in every concept j, the first ``quota[j]`` eligible
members of the concept's segment of a frame: the hard order (farthest from the centre first; easy
plans keep the last ``quota[j]``) or a seeded random order. Both frames group the concepts in the same
segments ``[lo[j], hi[j])``. At the plan summary's filter levels (densprune.prune.plan_summary)
eligibility is row-local: in the pool and not a duplicate at dedup level b (``dl > b``), and, with a
CLIP level, a CLIP rank at most the level's cut. So the mask is:

1. :func:`frame_cuts`: per concept, walk its segment from the kept end until ``quota[j]`` eligible
   members are seen: the cut position (K,). The walk reads only the kept prefixes, in order, from
   frame-order copies of the filter columns (for a random frame, built once per seed).
2. :func:`write_mask`: in row order, ``keep[r] = eligible[r] and (pos[r] < cut[cluster[r]])`` (``>=``
   for easy), where ``pos[r]`` is the row's position in the frame. One streaming pass over row-order
   copies of the filter columns (a few bytes per row), writing the mask in order.

Tagged rows (never / always, densprune.prune.decisions) are not members of the method's share: the
walk skips their positions (``skip``, sorted), and the caller sets them afterwards (M-sized). The
older path, a cumsum over the frame, K binary searches and a scatter of the kept rows through the
order (random writes), stays in selection.py for the plans off the summary's levels.

The kernels run on every core (numba ``prange``). They are serialised by one lock: calls from the
app's session threads never launch parallel regions at the same time.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["frame_cuts", "write_mask"]

_LOCK = threading.Lock()
_KERNELS: dict[str, object] = {}


def _kernels() -> dict[str, object]:
    """The compiled kernels (numba imported and the kernels compiled, or loaded from its cache, on first use)."""
    if _KERNELS:
        return _KERNELS
    import numba as nb

    @nb.njit(parallel=True, cache=True, nogil=True)
    def cuts(lo, hi, quota, from_end, frame, use_frame, dl_f, b, clip_f, clip_cut, use_clip, skip, out):
        for j in nb.prange(lo.size):
            q = quota[j]
            n = 0
            a, z = lo[j], hi[j]
            # the tagged positions of this segment (sorted hard positions): a slice of `skip`
            s0 = np.searchsorted(skip, a)
            s1 = np.searchsorted(skip, z)
            steps = 0  # positions walked from the kept end (the segment's start, or its end for easy)
            t = s1 - 1 if from_end else s0  # in the hard order the walk meets the tags in order: a moving pointer
            while n < q and steps < z - a:
                p = z - 1 - steps if from_end else a + steps
                ok = (dl_f[p] > b) & ((not use_clip) or clip_f[p] <= clip_cut)  # frame order: a sequential read
                if ok and s1 > s0:
                    h = frame[p] if use_frame else p
                    if use_frame:  # a random frame visits them out of order: a binary search
                        k = np.searchsorted(skip[s0:s1], h)
                        ok = not (k < s1 - s0 and skip[s0 + k] == h)
                    elif from_end:
                        while t >= s0 and skip[t] > h:
                            t -= 1
                        ok = not (t >= s0 and skip[t] == h)
                    else:
                        while t < s1 and skip[t] < h:
                            t += 1
                        ok = not (t < s1 and skip[t] == h)
                n += ok
                steps += 1
            out[j] = z - steps if from_end else a + steps

    @nb.njit(parallel=True, cache=True, nogil=True)
    def rows(pos, cl, dl, b, clip, clip_cut, use_clip, cut, from_end, out):
        if use_clip:
            if from_end:
                for r in nb.prange(out.size):
                    out[r] = (pos[r] >= cut[cl[r]]) & (dl[r] > b) & (clip[r] <= clip_cut)
            else:
                for r in nb.prange(out.size):
                    out[r] = (pos[r] < cut[cl[r]]) & (dl[r] > b) & (clip[r] <= clip_cut)
        elif from_end:
            for r in nb.prange(out.size):
                out[r] = (pos[r] >= cut[cl[r]]) & (dl[r] > b)
        else:
            for r in nb.prange(out.size):
                out[r] = (pos[r] < cut[cl[r]]) & (dl[r] > b)

    _KERNELS.update(cuts=cuts, rows=rows)
    return _KERNELS


def _no_clip(clip: np.ndarray | None) -> tuple[np.ndarray, bool]:
    return (np.zeros(1, dtype=np.int32), False) if clip is None else (clip, True)


def frame_cuts(lo: np.ndarray, hi: np.ndarray, quota: np.ndarray, *, from_end: bool, frame: np.ndarray | None,
               dl_f: np.ndarray, level: int, clip_f: np.ndarray | None = None, clip_cut: int = 0,
               skip: np.ndarray | None = None) -> np.ndarray:
    """Per concept, where its kept part of the frame ends (starts, ``from_end``).

    Args:
        lo, hi: (K,) int64 segment bounds of every concept in the frame (hi - lo its members).
        quota: (K,) int64 eligible members to keep per concept (at most its eligible count).
        from_end: keep the last ``quota`` eligible of each segment (easy) instead of the first.
        frame: (N,) hard position at each frame position (a seeded random frame), or None: the frame
            is the hard order itself. Read only in segments with tagged rows (``skip``).
        dl_f: (N,) uint8 dedup level per frame position (plan_summary.dedup_levels, in the frame's
            order: for a random frame ``dl_h[frame]``): eligible at dedup level ``level`` iff
            ``dl_f > level`` (0 outside the pool). In frame order the walk reads it in sequence.
        clip_f: (N,) int CLIP rank per frame position, or None (no CLIP filter); eligible iff
            ``clip_f <= clip_cut``.
        skip: (M,) int64 sorted hard positions that are not eligible whatever their filters say
            (tagged rows), or None.

    Returns:
        (K,) int64: frame position p with the kept members in [lo, p) (or [p, hi) ``from_end``).
    """
    k = _kernels()
    out = np.empty(lo.size, dtype=np.int64)
    clip, use_clip = _no_clip(clip_f)
    skip = np.zeros(0, dtype=np.int64) if skip is None else np.ascontiguousarray(skip, dtype=np.int64)
    use_frame = frame is not None
    fr = np.asarray(frame, dtype=np.int64) if use_frame else np.zeros(1, dtype=np.int64)
    with _LOCK:
        k["cuts"](np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64), np.asarray(quota, dtype=np.int64),
                  bool(from_end), fr, use_frame, dl_f, int(level), clip, int(clip_cut), use_clip, skip, out)
    return out


def write_mask(pos: np.ndarray, cl: np.ndarray, cut: np.ndarray, *, from_end: bool, dl: np.ndarray, level: int,
               clip: np.ndarray | None = None, clip_cut: int = 0) -> np.ndarray:
    """The (N,) bool keep mask in row order from the cuts of :func:`frame_cuts`.

    Args:
        pos: (N,) int frame position of every row (its hard position, or its position in the seed's frame).
        cl: (N,) int16/int32 concept of every row.
        cut: (K,) int64 cuts from :func:`frame_cuts` on the same frame.
        from_end: as for :func:`frame_cuts`.
        dl: (N,) uint8 dedup level of every row (row order); eligible iff ``dl > level``.
        clip: (N,) int CLIP rank of every row (row order), or None; eligible iff ``clip <= clip_cut``.

    Returns:
        (N,) bool, a new array: kept rows (tagged rows not yet applied).
    """
    k = _kernels()
    out = np.empty(pos.size, dtype=bool)
    clip_a, use_clip = _no_clip(clip)
    with _LOCK:
        k["rows"](pos, cl, dl, int(level), clip_a, int(clip_cut), use_clip, np.asarray(cut, dtype=np.int64),
                  bool(from_end), out)
    return out
