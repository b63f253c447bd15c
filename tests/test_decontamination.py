"""The decontaminated eval split (issue "The paper's question, answered honestly"): pool copies of eval
images (by image similarity or the same caption) are set aside at precompute, `densprune info` reports how
close the pool still comes to the eval images, and no plan keeps a copy. Built with the installed command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import COLORS, SHAPES, encode, make_image
from console import run_densprune

from densprune import db
from densprune.ingest.eval_split import caption_key, contamination, eval_copies, max_similarity_to
from densprune.workspace import image_vectors


def test_max_similarity_and_copies_on_small_vectors():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 8)).astype(np.float32)
    v[7] = 3 * v[2]  # a scaled copy of row 2 (cosine 1)
    is_eval = np.zeros(50, bool)
    is_eval[[2, 30]] = True
    caps = [f"caption {i}" for i in range(50)]
    caps[40] = "  CAPTION   30 "  # the same caption as eval row 30, spelled differently
    rows = np.flatnonzero(~is_eval)
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    want = (n[rows] @ n[is_eval].T).max(axis=1)
    np.testing.assert_allclose(max_similarity_to(v, rows, np.flatnonzero(is_eval), block=7), want, rtol=1e-5)
    copies = eval_copies(v, is_eval, caps, 0.999)
    assert set(np.flatnonzero(copies)) == {7, 40} and caption_key(caps[40]) == "caption 30"
    split = np.where(is_eval, "eval", "pool").astype(object)
    report = contamination(v, split, caps)
    assert report["by_similarity"][-1] == {"similarity": 0.999, "eval_with_copy": 1, "pool_copies": 1}
    assert report["same_caption_pool_rows"] == 1
    split[copies] = "eval-copy"
    after = contamination(v, split, caps)
    assert after["set_aside"] == 2 and after["by_similarity"][-1]["pool_copies"] == 0
    with pytest.raises(ValueError, match="cosine similarity"):
        eval_copies(v, is_eval, caps, 2.0)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> Path:
    """4 colour folders of 20 images: 10 distinct, each twice (same pixels, same caption)."""
    root = tmp_path_factory.mktemp("twins") / "images"
    i = 0
    for color, rgb in COLORS.items():
        (root / color).mkdir(parents=True)
        for j in range(10):
            data = encode(make_image(rgb, SHAPES[j % 2], seed=i), "PNG")
            for copy in ("a", "b"):
                (root / color / f"{j}{copy}.png").write_bytes(data)
                (root / color / f"{j}{copy}.txt").write_text(f"a {color} {SHAPES[j % 2]} number {j}")
            i += 1
    return root


def test_precompute_sets_the_copies_aside_and_no_plan_keeps_them(twins, tmp_path):
    ws = tmp_path / "ws"
    build = run_densprune("precompute", twins, "--workspace", ws, "--embedder", "offline", "--clusters", "4",
                          "--eval-per-category", "3", "--eval-min-category", "10", "--decontaminate", "0.99")
    assert build.returncode == 0, build.stderr[-2000:]
    s = db.query_df(ws, "SELECT row_idx, split, image_ref FROM samples ORDER BY row_idx")
    twin = s["image_ref"].str.replace(r"[ab]\.png$", "", regex=True)
    ev = s[s["split"] == "eval"]
    assert len(ev) == 12
    for r in ev.itertuples():  # each eval image's twin is set aside, unless it was drawn for eval as well
        other = s[(twin == twin[r.row_idx]) & (s["row_idx"] != r.row_idx)]["split"].iloc[0]
        assert other in ("eval-copy", "eval")
    report = contamination(np.load(image_vectors(ws), mmap_mode="r"), s["split"].to_numpy(),
                           db.query_df(ws, "SELECT caption FROM samples ORDER BY row_idx")["caption"].to_numpy())
    assert all(b["pool_copies"] == 0 for b in report["by_similarity"] if b["similarity"] >= 0.99)
    meta = db.load_meta(ws)
    assert meta["decontaminate"] == 0.99 and meta["n_eval_copies"] == int((s["split"] == "eval-copy").sum()) > 0
    assert meta["n_pool"] == int((s["split"] == "pool").sum())

    plan = run_densprune("plan", ws, "--name", "all", "--keep", "1.0")
    assert plan.returncode == 0, plan.stderr
    from densprune.prune.plans import load_plan

    _, keep = load_plan(ws, "all")
    assert keep.sum() == meta["n_pool"] and not keep[s["split"].to_numpy() != "pool"].any()
    info = run_densprune("info", ws)
    assert "eval copies    decontaminated at cosine 0.99" in info.stdout
    as_json = json.loads(run_densprune("info", ws, "--json").stdout)
    assert as_json["eval_contamination"]["set_aside"] == meta["n_eval_copies"]
    verify = run_densprune("verify", ws)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_training_on_a_contaminated_eval_split_is_flagged(demo_workspace):
    from streamlit.testing.v1 import AppTest

    from densprune.train.evaluation import eval_hygiene_warning

    meta = db.load_meta(demo_workspace)
    assert meta["decontaminate"] is None and meta["n_eval"] > 0  # the demo's default build
    warning = eval_hygiene_warning(meta)
    assert warning and "not decontaminated" in warning and "--decontaminate 0.95" in warning
    assert eval_hygiene_warning({**meta, "decontaminate": 0.95}) is None
    assert eval_hygiene_warning({**meta, "n_eval": 0}) is None  # no eval split: nothing to flag
    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "app.py"), default_timeout=60)
    at.session_state["workspace"] = str(demo_workspace)
    at.run()
    at.switch_page(str(root / "densprune/app/views/train.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("is not decontaminated" in w.value for w in at.warning)
