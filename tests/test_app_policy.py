"""The app server's limits: which workspaces a browser session may open and train in, which models it may name.

``densprune app DIR [--allow-root ROOT ...] [--allow-custom-models]`` hands these to the Streamlit script
after ``--``; the AppTests set ``sys.argv`` the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from densprune.app.policy import app_args, parse_app_args
from densprune.app.session import VIEWS
from densprune.cli import main as cli
from densprune.prune import plan_index, plans
from densprune.prune.selection import PlanParams

APP = Path(__file__).resolve().parent.parent / "app.py"


def app_with_argv(monkeypatch, argv: list[str], ws: Path | None = None) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["app.py", *argv])
    at = AppTest.from_file(str(APP), default_timeout=60)
    if ws is not None:
        at.session_state["workspace"] = str(ws)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_path(at: AppTest, path: Path) -> AppTest:
    at.text_input[0].input(str(path))
    [go] = [b for b in at.button if b.label == "Open"]
    go.click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(scope="module")
def two_roots(demo_workspace: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the demo workspace in a folder of its own (a second root), and a plain folder outside."""
    other = tmp_path_factory.mktemp("other-root") / "copy"
    shutil.copytree(demo_workspace, other, ignore=shutil.ignore_patterns("runs", "exports", ".work"))
    return other, tmp_path_factory.mktemp("outside")


def test_parse_app_args_defaults_and_round_trip(tmp_path):
    ws = tmp_path / "a" / "ws"
    pol = parse_app_args(["--workspace", str(ws)])
    assert pol.roots == (ws.parent.resolve(),) and not pol.allow_custom_models
    assert pol.allows(ws) and pol.allows(tmp_path / "a" / "other") and not pol.allows(tmp_path / "b")
    assert not pol.allows(tmp_path / "a" / ".." / "b")  # resolved before it is compared
    pol = parse_app_args(app_args(ws, [tmp_path / "r1", tmp_path / "r2"], True))
    assert pol.roots == ((tmp_path / "r1").resolve(), (tmp_path / "r2").resolve()) and pol.allow_custom_models
    assert pol.allows(ws)  # the start workspace stays allowed
    assert not pol.allows(tmp_path / "a" / "other")  # its folder is not a root once roots are given
    assert parse_app_args([], demo_workspace=tmp_path / "demo").roots == (tmp_path.resolve(),)


def test_a_symlink_out_of_a_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "link").symlink_to(outside)
    assert not parse_app_args(["--allow-root", str(root)]).allows(root / "link")


def test_cli_passes_the_policy_to_the_app(monkeypatch, tmp_path, demo_workspace):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: calls.append(cmd) or envs.append(env) or 0)
    envs: list[dict] = []
    assert cli.main(["app", str(demo_workspace), "--allow-root", str(tmp_path), "--allow-custom-models",
                     "--allow-host", "my.box"]) == 0
    assert calls[0][1:4] == ["-m", "densprune.app.serve", "run"]  # the server with the Host check
    assert envs[0]["DENSPRUNE_ALLOW_HOSTS"].split(",") == ["my.box", "127.0.0.1"]
    after = calls[0][calls[0].index("--") + 1:]
    pol = parse_app_args(after)
    assert pol.workspace == demo_workspace.resolve() and pol.roots == (tmp_path.resolve(),)
    assert pol.allow_custom_models
    assert calls[0][calls[0].index("--server.address") + 1] == "127.0.0.1"


def test_opening_outside_the_roots_is_refused_without_probing(monkeypatch, demo_workspace, two_roots):
    other, outside = two_roots
    at = app_with_argv(monkeypatch, ["--workspace", str(demo_workspace)])
    for path in (other, outside / "missing"):  # a real workspace and a missing path: the same answer
        open_path(at, path)
        assert any("limited to workspaces under" in e.value for e in at.error), [e.value for e in at.error]
        assert not any("No complete workspace" in e.value for e in at.error)
        assert Path(at.session_state["workspace"]) == demo_workspace.resolve()


def test_opening_inside_an_allowed_root_switches(monkeypatch, demo_workspace, two_roots):
    other, outside = two_roots
    at = app_with_argv(monkeypatch, ["--workspace", str(demo_workspace), "--allow-root", str(other.parent),
                                     "--allow-root", str(outside)])
    open_path(at, outside / "missing")  # inside a root: the usual explanation
    assert any("No complete workspace" in e.value for e in at.error)
    open_path(at, other)
    assert Path(at.session_state["workspace"]) == other.resolve()
    assert at.title[0].value == "Overview"


def _train_page(monkeypatch, argv: list[str], ws: Path) -> AppTest:
    if "policy-all" not in set(plans.list_plans(ws)["name"]):  # a plan large enough to train, whatever else is there
        plans.save_plan(ws, "policy-all", plan_index.load_index(ws).compute(PlanParams(keep=1.0)))
    at = app_with_argv(monkeypatch, argv, ws)
    at.switch_page(str(VIEWS / "train.py")).run()
    at.multiselect(key="train_plans").set_value(["policy-all"]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_train_page_offers_models_from_a_list(monkeypatch, two_roots):
    other, _ = two_roots
    at = _train_page(monkeypatch, ["--workspace", str(other)], other)
    at.selectbox(key="train_preset").set_value(at.selectbox(key="train_preset").options[-1]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [t for t in at.text_input if t.key == "train_model"], "free-text model name without the flag"
    models = at.selectbox(key="train_model_pick").options
    assert "ViT-B-32" in models and not any(m.startswith(("local-dir:", "hf-hub:")) for m in models)
    [launch] = [b for b in at.button if b.key == "train_launch"]
    assert not launch.disabled  # the server's own workspace may train


def test_train_page_takes_free_text_with_allow_custom_models(monkeypatch, two_roots):
    other, _ = two_roots
    at = _train_page(monkeypatch, ["--workspace", str(other), "--allow-custom-models"], other)
    at.selectbox(key="train_preset").set_value(at.selectbox(key="train_preset").options[-1]).run()
    assert [t for t in at.text_input if t.key == "train_model"]
    assert not [s for s in at.selectbox if s.key == "train_model_pick"]


def test_train_page_refuses_to_launch_outside_the_roots(monkeypatch, demo_workspace, two_roots):
    other, _ = two_roots
    # a session whose workspace is outside the roots (only possible by setting it directly, as a test does)
    at = _train_page(monkeypatch, ["--workspace", str(demo_workspace)], other)
    assert any("Training from this app is limited" in e.value for e in at.error)
    [launch] = [b for b in at.button if b.key == "train_launch"]
    assert launch.disabled  # (and its handler checks again: a disabled button's click is refused by AppTest)
    assert not (other / "runs").exists()
