"""Turning events into record bytes and back, behind one interface.

``decode`` never raises on bad input: every byte string becomes either an event or a
``Rejection`` with a precise reason, which the consumer sends to the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from lambda_contracts.events import EVENT_ADAPTER, EVENT_TYPES, Event

MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not a valid event."""

    reason: str


class Serde(Protocol):
    """A wire format for events."""

    name: str

    def encode(self, event: Event) -> bytes: ...

    def decode(self, data: bytes | None) -> Event | Rejection: ...


class JsonSerde:
    """Compact UTF-8 JSON, one object per record: readable in any tool, and the default."""

    name = "json"

    def encode(self, event: Event) -> bytes:
        return EVENT_ADAPTER.dump_json(event)

    def decode(self, data: bytes | None) -> Event | Rejection:
        if not data:
            return Rejection("empty record: the value has no bytes")
        try:
            return EVENT_ADAPTER.validate_json(data)
        except ValidationError as error:
            return Rejection(describe_validation_error(error))


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each failing field, e.g. ``payload.amount: Input should be >= 0 (got -3)``."""
    parts = []
    for item in error.errors(include_url=False):
        location = [str(p) for p in item["loc"]]
        if location and location[0] in EVENT_TYPES:
            location = location[1:]  # the union tag pydantic puts first; the event_type says it
        field = ".".join(location) or "record"
        message = item["msg"].removeprefix("Value error, ")
        echo_input = item["type"] not in ("missing", "json_invalid", "union_tag_not_found")
        if item["type"] == "union_tag_invalid":
            field = "event_type"
            tag = item.get("ctx", {}).get("tag")
            message = f"must be one of {', '.join(EVENT_TYPES)} (got {_short(tag)})"
            echo_input = False
        elif item["type"] == "union_tag_not_found":
            message = "missing event_type"
        elif item["type"] == "json_invalid":
            field = "record"
            message = f"not valid JSON ({item.get('ctx', {}).get('error', message)})"
        elif field == "record" and item["type"] == "value_error":
            echo_input = False  # a cross-field rule: its message already names the values
        if echo_input:
            message += f" (got {_short(item.get('input'))})"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)[:MAX_REASON_CHARS]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_SERDES: dict[str, Serde] = {"json": JsonSerde()}


def get_serde(name: str) -> Serde:
    """The serde registered under ``name``; unknown names say which exist."""
    try:
        return _SERDES[name]
    except KeyError:
        raise ValueError(f"unknown serde {name!r}; known: {', '.join(sorted(_SERDES))}") from None
