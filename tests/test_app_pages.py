"""The Streamlit app through streamlit.testing.v1.AppTest: every page renders, widgets change what it shows.

Runs on the demo workspace (tests/conftest.py builds it once per session, or $DENSPRUNE_TEST_WORKSPACE).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from densprune import db
from densprune.app import page_data
from densprune.app.session import PLAN_DEFAULTS, VIEWS
from densprune.export.writers import DEFAULT_SUFFIX
from densprune.prune import plan_index, plans
from densprune.prune.selection import PlanParams

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
PAGES = ["overview", "concepts", "find", "complexity", "budget", "preview", "export"] + ["train"]


def open_app(ws: Path, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["workspace"] = str(ws)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page and page != "overview":
        at.switch_page(str(VIEWS / f"{page}.py")).run()
    return at


def no_errors(at: AppTest) -> None:
    assert not at.exception, "\n".join(str(e.value) for e in at.exception)


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


def as_int(text: str) -> int:
    return int(text.split(" ")[0].replace(",", ""))


def button(at: AppTest, label: str):
    for b in at.button:
        if b.label == label:
            return b
    raise AssertionError(f"no button {label!r}; have {[b.label for b in at.button]}")


def plan_state(at: AppTest) -> dict:
    """The plan knobs of an AppTest session (what the pages compute the current plan from)."""
    return {k: at.session_state[k] for k in PLAN_DEFAULTS if k in at.session_state}


def all_text(at: AppTest) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.info]
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="module")
def ws(demo_workspace: Path) -> Path:
    return demo_workspace


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(ws, page):
    at = open_app(ws, page)
    no_errors(at)
    assert at.title, f"{page} shows no title"


def test_router_reads_workspace_from_argv(ws, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app.py", "--workspace", str(ws)])
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    no_errors(at)
    assert Path(at.session_state["workspace"]) == ws.resolve()
    assert at.title[0].value == "Overview"


def test_router_explains_a_missing_workspace(tmp_path):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["workspace"] = str(tmp_path / "nothing-here")
    at.run()
    no_errors(at)
    assert any("No complete workspace" in e.value for e in at.error)


def test_overview_explains_no_clip_scores_and_rejects_bad_path(ws, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app.py", "--workspace", str(ws), "--allow-root", str(tmp_path)])
    at = open_app(ws)
    if not db.load_meta(ws)["has_clip_scores"]:
        assert any("No CLIP scores" in i.value for i in at.info)
    at.text_input[0].input(str(tmp_path / "missing"))
    button(at, "Open").click().run()
    no_errors(at)
    assert any("No complete workspace" in e.value for e in at.error)
    assert Path(at.session_state["workspace"]) == ws  # still on the same workspace


def test_budget_shows_exactly_the_planned_counts(ws):
    at = open_app(ws, "budget")
    pool = db.load_meta(ws)["n_pool"]
    assert as_int(metric(at, "Eligible")) == pool
    assert as_int(metric(at, "Kept")) == round(0.30 * pool)
    at.slider(key="plan_keep_pct").set_value(5).run()
    no_errors(at)
    assert as_int(metric(at, "Kept")) == round(0.05 * pool)
    result = plan_index.load_index(ws).compute(page_data.params_from_state(plan_state(at), db.load_meta(ws)))
    assert result.n_kept == round(0.05 * pool)


def test_budget_names_the_knobs_that_need_a_full_pass(ws):
    """The summary answers DBP with dedup on the slider's steps (no caption); the dedup-only method
    needs a pass over the rows, and the page says so, with the same counts as the library."""
    at = open_app(ws, "budget")
    at.toggle(key="plan_dedup_on").set_value(True).run()
    at.slider(key="plan_dedup_eps").set_value(0.035).run()
    no_errors(at)
    params = page_data.params_from_state(plan_state(at), db.load_meta(ws))
    index = plan_index.load_index(ws)
    assert params.dedup_eps == 0.035 and index.summary_level(params) is not None
    assert "full pass over" not in all_text(at)
    at.selectbox(key="plan_method").set_value("dedup").run()
    no_errors(at)
    assert "Computed by a full pass over the" in all_text(at) and "method dedup" in all_text(at)
    params = page_data.params_from_state(plan_state(at), db.load_meta(ws))
    assert as_int(metric(at, "Kept")) == index.compute(params, mask=False).n_kept


def test_budget_keep_everything_is_explained(ws):
    at = open_app(ws, "budget")
    at.slider(key="plan_keep_pct").set_value(100).run()
    no_errors(at)
    assert any("keeps every eligible image" in i.value for i in at.info)


def test_budget_dedup_shrinks_the_eligible_pool(ws):
    at = open_app(ws, "budget")
    before = as_int(metric(at, "Eligible"))
    at.toggle(key="plan_dedup_on").set_value(True).run()
    at.slider(key="plan_dedup_eps").set_value(0.1).run()
    no_errors(at)
    assert as_int(metric(at, "Eligible")) < before
    assert "duplicates" in all_text(at)


def test_budget_counts_the_remaining_pool_and_shows_both_shares(ws):
    """With dedup on, keep 30% is 30% of what dedup left; the page says so and gives the raw-pool share."""
    at = open_app(ws, "budget")
    at.toggle(key="plan_dedup_on").set_value(True).run()
    at.slider(key="plan_dedup_eps").set_value(0.05).run()
    at.slider(key="plan_keep_pct").set_value(30).run()
    no_errors(at)
    kept, remaining = as_int(metric(at, "Kept")), as_int(metric(at, "Eligible"))
    pool = db.load_meta(ws)["n_pool"]
    assert remaining < pool and kept == round(0.3 * remaining)
    assert metric(at, "Kept of the raw pool") == f"{kept / pool:.1%}"
    text = all_text(at)
    assert f"{kept / remaining:.1%} of the {remaining:,} that remain after dedup and the CLIP filter" \
        in text.replace("\\", "")
    assert f"{kept / pool:.1%} of the raw pool of {pool:,}" in text.replace("\\", "")


def test_budget_disables_clip_widgets_without_clip_scores(ws):
    if db.load_meta(ws)["has_clip_scores"]:
        pytest.skip("workspace has CLIP scores")
    at = open_app(ws, "budget")
    assert at.toggle(key="plan_clip_on").disabled
    assert at.slider(key="plan_clip_keep_pct").disabled
    assert "clip-score" not in at.selectbox(key="plan_method").options
    assert "No CLIP scores" in all_text(at)


def test_budget_method_changes_per_concept_kept(ws):
    at = open_app(ws, "budget")
    at.selectbox(key="plan_method").set_value("ssp").run()
    no_errors(at)
    assert "SSP" in all_text(at)
    assert at.select_slider(key="plan_temperature").disabled  # DBP only


WRITER = """
import pathlib, sys, time
from densprune import db
from densprune.prune import plan_index, plans
from densprune.prune.selection import PlanParams
ws, stop = sys.argv[1], pathlib.Path(sys.argv[2])
index, n = plan_index.load_index(ws), 0
while not stop.exists():  # write transactions back to back, as a CLI plan save or a training run does
    plans.save_plan(ws, "writer-proc", index.compute(PlanParams(keep=0.1 + 0.01 * (n % 20))), overwrite=True)
    n += 1
    stop.with_suffix(".tmp").write_text(str(n))
    stop.with_suffix(".tmp").replace(stop.with_suffix(".count"))
plans.delete_plan(ws, "writer-proc")
"""


def test_save_plan_while_another_process_writes(ws, tmp_path):
    name = f"t-{uuid.uuid4().hex[:8]}"
    stop = tmp_path / "stop"
    count = stop.with_suffix(".count")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(ws), str(stop)])
    try:
        deadline = time.monotonic() + 60
        while not count.exists():  # the writer is writing
            assert writer.poll() is None and time.monotonic() < deadline, "the writer process did not start writing"
            time.sleep(0.1)
        before = int(count.read_text())
        at = open_app(ws, "budget")
        at.slider(key="plan_keep_pct").set_value(20).run()
        at.text_input(key="budget_save_name").input(name)
        button(at, "Save plan").click().run()
        no_errors(at)
        assert any(name in s.value for s in at.success)
        for page in ("concepts", "preview", "export", "overview"):  # every page reads while the writer writes
            at.switch_page(str(VIEWS / f"{page}.py")).run()
            no_errors(at)
        at.switch_page(str(VIEWS / "budget.py")).run()
        assert int(count.read_text()) > before, "the writer made no write while the app worked"
    finally:
        stop.touch()
        assert writer.wait(60) == 0
    assert name in set(plans.list_plans(ws)["name"])
    # the same name again without overwrite: an error message, not an exception
    at.text_input(key="budget_save_name").input(name)
    button(at, "Save plan").click().run()
    no_errors(at)
    assert any("already exists" in e.value for e in at.error)
    # a bad name is explained
    at.text_input(key="budget_save_name").input("../escape")
    button(at, "Save plan").click().run()
    assert any("invalid plan name" in e.value for e in at.error)
    # compare the saved plan with the current one
    at.toggle(key="budget_cmp_on").set_value(True).run()
    at.selectbox(key="budget_cmp_b").set_value(name).run()
    no_errors(at)
    assert as_int(metric(at, "Kept by both")) > 0
    assert as_int(metric(at, "Only A")) == 0 and as_int(metric(at, "Only B")) == 0  # same params as saved
    at.slider(key="plan_keep_pct").set_value(40).run()  # the comparison follows the knobs
    no_errors(at)
    assert as_int(metric(at, "Only A")) > 0
    plans.delete_plan(ws, name)


def test_concepts_search_and_pick(ws):
    at = open_app(ws, "concepts")
    table = at.dataframe[0].value
    assert len(table) == db.load_meta(ws)["k"]
    word = db.query_df(ws, "SELECT caption FROM samples WHERE caption IS NOT NULL AND length(caption) > 4 "
                              "ORDER BY row_idx LIMIT 1")["caption"].iloc[0].split()[0]
    at.text_input(key="concepts_search").input(word).run()
    no_errors(at)
    assert 0 < len(at.dataframe[0].value) <= len(table)
    at.text_input(key="concepts_search").input("zzqx-no-such-caption").run()
    no_errors(at)
    assert any("No concept name or caption contains" in i.value for i in at.info)
    current = at.selectbox(key="concepts_pick").value
    other = 0 if current != 0 else 1
    at.selectbox(key="concepts_pick").set_value(other).run()
    no_errors(at)
    assert at.subheader[0].value.replace("\\", "").startswith(f"#{other}")
    assert at.html, "no thumbnail grid"


def test_concepts_search_by_label_word_states_the_label_source(ws):
    """Searching a label word lists the concepts named with it first, then those with the word in captions."""
    from densprune.app import page_data

    cl = db.load_clusters(ws)
    word = cl.sort_values("pool_size", ascending=False)["label"].iloc[0].split(", ")[0]
    counts = db.query_df(ws, "SELECT cluster, count(*) AS n FROM samples WHERE caption ILIKE ? GROUP BY cluster",
                         [f"%{word}%"]).set_index("cluster")["n"].to_dict()
    named = [c for c, lab in zip(cl["cluster"], cl["label"]) if word in lab.casefold()]
    by_caption = [c for c in counts if c not in named]
    expected = (sorted(named, key=lambda c: (-counts.get(c, 0), c)) + sorted(by_caption, key=lambda c: (-counts[c], c)))
    names = dict(zip(cl["cluster"], cl["label"]))
    at = open_app(ws, "concepts")
    assert page_data.label_sources(db.load_meta(ws)) in [c.value for c in at.caption]
    assert "No zero-shot names" in page_data.label_sources(db.load_meta(ws))  # the demo's embedder has no text tower
    at.text_input(key="concepts_search").input(word.upper()).run()
    no_errors(at)
    table = at.dataframe[0].value
    assert table["name"].tolist() == [page_data.concept_name(c, names[c]) for c in expected]
    assert table["matches"].tolist() == [counts.get(c, 0) for c in expected]
    assert at.selectbox(key="concepts_pick").value == expected[0]
    assert "zs_name" not in table


def test_concepts_kept_is_the_plans_quota_of_the_picked_concept(ws):
    at = open_app(ws, "concepts")
    index, meta = plan_index.load_index(ws), db.load_meta(ws)
    for pct in (30, 100):
        at.session_state["plan_keep_pct"] = pct
        at.run()
        no_errors(at)
        concept = int(at.selectbox(key="concepts_pick").value)
        result = index.compute(page_data.params_from_state(plan_state(at), meta))
        assert as_int(metric(at, "Kept by the plan")) == int(result.kept[concept])


def test_complexity_temperature_changes_the_story(ws):
    at = open_app(ws, "complexity")
    text = "\n".join(m.value for m in at.markdown if "least complex fifth" in m.value)
    assert text
    at.select_slider(key="plan_temperature").set_value(10.0).run()
    no_errors(at)
    text_hot = "\n".join(m.value for m in at.markdown if "least complex fifth" in m.value)
    assert text_hot and text_hot != text
    assert len(at.html) >= 6  # least and most complex concepts with thumbnails
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]  # drawn on a canvas, not as SVG
    assert len(charts) == 4 and not at.get("plotly_chart")
    assert "Quota against size at τ = 10" in {c["title"]["text"] for c in charts}


def test_preview_kept_and_dropped_follow_the_budget(ws):
    at = open_app(ws, "preview")
    no_errors(at)

    def kept_count() -> int:
        line = next(m.value for m in at.markdown if m.value.startswith("**Kept:"))
        return int(line.split()[1].replace(",", ""))

    index, meta = plan_index.load_index(ws), db.load_meta(ws)
    concept = int(at.selectbox(key="preview_concept").value)
    for pct in (30, 5):  # the concept's kept count is the plan's quota for it
        at.session_state["plan_keep_pct"] = pct
        at.run()
        result = index.compute(page_data.params_from_state(plan_state(at), meta))
        assert result.n_kept == round(pct / 100 * meta["n_pool"])
        assert kept_count() == int(result.kept[concept])

    def dup_count() -> int:
        if any("No near-duplicates" in i.value for i in at.info):
            return 0
        line = next(m.value for m in at.markdown if "near-duplicates at" in m.value)
        return int(line.split("**")[1].replace(",", ""))

    at.slider(key="preview_eps").set_value(0.0).run()
    no_errors(at)
    strict = dup_count()
    at.slider(key="preview_eps").set_value(0.3).run()
    no_errors(at)
    assert dup_count() > strict


def test_export_writes_into_the_workspace_with_manifest(ws):
    name = f"x-{uuid.uuid4().hex[:8]}"
    index = plan_index.load_index(ws)
    plans.save_plan(ws, name, index.compute(PlanParams(keep=0.1)))
    at = open_app(ws, "export")
    at.selectbox(key="export_plan").set_value(name).run()
    at.selectbox(key="export_format").set_value("keys").run()
    button(at, "Export").click().run()
    no_errors(at)
    out = ws / "exports" / f"{name}{DEFAULT_SUFFIX['keys']}"
    assert out.exists() and out.with_name(out.name + ".manifest.json").exists()
    assert at.json, "manifest not shown"
    at.text_input(key="export_name").input("../outside.txt").run()
    assert any("no folders" in e.value for e in at.error)
    assert button(at, "Export").disabled
    plans.delete_plan(ws, name)
    for f in out.parent.glob(f"{name}*"):
        f.unlink()


def test_save_plan_when_the_workspace_stays_locked_says_so(ws, monkeypatch):
    """A save that times out on the workspace lock (db.WorkspaceBusy) is a warning, not a traceback."""
    def busy(*args, **kwargs):
        raise db.WorkspaceBusy(f"{ws} is busy: another process kept it locked for 30 s")

    at = open_app(ws, "budget")
    monkeypatch.setattr(plans, "save_plan", busy)
    at.text_input(key="budget_save_name").input("never-saved")
    button(at, "Save plan").click().run()
    no_errors(at)
    assert any("Not saved" in w.value and "press Save again" in w.value for w in at.warning)
    assert "never-saved" not in set(plans.list_plans(ws)["name"])


def vega_datasets(chart) -> dict:
    """The named tables a Vega-Lite chart element carries (Arrow IPC on the proto), as DataFrames."""
    import pyarrow as pa

    return {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets}


def test_concept_map_is_one_picture_in_every_colouring(ws):
    """The map's points arrive as one PNG under the concept centres, drawn on a canvas by Vega-Lite (no
    Plotly on the page), in each colouring; coloured by the plan it has a legend entry for kept and for
    dropped."""
    at = open_app(ws, "concepts")
    pictures = set()
    n_concepts = int(db.load_meta(ws)["k"])
    for colour in ("concept", "complexity", "kept by the plan"):
        at.session_state["concepts_colour"] = colour
        at.run()
        no_errors(at)
        assert not at.get("plotly_chart")
        (chart,) = at.get("vega_lite_chart")
        spec, data = json.loads(chart.proto.spec), vega_datasets(chart)
        assert spec["usermeta"]["embedOptions"]["renderer"] == "canvas"
        (url,) = data["picture"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert len(data["centres"]) == n_concepts and len(data["picked"]) > 0  # the picked concept outlined
        legend = set(data["legend"]["name"]) if "legend" in data else set()
        assert legend == ({"kept", "dropped"} if colour == "kept by the plan" else set())
        pictures.add(url)
    assert len(pictures) == 3  # each colouring draws its own picture


def html_images(at: AppTest) -> list[int]:
    """How many <img> tiles each st.html block of the page holds."""
    return [h.proto.body.count("<img ") for h in at.html]


def test_each_page_shows_what_the_workspace_holds(ws):
    """Not only "it renders": the numbers and images each page shows, against the workspace itself."""
    meta, index = db.load_meta(ws), plan_index.load_index(ws)
    at = open_app(ws, "overview")
    assert metric(at, "Samples") == f"{meta['n_samples']:,}" and metric(at, "Pool") == f"{meta['n_pool']:,}"
    assert metric(at, "Concepts (K)") == f"{meta['k']:,}"

    at.switch_page(str(VIEWS / "concepts.py")).run()
    no_errors(at)
    assert len(at.dataframe[0].value) == meta["k"]  # one row per concept
    picked = int(at.selectbox(key="concepts_pick").value)
    pool_size = int(db.load_clusters(ws).set_index("cluster").loc[picked, "pool_size"])
    assert as_int(metric(at, "Images in the pool")) == pool_size
    default = index.compute(page_data.params_from_state(plan_state(at), meta))
    assert as_int(metric(at, "Kept by the plan")) == int(default.kept[picked])
    assert html_images(at) and html_images(at)[0] == min(24, pool_size)  # the picked concept's tiles, each an image

    at.switch_page(str(VIEWS / "complexity.py")).run()
    no_errors(at)
    assert len(html_images(at)) >= 6 and all(n > 0 for n in html_images(at))

    at.switch_page(str(VIEWS / "budget.py")).run()
    no_errors(at)
    assert as_int(metric(at, "Kept")) == default.n_kept and as_int(metric(at, "Eligible")) == default.n_eligible

    at.switch_page(str(VIEWS / "preview.py")).run()
    no_errors(at)
    kept_tiles, dropped_tiles = html_images(at)[:2]
    concept = int(at.selectbox(key="preview_concept").value)
    assert kept_tiles == min(24, int(default.kept[concept]))
    assert dropped_tiles == min(24, int(default.eligible[concept] - default.kept[concept]))

    name = f"shown-{uuid.uuid4().hex[:8]}"
    plans.save_plan(ws, name, default)
    at.switch_page(str(VIEWS / "export.py")).run()
    no_errors(at)
    plan_box, format_box = at.selectbox[0], at.selectbox[1]
    assert name in plan_box.options and set(plan_box.options) == set(plans.list_plans(ws)["name"])
    assert set(format_box.options) == set(DEFAULT_SUFFIX)  # every export format
