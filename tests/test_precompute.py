"""End-to-end precompute: folder / webdataset sources, resume, rejects, open_clip path, the demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densprune import db
from densprune.cli.main import main
from densprune.embed import runner as workspace  # precompute imports the (torch) runner when it embeds
from densprune.embed.runner import EmbedSettings
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.precompute import precompute


def _cfg(source, ws, **kw) -> PrecomputeConfig:
    embed = EmbedSettings(batch_size=8, workers=kw.pop("workers", 0), shard_size=kw.pop("shard_size", 16))
    return PrecomputeConfig(source=str(source), workspace=ws, embedder=kw.pop("embedder", "offline"),
                            clusters=kw.pop("clusters", 4), layout_rows=1000, embed=embed, **kw)


def test_folder_source_builds_complete_workspace(image_folder, tmp_path):
    ws = precompute(_cfg(image_folder, tmp_path / "ws", workers=2, clusters=8))
    meta = db.load_meta(ws)
    assert meta["embedder"] == "offline" and meta["k"] == 8 and meta["n_samples"] == 48
    assert meta["has_clip_scores"] is False
    rejects = db.load_rejects(ws)
    assert len(rejects) == 1 and "broken.jpg" in rejects.key[0] and "cannot decode" in rejects.reason[0]
    x = np.load(ws / "embeddings" / "image.npy", mmap_mode="r")
    assert x.shape[0] == 48
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert not (ws / "embeddings" / "text.npy").exists()
    s = db.query_df(ws, "SELECT * FROM samples ORDER BY row_idx")
    assert list(s.row_idx) == list(range(48))
    assert s.uid.str.fullmatch(r"[0-9a-f]{32}").all() and s.uid.is_unique
    assert s.clip_score.isna().all()
    assert (s.dist_to_centroid >= 0).all()
    # the folder name is the category (the colour): the offline vectors must separate colours
    lab = s.category.to_numpy()
    same = lab[:, None] == lab[None, :]
    sim = np.asarray(x) @ np.asarray(x).T
    assert sim[same].mean() > sim[~same].mean() + 0.3
    c = db.load_clusters(ws)
    assert c["size"].sum() == 48
    np.testing.assert_allclose(c.complexity, c.d_intra * c.d_inter)
    cent = np.load(ws / "centroids.npy")
    assert cent.shape == (8, x.shape[1])
    # stats against a direct computation from the stored vectors
    for j in range(8):
        rows = s.row_idx[s.cluster == j].to_numpy()
        np.testing.assert_allclose(c.d_intra[j], np.mean(1 - x[rows] @ cent[j]), atol=1e-5)
    # thumbnails are addressable
    blob = (ws / "thumbs.bin").read_bytes()
    first = blob[s.thumb_offset[0]: s.thumb_offset[0] + s.thumb_size[0]]
    assert first[:4] in (b"RIFF", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb") or first[:2] == b"\xff\xd8"
    assert len(db.query_df(ws, "SELECT * FROM layout")) == 48
    assert not (ws / ".work").exists() or not any((ws / ".work").iterdir())


def _interrupt_after(n: int):
    """An on_shard callback that interrupts the stage (as Ctrl-C would) once n shards are written."""
    def on_shard(written: int, path) -> None:
        if written >= n:
            raise KeyboardInterrupt(f"interrupted after {written} shards")
    return on_shard


def test_interrupted_run_resumes_and_matches_a_clean_run(image_folder, tmp_path, monkeypatch, caplog):
    real = workspace.embed_source
    monkeypatch.setattr(workspace, "embed_source", lambda *a, **k: real(*a, **k, on_shard=_interrupt_after(2)))
    ws = tmp_path / "ws"
    with pytest.raises(KeyboardInterrupt):
        precompute(_cfg(image_folder, ws))
    assert not db.is_complete(ws)  # nothing looks complete after a crash
    shards = list((ws / ".work").rglob("shard-*.npz"))
    assert len(shards) == 2
    monkeypatch.setattr(workspace, "embed_source", real)
    caplog.set_level("INFO")
    precompute(_cfg(image_folder, ws))
    assert "resuming: 2 of 4 shards" in caplog.text
    clean = precompute(_cfg(image_folder, tmp_path / "clean"))
    np.testing.assert_allclose(np.load(ws / "embeddings/image.npy"), np.load(clean / "embeddings/image.npy"), atol=1e-6)
    assert db.load_meta(ws)["n_samples"] == 48


def test_existing_workspace_needs_force(image_folder, tmp_path):
    ws = precompute(_cfg(image_folder, tmp_path / "ws"))
    with pytest.raises(FileExistsError, match="--force"):
        precompute(_cfg(image_folder, ws))
    precompute(_cfg(image_folder, ws, force=True))
    assert db.is_complete(ws)


def test_openclip_path_with_random_tiny_model(wds_shards, tmp_path):
    """The real open_clip code path, with a small randomly initialised model (no weights here)."""
    ws = precompute(_cfg(str(wds_shards[0].parent / "*.tar"), tmp_path / "ws", embedder="openclip",
                         model="densprune-tiny", pretrained="none", clusters=3))
    meta = db.load_meta(ws)
    assert meta["embedder"] == "openclip" and meta["model"] == "densprune-tiny" and meta["has_clip_scores"]
    img = np.load(ws / "embeddings/image.npy")
    txt = np.load(ws / "embeddings/text.npy")
    assert img.shape == txt.shape == (19, 128)
    assert img.dtype == txt.dtype == np.float16 and meta["dtype"] == "float16"  # the open_clip default
    img, txt = img.astype(np.float32), txt.astype(np.float32)
    s = db.query_df(ws, "SELECT uid, clip_score FROM samples ORDER BY row_idx")
    np.testing.assert_allclose(s.clip_score, np.sum(img * txt, axis=1), atol=1e-5)
    assert s.uid[0] == f"{0:032x}"  # the shard's own DataComp uid is kept
    assert "no image member" in db.load_rejects(ws).reason[0]


def test_missing_weights_fail_fast_with_guidance(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    code = main(["precompute", str(image_folder), "--workspace", str(tmp_path / "ws"), "--embedder", "openclip"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--weights" in err and "--embedder offline" in err
    assert not db.is_complete(tmp_path / "ws")


@pytest.mark.slow
def test_demo_workspace_end_to_end(demo_workspace, capsys):
    meta = db.load_meta(demo_workspace)
    assert meta["n_samples"] == 8121 and meta["source_kind"] == "demo"
    assert meta["n_eval"] == 20 * len(db.query_df(demo_workspace, "SELECT DISTINCT top_category FROM samples "
                                                                  "WHERE split = 'eval'"))
    s = db.query_df(demo_workspace, "SELECT category, top_category, split, cluster FROM samples")
    assert s.category.notna().all()
    c = db.load_clusters(demo_workspace)
    pct = c.set_index("cluster").complexity.rank(pct=True)
    # the near-identical stars land in the least complex concepts, animals and food in complex ones
    assert pct[s.cluster[s.category == "shapes/stars"]].mean() < 0.25
    assert pct[s.cluster[s.top_category == "animals"]].mean() > 0.6
    assert pct[s.cluster[s.top_category == "food"]].mean() > 0.6
    assert len(c) == meta["k"] and c.label.str.len().gt(0).mean() > 0.9
    assert main(["info", str(demo_workspace), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embedder"] == "offline" and info["tables"]["samples"] == 8121
