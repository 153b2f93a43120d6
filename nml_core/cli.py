"""`python -m nml_core <command>`: argparse in front of nml_core.commands. Errors print as one line."""
from __future__ import annotations

import argparse
import signal
import sys

from .errors import NMLError


def _train_flags(p: argparse.ArgumentParser, steps_required=True) -> None:
    from .train import TrainConfig
    d = TrainConfig()
    p.add_argument("--data", help=".txt file or folder, .bin token file, run dir, or hf:<dataset>[:<config>]")
    p.add_argument("--out", required=True, help="run directory to create, e.g. runs/my-run")
    p.add_argument("--steps", type=int, required=steps_required, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--ctx", type=int, default=d.ctx, help="context length of the training windows")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    p.add_argument("--warmup", type=int, default=d.warmup, help="warm-up steps (-1: 5%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="log val loss every N steps (0: never)")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument("--mixed-precision", default=d.mixed_precision, choices=["auto", "no", "bf16", "fp16"])
    p.add_argument("--save-dtype", default="fp32", choices=["fp32", "fp16"], help="dtype of the saved weights")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _kd_flags(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig
    d = TrainConfig()
    p.add_argument("--alpha", type=float, default=d.alpha, help="KD weight: alpha*KL*T^2 + (1-alpha)*CE")
    p.add_argument("--temperature", type=float, default=d.temperature)


def _train_config(a: argparse.Namespace, **extra):
    from .train import TrainConfig
    names = ["steps", "batch_size", "ctx", "lr", "min_lr_ratio", "warmup", "weight_decay", "grad_accum", "grad_clip",
             "seed", "checkpoint_every", "log_every", "eval_every", "device", "mixed_precision"]
    fields = {n: getattr(a, n) for n in names if hasattr(a, n)}
    for n in ("alpha", "temperature", "strategy", "kd_source", "teacher_cache"):
        if hasattr(a, n):
            fields[n] = getattr(a, n)
    return TrainConfig(**fields, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nml_core", description="Nested Matrix Learning on GPT-2.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain a GPT-2-architecture teacher from scratch")
    _train_flags(p)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--n-inner", type=int, default=None, help="FFN width (default 4 x n-embd)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--label", help="honest one-line description of the model, shown in the app")

    p = sub.add_parser("train", help="nested distillation: one run trains the teacher and all its students")
    p.add_argument("--teacher", required=True, help="hub id (gpt2), local HF GPT-2 dir, or run dir")
    p.add_argument("--widths", default="1,0.5,0.25,0.125")
    p.add_argument("--nest", default="ffn,heads,hidden", help="axes to nest: ffn | heads,hidden | ffn,heads,hidden")
    p.add_argument("--strategy", default="all", choices=["all", "sandwich", "random"])
    p.add_argument("--kd-source", default="teacher", choices=["teacher", "cascade"])
    p.add_argument("--no-reorder", action="store_true", help="skip importance reordering of the teacher")
    p.add_argument("--teacher-cache", help="top-k teacher cache dir (cache-teacher): KD with no teacher forward")
    _kd_flags(p)
    _train_flags(p)

    p = sub.add_parser("cache-teacher", help="store the teacher's top-k logits for every train token, once")
    p.add_argument("--teacher", required=True, help="hub id, local HF GPT-2 dir, or run dir")
    p.add_argument("--data", help="as for train (default: the teacher run's own tokens)")
    p.add_argument("--out", required=True, help="cache directory to create")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--temperature", type=float, default=2.0, help="the KD temperature the cache will serve")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    p = sub.add_parser("baseline", help="baselines of a nested run: naive slice, independent KD")
    p.add_argument("run")
    p.add_argument("--kind", required=True, choices=["naive", "independent"])
    p.add_argument("--width", type=float, help="student width (independent); default: every width of the run")
    p.add_argument("--steps", type=int, help="default: the nested run's steps (same per-width budget)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    p = sub.add_parser("eval", help="perplexity, accuracy, agreement and KL per width (writes eval.json)")
    p.add_argument("run")
    p.add_argument("--data", help="evaluate on this data's val split instead of the run's own")
    p.add_argument("--max-tokens", type=int, default=None, help="cap on val tokens (default: all)")
    p.add_argument("--batch-size", type=int, default=8)

    p = sub.add_parser("bench", help="latency of the extracted students (writes latency/<device>.json)")
    p.add_argument("run")
    p.add_argument("--widths", help="default: the run's widths")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=10)

    p = sub.add_parser("export", help="write one width as a stock HF GPT-2 model directory")
    p.add_argument("run")
    p.add_argument("--width", type=float, required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("list", help="table of runs")
    p.add_argument("dirs", nargs="*", help="default: cached_runs runs")
    return parser


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the app's Cancel button sends SIGTERM: same path as Ctrl-C (checkpoint, cancelled)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import transformers
    transformers.logging.set_verbosity_error()  # keep the terminal to our progress bar and one-line errors
    transformers.utils.logging.disable_progress_bar()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return dispatch(args) or 0
    except NMLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def dispatch(a: argparse.Namespace) -> int | None:
    from . import commands
    from .width import parse_axes, parse_widths
    if a.command == "pretrain":
        if not a.data:
            raise NMLError("--data is required for pretrain (a .txt file or folder, a .bin file, or hf:<dataset>)")
        run = commands.pretrain(a.out, a.data, _train_config(a), a.n_layer, a.n_embd, a.n_head, a.n_inner,
                                dropout=a.dropout, label=a.label, save_dtype=a.save_dtype, resume=a.resume)
        print(f"done: {run.path}")
    elif a.command == "train":
        run = commands.train_nested(a.out, a.teacher, a.data, parse_widths(a.widths), parse_axes(a.nest),
                                    _train_config(a), reorder=not a.no_reorder, save_dtype=a.save_dtype, resume=a.resume)
        print(f"done: {run.path}")
    elif a.command == "cache-teacher":
        out = commands.cache_teacher(a.teacher, a.data, a.out, a.k, a.ctx, a.temperature, a.batch_size, a.device)
        print(f"done: {out}")
    elif a.command == "baseline":
        for path in commands.baseline(a.run, a.kind, width=a.width, steps=a.steps, device=a.device):
            print(f"done: {path}")
    elif a.command == "eval":
        report = commands.evaluate_run(a.run, data=a.data, max_tokens=a.max_tokens, batch_size=a.batch_size)
        print(commands.format_eval(report))
    elif a.command == "bench":
        widths = parse_widths(a.widths) if a.widths else None
        report = commands.bench_run(a.run, widths=widths, device=a.device, threads=a.threads, repeats=a.repeats)
        print(commands.format_latency(report))
    elif a.command == "export":
        print(f"wrote {commands.export(a.run, a.width, a.out)}")
    elif a.command == "list":
        print(commands.format_runs(commands.list_runs(*a.dirs)))
    return 0
