"""Released embeddings (clip-retrieval and DataComp layouts): readers, validation, and whole workspaces.

Every generated row carries its source position in its caption ("s{shard} r{row}"), so the tests can
check that the caption, uid, size, URL and vector of workspace row i all come from the same source row.
"""

from __future__ import annotations

import hashlib
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from densprune import db
from densprune.cli.main import main
from densprune.export.writers import export_plan
from densprune.ingest.released import (
    ReleasedError,
    detect_layout,
    open_released,
    row_problems,
)
from densprune.ingest.uids import first_occurrences, uid_ints
from densprune.pipeline.config import PrecomputeConfig
from densprune.pipeline.from_released import copy_stage, scan_stage
from densprune.pipeline.precompute import precompute
from densprune.prune.plans import save_plan
from densprune.prune.selection import PlanParams
from densprune.vectors import NpyRows

CAPTION_RE = re.compile(r"s(\d+) r(\d+)")


def clustered(rng: np.random.Generator, n: int, d: int, k: int = 5, spread: float = 0.25) -> np.ndarray:
    """(n, d) unit vectors around k random centres (not normalised further by the caller)."""
    centres = rng.normal(size=(k, d))
    x = centres[rng.integers(0, k, n)] + spread * rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_clip_retrieval(root: Path, sizes: list[int], d: int = 16, text: bool = True, seed: int = 0,
                         dtype: str = "float16") -> dict[tuple[int, int], dict]:
    """A clip-retrieval folder; returns {(shard, row): {"image", "text", "key", "width", ...}} of every source row."""
    rng = np.random.default_rng(seed)
    for sub in ("img_emb", "metadata") + (("text_emb",) if text else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = {}
    for k, n in enumerate(sizes):
        img = clustered(rng, n, d).astype(dtype)
        txt = clustered(rng, n, d).astype(dtype)
        keys = [f"{k:05d}{i:04d}" for i in range(n)]
        meta = {"caption": [f"photo of thing s{k} r{i}" for i in range(n)],
                "url": [f"https://img.example/{k}/{i}.jpg" for i in range(n)],
                "key": keys, "similarity": rng.random(n), "width": rng.integers(10, 2000, n),
                "height": rng.integers(10, 2000, n)}
        np.save(root / "img_emb" / f"img_emb_{k}.npy", img)
        if text:
            np.save(root / "text_emb" / f"text_emb_{k}.npy", txt)
        pq.write_table(pa.table(meta), root / "metadata" / f"metadata_{k}.parquet", row_group_size=7)
        for i in range(n):
            rows[(k, i)] = {"image": img[i], "text": txt[i] if text else None, "key": keys[i],
                            "width": int(meta["width"][i]), "height": int(meta["height"][i]),
                            "similarity": float(meta["similarity"][i]), "url": meta["url"][i]}
    return rows


def write_datacomp(root: Path, sizes: list[int], seed: int = 0) -> dict[tuple[int, int], dict]:
    """A DataComp metadata folder (SHARD.parquet + SHARD.npz with b32 and l14 vectors)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = {}
    for k, n in enumerate(sizes):
        uids = [rng.bytes(16).hex() for _ in range(n)]
        arrays = {"b32_img": clustered(rng, n, 16), "b32_txt": clustered(rng, n, 16),
                  "l14_img": clustered(rng, n, 24), "l14_txt": clustered(rng, n, 24)}
        arrays = {a: v.astype(np.float16) for a, v in arrays.items()}
        meta = {"uid": uids, "url": [f"https://dc.example/{u}.jpg" for u in uids],
                "text": [f"a caption s{k} r{i}" for i in range(n)],
                "original_width": rng.integers(64, 4000, n), "original_height": rng.integers(64, 4000, n),
                "clip_b32_similarity_score": rng.random(n), "clip_l14_similarity_score": rng.random(n),
                "sha256": [hashlib.sha256(u.encode()).hexdigest() for u in uids]}
        stem = f"{k:08d}"
        pq.write_table(pa.table(meta), root / f"{stem}.parquet")
        np.savez(root / f"{stem}.npz", **arrays)
        for i in range(n):
            rows[(k, i)] = {**{a: v[i] for a, v in arrays.items()}, "uid": uids[i], "url": meta["url"][i],
                            "width": int(meta["original_width"][i]), "height": int(meta["original_height"][i])}
    return rows


def unit16(v: np.ndarray, dtype: str = "float16") -> np.ndarray:
    """What the workspace stores for a source vector: L2-normalised in float32, back in the stored dtype."""
    v = np.asarray(v, np.float32)
    return (v / np.linalg.norm(v)).astype(dtype)


def samples(ws: Path):
    return db.query_df(ws, "SELECT * FROM samples ORDER BY row_idx")


def source_of(caption: str) -> tuple[int, int]:
    m = CAPTION_RE.search(caption)
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------------------------
# units
# --------------------------------------------------------------------------------------------

def test_row_problems_names_nan_and_zero_vectors():
    x = np.ones((4, 3), np.float16)
    x[1, 2] = np.nan
    x[2] = 0
    t = np.ones((4, 3), np.float32)
    t[3, 0] = np.inf
    t[1] = 0
    r = row_problems(x, t)
    assert r[0] == ""
    assert r[1] == "image embedding has NaN or inf values"  # the image's reason wins over the caption's
    assert r[2] == "image embedding is a zero vector"
    assert r[3] == "caption embedding has NaN or inf values"


def test_first_occurrences_keeps_the_first_row_of_each_uid():
    uids = ["0" * 31 + "1", "f" * 32, "0" * 31 + "1", "a" * 32, "f" * 32, "0" * 31 + "1"]
    pairs = uid_ints(uids)
    assert pairs[1, 0] == np.uint64(2**64 - 1)
    valid = np.array([False, True, True, True, True, True])  # row 0 invalid: row 2 is the first valid "...1"
    assert first_occurrences(pairs, valid).tolist() == [False, True, True, True, False, False]


def test_npy_rows_reads_like_an_array_and_holds_no_map(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "x.npy", x)
    r = NpyRows(tmp_path / "x.npy")
    assert r.shape == (20, 3) and r.ndim == 2 and r.dtype == np.float32 and len(r) == 20
    np.testing.assert_array_equal(r[5:9], x[5:9])
    np.testing.assert_array_equal(r[np.array([1, 4, 19])], x[[1, 4, 19]])
    assert not isinstance(r[0:2], np.memmap)


def test_detect_layout(tmp_path):
    write_clip_retrieval(tmp_path / "cr", [5])
    write_datacomp(tmp_path / "dc", [5])
    (tmp_path / "imgs").mkdir()
    assert detect_layout(tmp_path / "cr") == "clip-retrieval"
    assert detect_layout(tmp_path / "dc") == "datacomp"
    assert detect_layout(tmp_path / "imgs") is None
    assert detect_layout(tmp_path / "nope") is None


# --------------------------------------------------------------------------------------------
# whole-file errors: a clear message naming the file
# --------------------------------------------------------------------------------------------

def test_mismatched_row_counts_name_both_files(tmp_path):
    write_clip_retrieval(tmp_path, [5, 6])
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.ones((7, 16), np.float16))
    with pytest.raises(ReleasedError, match=r"img_emb_1\.npy has 7 rows but .*metadata_1\.parquet has 6"):
        open_released(tmp_path)


def test_text_rows_must_match_too(tmp_path):
    write_clip_retrieval(tmp_path, [5])
    np.save(tmp_path / "text_emb" / "text_emb_0.npy", np.ones((4, 16), np.float16))
    with pytest.raises(ReleasedError, match=r"text_emb_0\.npy has 4 rows"):
        open_released(tmp_path)


@pytest.mark.parametrize("gone, message", [
    ("metadata/metadata_1.parquet", r"missing shard: .*metadata_1\.parquet"),
    ("img_emb/img_emb_1.npy", r"missing shard: .*img_emb_1\.npy"),
    ("text_emb/text_emb_2.npy", r"missing shard: .*text_emb_2\.npy .*all or none"),
])
def test_missing_shards_are_named(tmp_path, gone, message):
    write_clip_retrieval(tmp_path, [3, 3, 3])
    (tmp_path / gone).unlink()
    with pytest.raises(ReleasedError, match=message):
        open_released(tmp_path, "clip-retrieval")


def test_metadata_without_vectors_is_named(tmp_path):
    write_clip_retrieval(tmp_path, [3])
    pq.write_table(pq.read_table(tmp_path / "metadata" / "metadata_0.parquet"),
                   tmp_path / "metadata" / "metadata_1.parquet")
    with pytest.raises(ReleasedError, match=r"metadata_1\.parquet has no image vectors"):
        open_released(tmp_path)


def test_mixed_dims_and_bad_arrays(tmp_path):
    write_clip_retrieval(tmp_path, [3, 3])
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.ones((3, 8), np.float16))
    with pytest.raises(ReleasedError, match=r"img_emb_1\.npy: image vectors are 8-d but earlier shards are 16-d"):
        open_released(tmp_path)
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.ones((3, 16), np.int8))
    with pytest.raises(ReleasedError, match=r"img_emb_1\.npy: image vectors must be float16/float32, got int8"):
        open_released(tmp_path)
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.ones(3, np.float16))
    with pytest.raises(ReleasedError, match=r"must be a 2-D \(rows, d\) array"):
        open_released(tmp_path)
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.ones((3, 16), np.float16))
    np.save(tmp_path / "text_emb" / "text_emb_1.npy", np.ones((3, 12), np.float16))
    with pytest.raises(ReleasedError, match=r"text_emb_1\.npy: caption vectors are 12-d"):
        open_released(tmp_path)


def test_datacomp_errors(tmp_path):
    write_datacomp(tmp_path, [4, 4])
    with pytest.raises(ReleasedError, match=r"00000000\.npz has no 'b16_img' array \(it has b32_img, b32_txt"):
        open_released(tmp_path, "datacomp", "b16_img")
    (tmp_path / "00000001.npz").unlink()
    with pytest.raises(ReleasedError, match=r"missing shard: .*00000001\.npz \(the vectors of .*00000001\.parquet\)"):
        open_released(tmp_path)
    np.savez(tmp_path / "00000001.npz", b32_img=np.ones((5, 16), np.float16))
    with pytest.raises(ReleasedError, match=r"00000001\.npz has 5 rows but .*00000001\.parquet has 4"):
        open_released(tmp_path)
    np.savez(tmp_path / "00000001.npz", b32_img=np.ones((4, 16), np.float16))
    with pytest.raises(ReleasedError, match=r"00000001\.npz: lacks 'b32_txt' unlike earlier shards"):
        open_released(tmp_path)


def test_datacomp_needs_uid_column(tmp_path):
    write_datacomp(tmp_path, [4])
    t = pq.read_table(tmp_path / "00000000.parquet").drop_columns(["uid"])
    pq.write_table(t, tmp_path / "00000000.parquet")
    with pytest.raises(ReleasedError, match=r"00000000\.parquet has no 'uid' column"):
        open_released(tmp_path)


def test_flags_that_do_not_fit_the_folder(tmp_path, capsys):
    write_clip_retrieval(tmp_path / "cr", [3])
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ReleasedError, match="--embedding-key chooses a member of DataComp"):
        open_released(tmp_path / "cr", embedding_key="l14_img")
    with pytest.raises(ReleasedError, match="matches neither released-embeddings layout"):
        open_released(tmp_path / "imgs", "auto")
    with pytest.raises(ReleasedError, match=r"holds no SHARD\.npz files"):
        open_released(tmp_path / "cr", "datacomp")
    assert main(["precompute", str(tmp_path / "imgs"), "--workspace", str(tmp_path / "ws"),
                 "--embeddings-layout", "auto"]) == 2
    assert "matches neither released-embeddings layout" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# rows: rejected with their reason, the rest stay aligned; memory stays at a block
# --------------------------------------------------------------------------------------------

def test_bad_rows_are_rejected_and_the_rest_stay_aligned(tmp_path):
    src_rows = write_clip_retrieval(tmp_path / "src", [9, 8], d=8)
    img = np.load(tmp_path / "src/img_emb/img_emb_0.npy")
    img[2, 3] = np.nan
    img[5] = 0
    np.save(tmp_path / "src/img_emb/img_emb_0.npy", img)
    txt = np.load(tmp_path / "src/text_emb/text_emb_1.npy")
    txt[4] = 0
    np.save(tmp_path / "src/text_emb/text_emb_1.npy", txt)
    t = pq.read_table(tmp_path / "src/metadata/metadata_1.parquet").to_pydict()
    t["key"][6] = t["key"][0] = "000000001"  # repeats shard 0 row 1's key, so its uid
    pq.write_table(pa.table(t), tmp_path / "src/metadata/metadata_1.parquet")
    src = open_released(tmp_path / "src")
    scan = scan_stage(src, block_rows=4)
    copied = copy_stage(src, tmp_path, scan, "float16", block_rows=4)
    reasons = sorted(r.reason for r in scan.rejects + copied.rejects)
    assert reasons == [
        "metadata_0.parquet row 2: image embedding has NaN or inf values",
        "metadata_0.parquet row 5: image embedding is a zero vector",
        "metadata_1.parquet row 0: duplicate uid " + hashlib.md5(b"000000001").hexdigest() + " (an earlier row has it)",
        "metadata_1.parquet row 4: caption embedding is a zero vector",
        "metadata_1.parquet row 6: duplicate uid " + hashlib.md5(b"000000001").hexdigest() + " (an earlier row has it)",
    ]
    assert copied.n == 17 - 5
    vecs = np.load(tmp_path / "embeddings/image.npy")
    rows = pq.read_table(copied.staging).to_pandas()
    assert rows.row_idx.tolist() == list(range(12))
    for i, cap in enumerate(rows.caption):
        s = src_rows[source_of(cap)]
        np.testing.assert_array_equal(vecs[i], unit16(s["image"]))
        assert rows.uid[i] == hashlib.md5(s["key"].encode()).hexdigest()


def test_scan_and_copy_hold_one_block_not_the_pool(tmp_path):
    n, d = 200_000, 64
    (tmp_path / "src/img_emb").mkdir(parents=True)
    (tmp_path / "src/metadata").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        np.save(tmp_path / f"src/img_emb/img_emb_{k}.npy", rng.normal(size=(n // 2, d)).astype(np.float32))
        pq.write_table(pa.table({"caption": ["x"] * (n // 2), "key": [f"{k}-{i}" for i in range(n // 2)]}),
                       tmp_path / f"src/metadata/metadata_{k}.parquet")
    src = open_released(tmp_path / "src")
    tracemalloc.start()
    try:
        scan = scan_stage(src)
        copy_stage(src, tmp_path, scan, "float32")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pool_bytes = n * d * 4  # 51 MB: what concatenating the vectors would take
    assert peak < pool_bytes / 2, f"peak {peak / 2**20:.1f} MiB for a {pool_bytes / 2**20:.1f} MiB pool"
    assert np.load(tmp_path / "embeddings/image.npy", mmap_mode="r").shape == (n, d)


# --------------------------------------------------------------------------------------------
# whole workspaces
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_retrieval_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("cr")
    rows = write_clip_retrieval(root / "src", [40, 55, 25], d=16)
    assert main(["precompute", str(root / "src"), "--workspace", str(root / "ws"), "-k", "5",
                 "--layout-rows", "60"]) == 0  # layout detected
    return root / "ws", rows


@pytest.fixture(scope="module")
def datacomp_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("dc")
    rows = write_datacomp(root / "src", [30, 45])
    assert main(["precompute", str(root / "src"), "--workspace", str(root / "ws"), "-k", "4",
                 "--embeddings-layout", "datacomp", "--embedding-key", "l14_img", "--layout-rows", "50"]) == 0
    return root / "ws", rows


@pytest.mark.slow
def test_clip_retrieval_workspace_row_by_row(clip_retrieval_ws):
    ws, rows = clip_retrieval_ws
    meta = db.load_meta(ws)
    assert (meta["embedder"], meta["source_kind"], meta["dtype"], meta["image_dim"], meta["text_dim"]) == \
        ("released", "clip-retrieval", "float16", 16, 16)
    assert meta["n_samples"] == 120 and meta["has_clip_scores"] and meta["clip_score_from"] == "vectors"
    assert not meta["has_thumbnails"] and not (ws / "thumbs.bin").exists()
    df = samples(ws)
    image = np.load(ws / "embeddings/image.npy")
    text = np.load(ws / "embeddings/text.npy")
    assert image.dtype == np.float16 and image.shape == (120, 16)
    seen = set()
    for i, r in df.iterrows():
        src = source_of(r.caption)
        seen.add(src)
        s = rows[src]
        np.testing.assert_array_equal(image[i], unit16(s["image"]))
        np.testing.assert_array_equal(text[i], unit16(s["text"]))
        assert r.uid == hashlib.md5(s["key"].encode()).hexdigest() and r.key == s["key"]
        assert (r.width, r.height, r.image_ref) == (s["width"], s["height"], s["url"])
        assert r.image_loc == f'["url", "{s["url"]}"]'
        assert r.clip_score == pytest.approx(float(image[i].astype(np.float32) @ text[i].astype(np.float32)), abs=1e-6)
    assert seen == set(rows)
    assert [source_of(c) for c in df.caption] == sorted(rows)  # row_idx follows the source: shard by shard, row by row


@pytest.mark.slow
def test_datacomp_workspace_keeps_uids_exactly_and_exports_them(datacomp_ws, tmp_path):
    ws, rows = datacomp_ws
    meta = db.load_meta(ws)
    assert (meta["source_kind"], meta["model"], meta["image_dim"]) == ("datacomp", "l14_img", 24)
    df = samples(ws)
    image = np.load(ws / "embeddings/image.npy")
    for i, r in df.iterrows():
        s = rows[source_of(r.caption)]
        assert r.uid == s["uid"] and r.key == s["uid"]
        np.testing.assert_array_equal(image[i], unit16(s["l14_img"]))
        assert (r.width, r.height, r.image_ref) == (s["width"], s["height"], s["url"])
    assert sorted(df.uid) == sorted(s["uid"] for s in rows.values())
    from densprune.prune.plan_index import load_index

    result = load_index(ws).compute(PlanParams(method="random", keep=0.5))
    save_plan(ws, "half", result)
    out = export_plan(ws, "half", "datacomp", tmp_path / "half.uids.npy")
    arr = np.load(out)
    assert arr.dtype == np.dtype("u8,u8")
    assert arr.tolist() == sorted(arr.tolist())
    assert [f"{int(a):016x}{int(b):016x}" for a, b in arr] == sorted(df.uid[result.keep])  # as DataComp reads them
    with pytest.raises(ValueError, match="holds no image files, so it cannot be exported as csv"):
        export_plan(ws, "half", "csv", tmp_path / "half.csv")


@pytest.mark.slow
def test_clip_retrieval_without_text_uses_the_similarity_column(tmp_path):
    rows = write_clip_retrieval(tmp_path / "src", [20, 20], text=False, dtype="float32")
    ws = precompute(PrecomputeConfig(source=str(tmp_path / "src"), workspace=tmp_path / "ws", clusters=3,
                                     layout_rows=40, embeddings_layout="clip-retrieval"))
    meta = db.load_meta(ws)
    assert meta["clip_score_from"] == "similarity" and meta["text_dim"] == 0 and meta["dtype"] == "float32"
    assert not (ws / "embeddings/text.npy").exists()
    df = samples(ws)
    for r in df.itertuples():
        assert r.clip_score == rows[source_of(r.caption)]["similarity"]


@pytest.mark.slow
def test_app_pages_show_caption_url_and_size_instead_of_thumbnails(clip_retrieval_ws):
    from test_app_pages import PAGES, all_text, no_errors, open_app

    ws, _ = clip_retrieval_ws
    for page in PAGES:
        at = open_app(ws, page)
        no_errors(at)
        if page in ("concepts", "complexity", "preview"):
            assert "No thumbnails: this workspace was built from released embeddings" in all_text(at)
            body = " ".join(h.proto.body for h in at.get("html"))
            assert 'href="https://img.example/' in body and 'rel="noopener noreferrer nofollow"' in body
            assert re.search(r"<div>\d+×\d+</div>", body), "the original size is shown"
    from densprune.prune.plan_index import load_index

    save_plan(ws, "app-check", load_index(ws).compute(PlanParams(method="dbp", keep=0.5)), overwrite=True)
    at = open_app(ws, "export")
    no_errors(at)
    formats = next(s.options for s in at.selectbox if s.label == "Format")
    assert "datacomp" in formats and "csv" not in formats and "webdataset" not in formats
