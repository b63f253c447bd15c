"""The embedders: open_clip (the real one), an offline one that needs no weights, and timm image models
(the concept embedder, ``--concept-embedder timm``: DINOv2 as in the DBP paper).

Both split their work in two. ``worker_prep()`` is a small picklable object, without the model,
that DataLoader workers use: ``image(img)`` turns one decoded image into a model input (open_clip:
resized and cropped uint8 pixels, normalised later on the device) and ``text(captions)`` tokenises
a batch of captions. ``embed(pixels, tokens)`` runs in the main process on a whole batch on the
embedder's device. The offline embedder also has a ``finalize`` step that fits its reductions on
the whole dataset once every shard is done (``rowwise = False``); open_clip's is row by row.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from densprune.devices import resolve_device
from densprune.vectors import l2_normalize

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


@runtime_checkable
class WorkerPrep(Protocol):
    """The picklable, model-free half of an embedder that DataLoader workers run."""

    def image(self, img: Image.Image) -> Any:
        """One decoded RGB image -> one model input (a (3, S, S) uint8 array, or a feature vector)."""

    def text(self, captions: list[str]) -> Any:
        """A batch of captions -> (b, ctx) int64 tokens, or None for an embedder without a text tower."""


@runtime_checkable
class Embedder(Protocol):
    """What the embedding stage needs of an embedder (OpenClipEmbedder, OfflineEmbedder).

    ``name``/``model``/``pretrained`` go into the workspace's meta; ``fingerprint`` keys resumable shards
    (two embedders with one fingerprint give the same vectors); ``pixel_spec`` (or None) lets JPEGs be
    decoded on the device; ``rowwise`` says whether ``finalize`` treats rows independently (then the
    vectors of a shard are final when it is saved) or fits on all rows at the end.
    """

    name: str
    model: str
    pretrained: str
    has_text: bool
    rowwise: bool
    pixel_spec: Any
    device: Any

    @property
    def fingerprint(self) -> str: ...

    def worker_prep(self) -> WorkerPrep: ...

    def embed(self, pixels: Any, tokens: Any) -> tuple[Any, Any]:
        """A batch on the device -> ((b, d) image vectors, (b, d) caption vectors or None) as tensors."""

    def finalize(self, raw: np.ndarray, captions: list[str]) -> np.ndarray:
        """raw: (N, d_raw) float32 of every row -> (N, d) float32 L2-normalised vectors."""


class WeightsUnavailable(RuntimeError):
    """open_clip weights could not be loaded (no network, no cache, bad path)."""


def register_model_configs() -> None:
    """Make densprune's own open_clip model configs (e.g. ``densprune-tiny``) known to open_clip."""
    import open_clip

    if "densprune-tiny" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


# --------------------------------------------------------------------------------------------
# offline embedder
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OfflineConfig:
    """Settings of the offline embedder (documented in docs/embedders.md)."""

    image_dims: int = 64  # PCA dims of the pixel features
    text_dims: int = 64  # SVD dims of the caption TF-IDF
    text_weight: float = 0.5  # share of the caption block in the final vector (0 = pixels only)
    seed: int = 0
    fit_sample: int = 200_000  # rows used to fit PCA / TF-IDF at scale


def pixel_features(img: Image.Image) -> np.ndarray:
    """Hand-made image features of one RGB image: (720,) float32.

    Four blocks, each L2-normalised so that none dominates: a 12x12 colour thumbnail (432), the
    square root of an HSV colour histogram 8x4x4 (128), an 8-orientation gradient histogram on a
    4x4 grid of a 32x32 grey image (128), and 32 global statistics.
    """
    base = img.resize((48, 48), Image.Resampling.BILINEAR)
    small = np.asarray(base.resize((12, 12), Image.Resampling.BOX), dtype=np.float32) / 255.0
    hsv = np.asarray(base.convert("HSV"), dtype=np.int32)
    h, s, v = hsv[..., 0] * 8 // 256, hsv[..., 1] * 4 // 256, hsv[..., 2] * 4 // 256
    hist = np.bincount((h * 16 + s * 4 + v).ravel(), minlength=128).astype(np.float32)
    hist /= hist.sum()
    grey = np.asarray(base.resize((32, 32), Image.Resampling.BILINEAR).convert("L"), dtype=np.float32) / 255.0
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy)
    bins = np.minimum(((np.arctan2(gy, gx) % np.pi) / np.pi * 8).astype(np.int32), 7)
    cell = np.arange(32) // 8
    cell_idx = cell[:, None] * 4 + cell[None, :]
    hog = np.bincount((cell_idx * 8 + bins).ravel(), weights=mag.ravel(), minlength=128).astype(np.float32)
    hog /= max(float(np.linalg.norm(hog)), 1e-6)
    rgb = np.asarray(base, dtype=np.float32).reshape(-1, 3) / 255.0
    stats = np.concatenate([rgb.mean(0), rgb.std(0), rgb.min(0), rgb.max(0),
                            [mag.mean(), mag.std(), (grey > 0.95).mean(), (grey < 0.05).mean()]])
    stats = np.pad(stats, (0, 32 - stats.size))
    blocks = [small.ravel() - 0.5, np.sqrt(hist), hog, stats]
    return np.concatenate([b / max(float(np.linalg.norm(b)), 1e-6) for b in blocks]).astype(np.float32)


class OfflinePrep:
    """Worker side of the offline embedder: pixel features, no text tower."""

    def image(self, img: Image.Image) -> np.ndarray:
        """One RGB image -> (720,) float32 features."""
        return pixel_features(img)

    def text(self, captions: list[str]) -> None:
        return None


class OfflineEmbedder:
    """Deterministic embedder with no weights: pixel features + caption TF-IDF, reduced, L2-normalised."""

    name = "offline"
    model = "pixels+tfidf"
    pretrained = ""
    has_text = False
    rowwise = False  # finalize fits PCA / TF-IDF on all rows
    pixel_spec = None  # no device decoding: the features are made from PIL images in the workers

    def __init__(self, config: OfflineConfig | None = None) -> None:
        import torch

        self.config = config or OfflineConfig()
        self.device = torch.device("cpu")

    @property
    def fingerprint(self) -> str:
        return (f"offline-v2-{self.config.image_dims}-{self.config.text_dims}-"
                f"{self.config.text_weight}-{self.config.seed}")

    def worker_prep(self) -> OfflinePrep:
        return OfflinePrep()

    def embed(self, pixels, tokens=None):
        """pixels: (b, 720) float32 tensor of features -> the same as raw vectors; reduction happens in finalize."""
        return pixels.float(), None

    def finalize(self, raw: np.ndarray, captions: list[str]) -> np.ndarray:
        """Fit the reductions on all rows. raw: (N, 720) pixel features -> (N, d) L2-normalised."""
        from sklearn.decomposition import PCA, TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        cfg = self.config
        n = raw.shape[0]
        rng = np.random.default_rng(cfg.seed)
        fit_rows = np.sort(rng.choice(n, size=min(n, cfg.fit_sample), replace=False))
        fit = np.asarray(raw[fit_rows], dtype=np.float64)
        dims = max(1, min(cfg.image_dims, fit.shape[0] - 1, fit.shape[1]))
        pca = PCA(n_components=dims, svd_solver="randomized", random_state=cfg.seed).fit(fit)
        parts = [l2_normalize(pca.transform(np.asarray(raw, dtype=np.float64)))]
        weights = [1.0 - cfg.text_weight]
        nonempty = sum(1 for c in captions if c and c.strip())
        if cfg.text_weight > 0 and nonempty >= 2:
            vec = TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english", max_features=50_000)
            try:
                vec.fit([captions[i] for i in fit_rows])
                tfidf = vec.transform(captions)
                tdims = max(1, min(cfg.text_dims, tfidf.shape[1] - 1))
                svd = TruncatedSVD(n_components=tdims, random_state=cfg.seed).fit(tfidf[fit_rows])
                parts.append(l2_normalize(svd.transform(tfidf)))
                weights.append(cfg.text_weight)
            except ValueError as exc:  # empty vocabulary: captions are all stop words / numbers
                log.warning("offline embedder: no caption features (%s); using pixels only", exc)
        out = np.concatenate([np.sqrt(w) * p for w, p in zip(weights, parts)], axis=1)
        return l2_normalize(out)


# --------------------------------------------------------------------------------------------
# open_clip embedder
# --------------------------------------------------------------------------------------------

def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def checkpoint_state_dict(path: str | os.PathLike) -> dict:
    """The model weights of an open_clip_train checkpoint (or a bare state_dict), prefixes stripped.

    open_clip_train saves ``{"epoch", "name", "state_dict", "optimizer"}``; a DDP run prefixes every key
    with ``module.`` and a compiled one with ``_orig_mod.``.
    """
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def check_weights_available(model: str, pretrained: str) -> None:
    """Fail at once (not after minutes of retries) when pretrained weights can be neither found nor fetched."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(model)) or "none"
        raise WeightsUnavailable(f"open_clip has no pretrained tag {pretrained!r} for {model} (known tags: {tags}); "
                                 "or give a local checkpoint with --weights PATH")
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo = "/".join(hub.split("/")[:2])
        prefix = "/".join(hub.split("/")[2:])
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, f"{prefix}/{name}" if prefix else name), str):
                return
    if _hub_reachable("huggingface.co" if hub else "github.com"):
        return
    raise WeightsUnavailable(
        f"open_clip weights {model} / {pretrained} are not in the local cache and the model hub cannot be reached "
        "(no network).\nGive a local checkpoint with --weights PATH, or use --embedder offline (no weights needed)."
    )


class OpenClipPrep:
    """Worker side of open_clip: the PIL part of the preprocess, and the tokenizer on a batch."""

    def __init__(self, transform, uint8: bool, tokenizer) -> None:
        self.transform, self.uint8, self.tokenizer = transform, uint8, tokenizer

    def image(self, img: Image.Image):
        """One RGB image -> (3, S, S): uint8 pixels (resized, cropped) or, for preprocesses that cannot be
        split, the full preprocess's float32 tensor."""
        import torch

        out = self.transform(img)
        if not self.uint8:
            return out
        return torch.from_numpy(np.array(out if out.mode == "RGB" else out.convert("RGB"),
                                         dtype=np.uint8)).permute(2, 0, 1)

    def text(self, captions: list[str]):
        """(b,) captions -> (b, ctx) int64 tokens (None for an image-only model: no tokenizer)."""
        if self.tokenizer is None:
            return None
        return self.tokenizer([c or "" for c in captions])


def split_preprocess(preprocess) -> tuple[object | None, tuple | None, tuple | None]:
    """Split an open_clip preprocess ``Compose([...PIL steps, ToTensor, Normalize])`` into its PIL steps
    and the normalisation's mean and std; (None, None, None) when it does not end that way."""
    from torchvision.transforms import Compose, Normalize

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor") \
            or not isinstance(steps[-1], Normalize):
        return None, None, None
    norm = steps[-1]
    return Compose(steps[:-2]), tuple(float(v) for v in norm.mean), tuple(float(v) for v in norm.std)


class OpenClipEmbedder:
    """Image and caption embeddings from any open_clip model; CLIP score = cos(image, caption)."""

    name = "openclip"
    has_text = True
    rowwise = True  # finalize is a row-wise L2 normalisation

    def __init__(self, model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                 weights: str | None = None, device: str = "auto", seed: int = 0) -> None:
        import open_clip
        import torch

        from densprune.embed.pixels import spec_from_preprocess_cfg

        register_model_configs()
        self.model_name = model
        self.model = model
        self.weights = weights
        self.pretrained = weights or (pretrained if pretrained and pretrained.lower() != "none" else "")
        self.device = torch.device(resolve_device(device))
        if model not in open_clip.list_models() and not model.startswith(("hf-hub:", "local-dir:")):
            raise ValueError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
        if weights and not os.path.exists(weights):
            raise WeightsUnavailable(f"--weights {weights}: file not found")
        if self.pretrained and not weights:
            check_weights_available(model, self.pretrained)
        self.seed = int(seed)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)  # random weights (--pretrained none) are the same in every process
                self.net, _, self.preprocess = open_clip.create_model_and_transforms(
                    model, pretrained=None if weights else self.pretrained or None, device=self.device
                )
        except Exception as exc:  # hub errors come in many types (OSError, HTTPError, LocalEntryNotFound...)
            raise WeightsUnavailable(
                f"cannot load open_clip weights {model} / {self.pretrained or '(none)'}: {type(exc).__name__}: {exc}\n"
                "No network or no cached copy? Give a local checkpoint with --weights PATH, "
                "or use --embedder offline (no weights needed)."
            ) from exc
        if weights:
            self._load_weights(weights)
        if not self.pretrained:
            log.warning("open_clip model %s is RANDOMLY INITIALISED (--pretrained none): vectors are not meaningful",
                        model)
        self.net.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self._pil_steps, self.mean, self.std = split_preprocess(self.preprocess)
        cfg = getattr(self.net.visual, "preprocess_cfg", None) or {}
        spec = spec_from_preprocess_cfg(cfg) if self._pil_steps is not None and cfg else None
        # the device path must do what the PIL path does: same mean/std as the preprocess it replaces
        self.pixel_spec = spec if spec and (spec.mean, spec.std) == (self.mean, self.std) else None

    def _load_weights(self, weights: str) -> None:
        """Load a local checkpoint (open_clip_train's ``epoch_E.pt`` or a bare state_dict) into the model;
        works for ``local-dir:`` models too, where open_clip ignores ``pretrained=``."""
        try:
            self.net.load_state_dict(checkpoint_state_dict(weights))
            log.info("open_clip model %s: weights loaded from %s", self.model_name, weights)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise WeightsUnavailable(
                f"--weights {weights} does not fit open_clip model {self.model_name}: {str(exc)[:400]}\n"
                "Give the model the checkpoint was trained with: for a densprune training run that is "
                "--model local-dir:WS/runs/RUN/model"
            ) from exc

    @property
    def fingerprint(self) -> str:
        return f"openclip-{self.model_name}-{self.pretrained or f'random-seed{self.seed}'}"

    def worker_prep(self) -> OpenClipPrep:
        if self._pil_steps is None:
            return OpenClipPrep(self.preprocess, False, self.tokenizer)
        return OpenClipPrep(self._pil_steps, True, self.tokenizer)

    def embed(self, pixels, tokens):
        """pixels: (b, 3, S, S) on ``self.device``, uint8 (normalised here) or float (already normalised);
        tokens: (b, ctx) int64. Returns two (b, d) float32 L2-normalised tensors on the device."""
        import torch

        from densprune.embed.pixels import normalize

        if pixels.dtype == torch.uint8:
            pixels = normalize(pixels, self.mean, self.std)
        use_amp = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
            img = self.net.encode_image(pixels)
            txt = self.net.encode_text(tokens)
        img = torch.nn.functional.normalize(img.float(), dim=-1)
        txt = torch.nn.functional.normalize(txt.float(), dim=-1)
        return img, txt

    def finalize(self, raw: np.ndarray, captions: list[str]) -> np.ndarray:
        return l2_normalize(raw)

    def embed_vocabulary(self, entries: list[str] | tuple[str, ...], batch: int = 50) -> np.ndarray:
        """Text embeddings of vocabulary entries, open_clip's ImageNet prompt templates averaged per
        entry (``open_clip.build_zero_shot_classifier``): (V, d) float32, L2-normalised."""
        import open_clip
        import torch
        from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

        with torch.inference_mode():
            weights = open_clip.build_zero_shot_classifier(
                self.net, self.tokenizer, list(entries), SIMPLE_IMAGENET_TEMPLATES,
                num_classes_per_batch=batch, device=self.device)  # (d, V)
        return l2_normalize(weights.float().T.cpu().numpy())


# --------------------------------------------------------------------------------------------
# timm image embedder: the concept embedder (DINOv2 in the paper)
# --------------------------------------------------------------------------------------------

DEFAULT_CONCEPT_MODEL = "vit_large_patch14_dinov2.lvd142m"  # DINOv2-L/14, as the DBP paper's best clustering


def check_timm_weights(model: str) -> None:
    """Fail at once when timm's pretrained weights of ``model`` are neither in the Hugging Face cache nor
    reachable (no network): WeightsUnavailable naming ``--concept-weights``."""
    import timm
    from timm.models import get_pretrained_cfg

    base = model.split(".", 1)[0]  # TimmEmbedder has checked that timm knows it
    cfg = get_pretrained_cfg(model, allow_unregistered=False) if "." in model else get_pretrained_cfg(base)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if cfg is None:
        tags = ", ".join(timm.list_pretrained(base + "*")[:8]) or "none"
        raise WeightsUnavailable(f"timm has no pretrained weights named {model!r} (known: {tags}); "
                                 "or give a local checkpoint with --concept-weights PATH")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hub, name), str):
                return
    if _hub_reachable("huggingface.co"):
        return
    raise WeightsUnavailable(
        f"timm weights {model} are not in the local Hugging Face cache and the model hub cannot be reached "
        "(no network).\nGive a local checkpoint with --concept-weights PATH (timm's model.safetensors or the "
        "original DINOv2 .pth), or leave --concept-embedder out (concepts from the --embedder's vectors)."
    )


class TimmEmbedder:
    """Image embeddings from any timm model (DINOv2 by default), its pooled features L2-normalised; no text
    tower. Used as ``--concept-embedder timm``: the concepts (k-means, SemDeDup, the map) are built on its
    vectors while the CLIP embedder gives the CLIP score, search and zero-shot names, as the DBP paper
    clustered DINOv2 features and filtered with CLIP."""

    name = "timm"
    has_text = False
    rowwise = True

    def __init__(self, model: str = DEFAULT_CONCEPT_MODEL, pretrained: str | None = "hub",
                 weights: str | None = None, device: str = "auto", seed: int = 0,
                 image_size: int | None = None) -> None:
        import timm
        import torch
        from timm.data import create_transform, resolve_model_data_config

        self.model = model
        self.weights = weights
        use_hub = not weights and (pretrained or "none").lower() != "none"
        self.pretrained = weights or ("hub" if use_hub else "")
        self.seed, self.image_size = int(seed), image_size
        self.device = torch.device(resolve_device(device))
        if not timm.is_model(model.split(".", 1)[0]):
            raise ValueError(f"unknown timm model {model!r}; see timm.list_models('*dinov2*')")
        if weights and not os.path.exists(weights):
            raise WeightsUnavailable(f"--concept-weights {weights}: file not found")
        if use_hub:
            check_timm_weights(model)
        kwargs: dict[str, Any] = {"num_classes": 0}
        if image_size:
            kwargs["img_size"] = int(image_size)
        try:
            self.net = self._create(timm, model, use_hub, kwargs)
            if weights:
                self._load_weights(weights)
        except Exception as exc:  # noqa: BLE001 - hub, file and state-dict errors come in many types
            origin = weights or ("the Hugging Face hub" if use_hub else "random weights")
            raise WeightsUnavailable(
                f"cannot load timm model {model} from {origin}: "
                f"{type(exc).__name__}: {str(exc)[:400]}\nGive a checkpoint that fits the model with "
                "--concept-weights PATH, or leave --concept-embedder out."
            ) from exc
        if not self.pretrained:
            log.warning("timm model %s is RANDOMLY INITIALISED (--concept-pretrained none): vectors are not "
                        "meaningful", model)
        self.net = self.net.to(self.device).eval()
        cfg = resolve_model_data_config(self.net)
        if image_size:
            cfg["input_size"] = (3, int(image_size), int(image_size))
        self.preprocess = create_transform(**cfg, is_training=False)
        self._pil_steps, self.mean, self.std = split_preprocess(self.preprocess)
        self.pixel_spec = None  # PIL decoding in the workers (timm's resize is not open_clip's spec)

    def _create(self, timm, model: str, pretrained: bool, kwargs: dict):
        """timm.create_model, the random weights drawn from the seed (the same in every process). A model
        without an ``img_size`` argument (a convnet) takes any input size: it is built without it."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            try:
                return timm.create_model(model, pretrained=pretrained, **kwargs)
            except TypeError as exc:
                if "img_size" not in kwargs or "img_size" not in str(exc):
                    raise
                torch.manual_seed(self.seed)
                return timm.create_model(model, pretrained=pretrained,
                                         **{k: v for k, v in kwargs.items() if k != "img_size"})

    def _load_weights(self, path: str) -> None:
        """Load a local checkpoint into the model, strictly: timm's own format (``model.safetensors``,
        ``.pth``) or the original one its ``checkpoint_filter_fn`` converts (DINOv2's ``.pth``); the
        classifier head is not needed (``num_classes=0``). A checkpoint of another model raises, naming
        the keys that do not fit (timm's own pretrained loading only warns)."""
        import importlib

        from timm.models import load_state_dict

        sd = load_state_dict(path)
        convert = getattr(importlib.import_module(type(self.net).__module__), "checkpoint_filter_fn", None)
        if convert is not None:
            sd = convert(sd, self.net)
        head = str((getattr(self.net, "pretrained_cfg", None) or {}).get("classifier", "head"))
        sd = {k: v for k, v in sd.items() if not k.startswith(head + ".")}
        missing, unexpected = self.net.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"the checkpoint does not fit: {len(missing)} of the model's weights missing "
                             f"({', '.join(missing[:3])}...), {len(unexpected)} it does not have "
                             f"({', '.join(unexpected[:3])}...)")
        log.info("timm model %s: weights loaded from %s", self.model, path)

    @property
    def fingerprint(self) -> str:
        size = f"-{self.image_size}px" if self.image_size else ""
        return f"timm-{self.model}-{self.pretrained or f'random-seed{self.seed}'}{size}"

    def worker_prep(self) -> OpenClipPrep:
        if self._pil_steps is None:
            return OpenClipPrep(self.preprocess, False, None)
        return OpenClipPrep(self._pil_steps, True, None)

    def embed(self, pixels, tokens=None):
        """pixels: (b, 3, S, S) uint8 (normalised here) or float (already normalised) on ``self.device``.
        Returns ((b, d) float32 L2-normalised tensor, None)."""
        import torch

        from densprune.embed.pixels import normalize

        if pixels.dtype == torch.uint8:
            pixels = normalize(pixels, self.mean, self.std)
        use_amp = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
            feats = self.net(pixels)
        return torch.nn.functional.normalize(feats.float(), dim=-1), None

    def finalize(self, raw: np.ndarray, captions: list[str]) -> np.ndarray:
        return l2_normalize(raw)


def make_concept_embedder(kind: str | None, *, model: str = DEFAULT_CONCEPT_MODEL, pretrained: str | None = "hub",
                          weights: str | None = None, device: str = "auto", seed: int = 0,
                          image_size: int | None = None) -> TimmEmbedder | None:
    """The embedder named by ``--concept-embedder`` (None: the concepts use the --embedder's vectors)."""
    if kind in (None, "", "same"):
        return None
    if kind != "timm":
        raise ValueError(f"unknown concept embedder {kind!r}: use 'timm' (or leave it out)")
    return make_embedder("timm", model=model, pretrained=pretrained, weights=weights, device=device, seed=seed,
                         image_size=image_size)


def vector_dtype(requested: str, embedder: Embedder) -> str:
    """dtype of the stored vectors: ``auto`` is float16 for open_clip (as LAION and DataComp ship
    them; cosines change by < 1e-3) and float32 for the offline embedder."""
    if requested not in ("auto", "float16", "float32"):
        raise ValueError(f"--dtype must be auto, float16 or float32, not {requested!r}")
    if requested == "auto":
        return "float16" if embedder.name in ("openclip", "timm") else "float32"
    return requested


def make_embedder(kind: str, *, model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                  weights: str | None = None, device: str = "auto", seed: int = 0,
                  image_size: int | None = None) -> Embedder:
    """Build the embedder named by ``--embedder`` (or ``timm``, the concept embedder; ``image_size`` is its)."""
    if kind == "timm":
        return TimmEmbedder(model=model, pretrained=pretrained, weights=weights, device=device, seed=seed,
                            image_size=image_size)
    if kind == "offline":
        return OfflineEmbedder(OfflineConfig(seed=seed))
    if kind == "openclip":
        return OpenClipEmbedder(model=model, pretrained=pretrained, weights=weights, device=device, seed=seed)
    raise ValueError(f"unknown embedder {kind!r}: use 'openclip' or 'offline'")
