"""Numbers as ComfyUI will read them, and ranges of them.

ComfyUI casts an INT or FLOAT input with `int(value)` / `float(value)`, so `"1000000000"`, `" 12 "`,
`"1_000"` and `"١٢"` (Arabic-Indic digits) are all numbers to it, and `"inf"` is infinity to
`float`. A bound must read them the same way, or a string walks past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def as_number(value: Any) -> float | None:
    """The number ComfyUI would cast `value` to, or None for anything that is not one (links,
    booleans, text). Non-finite results (`"inf"`, `"nan"`, `"9" * 5000`) are returned as they are:
    the caller refuses them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _as_float(value)
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return _as_float(cast(value))
            except ValueError:
                continue
    return None


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int past the float range ("9" * 400)
        return math.inf if value > 0 else -math.inf


def number_text(value: float) -> str:
    if math.isinf(value):
        return "unbounded"
    if float(value).is_integer() and abs(value) < 1e18:
        return str(int(value))
    return f"{value:.6g}"


@dataclass(frozen=True)
class Span:
    """A quantity known to lie in [lo, hi]; `hi` is infinite when nothing bounds it (an image loaded
    from disk has a size nobody knows before it runs)."""

    lo: float
    hi: float

    @classmethod
    def exactly(cls, value: float) -> Span:
        return cls(abs(value), abs(value))

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    @property
    def known(self) -> bool:
        return math.isfinite(self.hi)

    def __mul__(self, other: Span) -> Span:
        lo = self.lo * other.lo
        return Span(0.0 if math.isnan(lo) else lo, _product(self.hi, other.hi))

    def __add__(self, other: Span) -> Span:
        return Span(self.lo + other.lo, self.hi + other.hi)

    def __truediv__(self, other: Span) -> Span:
        lo = self.lo / other.hi if other.hi else self.lo
        hi = self.hi / other.lo if other.lo else math.inf
        return Span(lo, hi)

    def join(self, other: Span) -> Span:
        """What either of two inputs may be."""
        return Span(min(self.lo, other.lo), max(self.hi, other.hi))

    def raised_to(self, other: Span) -> Span:
        """At least `other`: a count set on images that already have one never makes it smaller
        here (RebatchLatents regroups a batch without dropping any of it)."""
        return Span(max(self.lo, other.lo), max(self.hi, other.hi))

    def at_least_one(self) -> Span:
        return Span(max(self.lo, 1.0), max(self.hi, 1.0))

    def over(self, limit: float) -> bool:
        """Beyond the limit for sure when unbounded above, or possibly when bounded."""
        return (self.hi if self.known else self.lo) > limit

    def text(self) -> str:
        if self.exact:
            return number_text(self.hi)
        if not self.known:
            return f"at least {number_text(self.lo)}"
        return f"up to {number_text(self.hi)}"


def _product(a: float, b: float) -> float:
    # inf * 0 is nan; an unknown side times a zero factor is still unknown.
    return math.inf if math.isinf(a) or math.isinf(b) else a * b


ONE = Span(1.0, 1.0)
UNKNOWN = Span(1.0, math.inf)
