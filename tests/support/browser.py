"""Playwright (sync API) fixtures driving the machine's Debian Chromium.

``playwright install`` cannot download browsers here, so Chromium is launched from
``/usr/bin/chromium``. Sync Playwright refuses to run inside an asyncio loop: tests that use
these fixtures must be plain ``def`` functions, and the servers they visit must run on another
thread (``tests.support.webthread.AppThread``) or in another process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "browser" / "screenshots"
DEFAULT_TIMEOUT_MS = 10_000


def screenshot_path(name: str) -> Path:
    """Where a screenshot called ``name`` goes (``.png`` added if missing)."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return SCREENSHOT_DIR / (safe if safe.endswith(".png") else f"{safe}.png")


# Module scope, not session: while sync Playwright is up, its event loop counts as running
# on the main thread, and every pytest-asyncio test after it fails with "Runner.run() cannot
# be called from a running event loop". Tearing it down per module keeps async tests in other
# modules working; a module must not mix async tests with these fixtures.
@pytest.fixture(scope="module")
def playwright_sync() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def chromium_browser(playwright_sync: Playwright) -> Iterator[Browser]:
    browser = playwright_sync.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
    )
    yield browser
    browser.close()


@pytest.fixture
def page(chromium_browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page in its own context, 10 s default timeouts; on a failed test a screenshot
    ``<test name>-failed.png`` is saved to ``tests/browser/screenshots/``. Console errors
    are collected in ``page.console_errors`` (a list of str)."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    context.set_default_navigation_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors  # type: ignore[attr-defined]
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            page.screenshot(path=str(screenshot_path(f"{request.node.name}-failed")))
        except Exception:  # noqa: BLE001 - a broken page must not hide the real failure
            pass
    context.close()
