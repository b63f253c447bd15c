"""What the README tells people to type, run the way they type it.

The installed ``densprune`` console script (not ``python -m``, not ``main()``) answers ``--help`` for
every sub-command the README's command blocks use, the README lists every sub-command the command has,
``densprune demo --no-app`` builds the demo (the ``demo_workspace`` fixture does it with the script),
``densprune app WS`` serves it, and ``make demo`` itself, the Quick start's first command, serves the
app on a fresh clone. (``make test``, the second, is what CI runs: it cannot run itself.)
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from console import (
    ROOT,
    densprune_command,
    free_port,
    port_is_free,
    readme_command_lines,
    readme_subcommands,
    run_densprune,
    start_server,
    stop_server,
    wait_for_health,
)

from densprune import __version__
from densprune.cli.main import build_parser


def cli_subcommands() -> set[str]:
    """The sub-commands the parser defines."""
    [sub] = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(sub.choices)


def test_the_console_script_runs():
    out = run_densprune("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"densprune {__version__}"
    assert "usage: densprune" in run_densprune("--help").stdout


@functools.cache
def help_of(sub: str) -> subprocess.CompletedProcess:
    """``densprune SUB --help`` through the console script, once per sub-command for this module."""
    return run_densprune(sub, "--help", timeout=120)


@pytest.mark.parametrize("sub", readme_subcommands())
def test_every_readme_subcommand_answers_help(sub):
    out = help_of(sub)
    assert out.returncode == 0, f"`densprune {sub} --help` failed ({out.returncode}):\n{out.stderr[-2000:]}"
    assert f"usage: densprune {sub}" in out.stdout


def test_readme_and_the_command_name_the_same_subcommands():
    readme = set(readme_subcommands())
    assert readme, "no `densprune ...` lines found in README's ```bash blocks"
    assert not readme - cli_subcommands(), \
        f"README uses sub-commands the CLI lacks: {sorted(readme - cli_subcommands())}"
    assert not cli_subcommands() - readme, f"README's command block omits: {sorted(cli_subcommands() - readme)}"


def test_readme_options_exist_on_their_subcommand():
    """Every ``--flag`` written on a README command line is one its sub-command's --help lists."""
    missing = []
    for line in readme_command_lines():
        sub = line.split()[1]
        usage = " ".join(help_of(sub).stdout.split())
        code = line.split("#")[0]
        for flag in {w.strip("[]|,") for w in code.split() if w.strip("[]|,").startswith("--")}:
            flag = flag.split("=")[0]
            if flag not in usage:
                missing.append(f"densprune {sub} {flag}")
    assert not missing, f"README writes options the command does not have: {missing}"


def test_the_readme_parser_sees_drift():
    """The check above can fail: a block with a sub-command that does not exist is reported."""
    text = "x\n```bash\ndensprune plan DIR --keep 0.3\n          [--seed S]\ndensprune frobnicate DIR\n```\n"
    assert readme_command_lines(text) == ["densprune plan DIR --keep 0.3", "densprune frobnicate DIR"]
    assert set(readme_subcommands(text)) - cli_subcommands() == {"frobnicate"}


@pytest.mark.slow
def test_densprune_app_serves_the_demo(demo_workspace, tmp_path):
    info = run_densprune("info", demo_workspace)
    assert info.returncode == 0 and "8,121" in info.stdout, info.stdout + info.stderr
    port = free_port()
    log = tmp_path / "app.log"
    app = start_server([str(densprune_command()), "app", str(demo_workspace), "--port", str(port)], log)
    try:
        wait_for_health(app, f"http://127.0.0.1:{port}", 120, f"densprune app {demo_workspace} --port {port}", log)
    finally:
        stop_server(app)


@pytest.mark.slow
def test_make_demo_serves_the_app(tmp_path):
    """``make demo`` as the Quick start writes it, in this checkout: build (first time) and serve on 8501."""
    if shutil.which("make") is None:
        pytest.fail("`make` is not installed: the Quick start's commands need it (apt-get install make)")
    assert port_is_free(8501), "port 8501 is in use: `make demo` serves there; stop what listens on it and rerun"
    venv = Path(sys.prefix)
    args = ["make", "demo"]
    if venv != ROOT / ".venv":  # the tests run from another environment: let make use it rather than build .venv
        args.append(f"VENV={venv}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DENSPRUNE_DEMO")}
    log = tmp_path / "make-demo.log"
    proc = start_server(args, log, cwd=ROOT, env=env)
    try:
        wait_for_health(proc, "http://127.0.0.1:8501", 900, " ".join(args), log)
    finally:
        stop_server(proc)
    assert (ROOT / "workspaces" / "demo" / "densprune.duckdb").is_file()
    assert subprocess.run(["git", "check-ignore", "-q", "workspaces/demo"], cwd=ROOT).returncode == 0
