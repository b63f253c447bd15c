"""What an app server lets its browser sessions do: which workspaces they may open and train in, and
whether training may name any model (the options after ``--`` of ``streamlit run``).

    densprune app DIR [--allow-root ROOT ...] [--allow-custom-models]
    -> streamlit run densprune/app/main.py -- --workspace DIR [--allow-root ROOT ...] [--allow-custom-models]

Without ``--allow-root`` the only root is the folder holding the workspace the server started with
(the demo workspace's folder when it started without one). Plain Python, no Streamlit: the pages ask
:func:`densprune.app.session.policy`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AppPolicy", "parse_app_args", "app_args"]


@dataclass(frozen=True, slots=True)
class AppPolicy:
    """The server's limits: ``roots`` (resolved folders), the start workspace, custom models or not."""

    workspace: Path | None  # the workspace the server started with (resolved), None: the demo
    roots: tuple[Path, ...]
    allow_custom_models: bool = False

    def allows(self, workspace: str | os.PathLike) -> bool:
        """Whether ``workspace`` is the start workspace or lies inside one of the roots (symlinks resolved,
        so a link inside a root that points out of it is refused)."""
        p = Path(workspace).expanduser().resolve()
        if self.workspace is not None and p == self.workspace:
            return True
        return any(p == r or p.is_relative_to(r) for r in self.roots)

    def describe_roots(self) -> str:
        return ", ".join(str(r) for r in self.roots)


def parse_app_args(argv: list[str], demo_workspace: Path | None = None) -> AppPolicy:
    """The policy from the arguments after ``streamlit run main.py --`` (unknown ones are ignored).

    ``demo_workspace``: the workspace the router opens when ``--workspace`` is not given (its folder is
    then the default root).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", "-w", default=None)
    parser.add_argument("--allow-root", action="append", default=[])
    parser.add_argument("--allow-custom-models", action="store_true")
    args, _ = parser.parse_known_args(argv)
    ws = Path(args.workspace).expanduser().resolve() if args.workspace else None
    if args.allow_root:
        roots = tuple(Path(r).expanduser().resolve() for r in args.allow_root)
    else:
        start = ws or (demo_workspace.expanduser().resolve() if demo_workspace is not None else None)
        roots = (start.parent,) if start is not None else ()
    return AppPolicy(workspace=ws, roots=roots, allow_custom_models=bool(args.allow_custom_models))


def app_args(workspace: Path, allow_roots: list[Path] | None = None, allow_custom_models: bool = False) -> list[str]:
    """The arguments after ``--`` that give the app this policy (the inverse of :func:`parse_app_args`)."""
    out = ["--workspace", str(Path(workspace).resolve())]
    for r in allow_roots or ():
        out += ["--allow-root", str(Path(r).expanduser().resolve())]
    if allow_custom_models:
        out.append("--allow-custom-models")
    return out
