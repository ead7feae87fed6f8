"""Broker helpers: a robust named connection, Warren's topology, and contract encoding."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
    ExchangeType,
)
from pydantic import BaseModel, TypeAdapter

from warren.contracts import JOBS_ROUTING_KEY, Topology, control_replica_key
from warren.settings import AmqpSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"

# Errors meaning "the connection or channel is gone right now"; a robust connection is
# reconnecting and a retry after it is back may succeed.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    RuntimeError,  # aio-pika raises RuntimeError("... closed") from some paths
)


async def connect(
    settings: AmqpSettings,
    *,
    service: str,
    replica: str,
    stop: asyncio.Event | None = None,
) -> AbstractRobustConnection:
    """Connect robustly, retrying the first connection until the broker answers.

    aio-pika's ``connect_robust`` only reconnects once it has connected; the first attempt
    fails at once when the broker is not up yet (aio-pika #202), so we retry with a capped
    exponential backoff and log each wait. The connection is named ``<service>:<replica>`` so
    the management UI tells replicas apart. Returns early (raising ``asyncio.CancelledError``)
    when ``stop`` is set.
    """
    delay = min(0.5, settings.connect_backoff_max)
    attempt = 0
    while True:
        attempt += 1
        try:
            connection = await aio_pika.connect_robust(
                settings.connection_url(),
                client_properties={"connection_name": f"{service}:{replica}"},
                heartbeat=settings.heartbeat,
                reconnect_interval=settings.reconnect_interval,
                timeout=max(5.0, settings.heartbeat),
            )
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as exc:
            log.warning(
                "Broker %s not reachable (attempt %d: %s); retrying in %.1f s",
                settings.display_url(),
                attempt,
                type(exc).__name__,
                delay,
            )
        else:
            log.info("Connected to %s as %s:%s", settings.display_url(), service, replica)
            return connection
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            else:
                raise asyncio.CancelledError("stopped while waiting for the broker")
        else:
            await asyncio.sleep(delay)
        delay = min(delay * 2, settings.connect_backoff_max)


ConnectionState = Literal["connected", "reconnecting", "closed"]


def connection_state(*connections: AbstractRobustConnection | None) -> ConnectionState:
    """``connected``, ``reconnecting`` or ``closed``, as heartbeats and the API report it; for a
    service with several connections, the least healthy one's."""
    if any(c is None or c.is_closed for c in connections):
        return "closed"
    if any(not c.connected.is_set() for c in connections if c is not None):
        return "reconnecting"
    return "connected"


@dataclass(frozen=True)
class Exchanges:
    """Warren's own exchanges; kept referenced so robust restore re-declares them."""

    commands: AbstractExchange
    control: AbstractExchange
    events: AbstractExchange


async def declare_exchanges(
    channel: AbstractChannel, topology: Topology, *, passive: bool = False
) -> Exchanges:
    """Declare Warren's three exchanges (idempotent).

    With ``passive`` they are only checked (a missing one raises), for a least-privilege user
    that may not declare exchanges (the consumer's, in the compose broker definitions).
    """

    async def declare(name: str, kind: ExchangeType) -> AbstractExchange:
        return await channel.declare_exchange(name, kind, durable=True, passive=passive)

    return Exchanges(
        commands=await declare(topology.commands_exchange, ExchangeType.DIRECT),
        control=await declare(topology.control_exchange, ExchangeType.TOPIC),
        events=await declare(topology.events_exchange, ExchangeType.TOPIC),
    )


async def ensure_exchanges(
    connection: AbstractRobustConnection, topology: Topology, *, retry_interval: float = 2.0
) -> tuple[AbstractChannel, Exchanges]:
    """A confirm channel and Warren's exchanges, for a user that may lack ``configure`` rights.

    Checks the exchanges passively first (the broker definitions create them in compose); when
    one is missing, declares them (a developer's guest user may), and when that is refused too,
    waits for another service to declare them, logging each wait.
    """
    while True:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        try:
            return channel, await declare_exchanges(channel, topology, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            pass
        channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        try:
            return channel, await declare_exchanges(channel, topology)
        except aiormq.exceptions.ChannelAccessRefused:
            log.warning(
                "Exchanges %s.* missing and this user may not declare them; retrying in %.0f s",
                topology.namespace,
                retry_interval,
            )
        await asyncio.sleep(retry_interval)


async def consume_control(
    connection: AbstractRobustConnection,
    topology: Topology,
    exchanges: Exchanges,
    *,
    replica: str,
    broadcast_key: str,
    on_message: Callable[[AbstractIncomingMessage], Awaitable[None]],
) -> aio_pika.abc.AbstractQueue:
    """This replica's control queue, on its own channel: exclusive, gone with the replica, bound
    to the role's broadcast key and to the replica's own key, consumed without acks (a control
    command is acted on at once or not at all)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(
        topology.control_queue(replica), exclusive=True, auto_delete=True
    )
    await queue.bind(exchanges.control, broadcast_key)
    await queue.bind(exchanges.control, control_replica_key(replica))
    await queue.consume(on_message, no_ack=True)
    return queue


async def declare_jobs_queue(
    channel: AbstractChannel, topology: Topology, exchanges: Exchanges
) -> aio_pika.abc.AbstractQueue:
    """The durable job queue all producer replicas share (competing consumers)."""
    queue = await channel.declare_queue(topology.jobs_queue, durable=True)
    await queue.bind(exchanges.commands, JOBS_ROUTING_KEY)
    return queue


def encode(model: BaseModel, *, persistent: bool = False, **properties: Any) -> aio_pika.Message:
    """A contract as an AMQP message (JSON, typed by the model's ``kind``)."""
    return aio_pika.Message(
        model.model_dump_json().encode(),
        content_type=JSON,
        type=getattr(model, "kind", type(model).__name__),
        delivery_mode=(
            aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
        ),
        **properties,
    )


def decode(message: AbstractIncomingMessage, model: type[M]) -> M:
    """Parse a contract; raises ``pydantic.ValidationError`` on a malformed one."""
    return model.model_validate_json(message.body)


def decode_union(message: AbstractIncomingMessage, adapter: TypeAdapter[Any]) -> Any:
    """Parse one of a discriminated union of contracts."""
    return adapter.validate_json(message.body)
