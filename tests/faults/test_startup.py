"""The services started before the broker: they wait with backoff, never exit, never leak."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.helpers import finish
from tests.support.ledger import Ledger, LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults]

PASSWORD = "Sekr3t-w4rren-f4ults-pw"
USER = "warren-faults"


def test_services_started_before_the_broker(
    node: RabbitNode,
    stack_factory: Callable[..., Stack],
    record: Callable[[LedgerResult], None],
) -> None:
    from tests.faults.conftest import FAULT_ENV

    node.rabbitmqctl("add_user", USER, PASSWORD, check=False)
    node.rabbitmqctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
    node.rabbitmqctl("set_user_tags", USER, "management")
    url = f"amqp://{USER}:{PASSWORD}@127.0.0.1:{node.amqp_port}/"
    node.stop_app()
    try:
        stack = stack_factory(
            wait=False,
            consumers=1,
            amqp_url=url,
            management_url=node.management_url,
            env=FAULT_ENV,
        )
        for proc in [stack.gateway, *stack.producers, *stack.consumers]:
            assert proc is not None
            proc.wait_for_log(r"not reachable \(attempt 3", timeout=20)
        assert stack.health() == 503
        assert all(p.is_running() for p in [stack.gateway, *stack.producers, *stack.consumers])
    finally:
        node.start_app()
    stack.wait_ready(timeout=40)
    queue = stack.create_queue(dead_letter=True)
    stack.consume(queue)
    ledger = Ledger(stack, node.amqp_url, queue, fault="services started before the broker")
    ledger.start_load(singles=20, batches=(200,))
    finish(ledger, record, notes="waited with backoff; password never logged")
    for proc in [stack.gateway, *stack.producers, *stack.consumers]:
        assert proc is not None
        assert PASSWORD not in proc.output(), f"{proc.name} logged the password"
    node.rabbitmqctl("delete_user", USER, check=False)
