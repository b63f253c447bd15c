"""Zero-shot concept names: the numpy core on planted vectors, the open_clip mechanics on densprune-tiny
(random weights: the names mean nothing, but every step runs), vocabulary files, and the workspace columns."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.cluster.zeroshot import (
    VocabularyError,
    imagenet_vocabulary,
    read_vocabulary,
    zero_shot_names,
)


def test_nearest_entry_and_its_similarity():
    rng = np.random.default_rng(0)
    vocab = rng.normal(size=(5, 16)).astype(np.float32)
    vocab /= np.linalg.norm(vocab, axis=1, keepdims=True)
    entries = ["apple", "boat", "cat", "drum", "eagle"]
    centroids = vocab[[3, 0, 3]] * 2.0 + 0.01 * rng.normal(size=(3, 16))  # scale must not matter
    names, sims = zero_shot_names(centroids, vocab, entries)
    assert names == ["drum", "apple", "drum"]
    c = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, np.einsum("ij,ij->i", c, vocab[[3, 0, 3]]), rtol=1e-5)
    with pytest.raises(ValueError, match="8-d"):
        zero_shot_names(centroids[:, :8], vocab, entries)


def test_vocabulary_file(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("# my names\nred fox\n\nred fox\n" + "x" * 80 + "\nsea turtle\n", encoding="utf-8")
    v = read_vocabulary(p)
    assert v.entries[0] == "red fox" and v.entries[-1] == "sea turtle" and len(v.entries) == 3
    assert all(len(e) <= 40 for e in v.entries) and v.source == "vocab.txt"
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(VocabularyError, match="no entries"):
        read_vocabulary(tmp_path / "empty.txt")
    with pytest.raises(VocabularyError, match="no such file"):
        read_vocabulary(tmp_path / "missing.txt")


def test_imagenet_vocabulary_ships_with_open_clip():
    v = imagenet_vocabulary()
    assert len(v.entries) == 1000 and "goldfish" in v.entries


def test_open_clip_vocabulary_embeddings_name_planted_centroids():
    """densprune-tiny, random weights: the text tower embeds the vocabulary; a centroid placed on an
    entry's text embedding is named by that entry with similarity ~1."""
    from densprune.embed.models import OpenClipEmbedder

    emb = OpenClipEmbedder(model="densprune-tiny", pretrained="none", device="cpu")
    entries = ("red fox", "sea turtle", "fire truck", "teapot")
    vecs = emb.embed_vocabulary(entries)
    assert vecs.shape[0] == 4 and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(emb.embed_vocabulary(entries), vecs)  # deterministic
    names, sims = zero_shot_names(vecs[[2, 0]], vecs, entries)
    assert names == ["fire truck", "red fox"]
    np.testing.assert_allclose(sims, 1.0, atol=1e-5)
