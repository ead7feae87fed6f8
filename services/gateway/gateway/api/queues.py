"""Queues, exchanges and bindings (stats from the management API when reachable)."""

from __future__ import annotations

import logging
from typing import Any

import aiormq
from aio_pika.abc import ExchangeType
from aiohttp import web

from gateway import keys
from gateway.api.common import name_param
from gateway.errors import HTTPError, read_json
from gateway.management import queue_json
from gateway.schemas import (
    BindingCreate,
    ExchangeCreate,
    QueueCreate,
)

log = logging.getLogger(__name__)


routes = web.RouteTableDef()


async def queues_body(app: web.Application) -> dict[str, Any]:
    """The queue list (management API when reachable, else passive declares)."""
    broker, mgmt, state = app[keys.BROKER], app[keys.MANAGEMENT], app[keys.STATE]
    raw = await mgmt.queues()
    if raw is not None:
        queues = [queue_json(q) for q in raw if not broker.topology.is_internal(q["name"])]
        return {
            "queues": sorted(queues, key=lambda q: q["name"]),
            "rates_available": True,
            "source": "management",
        }
    names = set(state.desired) | {
        q for r in state.replicas.values() for q in (x.queue for x in r.beat.queues)
    }
    known = app[keys.KNOWN_QUEUES]
    names.update(known)
    queues = []
    if broker.ready:
        for name in sorted(names):
            stats = await broker.queue_stats(name)
            if stats is None:
                app[keys.KNOWN_QUEUES].discard(name)
                continue
            queues.append(_passive_json(name, *stats))
    return {"queues": queues, "rates_available": False, "source": "amqp"}


def _not_internal(request: web.Request, name: str, field: str) -> None:
    """Warren's own queues and exchanges (the namespace) are not the user's to change: deleting
    or purging the job queue, say, would break publishing for everyone."""
    if request.app[keys.BROKER].topology.is_internal(name):
        prefix = request.app[keys.SETTINGS].namespace
        raise HTTPError(
            403, f"{field} {name!r}: names under {prefix!r}. are Warren's own", field=field
        )


def _amqp_reason(exc: BaseException) -> str:
    """The broker's reply text (``PRECONDITION_FAILED - inequivalent arg ...``), if any."""
    args = getattr(exc, "args", ())
    for arg in args:
        text = getattr(arg, "reply_text", None)
        if text:
            return str(text)
    return str(exc)


def _passive_json(name: str, ready: int, consumers: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": None,
        "durable": None,
        "messages_ready": ready,
        "messages_unacked": None,
        "messages": None,
        "consumers": consumers,
        "rates": None,
        "arguments": {},
        "dead_letter_queue": None,
    }


@routes.get("/api/queues")
async def list_queues(request: web.Request) -> web.Response:
    return web.json_response(await queues_body(request.app))


async def _queue_detail(request: web.Request, name: str) -> dict[str, Any]:
    raw = await request.app[keys.MANAGEMENT].queue(name)
    if raw is not None:
        return {**queue_json(raw), "rates_available": True}
    stats = await request.app[keys.BROKER].queue_stats(name)
    if stats is None:
        raise HTTPError(404, f"queue {name!r} not found", field="name")
    return {**_passive_json(name, *stats), "rates_available": False}


@routes.post("/api/queues")
async def create_queue(request: web.Request) -> web.Response:
    spec = QueueCreate.model_validate(await read_json(request))
    _not_internal(request, spec.name, "name")
    broker = request.app[keys.BROKER]
    args: dict[str, Any] = {}
    if spec.type == "quorum":
        args["x-queue-type"] = "quorum"
    if spec.message_ttl is not None:
        args["x-message-ttl"] = spec.message_ttl
    if spec.max_length is not None:
        args["x-max-length"] = spec.max_length
    if spec.dead_letter:
        # Broker-side dead-lettering (TTL, overflow, rejects) and the worker's go to one place.
        args["x-dead-letter-exchange"] = ""
        args["x-dead-letter-routing-key"] = f"{spec.name}.dlq"
        if spec.type == "quorum":
            # A backstop above the worker's own limit: it counts first and adds the error.
            args["x-delivery-limit"] = (spec.delivery_limit or 3) + 2
    async with broker.admin_channel() as ch:
        try:
            # The queue first: a conflict there (the usual one) leaves nothing half-done.
            await ch.declare_queue(spec.name, durable=spec.durable, arguments=args)
            if spec.dead_letter:
                dlq_args: dict[str, Any] = (
                    {"x-queue-type": "quorum"} if spec.type == "quorum" else {}
                )
                await ch.declare_queue(f"{spec.name}.dlq", durable=spec.durable, arguments=dlq_args)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise HTTPError(
                409,
                f"queue {spec.name!r} exists with other settings: {_amqp_reason(exc)}",
                field="name",
            ) from exc
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise HTTPError(
                403, f"not allowed to declare {spec.name!r}: {exc}", field="name"
            ) from exc
    request.app[keys.KNOWN_QUEUES].add(spec.name)
    if spec.delivery_limit is not None:
        request.app[keys.QUEUE_LIMITS][spec.name] = spec.delivery_limit
    body = await _queue_detail(request, spec.name)
    body.update({"durable": spec.durable, "type": spec.type, "arguments": args})
    body["dead_letter_queue"] = f"{spec.name}.dlq" if spec.dead_letter else None
    return web.json_response(body, status=201)


@routes.get("/api/queues/{name}")
async def get_queue(request: web.Request) -> web.Response:
    return web.json_response(await _queue_detail(request, name_param(request)))


@routes.delete("/api/queues/{name}")
async def delete_queue(request: web.Request) -> web.Response:
    name = name_param(request)
    _not_internal(request, name, "name")
    broker = request.app[keys.BROKER]
    if await broker.queue_stats(name) is None:
        raise HTTPError(404, f"queue {name!r} not found", field="name")
    async with broker.admin_channel() as ch:
        result = await ch.queue_delete(name)
    request.app[keys.KNOWN_QUEUES].discard(name)
    request.app[keys.QUEUE_LIMITS].pop(name, None)
    return web.json_response({"deleted": name, "messages": result.message_count})


@routes.post("/api/queues/{name}/purge")
async def purge_queue(request: web.Request) -> web.Response:
    name = name_param(request)
    _not_internal(request, name, "name")
    broker = request.app[keys.BROKER]
    if await broker.queue_stats(name) is None:
        raise HTTPError(404, f"queue {name!r} not found", field="name")
    async with broker.admin_channel() as ch:
        queue = await ch.get_queue(name, ensure=False)
        result = await queue.purge()
    return web.json_response({"purged": result.message_count})


@routes.get("/api/exchanges")
async def list_exchanges(request: web.Request) -> web.Response:
    raw = await request.app[keys.MANAGEMENT].exchanges()
    topology = request.app[keys.BROKER].topology
    if raw is None:
        names = sorted(request.app[keys.KNOWN_EXCHANGES].items())
        return web.json_response(
            {
                "exchanges": [{"name": n, "type": t, "durable": True} for n, t in names],
                "source": "amqp",
            }
        )
    exchanges = [
        {"name": e["name"], "type": e["type"], "durable": e.get("durable", True)}
        for e in raw
        if e["name"] and not topology.is_internal(e["name"])
    ]
    return web.json_response({"exchanges": exchanges, "source": "management"})


@routes.post("/api/exchanges")
async def create_exchange(request: web.Request) -> web.Response:
    spec = ExchangeCreate.model_validate(await read_json(request))
    _not_internal(request, spec.name, "name")
    async with request.app[keys.BROKER].admin_channel() as ch:
        try:
            await ch.declare_exchange(
                spec.name,
                ExchangeType(spec.type),
                durable=spec.durable,
                auto_delete=spec.auto_delete,
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise HTTPError(
                409, f"exchange {spec.name!r} exists with other settings", field="name"
            ) from exc
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise HTTPError(403, f"not allowed to declare {spec.name!r}", field="name") from exc
    request.app[keys.KNOWN_EXCHANGES][spec.name] = spec.type
    return web.json_response(spec.model_dump(), status=201)


@routes.post("/api/bindings")
async def create_binding(request: web.Request) -> web.Response:
    spec = BindingCreate.model_validate(await read_json(request))
    _not_internal(request, spec.queue, "queue")
    _not_internal(request, spec.exchange, "exchange")
    async with request.app[keys.BROKER].admin_channel() as ch:
        try:
            queue = await ch.get_queue(spec.queue, ensure=False)
            await queue.bind(spec.exchange, spec.routing_key, arguments=dict(spec.arguments))
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise HTTPError(404, f"queue or exchange not found: {exc}", field="exchange") from exc
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise HTTPError(403, f"not allowed to bind: {exc}", field="queue") from exc
    return web.json_response(spec.model_dump(), status=201)
