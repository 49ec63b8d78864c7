"""The vectorized decoder agrees with pydantic, record by record, on valid and invalid bytes alike."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_contracts.columns import events_to_arrow
from lambda_contracts.intake import split
from lambda_contracts.plumbing import micro_batch
from lambda_contracts.plumbing.micro_batch import decode_micro_batch
from lambda_contracts.serde import JsonSerde
from sources.simulators import merged_records
from tests.fakes import FakeRecord
from tests.flows import lively_simulators

pytestmark = pytest.mark.unit
serde = JsonSerde()
START = datetime(2026, 11, 24, 9, tzinfo=UTC)


def _canonical_samples() -> list[bytes]:
    simulators = lively_simulators(seed=5, start=START, rate=50.0, duplicate_share=0.0, malformed_share=0.0)
    return [r.value for r in itertools.islice(merged_records(simulators), 400)]


CANONICAL = _canonical_samples()


def assert_same_as_pydantic(values: Sequence[bytes | None]) -> None:
    records = [FakeRecord(value, offset, partition=offset % 2) for offset, value in enumerate(values)]
    records.sort(key=lambda r: (r.partition, r.offset))
    rows, rejected = decode_micro_batch(records, serde, rejected_by="test")
    accepted, expected_rejected = split(records, serde, rejected_by="test")
    assert rows.to_pylist() == events_to_arrow(accepted).to_pylist()
    assert [(d.source_offset, d.reason, d.original_value) for d in rejected] == [
        (d.source_offset, d.reason, d.original_value) for d in expected_rejected
    ]


def test_what_the_encoder_writes_takes_the_fast_path() -> None:
    records = [FakeRecord(value, offset) for offset, value in enumerate(CANONICAL)]
    rows, taken = micro_batch._canonical_rows(records)
    assert all(taken), "every canonical record is decoded without pydantic"
    assert {kind for kind in rows.column("event_type").to_pylist()} == {
        "page_view",
        "add_to_cart",
        "purchase",
        "sensor_reading",
    }
    assert_same_as_pydantic(list(CANONICAL))


def test_malformed_and_non_canonical_records_go_to_pydantic() -> None:
    simulators = lively_simulators(seed=8, start=START, rate=50.0, duplicate_share=0.1, malformed_share=0.2)
    values = [r.value for r in itertools.islice(merged_records(simulators), 600)]
    sample = CANONICAL[0]
    variants = [
        sample.replace(b'","source"', b'", "source"'),  # whitespace: valid, not canonical
        sample.replace(sample[13:49], sample[13:49].upper()),  # upper-case UUID: valid, not canonical
        sample.replace(b'Z","entity_key"', b'+00:00","entity_key"'),  # an explicit offset
        None,
        b"",
        '{"x":"\u00e9"}'.encode(),
    ]
    assert_same_as_pydantic(values + variants)


EDGES = [
    (b"-11-24T", b"-02-30T"),  # no such day
    (b"-11-24T", b"-13-01T"),
    (b"T09:", b"T24:"),
    (b":00.", b":60."),
    (b'"schema_version":1', b'"schema_version":2'),
    (b'"source":"web"', b'"source":"sensor"'),
    (b'"source":"sensor"', b'"source":"app"'),
    (b'"duration_ms":', b'"duration_ms":864000'),  # prefixes digits: out of range
    (b'"quantity":', b'"quantity":1000'),
    (b'"unit_price":', b'"unit_price":9999999'),
    (b'"value":', b'"value":-99999999'),
    (b'"currency":"', b'"currency":"x'),
    (b'"referrer":', b'"referrer":""'),
]


@pytest.mark.parametrize(("old", "new"), EDGES)
def test_edge_cases_agree_with_pydantic(old: bytes, new: bytes) -> None:
    changed = [value.replace(old, new, 1) for value in CANONICAL if old in value]
    assert changed, f"no sample contains {old!r}"
    assert_same_as_pydantic(changed)


INTERESTING = st.sampled_from([*b'0159-.:"\\ aAZeE{}[],nT', 0, 0x1F, 0x7F, 0xC3])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(CANONICAL), st.integers(0, 400), INTERESTING, st.integers(0, 2)), max_size=6))
def test_byte_mutations_agree_with_pydantic(mutations: list[tuple[bytes, int, int, int]]) -> None:
    values = []
    for original, position, byte, how in mutations:
        at = position % len(original)
        tail = original[at + 1 :] if how != 1 else original[at:]  # replace, insert or delete one byte
        values.append(original[:at] + (bytes([byte]) if how != 2 else b"") + tail)
    assert_same_as_pydantic(values + CANONICAL[:3])


def test_an_empty_batch_has_the_event_schema() -> None:
    rows, rejected = decode_micro_batch([], serde, rejected_by="test")
    assert rows.schema == events_to_arrow([]).schema and rows.num_rows == 0 and not rejected
    assert isinstance(rows, pa.Table)
