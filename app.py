"""NML Explorer — Home: what nested matrix learning is, the runs available, where to go next.

Start: `streamlit run app.py` (binds to localhost; `--server.address 0.0.0.0` to share on a network).
"""
import pandas as pd
import streamlit as st

from nml_core import api
from nml_core.app import ui
from nml_core.app.figures import nested_matrix_figure

INTRO = """
**Nested Matrix Learning** (Matryoshka-style) trains a teacher and a whole family of smaller students *at once*.
Every student is a **prefix slice** of the same weight matrices — the first *k* attention heads, the first
*k·64* hidden channels, the first *w·f* FFN neurons — so the width-½ model lives inside the full one, the
width-¼ model inside that, and so on. Before training, channels are **reordered by importance** so that the
prefixes hold what matters; then each step distils the frozen teacher into every width. One set of weights,
many models: pick the one that fits your latency or memory budget, and export it as a stock
`GPT2LMHeadModel`.
"""


def home() -> None:
    st.title("NML Explorer — nested GPT-2 students from one training run")
    st.markdown(INTRO)
    runs = ui.all_runs()
    left, right = st.columns([3, 2])
    with left:
        nested_matrices([r for r in runs if r.kind == "nested" and r.status == "done" and ui.has_weights(r)])
    with right:
        st.subheader("Where next")
        for script, name, icon, what in ui.MENU[1:]:
            st.page_link(script, label=f"{name} — {what}", icon=icon)
    runs_table(runs)
    st.caption("The shipped runs use a GPT-2-architecture teacher pretrained by this project on Shakespeare with the "
               "real GPT-2 tokenizer — not OpenAI's GPT-2 weights, which need the Hugging Face hub "
               "(select `gpt2` on the Train page when you have it).")


def nested_matrices(nested: list) -> None:
    st.subheader("The nested matrices")
    if not nested:
        st.info("No finished nested run yet: train one on the **Train** page, or rebuild the shipped runs with "
                "`python scripts/build_cached_runs.py`.")
        return
    run = nested[0]
    with ui.friendly_errors():  # two tensors read from the safetensors file: no model load on the Home page
        cfg = api.run_config(run)
        layer = cfg.n_layer - 1  # the last block: where the order shows most plainly
        fc = ui.weight_tensor(run, f"transformer.h.{layer}.mlp.c_fc.weight")  # (n_embd, n_inner)
        proj = ui.weight_tensor(run, f"transformer.h.{layer}.mlp.c_proj.weight")  # (n_inner, n_embd)
    prefixes = [(w, d.n_embd, d.n_inner) for w in run.widths
                for d in [api.WidthSpec(w, frozenset(run.axes)).dims(cfg)]]
    st.plotly_chart(nested_matrix_figure(
        fc, proj, prefixes, f"{run.name}: layer {layer} FFN ({cfg.n_embd} x {cfg.n_inner})"), width="stretch")
    st.caption("Each outlined top-left block is the part of this matrix one student uses — nothing is "
               "copied: a student reads a prefix view of the shared weights. Before training, heads and "
               "neurons were sorted by measured importance (nml_core/nesting/importance.py), so every prefix "
               "starts with the channels that matter most; the curve on top shows it in the trained weights: "
               "each neuron's weight-norm contribution, as a share of the largest, falls from left to right.")


def runs_table(runs: list) -> None:
    st.subheader("Runs available")
    rows = []
    for r in runs:
        ev = None
        if r.status not in ("corrupt",):
            try:
                ev = r.eval()
            except Exception:  # noqa: BLE001 - a broken eval.json must not hide the table
                ev = None
        rows.append({"run": r.name, "kind": r.kind, "status": r.status,
                     "teacher": (r.info.get("teacher") or {}).get("label") or r.info.get("label", "—"),
                     "widths": ", ".join(f"{w:g}" for w in r.widths) if r.status != "corrupt" else "—",
                     "val ppl per width": " / ".join(f"{x['ppl']:.1f}" for x in ev["widths"]) if ev else "—",
                     "weights": "yes" if ui.has_weights(r) else ("figures only" if ev else "—"),
                     "where": str(r.path.parent)})
    if not rows:
        st.info("No runs in " + ", ".join(str(p) for p in ui.run_roots()) +
                ". Rebuild the shipped runs with `python scripts/build_cached_runs.py`, or train one on the Train page.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=38 + 35 * len(rows))  # every row
    if any(r.status == "corrupt" for r in runs):
        st.warning("A run is corrupt: " + "; ".join(r.info.get("error", "") for r in runs if r.status == "corrupt"))


ui.page("Home")
home()
