"""What a DBP plan's complexity weighting does, in numbers computed from K-sized arrays (no rows).

DBP shares the budget by P = softmax(C / tau) over the concepts. Whether that is *complexity*
weighting or, in effect, equal shares per concept depends on tau against the spread of C: with C in
0.0004-0.06 (a learned embedder) tau = 0.1 gives a nearly flat P, with C in 0.1-1 (the offline
embedder) the same tau is sharp. So every plan reports:

- ``effective_concepts``: exp(H(P)), the number of equally weighted concepts that P is worth (the
  count of concepts with eligible images when P is flat, 1 when one concept takes everything);
- ``share_ratio``: max P_j / min P_j among those concepts;
- ``jaccard_balanced``: the Jaccard overlap of the kept set with *equal quotas per concept* (the
  budget water-filled: every concept the same count, capped at its eligible images) taking the same
  members inside each concept. Both keep a prefix of each concept's order (hardest first, easiest
  first, or the seeded random order), so the overlap of concept j is min(kept_j, equal_j) and the
  Jaccard is sum(min) / sum(max): exact, from the quotas alone. Not defined with decisions in force
  (forced and excluded rows break the prefixes) or for methods without per-concept quotas.

``relative_temperature`` gives tau as a multiple of the spread (standard deviation) of C over the
concepts with eligible images, so that "tau = 0.5 spreads" means the same sharpness on any embedder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from densprune.prune.quotas import balanced_quotas, complexity_weights

QUOTA_METHODS = ("dbp", "ssp", "balanced", "hierarchical")  # per-concept quotas filled in each concept's order

__all__ = ["WeightDiagnostics", "balanced_quotas", "plan_diagnostics", "relative_temperature", "saved_plan_diagnostics",
           "weight_diagnostics"]


@dataclass(frozen=True, slots=True)
class WeightDiagnostics:
    effective_concepts: float | None  # exp(H(P)); None for methods without complexity weights
    concepts: int  # concepts with eligible images
    share_ratio: float | None  # max P / min P among them
    jaccard_balanced: float | None  # kept set vs equal quotas per concept (same within order)

    def as_dict(self) -> dict:
        return {"effective_concepts": self.effective_concepts, "concepts": self.concepts,
                "share_ratio": self.share_ratio, "jaccard_balanced": self.jaccard_balanced}

    def sentence(self) -> str:
        """'P is worth 87.8 of the 89 concepts (max/min share 1.8); the kept set is 93% the same as equal
        quotas per concept (Jaccard)'."""
        parts = []
        if self.effective_concepts is not None:
            parts.append(f"P is worth {self.effective_concepts:.1f} of the {self.concepts} concepts with eligible "
                         f"images (max/min share {self.share_ratio:.3g})")
        if self.jaccard_balanced is not None:
            parts.append(f"the kept set is {self.jaccard_balanced:.0%} the same as equal quotas per concept "
                         "(Jaccard)")
        return "; ".join(parts)


def weight_diagnostics(complexity: np.ndarray, eligible: np.ndarray, kept: np.ndarray, temperature: float | None,
                       prefixes: bool = True) -> WeightDiagnostics:
    """The numbers of the module docstring for one plan: ``complexity``, ``eligible``, ``kept`` (K,) as the
    plan measured them, ``temperature`` its tau (None: no complexity weights, e.g. SSP), ``prefixes``
    whether its kept members are prefixes of each concept's order (False with decisions in force or for
    methods without per-concept quotas: no Jaccard)."""
    e = np.asarray(eligible, dtype=np.int64)
    live = e > 0
    n = int(live.sum())
    eff = ratio = None
    if temperature is not None and n:
        p = complexity_weights(np.asarray(complexity, dtype=np.float64)[live], float(temperature))
        nz = p[p > 0]
        eff = float(math.exp(-(nz * np.log(nz)).sum()))
        ratio = float(p.max() / p.min()) if p.min() > 0 else float("inf")
    jac = None
    if prefixes:
        k = np.asarray(kept, dtype=np.int64)
        bal = balanced_quotas(e, int(k.sum()))
        union = int(np.maximum(k, bal).sum())
        jac = float(np.minimum(k, bal).sum() / union) if union else 1.0
    return WeightDiagnostics(effective_concepts=eff, concepts=n, share_ratio=ratio, jaccard_balanced=jac)


def relative_temperature(complexity: np.ndarray, eligible: np.ndarray, spreads: float) -> float:
    """tau = ``spreads`` x the standard deviation of C over the concepts with eligible images (ValueError
    when C does not vary: then every tau gives equal shares)."""
    if not (np.isfinite(spreads) and spreads > 0):
        raise ValueError(f"a relative temperature is a number of spreads > 0, got {spreads!r}")
    c = np.asarray(complexity, dtype=np.float64)[np.asarray(eligible) > 0]
    c = c[np.isfinite(c)]
    sd = float(c.std()) if c.size > 1 else 0.0
    if not sd > 0:
        raise ValueError("the concepts' complexity does not vary (fewer than two concepts with eligible images, "
                         "or all equal): a temperature relative to its spread is undefined; give --temperature")
    return spreads * sd


def plan_diagnostics(result) -> WeightDiagnostics:
    """:func:`weight_diagnostics` of a computed plan (a PlanResult): complexity weights for DBP, the Jaccard
    for the methods with per-concept quotas (DBP, SSP, balanced) without decisions in force."""
    p = result.params
    return weight_diagnostics(result.complexity, result.eligible, result.kept,
                              p.temperature if p.method == "dbp" else None,
                              prefixes=p.method in QUOTA_METHODS and result.decisions is None)


def saved_plan_diagnostics(method: str, params: dict, decisions: str | None, per_cluster) -> WeightDiagnostics | None:
    """The same for a saved plan from its stored per-concept rows (per_cluster: eligible, kept, complexity;
    None when the workspace predates stored complexity)."""
    if per_cluster is None or len(per_cluster) == 0 or per_cluster["complexity"].isna().all():
        return None
    tau = float(params.get("temperature", 0.1)) if method == "dbp" else None
    return weight_diagnostics(per_cluster["complexity"].to_numpy(dtype=np.float64),
                              per_cluster["eligible"].to_numpy(dtype=np.int64),
                              per_cluster["kept"].to_numpy(dtype=np.int64), tau,
                              prefixes=method in QUOTA_METHODS and not decisions)
