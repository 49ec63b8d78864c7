"""Avro beside JSON: versioned schemas in the Confluent wire format, mixed on one topic, same events.

JSON v1, Avro v1 and Avro v2 records of the same events decode to the same rows; version 2's new
field is skipped by the contract's reader (forward) and defaulted for a version 2 reader of version 1
records (backward); an incompatible or edited schema is refused before it ships; bad Avro bytes of any
kind become dead letters with their bytes and a reason, never an exception.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambda_contracts.avro_compat import incompatibilities
from lambda_contracts.intake import split
from lambda_contracts.plumbing.micro_batch import decode_micro_batch
from lambda_contracts.schema_registry import (
    CATALOG_FOLDER,
    Catalog,
    canonical_fingerprint,
    check_catalog,
    events_catalog,
    load_catalog,
)
from lambda_contracts.serde import WIRE, AvroSerde, JsonSerde, Rejection, get_serde
from sources.knobs import Knobs
from sources.simulators import SIMULATORS
from tests.fakes import FakeRecord

pytestmark = pytest.mark.unit
START = datetime(2026, 11, 24, tzinfo=UTC)
FORMATS = ("json", "avro-v1", "avro-v2")


def _json_records(count: int, malformed_share: float = 0.0) -> list[bytes]:
    values: list[bytes] = []
    for simulator_type in SIMULATORS.values():
        knobs = Knobs(seed=11, malformed_share=malformed_share, duplicate_share=0.05)
        values += [r.value for r in islice(simulator_type(knobs, JsonSerde(), START).records(), count)]
    return values


def _reencoded(values: list[bytes], seed: int) -> list[bytes]:
    """The same records, each valid one in a format picked at random (bad ones stay as they are)."""
    rng = random.Random(seed)
    mixed = []
    for value in values:
        event = JsonSerde().decode(value)
        mixed.append(value if isinstance(event, Rejection) else get_serde(rng.choice(FORMATS)).encode(event))
    return mixed


def test_every_format_decodes_to_the_same_event() -> None:
    for value in _json_records(50):
        event = JsonSerde().decode(value)
        assert not isinstance(event, Rejection)
        for name in ("avro-v1", "avro-v2"):
            encoded = get_serde(name).encode(event)
            assert encoded[0] == 0 and int.from_bytes(encoded[1:5], "big") == int(name[-1])
            assert WIRE.decode(encoded) == event
            assert len(encoded) < len(value) / 2, "Avro carries no field names: well under half of JSON"


def test_interleaved_formats_give_the_rows_and_dead_letters_of_json() -> None:
    json_values = _json_records(400, malformed_share=0.03)
    mixed = _reencoded(json_values, seed=4)
    assert {v[:1] for v in mixed} >= {b"{", b"\x00"}
    as_records = [
        [FakeRecord(v, offset=i // 3, partition=i % 3) for i, v in enumerate(values)] for values in (json_values, mixed)
    ]
    (json_rows, json_rejected), (mixed_rows, mixed_rejected) = (
        decode_micro_batch(records, WIRE, rejected_by="test") for records in as_records
    )
    assert json_rows.num_rows > 1000 and json_rejected
    assert mixed_rows.equals(json_rows)
    assert [(d.source_partition, d.source_offset) for d in mixed_rejected] == [
        (d.source_partition, d.source_offset) for d in json_rejected
    ]


def test_version_2_field_is_skipped_by_old_readers_and_defaulted_for_new_ones() -> None:
    event = JsonSerde().decode(next(v for v in _json_records(30) if b'"page_view"' in v))
    assert not isinstance(event, Rejection)
    v1_bytes = get_serde("avro-v1").encode(event)
    written = AvroSerde(1).decode_record(v1_bytes)
    assert not isinstance(written, Rejection)
    record = {**written, "payload": ("lambda.events.PageViewPayload", {**written["payload"], "user_agent": "app/7.2"})}
    v2_bytes = AvroSerde(2).encode_record(record)

    new_reader = AvroSerde(2, reader_version=2)
    read_new = new_reader.decode_record(v2_bytes)
    read_old_by_new = new_reader.decode_record(v1_bytes)
    assert not isinstance(read_new, Rejection) and not isinstance(read_old_by_new, Rejection)
    assert read_new["payload"]["user_agent"] == "app/7.2"  # a new consumer sees the new field
    assert read_old_by_new["payload"]["user_agent"] is None  # backward: v1 records get its default
    old_reader = AvroSerde(1, reader_version=1)
    read_by_old = old_reader.decode_record(v2_bytes)
    assert not isinstance(read_by_old, Rejection) and "user_agent" not in read_by_old["payload"]  # forward
    assert WIRE.decode(v2_bytes) == WIRE.decode(v1_bytes) == event  # the platform's events do not change


def test_the_shipped_catalog_may_ship_and_incompatible_changes_are_refused(tmp_path: Path) -> None:
    assert check_catalog(events_catalog()) == []
    v2 = events_catalog().version(2).source

    def refused(change: Any) -> list[str]:
        newer = copy.deepcopy(v2)
        change(newer)
        return check_catalog(_with_version_3(tmp_path, newer))

    def page(schema: dict[str, Any]) -> list[dict[str, Any]]:
        fields: list[dict[str, Any]] = schema["fields"][5]["type"][0]["fields"]  # PageViewPayload's
        return fields

    required = refused(lambda s: page(s).append({"name": "screen", "type": "string"}))
    assert any("version 3 cannot read version 1 (backward)" in p and "screen" in p for p in required), required
    dropped = refused(lambda s: page(s).pop(0))  # `page` has no default: old readers need it
    assert any("version 1 cannot read version 3 (forward)" in p and ".page" in p for p in dropped), dropped
    retyped = refused(lambda s: page(s)[3].update(type="string"))  # duration_ms: long -> string
    assert any("duration_ms" in p and "cannot be read as string" in p for p in retyped), retyped
    new_symbol = refused(lambda s: s["fields"][1]["type"]["symbols"].append("kiosk"))
    assert any("forward" in p and "kiosk" in p for p in new_symbol), new_symbol
    assert refused(lambda s: page(s).append({"name": "screen", "type": ["null", "string"], "default": None})) == []

    edited = copy.deepcopy(v2)
    page(edited)[4]["default"] = "unknown"  # a registered version edited in place
    catalog = load_catalog(CATALOG_FOLDER)
    catalog = Catalog(catalog.subject, 1, (catalog.versions[0], replace(catalog.versions[1], source=edited)))
    assert any("version 2 changed after it was registered" in p for p in check_catalog(catalog))


def _with_version_3(folder: Path, schema: dict[str, Any]) -> Catalog:
    shipped = json.loads((CATALOG_FOLDER / "catalog.json").read_text())
    for entry in shipped["versions"]:
        (folder / entry["file"]).write_text((CATALOG_FOLDER / entry["file"]).read_text())
    (folder / "event-v3.avsc").write_text(json.dumps(schema))
    shipped["versions"].append(
        {"version": 3, "id": 3, "file": "event-v3.avsc", "fingerprint": canonical_fingerprint(schema)}
    )
    (folder / "catalog.json").write_text(json.dumps(shipped))
    return load_catalog(folder)


def test_compatibility_rules_on_small_schemas() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
    promoted = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    assert incompatibilities(reader=promoted, writer=old) == []  # int -> long is a promotion
    assert incompatibilities(reader=old, writer=promoted) != []  # long -> int is not
    union = {"type": "record", "name": "R", "fields": [{"name": "n", "type": ["null", "int"], "default": None}]}
    assert incompatibilities(reader=union, writer=old) == []
    assert incompatibilities(reader=old, writer=union) != []  # the writer may have written null


def test_unknown_schema_id_is_a_dead_letter_with_its_bytes() -> None:
    event = JsonSerde().decode(_json_records(1)[0])
    assert not isinstance(event, Rejection)
    valid = get_serde("avro-v2").encode(event)
    unknown = valid[:1] + (77).to_bytes(4, "big") + valid[5:]
    accepted, [letter] = split([FakeRecord(unknown, 3)], WIRE, rejected_by="test")
    assert not accepted
    assert letter.original_value == unknown
    assert letter.reason.startswith("unknown Avro schema id 77 (registered ids: 1, 2)")


def _classified(data: bytes) -> None:
    result = WIRE.decode(data)
    if isinstance(result, Rejection):
        assert result.reason
        _, [letter] = split([FakeRecord(data, 1)], WIRE, rejected_by="test")
        assert letter.original_value == data
    else:  # a change the schema cannot see (a byte of a string, say): still a valid event, same round trip
        assert WIRE.decode(get_serde("avro-v2").encode(result)) == result


VALID_AVRO = [get_serde(f"avro-v{1 + i % 2}").encode(WIRE.decode(v)) for i, v in enumerate(_json_records(4))]  # type: ignore[arg-type]


@given(st.sampled_from([0, 1, 2, 3, 2**32 - 1]), st.binary(max_size=300))
def test_arbitrary_bytes_after_an_avro_header_never_raise(schema_id: int, body: bytes) -> None:
    _classified(b"\x00" + schema_id.to_bytes(4, "big") + body)


@given(st.sampled_from(VALID_AVRO), st.integers(min_value=5, max_value=200), st.integers(0, 255))
def test_avro_records_with_a_byte_changed_are_valid_or_dead_letters(valid: bytes, where: int, byte: int) -> None:
    at = where % len(valid)
    _classified(valid[:at] + bytes([byte]) + valid[at + 1 :])
