"""A TCP proxy that can partition a connection on demand.

``freeze()`` stops forwarding in both directions but keeps every socket open: to both ends it
looks like a silent network partition (nothing arrives, nothing is refused, the kernel buffers
fill). ``thaw()`` resumes forwarding of whatever was held back, as TCP would after the network
heals. ``reset()`` aborts every client and upstream socket at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
T = TypeVar("T")


class TcpProxy:
    """An asyncio TCP proxy from ``listen_host:port`` to ``target_host:target_port``.

    Use inside a running loop: ``await proxy.start()`` … ``await proxy.stop()``. ``freeze``,
    ``thaw`` and ``reset`` must be called from the loop's thread (see ``ThreadedTcpProxy``).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    @property
    def open_connections(self) -> int:
        """Client connections currently proxied."""
        return len(self._tasks)

    async def start(self) -> int:
        """Listen; return the port."""
        self._server = await asyncio.start_server(self._handle, self.listen_host, self._listen_port)
        log.debug("Proxy %d -> %s:%d", self.port, self.target_host, self.target_port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.reset()
        # Wake held-back pipes so they see their aborted sockets and finish on their own
        # (cancelling a stream handler task makes asyncio log a spurious error).
        self._flowing.set()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def reset(self) -> None:
        """Abort every client and upstream socket (the peers see a reset)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            # A partitioned network does not carry the upstream handshake either.
            await self._flowing.wait()
            try:
                upstream_r, upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), timeout=10
                )
            except (OSError, TimeoutError):
                client_w.transport.abort()
                return
            upstream_w = upstream
            self._writers.add(upstream)
            pipes = [
                asyncio.create_task(self._pipe(client_r, upstream)),
                asyncio.create_task(self._pipe(upstream_r, client_w)),
            ]
            try:
                # When one direction ends the connection is over: drop the other side too.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    return
                # Bytes read just before a freeze are held back too, not delivered.
                await self._flowing.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return


class ThreadedTcpProxy:
    """``TcpProxy`` on its own event loop in a daemon thread, for sync tests and for
    services running as subprocesses. Every method is thread-safe and bounded."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self._args = (target_host, target_port)
        self._kwargs = {"listen_host": listen_host, "listen_port": listen_port}
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxy: TcpProxy | None = None

    @property
    def proxy(self) -> TcpProxy:
        if self._proxy is None:
            raise RuntimeError("proxy not started")
        return self._proxy

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def frozen(self) -> bool:
        return self.proxy.frozen

    @property
    def accepted(self) -> int:
        return self.proxy.accepted

    @property
    def open_connections(self) -> int:
        return self._call(lambda: self.proxy.open_connections)

    def start(self) -> int:
        """Start the loop thread and the proxy; return the port."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"tcpproxy-{self._args[1]}", daemon=True
        )
        self._thread.start()

        async def make() -> TcpProxy:
            proxy = TcpProxy(*self._args, **self._kwargs)  # type: ignore[arg-type]
            await proxy.start()
            return proxy

        self._proxy = self._run(make())
        return self._proxy.port

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._proxy is not None:
                self._run(self._proxy.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=self._timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def freeze(self) -> None:
        self._call(self.proxy.freeze)

    def thaw(self) -> None:
        self._call(self.proxy.thaw)

    def reset(self) -> None:
        self._call(self.proxy.reset)

    def __enter__(self) -> ThreadedTcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def _call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self._run(call())
