"""Evaluation of trained CLIP models: zero-shot classification and image-text retrieval.

The metrics are pure functions of feature arrays (numpy in, numbers out); the I/O around them reads
an evaluation set (the workspace's held-out ``split = 'eval'`` rows, or an ImageFolder-style folder
of labelled images), loads a checkpoint into an open_clip model, and encodes.

- zero-shot: each class is the mean of its L2-normalised prompt embeddings ("clip art of {}." ...),
  renormalised; an image is assigned the class of highest cosine similarity. Top-1 / top-5 accuracy.
- retrieval: image i and caption i are a pair. Image->text recall@k is the share of images whose own
  caption ranks in the top k of all eval captions (and text->image the converse). Rank = number of
  candidates scoring strictly higher, so ties (identical captions) count in favour of the pair.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densprune.ingest.media import IMAGE_EXTS
from densprune.vectors import l2_normalize

log = logging.getLogger(__name__)

# The demo is clip art; "{}" alone keeps the bare category name as one prompt.
CLIPART_TEMPLATES = ("clip art of {}.", "a clip art of a {}.", "an illustration of {}.", "a drawing of {}.", "{}.")
PHOTO_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "an image of a {}.", "a picture of a {}.", "{}.")
TEMPLATE_SETS = {"clipart": CLIPART_TEMPLATES, "photo": PHOTO_TEMPLATES}


# --------------------------------------------------------------------------------------------
# pure metrics
# --------------------------------------------------------------------------------------------

def zero_shot_scores(image_feats: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity of every image to every class. (N, d), (C, d) -> (N, C)."""
    return l2_normalize(image_feats, dtype=np.float64) @ l2_normalize(class_emb, dtype=np.float64).T


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of rows whose label is among the k highest scores. scores (N, C), labels (N,) ints."""
    labels = np.asarray(labels, dtype=np.int64)
    assert scores.shape[0] == labels.size and labels.size > 0
    k = min(k, scores.shape[1])
    true = scores[np.arange(labels.size), labels]
    rank = (scores > true[:, None]).sum(axis=1)  # ties count for the true class
    return float(np.mean(rank < k))


def retrieval_recall(image_feats: np.ndarray, text_feats: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k both ways for paired rows. (N, d), (N, d) -> {'i2t_r1', 'i2t_r5', 't2i_r1', 't2i_r5', ...}."""
    assert image_feats.shape[0] == text_feats.shape[0] > 0, "one caption per image"
    # (N images, N texts)
    sim = l2_normalize(image_feats, dtype=np.float64) @ l2_normalize(text_feats, dtype=np.float64).T
    diag = np.diag(sim)
    i2t_rank = (sim > diag[:, None]).sum(axis=1)
    t2i_rank = (sim > diag[None, :]).sum(axis=0)
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = float(np.mean(i2t_rank < k))
        out[f"t2i_r{k}"] = float(np.mean(t2i_rank < k))
    return out


def evaluation_metrics(image_feats: np.ndarray, caption_feats: np.ndarray | None, class_emb: np.ndarray,
                       labels: np.ndarray) -> dict[str, float]:
    """Every metric of one evaluation set from its features.

    image_feats (N, d); caption_feats (N, d) or None (no retrieval); class_emb (C, d) zero-shot class
    vectors; labels (N,).
    """
    scores = zero_shot_scores(image_feats, class_emb)
    out = {"zeroshot_top1": topk_accuracy(scores, labels, 1), "zeroshot_top5": topk_accuracy(scores, labels, 5),
           "n_images": float(labels.size), "n_classes": float(class_emb.shape[0])}
    if caption_feats is not None:
        out.update(retrieval_recall(image_feats, caption_feats))
    return out


# --------------------------------------------------------------------------------------------
# evaluation sets
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EvalSet:
    """Labelled images (encoded bytes), their captions (or None) and the class names."""

    name: str
    images: list[bytes]
    labels: np.ndarray  # (N,) int64 into classnames
    classnames: list[str]
    captions: list[str] | None = None


def class_prompt_name(raw: str) -> str:
    """'signs_and_symbols' -> 'signs and symbols'."""
    return " ".join(str(raw).replace("_", " ").replace("-", " ").split())


def eval_hygiene_warning(meta: dict) -> str | None:
    """Why a workspace's held-out eval split may flatter a run, in words, or None when it is clean: an
    eval split built without ``--decontaminate`` can have near-copies of its images in the pool (on the
    demo 65 of 260 at cosine > 0.999), and a plan that keeps them is evaluated on what it trained on."""
    if not int(meta.get("n_eval") or 0) or meta.get("decontaminate") is not None:
        return None
    return (f"this workspace's eval split ({int(meta['n_eval']):,} images) is not decontaminated: pool images may "
            "copy eval images, and plans that keep different numbers of them are not compared fairly. `densprune "
            "info` counts them; rebuild with `precompute --decontaminate 0.95` for a clean eval (docs/method.md)")


def workspace_eval_set(workspace: str | os.PathLike) -> EvalSet:
    """The held-out ``split = 'eval'`` rows of a workspace, labelled by their top-level category."""
    from densprune import db
    from densprune.ingest.sources import read_bytes

    df = db.eval_rows(workspace)
    if df.empty:
        raise ValueError(f"workspace {workspace} has no held-out eval images (split = 'eval'); they are chosen at "
                         "precompute time for sources with categories (--eval-per-category)")
    classes = sorted(df.top_category.unique())
    index = {c: i for i, c in enumerate(classes)}
    images = [read_bytes(tuple(json.loads(loc))) for loc in df.image_loc]
    return EvalSet(name="workspace-eval", images=images, labels=df.top_category.map(index).to_numpy(np.int64),
                   classnames=[class_prompt_name(c) for c in classes],
                   captions=df.caption.fillna("").astype(str).tolist())


def image_folder_eval_set(folder: str | os.PathLike, max_per_class: int | None = None) -> EvalSet:
    """An ImageFolder-style set: ``folder/<class>/<image>``, the class from the subfolder name."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"not a folder: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    images, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        for p in files[:max_per_class]:
            images.append(p.read_bytes())
            labels.append(i)
    if len(classes) < 2 or not images:
        raise ValueError(f"{root}: an ImageFolder needs at least 2 class subfolders with images "
                         f"({', '.join(IMAGE_EXTS)}), found {len(classes)} classes, {len(images)} images")
    return EvalSet(name=root.name, images=images, labels=np.asarray(labels, np.int64),
                   classnames=[class_prompt_name(c) for c in classes])


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

def load_model(model: str, checkpoint: str | os.PathLike | None = None, device: str = "cpu"):
    """(model, preprocess, tokenizer) for an open_clip model name or ``local-dir:PATH``, weights from
    ``checkpoint`` loaded here (``pretrained=`` is not applied to local-dir models)."""
    import open_clip

    from densprune.embed.models import checkpoint_state_dict, register_model_configs

    register_model_configs()
    net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, device="cpu")
    if checkpoint is not None:
        net.load_state_dict(checkpoint_state_dict(checkpoint))
    net = net.to(device).eval()
    return net, preprocess, open_clip.get_tokenizer(model)


def encode_images(net, preprocess, images: list[bytes], device: str = "cpu", batch_size: int = 128) -> np.ndarray:
    """(N, d) unit image features; images are decoded as open_clip_train's CsvDataset decodes them."""
    import torch
    from PIL import Image

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.stack([preprocess(Image.open(io.BytesIO(b))) for b in images[i:i + batch_size]]).to(device)
            out.append(net.encode_image(x, normalize=True).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def encode_texts(net, tokenizer, texts: list[str], device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """(N, d) unit text features."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[i:i + batch_size])).to(device)
            out.append(net.encode_text(tokens, normalize=True).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def per_image_outcomes(image_feats: np.ndarray, caption_feats: np.ndarray | None, class_emb: np.ndarray,
                       labels: np.ndarray) -> dict[str, np.ndarray]:
    """What :func:`evaluation_metrics` averages, per eval image: (N,) bool ``zeroshot_top1`` and, with
    captions, ``i2t_r1/r5`` (the image's own caption among the first k) and ``t2i_r1/r5`` (the caption's
    own image). Averaging them gives the metrics exactly; keeping them lets a paired comparison of runs
    resample eval images for its intervals."""
    scores = zero_shot_scores(image_feats, class_emb)
    out = {"zeroshot_top1": np.argmax(scores, axis=1) == np.asarray(labels)}
    if caption_feats is not None:
        sim = l2_normalize(image_feats, dtype=np.float64) @ l2_normalize(caption_feats, dtype=np.float64).T
        diag = np.diag(sim)
        i2t, t2i = (sim > diag[:, None]).sum(axis=1), (sim > diag[None, :]).sum(axis=0)
        for k in (1, 5):
            out[f"i2t_r{k}"], out[f"t2i_r{k}"] = i2t < k, t2i < k
    return out


def encode_eval(net, preprocess, tokenizer, evalset: EvalSet, templates: tuple[str, ...] = CLIPART_TEMPLATES,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``net``'s features of ``evalset``: images (N, d), captions (N, d) or None, zero-shot classes (C, d)."""
    import open_clip
    import torch

    img = encode_images(net, preprocess, evalset.images, device)
    with torch.no_grad():  # (d, C): each class the normalised mean of its normalised prompts
        classifier = open_clip.build_zero_shot_classifier(net, tokenizer, evalset.classnames, templates, device=device)
    caps = encode_texts(net, tokenizer, evalset.captions, device) if evalset.captions is not None else None
    return img, caps, classifier.T.float().cpu().numpy().astype(np.float64)


def evaluate_model(net, preprocess, tokenizer, evalset: EvalSet, templates: tuple[str, ...] = CLIPART_TEMPLATES,
                   device: str = "cpu") -> dict[str, float]:
    """All metrics of ``net`` on ``evalset`` (retrieval only when the set has captions)."""
    img, caps, classes = encode_eval(net, preprocess, tokenizer, evalset, templates, device)
    return evaluation_metrics(img, caps, classes, evalset.labels)
