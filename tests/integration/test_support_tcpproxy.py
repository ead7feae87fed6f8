"""The partitioning TCP proxy with a real aio-pika connection to the shared broker.

Only connections this test opens go through the proxy: the shared broker itself is never
touched.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import pytest

from tests.support.tcpproxy import TcpProxy, ThreadedTcpProxy

pytestmark = pytest.mark.broker

BROKER = ("127.0.0.1", 5672)


def url(port: int, heartbeat: int = 2) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/?heartbeat={heartbeat}&name=support-proxy-test"


async def round_trip(connection: aio_pika.abc.AbstractConnection, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        channel = await connection.channel()
        queue = await channel.declare_queue(f"support-proxy-{uuid.uuid4().hex}", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=queue.name)
        message = await queue.get(timeout=timeout, fail=True)
        assert message is not None
        assert message.body == b"ping"
        await message.ack()
        await channel.close()


def watch_close(connection: aio_pika.abc.AbstractConnection) -> asyncio.Event:
    """An event set when the connection is lost (aio-pika's ``closed()`` only resolves on an
    explicit ``close()``; a lost connection runs ``close_callbacks``)."""
    lost = asyncio.Event()
    connection.close_callbacks.add(lambda *_: lost.set())
    return lost


async def wait_lost(lost: asyncio.Event, timeout: float) -> float:
    began = time.monotonic()
    await asyncio.wait_for(lost.wait(), timeout)
    return time.monotonic() - began


@pytest.fixture
def proxy() -> ThreadedTcpProxy:
    with ThreadedTcpProxy(*BROKER) as proxy:
        yield proxy


async def test_freeze_is_detected_by_heartbeat(proxy: ThreadedTcpProxy) -> None:
    connection = await aio_pika.connect(url(proxy.port), timeout=5)
    try:
        await round_trip(connection)
        lost = watch_close(connection)
        proxy.freeze()
        assert proxy.frozen
        # aiormq gives up after about 3 x (heartbeat + 1) s of silence.
        detected_after = await wait_lost(lost, timeout=15)
        assert detected_after < 12
    finally:
        proxy.thaw()
        await connection.close()


async def test_short_freeze_then_thaw_keeps_the_connection(proxy: ThreadedTcpProxy) -> None:
    connection = await aio_pika.connect(url(proxy.port, heartbeat=5), timeout=5)
    try:
        await round_trip(connection)
        proxy.freeze()
        publish = asyncio.ensure_future(round_trip(connection, timeout=10))
        # The partition lasts 1 s on purpose: nothing may get through meanwhile.
        await asyncio.sleep(1)
        assert not publish.done()
        proxy.thaw()
        await publish
        assert connection.connected.is_set()
    finally:
        await connection.close()


async def test_reset_drops_connections_and_new_ones_work(proxy: ThreadedTcpProxy) -> None:
    connection = await aio_pika.connect(url(proxy.port), timeout=5)
    await round_trip(connection)
    assert proxy.open_connections == 1
    lost = watch_close(connection)
    proxy.reset()
    assert await wait_lost(lost, timeout=3) < 2

    again = await aio_pika.connect(url(proxy.port), timeout=5)
    try:
        await round_trip(again)
        assert proxy.accepted == 2
    finally:
        await again.close()


async def test_new_connections_hang_while_frozen(proxy: ThreadedTcpProxy) -> None:
    proxy.freeze()
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await aio_pika.connect(url(proxy.port), timeout=1)
    proxy.thaw()
    connection = await aio_pika.connect(url(proxy.port), timeout=5)
    await round_trip(connection)
    await connection.close()


async def test_asyncio_proxy_in_the_test_loop() -> None:
    proxy = TcpProxy(*BROKER)
    port = await proxy.start()
    try:
        connection = await aio_pika.connect(url(port), timeout=5)
        await round_trip(connection)
        lost = watch_close(connection)
        await proxy.stop()
        await wait_lost(lost, timeout=3)
        assert proxy.open_connections == 0
    finally:
        await proxy.stop()
