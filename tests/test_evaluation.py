"""Evaluation: the metric functions on hand-made features, and a small random CLIP whose metrics
through ``evaluate_model`` equal a direct, one-image-at-a-time computation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLORS, encode, make_image

from densprune.train import evaluation as ev
from densprune.vectors import l2_normalize

SMALL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


# --------------------------------------------------------------------------------------------
# pure metrics
# --------------------------------------------------------------------------------------------

def test_topk_accuracy_counts_ties_for_the_true_class():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.5, 0.5, 0.5]])
    labels = np.array([0, 1, 1, 2])
    assert ev.topk_accuracy(scores, labels, 1) == pytest.approx(3 / 4)  # row 2 wrong, row 3 a tie
    assert ev.topk_accuracy(scores, labels, 2) == 1.0
    assert ev.topk_accuracy(scores, labels, 10) == 1.0  # k beyond the classes


def test_retrieval_recall_on_known_features():
    eye = np.eye(4)
    assert ev.retrieval_recall(eye, eye) == {"i2t_r1": 1.0, "t2i_r1": 1.0, "i2t_r5": 1.0, "t2i_r5": 1.0}
    # texts shifted by one: every image's own caption scores 0, below its neighbour's 1
    shifted = np.roll(eye, 1, axis=0)
    r = ev.retrieval_recall(eye, shifted, ks=(1, 2))
    assert r["i2t_r1"] == 0.0 and r["t2i_r1"] == 0.0 and r["i2t_r2"] == 1.0
    # scale does not matter (features are normalised)
    assert ev.retrieval_recall(3 * eye, eye)["i2t_r1"] == 1.0


def test_evaluation_metrics_zero_shot_on_separable_features():
    rng = np.random.default_rng(0)
    centers = l2_normalize(rng.normal(size=(3, 8)), dtype=np.float64)
    labels = np.repeat(np.arange(3), 5)
    images = centers[labels] + 0.05 * rng.normal(size=(15, 8))
    classes = l2_normalize(centers + 0.01 * rng.normal(size=(3, 8)), dtype=np.float64)  # (3, 8)
    m = ev.evaluation_metrics(images, images, classes, labels)
    assert m["zeroshot_top1"] == 1.0 and m["n_images"] == 15 and m["n_classes"] == 3 and m["i2t_r1"] == 1.0
    assert "i2t_r1" not in ev.evaluation_metrics(images, None, classes, labels)


def test_class_prompt_names():
    assert ev.class_prompt_name("signs_and_symbols") == "signs and symbols"
    assert ev.class_prompt_name("hand-tools") == "hand tools"


# --------------------------------------------------------------------------------------------
# a known small model
# --------------------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for c, (color, rgb) in enumerate(list(COLORS.items())[:3]):
        (root / f"{color}_thing").mkdir(parents=True)
        for j in range(4):
            (root / f"{color}_thing" / f"{j}.png").write_bytes(
                encode(make_image(rgb, "circle", seed=10 * c + j), "PNG"))
    return root


@pytest.fixture
def small_model(tmp_path: Path) -> tuple[str, Path, dict]:
    """A random CLIP as a local-dir model, saved as a DDP open_clip_train checkpoint (``module.`` keys)."""
    import open_clip

    torch.manual_seed(0)
    net = open_clip.CLIP(**SMALL_CFG)
    mdir = tmp_path / "model"
    mdir.mkdir()
    (mdir / "open_clip_config.json").write_text(json.dumps({"model_cfg": SMALL_CFG}))
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "t", "state_dict": sd, "optimizer": {}}, ckpt)
    return f"local-dir:{mdir}", ckpt, net.state_dict()


def test_checkpoint_loads_with_module_prefix_stripped(small_model):
    model, ckpt, original = small_model
    net, _, _ = ev.load_model(model, ckpt)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, original[k])


def test_evaluate_model_equals_a_direct_computation(small_model, folder):
    from PIL import Image

    model, ckpt, _ = small_model
    net, preprocess, tokenizer = ev.load_model(model, ckpt)
    fset = ev.image_folder_eval_set(folder)
    assert fset.classnames == ["blue thing", "green thing", "red thing"] \
        and fset.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    captions = [f"caption number {i}" for i in range(len(fset.images))]
    evalset = ev.EvalSet("t", fset.images, fset.labels, fset.classnames, captions)
    templates = ("clip art of {}.", "{}.")
    got = ev.evaluate_model(net, preprocess, tokenizer, evalset, templates)

    def unit(t: torch.Tensor) -> torch.Tensor:
        return t / t.norm(dim=-1, keepdim=True)

    with torch.no_grad():  # one image, one prompt at a time, in torch
        img = [unit(net.encode_image(preprocess(Image.open(io.BytesIO(b))).unsqueeze(0)))[0] for b in evalset.images]
        cls = []
        for c in evalset.classnames:
            p = torch.stack([unit(net.encode_text(tokenizer([t.format(c)])))[0] for t in templates]).mean(0)
            cls.append(unit(p))
        cap = [unit(net.encode_text(tokenizer([t])))[0] for t in captions]
    n = len(img)
    pred = [int(torch.argmax(torch.stack([img[i] @ c for c in cls]))) for i in range(n)]
    acc = np.mean([pred[i] == evalset.labels[i] for i in range(n)])
    i2t_r1 = np.mean([all(img[i] @ cap[j] <= img[i] @ cap[i] + 1e-6 for j in range(n)) for i in range(n)])
    t2i_r5 = np.mean([sum(float(img[j] @ cap[i]) > float(img[i] @ cap[i]) + 1e-6 for j in range(n)) < 5
                      for i in range(n)])
    assert got["zeroshot_top1"] == pytest.approx(acc)
    assert got["i2t_r1"] == pytest.approx(i2t_r1)
    assert got["t2i_r5"] == pytest.approx(t2i_r5)
    assert got["n_images"] == 12 and got["zeroshot_top5"] == 1.0  # 3 classes


def test_image_folder_needs_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(encode(make_image((1, 2, 3), "circle"), "PNG"))
    with pytest.raises(ValueError, match="at least 2 class"):
        ev.image_folder_eval_set(tmp_path)


def test_per_image_outcomes_average_to_the_metrics():
    rng = np.random.default_rng(4)
    images, captions = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    captions[:30] = images[:30] + 0.1 * rng.normal(size=(30, 8))  # half the pairs match
    classes, labels = rng.normal(size=(5, 8)), rng.integers(0, 5, 60)
    metrics = ev.evaluation_metrics(images, captions, classes, labels)
    per = ev.per_image_outcomes(images, captions, classes, labels)
    assert set(per) == {"zeroshot_top1", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"}
    for name, outcome in per.items():
        assert outcome.shape == (60,) and outcome.dtype == bool
        assert outcome.mean() == pytest.approx(metrics[name])
    assert set(ev.per_image_outcomes(images, None, classes, labels)) == {"zeroshot_top1"}
