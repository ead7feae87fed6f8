"""The consumer's settings: ``WARREN_CONSUMER__*`` plus the shared ones."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from warren.settings import WarrenSettings


class ConsumerGroup(BaseModel):
    queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Queues consumed from start-up (comma-separated)."
    )
    prefetch: int = Field(default=10, ge=1, le=65535, description="Default prefetch (QoS).")
    drain_timeout: float = Field(
        default=10.0, ge=0, description="Seconds to finish in-flight messages on SIGTERM."
    )
    records_per_second: int = Field(
        default=1000,
        ge=0,
        description="Up to this rate every processed message gets a record; above it, sampled.",
    )
    record_batch_size: int = Field(default=500, ge=1, le=10000)
    record_flush_interval: float = Field(default=0.2, gt=0, le=10)
    body_preview_bytes: int = Field(default=2048, ge=0, le=1 << 20)
    max_body_bytes: int = Field(
        default=8 << 20, ge=1, description="Larger messages are dead-lettered undecoded."
    )
    delivery_limit: int = Field(
        default=3, ge=1, description="Deliveries a failing message gets before dead-lettering."
    )
    dedup_window: int = Field(
        default=10000, ge=0, description="Message ids remembered for de-duplication (0: off)."
    )
    work_ms: float = Field(default=0.0, ge=0, description="Simulated work per message, ms.")
    fail_rate: float = Field(default=0.0, ge=0, le=1, description="Share of messages that fail.")
    retry_backoff: float = Field(
        default=1.0,
        ge=0,
        description="Pause before requeueing a failure with no dead-letter queue.",
    )

    @field_validator("queues", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value


class ConsumerSettings(WarrenSettings):
    consumer: ConsumerGroup = ConsumerGroup()
