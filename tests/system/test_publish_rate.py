"""A batch's optional ``rate``: messages per second on a fixed schedule (steady load)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest

from tests.support.stack import LOCAL_AMQP, Stack, running_stack

pytestmark = [pytest.mark.system, pytest.mark.broker]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway and a producer, no consumer: the queue keeps what was published."""
    with running_stack(tmp_path_factory.mktemp("publish-rate-stack"), consumers=0) as s:
        yield s


def published_us(queue: str, count: int) -> list[int]:
    """The producer's publish stamps (``x-warren-published-us``) of every message in ``queue``."""
    connection = pika.BlockingConnection(pika.URLParameters(LOCAL_AMQP))
    try:
        channel = connection.channel()
        stamps = []
        for _ in range(count):
            method, props, _body = channel.basic_get(queue, auto_ack=True)
            assert method is not None, f"fewer than {count} messages in {queue}"
            stamps.append(int(props.headers["x-warren-published-us"]))
        return stamps
    finally:
        connection.close()


def test_a_paced_batch_publishes_on_its_schedule(stack: Stack) -> None:
    queue = stack.create_queue()
    count, rate = 30, 100
    resp = stack.post(
        "/api/batches",
        {"queue": queue, "count": count, "rate": rate, "concurrency": 10, "body": {"n": "{seq}"}},
    )
    assert resp.status_code == 202, resp.text
    job = stack.wait_batch(resp.json()["job_id"], timeout=30)
    assert (job["status"], job["confirmed"]) == ("done", count)
    stamps = sorted(published_us(queue, count))
    # Message n leaves no earlier than n / rate after the first (a sleep never wakes early);
    # the margin covers the wall clock (the stamps) against the loop's monotonic clock.
    assert (stamps[-1] - stamps[0]) / 1e6 >= (count - 1) / rate * 0.95


@pytest.mark.parametrize("rate", [0, -5, "100", True])
def test_a_rate_must_be_a_positive_number(stack: Stack, rate: Any) -> None:
    queue = stack.create_queue()
    resp = stack.post("/api/batches", {"queue": queue, "count": 3, "rate": rate})
    assert resp.status_code == 422, resp.text
    assert resp.json().get("field") == "rate"
