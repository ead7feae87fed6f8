"""Broker-side faults under load: connections closed, the app stopped, the process killed."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.helpers import finish, start_load
from tests.support.ledger import LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.faults]

Record = Callable[[LedgerResult], None]


def test_all_connections_closed_mid_load(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    stack = fault_stack(consumers=2)
    ledger = start_load(stack, node, "broker closes all connections (twice)")
    node.close_all_connections("fault suite: close all")
    node.close_all_connections("fault suite: close all again")
    finish(ledger, record, allow_duplicates=True)


def test_broker_app_stopped_and_started_mid_load(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    stack = fault_stack(consumers=2)
    ledger = start_load(stack, node, "broker app stop_app / start_app")
    try:
        node.stop_app()
        wait_until(lambda: stack.health() == 503, timeout=15, what="health 503 while stopped")
    finally:
        node.start_app()
    finish(ledger, record, allow_duplicates=True)


def test_broker_killed_and_restarted_keeps_confirmed_messages(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Record
) -> None:
    """Confirmed before the crash = survives it. Nothing consumes until after the restart,
    so no processed record can die with the broker; the queue is declared > 3 s before."""
    stack = fault_stack(consumers=1)
    ledger = start_load(
        stack, node, "broker SIGKILL and restart", consume=False, queue_spec={"type": "quorum"}
    )
    ledger.wait_load(timeout=60)
    wait_until(ledger._poll_batches, timeout=60, what="batches confirmed")
    confirmed = ledger.confirmed_so_far()
    # Notes: a quorum queue declared < 1 s before a crash lost messages; ours is older.
    declared_for = time.monotonic() - ledger.started
    assert declared_for >= 3 or wait_until(
        lambda: time.monotonic() - ledger.started >= 3, timeout=5, what="queue 3 s old"
    )
    try:
        node.kill9()
    finally:
        node.start()
    wait_until(lambda: stack.health() == 200, timeout=30, what="gateway reconnected")
    stack.consume(ledger.queue, prefetch=50)
    finish(ledger, record, notes=f"{confirmed} confirmed before the crash")
