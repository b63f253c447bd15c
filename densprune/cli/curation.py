"""CLI commands for a curator's decisions: ``tag``, ``tags``, ``untag``, ``rule``, ``rules``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("densprune")

DECISIONS_HELP = """\
Decisions enter every plan unless it is made with --ignore-decisions. The budget stays the total
kept: 'always' rows and keep-whole concepts take their part first, 'never' rows and dropped
concepts leave the eligible pool, and the method shares the rest under the floors, caps and
weights (docs/method.md, "Curation"). Row tags survive `densprune recluster`; concept rules are
carried to the new concept holding most of their members, or dropped with a warning."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    from densprune.prune.decisions import RULE_KINDS, TAG_ACTIONS

    p = sub.add_parser("tag", help="tag rows: never (not eligible), always (kept), label (a set to browse)",
                       description=DECISIONS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workspace", type=Path)
    p.add_argument("name", help="tag name (letters, digits, _ . -); adding to an existing tag adds rows")
    p.add_argument("--action", choices=TAG_ACTIONS, required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--caption", metavar="TEXT", help="every row whose caption contains TEXT (case-insensitive)")
    src.add_argument("--concept", type=int, metavar="J", action="append",
                     help="every row of concept J (repeatable)")
    src.add_argument("--uids", type=Path, metavar="FILE", help="a file of uids (32 hex digits), one per line")
    src.add_argument("--keys", type=Path, metavar="FILE", help="a file of sample keys, one per line")
    from densprune.cli.search import add_query_flags, add_search_knobs

    add_query_flags(src)
    add_search_knobs(p, k_default=None)
    p.add_argument("--min-sim", type=float, default=None, metavar="S",
                   help="with --text / --like: the images with cosine similarity >= S (with -k: of the k nearest)")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("tags", help="list the workspace's tags, or where one tag's rows came from")
    p.add_argument("workspace", type=Path)
    p.add_argument("name", nargs="?", default=None,
                   help="one tag: its provenance (the query, seed row, map region... of each addition)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tags)

    p = sub.add_parser("untag", help="remove a tag (its rows are untagged; saved plans keep their snapshot)")
    p.add_argument("workspace", type=Path)
    p.add_argument("name")
    p.set_defaults(func=cmd_untag)

    p = sub.add_parser("rule", help="give concepts a rule: keep whole, drop, floor, cap, weight, or auto",
                       description=DECISIONS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workspace", type=Path)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--concept", type=int, metavar="J", action="append", help="concept J (repeatable)")
    which.add_argument("--label", metavar="TEXT",
                       help="every concept whose caption label is TEXT (concepts words cannot tell apart)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--keep-whole", dest="kind", action="store_const", const="keep-whole",
                      help="keep every eligible image of the concept")
    kind.add_argument("--drop", dest="kind", action="store_const", const="drop", help="keep none")
    kind.add_argument("--floor", metavar="N|P%", help="keep at least N images or P%% of its eligible")
    kind.add_argument("--cap", metavar="N|P%", help="keep at most N images or P%% of its eligible")
    kind.add_argument("--weight", metavar="W", help="multiply its share of the method's target by W > 0")
    kind.add_argument("--auto", dest="kind", action="store_const", const="auto", help="remove the rule")
    p.set_defaults(func=cmd_rule, kinds=RULE_KINDS)

    p = sub.add_parser("rules", help="list the concept rules in force")
    p.add_argument("workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--drop-stale", action="store_true", help="remove rules made on an earlier clustering")
    p.set_defaults(func=cmd_rules)


def cmd_tag(args: argparse.Namespace) -> int:
    from densprune import db
    from densprune.prune.curation import add_tag, read_id_file, rows_from_ids, validate_tag_name

    validate_tag_name(args.name)
    if args.caption is not None:
        text = args.caption.strip()
        if not text:
            raise ValueError("--caption needs some text to search for")
        rows, kind, source = db.caption_rows(args.workspace, text), "caption", text
    elif args.concept is not None:
        from densprune.prune.plan_index import load_index

        index = load_index(args.workspace)
        bad = [j for j in args.concept if not 0 <= j < index.n_clusters]
        if bad:
            raise ValueError(f"unknown concept {bad}: the workspace has {index.n_clusters} concepts "
                             f"(0-{index.n_clusters - 1})")
        import numpy as np

        rows = np.concatenate([index.concept_rows(j)[0] for j in args.concept])
        kind, source = "concept", ",".join(map(str, args.concept))
    elif args.text is not None or args.like is not None:
        rows, kind, source = _search_rows(args)
    else:
        path, column = (args.uids, "uid") if args.uids is not None else (args.keys, "key")
        rows = rows_from_ids(args.workspace, column, read_id_file(path), source=str(path))
        kind, source = ("uids" if column == "uid" else "keys"), str(path)
    if len(rows) == 0:
        raise ValueError(f"nothing to tag: no row matches {kind} {source!r}")
    added = add_tag(args.workspace, args.name, args.action, rows, source_kind=kind, source=source)
    print(f"tag {args.name} ({args.action}): {len(rows):,} rows from {kind} {source!r}, {added:,} new; "
          "plans apply it from now on (`densprune plan ... --ignore-decisions` for the pure method)")
    return 0


def _search_rows(args: argparse.Namespace):
    """``tag --text / --like``: the rows of the search (the k nearest, or all at or above --min-sim), the
    source kind and the provenance JSON; a ValueError when neither bound is given."""
    from densprune.cli.search import run_query
    from densprune.search.queries import MAX_K

    if args.k is None and args.min_sim is None:
        raise ValueError("--text / --like tag the nearest images: say how many with -k N, or how similar with "
                         "--min-sim S (or both)")
    sel = run_query(args.workspace, args.text, args.like, args.k or MAX_K, exact=args.exact, min_sim=args.min_sim,
                    text_weights=args.text_weights)
    if args.k is None and sel.rows.size == MAX_K:
        raise ValueError(f"more than {MAX_K:,} images are at or above --min-sim {args.min_sim}: raise it, or add "
                         f"-k N to take the N nearest; nothing was tagged")
    return sel.rows, sel.kind, sel.source()


def cmd_tags(args: argparse.Namespace) -> int:
    from densprune import db

    if args.name is not None:
        return _tag_provenance(args)
    df = db.list_tags(args.workspace)
    if args.json:
        print(df.to_json(orient="records", date_format="iso"))
    elif df.empty:
        print("no tags yet: `densprune tag DIR NAME --action never --caption watermark`")
    else:
        for r in df.itertuples():
            print(f"{r.name:<24} {r.action:<7} {r.n_rows:>10,} rows  by {r.created_by}  {r.created_at:%Y-%m-%d %H:%M}")
    return 0


def _tag_provenance(args: argparse.Namespace) -> int:
    import json

    from densprune.prune.curation import tag_sources

    entries = tag_sources(args.workspace, args.name)
    if args.json:
        print(json.dumps(entries, default=str))
        return 0
    for e in entries:
        src = e["source"]
        if isinstance(src, dict) and "lasso" in src:
            src = {**src, "lasso": f"{len(src['lasso'])} vertices"}
        print(f"{e['logged_at']:%Y-%m-%d %H:%M}  {e['who']}  {e['source_kind']}  {src}  ({e['n_rows']:,} new rows)")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    from densprune.prune.curation import remove_tag

    n = remove_tag(args.workspace, args.name)
    print(f"removed tag {args.name} ({n:,} rows); saved plans keep the snapshot they were made with")
    return 0


def cmd_rule(args: argparse.Namespace) -> int:
    from densprune.prune.curation import set_rule

    kind, amount = args.kind, None
    for name in ("floor", "cap", "weight"):
        if getattr(args, name) is not None:
            kind, amount = name, getattr(args, name)
    concepts, source = args.concept, None
    if args.label is not None:
        concepts, source = concepts_with_label(args.workspace, args.label), f"label {args.label!r}"
    rules = set_rule(args.workspace, concepts, kind, amount, source=source)
    what = "removed (auto)" if kind == "auto" else rules[0].describe()
    print(f"concept{'s' if len(rules) > 1 else ''} {', '.join(str(r.concept) for r in rules)}: {what}"
          + (f" (every concept labelled {args.label!r})" if args.label is not None else ""))
    return 0


def concepts_with_label(workspace: Path, label: str) -> list[int]:
    """The concepts whose caption label is ``label`` (exactly, or with the ' - i of n' the app adds)."""
    from densprune import db
    from densprune.cluster.labels import strip_rank

    df = db.load_clusters(workspace)
    want = strip_rank(label.strip())
    hit = df[df["label"].fillna("") == want]
    if hit.empty:
        close = sorted({lab for lab in df["label"].dropna() if want.lower() in lab.lower()})[:10]
        raise ValueError(f"no concept is labelled {label!r}" + (f"; labels containing it: {close}" if close else ""))
    return [int(j) for j in hit["cluster"]]


def cmd_rules(args: argparse.Namespace) -> int:
    from densprune import db
    from densprune.prune.curation import clustering_id, drop_stale_rules

    if args.drop_stale:
        print(f"removed {drop_stale_rules(args.workspace)} rule(s) of earlier clusterings")
    df = db.load_rules(args.workspace)
    current = clustering_id(args.workspace)
    df = df.assign(current=df["clustering"] == current)
    if args.json:
        print(df.to_json(orient="records", date_format="iso"))
    elif df.empty:
        print("no concept rules: every concept is auto (`densprune rule DIR --concept 12 --drop`)")
    else:
        from densprune.prune.curation import rule_from_row

        for r in df.itertuples():
            stale = "" if r.current else "  (STALE: another clustering; --drop-stale removes it)"
            print(f"concept {int(r.concept):>5}: {rule_from_row(r).describe():<16} by {r.created_by}  "
                  f"{r.created_at:%Y-%m-%d %H:%M}{stale}")
    return 0
