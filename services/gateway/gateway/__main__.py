"""``python -m gateway``: serve the console and the JSON API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.app import create_app
from gateway.settings import GatewaySettings
from warren import lifecycle, telemetry
from warren.settings import configure_logging

log = logging.getLogger("gateway")


class AccessLogger(AbstractAccessLogger):
    """Method, path, status and time: never the query string (the event stream's ?token=)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1f ms",
            request.remote,
            request.method,
            request.path[:300],
            response.status,
            time * 1000,
        )


async def serve(settings: GatewaySettings) -> None:
    status = telemetry.setup("gateway", aiohttp_server=True)
    app = create_app(settings, telemetry=status)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=3, access_log_class=AccessLogger
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway.host, settings.gateway.port)
    await site.start()
    log.info("Gateway on http://%s:%d", settings.gateway.host, settings.gateway.port)

    stop = asyncio.Event()
    lifecycle.install_stop_signals(stop)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    log.info("Gateway stopped")


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level)
    if settings.gateway.token is None and settings.gateway.host not in (
        "127.0.0.1",
        "localhost",
        "::1",
    ):
        log.warning(
            "No WARREN_GATEWAY__TOKEN set while listening on %s: the API is open",
            settings.gateway.host,
        )
    try:
        lifecycle.run(lambda: serve(settings))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
