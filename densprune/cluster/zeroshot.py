"""Zero-shot concept names: the vocabulary entry whose CLIP text embedding is nearest a concept centroid.

Only for workspaces with a CLIP text tower (the open_clip embedder). The vocabulary is embedded once,
with open_clip's own prompt templates averaged per entry (``open_clip.build_zero_shot_classifier``);
by default it is the 1,000 ImageNet class names that open_clip ships (offline), or one entry per line
of ``--label-vocabulary FILE``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densprune.cluster.labels import MAX_LABEL_CHARS, shorten
from densprune.vectors import l2_normalize
from densprune.workspace import save_npy

log = logging.getLogger(__name__)

MAX_VOCABULARY = 100_000  # entries; a (V, d) float32 matrix of 100k x 768 is 300 MB


class VocabularyError(ValueError):
    """The label vocabulary file is missing, empty or too large."""


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Entries to name concepts with, and where they came from (shown in the app)."""

    entries: tuple[str, ...]
    source: str  # e.g. "ImageNet class names (open_clip)" or the file name


def imagenet_vocabulary() -> Vocabulary:
    """open_clip's 1,000 ImageNet class names (shipped with the package, no download)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return Vocabulary(tuple(IMAGENET_CLASSNAMES), "ImageNet class names (open_clip)")


def read_vocabulary(path: str | Path) -> Vocabulary:
    """One entry per line of a UTF-8 text file; blank lines and lines starting with '#' are skipped,
    duplicates dropped, entries cut to MAX_LABEL_CHARS characters."""
    p = Path(path)
    if not p.is_file():
        raise VocabularyError(f"--label-vocabulary {p}: no such file (give a text file with one name per line)")
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    entries = [shorten(x.strip(), MAX_LABEL_CHARS) for x in lines if x.strip() and not x.lstrip().startswith("#")]
    entries = list(dict.fromkeys(entries))
    if not entries:
        raise VocabularyError(f"--label-vocabulary {p}: no entries (one name per line; '#' starts a comment)")
    if len(entries) > MAX_VOCABULARY:
        raise VocabularyError(f"--label-vocabulary {p}: {len(entries):,} entries, at most {MAX_VOCABULARY:,}")
    return Vocabulary(tuple(entries), p.name)


def load_vocabulary(path: str | Path | None) -> Vocabulary:
    return imagenet_vocabulary() if path is None else read_vocabulary(path)


def zero_shot_names(centroids: np.ndarray, vocab_emb: np.ndarray,
                    entries: tuple[str, ...] | list[str]) -> tuple[list[str], np.ndarray]:
    """Name each concept by its nearest vocabulary entry.

    centroids: (K, d), vocab_emb: (V, d) (both normalised here) -> K names and (K,) float64 cosine
    similarities between each centroid and its entry.
    """
    c = np.asarray(centroids, dtype=np.float32)
    v = np.asarray(vocab_emb, dtype=np.float32)
    if c.shape[1] != v.shape[1]:
        raise ValueError(f"centroids are {c.shape[1]}-d but the vocabulary embeddings {v.shape[1]}-d")
    if v.shape[0] != len(entries):
        raise ValueError(f"{v.shape[0]} vocabulary embeddings for {len(entries)} entries")
    c, v = l2_normalize(c), l2_normalize(v)
    sims = c @ v.T  # (K, V)
    best = np.argmax(sims, axis=1)
    return [entries[int(b)] for b in best], sims[np.arange(c.shape[0]), best].astype(np.float64)


VOCAB_VECTORS = "vocabulary.npy"  # DIR/embeddings/: (V, d) float32 text embeddings of the entries
VOCAB_ENTRIES = "vocabulary.json"  # DIR/embeddings/: {"source": ..., "entries": [...]}, row v = entry v


def save_vocabulary(folder: Path, vocab: Vocabulary, vectors: np.ndarray) -> None:
    """Keep the zero-shot vocabulary and its (V, d) text embeddings beside the image vectors, so that a
    later re-clustering names its new concepts without loading the model again."""
    if vectors.shape[0] != len(vocab.entries):
        raise ValueError(f"{vectors.shape[0]} vocabulary embeddings for {len(vocab.entries)} entries")
    folder.mkdir(parents=True, exist_ok=True)
    tmp_json = folder / (VOCAB_ENTRIES + ".tmp")
    tmp_json.write_text(json.dumps({"source": vocab.source, "entries": list(vocab.entries)}))
    save_npy(folder / VOCAB_VECTORS, vectors, np.float32)
    os.replace(tmp_json, folder / VOCAB_ENTRIES)


def load_saved_vocabulary(folder: Path) -> tuple[Vocabulary, np.ndarray] | None:
    """The vocabulary and (V, d) embeddings saved by :func:`save_vocabulary`, or None when there are none
    (an embedder without a text tower, or a workspace built before they were kept)."""
    vec, ent = folder / VOCAB_VECTORS, folder / VOCAB_ENTRIES
    if not (vec.exists() and ent.exists()):
        return None
    doc = json.loads(ent.read_text())
    vectors = np.load(vec)
    if vectors.shape[0] != len(doc["entries"]):
        raise ValueError(f"{vec}: {vectors.shape[0]} rows for {len(doc['entries'])} entries in {ent}; "
                         "rebuild the workspace with --force")
    return Vocabulary(tuple(doc["entries"]), doc["source"]), vectors
