"""The three services as real processes on an isolated namespace, and an HTTP client for them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from .procs import ServiceProcess, free_port

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


class Stack:
    """Gateway + producers + consumers, each a ``python -m`` process with its own log."""

    def __init__(
        self,
        factory: Callable[..., ServiceProcess],
        *,
        consumers: int = 1,
        producers: int = 1,
        env: Mapping[str, str] | None = None,
        amqp_url: str = LOCAL_AMQP,
        management_url: str = "http://127.0.0.1:15672",
        instrument: bool = False,
    ) -> None:
        self.factory = factory
        self.namespace = f"t{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.instrument = instrument
        self.env = {
            "WARREN_NAMESPACE": self.namespace,
            "WARREN_AMQP__URL": amqp_url,
            "WARREN_MANAGEMENT__URL": management_url,
            "WARREN_GATEWAY__PORT": str(self.port),
            "WARREN_HEARTBEAT_INTERVAL": "0.5",
            "WARREN_HEALTH_FILE": "/dev/null",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            **(env or {}),
        }
        self.n_consumers, self.n_producers = consumers, producers
        self.gateway: ServiceProcess | None = None
        self.producers: list[ServiceProcess] = []
        self.consumers: list[ServiceProcess] = []
        self.management_url = management_url
        self.created: list[str] = []
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    def _start(
        self, module: str, name: str, env: Mapping[str, str] | None = None
    ) -> ServiceProcess:
        # Each process names itself in its spans, as OTEL_SERVICE_NAME does in compose.
        env = {**self.env, "OTEL_SERVICE_NAME": module, **(env or {})}
        return self.factory(module, env, name, instrument=self.instrument)

    def start(self, *, wait: bool = True) -> Stack:
        self.gateway = self._start("gateway", "gateway")
        for i in range(self.n_producers):
            self.add_producer(f"producer-{i}")
        for i in range(self.n_consumers):
            self.add_consumer(f"consumer-{i}")
        if wait:
            self.wait_ready()
        return self

    def add_producer(self, name: str, env: Mapping[str, str] | None = None) -> ServiceProcess:
        proc = self._start("producer", name, env)
        self.producers.append(proc)
        return proc

    def add_consumer(self, name: str, env: Mapping[str, str] | None = None) -> ServiceProcess:
        proc = self._start("consumer", name, {"WARREN_REPLICA_ID": name, **(env or {})})
        self.consumers.append(proc)
        return proc

    def health(self) -> int:
        try:
            return self.http.get("/api/health", timeout=2).status_code
        except httpx.HTTPError:
            return 0

    def replicas(self, role: str | None = None, state: str = "alive") -> list[dict[str, Any]]:
        body = self.http.get("/api/status").json()
        return [
            r
            for r in body["replicas"]
            if (role is None or r["role"] == role) and r["state"] == state
        ]

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(lambda: self.health() == 200, timeout=timeout, what="gateway health 200")
        wait_until(
            lambda: (
                len(self.replicas("consumer")) >= self.n_consumers
                and len(self.replicas("producer")) >= self.n_producers
            ),
            timeout=timeout,
            what=f"{self.n_producers} producer(s) and {self.n_consumers} consumer(s) alive",
        )

    # API shortcuts --------------------------------------------------------------------------

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.http.post(path, json=body, **kw)

    def create_queue(self, name: str | None = None, **spec: Any) -> str:
        name = name or f"q-{uuid.uuid4().hex[:10]}"
        resp = self.post("/api/queues", {"name": name, **spec})
        assert resp.status_code == 201, resp.text
        self.created.append(name)
        return name

    def consume(self, queue: str, prefetch: int = 10, **extra: Any) -> None:
        resp = self.post("/api/consumers", {"queue": queue, "prefetch": prefetch, **extra})
        assert resp.status_code in (200, 202), resp.text
        wait_until(
            lambda: all(
                any(
                    q["queue"] == queue and q["state"] == "consuming"
                    for q in r["heartbeat"]["queues"]
                )
                for r in self.replicas("consumer")
            ),
            timeout=20,
            what=f"every consumer replica consuming {queue}",
        )

    def received(self, queue: str, limit: int = 1000) -> list[dict[str, Any]]:
        resp = self.http.get("/api/messages/received", params={"queue": queue, "limit": limit})
        assert resp.status_code == 200, resp.text
        messages: list[dict[str, Any]] = resp.json()["messages"]
        return messages

    def wait_batch(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = self.http.get(f"/api/batches/{job_id}").json()
            return body if body["status"] in ("done", "failed", "cancelled") else None

        result: dict[str, Any] = wait_until(done, timeout=timeout, what=f"job {job_id} to finish")
        return result

    def counters(self) -> dict[str, int]:
        """Sum of every live consumer's counters."""
        total: dict[str, int] = {}
        for r in self.replicas("consumer"):
            for k, v in r["heartbeat"]["counters"].items():
                total[k] = total.get(k, 0) + v
        return total

    def stop(self, timeout: float = 15) -> dict[str, int]:
        """SIGTERM every process (consumers first, so they drain); returns the exit codes."""
        codes = {}
        for proc in [*self.consumers, *self.producers, *([self.gateway] if self.gateway else [])]:
            codes[proc.name] = proc.terminate(timeout=timeout)
        return codes

    def cleanup(self) -> None:
        """Stop, then delete the test's queues and the namespace's exchanges and queues."""
        self.stop()
        try:
            mgmt = httpx.Client(base_url=self.management_url, auth=("guest", "guest"), timeout=5)
            with mgmt:
                for name in self.created:
                    for q in (name, f"{name}.dlq"):
                        mgmt.delete(f"/api/queues/%2F/{q}")
                for q in mgmt.get("/api/queues/%2F", params={"columns": "name"}).json():
                    if q["name"].startswith(f"{self.namespace}."):
                        mgmt.delete(f"/api/queues/%2F/{q['name']}")
                for e in mgmt.get("/api/exchanges/%2F", params={"columns": "name"}).json():
                    if e["name"].startswith(f"{self.namespace}."):
                        mgmt.delete(f"/api/exchanges/%2F/{e['name']}")
        except (httpx.HTTPError, ValueError):
            pass

    def close(self) -> None:
        self.http.close()


@contextmanager
def running_stack(log_dir: Path, **kwargs: Any) -> Iterator[Stack]:
    """A started stack outside a test's own fixtures (for module-scoped ones): its processes log
    to ``log_dir``, their log tails are printed if anything fails, and all is cleaned up."""
    procs: list[ServiceProcess] = []

    def factory(
        module: str, env: dict[str, str] | None = None, name: str | None = None, **kw: Any
    ) -> ServiceProcess:
        proc = ServiceProcess(module, env, name, log_dir=log_dir, **kw)
        proc.start()
        procs.append(proc)
        return proc

    stack = Stack(factory, **kwargs)
    try:
        stack.start()
        yield stack
    except BaseException:
        for proc in procs:
            proc.dump_tail()
        raise
    finally:
        stack.cleanup()
        stack.close()
