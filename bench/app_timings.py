"""App timings in a real browser: cold start to first paint, width-slider switch, Compare generation.

  python -m bench.app_timings [--repeats 3] [--shots DIR]

Starts `streamlit run app.py --server.headless true` on a free localhost port, drives Debian's headless
Chromium (/usr/bin/chromium) with Playwright (no browser download), and times, per repeat (a fresh server
each time, so every start is cold):
  first_paint_s    process start -> the Home title is visible
  home_ready_s     process start -> the Home runs table and nested-matrix picture are drawn (weights loaded)
  width_switch_s   a key press on the width slider -> the parameter count shown has changed
  compare_s        click "Generate and compare" -> teacher and student texts drawn (32 new tokens each)
  pareto_warm_s    reload of the Pareto page (second visit) -> its chart drawn, every shipped run on it, the
                   width x depth run's whole grid (grid.json) included
The browser test (tests/test_browser.py) reuses serve_app and browser from here.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(env: dict | None = None, timeout: float = 60):
    """Yields (url, start_time) of a headless Streamlit server of app.py; stops it afterwards."""
    port = free_port()
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() - start > timeout:
                raise RuntimeError(f"streamlit did not start: {proc.stdout.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield url, start
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b.new_page(viewport={"width": 1400, "height": 1500})
        finally:
            b.close()


def metric_value(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def one_repeat(shots: Path | None) -> dict:
    out = {}
    with serve_app() as (url, start), browser() as page:
        page.goto(url)
        page.get_by_role("heading", name="NML Explorer").wait_for(timeout=60_000)
        out["first_paint_s"] = time.time() - start
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        page.get_by_text("Runs available").wait_for()
        out["home_ready_s"] = time.time() - start

        page.goto(f"{url}/Width_slider")
        page.get_by_text("Parameters").first.wait_for(timeout=120_000)
        before = metric_value(page, "Parameters")
        page.get_by_role("slider").first.focus()
        t = time.time()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("""([label, before]) => [...document.querySelectorAll('[data-testid="stMetric"]')]
            .some(m => m.innerText.includes(label) && !m.innerText.includes(before))""", arg=["Parameters", before],
                               timeout=60_000)
        out["width_switch_s"] = time.time() - t

        page.goto(f"{url}/Compare")
        page.get_by_role("button", name="Generate and compare").wait_for(timeout=120_000)
        t = time.time()
        page.get_by_role("button", name="Generate and compare").click()
        page.get_by_text("mean KL").first.wait_for(timeout=120_000)
        out["compare_s"] = time.time() - t
        if shots:
            page.screenshot(path=str(shots / "bench-compare.png"), full_page=True)

        page.goto(f"{url}/Pareto")
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        t = time.time()  # warm: the runs' files read once already; every run on the chart, grids included
        page.reload()
        page.get_by_text("What fits my budget?").wait_for(timeout=120_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        out["pareto_warm_s"] = time.time() - t
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shots", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    a = ap.parse_args(argv)
    rows = [one_repeat(a.shots) for _ in range(a.repeats)]
    summary = {k: {"median": round(statistics.median(r[k] for r in rows), 2), "min": round(min(r[k] for r in rows), 2),
                   "max": round(max(r[k] for r in rows), 2)} for k in rows[0]}
    print(f"{'timing':<16} {'median s':>9} {'min':>7} {'max':>7}   ({a.repeats} cold starts)")
    for k, v in summary.items():
        print(f"{k:<16} {v['median']:>9.2f} {v['min']:>7.2f} {v['max']:>7.2f}")
    if a.json:
        a.json.write_text(json.dumps({"repeats": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
