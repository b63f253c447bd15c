"""CLI command ``search``: the images nearest a text or an image, or whose captions contain some words;
and the query flags ``tag --text / --like`` share with it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("densprune")

SEARCH_HELP = """\
--text needs the text tower of the model that embedded the images: an open_clip workspace, or
released LAION / DataComp embeddings whose model is known (ViT-B-32 / ViT-L-14 openai) with its
weights in the local cache or given with --text-weights PATH. The offline embedder has none: the
search says so and answers with caption search instead. --like ROW needs only the stored vectors,
--caption only the captions. Below 2M rows a search compares every stored vector (exact); from 2M
on it reads the images of the concepts nearest the query (--exact forces the reference; recall
against it is in docs/scaling.md)."""


def add_query_flags(group: argparse._MutuallyExclusiveGroup) -> None:
    """--text / --like (shared by ``search`` and ``tag``)."""
    group.add_argument("--text", metavar="TEXT", help="images nearest this text (the workspace's CLIP text tower)")
    group.add_argument("--like", type=int, metavar="ROW", help="images nearest the image of row ROW (more like this)")


def add_search_knobs(p: argparse.ArgumentParser, k_default: int | None = 100) -> None:
    p.add_argument("-k", "--top-k", dest="k", type=int, default=k_default,
                   help="how many nearest images (default: %(default)s)")
    p.add_argument("--exact", action="store_true", help="compare every stored vector, at any size (the reference)")
    p.add_argument("--text-weights", metavar="PATH", default=None,
                   help="a local open_clip checkpoint of the model that embedded the images (for --text)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="find images by a text, an image (--like ROW) or caption words",
                       description=SEARCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workspace", type=Path)
    g = p.add_mutually_exclusive_group(required=True)
    add_query_flags(g)
    g.add_argument("--caption", metavar="TEXT", help="images whose caption contains TEXT (case-insensitive)")
    add_search_knobs(p)
    p.add_argument("--min-sim", type=float, default=None, metavar="S",
                   help="only images with cosine similarity >= S (for --text / --like)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_search)


def run_query(workspace: Path, text: str | None, like: int | None, k: int, *, exact: bool = False,
              min_sim: float | None = None, text_weights: str | None = None):
    """The Selection of ``--text`` or ``--like`` (the seed row itself left out of its own results)."""
    from densprune.search.queries import like_vector, nearest, text_vector

    if text is not None:
        vec = text_vector(workspace, text, text_weights=text_weights)
        return nearest(workspace, vec, k, kind="text", label=f"text {text.strip()!r}",
                       provenance={"text": text.strip()}, exact=True if exact else None, min_similarity=min_sim)
    vec = like_vector(workspace, like)
    return nearest(workspace, vec, k, kind="like", label=f"like row {like}", provenance={"row": int(like)},
                   exact=True if exact else None, exclude=np.array([like]), min_similarity=min_sim)


def cmd_search(args: argparse.Namespace) -> int:
    from densprune import db
    from densprune.search.queries import NoTextTower, caption_search, check_k

    k = check_k(args.k)
    note = None
    if args.caption is None:
        try:
            sel = run_query(args.workspace, args.text, args.like, k, exact=args.exact, min_sim=args.min_sim,
                            text_weights=args.text_weights)
        except NoTextTower as exc:
            note = f"{exc}\nAnswering with the captions that contain each word of {args.text.strip()!r} instead."
            print(f"note: {note}", file=sys.stderr)
            sel = caption_search(args.workspace, args.text, every_word=True)
    else:
        sel = caption_search(args.workspace, args.caption)
    rows = sel.rows[:k]
    shown = db.sample_rows(args.workspace, rows)
    if args.json:
        out = {"query": sel.label, "kind": sel.kind, "method": sel.method, "searched": sel.searched,
               "matches": sel.total, "rows": [int(r) for r in rows],
               "cluster": [int(c) for c in shown["cluster"]] if len(shown) else [],
               "concepts": sel.concepts.replace({np.nan: None}).to_dict("records"), "note": note}
        if sel.similarity is not None:
            out["similarity"] = [round(float(s), 5) for s in sel.similarity[:k]]
        print(json.dumps(out))
        return 0
    if sel.kind == "caption":
        print(f"{sel.total:,} {sel.label}, in {len(sel.concepts):,} concepts"
              + (f"; the first {len(rows):,}:" if sel.total > len(rows) else ":"))
    else:
        print(f"{len(rows):,} images nearest {sel.label} ({sel.method}):")
    sims = sel.similarity[:k] if sel.similarity is not None else [None] * len(rows)
    for r, s in zip(shown.itertuples(), sims):
        sim = f"  sim {s:.3f}" if s is not None else ""
        print(f"  row {r.row_idx:>10}{sim}  concept {r.cluster:>5}  {str(r.caption)[:80]}")
    top = sel.concepts.head(10)
    if len(top):
        print(f"concepts ({len(sel.concepts):,}): " + ", ".join(f"#{int(c.cluster)} ({int(c.hits):,} of "
                                                                f"{int(c.images):,})" for c in top.itertuples()))
    return 0
