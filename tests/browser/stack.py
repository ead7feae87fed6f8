"""The three services as real processes on one private namespace, for the browser tests."""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import ServiceProcess, free_port

log = logging.getLogger(__name__)

MANAGEMENT = "http://localhost:15672/api"
_AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


@dataclass
class Stack:
    """The gateway, a producer and a consumer sharing one namespace on the local broker."""

    base_url: str
    namespace: str
    procs: list[ServiceProcess] = field(default_factory=list)
    token: str | None = None
    queues: list[str] = field(default_factory=list)
    """User queues the tests created; deleted (with their dead-letter queues) at the end."""
    exchanges: list[str] = field(default_factory=list)

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


def service_env(namespace: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "WARREN_NAMESPACE": namespace,
        "WARREN_GATEWAY__PORT": str(port),
        # No collector runs here: keep trace ids (for the links) but export nothing.
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
        "WARREN_LOG_LEVEL": "INFO",
        **extra,
    }


def wait_until(predicate: Any, timeout: float, what: str, procs: list[ServiceProcess]) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.is_running():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            value = predicate()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(0.1)
    for proc in procs:
        proc.dump_tail()
    raise TimeoutError(f"{what} not within {timeout}s (last error: {last})")


def start_stack(
    log_dir: Path, *, roles: tuple[str, ...] = ("producer", "consumer"), **extra: str
) -> Stack:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = service_env(namespace, port, **extra)
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        namespace=namespace,
        token=extra.get("WARREN_GATEWAY__TOKEN"),
    )
    for module in ("gateway", *roles):
        proc = ServiceProcess(module, env, name=f"{module}-{namespace}", log_dir=log_dir)
        stack.procs.append(proc.start())
    try:
        wait_until(
            lambda: stack.get("/api/health")["status"] == "ok", 30, "gateway healthy", stack.procs
        )
        wanted = set(roles)
        wait_until(
            lambda: wanted <= {r["role"] for r in stack.get("/api/status")["replicas"]},
            30,
            f"heartbeats from {sorted(wanted)}",
            stack.procs,
        )
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def _management(method: str, path: str) -> Any:
    request = urllib.request.Request(MANAGEMENT + path, method=method)
    request.add_header("Authorization", _AUTH)
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


def cleanup_broker(stack: Stack) -> None:
    """Delete the test's queues and its namespace's own queues and exchanges (best effort)."""
    prefix = f"{stack.namespace}."
    try:
        queues = {q["name"] for q in _management("GET", "/queues/%2F?columns=name")}
        exchanges = {x["name"] for x in _management("GET", "/exchanges/%2F?columns=name")}
    except (OSError, ValueError) as exc:
        log.warning("Cannot list queues for cleanup: %s", exc)
        return
    mine = {q for q in queues if q.startswith(prefix)}
    mine |= queues & ({*stack.queues} | {f"{q}.dlq" for q in stack.queues})
    for kind, names in (
        ("queues", mine),
        ("exchanges", {x for x in exchanges if x.startswith(prefix)}),
    ):
        for name in sorted(names):
            try:
                _management("DELETE", f"/{kind}/%2F/{urllib.request.quote(name, safe='')}")
            except OSError as exc:
                log.warning("Cannot delete %s %s: %s", kind, name, exc)


def stop_stack(stack: Stack) -> None:
    for proc in reversed(stack.procs):
        proc.terminate(timeout=15)
    cleanup_broker(stack)
