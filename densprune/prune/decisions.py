"""A curator's decisions as the plan engine reads them: concept rules and row tags (no I/O here).

Concept rules (one per concept of a clustering): ``auto`` (the method decides), ``keep-whole`` (every
eligible image kept), ``drop`` (none), ``floor`` (at least n images or p% of its eligible), ``cap`` (at
most n or p%), ``weight`` (its share of the method's target times w). Row tags: named sets of rows with
an action, ``never`` (not eligible for any plan), ``always`` (kept whatever the method, within the
budget) or ``label`` (a set to browse; no effect on plans).

How a plan applies them (:meth:`densprune.prune.selection.PlanIndex.compute`): the budget is the total
kept, counted as without decisions (a fraction of what dedup and the CLIP filter leave); ``always``
rows (pool rows only: eval rows are never kept) and ``keep-whole`` concepts take their part first;
``never`` rows and ``drop`` concepts leave the eligible pool; the method shares the rest among the
other concepts under their floors, caps and weights. Row tags beat concept rules (an ``always`` row in
a dropped concept is kept, a ``never`` row in a kept-whole concept is not), and ``never`` beats
``always`` when one row has both. Decisions that cannot all hold raise :class:`InfeasibleDecisions`
with the numbers.

:class:`Decisions` is immutable and carries a content hash (:attr:`Decisions.digest`): the snapshot a
saved plan records, so re-running it later gives the same mask whatever was tagged since.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from densprune.vectors import sorted_unique

__all__ = ["RULE_KINDS", "TAG_ACTIONS", "ConceptRule", "Decisions", "InfeasibleDecisions", "RuleArrays",
           "TagSet", "parse_amount", "map_rules"]

RULE_KINDS = ("auto", "keep-whole", "drop", "floor", "cap", "weight")
TAG_ACTIONS = ("never", "always", "label")
_AUTO, _KEEP, _DROP, _FLOOR, _CAP, _WEIGHT = range(6)


class InfeasibleDecisions(ValueError):
    """Decisions that no plan can obey at the given budget (forced keeps above it, floors summing above
    it, or too little left once never / drop / caps apply); the message has the numbers."""


def parse_amount(text: str | float | int) -> tuple[float, bool]:
    """'200' -> (200, False): a count; '10%' -> (0.1, True): a fraction of the concept's eligible."""
    t = str(text).strip()
    try:
        if t.endswith("%"):
            v = float(t[:-1]) / 100.0
            if not (0.0 <= v <= 1.0):
                raise ValueError
            return v, True
        v = float(t)
    except ValueError:
        raise ValueError(f"{text!r} is not an amount: give a count of images (200) or a percentage (10%)") from None
    if not (np.isfinite(v) and v >= 0 and v == int(v)):
        raise ValueError(f"{text!r} is not an amount: a count must be a whole number >= 0 (or give a percentage)")
    return float(int(v)), False


@dataclass(frozen=True, slots=True)
class ConceptRule:
    """One concept's rule. ``value``: the count or fraction of floor / cap, the weight of weight."""

    concept: int
    kind: str
    value: float | None = None
    fraction: bool = False  # floor / cap: value is a fraction of the concept's eligible

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"rule must be one of {RULE_KINDS}, got {self.kind!r}")
        if isinstance(self.concept, bool) or not isinstance(self.concept, (int, np.integer)) or self.concept < 0:
            raise ValueError(f"a rule's concept must be an integer >= 0, got {self.concept!r}")
        object.__setattr__(self, "concept", int(self.concept))
        if self.kind in ("floor", "cap"):
            v = self.value
            if v is None or not np.isfinite(v) or v < 0 or (self.fraction and v > 1) \
                    or (not self.fraction and v != int(v)):
                raise ValueError(f"{self.kind} needs a count >= 0 or a fraction in [0, 1], got {v!r}")
        elif self.kind == "weight":
            if self.value is None or not np.isfinite(self.value) or self.value <= 0:
                raise ValueError(f"weight must be a finite number > 0, got {self.value!r}")
        elif self.value is not None:
            raise ValueError(f"rule {self.kind} takes no value, got {self.value!r}")

    def describe(self) -> str:
        """'floor 200', 'cap 10%', 'weight 2', 'drop', ..."""
        if self.kind in ("floor", "cap"):
            return f"{self.kind} {self.value * 100:.4g}%" if self.fraction else f"{self.kind} {int(self.value)}"
        if self.kind == "weight":
            return f"weight {self.value:g}"
        return self.kind

    def as_dict(self) -> dict:
        return {"concept": self.concept, "kind": self.kind, "value": self.value, "fraction": self.fraction}


@dataclass(frozen=True, slots=True, eq=False)
class TagSet:
    """A named set of rows (M,) int64 sorted unique, with its action."""

    name: str
    action: str
    rows: np.ndarray

    def __post_init__(self) -> None:
        if self.action not in TAG_ACTIONS:
            raise ValueError(f"a tag's action must be one of {TAG_ACTIONS}, got {self.action!r}")
        r = sorted_unique(self.rows)
        r.setflags(write=False)
        object.__setattr__(self, "rows", r)


@dataclass(frozen=True, slots=True)
class RuleArrays:
    """The rules as (K,) arrays: ``kind`` int8 codes in RULE_KINDS order, ``value`` float64 (NaN where
    unused), ``fraction`` bool."""

    kind: np.ndarray
    value: np.ndarray
    fraction: np.ndarray

    def bounds(self, eligible: np.ndarray, kept: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The user's floors, caps and weights as bounds on what the method adds to each concept.

        Args:
            eligible: (K,) int images each concept can keep (a percentage counts these).
            kept: (K,) int images already kept there whatever the method (always-tagged rows, part of
                ``eligible`` or not); a floor or cap counts them, the method adds the rest.
        Returns:
            lo (K,) int64 (0 where no floor; never above what is left), hi (K,) int64 (what is left,
            lower where capped; 0 for dropped), w (K,) float64 (1 where no weight). Fractions round up
            for floors and down for caps.
        """
        e = np.asarray(eligible, dtype=np.int64)
        f = np.zeros_like(e) if kept is None else np.asarray(kept, dtype=np.int64)
        left = np.maximum(e - f, 0)
        v = np.nan_to_num(self.value)
        amount = np.where(self.fraction, v * e, v)
        lo = np.where(self.kind == _FLOOR, np.clip(np.ceil(amount - 1e-9) - f, 0, left), 0).astype(np.int64)
        hi = np.where(self.kind == _CAP, np.clip(np.floor(amount + 1e-9) - f, 0, left), left).astype(np.int64)
        hi = np.where(self.kind == _DROP, 0, hi)
        w = np.where(self.kind == _WEIGHT, v, 1.0)
        return lo, hi, w


@dataclass(frozen=True, eq=False)
class Decisions:
    """The decisions a plan applies: concept rules of one clustering and row tags.

    ``clustering`` names the clustering the rules were made on (the centroids' sha256): rules on
    another clustering are refused by :meth:`rule_arrays`' caller, never applied to the wrong concepts."""

    rules: tuple[ConceptRule, ...] = ()
    tags: tuple[TagSet, ...] = ()
    clustering: str | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: set[int] = set()
        for r in self.rules:
            if r.concept in seen:
                raise ValueError(f"concept {r.concept} has two rules; a concept has one rule")
            seen.add(r.concept)
        names = [t.name for t in self.tags]
        if len(set(names)) != len(names):
            raise ValueError("two tags share a name")
        object.__setattr__(self, "rules", tuple(sorted(self.rules, key=lambda r: r.concept)))
        object.__setattr__(self, "tags", tuple(sorted(self.tags, key=lambda t: t.name)))

    @property
    def empty(self) -> bool:
        """True when nothing here changes a plan (no rule other than auto, no never / always rows)."""
        return not any(r.kind != "auto" for r in self.rules) and not any(
            t.action != "label" and t.rows.size for t in self.tags)

    @property
    def active_rules(self) -> tuple[ConceptRule, ...]:
        return tuple(r for r in self.rules if r.kind != "auto")

    def rows(self, action: str) -> np.ndarray:
        """(M,) int64 sorted unique rows tagged ``action`` ('always' leaves out rows also tagged never)."""
        if action not in self._cache:
            parts = [t.rows for t in self.tags if t.action == action]
            r = sorted_unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
            if action == "always":
                r = np.setdiff1d(r, self.rows("never"), assume_unique=True)
            r.setflags(write=False)
            self._cache[action] = r
        return self._cache[action]

    def rule_arrays(self, k: int) -> RuleArrays:
        """The rules as (K,) arrays; a rule for a concept >= K is a ValueError that names it."""
        bad = [r.concept for r in self.rules if r.concept >= k]
        if bad:
            raise ValueError(f"rules name concepts {bad[:10]} but the clustering has {k} concepts (0-{k - 1}); "
                             "remove them with `densprune rule WS --concept J --auto`")
        kind = np.zeros(k, dtype=np.int8)
        value = np.full(k, np.nan)
        frac = np.zeros(k, dtype=bool)
        for r in self.rules:
            kind[r.concept] = RULE_KINDS.index(r.kind)
            if r.value is not None:
                value[r.concept] = r.value
            frac[r.concept] = r.fraction
        return RuleArrays(kind, value, frac)

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over what changes a plan: the clustering, the rules other than auto and
        every never / always tag's name, action and rows (label tags leave plans alone): equal decisions,
        equal digest."""
        if "digest" not in self._cache:
            h = hashlib.sha256(json.dumps({"clustering": self.clustering,
                                           "rules": [r.as_dict() for r in self.active_rules]},
                                          sort_keys=True).encode())
            for t in self.tags:
                if t.action == "label":
                    continue
                h.update(f"\0{t.name}\0{t.action}\0{t.rows.size}\0".encode())
                h.update(np.ascontiguousarray(t.rows, dtype="<i8").tobytes())
            self._cache["digest"] = h.hexdigest()[:16]
        return self._cache["digest"]

    def describe(self) -> list[str]:
        """One line per decision in force: 'concept 12: drop', 'tag junk (never): 340 rows'."""
        out = [f"concept {r.concept}: {r.describe()}" for r in self.active_rules]
        out += [f"tag {t.name} ({t.action}): {t.rows.size:,} rows" for t in self.tags if t.action != "label"]
        return out


def map_rules(rules: tuple[ConceptRule, ...] | list[ConceptRule], old: np.ndarray, new: np.ndarray,
              min_overlap: float = 0.5
              ) -> tuple[list[tuple[ConceptRule, ConceptRule]], list[tuple[ConceptRule, str]]]:
    """Carry concept rules across a reclustering by member overlap.

    A rule of old concept j moves to the new concept j' that holds most of j's members when the two
    are each other's majority: more than ``min_overlap`` of j's members are in j' and more than
    ``min_overlap`` of j''s members came from j. Otherwise it is dropped, with the reason.

    Args:
        rules: rules on the old clustering.
        old, new: (N,) int concept of every row before and after.
    Returns:
        ([(old rule, the rule on the new concept)], [(dropped rule, why)]).
    """
    old = np.asarray(old, dtype=np.int64)
    new = np.asarray(new, dtype=np.int64)
    if old.shape != new.shape or old.ndim != 1:
        raise ValueError(f"old {old.shape} and new {new.shape} must be (N,) arrays of the same rows")
    mapped: list[tuple[ConceptRule, ConceptRule]] = []
    dropped: list[tuple[ConceptRule, str]] = []
    taken: set[int] = set()
    for r in rules:
        members = new[old == r.concept]
        if members.size == 0:
            dropped.append((r, "the concept had no members"))
            continue
        ids, counts = np.unique(members, return_counts=True)
        best = int(ids[np.argmax(counts)])
        share_old = counts.max() / members.size
        share_new = counts.max() / max(int(np.count_nonzero(new == best)), 1)
        if share_old > min_overlap and share_new > min_overlap and best not in taken:
            taken.add(best)
            mapped.append((r, ConceptRule(best, r.kind, r.value, r.fraction)))
        else:
            dropped.append((r, f"its members split: {share_old:.0%} went to new concept {best}, which holds "
                               f"{share_new:.0%} of its members from it (both must exceed {min_overlap:.0%})"))
    return mapped, dropped
