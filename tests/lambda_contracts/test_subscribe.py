"""Subscribing at start: a broker node that refuses the metadata request is not fatal while others serve."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaConfigurationError, KafkaConnectionError, KafkaTimeoutError

from lambda_contracts.plumbing.kafka import subscribe_when_known

pytestmark = pytest.mark.unit


class RefusingConsumer:
    """Answers the topic's partitions after ``refusals`` metadata requests were refused (a killed node)."""

    def __init__(self, refusals: int, error: Exception | None = None) -> None:
        self.refusals = refusals
        self.error = error or KafkaConnectionError("111 ECONNREFUSED")
        self.asked = 0
        self.subscribed: list[str] = []

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        self.asked += 1
        if self.asked <= self.refusals:
            raise self.error
        return {0, 1}

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed.extend(topics)


def subscribe(consumer: RefusingConsumer, timeout_s: float = 30.0) -> None:
    fake: Any = consumer
    subscribe_when_known(fake, "events", timeout_s=timeout_s)


def test_a_refused_metadata_request_is_asked_again_and_the_consumer_subscribes() -> None:
    consumer = RefusingConsumer(refusals=3)
    subscribe(consumer)
    assert consumer.asked == 4
    assert consumer.subscribed == ["events"]


def test_refusals_past_the_deadline_raise_the_kafka_error() -> None:
    consumer = RefusingConsumer(refusals=10**6)
    with pytest.raises(KafkaConnectionError):
        subscribe(consumer, timeout_s=0.3)
    assert consumer.subscribed == []


def test_an_error_that_asking_again_cannot_mend_is_raised_at_once() -> None:
    consumer = RefusingConsumer(refusals=1, error=KafkaConfigurationError("bad setting"))
    with pytest.raises(KafkaConfigurationError):
        subscribe(consumer)
    assert consumer.asked == 1


def test_a_topic_that_never_appears_times_out_with_a_hint() -> None:
    class Empty(RefusingConsumer):
        def partitions_for_topic(self, topic: str) -> set[int] | None:
            return None

    with pytest.raises(KafkaTimeoutError, match="create it first"):
        subscribe(Empty(refusals=0), timeout_s=0.2)
