"""Queries on a workspace: a text (through the workspace's own CLIP text tower), an image row ("more
like this"), caption words, or a region of the map, each answered as a :class:`Selection`: the rows,
the concepts they fall in, and the provenance a tag made from it records.

What each needs:

- a text query needs the text tower of the model that embedded the images: an open_clip workspace
  (its meta names the model, its weights or ``pretrained`` tag, and the seed of a randomly
  initialised one), or released LAION / DataComp embeddings whose model is known (clip-retrieval
  512-d: ViT-B-32 / openai; DataComp ``b32_img`` / ``l14_img``: ViT-B-32 / ViT-L-14 openai) with its
  weights loadable here (the hub's cache, or ``text_weights=`` a local checkpoint). The offline
  embedder has no text tower. Otherwise :class:`NoTextTower` (or ``WeightsUnavailable``) says why and
  points to caption search.
- an image query needs only the stored vectors; caption search only the samples table.

Scale: exact search reads every stored vector once per query batch, in blocks (``similarity.top_k``;
2.2 s for 10M float16 512-d rows in the page cache on 2 cores, docs/scaling.md). From
``APPROX_FROM_ROWS`` rows on, the default is the approximate search: the members of the concepts
nearest the query (nearest first, until they hold ``APPROX_FRACTION`` of the rows), with its recall
against exact measured in benchmarks/bench_search.py. ``exact=True`` forces the reference.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from densprune import db
from densprune.prune.plan_index import load_index
from densprune.search.regions import check_polygon, in_box, in_polygon
from densprune.search.similarity import normalise, probe_concepts, top_k
from densprune.workspace import image_vectors

log = logging.getLogger(__name__)

__all__ = ["APPROX_FRACTION", "APPROX_FROM_ROWS", "MAX_K", "MAX_QUERY_CHARS", "NoTextTower", "Selection",
           "caption_search", "check_query_text", "like_vector", "map_region", "nearest", "text_tower_settings",
           "text_vector"]

MAX_QUERY_CHARS = 1_000  # CLIP reads 77 tokens (about 300 characters); a longer query is a paste, not a question
MAX_K = 10_000  # results per query
APPROX_FROM_ROWS = 2_000_000  # from here on the default is the search through the nearest concepts
APPROX_FRACTION = 0.015  # the approximate search reads the nearest concepts until they hold this share of rows
MIN_PROBE = 4  # ... and at least this many concepts
RELEASED_TOWERS = {  # (meta model, image_dim) of released embeddings -> the open_clip model that made them
    ("clip-retrieval", 512): ("ViT-B-32", "openai"),  # LAION-400M / LAION-5B (B/32) clip-retrieval shards
    ("clip-retrieval", 768): ("ViT-L-14", "openai"),  # LAION-5B L/14 shards
    ("b32_img", 512): ("ViT-B-32", "openai"),  # DataComp's pool metadata
    ("l14_img", 768): ("ViT-L-14", "openai"),
}


class NoTextTower(ValueError):
    """The workspace has no text tower: a text cannot be placed among its images."""


@dataclass(frozen=True)
class Selection:
    """Rows found by one query or region, best first where there is an order.

    kind is the tag source it becomes (densprune.prune.curation.SOURCES); provenance is the JSON the
    tag's log records (the query text, the seed row, the lasso polygon...)."""

    kind: str  # "text", "like", "caption", "lasso", "box"
    label: str  # what was asked, in words
    rows: np.ndarray  # (M,) int64
    similarity: np.ndarray | None  # (M,) float32 cosine similarity, for text and like
    concepts: pd.DataFrame  # cluster, hits (among rows), best (similarity, or NaN), images (the concept's rows)
    provenance: dict = field(default_factory=dict)
    method: str = ""  # "exact over N rows", "approximate: ...", "caption ILIKE", "map"
    searched: int = 0  # rows compared (searches), matches in total (caption), points drawn (map)
    total: int = 0  # matches in total (caption) or images in the selected concepts (map); else len(rows)

    def source(self) -> str:
        """The provenance as the JSON text stored with a tag made from this selection."""
        return json.dumps(self.provenance, sort_keys=True)


def check_query_text(text: str | None) -> str:
    """The query stripped; a ValueError when it is empty or longer than MAX_QUERY_CHARS."""
    t = (text or "").strip()
    if not t:
        raise ValueError('the query is empty: give a few words, e.g. --text "a dog on a beach"')
    if len(t) > MAX_QUERY_CHARS:
        raise ValueError(f"the query has {len(t):,} characters; at most {MAX_QUERY_CHARS:,} are read (CLIP reads "
                         "77 tokens, about 300 characters): shorten it")
    return t


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise ValueError(f"k (results) must be an integer from 1 to {MAX_K:,}, got {k!r}")
    return int(k)


def text_tower_settings(meta: dict, text_weights: str | None = None) -> dict:
    """The open_clip settings of the model that embedded the workspace's images (OpenClipEmbedder's
    arguments), or NoTextTower saying why there is none. ``text_weights``: a local checkpoint of that
    model, for released embeddings whose weights are not in the cache."""
    embedder = meta.get("embedder")
    if embedder == "openclip":
        pretrained = meta.get("pretrained") or ""
        weights = text_weights or (pretrained if os.path.isfile(str(pretrained)) else None)
        return {"model": str(meta.get("model")), "pretrained": None if weights else (pretrained or "none"),
                "weights": weights, "seed": int(meta.get("seed") or 0)}
    if embedder == "released":
        tower = RELEASED_TOWERS.get((str(meta.get("model")), int(meta.get("image_dim") or 0)))
        if tower is None:
            raise NoTextTower(f"this workspace holds released embeddings ({meta.get('model')}, "
                              f"{meta.get('image_dim')}-d) of a model densprune does not know: a text query needs "
                              "the text tower that made the image vectors. Use caption search (--caption) or an "
                              "image query (--like ROW)")
        return {"model": tower[0], "pretrained": None if text_weights else tower[1], "weights": text_weights,
                "seed": 0}
    raise NoTextTower(f"this workspace was embedded by the {embedder or 'unknown'} embedder "
                      f"({meta.get('model')}), which has no text tower: a text cannot be placed among its "
                      "images. Use caption search (--caption) or an image query (--like ROW), or rebuild with "
                      "--embedder openclip")


@functools.lru_cache(maxsize=2)
def _text_tower(model: str, pretrained: str | None, weights: str | None, seed: int):
    from densprune.embed.models import OpenClipEmbedder

    return OpenClipEmbedder(model=model, pretrained=pretrained, weights=weights, device="cpu", seed=seed)


_TOWER_FAILED: dict[tuple, Exception] = {}  # a tower that failed to load fails at once the next time


def text_tower(meta: dict, text_weights: str | None = None):
    """The workspace's text tower (an OpenClipEmbedder, loaded once per process), or NoTextTower /
    WeightsUnavailable."""
    settings = text_tower_settings(meta, text_weights)
    key = tuple(sorted(settings.items()))
    if key in _TOWER_FAILED:
        raise _TOWER_FAILED[key]
    try:
        return _text_tower(**settings)
    except Exception as exc:
        from densprune.embed.models import WeightsUnavailable

        if isinstance(exc, WeightsUnavailable):
            exc = WeightsUnavailable(f"{exc}\nText search needs these weights (a local checkpoint of that model: "
                                     "`densprune search --text-weights PATH`); caption search (--caption) and image "
                                     "queries (--like ROW) work without them.")
            _TOWER_FAILED[key] = exc
            raise exc from None
        raise


def text_vector(workspace: str | os.PathLike, text: str, meta: dict | None = None,
                text_weights: str | None = None) -> np.ndarray:
    """(d,) float32 unit vector of ``text`` by the workspace's own text tower. NoTextTower when there is
    none, WeightsUnavailable when its weights cannot be had here, ValueError for an empty or long text."""
    import torch

    t = check_query_text(text)
    meta = db.load_meta(workspace) if meta is None else meta
    emb = text_tower(meta, text_weights)
    with torch.inference_mode():
        v = emb.net.encode_text(emb.tokenizer([t]).to(emb.device)).float().cpu().numpy()
    dim = int(meta.get("image_dim") or v.shape[1])
    if v.shape[1] != dim:
        raise NoTextTower(f"the text tower of {emb.model_name} gives {v.shape[1]}-d vectors, the workspace's images "
                          f"are {dim}-d: they were not made by the same model")
    return normalise(v)[0]


def _vectors(workspace: str | os.PathLike) -> np.ndarray:
    """The workspace's (N, d) image vectors, memory-mapped read-only: one mapping per version of the file
    per process, so that the pages a search touched stay mapped for the next one (a fresh mapping pays a
    page fault per row it gathers: about 0.3 s for the 160k scattered rows of an approximate search at
    10M rows, even with the file in the page cache)."""
    path = image_vectors(workspace)
    st = path.stat()
    return _mapped(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _mapped(path: str, mtime_ns: int, size: int) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def warm_search(workspace: str | os.PathLike, index=None, max_fraction_of_ram: float = 0.6) -> list[str]:
    """Make a server's first search as fast as its later ones: one small search (torch's import and first
    kernels, about 1.5 s), then, when the vector file is at most ``max_fraction_of_ram`` of the machine's
    memory (so the page cache can keep it), every page of it mapped into this process (one read per 64 KB,
    sequential; from a cold cache that reads the whole file), so that later searches gather rows without
    page faults. Meant for a server's warm-up thread. Returns what it did."""
    vectors = _vectors(workspace)
    top_k(vectors[:1], np.asarray(vectors[:1], dtype=np.float32), 1)
    done = ["search kernels"]
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return done
    if vectors.nbytes <= max_fraction_of_ram * ram:
        step = max(1, (64 << 10) // max(1, vectors.strides[0]))
        for lo in range(0, vectors.shape[0], 1 << 22):
            np.asarray(vectors[lo:lo + (1 << 22):step, 0]).sum()
        done.append("vector pages")
    return done


def like_vector(workspace: str | os.PathLike, row: int) -> np.ndarray:
    """(d,) float32 the stored image vector of ``row``; a ValueError naming the range when there is no such row."""
    vectors = _vectors(workspace)
    n = vectors.shape[0]
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= int(row) < n:
        raise ValueError(f"no row {row!r} in {workspace}: its rows are 0-{n - 1:,} (row_idx, as `densprune search "
                         "--caption` and the app show them)")
    return normalise(vectors[int(row)])[0]


def _candidates(index, query: np.ndarray, n: int, k: int = 100) -> tuple[np.ndarray, int]:
    """Sorted rows of the concepts nearest ``query`` until they hold APPROX_FRACTION of ``n`` rows (and at
    least 20 k); how many concepts that took."""
    order = probe_concepts(index.centroids, query, index.n_clusters)[0]
    need = max(APPROX_FRACTION * n, 20 * k)
    cum = np.cumsum(index.sizes[order])
    p = max(MIN_PROBE, int(np.searchsorted(cum, need)) + 1)
    p = min(p, index.n_clusters)
    return np.sort(np.concatenate([index.concept_rows(int(j))[0] for j in order[:p]])), p


def nearest(workspace: str | os.PathLike, query: np.ndarray, k: int = 100, *, kind: str, label: str,
            provenance: dict, exact: bool | None = None, exclude: np.ndarray | None = None,
            min_similarity: float | None = None, device: str = "auto", index=None) -> Selection:
    """The ``k`` images nearest ``query`` (d,) by cosine similarity (at least ``min_similarity`` when given):
    exact below APPROX_FROM_ROWS rows or with ``exact=True``, else among the nearest concepts' members.
    ``index``: the workspace's PlanIndex when the caller holds it (loading one maps N-sized arrays);
    ``device``: where the block products run ("auto": a GPU when torch sees one)."""
    from densprune.devices import resolve_device

    k = check_k(k)
    device = resolve_device(device)
    if min_similarity is not None and not -1.0 <= float(min_similarity) <= 1.0:
        raise ValueError(f"a similarity threshold is a cosine similarity in [-1, 1], got {min_similarity}")
    vectors = _vectors(workspace)
    n = vectors.shape[0]
    exact = n < APPROX_FROM_ROWS if exact is None else bool(exact)
    index = load_index(workspace) if index is None else index
    if exact:
        rows, sims = top_k(vectors, query, k, exclude=exclude, device=device)
        method, searched = f"exact over {n:,} rows", n
    else:
        cand, p = _candidates(index, query, n, k)
        rows, sims = top_k(vectors, query, k, rows=cand, exclude=exclude, device=device)
        method, searched = f"approximate: the {cand.size:,} images of the {p} concepts nearest the query", cand.size
    rows, sims = rows[0], sims[0]
    if min_similarity is not None:
        keep = sims >= float(min_similarity)
        rows, sims = rows[keep], sims[keep]
    prov = {**provenance, "k": k, "min_similarity": min_similarity, "method": method.split(":")[0]}
    return Selection(kind=kind, label=label, rows=rows, similarity=sims, concepts=concept_hits(index, rows, sims),
                     provenance=prov, method=method, searched=int(searched), total=int(rows.size))


def concept_hits(index, rows: np.ndarray, sims: np.ndarray | None = None) -> pd.DataFrame:
    """cluster, hits (of ``rows``), best (similarity; NaN without), images (the concept's rows), most hits first."""
    cl = index.clusters_of(rows)
    df = pd.DataFrame({"cluster": cl, "s": np.full(cl.size, np.nan) if sims is None else sims})
    out = df.groupby("cluster").agg(hits=("s", "size"), best=("s", "max")).reset_index()
    out["images"] = index.sizes[out["cluster"].to_numpy()].astype(np.int64)
    return out.sort_values(["hits", "best", "cluster"], ascending=[False, False, True]).reset_index(drop=True)


def caption_search(workspace: str | os.PathLike, text: str, index=None, every_word: bool = False) -> Selection:
    """Every row whose caption contains ``text`` (case-insensitive, literal: % and _ are characters), or with
    ``every_word`` each of its words in any order, in row order, with the match counts per concept
    (``index``: the workspace's PlanIndex, when held)."""
    t = check_query_text(text)
    words = list(dict.fromkeys(t.split())) if every_word else [t]
    words = [w for w in words if len(w) > 1] or words  # "a" is in almost every caption: it selects nothing
    rows = db.caption_rows(workspace, words)
    index = load_index(workspace) if index is None else index
    label = (f"captions containing {t!r}" if len(words) == 1 else
             "captions containing each of " + ", ".join(repr(w) for w in words))
    prov = {"caption": t, **({"every_word": True} if every_word else {})}
    return Selection(kind="caption", label=label, rows=rows, similarity=None, concepts=concept_hits(index, rows),
                     provenance=prov, method="caption match", searched=int(index.n_rows), total=int(rows.size))


def map_region(points: pd.DataFrame, centres: pd.DataFrame, sizes: np.ndarray, *,
               lasso: tuple[list, list] | None = None, box: tuple[tuple, tuple] | None = None) -> Selection:
    """The drawn points (points: row_idx, cluster, x, y: the map's sample) and the concepts whose centres
    (centres: cluster, x, y) lie inside a lasso (its x and y vertex lists) or a box ((x0, x1), (y0, y1)).

    rows are the drawn points inside; concepts lists every concept with a centre inside (hits: its drawn
    points inside, images: its rows, ``sizes`` (K,)), then concepts with only points inside. ``total`` is
    the images of the concepts whose centres are inside, ``searched`` the points drawn."""
    if (lasso is None) == (box is None):
        raise ValueError("give a lasso or a box")
    px, py = points["x"].to_numpy(), points["y"].to_numpy()
    cen = centres.dropna(subset=["x", "y"])
    cx, cy = cen["x"].to_numpy(), cen["y"].to_numpy()
    if lasso is not None:
        poly = check_polygon(*lasso)
        inside, cin = in_polygon(px, py, poly), in_polygon(cx, cy, poly)
        kind, prov = "lasso", {"lasso": [[round(float(a), 5), round(float(b), 5)] for a, b in poly]}
    else:
        (x0, x1), (y0, y1) = box
        inside, cin = in_box(px, py, (x0, x1), (y0, y1)), in_box(cx, cy, (x0, x1), (y0, y1))
        kind, prov = "box", {"box": [[float(x0), float(x1)], [float(y0), float(y1)]]}
    rows = np.sort(points["row_idx"].to_numpy(dtype=np.int64)[inside])
    hit_cl = points["cluster"].to_numpy(dtype=np.int64)[inside]
    centred = np.sort(cen["cluster"].to_numpy(dtype=np.int64)[cin])
    hits = pd.Series(hit_cl).value_counts()
    cl = np.union1d(centred, hits.index.to_numpy(dtype=np.int64))
    concepts = pd.DataFrame({"cluster": cl, "hits": hits.reindex(cl, fill_value=0).to_numpy(dtype=np.int64),
                             "best": np.nan, "images": np.asarray(sizes)[cl].astype(np.int64),
                             "centre_inside": np.isin(cl, centred)})
    concepts = concepts.sort_values(["centre_inside", "hits", "cluster"], ascending=[False, False, True])
    total = int(np.asarray(sizes)[centred].sum())
    prov.update(points=int(rows.size), drawn=int(len(points)), concepts=[int(c) for c in centred])
    label = (f"{rows.size:,} of the {len(points):,} drawn points; their {hits.size:,} concepts hold "
             f"{int(np.asarray(sizes)[hits.index.to_numpy(dtype=np.int64)].sum()):,} images; {centred.size:,} "
             f"concepts have their centre inside ({total:,} images)")
    return Selection(kind=kind, label=label, rows=rows, similarity=None, concepts=concepts.reset_index(drop=True),
                     provenance=prov, method="map", searched=int(len(points)), total=total)


def centre_rows(index, concepts: np.ndarray) -> np.ndarray:
    """(M,) int64 sorted: every row of ``concepts`` (to tag the concepts a region holds, not only its points)."""
    if len(concepts) == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate([index.concept_rows(int(j))[0] for j in concepts]))
