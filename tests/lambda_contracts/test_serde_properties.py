"""Property: every byte string is either a valid event or a dead letter; nothing escapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_contracts.dead_letter import DeadLetter
from lambda_contracts.intake import split
from lambda_contracts.serde import JsonSerde, Rejection
from sources.knobs import Knobs
from sources.simulators import SIMULATORS
from tests.fakes import FakeRecord

pytestmark = pytest.mark.unit
serde = JsonSerde()
START = datetime(2026, 11, 24, tzinfo=UTC)


def _valid_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for simulator_type in SIMULATORS.values():
        records = simulator_type(Knobs(seed=3), serde, START).records()
        events.extend(json.loads(next(records).value) for _ in range(3))
    return events


VALID = _valid_events()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _classified(data: bytes | None) -> None:
    result = serde.decode(data)
    if isinstance(result, Rejection):
        assert result.reason, "a rejection always says why"
        accepted, rejected = split([FakeRecord(data, 7)], serde, rejected_by="test")
        assert not accepted
        [letter] = rejected
        assert letter.original_value == data, "the dead letter keeps the original bytes"
        assert DeadLetter.from_record(letter.original_value, letter.headers()) == letter
    else:
        assert serde.decode(serde.encode(result)) == result


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _classified(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.sampled_from(["", "payload"]), st.text(max_size=15), json_values)
def test_mutated_events_are_valid_or_dead_letters(event: dict[str, Any], where: str, field: str, value: Any) -> None:
    mutated = json.loads(json.dumps(event))
    target = mutated["payload"] if where else mutated
    target[field or next(iter(target))] = value
    _classified(json.dumps(mutated).encode())


@given(st.sampled_from(VALID), st.integers(min_value=0, max_value=400))
def test_truncated_events_are_dead_letters(event: dict[str, Any], cut: int) -> None:
    raw = json.dumps(event).encode()
    truncated = raw[: min(cut, len(raw) - 1)]
    assert isinstance(serde.decode(truncated), Rejection)
    _classified(truncated)
