"""The run-derived tables and numbers of README.md and BENCHMARKS.md, rendered from the shipped runs' own files
(eval.json, latency/*.json, finetune/, run.json, device_profiles/whatif_error.json) between markers:

    <!-- nml:begin NAME -->
    ... rendered, never typed by hand ...
    <!-- nml:end NAME -->

`python -m nml_core render-docs` rewrites every block; `--check` only says which blocks differ from what the
files say (tests/test_docs.py keeps them agreeing). The model cards come from the same files (report.py).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from .analysis.finetune_results import finetune_table, load_results, summarize
from .analysis.pareto import student_shape
from .errors import NMLError
from .files import atomic_write_bytes
from .nesting.depth import subnet_key
from .store.runs import load_run
from .report import num

BLOCK = re.compile(r"(<!-- nml:begin (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- nml:end (?P=name) -->)", re.S)
FRACTIONS = {1.0: "1", 0.5: "1/2", 0.25: "1/4", 0.125: "1/8"}


def _run(root: Path, name: str):
    return load_run(root / name, require_model=False)


DEFAULT_RUN = "shakespeare-nml-depth"  # the weight-bearing NML run: every width at depths 1 and 1/2
WIDTH_ONLY_RUN = "shakespeare-nml"  # the same widths nested without depth: figures only, for comparison


def _depth1(rows: list[dict]) -> dict[float, dict]:
    return {r["width"]: r for r in rows if r.get("depth", 1.0) == 1.0}


def headline(root: Path) -> str:
    """README's headline: every width at depth 1 of the default NML run against its baselines, the same widths
    nested without depth, and the FFN-only run (eval.json)."""
    ev = _run(root, DEFAULT_RUN).eval()
    width_only, ffn = _depth1(_run(root, WIDTH_ONLY_RUN).eval()["widths"]), _depth1(_run(root, "shakespeare-nml-ffn").eval()["widths"])
    unigram = _run(root, "shakespeare-teacher").eval()["unigram_ppl"]
    base = {g: _depth1(rows) for g, rows in ev.get("baselines", {}).items()}
    t = ev["teacher"]
    lines = [f"Headline ({t['tokens']:,} held-out tokens scored; teacher ppl {t['ppl']:.2f}, a unigram model "
             f"{unigram:.1f}; every student at full depth; *doc 1–16* is the NLL of the first 16 tokens of each "
             "validation document scored right after its `<|endoftext|>`, *rest* every other token, both in nats):", "",
             "| width | params | NML (one run, width x depth) | naive slice | independent KD (one run per width) | "
             "NML / indep. | NML without depth nesting | FFN-only NML (MatFormer) | NML doc 1–16 / rest |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| teacher | {t['params'] / 1e6:.2f}M | {t['ppl']:.2f} | — | — | — | — | — | "
             f"{t['doc_start_nll']:.2f} / {t['rest_nll']:.2f} |"]
    for w, r in _depth1(ev["widths"]).items():
        ind, f = base.get("independent", {}).get(w), ffn.get(w)
        ratio = f"{r['ppl'] / ind['ppl']:.3f}" if ind else "—"
        ffn_cell = f"{f['ppl']:.2f} ({f['params'] / 1e6:.2f}M)" if f else "—"
        lines.append(f"| {FRACTIONS.get(w, f'{w:g}')} | {r['params'] / 1e6:.2f}M | {r['ppl']:.2f} | "
                     f"{_ppl(base.get('naive', {}).get(w))} | {_ppl(ind)} | {ratio} | {_ppl(width_only.get(w))} | "
                     f"{ffn_cell} | {r['doc_start_nll']:.2f} / {r['rest_nll']:.2f} |")
    one = ev["widths"][0]
    lines += ["", f"The width-1 student is not sacrificed: {one['ppl']:.2f} against the teacher's {t['ppl']:.2f} "
                  f"({one['ppl'] / t['ppl'] - 1:+.1%}). The teacher pays {t['doc_start_nll']:.2f} nats on the first "
                  f"16 tokens of a held-out document against {t['rest_nll']:.2f} for the rest (a scene opens with "
                  "predictable headings)."]
    return "\n".join(lines)


def train_vs_val(root: Path) -> str:
    """Train CE against val CE per width on one scale (eval.json: the same protocol on both splits), and what
    metrics.jsonl's last row logged (older runs logged only the optimised KD + CE loss, not CE)."""
    run = _run(root, DEFAULT_RUN)
    ev, last = run.eval(), (run.metrics() or [{}])[-1]
    rows = [("teacher", ev["teacher"])] + [(f"NML {subnet_key(r['width'], r.get('depth', 1.0))}", r) for r in ev["widths"]]
    if not all("train_nll" in r for _, r in rows):
        return "The evaluation of this run has no train CE yet (`python -m nml_core eval` adds it)."
    lines = ["| model | train CE | val CE | val - train | last logged train loss (KD + CE, what was optimised) |",
             "|---|---|---|---|---|"]
    for name, r in rows:
        logged = last.get("loss", {}).get(subnet_key(r.get("width", 1.0), r.get("depth", 1.0))) \
            if name != "teacher" else None
        lines.append(f"| {name} | {r['train_nll']:.3f} | {r['nll']:.3f} | {r['nll'] - r['train_nll']:+.3f} | "
                     f"{'—' if logged is None else f'{logged:.3f}'} |")
    return "\n".join(lines) + (f"\n\nnats per token; train CE on {rows[0][1]['train_tokens']:,} train tokens, val CE on "
                               f"{rows[0][1]['tokens']:,} held-out tokens.")


def data_and_weights(root: Path) -> str:
    """The embedded data's documents and tokens (the teacher's data/data.json: the family shares its token
    files) and the shipped weights' bytes on disk."""
    d = json.loads((root / "shakespeare-teacher" / "data" / "data.json").read_text())
    return (f"{d['documents']['train']} train / {d['documents']['val']} validation documents in "
            f"{d['train_tokens']:,} / {d['val_tokens']:,} tokens (`data/data.json`); the shipped weights (fp16 "
            f"safetensors, loaded and computed in fp32) total {shipped_weights_mb(root):.1f} MB of a "
            f"{WEIGHTS_BUDGET_MB} MB budget, every shipped file {shipped_mb(root):.1f} MB.")


KEEP_WEIGHTS = "python scripts/build_cached_runs.py --profile gpu --parallel --keep-weights --out <a new folder>"
WEIGHTS_BUDGET_MB = 75  # the shipped weights (two 6L/256d models in fp16), so that the tree stays under 80 MB


def shipped_weights_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*.safetensors") if p.parent.name == "model") / 1e6


def shipped_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def _ppl(row: dict | None) -> str:
    return f"{row['ppl']:.2f}" if row else "—"


def build_cost(root: Path) -> str:
    """The build's stage times, as each run's run.json `build` recorded them (the training loop's own time for
    the baselines)."""
    runs = {"teacher": "shakespeare-teacher", "NML width x depth": DEFAULT_RUN, "NML width only": WIDTH_ONLY_RUN,
            "FFN-only": "shakespeare-nml-ffn", "MatTA": "shakespeare-matta", "plain NML in the TA": "shakespeare-matta-plain"}
    parts = {k: _run(root, n) for k, n in runs.items() if (root / n / "run.json").exists()}
    times = {k: r.info.get("train_time_s") or r.info.get("build", {}).get("stage_s") for k, r in parts.items()}
    indep = [b.info.get("train_time_s") for b in parts["NML width x depth"].baselines() if b.kind == "independent"]
    b = parts["NML width x depth"].info.get("build", {})
    total = sum(t for t in times.values() if t) + sum(t for t in indep if t)
    return (f"Build cost (each run's training time, `run.json`; {b.get('profile')} profile on {b.get('device_name')}"
            f"{', the runs after the teacher trained at once on it (--parallel)' if b.get('device') == 'cuda' else ''}"
            "): " + ", ".join(f"{k} {t:.0f} s" for k, t in times.items() if t) +
            f", the {len(indep)} independent students {sum(t for t in indep if t):.0f} s: {total / 60:.0f} min of "
            "training in all (evaluation and latency are not timed in the files).")


def matta(root: Path) -> str:
    """MatTA against plain NML at equal steps (when built) and the default NML run, by student shape (eval.json)."""
    m, nml = _run(root, "shakespeare-matta").eval(), _run(root, DEFAULT_RUN).eval()
    plain = _run(root, "shakespeare-matta-plain").eval() if (root / "shakespeare-matta-plain" / "run.json").exists() else None
    by_shape = lambda rows: {student_shape(r): r for r in rows}  # noqa: E731
    plain_rows = by_shape(plain["widths"]) if plain else {}
    nml_rows, indep = by_shape(nml["widths"]), by_shape(nml["baselines"]["independent"])
    lines = [f"teacher (frozen, MatTA's KD source): ppl {m['teacher']['ppl']:.2f}; "
             + (f"TA init (plain NML's frozen teacher): ppl {plain['teacher']['ppl']:.2f}; " if plain else
                "plain NML in a copy of the TA: not built for this teacher (`--stages matta` builds it); ")
             + f"{m['teacher']['tokens']:,} held-out tokens scored", "",
             "| TA width | shape | params | MatTA | plain NML in a copy of the TA init | MatTA / plain | "
             "NML nested in the teacher (shipped) | independent KD |", "|---|---|---|---|---|---|---|---|"]
    for r in m["widths"]:
        s = student_shape(r)
        p, n, i = plain_rows.get(s), nml_rows.get(s), indep.get(s)
        ratio = f"{r['ppl'] / p['ppl']:.3f}" if p else "—"
        lines.append(f"| {r['width']:g} | {r['n_embd']}d/{r['n_head']}h/{r['n_inner']}f | {r['params'] / 1e6:.2f}M | "
                     f"{r['ppl']:.2f} | {_ppl(p)} | {ratio} | {_ppl(n)} | {_ppl(i)} |")
    lines += ["", _verdict("MatTA", "the students nested in the teacher", m["widths"], nml_rows),
              _verdict("MatTA", "independent KD", m["widths"], indep)]
    if plain:
        lines.append(_verdict("MatTA", "plain NML in a copy of the TA at equal steps", m["widths"], plain_rows))
    return "\n".join(lines)


def _verdict(name: str, other: str, rows: list[dict], by_shape: dict) -> str:
    """One sentence from a table's own figures: how `rows` compare with `other` at each shape both have."""
    pairs = [(r, by_shape[student_shape(r)]) for r in rows if student_shape(r) in by_shape]
    if not pairs:
        return f"- {name} against {other}: no shape in common."
    change = [r["ppl"] / o["ppl"] - 1 for r, o in pairs]
    word = "better" if all(c < 0 for c in change) else "worse" if all(c > 0 for c in change) else "mixed"
    return (f"- {name} against {other}: {word} at the {len(pairs)} shared shapes ("
            + ", ".join(f"{c:+.1%}" for c in change) + " in perplexity).")


def finetune(root: Path, task: str) -> str:
    """Mean ± std over seeds per start and width, what each start had read, and NML against independent KD."""
    results = load_results(root / DEFAULT_RUN, task)
    if not results:
        return (f"No {task} results for {DEFAULT_RUN} yet: the comparison needs the independent students' weights, "
                f"which do not ship; a full build into a new folder runs it (`{KEEP_WEIGHTS}`, its finetune stage).")
    rows = summarize(results)
    info = next(iter(results.values()))["info"]
    lines = [finetune_table(results), "", f"Split: {info.get('split')}" +
             (f"; test works {', '.join(info['test_works'])}" if info.get("test_works") else "") + "."]
    higher = rows[0].metric == "test_acc"
    for w in sorted({r.width for r in rows}, reverse=True):
        got = {r.start: r for r in rows if r.width == w}
        if "nml" in got and "independent" in got:
            n, i = got["nml"], got["independent"]
            better = (n.mean > i.mean) == higher
            apart = abs(n.mean - i.mean) > n.std + i.std
            lines.append(f"- width {w:g}: NML {n.cell()} vs independent KD {i.cell()}: NML is "
                         f"{'better' if better else 'worse'}" + ("" if apart else ", within one standard deviation of each other"))
    saw = {r.start: r.saw for r in rows}
    lines += ["", "What each start had read before fine-tuning:"] + [f"- {s}: {t}" for s, t in saw.items()]
    return "\n".join(lines)


def latency(root: Path, key: str) -> str:
    """A shipped latency file of the NML run: the three workloads per width (bench/student_speedup format)."""
    from .report import latency_markdown
    from .store.latency_report import LatencyReport
    path = root / "shakespeare-nml" / "latency" / f"{key}.json"
    return latency_markdown(LatencyReport.from_json(json.loads(path.read_text()), str(path)),
                            "shakespeare-nml (extracted students)")


def whatif_error(root: Path) -> str:
    """The what-if's measured error per device and overall (device_profiles/whatif_error.json)."""
    err = json.loads((root / "device_profiles" / "whatif_error.json").read_text())
    lines = ["| device | measure | median error | worst | measurements |", "|---|---|---|---|---|"]
    for d, measures in err.get("by_device_measure", {}).items():
        lines += [f"| {d} | {m} | {s['median']:.0%} | {s['worst']:.0%} | {s['n']} |" for m, s in measures.items()]
    lines += [f"| {d} | all | {s['median']:.0%} | {s['worst']:.0%} | {s['n']} |" for d, s in err["by_device"].items()]
    a = err["all"]
    lines += ["", f"**what-if error: median {a['median']:.0%}, worst {a['worst']:.0%} over {a['n']} measurements** "
                  f"(`{err.get('command', 'python -m bench.whatif_accuracy --write')}`)"]
    if err.get("worst"):
        lines += ["", "The worst five:", "", "| run | device | width x depth | measure | measured ms | projected ms | "
                  "error |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['device']} | {r['width']:g} x {r['depth']:g} | {r['measure']} | "
                  f"{r['measured']:.2f} | {r['projected']:.2f} | {r['error']:+.0%} |" for r in err["worst"]]
    from .analysis.profile import outdated
    from .analysis.device_profile import load_profiles
    stale = {key: what for key, p in sorted(load_profiles(root).items()) if (what := outdated(p))}
    if stale:
        lines += ["", "Shipped profiles measured before parts the projection now reads (those parts fall back to "
                  "coarser figures; `python -m nml_core profile-device` on that device measures them):", ""]
        lines += [f"- {key}: {'; '.join(what)}" for key, what in stale.items()]
    return "\n".join(lines)


def head_rates(root: Path) -> str:
    """Each CPU profile's measured rate of the scoring LM head by inner dim at 128 and 1024 rows (head_fp32,
    head_b8_fp32), beside the rate its size-indexed matmul table gives the same FLOPs (charged before those fields),
    and the head over one position read by inner dim, re-read (gemv_by_k) and cold (gemv_cold_by_k)."""
    from .analysis.device_profile import HEAD_ROWS, load_profiles
    from .analysis.profile import GPT2_VOCAB
    from .analysis.whatif import rate_gflops
    profiles = {k: p for k, p in load_profiles(root).items() if p.head_fp32}
    if not profiles:
        return "No shipped profile measures the LM head yet (`python -m nml_core profile-device`)."
    ks = [k for k, _ in next(iter(profiles.values())).head_fp32]
    lines = [f"| profile | rows | {' | '.join(f'K = {k}' for k in ks)} |", "|---|---|" + "---|" * len(ks)]
    for key, p in sorted(profiles.items()):
        for rows, table in ((HEAD_ROWS, p.head_fp32), (8 * HEAD_ROWS, p.head_b8_fp32)):
            lines += [f"| {key} | {rows} | " + " | ".join(
                f"{r:.0f} ({rate_gflops(p, 2 * rows * k * GPT2_VOCAB):.0f})" for k, r in table) + " |"] if table else []
    lines += ["", "The LM head over one position, (1 x K) @ (K x 50257): GB/s of weight read, re-read call after call as a "
              "generated token re-reads it (`gemv_by_k`) / cold, on the next of several copies, as a prefill's last "
              "position reads it (`gemv_cold_by_k`); in brackets the one cold rate at K = 256 that both were read at "
              "before (`gemv_gbs`):", "",
              f"| profile | {' | '.join(f'K = {k}' for k in ks)} | (gemv_gbs) |", "|---|" + "---|" * (len(ks) + 1)]
    for key, p in sorted(profiles.items()):
        if p.gemv_by_k:
            cold = dict(p.gemv_cold_by_k or [])
            lines.append(f"| {key} | " + " | ".join(f"{r:.1f} / {cold[k]:.1f}" if k in cold else f"{r:.1f} / —"
                                                     for k, r in p.gemv_by_k) + f" | ({p.gemv_gbs:.1f}) |")
    return "\n".join(lines)


def depth_family(root: Path) -> str:
    """The width x depth run against its baselines at equal steps (eval.json): the targets of depth nesting."""
    run = _run(root, DEFAULT_RUN)
    ev = run.eval()
    t = ev["teacher"]
    base = {g: {(r["width"], r.get("depth", 1.0)): r for r in rows} for g, rows in ev.get("baselines", {}).items()}
    lines = [f"{ev['widths'][0]['tokens']:,} held-out tokens scored; teacher ppl {t['ppl']:.2f}; layers ranked by "
             f"{run.info['layer_ranking']['criterion']} (kept at depth 1/2: "
             f"{run.info['layer_ranking']['kept'].get('0.5')}).", "",
             "| width x depth | layers | params | NML (one run, every pair) | independent KD | NML / indep. | "
             "naive slice / layer drop | naive / NML |", "|---|---|---|---|---|---|---|---|"]
    for r in ev["widths"]:
        key = (r["width"], r.get("depth", 1.0))
        ind, nv = base.get("independent", {}).get(key), base.get("naive", {}).get(key)
        shape = f"{FRACTIONS.get(key[0], f'{key[0]:g}')} x {FRACTIONS.get(key[1], f'{key[1]:.3g}')}"
        vs_indep = f"{r['ppl'] / ind['ppl']:.3f}" if ind else "—"
        naive_x = f"{nv['ppl'] / r['ppl']:.1f}x" if nv else "—"
        lines.append(f"| {shape} | {r['n_layer']} | {r['params'] / 1e6:.2f}M | {r['ppl']:.2f} | {_ppl(ind)} | "
                     f"{vs_indep} | {_ppl(nv)} | {naive_x} |")
    one = ev["widths"][0]
    ranking = run.info["layer_ranking"]
    k = len(ranking["kept"].get("0.5", []))
    why = [f"{name} {sum(c['loss'].values()) / len(c['loss']):.3f} (keeps {sorted(c['rank'][:k])})"
           for name, c in ranking["candidates"].items()]
    lines += ["", f"(1, 1) against the teacher: {one['ppl']:.2f} vs {t['ppl']:.2f} ({one['ppl'] / t['ppl'] - 1:+.1%}). "
              f"Why this layer ranking: the calibration loss of each candidate's naive layer drop at the nested depths "
              f"(full model {ranking['full_loss']:.3f}): {', '.join(why)}; the lowest wins (ties: the order listed)."]
    return "\n".join(lines)


def depth_grid(root: Path) -> str:
    """Val perplexity of every head count x every depth of the width x depth run (grid.json), * = trained."""
    from .report import grid_markdown
    return grid_markdown(_run(root, DEFAULT_RUN).grid())


def depth_speed(root: Path) -> str:
    """Which axis pays where: this CPU's measured speed-up of half width and half depth (the depth run's latency
    files), beside the H100 preset's projection at batch 1."""
    from .analysis.device_profile import load_profiles
    from .analysis.presets import PRESETS, preset_base, preset_profile
    from .analysis.whatif import project
    from .nesting.depth import subnet_dims
    from .store.models import run_config
    run = _run(root, DEFAULT_RUN)
    lines = ["| device | measure | (1, 1) | width 1/2 | depth 1/2 | width 1/2 speed-up | depth 1/2 speed-up |",
             "|---|---|---|---|---|---|---|"]
    for key, lat in sorted(run.latency().items()):
        full, w, d = lat.row(1.0, 1.0), lat.row(0.5, 1.0), lat.row(1.0, 0.5)
        for m in ("ttft_b1_ms", "ttft_b8_ms", "decode_ms"):
            f, a, b = (x.ms(m) for x in (full, w, d))
            lines.append(f"| {key} (measured) | {m.replace('_ms', '') if m != 'decode_ms' else 'decode ms/token'} | "
                         f"{f:.2f} | {a:.2f} | {b:.2f} | {f / a:.2f}x | {f / b:.2f}x |")
    base = preset_base(load_profiles(root))
    cfg = run_config(run)
    for name in [n for n in PRESETS if "H100" in n]:
        prof = preset_profile(name, base)
        proj = {s: project(prof, cfg, subnet_dims(cfg, run.axes, *s), batches=(1,)) for s in
                ((1.0, 1.0), (0.5, 1.0), (1.0, 0.5))}
        for m in ("ttft_b1_ms", "decode_ms"):
            f, a, b = (proj[s][m] for s in ((1.0, 1.0), (0.5, 1.0), (1.0, 0.5)))
            lines.append(f"| {prof.device_name} (preset, projected) | {m.replace('_ms', '')} | {f:.2f} | {a:.2f} | "
                         f"{b:.2f} | {f / a:.2f}x | {f / b:.2f}x |")
    return "\n".join(lines)


APP_TIMINGS = {"first_paint_s": ("cold start → first paint (Home title visible)", "< 5 s", 5.0),
               "home_ready_s": ("cold start → Home fully drawn (matrix picture, runs table)", "—", None),
               "width_switch_s": ("width-slider switch (key press → new figures shown)", '"instant" (< 0.5 s)', 0.5),
               "compare_s": ("Compare: teacher + 2 students, 32 sampled tokens each, with diagnostics", "—", None),
               "pareto_warm_s": ("Pareto page, second visit → chart drawn (every shipped run, the 48-student grid "
                                 "included)", "< 3 s", 3.0)}


def app_timings(repo: Path) -> str:
    """The app's timings in a real browser (bench/results/app_timings.json, written by bench.app_timings --json)."""
    res = json.loads((repo / "bench" / "results" / "app_timings.json").read_text())
    lines = [f"{len(res['repeats'])} cold starts.", "", "| timing | median | min–max | target |", "|---|---|---|---|"]
    for key, s in res["summary"].items():
        label, target, limit = APP_TIMINGS.get(key, (key, "—", None))
        verdict = "" if limit is None else (" — meets" if s["median"] < limit else " — misses")
        lines.append(f"| {label} | {s['median']:.2f} s | {s['min']:.2f}–{s['max']:.2f} s | {target}{verdict} |")
    return "\n".join(lines)


DEMO_TARGETS = {"wall_min": 3.5, "ratio": 5.0, "estimate_error": 0.25}  # the classroom demo's targets


def cold_head_report(res: dict) -> str:
    """bench.cold_head's results: each shape's batch-1 time to first token with its weights cold and hot."""
    dev = res["device"]
    lines = [f"{dev['device_name']} ({dev['threads']} threads), {res['run']}, {res['repeats']} rounds "
             f"(`{res['command']}`):", "",
             "| width x depth | LM head K | head weight MB | cold ms | hot ms | cold - hot ms | the what-if's head, "
             "cold - re-read ms |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['width']:g} x {r['depth']:g} | {r['head_k']} | {r['head_mb']:.1f} | {r['cold_ms']:.2f} | "
              f"{r['hot_ms']:.2f} | {r['cold_ms'] - r['hot_ms']:+.2f} | {num(r.get('projected_head_gap_ms'), '+.2f')} |"
              for r in res["rows"]]
    return "\n".join(lines)


def demo_timing_report(res: dict) -> str:
    """bench.demo_timing's results: each way of starting the demo, its wall time against the Estimate, and the
    lesson's figures, each against its target."""
    est, dev, rec = res["estimate"]["minutes"], res["device"], res["recipe"]
    ways = [(how, label, res[how]) for how, label in (("standalone", "the job alone"),
                                                      ("browser", "a click in the app (Chromium + Streamlit)")) if how in res]
    meets = lambda ok: "meets" if ok else "misses"  # noqa: E731
    lines = [f"{dev['device_name']} ({dev['threads']} threads), recipe: widths {rec['widths']}, {rec['steps']} steps "
             f"x batch {rec['batch_size']}, lr {rec['lr']}, alpha {rec['alpha']}, T {rec['temperature']}; eval on {rec['eval_tokens']:,} tokens, "
             f"bench {rec['bench_repeats']} repeats. Estimate (the Train page's, all included): **{est:.2f} min**.", "",
             f"| started from | wall time, start to card (target ≤ {DEMO_TARGETS['wall_min']} min) | Estimate error "
             f"(target ≤ {DEMO_TARGETS['estimate_error']:.0%}) | training loop | width {ways[0][2]['small_width']:g}: naive "
             f"slice → NML (target ≥ {DEMO_TARGETS['ratio']:g}x) | width 1 / teacher ppl |", "|---|---|---|---|---|---|"]
    for _, label, r in ways:
        ratio, err = r["naive_ppl"] / r["nml_ppl"], est / r["wall_min"] - 1
        lines.append(f"| {label} | {r['wall_min']:.2f} min — {meets(r['wall_min'] <= DEMO_TARGETS['wall_min'])} | "
                     f"{err:+.0%} — {meets(abs(err) <= DEMO_TARGETS['estimate_error'])} | {r['train_s']:.0f} s | "
                     f"{r['naive_ppl']:,.0f} → {r['nml_ppl']:,.0f} ({ratio:.1f}x) — {meets(ratio >= DEMO_TARGETS['ratio'])} | "
                     f"{r['width1_ppl']:.1f} / {r['teacher_ppl']:.1f} |")
    if "app_cpu_s" in res.get("browser", {}):
        b, n = res["browser"], res["device"]["threads"]
        lines += ["", f"While the job ran from the app, the Streamlit server and Chromium used {b['app_cpu_s']:.0f} CPU "
                      f"seconds of the {n * 60 * b['wall_min']:.0f} its {n} cores had ({b['app_cpu_s'] / (n * 60 * b['wall_min']):.0%}): "
                      f"time the job's {n} threads did not get."]
    return "\n".join(lines)


def nested_step_report(res: dict) -> str:
    """bench.nested_step --precision's results (one dict; bench/results/nested_step-*.json) as the table and lines
    BENCHMARKS shows: each step per precision, the nested step against its FLOP-proportional time, what the
    compiled loss buys over the eager chunks, and the toy runs' losses."""
    precs, med = list(res["precisions"]), {p: r["median_s"] for p, r in res["precisions"].items()}
    first = precs[0]
    lines = [f"{res['shape']} shape, batch {res['batch']}x{res['ctx']}, {res['cpu']}, {res['device']}, torch "
             f"{res['torch']}; median of {res['rounds']} processes per precision (each the median of {res['repeats']} "
             f"steps), interleaved (`{res['command']}`)", "",
             "| step | " + " | ".join(f"{p} s" for p in precs) + " | " + " | ".join(f"{first} / {p}" for p in precs[1:])
             + " |", "|---|" + "---|" * (2 * len(precs) - 1)]
    for k in med[first]:
        lines.append(f"| {k} | " + " | ".join(f"{med[p][k]:.3f}" for p in precs) + " | " +
                     " | ".join(f"{med[first][k] / med[p][k]:.2f}x" for p in precs[1:]) + " |")
    lines.append("")
    for p, r in res["precisions"].items():
        m, floor = med[p], r.get("kd_loss_floor_s")
        lines.append(f"- {p}: nested step {m['nested']:.3f} s = **{r['nested_over_flop_proportional']:.2f}x** its "
                     f"FLOP-proportional time ({r['flop_proportional_s']:.3f} s; target <= 1.3x: "
                     f"{'met' if r['nested_over_flop_proportional'] <= 1.3 else 'missed'}); compiled loss vs eager "
                     f"chunks: one width {m['kd_loss_one_width_eager']:.3f} -> {m['kd_loss_one_width']:.3f} s "
                     f"({m['kd_loss_one_width_eager'] / m['kd_loss_one_width']:.2f}x), nested step "
                     f"{m['nested_eager_loss']:.3f} -> {m['nested']:.3f} s ({m['nested_eager_loss'] / m['nested']:.2f}x); "
                     f"one width's loss moves {r['kd_loss_bytes_mb']:.0f} MB" +
                     (f", {m['kd_loss_one_width'] / floor:.1f}x its memory floor ({floor:.3f} s)" if floor else ""))
    toy = {**{f"{p}, compiled loss": v for p, v in res["toy"].items()},
           **{f"{p}, eager loss": v for p, v in res["toy_eager"].items()}}
    lines.append("- 50 toy steps (2L/64d, same seed and data), final loss per width: " + "; ".join(
        f"{name}: " + ", ".join(f"{w} {v:.4f}" for w, v in losses.items()) for name, losses in toy.items()))
    base = toy[f"{first}, compiled loss"]
    for name, losses in toy.items():
        if name != f"{first}, compiled loss":
            worst = max(abs(losses[w] / base[w] - 1) for w in losses)
            lines.append(f"- {name} vs {first}, compiled loss: largest relative difference {worst:.2%} "
                         f"({'within' if worst <= 0.01 else 'outside'} 1%)")
    return "\n".join(lines)


def graph_step_report(res: dict) -> str:
    """bench.nested_step --compile's results: the one-graph step's time to its first step with a cold and a warm
    compile cache, and its ms per step against the eager step's."""
    lines = [f"{res['shape']} shape, batch {res['batch']}x{res['ctx']}, {res['cpu']}, {res['device']}, "
             f"{res['threads']} threads, torch {res['torch']}, widths {', '.join(f'{w:g}' for w in res['cold']['widths'])} "
             f"(`{res['command']}`)", "",
             "| compile cache | first step (compile included) | compiled step | eager step | eager / compiled |",
             "|---|---|---|---|---|"]
    for name in ("cold", "warm"):
        r = res[name]
        lines.append(f"| {name} | {r['first_step_s']:.1f} s | {r['step_ms']:.0f} ms | {r['eager_step_ms']:.0f} ms | "
                     f"{r['eager_step_ms'] / r['step_ms']:.2f}x |")
    r = res["warm"]
    if "compiled_launches" in r:
        work = "kernel launches" if res["device"] == "cuda" else "work ops (a CPU's proxy for a GPU's launches)"
        lines += ["", f"- {work} per step: eager {r['eager_launches']:,}, compiled {r['compiled_launches']:,}"
                      + (f", CUDA-graphed {r['graphed_launches']:,}" if "graphed_launches" in r else ""),
                  f"- all-student MFU (each student's 6 N tokens and the teacher's 2 N tokens over the step time and "
                  f"the measured {r['precision']} matmul rate, {r['matmul_tflops']:.2f} TFLOP/s): eager "
                  f"{r['eager_mfu']:.1%}, compiled {r['compiled_mfu']:.1%}"
                  + (f", CUDA-graphed {r['graphed_mfu']:.1%}" if "graphed_mfu" in r else "")]
    return "\n".join(lines)


def bench_results(repo: Path, stem: str, render) -> str:
    """Every machine's results of one benchmark kept in bench/results/<stem>-*.json, each rendered."""
    paths = sorted((repo / "bench" / "results").glob(f"{stem}-*.json"))
    return "\n\n".join(render(json.loads(p.read_text())) for p in paths) or f"No bench/results/{stem}-*.json yet."


def gpu_measured(repo: Path, tag: str = "h200") -> str:
    """What was measured on a GPU (bench/results/<tag>-*.json: the acceptance script's sections and the nested-step
    rows, as that machine wrote them)."""
    res = repo / "bench" / "results"
    acc = json.loads((res / f"{tag}-acceptance.json").read_text())
    rows = json.loads((res / f"{tag}-nested_step.json").read_text()) + \
        json.loads((res / f"{tag}-nested_step_compile.json").read_text())
    sec = acc["sections"]
    lines = [f"{acc['device_name']}, torch {acc['torch']} (`python -m bench.gpu_acceptance --device cuda`; the "
             "nested-step rows by `bench.nested_step.measure`, bf16 autocast, 4 widths)", "",
             "| shape | batch x 128 | plain HF step ms | nested step ms | x FLOP-proportional | launches / step | compiled |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['batch']} | {r['plain_ms']:.1f} | {r['nested_ms']:.1f} | "
                     f"{r['over_flop_proportional']:.2f}x | {r['launches_per_step']:,} | {'yes' if r.get('compile') else 'no'} |")
    dec, depth, wi = sec["decode"]["tok_s"], sec["depth"], sec["whatif"]["measured_profile"]["all"]
    lines += ["", f"- decode, width 1, batch 1: {dec['default']:.0f} tokens/s with HF's default cache, "
                  f"{dec['static_compiled']:.0f} with a static cache + compile ({dec['static_over_default']:.2f}x)",
              f"- which axis pays (time to first token, batch 1): width 1/2 "
              f"{depth['measured ttft_b1 speedup']['width 1/2']:.2f}x, depth 1/2 "
              f"{depth['measured ttft_b1 speedup']['depth 1/2']:.2f}x; decode: width 1/2 "
              f"{depth['measured decode speedup']['width 1/2']:.2f}x, depth 1/2 {depth['measured decode speedup']['depth 1/2']:.2f}x",
              f"- what-if with the profile measured there, against `bench` on the same machine: median "
              f"{wi['median']:.0%}, worst {wi['worst']:.0%} over {wi['n']} measurements"]
    return "\n".join(lines)


def reliability(repo: Path) -> str:
    """The bad-input table's size, counted in tests/test_bad_inputs.py (each row is checked: exit 2, one line,
    nothing written)."""
    tree = ast.parse((repo / "tests" / "test_bad_inputs.py").read_text())
    cases = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", None) == "CASES" for t in n.targets))
    n = len(cases.elts)
    from .commands import COMMANDS
    numbers = [i for c in COMMANDS.values() for i in c.inputs if i.numeric]
    g = sum(len(i.bad_values()) for i in numbers)
    return ("| inputs tried | one clear line, exit 2 | nothing written | test |\n|---|---|---|---|\n"
            f"| {n} bad CLI inputs (widths, axes, paths, folders, flags, devices, precisions) | {n} | {n} | "
            "`tests/test_bad_inputs.py` |\n"
            f"| {g} out-of-range values, generated from the table of commands: each of the {len(numbers)} numbers "
            "of every command below its range, zero, negative, nan, ±inf, huge, not a number, empty | "
            f"{g} | {g} | `tests/test_bad_inputs.py` (generated) |")


def blocks(repo: Path) -> dict[str, str]:
    """Every block name -> its rendered text, from the runs under repo/cached_runs."""
    root = repo / "cached_runs"
    out = {"headline": lambda: headline(root), "build-cost": lambda: build_cost(root), "matta": lambda: matta(root),
           "finetune-genre": lambda: finetune(root, "genre"), "finetune-domain": lambda: finetune(root, "domain"),
           "whatif-error": lambda: whatif_error(root), "head-rates": lambda: head_rates(root), "reliability": lambda: reliability(repo),
           "train-vs-val": lambda: train_vs_val(root), "data": lambda: data_and_weights(root),
           "depth-family": lambda: depth_family(root), "depth-grid": lambda: depth_grid(root),
           "depth-speed": lambda: depth_speed(root), "app-timings": lambda: app_timings(repo),
           "nested-step": lambda: bench_results(repo, "nested_step", nested_step_report), "gpu-h200": lambda: gpu_measured(repo),
           "graph-step": lambda: bench_results(repo, "graph_step", graph_step_report),
           "demo-timing": lambda: bench_results(repo, "demo_timing", demo_timing_report),
           "cold-head": lambda: bench_results(repo, "cold_head", cold_head_report)}
    for path in sorted((root / "shakespeare-nml" / "latency").glob("cpu-*.json")):
        out[f"latency-{path.stem}"] = lambda key=path.stem: latency(root, key)
    return out


def render(repo: Path, check: bool = False, docs=("README.md", "BENCHMARKS.md")) -> list[str]:
    """Rewrite every marked block of the docs from the files (or, with check, change nothing); returns
    'DOC: NAME' for every block whose text differed (or that names no known block)."""
    makers, differ = blocks(repo), []
    for doc in docs:
        path = repo / doc
        text = path.read_text()

        def fill(m: re.Match) -> str:
            name = m.group("name")
            if name not in makers:
                differ.append(f"{doc}: {name} (no such block)")
                return m.group(0)
            body = makers[name]().rstrip("\n") + "\n"
            if body != m.group("body"):
                differ.append(f"{doc}: {name}")
            return m.group(1) + body + m.group(4)
        new = BLOCK.sub(fill, text)
        if not check and new != text:
            atomic_write_bytes(path, new.encode())
    return differ


def check_or_render(repo: Path, check: bool) -> str:
    """The render-docs command's answer: what changed, or (check) one line naming the stale blocks."""
    differ = render(repo, check)
    if check and differ:
        raise NMLError(f"docs differ from the runs' files in {', '.join(differ)}; run python -m nml_core render-docs")
    return ("rendered " + ", ".join(differ)) if differ else "every rendered block agrees with the files"
