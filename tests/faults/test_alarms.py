"""The broker's memory and disk alarms block publishers: 503 with Retry-After, not a hang."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.faults.helpers import finish
from tests.support.ledger import Ledger, LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.faults]

PUBLISH_TIMEOUT = 3


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_resource_alarm(
    kind: str,
    node: RabbitNode,
    fault_stack: Callable[..., Stack],
    record: Callable[[LedgerResult], None],
) -> None:
    stack = fault_stack(consumers=1)
    queue = stack.create_queue(dead_letter=True)
    ledger = Ledger(stack, node.amqp_url, queue, fault=f"{kind} alarm")
    # A slow backlog first, so there is something to drain during the alarm.
    stack.consume(queue, prefetch=1)
    ledger.send_batch(300, headers={"x-warren-work-ms": 30})
    wait_until(ledger._poll_batches, timeout=30, what="backlog confirmed")
    start_depth = sum(node.list_queues()[queue])
    alarm = node.memory_alarm if kind == "memory" else node.disk_alarm
    try:
        alarm(True)
        with httpx.Client(base_url=stack.base_url, timeout=PUBLISH_TIMEOUT + 10) as client:
            began = time.monotonic()
            resp = client.post("/api/messages", json={"queue": queue, "body": "blocked"})
            took = time.monotonic() - began
        assert resp.status_code == 503, resp.text
        assert "Retry-After" in resp.headers
        assert took <= PUBLISH_TIMEOUT + 1.5, took
        # Consumers keep draining while publishers are blocked.
        depth = wait_until(
            lambda: (d := sum(node.list_queues().get(queue, (0, 0)))) < start_depth - 20 and d + 1,
            timeout=20,
            what="the backlog draining during the alarm",
        )
        ledger.start_load(singles=10)  # retried through the alarm, with the same keys
    finally:
        alarm(False)
    finish(ledger, record, notes=f"503 in {took:.1f} s; depth {depth - 1} during alarm")
