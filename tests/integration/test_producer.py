"""The producer's publisher against a real broker: what reaches the queue, and what is counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from producer.publisher import JobState, Publisher
from tests.support.rabbitnode import RabbitNode
from warren.contracts import MessageProperties, PublishJob

pytestmark = pytest.mark.broker


def make_publisher(connection: AbstractRobustConnection, *, timeout: float = 5) -> Publisher:
    return Publisher(
        connection, publish_timeout=timeout, retry_deadline=60, trace_first=0, trace_every=0
    )


async def run(publisher: Publisher, **job: Any) -> JobState:
    state = JobState(job=PublishJob(**job), producer="test")
    await publisher.run(state)
    await publisher.close()
    return state


async def drain(queue: AbstractQueue, count: int, timeout: float = 10) -> list[Any]:
    got = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            await message.ack()
            got.append(message)
    return got


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll a counter of a running job with a deadline (the job has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def depth(connection: AbstractRobustConnection, name: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_every_property_reaches_the_message(
    amqp: AbstractRobustConnection, queue_factory: Callable[..., Any]
) -> None:
    queue = await queue_factory("props", arguments={"x-max-priority": 10})
    props = MessageProperties(
        content_type="application/vnd.acme+json",
        content_encoding="utf-8",
        priority=7,
        expiration=60_000,
        headers={"tenant": "acme", "n": 3},
        message_id="m-1",
        correlation_id="c-1",
        type="order.created",
        app_id="shop",
    )
    before = datetime.now(UTC) - timedelta(seconds=2)
    state = await run(make_publisher(amqp), routing_key=queue.name, body={"a": 1}, properties=props)
    assert (state.status, state.confirmed, state.message_id) == ("done", 1, "m-1")
    [msg] = await drain(queue, 1)
    assert json.loads(msg.body) == {"a": 1}
    assert msg.content_type == "application/vnd.acme+json"
    assert msg.content_encoding == "utf-8"
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert msg.priority == 7
    assert msg.expiration == 60.0  # seconds, from the "60000" ms on the wire
    assert msg.headers["tenant"] == "acme"
    assert msg.headers["n"] == 3
    assert msg.message_id == "m-1"
    assert msg.correlation_id == "c-1"
    assert msg.type == "order.created"
    assert msg.app_id == "shop"
    assert msg.timestamp is not None
    assert msg.timestamp >= before.replace(microsecond=0)


async def test_defaults_json_text_generated_id_and_no_timestamp(
    amqp: AbstractRobustConnection, queue_factory: Callable[..., Any]
) -> None:
    queue = await queue_factory("defaults")
    publisher = make_publisher(amqp)
    json_job = await run(publisher, routing_key=queue.name, body={"x": [1, "é"]})
    text_job = await run(
        publisher,
        routing_key=queue.name,
        body="hello {seq}",
        body_is_text=True,
        properties=MessageProperties(delivery_mode=1, timestamp=False),
    )
    first, second = await drain(queue, 2)
    assert first.content_type == "application/json"
    assert json.loads(first.body) == {"x": [1, "é"]}
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.message_id == json_job.message_id == json_job.job.job_id
    assert first.timestamp is not None
    assert second.content_type == "text/plain"
    assert second.body == b"hello {seq}", "a single message is not a template"
    assert second.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
    assert second.timestamp is None
    assert second.message_id == text_job.message_id
    assert first.message_id != second.message_id


async def test_batch_template_makes_each_message_differ(
    amqp: AbstractRobustConnection, queue_factory: Callable[..., Any]
) -> None:
    queue = await queue_factory("tmpl")
    state = await run(
        make_publisher(amqp),
        batch=True,
        template=True,
        count=50,
        concurrency=10,
        routing_key=queue.name,
        body={"seq": "{seq}", "id": "{uuid}", "at": "{now}", "fixed": 1},
    )
    assert (state.status, state.confirmed, state.published) == ("done", 50, 50)
    bodies = [json.loads(m.body) for m in await drain(queue, 50)]
    assert sorted(int(b["seq"]) for b in bodies) == list(range(50))
    assert len({b["id"] for b in bodies}) == 50
    for b in bodies:
        datetime.fromisoformat(b["at"])
        assert b["fixed"] == 1


async def test_unroutable_message_is_returned_never_confirmed(
    amqp: AbstractRobustConnection, unique: Callable[[str], str]
) -> None:
    state = await run(make_publisher(amqp), routing_key=unique("nowhere"), body=1)
    assert state.status == "failed"
    assert state.error_kind == "unroutable"
    assert (state.returned, state.confirmed) == (1, 0)

    batch = await run(
        make_publisher(amqp), batch=True, count=20, concurrency=5, routing_key=unique("nowhere")
    )
    assert (batch.returned, batch.confirmed, batch.status) == (20, 0, "done")
    assert batch.error_kind == "unroutable"


async def test_unknown_exchange_fails_alone_while_another_job_completes(
    amqp: AbstractRobustConnection, queue_factory: Callable[..., Any], unique: Callable[[str], str]
) -> None:
    queue = await queue_factory("good")
    publisher = make_publisher(amqp)
    good = asyncio.create_task(
        run(publisher, batch=True, count=3000, concurrency=100, routing_key=queue.name, body=1)
    )
    bad_states = await asyncio.gather(
        *(run(publisher, exchange=unique("missing-ex"), routing_key="k", body=1) for _ in range(5))
    )
    for bad in bad_states:
        assert (bad.status, bad.error_kind, bad.confirmed) == ("failed", "not_found", 0)
        assert "exchange" in (bad.error or "")
    result = await asyncio.wait_for(good, 60)
    assert (result.status, result.confirmed, result.failed) == ("done", 3000, 0)
    assert await depth(amqp, queue.name) == 3000


async def test_cancel_stops_a_running_batch_and_counts_what_was_confirmed(
    amqp: AbstractRobustConnection, queue_factory: Callable[..., Any]
) -> None:
    queue = await queue_factory("cancel")
    state = JobState(
        job=PublishJob(batch=True, count=1_000_000, concurrency=50, routing_key=queue.name),
        producer="test",
    )
    task = asyncio.create_task(make_publisher(amqp).run(state))
    await until(lambda: state.confirmed >= 500, 20)
    state.cancelled = True
    await asyncio.wait_for(task, 20)
    assert state.status == "cancelled"
    assert 500 <= state.confirmed < 1_000_000
    assert state.published == state.confirmed
    assert await depth(amqp, queue.name) == state.confirmed


# Faults on a private node ------------------------------------------------------------------------


@pytest.fixture
async def node_connection(rabbit_node: RabbitNode) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(rabbit_node.amqp_url, reconnect_interval=0.5)
    yield connection
    await connection.close()


@pytest.mark.faults
async def test_dropped_connection_mid_batch_loses_nothing(
    rabbit_node: RabbitNode,
    node_connection: AbstractRobustConnection,
    unique: Callable[[str], str],
) -> None:
    channel = await node_connection.channel()
    queue = await channel.declare_queue(unique("drop"), durable=True)
    count = 20_000
    state = JobState(
        job=PublishJob(batch=True, count=count, concurrency=200, routing_key=queue.name),
        producer="test",
    )
    task = asyncio.create_task(make_publisher(node_connection).run(state))
    try:
        await until(lambda: state.confirmed >= 2000, 30)
        await asyncio.to_thread(rabbit_node.close_all_connections, "test: drop mid-batch")
        await asyncio.wait_for(task, 60)
        assert state.status == "done", state.error
        assert state.confirmed == count, "each message confirmed exactly once in the counts"
        assert state.failed == 0
        assert state.retried > 0, "the drop caught publishes in flight"
        ids: list[str] = []
        all_in = asyncio.Event()

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            ids.append(message.message_id or "")
            if len(ids) >= count and len(set(ids)) == count:
                all_in.set()

        await channel.set_qos(prefetch_count=1000)
        await queue.consume(collect, no_ack=True)
        await asyncio.wait_for(all_in.wait(), 60)
        assert set(ids) == {f"{state.job.job_id}-{seq}" for seq in range(count)}
        assert len(ids) - count <= state.retried, "duplicates only of retried messages"
    finally:
        task.cancel()
        await asyncio.to_thread(rabbit_node.delete_queue, queue.name)


@pytest.mark.faults
async def test_blocked_broker_gives_a_timeout_not_a_hang(
    rabbit_node: RabbitNode, node_connection: AbstractRobustConnection, unique: Callable[[str], str]
) -> None:
    channel = await node_connection.channel()
    queue = await channel.declare_queue(unique("blocked"), durable=True)
    publisher = make_publisher(node_connection, timeout=2)
    await asyncio.to_thread(rabbit_node.memory_alarm, True)
    try:
        state = await asyncio.wait_for(run(publisher, routing_key=queue.name, body=1), 10)
        assert (state.status, state.error_kind) == ("failed", "timeout")
        assert (state.confirmed, state.failed) == (0, 1)
        # A batch's messages time out together: the job fails, it does not retry forever.
        many = await asyncio.wait_for(
            run(publisher, batch=True, count=1_000_000, concurrency=50, routing_key=queue.name),
            15,
        )
        assert (many.status, many.error_kind, many.confirmed) == ("failed", "timeout", 0)
    finally:
        await asyncio.to_thread(rabbit_node.memory_alarm, False)
    state = await asyncio.wait_for(run(publisher, routing_key=queue.name, body=2), 20)
    assert (state.status, state.confirmed) == ("done", 1)
    await asyncio.to_thread(rabbit_node.delete_queue, queue.name)


@pytest.mark.faults
async def test_a_refused_publish_fails_at_once_not_after_retrying(
    rabbit_node: RabbitNode, unique: Callable[[str], str]
) -> None:
    user = unique("no-write")
    await asyncio.to_thread(rabbit_node.rabbitmqctl, "add_user", user, "pw")
    await asyncio.to_thread(
        rabbit_node.rabbitmqctl, "set_permissions", "-p", "/", user, ".*", "^$", ".*"
    )
    url = rabbit_node.amqp_url.replace("guest:guest", f"{user}:pw")
    connection = await aio_pika.connect_robust(url, reconnect_interval=0.5)
    try:
        state = await asyncio.wait_for(
            run(make_publisher(connection), exchange="amq.direct", routing_key="k", body=1), 20
        )
        assert (state.status, state.error_kind, state.confirmed) == ("failed", "refused", 0)
        assert state.retried == 0
        assert "refused" in (state.error or "")
    finally:
        await connection.close()
        await asyncio.to_thread(rabbit_node.rabbitmqctl, "delete_user", user)
