"""The console in headless Chromium against the three services running as real processes.

Sync Playwright cannot run inside an asyncio loop, so these are plain ``def`` tests; the
services are separate processes (see ``conftest.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import screenshot_path

from .stack import Stack, start_stack, stop_stack

pytestmark = [pytest.mark.browser, pytest.mark.broker, pytest.mark.system]

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
LIVE_TIMEOUT_MS = 20_000  # management API counters lag up to ~5 s


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_console(page: Page, stack: Stack, section: str = "overview") -> None:
    page.goto(f"{stack.base_url}/#{section}")
    expect(page.get_by_test_id("gw-connection")).to_have_text("connected")
    expect(page.get_by_test_id("stream-pill")).to_have_text("live")


def script_errors(page: Page) -> list[str]:
    """Console errors, without the browser's own line for each 4xx answer the test provoked."""
    errors: list[str] = page.console_errors  # type: ignore[attr-defined]
    return [e for e in errors if not e.startswith("Failed to load resource")]


def goto(page: Page, section: str) -> None:
    page.get_by_test_id(f"nav-{section}").click()
    expect(page.get_by_test_id(f"section-{section}")).to_be_visible()


def create_queue(page: Page, stack: Stack, name: str) -> None:
    stack.queues.append(name)
    goto(page, "queues")
    page.get_by_test_id("queue-name").fill(name)
    page.get_by_test_id("queue-create").click()
    expect(queue_row(page, name)).to_be_visible()


def queue_row(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[data-testid="queue-row"][data-queue="{name}"]')


def start_consumer(page: Page, queue: str, prefetch: int = 10) -> None:
    goto(page, "consumers")
    page.get_by_test_id("consumer-queue").fill(queue)
    page.get_by_test_id("consumer-prefetch").fill(str(prefetch))
    page.get_by_test_id("consumer-start").click()
    row = page.locator(f'[data-testid="consumption-row"][data-queue="{queue}"]')
    # A replica tag appears once a consumer's heartbeat says it consumes the queue.
    expect(row.locator(".tag")).to_have_count(1, timeout=LIVE_TIMEOUT_MS)


def fill_publish(page: Page, queue: str, body: str, headers: str = "") -> None:
    goto(page, "publish")
    page.get_by_test_id("publish-target-queue").check()
    page.get_by_test_id("publish-queue").fill(queue)
    page.get_by_test_id("publish-body").fill(body)
    if headers:
        page.locator("details.props summary").click()
        page.get_by_test_id("publish-headers").fill(headers)


def publish_one(page: Page, queue: str, body: str, headers: str = "") -> str:
    fill_publish(page, queue, body, headers)
    page.get_by_test_id("publish-send").click()
    expect(page.get_by_test_id("publish-status")).to_have_text("confirmed")
    message_id = page.get_by_test_id("publish-result-id").text_content() or ""
    assert message_id.strip()
    return message_id.strip()


def test_publish_appears_in_live_list_with_detail(page: Page, stack: Stack) -> None:
    queue = unique("orders")
    open_console(page, stack)
    create_queue(page, stack, queue)
    start_consumer(page, queue)

    message_id = publish_one(
        page, queue, '{"order": 42, "item": "book"}', headers='{"x-tenant": "acme"}'
    )
    trace = page.get_by_test_id("publish-trace")
    expect(trace).to_have_attribute("href", re.compile(r"^https?://.+"))
    page.screenshot(path=str(screenshot_path("publish-confirmed")))

    goto(page, "messages")
    row = page.locator(f'[data-testid="message-row"][data-message-id="{message_id}"]')
    expect(row).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(row).to_have_attribute("data-outcome", "acked")
    row.click()

    dialog = page.get_by_test_id("message-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("md-id")).to_have_text(message_id)
    expect(page.get_by_test_id("md-outcome")).to_have_text("acked")
    expect(page.get_by_test_id("md-redelivered")).to_have_text("first delivery")
    expect(page.get_by_test_id("md-body")).to_contain_text('"order": 42')
    expect(page.get_by_test_id("md-headers")).to_contain_text("x-tenant")
    expect(page.get_by_test_id("md-headers")).to_contain_text("acme")
    summary = page.get_by_test_id("md-summary")
    expect(summary).to_contain_text(queue)
    expect(summary).to_contain_text("processing time")
    expect(page.get_by_test_id("md-trace")).to_have_attribute(
        "href", re.compile(r"^https?://.+/trace/[0-9a-f]{32}")
    )
    page.screenshot(path=str(screenshot_path("message-detail")))
    assert not script_errors(page)


def test_exchange_binding_and_routed_publish(page: Page, stack: Stack) -> None:
    queue, exchange = unique("routed"), unique("ex")
    open_console(page, stack)
    create_queue(page, stack, queue)
    start_consumer(page, queue)

    goto(page, "exchanges")
    stack.exchanges.append(exchange)
    page.get_by_test_id("exchange-name").fill(exchange)
    page.get_by_test_id("exchange-type").select_option("topic")
    page.get_by_test_id("exchange-create").click()
    row = page.locator(f'[data-testid="exchange-row"][data-exchange="{exchange}"]')
    expect(row).to_contain_text("topic")
    page.get_by_test_id("binding-exchange").fill(exchange)
    page.get_by_test_id("binding-queue").fill(queue)
    page.get_by_test_id("binding-key").fill("orders.*")
    page.get_by_test_id("binding-create").click()
    expect(page.get_by_test_id("toasts")).to_contain_text(f"Bound {queue} to {exchange}")
    page.screenshot(path=str(screenshot_path("exchanges")), full_page=True)

    goto(page, "publish")
    page.get_by_test_id("publish-target-exchange").check()
    page.get_by_test_id("publish-exchange").fill(exchange)
    page.get_by_test_id("publish-routing-key").fill("orders.eu")
    page.get_by_test_id("publish-body").fill("routed as plain text")
    page.get_by_test_id("publish-send").click()
    expect(page.get_by_test_id("publish-status")).to_have_text("confirmed")
    message_id = (page.get_by_test_id("publish-result-id").text_content() or "").strip()

    # A routing key nothing is bound to: the broker returns it and the page says so.
    page.get_by_test_id("publish-routing-key").fill("nobody.listens")
    page.get_by_test_id("publish-send").click()
    expect(page.get_by_test_id("publish-status")).not_to_have_text("confirmed")
    expect(page.locator("#publish-form [data-role=error]")).not_to_be_empty()
    page.screenshot(path=str(screenshot_path("publish-unroutable")))

    goto(page, "messages")
    received = page.locator(f'[data-testid="message-row"][data-message-id="{message_id}"]')
    expect(received).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(received.get_by_test_id("message-body")).to_have_text("routed as plain text")
    assert not script_errors(page)


def test_pause_filters_and_clear_history(page: Page, stack: Stack) -> None:
    first, second = unique("left"), unique("right")
    open_console(page, stack)
    for queue in (first, second):
        create_queue(page, stack, queue)
        start_consumer(page, queue)
    one = publish_one(page, first, '{"colour": "teal"}')
    two = publish_one(page, second, '{"colour": "amber"}')

    goto(page, "messages")
    row = page.get_by_test_id("message-row")
    expect(row.and_(page.locator(f'[data-message-id="{one}"]'))).to_be_visible(
        timeout=LIVE_TIMEOUT_MS
    )
    expect(row.and_(page.locator(f'[data-message-id="{two}"]'))).to_be_visible(
        timeout=LIVE_TIMEOUT_MS
    )

    page.get_by_test_id("filter-queue").select_option(first)
    expect(row.and_(page.locator(f'[data-queue="{second}"]'))).to_have_count(0)
    expect(row.and_(page.locator(f'[data-message-id="{one}"]'))).to_be_visible()
    page.get_by_test_id("filter-queue").select_option("")
    page.get_by_test_id("filter-text").fill("amber")
    expect(row).to_have_count(1)
    expect(row.first).to_have_attribute("data-message-id", two)
    page.get_by_test_id("filter-text").fill("")
    worker = page.locator('[data-testid="filter-worker"] option').nth(1).get_attribute("value")
    assert worker
    page.get_by_test_id("filter-worker").select_option(worker)
    expect(row.and_(page.locator(f'[data-message-id="{one}"]'))).to_be_visible()
    page.get_by_test_id("filter-worker").select_option("")

    # Paused: nothing new comes in; resuming catches up from the gateway's history.
    goto(page, "messages")
    page.get_by_test_id("messages-pause").click()
    expect(page.get_by_test_id("stream-pill")).to_have_text("paused")
    three = publish_one(page, first, '{"colour": "while paused"}')
    goto(page, "messages")
    late = row.and_(page.locator(f'[data-message-id="{three}"]'))
    page.wait_for_timeout(2000)  # long enough for the record to have arrived if not paused
    expect(late).to_have_count(0)
    page.get_by_test_id("messages-pause").click()
    expect(page.get_by_test_id("stream-pill")).to_have_text("live")
    expect(late).to_be_visible(timeout=LIVE_TIMEOUT_MS)

    page.get_by_test_id("messages-clear").click()
    page.get_by_test_id("confirm-ok").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("messages-count")).to_contain_text("0 shown")
    assert stack.get(f"/api/messages/received?queue={first}")["messages"] == []
    assert not script_errors(page)


def test_queue_options_detail_and_bad_input(page: Page, stack: Stack) -> None:
    queue = unique("quorum")
    open_console(page, stack)
    goto(page, "queues")
    form = page.get_by_test_id("queue-form")

    # Bad input: the API's message is shown next to the button, nothing is created.
    page.get_by_test_id("queue-name").fill(f"{queue}-café")
    page.get_by_test_id("queue-create").click()
    expect(form.locator("[data-role=error]")).to_contain_text("name")
    expect(page.get_by_test_id("queue-name")).to_have_class(re.compile("invalid"))
    expect(queue_row(page, f"{queue}-café")).to_have_count(0)
    page.get_by_test_id("queue-name").fill(queue)

    stack.queues.append(queue)
    page.get_by_test_id("queue-type").select_option("quorum")
    page.get_by_test_id("queue-dead-letter").check()
    form.locator("input[name=delivery_limit]").fill("2")
    form.locator("input[name=message_ttl]").fill("60000")
    form.locator("input[name=max_length]").fill("1000")
    page.get_by_test_id("queue-create").click()
    row = queue_row(page, queue)
    expect(row.locator('[data-field="type"]')).to_have_text("quorum")
    expect(row.locator('[data-field="dead_letter_queue"]')).to_have_text(
        f"dead letters → {queue}.dlq"
    )

    row.get_by_test_id("queue-detail").click()
    expect(page.get_by_test_id("queue-dialog")).to_be_visible()
    expect(page.get_by_test_id("qd-name")).to_have_text(queue)
    arguments = page.locator("#qd-arguments")
    expect(arguments).to_contain_text("x-message-ttl")
    expect(arguments).to_contain_text("60000")
    expect(arguments).to_contain_text("x-max-length")
    expect(arguments).to_contain_text("x-dead-letter-routing-key")
    page.screenshot(path=str(screenshot_path("queue-detail")))
    assert not script_errors(page)


def test_batch_progress_reaches_the_end(page: Page, stack: Stack) -> None:
    queue = unique("batch")
    open_console(page, stack)
    create_queue(page, stack, queue)
    start_consumer(page, queue, prefetch=50)

    fill_publish(page, queue, '{"n": "{seq}", "id": "{uuid}"}')
    page.get_by_test_id("batch-count").fill("2000")
    page.get_by_test_id("batch-concurrency").fill("200")
    page.get_by_test_id("batch-template").check()
    page.get_by_test_id("batch-start").click()

    expect(page.get_by_test_id("batch-panel")).to_be_visible()
    expect(page.get_by_test_id("batch-status")).to_have_text("done", timeout=60_000)
    progress = page.get_by_test_id("batch-progress")
    expect(progress).to_have_attribute("max", "2000")
    assert progress.evaluate("el => [el.value, el.max]") == [2000, 2000]
    expect(page.get_by_test_id("batch-counts")).to_contain_text("2,000 / 2,000 confirmed")
    expect(page.get_by_test_id("batch-rate")).to_contain_text(re.compile(r"achieved [\d,.]+ msg/s"))
    page.screenshot(path=str(screenshot_path("batch-done")), full_page=True)

    # The consumer works through them; the live list fills and stays bounded.
    goto(page, "messages")
    rows = page.get_by_test_id("message-row")
    expect(rows.first).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    page.get_by_test_id("filter-queue").select_option(queue)
    expect(page.get_by_test_id("messages-count")).to_contain_text("500 shown", timeout=30_000)
    assert rows.count() <= 500
    page.screenshot(path=str(screenshot_path("live-messages")))

    assert not script_errors(page)


def test_rates_chart_and_cancel_a_running_batch(page: Page, stack: Stack) -> None:
    queue = unique("load")
    open_console(page, stack)
    create_queue(page, stack, queue)
    start_consumer(page, queue, prefetch=100)

    fill_publish(page, queue, '{"n": "{seq}", "at": "{now}"}')
    page.get_by_test_id("batch-count").fill("500000")
    page.get_by_test_id("batch-concurrency").fill("20")
    page.get_by_test_id("batch-template").check()
    page.get_by_test_id("batch-start").click()
    expect(page.get_by_test_id("batch-status")).to_have_text("running", timeout=LIVE_TIMEOUT_MS)

    # The chart fills while the batch runs; this is the picture the README shows.
    goto(page, "overview")
    page.wait_for_function(
        "() => Number(document.getElementById('rates-chart').dataset.active || 0) >= 25",
        timeout=60_000,
    )
    shot = screenshot_path("overview")
    page.screenshot(path=str(shot), full_page=True)
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, DOCS_SCREENSHOT)

    goto(page, "publish")
    page.get_by_test_id("batch-cancel").click()
    expect(page.get_by_test_id("batch-status")).to_have_text("cancelled", timeout=LIVE_TIMEOUT_MS)
    confirmed = page.get_by_test_id("batch-progress").evaluate("el => el.value")
    assert 0 < confirmed < 500_000
    expect(page.get_by_test_id("batch-cancel")).to_be_disabled()
    page.screenshot(path=str(screenshot_path("batch-cancelled")), full_page=True)

    # Stop consuming and delete the queue, both with confirmation.
    goto(page, "consumers")
    row = page.locator(f'[data-testid="consumption-row"][data-queue="{queue}"]')
    row.get_by_test_id("consumer-stop").click()
    page.get_by_test_id("confirm-ok").click()
    expect(row).to_have_count(0)
    goto(page, "queues")
    queue_row(page, queue).get_by_test_id("queue-delete").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
    page.get_by_test_id("confirm-ok").click()
    expect(queue_row(page, queue)).to_have_count(0, timeout=LIVE_TIMEOUT_MS)
    assert not script_errors(page)


def test_stopped_consumer_lets_ready_count_grow(page: Page, stack: Stack) -> None:
    queue = unique("stop")
    open_console(page, stack)
    create_queue(page, stack, queue)
    start_consumer(page, queue)

    row = page.locator(f'[data-testid="consumption-row"][data-queue="{queue}"]')
    row.get_by_test_id("consumer-stop").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
    page.get_by_test_id("confirm-ok").click()
    expect(row).to_have_count(0)

    goto(page, "queues")
    cells = queue_row(page, queue)
    expect(cells.locator('[data-field="consumers"]')).to_have_text("0", timeout=LIVE_TIMEOUT_MS)
    expect(cells.locator('[data-field="messages_ready"]')).to_have_text("0")

    fill_publish(page, queue, '{"waiting": "{seq}"}')
    page.get_by_test_id("batch-count").fill("25")
    page.get_by_test_id("batch-concurrency").fill("5")
    page.get_by_test_id("batch-template").check()
    page.get_by_test_id("batch-start").click()
    expect(page.get_by_test_id("batch-status")).to_have_text("done", timeout=30_000)

    goto(page, "queues")
    expect(cells.locator('[data-field="messages_ready"]')).to_have_text(
        "25", timeout=LIVE_TIMEOUT_MS
    )
    page.screenshot(path=str(screenshot_path("queue-ready-grows")), full_page=True)

    # Purge with confirmation empties it again.
    cells.get_by_test_id("queue-purge").click()
    page.get_by_test_id("confirm-ok").click()
    expect(cells.locator('[data-field="messages_ready"]')).to_have_text(
        "0", timeout=LIVE_TIMEOUT_MS
    )


def test_script_body_stays_inert(page: Page, stack: Stack) -> None:
    queue = unique("xss")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_console(page, stack)
    create_queue(page, stack, queue)
    start_consumer(page, queue)

    payload = '<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2; alert(1)">'
    message_id = publish_one(
        page, queue, payload, headers=json.dumps({"x-evil": "<img src=x onerror=alert(2)>"})
    )

    goto(page, "messages")
    row = page.locator(f'[data-testid="message-row"][data-message-id="{message_id}"]')
    expect(row).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(row.get_by_test_id("message-body")).to_have_text(payload)
    row.click()
    expect(page.get_by_test_id("md-body")).to_have_text(payload)
    expect(page.get_by_test_id("md-headers")).to_contain_text("<img src=x onerror=alert(2)>")
    page.wait_for_timeout(500)  # an injected onerror would have fired by now

    assert page.evaluate("() => window.__xss") is None
    assert dialogs == []
    injected = page.locator("#messages-table img, #message-dialog img, #message-dialog script")
    assert injected.count() == 0
    page.screenshot(path=str(screenshot_path("script-body-inert")))


def test_security_headers(stack: Stack) -> None:
    import urllib.request

    with urllib.request.urlopen(stack.base_url + "/", timeout=5) as response:
        csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp


def test_token_is_asked_once(page: Page, tmp_path: Path) -> None:
    secret = uuid.uuid4().hex
    guarded = start_stack(tmp_path, roles=(), WARREN_GATEWAY__TOKEN=secret)
    try:
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(guarded.base_url + "/")
        expect(page.get_by_test_id("token-dialog")).to_be_visible()
        page.get_by_test_id("token-input").fill(secret)
        page.get_by_test_id("token-ok").click()
        expect(page.get_by_test_id("gw-connection")).to_have_text("connected")
        expect(page.get_by_test_id("stream-pill")).to_have_text("live")
        expect(page.get_by_test_id("token-dialog")).to_be_hidden()
        assert len(sockets) == 1, sockets  # one stream, opened with the token
        assert f"token={secret}" in sockets[0]
        page.reload()
        expect(page.get_by_test_id("gw-connection")).to_have_text("connected")
        expect(page.get_by_test_id("token-dialog")).to_be_hidden()
    finally:
        stop_stack(guarded)


def test_connection_buttons_and_lost_replica(page: Page, tmp_path: Path) -> None:
    own = start_stack(tmp_path, roles=("consumer",))
    try:
        open_console(page, own)
        consumer = own.procs[-1]
        row = page.locator('[data-testid="replica-row"][data-role="consumer"]')
        expect(row).to_have_attribute("data-state", "alive", timeout=LIVE_TIMEOUT_MS)

        page.get_by_test_id("btn-disconnect").click()
        page.get_by_test_id("confirm-ok").click()
        expect(page.get_by_test_id("gw-connection")).to_have_text("closed")
        page.get_by_test_id("btn-connect").click()
        expect(page.get_by_test_id("gw-connection")).to_have_text("connected")

        consumer.kill(signal.SIGKILL)  # no goodbye: only the missing heartbeats tell
        expect(row).to_have_attribute("data-state", "lost", timeout=30_000)
        expect(row.get_by_test_id("replica-state")).to_have_text("lost")
        page.screenshot(path=str(screenshot_path("replica-lost")), full_page=True)
        assert not script_errors(page)
    finally:
        stop_stack(own)
