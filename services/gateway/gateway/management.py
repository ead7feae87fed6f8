"""The RabbitMQ management HTTP API: queue listings with rates, when it is reachable."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp

from warren.settings import AmqpSettings, ManagementSettings

log = logging.getLogger(__name__)


class Management:
    """A thin client; every call answers ``None`` when the API is unreachable."""

    def __init__(self, settings: ManagementSettings, amqp: AmqpSettings) -> None:
        url = urlsplit(amqp.connection_url())
        # Credentials may also sit in the management URL itself: used, then stripped, so that
        # the base URL is safe to log and show.
        mgmt = urlsplit(settings.url)
        user = settings.username or unquote(mgmt.username or url.username or "") or "guest"
        password = (
            settings.password.get_secret_value()
            if settings.password is not None
            else (unquote(mgmt.password or "") or unquote(url.password or "") or "guest")
        )
        self.base = display_url(settings.url)
        self.vhost = quote(unquote(url.path[1:]) if url.path not in ("", "/") else "/", safe="")
        self._auth_header = aiohttp.encode_basic_auth(user, password)
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._session: aiohttp.ClientSession | None = None
        self.available = False
        self._retry_at = 0.0

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": self._auth_header}, timeout=self._timeout
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, **params: str) -> Any | None:
        if self._session is None:
            return None
        now = time.monotonic()
        if not self.available and now < self._retry_at:
            return None
        try:
            async with self._session.get(self.base + path, params=params or None) as resp:
                if resp.status == 404:
                    self.available = True
                    return None
                resp.raise_for_status()
                data = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self.available or self._retry_at == 0.0:
                log.warning("Management API %s unavailable: %s", self.base, exc)
            self.available = False
            self._retry_at = now + 5
            return None
        self.available = True
        return data

    async def overview(self) -> dict[str, Any] | None:
        result = await self.get("/api/overview")
        return result if isinstance(result, dict) else None

    async def queues(self) -> list[dict[str, Any]] | None:
        result = await self.get(f"/api/queues/{self.vhost}")
        return result if isinstance(result, list) else None

    async def queue(self, name: str) -> dict[str, Any] | None:
        result = await self.get(f"/api/queues/{self.vhost}/{quote(name, safe='')}")
        return result if isinstance(result, dict) else None

    async def exchanges(self) -> list[dict[str, Any]] | None:
        result = await self.get(f"/api/exchanges/{self.vhost}")
        return result if isinstance(result, list) else None


def display_url(url: str) -> str:
    """``url`` without user or password: safe for logs and responses."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")


def queue_json(raw: dict[str, Any]) -> dict[str, Any]:
    """A management API queue as the gateway's API shows it."""
    args = raw.get("arguments") or {}
    stats = raw.get("message_stats") or {}

    def rate(key: str) -> float:
        return float((stats.get(f"{key}_details") or {}).get("rate", 0.0))

    dlq = args.get("x-dead-letter-routing-key") if "x-dead-letter-exchange" in args else None
    return {
        "name": raw["name"],
        "type": args.get("x-queue-type", raw.get("type", "classic")),
        "durable": raw.get("durable", True),
        "messages_ready": raw.get("messages_ready", 0),
        "messages_unacked": raw.get("messages_unacknowledged", 0),
        "messages": raw.get("messages", 0),
        "consumers": raw.get("consumers", 0),
        "rates": {"publish": rate("publish"), "deliver": rate("deliver_get"), "ack": rate("ack")},
        "arguments": args,
        "dead_letter_queue": dlq,
    }
