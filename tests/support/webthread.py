"""Serve an aiohttp application from a background thread with its own event loop.

Sync Playwright and subprocess-driven tests must not run inside an asyncio loop, so the
servers they talk to live on another thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web


class AppThread:
    """``with AppThread(make_app) as url:`` serves ``make_app()`` on ``127.0.0.1``.

    ``make_app`` is called on the server's loop (aiohttp objects belong to the loop that
    made them). Start and stop are bounded by ``timeout``.
    """

    def __init__(
        self,
        make_app: Callable[[], web.Application],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self._make_app = make_app
        self.host = host
        self.port = port
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="app-thread", daemon=True)
        self._thread.start()

        async def serve() -> int:
            runner = web.AppRunner(self._make_app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self._runner = runner
            return int(runner.addresses[0][1])

        self.port = asyncio.run_coroutine_threadsafe(serve(), loop).result(self._timeout)
        return self.url

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._runner is not None:
                fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
                fut.result(self._timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self._timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
