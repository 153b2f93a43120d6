"""Cutting a text into documents at its natural boundaries, for GPT-2's convention: every document is followed by
`<|endoftext|>`, and tools that score or prompt a GPT-2 start a document right after that token. A model only
learns what follows `<|endoftext|>` if it sees many document starts, so a play is not one document but many.

  plays    one document per scene (the act heading goes with the scene it opens); a scene shorter than
           MIN_CHARS joins the next one (the acts whose scenes are tiny); the front matter (title, persons
           of the play) is a document of its own if it is long enough, else it opens the first scene
  sonnets  a collection of numbered poems (a roman numeral alone on a line, >= MIN_POEMS of them): one
           document per poem
  other    the whole text (a poem, an essay, a user's file) is one document
"""
from __future__ import annotations

import re

SCENE = re.compile(r"^\s*(SCENE|Scene)\s+([IVXLC]+|\d+)\b")
ACT = re.compile(r"^\s*(ACT|Act)\s+([IVXLC]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b\.?\s*$")
NUMERAL = re.compile(r"^\s*[IVXLC]+\.?\s*$")
MIN_CHARS = 1500   # ~400 tokens: shorter scenes join the next one
MIN_SCENES = 2     # a text with fewer scene headings is not cut as a play
MIN_POEMS = 10     # a text with fewer numeral headings is not cut as a collection


def split_documents(text: str) -> list[str]:
    """The documents of one text file, in order; their concatenation is the text (nothing dropped)."""
    lines = text.splitlines(keepends=True)
    scenes = [i for i, line in enumerate(lines) if SCENE.match(line)]
    if len(scenes) >= MIN_SCENES:
        return _merge_small(_cut(lines, [_with_act_heading(lines, i) for i in scenes]))
    poems = [i for i, line in enumerate(lines) if NUMERAL.match(line)]
    if len(poems) >= MIN_POEMS:
        return _merge_small(_cut(lines, poems), min_chars=200)  # a title page opens the first poem
    return [text] if text.strip() else []


def _with_act_heading(lines: list[str], i: int) -> int:
    """Start a scene at the act heading just above it (blank lines between allowed)."""
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return j if j >= 0 and ACT.match(lines[j]) else i


def _cut(lines: list[str], starts: list[int]) -> list[str]:
    bounds = [0] + sorted(set(starts) - {0}) + [len(lines)]
    docs = ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]
    return [d for d in docs if d.strip()]


def _merge_small(docs: list[str], min_chars: int = MIN_CHARS) -> list[str]:
    """Join every document shorter than min_chars to the next one (the last one to the previous)."""
    out: list[str] = []
    carry = ""
    for doc in docs:
        doc = carry + doc
        carry = doc if len(doc) < min_chars else ""
        if not carry:
            out.append(doc)
    if carry:
        if out:
            out[-1] += carry
        else:
            out.append(carry)
    return out
