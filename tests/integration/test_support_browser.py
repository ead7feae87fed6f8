"""Smoke test of the Playwright fixtures against a page served from a thread.

Plain ``def`` tests: sync Playwright must not run inside an asyncio loop.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from playwright.sync_api import Page, expect

from tests.support.browser import screenshot_path
from tests.support.webthread import AppThread

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><title>support smoke</title></head>
<body>
  <button id="go">Go</button>
  <p id="out">idle</p>
  <script>
    document.getElementById("go").addEventListener("click", async () => {
      const r = await fetch("/api/ping", {method: "POST"});
      document.getElementById("out").textContent = (await r.json()).answer;
    });
  </script>
</body></html>"""


def make_app() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"answer": "pong"})

    async def favicon(request: web.Request) -> web.Response:
        # Chromium asks for it; a 404 would show up as a console error.
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_post("/api/ping", ping)
    return app


def test_click_a_button_on_a_threaded_aiohttp_page(page: Page) -> None:
    with AppThread(make_app) as url:
        page.goto(url)
        expect(page).to_have_title("support smoke")
        page.get_by_role("button", name="Go").click()
        expect(page.locator("#out")).to_have_text("pong")
        path = screenshot_path("support-smoke")
        page.screenshot(path=str(path))
    assert path.stat().st_size > 1000
    assert page.console_errors == []  # type: ignore[attr-defined]
