"""What a run trains and for how long: its spec, its schedule (equal compute or equal epochs), and
durations as people read them. Pure functions and small records only."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to train. Neither ``samples_seen`` nor ``epochs``: the preset's samples-seen budget."""

    plan: str
    preset: str = "cpu-tiny"
    samples_seen: int | None = None  # equal compute: a fixed number of samples seen
    epochs: int | None = None  # equal epochs
    device: str = "auto"  # auto = CUDA when available
    seed: int = 0
    name: str | None = None  # default: PLAN-PRESET-sSEED-TIMESTAMP
    batch_size: int | None = None  # override the preset's (small plans, tests)
    workers: int | None = None  # override the preset's DataLoader workers
    trainer_args: tuple[str, ...] = field(default_factory=tuple)  # appended to open_clip_train's arguments


@dataclass(frozen=True, slots=True)
class Schedule:
    """How long a run trains: whole epochs over a plan of ``n_train`` samples (drop_last batches)."""

    mode: str  # 'samples' | 'epochs'
    n_train: int
    batch_size: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    samples_seen: int  # = total_steps * batch_size, what the run will see


def make_schedule(n_train: int, batch_size: int, samples_seen: int | None = None,
                  epochs: int | None = None) -> Schedule:
    """Epochs for equal compute (``samples_seen``) or equal epochs (``epochs``); exactly one is given.

    open_clip_train's CSV loader drops the last partial batch and trains whole epochs, so the samples
    seen are ``epochs * (n_train // batch) * batch``; for equal compute the epochs are rounded to the
    nearest whole number (at least 1), and the run records what it actually saw.
    """
    if (samples_seen is None) == (epochs is None):
        raise ValueError("give exactly one of samples_seen (equal compute) and epochs (equal epochs)")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    steps = n_train // batch_size
    if steps < 1:
        raise ValueError(f"the plan keeps {n_train} samples, fewer than one batch of {batch_size}: "
                         "use a smaller batch size or a larger plan")
    per_epoch = steps * batch_size
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        mode, n_epochs = "epochs", int(epochs)
    else:
        if samples_seen < 1:
            raise ValueError(f"samples seen must be >= 1, got {samples_seen}")
        mode, n_epochs = "samples", max(1, round(samples_seen / per_epoch))
    return Schedule(mode, n_train, batch_size, n_epochs, steps, n_epochs * steps, n_epochs * per_epoch)


def fmt_seconds(s: float | None) -> str:
    """'42s', '3m05s', '1h02m'; '-' for None or NaN."""
    if s is None or s != s:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
