"""Plotly figures and small HTML renderings for the app: pure functions from data to a figure."""
from __future__ import annotations

import html
import math

import plotly.graph_objects as go
import torch

from ..analysis.grid import subnet_label
from ..analysis.pareto import COST, QUALITY

PALETTE = {"teacher": "#222222", "NML": "#d62728", "NML FFN-only": "#ff7f0e", "naive slice": "#7f7f7f",
           "independent KD": "#1f77b4", "MatTA": "#9467bd"}


def nested_matrix_figure(fc: torch.Tensor, proj: torch.Tensor, prefixes: list[tuple[float, int, int]], title: str,
                         max_cells: int = 96) -> go.Figure:
    """One FFN's weights as the students see them. Top: each neuron's weight-norm contribution
    ||W_fc[:, j]|| * ||W_proj[j, :]|| (pooled), so the importance order is visible: it falls from left to right.
    Bottom: |W_fc| as a heatmap with each width's prefix block outlined (the students are its top-left corners).

    fc: (n_embd, n_inner), proj: (n_inner, n_embd); prefixes: (width, rows kept, cols kept). Axes are in real
    channel numbers; the matrix is average-pooled to at most max_cells per side so the picture stays readable.
    """
    from plotly.subplots import make_subplots
    w = fc.detach().float().abs()
    r_step, c_step = max(1, -(-w.shape[0] // max_cells)), max(1, -(-w.shape[1] // max_cells))
    pooled = torch.nn.functional.avg_pool2d(w[None, None], (r_step, c_step), ceil_mode=True)[0, 0]
    contribution = fc.float().norm(dim=0) * proj.float().norm(dim=1)
    bins = torch.nn.functional.avg_pool1d(contribution[None, None], c_step, ceil_mode=True)[0, 0]
    xs = [(i + 0.5) * c_step for i in range(pooled.shape[1])]
    ys = [(i + 0.5) * r_step for i in range(pooled.shape[0])]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.3, 0.7], vertical_spacing=0.04)
    fig.add_scatter(x=xs, y=(bins / bins.max()).tolist(), mode="lines", line=dict(color="#444444"), row=1, col=1,
                    name="neuron contribution", showlegend=False,
                    hovertemplate="neurons near %{x:.0f}: %{y:.2f} of the largest<extra></extra>")
    fig.add_trace(go.Heatmap(z=pooled.numpy(), x=xs, y=ys, colorscale="Greys", colorbar=dict(title="|w|", y=0.35,
                                                                                              len=0.7),
                             hovertemplate="input channel %{y:.0f}, neuron %{x:.0f}: %{z:.3f}<extra></extra>"),
                  row=2, col=1)
    colors = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b"]
    for i, (width, rows, cols) in enumerate(prefixes):
        color = colors[i % len(colors)]
        fig.add_shape(type="rect", x0=0, y0=0, x1=cols, y1=rows, line=dict(color=color, width=3), row=2, col=1)
        fig.add_vline(x=cols, line=dict(color=color, width=1, dash="dot"), row=1, col=1)
        fig.add_annotation(x=cols, y=rows, text=f"w={width:g}", showarrow=False, xanchor="right", yanchor="top",
                           font=dict(color=color, size=13), row=2, col=1)
    fig.update_yaxes(title="contribution", row=1, col=1)
    fig.update_yaxes(autorange="reversed", title="input channel (hidden)", row=2, col=1)
    fig.update_xaxes(title="FFN neuron (importance order: most important first)", row=2, col=1)
    fig.update_layout(title=title, height=520, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def loss_curves_figure(rows: list[dict]) -> go.Figure:
    """Train CE (or loss) and val CE per width against steps, with the landmarks of step 0 (logged before any
    update): the starting model's level at width 1 (the teacher's) and the naive slice of it at each smaller width,
    where that width's training starts."""
    fig = go.Figure()
    steps = [r for r in rows if r["step"] > 0]
    train_key = "ce" if steps and "ce" in steps[0] else "loss"
    widths = list(steps[0][train_key]) if steps else []
    for w in widths:
        fig.add_scatter(x=[r["step"] for r in steps if w in r.get(train_key, {})],
                        y=[r[train_key][w] for r in steps if w in r.get(train_key, {})], mode="lines",
                        name=f"train {'CE' if train_key == 'ce' else 'loss (KD + CE, not CE)'} w={w}")
        val = [r for r in rows if w in (r.get("val_ce") or r.get("val_loss") or {})]
        if val:
            fig.add_scatter(x=[r["step"] for r in val], y=[(r.get("val_ce") or r.get("val_loss"))[w] for r in val],
                            mode="markers+lines", line=dict(dash="dot"), name=f"val CE w={w}")
    start = next((r["val_ce"] for r in rows if r["step"] == 0 and r.get("val_ce")), None)
    for w, ce in (start or {}).items():
        teacher = w in ("1", "1@d1")
        fig.add_hline(y=ce, line=dict(dash="dash", width=1, color="grey" if teacher else "firebrick"),
                      annotation_text=f"teacher (step 0): {ce:.2f}" if teacher else f"naive slice w={w}: {ce:.2f}",
                      annotation_position="top right")
    fig.update_layout(xaxis_title="step", yaxis_title="cross-entropy (nats/token)", height=380, legend_title="width",
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


def pareto_figure(points: list[dict], front: list[bool], quality: str, cost: str, cost_title: str | None = None) -> go.Figure:
    """Quality vs cost, one trace per group (diamonds: depth-reduced students), the Pareto frontier as a line;
    hover shows the numbers."""
    fig = go.Figure()
    for group in dict.fromkeys(p["group"] for p in points):
        ps = [p for p in points if p["group"] == group and p.get(quality) is not None and p.get(cost) is not None]
        if not ps:
            continue
        cut = group.endswith("untrained cut")  # many points: no labels, small hollow markers
        fig.add_scatter(x=[p[cost] for p in ps], y=[p[quality] for p in ps], mode="markers" if cut else "markers+text",
                        name=group, text=[subnet_label(p) for p in ps], textposition="top center",
                        marker=dict(size=7 if cut else 11, color=PALETTE.get(group.replace(" untrained cut", "")),
                                    symbol=[marker_symbol(p) for p in ps] if not cut else "circle-open"),
                        customdata=[[subnet_label(p), p["params"] / 1e6, p.get("ppl"), p.get("acc"), p[cost]] for p in ps],
                        hovertemplate=(f"<b>{group}</b> width %{{customdata[0]}}<br>params %{{customdata[1]:.2f}}M<br>"
                                       "val ppl %{customdata[2]:.2f}<br>top-1 acc %{customdata[3]:.3f}<br>"
                                       f"{cost_title or COST[cost][0]}: %{{customdata[4]:.4g}}<extra></extra>"))
    _legend_of_markers(fig, points)
    on = sorted((p for p, f in zip(points, front) if f), key=lambda p: p[cost])
    if on:
        fig.add_scatter(x=[p[cost] for p in on], y=[p[quality] for p in on], mode="lines", name="Pareto frontier",
                        line=dict(color="rgba(214,39,40,0.35)", width=6), hoverinfo="skip")
    fig.update_layout(xaxis_title=cost_title or COST[cost][0], yaxis_title=QUALITY[quality][0], height=480,
                      legend_title="model", margin=dict(l=10, r=10, t=30, b=10))
    if quality == "ppl":
        fig.update_yaxes(type="log")
    return fig


def marker_symbol(p: dict) -> str:
    """circle: every layer; diamond: a depth-reduced student; a dot inside: its latency is projected on a device
    whose measurement lacks this workload or batch."""
    shape = "diamond" if p.get("depth", 1.0) < 1 else "circle"
    return shape + ("-dot" if p.get("projected_here") else "")


def _legend_of_markers(fig: go.Figure, points: list[dict]) -> None:
    """Legend entries for what a marker's shape says (the groups' entries say what its colour says)."""
    kinds = [("circle", "● every layer", True), ("diamond", "◆ depth-reduced (fewer layers)",
                                                     any(p.get("depth", 1.0) < 1 for p in points)),
             ("circle-open", "○ untrained cut (never a training target)",
              any(p["group"].endswith("untrained cut") for p in points)),
             ("circle-dot", "⊙ latency projected (not measured here)", any(p.get("projected_here") for p in points))]
    for symbol, name, shown in kinds:
        if shown:
            fig.add_scatter(x=[None], y=[None], mode="markers", name=name, legendgroup="markers",
                            marker=dict(symbol=symbol, size=10, color="grey"), hoverinfo="skip")


def kl_strip_figure(tokens: list[str], kl: list[float], title: str, zmax: float | None = None) -> go.Figure:
    """KL(teacher || student) at each generated position, as a one-row heatmap; zmax: the colour scale's top,
    shared by every strip on a page so that equal colours mean equal KL."""
    fig = go.Figure(go.Heatmap(z=[kl], x=list(range(len(kl))), colorscale="Reds", zmin=0, zmax=zmax,
                               colorbar=dict(title="KL"),
                               customdata=[[repr(t) for t in tokens]],
                               hovertemplate="position %{x} %{customdata}: KL %{z:.3f} nats<extra></extra>"))
    fig.update_layout(title=title, height=150, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="generated position",
                      yaxis=dict(visible=False))
    return fig


def surprise_alpha(p: float, floor: float = 1e-3) -> float:
    """0 when the teacher is sure of the token (p = 1), 1 at p <= floor, log-scaled in between: a language
    model rarely gives any token p > 0.5, so a linear 1 - p would paint nearly everything dark."""
    return round(min(1.0, max(0.0, math.log(max(p, 1e-12)) / math.log(floor))), 3)


WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible_token(token: str) -> str:
    """A token as a table cell shows it: a whitespace-only token as its symbols (␣ space, ↵ newline, ⇥ tab), an
    empty one as ∅, never a blank cell."""
    if token == "":
        return "∅"
    return "".join(WHITESPACE.get(c, c) for c in token) if not token.strip() else token


def token_html(tokens: list[str], probs: list[float], shade: bool = True) -> str:
    """Tokens on a red background whose strength is the teacher's surprise at them (surprise_alpha); shade=False:
    plain (the teacher's own sample: its surprise at its own draw says nothing about a student)."""
    spans = []
    for i, (t, p) in enumerate(zip(tokens, probs)):
        shown = html.escape(visible_token(t) if not t.strip() and "\n" not in t else t).replace("\n", "↵<br>")
        alpha = surprise_alpha(p) if shade else 0
        spans.append(f'<span title="#{i}: teacher p = {p:.3f}" style="background: rgba(214,39,40,{alpha});'
                     f'border-radius: 3px; white-space: pre-wrap">{shown}</span>')
    return '<div style="line-height: 1.9; font-family: monospace">' + "".join(spans) + "</div>"


def finetune_figure(results: dict[str, dict], metric: str) -> go.Figure:
    """The fine-tuning curve of each starting point (same recipe, same steps)."""
    fig = go.Figure()
    for start, r in results.items():
        fig.add_scatter(x=[c["step"] for c in r["curve"]], y=[c[metric] for c in r["curve"]], mode="lines+markers",
                        name=start)
    fig.update_layout(xaxis_title="fine-tuning step", yaxis_title={"test_acc": "test accuracy",
                                                                  "val_ppl": "held-out perplexity"}.get(metric, metric),
                      height=380, legend_title="start", margin=dict(l=10, r=10, t=30, b=10))
    if metric == "val_ppl":
        fig.update_yaxes(type="log")
    return fig
