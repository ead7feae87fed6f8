"""Health, status and the gateway's own broker connection."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.api.common import state_of
from warren import telemetry

log = logging.getLogger(__name__)


routes = web.RouteTableDef()


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
    # One bounded call (the management timeout; skipped while it is known to be down) so that
    # "rates_available" is what a queue listing would get now, not what the last one got.
    overview = await app[keys.MANAGEMENT].overview()

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
                    "url": app[keys.MANAGEMENT].base,
                    "cluster": (overview or {}).get("cluster_name"),
                },
                "token_required": settings.gateway.token is not None,
                "instrumentation": tel.instrumentation,
                "instrumentation_error": tel.error,
                "records_sampled_out": state_of(request).sampled_out,
            },
            "replicas": state_of(request).replica_list(),
            "rates_available": app[keys.MANAGEMENT].available,
            "lost_after_heartbeats": settings.gateway.lost_after,
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
