"""densprune's exploration app: the router.

    streamlit run app.py -- --workspace DIR      (or: densprune app DIR)
    streamlit run app.py                         (the demo workspace, built on first run)

Which workspace is open lives in ``st.session_state["workspace"]``; the Overview page can switch it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import streamlit as st

from densprune import appbuild, appdata, store
from densprune.cli import default_demo_workspace
from pages import _common as ui

ROOT = Path(__file__).resolve().parent


def cli_workspace(argv: list[str]) -> Path | None:
    """``--workspace DIR`` from the arguments after ``streamlit run app.py --``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", "-w", default=None)
    args, _ = parser.parse_known_args(argv)
    return Path(args.workspace).expanduser().resolve() if args.workspace else None


@st.cache_resource(show_spinner=False)
def demo_builder(ws: str) -> subprocess.Popen:
    """One background build per demo workspace, shared by every browser session."""
    return appbuild.start_demo_build(ws)


def build_demo(ws: Path) -> None:
    """Build the demo workspace with a progress bar (first run only); stops the script on failure."""
    st.title("densprune")
    st.write("First run: building the demo workspace from the bundled open clip-art images (about a "
             "minute on a laptop CPU, no downloads). The app opens by itself when it is ready.")
    proc = demo_builder(str(ws))
    if proc.poll() == 0 and not store.is_complete(ws):  # an earlier build whose result was removed since
        demo_builder.clear()
        proc = demo_builder(str(ws))
    bar = st.progress(0.0, text="starting…")
    stage, stage_t0 = -1, time.monotonic()
    while proc.poll() is None:
        log = appbuild.log_path(ws)
        log_text = log.read_text(errors="replace") if log.exists() else ""
        now_stage = appbuild.current_stage(log_text)
        if now_stage != stage:
            stage, stage_t0 = now_stage, time.monotonic()
        frac, message = appbuild.build_progress(log_text, time.monotonic() - stage_t0)
        bar.progress(frac, text=f"{message}…")
        time.sleep(0.5)
    if proc.returncode != 0 or not store.is_complete(ws):
        demo_builder.clear()
        st.error(f"Building the demo workspace in {appdata.escape_markdown(str(ws))} failed "
                 f"(exit code {proc.returncode}).")
        st.code(appbuild.log_tail(ws) or "(no log)", language="text")
        st.button("Try again")
        st.stop()
    bar.progress(1.0, text="done")
    st.rerun()


def open_workspace() -> Path:
    """The workspace of this session: chosen on the Overview page, else ``--workspace``, else the demo."""
    if ui.WS_KEY not in st.session_state:
        ws = cli_workspace(sys.argv[1:])
        st.session_state[ui.WS_KEY] = str(ws or default_demo_workspace().resolve())
    return Path(st.session_state[ui.WS_KEY])


def pages() -> dict[str, list]:
    page = {name: st.Page(f"pages/{name}.py", title=title, icon=icon, default=name == "overview")
            for name, title, icon in (
                ("overview", "Overview", ":material/home:"),
                ("concepts", "Concepts", ":material/bubble_chart:"),
                ("complexity", "Complexity", ":material/scatter_plot:"),
                ("budget", "Budget", ":material/tune:"),
                ("preview", "Preview", ":material/compare:"),
                ("export", "Export", ":material/download:"),
            )}
    sections = {"Explore": [page["overview"], page["concepts"], page["complexity"]],
                "Prune": [page["budget"], page["preview"], page["export"]]}
    if (ROOT / "pages" / "train.py").exists():  # written separately (training runs); optional here
        sections["Train"] = [st.Page("pages/train.py", title="Train", icon=":material/model_training:")]
    return sections


st.set_page_config(page_title="densprune", page_icon=":material/content_cut:", layout="wide")
ws = open_workspace()
ready = store.is_complete(ws)
nav = st.navigation(pages(), position="sidebar" if ready else "hidden")
if not ready:
    if ws == default_demo_workspace().resolve():
        build_demo(ws)  # reruns the app when done
    st.title("densprune")
    st.error(f"No complete workspace at {appdata.escape_markdown(str(ws))} (missing {store.DB_NAME}). Build one "
             f"with `densprune precompute SOURCE --workspace DIR`, or open another one below.")
    ui.open_workspace_form("missing")
    st.stop()
ui.keep_plan_state()
with st.sidebar:
    st.caption(f"Workspace **{appdata.escape_markdown(ws.name)}**  \n{appdata.escape_markdown(str(ws))}")
nav.run()
