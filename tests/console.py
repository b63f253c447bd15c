"""The ``densprune`` console command as a user types it: the script pip installed next to this Python
(``.venv/bin/densprune`` after ``make install``), run as a subprocess, never ``python -m`` or ``main()``.

Also: the README's command blocks parsed into the sub-commands they use, and a server started by a
command (``densprune app``, ``make demo``) waited for on its health endpoint and stopped with its
whole process group.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def densprune_command() -> Path:
    """The installed console script; a clear failure when the environment has none."""
    script = Path(sys.executable).parent / "densprune"
    if not script.is_file():
        raise AssertionError(f"no `densprune` console script at {script}: install the project "
                             f"(`make install`, or `pip install -e .`) into the Python that runs the tests")
    return script


def run_densprune(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900,
                  script: Path | None = None) -> subprocess.CompletedProcess:
    """``densprune ARGS`` (the installed script unless ``script`` names another), output captured as text."""
    cmd = [str(script or densprune_command()), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def readme_command_lines(text: str | None = None) -> list[str]:
    """Every line of the README's ```bash blocks that starts with ``densprune`` (continuation lines
    of a usage block, which start with blanks, are not commands)."""
    text = README.read_text() if text is None else text
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += [line.strip() for line in block.splitlines() if line.startswith("densprune ")]
    return lines


def readme_subcommands(text: str | None = None) -> list[str]:
    """The sub-commands the README's command blocks use, in order of first use."""
    subs = [line.split()[1] for line in readme_command_lines(text)]
    return list(dict.fromkeys(subs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_health(proc: subprocess.Popen, url: str, timeout_s: float, what: str, log: Path) -> None:
    """Poll ``URL/_stcore/health`` until it answers 200; an AssertionError naming the command and the
    tail of its log when the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            why = (f"exited with code {proc.returncode}" if proc.poll() is not None
                   else f"no answer in {timeout_s:.0f} s")
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise AssertionError(f"`{what}` did not serve the app at {url} ({why}); its output ends:\n{tail}")
        time.sleep(0.5)


def start_server(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (it starts streamlit as a child), output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the whole group (the command and the streamlit server it started), SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
