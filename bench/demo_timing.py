"""The classroom demo, timed from the click to its model card, beside the Estimate the Train page shows.

  python -m bench.demo_timing [--browser] [--write]

standalone  the demo job (nml_core.jobs.DEMO: train, the naive slice, eval, bench, card) started as the Train page
            starts it (nml_core.jobs.start_job), with no app open
browser     (--browser) the same job from a click on "Run the demo" in the app: a headless Debian Chromium and the
            Streamlit server share the machine with the job, the job panel redrawing its curves as it trains

Each reports the wall time from the job's start to its model card (the card's file time against the job record),
the training loop's own time, the page's Estimate of the same job, and the lesson's figures from the run's
eval.json: width 1/8's naive slice against the NML student, width 1 against the teacher. The Estimate is
computed before the jobs, on an idle machine, as a user clicks "Estimate the demo" first.
--write keeps the results in bench/results/demo_timing-<device key>.json (rendered into BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

from nml_core import api
from nml_core.device import device_info, resolve
from nml_core.docs import demo_timing_report
from nml_core.files import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
TEACHER = ROOT / "cached_runs" / "shakespeare-teacher"


def the_estimate(device: str) -> dict:
    demo = api.jobs.DEMO
    model = api.load_gpt2(str(TEACHER))[0]
    est = api.estimate(model, api.parse_widths(demo.widths), api.parse_axes(demo.nest), demo.recipe(device),
                       follow=demo.follow_ups())
    return {"minutes": est["total_minutes"], "train_minutes": est["minutes"]}


def outcome(out: Path) -> dict:
    """Wall time and the lesson's figures of a finished demo job in `out`."""
    job, run = api.jobs.read_job(out), api.load_run(out, require_model=False)
    ev = run.eval()
    ppl = {r["width"]: r["ppl"] for r in ev["widths"]}
    naive = {r["width"]: r["ppl"] for r in ev["baselines"]["naive"]}
    small = min(naive)
    return {"wall_min": ((out / "README.md").stat().st_mtime - job["started"]) / 60,
            "train_s": run.info["train_time_s"], "teacher_ppl": ev["teacher"]["ppl"], "width1_ppl": ppl[1.0],
            "small_width": small, "naive_ppl": naive[small], "nml_ppl": ppl[small]}


def standalone(root: Path, device: str) -> dict:
    out = root / "demo-standalone"
    api.jobs.start_job(out, *api.jobs.DEMO.argvs(out, str(TEACHER), device), cwd=ROOT)
    while api.jobs.job_alive(out):
        time.sleep(1)
    return outcome(out)


def cpu_seconds(*names: str) -> float:
    """CPU seconds (user + system) used so far by the live processes whose command line holds one of `names`."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if any(n in cmd for n in names):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def in_browser(root: Path) -> dict:
    """The demo from a click in the app; also the CPU seconds the app's server and the browser spent meanwhile,
    which the two cores' job did not get."""
    from bench.app_timings import browser, serve_app
    runs = root / "runs"
    runs.mkdir()
    with serve_app({"NML_RUN_DIRS": f"{ROOT / 'cached_runs'}:{runs}"}) as (url, _), browser() as page:
        page.goto(f"{url}/Train")
        page.get_by_text("Classroom demo").first.wait_for(timeout=120_000)
        before = cpu_seconds("streamlit run", "chromium")
        page.get_by_role("button", name="Run the demo").click()
        page.get_by_text(re.compile(r"naive slice [\d,]+ → NML [\d,]+ perplexity")).first.wait_for(timeout=900_000)
        app_cpu_s = cpu_seconds("streamlit run", "chromium") - before
    return {**outcome(next(p for p in runs.iterdir() if p.name.startswith("demo"))), "app_cpu_s": app_cpu_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--browser", action="store_true", help="also run it from a click in the app")
    ap.add_argument("--write", action="store_true", help="keep the results in bench/results/")
    a = ap.parse_args(argv)
    device = str(resolve("auto").type)
    res = {"device": device_info(device, api.set_threads(None)), "estimate": the_estimate(device),
           "command": "python -m bench.demo_timing" + (" --browser" if a.browser else "") + " --write",
           "recipe": {k: getattr(api.jobs.DEMO, k) for k in api.jobs.DEMO.__dataclass_fields__}}
    with tempfile.TemporaryDirectory() as tmp:
        res["standalone"] = standalone(Path(tmp), device)
        if a.browser:
            res["browser"] = in_browser(Path(tmp))
    print(demo_timing_report(res))
    if a.write:
        path = ROOT / "bench" / "results" / f"demo_timing-{res['device']['device_key']}.json"
        atomic_write_json(path, res)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
