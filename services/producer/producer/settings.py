"""The producer's settings: ``WARREN_PRODUCER__*`` plus the shared ones."""

from __future__ import annotations

from pydantic import BaseModel, Field

from warren.settings import WarrenSettings


class ProducerGroup(BaseModel):
    max_jobs: int = Field(default=4, ge=1, le=256, description="Jobs one replica runs at once.")
    max_concurrency: int = Field(
        default=5000, ge=1, description="Upper bound of a batch's in-flight window."
    )
    progress_interval: float = Field(
        default=0.25, gt=0, le=5, description="Seconds between progress reports."
    )
    retry_deadline: float = Field(
        default=120.0,
        gt=0,
        description="How long a job keeps retrying through a broker outage before failing.",
    )
    trace_first: int = Field(
        default=10, ge=0, description="Messages of a batch traced individually from its start."
    )
    trace_every: int = Field(
        default=1000, ge=0, description="Then one message in this many is traced (0: none)."
    )


class ProducerSettings(WarrenSettings):
    producer: ProducerGroup = ProducerGroup()
