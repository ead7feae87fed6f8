"""Least privilege: each service runs as its own broker user, with only what its role needs.

The users and permissions are the compose broker's (`deploy/rabbitmq/definitions.json`),
imported into a vhost of the private node; the passwords are the committed dev ones in `.env`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest

from tests.faults.helpers import split_stack
from tests.support.rabbitnode import RabbitNode
from tests.support.stack import wait_until

pytestmark = [pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[2]
VHOST = "leastpriv"


def _passwords() -> dict[str, str]:
    env = (ROOT / ".env").read_text()
    return {
        user: re.search(rf"^BROKER_{user.upper()}_PASSWORD=(.+)$", env, re.M).group(1).strip()  # type: ignore[union-attr]
        for user in ("gateway", "producer", "consumer")
    }


@pytest.fixture(scope="module")
def users(
    rabbit_node: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The compose definitions imported into their own vhost; user name → AMQP URL."""
    definitions = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text())
    for key in ("permissions", "topic_permissions", "queues", "exchanges", "bindings", "policies"):
        for item in definitions.get(key, []):
            if item.get("vhost") == "/":
                item["vhost"] = VHOST
    definitions["vhosts"] = [{"name": VHOST}]
    path = tmp_path_factory.mktemp("defs") / "definitions.json"
    path.write_text(json.dumps(definitions))
    rabbit_node.rabbitmqctl("add_vhost", VHOST, check=False)
    rabbit_node.rabbitmqctl("import_definitions", str(path))
    port = rabbit_node.amqp_port
    yield {
        user: f"amqp://{user}:{password}@127.0.0.1:{port}/{VHOST}"
        for user, password in _passwords().items()
    }
    rabbit_node.rabbitmqctl("delete_vhost", VHOST, check=False)
    for user in ("admin", "gateway", "producer", "consumer"):
        rabbit_node.rabbitmqctl("delete_user", user, check=False)


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer callback that is never meant to run (the consume must be refused)."""


async def _refused(url: str, action: Callable[[aio_pika.abc.AbstractChannel], Any]) -> bool:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            await action(channel)
        except aiormq.exceptions.ChannelAccessRefused:
            return True
        return False
    finally:
        await connection.close()


async def test_each_service_works_as_its_own_user_and_nothing_more(
    rabbit_node: RabbitNode, users: dict[str, str], service_factory: Callable[..., Any]
) -> None:
    per_module = {
        module: {"WARREN_AMQP__URL": users[module], "WARREN_NAMESPACE": "warren"}
        for module in ("gateway", "producer", "consumer")
    }
    # The gateway reads the management API as itself too (its user is tagged `management`).
    stack = split_stack(service_factory, rabbit_node, per_module=per_module)
    queue = stack.create_queue(dead_letter=True)
    stack.consume(queue, prefetch=5)
    sent = stack.post("/api/messages", {"queue": queue, "body": {"least": "privilege"}})
    assert sent.status_code == 200, sent.text
    records = wait_until(lambda: stack.received(queue), timeout=20, what="the processed record")
    assert records[0]["message_id"] == sent.json()["message_id"]
    failed = stack.post(
        "/api/messages",
        {"queue": queue, "body": "poison", "properties": {"headers": {"x-warren-fail": True}}},
    )
    assert failed.status_code == 200, failed.text
    wait_until(
        lambda: any(r["outcome"] == "dead_lettered" for r in stack.received(queue)),
        timeout=30,
        what="the poison message dead-lettered by the consumer user",
    )

    # What each role must not do is refused by the broker (403), while the services run.
    def consume(name: str) -> Callable[[aio_pika.abc.AbstractChannel], Any]:
        async def action(channel: aio_pika.abc.AbstractChannel) -> None:
            q = await channel.get_queue(name, ensure=False)
            await q.consume(_ignore)

        return action

    async def declare_exchange(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.declare_exchange("shop", aio_pika.ExchangeType.TOPIC, durable=True)

    assert await _refused(users["gateway"], consume("warren.jobs")), (
        "the gateway consumed the job queue"
    )
    assert await _refused(users["consumer"], declare_exchange), "the consumer declared an exchange"
    assert await _refused(users["producer"], consume(queue)), "the producer consumed a work queue"
    assert stack.health() == 200
    assert all(p.is_running() for p in [*stack.consumers, *stack.producers])
