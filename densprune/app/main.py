"""densprune's exploration app: the router (the Streamlit entry script).

    densprune app DIR                            (runs this file with ``streamlit run``)
    streamlit run app.py -- --workspace DIR      (from a checkout: app.py calls :func:`run`)
    streamlit run app.py                         (the demo workspace, built on first run)

The pages are the scripts in ``densprune/app/views/``, given to ``st.navigation`` by path with a URL
of their own (``/concepts``, ``/budget``...), so deep links work on a fresh server: no ``pages/``
folder sits beside an entry script, which is what would put Streamlit into its old folder mode.

Which workspace is open lives in ``st.session_state["workspace"]``; the Overview page can switch it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import streamlit as st

from densprune import db
from densprune.app import build as appbuild
from densprune.app import page_data, session
from densprune.app.policy import parse_app_args
from densprune.workspace import default_demo_workspace


def cli_workspace(argv: list[str]) -> Path | None:
    """``--workspace DIR`` from the arguments after ``streamlit run app.py --`` (see densprune.app.policy
    for ``--allow-root`` and ``--allow-custom-models``)."""
    return parse_app_args(argv).workspace


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
    if proc.poll() == 0 and not db.is_complete(ws):  # an earlier build whose result was removed since
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
    if proc.returncode != 0 or not db.is_complete(ws):
        demo_builder.clear()
        st.error(f"Building the demo workspace in {page_data.escape_markdown(str(ws))} failed "
                 f"(exit code {proc.returncode}).")
        st.code(appbuild.log_tail(ws) or "(no log)", language="text")
        st.button("Try again")
        st.stop()
    bar.progress(1.0, text="done")
    st.rerun()


def open_workspace() -> Path:
    """The workspace of this session: chosen on the Overview page, else ``--workspace``, else the demo."""
    if session.WS_KEY not in st.session_state:
        ws = cli_workspace(sys.argv[1:])
        st.session_state[session.WS_KEY] = str(ws or default_demo_workspace().resolve())
    return Path(st.session_state[session.WS_KEY])


def warm_up(argv: list[str]) -> list[str]:
    """Before any browser connects (called by densprune.app.serve in a thread): import the app and fill
    the caches of the workspace a new session opens (``argv``: the app's arguments, as in
    :func:`open_workspace`). Returns what was filled."""
    ws = cli_workspace(argv) or default_demo_workspace().resolve()
    return session.warm_caches(ws)


def pages() -> dict[str, list]:
    """The navigation: sections of st.Page objects (the views, each with its own URL)."""
    return {section: [session.page(name) for name in names] for section, names in session.SECTIONS.items()}


def run() -> None:
    """One script run of the app: pick the workspace, build the demo if needed, show the page."""
    st.set_page_config(page_title="densprune", page_icon=":material/content_cut:", layout="wide")
    ws = open_workspace()
    ready = db.is_complete(ws)
    nav = st.navigation(pages(), position="sidebar" if ready else "hidden")
    if not ready:
        if ws == default_demo_workspace().resolve():
            build_demo(ws)  # reruns the app when done
        st.title("densprune")
        st.error(f"No complete workspace at {page_data.escape_markdown(str(ws))} (missing {db.DB_NAME}). Build one "
                 f"with `densprune precompute SOURCE --workspace DIR`, or open another one below.")
        session.open_workspace_form("missing")
        st.stop()
    session.keep_plan_state()
    with st.sidebar:
        st.caption(f"Workspace **{page_data.escape_markdown(ws.name)}**  \n{page_data.escape_markdown(str(ws))}")
    nav.run()


if __name__ == "__main__":  # Streamlit runs its entry script as __main__
    run()
