"""The JSON API against the three services as processes: the live event stream, status with
lost replicas, the token, and broker credentials kept out of every response and log line."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.broker]

TOKEN = "api-token-7f3e"


def _token_stack(stack_factory: Callable[..., Stack], **kwargs: Any) -> Stack:
    env = {"WARREN_GATEWAY__TOKEN": TOKEN, **kwargs.pop("env", {})}
    stack = stack_factory(wait=False, env=env, **kwargs)
    stack.http.headers["Authorization"] = f"Bearer {TOKEN}"
    stack.wait_ready()
    return stack


async def _events_until(
    ws: aiohttp.ClientWebSocketResponse, pred: Callable[[dict[str, Any]], bool], timeout: float
) -> list[dict[str, Any]]:
    """Every event received until one matches ``pred`` (frames are JSON arrays: batches)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            batch = json.loads(msg.data)
            assert isinstance(batch, list)
            seen += batch
            if any(pred(e) for e in batch):
                return seen


async def test_event_stream_pushes_the_record_of_a_published_message(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = _token_stack(stack_factory, consumers=1)
    queue = stack.create_queue()
    stack.consume(queue, prefetch=1)
    url = stack.base_url.replace("http", "ws") + "/api/events"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url)
        assert refused.value.status == 401
        async with session.ws_connect(f"{url}?token={TOKEN}") as ws:
            resp = await asyncio.to_thread(
                stack.post, "/api/messages", {"queue": queue, "body": {"ws": True}}
            )
            assert resp.status_code == 200, resp.text
            sent = resp.json()
            events = await _events_until(
                ws,
                lambda e: e["type"] == "record" and e["data"]["message_id"] == sent["message_id"],
                timeout=20,
            )
            record = next(e["data"] for e in events if e["type"] == "record")
            assert record["queue"] == queue
            assert record["trace_id"] == sent["trace_id"]
            assert record["body"] == '{"ws":true}'
            # Heartbeats, job progress and queue stats share the stream.
            more = await _events_until(ws, lambda e: e["type"] == "queues", timeout=10)
            kinds = {e["type"] for e in events + more}
            assert {"record", "heartbeat", "job", "queues"} <= kinds, kinds


async def test_two_hundred_concurrent_submits_through_the_services(
    stack_factory: Callable[..., Stack], amqp: AbstractRobustConnection
) -> None:
    stack = stack_factory(consumers=0)
    queue = stack.create_queue()
    async with aiohttp.ClientSession(base_url=stack.base_url) as http:

        async def submit(i: int, valid: bool) -> int:
            body: dict[str, Any] = {"queue": queue, "body": {"i": i}}
            if not valid:
                body["properties"] = {"priority": -i - 1}
            async with http.post("/api/messages", json=body) as resp:
                return resp.status

        codes = await asyncio.gather(
            *(submit(i, True) for i in range(200)), *(submit(i, False) for i in range(200))
        )
        assert codes[:200] == [200] * 200
        assert codes[200:] == [422] * 200
        async with http.get("/api/health") as resp:
            assert resp.status == 200
    async with amqp.channel() as ch:
        declared = await ch.declare_queue(queue, passive=True)
        # Exactly the accepted ones, once each: refused requests published nothing.
        assert declared.declaration_result.message_count == 200


def test_status_shows_broker_versions_and_a_frozen_replica_as_lost(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(consumers=2)
    status = stack.http.get("/api/status").json()
    assert status["broker"]["product"] == "RabbitMQ"
    assert status["broker"]["version"].startswith("3.")
    assert status["gateway"]["connection"] == "connected"
    assert {"aio-pika", "aiohttp"} <= set(status["gateway"]["versions"]), status["gateway"]
    assert status["rates_available"] is True
    roles = sorted(r["role"] for r in status["replicas"] if r["state"] == "alive")
    assert roles == ["consumer", "consumer", "producer"]

    frozen = stack.consumers[1]
    frozen.kill(signal.SIGSTOP)
    try:
        lost = wait_until(
            lambda: stack.replicas("consumer", state="lost"),
            timeout=15,
            what="the frozen replica shown as lost",
        )
        assert [r["replica"] for r in lost] == ["consumer-1"]
        assert lost[0]["last_seen_s"] > 1
        assert [r["replica"] for r in stack.replicas("consumer")] == ["consumer-0"]
    finally:
        frozen.kill(signal.SIGCONT)
    wait_until(
        lambda: len(stack.replicas("consumer")) == 2, timeout=15, what="both consumers alive again"
    )


@pytest.mark.faults
def test_broker_credentials_never_in_responses_or_logs(
    stack_factory: Callable[..., Stack], rabbit_node: RabbitNode
) -> None:
    user = f"api-{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    rabbit_node.rabbitmqctl("add_user", user, password)
    rabbit_node.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    rabbit_node.rabbitmqctl("set_user_tags", user, "management")
    try:
        url = rabbit_node.amqp_url.replace("guest:guest", f"{user}:{password}")
        assert password in url
        stack = _token_stack(
            stack_factory,
            consumers=1,
            amqp_url=url,
            management_url=rabbit_node.management_url,
        )
        queue = stack.create_queue()
        stack.consume(queue)
        assert stack.post("/api/messages", {"queue": queue, "body": "x"}).status_code == 200
        texts = []
        for path in (
            "/api/status",
            "/api/health",
            "/api/queues",
            f"/api/queues/{queue}",
            "/api/exchanges",
            "/api/consumers",
            "/api/messages/received",
            "/api/batches",
            "/api/openapi.json",
        ):
            resp = stack.http.get(path)
            assert resp.status_code == 200, (path, resp.text)
            texts.append(resp.text + str(resp.headers))
        # Errors too, including the broker's refusals.
        texts.append(stack.post("/api/queues", {"name": queue, "max_length": 3}).text)
        texts.append(stack.post("/api/bindings", {"queue": queue, "exchange": "nope"}).text)
        texts.append(stack.http.get("/").text)
        status = stack.http.get("/api/status").json()
        assert status["broker"]["url"].startswith(f"amqp://{user}:***@")
        # The gateway loses its broker connection and reconnects: still nothing in the logs.
        stack.post("/api/connection/disconnect", {})
        stack.post("/api/connection/connect", {})
        wait_until(lambda: stack.health() == 200, timeout=15, what="gateway reconnected")
        with httpx.Client(timeout=5) as probe:
            texts.append(probe.get(stack.base_url + "/api/status").text)  # the 401

        async def watch() -> None:  # the event stream with its ?token=, for the log check
            url = stack.base_url.replace("http", "ws") + f"/api/events?token={TOKEN}"
            async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
                texts.append(str(await ws.receive(timeout=10)))

        asyncio.run(watch())
        for text in texts:
            assert password not in text
        stack.stop()
        assert stack.gateway is not None
        for proc in [stack.gateway, *stack.producers, *stack.consumers]:
            log = proc.output()
            assert log, proc.name
            assert password not in log, proc.name
            assert TOKEN not in log, proc.name
    finally:
        rabbit_node.rabbitmqctl("delete_user", user, check=False)
