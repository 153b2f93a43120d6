"""The classroom demo walked in a real browser (headless Debian Chromium, Playwright, `streamlit run app.py`):
the preset runs to the end and shows the naive -> NML line and the curves' landmarks; a second job cancelled
during its evaluation says what it did and resumes from the Runs page; Compare shows a naive student."""
import os
import re
import shutil
from pathlib import Path

import pytest

from bench.app_timings import CHROMIUM, browser, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest.importorskip("playwright")
if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium); .ci/run installs it",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ERRORS = ["Traceback", "This app has encountered an error"]


def no_errors(page, where: str) -> None:
    body = page.locator("body").inner_text()
    for bad in ERRORS:
        assert bad not in body, f"{where} shows {bad!r}:\n{body[:2000]}"


def test_the_demo_preset_shows_the_lesson_and_jobs_tell_the_truth(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"NML_RUN_DIRS": f"{ROOT / 'cached_runs'}:{runs}"}
    with serve_app(env) as (url, _), browser() as page:
        page.goto(f"{url}/Train")
        page.get_by_role("button", name="Run the demo").click()
        lesson = page.get_by_text(re.compile(r"naive slice [\d,]+ → NML [\d,]+ perplexity"))
        lesson.first.wait_for(timeout=900_000)  # training, the naive slice, evaluation, timing, the card (a busy machine: slower)
        text = lesson.first.inner_text()
        naive, nml = (float(x.replace(",", "")) for x in re.search(r"naive slice ([\d,]+) → NML ([\d,]+)", text).groups())
        assert nml < naive, text
        assert page.get_by_text("teacher (step 0)").count() and page.get_by_text("naive slice w=0.125").count(), \
            "the curves show the teacher's level and the naive start"
        no_errors(page, "Train after the demo")
        menu = page.locator('[data-testid="stSidebar"]').inner_text().split("\n")
        assert "Home" in menu and "app" not in menu, f"the job panel's refreshes keep the menu's names: {menu}"
        if os.environ.get("NML_SCREENSHOT_DIR"):  # the README's picture of the demo
            lesson.first.scroll_into_view_if_needed()  # the curves with their landmarks, and the lesson under them
            page.screenshot(path=str(Path(os.environ["NML_SCREENSHOT_DIR"]) / "6-Demo.png"))
        demo = next(p for p in runs.iterdir() if p.name.startswith("demo"))
        assert (demo / "README.md").exists() and (demo / "eval.json").exists() and list((demo / "latency").glob("*"))

        # a second job, cancelled while it evaluates: it says what it did, and Resume on Runs finishes it
        page.get_by_label("Widths").fill("1,1/2")
        for label, value in (("Steps", "2"), ("Batch size", "2"), ("Context", "16")):
            box = page.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Tab")
        page.get_by_label("Run name").fill("stopped")
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("evaluating and timing").first.wait_for(timeout=240_000)
        page.get_by_role("button", name="Cancel (keeps a checkpoint)").click()
        page.get_by_text("Trained, then stopped").first.wait_for(timeout=120_000)
        assert not (runs / "stopped" / "README.md").exists()
        page.goto(f"{url}/Runs")
        page.get_by_text("shakespeare-nml").first.wait_for(timeout=120_000)
        page.get_by_role("combobox", name="Run", exact=True).click()
        page.get_by_role("option", name="stopped", exact=True).click()
        page.get_by_role("button", name=re.compile("^Resume")).click()
        page.get_by_text("Resumed stopped").first.wait_for(timeout=60_000)
        for _ in range(240):  # the follow-ups run again in the background
            if (runs / "stopped" / "README.md").exists():
                break
            page.wait_for_timeout(1000)
        assert (runs / "stopped" / "README.md").exists() and list((runs / "stopped" / "latency").glob("*"))

        # Compare puts the naive slice beside each student
        page.goto(f"{url}/Compare")
        page.get_by_role("button", name="Generate and compare").click()
        page.get_by_text(re.compile(r"^naive width")).first.wait_for(timeout=180_000)
        no_errors(page, "Compare")
