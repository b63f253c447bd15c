"""Compare two saved plans: kept counts per cluster and the samples that flip between them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from densprune import db
from densprune.prune.plans import load_plan


@dataclass(frozen=True)
class SavedPlanComparison:
    """Plan ``a`` against plan ``b``; ``only_a``/``only_b`` are row_idx arrays (sorted)."""

    a: str
    b: str
    per_cluster: pd.DataFrame  # cluster, kept_a, kept_b, diff (= kept_b - kept_a)
    only_a: np.ndarray
    only_b: np.ndarray
    both: int
    decisions: tuple[dict | None, dict | None] = (None, None)  # per plan: its decision digest and effects

    def summary(self, top: int = 10) -> dict:
        """A JSON-friendly digest: totals and the clusters that differ most."""
        pc = self.per_cluster.assign(absdiff=self.per_cluster["diff"].abs())
        worst = pc.nlargest(top, "absdiff").drop(columns="absdiff")
        return {"a": self.a, "b": self.b, "kept_a": int(pc.kept_a.sum()), "kept_b": int(pc.kept_b.sum()),
                "both": self.both, "only_a": int(self.only_a.size), "only_b": int(self.only_b.size),
                "decisions_a": self.decisions[0], "decisions_b": self.decisions[1],
                "clusters_most_different": worst.to_dict("records")}


def compare_masks(keep_a: np.ndarray, keep_b: np.ndarray, clusters: np.ndarray,
                  k: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int]:
    """keep_a, keep_b: (N,) bool; clusters: (N,) int -> (per-cluster table, only_a, only_b, both)."""
    if keep_a.shape != keep_b.shape or keep_a.shape != clusters.shape:
        raise ValueError("plans of different workspaces cannot be compared (mask lengths differ)")
    kept_a = np.bincount(clusters[keep_a], minlength=k)
    kept_b = np.bincount(clusters[keep_b], minlength=k)
    per = pd.DataFrame({"cluster": np.arange(k), "kept_a": kept_a, "kept_b": kept_b, "diff": kept_b - kept_a})
    return per, np.flatnonzero(keep_a & ~keep_b), np.flatnonzero(keep_b & ~keep_a), int((keep_a & keep_b).sum())


def compare_saved_plans(workspace: str | os.PathLike, a: str, b: str) -> SavedPlanComparison:
    """Load two saved plans of ``workspace`` and compare them."""
    row_a, keep_a = load_plan(workspace, a)
    row_b, keep_b = load_plan(workspace, b)
    clusters = db.load_sample_arrays(workspace, ("cluster",))["cluster"].astype(np.int64)
    k = int(db.load_meta(workspace)["k"])
    per, only_a, only_b, both = compare_masks(keep_a, keep_b, clusters, k)
    return SavedPlanComparison(a, b, per, only_a, only_b, both, (_decisions(row_a), _decisions(row_b)))


def _decisions(row: dict) -> dict | None:
    """A saved plan's decisions: digest and what each moved (None: computed without decisions)."""
    digest = row.get("decisions")
    if not isinstance(digest, str) or not digest:
        return None
    effects = row.get("effects")
    return {"digest": digest, "effects": json.loads(effects) if isinstance(effects, str) else None}
