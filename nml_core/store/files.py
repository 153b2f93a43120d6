"""Files written whole or not at all (temp file + fsync + rename), and JSON read with a one-line error."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import NMLError

REBUILD_HINT = "rebuild it (cached runs: python scripts/build_cached_runs.py)"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, what: str = "file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise NMLError(f"{path} is missing; {REBUILD_HINT}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NMLError(f"{path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); {REBUILD_HINT}") from None
