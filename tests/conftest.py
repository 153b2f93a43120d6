"""Shared fixtures: tiny GPT-2 models (2 layers, 64 wide) and a tiny text corpus, all offline."""
from __future__ import annotations

import os
import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

WORDS = ("the king my lord good sir what shall we do now love night day sweet death heart "
         "come go thou art thy hath doth noble fair speak hear see").split()


def tiny_config(vocab_size=50257, n_positions=32, **kw) -> GPT2Config:
    return GPT2Config(n_layer=2, n_embd=64, n_head=8, n_inner=256, n_positions=n_positions, vocab_size=vocab_size,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **kw)


@pytest.fixture
def tiny_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(tiny_config(vocab_size=97)).eval()


def write_corpus(folder, n_files=4, lines=300, seed=0):
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) + "." for _ in range(lines))
        (folder / f"doc{i}.txt").write_text(text)
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory, corpus):
    """A tiny pretrained teacher run (real GPT-2 tokenizer, 2 layers, 64 wide)."""
    from nml_core import api
    from nml_core.training.config import TrainConfig
    out = tmp_path_factory.mktemp("runs") / "teacher"
    cfg = TrainConfig(steps=8, batch_size=4, ctx=32, lr=2e-3, log_every=2, checkpoint_every=4)
    api.pretrain(out, str(corpus), cfg, n_layer=2, n_embd=64, n_head=8)
    return out


@pytest.fixture(scope="session")
def nested_run(tmp_path_factory, teacher_run):
    from nml_core import api
    from nml_core.training.config import TrainConfig
    from nml_core.nesting.width import parse_axes
    out = tmp_path_factory.mktemp("runs") / "nested"
    cfg = TrainConfig(steps=4, batch_size=4, ctx=32, lr=1e-3, log_every=1, checkpoint_every=2)
    api.train_nested(out, str(teacher_run), None, [1.0, 0.5, 0.25, 0.125], parse_axes(None), cfg)
    return out


@pytest.fixture
def nested_copy(nested_run, tmp_path):
    """A private copy of the session's nested run, for tests that write into a run (baselines, eval, latency):
    the shared fixture stays as it was built."""
    import shutil
    dst = tmp_path / "nested"
    shutil.copytree(nested_run, dst)
    return dst


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run wherever a CUDA GPU is visible and skip elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
