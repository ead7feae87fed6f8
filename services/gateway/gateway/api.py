"""The JSON API under ``/api`` (the contract is in DESIGN.md; OpenAPI at /api/openapi.json)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiormq
from aio_pika.abc import ExchangeType
from aiohttp import WSMsgType, web
from warren import telemetry
from warren.contracts import ConsumeCommand, JobProgress, PublishJob

from gateway import keys
from gateway.errors import HTTPError, read_json
from gateway.management import queue_json
from gateway.schemas import (
    BindingCreate,
    ConsumerStart,
    ExchangeCreate,
    PublishBatch,
    PublishMessage,
    QueueCreate,
)
from gateway.state import Desired, State, fingerprint, job_json

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _state(request: web.Request) -> State:
    state: State = request.app[keys.STATE]
    return state


def _limit(request: web.Request, name: str = "limit", default: int = 100, cap: int = 1000) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise HTTPError(400, f"{name} must be an integer", field=name) from exc
    if not 1 <= value <= cap:
        raise HTTPError(400, f"{name} must be between 1 and {cap}", field=name)
    return value


# Health and status --------------------------------------------------------------------------


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    broker = request.app[keys.BROKER]
    state = broker.connection_state
    ok = broker.ready
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "broker": state}, status=200 if ok else 503
    )


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    app = request.app
    broker, settings = app[keys.BROKER], app[keys.SETTINGS]
    props = broker.server_properties
    versions = telemetry.versions()
    tel = app[keys.TELEMETRY]

    def text(value: Any) -> str | None:
        return value.decode() if isinstance(value, bytes) else value

    return web.json_response(
        {
            "broker": {
                "product": text(props.get("product")),
                "version": text(props.get("version")),
                "url": settings.amqp.display_url(),
            },
            "gateway": {
                "connection": broker.connection_state,
                "instance": broker.instance,
                "namespace": settings.namespace,
                "versions": versions,
                "jaeger_url": settings.gateway.jaeger_url,
                "management": {
                    "available": app[keys.MANAGEMENT].available,
                    "url": settings.management.url,
                },
                "instrumentation": tel.instrumentation,
                "instrumentation_error": tel.error,
                "records_sampled_out": _state(request).sampled_out,
            },
            "replicas": _state(request).replica_list(),
        }
    )


@routes.post("/api/connection/connect")
async def connect(request: web.Request) -> web.Response:
    broker = request.app[keys.BROKER]
    await broker.connect()
    await broker.wait_ready(timeout=5)
    return web.json_response({"connection": broker.connection_state})


@routes.post("/api/connection/disconnect")
async def disconnect(request: web.Request) -> web.Response:
    broker = request.app[keys.BROKER]
    await broker.disconnect()
    return web.json_response({"connection": broker.connection_state})


# Queues, exchanges, bindings -----------------------------------------------------------------


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
            if spec.dead_letter:
                dlq_args: dict[str, Any] = (
                    {"x-queue-type": "quorum"} if spec.type == "quorum" else {}
                )
                await ch.declare_queue(f"{spec.name}.dlq", durable=spec.durable, arguments=dlq_args)
            await ch.declare_queue(spec.name, durable=spec.durable, arguments=args)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise HTTPError(
                409, f"queue {spec.name!r} exists with other settings: {exc}", field="name"
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
    return web.json_response(await _queue_detail(request, request.match_info["name"]))


@routes.delete("/api/queues/{name}")
async def delete_queue(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    broker = request.app[keys.BROKER]
    if await broker.queue_stats(name) is None:
        raise HTTPError(404, f"queue {name!r} not found", field="name")
    async with broker.admin_channel() as ch:
        result = await ch.queue_delete(name)
    request.app[keys.KNOWN_QUEUES].discard(name)
    return web.json_response({"deleted": name, "messages": result.message_count})


@routes.post("/api/queues/{name}/purge")
async def purge_queue(request: web.Request) -> web.Response:
    name = request.match_info["name"]
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
    async with request.app[keys.BROKER].admin_channel() as ch:
        try:
            queue = await ch.get_queue(spec.queue, ensure=False)
            await queue.bind(spec.exchange, spec.routing_key, arguments=dict(spec.arguments))
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise HTTPError(404, f"queue or exchange not found: {exc}", field="exchange") from exc
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise HTTPError(403, f"not allowed to bind: {exc}", field="queue") from exc
    return web.json_response(spec.model_dump(), status=201)


# Publishing ---------------------------------------------------------------------------------


def _job(spec: PublishMessage, *, batch: PublishBatch | None) -> PublishJob:
    exchange, routing_key = spec.resolved()
    is_text = isinstance(spec.body, str)
    return PublishJob(
        batch=batch is not None,
        exchange=exchange,
        routing_key=routing_key,
        body=spec.body,
        body_is_text=is_text,
        template=batch.template if batch is not None else False,
        count=batch.count if batch is not None else 1,
        concurrency=batch.concurrency if batch is not None else 1,
        properties=spec.properties,
    )


def _idempotent(request: web.Request, raw: bytes, job_id: str) -> str | None:
    """The job id of an earlier request with the same Idempotency-Key (409 if it differs)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise HTTPError(400, "Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
    earlier = _state(request).remember_key(f"{request.path}:{key}", fingerprint(raw), job_id)
    if earlier is None:
        return None
    if earlier[0] != fingerprint(raw):
        raise HTTPError(
            409,
            "Idempotency-Key reused with a different request",
            field="Idempotency-Key",
            job_id=earlier[1],
        )
    return earlier[1]


_STATUS_FOR_ERROR = {
    "unroutable": 404,
    "not_found": 404,
    "timeout": 503,
    "blocked": 503,
    "connection": 503,
    "nacked": 503,
    "other": 500,
}


def _message_response(progress: JobProgress, state: State) -> web.Response:
    body = {
        "status": "confirmed" if progress.status == "done" else progress.status,
        "job_id": progress.job_id,
        "message_id": progress.message_id,
        "trace_id": progress.trace_id,
        "trace_url": state.trace_url(progress.trace_id),
        "exchange": progress.exchange,
        "routing_key": progress.routing_key,
        "producer": progress.producer,
        "retried": progress.retried,
        "elapsed_ms": round(progress.elapsed_s * 1000, 2),
    }
    if progress.status == "done" and progress.confirmed == 1:
        return web.json_response(body)
    body["status"] = "returned" if progress.error_kind == "unroutable" else "failed"
    body["error"] = progress.error or "not confirmed"
    code = _STATUS_FOR_ERROR.get(progress.error_kind or "other", 500)
    if code == 404:
        body["field"] = "exchange" if progress.exchange else "queue"
    headers = {"Retry-After": "5"} if code == 503 else None
    return web.json_response(body, status=code, headers=headers)


@routes.post("/api/messages")
async def publish_message(request: web.Request) -> web.Response:
    raw_json = await read_json(request)
    spec = PublishMessage.model_validate(raw_json)
    state, broker, settings = _state(request), request.app[keys.BROKER], request.app[keys.SETTINGS]
    job = _job(spec, batch=None)
    earlier = _idempotent(request, json.dumps(raw_json, sort_keys=True).encode(), job.job_id)
    if earlier is not None:
        job = job.model_copy(update={"job_id": earlier})
        entry = state.jobs.get(earlier)
    else:
        entry = None
    if entry is None:
        entry = state.add_job(_queued(job, request))
        if earlier is None:
            await broker.send_job(job)
    timeout = settings.amqp.publish_timeout + 1
    try:
        await asyncio.wait_for(entry.done.wait(), timeout)
    except TimeoutError:
        return web.json_response(
            {
                "status": "pending",
                "job_id": job.job_id,
                "error": f"no confirmation from a producer within {timeout:g} s; "
                "the job stays queued: see GET /api/batches/" + job.job_id,
            },
            status=504,
        )
    return _message_response(entry.progress, state)


def _queued(job: PublishJob, request: web.Request) -> JobProgress:
    return JobProgress(
        job_id=job.job_id,
        status="queued",
        batch=job.batch,
        producer="",
        count=job.count,
        message_id=None if job.batch else (job.properties.message_id or job.job_id),
        trace_id=telemetry.current_trace_id(),
        exchange=job.exchange,
        routing_key=job.routing_key,
    )


@routes.post("/api/batches")
async def publish_batch(request: web.Request) -> web.Response:
    raw_json = await read_json(request)
    spec = PublishBatch.model_validate(raw_json)
    settings = request.app[keys.SETTINGS].gateway
    if spec.count > settings.max_batch_count:
        raise HTTPError(422, f"count must be at most {settings.max_batch_count}", field="count")
    if spec.concurrency > settings.max_concurrency:
        raise HTTPError(
            422, f"concurrency must be at most {settings.max_concurrency}", field="concurrency"
        )
    state = _state(request)
    job = _job(spec, batch=spec)
    earlier = _idempotent(request, json.dumps(raw_json, sort_keys=True).encode(), job.job_id)
    if earlier is not None:
        entry = state.jobs.get(earlier)
        progress = entry.progress if entry else None
        return web.json_response(
            {"job_id": earlier, "status": progress.status if progress else "queued"}, status=202
        )
    state.add_job(_queued(job, request))
    await request.app[keys.BROKER].send_job(job)
    return web.json_response(
        {"job_id": job.job_id, "status": "queued", "trace_id": telemetry.current_trace_id()},
        status=202,
        headers={"Location": f"/api/batches/{job.job_id}"},
    )


@routes.get("/api/batches")
async def list_batches(request: web.Request) -> web.Response:
    state = _state(request)
    limit = _limit(request)
    jobs = [job_json(e.progress, state) for e in reversed(state.jobs.values())][:limit]
    return web.json_response({"jobs": jobs})


def _job_entry(request: web.Request) -> Any:
    job_id = request.match_info["job_id"]
    if not job_id.isalnum() or len(job_id) > 64:
        raise HTTPError(400, "job ids are up to 64 letters and digits", field="job_id")
    entry = _state(request).jobs.get(job_id)
    if entry is None:
        raise HTTPError(404, f"job {job_id!r} not found", field="job_id")
    return entry


@routes.get("/api/batches/{job_id}")
async def get_batch(request: web.Request) -> web.Response:
    entry = _job_entry(request)
    return web.json_response(job_json(entry.progress, _state(request)))


@routes.delete("/api/batches/{job_id}")
async def cancel_batch(request: web.Request) -> web.Response:
    entry = _job_entry(request)
    if entry.done.is_set():
        raise HTTPError(409, f"job already {entry.progress.status}", field="job_id")
    await request.app[keys.BROKER].cancel_job(entry.progress.job_id)
    try:
        await asyncio.wait_for(entry.done.wait(), 5)
    except TimeoutError:
        return web.json_response(job_json(entry.progress, _state(request)), status=202)
    return web.json_response(job_json(entry.progress, _state(request)))


# Consumers ----------------------------------------------------------------------------------


@routes.get("/api/consumers")
async def list_consumers(request: web.Request) -> web.Response:
    state = _state(request)
    by_queue: dict[str, list[str]] = {}
    for replica in state.alive_consumers():
        for q in replica.beat.queues:
            by_queue.setdefault(q.queue, []).append(replica.beat.replica)
    consumers = [
        {
            "queue": d.queue,
            "prefetch": d.prefetch,
            "delivery_limit": d.delivery_limit,
            "replicas": sorted(by_queue.get(d.queue, [])),
        }
        for d in sorted(state.desired.values(), key=lambda d: d.queue)
    ]
    return web.json_response({"consumers": consumers, "replicas": state.replica_list("consumer")})


@routes.post("/api/consumers")
async def start_consumer(request: web.Request) -> web.Response:
    spec = ConsumerStart.model_validate(await read_json(request))
    broker, state = request.app[keys.BROKER], _state(request)
    if await broker.queue_stats(spec.queue) is None:
        raise HTTPError(404, f"queue {spec.queue!r} not found", field="queue")
    limit = spec.delivery_limit or request.app[keys.QUEUE_LIMITS].get(spec.queue)
    if spec.replica is None:
        state.desired[spec.queue] = Desired(spec.queue, spec.prefetch, limit)
        state.stopped_at.pop(spec.queue, None)
    await broker.send_control(
        ConsumeCommand(
            action="start",
            queue=spec.queue,
            prefetch=spec.prefetch,
            delivery_limit=limit,
            replica=spec.replica,
        )
    )
    return web.json_response(
        {
            "queue": spec.queue,
            "prefetch": spec.prefetch,
            "delivery_limit": limit,
            "replicas": [r.beat.replica for r in state.alive_consumers()]
            if spec.replica is None
            else [spec.replica],
        },
        status=202,
    )


@routes.delete("/api/consumers/{queue}")
async def stop_consumer(request: web.Request) -> web.Response:
    queue = request.match_info["queue"]
    state = _state(request)
    known = queue in state.desired or any(
        q.queue == queue for r in state.alive_consumers() for q in r.beat.queues
    )
    if not known:
        raise HTTPError(404, f"no consumer of {queue!r}", field="queue")
    state.desired.pop(queue, None)
    state.stopped_at[queue] = time.monotonic()
    await request.app[keys.BROKER].send_control(ConsumeCommand(action="stop", queue=queue))
    return web.json_response({"queue": queue, "status": "stopping"}, status=202)


# Processed messages and the live stream -----------------------------------------------------


@routes.get("/api/messages/received")
async def received(request: web.Request) -> web.Response:
    q = request.query
    for name in ("queue", "worker", "q"):
        if len(q.get(name, "")) > 255:
            raise HTTPError(400, f"{name} is too long", field=name)
    messages = _state(request).query_records(
        limit=_limit(request, default=100, cap=_state(request).records.maxlen or 1000),
        queue=q.get("queue") or None,
        worker=q.get("worker") or None,
        text=q.get("q") or None,
    )
    return web.json_response({"messages": messages, "count": len(messages)})


@routes.delete("/api/messages/received")
async def clear_received(request: web.Request) -> web.Response:
    state = _state(request)
    cleared = len(state.records)
    state.records.clear()
    return web.json_response({"cleared": cleared})


@routes.get("/api/events")
async def events(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    sockets = request.app[keys.SOCKETS]
    sockets.add(ws)
    sub = _state(request).hub.subscribe()

    async def sender() -> None:
        while not ws.closed:
            await sub.ready.wait()
            batch = sub.drain()
            if batch:
                await ws.send_str(json.dumps(batch))
            # Batch events: at most ~10 frames a second per client, whatever the record rate.
            await asyncio.sleep(0.1)

    task = asyncio.create_task(sender(), name="ws-sender")
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    command = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                if isinstance(command, dict) and "pause" in command:
                    sub.paused = bool(command["pause"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sockets.discard(ws)
    return ws
