"""The console under a flood of records: a stub event stream pushes 5,000 records a second.

The stub serves the real static files with the gateway's Content-Security-Policy and answers
the few API calls the page makes at start-up; only the page's own rendering is measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import Page, expect

from tests.support.browser import screenshot_path
from tests.support.webthread import AppThread

pytestmark = [pytest.mark.browser]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parents[2] / "services" / "gateway" / "gateway" / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'"
)
RECORDS_PER_SECOND = 5000
FRAMES_PER_SECOND = 10  # the gateway batches its stream about this often


def fake_record(n: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "message_id": uuid.uuid4().hex,
        "queue": f"load-{n % 3}",
        "exchange": "",
        "routing_key": f"load-{n % 3}",
        "worker": f"replica-{n % 4}",
        "outcome": "failed" if n % 17 == 0 else "acked",
        "error": "boom" if n % 17 == 0 else None,
        "redelivered": n % 29 == 0,
        "delivery_count": 1,
        "body": json.dumps({"n": n, "payload": "x" * 60}),
        "body_size": 80,
        "body_truncated": False,
        "content_type": "application/json",
        "properties": {"delivery_mode": 2},
        "headers": {"x-n": n},
        "published_at": now,
        "received_at": now,
        "processed_at": now,
        "latency_ms": 3.2,
        "processing_ms": 0.4,
        "trace_id": uuid.uuid4().hex,
        "trace_url": "http://localhost:16686/trace/0",
    }


def make_stub() -> web.Application:
    sockets: set[web.WebSocketResponse] = set()

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.add(ws)
        per_frame = RECORDS_PER_SECOND // FRAMES_PER_SECOND
        n = 0
        while not ws.closed:
            frame: list[dict[str, Any]] = [
                {"type": "record", "data": fake_record(n + i)} for i in range(per_frame)
            ]
            n += per_frame
            rate = {"published": 5000.0, "delivered": 5000.0, "acked": 5000.0}
            frame.append({"type": "rates", "data": rate})
            await ws.send_str(json.dumps(frame))
            await asyncio.sleep(1 / FRAMES_PER_SECOND)
        sockets.discard(ws)
        return ws

    async def close_sockets(app: web.Application) -> None:
        # The page may still be open when the stub stops: close its stream so cleanup ends.
        for ws in list(sockets):
            await ws.close()

    def answer(body: dict[str, Any]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(body)

        return handler

    @web.middleware
    async def csp(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        return response

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    status = {
        "broker": {"product": "RabbitMQ", "version": "stub", "url": "amqp://stub/"},
        "gateway": {"connection": "connected", "versions": {}, "management": {"available": True}},
        "replicas": [],
    }
    app = web.Application(middlewares=[csp])
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/status", answer(status))
    app.router.add_get("/api/queues", answer({"queues": [], "rates_available": True}))
    app.router.add_get("/api/messages/received", answer({"messages": []}))
    app.router.add_get("/api/batches", answer({"jobs": []}))
    app.router.add_get("/api/consumers", answer({"consumers": [], "replicas": []}))
    return app


@pytest.fixture
def stub_url() -> Iterator[str]:
    with AppThread(make_stub) as url:
        yield url


def test_live_list_stays_responsive_at_5000_records_a_second(
    page: Page, stub_url: str, record_property: Any
) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.goto(f"{stub_url}/#messages")
    expect(page.get_by_test_id("stream-pill")).to_have_text("live")
    expect(page.get_by_test_id("messages-count")).to_contain_text("500 shown")

    def metrics() -> dict[str, float]:
        return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

    def received() -> int:
        text = page.get_by_test_id("nav-messages-count").text_content() or "0"
        return int(text.replace(",", ""))

    before, started, first = metrics(), time.monotonic(), received()
    page.wait_for_timeout(5000)  # a fixed measuring window, not a wait for a condition
    after, elapsed = metrics(), time.monotonic() - started
    busy = (after["TaskDuration"] - before["TaskDuration"]) / elapsed
    rate = (received() - first) / elapsed

    # Only the rows in view exist, whatever the rate; the list is bounded.
    rows = page.get_by_test_id("message-row").count()
    assert 0 < rows <= 80

    clicked = time.monotonic()
    page.get_by_test_id("messages-pause").click()
    expect(page.get_by_test_id("messages-pause")).to_have_text("Resume")
    click_ms = (time.monotonic() - clicked) * 1000
    total = received()

    record_property("renderer_busy_fraction", round(busy, 3))
    record_property("pause_click_ms", round(click_ms))
    record_property("records_received", total)
    record_property("records_per_second", round(rate))
    log.info(
        "busy %.2f, pause click %.0f ms, %d records received, %.0f/s while measured",
        busy,
        click_ms,
        total,
        rate,
    )
    page.screenshot(path=str(screenshot_path("live-messages-flood")))

    assert click_ms < 2000, f"the page took {click_ms:.0f} ms to react to a click"
    assert busy < 0.9, f"the renderer's main thread was busy {busy:.0%} of the time"
    assert rate >= 1000  # it kept taking records in, not just a first frame
    errors: list[str] = page.console_errors  # type: ignore[attr-defined]
    assert not errors
