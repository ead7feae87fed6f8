"""``python -m producer``: run one producer replica until SIGTERM/SIGINT."""

from __future__ import annotations

from producer.service import ProducerService
from producer.settings import ProducerSettings
from warren import lifecycle, telemetry
from warren.settings import configure_logging


def main() -> None:
    settings = ProducerSettings()
    configure_logging(settings.log_level)
    lifecycle.run_service(
        lambda: ProducerService(settings, telemetry_status=telemetry.setup("producer")),
        name=f"Producer {settings.replica_id}",
    )


if __name__ == "__main__":
    main()
