"""Finding and loading GPT-2 teachers: hub ids, local HF directories and run directories.

Only safetensors weights are loaded and remote code is never trusted. With no network and no local copy,
a hub id fails at once with one line instead of retrying for minutes.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from .errors import NMLError
from .runs import RUN_FILE, check_model_dir, load_run, read_json

HUB_TEACHERS = {
    "distilgpt2": "distilgpt2 (HF 82M, distilled from OpenAI GPT-2)",
    "gpt2": "gpt2 (OpenAI 124M)",
    "gpt2-medium": "gpt2-medium (OpenAI 355M)",
    "gpt2-large": "gpt2-large (OpenAI 774M)",
}


_REACHABLE: dict[str, tuple[float, bool]] = {}
REACHABLE_TTL_S = 60.0


def hub_reachable(timeout: float = 2.0) -> bool:
    """Can huggingface.co be reached? The answer is remembered for a minute, so a page listing several hub
    models probes the network once, not once per model."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    hit = _REACHABLE.get("hub")
    if hit and time.monotonic() - hit[0] < REACHABLE_TTL_S:
        return hit[1]
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        ok = True
    except OSError:
        ok = False
    _REACHABLE["hub"] = (time.monotonic(), ok)
    return ok


def hub_cached(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        hit = try_to_load_from_cache(model_id, "config.json")
        return isinstance(hit, str)
    except Exception:
        return False


def hub_status(model_id: str) -> str:
    """'cached', 'downloadable' or 'unavailable' — shown before a user picks a hub teacher."""
    if hub_cached(model_id):
        return "cached"
    return "downloadable" if hub_reachable() else "unavailable"


def describe_shape(cfg) -> str:
    return f"{cfg.n_layer}L/{cfg.n_embd}d/{cfg.n_head}h"


def resolve_teacher(spec: str) -> tuple[str, dict]:
    """-> (model dir or hub id, info {id, source, label})."""
    path = Path(str(spec)).expanduser()
    if (path / RUN_FILE).exists():
        run = load_run(path)
        label = run.info.get("label") or f"run {run.name}"
        return str(run.model_dir), {"id": str(path), "source": "run", "label": label}
    if path.is_dir():
        cfg = read_json(path / "config.json")
        if cfg.get("model_type") != "gpt2":
            raise NMLError(f"teacher {path} is a {cfg.get('model_type')!r} model, not GPT-2; NML Explorer nests GPT-2 models only")
        return str(path), {"id": str(path), "source": "local", "label": f"local GPT-2 dir {path.name}"}
    if "/" in str(spec) and not spec.count("/") == 1:
        raise NMLError(f"teacher {spec}: no such directory; give a hub id (gpt2), a local HF GPT-2 dir or a run dir")
    if path.exists():
        raise NMLError(f"teacher {spec} is a file; give a directory (HF GPT-2 dir or run dir) or a hub id")
    if not hub_cached(spec) and not hub_reachable():
        raise NMLError(f"teacher {spec!r} is not in the local HF cache and huggingface.co is unreachable; "
                       "connect to the network, or use a local dir or run dir, e.g. --teacher cached_runs/shakespeare-teacher")
    return str(spec), {"id": str(spec), "source": "hub", "label": HUB_TEACHERS.get(spec, f"hub model {spec}")}


def load_gpt2(spec: str, device: str | torch.device = "cpu") -> tuple[GPT2LMHeadModel, object, dict]:
    """(model in fp32, tokenizer, info) for a teacher spec."""
    from .data import load_tokenizer
    where, info = resolve_teacher(spec)
    local = Path(where).is_dir()
    if local:
        check_model_dir(Path(where))
    try:
        model = GPT2LMHeadModel.from_pretrained(where, dtype=torch.float32, use_safetensors=True,
                                                local_files_only=local or hub_cached(where))
    except OSError as e:
        raise NMLError(f"could not load teacher {spec}: {str(e).splitlines()[0][:200]}") from None
    if model.config.model_type != "gpt2":
        raise NMLError(f"teacher {spec} is a {model.config.model_type!r} model, not GPT-2")
    try:
        tokenizer = load_tokenizer(where) if local else _hub_tokenizer(where)
    except NMLError:
        tokenizer = load_tokenizer()  # bundled GPT-2 BPE
    info["shape"] = {k: getattr(model.config, k) for k in ("n_layer", "n_embd", "n_head", "n_inner", "n_positions", "vocab_size")}
    info["shape"]["n_inner"] = model.config.n_inner or 4 * model.config.n_embd
    return model.to(device).eval(), tokenizer, info


def _hub_tokenizer(model_id: str):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_id)
