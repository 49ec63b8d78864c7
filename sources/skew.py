"""Deterministic skewed choice: a few hot pages, products and devices get most of the traffic."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Zipf(Generic[T]):
    """Pick items with probability proportional to ``1 / rank**exponent``."""

    def __init__(self, items: Sequence[T], exponent: float = 1.1) -> None:
        if not items:
            raise ValueError("Zipf needs at least one item")
        self.items = list(items)
        weights = [1.0 / (rank**exponent) for rank in range(1, len(items) + 1)]
        self._cumulative = list(itertools.accumulate(weights))

    def pick(self, rng: random.Random) -> T:
        point = rng.random() * self._cumulative[-1]
        return self.items[bisect.bisect_right(self._cumulative, point)]
