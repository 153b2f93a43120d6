"""The runs under some folders."""
from __future__ import annotations

from ..store.runs import Run, find_runs


def list_runs(*dirs) -> list[Run]:
    return find_runs(*dirs)
