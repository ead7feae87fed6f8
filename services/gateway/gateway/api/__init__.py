"""The JSON API under ``/api`` (the contract is in DESIGN.md; OpenAPI at /api/openapi.json)."""

from __future__ import annotations

from aiohttp import web

from gateway.api import consumers, publish, queues, status, stream


def add_routes(app: web.Application) -> None:
    for module in (status, queues, publish, consumers, stream):
        app.router.add_routes(module.routes)


__all__ = ["add_routes"]
