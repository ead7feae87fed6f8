"""The gateway's settings: ``WARREN_GATEWAY__*`` plus the shared ones."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from warren.settings import WarrenSettings


class GatewayGroup(BaseModel):
    host: str = Field(default="127.0.0.1", description="Listen address (127.0.0.1 unless told).")
    port: int = Field(default=8080, ge=0, le=65535)
    token: SecretStr | None = Field(
        default=None, description="When set, every API call needs 'Authorization: Bearer <token>'."
    )
    jaeger_url: str = Field(default="http://localhost:16686", description="Trace links point here.")
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest accepted request body (413 above)."
    )
    max_batch_count: int = Field(default=10_000_000, ge=1)
    max_concurrency: int = Field(default=5000, ge=1)
    history: int = Field(default=2000, ge=10, le=1_000_000, description="Records kept in memory.")
    jobs_kept: int = Field(default=1000, ge=10, description="Finished jobs remembered.")
    lost_after: float = Field(
        default=3.0, gt=1, description="A replica is lost after this many missed heartbeats."
    )
    stats_interval: float = Field(default=1.0, gt=0, description="Seconds between queue stats.")


class GatewaySettings(WarrenSettings):
    gateway: GatewayGroup = GatewayGroup()
