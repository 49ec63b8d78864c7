"""Event ids as 16 bytes, vectorized: half the space of their text, and exact sets of them in numpy.

Decoded events carry ``event_id`` as canonical UUID text (36 lowercase characters, which both decode
paths produce). Deduplication keeps many of them, so stores hold the 16 bytes instead, and
``IdSet`` keeps them in memory as sorted pairs of 64-bit words: membership of a whole micro-batch is
one vectorized binary search, exact (no hashing, no false positives).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from lambda_contracts.plumbing.files import out_of_space

log = logging.getLogger(__name__)

UUID_TEXT = 36
DASHES = [8, 13, 18, 23]
ID_BYTES = pa.binary(16)
_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_DIGITS = [i for i in range(UUID_TEXT) if i not in DASHES]

MAPPED_FROM_IDS = 1 << 16
"""An ``IdSet`` with a folder keeps runs this large or larger in files there, mapped, not in its memory."""
MAPPED_RUN_IDS = 1 << 22
"""Mapped runs are merged up to this size (64 MiB): a merge reads its two runs into memory, so no larger."""

Words = npt.NDArray[np.uint64]
Where = Callable[[npt.NDArray[np.int32], npt.NDArray[np.int64]], npt.NDArray[np.bool_]]
"""Which stored copies count in a lookup, from where they were counted (partition tags, offsets)."""


def id_bytes(ids: pa.Array | pa.ChunkedArray) -> pa.FixedSizeBinaryArray:
    """Canonical UUID text -> 16 bytes each (raises on anything else)."""
    text = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if len(text) == 0:
        return pa.array([], ID_BYTES)
    text = text.cast(pa.string())
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    if (np.diff(offsets) != UUID_TEXT).any():
        raise ValueError("event ids must be canonical UUID text")
    chars = np.frombuffer(text.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(len(text), UUID_TEXT)
    nibbles = _HEX[chars[:, _DIGITS]]
    if (nibbles == 255).any():
        raise ValueError("event ids must be lowercase hexadecimal UUIDs")
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return pa.FixedSizeBinaryArray.from_buffers(ID_BYTES, len(text), [None, pa.py_buffer(packed.tobytes())])


def id_words(ids: pa.Array | pa.ChunkedArray) -> tuple[Words, Words]:
    """Event ids (text or 16 bytes) as two 64-bit words each, for exact vectorized set operations."""
    data = ids if pa.types.is_fixed_size_binary(ids.type) else id_bytes(ids)
    packed = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    if len(packed) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    raw = np.frombuffer(packed.buffers()[1], dtype=">u8")[packed.offset * 2 : (packed.offset + len(packed)) * 2]
    words = raw.astype(np.uint64).reshape(len(packed), 2)
    return words[:, 0].copy(), words[:, 1].copy()


def first_occurrences(high: Words, low: Words) -> npt.NDArray[np.bool_]:
    """For each id (as words, rows in offset order), whether it is the first row with it: the first copy.

    Sorting by the high word alone (stable, so copies stay in offset order) is exact unless two different
    ids share one, which random ids almost never do: then it sorts by both words."""
    count = len(high)
    order = np.argsort(high, kind="stable")
    sorted_high, sorted_low = high[order], low[order]
    same_high = sorted_high[1:] == sorted_high[:-1]
    if (same_high & (sorted_low[1:] != sorted_low[:-1])).any():
        order = np.lexsort((np.arange(count), low, high))
        sorted_high, sorted_low = high[order], low[order]
        same_high = sorted_high[1:] == sorted_high[:-1]
    starts = np.ones(count, dtype=np.bool_)
    starts[1:] = ~(same_high & (sorted_low[1:] == sorted_low[:-1]))
    first = np.zeros(count, dtype=np.bool_)
    first[order[starts]] = True
    return first


class IdSet:
    """A set of event ids, exact, in sorted runs of 64-bit word pairs (16 bytes an id).

    With ``positions``, each id carries where it was counted (Kafka partition and offset: 12 bytes
    more), so parts of the set can be dropped by position: everything a partition holds below a
    cutoff, or from an offset on. Without, it is a plain set (the batch's ids: 16 bytes an id).

    With a ``folder`` (plain sets only), runs of ``MAPPED_FROM_IDS`` ids or more are written there and
    memory-mapped, so the set's own memory stays small however many ids it holds: the kernel pages in
    what lookups touch and may drop it again. The files are unlinked once mapped (the space returns when
    the set goes, and a killed process leaves none behind). On a full disk a run stays in memory.
    """

    def __init__(self, positions: bool = True, folder: Path | None = None) -> None:
        if positions and folder is not None:
            raise ValueError("only an IdSet without positions keeps its runs in files")
        self.positions = positions
        self.folder = folder
        self._runs: list[dict[str, npt.NDArray[Any]]] = []

    def __len__(self) -> int:
        return sum(len(run["high"]) for run in self._runs)

    def add(self, ids: pa.Array | pa.ChunkedArray, partition: int = -1, offsets: npt.ArrayLike | None = None) -> None:
        self.add_words(*id_words(ids), partition=partition, offsets=offsets)

    def add_words(self, high: Words, low: Words, partition: int = -1, offsets: npt.ArrayLike | None = None) -> None:
        """``add`` for ids already split into words (a caller that looked them up first)."""
        if not len(high):
            return
        order = np.argsort(high, kind="stable")  # runs are sorted by the high word; lookups compare both
        if not self.positions:
            self._runs.append({"high": high[order], "low": low[order]})
            self._settle()
            return
        where = np.full(len(high), partition, dtype=np.int32)
        at = np.zeros(len(high), np.int64) if offsets is None else np.asarray(offsets, dtype=np.int64)
        self._runs.append({"high": high[order], "low": low[order], "partition": where[order], "offset": at[order]})
        self._settle()

    def add_set(self, other: IdSet) -> None:
        """Everything ``other`` holds, with where it was counted (both sets keep positions, or neither)."""
        if other.positions != self.positions:
            raise ValueError("an IdSet with positions and one without do not merge")
        for run in other._runs:
            self._runs.append(run)
            self._settle()

    def contains(self, ids: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.bool_]:
        """For each id, whether the set holds it."""
        return self.contains_words(*id_words(ids))

    def contains_words(self, high: Words, low: Words, where: Where | None = None) -> npt.NDArray[np.bool_]:
        """For each id, whether the set holds it; with ``where``, only copies it accepts (by partition
        and offset) count."""
        return self.classify_words(high, low, where)[0]

    def classify_words(
        self, high: Words, low: Words, where: Where | None = None
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """One search, two answers per id: held in a copy ``where`` accepts; held in a copy it does not."""
        if not self._runs:
            return np.zeros(len(high), dtype=np.bool_), np.zeros(len(high), dtype=np.bool_)
        if where is not None:
            self._need_positions()
        # binary searches of keys in ascending order are several times faster (numpy narrows each search
        # from the previous key's answer, and touches memory in order): search sorted, answer in place
        order = np.argsort(high)
        high, low = high[order], low[order]
        accepted = np.zeros(len(high), dtype=np.bool_)
        other = np.zeros(len(high), dtype=np.bool_)
        for run in self._runs:
            run_high, run_low = run["high"], run["low"]
            index = np.searchsorted(run_high, high, side="left")
            same = index < len(run_high)
            while same.any():  # each copy with an equal high word (almost never more than one)
                index = np.minimum(index, len(run_high) - 1)
                same &= run_high[index] == high
                hit = same & (run_low[index] == low)
                if where is None:
                    accepted |= hit
                elif hit.any():
                    ok = where(run["partition"][index], run["offset"][index])
                    accepted |= hit & ok
                    other |= hit & ~ok
                index = index + 1
                same &= index < len(run_high)
        in_place = np.empty_like(accepted), np.empty_like(other)
        in_place[0][order], in_place[1][order] = accepted, other
        return in_place

    def retag(self, partition: int, from_offset: int, tag: int) -> None:
        """Move what ``partition`` counted from ``from_offset`` on under another tag (kept, not dropped)."""
        self._need_positions()
        for run in self._runs:
            moved = (run["partition"] == partition) & (run["offset"] >= from_offset)
            run["partition"][moved] = tag

    def drop(self, partition: int, below: int | None = None, from_offset: int | None = None) -> None:
        """Forget what ``partition`` counted below ``below`` and/or from ``from_offset`` on (all if neither)."""

        def gone(run: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.bool_]:
            found: npt.NDArray[np.bool_] = run["partition"] == partition
            if below is not None or from_offset is not None:
                outside = np.zeros(len(found), dtype=np.bool_)
                if below is not None:
                    outside |= run["offset"] < below
                if from_offset is not None:
                    outside |= run["offset"] >= from_offset
                found &= outside
            return found

        self._forget(gone)

    def drop_ids(self, partition: int, ids: IdSet, from_offset: int = 0) -> None:
        """Forget the ids of ``ids`` that ``partition`` counted from ``from_offset`` on (its other ids stay)."""

        def gone(run: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.bool_]:
            found: npt.NDArray[np.bool_] = (run["partition"] == partition) & (run["offset"] >= from_offset)
            if found.any():
                found[found] = ids.contains_words(run["high"][found], run["low"][found])
            return found

        self._forget(gone)

    def _forget(self, gone: Callable[[dict[str, npt.NDArray[Any]]], npt.NDArray[np.bool_]]) -> None:
        """Remove from every run the entries ``gone`` marks (runs left empty go)."""
        self._need_positions()
        kept = []
        for run in self._runs:
            marked = gone(run)
            remaining = {name: values[~marked] for name, values in run.items()} if marked.any() else run
            if len(remaining["high"]):
                kept.append(remaining)
        self._runs = kept

    def overlaps(self, other: IdSet, partition: int, from_offset: int = 0) -> bool:
        """Whether ``other`` holds any id this set has for ``partition`` at ``from_offset`` or later."""
        self._need_positions()
        for run in self._runs:
            mine = (run["partition"] == partition) & (run["offset"] >= from_offset)
            if mine.any() and other.contains_words(run["high"][mine], run["low"][mine]).any():
                return True
        return False

    def _settle(self) -> None:
        """Merge the newest runs while the one before is at most twice as large: about log2(n) runs, and
        each id is merged about log2(n) times over its life (amortised, like a log-structured merge).
        Mapped runs stop growing at ``MAPPED_RUN_IDS``: n / MAPPED_RUN_IDS runs more, each searched."""
        while len(self._runs) > 1:
            before, last = len(self._runs[-2]["high"]), len(self._runs[-1]["high"])
            if before > 2 * last or (self.folder is not None and before + last > MAPPED_RUN_IDS):
                break
            last_run, before_run = self._runs.pop(), self._runs.pop()
            merged = {name: np.concatenate([before_run[name], last_run[name]]) for name in last_run}
            order = np.argsort(merged["high"], kind="stable")  # two sorted runs: a linear merge
            self._runs.append({name: values[order] for name, values in merged.items()})
        if self.folder is not None and self._runs and len(self._runs[-1]["high"]) >= MAPPED_FROM_IDS:
            self._runs[-1] = self._mapped(self._runs[-1], self.folder)

    @staticmethod
    def _mapped(run: dict[str, npt.NDArray[Any]], folder: Path) -> dict[str, npt.NDArray[Any]]:
        if isinstance(run["high"], np.memmap):
            return run
        mapped: dict[str, npt.NDArray[Any]] = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, values in run.items():
                descriptor, path = tempfile.mkstemp(prefix="ids-", suffix=".npy", dir=folder)
                try:
                    with os.fdopen(descriptor, "wb") as out:
                        np.save(out, values)
                    mapped[name] = np.load(path, mmap_mode="r")
                finally:
                    Path(path).unlink()  # the mapping keeps the data until the set lets go of it
        except OSError as error:
            if not out_of_space(error):
                raise
            log.warning("no space left in %s for %d event ids: keeping them in memory", folder, len(run["high"]))
            return run
        return mapped

    def _need_positions(self) -> None:
        if not self.positions:
            raise ValueError("this IdSet keeps no positions (partitions, offsets) to select by")

    @classmethod
    def of(cls, chunks: Iterable[pa.Array | pa.ChunkedArray]) -> IdSet:
        """A plain set (no positions) of every id in ``chunks``."""
        made = cls(positions=False)
        for chunk in chunks:
            made.add(chunk)
        return made
