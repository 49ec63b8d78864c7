"""Ways a record goes bad in the wild, applied to a valid event's bytes.

Each fault is one a real pipeline sees: truncation, a binary blob, a missing or mistyped field,
an out-of-range value, an unknown event type, an empty value, a time without a zone; and for
Avro records, a schema id nobody registered, a cut body and bytes that are no Avro at all.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

Fault = Callable[[dict[str, Any], bytes, random.Random], bytes]


def _truncated(_: dict[str, Any], raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(1, len(raw) - 1)]


def _binary(_: dict[str, Any], raw: bytes, rng: random.Random) -> bytes:
    return b"\xff\xfe" + rng.randbytes(rng.randrange(8, 64))


def _missing_field(event: dict[str, Any], _: bytes, rng: random.Random) -> bytes:
    del event[rng.choice(["event_id", "event_time", "entity_key", "source", "payload"])]
    return _dump(event)


def _wrong_type(event: dict[str, Any], _: bytes, rng: random.Random) -> bytes:
    event["schema_version"] = "one"
    return _dump(event)


def _out_of_range(event: dict[str, Any], _: bytes, rng: random.Random) -> bytes:
    payload = event["payload"]
    if "quantity" in payload:
        payload["quantity"] = -rng.randrange(1, 5)
    elif "value" in payload:
        payload["value"] = "NaN"
    else:
        payload["duration_ms"] = -1
    return _dump(event)


def _unknown_type(event: dict[str, Any], _: bytes, rng: random.Random) -> bytes:
    event["event_type"] = rng.choice(["pageview", "refund", "heartbeat"])
    return _dump(event)


def _empty(_: dict[str, Any], __: bytes, ___: random.Random) -> bytes:
    return b""


def _naive_time(event: dict[str, Any], _: bytes, __: random.Random) -> bytes:
    event["event_time"] = event["event_time"].rstrip("Z")
    return _dump(event)


FAULTS: tuple[Fault, ...] = (
    _truncated,
    _binary,
    _missing_field,
    _wrong_type,
    _out_of_range,
    _unknown_type,
    _empty,
    _naive_time,
)


def malform(valid: bytes, rng: random.Random) -> bytes:
    """Bytes that fail validation, derived from a valid event's bytes (JSON, or Avro in the wire format)."""
    if valid[:1] == b"\x00":
        return rng.choice(AVRO_FAULTS)(valid, rng)
    fault = rng.choice(FAULTS)
    return fault(json.loads(valid), valid, rng)


def _unknown_schema_id(raw: bytes, rng: random.Random) -> bytes:
    return raw[:1] + rng.randrange(1000, 2**31).to_bytes(4, "big") + raw[5:]


def _cut_avro(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(5, len(raw) - 1)]


def _garbage_avro(raw: bytes, rng: random.Random) -> bytes:
    return raw[:5] + b"\xff" * rng.randrange(1, 12)  # a long varint that never ends


AvroFault = Callable[[bytes, random.Random], bytes]
AVRO_FAULTS: tuple[AvroFault, ...] = (_unknown_schema_id, _cut_avro, _garbage_avro)


def _dump(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
