"""``python -m consumer``: run one consumer replica; SIGTERM drains it."""

from __future__ import annotations

import asyncio
import logging

from consumer.settings import ConsumerSettings
from consumer.worker import Worker
from warren import lifecycle, telemetry
from warren.settings import configure_logging

log = logging.getLogger("consumer")


async def serve(settings: ConsumerSettings) -> None:
    stop = asyncio.Event()
    lifecycle.install_stop_signals(stop)
    status = telemetry.setup("consumer")
    worker = Worker(settings, telemetry_status=status)
    try:
        await worker.start(stop)
    except asyncio.CancelledError:
        log.info("Stopped before the broker was reachable")
        return
    await stop.wait()
    await worker.stop()
    log.info("Consumer %s stopped", settings.replica_id)


def main() -> None:
    settings = ConsumerSettings()
    configure_logging(settings.log_level)
    try:
        lifecycle.run(lambda: serve(settings))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
