"""Measured prefill speedup of extracted students vs their analytic FLOP ratio, and elastic-forward overhead.

  python -m bench.student_speedup cached_runs/shakespeare-nml        # a run's widths (writes its latency json)
  python -m bench.student_speedup --shape gpt2-small                  # GPT-2-small shape, random weights
  python -m bench.student_speedup --from-json RUN/latency/<device>.json   # format a stored measurement
  python -m bench.student_speedup cached_runs/shakespeare-nml --breakdown [--batch 8]   # body vs LM head
  python -m bench.student_speedup cached_runs/shakespeare-nml --views --repeats 20      # views vs copies
Prints a markdown table for BENCHMARKS.md. All variants are timed interleaved in one process.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nml_core import api
from nml_core.analysis.latency import bench_widths
from nml_core.nesting.width import ALL_AXES, parse_widths, whole_head_widths
from nml_core.report import latency_markdown

SHAPES = {"gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)}


def breakdown(model, widths, repeats: int, batch: int = 1) -> str:
    """Where a prefill's time goes per width: the transformer body vs the LM head (which writes a
    (batch, n, vocab) fp32 tensor whatever the width), each against its own FLOP ratio."""
    from nml_core.analysis.latency import interleaved_timings, prefill_len
    from nml_core.device import set_threads
    from nml_core.nesting.elastic import extract_student
    from nml_core.nesting.width import WidthSpec
    set_threads(None)
    cfg = model.config
    n = prefill_len(cfg)
    x = torch.randint(0, cfg.vocab_size, (batch, n), generator=torch.Generator().manual_seed(0))
    fns, hidden = {}, {}
    for w in widths:
        s = extract_student(model, WidthSpec(w, ALL_AXES)).eval()
        with torch.inference_mode():
            hidden[w] = s.transformer(input_ids=x).last_hidden_state
        fns[f"{w:g}/body"] = lambda s=s: s.transformer(input_ids=x)
        fns[f"{w:g}/head"] = lambda s=s, h=hidden[w]: s.lm_head(h)
    t = interleaved_timings(fns, "cpu", repeats=repeats)
    L, V = cfg.n_layer, cfg.vocab_size
    rows = ["| width | body ms | body speedup | body FLOP ratio | head ms | head speedup | head FLOP ratio | "
            "logits written (MB) | head GB/s |", "|---|---|---|---|---|---|---|---|---|"]
    full = None
    for w in widths:
        d = WidthSpec(w, ALL_AXES).dims(cfg)
        body_f = 2 * L * (d.n_embd * 3 * d.attn_dim + d.attn_dim * d.n_embd + 2 * d.n_embd * d.n_inner) + 2 * L * n * d.attn_dim
        head_f = 2 * d.n_embd * V
        b, h = t[f"{w:g}/body"]["median_ms"], t[f"{w:g}/head"]["median_ms"]
        full = full or (b, h, body_f, head_f)
        mb = batch * n * V * 4 / 1e6
        rows.append(f"| {w:g} | {b:.2f} | {full[0] / b:.2f}x | {full[2] / body_f:.2f}x | {h:.2f} | {full[1] / h:.2f}x | "
                    f"{full[3] / head_f:.2f}x | {mb:.1f} | {mb / h:.1f} |")
    return "\n".join(rows)


def views_vs_copies(run: str, repeats: int) -> str:
    """The elastic inference student built from strided views of the shared weights against one built from
    contiguous copies (what ElasticGPT2 uses), each against the extracted student: batch-1 scoring, every
    variant interleaved in one process."""
    import copy

    from nml_core.analysis.latency import interleaved_timings, prefill_fn
    from nml_core.arch.gpt2 import slice_params, student_config
    from nml_core.device import set_threads
    from nml_core.nesting.elastic import extract_student
    from nml_core.nesting.width import WidthSpec
    from nml_core.store.runs import load_run
    set_threads(None)
    r = load_run(run)
    model = api.load_run_model(r)[0].eval()
    fns = {}
    for w in r.widths:
        spec = WidthSpec(w, r.axes)
        dims = spec.dims(model.config)
        views = slice_params(dict(model.named_parameters()), model.config, dims)
        with torch.device("meta"):
            strided = GPT2LMHeadModel(student_config(model.config, dims))
        strided.load_state_dict({k: v.detach() for k, v in views.items()}, strict=False, assign=True)
        strided.tie_weights()
        for name, m in (("extracted", extract_student(model, spec)), ("views", strided.eval()),
                        ("copies", copy.deepcopy(strided).eval())):
            fns[f"{w:g}/{name}"] = prefill_fn(lambda x, m=m: m(input_ids=x, use_cache=False), 1, model.config, "cpu")
    t = interleaved_timings(fns, "cpu", repeats=repeats)
    rows = ["| width | extracted ms | strided views | contiguous copies |", "|---|---|---|---|"]
    for w in r.widths:
        ex = t[f"{w:g}/extracted"]["median_ms"]
        rows.append(f"| {w:g} | {ex:.2f} | {t[f'{w:g}/views']['median_ms'] / ex - 1:+.1%} | "
                    f"{t[f'{w:g}/copies']['median_ms'] / ex - 1:+.1%} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?")
    ap.add_argument("--shape", choices=sorted(SHAPES))
    ap.add_argument("--widths", default=None, help="default: 1, 1/2, 1/4, 1/8 in whole heads of the shape (12 heads: "
                    "1/8 -> 1/6)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--from-json", help="format this latency json instead of measuring")
    ap.add_argument("--breakdown", action="store_true", help="time the transformer body and the LM head apart")
    ap.add_argument("--no-write", action="store_true", help="do not write the run's latency json")
    ap.add_argument("--batch", type=int, default=1, help="batch of the --breakdown prefill")
    ap.add_argument("--views", action="store_true", help="elastic students from strided views vs contiguous copies")
    a = ap.parse_args()
    heads = (api.run_config(api.load_run(a.run)) if a.run else GPT2Config(**SHAPES[a.shape])).n_head
    widths = parse_widths(a.widths) if a.widths else whole_head_widths(heads)
    if a.views:
        print(views_vs_copies(a.run, a.repeats))
        return
    if a.breakdown:
        model = api.load_run_model(a.run)[0] if a.run else GPT2LMHeadModel(GPT2Config(**SHAPES[a.shape])).eval()
        print(breakdown(model, widths, a.repeats, a.batch))
        return
    if a.from_json:
        import json

        from nml_core.store.latency_report import LatencyReport
        path = Path(a.from_json)
        report = LatencyReport.from_json(json.loads(path.read_text()), str(path))
        title = f"{path.parent.parent.name} (extracted students)"
    elif a.run:
        report = api.bench_run(a.run, widths, a.device, a.threads, a.repeats, write=not a.no_write)
        title = f"{Path(a.run).name} (extracted students)"
    else:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(**SHAPES[a.shape]))
        report = bench_widths(model, ALL_AXES, widths, a.device, a.threads, a.repeats)
        title = f"{a.shape} shape, random weights"
    print(latency_markdown(report, title))


if __name__ == "__main__":
    main()
