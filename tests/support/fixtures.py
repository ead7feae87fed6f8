"""Pytest plugin with the shared fixtures; list it in ``tests/conftest.py``::

pytest_plugins = ["tests.support.fixtures"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from .browser import chromium_browser, page, playwright_sync
from .otlp import OtlpReceiver
from .procs import ServiceProcess
from .rabbitnode import RabbitNode
from .tcpproxy import ThreadedTcpProxy

__all__ = [
    "chromium_browser",
    "otlp_receiver",
    "page",
    "playwright_sync",
    "rabbit_node",
    "service_factory",
    "tcp_proxy_factory",
]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    # Lets fixtures see in teardown whether the test failed (screenshots, log tails).
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[RabbitNode]:
    """One private RabbitMQ node for the session (faults tests); always torn down."""
    node = RabbitNode()
    try:
        node.start()
        yield node
    finally:
        # The data is thrown away, so don't spend ~9 s on a clean shutdown.
        node.cleanup(clean=False)


@pytest.fixture
def tcp_proxy_factory() -> Iterator[Callable[[str, int], ThreadedTcpProxy]]:
    """``tcp_proxy_factory(host, port)`` -> a started ``ThreadedTcpProxy``; stopped after."""
    proxies: list[ThreadedTcpProxy] = []

    def make(host: str, port: int) -> ThreadedTcpProxy:
        proxy = ThreadedTcpProxy(host, port)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started OTLP/HTTP receiver; ``otlp_receiver.endpoint`` for OTEL_EXPORTER_OTLP_ENDPOINT."""
    receiver = OtlpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def service_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServiceProcess]]:
    """``service_factory(module, env, name, **kw)`` -> a started ``ServiceProcess`` logging to
    ``tmp_path``. All are terminated after the test; on failure their log tails are printed."""
    procs: list[ServiceProcess] = []

    def make(
        module: str, env: Mapping[str, str] | None = None, name: str | None = None, **kw: object
    ) -> ServiceProcess:
        proc = ServiceProcess(module, env, name, log_dir=tmp_path, **kw)  # type: ignore[arg-type]
        proc.start()
        procs.append(proc)
        return proc

    yield make
    report = getattr(request.node, "rep_call", None)
    failed = report is not None and report.failed
    for proc in procs:
        proc.terminate(timeout=10)
        if failed:
            proc.dump_tail()
