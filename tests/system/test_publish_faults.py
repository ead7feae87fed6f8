"""Publishing through faults of a private broker node: a blocked broker, a dropped connection."""

from __future__ import annotations

import time
from collections.abc import Callable

import pika
import pytest

from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.faults]


def depth(node: RabbitNode, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def node_stack(stack_factory: Callable[..., Stack], node: RabbitNode, **env: str) -> Stack:
    return stack_factory(
        consumers=0,
        amqp_url=node.amqp_url,
        management_url=node.management_url,
        env={"WARREN_AMQP__RECONNECT_INTERVAL": "0.5", **env},
    )


def test_blocked_broker_answers_503_in_time_then_recovers(
    stack_factory: Callable[..., Stack], rabbit_node: RabbitNode
) -> None:
    timeout = 2.0
    stack = node_stack(stack_factory, rabbit_node, WARREN_AMQP__PUBLISH_TIMEOUT=str(timeout))
    queue = stack.create_queue()
    rabbit_node.memory_alarm(True)
    try:
        began = time.monotonic()
        resp = stack.post("/api/messages", {"queue": queue, "body": "blocked"})
        took = time.monotonic() - began
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"]
        assert resp.json()["job_id"], "the answer names the job, which may still run"
        assert took < timeout + 3, f"answered after {took:.1f} s, not within the publish timeout"
    finally:
        rabbit_node.memory_alarm(False)

    def delivered() -> bool:
        resp = stack.post("/api/messages", {"queue": queue, "body": "after"})
        return resp.status_code == 200 and resp.json()["status"] == "confirmed"

    wait_until(delivered, timeout=30, interval=0.5, what="publishing to resume")
    rabbit_node.delete_queue(queue)


def test_connection_dropped_mid_batch_every_message_arrives(
    stack_factory: Callable[..., Stack], rabbit_node: RabbitNode
) -> None:
    stack = node_stack(stack_factory, rabbit_node)
    queue = stack.create_queue()
    count = 10_000
    resp = stack.post("/api/batches", {"queue": queue, "count": count, "concurrency": 200})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    wait_until(
        lambda: stack.http.get(f"/api/batches/{job_id}").json()["confirmed"] > 1000,
        timeout=30,
        what="the batch to be under way",
    )
    rabbit_node.close_all_connections("test: drop mid-batch")
    result = stack.wait_batch(job_id, timeout=120)
    assert result["status"] == "done", result
    assert result["confirmed"] == count
    assert result["failed"] == 0
    in_queue = wait_until(
        lambda: (d := depth(rabbit_node, queue)) >= count and d,
        timeout=30,
        what=f"{count} messages in the queue",
    )
    assert in_queue - count <= result["retried"], "duplicates only from retried publishes"
    rabbit_node.delete_queue(queue)
