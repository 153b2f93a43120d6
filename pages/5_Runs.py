"""Runs: every run's model card, status and files; rename or delete runs you made."""
import shutil
from pathlib import Path

import streamlit as st

from nml_core import api
from nml_core.app import ui

ui.page("Runs")
st.title("Runs")

runs = ui.all_runs()
if not runs:
    st.info("No runs in " + ", ".join(str(p) for p in ui.run_roots()) +
            ". Rebuild the shipped runs with `python scripts/build_cached_runs.py`, or train one on the Train page.")
    st.stop()
st.code(api.report.format_runs(runs), language=None)
names = [str(r.path) for r in runs]
choice = st.selectbox("Run", names, format_func=lambda p: Path(p).name, key="runs_pick")
run = runs[names.index(choice)]
if run.status == "corrupt":
    st.error(run.info.get("error", "corrupt run"))
elif api.run_state(run) == "interrupted" or run.status in ("cancelled", "failed"):
    st.warning(api.resume_hint(run))
stopped_after = run.status == "done" and not all(api.jobs.follow_ups_done(run).values())
if api.jobs.read_job(run.path) and not api.jobs.job_alive(run.path) and \
        (run.status in ("cancelled", "failed", "running") or stopped_after):
    if st.button("Resume (training from its last checkpoint, then evaluation, timing and its card)",
                 key="runs_resume", type="primary"):
        with ui.friendly_errors():
            api.jobs.resume_job(run.path)
        st.success(f"Resumed {run.name} in the background; follow it on the Train page.")
card = run.path / "README.md"
with ui.friendly_errors():
    if card.exists():
        st.markdown(card.read_text())
    elif run.status != "corrupt":
        st.caption("No model card yet.")
        if st.button("Write the model card", key="runs_card"):
            api.report.write_run_card(run.path)
            st.rerun()

shipped = ui.ROOT / "cached_runs" in run.path.parents
if api.jobs.job_alive(run.path):
    st.info("A training job is running in this run; cancel it on the Train page before renaming or deleting it.")
elif shipped:
    st.caption("This is a shipped run (cached_runs/); rebuild it with `python scripts/build_cached_runs.py`.")
else:
    with st.expander("Rename or delete"):
        new = st.text_input("New name", run.name, key="runs_new_name")
        if st.button("Rename", key="runs_rename") and new != run.name:
            target = run.path.with_name(new)
            if target.exists() or not new or "/" in new:
                st.error(f"{new!r} is taken or not a valid folder name; pick another")
            else:
                run.path.rename(target)
                api.load_run(target, require_model=False).update(name=new)
                st.rerun()
        sure = st.checkbox(f"Yes, delete {run.name} and its weights", key="runs_sure")
        if st.button("Delete", key="runs_delete", disabled=not sure):
            shutil.rmtree(run.path)
            st.rerun()
