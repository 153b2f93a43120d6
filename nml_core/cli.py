"""`python -m nml_core <command>` (or `nml <command>`): argparse in front of nml_core.api. Errors print as one line.

The parser is built from the table of commands (nml_core.commands): every input declared once, with its type,
range and help, which the Train page and the other pages read too."""
from __future__ import annotations

import argparse
import errno
import re
import signal
import sys
from pathlib import Path

from .commands import COMMANDS, NESTED, TRAIN
from .errors import NMLError
from .inputs import Input
from .training.config import TrainConfig, option_fields



def _train_config(a: argparse.Namespace, groups: tuple):
    return TrainConfig(**{f.name: getattr(a, f.name) for f in option_fields(groups)})


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`error: ...; see --help`) and exit 2, like every other bad input."""

    def error(self, message):
        named = re.match(r"argument (\S+?): (\1 .*)", message)  # our own lines already name the input
        self.exit(2, f"error: {named.group(2) if named else message}; see `{self.prog} --help`\n")


def _parse_with(spec: Input):
    """argparse's type= for a declared input: its own one-line refusal (range, fix) instead of argparse's."""
    def parse(text: str):
        try:
            return spec.parse(text)
        except NMLError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _add(p: argparse.ArgumentParser, spec: Input) -> None:
    """One argparse argument from its declaration (nml_core.commands)."""
    help = (spec.help + (f"; {spec.range_text()}" if spec.numeric else "")).replace("%", "%%")
    if spec.kind == "bool":
        p.add_argument(spec.name, action="store_true", help=help)
    elif spec.kind == "paths":
        p.add_argument(spec.name, nargs="*", help=help)
    elif spec.kind == "repeat":
        p.add_argument(spec.name, action="append", help=help)
    elif not spec.name.startswith("--"):
        p.add_argument(spec.name, help=help)
    else:
        p.add_argument(spec.name, type=_parse_with(spec), default=spec.default, choices=spec.choices,
                       required=spec.required, help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m nml_core", description="Nested Matrix Learning on GPT-2.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help)
        for spec in command.inputs:
            _add(p, spec)
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
    if a.command in ("pretrain", "train", "cache-teacher", "baseline"):
        return _dispatch_training(a)
    return _dispatch_using(a)


def _dispatch_training(a: argparse.Namespace) -> int:
    """The commands that train or record a run."""
    from . import api
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
    return 0


def _dispatch_using(a: argparse.Namespace) -> int:
    """The commands that read a run: score, time, project, export, generate, fine-tune, list; and the docs."""
    from . import api, report
    from .nesting.width import parse_widths
    if a.command == "eval" and a.grid:
        grid = api.evaluate_grid(a.run, max_tokens=a.max_tokens or api.GRID_TOKENS, batch_size=a.batch_size,
                                 device=a.device, force=a.force)
        print(report.grid_markdown(grid))
        print(f"wrote {grid['written']}")
    elif a.command == "eval":
        ev = api.evaluate_run(a.run, data=a.data, max_tokens=a.max_tokens, batch_size=a.batch_size, device=a.device,
                              force=a.force)
        print(report.format_eval(ev.report.to_json()))
        if ev.written.name != "eval.json":
            print(f"wrote {ev.written}: a partial evaluation ({ev.report.tokens_scored} tokens) beside the fuller "
                  "eval.json, which is kept (--force replaces it)")
    elif a.command == "bench":
        widths = parse_widths(a.widths) if a.widths else None
        print(report.format_latency(api.bench_run(a.run, widths=widths, device=a.device, threads=a.threads,
                                                  repeats=a.repeats, precision=a.precision)))
    elif a.command == "whatif":
        answer, choice = api.budget_search(a.run, a.target, a.batch, a.workload, a.latency_ms, a.memory_mb,
                                           a.profiles or [])
        print(report.format_budget(answer, choice, a.batch, a.workload))
    elif a.command == "export":
        print(f"wrote {api.export(a.run, a.width, a.out, device=a.device, depth=a.depth)}")
    elif a.command == "generate":
        out = api.generate(a.run, a.prompt, a.width, a.max_new_tokens, a.temperature, a.seed, a.static_cache,
                           a.device, depth=a.depth)
        if out.capped:
            print(f"note: {out.capped}", file=sys.stderr)
        print(out.text)
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
    elif a.command == "card":
        print(f"wrote {report.write_run_card(a.run)}")
    elif a.command == "render-docs":
        from .docs import check_or_render
        print(check_or_render(Path(a.repo), a.check))
    elif a.command == "list":
        missing = [d for d in a.dirs if not Path(d).is_dir()]
        if missing:
            raise NMLError(f"{missing[0]} is not a folder; list takes folders that hold runs (default: cached_runs runs)")
        print(report.format_runs(api.list_runs(*a.dirs)))
    return 0
