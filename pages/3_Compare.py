"""Compare: teacher and students side by side on one prompt, each student token shaded by the teacher's belief."""
import pandas as pd
import streamlit as st

from nml_core import api
from nml_core.app import ui
from nml_core.app.figures import kl_strip_figure, token_html, visible_token

ui.page("Compare")
st.title("Compare teacher and students")

run = ui.select_run()
with ui.friendly_errors():
    elastic, teacher, tokenizer = ui.models(run)

examples = ui.example_prompts(run)
if examples:
    st.caption("Example prompts from this run's held-out text:")
    cols = st.columns(len(examples))
    for i, (col, text) in enumerate(zip(cols, examples)):
        if col.button(text[:40], key=f"example_{i}"):
            st.session_state["compare_prompt"] = text
st.session_state.setdefault("compare_prompt", examples[0] if examples else "")
prompt = st.text_area("Prompt", key="compare_prompt", height=80)
cuts = api.subnets(run.widths, [k / elastic.config.n_layer for k in range(elastic.config.n_layer, 0, -1)])


def student_name(s):
    return f"width {s[0]:g}" + (f" x depth {s[1]:.3g}" if s[1] < 1 else "")


widths = st.multiselect("Students (width x depth; any depth cuts the run's ranked layers, trained or not)", cuts,
                        default=[s for s in api.subnets(run.widths, run.depths) if s != (1.0, 1.0)][:2],
                        format_func=student_name, key="compare_widths")
naive = ui.naive_model(run) if run.kind == "nested" else None
with_naive = naive is not None and st.checkbox("Beside each student, the naive slice of the teacher at its shape "
                                               "(no training: what NML starts from)", True, key="compare_naive")
c = st.columns(4)
gen = ui.sampling_inputs()  # the generate command's declarations: one sampling default on every page
max_new = c[0].slider(gen.max_new.label, 8, max(8, min(64, elastic.config.n_positions - 16)), 32, key="compare_new",
                        help=gen.max_new.help)
temperature = c[1].slider(gen.temperature.label, 0.0, 1.5, gen.temperature.default, 0.1, key="compare_temp",
                            help=gen.temperature.help)
seed = ui.number_field(c[2], gen.seed, "compare_seed")
k = c[3].slider("Top-k in tables", 3, 10, 5, key="compare_k")

if st.button("Generate and compare", type="primary", key="compare_go"):
    if not prompt.strip():
        st.warning("Type a prompt first (or click an example).")
        st.stop()
    ids = tokenizer.encode(prompt)
    results = {}
    with st.spinner("Generating with the teacher and each student…"), ui.friendly_errors():
        teacher_fn = lambda x: teacher(x).logits  # noqa: E731
        chosen = [("teacher", teacher, (1.0, 1.0))] + [(student_name(s), elastic, s) for s in widths] + \
            [(f"naive {student_name(s)}", naive, s) for s in widths if with_naive]
        for name, model, (w, d) in chosen:
            new = api.generate_ids(model, ids, w, max_new, temperature, int(seed),
                               static_cache=ui.app_device().type == "cuda", depth=d)
            results[name] = api.diagnose(teacher_fn, lambda x, w=w, d=d, m=model: m(x, width=w, depth=d).logits, tokenizer,
                                     ids, new, k, device=ui.app_device())
    st.session_state["compare"] = (prompt, results)

if "compare" in st.session_state:
    prompt, results = st.session_state["compare"]
    st.markdown("Students: background = the teacher's surprise at each token, white when the teacher gives it "
                "p = 1, full red at p ≤ 0.001 (log scale); hover a token for its probability. The teacher's own "
                "sample is left plain. ␣ is a space token, ↵ a newline.")
    cols = st.columns(len(results))
    for col, (name, d) in zip(cols, results.items()):
        with col:
            mean_kl = sum(d.kl) / max(1, len(d.kl))
            st.markdown(f"**{name}** — mean KL {mean_kl:.3f} nats/token")
            st.markdown(token_html(d.tokens, d.teacher_prob, shade=name != "teacher"), unsafe_allow_html=True)
    top = max((max(d.kl, default=0.0) for n, d in results.items() if n != "teacher"), default=None)
    for name, d in results.items():  # one colour scale for every strip: equal colours, equal KL
        if name != "teacher":
            st.plotly_chart(kl_strip_figure(d.tokens, d.kl, f"KL(teacher ‖ {name}) per position", zmax=top or None),
                            width="stretch")
    students = [n for n in results if n != "teacher"]
    if students:
        n_pos = min(len(results[s].tokens) for s in students)
        s = st.columns(2)
        who = s[0].selectbox("Student for the top-k tables", students, key="compare_who")
        pos = s[1].slider("Position", 0, max(0, n_pos - 1), 0, key="compare_pos")
        d = results[who]
        st.markdown(f"Next-token distribution before **{visible_token(d.tokens[pos])}** (position {pos})")
        t1, t2 = st.columns(2)
        shown = lambda rows: [(visible_token(t), p) for t, p in rows]  # noqa: E731
        t1.dataframe(pd.DataFrame(shown(d.teacher_topk[pos]), columns=["teacher top-k token", "p"]), hide_index=True)
        t2.dataframe(pd.DataFrame(shown(d.student_topk[pos]), columns=[f"{who} top-k token", "p"]), hide_index=True)
