"""Consumer replicas killed, frozen and stopped mid-load."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.faults.helpers import finish, start_load
from tests.support.ledger import LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.faults]

Record = Callable[[LedgerResult], None]
SLOW = {"x-warren-work-ms": 10}
# Every record is sent at once, so a SIGKILL loses (almost) none of them.
EAGER_RECORDS = {
    "WARREN_CONSUMER__RECORD_BATCH_SIZE": "1",
    "WARREN_CONSUMER__RECORD_FLUSH_INTERVAL": "0.02",
}


def test_consumer_replica_sigkill(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    stack = fault_stack(consumers=3, env=EAGER_RECORDS)
    # Slow enough (3 replicas x prefetch 20 at 300 ms: ~200 msg/s) that the victim dies with a
    # full prefetch in flight, which the broker must hand to the survivors.
    ledger = start_load(
        stack, node, "consumer replica SIGKILL", headers={"x-warren-work-ms": 300}, at=0.5
    )
    wait_until(
        lambda: any(r["heartbeat"]["in_flight"] for r in stack.replicas("consumer")),
        timeout=20,
        what="messages in flight",
    )
    victim = stack.consumers[0]
    victim.kill(signal.SIGKILL)
    victim.wait(timeout=5)
    stack.consumers.remove(victim)
    result = finish(ledger, record, allow_duplicates=True)
    redelivered = sum(1 for r in ledger.records if r["redelivered"])
    result.notes = f"{redelivered} redelivered to the survivors"
    record(result)
    assert redelivered > 0, "the killed replica's unacked messages went to the survivors"


def test_consumer_replica_sigstop_then_resumed(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    stack = fault_stack(consumers=2, env=EAGER_RECORDS)
    ledger = start_load(stack, node, "consumer replica SIGSTOP, SIGCONT", headers=SLOW, at=0.3)
    frozen = stack.consumers[0]
    frozen.kill(signal.SIGSTOP)
    try:
        # The broker drops the frozen replica after ~2-3 heartbeats and redelivers its messages.
        wait_until(
            lambda: any(r["redelivered"] for r in (ledger.collect(), ledger.records)[1]),
            timeout=20,
            what="the frozen replica's messages redelivered",
        )
    finally:
        frozen.kill(signal.SIGCONT)
    wait_until(lambda: len(stack.replicas("consumer")) == 2, timeout=30, what="frozen replica back")
    result = finish(ledger, record, allow_duplicates=True)
    result.notes = "resumed replica reconnects; its stale copies are dropped or counted"
    record(result)


def test_consumer_replica_sigterm_drains(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    stack = fault_stack(consumers=2)
    ledger = start_load(stack, node, "consumer replica SIGTERM (drain)", headers=SLOW, at=0.3)
    leaving = stack.consumers[0]
    assert leaving.terminate(timeout=20) == 0, leaving.tail()
    stack.consumers.remove(leaving)
    finish(ledger, record)
    redelivered = [r["message_id"] for r in ledger.records if r["redelivered"]]
    assert redelivered == [], "a drained replica leaves nothing to redeliver"
