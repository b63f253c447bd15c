"""The demo's concept labels name things: no dates, author names, boilerplate or file formats.

Runs on the demo workspace (tests/conftest.py builds it once per session). The labels are listed in
benchmarks/results/demo_labels.md (python benchmarks/demo_labels.py).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from densprune import db
from densprune.cluster.labels import DATE_WORDS, FILE_WORDS, MAX_LABEL_CHARS
from densprune.ingest.sources import demo_data_dir

BOILERPLATE = ("part of the flat icon collection", "flat icon collection", "clipart by nicu buculei", "nicu buculei",
               "gramastar", "lemon svg theme", "aiga", "hash", "gmail", "magick")


def author_words() -> set[str]:
    """Words of the creators' names in the bundle's metadata (3+ letters), less the ordinary words that
    also describe images (in some caption of an image by another creator, e.g. 'navy' of 'Royal Navy')."""
    cols = pq.read_table(sorted(Path(demo_data_dir()).glob("shard-*.parquet")), columns=["creator", "caption"])
    creators = cols["creator"].to_pylist()
    caps = cols["caption"].to_pylist()
    words = {w for c in set(creators) if c for w in re.findall(r"[^\W\d_]{3,}", c.casefold())}
    described = set()
    for c, cap in zip(creators, caps):
        own = set(re.findall(r"[^\W\d_]{3,}", (c or "").casefold()))
        described |= set(re.findall(r"[^\W\d_]{3,}", cap.casefold())) - own
    return words - described


def test_demo_labels_name_things(demo_workspace):
    labels = db.load_clusters(demo_workspace)["label"].fillna("").tolist()
    authors = author_words()
    assert {"nicu", "buculei", "rollandin", "architetto", "balin"} <= authors
    for lab in labels:
        assert lab and len(lab) <= MAX_LABEL_CHARS, lab
        assert not any(b in lab.casefold() for b in BOILERPLATE), lab
        for w in lab.split(", "):
            assert w not in DATE_WORDS and w not in FILE_WORDS and not re.search(r"\d", w), lab
            assert w not in authors, f"{lab!r}: {w!r} is an author's name"


def test_demo_labels_are_distinct_unless_the_text_is_the_same(demo_workspace):
    """Concepts share a label only where their captions are all the same caption."""
    cl = db.load_clusters(demo_workspace)
    shared = [lab for lab, n in Counter(cl["label"]).items() if n > 1]
    for lab in shared:
        ids = cl.loc[cl["label"] == lab, "cluster"].tolist()
        caps = db.query_df(demo_workspace, "SELECT DISTINCT caption FROM samples WHERE split = 'pool' AND "
                                           "list_contains(?, cluster)", [ids])
        assert len(caps) == 1, (lab, caps["caption"].tolist()[:5])
    assert cl["label"].nunique() >= 0.85 * len(cl)
