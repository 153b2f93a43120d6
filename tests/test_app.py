"""Every Streamlit page through streamlit.testing.v1.AppTest: shipped runs, no runs, a corrupt run, and the
interactions that matter (width slider, compare, budget what-if, starting a training job)."""
import shutil
import time
from pathlib import Path

import pytest

for _package in ("streamlit", "plotly", "pandas"):  # the app's packages: without them these tests skip
    pytest.importorskip(_package)
from streamlit.testing.v1 import AppTest  # noqa: E402

from nml_core import jobs
from nml_core.store.runs import load_run, read_metrics

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/1_Train.py", "pages/2_Width_slider.py", "pages/3_Compare.py", "pages/4_Pareto.py", "pages/5_Runs.py",
         "pages/6_Fine-tune.py"]
TIMEOUT = 180


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest):
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def run_dirs(monkeypatch, tmp_path):
    """Point the app at a fresh folder of runs."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("NML_RUN_DIRS", str(root))
    return root


@pytest.mark.parametrize("page", [None] + PAGES)
def test_page_renders_on_the_shipped_runs(page, monkeypatch):
    monkeypatch.delenv("NML_RUN_DIRS", raising=False)
    at = open_page(page)
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", [None] + PAGES)
def test_page_renders_with_no_runs(page, run_dirs):
    at = open_page(page)
    assert_clean(at)
    if page not in ("pages/1_Train.py",):
        assert any("No " in i.value for i in at.info), "an empty folder must say what to do"


@pytest.mark.parametrize("page", [None] + PAGES)
def test_page_renders_with_a_corrupt_run(page, run_dirs):
    bad = run_dirs / "broken"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    at = open_page(page)
    assert_clean(at)
    shown = " ".join(w.value for w in at.warning) + " ".join(e.value for e in at.error) + \
        " ".join(m.value for m in at.markdown) + " ".join(i.value for i in at.info) + \
        " ".join(c.value for c in at.code) + " ".join(str(d.value) for d in at.dataframe)
    assert "broken" in shown, "the page must name the broken run (and the file at fault)"
    assert "not valid JSON" in shown


def test_width_slider_changes_the_figures(monkeypatch):
    monkeypatch.delenv("NML_RUN_DIRS", raising=False)
    at = open_page("pages/2_Width_slider.py")
    before = {m.label: m.value for m in at.metric}
    at.select_slider(key="width").set_value(0.5).run()
    after = {m.label: m.value for m in at.metric}
    assert_clean(at)
    assert before["Parameters"] != after["Parameters"] and before["Val perplexity"] != after["Val perplexity"]
    ev = load_run(ROOT / "cached_runs" / "shakespeare-nml-depth").eval()  # the default run: the only one with weights
    half = next(r for r in ev["widths"] if (r["width"], r["depth"]) == (0.5, 1.0))
    assert after["Val perplexity"] == f"{half['ppl']:.2f}"
    # an untrained head count: its quality from the run's grid.json (every head count x every depth scored)
    at.select_slider(key="width").set_value(0.375).run()
    assert_clean(at)
    ppl = float(next(m.value for m in at.metric if m.label == "Val perplexity"))
    grid = load_run(ROOT / "cached_runs" / "shakespeare-nml-depth").grid()
    assert ppl == pytest.approx(next(r["ppl"] for r in grid["rows"] if (r["width"], r["depth"]) == (0.375, 1.0)), abs=0.01)



def test_width_slider_generates(monkeypatch):
    monkeypatch.delenv("NML_RUN_DIRS", raising=False)
    at = open_page("pages/2_Width_slider.py")
    at.select_slider(key="width").set_value(0.25).run()
    at.slider(key="width_new").set_value(8).run()
    at.button(key="width_generate").click().run()
    assert_clean(at)
    assert at.code and len(at.code[0].value) > len(at.text_input(key="width_prompt").value)


def test_compare_shows_teacher_and_students(monkeypatch):
    monkeypatch.delenv("NML_RUN_DIRS", raising=False)
    at = open_page("pages/3_Compare.py")
    at.slider(key="compare_new").set_value(8).run()
    at.button(key="compare_go").click().run()
    assert_clean(at)
    html = [m.value for m in at.markdown if "teacher p =" in m.value]
    # the teacher, each student, and beside each the naive slice of the teacher at its shape
    assert len(html) == 1 + 2 * len(at.multiselect(key="compare_widths").value)
    assert any(m.value.startswith("**naive width") for m in at.markdown)
    teacher = next(h for h in html if "rgba(214,39,40,0)" in h and "rgba(214,39,40,0." not in h)
    assert teacher, "the teacher's own sample is left plain"
    assert len(at.dataframe) == 2  # top-k tables of teacher and student


def test_pareto_budget_picks_a_width(monkeypatch):
    monkeypatch.delenv("NML_RUN_DIRS", raising=False)
    at = open_page("pages/4_Pareto.py")
    assert_clean(at)
    run = load_run(ROOT / "cached_runs" / "shakespeare-nml", require_model=False)  # figures only
    lat = next(iter(run.latency().values()))
    by_w = {r.width: r.ms("prefill_b1_ms") for r in lat.rows}
    # scoring (all logits); NML run alone, a budget between width 1/2 and width 1: the answer is width 1/2
    at.radio(key="pareto_workload").set_value("prefill").run()
    at.multiselect(key="pareto_runs").set_value(["shakespeare-nml"]).run()
    at.number_input(key="budget_ms").set_value((by_w[0.5] + by_w[1.0]) / 2).run()
    assert_clean(at)
    assert "NML width 0.5" in at.success[0].value
    # with the FFN-only family on the chart too, a budget its smallest student fits: it keeps every head, so
    # it beats the NML students that fit (they are narrower) and wins
    ffn = load_run(ROOT / "cached_runs" / "shakespeare-nml-ffn", require_model=False)
    ffn_lat = ffn.latency()[next(k for k in run.latency() if k in ffn.latency())]
    smallest = min(r.ms("prefill_b1_ms") for r in ffn_lat.rows)
    at.multiselect(key="pareto_runs").set_value(["shakespeare-nml", "shakespeare-nml-ffn"]).run()
    at.number_input(key="budget_ms").set_value(smallest * 1.001).run()
    assert "NML FFN-only width" in at.success[0].value
    at.number_input(key="budget_ms").set_value(0.001).run()
    assert at.error and "No NML student fits" in at.error[0].value
    at.number_input(key="budget_ms").set_value(0.0).run()
    options = at.selectbox(key="pareto_device").options
    assert options[0].endswith("— measured"), "measured devices come first"
    assert any("H200" in o and o.endswith("— measured") for o in options), "the H200's shipped files make it measured"
    h100 = next(o for o in options if o.startswith("NVIDIA H100 SXM — projected"))
    at.selectbox(key="pareto_device").set_value(h100).run()
    assert_clean(at)
    assert any("Projected" in c.value for c in at.caption)
    assert any("launch-bound" in i.value for i in at.info), "the page says why small widths gain little on a GPU"
    at.number_input(key="pareto_batch").set_value(64).run()
    assert_clean(at)
    measured = next(o for o in options if "H100 80GB" in o and o.endswith("— measured"))
    at.selectbox(key="pareto_device").set_value(measured).run()
    assert any("reference measurement" in c.value for c in at.caption)


def test_pareto_deploys_for_generation_by_default_on_time_to_first_token(monkeypatch):
    """The default workload is generation: the budget is on time to first token, measured where the device's
    latency file has it; the lesson is the generation one."""
    monkeypatch.delenv("NML_RUN_DIRS", raising=False)
    at = open_page("pages/4_Pareto.py")
    assert at.radio(key="pareto_workload").value == "ttft"
    run = load_run(ROOT / "cached_runs" / "shakespeare-nml", require_model=False)  # figures only
    key, lat = next((k, v) for k, v in run.latency().items() if v.rows[0].ms("ttft_b1_ms"))
    by_w = {r.width: r.ms("ttft_b1_ms") for r in lat.rows}
    at.multiselect(key="pareto_runs").set_value(["shakespeare-nml"]).run()
    label = next(o for o in at.selectbox(key="pareto_device").options if o.endswith("— measured")
                 and lat.device_name in o and f"{lat.threads} threads" in o)
    at.selectbox(key="pareto_device").set_value(label).run()
    at.number_input(key="budget_ms").set_value((by_w[0.25] + by_w[0.5]) / 2).run()
    assert_clean(at)
    assert "NML width 0.25" in at.success[0].value and "(measured)" in at.success[0].value
    assert any("time to first token" in i.value for i in at.info)


@pytest.mark.slow
def test_train_page_starts_a_job_and_follows_it(run_dirs, teacher_run, request):
    shutil.copytree(teacher_run, run_dirs / "teacher")
    at = open_page("pages/1_Train.py")
    teacher_option = next(o for o in at.selectbox(key="train_teacher").options if o.startswith("teacher"))
    at.selectbox(key="train_teacher").set_value(teacher_option)
    at.text_input(key="train_widths").set_value("1,1/2")
    at.number_input(key="train_steps").set_value(3)
    at.number_input(key="train_batch").set_value(2)
    at.number_input(key="train_ctx").set_value(16)
    at.text_input(key="train_name").set_value("from-the-app")
    at.button(key="train_start").click().run()
    assert_clean(at)
    out = run_dirs / "from-the-app"
    assert (out / jobs.JOB_FILE).exists()
    request.addfinalizer(lambda: jobs.cancel_job(out, wait_s=10))  # never leave a job behind a failed test
    deadline = time.time() + 240
    while jobs.job_alive(out) and time.time() < deadline:
        time.sleep(1)
    assert not jobs.job_alive(out), jobs.log_tail(out)
    run = load_run(out)
    assert run.status == "done", jobs.log_tail(out)
    assert [r["step"] for r in read_metrics(out)] == [0, 1, 2, 3], "step 0: the val CE before any update"
    assert run.eval() and run.latency(), "eval and bench follow training automatically"
    assert (out / "README.md").exists(), "a run trained in the app gets its model card"
    at.run()  # a refresh re-attaches to the job from the run directory
    assert_clean(at)
    assert any("Finished" in s.value for s in at.success)


def test_train_page_rejects_bad_widths(run_dirs, teacher_run):
    shutil.copytree(teacher_run, run_dirs / "teacher")
    at = open_page("pages/1_Train.py")
    at.text_input(key="train_widths").set_value("1,2")
    at.button(key="train_estimate").click().run()
    assert_clean(at)
    assert at.error and "outside (0, 1]" in at.error[0].value


def test_finetune_page_shows_each_starting_point(run_dirs, nested_run):
    from nml_core import api
    from nml_core.training.finetune import FinetuneConfig
    shutil.copytree(nested_run, run_dirs / "nested")
    cfg = FinetuneConfig(steps=2, batch_size=2, ctx=32, eval_every=1, eval_examples=16)
    api.finetune(run_dirs / "nested", 0.5, "domain", ["nml", "random"], cfg, device="cpu")
    at = open_page("pages/6_Fine-tune.py")
    at.radio(key="ft_task").set_value("domain").run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["start"]) == {"nml", "random"} and set(table["width"]) == {0.5}
    assert table["seeds"].tolist() == [1, 1] and any("nothing" in s for s in table["had read before fine-tuning"])


def test_pareto_renders_every_device_for_every_workload(monkeypatch):
    """Every device in the list (measured, profiled, preset) with each workload: no error box and no missing
    latency; a measured device whose file lacks the workload falls back to its projection, and says so."""
    monkeypatch.delenv("NML_RUN_DIRS", raising=False)
    from nml_core.analysis.device_profile import load_profiles, load_whatif_errors
    from nml_core.analysis.whatif import device_choices
    at = open_page("pages/4_Pareto.py")
    names = ["shakespeare-nml-depth", "shakespeare-nml"]
    at.multiselect(key="pareto_runs").set_value(names).run()
    runs = [load_run(ROOT / "cached_runs" / n, require_model=False) for n in names]
    by_label = {c.label: c for c in device_choices(runs, load_profiles(ROOT / "cached_runs"),
                                                   load_whatif_errors(ROOT / "cached_runs"))}
    for workload in ("ttft", "prefill"):
        at.radio(key="pareto_workload").set_value(workload).run()
        for device in at.selectbox(key="pareto_device").options:
            at.selectbox(key="pareto_device").set_value(device).run()
            assert_clean(at)
            assert not at.error, (workload, device, [e.value for e in at.error])
            table = at.dataframe[0].value
            latency = next(c for c in table.columns if c.endswith("x128 (ms)"))
            assert table[latency].notna().all(), (workload, device, table[table[latency].isna()].to_string()[:800])
            stale = any("predates what profile-device measures now" in c.value for c in at.caption)
            # what is projected from a profile measured before a field the what-if reads says so, and nothing else
            choice = by_label[device]
            projects = not choice.measured or any("not measured for" in c.value for c in at.caption)
            assert stale == (bool(choice.outdated) and projects), (workload, device)
            if "H100 80GB" in device and workload == "ttft":  # its reference file predates time to first token
                assert any("not measured for" in c.value and "projected" in c.value for c in at.caption)
