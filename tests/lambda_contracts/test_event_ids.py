"""Property: ``IdSet`` and ``first_occurrences`` answer exactly what a Python set and a first-seen scan do.

Ids are drawn from a small pool whose members share high words in pairs, so the rare case of
two different ids with one high word (the lookups compare both words) is drawn often.
"""

from __future__ import annotations

import errno
import tempfile
import uuid
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_contracts.plumbing import event_ids
from lambda_contracts.plumbing.event_ids import IdSet, first_occurrences, id_words

pytestmark = pytest.mark.unit

HIGHS = [f"{i:08x}-0000-4000" for i in range(6)]
POOL = [str(uuid.UUID(f"{high}-8000-{low:012x}")) for high in HIGHS for low in (1, 2)]
"""Twelve ids, two per high word."""

ids_lists = st.lists(st.sampled_from(POOL), max_size=30)
counted = st.tuples(ids_lists, st.integers(0, 3))
"""Ids counted on one partition (0-3), at consecutive offsets."""


def _words(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return id_words(pa.array(ids, pa.string()))


@settings(max_examples=300, deadline=None)
@given(adds=st.lists(counted, max_size=8), asked=ids_lists, partition=st.integers(0, 3), start=st.integers(0, 20))
def test_an_id_set_holds_what_was_added_and_tells_where(
    adds: list[tuple[list[str], int]], asked: list[str], partition: int, start: int
) -> None:
    held = IdSet()
    model: list[tuple[str, int, int]] = []
    for ids, on in adds:
        offsets = list(range(len(ids)))
        if ids:
            held.add_words(*_words(ids), partition=on, offsets=offsets)
        model += [(i, on, at) for i, at in zip(ids, offsets, strict=True)]

    def where(tags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return np.asarray((tags == partition) & (offsets >= start))

    accepted, other = held.classify_words(*_words(asked), where=where)
    for index, asked_id in enumerate(asked):
        copies = [(on, at) for i, on, at in model if i == asked_id]
        assert accepted[index] == any(on == partition and at >= start for on, at in copies)
        assert other[index] == any(not (on == partition and at >= start) for on, at in copies)
    assert list(held.contains(pa.array(asked, pa.string()))) == [any(i == a for i, _, _ in model) for a in asked]

    held.drop(partition, below=start)
    left = {i for i, on, at in model if not (on == partition and at < start)}
    assert list(held.contains(pa.array(POOL, pa.string()))) == [i in left for i in POOL]


@settings(max_examples=300, deadline=None)
@given(ids=ids_lists)
def test_first_occurrences_marks_each_ids_first_row(ids: list[str]) -> None:
    seen: set[str] = set()
    expected = []
    for i in ids:
        expected.append(i not in seen)
        seen.add(i)
    assert list(first_occurrences(*_words(ids))) == expected


@settings(max_examples=200, deadline=None)
@given(adds=st.lists(ids_lists, max_size=8), asked=ids_lists)
def test_an_id_set_without_positions_holds_what_was_added(adds: list[list[str]], asked: list[str]) -> None:
    """The batch's ids: a plain set (16 bytes an id), merged from runs like the other."""
    held, other = IdSet(positions=False), IdSet(positions=False)
    for index, ids in enumerate(adds):
        (held if index % 2 else other).add(pa.array(ids, pa.string()))
    held.add_set(other)
    model = {i for ids in adds for i in ids}
    assert list(held.contains(pa.array(asked, pa.string()))) == [a in model for a in asked]
    assert len(held) == sum(len(ids) for ids in adds)


@settings(max_examples=200, deadline=None)
@given(adds=st.lists(ids_lists, max_size=10), asked=ids_lists)
def test_an_id_set_in_files_holds_what_was_added_and_leaves_no_file(adds: list[list[str]], asked: list[str]) -> None:
    """The batch's ids kept mapped (small thresholds here: runs of 4 ids or more go to files, merged up
    to 16): the same answers, the large runs mapped, and nothing left on disk."""
    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(event_ids, "MAPPED_FROM_IDS", 4),
        mock.patch.object(event_ids, "MAPPED_RUN_IDS", 16),
    ):
        held = IdSet(positions=False, folder=Path(folder))
        for ids in adds:
            held.add(pa.array(ids, pa.string()))
        model = {i for ids in adds for i in ids}
        assert list(held.contains(pa.array(asked, pa.string()))) == [a in model for a in asked]
        assert len(held) == sum(len(ids) for ids in adds)
        for run in held._runs:
            assert isinstance(run["high"], np.memmap) == (len(run["high"]) >= 4)
        assert not list(Path(folder).iterdir()), "mapped files are unlinked at once"


def test_an_id_set_in_files_keeps_a_run_in_memory_when_the_disk_is_full(tmp_path: Path) -> None:
    held = IdSet(positions=False, folder=tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device")
    with mock.patch.object(event_ids, "MAPPED_FROM_IDS", 2), mock.patch.object(np, "save", side_effect=full):
        held.add(pa.array(POOL, pa.string()))
    assert not isinstance(held._runs[0]["high"], np.memmap)
    assert held.contains(pa.array(POOL, pa.string())).all()
    assert not list(tmp_path.iterdir()), "the file that could not be written is gone"


def test_only_an_id_set_without_positions_keeps_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without positions"):
        IdSet(folder=tmp_path)


def test_an_id_set_without_positions_refuses_to_select_by_them() -> None:
    plain = IdSet(positions=False)
    plain.add(pa.array(POOL[:2], pa.string()))
    with pytest.raises(ValueError, match="no positions"):
        plain.drop(0, below=5)
    with pytest.raises(ValueError, match="no positions"):
        plain.classify_words(*_words(POOL[:1]), where=lambda tags, offsets: tags == 0)
    with pytest.raises(ValueError, match="do not merge"):
        IdSet().add_set(plain)


def test_drop_ids_forgets_only_those_ids_of_that_partition_from_that_offset_on() -> None:
    ids = [uuid.uuid4().bytes for _ in range(6)]
    counted = IdSet()
    counted.add(pa.array(ids[:4], pa.binary(16)), partition=1, offsets=[10, 11, 12, 13])
    counted.add(pa.array(ids[2:], pa.binary(16)), partition=5, offsets=[20, 21, 22, 23])
    dropped = IdSet(positions=False)
    dropped.add(pa.array([ids[0], ids[2], ids[3], ids[5]], pa.binary(16)))

    counted.drop_ids(1, dropped, from_offset=11)

    def held_on(partition: int) -> list[bool]:
        high, low = id_words(pa.array(ids, pa.binary(16)))
        return [bool(held) for held in counted.contains_words(high, low, where=lambda tags, _: tags == partition)]

    assert held_on(1) == [True, True, False, False, False, False], "ids[0] is below the offset; ids[1] not dropped"
    assert held_on(5) == [False, False, True, True, True, True], "another partition's counts of them stay"
