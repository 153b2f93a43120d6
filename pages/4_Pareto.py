"""Pareto: quality vs latency for NML students and the baselines, and a hardware-budget what-if."""
import pandas as pd
import streamlit as st

from nml_core import api
from nml_core.app import ui
from nml_core.app.figures import pareto_figure

ui.page("Pareto")
st.title("Quality vs cost — and what fits your hardware")

run = ui.select_run()
runs = ui.evaluated_runs()
siblings = [r for r in runs if api.same_teacher(r, run)]
chosen = st.multiselect("Runs on the chart (same teacher): the selected run with its baselines; add others to "
                        "compare", [r.name for r in siblings], default=[run.name] if run.name in [r.name for r in siblings] else None,
                        key="pareto_runs")

profiles = ui.device_profiles()
family_runs = [r for r in siblings if r.name in chosen]
choices = api.whatif.device_choices(family_runs, profiles, ui.whatif_errors())
if not choices:
    st.info("No device is measured or profiled yet: `python -m nml_core bench <run>` or `profile-device`.")
    st.stop()
workload = st.radio("Deploy for", list(api.whatif.WORKLOADS), horizontal=True, key="pareto_workload",
                    format_func={"ttft": "generation: time to first token + decode",
                                 "prefill": "scoring: all logits (perplexity, classification)"}.get)
c = st.columns(4)
quality = c[0].selectbox("Quality", list(api.QUALITY), format_func=lambda k: api.QUALITY[k][0], key="pareto_quality")
cost = c[1].selectbox("Cost", list(api.COST), format_func=lambda k: api.COST[k][0], key="pareto_cost")
labels = [d.label for d in choices]
choice = choices[labels.index(c[2].selectbox("Device", labels, key="pareto_device"))]
batch = int(ui.number_field(c[3], ui.command_input("whatif", "--batch"), "pareto_batch"))
prefill_label = f"{'time to first token' if workload == 'ttft' else 'scoring'} {batch}x128"

points = []
with ui.friendly_errors():
    for r in family_runs:
        rows = api.run_points(r, choice.file_key)
        if r.grid():  # the rest of its width x depth family: cuts never trained as their own target (Mix'n'Match)
            cuts = api.budget.family_points(r, choice.file_key)
            rows += [{**p, "group": "NML untrained cut"} for p in cuts if not p["trained"]]
        if not choice.measured:  # no measured latency leaks into a projection
            rows = [{k: v for k, v in p.items() if k not in (*api.whatif.MEASURES, "decode_tok_s")} for p in rows]
        if points:  # one teacher point per chart
            rows = [p for p in rows if p["group"] != "teacher"]
        points += api.whatif.device_points(rows, api.run_config(r), r.axes, choice, batch, workload=workload)
if not points:
    st.info("The selected runs have no eval.json yet: run `python -m nml_core eval <run>` (the Train page does it "
            "automatically when a run finishes).")
    st.stop()
if not choice.measured:
    prof = choice.profile
    st.caption(f"**Projected** for {choice.name} from its device profile ({prof.kind}"
               f"{', ' + prof.note if prof.note else ''}) and each width's own ops — "
               "nml_core/analysis/whatif.py. Not a measurement"
               + (f"; the what-if's measured error on this class of device: median {choice.error.median:.0%}, "
                  f"worst {choice.error.worst:.0%} over {choice.error.n} measurements "
                  "(bench/whatif_accuracy.py)." if choice.error else "."))
elif choice.provenance:
    st.caption(f"Measured: {choice.provenance}")
missing = [p for p in points if choice.measured and not p["prefill_measured"]]
unpriced = [p for p in missing if p.get("prefill_ms") is None]
what = f"{api.whatif.WORKLOADS[workload]} at batch {batch}"
if missing and not unpriced:
    st.caption(f"{choice.name} was not measured for {what} for {len(missing)} of the {len(points)} models: "
               f"their latencies are **projected** from {choice.profile.device_name}'s "
               f"{choice.profile.kind} profile, marked ⊙ on the chart.")
elif unpriced:  # no profile to project from (a bf16 file, say: profiles are fp32): left out, and said so
    st.caption(f"{choice.name} has no measurement of {what} for {len(unpriced)} of the {len(points)} models "
               f"(runs: {', '.join(sorted({p['run'] for p in unpriced}))}) and no profile to project them from: "
               "they are left off this chart.")
    points = [p for p in points if p.get("prefill_ms") is not None]
    if not points:
        st.stop()
stale = choice.outdated_note()
if stale and (not choice.measured or missing):  # only where a figure on the chart comes from that profile
    st.caption(stale)
cost_title = (prefill_label + " (ms)" if cost == "prefill_ms" else api.COST[cost][0]) + \
    (f" — projected on {choice.name}" if not choice.measured and cost.endswith(("_ms", "_s")) else "")
front = api.pareto_front(points, quality, cost)
st.plotly_chart(pareto_figure(points, front, quality, cost, cost_title), width="stretch")
st.caption("Latency depends only on a student's shape, so naive-slice and independent-KD students take the "
           "latency measured for the NML student of the same shape. The shaded line is the Pareto frontier.")

# ---- hardware-budget what-if
st.subheader("What fits my budget?")
b = st.columns(3)
metric = b[0].radio("Latency budget on", ["prefill_ms", "decode_ms"], horizontal=True, key="budget_metric",
                    format_func=lambda k: {"prefill_ms": f"{prefill_label} (ms)",
                                           "decode_ms": "ms per generated token"}[k])
lat_spec, mem_spec = ui.command_input("whatif", "--latency-ms"), ui.command_input("whatif", "--memory-mb")
lat_budget = b[1].number_input(f"{lat_spec.label} (0 = none)", min_value=0.0, max_value=lat_spec.high, value=0.0,
                               step=1.0, key="budget_ms", help=lat_spec.help)
mem_budget = b[2].number_input(f"{mem_spec.label}, at batch {batch} (0 = none)", min_value=0.0,
                               max_value=mem_spec.high, value=0.0, step=5.0, key="budget_mb", help=mem_spec.help)
family = [p for p in points if p["group"].startswith("NML")]
best = api.whatif.best_within_budget(family, metric, lat_budget or None, mem_budget or None, quality)
full = next(p for p in points if p["width"] == 1.0 and p.get("depth", 1.0) == 1.0)
table = pd.DataFrame([{"model": p["group"], "run": p["run"], "width": p["width"], "depth": p.get("depth", 1.0),
                       "layers": p.get("n_layer"), "params (M)": p["params"] / 1e6,
                       "memory (MB)": p["memory_mb"], "of which weights": p["weights_mb"],
                       "FLOP ratio": full["flops_per_token"] / p["flops_per_token"],
                       f"{prefill_label} (ms)": p.get("prefill_ms"),
                       "speedup": full["prefill_ms"] / p["prefill_ms"] if p.get("prefill_ms") and full.get("prefill_ms")
                       else None,
                       "decode (ms/token)": p.get("decode_ms"), api.QUALITY[quality][0]: p.get(quality)} for p in points])
measured_here = bool(best) and (best["prefill_measured"] if metric == "prefill_ms" else choice.measured)
if not (lat_budget or mem_budget):
    st.caption("Set a latency or a memory budget to see the best NML student within it.")
elif best is None:
    st.error("No NML student fits these budgets on this device. Loosen a budget or pick a faster device.")
else:
    shape = f"width {best['width']:g}" + (f" x depth {best['depth']:.3g}" if best.get("depth", 1.0) < 1 else "")
    st.success(f"Best within budget: **{best['group']} {shape}** from `{best['run']}` — "
               f"{api.QUALITY[quality][0]} {best[quality]:.3g}, {best['memory_mb']:.1f} MB at batch {batch}, "
               f"{best[metric]:.2f} ms ({'measured' if measured_here else 'projected'}).")
    target = next(r for r in siblings if r.name == best["run"])
    if not ui.has_weights(target):
        st.info(f"`{target.name}` ships its figures but not its weights ({target.info.get('weights_note', '')}).")
    elif st.button(f"Prepare {shape} as a stock HF model (zip)", key="export_btn"):
        with st.spinner("Extracting the student…"), ui.friendly_errors():
            st.session_state["export_zip"] = (f"{best['run']}-w{best['width']:g}-d{best.get('depth', 1.0):.3g}.zip",
                                              api.export_zip(target.path, best["width"], best.get("depth", 1.0)))
    if "export_zip" in st.session_state:
        name, data = st.session_state["export_zip"]
        st.download_button(f"Download {name} ({len(data) / 1e6:.1f} MB)", data, file_name=name,
                           mime="application/zip", key="export_download")
st.dataframe(table, hide_index=True, width="stretch")
st.caption(f"FLOP ratio and speedup are against the full width ({prefill_label}): a student at its FLOP ratio "
           "would be as fast as its arithmetic says; BENCHMARKS.md explains where small widths fall short.")

# ---- why: what bounds the small widths on this device
# built for the selected run's family (the first on the chart otherwise), on the selected device
explained = next((r for r in family_runs if r.name == run.name), family_runs[0] if family_runs else None)
lesson = api.whatif.lesson(choice.profile, api.run_config(explained), explained.axes,
                           [p for p in family if p["run"] == explained.name], batch, workload=workload) \
    if explained else None
if lesson:
    st.info(lesson)
for r in family_runs:  # a width x depth run: which axis pays on this device, at this batch
    if r.depths != [1.0]:
        with ui.friendly_errors():
            answer = api.budget.search(r, api.run_config(r), choice, batch, "prefill" if workload == "prefill" else "ttft",
                                   lat_budget or None, mem_budget or None)
        st.info(f"`{r.name}`: " + api.budget.why(answer, choice.name, batch))

# ---- measure this machine: a profile + the latency of the runs on the chart; it then joins the device list
with st.expander("Measure this machine"):
    st.caption(f"Runs `profile-device` and `bench` on {ui.app_device()} for the runs on the chart (about a "
               "minute per run on a laptop CPU); this machine then appears in the device list as measured.")
    if st.button("Measure now", key="measure_machine"):
        with st.spinner("Profiling this device and timing every width…"), ui.friendly_errors():
            api.profile_device(str(ui.app_device()), out=ui.new_runs_root())
            for r in family_runs:
                if ui.has_weights(r):
                    api.bench_run(r.path, device=str(ui.app_device()), repeats=3)
            ui.device_profiles.clear()
        st.rerun()
