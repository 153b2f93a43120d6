"""Files written whole or not at all (temp file + fsync + rename), and JSON read with a one-line error."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import NMLError

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


def check_new_folder(path: Path, flag: str = "--out", ours: frozenset = frozenset()) -> None:
    """A command that creates a folder the user names writes only into a new or empty one (files named in `ours`,
    its own markers, do not count): a file, a folder holding other files or a place it cannot write is one line,
    before anything is written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NMLError(f"{flag} {path} is a file; name a new or empty folder")
    if path.exists() and any(p.name not in ours for p in path.iterdir()):
        raise NMLError(f"{flag} {path} is a non-empty folder that nml did not write; name a new or empty folder "
                       "(nothing was written)")
    parent = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise NMLError(f"{flag} {path} is not writable here; name a folder you can write to")
