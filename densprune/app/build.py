"""Build the demo workspace for the app in a child process and read its progress from the log.

The app does not run ``precompute`` in its own process: the embedding DataLoader forks workers, which
does not mix with the server's threads, and a child process survives a browser refresh. The child is
``python -m densprune demo --no-app`` (the offline embedder, no weights, no network); its log goes
to ``DIR.build.log`` beside the workspace, and :func:`build_progress` turns that log into a fraction.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

# (marker precompute logs at the start of the stage, progress at its start, expected seconds on the demo,
# message). The markers are precompute's own numbered stage lines ("[1/6] embedding ..."), not logger
# names, so moving a module cannot silently stall the bar (tests/test_appdata.py runs a real precompute
# and checks every marker appears, in order).
STAGES = (
    ("", 0.00, 3.0, "listing the demo images"),
    ("[1/6] ", 0.05, 20.0, "decoding and embedding the images"),
    ("[2/6] ", 0.60, 2.0, "clustering the images into concepts"),
    ("[4/6] ", 0.65, 12.0, "finding near-duplicates and drawing the 2-D map"),
)
DONE_MARKER = "[done] "


def log_path(workspace: str | os.PathLike) -> Path:
    ws = Path(workspace)
    return ws.with_name(ws.name + ".build.log")


def start_demo_build(workspace: str | os.PathLike) -> subprocess.Popen:
    """Start ``densprune demo --no-app --workspace DIR`` in the background; its log goes to log_path()."""
    ws = Path(workspace)
    ws.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path(ws), "wb")  # noqa: SIM115 - handed to the child, closed with it
    try:
        return subprocess.Popen([sys.executable, "-m", "densprune", "demo", "--no-app", "--workspace", str(ws)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def build_progress(log_text: str, seconds_in_stage: float = 0.0) -> tuple[float, str]:
    """(fraction in [0, 1], what is happening) from the build log so far.

    Inside a stage the fraction creeps towards the next stage's start with the elapsed time, so the
    bar moves during the long embedding step without overshooting it.
    """
    if DONE_MARKER in log_text:
        return 1.0, "done"
    current = 0
    for i, (marker, _, _, _) in enumerate(STAGES):
        if marker and marker in log_text:
            current = i
    _, start, expected, message = STAGES[current]
    end = STAGES[current + 1][1] if current + 1 < len(STAGES) else 0.99
    frac = start + (end - start) * (1.0 - math.exp(-max(seconds_in_stage, 0.0) / expected))
    return min(frac, 0.99), message


def current_stage(log_text: str) -> int:
    """Index into STAGES of the stage the log has reached."""
    return max([i for i, (m, _, _, _) in enumerate(STAGES) if not m or m in log_text])


def log_tail(workspace: str | os.PathLike, lines: int = 15) -> str:
    path = log_path(workspace)
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
