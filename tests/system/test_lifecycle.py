"""Every service stops cleanly, and soon, on SIGTERM and on SIGINT."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.support.stack import Stack

pytestmark = [pytest.mark.system, pytest.mark.broker]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_services_stop_cleanly_within_seconds(
    stack_factory: Callable[..., Stack], sig: signal.Signals
) -> None:
    stack = stack_factory(consumers=1)
    queue = stack.create_queue()
    stack.consume(queue)
    for proc in [*stack.consumers, *stack.producers, stack.gateway]:
        assert proc is not None
        started = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=10)
        took = time.monotonic() - started
        assert code == 0, f"{proc.name} exited {code}:\n{proc.tail()}"
        assert took < 5, f"{proc.name} took {took:.1f} s to stop"
        assert "Traceback" not in proc.output(), proc.tail()
