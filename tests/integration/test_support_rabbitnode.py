"""The private RabbitMQ node: each fault it offers, checked against the node itself."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Callable

import aio_pika
import pytest

from tests.support.rabbitnode import RabbitNode, RabbitNodeError

pytestmark = pytest.mark.faults


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def poll(check: Callable[[], bool], timeout: float) -> None:
    """rabbitmqctl readings lag a little: poll with a deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.2)


async def publish(node: RabbitNode, queue: str, count: int) -> None:
    connection = await aio_pika.connect(node.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for i in range(count):
            await channel.default_exchange.publish(
                aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )


def test_node_is_private_and_unique(rabbit_node: RabbitNode) -> None:
    assert rabbit_node.amqp_port != 5672
    assert rabbit_node.nodename.startswith("warren-")
    assert rabbit_node.nodename != RabbitNode().nodename
    assert rabbit_node.pid() is not None


def test_management_api_answers(rabbit_node: RabbitNode) -> None:
    request = urllib.request.Request(
        f"{rabbit_node.management_url}/api/overview",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        overview = json.load(response)
    assert overview["node"] == rabbit_node.nodename
    assert overview["rabbitmq_version"] == "3.10.8"


async def test_list_queues_counts_ready_and_unacked(rabbit_node: RabbitNode) -> None:
    queue = unique("counts")
    await publish(rabbit_node, queue, 3)
    connection = await aio_pika.connect(rabbit_node.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        held = await q.get(timeout=5, fail=True)
        assert held is not None
        await poll(lambda: rabbit_node.list_queues().get(queue) == (2, 1), timeout=10)
    await poll(lambda: rabbit_node.list_queues().get(queue) == (3, 0), timeout=10)
    rabbit_node.delete_queue(queue)
    assert queue not in rabbit_node.list_queues()


async def test_close_all_connections(rabbit_node: RabbitNode) -> None:
    connection = await aio_pika.connect(rabbit_node.amqp_url, timeout=10)
    lost = asyncio.Event()
    connection.close_callbacks.add(lambda *_: lost.set())
    rabbit_node.close_all_connections("support test")
    await asyncio.wait_for(lost.wait(), 10)
    await connection.close()


def test_alarms_go_on_and_off(rabbit_node: RabbitNode) -> None:
    # Each call returns only once rabbit_alarm reports the new state.
    rabbit_node.memory_alarm(True)
    rabbit_node.memory_alarm(False)
    rabbit_node.disk_alarm(True)
    rabbit_node.disk_alarm(False)
    assert rabbit_node.alarms() == "[]"


def test_consumer_timeout_is_set(rabbit_node: RabbitNode) -> None:
    rabbit_node.set_consumer_timeout(5000)
    value = rabbit_node.rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).")
    assert value.strip() == "{ok,5000}"


async def test_stop_app_then_start_app(rabbit_node: RabbitNode) -> None:
    rabbit_node.stop_app()
    with pytest.raises((ConnectionError, OSError, aio_pika.exceptions.AMQPConnectionError)):
        await aio_pika.connect(rabbit_node.amqp_url, timeout=3)
    rabbit_node.start_app()
    connection = await aio_pika.connect(rabbit_node.amqp_url, timeout=10)
    await connection.close()


async def test_kill9_and_restart_keeps_durable_messages(rabbit_node: RabbitNode) -> None:
    queue = unique("crash")
    await publish(rabbit_node, queue, 5)
    old_pid = rabbit_node.pid()
    rabbit_node.kill9()
    assert rabbit_node.pid() is None
    rabbit_node.start()
    assert rabbit_node.pid() not in (None, old_pid)
    assert rabbit_node.list_queues()[queue] == (5, 0)
    rabbit_node.delete_queue(queue)


def test_failed_start_leaves_nothing_behind() -> None:
    node = RabbitNode(start_timeout=1)
    try:
        with pytest.raises(RabbitNodeError):
            node.start()
        assert node._own_processes() == []
    finally:
        node.cleanup()
    assert not node.base_dir.exists()
