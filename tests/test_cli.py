"""The command line's contract as README documents it: help texts and argument shapes (no workspace needed)."""

from __future__ import annotations

import pytest

from densprune.cli.main import build_parser, main


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_plan_help_states_the_budget_semantics(capsys):
    out = help_text(capsys, "plan")
    assert "--keep 0.3 keeps 30% of what REMAINS after dedup and the CLIP filter" in out
    assert "--clip-keep is a fraction of what dedup left" in out
    assert "one larger than what remains is an error" in out


def test_recluster_and_cancel_take_what_readme_documents(capsys):
    assert "--dedup-eps" in help_text(capsys, "recluster")
    args = build_parser().parse_args(["cancel", "ws", "--run", "r1"])  # README: densprune cancel DIR --run RUN
    assert args.run == "r1" and str(args.workspace) == "ws"
    args = build_parser().parse_args(["eval", "ws", "--run", "r1"])
    assert args.run == "r1"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cancel", "ws", "r1"])
