"""Typed application keys: every shared object of the app, in one place."""

from __future__ import annotations

import weakref

from aiohttp import web

from gateway.broker import GatewayBroker
from gateway.management import Management
from gateway.settings import GatewaySettings
from gateway.state import State
from warren.telemetry import TelemetryStatus

SETTINGS = web.AppKey("settings", GatewaySettings)
STATE = web.AppKey("state", State)
BROKER = web.AppKey("broker", GatewayBroker)
MANAGEMENT = web.AppKey("management", Management)
TELEMETRY = web.AppKey("telemetry", TelemetryStatus)
KNOWN_QUEUES: web.AppKey[set[str]] = web.AppKey("known_queues")
KNOWN_EXCHANGES: web.AppKey[dict[str, str]] = web.AppKey("known_exchanges")
QUEUE_LIMITS: web.AppKey[dict[str, int]] = web.AppKey("queue_limits")
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
