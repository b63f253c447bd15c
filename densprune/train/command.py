"""The open_clip_train command of a run: its spec, its schedule, the argument list, and log parsing.

Pure functions and small records only; :mod:`densprune.train.supervisor` runs and watches runs, :mod:`densprune.train.records` records them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from densprune.train.presets import Preset

# open_clip_train/train.py: "Train Epoch: 0 [ 640/7861 (8%)] Data (t): ... LR: 0.000550 Logit Scale: 14.268
# Contrastive_loss: 3.8430 (4.0755) Loss: 3.8430 (4.0755)"
_TRAIN_LINE = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<n>\d+)/(?P<per_epoch>\d+) \((?P<pct>\d+)%\)\]"
    r".*?LR: (?P<lr>[-+0-9.eE]+|nan|inf)"
    r".* Loss: (?P<loss>[-+0-9.eE]+|nan|inf) \((?P<avg>[-+0-9.eE]+|nan|inf)\)")
_ERROR_LINE = re.compile(r"(error|exception|traceback|killed|assert)", re.IGNORECASE)


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


def make_schedule(n_train: int, batch_size: int, samples_seen: int | None = None, epochs: int | None = None) -> Schedule:
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


def trainer_args(preset: Preset, *, model: str, train_csv: Path, logs_dir: Path, run_name: str, schedule: Schedule,
                 device: str, seed: int, workers: int, extra: tuple[str, ...] = ()) -> list[str]:
    """The argument list of ``python -m open_clip_train.main`` for one run (never a shell string)."""
    precision = "fp32" if device == "cpu" else preset.precision
    log_every = max(1, min(100, schedule.total_steps // 200))
    args = [
        "--model", model,
        "--train-data", str(train_csv),
        "--dataset-type", "csv", "--csv-img-key", "filepath", "--csv-caption-key", "title",  # tab-separated (default)
        "--batch-size", str(schedule.batch_size),
        "--epochs", str(schedule.epochs),
        "--lr", f"{preset.lr:g}",
        "--warmup", str(preset.warmup_steps(schedule.total_steps)),
        "--wd", f"{preset.wd:g}",
        "--beta1", f"{preset.beta1:g}", "--beta2", f"{preset.beta2:g}", "--eps", f"{preset.eps:g}",
        "--precision", precision,
        "--workers", str(workers),
        "--device", device,
        "--seed", str(seed),
        "--logs", str(logs_dir),
        "--name", run_name,
        "--save-frequency", "0",  # only the final checkpoint
        "--log-every-n-steps", str(log_every),
        "--report-to", "",
    ]
    if preset.grad_clip_norm is not None:
        args += ["--grad-clip-norm", f"{preset.grad_clip_norm:g}"]
    return args + list(preset.extra_args) + list(extra)


def fmt_seconds(s: float | None) -> str:
    """'42s', '3m05s', '1h02m'; '-' for None or NaN."""
    if s is None or s != s:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def command_line(command: list[str], env: dict[str, str] | None = None) -> str:
    """The command as one shell-quoted line, with its environment settings in front (for people)."""
    import shlex

    return " ".join([f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()] + [shlex.join(command)])


def parse_train_line(line: str, schedule: Schedule) -> dict | None:
    """One open_clip_train progress line -> {epoch, step, samples_seen, loss, loss_avg, lr}, else None."""
    m = _TRAIN_LINE.search(line)
    if not m:
        return None
    epoch, n = int(m["epoch"]), int(m["n"])
    done_before = epoch * schedule.steps_per_epoch
    return {"epoch": epoch, "step": done_before + n // schedule.batch_size,
            "samples_seen": done_before * schedule.batch_size + n,
            "loss": float(m["loss"]), "loss_avg": float(m["avg"]), "lr": float(m["lr"])}


def error_summary(output_tail: list[str], returncode: int | None) -> str:
    """A one-line reason for a failed trainer: its last error-looking line, else its last line."""
    lines = [ln.strip() for ln in output_tail if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not ln.startswith("File ")]
    msg = errors[-1] if errors else (lines[-1] if lines else "no output")
    if len(msg) > 500:
        msg = msg[:500] + "…"
    return f"exit code {returncode}: {msg}" if returncode not in (None, 0) else msg
