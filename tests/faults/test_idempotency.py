"""Idempotency-Key under a retry after a fault: the same job, the message once in effect."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.helpers import finish
from tests.support.ledger import Batch, Ledger, LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.faults]


def test_idempotency_key_retry_after_a_fault(
    node: RabbitNode, fault_stack: Callable[..., Stack], record: Callable[[LedgerResult], None]
) -> None:
    stack = fault_stack(consumers=1)
    queue = stack.create_queue(dead_letter=True)
    stack.consume(queue)
    ledger = Ledger(stack, node.amqp_url, queue, fault="Idempotency-Key retried after a fault")
    message = {"queue": queue, "body": {"n": 1}, "properties": {"message_id": "idem-1"}}
    batch = {"queue": queue, "count": 50, "body": {"n": "{seq}"}}
    try:
        node.stop_app()
        wait_until(lambda: stack.health() == 503, timeout=15, what="health 503")
        first = stack.post("/api/messages", message, headers={"Idempotency-Key": "k-msg"})
        assert first.status_code == 503, first.text
        assert "Retry-After" in first.headers
    finally:
        node.start_app()
    wait_until(lambda: stack.health() == 200, timeout=30, what="gateway back")
    answers = [
        stack.post("/api/messages", message, headers={"Idempotency-Key": "k-msg"}) for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1, "the same job every time"
    ledger.singles["idem-1"] = True
    jobs = [
        stack.post("/api/batches", batch, headers={"Idempotency-Key": "k-batch"}) for _ in range(3)
    ]
    assert {j.status_code for j in jobs} == {202}
    job_ids = {j.json()["job_id"] for j in jobs}
    assert len(job_ids) == 1, "the same batch job every time"
    other = stack.post(
        "/api/batches", {**batch, "count": 51}, headers={"Idempotency-Key": "k-batch"}
    )
    assert other.status_code == 409
    ledger.batches.update({jid: Batch(jid, 50) for jid in job_ids})
    finish(ledger, record, notes="503 then 200 x3 with one job id; batch key reused -> same job")
