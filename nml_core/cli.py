"""`python -m nml_core <command>` (or `nml <command>`): argparse in front of nml_core.api. Errors print as one line.

The training flags are generated from TrainConfig's fields (nml_core.training.config), so the CLI, the
background job's argv and the Train page cannot drift apart."""
from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

from .device import DEVICE_CHOICES
from .errors import NMLError
from .training.config import TrainConfig, flag, option_fields

TRAIN, NESTED = ("train",), ("train", "kd")  # TrainConfig flag groups of pretrain and of nested train


def _config_flags(p: argparse.ArgumentParser, groups: tuple) -> None:
    """One flag per TrainConfig field of these groups: name, type, default, choices and help from the dataclass."""
    for f in option_fields(groups):
        if isinstance(f.default, bool):
            p.add_argument(flag(f.name), action="store_true", help=f.metadata["help"])
            continue
        kind = type(f.default) if f.default is not None else str
        p.add_argument(flag(f.name), type=kind, default=f.default, choices=f.metadata.get("choices"),
                       required=f.name == "steps", help=f.metadata["help"])


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help=".txt file or folder, .bin token file, run dir, or hf:<dataset>[:<config>]")
    p.add_argument("--out", required=True, help="run directory to create, e.g. runs/my-run")
    p.add_argument("--save-dtype", default="fp32", choices=["fp32", "fp16"], help="dtype of the saved weights")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto picks CUDA when present")


def _train_config(a: argparse.Namespace, groups: tuple):
    return TrainConfig(**{f.name: getattr(a, f.name) for f in option_fields(groups)})


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`error: ...; see --help`) and exit 2, like every other bad input."""

    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def width_arg(text: str) -> float:
    """A width flag: a number or a fraction (0.25, 1/4); the range and head rule are WidthSpec's."""
    from .nesting.width import parse_fraction
    try:
        return parse_fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a width (a number or fraction in (0, 1], e.g. 0.5 or 1/4)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m nml_core", description="Nested Matrix Learning on GPT-2.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("pretrain", help="pretrain a GPT-2-architecture teacher from scratch")
    _run_flags(p)
    _config_flags(p, TRAIN)
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
    p.add_argument("--depths", default="1", help="depths to nest beside the widths, fractions of the layers "
                                                 "(e.g. 1,0.5): every width x depth trains; layers ranked by measurement")
    p.add_argument("--init", help="the nested model's starting weights (MatTA's teacher assistant): hub id, local "
                                  "HF GPT-2 dir, run dir or RUN@WIDTH; --teacher stays the frozen KD source")
    p.add_argument("--no-reorder", action="store_true", help="skip importance reordering of the teacher")
    _run_flags(p)
    _config_flags(p, NESTED)

    p = sub.add_parser("cache-teacher", help="store the teacher's top-k logits for every train token, once")
    p.add_argument("--teacher", required=True, help="hub id, local HF GPT-2 dir, or run dir")
    p.add_argument("--data", help="as for train (default: the teacher run's own tokens)")
    p.add_argument("--out", required=True, help="cache directory to create")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--temperature", type=float, default=2.0, help="the KD temperature the cache will serve")
    p.add_argument("--batch-size", type=int, default=16)
    _device_flag(p)

    p = sub.add_parser("baseline", help="baselines of a nested run: naive slice, independent KD")
    p.add_argument("run")
    p.add_argument("--kind", required=True, choices=["naive", "independent"])
    p.add_argument("--width", type=width_arg, help="student width (independent); default: every width of the run")
    p.add_argument("--depth", type=width_arg, default=1.0, help="student depth (fraction of the layers, the run's "
                                                                "ranking); naive: drop layers of the teacher")
    p.add_argument("--steps", type=int, help="default: the nested run's steps (same per-width budget)")
    _device_flag(p)

    p = sub.add_parser("eval", help="perplexity, accuracy, agreement and KL per width (writes eval.json)")
    p.add_argument("run")
    p.add_argument("--data", help="evaluate on this data's val split instead of the run's own")
    p.add_argument("--max-tokens", type=int, default=None, help="cap on val tokens (default: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--force", action="store_true", help="replace eval.json even when it scored more tokens")
    p.add_argument("--grid", action="store_true", help="instead: score every head count x every depth on "
                                                       "--max-tokens (default 16384) val tokens, into grid.json")
    _device_flag(p)

    p = sub.add_parser("bench", help="latency of the extracted students (writes latency/<device>.json)")
    p.add_argument("run")
    p.add_argument("--widths", help="default: the run's widths")
    _device_flag(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="weights and compute of the timed students; bf16 writes latency/<device>-bf16.json")

    p = sub.add_parser("whatif", help="what fits my budget: the width x depth frontier of a run on a device, and "
                                      "the best student within a latency / memory budget")
    p.add_argument("run")
    p.add_argument("--target", required=True, help="the hardware to project for: a measured device key, a "
                                                   "profiled one, or a preset name (e.g. 'NVIDIA H100', "
                                                   "'Raspberry Pi 5'); the search itself computes nothing")
    p.add_argument("--batch", type=int, default=1, help="sequences of 128 tokens")
    p.add_argument("--workload", default="ttft", choices=["ttft", "prefill", "decode"],
                   help="ttft: time to first token; prefill: scoring (all logits); decode: ms per generated token")
    p.add_argument("--latency-ms", type=float, default=None, help="latency budget on the workload")
    p.add_argument("--memory-mb", type=float, default=None, help="weights + KV cache + activations at the batch")
    p.add_argument("--profiles", action="append", default=[], help="another folder holding device_profiles/")

    p = sub.add_parser("export", help="write one (width, depth) student as a stock HF GPT-2 model directory")
    p.add_argument("run")
    p.add_argument("--width", type=width_arg, required=True)
    p.add_argument("--depth", type=width_arg, default=1.0, help="fraction of the layers kept (the run's ranking)")
    p.add_argument("--out", required=True)
    _device_flag(p)

    p = sub.add_parser("generate", help="continue a prompt at one width of a run")
    p.add_argument("run")
    p.add_argument("--width", type=width_arg, default=1.0)
    p.add_argument("--depth", type=width_arg, default=1.0, help="fraction of the layers kept (the run's ranking)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--static-cache", action="store_true", help="HF static KV cache + compiled forward (CUDA)")
    _device_flag(p)

    p = sub.add_parser("finetune", help="fine-tune students of one width from several starts on a downstream task")
    p.add_argument("run")
    p.add_argument("--width", type=width_arg, required=True)
    p.add_argument("--task", required=True, help="genre (which kind of work a passage is from) | domain (LM on "
                                                 "Python's documentation)")
    p.add_argument("--starts", default="nml,independent,naive,random",
                   help="comma-separated: nml, independent, naive, random, or an exported model dir")
    p.add_argument("--steps", type=int, default=None, help="default: FinetuneConfig's")
    p.add_argument("--seeds", type=int, default=1, help="seeds --seed, --seed + 1, ...: one run of each start per seed")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    _device_flag(p)

    p = sub.add_parser("profile-device", help="measure what the hardware what-if needs on this device (< 60 s)")
    _device_flag(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out", default="runs", help="folder whose device_profiles/ receives <device key>.json")

    p = sub.add_parser("render-docs", help="rewrite the run-derived tables of README.md and BENCHMARKS.md from the runs' files")
    p.add_argument("--check", action="store_true", help="change nothing; exit 2 naming the blocks that differ")
    p.add_argument("--repo", default=".", help="the checkout whose docs and cached_runs/ to use")

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
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            print(f"error: cannot write {e.filename or 'a file'} ({e.strerror.lower()}); name a folder you can write "
                  "to (every file is written whole or not at all: nothing half-written was left)", file=sys.stderr)
            return 2
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on the device writing {e.filename or 'a file'}; free some disk space, then "
              "rerun (training continues with --resume; every file is written whole or not at all)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def dispatch(a: argparse.Namespace) -> int | None:
    from . import api, report
    from .nesting.depth import parse_depths
    from .nesting.width import parse_axes, parse_widths
    if a.command == "pretrain":
        if not a.data:
            raise NMLError("--data is required for pretrain (a .txt file or folder, a .bin file, or hf:<dataset>)")
        run = api.pretrain(a.out, a.data, _train_config(a, TRAIN), a.n_layer, a.n_embd, a.n_head, a.n_inner,
                                dropout=a.dropout, label=a.label, save_dtype=a.save_dtype, resume=a.resume)
        print(f"done: {run.path}")
    elif a.command == "train":
        run = api.train_nested(a.out, a.teacher, a.data, parse_widths(a.widths), parse_axes(a.nest),
                               _train_config(a, NESTED), reorder=not a.no_reorder, save_dtype=a.save_dtype,
                               resume=a.resume, init=a.init, depths=parse_depths(a.depths))
        print(f"done: {run.path}")
    elif a.command == "cache-teacher":
        out = api.cache_teacher(a.teacher, a.data, a.out, a.k, a.ctx, a.temperature, a.batch_size, a.device)
        print(f"done: {out}")
    elif a.command == "baseline":
        for path in api.baseline(a.run, a.kind, width=a.width, steps=a.steps, device=a.device, depth=a.depth):
            print(f"done: {path}")
    elif a.command == "eval" and a.grid:
        grid = api.evaluate_grid(a.run, max_tokens=a.max_tokens or api.GRID_TOKENS, batch_size=a.batch_size,
                                 device=a.device, force=a.force)
        print(report.grid_markdown(grid))
        print(f"wrote {grid['written']}")
    elif a.command == "eval":
        ev = api.evaluate_run(a.run, data=a.data, max_tokens=a.max_tokens, batch_size=a.batch_size, device=a.device,
                              force=a.force)
        print(report.format_eval(ev))
        if not ev["written"].endswith("/eval.json"):
            print(f"wrote {ev['written']}: a partial evaluation ({ev['tokens_scored']} tokens) beside the fuller "
                  "eval.json, which is kept (--force replaces it)")
    elif a.command == "bench":
        widths = parse_widths(a.widths) if a.widths else None
        print(report.format_latency(api.bench_run(a.run, widths=widths, device=a.device, threads=a.threads,
                                                  repeats=a.repeats, precision=a.precision)))
    elif a.command == "whatif":
        answer, choice = api.budget_search(a.run, a.target, a.batch, a.workload, a.latency_ms, a.memory_mb,
                                           a.profiles)
        print(report.format_budget(answer, choice, a.batch, a.workload))
    elif a.command == "export":
        print(f"wrote {api.export(a.run, a.width, a.out, device=a.device, depth=a.depth)}")
    elif a.command == "generate":
        print(api.generate(a.run, a.prompt, a.width, a.max_new_tokens, a.temperature, a.seed, a.static_cache,
                           a.device, depth=a.depth))
    elif a.command == "finetune":
        from .training.finetune import FinetuneConfig
        cfg = FinetuneConfig(steps=a.steps or FinetuneConfig.steps, batch_size=a.batch_size, lr=a.lr, ctx=a.ctx,
                             seed=a.seed)
        seeds = tuple(range(a.seed, a.seed + a.seeds))
        print(report.format_finetune(api.finetune(a.run, a.width, a.task, a.starts.split(","), cfg, a.device, seeds)))
    elif a.command == "profile-device":
        path, prof = api.profile_device(a.device, a.threads, a.out)
        print(report.format_profile(prof))
        print(f"wrote {path}")
    elif a.command == "render-docs":
        from .docs import check_or_render
        print(check_or_render(Path(a.repo), a.check))
    elif a.command == "list":
        missing = [d for d in a.dirs if not Path(d).is_dir()]
        if missing:
            raise NMLError(f"{missing[0]} is not a folder; list takes folders that hold runs (default: cached_runs runs)")
        print(report.format_runs(api.list_runs(*a.dirs)))
    return 0
