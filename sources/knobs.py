"""The knobs every simulator takes, and the record it emits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

RecordKind = Literal["valid", "duplicate", "malformed"]


@dataclass(frozen=True)
class Knobs:
    """How a simulated source behaves. Same knobs and seed, same records, byte for byte.

    ``Knobs()`` is a clean source (no faults); ``DEFAULTS`` below is what the platform runs.
    """

    rate: float = 1000.0
    """Records per second of simulated time (delivery times are a Poisson process)."""
    late_share: float = 0.0
    """Share of events whose event time lies up to ``max_lateness`` before their delivery (the app's)."""
    max_lateness: timedelta = timedelta(hours=3)
    duplicate_share: float = 0.0
    """Share of records that re-deliver an earlier event's exact bytes (a producer retry)."""
    cross_partition_share: float = 0.0
    """Share of those redeliveries resent under another key, so they land on another partition
    (a keyless resend, or a producer with its own partitioner)."""
    malformed_share: float = 0.0
    """Share of records that are not valid events (bad JSON, wrong types, missing fields...)."""
    seed: int = 42

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 records/s, got {self.rate}")
        for name in ("late_share", "duplicate_share", "cross_partition_share", "malformed_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.duplicate_share + self.malformed_share > 1.0:
            raise ValueError("duplicate_share + malformed_share cannot exceed 1")
        if self.max_lateness < timedelta(0):
            raise ValueError("max_lateness cannot be negative")


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One record ready for Kafka, with when (in simulated seconds) it is due to be sent."""

    due: float
    key: bytes
    value: bytes
    kind: RecordKind
    event_id: str | None
    """The event id for valid records and duplicates; None for malformed ones."""


DEFAULTS = Knobs(
    rate=300.0,
    late_share=0.1,
    max_lateness=timedelta(hours=2),
    duplicate_share=0.01,
    cross_partition_share=0.25,
    malformed_share=0.005,
)
"""The one place the platform's simulator defaults live: ``lambdactl simulate``, ``build_simulators``,
the demo and the compose deployment all start from these (three sources at 300 records/s each)."""
