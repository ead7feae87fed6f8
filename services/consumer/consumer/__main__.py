"""``python -m consumer``: run one consumer replica; SIGTERM drains it."""

from __future__ import annotations

from consumer.settings import ConsumerSettings
from consumer.worker import Worker
from warren import lifecycle, telemetry
from warren.settings import configure_logging


def main() -> None:
    settings = ConsumerSettings()
    configure_logging(settings.log_level)
    lifecycle.run_service(
        lambda: Worker(settings, telemetry_status=telemetry.setup("consumer")),
        name=f"Consumer {settings.replica_id}",
    )


if __name__ == "__main__":
    main()
