"""``python -m gateway``: serve the console and the JSON API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.app import create_app
from gateway.settings import GatewaySettings
from warren import lifecycle, telemetry
from warren.settings import configure_logging

log = logging.getLogger("gateway")


async def serve(settings: GatewaySettings) -> None:
    status = telemetry.setup("gateway", aiohttp_server=True)
    app = create_app(settings, telemetry=status)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=3)
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
