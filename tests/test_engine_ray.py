"""The Ray engine embeds the same shards as the local engine (a local Ray with 2 CPUs), the concept
embedder's second pass included."""

from __future__ import annotations

import numpy as np
import pytest

from densprune import db
from densprune.embed.runner import EmbedSettings
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.precompute import precompute

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def test_ray_engine_matches_local_engine(image_folder, tmp_path):
    def cfg(ws, engine):
        return PrecomputeConfig(source=str(image_folder), workspace=tmp_path / ws, embedder="offline", clusters=4,
                                layout_rows=1000, engine=engine, ray_actors=2, concept_embedder="timm",
                                concept_model="test_vit", concept_pretrained="none",
                                embed=EmbedSettings(batch_size=8, workers=0, shard_size=10))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = precompute(cfg("ray", "ray"))
    finally:
        ray.shutdown()
    local = precompute(cfg("local", "local"))
    np.testing.assert_allclose(np.load(distributed / "embeddings/image.npy"), np.load(local / "embeddings/image.npy"),
                               atol=1e-6)
    # the concept embedder's second pass runs on the actors too, over the rows the first pass accepted
    np.testing.assert_allclose(np.load(distributed / "embeddings/concept.npy").astype(np.float32),
                               np.load(local / "embeddings/concept.npy").astype(np.float32), atol=1e-3)
    assert np.load(distributed / "embeddings/concept.npy").shape == (48, 64)
    assert db.load_meta(distributed)["n_samples"] == 48
    assert "cannot decode" in db.load_rejects(distributed).reason[0]


def test_ray_assignment_statistics_and_semdedup_match_local(tmp_path, monkeypatch):
    """Released embeddings with --engine ray: assignment (tasks over row ranges, d_intra summed from their
    partial sums) and SemDeDup (tasks over groups) write the same workspace as the local engine."""
    from test_released import write_clip_retrieval

    from densprune.pipeline import on_ray as ray_stages

    write_clip_retrieval(tmp_path / "src", [150, 130, 120], d=16)
    monkeypatch.setattr(ray_stages, "ASSIGN_ROWS", 64)  # 7 assignment tasks
    monkeypatch.setattr(ray_stages, "DEDUP_ROWS", 90)  # several SemDeDup tasks of whole groups

    def build(name: str, engine: str):
        return precompute(PrecomputeConfig(source=str(tmp_path / "src"), workspace=tmp_path / name, clusters=6,
                                           layout_rows=100, engine=engine, dedup_clusters=12))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = build("ray", "ray")
    finally:
        ray.shutdown()
    local = build("local", "local")
    cols = "row_idx, uid, cluster, dist_to_centroid, rank_in_cluster, dup_max_sim, dup_of, clip_score"
    a = db.query_df(distributed, f"SELECT {cols} FROM samples ORDER BY row_idx")
    b = db.query_df(local, f"SELECT {cols} FROM samples ORDER BY row_idx")
    assert a.cluster.tolist() == b.cluster.tolist() and a.uid.tolist() == b.uid.tolist()
    np.testing.assert_allclose(a.dist_to_centroid, b.dist_to_centroid, rtol=0, atol=1e-6)
    assert a.rank_in_cluster.tolist() == b.rank_in_cluster.tolist()
    np.testing.assert_allclose(a.dup_max_sim, b.dup_max_sim, rtol=0, atol=1e-6)
    assert a.dup_of.tolist() == b.dup_of.tolist()
    ca, cb = db.load_clusters(distributed), db.load_clusters(local)
    np.testing.assert_allclose(ca.d_intra, cb.d_intra, rtol=1e-9)
    np.testing.assert_allclose(ca.complexity, cb.complexity, rtol=1e-9)
    assert (ca["size"] == cb["size"]).all()
    assert db.load_meta(distributed)["dedup_groups"] == db.load_meta(local)["dedup_groups"] > 6
    np.testing.assert_array_equal(np.load(distributed / "embeddings/image.npy"),
                                  np.load(local / "embeddings/image.npy"))
