"""Shared fixtures: the local broker, unique names, and the three services as processes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from tests.support.procs import ServiceProcess
from tests.support.stack import LOCAL_AMQP, Stack

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("orders")`` -> ``orders-<random>``: no two tests share a queue or namespace."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    """A connection to the shared local broker (never closed by a test's fault)."""
    connection = await aio_pika.connect_robust(LOCAL_AMQP)
    yield connection
    await connection.close()


@pytest.fixture
async def queue_factory(
    amqp: AbstractRobustConnection, unique: Callable[[str], str]
) -> AsyncIterator[Callable[..., Any]]:
    """Declares durable queues with unique names; deletes them (and their DLQs) after."""
    names: list[str] = []
    channel = await amqp.channel()

    async def make(prefix: str = "q", **kwargs: Any) -> aio_pika.abc.AbstractQueue:
        kwargs.setdefault("durable", True)
        queue = await channel.declare_queue(unique(prefix), **kwargs)
        names.append(queue.name)
        return queue

    yield make
    cleanup = await amqp.channel()
    for name in names:
        for n in (name, f"{name}.dlq"):
            try:
                await cleanup.queue_delete(n)
            except Exception:
                cleanup = await amqp.channel()


@pytest.fixture
def stack_factory(service_factory: Callable[..., ServiceProcess]) -> Iterator[Callable[..., Stack]]:
    """``stack_factory(consumers=2, env={...})`` -> a started, ready :class:`Stack`."""
    stacks: list[Stack] = []

    def make(*, wait: bool = True, **kwargs: Any) -> Stack:
        stack = Stack(service_factory, **kwargs)
        stacks.append(stack)
        return stack.start(wait=wait)

    yield make
    for stack in stacks:
        stack.cleanup()
        stack.close()
