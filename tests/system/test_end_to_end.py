"""The whole path, with the three services as real processes against the local broker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.broker]


def test_message_travels_from_api_to_consumer(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(consumers=1)
    queue = stack.create_queue(durable=True)
    stack.consume(queue, prefetch=1)

    resp = stack.post(
        "/api/messages",
        {"queue": queue, "body": {"order": 42}, "properties": {"headers": {"tenant": "acme"}}},
    )
    assert resp.status_code == 200, resp.text
    sent = resp.json()
    assert sent["status"] == "confirmed"
    assert len(sent["trace_id"]) == 32

    records = wait_until(lambda: stack.received(queue), timeout=15, what="the processed record")
    record = records[0]
    assert record["message_id"] == sent["message_id"]
    assert record["queue"] == queue
    assert record["outcome"] == "acked"
    assert record["body"] == '{"order":42}'
    assert record["headers"]["tenant"] == "acme"
    assert record["worker"] == "consumer-0"
    assert record["redelivered"] is False
    assert record["trace_id"] == sent["trace_id"]
    # Publish → processed, from the producer's microsecond stamp: same machine, same clock.
    assert 0 <= record["latency_ms"] < 10_000, record["latency_ms"]


def test_health_is_503_without_broker_connection(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(consumers=0, producers=0)
    assert stack.health() == 200
    assert stack.post("/api/connection/disconnect", {}).json()["connection"] == "closed"
    assert stack.health() == 503
    assert stack.post("/api/connection/connect", {}).json()["connection"] == "connected"
    assert stack.health() == 200


def test_two_replicas_share_the_work_without_loss_or_duplicates(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(consumers=2)
    queue = stack.create_queue()
    stack.consume(queue, prefetch=5)

    job = stack.post(
        "/api/batches",
        {
            "queue": queue,
            "count": 200,
            "concurrency": 20,
            "body": {"n": "{seq}"},
            "properties": {"headers": {"x-warren-work-ms": 5}},
        },
    )
    assert job.status_code == 202, job.text
    result = stack.wait_batch(job.json()["job_id"])
    assert result["status"] == "done"
    assert result["confirmed"] == 200

    records = wait_until(
        lambda: (r := stack.received(queue)) and len(r) >= 200 and r,
        timeout=30,
        what="200 processed records",
    )
    ids = Counter(r["message_id"] for r in records)
    assert len(ids) == 200, "every message processed"
    assert max(ids.values()) == 1, "no message processed twice"
    by_worker = Counter(r["worker"] for r in records)
    assert set(by_worker) == {"consumer-0", "consumer-1"}, by_worker
    assert min(by_worker.values()) >= 20, f"both replicas take a share: {by_worker}"


def test_a_replica_started_later_joins_running_consumption(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(consumers=1)
    queue = stack.create_queue()
    stack.consume(queue, prefetch=2)
    stack.add_consumer("late-joiner")
    wait_until(
        lambda: any(
            r["replica"] == "late-joiner"
            and any(q["queue"] == queue for q in r["heartbeat"]["queues"])
            for r in stack.replicas("consumer")
        ),
        timeout=20,
        what="the late replica to consume the queue",
    )
    consumers = stack.http.get("/api/consumers").json()["consumers"]
    assert {"consumer-0", "late-joiner"} <= set(
        next(c for c in consumers if c["queue"] == queue)["replicas"]
    )
