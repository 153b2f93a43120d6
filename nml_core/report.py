"""Text and markdown renderings of what the engine computed: eval and latency tables, the run list, model cards.
Pure functions of run files and reports; nothing here computes a figure."""
from __future__ import annotations

from pathlib import Path

from transformers import GPT2Config

from .analysis.grid import subnet_label, subnet_row
from .analysis.pareto import default_latency_key, run_points
from .analysis.device_profile import DeviceProfile
from .arch.gpt2 import cost
from .errors import NMLError
from .nesting.depth import subnet_key
from .nesting.width import WidthSpec
from .files import atomic_write_bytes
from .store.liveness import resume_hint, run_state
from .store.latency_report import LatencyReport, LatencyRow
from .store.runs import Run, load_run

DASH = "—"  # shown where a figure does not exist (no teacher to agree with, not measured), never "nan"


def num(value, spec: str = ".3f", width: int = 0) -> str:
    """`value` formatted, or a dash when it is missing."""
    text = DASH if value is None or value != value else format(value, spec)
    return f"{text:>{width}}" if width else text


def format_eval(report: dict) -> str:
    lines = []
    if "teacher" in report:
        t = report["teacher"]
        lines.append(f"teacher: ppl {t['ppl']:.2f}  acc {t['acc']:.3f}  ({t['params'] / 1e6:.1f}M params)")
    groups = [("nml", report["widths"])] + list(report.get("baselines", {}).items())
    lines.append(f"{'model':<12} {'width':>6} {'layers':>6} {'params':>8} {'MFLOP/tok':>9} {'ppl':>8} {'acc':>6} "
                 f"{'agree':>6} {'kl':>6} {'doc1-16':>7} {'rest':>6}")
    for group, rows in groups:
        for r in rows:
            lines.append(f"{group:<12} {r['width']:>6g} {r.get('n_layer') or '':>6} {r['params'] / 1e6:>7.2f}M {r['flops_per_token'] / 1e6:>9.1f} "
                         f"{r['ppl']:>8.2f} {r['acc']:>6.3f} {num(r.get('agree'), '.3f', 6)} {num(r.get('kl'), '.3f', 6)} "
                         f"{num(r.get('doc_start_nll'), '.3f', 7)} {num(r.get('rest_nll'), '.3f', 6)}")
    if any(r.get("doc_start_nll") is not None for _, rows in groups for r in rows):
        lines.append("doc1-16: NLL (nats) of tokens 1-16 of each val document after its <|endoftext|>; rest: the others")
    if "unigram_ppl" in report:
        lines.append(f"unigram baseline ppl: {report['unigram_ppl']:.1f}")
    return "\n".join(lines)


def format_budget(answer, choice, batch: int, workload: str) -> str:
    """`nml whatif`: the frontier (measured or projected +- the what-if's error), the best within budget, why."""
    from .analysis.budget import why
    key = answer.latency_key
    pm = f" ± {choice.error.median:.0%}" if choice.error else ""
    what = {"ttft": f"time to first token {batch}x128", "prefill": f"scoring {batch}x128",
            "decode": "ms per generated token"}[workload]
    tokens = answer.points[0].get("tokens") if answer.points else None
    lines = [f"{choice.label}: {what}; frontier of {len(answer.points)} (width, depth) students"
             + (f" (val ppl on the same {tokens:,} tokens for all)" if tokens else ""),
             f"{'width':>6} {'depth':>6} {'layers':>6} {'heads':>5} {'ppl':>8} {'ms':>9} {'':<14} {'MB':>7}"]
    for p in answer.frontier:
        how = "measured" if p["latency_measured"] else f"projected{pm}"
        lines.append(f"{p['width']:>6.3g} {p['depth']:>6.3g} {p['n_layer'] or '':>6} {p['n_head']:>5} {p['ppl']:>8.1f} "
                     f"{p[key]:>9.3f} {how:<14} {p['memory_mb']:>7.1f}{'' if p.get('trained', True) else '  (untrained cut)'}")
    b = answer.best
    if b is None:
        lines.append("nothing in the family fits these budgets on this device: loosen one, or pick a faster device")
    else:
        lines.append(f"best within budget: width {b['width']:g} x depth {b['depth']:.3g} ({b['n_head']} heads, "
                     f"{b['n_layer']} layers): ppl {b['ppl']:.1f}, {b[key]:.3f} ms "
                     f"({'measured' if b['latency_measured'] else 'projected' + pm}), {b['memory_mb']:.1f} MB")
    text = why(answer, choice.name, batch)
    stale = choice.outdated_note() if any(not p["latency_measured"] for p in answer.frontier) else None
    return "\n".join(lines + [t for t in (text, stale) if t])


def grid_markdown(grid: dict) -> str:
    """grid.json as a table: val ppl of every head count (rows) x every depth (columns), * = trained."""
    rows = grid["rows"]
    depths = sorted({r["depth"] for r in rows}, reverse=True)
    by = {(r["width"], r["depth"]): r for r in rows}
    lines = [f"Every (heads, layers) cut of one set of weights, {rows[0]['tokens']:,} val tokens each; * trained as "
             "its own target, the rest never were (Mix'n'Match):", "",
             "| width (heads) | " + " | ".join(f"{by[(1.0, d)]['n_layer']} layers" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for w in sorted({r["width"] for r in rows}, reverse=True):
        cells = [by[(w, d)] for d in depths]
        lines.append(f"| {w:.3g} ({cells[0]['n_head']}) | " + " | ".join(
            f"{c['ppl']:.1f}{'*' if c['trained'] else ''}" for c in cells) + " |")
    return "\n".join(lines)


def format_latency(report: LatencyReport) -> str:
    """Each width's three workloads (time to first token, scoring, decode) with speedups against width 1."""
    n, full = report.prefill_len, report.rows[0]
    static = any(r.decode_static for r in report.rows)
    measures = [(f"TTFT {b}x{n}", f"ttft_b{b}_ms") for b in (1, 8, 32)] + \
               [(f"score {b}x{n}", f"prefill_b{b}_ms") for b in (1, 8, 32)]
    measures = [(label, k) for label, k in measures if full.ms(k)]
    lines = [f"{report.device_name} ({report.threads} threads, torch {report.torch}); TTFT: prefill with the "
             "KV cache keeping the last logits (generation); score: all logits (perplexity)",
             f"{'width':>9} {'FLOP ratio':>10} " + " ".join(f"{label + ' ms':>14} {'speedup':>8}" for label, _ in measures)
             + f" {'decode tok/s':>12}" + (f" {'static tok/s':>12}" if static else "") + f" {'elastic ovh':>11}"]
    for r in report.rows:
        fast = f" {num(r.decode_static.median if r.decode_static else None, '.1f', 12)}" if static else ""
        cells = " ".join(f"{r.ms(k):>14.2f} {full.ms(k) / r.ms(k):>7.2f}x" for _, k in measures)
        lines.append(f"{row_label(r):>9} {full.flops_per_token / r.flops_per_token:>9.2f}x {cells} "
                     f"{r.decode.median:>12.1f}{fast} {overhead_cell(report, r):>11}")
    return "\n".join(lines)


def row_label(r: LatencyRow) -> str:
    return subnet_label({"width": r.width, "depth": r.depth, "n_layer": r.n_layer})


def latency_markdown(report: LatencyReport, title: str) -> str:
    """One row per width: time to first token and scoring at 1 and 8 x n (ms, speedup, speedup over the FLOP
    ratio: 1.0 = as fast as the arithmetic says), decode, elastic overhead. Older files without ttft_* show
    scoring only."""
    n, full = report.prefill_len, report.rows[0]
    kinds = [k for k in ("ttft", "prefill") if full.ms(f"{k}_b1_ms")]
    label = {"ttft": "TTFT", "prefill": "scoring"}
    head = "".join(f" {label[k]} 1x{n} ms | speedup | {label[k]} 8x{n} ms | speedup | {label[k]} speedup / FLOP "
                   f"ratio, 1x / 8x |" for k in kinds)
    lines = [f"**{title}** — {report.device_name}, {report.threads} threads, torch {report.torch}, "
             f"median of {full.timings['prefill_b1_ms'].repeats} interleaved calls", "",
             f"| width | heads / d / FFN | FLOP ratio |{head} decode tok/s | elastic overhead |",
             "|---|---|---|" + "---|" * (5 * len(kinds)) + "---|---|"]
    for r in report.rows:
        ratio = full.flops_per_token / r.flops_per_token
        cells = ""
        for k in kinds:
            t1, t8 = r.ms(f"{k}_b1_ms"), r.ms(f"{k}_b8_ms")
            s1, s8 = full.ms(f"{k}_b1_ms") / t1, full.ms(f"{k}_b8_ms") / t8
            cells += f" {t1:.2f} | {s1:.2f}x | {t8:.2f} | {s8:.2f}x | {s1 / ratio:.2f} / {s8 / ratio:.2f} |"
        lines.append(f"| {row_label(r)} | {r.n_head} / {r.n_embd} / {r.n_inner} | {ratio:.2f}x |{cells} "
                     f"{r.decode.median:.0f} | {overhead_cell(report, r)} |")
    return "\n".join(lines)


def overhead_cell(report: LatencyReport, r: LatencyRow) -> str:
    """The elastic overhead, or what stands in its place: the superseded forward a file timed, or nothing timed."""
    ov = report.elastic_overhead(r)
    if ov is not None:
        return f"{ov:+.1%}"
    return "old forward" if report.elastic_views else "—"


def format_runs(runs: list[Run]) -> str:
    if not runs:
        return "no runs found (looked in cached_runs/ and runs/)"
    lines = [f"{'run':<28} {'kind':<10} {'status':<11} {'widths x depths':<26} val ppl per (width, depth) "
             "(width@d<depth> below full depth)"]
    hints = []
    for r in runs:
        try:
            ev = r.eval() if r.status != "corrupt" else None
        except NMLError:
            ev = None
        ppl = " ".join(f"{subnet_key(x['width'], x.get('depth', 1.0))}:{x['ppl']:.1f}" for x in ev["widths"]) \
            if ev else "-"
        shape = (",".join(f"{w:g}" for w in r.widths) + ("" if r.depths == [1.0] else
                 " x " + ",".join(f"{d:g}" for d in r.depths))) if r.status != "corrupt" else "-"
        state = run_state(r) if r.status != "corrupt" else r.status
        if state == "interrupted":
            hints.append(resume_hint(r))
        lines.append(f"{r.name:<28} {r.kind:<10} {state:<11} {shape:<26} {ppl}")
    return "\n".join(lines + hints)


def format_finetune(results: dict[str, dict]) -> str:
    """start -> final metric (and its curve's last points) of one fine-tuning comparison."""
    lines = []
    for start, r in results.items():
        metric = r["metric"]
        curve = " ".join(f"{c['step']}:{c.get(metric, c.get('test_acc'))}" for c in r["curve"])
        lines.append(f"{r['task']:<7} width {r['width']:g}  {start:<12} {metric} {r['final'][metric]}   curve {curve}")
    return "\n".join(lines)


def format_profile(prof: DeviceProfile) -> str:
    top = max(r for _, r in prof.matmul_fp32)
    (f0, r0), pre, dec = prof.matmul_fp32[0], prof.prefill, prof.decode
    return "\n".join([
        f"{prof.device_name} ({prof.device_key}, torch {prof.torch or '?'}), measured in {prof.profile_s} s",
        f"host per forward: {pre.fixed_us:.0f} us + {pre.per_layer_us:.0f} us/layer ({prof.ops_per_layer} ops/layer, "
        f"{num(prof.op_overhead_us, '.2f')} us/op); per generated token: {dec.fixed_us:.0f} us + "
        f"{dec.per_layer_us:.0f} us/layer",
        f"matmul fp32: {r0:.1f} GFLOP/s at {f0:.0e} FLOPs up to {top:.0f} GFLOP/s; copy bandwidth "
        f"{prof.bandwidth_gbs:.1f} GB/s"]
        + ([f"bf16 autocast: {p['speedup']:.2f}x fp32 on {p['workload']} ({p['fp32_ms']:.0f} vs {p['bf16_ms']:.0f} ms)"]
           if (p := prof.bf16_probe) else []))


def student_card(run: Run, spec: WidthSpec, cfg: GPT2Config, depth: float = 1.0, layers=None) -> str:
    c = cost(cfg)
    row = subnet_row(run, spec.width, depth)
    metrics = (f"| val ppl | {row['ppl']:.2f} |\n| top-1 acc | {row['acc']:.3f} |\n| agreement with teacher | "
               f"{num(row.get('agree'))} |\n| tokens scored | {row['tokens']:,} |\n" if row else
               "| metrics | not evaluated at this width and depth |\n")
    data = run.info.get("data", {})
    kept = f", keeping the teacher's layers {list(layers)} (ranked by {run.info.get('layer_ranking', {}).get('criterion', 'prefix')})" \
        if layers else ""
    return f"""# Nested student of {run.info.get('teacher', {}).get('label', '?')} — width {spec.width:g}{f', depth {depth:.3g}' if depth != 1 else ''}

A stock `GPT2LMHeadModel` extracted from the NML run `{run.name}` (nested axes: {', '.join(run.axes)}{kept}):
{cfg.n_layer} layers, {cfg.n_head} heads, n_embd {cfg.n_embd}, n_inner {cfg.n_inner}, {c['params'] / 1e6:.2f}M parameters,
{c['flops_per_token'] / 1e6:.1f} MFLOP/token. Load it with plain transformers:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("path/to/this/dir")
```

Trained on: {data.get('source', '?')} ({data.get('split', '?')}).

| metric (validation split) | value |
|---|---|
{metrics}"""


def write_run_card(run_path) -> Path:
    """README.md in the run dir: what was trained on what, how long, and the headline table."""
    run = load_run(run_path, require_model=False)
    info, ev = run.info, run.eval() or {}
    lat = run.latency().get(default_latency_key(run))
    data = info.get("data", {})
    hp = info.get("hparams", {})
    lines = [f"# {run.name}", "", f"**{info.get('label', run.kind)}**", "",
             f"- kind: {run.kind}; status: {run.status}",
             f"- teacher: {info.get('teacher', {}).get('label') or 'trained from scratch'}",
             *([f"- teacher assistant (the nested model's starting weights, MatTA): {info['ta']['label']} "
                f"({info['ta']['shape_label']}" + (", larger than its teacher" if info['ta'].get('larger_than_teacher')
                                                   else "") + ")"] if info.get("ta") else []),
             f"- tokenizer: {info.get('tokenizer', 'the teacher tokenizer (GPT-2 BPE)')}",
             f"- data: {data.get('source', '?')}; split: {data.get('split', '?')}"
             + (f"; held-out files: {', '.join(data['val_files'])}" if data.get("val_files") else ""),
             f"- tokens: {data.get('train_tokens', '?')} train / {data.get('val_tokens', '?')} val",
             f"- widths {', '.join(f'{w:g}' for w in run.widths)}; nested axes {', '.join(run.axes)}"
             + (f"; depths {', '.join(f'{d:.3g}' for d in run.depths)} (every width at every depth, jointly; layers "
                f"ranked by {info['layer_ranking']['criterion']}, most important first: {run.layer_rank})"
                if run.depths != [1.0] else ""),
             f"- steps {hp.get('steps')} x batch {hp.get('batch_size')} x ctx {hp.get('ctx')}; lr {hp.get('lr')}; "
             f"alpha {hp.get('alpha')}; T {hp.get('temperature')}; strategy {hp.get('strategy')}; "
             f"KD source {hp.get('kd_source')}; seed {hp.get('seed')}",
             f"- wall time {info.get('train_time_s', '?')} s on {info.get('device', '?')}"
             + (f" ({trained_on})" if (trained_on := info.get("device_name") or info.get("build", {}).get("device_name"))
                else "") + f"; versions {info.get('versions')}"]  # where it trained, not where it was benched
    if info.get("build"):
        b = info["build"]
        lines.append(f"- built with `scripts/build_cached_runs.py`, {b['profile']} profile, on {b['device_name']} "
                     f"({b['device']}{', ' + str(b['threads']) + ' threads' if b['device'] == 'cpu' else ''}): "
                     f"{b['stage_s']:.0f} s for this stage, {b['built']}")
    if info.get("weights_note"):
        lines.append(f"- {info['weights_note']}")
    lines.append("")
    if ev:
        n = lat.prefill_len if lat else 128
        lines += [f"Evaluation: {ev.get('protocol')}; latency: {lat.device_name + ', ' + str(lat.threads) + ' threads' if lat else 'not measured'}.", "",
                  f"| model | width (x layers) | params | MFLOP/token | val ppl | train / val CE | top-1 acc | agreement | time to "
                  f"first token 1x{n} / 8x{n} ms | scoring 1x{n} / 8x{n} ms | decode tok/s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in run_points(run):
            lines.append(f"| {p['group']} | {subnet_label(p)} | {p['params'] / 1e6:.2f}M | {p['flops_per_token'] / 1e6:.1f} | "
                         f"{p['ppl']:.2f} | {num(p.get('train_nll'))} / {num(p.get('nll'))} | {p['acc']:.3f} | "
                         f"{num(p.get('agree'))} | "
                         f"{num(p.get('ttft_b1_ms'), '.1f')} / {num(p.get('ttft_b8_ms'), '.1f')} | "
                         f"{num(p.get('prefill_b1_ms'), '.1f')} / {num(p.get('prefill_b8_ms'), '.1f')} | "
                         f"{num(p.get('decode_tok_s'), '.1f')} |")
        if lat and not any(p.get("ttft_b1_ms") for p in run_points(run)):
            lines += ["", "This latency file predates the time-to-first-token measure (scoring and decode only)."]
        if "unigram_ppl" in ev:
            lines += ["", f"Unigram (add-one) baseline perplexity on the same split: {ev['unigram_ppl']:.1f}."]
    if run.grid():
        lines += ["", grid_markdown(run.grid())]
    path = run.path / "README.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def naive_lesson(run) -> str | None:
    """NML's lesson in one line, from a nested run's own eval.json: at its smallest width, the naive slice of the
    teacher against the nested student after the run's training time; None before both are scored."""
    ev = run.eval() or {}
    naive = {(r["width"], r.get("depth", 1.0)): r for r in ev.get("baselines", {}).get("naive", [])}
    rows = [r for r in ev.get("widths", []) if (r["width"], r.get("depth", 1.0)) in naive]
    if not rows:
        return None
    r = min(rows, key=lambda r: (r["width"], r.get("depth", 1.0)))
    cut = naive[(r["width"], r.get("depth", 1.0))]
    took = run.info.get("train_time_s")
    return (f"width {subnet_label(r)}: naive slice {cut['ppl']:,.0f} → NML {r['ppl']:,.0f} perplexity"
            + (f" after {took:.0f} s of training" if took else "")
            + f" ({cut['ppl'] / r['ppl']:.1f}x lower; teacher {ev['teacher']['ppl']:,.1f})")
