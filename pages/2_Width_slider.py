"""Width slider: size, quality, speed and a generation at any nested width and depth of a run."""
import pandas as pd
import streamlit as st

from nml_core import api
from nml_core.app import ui

ui.page("Width slider")
st.title("Width slider")

run = ui.select_run()
with ui.friendly_errors():
    elastic, teacher, tokenizer = ui.models(run)
cfg = elastic.config
widths = sorted(api.available_widths(cfg, run.axes))  # smallest on the left
trained = set(api.subnets(run.widths, run.depths))
s = st.columns(2)
width = s[0].select_slider("Width (fraction of the teacher; ● = trained in this run)", options=widths, value=1.0,
                           format_func=lambda w: f"{w:g} {'●' if w in run.widths else '○'}", key="width")
depths = [k / cfg.n_layer for k in range(1, cfg.n_layer + 1)]
depth = s[1].select_slider("Depth (layers kept, by the run's ranking; ● = trained)", options=depths, value=1.0,
                           format_func=lambda d: f"{round(d * cfg.n_layer)} {'●' if d in run.depths else '○'}",
                           key="depth")
dims = elastic.dims(width, depth)
ctx = run.info.get("hparams", {}).get("ctx", cfg.n_positions)
c = api.cost(cfg, dims, ctx)
full = api.cost(cfg, ctx=ctx)

kept = f"layers {list(dims.layers)} of {cfg.n_layer}" if dims.layers else f"all {cfg.n_layer} layers"
st.caption(f"{dims.n_head} heads, n_embd {dims.n_embd}, n_inner {dims.n_inner}, {kept} "
           f"(teacher: {cfg.n_head} heads, {cfg.n_embd}, {cfg.n_inner}). Nested axes: {', '.join(run.axes)}"
           + (f"; depths {', '.join(f'{d:.3g}' for d in run.depths)}, layers ranked by "
              f"{run.info.get('layer_ranking', {}).get('criterion', 'prefix order')}." if run.depths != [1.0] else "."))
m = st.columns(4)
m[0].metric("Parameters", ui.fmt_params(c["params"]))
m[1].metric("Non-embedding params", ui.fmt_params(c["nonemb_params"]))
m[2].metric("FLOPs / token", f"{c['flops_per_token'] / 1e6:.1f} MFLOP")
m[3].metric("fp16 size", f"{c['fp16_mb']:.1f} MB")
st.caption(f"{c['params'] / full['params']:.0%} of the full model's parameters, "
           f"{full['flops_per_token'] / c['flops_per_token']:.2f}x fewer FLOPs per token "
           f"(forward, {ctx}-token context, LM head included; formula in nml_core/arch/gpt2.py).")

# ---- quality: eval.json for trained widths, a quick evaluation on demand for the others
st.subheader("Quality")
with ui.friendly_errors():
    ev = run.eval() or {}
    latency_files = run.latency()
row = api.subnet_row(run, width, depth)
quick = st.session_state.setdefault("quick_eval", {})
key = (str(run.path), width, depth)
if row is None and key in quick:
    row = quick[key]
if row:
    q = st.columns(4)
    q[0].metric("Val perplexity", f"{row['ppl']:.2f}")
    q[1].metric("Top-1 accuracy", f"{row['acc']:.1%}")
    q[2].metric("Agreement with teacher", f"{row['agree']:.1%}" if row.get("agree") is not None else "—")
    q[3].metric("KL(teacher ‖ width)", f"{row['kl']:.3f} nats" if row.get("kl") is not None else "—")
    source = " (quick evaluation)" if key in quick else " (eval.json, the full validation split)" if \
        (width, depth) in trained else " (grid.json: every width x depth, untrained cuts included)"
    st.caption(f"Measured on {row['tokens']:,} held-out tokens" + source)
else:
    st.info(f"Width {width:g} x depth {depth:.3g} was not trained as its own target in this run and the run has no "
            "grid.json (nml eval RUN --grid); its quality is not scored yet.")
    if st.button("Evaluate it now (first 4,096 val tokens)", key="quick_eval_btn"):
        with st.spinner("Scoring…"), ui.friendly_errors():
            quick[key] = api.evaluate_width(elastic, teacher.model, run, width, max_tokens=4096, depth=depth)
        st.rerun()

# ---- speed: the run's latency files for the app's device (and this CPU when the app runs on a GPU)
st.subheader("Speed on this machine")
threads = api.set_threads(None)
measured = st.session_state.setdefault("quick_bench", {})
devices_here = list(dict.fromkeys([ui.app_device().type, "cpu"]))
for dev in devices_here:
    here = api.device_info(dev, threads)["device_key"]
    lat = latency_files.get(here)
    lrow = lat.row(width, depth) if lat else None
    if lrow is None and (key, dev) in measured:
        lrow = measured[(key, dev)]
    if lrow:
        n = lat.prefill_len if lat else 128
        s = st.columns(6)
        shown = [(f"Time to first token 1x{n}", "ttft_b1_ms"), (f"Time to first token 8x{n}", "ttft_b8_ms"),
                 (f"Scoring 1x{n}", "prefill_b1_ms"), (f"Scoring 8x{n}", "prefill_b8_ms")]
        for col, (label, k) in zip(s, [(lb, k) for lb, k in shown if lrow.ms(k)]):
            col.metric(label, f"{lrow.ms(k):.1f} ms")
        s[4].metric("Decode", f"{lrow.decode.median:.0f} tokens/s")
        if lrow.decode_static:
            s[5].metric("Decode, static cache", f"{lrow.decode_static.median:.0f} tokens/s")
        st.caption(f"Measured on {here}: median of interleaved timed calls (nml_core/analysis/latency.py). Time to "
                   "first token is generation's prefill (KV cache, last logits only); scoring computes the logits of "
                   "every position (perplexity, classification).")
    elif dev == devices_here[0]:
        st.info(f"No latency measured for width {width:g} x depth {depth:.3g} on this machine ({here}).")
        if st.button("Measure now (~20 s)", key="bench_btn"):
            with st.spinner("Timing the extracted student…"), ui.friendly_errors():
                rep = api.bench_widths(elastic.model, run.axes, [(width, depth)], device=dev, repeats=3,
                                   layer_rank=run.layer_rank)
                measured[(key, dev)] = rep.rows[0]
            st.rerun()

# ---- generation at this width
st.subheader("Generate at this width and depth")
prompts = ui.example_prompts(run)
prompt = st.text_input("Prompt", value=prompts[0] if prompts else "", key="width_prompt")
g = st.columns(4)
gen = ui.sampling_inputs()  # the generate command's declarations: one sampling default on every page
max_new = g[0].slider(gen.max_new.label, 8, max(8, min(96, cfg.n_positions - 16)), 40, key="width_new",
                        help=gen.max_new.help)
temperature = g[1].slider(gen.temperature.label, 0.0, 1.5, gen.temperature.default, 0.1, key="width_temp",
                            help=gen.temperature.help)
seed = ui.number_field(g[2], gen.seed, "width_seed")
static = ui.app_device().type == "cuda" and g[3].checkbox(
    "Static KV cache (compiled)", True, key="width_static", help="HF static cache + compiled forward: CUDA only")
if st.button("Generate", type="primary", key="width_generate"):
    with st.spinner("Generating…"), ui.friendly_errors():
        ids = tokenizer.encode(prompt)
        new = api.generate_ids(elastic, ids, width, max_new, temperature, int(seed), static_cache=static, depth=depth)
    st.session_state["width_text"] = (width, depth, prompt, tokenizer.decode(new))
if "width_text" in st.session_state:
    w, d, p, text = st.session_state["width_text"]
    st.markdown(f"**width {w:g} x depth {d:.3g}**")
    st.code(p + text, language=None, wrap_lines=True)

with st.expander("All trained students of this run"):
    rows = [{"width": r["width"], "depth": r.get("depth", 1.0), "params (M)": r["params"] / 1e6,
             "MFLOP/token": r["flops_per_token"] / 1e6, "val ppl": r["ppl"], "top-1 acc": r["acc"]}
            for r in ev.get("widths", [])]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
