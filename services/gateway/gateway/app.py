"""The gateway application: ``create_app(settings)`` and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, web

from gateway import api, keys, openapi
from gateway.broker import GatewayBroker
from gateway.errors import auth_middleware, errors_middleware, input_middleware, security_headers
from gateway.management import Management
from gateway.settings import GatewaySettings
from gateway.state import State
from warren.lifecycle import cancel_and_wait
from warren.telemetry import TelemetryStatus

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def broker_ctx(app: web.Application) -> AsyncIterator[None]:
    broker = app[keys.BROKER]
    broker.start()
    yield
    await broker.disconnect()


async def management_ctx(app: web.Application) -> AsyncIterator[None]:
    mgmt = app[keys.MANAGEMENT]
    await mgmt.open()
    yield
    await mgmt.close()


async def stats_ctx(app: web.Application) -> AsyncIterator[None]:
    """Push queue stats and rates to live clients; forget replicas long gone."""

    async def loop() -> None:
        interval = app[keys.SETTINGS].gateway.stats_interval
        state = app[keys.STATE]
        while True:
            await asyncio.sleep(interval)
            state.forget_stale()
            if not len(state.hub) or not app[keys.BROKER].ready:
                continue
            try:
                body = await api.queues.queues_body(app)
            except Exception as exc:  # a stats hiccup must not end the loop
                log.debug("Queue stats failed: %s", exc)
                continue
            state.hub.publish("queues", body)
            rates = {"published": 0.0, "delivered": 0.0, "acked": 0.0}
            for q in body["queues"]:
                if q["rates"]:
                    rates["published"] += q["rates"]["publish"]
                    rates["delivered"] += q["rates"]["deliver"]
                    rates["acked"] += q["rates"]["ack"]
            state.hub.publish("rates", rates)

    task = asyncio.create_task(loop(), name="stats")
    yield
    await cancel_and_wait(task)


async def sockets_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    sockets = app[keys.SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down")


def create_app(
    settings: GatewaySettings, *, telemetry: TelemetryStatus | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, errors_middleware, auth_middleware, input_middleware],
        client_max_size=settings.gateway.max_body_bytes,
    )
    state = State(
        history=settings.gateway.history,
        jobs_kept=settings.gateway.jobs_kept,
        lost_after=settings.gateway.lost_after,
        jaeger_url=settings.gateway.jaeger_url,
    )
    app[keys.SETTINGS] = settings
    app[keys.STATE] = state
    app[keys.TELEMETRY] = telemetry or TelemetryStatus()
    app[keys.BROKER] = GatewayBroker(
        settings, state, instance=f"{settings.replica_id}-{uuid.uuid4().hex[:6]}"
    )
    app[keys.MANAGEMENT] = Management(settings.management, settings.amqp)
    app[keys.KNOWN_QUEUES] = set()
    app[keys.KNOWN_EXCHANGES] = {}
    app[keys.QUEUE_LIMITS] = {}
    app[keys.SOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.extend([management_ctx, broker_ctx, stats_ctx, sockets_ctx])
    api.add_routes(app)
    openapi.setup(app)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, append_version=True)
    return app
