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
from warren.contracts import ConsumeCommand, ConsumedQueue

log = logging.getLogger(__name__)


routes = web.RouteTableDef()


@routes.get("/api/consumers")
async def list_consumers(request: web.Request) -> web.Response:
    """Queues asked of every replica (``scope: all``), then queues only some replicas consume
    (their own configuration, or a start naming one replica: ``scope: replica``)."""
    state = state_of(request)
    by_queue: dict[str, list[ConsumedQueue]] = {}
    names: dict[int, str] = {}
    for replica in state.alive_consumers():
        for q in replica.beat.queues:
            by_queue.setdefault(q.queue, []).append(q)
            names[id(q)] = replica.beat.replica
    consumers = [
        {
            "queue": d.queue,
            "prefetch": d.prefetch,
            "delivery_limit": d.delivery_limit,
            "scope": "all",
            "replicas": sorted(names[id(q)] for q in by_queue.get(d.queue, [])),
        }
        for d in sorted(state.desired.values(), key=lambda d: d.queue)
    ]
    for name in sorted(by_queue.keys() - state.desired.keys()):
        seen = by_queue[name]
        consumers.append(
            {
                "queue": name,
                "prefetch": max(q.prefetch for q in seen),
                "delivery_limit": seen[0].delivery_limit,
                "scope": "replica",
                "replicas": sorted(names[id(q)] for q in seen),
            }
        )
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
    """Stop (with drain) everywhere, or with ``?replica=ID`` on one replica only."""
    queue = request.match_info["queue"]
    replica = request.query.get("replica") or None
    state = state_of(request)
    consuming = [
        r.beat.replica
        for r in state.alive_consumers()
        if any(q.queue == queue for q in r.beat.queues)
    ]
    if replica is not None:
        if queue in state.desired:
            # The gateway would start it again on that replica at its next heartbeat.
            raise HTTPError(
                409,
                f"{queue!r} is consumed by every replica: stop it for all, then start it on "
                "the replicas that should keep it",
                field="replica",
            )
        if replica not in consuming:
            raise HTTPError(404, f"replica {replica!r} does not consume {queue!r}", field="replica")
    elif queue not in state.desired and not consuming:
        raise HTTPError(404, f"no consumer of {queue!r}", field="queue")
    else:
        state.desired.pop(queue, None)
        state.stopped_at[queue] = time.monotonic()
    await request.app[keys.BROKER].send_control(
        ConsumeCommand(action="stop", queue=queue, replica=replica)
    )
    return web.json_response(
        {"queue": queue, "status": "stopping", "replicas": [replica] if replica else consuming},
        status=202,
    )
