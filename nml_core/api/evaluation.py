"""Scoring a run and its baselines on held-out text: eval.json, and the width x depth grid."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import GPT2LMHeadModel

from .. import device as devices
from ..analysis.evaluate import EvalReport, evaluate_models, unigram_ppl
from ..analysis.grid import grid_subnets
from ..arch.gpt2 import cost
from ..data.batches import DOC_START_TOKENS, document_starts, eval_windows
from ..data.sources import prepare_data
from ..errors import NMLError
from ..nesting.depth import subnet_key, subnets
from ..nesting.elastic import ElasticGPT2
from ..files import atomic_write_json
from ..store.models import load_run_model, load_teacher_of, run_tokens
from ..store.runs import Run, has_weights, load_run, now
from ..training.inits import reordered_teacher

TRAIN_CE_TOKENS = 16384  # train tokens eval also scores, so a run's train CE stands beside its val CE
GRID_TOKENS = 16384  # val tokens each (width, depth) of the grid is scored on


@dataclass(frozen=True)
class Evaluation:
    report: EvalReport
    written: Path | None  # eval.json, or eval-<tokens>-tokens.json beside a fuller one; None: not written


def evaluate_run(run_path, data: str | None = None, max_tokens: int | None = None, batch_size: int = 8,
                 progress=None, device: str = "auto", write: bool = True, force: bool = False) -> Evaluation:
    """Evaluate a run (and its baselines) on its validation split; writes eval.json files (unless not write).
    A partial evaluation (fewer tokens than the stored one scored, or other data) never replaces the stored one:
    it goes beside it, unless force."""
    run = load_run(run_path)
    device = devices.resolve(device)
    model, tokenizer = load_run_model(run, device)
    ctx = run.info.get("hparams", {}).get("ctx", model.config.n_positions)
    train_ids, val_ids = _eval_tokens(run, data, tokenizer, ctx)
    meta = _eval_meta(run, data, ctx, max_tokens)

    def score(models, teacher_fn):
        return _score(models, teacher_fn, val_ids, train_ids, ctx, model.config.eos_token_id, max_tokens,
                      batch_size, progress, device)

    if run.kind == "pretrain":
        scores = score({"1": lambda x: model(input_ids=x).logits}, None)
        report = EvalReport(meta, [{"width": 1.0, **cost(model.config, ctx=ctx), **scores["1"]}],
                            unigram_ppl=unigram_ppl(train_ids, val_ids, model.config.vocab_size))
        return Evaluation(report, write_report(run.path, report.to_json(), force) if write else None)
    teacher = load_teacher_of(run, device)
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    baselines = run.baselines()
    models, rows, kept = _nested_models(run, baselines, elastic, teacher, device)
    scores = score(models, models["teacher"])
    groups: dict[str, list] = {"nml": [], "naive": [], "independent": list(kept)}
    for key, (group, (w, d)) in rows.items():
        groups[group].append({"width": w, "depth": d, **cost(model.config, elastic.dims(w, d), ctx), **scores[key]})
    report = EvalReport(
        meta, groups["nml"],
        # the teacher's own shape: under MatTA it is larger than the nested model (the TA)
        teacher={"label": run.info["teacher"].get("label"), **cost(teacher.config, ctx=ctx), **scores["teacher"]},
        baselines={g: sorted(r, key=lambda r: (-r["width"], -r["depth"])) for g, r in groups.items()
                   if g != "nml" and r},
        kept_baselines=(f"{len(kept)} independent-KD row(s) from baselines that ship no weights: their stored "
                        "eval.json rows, not scored again (a build with --keep-weights keeps their weights)")
        if kept else None)
    if not write:
        return Evaluation(report, None)
    written = write_report(run.path, report.to_json(), force)
    _write_baselines(baselines, report, force)
    return Evaluation(report, written)


def _eval_tokens(run: Run, data: str | None, tokenizer, ctx: int):
    """(train ids, val ids): the run's own split, or other data's (tokenized into a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokens = prepare_data(data, tokenizer, Path(tmp), ctx + 2) if data else run_tokens(run)
        return np.asarray(tokens.train), np.asarray(tokens.val)


def _eval_meta(run: Run, data: str | None, ctx: int, max_tokens: int | None) -> dict:
    return {"protocol": f"non-overlapping {ctx}-token blocks of the validation split; see nml_core/analysis/evaluate.py",
            "doc_start": f"doc_start_nll: tokens 1-{DOC_START_TOKENS} of each validation document scored with its "
                         f"<|endoftext|> as the only context; rest_nll: every other token (block protocol)",
            "train_nll": f"the same protocol on the first {min(TRAIN_CE_TOKENS, max_tokens or TRAIN_CE_TOKENS)} "
                         "tokens of the train split (train CE, to hold against the val CE: nll)",
            "data": data or run.info.get("data", {}).get("source"), "ctx": ctx, "evaluated": now()}


def _nested_models(run: Run, baselines: list[Run], elastic: ElasticGPT2, teacher, device):
    """(models by key, key -> (group, (width, depth)), kept rows): the teacher, every trained (width, depth),
    the naive slices and layer drops, and the independent students that ship weights; the rows of those that
    ship figures only are kept as they are."""
    models = {"teacher": lambda x: teacher(input_ids=x).logits}
    rows = {}

    def add(group, w, d, fn):
        models[f"{group}:{subnet_key(w, d)}"] = fn
        rows[f"{group}:{subnet_key(w, d)}"] = (group, (w, d))

    for w, d in subnets(run.widths, run.depths):
        add("nml", w, d, (lambda w, d: lambda x: elastic(x, width=w, depth=d).logits)(w, d))
    naive = next((b for b in baselines if b.kind == "naive"), None)
    if naive:  # every slice and layer drop of the nested run's grid but the teacher itself
        cut = ElasticGPT2(reordered_teacher(run, device), run.axes, run.layer_rank).eval()
        for w, d in subnets(sorted(set(naive.widths) | {1.0}, reverse=True), run.depths):
            if (w, d) != (1.0, 1.0):
                add("naive", w, d, (lambda w, d: lambda x: cut(x, width=w, depth=d).logits)(w, d))
    kept = []
    for b in baselines:
        if b.kind == "independent" and b.status == "done" and not has_weights(b.model_dir):
            kept += (b.eval() or {}).get("widths", [])
        elif b.kind == "independent" and b.status == "done":
            student = load_run_model(b, device)[0]
            add("independent", b.info["width"], b.info.get("depth", 1.0),
                (lambda m: lambda x: m(input_ids=x).logits)(student))
    return models, rows, kept


def _write_baselines(baselines: list[Run], report: EvalReport, force: bool) -> None:
    """Each baseline's own eval.json: its rows of the report (a weightless one keeps its stored file)."""
    for b in baselines:
        if b.kind == "independent" and not has_weights(b.model_dir):
            continue  # its figures were kept, not re-measured: its eval.json stays as it is
        mine = [r for r in report.baselines.get(b.kind, []) if b.kind == "naive" or
                (r["width"], r["depth"]) == (b.info.get("width"), b.info.get("depth", 1.0))]
        write_report(b.path, EvalReport(report.meta, mine, teacher=report.teacher).to_json(), force)


def evaluate_grid(run_path, max_tokens: int = GRID_TOKENS, batch_size: int = 8, device: str = "auto",
                  force: bool = False, progress=None) -> dict:
    """Score every head count x every depth of a run (trained or not) on the first max_tokens of its val split;
    writes grid.json (never over a fuller one, unless force) for the app and the budget search."""
    run = load_run(run_path)
    if run.kind != "nested":
        raise NMLError(f"{run.path} is a {run.kind} run; the grid belongs to a nested run (python -m nml_core train)")
    device = devices.resolve(device)
    model, _ = load_run_model(run, device)
    teacher = load_teacher_of(run, device)
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    ctx = run.info.get("hparams", {}).get("ctx", model.config.n_positions)
    windows = eval_windows(np.asarray(run_tokens(run).val), ctx, max_tokens)
    trained = set(subnets(run.widths, run.depths))
    points = grid_subnets(model.config, run.axes)
    rows = []
    for depth in sorted({d for _, d in points}, reverse=True):  # one depth per pass: its students stay cached
        mine = [w for w, d in points if d == depth]
        scores = evaluate_models({subnet_key(w, depth): (lambda w: lambda x: elastic(x, width=w, depth=depth).logits)(w)
                                  for w in mine}, lambda x: teacher(input_ids=x).logits, windows, batch_size,
                                 device=device)
        rows += [{"width": w, "depth": depth, "trained": (w, depth) in trained,
                  **cost(model.config, elastic.dims(w, depth), ctx), **scores[subnet_key(w, depth)]} for w in mine]
        if progress:
            progress(len(rows) / len(points))
    report = {"protocol": f"up to {max_tokens} tokens from the start of the validation split, in non-overlapping "
                          f"{ctx}-token blocks (nml_core/analysis/evaluate.py); every head count x every depth",
              "evaluated": now(), "layer_rank": elastic.layer_rank, "rows": rows,
              "tokens_scored": rows[0]["tokens"] if rows else 0}
    return {**report, "written": str(write_report(run.path, report, force, name="grid"))}


def write_report(run_dir: Path, report: dict, force: bool, name: str = "eval") -> Path:
    """eval.json (grid.json), unless the stored one is fuller (more tokens scored) or of other data: then beside
    it as eval-<tokens>-tokens.json, so a quick check never replaces a full evaluation."""
    from ..files import read_json
    path = run_dir / f"{name}.json"
    if path.exists() and not force:
        try:
            old = read_json(path)
        except NMLError:
            old = {}
        stored = old.get("tokens_scored") or (old.get("rows" if name == "grid" else "widths") or [{}])[0].get("tokens", 0)
        if old and (stored > report["tokens_scored"] or old.get("data") != report.get("data")):
            path = run_dir / f"{name}-{report['tokens_scored']}-tokens.json"
    atomic_write_json(path, report)
    return path


def _score(models: dict, teacher_fn, val_ids, train_ids, ctx: int, eot: int | None, max_tokens, batch_size: int,
           progress, device) -> dict[str, dict]:
    """The block protocol over the validation split, how each model starts a document (data.batches), and the
    same protocol on the start of the train split: train CE beside val CE, as the curves compare them."""
    windows = eval_windows(val_ids, ctx, max_tokens)
    starts, near = document_starts(val_ids, eot, ctx, max_tokens) if eot is not None else ([], None)
    scores = evaluate_models(models, teacher_fn, windows, batch_size, progress, device=device, apart=near)
    if len(starts):
        first = evaluate_models(models, None, starts, batch_size * 8, device=device)
        for key, row in scores.items():
            row.update(doc_start_nll=first[key]["nll"], doc_start_tokens=first[key]["tokens"])
    train_tokens = min(TRAIN_CE_TOKENS, max_tokens or TRAIN_CE_TOKENS)  # a capped evaluation caps both
    train = evaluate_models(models, None, eval_windows(train_ids, ctx, train_tokens), batch_size, device=device)
    for key, row in scores.items():
        row.update(train_nll=train[key]["nll"], train_tokens=train[key]["tokens"])
    return scores


def evaluate_width(elastic: ElasticGPT2, teacher: GPT2LMHeadModel, run: Run, width: float, max_tokens: int = 4096,
                   depth: float = 1.0) -> dict:
    """Quality of one (width, depth) (any, trained or not) on the first max_tokens of the run's val split."""
    ctx = run.info.get("hparams", {}).get("ctx", elastic.config.n_positions)
    windows = eval_windows(run_tokens(run).val, ctx, max_tokens)
    scores = evaluate_models({"w": lambda x: elastic(x, width=width, depth=depth).logits},
                             lambda x: teacher(input_ids=x).logits, windows, device=next(elastic.model.parameters()).device)
    return {"width": width, "depth": depth, **cost(elastic.config, elastic.dims(width, depth), ctx), **scores["w"]}
