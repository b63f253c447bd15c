"""CLI commands for training runs: ``train``, ``eval``, ``runs``, ``cancel``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from densprune.train.presets import PRESETS

    p = sub.add_parser("train", help="train a CLIP model on a plan's keep set with open_clip_train",
                       description="Export the plan, run `python -m open_clip_train.main` on it (logging into "
                                   "DIR/runs/RUN/), then evaluate the checkpoint on the held-out eval split. "
                                   "Equal compute: --samples-seen (default: the preset's budget); "
                                   "equal epochs: --epochs.")
    p.add_argument("workspace", type=Path)
    p.add_argument("--plan", required=True, help="a saved plan (`densprune plans DIR`)")
    p.add_argument("--preset", default="cpu-tiny",
                   help=f"{' | '.join(PRESETS)}, or any open_clip model name (default: %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--samples-seen", type=int, default=None,
                        help="equal compute: train this many samples (epochs = samples / plan size, rounded)")
    budget.add_argument("--epochs", type=int, default=None, help="equal epochs: train this many passes over the plan")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cpu (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.add_argument("--name", default=None, help="run name (default: PLAN-PRESET-sSEED-TIMESTAMP)")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--workers", type=int, default=None, help="override the preset's DataLoader workers")
    p.add_argument("--trainer-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for open_clip_train, repeatable: --trainer-arg=--grad-clip-norm=1.0")
    p.add_argument("--background", action="store_true", help="start the run in the background and return")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="(re-)evaluate a finished run's checkpoint")
    p.add_argument("workspace", type=Path)
    p.add_argument("--run", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--image-folder", default=None,
                   help="also zero-shot classify an ImageFolder-style folder (one subfolder per class)")
    p.add_argument("--templates", choices=["clipart", "photo"], default="clipart",
                   help="prompts for the --image-folder classes: 'clip art of {class}.' ... or "
                        "'a photo of a {class}.' ... (the held-out split always uses the clip-art ones)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("runs", help="list the training runs of a workspace with their results")
    p.add_argument("workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("cancel", help="cancel a queued or running training run")
    p.add_argument("workspace", type=Path)
    p.add_argument("--run", required=True, help="the run's name (see `densprune runs DIR`)")
    p.set_defaults(func=cmd_cancel)


def _spec(args: argparse.Namespace):
    from densprune.train.schedule import RunSpec

    return RunSpec(plan=args.plan, preset=args.preset, samples_seen=args.samples_seen, epochs=args.epochs,
                   device=args.device, seed=args.seed, name=args.name, batch_size=args.batch_size,
                   workers=args.workers, trainer_args=tuple(args.trainer_arg))


def _print_progress(ev: dict) -> None:
    from densprune.train.schedule import fmt_seconds

    if ev.get("event") == "eval":
        print("eval    " + "  ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in ev.items()
                                     if k.startswith("eval/") and k.split("/", 1)[1] not in ("n_images", "n_classes")),
              flush=True)
        return
    loss = f"{ev['loss']:.4f}" if ev.get("loss") is not None else "-"
    print(f"step {ev['step']:>6}/{ev['total_steps']}  samples {ev['samples_seen']:>10,}/{ev['target_samples']:,}  "
          f"loss {loss}  elapsed {fmt_seconds(ev['elapsed_s'])}  ETA {fmt_seconds(ev.get('eta_s'))}", flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from densprune import db
    from densprune.train import launch, records, supervisor, trainer
    from densprune.train.evaluation import eval_hygiene_warning
    from densprune.train.schedule import fmt_seconds

    info = records.create_run(args.workspace, _spec(args))
    name = info["name"]
    warning = eval_hygiene_warning(db.load_meta(args.workspace))
    if warning:
        log.warning("%s", warning)
    sched = info["schedule"]
    print(f"run {name}: plan {args.plan} ({sched['n_train']:,} samples), {sched['epochs']} epochs x "
          f"{sched['steps_per_epoch']} steps x batch {sched['batch_size']} = {sched['samples_seen']:,} samples seen "
          f"on {info['device']}")
    print("command: " + trainer.command_line(*records.trainer_command(info)))
    if args.background:
        pid = launch.start_supervisor(args.workspace, name)
        print(f"started in the background (pid {pid}); watch it with `densprune runs {args.workspace}`, "
              f"stop it with `densprune cancel {args.workspace} --run {name}`")
        return 0
    row = supervisor.execute_run(args.workspace, name, echo=_print_progress)
    print(f"run {name}: {row['status']} in {fmt_seconds(row.get('wall_s'))}, "
          f"{row.get('samples_seen') or 0:,} samples seen"
          + (f"  error: {row['error']}" if row.get("error") and row["status"] != "done" else ""))
    return 0 if row["status"] == "done" else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from densprune.train import supervisor

    metrics = supervisor.evaluate_run(args.workspace, args.run, device=args.device, image_folder=args.image_folder,
                                    templates=args.templates)
    for k, v in metrics.items():
        print(f"{k:<40} {v:.4f}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from densprune.train import listing
    from densprune.train.schedule import fmt_seconds

    df = listing.results_table(args.workspace)
    if args.json:
        print(json.dumps(json.loads(df.to_json(orient="records", date_format="iso")), indent=2))
        return 0
    if df.empty:
        print(f"no runs in {args.workspace}; start one with `densprune train {args.workspace} --plan NAME`")
        return 0
    print(f"{'run':<40} {'plan':<16} {'mode':<7} {'seed':>4} {'status':<9} {'samples':>10} {'wall':>7} "
          f"{'zero-shot':>9} {'i2t R@5':>8} {'t2i R@5':>8}")
    for r in df.itertuples(index=False):
        def val(col: str) -> str:
            v = getattr(r, col, None)
            return f"{100 * v:.1f}%" if v is not None and v == v else "-"
        line = (f"{r.name:<40} {str(r.plan):<16} {str(r.mode):<7} {r.seed:>4} {r.status:<9} "
                f"{int(r.samples_seen or 0):>10,} {fmt_seconds(r.wall_s):>7} {val('zeroshot_top1'):>9} "
                f"{val('i2t_r5'):>8} {val('t2i_r5'):>8}")
        if r.status in ("queued", "running"):
            line += f"  [{r.phase or r.status}, ETA {fmt_seconds(r.eta_s)}]"
        elif r.status == "failed" and r.error:
            line += f"  error: {r.error}"
        print(line)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from densprune.train import launch

    launch.cancel_run(args.workspace, args.run)
    print(f"asked run {args.run} to stop")
    return 0
