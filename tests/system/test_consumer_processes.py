"""Consumer replicas as real processes: drain on SIGTERM, redelivery after SIGKILL, joining
later, per-replica commands, a gateway restart, and sampling seen from the gateway."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pika
import pytest

from tests.support.stack import LOCAL_AMQP, Stack, wait_until
from warren.contracts import (
    ConsumeCommand,
    ConsumedQueue,
    Heartbeat,
    control_replica_key,
    heartbeat_key,
)

pytestmark = [pytest.mark.system, pytest.mark.broker]


def ready_count(queue: str) -> int:
    """Messages ready in ``queue``, from a passive declare (no management lag)."""
    connection = pika.BlockingConnection(pika.URLParameters(LOCAL_AMQP))
    try:
        result = connection.channel().queue_declare(queue, passive=True)
        return int(result.method.message_count)
    finally:
        connection.close()


def batch(stack: Stack, queue: str, count: int, **headers: Any) -> list[str]:
    """Publish ``count`` messages as one job; returns their message ids."""
    resp = stack.post(
        "/api/batches",
        {
            "queue": queue,
            "count": count,
            "concurrency": 50,
            "body": {"n": "{seq}"},
            "properties": {"headers": headers},
        },
    )
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    result = stack.wait_batch(job_id, timeout=60)
    assert result["status"] == "done", result
    assert result["confirmed"] == count
    return [f"{job_id}-{seq}" for seq in range(count)]


def replica(stack: Stack, name: str, state: str = "alive") -> dict[str, Any] | None:
    return next((r for r in stack.replicas("consumer", state) if r["replica"] == name), None)


def in_flight(stack: Stack, name: str) -> int:
    r = replica(stack, name)
    return int(r["heartbeat"]["in_flight"]) if r else 0


def test_sigterm_mid_batch_drains_and_nothing_finished_comes_back(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(consumers=1)
    queue = stack.create_queue()
    stack.consume(queue, prefetch=10)
    ids = batch(stack, queue, 40, **{"x-warren-work-ms": 400})
    wait_until(lambda: in_flight(stack, "consumer-0") >= 5, timeout=20, what="work in flight")

    assert stack.consumers[0].terminate(timeout=30) == 0
    final = wait_until(
        lambda: replica(stack, "consumer-0", "stopped"), timeout=10, what="the final heartbeat"
    )
    counters = final["heartbeat"]["counters"]
    assert final["heartbeat"]["in_flight"] == 0
    records = stack.received(queue)
    assert len(records) == counters["processed"] == counters["acked"], "records flushed"
    assert 5 <= counters["acked"] < 40
    assert ready_count(queue) == 40 - counters["acked"], "in-flight acked, the rest still ready"

    # A new replica finishes the queue: every message exactly once, none redelivered.
    stack.add_consumer("consumer-1")
    wait_until(lambda: len(stack.received(queue)) >= 40, timeout=60, what="40 records")
    records = stack.received(queue)
    assert Counter(r["message_id"] for r in records) == Counter(ids)
    assert not any(r["redelivered"] for r in records)


def test_sigkill_mid_batch_redelivers_to_the_survivor(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(consumers=2)
    queue = stack.create_queue()
    stack.consume(queue, prefetch=10)
    # Long work: the replica is killed with its whole prefetch in flight and nothing finished,
    # so every message must come back (records of finished work would die with it unsent).
    ids = batch(stack, queue, 40, **{"x-warren-work-ms": 2000})
    wait_until(lambda: in_flight(stack, "consumer-0") == 10, timeout=20, what="10 in flight")
    before = replica(stack, "consumer-0")
    assert before is not None
    assert before["heartbeat"]["counters"]["processed"] == 0

    stack.consumers[0].kill(signal.SIGKILL)
    assert stack.consumers[0].wait(timeout=10) == -signal.SIGKILL

    wait_until(lambda: len(stack.received(queue)) >= 40, timeout=40, what="40 records")
    records = stack.received(queue)
    assert Counter(r["message_id"] for r in records) == Counter(ids), "nothing lost or doubled"
    assert {r["worker"] for r in records} == {"consumer-1"}
    assert all(r["outcome"] == "acked" for r in records)
    assert sum(r["redelivered"] for r in records) == 10, "the killed replica's prefetch came back"
    assert ready_count(queue) == 0


def test_a_replica_started_later_joins_and_one_replica_commands_stay_local(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(consumers=1)
    shared, local = stack.create_queue(), stack.create_queue()
    stack.consume(shared, prefetch=3)
    stack.add_consumer("consumer-1")
    stack.n_consumers = 2
    stack.wait_ready()
    stack.consume(shared, prefetch=3)  # waits until every live replica consumes it

    resp = stack.post("/api/consumers", {"queue": local, "prefetch": 2, "replica": "consumer-1"})
    assert resp.status_code == 202, resp.text

    def listed() -> dict[str, Any]:
        body = stack.http.get("/api/consumers").json()
        return {c["queue"]: c for c in body["consumers"]}

    wait_until(
        lambda: listed().get(local, {}).get("replicas") == ["consumer-1"],
        timeout=10,
        what="the local queue listed",
    )
    # Several heartbeats later it is still consumed by that replica only.
    wait_until(
        lambda: all(
            r["last_seen_s"] < 1 and r["heartbeat"]["sent_at"] for r in stack.replicas("consumer")
        ),
        timeout=5,
        what="fresh heartbeats",
    )
    consumed = listed()
    assert consumed[local]["scope"] == "replica"
    assert consumed[local]["replicas"] == ["consumer-1"]
    assert consumed[shared]["scope"] == "all"
    assert consumed[shared]["replicas"] == ["consumer-0", "consumer-1"]

    # A shared queue cannot be stopped on one replica (the gateway would restart it there).
    assert stack.http.delete(f"/api/consumers/{shared}?replica=consumer-0").status_code == 409
    resp = stack.http.delete(f"/api/consumers/{local}?replica=consumer-1")
    assert resp.status_code == 202, resp.text
    wait_until(lambda: local not in listed(), timeout=10, what="the local queue stopped")


def test_a_gateway_restart_stops_no_consumption_and_relearns_it(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(consumers=2)
    queue = stack.create_queue()
    stack.consume(queue, prefetch=5)
    assert stack.gateway is not None
    stack.gateway.kill(signal.SIGKILL)
    stack.gateway.wait(timeout=10)

    # With no gateway at all, messages sent straight to the broker are still consumed.
    connection = pika.BlockingConnection(pika.URLParameters(LOCAL_AMQP))
    channel = connection.channel()
    for i in range(20):
        channel.basic_publish("", queue, f'{{"i": {i}}}'.encode())
    connection.close()
    wait_until(lambda: ready_count(queue) == 0, timeout=20, what="the queue drained")

    stack.gateway = stack._start("gateway", "gateway-2")
    stack.wait_ready()

    def relearned() -> list[dict[str, Any]]:
        body = stack.http.get("/api/consumers").json()
        return [c for c in body["consumers"] if c["queue"] == queue]

    [entry] = wait_until(relearned, timeout=15, what="the queue relearned from heartbeats")
    assert entry["scope"] == "all"
    assert entry["prefetch"] == 5
    wait_until(
        lambda: relearned()[0]["replicas"] == ["consumer-0", "consumer-1"],
        timeout=10,
        what="both replicas listed",
    )
    assert sum(r["heartbeat"]["counters"]["processed"] for r in stack.replicas("consumer")) == 20
    batch(stack, queue, 30)
    wait_until(lambda: len(stack.received(queue)) >= 30, timeout=30, what="30 records")


def test_the_gateway_counts_sampled_out_records(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(consumers=1, env={"WARREN_CONSUMER__RECORDS_PER_SECOND": "20"})
    queue = stack.create_queue()
    # Prefilled, then drained in a burst: far above 20 records/s even on a loaded machine.
    batch(stack, queue, 1000)
    stack.consume(queue, prefetch=100)
    wait_until(lambda: stack.counters().get("processed") == 1000, timeout=60, what="1000 processed")

    def status() -> dict[str, Any]:
        return dict(stack.http.get("/api/status").json())

    wait_until(
        lambda: len(stack.received(queue)) + status()["gateway"]["records_sampled_out"] == 1000,
        timeout=10,
        what="records + sampled-out == 1000 at the gateway",
    )
    assert 0 < len(stack.received(queue)) < 1000
    # The replica's own counters reach the gateway with its next heartbeat.
    counters = wait_until(
        lambda: (
            (c := stack.counters()) and c["records_sent"] + c["records_sampled_out"] == 1000 and c
        ),
        timeout=10,
        what="the replica's record counters to add up to 1000",
    )
    assert counters["acked"] == 1000


def test_a_replica_that_missed_a_stop_is_told_again(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(consumers=0, producers=0)
    queue = stack.create_queue()
    assert stack.post("/api/consumers", {"queue": queue, "prefetch": 2}).status_code == 202
    assert stack.http.delete(f"/api/consumers/{queue}").status_code == 202

    # A replica that was reconnecting when the stop went out still reports the queue.
    connection = pika.BlockingConnection(pika.URLParameters(LOCAL_AMQP))
    try:
        channel = connection.channel()
        inbox = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(inbox, f"{stack.namespace}.control", control_replica_key("late"))
        beat = Heartbeat(
            role="consumer",
            replica="late",
            host="h",
            pid=1,
            started_at=datetime.now(UTC),
            interval_s=0.5,
            queues=[ConsumedQueue(queue=queue, prefetch=2, scope="all")],
        )
        channel.basic_publish(
            f"{stack.namespace}.events",
            heartbeat_key("consumer", "late"),
            beat.model_dump_json().encode(),
            pika.BasicProperties(content_type="application/json", type="heartbeat"),
        )

        def command() -> ConsumeCommand | None:
            method, _props, body = channel.basic_get(inbox, auto_ack=True)
            return ConsumeCommand.model_validate_json(body) if method else None

        stop = wait_until(command, timeout=10, what="a stop for the late replica")
    finally:
        connection.close()
    assert (stop.action, stop.queue, stop.replica) == ("stop", queue, "late")
    consumed = stack.http.get("/api/consumers").json()["consumers"]
    assert not any(c["queue"] == queue and c["scope"] == "all" for c in consumed), "not relearned"
