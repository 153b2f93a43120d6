"""Fine-tune: are nested students better starting points? Curves and final metrics per starting point."""
import pandas as pd
import streamlit as st

from nml_core import api
from nml_core.app import ui
from nml_core.app.figures import finetune_figure

ui.page("Fine-tune")
st.title("Students as starting points")
st.markdown("NML's second claim is that nested students are better starting points for fine-tuning than "
            "students of the same shape made otherwise; the verdict under the table is computed from it. Each "
            "starting point below is fine-tuned with **the same recipe and steps**: "
            "*genre* — which kind of work a held-out passage is from (comedy, tragedy, history, poem; split by "
            "whole work); *domain* — language modelling on Python's reference documentation (held out by topic).")

run = ui.select_run()
task = st.radio("Task", api.TASKS, horizontal=True, key="ft_task")
results = ui.finetune_results(run, task)
if results:
    metric = next(iter(results.values()))["metric"]
    widths = sorted({r["width"] for r in results.values()}, reverse=True)
    width = st.selectbox("Width", widths, format_func=lambda w: f"{w:g}", key="ft_width")
    seeds = sorted({r.get("seed", 0) for r in results.values() if r["width"] == width})
    seed = st.selectbox("Curves of seed", seeds, key="ft_seed")
    shown = {r["start"]: r for r in results.values() if r["width"] == width and r.get("seed", 0) == seed}
    st.plotly_chart(finetune_figure(shown, metric), width="stretch")
    rows = api.summarize(results)
    st.dataframe(pd.DataFrame([{"width": r.width, "start": r.start, f"{metric} (mean ± std)": r.cell(),
                                "seeds": len(r.seeds), "had read before fine-tuning": r.saw} for r in rows]),
                 hide_index=True, width="stretch")
    said = api.finetune_verdict(rows, width)
    if said:
        st.markdown(f"**{said}**")
    info = next(iter(results.values()))["info"]
    st.caption(f"{metric}: " + ("test accuracy (higher is better)" if metric == "test_acc" else
                                "held-out perplexity (lower is better)") + f"; split: {info.get('split')}"
               + (f" (test works: {', '.join(info['test_works'])})" if info.get("test_works") else "")
               + f"; files in {run.path / 'finetune' / task}.")
else:
    st.info(f"No fine-tuning results for {run.name} on {task} yet. Run them below or with "
            f"`python -m nml_core finetune {run.path} --width 0.5 --task {task}`.")

with st.expander("Run a comparison"):
    c = st.columns(3)
    width = c[0].selectbox("Width to fine-tune", [w for w in run.widths if w < 1], key="ft_run_width",
                           format_func=lambda w: f"{w:g}")
    steps = int(c[1].number_input("Steps", 1, 5000, api.FinetuneConfig.steps, key="ft_steps"))
    n_seeds = int(st.number_input("Seeds", 1, 10, 1, key="ft_seeds"))
    starts = c[2].multiselect("Starting points", api.STARTS, default=["nml", "naive", "random"], key="ft_starts")
    if st.button("Fine-tune", key="ft_go"):
        with st.spinner("Fine-tuning each starting point…"), ui.friendly_errors():
            api.finetune(run.path, width, task, starts, api.FinetuneConfig(steps=steps), device=str(ui.app_device()),
                         seeds=tuple(range(n_seeds)))
        ui.finetune_results.clear()
        st.rerun()
