"""Streamlit glue shared by the app's pages: where runs live, the run picker, cached models, friendly errors.

Pages stay thin: they read state, call nml_core.api and the helpers here, and draw.
Run folders: cached_runs/ and runs/ next to app.py, or the folders in $NML_RUN_DIRS (os.pathsep-separated;
new runs go into the last one). The app's device: $NML_DEVICE (auto | cpu | cuda; auto = CUDA when present).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from .. import device as devices
from ..errors import NMLError
from ..files import REBUILD_HINT
from ..analysis.device_profile import DeviceProfile
from ..store.runs import Run, find_runs, load_run, weight_files
from ..store.runs import has_weights as store_has_weights

ROOT = Path(__file__).resolve().parent.parent.parent


# The app's pages in the order of the sidebar's menu: (script, name, icon, what it is for). The menu is drawn by
# `page` rather than by Streamlit, which would name the first page after its file ("app").
MENU = [("app.py", "Home", ":material/stacks:", None),
        ("pages/1_Train.py", "Train", ":material/model_training:", "distil a teacher into nested students"),
        ("pages/2_Width_slider.py", "Width slider", ":material/tune:", "size, speed and text at any width"),
        ("pages/3_Compare.py", "Compare", ":material/compare:", "teacher vs students, token by token"),
        ("pages/4_Pareto.py", "Pareto", ":material/show_chart:", "quality vs latency, hardware what-if"),
        ("pages/5_Runs.py", "Runs", ":material/folder_open:", "model cards, rename, delete"),
        ("pages/6_Fine-tune.py", "Fine-tune", ":material/school:", "students as starting points")]


def page(name: str) -> None:
    """A page's first call: its title and icon, the wide layout, and the sidebar's menu."""
    icon = next(icon for _, n, icon, _ in MENU if n == name)
    st.set_page_config(page_title="NML Explorer" if name == "Home" else f"{name} · NML Explorer", page_icon=icon,
                       layout="wide")
    with st.sidebar:
        for script, n, icon, _ in MENU:
            st.page_link(script, label=n, icon=icon)


def app_device():
    """The device the app loads models on and measures latency on (nml_core.device resolves it)."""
    return devices.resolve(os.environ.get("NML_DEVICE", "auto"))


def run_roots() -> list[Path]:
    env = os.environ.get("NML_RUN_DIRS")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [ROOT / "cached_runs", ROOT / "runs"]


def new_runs_root() -> Path:
    return run_roots()[-1]


def all_runs() -> list[Run]:
    return find_runs(*run_roots())


def nested_runs() -> list[Run]:
    """Finished nested runs whose weights load: the runs the Width, Compare and Pareto pages can use."""
    out = []
    for r in all_runs():
        if r.kind == "nested" and r.status == "done":
            try:
                load_run(r.path)
                out.append(r)
            except NMLError:
                pass
    return out


def warn_broken(runs: list[Run]) -> None:
    """Corrupt or failed runs are skipped by the pickers; say so (with the file at fault) in the sidebar."""
    for r in runs:
        if r.status in ("corrupt", "failed"):
            st.sidebar.warning(f"Skipped {r.name}: {r.info.get('error') or r.status}", icon=":material/warning:")


def evaluated_runs() -> list[Run]:
    """Finished nested runs with an eval.json, weights or not (eval-only runs still belong on a chart)."""
    out = []
    for r in all_runs():
        try:
            if r.kind == "nested" and r.status == "done" and r.eval():
                out.append(r)
        except NMLError:
            pass
    return out


def has_weights(run: Run) -> bool:
    return store_has_weights(run.model_dir)


def select_run(runs: list[Run] | None = None, label: str = "Run") -> Run:
    """Sidebar picker shared by all pages (the choice follows the user from page to page); stops the page
    with a way forward when there is nothing to pick."""
    runs = nested_runs() if runs is None else runs
    warn_broken(all_runs())
    if not runs:
        st.info("No finished nested run found in " + ", ".join(str(p) for p in run_roots()) +
                ". Train one on the **Train** page, or rebuild the shipped runs with "
                "`python scripts/build_cached_runs.py`.")
        st.stop()
    names = [str(r.path) for r in runs]
    current = st.session_state.get("run_path")
    index = names.index(current) if current in names else 0
    choice = st.sidebar.selectbox(label, names, index=index, format_func=lambda p: Path(p).name, key="run_picker")
    st.session_state["run_path"] = choice
    run = runs[names.index(choice)]
    st.sidebar.caption(f"Teacher: {run.info.get('teacher', {}).get('label', '?')}"
                       + (f" · TA: {run.info['ta']['label']}" if run.info.get("ta") else ""))
    return run


def _stamp(path: Path) -> float:
    """Changes when the run is rebuilt, so cached models are reloaded."""
    return (Path(path) / "run.json").stat().st_mtime


@st.cache_resource(show_spinner="Loading the run's weights…", max_entries=4)
def _models(path: str, stamp: float, device: str):
    from ..nesting.elastic import ElasticGPT2
    from ..store.models import load_run_model, load_teacher_of
    run = load_run(path)
    model, tokenizer = load_run_model(run, device)
    teacher = load_teacher_of(run, device).eval()
    return ElasticGPT2(model, run.axes, run.layer_rank).eval(), ElasticGPT2(teacher, run.axes).eval(), tokenizer


@st.cache_resource(show_spinner=False, max_entries=4)
def _naive(path: str, stamp: float, device: str):
    from ..nesting.elastic import ElasticGPT2
    from ..training.inits import reordered_teacher
    run = load_run(path, require_model=False)
    return ElasticGPT2(reordered_teacher(run, device), run.axes, run.layer_rank).eval()


def naive_model(run: Run, device=None):
    """The naive slice of a nested run's teacher (importance-reordered, untrained), as an elastic model, where the
    run records that baseline; else None."""
    if not any(b.kind == "naive" for b in run.baselines()):
        return None
    return _naive(str(run.path), _stamp(run.path), str(device or app_device()))


def models(run: Run, device=None):
    """(elastic NML model, elastic teacher, tokenizer) of a run on `device` (default: the app's), loaded once
    per run, device and process."""
    return _models(str(run.path), _stamp(run.path), str(device or app_device()))


@st.cache_data(show_spinner=False, max_entries=8)
def _example_prompts(path: str, stamp: float) -> list[str]:
    from ..data.batches import example_prompts
    from ..store.models import run_tokenizer, run_tokens
    run = load_run(path)
    return example_prompts(run_tokens(run).val, run_tokenizer(run))


def example_prompts(run: Run) -> list[str]:
    return _example_prompts(str(run.path), _stamp(run.path))


@contextlib.contextmanager
def friendly_errors():
    """Show an nml_core error as its one-line message (it names the problem and the fix), never a traceback."""
    try:
        yield
    except NMLError as e:
        st.error(str(e), icon=":material/error:")
        st.stop()
    except (OSError, ValueError, RuntimeError) as e:
        st.error(f"{type(e).__name__}: {e}", icon=":material/error:")
        st.stop()


@st.cache_data(show_spinner=False, max_entries=4)
def _weight_tensor(path: str, name: str, stamp: float):
    from safetensors import safe_open
    for file in weight_files(Path(path) / "model"):
        with safe_open(str(file), framework="pt") as f:
            if name in f.keys():
                return f.get_tensor(name).float()
    raise NMLError(f"{path}/model has no tensor {name}; {REBUILD_HINT}")


def weight_tensor(run: Run, name: str):
    """One weight matrix of a run, read straight from its safetensors file (no model load)."""
    return _weight_tensor(str(run.path), name, _stamp(run.path))


@st.cache_data(show_spinner=False, ttl=30)
def device_profiles() -> dict[str, DeviceProfile]:
    """Device profiles under every run folder (cached_runs/device_profiles, runs/device_profiles)."""
    from ..analysis.device_profile import load_profiles
    return load_profiles(*run_roots())


def whatif_errors() -> dict:
    """The what-if's measured error per device class (bench/whatif_accuracy.py --write), if measured."""
    from ..analysis.device_profile import load_whatif_errors
    return load_whatif_errors(*run_roots())


@st.cache_data(show_spinner=False, ttl=10)
def finetune_results(run: Run, task: str) -> dict[str, dict]:
    """<run>/finetune/<task>/<start>-w<width>-seed<seed>.json, by file stem (unreadable ones skipped)."""
    from ..analysis.finetune_results import load_results
    return load_results(run.path, task)


def recipe_field(name: str):
    """The declaration (nml_core.inputs.Input: label, help, range, choices) of a TrainConfig field for the Train
    page's form; the default is the shipped NML run's recipe where it differs (minutes on a laptop CPU)."""
    from dataclasses import replace
    from ..training.config import SHIPPED_RECIPE, field_input
    spec = field_input(name)
    return replace(spec, default=SHIPPED_RECIPE.get(name, spec.default))


def command_input(command: str, name: str):
    """The declaration of one CLI input (nml_core.commands): the page field that sets it takes the same range."""
    from ..commands import COMMANDS
    return COMMANDS[command].input(name)


@dataclass(frozen=True)
class SamplingInputs:
    max_new: Any
    temperature: Any
    seed: Any


def sampling_inputs() -> SamplingInputs:
    """How many tokens, at what temperature, from which seed: generate's inputs, as every page that samples shows
    them."""
    return SamplingInputs(*(command_input("generate", n) for n in ("--max-new-tokens", "--temperature", "--seed")))


def number_field(where, spec, key: str, value=None, **kw):
    """A number input bounded by the input's declared range, so the page takes what the CLI takes (an open lower
    bound, like a learning rate's 0, is refused by the recipe's own check in one line)."""
    cast = int if spec.kind == "int" else float
    return where.number_input(spec.label or spec.name, min_value=cast(spec.low), max_value=cast(spec.high),
                              value=cast(spec.default if value is None else value), key=key, help=spec.help, **kw)


def fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f} M"
