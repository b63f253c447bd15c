"""A curator's decisions in a workspace: tag rows, give concepts rules, load them for a plan, snapshot them.

The semantics are :mod:`densprune.prune.decisions`'; this module is the workspace edge: where the rows
of a tag come from (a caption search, a concept, the picked tiles of a grid, a file of uids or keys),
the DuckDB tables they live in (:mod:`densprune.db`), who did what when (``decision_log``), and the
snapshot a saved plan records (content digest + rows) so that it can be re-run later to the same mask.

Row tags name rows (``row_idx``), so they survive ``densprune recluster``. Concept rules belong to one
clustering (the centroids' sha256); a recluster carries each rule to the new concept that is the mutual
majority of its members (:func:`densprune.prune.decisions.map_rules`) and drops the others with a
warning that lists them. Rules on another clustering are never applied: loading them is an error.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from densprune import db
from densprune.names import validate_name
from densprune.prune.decisions import (
    RULE_KINDS,
    TAG_ACTIONS,
    ConceptRule,
    Decisions,
    TagSet,
    map_rules,
    parse_amount,
)
from densprune.vectors import sorted_unique

log = logging.getLogger(__name__)

__all__ = ["SOURCES", "StaleRules", "add_tag", "tag_sources", "carry_rules", "clustering_id", "decisions_from_snapshot",
           "load_decisions", "make_rule", "read_id_file", "remove_tag", "rows_from_ids", "rule_from_row", "set_rule",
           "snapshot"]

SOURCES = ("caption", "concept", "uids", "keys", "rows", "text", "like", "lasso", "box")  # where a tag's rows came from
_UID = re.compile(r"^[0-9a-f]{32}$")
MAX_LISTED = 10  # bad ids named in an error


class StaleRules(ValueError):
    """Concept rules stored for a clustering the workspace no longer has."""


def validate_tag_name(name: str) -> str:
    return validate_name(name, "tag name", max_len=64)


def clustering_id(workspace: str | os.PathLike, meta: dict | None = None) -> str:
    """The id of the workspace's current clustering: its centroids' sha256 (the build id for older ones)."""
    meta = db.load_meta(workspace) if meta is None else meta
    return str(meta.get("centroids_sha256") or meta.get("build_id") or "unknown")


def _entry(who: str | None, source_kind: str | None = None, source: str | None = None) -> dict:
    return {"at": datetime.now(timezone.utc).replace(tzinfo=None), "who": who or _user(),
            "source_kind": source_kind, "source": source}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def read_id_file(path: str | os.PathLike) -> list[str]:
    """The ids of a file, one per line (blank lines and '#' comments skipped, whitespace stripped)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text (byte {exc.start}); give one uid or key per line") from None
    return [t for t in (line.strip() for line in text.splitlines()) if t and not t.startswith("#")]


def rows_from_ids(workspace: str | os.PathLike, column: str, ids: list[str], source: str = "the file") -> np.ndarray:
    """(M,) int64 rows of ``ids`` (uids: 32 lower-case hex digits, DataComp's form; or keys). Any malformed
    or unknown id is a ValueError that counts and lists them: nothing is tagged from a file with one."""
    if not ids:
        raise ValueError(f"{source} holds no {column}s (one per line)")
    if column == "uid":
        bad = [(i + 1, v) for i, v in enumerate(ids) if not _UID.match(v)]
        if bad:
            shown = ", ".join(f"line {n}: {v[:40]!r}" for n, v in bad[:MAX_LISTED])
            raise ValueError(f"{source}: {len(bad):,} of {len(ids):,} lines are not uids (32 lower-case hex digits): "
                             f"{shown}{' ...' if len(bad) > MAX_LISTED else ''}; nothing was tagged")
    found = db.rows_for(workspace, column, list(dict.fromkeys(ids)))
    missing = [v for v in dict.fromkeys(ids) if v not in set(found["value"])]
    if missing:
        shown = ", ".join(repr(v[:40]) for v in missing[:MAX_LISTED])
        raise ValueError(f"{source}: {len(missing):,} of {len(set(ids)):,} {column}s are not in {workspace}: {shown}"
                         f"{' ...' if len(missing) > MAX_LISTED else ''}; nothing was tagged")
    return sorted_unique(found["row_idx"].to_numpy(dtype=np.int64))


def add_tag(workspace: str | os.PathLike, name: str, action: str, rows: np.ndarray, *, source_kind: str,
            source: str | None = None, who: str | None = None) -> int:
    """Add ``rows`` (M,) to tag ``name`` with ``action`` (creating it), logged with where they came from;
    returns how many were new. Rows outside the workspace are a ValueError (nothing written)."""
    validate_tag_name(name)
    if action not in TAG_ACTIONS:
        raise ValueError(f"a tag's action is one of {', '.join(TAG_ACTIONS)}, got {action!r}")
    if source_kind not in SOURCES:
        raise ValueError(f"a tag's source is one of {SOURCES}, got {source_kind!r}")
    rows = sorted_unique(rows)
    n = db.counts(workspace)["samples"]
    if rows.size and (rows[0] < 0 or rows[-1] >= n):
        raise ValueError(f"rows {int(rows[0])}..{int(rows[-1])} are outside the workspace's {n:,} rows; "
                         "nothing was tagged")
    added = db.add_tag_rows(workspace, name, action, rows, _entry(who, source_kind, source))
    log.info("tag %s (%s): %d rows given, %d new", name, action, rows.size, added)
    return added


def tag_sources(workspace: str | os.PathLike, name: str) -> list[dict]:
    """The provenance of tag ``name``, one entry per addition, oldest first: logged_at, who, source_kind,
    source (JSON for searches and map regions: decoded to a dict), n_rows. Unknown name: ValueError."""
    validate_tag_name(name)
    tags = db.list_tags(workspace)
    if name not in set(tags["name"]):
        raise ValueError(f"no tag named {name!r} in {workspace} (tags: {', '.join(tags['name']) or 'none'})")
    out = []
    for r in db.tag_sources(workspace, name).to_dict("records"):
        src = r.get("source")
        if isinstance(src, str) and src.startswith("{"):
            try:
                r["source"] = json.loads(src)
            except ValueError:
                pass
        out.append(r)
    return out


def remove_tag(workspace: str | os.PathLike, name: str, who: str | None = None) -> int:
    """Delete tag ``name`` (logged); its row count. An unknown name is a ValueError listing the tags."""
    validate_tag_name(name)
    n = db.remove_tag(workspace, name, _entry(who))
    if n < 0:
        names = ", ".join(db.list_tags(workspace)["name"]) or "none"
        raise ValueError(f"no tag named {name!r} in {workspace} (tags: {names})")
    return n


def make_rule(concept: int, kind: str, amount: str | float | None = None) -> ConceptRule:
    """A rule from the CLI's / app's words: kind in RULE_KINDS; floor / cap take '200' or '10%', weight a
    number > 0."""
    if kind not in RULE_KINDS:
        raise ValueError(f"a rule is one of {', '.join(RULE_KINDS)}, got {kind!r}")
    if kind in ("floor", "cap"):
        if amount is None:
            raise ValueError(f"{kind} needs an amount: a count (200) or a percentage (10%)")
        value, fraction = parse_amount(amount)
        return ConceptRule(int(concept), kind, value, fraction)
    if kind == "weight":
        try:
            w = float(amount)
        except (TypeError, ValueError):
            raise ValueError(f"weight needs a number > 0, got {amount!r}") from None
        return ConceptRule(int(concept), kind, w)
    return ConceptRule(int(concept), kind)


def set_rule(workspace: str | os.PathLike, concepts: list[int], kind: str, amount: str | float | None = None, *,
             who: str | None = None, source: str | None = None) -> list[ConceptRule]:
    """Give each concept of ``concepts`` the rule (``auto`` removes a rule), on the current clustering, in
    one transaction. An unknown concept is a ValueError that names the valid range (nothing written)."""
    k = db.counts(workspace)["clusters"]
    bad = [j for j in concepts if not (0 <= int(j) < k)]
    if bad or not concepts:
        raise ValueError(f"unknown concept {bad[:MAX_LISTED] if bad else 'none given'}: the workspace has {k} concepts "
                         f"(0-{k - 1}); see `densprune info` or the app's Concepts page")
    rules = [make_rule(int(j), kind, amount) for j in concepts]
    frame = pd.DataFrame([r.as_dict() for r in rules])
    db.set_rules(workspace, clustering_id(workspace), frame, _entry(who, "rule", source))
    return rules


def load_decisions(workspace: str | os.PathLike) -> Decisions:
    """The decisions in force: every tag and the concept rules of the current clustering. Rules stored for
    another clustering raise :class:`StaleRules` naming them (they are never applied to other concepts)."""
    current = clustering_id(workspace)
    rules = db.load_rules(workspace)
    stale = rules[rules["clustering"] != current]
    if not stale.empty:
        shown = ", ".join(f"concept {int(r.concept)}: {r.kind}" for r in stale.head(MAX_LISTED).itertuples())
        raise StaleRules(f"{workspace} has {len(stale)} concept rule(s) made on another clustering ({shown}); the "
                         "clustering changed without carrying them over. Re-give them with `densprune rule`, or "
                         "remove them with `densprune rules WS --drop-stale`")
    tags, rows = db.tag_rows(workspace)
    return Decisions(rules=tuple(rule_from_row(r) for r in rules.itertuples()),
                     tags=tuple(TagSet(t.name, t.action, rows[t.name]) for t in tags.itertuples()),
                     clustering=current)


def drop_stale_rules(workspace: str | os.PathLike, who: str | None = None) -> int:
    """Remove the rules of clusterings other than the current one; how many went."""
    current = clustering_id(workspace)
    rules = db.load_rules(workspace)
    keep = rules[rules["clustering"] == current]
    gone = len(rules) - len(keep)
    if gone:
        db.replace_rules(workspace, keep, [{**_entry(who), "what": "drop stale rules", "n_rows": gone}])
    return gone


def rule_from_row(r) -> ConceptRule:
    """A ConceptRule from a row of ``concept_rules`` (concept, kind, value, fraction)."""
    value = None if pd.isna(r.value) else float(r.value)
    return ConceptRule(int(r.concept), str(r.kind), value, bool(r.fraction))


def snapshot(dec: Decisions) -> tuple[dict, pd.DataFrame]:
    """What a saved plan records of ``dec``: the snapshot row (digest, clustering, rules and tags as JSON)
    and its rows (tag, row_idx) for the never / always tags (label tags do not change a plan)."""
    tags = [t for t in dec.tags if t.action != "label"]
    snap = {"digest": dec.digest, "clustering": dec.clustering,
            "rules": json.dumps([r.as_dict() for r in dec.active_rules]),
            "tags": json.dumps([{"name": t.name, "action": t.action, "n_rows": int(t.rows.size)} for t in tags]),
            "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}
    rows = pd.DataFrame({"tag": np.concatenate([np.full(t.rows.size, t.name, dtype=object) for t in tags])
                         if tags else np.empty(0, dtype=object),
                         "row_idx": np.concatenate([t.rows for t in tags]) if tags else np.empty(0, dtype=np.int64)})
    return snap, rows


def decisions_from_snapshot(workspace: str | os.PathLike, digest: str) -> Decisions:
    """The decisions snapshot ``digest`` holds (what a saved plan used), checked against its digest."""
    got = db.load_snapshot(workspace, digest)
    if got is None:
        raise ValueError(f"no decision snapshot {digest!r} in {workspace}")
    snap, rows = got
    tag_rows = {name: g["row_idx"].to_numpy(dtype=np.int64) for name, g in rows.groupby("tag")}
    dec = Decisions(rules=tuple(ConceptRule(r["concept"], r["kind"], r["value"], r["fraction"])
                                for r in json.loads(snap["rules"])),
                    tags=tuple(TagSet(t["name"], t["action"], tag_rows.get(t["name"], np.empty(0, np.int64)))
                               for t in json.loads(snap["tags"])),
                    clustering=snap["clustering"])
    if dec.digest != digest:
        raise ValueError(f"decision snapshot {digest} does not hash to itself ({dec.digest}): the workspace's "
                         "snapshot tables were changed outside densprune")
    return dec


def carry_rules(workspace: str | os.PathLike, old: np.ndarray, new: np.ndarray, new_clustering: str,
                who: str | None = None) -> tuple[pd.DataFrame, list[tuple[ConceptRule, str]], list[dict]]:
    """The current clustering's rules carried to a new clustering (``old``, ``new``: (N,) concept per row):
    the rules table to store, the dropped rules with why, and the log entries (for one transaction
    with the recluster that makes them necessary)."""
    current = clustering_id(workspace)
    rules = db.load_rules(workspace)
    mine = [rule_from_row(r) for r in rules[rules["clustering"] == current].itertuples()]
    mapped, dropped = map_rules(mine, old, new)
    stamp = _entry(who, "recluster")
    new_rules = [r for _, r in mapped]
    frame = pd.DataFrame({"clustering": new_clustering, "concept": [r.concept for r in new_rules],
                          "kind": [r.kind for r in new_rules], "value": [r.value for r in new_rules],
                          "fraction": [r.fraction for r in new_rules], "created_by": stamp["who"],
                          "created_at": stamp["at"]})
    frame = frame.astype({"concept": "int32", "value": "float64", "fraction": "bool"})
    entries = [{**stamp, "what": f"rule {o.kind} carried", "target": f"concept {n.concept}",
                "source": f"from concept {o.concept} by member overlap"} for o, n in mapped]
    entries += [{**stamp, "what": "rule dropped", "target": f"concept {r.concept}", "source": why}
                for r, why in dropped]
    return frame, dropped, entries
