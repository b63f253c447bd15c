"""negCLIPLoss (Wang et al. 2024): the score against the formula, what it changes against the CLIP score, the
``densprune negclip`` command and the ``negclip`` plan method as a user types them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from console import run_densprune
from scipy.special import logsumexp

from densprune import db
from densprune.prune import plan_index
from densprune.prune.negclip import neg_clip_loss
from densprune.prune.selection import PlanParams
from densprune.workspace import negclip_scores


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_one_batch_is_the_formula():
    rng = np.random.default_rng(0)
    x, y = _unit(rng.normal(size=(40, 8))), _unit(rng.normal(size=(40, 8)))
    tau = 0.05
    s = x @ y.T
    want = np.diag(s) - tau / 2 * (logsumexp(s / tau, axis=1) + logsumexp(s / tau, axis=0))
    for draws in (1, 3):  # a batch of every row: the draws are all the same partition
        np.testing.assert_allclose(neg_clip_loss(x, y, batch=100, draws=draws, tau=tau), want, rtol=0, atol=1e-6)


def test_small_batches_score_every_row_against_batch_minus_one_others():
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(103, 6)))
    y = x.copy()  # every caption is its image: s_ii = 1
    tau = 0.1
    got = neg_clip_loss(x, y, batch=10, draws=4, tau=tau, seed=2)
    assert got.shape == (103,) and np.isfinite(got).all()
    # s_ii - tau * lse over 10 entries one of which is 1/tau: at most 1 - tau*log(exp(1/tau)) = 0, above the
    # bound of 10 equal entries
    assert (got <= 1e-9).all() and (got >= 1 - tau * np.log(10 * np.exp(1 / tau)) - 1e-9).all()


def test_a_caption_that_fits_every_image_drops_in_the_order():
    """The point of the method: in a cone of embeddings (as CLIP's are), a generic caption near the cone's
    axis scores high against its image and against every other image; the CLIP score ranks that pair
    first, negCLIPLoss below specific pairs."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        n, d = 200, 16
        axis = _unit(rng.normal(size=(1, d)))
        x = _unit(axis + 0.5 * rng.normal(size=(n, d)))
        y = _unit(x + 0.3 * rng.normal(size=(n, d)))  # specific captions
        x[0] = _unit(axis + 0.05 * rng.normal(size=(1, d)))[0]  # a bland image with a caption on the axis
        y[0] = axis[0]
        clip = np.sum(x * y, axis=1)
        neg = neg_clip_loss(x, y, batch=n, draws=1, tau=0.01)
        assert (clip > clip[0]).sum() == 0 and (neg > neg[0]).sum() >= 3


def test_bad_arguments():
    x = np.ones((3, 2)) / np.sqrt(2)
    with pytest.raises(ValueError, match="same shape"):
        neg_clip_loss(x, x[:2])
    with pytest.raises(ValueError, match="tau > 0"):
        neg_clip_loss(x, x, tau=0)


def test_command_and_plan_method(tiny_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws)
    before = run_densprune("plan", ws, "--name", "n0", "--keep", "0.3", "--method", "negclip")
    assert before.returncode == 2 and "densprune negclip" in before.stderr
    out = run_densprune("negclip", ws, "--batch", "8", "--draws", "3")
    assert out.returncode == 0, out.stderr
    assert "negCLIPLoss of" in out.stdout and db.load_meta(ws)["negclip"]["draws"] == 3
    scores = np.load(negclip_scores(ws))
    out = run_densprune("plan", ws, "--name", "neg", "--keep", "0.3", "--method", "negclip")
    assert out.returncode == 0, out.stderr
    index = plan_index.load_index(ws)  # keyed by the scores: a new index holds their order
    assert index.has_negclip
    keep = index.compute(PlanParams(method="negclip", keep=0.3)).keep
    pool = index.rows_in_pool()
    n_keep = int(np.floor(0.3 * pool.sum() + 0.5))
    ranked = np.flatnonzero(pool)[np.argsort(-scores[pool], kind="stable")]
    np.testing.assert_array_equal(np.flatnonzero(keep), np.sort(ranked[:n_keep]))
    assert run_densprune("verify", ws).returncode == 0


def test_command_refuses_a_workspace_without_caption_vectors(demo_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace, ws, ignore=shutil.ignore_patterns("exports", ".work", "plans"))
    out = run_densprune("negclip", ws)
    assert out.returncode == 2 and "caption vectors" in out.stderr
    assert not negclip_scores(ws).exists() and "negclip" not in db.load_meta(ws)
