"""Queue-level faults: deleted under its consumers, poison and malformed messages, a handler
slower than the broker's consumer timeout."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pika
import pytest

from tests.faults.helpers import assert_services_healthy, finish
from tests.support.ledger import Ledger, LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.faults]

Record = Callable[[LedgerResult], None]


def test_queue_deleted_under_its_consumers(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    stack = fault_stack(consumers=2)
    queue = stack.create_queue(dead_letter=True)
    stack.consume(queue)
    node.delete_queue(queue)
    resp = stack.post("/api/queues", {"name": queue, "dead_letter": True})
    assert resp.status_code in (201, 409), resp.text
    ledger = Ledger(stack, node.amqp_url, queue, fault="queue deleted under its consumers")
    ledger.start_load(singles=20, batches=(300,))
    finish(ledger, record, notes="re-created; consumption resumed")


def test_poison_and_malformed_messages_are_dead_lettered(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    stack = fault_stack(consumers=1)
    queue = stack.create_queue(dead_letter=True)
    stack.consume(queue)
    ledger = Ledger(stack, node.amqp_url, queue, fault="poison + malformed messages")
    poison = ledger.send_one(stack.http, headers={"x-warren-fail": "true"})
    assert poison is not None
    conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        bad = {
            "bad-json": (b"{not json", "application/json"),
            "bad-binary": (bytes(range(256)) * 4, "application/json"),
            "bad-huge": (b"x" * (10 << 20), "application/json"),
        }
        for mid, (body, ctype) in bad.items():
            ch.basic_publish(
                "",
                queue,
                body,
                pika.BasicProperties(message_id=mid, content_type=ctype, delivery_mode=2),
                mandatory=True,
            )
            ledger.singles[mid] = True
    finally:
        conn.close()
    ledger.start_load(singles=20)  # the worker lives: good messages still go through
    result = finish(ledger, record, notes="poison after the delivery limit; decode errors at once")
    assert result.dead_lettered == 4
    assert ledger.dead[poison]["reason"] == "delivery_limit"
    for mid in bad:
        assert ledger.dead[mid]["reason"] == "decode_error", ledger.dead[mid]
        assert ledger.dead[mid]["error"]
    assert ledger.dead["bad-huge"]["size"] == 10 << 20
    attempts = Counter(r["message_id"] for r in ledger.records if r["outcome"] == "failed")
    assert attempts[poison] <= 3, "no hot loop: the poison message got its delivery limit"


def test_handler_slower_than_consumer_timeout(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    # The broker checks consumer_timeout on each channel's tick (default once a minute): a
    # 1 s tick for channels opened from now on keeps the test short.
    node.rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
    node.set_consumer_timeout(2000)
    stack = fault_stack(consumers=1)
    queue = stack.create_queue(dead_letter=True)
    stack.consume(queue, prefetch=1)
    ledger = Ledger(stack, node.amqp_url, queue, fault="handler slower than consumer_timeout")
    slow = ledger.send_one(stack.http, headers={"x-warren-work-ms": 5000})
    assert slow is not None
    wait_until(
        lambda: "timed out" in node.log_tail(200),
        timeout=20,
        what="the broker timing out the slow consumer's delivery",
    )
    node.set_consumer_timeout(1_800_000)  # the redelivered copy may take its time
    result = finish(ledger, record, allow_duplicates=False, timeout=40)
    result.notes = "channel closed (406), reopened, redelivered; finished once in effect"
    record(result)
    assert_services_healthy(stack)
