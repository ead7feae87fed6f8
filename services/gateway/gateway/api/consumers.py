"""Which queues the consumer replicas consume; start and stop (with drain)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gateway import keys
from gateway.api.common import state_of
from gateway.errors import HTTPError, read_json
from gateway.schemas import (
    ConsumerStart,
)
from gateway.state import Desired
from warren.contracts import ConsumeCommand

log = logging.getLogger(__name__)


routes = web.RouteTableDef()


@routes.get("/api/consumers")
async def list_consumers(request: web.Request) -> web.Response:
    state = state_of(request)
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
    broker, state = request.app[keys.BROKER], state_of(request)
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
    state = state_of(request)
    known = queue in state.desired or any(
        q.queue == queue for r in state.alive_consumers() for q in r.beat.queues
    )
    if not known:
        raise HTTPError(404, f"no consumer of {queue!r}", field="queue")
    state.desired.pop(queue, None)
    state.stopped_at[queue] = time.monotonic()
    await request.app[keys.BROKER].send_control(ConsumeCommand(action="stop", queue=queue))
    return web.json_response({"queue": queue, "status": "stopping"}, status=202)
