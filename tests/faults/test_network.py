"""A network partition between the gateway and the broker (a TCP proxy that freezes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.faults.helpers import finish, split_stack
from tests.support.ledger import Ledger, LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import wait_until
from tests.support.tcpproxy import ThreadedTcpProxy

pytestmark = [pytest.mark.faults]

HEARTBEAT = 2
PUBLISH_TIMEOUT = 3
# aiormq notices a dead peer after about 3 x (heartbeat + 1) s (field notes), plus slack.
DETECT_BOUND = 3 * (HEARTBEAT + 1) + 4


def test_gateway_partitioned_from_broker(
    node: RabbitNode,
    service_factory: Callable[..., Any],
    tcp_proxy_factory: Callable[[str, int], ThreadedTcpProxy],
    record: Callable[[LedgerResult], None],
) -> None:
    proxy = tcp_proxy_factory("127.0.0.1", node.amqp_port)
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.proxy.port}/"
    stack = split_stack(
        service_factory, node, per_module={"gateway": {"WARREN_AMQP__URL": via_proxy}}
    )
    try:
        queue = stack.create_queue(dead_letter=True)
        stack.consume(queue, prefetch=20)
        ledger = Ledger(stack, node.amqp_url, queue, fault="network partition gateway-broker")
        ledger.start_load(singles=40, batches=(400,), pace=0.05)
        wait_until(lambda: len(ledger.singles) >= 10, timeout=30, what="load under way")

        frozen_at = time.monotonic()
        proxy.freeze()
        answers: list[tuple[int, float]] = []
        with httpx.Client(base_url=stack.base_url, timeout=PUBLISH_TIMEOUT + 10) as client:
            while time.monotonic() - frozen_at < DETECT_BOUND + 2:
                began = time.monotonic()
                resp = client.post("/api/messages", json={"queue": queue, "body": "probe"})
                answers.append((resp.status_code, time.monotonic() - began))
                if resp.status_code == 503:
                    assert "Retry-After" in resp.headers
                if stack.health() == 503:
                    break
        detected = time.monotonic() - frozen_at
        assert stack.health() == 503, f"partition not detected in {detected:.1f} s"
        assert detected <= DETECT_BOUND, detected
        assert {code for code, _ in answers} <= {503}, answers
        assert max(t for _, t in answers) <= PUBLISH_TIMEOUT + 1.5, answers
    finally:
        proxy.thaw()
    proxy.reset()  # drop what the freeze left half-open; the gateway reconnects cleanly
    wait_until(lambda: stack.health() == 200, timeout=30, what="gateway recovered")
    result = finish(ledger, record, notes=f"detected in {detected:.1f} s; {len(answers)} probes")
    assert result.refused >= 0
