"""Small helpers shared by the benchmark scripts: timing medians, markdown tables, and result files
headed by the command that made them."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable


def densprune_command() -> str:
    """The installed ``densprune`` console script next to this Python (what README tells people to type)."""
    script = Path(sys.executable).parent / "densprune"
    if not script.is_file():
        raise SystemExit(f"no `densprune` command at {script}: install the project first (make install)")
    return str(script)


def median_time(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``runs`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def interleaved_times(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of every run of each function, timing them in turn within every round.

    Interleaving makes the comparison robust to load that drifts during the benchmark
    (other processes on a small shared machine).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def interleaved_medians(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 1) -> dict[str, float]:
    """Median of :func:`interleaved_times` for each function."""
    return {name: statistics.median(ts) for name, ts in interleaved_times(fns, runs, warmup).items()}


RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
_LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # this module loads with the script


def command_line() -> str:
    """The running benchmark's command, as typed from the repository root; a driver script that runs a
    benchmark in steps names itself in ``$DENSPRUNE_BENCH_COMMAND``."""
    if os.environ.get("DENSPRUNE_BENCH_COMMAND"):
        return os.environ["DENSPRUNE_BENCH_COMMAND"]
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join(shlex.quote(a) for a in ["python", script, *sys.argv[1:]])


def machine() -> str:
    """'x86_64, 2 CPUs, Python 3.11.7, numpy 2.4.6' plus the 1-minute load average at the start and
    the end of the run (other processes on a shared machine), where the OS reports it."""
    import numpy as np

    load = ""
    if _LOAD_AT_START is not None:
        load = f", 1-min load average {_LOAD_AT_START:.1f} at start / {os.getloadavg()[0]:.1f} at end"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, numpy {np.__version__}{load}")


def save_result(text: str, out: Path | None, default_name: str, header: str = "") -> Path:
    """Write ``text`` to ``out`` (default benchmarks/results/``default_name``), headed by the command
    that made it and the machine; returns the path."""
    path = Path(out) if out is not None else RESULTS / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"Command: `{command_line()}`\n\nMachine: {machine()}\n\n" + (header + "\n\n" if header else "")
    path.write_text(head + text.rstrip() + "\n")
    return path


def publish(text: str, out: Path | None, default_name: str) -> Path:
    """Print a benchmark's result and save it with :func:`save_result`; returns the path."""
    print(text)
    path = save_result(text, out, default_name)
    print(f"wrote {path}")
    return path


def median_wall_cpu(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[float, float]:
    """Median wall and median process CPU seconds of ``fn`` (CPU time counts every thread of this
    process, so it is what the work costs whatever else runs on a shared machine)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)
