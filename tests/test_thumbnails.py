"""Thumbnail modes: all rows, a sample per concept (the rows the app shows first), none; the app reads
the others from their source (file, tar member, parquet row)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import encode, make_image
from PIL import Image

from densprune import db
from densprune.app.thumbgrid import read_thumbs, source_thumbnail
from densprune.embed.runner import EmbedSettings
from densprune.embed.thumbnails import (
    AUTO_ALL_MAX_ROWS,
    resolve_thumbnails,
    sample_rows,
)
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.precompute import precompute


def _build(source, ws, mode, **kw):
    kw.setdefault("clusters", 4)
    return precompute(PrecomputeConfig(source=str(source), workspace=ws, embedder="offline",
                                       layout_rows=1000, thumbnails=mode,
                                       embed=EmbedSettings(batch_size=8, workers=0, shard_size=16), **kw))


def _samples(ws):
    return db.query_df(ws, "SELECT row_idx, cluster, rank_in_cluster, thumb_offset, thumb_size, image_loc "
                           "FROM samples ORDER BY row_idx")


def _decodes(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).load()
        return True
    except OSError:
        return False


def test_modes_resolve_by_size():
    assert resolve_thumbnails("auto", AUTO_ALL_MAX_ROWS) == "all"
    assert resolve_thumbnails("auto", AUTO_ALL_MAX_ROWS + 1) == "sample"
    assert resolve_thumbnails("none", 10) == "none"
    with pytest.raises(ValueError, match="--thumbnails"):
        resolve_thumbnails("some", 10)
    assert sample_rows(np.array([0, 3, 1, 2, 0]), 2).tolist() == [0, 2, 4]


def test_sample_mode_keeps_the_rows_nearest_each_centre(image_folder, tmp_path):
    ws = _build(image_folder, tmp_path / "ws", "sample", thumbs_per_concept=3)
    s = _samples(ws)
    assert db.load_meta(ws)["thumbnails"] == "sample"
    has = s.thumb_size > 0
    assert (has == (s.rank_in_cluster < 3)).all()
    assert has.sum() == sum(min(3, n) for n in s.cluster.value_counts())
    thumbs = read_thumbs(ws, s.thumb_offset, s.thumb_size)
    assert all(_decodes(t) for t, h in zip(thumbs, has) if h) and not any(t for t, h in zip(thumbs, has) if not h)
    # the app reads every other image from its source
    thumbs = read_thumbs(ws, s.thumb_offset, s.thumb_size, list(s.image_loc))
    assert all(_decodes(t) and max(Image.open(io.BytesIO(t)).size) <= 128 for t in thumbs)


def test_none_mode_writes_no_thumbnails_and_the_app_reads_sources(wds_shards, tmp_path):
    ws = _build(wds_shards[0].parent, tmp_path / "ws", "none", clusters=3)
    s = _samples(ws)
    assert (s.thumb_size == 0).all() and (ws / "thumbs.bin").stat().st_size == 0
    assert json.loads(s.image_loc[0])[0] == "tar"
    thumbs = read_thumbs(ws, s.thumb_offset, s.thumb_size, list(s.image_loc))
    assert all(_decodes(t) for t in thumbs)


def test_all_mode_reuses_small_source_jpegs(wds_shards, tmp_path):
    ws = _build(wds_shards[0].parent, tmp_path / "ws", "all", clusters=3)
    s = _samples(ws)
    blob = (ws / "thumbs.bin").read_bytes()
    first = blob[s.thumb_offset[0]:s.thumb_offset[0] + s.thumb_size[0]]
    _, path, offset, size = json.loads(s.image_loc[0])
    with open(path, "rb") as fh:
        fh.seek(offset)
        assert fh.read(size) == first  # a 64 px JPEG is its own thumbnail


def test_source_thumbnail_of_a_parquet_row_and_of_bad_locations(tmp_path):

    df = pd.DataFrame({"caption": ["a", "b"],
                       "image": [encode(make_image((9, 9, 200), "square", size=300), "PNG")] * 2})
    df.to_parquet(tmp_path / "t.parquet", row_group_size=1)
    t = source_thumbnail(json.dumps(["parquet", str(tmp_path / "t.parquet"), 1, "image"]))
    assert Image.open(io.BytesIO(t)).size == (128, 128)
    assert source_thumbnail(json.dumps(["parquet", str(tmp_path / "t.parquet"), 5, "image"])) == b""
    assert source_thumbnail(json.dumps(["file", str(tmp_path / "missing.jpg")])) == b""
    assert source_thumbnail(json.dumps(["http", "x"])) == b""
    assert source_thumbnail("not json") == b"" and source_thumbnail(None) == b""


def test_preview_pairs_read_images_from_source_in_sample_mode(image_folder, tmp_path):
    """--thumbnails sample: the near-duplicate pairs on Preview show every image (from thumbs.bin or from
    its source), like every other grid. (The page used to read the pairs again without the locations.)"""
    from streamlit.testing.v1 import AppTest

    from densprune.app.session import VIEWS

    ws = _build(image_folder, tmp_path / "ws", "sample", thumbs_per_concept=1)
    s = _samples(ws)
    assert (s.thumb_size == 0).sum() > len(s) / 2  # most rows have no stored thumbnail
    at = AppTest.from_file(str(VIEWS.parent / "main.py"), default_timeout=60)
    at.session_state["workspace"] = str(ws)
    at.run()
    at.switch_page(str(VIEWS / "preview.py")).run()
    pairs_seen = 0
    for concept in at.selectbox(key="preview_concept").options:
        at.selectbox(key="preview_concept").set_value(concept)
        at.slider(key="preview_eps").set_value(0.3).run()
        assert not at.exception, [e.value for e in at.exception]
        [pairs] = [h.proto.body for h in at.html if "dp-pairs" in h.proto.body] or [""]
        n = pairs.count('class="dp-pair"')
        pairs_seen += n
        assert pairs.count("<img ") == 2 * n, f"concept {concept}: {pairs.count('dp-miss')} pair tiles without an image"
    assert pairs_seen > 0
