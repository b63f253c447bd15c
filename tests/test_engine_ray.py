"""The Ray engine embeds the same shards as the local engine (a local Ray with 2 CPUs)."""

from __future__ import annotations

import numpy as np
import pytest

from densprune import db
from densprune.embed.runner import EmbedSettings
from densprune.precompute import PrecomputeConfig, precompute

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def test_ray_engine_matches_local_engine(image_folder, tmp_path):
    def cfg(ws, engine):
        return PrecomputeConfig(source=str(image_folder), workspace=tmp_path / ws, embedder="offline", clusters=4,
                                layout_rows=1000, engine=engine, ray_actors=2,
                                embed=EmbedSettings(batch_size=8, workers=0, shard_size=10))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = precompute(cfg("ray", "ray"))
    finally:
        ray.shutdown()
    local = precompute(cfg("local", "local"))
    np.testing.assert_allclose(np.load(distributed / "embeddings/image.npy"), np.load(local / "embeddings/image.npy"), atol=1e-6)
    assert db.load_meta(distributed)["n_samples"] == 48
    assert "cannot decode" in db.load_rejects(distributed).reason[0]
