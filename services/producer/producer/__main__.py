"""``python -m producer``: run one producer replica until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging

from producer.service import ProducerService
from producer.settings import ProducerSettings
from warren import lifecycle, telemetry
from warren.settings import configure_logging

log = logging.getLogger("producer")


async def serve(settings: ProducerSettings) -> None:
    stop = asyncio.Event()
    lifecycle.install_stop_signals(stop)
    status = telemetry.setup("producer")
    service = ProducerService(settings, telemetry_status=status)
    try:
        await service.start(stop)
    except asyncio.CancelledError:
        log.info("Stopped before the broker was reachable")
        return
    await stop.wait()
    await service.stop()
    log.info("Producer %s stopped", settings.replica_id)


def main() -> None:
    settings = ProducerSettings()
    configure_logging(settings.log_level)
    try:
        lifecycle.run(lambda: serve(settings))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
