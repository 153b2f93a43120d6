"""One declaration per user input: its type, its range or choices, whether it is optional, and its help.

The CLI's parser (nml_core.commands), TrainConfig's checks and the app's fields all read these declarations, so a
value is refused the same way wherever it is typed: one line naming the input, its range and a value that works.
Nothing is clamped in silence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import NMLError

INT_MAX = 10 ** 12  # no count this program takes comes near it; a bigger one is a typo, refused rather than run


@dataclass(frozen=True)
class Input:
    """A flag (`--max-tokens`) or a positional (`run`).

    kind: int | float | width (a fraction in (0, 1], `0.25` or `1/4`) | str | bool | paths (positional, any
    number) | repeat (a flag given once per value).
    low / high: the allowed range of a number, inclusive unless low_open (e.g. a learning rate > 0).
    default None with required False: optional (the help says what leaving it out means).
    """
    name: str
    help: str
    kind: str = "str"
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple | None = None
    required: bool = False
    label: str | None = None
    example: str | None = None  # a value that works, for the fix in an error line

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float", "width")

    @property
    def what(self) -> str:
        return {"int": "a whole number", "float": "a number", "width": "a fraction"}[self.kind]

    def bounds(self) -> str:
        return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"

    def range_text(self) -> str:
        return f"{self.what} in {self.bounds()}"

    def fix(self) -> str:
        value = self.example or (None if self.default is None else _num(self.default))
        if value is not None:
            return f"e.g. {self.name} {value}"
        return "or leave it out" if not self.required else f"see --help for {self.name}"

    def bad_values(self) -> list[str]:
        """Typed-in values this input must refuse: below its range, zero and negative where out of it, non-finite,
        huge and not a number (the generated rows of tests/test_bad_inputs.py)."""
        below = [self.low - 1 if self.kind == "int" else self.low - 0.5, 0, -1] + [self.low] * self.low_open
        out = [str(v) for v in dict.fromkeys(below) if v < self.low or (self.low_open and v == self.low)]
        return out + ["nan", "inf", "-inf", str(10 ** 30) if self.kind == "int" else "1e300", "1e400", "abc", ""]

    def parse(self, text: str):
        """The typed value of a typed-in string, or NMLError: one line naming the input, its range and the fix."""
        if not self.numeric:
            return text
        try:
            value = _parse_number(self.kind, str(text).strip())
        except (ValueError, ZeroDivisionError):
            raise NMLError(f"{self.name} {text!r} is not {self.what}; it takes {self.range_text()}, "
                           f"{self.fix()}") from None
        return self.check(value)

    def check(self, value):
        """The value itself when it is finite and in range (None where the input is optional), else one line."""
        if value is None and not self.required:
            return None
        if self.kind != "int" and not math.isfinite(float(value)):
            raise NMLError(f"{self.name} {value} is not a finite number; it takes {self.range_text()}, {self.fix()}")
        below = value < self.low or (self.low_open and value == self.low)
        if below or value > self.high:
            raise NMLError(f"{self.name} {_num(value)} is outside {self.bounds()}; {self.fix()}")
        return value


def parse_fraction(token: str) -> float:
    """Accept '0.25' and '1/4'."""
    token = token.strip()
    if "/" in token:
        num, den = token.split("/", 1)
        return float(num) / float(den)
    return float(token)


def _parse_number(kind: str, text: str):
    if kind == "int":
        return int(text)  # '1e3', '2.5' and 'nan' are not whole numbers: refused, not rounded
    return parse_fraction(text) if kind == "width" else float(text)


def _num(x) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else f"{x:g}" if isinstance(x, float) else str(x)


def count(name: str, help: str, default=None, low: int = 1, high: int = INT_MAX, **kw) -> Input:
    return Input(name, help, "int", default, low, high, **kw)


def number(name: str, help: str, default=None, low: float = 0.0, high: float = 1e9, low_open: bool = False,
           **kw) -> Input:
    return Input(name, help, "float", default, low, high, low_open, **kw)


def fraction(name: str, help: str, default=None, **kw) -> Input:
    """A width or depth: a fraction of the teacher in (0, 1] (whether the model can take it is WidthSpec's call)."""
    return Input(name, help, "width", default, 0.0, 1.0, True, **kw)
