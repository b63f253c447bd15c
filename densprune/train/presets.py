"""Training presets as data: which open_clip model and which optimiser settings a run uses.

A preset names a model (an open_clip model name, or a small config of densprune's own that is
handed to open_clip as ``--model local-dir:PATH``) and the settings of ``open_clip_train.main``.
``get_preset(name)`` accepts a preset name or any open_clip model name (that model with the
``vit-b-32`` preset's settings).

- ``cpu-tiny``: a 48 px ViT with 3-layer towers (~7.6M parameters, most of them the token
  embedding), batch 128, fp32. About 300 samples per CPU-second: a 30k-samples-seen run on the
  demo takes 1-3 minutes on a 2-core machine. Trained from scratch, it measures data, not SOTA.
- ``vit-b-32``: the paper's model with DataComp-medium's settings (mlfoundations/datacomp
  ``scale_configs.py``: ViT-B-32, global batch 4096, lr 5e-4, 500 warmup steps, 128M samples seen;
  open_clip's defaults wd 0.2, beta2 0.98, eps 1e-6 for ViTs; amp). For a GPU; the batch is global,
  so on fewer GPUs add gradient accumulation (``--trainer-arg=--accum-freq=N``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["Preset", "PRESETS", "get_preset", "open_clip_models", "preset_names"]


@dataclass(frozen=True, slots=True)
class Preset:
    """The settings of one kind of training run."""

    name: str
    description: str
    model: str  # open_clip model name; ignored when model_cfg is given
    model_cfg: dict | None = None  # densprune's own config -> RUN/model/open_clip_config.json, local-dir:
    batch_size: int = 128  # per process; samples seen per step
    lr: float = 5e-4
    warmup: float = 500  # >= 1: warmup steps; < 1: a fraction of the run's total steps
    wd: float = 0.2  # open_clip default
    beta1: float = 0.9
    beta2: float = 0.98  # open_clip's ViT default (CLIP paper)
    eps: float = 1e-6
    precision: str = "amp"  # on a GPU; CPU runs always use fp32
    workers: int = 4  # DataLoader workers
    threads: int | None = None  # torch intra-op threads of the trainer (OMP_NUM_THREADS); None = torch's default
    samples_seen: int = 128_000_000  # default compute budget (equal-compute mode)
    grad_clip_norm: float | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # appended to the trainer's arguments

    def warmup_steps(self, total_steps: int) -> int:
        """Warmup in steps for a run of ``total_steps`` (a fraction is rounded, at least 1)."""
        if self.warmup >= 1:
            return int(self.warmup)
        return max(1, round(self.warmup * total_steps))


# A small CLIP for CPUs: 48 px images in 6x6 patches of 8 px; captions cut at 24 tokens (the demo's
# titles are short). Smaller than densprune-tiny (64 px, 4 layers): ~4x cheaper per sample.
CPU_TINY_MODEL_CFG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 48, "layers": 3, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}

PRESETS: dict[str, Preset] = {
    "cpu-tiny": Preset(
        name="cpu-tiny",
        description="48 px ViT, 3+3 layers, batch 128, fp32: minutes per run on a laptop CPU",
        model="densprune-cpu-tiny",
        model_cfg=CPU_TINY_MODEL_CFG,
        batch_size=128,
        lr=1e-3,  # a small model from scratch tolerates (and needs) a higher rate than B/32
        warmup=0.1,  # 10% of the run, so short and long runs warm up alike
        wd=0.1,
        precision="fp32",
        workers=1,  # one decoder beside the training process on a 2-core machine
        threads=1,  # measured on a shared 2-core machine: 2 OpenMP threads ran a step 3-5x slower than 1
        samples_seen=30_000,  # ~4 epochs of the demo pool, ~13 of a 30% plan
    ),
    "vit-b-32": Preset(
        name="vit-b-32",
        description="ViT-B/32, DataComp-medium settings (batch 4096, lr 5e-4, warmup 500, 128M samples): GPU",
        model="ViT-B-32",
        batch_size=4096,
        lr=5e-4,
        warmup=500,
        wd=0.2,
        precision="amp",
        workers=8,
        samples_seen=128_000_000,
    ),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def open_clip_models() -> list[str]:
    """The open_clip model names a run may use by name (open_clip's registry plus densprune's own
    configs): the list the app offers when it does not accept free-text model names."""
    import open_clip

    from densprune.embed.models import register_model_configs

    register_model_configs()
    return list(open_clip.list_models())


def get_preset(name: str) -> Preset:
    """The preset ``name``, or for an open_clip model name the ``vit-b-32`` settings with that model.

    Raises ValueError for a name that is neither (listing what is available).
    """
    if name in PRESETS:
        return PRESETS[name]
    import open_clip

    from densprune.embed.models import register_model_configs

    register_model_configs()
    if name in open_clip.list_models() or name.startswith(("local-dir:", "hf-hub:")):
        base = PRESETS["vit-b-32"]
        return replace(base, name=name, description=f"open_clip model {name} with the vit-b-32 settings", model=name)
    raise ValueError(f"unknown preset or open_clip model {name!r}: presets are {', '.join(PRESETS)}; "
                     f"models include {', '.join(open_clip.list_models()[:8])}, ... (open_clip.list_models())")
