"""One real-browser pass over every page: headless Debian Chromium driven by Playwright against
`streamlit run app.py` on a free localhost port. Screenshots go to $NML_SCREENSHOT_DIR (default: a pytest
temp dir); the README's images were made with NML_SCREENSHOT_DIR=tests/screenshots."""
import os
import shutil
from pathlib import Path

import pytest

from bench.app_timings import CHROMIUM, browser, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest.importorskip("playwright")
if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install chromium); .ci/run installs it",
                allow_module_level=True)

# path, text that must be on the page once it has rendered
PAGES = [("", "Runs available"), ("Train", "Learning rate"), ("Width_slider", "Generate at this width"),
         ("Compare", "Generate and compare"), ("Pareto", "What fits my budget?"), ("Runs", "shakespeare-nml")]
ERRORS = ["Traceback", "Error:", "This app has encountered an error"]


def test_every_page_in_a_real_browser(tmp_path):
    shots = Path(os.environ.get("NML_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with serve_app() as (url, _), browser() as page:
        for i, (path, marker) in enumerate(PAGES):
            page.goto(f"{url}/{path}")
            page.get_by_text(marker).first.wait_for(timeout=120_000)
            page.wait_for_load_state("networkidle")
            if path == "Compare":
                page.get_by_role("button", name="Generate and compare").click()
                page.get_by_text("mean KL").first.wait_for(timeout=120_000)
            if path in ("", "Pareto"):
                page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            page.wait_for_timeout(500)  # let the last element finish drawing
            body = page.locator("body").inner_text()
            for bad in ERRORS:
                assert bad not in body, f"{path or 'Home'} shows {bad!r}:\n{body[:2000]}"
            assert page.locator('[data-testid="stException"]').count() == 0
            nav = page.locator('[data-testid="stSidebar"]').inner_text().split("\n")
            # the pages by name, not by file (the icons' names are text too: material icon ligatures)
            assert "app" not in nav and nav.index("Home") < nav.index("Train") < nav.index("Width slider"), nav
            page.screenshot(path=str(shots / f"{i}-{path or 'Home'}.png"), full_page=True)
    assert all((shots / f"{i}-{path or 'Home'}.png").exists() for i, (path, _) in enumerate(PAGES))
