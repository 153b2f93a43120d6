"""The table of commands: every input of every command, declared once (nml_core.inputs).

The CLI builds its parser from it (nml_core.cli), the app's fields take their ranges from it, and a test walks
every number in it with values out of range (tests/test_bad_inputs.py). Training flags are TrainConfig's fields.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .device import DEVICE_CHOICES
from .inputs import Input, count, fraction, number
from .training.config import config_input, option_fields

TRAIN, NESTED = ("train",), ("train", "kd")  # TrainConfig flag groups of pretrain and of nested train
SEED_MAX = 2 ** 32 - 1


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    inputs: tuple[Input, ...]

    def input(self, name: str) -> Input:
        return next(i for i in self.inputs if i.name == name)


def run_arg(what: str = "a run directory") -> Input:
    return Input("run", what, required=True)


def device_flag() -> Input:
    return Input("--device", "where to compute: auto picks CUDA when present", default="auto", choices=DEVICE_CHOICES)


def threads_flag() -> Input:
    return count("--threads", "torch threads (default: all cores)", None, high=4096)


def config_flags(groups: tuple) -> tuple[Input, ...]:
    """The recipe's fields as flags; --steps is asked for, never a silent default of 1000 steps."""
    return tuple(replace(config_input(f), required=f.name == "steps") for f in option_fields(groups))


def run_flags() -> tuple[Input, ...]:
    return (Input("--data", ".txt file or folder, .bin token file, run dir, or hf:<dataset>[:<config>]"),
            Input("--out", "run directory to create, e.g. runs/my-run", required=True),
            Input("--save-dtype", "dtype of the saved weights", default="fp32", choices=("fp32", "fp16")),
            Input("--resume", "continue the run in --out from its last checkpoint", "bool", False))


ALL = (
    Command("pretrain", "pretrain a GPT-2-architecture teacher from scratch", run_flags() + config_flags(TRAIN) + (
        count("--n-layer", "transformer blocks", 6, high=1024),
        count("--n-embd", "hidden size (a multiple of --n-head)", 256, high=65536),
        count("--n-head", "attention heads", 8, high=1024),
        count("--n-inner", "FFN width (default 4 x n-embd)", None, high=2 ** 20),
        number("--dropout", "dropout probability", 0.0, high=0.99),
        Input("--label", "honest one-line description of the model, shown in the app"))),
    Command("train", "nested distillation: one run trains the teacher and all its students", (
        Input("--teacher", "hub id (gpt2), local HF GPT-2 dir, or run dir", required=True),
        Input("--widths", "widths to nest, largest first, each in (0, 1]", default="1,0.5,0.25,0.125"),
        Input("--nest", "axes to nest: ffn | heads,hidden | ffn,heads,hidden", default="ffn,heads,hidden"),
        Input("--depths", "depths to nest beside the widths, fractions of the layers (e.g. 1,0.5): every "
                          "width x depth trains; layers ranked by measurement", default="1"),
        Input("--init", "the nested model's starting weights (MatTA's teacher assistant): hub id, local HF "
                        "GPT-2 dir, run dir or RUN@WIDTH; --teacher stays the frozen KD source"),
        Input("--no-reorder", "skip importance reordering of the teacher", "bool", False))
        + run_flags() + config_flags(NESTED)),
    Command("cache-teacher", "store the teacher's top-k logits for every train token, once", (
        Input("--teacher", "hub id, local HF GPT-2 dir, or run dir", required=True),
        Input("--data", "as for train (default: the teacher run's own tokens)"),
        Input("--out", "cache directory to create", required=True),
        count("--k", "logits kept per token (32-64 keep nearly all the teacher's probability mass)", 64, high=2 ** 20),
        count("--ctx", "context length of the cached windows", 128, low=2, high=2 ** 20),
        number("--temperature", "the KD temperature the cache will serve", 2.0, high=100, low_open=True),
        count("--batch-size", "windows per teacher forward", 16, high=65536),
        device_flag())),
    Command("baseline", "baselines of a nested run: naive slice, independent KD", (
        run_arg("a nested run directory"),
        Input("--kind", "naive: slice the teacher; independent: KD of one student alone", required=True,
              choices=("naive", "independent")),
        fraction("--width", "student width (independent); default: every width of the run"),
        fraction("--depth", "student depth (fraction of the layers, the run's ranking); naive: drop layers of "
                            "the teacher", 1.0),
        count("--steps", "default: the nested run's steps (same per-width budget)", None, high=10 ** 8),
        device_flag())),
    Command("eval", "perplexity, accuracy, agreement and KL per width (writes eval.json)", (
        run_arg(),
        Input("--data", "evaluate on this data's val split instead of the run's own"),
        count("--max-tokens", "cap on val tokens (default: all; --grid: 16384)", None),
        count("--batch-size", "windows per forward", 8, high=65536),
        Input("--force", "replace eval.json even when it scored more tokens", "bool", False),
        Input("--grid", "instead: score every head count x every depth on --max-tokens val tokens, into "
                        "grid.json", "bool", False),
        device_flag())),
    Command("bench", "latency of the extracted students (writes latency/<device>.json)", (
        run_arg(),
        Input("--widths", "default: the run's widths"),
        device_flag(), threads_flag(),
        count("--repeats", "timed repeats per shape (the median is kept)", 10, high=100_000),
        Input("--precision", "weights and compute of the timed students; bf16 writes "
                             "latency/<device>-bf16.json", default="fp32", choices=("fp32", "bf16")))),
    Command("whatif", "what fits my budget: the width x depth frontier of a run on a device, and the best "
                      "student within a latency / memory budget", (
        run_arg("a nested run directory"),
        Input("--target", "the hardware to project for: a measured device key, a profiled one, or a preset "
                          "name (e.g. 'NVIDIA H100', 'Raspberry Pi 5'); the search itself computes nothing",
              required=True, label="Device"),
        count("--batch", "sequences of 128 tokens", 1, high=65536, label="Batch (sequences of 128 tokens)"),
        Input("--workload", "ttft: time to first token; prefill: scoring (all logits); decode: ms per "
                            "generated token", default="ttft", choices=("ttft", "prefill", "decode")),
        number("--latency-ms", "latency budget on the workload (default: none)", None, low_open=True,
               label="Latency budget (ms)", example="50"),
        number("--memory-mb", "weights + KV cache + activations at the batch (default: none)", None,
               low_open=True, label="Memory budget (MB)", example="500"),
        Input("--profiles", "another folder holding device_profiles/ (repeatable)", "repeat"))),
    Command("export", "write one (width, depth) student as a stock HF GPT-2 model directory", (
        run_arg(),
        fraction("--width", "student width, a fraction of the teacher", required=True, example="0.5"),
        fraction("--depth", "fraction of the layers kept (the run's ranking)", 1.0),
        Input("--out", "model directory to create", required=True),
        device_flag())),
    Command("generate", "continue a prompt at one width of a run", (
        run_arg(),
        fraction("--width", "student width, a fraction of the teacher", 1.0),
        fraction("--depth", "fraction of the layers kept (the run's ranking)", 1.0),
        Input("--prompt", "text to continue", required=True),
        count("--max-new-tokens", "tokens to generate (capped, with a note, at the model's context)", 40,
              high=2 ** 20, label="New tokens"),
        number("--temperature", "0: greedy; else sampled at this temperature with --seed (greedy decoding of "
                                "a small model loops)", 0.8, high=100, label="Temperature (0 = greedy)"),
        count("--seed", "seed of the sampling", 0, low=0, high=SEED_MAX, label="Seed"),
        Input("--static-cache", "HF static KV cache + compiled forward (CUDA)", "bool", False),
        device_flag())),
    Command("finetune", "fine-tune students of one width from several starts on a downstream task", (
        run_arg("a nested run directory"),
        fraction("--width", "student width, a fraction of the teacher", required=True, example="0.5"),
        Input("--task", "genre (which kind of work a passage is from) | domain (LM on Python's documentation)",
              required=True),
        Input("--starts", "comma-separated: nml, independent, naive, random, or an exported model dir",
              default="nml,independent,naive,random"),
        count("--steps", "default: FinetuneConfig's", None, high=10 ** 8),
        count("--seeds", "seeds --seed, --seed + 1, ...: one run of each start per seed", 1, high=1000),
        count("--batch-size", "sequences per step", 16, high=65536),
        number("--lr", "learning rate (AdamW)", 3e-4, high=10, low_open=True),
        count("--ctx", "context length", 128, low=2, high=2 ** 20),
        count("--seed", "first seed", 0, low=0, high=SEED_MAX),
        device_flag())),
    Command("profile-device", "measure what the hardware what-if needs on this device (about a minute)", (
        device_flag(), threads_flag(),
        Input("--out", "folder whose device_profiles/ receives <device key>.json", default="runs"))),
    Command("card", "write a run's model card (README.md in the run) from its own files", (run_arg(),)),
    Command("render-docs", "rewrite the run-derived tables of README.md and BENCHMARKS.md from the runs' files", (
        Input("--check", "change nothing; exit 2 naming the blocks that differ", "bool", False),
        Input("--repo", "the checkout whose docs and cached_runs/ to use", default="."))),
    Command("list", "table of runs", (Input("dirs", "folders holding runs (default: cached_runs runs)", "paths"),)),
)


COMMANDS: dict[str, Command] = {c.name: c for c in ALL}


def check_values(command: str, **values) -> None:
    """An API call (the app's, a script's) refused as the CLI refuses the same values: by their declarations."""
    for name, value in values.items():
        COMMANDS[command].input("--" + name.replace("_", "-")).check(value)
