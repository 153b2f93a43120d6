"""Pareto: quality vs latency for NML students and the baselines, and a hardware-budget what-if."""
import pandas as pd
import streamlit as st

from nml_core import api
from nml_core.analysis import roofline
from nml_core.analysis.pareto import COST, QUALITY, pareto_front, run_points
from nml_core.app import ui
from nml_core.app.figures import pareto_figure
from nml_core.device import device_info, set_threads

st.set_page_config(page_title="Pareto · NML Explorer", page_icon=":material/show_chart:", layout="wide")
st.title("Quality vs cost — and what fits your hardware")

run = ui.select_run()
runs = ui.evaluated_runs()
teacher_id = run.info.get("teacher", {}).get("id")
siblings = [r for r in runs if r.info.get("teacher", {}).get("id") == teacher_id]
chosen = st.multiselect("Runs on the chart (same teacher)", [r.name for r in siblings],
                        default=[r.name for r in siblings], key="pareto_runs")

here = device_info(ui.app_device(), set_threads(None))["device_key"]
device_names = ["this machine (measured)"] + [f"{name} (projected)" for name in roofline.PRESETS]
c = st.columns(3)
quality = c[0].selectbox("Quality", list(QUALITY), format_func=lambda k: QUALITY[k][0], key="pareto_quality")
cost = c[1].selectbox("Cost", list(COST), format_func=lambda k: COST[k][0], key="pareto_cost")
device = c[2].selectbox("Device", device_names, key="pareto_device")
preset = roofline.PRESETS.get(device.removesuffix(" (projected)"))

points, lat_note = [], ""
with ui.friendly_errors():
    for r in (x for x in siblings if x.name in chosen):
        lat_files = r.latency()
        key = here if here in lat_files else next(iter(lat_files), None)
        if key and key != here:
            lat_note = f"Latency of {r.name} was measured on {key}, not this machine ({here})."
        rows = run_points(r, key)
        if points:  # one teacher point per chart
            rows = [p for p in rows if p["group"] != "teacher"]
        cfg = ui.model_config(r)
        figures = roofline.project(rows, lat_files.get(key), preset, cfg.n_layer, cfg.vocab_size) if preset \
            else [roofline.measured(p) for p in rows]
        for p, f in zip(rows, figures):
            p.update(f)
        points += rows
if not points:
    st.info("The selected runs have no eval.json yet: run `python -m nml_core eval <run>` (the Train page does it "
            "automatically when a run finishes).")
    st.stop()
if lat_note:
    st.warning(lat_note)
if preset:
    st.caption(f"**Projected** for {preset.name} ({preset.note}; {preset.peak_tflops:g} TFLOP/s peak, "
               f"{preset.bandwidth_gbs:g} GB/s): a roofline model calibrated on this machine's measurements — "
               "see nml_core/analysis/roofline.py. Not a measurement.")

cost_title = COST[cost][0] + (f" — projected on {preset.name}" if preset and cost.endswith(("_ms", "_s")) else "")
front = pareto_front(points, quality, cost)
st.plotly_chart(pareto_figure(points, front, quality, cost, cost_title), width="stretch")
st.caption("Latency depends only on a student's shape, so naive-slice and independent-KD students take the "
           "latency measured for the NML student of the same shape. The shaded line is the Pareto frontier.")

# ---- hardware-budget what-if
st.subheader("What fits my budget?")
b = st.columns(3)
metric = b[0].radio("Latency budget on", ["prefill_b1_ms", "decode_ms"], horizontal=True, key="budget_metric",
                    format_func=lambda k: {"prefill_b1_ms": "128-token prefill (ms)", "decode_ms": "ms per generated token"}[k])
lat_budget = b[1].number_input("Latency budget (ms, 0 = none)", min_value=0.0, value=0.0, step=1.0, key="budget_ms")
mem_budget = b[2].number_input("Memory budget for weights (MB, 0 = none)", min_value=0.0, value=0.0, step=5.0,
                               key="budget_mb")
family = [p for p in points if p["group"].startswith("NML")]
best = roofline.best_within_budget(family, metric, lat_budget or None, mem_budget or None, quality)
full = next(p for p in points if p["width"] == 1.0)
table = pd.DataFrame([{"model": p["group"], "run": p["run"], "width": p["width"], "params (M)": p["params"] / 1e6,
                       "weights (MB)": p["weights_mb"], "FLOP ratio": full["flops_per_token"] / p["flops_per_token"],
                       "prefill 1x128 (ms)": p.get("prefill_b1_ms"),
                       "speedup": full["prefill_b1_ms"] / p["prefill_b1_ms"] if p.get("prefill_b1_ms") else None,
                       "decode (ms/token)": p.get("decode_ms"), QUALITY[quality][0]: p.get(quality)} for p in points])
if best is None:
    st.error("No NML width fits these budgets on this device. Loosen a budget or pick a faster device.")
else:
    st.success(f"Best within budget: **{best['group']} width {best['width']:g}** from `{best['run']}` — "
               f"{QUALITY[quality][0]} {best[quality]:.3g}, {best['weights_mb']:.1f} MB of weights, "
               f"{best[metric]:.2f} ms ({'projected' if preset else 'measured'}).")
    target = next(r for r in siblings if r.name == best["run"])
    if not ui.has_weights(target):
        st.info(f"`{target.name}` ships its figures but not its weights ({target.info.get('weights_note', '')}).")
    elif st.button(f"Prepare width {best['width']:g} as a stock HF model (zip)", key="export_btn"):
        with st.spinner("Extracting the student…"), ui.friendly_errors():
            st.session_state["export_zip"] = (f"{best['run']}-w{best['width']:g}.zip",
                                              api.export_zip(target.path, best["width"]))
    if "export_zip" in st.session_state:
        name, data = st.session_state["export_zip"]
        st.download_button(f"Download {name} ({len(data) / 1e6:.1f} MB)", data, file_name=name,
                           mime="application/zip", key="export_download")
st.dataframe(table, hide_index=True, width="stretch")
st.caption("FLOP ratio and speedup are against the full width (prefill 1x128): a student at its FLOP ratio "
           "would be as fast as its arithmetic says; BENCHMARKS.md explains where small widths fall short.")
