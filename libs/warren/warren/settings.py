"""Settings shared by every Warren service.

Each service subclasses :class:`WarrenSettings` with its own group (``gateway``, ``producer``,
``consumer``) and builds it once in ``main()``. Everything comes from ``WARREN_*`` environment
variables, nested with ``__`` (``WARREN_AMQP__URL``); tests pass init keyword arguments instead.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"


class AmqpSettings(BaseModel):
    """How to reach the broker."""

    url: SecretStr = Field(
        default=SecretStr(DEFAULT_AMQP_URL),
        description="Broker URL; the credentials inside are secret and never logged.",
    )
    username: str | None = Field(default=None, description="Overrides the URL's user name.")
    password: SecretStr | None = Field(default=None, description="Overrides the URL's password.")
    heartbeat: int = Field(default=20, ge=1, le=600, description="AMQP heartbeat, seconds.")
    reconnect_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between reconnect attempts."
    )
    connect_backoff_max: float = Field(
        default=10.0, gt=0, description="Cap of the first-connection retry backoff, seconds."
    )
    publish_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds before a publish gives up."
    )

    def connection_url(self) -> str:
        """The URL to connect with, credentials included (never log this)."""
        parts = urlsplit(self.url.get_secret_value())
        if self.username is None and self.password is None:
            return urlunsplit(parts)
        user = quote(self.username if self.username is not None else parts.username or "", safe="")
        pwd = (
            self.password.get_secret_value()
            if self.password is not None
            else (parts.password or "")
        )
        host = parts.hostname or "localhost"
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{user}:{quote(pwd, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def display_url(self) -> str:
        """The URL with the password masked: safe for logs and the UI."""
        parts = urlsplit(self.connection_url())
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}:***@" if parts.username else ""
        return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


class ManagementSettings(BaseModel):
    """The RabbitMQ management HTTP API (queue listings and rates)."""

    url: str = Field(default="http://localhost:15672", description="Management API base URL.")
    username: str | None = Field(default=None, description="Defaults to the AMQP user.")
    password: SecretStr | None = Field(default=None, description="Defaults to the AMQP password.")
    timeout: float = Field(default=3.0, gt=0, description="Seconds per management API call.")


class WarrenSettings(BaseSettings):
    """Settings every service shares."""

    model_config = SettingsConfigDict(
        env_prefix="WARREN_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    amqp: AmqpSettings = AmqpSettings()
    management: ManagementSettings = ManagementSettings()
    namespace: str = Field(
        default="warren",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of Warren's own exchanges and queues.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    heartbeat_interval: float = Field(
        default=2.0, gt=0, le=60, description="Seconds between a replica's heartbeats."
    )
    health_file: str = Field(
        default="/tmp/warren-heartbeat",
        description="File touched on every heartbeat; the container health check reads it.",
    )
    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="This replica's id (host and pid by default).",
    )


def configure_logging(level: str) -> None:
    """Log lines carry the trace and span ids when a span is active."""
    from warren.telemetry import TraceContextFilter

    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s [trace=%(otel_trace_id)s span=%(otel_span_id)s]"
            " %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiormq logs every connection hiccup at length; our own lines say what matters.
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, logging.getLevelName(level)))
