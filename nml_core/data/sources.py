"""Text -> GPT-2 token files and the deterministic train/val split.

Sources (`--data D`):
  - a run directory or a folder holding train.bin + val.bin: used as is (uint16 tokens, nanoGPT style);
  - a .bin file: uint16 tokens, split by position (last 10% -> val);
  - a .txt file: tokenised, split by position (last 10% of tokens -> val);
  - a folder of .txt files: split by file (files sorted by name; every 10th, starting at the 10th, -> val;
    if fewer than 2 files, by position), so held-out text is whole files (plays);
  - hf:<dataset>[:<config>]: its train/validation splits via `datasets` (needs the hub or its cache).
Text files are cut into documents (nml_core.data.documents: scenes, poems), each followed by the tokenizer's
end-of-text token, GPT-2's convention; the split is by file before the cut, so no held-out text leaks.
The tokens are cached in the run's data/ dir.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NMLError
from ..files import atomic_write_bytes, atomic_write_json
from ..hub import hub_reachable
from .documents import split_documents

VAL_EVERY = 10  # one in VAL_EVERY files (or the last 1/VAL_EVERY of tokens) is validation
CONVENTION = ("GPT-2's: every document is followed by <|endoftext|>; documents are cut at natural boundaries "
              "(nml_core/data/documents.py: scenes of plays, numbered poems, else the whole file); "
              "training windows may cross document boundaries")


@dataclass
class TokenData:
    train: np.ndarray
    val: np.ndarray
    info: dict = field(default_factory=dict)  # source, split rule, held-out files, sha256 of each file


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


TOKEN_FILES = ("train.bin", "val.bin")
SHARED = "tokens_in"  # data.json: the folder (relative to this one) that holds this run's token files


def load_token_dir(path: Path) -> TokenData:
    """A run's (or a folder's) tokens. A run whose data.json names another folder's token files (`tokens_in`:
    runs of one family share one copy) reads them there, once their sha256 is the one recorded here."""
    path = Path(path)
    if has_tokens(path / "data"):
        path = path / "data"
    info = json.loads((path / "data.json").read_text()) if (path / "data.json").exists() else {"source": str(path)}
    files = path
    if info.get(SHARED) and not (path / "train.bin").exists():
        files = (path / info[SHARED]).resolve()
        for name in TOKEN_FILES:
            if not (files / name).is_file():
                raise NMLError(f"{path / 'data.json'} says its tokens are in {files}, but {name} is not there; "
                               "restore that run's data/ folder (git checkout cached_runs) or rebuild the run")
            if sha256_file(files / name) != info.get("sha256", {}).get(name):
                raise NMLError(f"{files / name} is not the token file {path / 'data.json'} recorded (sha256 "
                               "differs); restore it (git checkout cached_runs) or rebuild the run")
    return TokenData(read_bin(files / "train.bin"), read_bin(files / "val.bin"), info)


def has_tokens(path: Path) -> bool:
    """Whether a run dir (or folder) holds token files: its own, or a data.json naming shared ones."""
    path = Path(path)
    return any((d / f).is_file() for d in (path, path / "data") for f in ("train.bin", "data.json"))


def share_tokens(data_dir: Path, source: Path) -> bool:
    """Replace a run's token files by a reference to the same bytes in `source` (another run's data/ folder):
    only when both files' sha256 match; returns whether it did."""
    info = json.loads((data_dir / "data.json").read_text())
    if any(not (source / n).is_file() or sha256_file(source / n) != info.get("sha256", {}).get(n) for n in TOKEN_FILES):
        return False
    atomic_write_json(data_dir / "data.json", {**info, SHARED: os.path.relpath(source.resolve(), data_dir.resolve())})
    for n in TOKEN_FILES:
        (data_dir / n).unlink(missing_ok=True)
    return True


def read_bin(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise NMLError(f"token file {path} is missing")
    if Path(path).stat().st_size % 2:
        raise NMLError(f"{path} has an odd byte count; a .bin token file holds uint16 tokens")
    return np.memmap(path, dtype=np.uint16, mode="r")


def prepare_data(spec: str, tokenizer, out_dir: Path, min_tokens: int) -> TokenData:
    """Resolve `--data`, tokenise if needed, write out_dir/{train,val}.bin + data.json, return the tokens."""
    out_dir = Path(out_dir)
    if (out_dir / "train.bin").exists() and (out_dir / "data.json").exists():
        return load_token_dir(out_dir)  # already prepared by this run (resume)
    spec = str(spec)
    if spec.startswith("hf:"):
        train_ids, val_ids, info = _from_hf(spec, tokenizer)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise NMLError(f"--data {spec}: no such file or folder; give a .txt file/folder, a .bin file, a run dir or hf:<dataset>")
        if path.is_dir() and has_tokens(path):
            data = load_token_dir(path)
            _check_lengths(data.train, data.val, min_tokens, spec)
            out_dir.mkdir(parents=True, exist_ok=True)
            info = {**{k: v for k, v in data.info.items() if k != SHARED}, "copied_from": str(path)}
            return _save(out_dir, np.asarray(data.train), np.asarray(data.val), info)
        elif path.suffix == ".bin":
            train_ids, val_ids = _split_by_position(np.asarray(read_bin(path)))
            info = {"source": str(path), "split": f"by position: last 1/{VAL_EVERY} of the tokens is validation"}
        else:
            train_ids, val_ids, info = _from_text(path, tokenizer)
    _check_lengths(train_ids, val_ids, min_tokens, spec)
    return _save(out_dir, train_ids, val_ids, info)


def _save(out_dir: Path, train_ids, val_ids, info: dict) -> TokenData:
    for name, ids in (("train.bin", train_ids), ("val.bin", val_ids)):
        if not (out_dir / name).exists() or np.asarray(ids).size * 2 != (out_dir / name).stat().st_size:
            atomic_write_bytes(out_dir / name, np.asarray(ids, dtype=np.uint16).tobytes())
    info = {**info, "train_tokens": int(len(train_ids)), "val_tokens": int(len(val_ids)),
            "sha256": {n: sha256_file(out_dir / n) for n in ("train.bin", "val.bin")}}
    atomic_write_json(out_dir / "data.json", info)
    return load_token_dir(out_dir)


def _check_lengths(train_ids, val_ids, min_tokens: int, spec: str) -> None:
    for split, ids in (("train", train_ids), ("val", val_ids)):
        if len(ids) < min_tokens:
            raise NMLError(f"--data {spec}: the {split} split has {len(ids)} tokens, fewer than the {min_tokens} needed "
                           "for one context window; give more text or a smaller --ctx")


def _split_by_position(ids: np.ndarray):
    cut = len(ids) - len(ids) // VAL_EVERY
    return ids[:cut], ids[cut:]


def _encode_docs(texts: list[str], tokenizer) -> np.ndarray:
    if len(tokenizer) > 65536:
        raise NMLError(f"tokenizer has {len(tokenizer)} tokens; .bin files hold uint16, so at most 65536")
    eot = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eot is not None:
            ids.append(eot)
    return np.asarray(ids, dtype=np.uint16)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")


def _from_text(path: Path, tokenizer):
    files = sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise NMLError(f"--data {path}: the folder has no .txt files")
    texts = [_read_text(f) for f in files]
    if not any(t.strip() for t in texts):
        raise NMLError(f"--data {path}: the text is empty")
    info = {"source": str(path), "files": [f.name for f in files],
            "text_sha256": hashlib.sha256("".join(texts).encode()).hexdigest()}
    info["convention"] = CONVENTION
    if len(files) >= 2:  # split by file first, then cut documents: no held-out text leaks into train
        val_idx = {i for i in range(len(files)) if i % VAL_EVERY == VAL_EVERY - 1} or {len(files) - 1}
        info.update(split=f"by file: every {VAL_EVERY}th file (sorted by name) is validation",
                    val_files=[files[i].name for i in sorted(val_idx)])
        train_docs = [d for i, t in enumerate(texts) if i not in val_idx for d in split_documents(t)]
        val_docs = [d for i, t in enumerate(texts) if i in val_idx for d in split_documents(t)]
        info["documents"] = {"train": len(train_docs), "val": len(val_docs)}
        return _encode_docs(train_docs, tokenizer), _encode_docs(val_docs, tokenizer), info
    docs = [d for t in texts for d in split_documents(t)]
    train, val = _split_by_position(_encode_docs(docs, tokenizer))
    info.update(split=f"by position: last 1/{VAL_EVERY} of the tokens is validation", documents={"all": len(docs)})
    return train, val, info


def _from_hf(spec: str, tokenizer):
    parts = spec[3:].split(":")
    name, config = parts[0], (parts[1] if len(parts) > 1 else None)
    try:
        import datasets
        ds = datasets.load_dataset(name, config) if hub_reachable() else datasets.load_dataset(name, config, download_mode="reuse_cache_if_exists")
    except Exception as e:
        raise NMLError(f"--data {spec}: could not load the dataset ({type(e).__name__}: {str(e).splitlines()[0][:150]}); "
                       "check the name and network, or give a local .txt") from None
    column = "text" if "text" in ds["train"].column_names else ds["train"].column_names[0]
    train = _encode_docs(["\n".join(ds["train"][column])], tokenizer)
    info = {"source": spec, "column": column}
    if "validation" in ds:
        info["split"] = "the dataset's train / validation splits"
        return train, _encode_docs(["\n".join(ds["validation"][column])], tokenizer), info
    info["split"] = f"by position: last 1/{VAL_EVERY} of the tokens is validation"
    return (*_split_by_position(train), info)


def save_text_upload(name: str, raw: bytes, folder: Path, max_mb: float = 20) -> Path:
    """An uploaded text file, checked (size, UTF-8, not empty) and written whole into `folder`: a training
    source (`--data`). Bad uploads get one line naming the problem and the fix."""
    if len(raw) > max_mb * 1e6:
        raise NMLError(f"the upload is {len(raw) / 1e6:.1f} MB; the limit is {max_mb:g} MB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NMLError(f"the upload {name} is not UTF-8 text; save it as UTF-8 .txt and upload it again") from None
    if not text.strip():
        raise NMLError(f"the upload {name} is empty; choose a .txt file with text in it")
    path = Path(folder) / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(name).name}"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
