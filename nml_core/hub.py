"""Is the Hugging Face hub reachable, and is a model already in the local cache? Asked before loading a hub id,
so that an offline machine fails at once with one line instead of retrying for minutes."""
from __future__ import annotations

import os
import socket
import time

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
