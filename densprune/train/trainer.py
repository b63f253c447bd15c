"""densprune's side of open_clip_train: the argument list of ``python -m open_clip_train.main`` for a
run, and what its log says (progress lines, the reason it failed). Pure functions only;
:mod:`densprune.train.supervisor` runs and watches the trainer, :mod:`densprune.train.records` records runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from densprune.train.presets import Preset
from densprune.train.schedule import Schedule

# open_clip_train/train.py: "Train Epoch: 0 [ 640/7861 (8%)] Data (t): ... LR: 0.000550 Logit Scale: 14.268
# Contrastive_loss: 3.8430 (4.0755) Loss: 3.8430 (4.0755)"
_TRAIN_LINE = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<n>\d+)/(?P<per_epoch>\d+) \((?P<pct>\d+)%\)\]"
    r".*?LR: (?P<lr>[-+0-9.eE]+|nan|inf)"
    r".* Loss: (?P<loss>[-+0-9.eE]+|nan|inf) \((?P<avg>[-+0-9.eE]+|nan|inf)\)")
_ERROR_LINE = re.compile(r"(error|exception|traceback|killed|assert)", re.IGNORECASE)


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
