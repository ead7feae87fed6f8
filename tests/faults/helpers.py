"""What every fault test shares: run a ledger through a fault, check the services after."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.support.ledger import Ledger, LedgerResult
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+)\s+(\S+)", re.M)
# aiormq logs its reader's ConnectionClosed with a traceback at WARNING on every connection loss:
# expected noise under these faults, not a task of ours that died.
EXPECTED_TRACEBACKS = {"aiormq.connection"}


def stray_errors(text: str) -> list[str]:
    """Log records that show a task killed by an exception (ours, not aiormq's known noise)."""
    starts = [m.start() for m in RECORD.finditer(text)] + [len(text)]
    bad = []
    for begin, end in zip(starts, starts[1:], strict=False):
        block = text[begin:end]
        logger = RECORD.match(block)
        name = logger.group(2) if logger else ""
        if "Task exception was never retrieved" in block or (
            "Traceback (most recent call last)" in block and name not in EXPECTED_TRACEBACKS
        ):
            bad.append(block[:2000])
    return bad


def assert_services_healthy(stack: Stack) -> None:
    """Alive without a restart, back to healthy, and no stray task errors in the logs."""
    for proc in [stack.gateway, *stack.producers, *stack.consumers]:
        assert proc is not None
        assert proc.is_running(), f"{proc.name} exited: {proc.tail()}"
        bad = stray_errors(proc.output())
        assert not bad, f"{proc.name} logged a stray error:\n" + "\n".join(bad[:3])
    wait_until(lambda: stack.health() == 200, timeout=20, what="gateway healthy again")


def start_load(
    stack: Stack,
    node: RabbitNode,
    fault: str,
    *,
    singles: int = 60,
    batches: tuple[int, ...] = (600,),
    consume: bool = True,
    at: float = 0.25,
    queue_spec: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> Ledger:
    """A dead-lettering queue, consumed; a ledger publishing into it, under way."""
    queue = stack.create_queue(dead_letter=True, **(queue_spec or {}))
    if consume:
        stack.consume(queue, prefetch=20)
    ledger = Ledger(stack, node.amqp_url, queue, fault=fault)
    ledger.start_load(singles=singles, batches=batches, headers=headers)
    wait_until(
        lambda: len(ledger.singles) >= max(1, singles * at) if singles else ledger.batches,
        timeout=30,
        what="the load to be under way",
    )
    return ledger


def finish(
    ledger: Ledger,
    record: Callable[[LedgerResult], None],
    *,
    notes: str = "",
    allow_duplicates: bool = False,
    timeout: float = 60,
) -> LedgerResult:
    """Drain, account, record the row, check the ledger's promise and the services."""
    ledger.drain(timeout=timeout)
    result = ledger.result(notes)
    record(result)
    ledger.check(result, allow_duplicates=allow_duplicates)
    assert_services_healthy(ledger.stack)
    return result


def split_stack(
    service_factory: Callable[..., Any],
    node: RabbitNode,
    *,
    per_module: dict[str, dict[str, str]],
    consumers: int = 1,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> Stack:
    """A stack whose services get their own env (a proxy URL for one, a broker user each)."""
    from tests.faults.conftest import FAULT_ENV

    stack = Stack(
        service_factory,
        consumers=consumers,
        amqp_url=node.amqp_url,
        management_url=node.management_url,
        env={**FAULT_ENV, **(env or {})},
    )
    original = stack._start

    def start(module: str, name: str, env: dict[str, str] | None = None) -> Any:
        return original(module, name, {**(env or {}), **per_module.get(module, {})})

    stack._start = start  # type: ignore[method-assign]
    return stack.start(wait=wait)
