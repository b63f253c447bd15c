"""Load: many real browser sessions on one `streamlit run`, a CLI saving plans and a training run, at once.

Copies a demo workspace into a temporary folder, starts one ``streamlit run app.py`` on it and opens
``--sessions`` browser contexts in one chromium (Playwright, Debian's /usr/bin/chromium). Every session,
concurrently, ``--rounds`` times: opens Overview, Concepts, Budget (moves the keep slider, saves a plan
under its own name), Preview (picks the plan the CLI keeps overwriting), Export (its own plan, parquet)
and Train (the run list the training run updates), clicking the sidebar like a user. Meanwhile:

- a CLI process after another saves plans: ``densprune plan WS --name cli-NNN`` and
  ``--name cli-live --overwrite``, back to back;
- training writes progress into the workspace database: ``--trainer real`` runs ``densprune
  train WS --plan train-base --preset cpu-tiny`` (one run after another while the sessions work), and
  ``--trainer recorder`` a separate process that feeds the supervisor's own ``Recorder`` (what a
  running trainer's log lines turn into) a progress update every 0.2 s.

After every action the page is checked: no Streamlit exception, no error box, no text saying
"lock", "locked" or "busy". At the end every plan a session or the CLI saved must be listed with the
count it was saved with, and ``densprune verify`` must find nothing wrong. Writes the figures
(actions, errors, slowest and median action) to benchmarks/results/load_sessions.md and .json.

    python benchmarks/load_sessions.py [--sessions 10] [--rounds 1] [--trainer real|recorder] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]  # this checkout

from _util import RESULTS, densprune_command, machine, save_result, table  # noqa: E402
from app_server import CHROMIUM, CHROMIUM_ARGS, KEPT_JS, SETTLED_JS, start_app, stop_app  # noqa: E402

log = logging.getLogger("load_sessions")
TITLES = {"": "Overview", "concepts": "Concepts", "budget": "Budget", "preview": "Preview", "export": "Export",
          "train": "Train"}
BAD_WORDS = re.compile(r"\b(lock|locked|locking|busy)\b", re.IGNORECASE)
PAGE_STATE_JS = """() => ({
  exceptions: [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText.slice(0, 400)),
  errors: [...document.querySelectorAll('[data-testid="stAlertContentError"]')].map(e => e.textContent.slice(0, 400)),
  text: (document.querySelector('[data-testid="stMain"]') || document.body).innerText })"""
LIVE_PLAN = "cli-live"  # the plan the CLI overwrites again and again; the sessions open it on Preview
TRAIN_PLAN = "train-base"


@dataclass
class Action:
    session: int
    round: int
    name: str
    seconds: float
    error: str | None = None


@dataclass
class SessionLog:
    actions: list[Action] = field(default_factory=list)
    saved: dict[str, int] = field(default_factory=dict)  # plan name -> the Kept count the page showed


# --------------------------------------------------------------------------------------------
# one browser session
# --------------------------------------------------------------------------------------------

async def settled(page, timeout_ms: int) -> None:
    await page.wait_for_function(SETTLED_JS, timeout=timeout_ms, polling=50)


async def page_problems(page) -> list[str]:
    """What a user would see go wrong on the page now: exceptions, error boxes, lock/busy text."""
    st = await page.evaluate(PAGE_STATE_JS)
    out = [f"exception: {e}" for e in st["exceptions"]] + [f"error box: {e}" for e in st["errors"]]
    m = BAD_WORDS.search(st["text"])
    if m:
        out.append(f"text says {m.group(0)!r}: …{st['text'][max(0, m.start() - 80):m.end() + 80]}…")
    return out


async def open_page(page, name: str, timeout_ms: int) -> None:
    """Click the page's link in the sidebar and wait until its script run is over."""
    await page.locator('[data-testid="stSidebarNav"] a').filter(has_text=TITLES[name]).first.click()
    await page.wait_for_function("(t) => { const h = document.querySelector('h1'); "
                                 "return h && h.innerText.trim() === t; }",
                                 arg=TITLES[name], timeout=timeout_ms, polling=50)
    await settled(page, timeout_ms)


async def choose(page, label: str, value: str, timeout_ms: int) -> None:
    """Pick ``value`` in the selectbox labelled ``label`` by typing it, as a user would."""
    box = page.get_by_role("combobox", name=label)
    await box.click()
    await box.fill(value)
    await page.get_by_role("option", name=value, exact=True).click(timeout=timeout_ms)
    await settled(page, timeout_ms)


async def move_slider(page, presses: int, timeout_ms: int) -> None:
    """Press the left arrow ``presses`` times on the keep slider; wait until the Kept count has changed."""
    before = await page.evaluate(KEPT_JS)
    slider = page.get_by_role("slider").first
    await slider.focus()
    for _ in range(presses):
        await slider.press("ArrowLeft")
    await page.wait_for_function(f"(b) => ({KEPT_JS})() !== b", arg=before, timeout=timeout_ms, polling=50)
    await settled(page, timeout_ms)


async def save_plan(page, name: str, timeout_ms: int) -> int:
    """Save the current plan as ``name``; returns the Kept count shown beside the "Saved" message (the
    same script run: the count the user was told they saved)."""
    await page.get_by_role("textbox", name="Plan name").fill(name)
    await page.get_by_role("button", name="Save plan").click()
    await page.get_by_text(f"Saved plan “{name}”").wait_for(timeout=timeout_ms)
    await settled(page, timeout_ms)
    return int((await page.evaluate(KEPT_JS)).replace(",", ""))


async def export_plan(page, name: str, timeout_ms: int) -> None:
    await choose(page, "Plan", name, timeout_ms)
    await page.get_by_role("button", name="Export", exact=True).click()
    await page.get_by_text(f"{name}.parquet", exact=False).filter(has_text="Wrote").first.wait_for(timeout=timeout_ms)
    await settled(page, timeout_ms)


async def run_session(browser, url: str, i: int, rounds: int, timeout_ms: int, shots: Path | None,
                      light: bool = False) -> SessionLog:
    """One user: ``rounds`` times through the pages, saving and exporting a plan of their own (``light``:
    Budget, Preview and Train only, no Concepts, Export or Overview)."""
    out = SessionLog()
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(timeout_ms)  # every click, key press and page load may take that long under load
    ctx.set_default_navigation_timeout(timeout_ms)
    page = await ctx.new_page()

    async def act(r: int, what: str, coro) -> object:
        t0 = time.perf_counter()
        err, value = None, None
        try:
            value = await coro
            problems = await page_problems(page)
            err = "; ".join(problems) or None
        except Exception as exc:  # noqa: BLE001 - a timeout or a missing widget is an error of the action
            err = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            try:
                problems = await page_problems(page)
            except Exception as again:  # noqa: BLE001 - the page itself is gone or frozen
                problems = [f"page unreadable ({type(again).__name__})"]
            if problems:
                err += " | page: " + "; ".join(problems)
        out.actions.append(Action(i, r, what, round(time.perf_counter() - t0, 3), err))
        if err and shots is not None:
            try:
                await page.screenshot(path=str(shots / f"s{i:02d}-r{r}-{what.replace(' ', '_')}.png"))
            except Exception as exc:  # noqa: BLE001 - a screenshot is for the reader, not a result
                log.warning("session %d: no screenshot of %s (%s)", i, what, exc)
        return value

    async def goto_home() -> None:
        await page.goto(url)
        await page.wait_for_selector("h1", timeout=timeout_ms)
        await settled(page, timeout_ms)

    try:
        await act(0, "open the app", goto_home())
        for r in range(rounds):
            plan = f"load-s{i:02d}-r{r}"
            if not light:
                await act(r, "open Concepts", open_page(page, "concepts", timeout_ms))
            await act(r, "open Budget", open_page(page, "budget", timeout_ms))
            await act(r, "move the keep slider", move_slider(page, 1 + (i + r) % 3, timeout_ms))
            kept = await act(r, "save a plan", save_plan(page, plan, timeout_ms))
            if kept is not None and not out.actions[-1].error:
                out.saved[plan] = kept
            await act(r, "open Preview", open_page(page, "preview", timeout_ms))
            await act(r, "pick the CLI's plan", choose(page, "Plan", LIVE_PLAN, timeout_ms))
            if not light:
                await act(r, "open Export", open_page(page, "export", timeout_ms))
                await act(r, "export own plan", export_plan(page, plan, timeout_ms))
            await act(r, "open Train", open_page(page, "train", timeout_ms))
            if not light:
                await act(r, "open Overview", open_page(page, "", timeout_ms))
    finally:
        await ctx.close()
    return out


async def run_sessions(url: str, n: int, rounds: int, timeout_ms: int, shots: Path | None,
                       light: bool = False) -> list[SessionLog]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return list(await asyncio.gather(*(run_session(browser, url, i, rounds, timeout_ms, shots, light)
                                               for i in range(n))))
        finally:
            await browser.close()


# --------------------------------------------------------------------------------------------
# the processes alongside: a CLI saving plans, training writing progress
# --------------------------------------------------------------------------------------------

def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``densprune ARGS`` from this checkout."""
    return subprocess.run([densprune_command(), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def kept_from_cli(stdout: str) -> int | None:
    m = re.search(r"kept ([\d,]+) =", stdout)
    return int(m.group(1).replace(",", "")) if m else None


def cli_saver(ws: Path, stop: threading.Event, report: dict) -> None:
    """Save a new plan and overwrite the live one, one process after another, until ``stop``."""
    i = 0
    while not stop.is_set():
        for name, extra in ((f"cli-{i:03d}", []), (LIVE_PLAN, ["--overwrite"])):
            if stop.is_set() and report["saved"]:
                break
            keep = f"{20 + (i * 7) % 50}%"
            t0 = time.perf_counter()
            proc = cli("plan", str(ws), "--name", name, "--keep", keep, *extra)
            report["seconds"].append(round(time.perf_counter() - t0, 3))
            if proc.returncode != 0:
                report["errors"].append(f"{name}: rc {proc.returncode}: {proc.stderr.strip()[-500:]}")
            elif name != LIVE_PLAN:
                report["saved"][name] = kept_from_cli(proc.stdout)
            else:
                report["overwrites"] += 1
        i += 1


def real_trainer(ws: Path, stop: threading.Event, report: dict, samples: int) -> None:
    """``densprune train`` (cpu-tiny) on the train-base plan, one run after another until ``stop``."""
    j = 0
    while not stop.is_set() or j == 0:
        name = f"load-train-{j}"
        t0 = time.perf_counter()
        proc = cli("train", str(ws), "--plan", TRAIN_PLAN, "--preset", "cpu-tiny", "--samples-seen", str(samples),
                   "--device", "cpu", "--name", name, timeout=1800)
        rdir = ws / "runs" / name
        events = len((rdir / "progress.jsonl").read_text().splitlines()) if (rdir / "progress.jsonl").exists() else 0
        status = json.loads((rdir / "status.json").read_text()) if (rdir / "status.json").exists() else {}
        report["runs"].append({"name": name, "rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                               "status": status.get("status"), "error": status.get("error"),
                               "step": status.get("step"), "progress_events": events,
                               "stderr_tail": proc.stderr.strip()[-400:] if proc.returncode else ""})
        j += 1


def recorder_writer(ws: Path, stop: threading.Event, report: dict) -> None:
    """A separate process feeding the supervisor's Recorder progress until ``stop`` (see :func:`_record`)."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--record-progress", str(ws)],
                            cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop.wait()
    out, err = proc.communicate(input="stop\n", timeout=120)
    report["runs"].append({"name": "load-progress", "rc": proc.returncode, **json.loads(out or "{}"),
                           "stderr_tail": err.strip()[-400:] if proc.returncode else ""})


def _record(ws: Path) -> int:
    """The ``--record-progress`` child: create a run of the train-base plan and record a progress update
    every 0.2 s through ``densprune.train.records.Recorder`` (each one a short database write, as a
    running trainer's log lines give) until a line arrives on stdin, holding the run's lock as the
    supervisor does (so the app sees a live run); prints what it wrote as JSON."""
    from densprune.train.records import create_run, run_dir
    from densprune.train.schedule import RunSpec
    from densprune.train.supervisor import run_lock

    create_run(ws, RunSpec(plan=TRAIN_PLAN, preset="cpu-tiny", name="load-progress", device="cpu"))
    with run_lock(run_dir(ws, "load-progress")).acquire(timeout=5.0):
        return _record_until_stdin(ws, run_dir(ws, "load-progress"))


def _record_until_stdin(ws: Path, rdir: Path) -> int:
    from densprune.train.records import Recorder, now

    rec = Recorder(ws, "load-progress", rdir, json.loads((rdir / "status.json").read_text()), db_every_s=0.0)
    rec.set(status="running", phase="train", started_at=now(), pid=os.getpid())
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
    step, failed = 0, 0
    while not done.wait(0.2):
        step += 1
        rec.set(force=False, step=step, samples_seen=step * 128, loss=1.0 / step, metrics=[("loss", 1.0 / step, step,
                                                                                            step * 128)])
        failed += bool(rec.pending_fields)  # the write did not get the lock (it is retried with the next)
    rec.set(status="done", phase="", finished_at=now())
    print(json.dumps({"status": "done", "step": step, "progress_events": step, "unwritten_updates": failed}))
    return 0


# --------------------------------------------------------------------------------------------
# the whole load, the checks after it, the report
# --------------------------------------------------------------------------------------------

def prepare_workspace(src: Path, tmp: Path) -> Path:
    """A copy of ``src`` in ``tmp`` (its plans, not its exports and runs) with the two plans the CLI and
    the trainer start from (DBP keeping 30%)."""
    from densprune.prune import plan_index, plans
    from densprune.prune.selection import PlanParams

    ws = Path(shutil.copytree(src, tmp / "ws", ignore=shutil.ignore_patterns(".densprune.lock", "exports", "runs")))
    result = plan_index.load_index(ws).compute(PlanParams(method="dbp", keep=0.3))
    for name in (LIVE_PLAN, TRAIN_PLAN):
        plans.save_plan(ws, name, result, overwrite=True)
    return ws


def run_load(ws: Path, sessions: int, rounds: int, trainer: str, train_samples: int = 3840,
             timeout_s: float = 300, shots: Path | None = None, light: bool = False) -> dict:
    """Start the app on ``ws``, run the sessions with the CLI saver and the trainer alongside, check the
    plans and the workspace afterwards; returns everything measured (see :func:`summarise`)."""
    from densprune.pipeline.verify import verify_workspace
    from densprune.prune import plans

    before = set(plans.list_plans(ws)["name"])
    cli_report = {"seconds": [], "errors": [], "saved": {}, "overwrites": 0}
    train_report: dict = {"mode": trainer, "runs": []}
    stop = threading.Event()
    loads: list[float] = []  # the 1-minute load average every 5 s while the sessions run
    side = [threading.Thread(target=lambda: [loads.append(os.getloadavg()[0])
                                             for _ in iter(lambda: stop.wait(5), True)]),
            threading.Thread(target=cli_saver, args=(ws, stop, cli_report)),
            threading.Thread(target=real_trainer, args=(ws, stop, train_report, train_samples)) if trainer == "real"
            else threading.Thread(target=recorder_writer, args=(ws, stop, train_report))]
    t_start = time.perf_counter()
    proc, url = start_app(ws, ws.parent / "streamlit.log")
    t0 = time.perf_counter()
    try:
        for t in side:
            t.start()
        logs = asyncio.run(run_sessions(url, sessions, rounds, int(timeout_s * 1000), shots, light))
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        for t in side:
            t.join()
        stop_app(proc)
    log.info("app started in %.1f s, sessions took %.1f s, the processes alongside stopped %.1f s later",
             t0 - t_start, wall, time.perf_counter() - t0 - wall)
    listed = plans.list_plans(ws).set_index("name")["n_kept"].to_dict()
    expected = {**{k: v for s in logs for k, v in s.saved.items()}, **cli_report["saved"]}
    lost = sorted(k for k in expected if k not in listed)
    wrong = sorted(f"{k}: saved {v}, listed {listed[k]}" for k, v in expected.items()
                   if k in listed and v is not None and int(listed[k]) != v)
    return {"sessions": sessions, "rounds": rounds, "wall_s": round(wall, 1),
            "actions": [asdict(a) for s in logs for a in s.actions], "cli": cli_report, "training": train_report,
            "plans": {"before": len(before), "saved_by_sessions": sum(len(s.saved) for s in logs),
                      "saved_by_cli": len(cli_report["saved"]), "listed_after": len(listed),
                      "expected_after": len(before | set(expected)), "lost": lost, "wrong_count": wrong},
            "verify": [f"{p.file}: {p.message}" for p in verify_workspace(ws)],
            "load_1min": {"median": round(statistics.median(loads), 1), "max": round(max(loads), 1)} if loads else None}


def summarise(res: dict) -> dict:
    """The headline figures of a :func:`run_load` result."""
    acts = res["actions"]
    secs = [a["seconds"] for a in acts]
    slowest = max(acts, key=lambda a: a["seconds"])
    return {"sessions": res["sessions"], "actions": len(acts), "errors": sum(a["error"] is not None for a in acts),
            "median_s": round(statistics.median(secs), 2), "p90_s": round(statistics.quantiles(secs, n=10)[-1], 2),
            "slowest_s": slowest["seconds"], "slowest": f"{slowest['name']} (session {slowest['session']}, "
                                                        f"round {slowest['round']})",
            "lost_plans": len(res["plans"]["lost"]) + len(res["plans"]["wrong_count"]),
            "cli_errors": len(res["cli"]["errors"]), "verify_problems": len(res["verify"])}


def report(res: dict, head: dict) -> str:
    """The markdown of a run: headline, per action, what ran alongside, the checks."""
    acts, p, tr, cl = res["actions"], res["plans"], res["training"], res["cli"]
    by: dict[str, list[float]] = {}
    for a in acts:
        by.setdefault(a["name"], []).append(a["seconds"])
    per = [[k, len(v), sum(a["error"] is not None for a in acts if a["name"] == k), f"{statistics.median(v):.2f}",
            f"{max(v):.2f}"] for k, v in by.items()]
    runs = "; ".join(f"{r['name']}: {r.get('status')} at step {r.get('step')}, {r.get('progress_events')} progress "
                     f"events, rc {r['rc']}" + (f" ({r['seconds']} s)" if "seconds" in r else "")
                     + (f", unwritten updates {r['unwritten_updates']}" if "unwritten_updates" in r else "")
                     for r in tr["runs"])
    what = ("`densprune train WS --plan train-base --preset cpu-tiny --samples-seen N`, one real "
            "training run after another" if tr["mode"] == "real" else
            "a separate process recording progress through the supervisor's `Recorder` every 0.2 s")
    errors = [f"- session {a['session']} round {a['round']} {a['name']}: {a['error']}" for a in acts if a["error"]]
    lines = [
        (f"{head['sessions']} browser sessions (Playwright contexts in one chromium) on one `streamlit run`, "
         f"{res['rounds']} round(s) each, {res['wall_s']} s wall"
         + (f"; 1-min load average while they ran: median {res['load_1min']['median']}, max {res['load_1min']['max']}"
            if res.get("load_1min") else "")),
        "",
        table(["sessions", "actions", "errors", "median action s", "p90 s", "slowest action s", "slowest",
               "plans lost or wrong", "verify problems"],
              [[head["sessions"], head["actions"], head["errors"], head["median_s"], head["p90_s"], head["slowest_s"],
                head["slowest"], head["lost_plans"], head["verify_problems"]]]),
        "",
        "Per action (seconds from the click or key press until the page has settled, checks included):",
        "",
        table(["action", "count", "errors", "median s", "max s"], per),
        "",
        "Alongside:",
        f"- CLI: {len(cl['seconds'])} `densprune plan` processes back to back ({len(cl['saved'])} new plans "
        f"`cli-NNN`, {cl['overwrites']} overwrites of `{LIVE_PLAN}`, which the sessions opened on Preview), "
        f"median {statistics.median(cl['seconds']) if cl['seconds'] else float('nan'):.1f} s each, "
        f"{len(cl['errors'])} failed" + "".join(f"\n  - {e}" for e in cl["errors"]),
        f"- training: {what}: {runs}",
        "",
        f"Plans: {p['before']} before, {p['saved_by_sessions']} saved by the sessions, {p['saved_by_cli']} new by the "
        f"CLI, {p['listed_after']} listed after (expected {p['expected_after']}); lost: {p['lost'] or 'none'}; "
        f"listed with another count: {p['wrong_count'] or 'none'}. `densprune verify`: "
        + ("clean" if not res["verify"] else "; ".join(res["verify"])),
    ]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10, help="browser sessions at once (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="times each session goes through the pages (default: %(default)s)")
    ap.add_argument("--trainer", choices=("real", "recorder"), default="real",
                    help="real: densprune train cpu-tiny runs; recorder: the supervisor's Recorder in a loop")
    ap.add_argument("--train-samples", type=int, default=3840, help="samples seen per real training run")
    ap.add_argument("--timeout", type=float, default=300, help="seconds one action may take before it is an error")
    ap.add_argument("--workspace", type=Path, default=None, help="demo workspace to copy (default: densprune's demo)")
    ap.add_argument("--out", type=Path, default=None, help="result file (default: benchmarks/results/load_sessions.md)")
    ap.add_argument("--record-progress", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.record_progress:
        return _record(args.record_progress)
    if not Path(CHROMIUM).exists():
        ap.error(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from densprune import db
    from densprune.workspace import default_demo_workspace

    src = (args.workspace or default_demo_workspace()).resolve()
    if not db.is_complete(src):
        ap.error(f"no workspace at {src}: build it with `densprune demo --no-app --workspace {src}`")
    out = args.out or RESULTS / "load_sessions.md"
    with tempfile.TemporaryDirectory(prefix="densprune-load-") as tmp:
        ws = prepare_workspace(src, Path(tmp))
        shots = out.parent / "load_sessions-errors"
        shots.mkdir(parents=True, exist_ok=True)
        res = run_load(ws, args.sessions, args.rounds, args.trainer, args.train_samples, args.timeout, shots)
        if not any(shots.iterdir()):
            shots.rmdir()
    head = summarise(res)
    text = report(res, head)
    print(text)
    save_result(text, out, "load_sessions.md")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "summary": head, **res}, indent=1,
                                                   default=str) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0 if head["errors"] == 0 and head["lost_plans"] == 0 and head["verify_problems"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
