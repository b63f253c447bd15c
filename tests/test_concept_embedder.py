"""A second embedder for the concepts (``--concept-embedder``, ``--concept-vectors``), as the DBP paper
clustered DINOv2 features and kept CLIP for the CLIP score.

The concept model is timm's ``test_vit`` with random weights (no weights can be downloaded here; a
random DINOv2 gives every image the same vector, its LayerScale starts at 1e-5) and the CLIP model
densprune-tiny with random weights: the numbers mean nothing, the wiring is what is tested. The
workspace is built with the installed console command, as a user types it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from densprune import db
from densprune.cluster.concepts import mean_directions
from densprune.cluster.zeroshot import load_saved_vocabulary, zero_shot_names
from densprune.embed.models import TimmEmbedder, WeightsUnavailable
from densprune.workspace import concept_space, concept_vectors, embeddings_dir, image_vectors

sys.path.insert(0, str(Path(__file__).parent))
from conftest import COLORS, SHAPES, encode, make_image  # noqa: E402
from console import run_densprune  # noqa: E402

CONCEPT_FLAGS = ("--concept-embedder", "timm", "--concept-model", "test_vit", "--concept-pretrained", "none")
CLIP_FLAGS = ("--embedder", "openclip", "--model", "densprune-tiny", "--pretrained", "none")


def write_images(root: Path, per_colour: int = 8) -> Path:
    n = 0
    for color, rgb in COLORS.items():
        (root / color).mkdir(parents=True)
        for j in range(per_colour):
            shape = SHAPES[j % len(SHAPES)]
            (root / color / f"s{j}.jpg").write_bytes(encode(make_image(rgb, shape, seed=n), "JPEG"))
            (root / color / f"s{j}.txt").write_text(f"a {color} {shape} number {j}")
            n += 1
    return root


@pytest.fixture(scope="module")
def concept_ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concepts")
    write_images(root / "images")
    (root / "vocab.txt").write_text("red thing\ngreen thing\nblue thing\nyellow thing\ncircle\nsquare\n")
    out = run_densprune("precompute", root / "images", "--workspace", root / "ws", *CLIP_FLAGS, *CONCEPT_FLAGS,
                        "-k", "3", "--eval-per-category", "0", "--workers", "0", "--batch-size", "8",
                        "--label-vocabulary", root / "vocab.txt")
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "ws"


def test_mean_directions_match_a_direct_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    labels[labels == 2] = 1  # concept 2 has no member
    mask = rng.random(300) < 0.7
    got = mean_directions(x, labels, 4, mask, block=64)
    for j in range(4):
        rows = x[(labels == j) & mask]
        if not rows.size:
            np.testing.assert_array_equal(got[j], 0)
            continue
        want = rows.sum(0) / np.linalg.norm(rows.sum(0))
        np.testing.assert_allclose(got[j], want, atol=1e-6)


def test_concepts_live_in_the_concept_space_and_clip_keeps_the_rest(concept_ws):
    meta = db.load_meta(concept_ws)
    assert meta["concept_embedder"] == {"name": "timm", "model": "test_vit", "pretrained": None, "image_size": None}
    image = np.load(image_vectors(concept_ws)).astype(np.float32)
    concept = np.load(concept_vectors(concept_ws)).astype(np.float32)
    assert concept_space(concept_ws, meta) == concept_vectors(concept_ws)
    assert concept.shape == (32, meta["concept_dim"]) and image.shape == (32, meta["image_dim"])
    assert meta["concept_dim"] != meta["image_dim"]  # 64-d test_vit vs 128-d densprune-tiny
    np.testing.assert_allclose(np.linalg.norm(concept, axis=1), 1, atol=2e-3)
    centroids = np.load(concept_ws / "centroids.npy")
    assert centroids.shape == (3, meta["concept_dim"])
    s = db.load_sample_arrays(concept_ws, ("cluster", "dist_to_centroid", "clip_score", "caption"))
    np.testing.assert_array_equal(s["cluster"], np.argmax(concept @ centroids.T, axis=1))  # k-means on concepts
    np.testing.assert_allclose(s["dist_to_centroid"], 1 - (concept * centroids[s["cluster"]]).sum(1), atol=2e-3)
    text = np.load(embeddings_dir(concept_ws) / "text.npy").astype(np.float32)
    np.testing.assert_allclose(s["clip_score"], (image * text).sum(1), atol=2e-3)  # CLIP score from CLIP vectors
    # zero-shot names: each concept's mean CLIP image direction against the CLIP text of the vocabulary
    vocab, vectors = load_saved_vocabulary(embeddings_dir(concept_ws))
    names, sims = zero_shot_names(mean_directions(image, s["cluster"], 3), vectors, vocab.entries)
    clusters = db.load_clusters(concept_ws).sort_values("cluster")
    assert clusters.zs_label.tolist() == names
    np.testing.assert_allclose(clusters.zs_similarity, sims, atol=1e-4)


def test_info_verify_and_the_app_name_the_concept_embedder(concept_ws):
    from streamlit.testing.v1 import AppTest

    from densprune.app import page_data

    info = run_densprune("info", concept_ws)
    assert info.returncode == 0, info.stderr
    assert "concepts from  timm (test_vit / random weights), 64-d" in info.stdout
    as_json = json.loads(run_densprune("info", concept_ws, "--json").stdout)
    assert as_json["concept_embedder"]["model"] == "test_vit" and as_json["concept_dim"] == 64
    check = run_densprune("verify", concept_ws)
    assert check.returncode == 0 and "holds together" in check.stdout, check.stdout + check.stderr
    steps = page_data.pipeline_steps(concept_ws, db.load_meta(concept_ws), db.counts(concept_ws))
    assert "2b. embed for concepts" in steps.step.tolist()
    at = AppTest.from_file(str(Path(__file__).parent.parent / "app.py"), default_timeout=60)
    at.session_state["workspace"] = str(concept_ws)
    at.run()  # the Overview
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(m.value for m in at.markdown).replace("\\", "")  # markdown escapes
    assert "Concepts built on:" in shown and "test_vit" in shown


def test_a_broken_concept_vector_file_fails_verify(concept_ws, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(concept_ws, ws)
    bad = np.load(concept_vectors(ws))
    np.save(concept_vectors(ws), bad[:-1])  # a row short
    out = run_densprune("verify", ws)
    assert out.returncode != 0 and "concept.npy" in out.stdout and "one row per sample" in out.stdout


def test_recluster_stays_in_the_concept_space(concept_ws, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(concept_ws, ws)
    out = run_densprune("recluster", ws, "--dedup-eps", "0.05", "--clusters", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    meta = db.load_meta(ws)
    centroids = np.load(ws / "centroids.npy")
    concept = np.load(concept_vectors(ws)).astype(np.float32)
    assert centroids.shape == (2, meta["concept_dim"])
    np.testing.assert_array_equal(db.load_sample_arrays(ws, ("cluster",))["cluster"],
                                  np.argmax(concept @ centroids.T, axis=1))
    assert run_densprune("verify", ws).returncode == 0


def test_a_rebuild_without_it_removes_the_concept_vectors(concept_ws, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(concept_ws, ws)
    src = db.load_meta(ws)["source"]
    out = run_densprune("precompute", src, "--workspace", ws, *CLIP_FLAGS, "-k", "3", "--eval-per-category", "0",
                        "--workers", "0", "--force", "--label-vocabulary", concept_ws.parent / "vocab.txt")
    assert out.returncode == 0, out.stderr[-2000:]
    meta = db.load_meta(ws)
    assert meta["concept_embedder"] is None and meta["concept_dim"] == 0
    assert not concept_vectors(ws).exists() and concept_space(ws, meta) == image_vectors(ws)
    assert run_densprune("verify", ws).returncode == 0


def test_missing_weights_fail_before_anything_is_written(tmp_path):
    write_images(tmp_path / "images", per_colour=2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = run_densprune("precompute", tmp_path / "images", "--workspace", tmp_path / "ws", *CLIP_FLAGS,
                        "--concept-embedder", "timm", env=env)  # DINOv2-L/14 from the hub: not reachable
    assert out.returncode != 0
    assert "vit_large_patch14_dinov2.lvd142m" in out.stderr and "--concept-weights PATH" in out.stderr
    assert not (tmp_path / "ws").exists()
    out = run_densprune("precompute", tmp_path / "images", "--workspace", tmp_path / "ws", *CLIP_FLAGS,
                        "--concept-embedder", "timm", "--concept-weights", tmp_path / "nope.safetensors")
    assert out.returncode != 0 and "nope.safetensors: file not found" in out.stderr
    assert not (tmp_path / "ws").exists()


def test_local_weights_load_and_a_checkpoint_that_does_not_fit_is_named(tmp_path):
    import torch
    from PIL import Image

    donor = TimmEmbedder("test_vit", pretrained="none", device="cpu", seed=7)
    path = tmp_path / "test_vit.pth"
    torch.save(donor.net.state_dict(), path)
    loaded = TimmEmbedder("test_vit", weights=str(path), device="cpu", seed=0)  # seed 0 alone would differ
    assert loaded.pretrained == str(path)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    prep = donor.worker_prep()
    x = torch.stack([prep.image(img), prep.image(img.rotate(90))])
    np.testing.assert_allclose(loaded.embed(x)[0].numpy(), donor.embed(x)[0].numpy(), atol=1e-6)
    other = tmp_path / "resnet.pth"
    torch.save(TimmEmbedder("test_resnet", pretrained="none", device="cpu").net.state_dict(), other)
    with pytest.raises(WeightsUnavailable, match="cannot load timm model test_vit from .*resnet.pth"):
        TimmEmbedder("test_vit", weights=str(other), device="cpu")


def test_a_row_the_concept_pass_cannot_decode_stops_the_build(tmp_path):
    from densprune.embed.runner import EmbedSettings, embed_source
    from densprune.embed.shards import SecondPassMismatch, assemble_rows
    from densprune.ingest.sources import list_source

    write_images(tmp_path / "images", per_colour=2)
    refs = list_source(str(tmp_path / "images")).refs
    bad = Path(refs[3].image_ref)
    bad.write_bytes(b"not an image any more")  # changed after the first pass accepted it
    emb = TimmEmbedder("test_vit", pretrained="none", device="cpu")
    shards = embed_source(refs, emb, tmp_path / "work", EmbedSettings(workers=0, thumbnails=False), progress=False)
    out = tmp_path / "concept.npy"
    with pytest.raises(SecondPassMismatch, match=f"1 images .*{refs[3].key}"):
        assemble_rows(refs, shards, out)
    assert not out.exists() and not out.with_name("concept.npy.tmp").exists()


def test_released_embeddings_take_precomputed_concept_vectors(tmp_path):
    from test_released import write_clip_retrieval

    write_clip_retrieval(tmp_path / "src", [20, 25], d=16)
    rng = np.random.default_rng(3)
    concept = rng.normal(size=(45, 6)).astype(np.float32)
    concept[7] = np.nan  # a bad concept row: rejected, with its row
    np.save(tmp_path / "concept.npy", concept)
    out = run_densprune("precompute", tmp_path / "src", "--workspace", tmp_path / "ws", "-k", "3",
                        "--concept-vectors", tmp_path / "concept.npy")
    assert out.returncode == 0, out.stderr[-2000:]
    ws = tmp_path / "ws"
    meta = db.load_meta(ws)
    assert meta["concept_embedder"]["name"] == "vectors" and meta["concept_dim"] == 6 and meta["n_samples"] == 44
    reasons = " ".join(db.load_rejects(ws).reason)
    assert "concept image embedding has NaN or inf values (--concept-vectors row 7)" in reasons
    kept = np.delete(concept, 7, axis=0)
    kept /= np.linalg.norm(kept, axis=1, keepdims=True)
    stored = np.load(concept_vectors(ws)).astype(np.float32)
    np.testing.assert_allclose(stored, kept, atol=2e-3)  # rows stay aligned past the rejected one
    centroids = np.load(ws / "centroids.npy")
    np.testing.assert_array_equal(db.load_sample_arrays(ws, ("cluster",))["cluster"],
                                  np.argmax(stored @ centroids.T, axis=1))
    assert run_densprune("verify", ws).returncode == 0
    short = tmp_path / "short.npy"
    np.save(short, concept[:10])
    out = run_densprune("precompute", tmp_path / "src", "--workspace", tmp_path / "ws2", "--concept-vectors", short)
    assert out.returncode != 0 and "shape (10, 6), expected (45, d)" in out.stderr
    assert not (tmp_path / "ws2").exists()


def test_the_flags_refuse_the_wrong_kind_of_source(tmp_path):
    from test_released import write_clip_retrieval

    write_clip_retrieval(tmp_path / "src", [5], d=8)
    out = run_densprune("precompute", tmp_path / "src", "--workspace", tmp_path / "ws", *CONCEPT_FLAGS)
    assert out.returncode != 0 and "--concept-vectors FILE.npy" in out.stderr
    write_images(tmp_path / "images", per_colour=1)
    np.save(tmp_path / "c.npy", np.ones((4, 3), np.float32))
    out = run_densprune("precompute", tmp_path / "images", "--workspace", tmp_path / "ws", "--embedder", "offline",
                        "--concept-vectors", tmp_path / "c.npy")
    assert out.returncode != 0 and "--concept-embedder timm" in out.stderr
