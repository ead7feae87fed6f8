"""Warren's contenders: the real gateway, producer and consumer, driven through the HTTP API.

The harness starts the services as subprocesses in an isolated namespace (``WARREN_NAMESPACE=
bench<random>``) on a free port, drives them only through the gateway's HTTP API (the contract in
DESIGN.md) and measures at the broker (exact, immediate passive declares) or at the gateway.

When the services cannot be imported or do not come up, every contender reports
``Unavailable`` with the reason, and the baselines still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import psutil

from bench.baselines import Figures, latency_figures
from bench.common import (
    AMQP_URL,
    MANAGEMENT_URL,
    body_document,
    declare_queue,
    delete_queue,
    prefill,
    queue_counts,
    unique_queue,
)
from bench.config import BenchConfig

log = logging.getLogger(__name__)

SERVICES = ("gateway", "producer", "consumer")
MB = 1024 * 1024


class Unavailable(RuntimeError):
    """A contender cannot run here (services missing or not starting); not a failure of Warren."""


def missing_services() -> list[str]:
    """Services that cannot be run as ``python -m <name>`` from this environment."""
    missing = []
    for name in SERVICES:
        try:
            found = importlib.util.find_spec(f"{name}.__main__") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One service process; only ever signalled through its own Popen handle."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.ps = psutil.Process(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        try:
            return float(self.ps.memory_info().rss) / MB
        except psutil.Error:
            return float("nan")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the process has used so far."""
        try:
            times = self.ps.cpu_times()
        except psutil.Error:
            return float("nan")
        return float(times.user + times.system)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


class WarrenStack:
    """Gateway + producer for the whole run; consumer replicas started per scenario."""

    def __init__(self, *, log_dir: Path | None = None, extra_env: dict[str, str] | None = None):
        self.namespace = f"bench{uuid.uuid4().hex[:8]}"
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="warren-bench-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "WARREN_NAMESPACE": self.namespace,
                "WARREN_AMQP__URL": AMQP_URL,
                "WARREN_MANAGEMENT__URL": MANAGEMENT_URL,
                "WARREN_GATEWAY__HOST": "127.0.0.1",
                "WARREN_GATEWAY__PORT": str(self.port),
                # Every record of a latency run stays readable until it is read, once, after it.
                "WARREN_GATEWAY__HISTORY": "5000",
                # Spans are still made (the instrumentation's cost is Warren's cost), but with
                # no collector here an exporter would only add retries and slow exits.
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
            }
        )
        self.env.pop("WARREN_GATEWAY__TOKEN", None)
        self.env.update(extra_env or {})
        self.gateway: Service | None = None
        self.producer: Service | None = None
        self.consumers: list[Service] = []
        self._consumer_serial = 0
        self.error: str | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        missing = missing_services()
        if missing:
            raise Unavailable(f"services not runnable yet: {', '.join(missing)}")
        self.gateway = Service("gateway", "gateway", self.env, self.log_dir)
        self.producer = Service("producer", "producer", self.env, self.log_dir)
        try:
            self._wait_ready(lambda s: s.get("_health") == 200, timeout=40, what="gateway health")
            self._wait_ready(lambda s: replicas(s, "producer") >= 1, timeout=30, what="producer")
        except Exception as exc:
            tails = "\n".join(
                f"--- {svc.name} ---\n{svc.tail(15)}" for svc in (self.gateway, self.producer)
            )
            self.stop()
            raise Unavailable(f"Warren did not start: {exc}\n{tails}") from exc

    def _wait_ready(self, ok: Any, *, timeout: float, what: str) -> None:
        import json
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for svc in (self.gateway, self.producer, *self.consumers):
                if svc is not None and not svc.alive():
                    raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}")
            state: dict[str, Any] = {}
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/health", timeout=2) as resp:
                    state["_health"] = resp.status
                with urllib.request.urlopen(f"{self.base_url}/api/status", timeout=2) as resp:
                    state.update(json.loads(resp.read()))
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = exc
            else:
                if ok(state):
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready within {timeout:.0f}s (last: {last!r})")

    def start_consumers(
        self, count: int, *, work_ms: int = 0, tracing: bool = True
    ) -> list[Service]:
        """Start ``count`` more consumer replicas and wait for their heartbeats.

        ``tracing=False`` turns the OpenTelemetry SDK off (``OTEL_SDK_DISABLED``): what the
        tracing of every message costs, measured beside the real thing.
        """
        env = dict(self.env)
        env["WARREN_CONSUMER__WORK_MS"] = str(work_ms)
        if not tracing:
            env["OTEL_SDK_DISABLED"] = "true"
        started = []
        for _ in range(count):
            self._consumer_serial += 1
            name = f"consumer{self._consumer_serial}"
            env["WARREN_REPLICA_ID"] = f"{self.namespace}-{name}"
            started.append(Service(name, "consumer", env, self.log_dir))
        self.consumers.extend(started)
        want = len(self.consumers)
        try:
            self._wait_ready(
                lambda s: replicas(s, "consumer") >= want, timeout=40, what="consumers"
            )
        except Exception as exc:
            raise Unavailable(f"consumer replicas did not start: {exc}") from exc
        return started

    def stop_consumers(self) -> None:
        for svc in self.consumers:
            svc.stop()
        self.consumers.clear()

    def stop(self) -> None:
        self.stop_consumers()
        for svc in (self.producer, self.gateway):
            if svc is not None:
                svc.stop()
        self.gateway = self.producer = None

    def services(self) -> dict[str, Service]:
        found: dict[str, Service] = {}
        if self.gateway:
            found["gateway"] = self.gateway
        if self.producer:
            found["producer"] = self.producer
        for svc in self.consumers:
            found[svc.name] = svc
        return found

    @contextlib.contextmanager
    def consumers_running(self, count: int, *, work_ms: int = 0) -> Iterator[list[Service]]:
        self.stop_consumers()
        try:
            yield self.start_consumers(count, work_ms=work_ms)
        finally:
            self.stop_consumers()


def replicas(status: dict[str, Any], role: str) -> int:
    """Live replicas of ``role`` in a ``GET /api/status`` answer.

    Replica entries look like ``{"role", "replica", "state": "alive" | "lost" | "stopped", ...}``;
    entries without a ``state`` (a nested heartbeat) count unless they say they are stopping.
    """
    alive: set[str] = set()
    dead: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("role") == role and "replica" in node:
                name = str(node["replica"])
                state = node.get("state")
                if state not in (None, "alive") or node.get("stopping"):
                    dead.add(name)
                else:
                    alive.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(status)
    return len(alive - dead)


# --- HTTP helpers ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def api(stack: WarrenStack) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        base_url=stack.base_url, timeout=timeout, connector=connector, raise_for_status=True
    ) as session:
        yield session


async def start_consuming(
    session: aiohttp.ClientSession, queue: str, *, prefetch: int, replicas_wanted: int
) -> None:
    """``POST /api/consumers`` and wait until the broker sees every replica on the queue."""
    async with session.post("/api/consumers", json={"queue": queue, "prefetch": prefetch}):
        pass
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + 30
        while True:
            _ready, consumers = await queue_counts(channel, queue)
            if consumers >= replicas_wanted:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{consumers}/{replicas_wanted} consumers on {queue} after 30s")
            await asyncio.sleep(0.02)
    finally:
        await connection.close()


async def stop_consuming(session: aiohttp.ClientSession, queue: str) -> None:
    try:
        async with session.delete(f"/api/consumers/{queue}", raise_for_status=False):
            pass
    except aiohttp.ClientError:
        log.warning("Could not stop consuming %s", queue, exc_info=True)


async def run_batch(
    session: aiohttp.ClientSession,
    queue: str,
    count: int,
    *,
    concurrency: int,
    rate: float | None = None,
    poll: float = 0.05,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], float]:
    """``POST /api/batches`` and poll it to the end: (final job document, wall seconds).

    ``progress`` is told the job's confirmed count and rate at every poll (a long batch)."""
    payload: dict[str, Any] = {
        "queue": queue,
        "count": count,
        "body": body_document(),
        "concurrency": concurrency,
    }
    if rate is not None:
        payload["rate"] = rate
    started = time.perf_counter()
    async with session.post("/api/batches", json=payload) as resp:
        job_id = (await resp.json())["job_id"]
    deadline = time.monotonic() + max(120.0, count / 200)
    while True:
        async with session.get(f"/api/batches/{job_id}") as resp:
            job = await resp.json()
        if job.get("status") in ("done", "failed", "cancelled"):
            wall = time.perf_counter() - started
            if job["status"] != "done":
                raise RuntimeError(f"batch {job_id} ended {job['status']}: {job.get('error')}")
            return job, wall
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {job_id} still {job.get('status')} at the deadline")
        if progress is not None:
            progress(
                f"{int(job.get('confirmed') or 0):,}/{count:,} confirmed, "
                f"{float(job.get('rate') or 0):,.0f} msg/s"
            )
        await asyncio.sleep(poll)


def _poll_interval(ready: int) -> float:
    """How long to wait before asking the broker again, given ``ready`` messages left.

    Each poll is a passive declare the queue's process must answer between deliveries, so
    polls are sparse (0.1 s) while much is left and dense (5 ms) near the end, the only moment
    that needs precision: the start of the timed interval is the first poll that sees the queue
    shrink, and only the messages still ready at that poll are counted, so a late first poll
    costs nothing but a shorter interval."""
    return 0.1 if ready > 1000 else 0.005


async def watch_drain(queue: str, *, start_ready: int, timeout: float) -> tuple[float, int]:
    """Time a queue's drain at the broker: from the first consumed message to ready == 0.

    Returns (seconds, messages the interval certainly covers). Polls exact passive declares
    (see :func:`_poll_interval`); the control-plane start-up (HTTP → gateway → consumer) is
    excluded, as a raw client's consume set-up is.
    """
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        while True:
            ready, _ = await queue_counts(channel, queue)
            now = time.perf_counter()
            if first is None and ready < start_ready:
                first = (now, ready)
            if first is not None and ready == 0:
                return now - first[0], first[1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue} still has {ready} ready messages")
            await asyncio.sleep(0.005 if first is None else _poll_interval(ready))
    finally:
        await connection.close()


async def _until_no_ready(channel: Any, queue: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (ready := (await queue_counts(channel, queue))[0]) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue} not drained within {timeout:.0f}s ({ready} ready)")
        await asyncio.sleep(_poll_interval(ready))


def _drain_rate(elapsed: float, covered: int, prefetch: int, replicas_n: int) -> Figures:
    # At ready == 0 up to prefetch × replicas messages may still be unacked: count them as not
    # done, so the figure is a lower bound (about 1% at these counts).
    done = max(covered - prefetch * replicas_n, 1)
    return {"rate": done / elapsed, "count": float(done), "elapsed_s": elapsed}


async def gateway_processed(session: aiohttp.ClientSession, queue: str) -> int:
    """Messages of ``queue`` processed, as the gateway knows them (heartbeat counters)."""
    async with session.get("/api/consumers") as resp:
        doc = await resp.json()
    total = 0

    def walk(node: Any) -> None:
        nonlocal total
        if isinstance(node, dict):
            if node.get("queue") == queue and isinstance(node.get("processed"), int):
                total += node["processed"]
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return total


# --- contenders -------------------------------------------------------------------------------


async def batch_publish(stack: WarrenStack, cfg: BenchConfig) -> Figures:
    """A batch of 1 KiB persistent messages through gateway → producer, window W."""
    queue = unique_queue("warren-batch")
    await declare_queue(queue)
    assert stack.producer is not None
    try:
        async with api(stack) as session:
            cpu = stack.producer.cpu_s()
            job, wall = await run_batch(session, queue, cfg.publish_count, concurrency=cfg.window)
            cpu = stack.producer.cpu_s() - cpu
        confirmed = int(job.get("confirmed", 0))
        if confirmed < cfg.publish_count:
            raise RuntimeError(f"only {confirmed}/{cfg.publish_count} confirmed")
        elapsed = float(job.get("elapsed_s") or 0) or wall
        return {
            "rate": confirmed / elapsed,
            "count": float(confirmed),
            "elapsed_s": elapsed,
            "wall_s": wall,
            "rate_wall": confirmed / wall,
            "window": float(cfg.window),
            "cpu_us_per_msg": cpu / confirmed * 1e6,  # the producer's, whole job
        }
    finally:
        await delete_queue(queue)


async def _consume(
    stack: WarrenStack, *, count: int, prefetch: int, replicas_n: int, name: str
) -> Figures:
    queue = unique_queue(name)
    await prefill(queue, count)
    try:
        async with api(stack) as session:
            cpu = sum(c.cpu_s() for c in stack.consumers)
            watcher = asyncio.create_task(
                watch_drain(queue, start_ready=count, timeout=max(60.0, count / 50))
            )
            try:
                async with session.post(
                    "/api/consumers", json={"queue": queue, "prefetch": prefetch}
                ):
                    pass
                elapsed, covered = await watcher
                cpu = sum(c.cpu_s() for c in stack.consumers) - cpu
            finally:
                watcher.cancel()
                await stop_consuming(session, queue)
        return _drain_rate(elapsed, covered, prefetch, replicas_n) | {
            "prefetch": float(prefetch),
            "replicas": float(replicas_n),
            # The replicas' CPU per message, from the start command until none is ready
            # (control plane and heartbeats included), over the messages certainly done then.
            "cpu_us_per_msg": cpu / max(count - prefetch * replicas_n, 1) * 1e6,
        }
    finally:
        await delete_queue(queue)


async def consume_noop(stack: WarrenStack, cfg: BenchConfig) -> Figures:
    return await _consume(
        stack, count=cfg.consume_count, prefetch=cfg.consume_prefetch, replicas_n=1, name="w-cons"
    )


async def consume_io_bound(stack: WarrenStack, cfg: BenchConfig) -> Figures:
    figures = await _consume(
        stack, count=cfg.io_count_warren, prefetch=cfg.consume_prefetch, replicas_n=1, name="w-io"
    )
    return figures | {"work_ms": float(cfg.io_work_ms)}


async def consume_scale(stack: WarrenStack, cfg: BenchConfig, replicas_n: int) -> Figures:
    figures = await _consume(
        stack,
        count=cfg.scale_count * replicas_n,
        prefetch=cfg.scale_prefetch,
        replicas_n=replicas_n,
        name=f"w-scale{replicas_n}",
    )
    return figures | {"work_ms": float(cfg.io_work_ms)}


async def end_to_end(stack: WarrenStack, cfg: BenchConfig) -> Figures:
    """Batch → producer → broker → consumer, sustained; the gateway must see every message."""
    count = cfg.pair_count
    queue = unique_queue("w-e2e")
    await declare_queue(queue)
    try:
        async with api(stack) as session:
            await start_consuming(session, queue, prefetch=cfg.consume_prefetch, replicas_wanted=1)
            try:
                started = time.perf_counter()
                batch = asyncio.create_task(
                    run_batch(session, queue, count, concurrency=cfg.window)
                )
                connection = await aiormq.connect(AMQP_URL)
                try:
                    channel = await connection.channel()
                    await batch
                    await _until_no_ready(channel, queue, timeout=max(60.0, count / 100))
                    drained = time.perf_counter() - started
                finally:
                    await connection.close()
                # Reporting: when the gateway's counters show every message processed.
                deadline = time.monotonic() + 30
                seen = 0
                while time.monotonic() < deadline:
                    seen = await gateway_processed(session, queue)
                    if seen >= count:
                        break
                    await asyncio.sleep(0.1)
                reported = time.perf_counter() - started
            finally:
                await stop_consuming(session, queue)
        done = max(count - cfg.consume_prefetch, 1)
        return {
            "rate": done / drained,
            "count": float(count),
            "elapsed_s": drained,
            "gateway_processed": float(seen),
            "gateway_seen_s": reported,
            "rate_gateway_seen": count / reported if seen >= count else 0.0,
        }
    finally:
        await delete_queue(queue)


async def latency(stack: WarrenStack, cfg: BenchConfig) -> Figures:
    """End-to-end latency at a fixed rate: one batch paced at ``latency_rate`` (the batch's
    ``rate``) through gateway → producer → broker → consumer; each processed record's
    ``latency_ms`` (the producer's publish stamp, integer µs in ``x-warren-published-us``, to
    the consumer's processed time), collected from ``GET /api/messages/received``."""
    count = cfg.latency_count
    queue = unique_queue("w-latency")
    await declare_queue(queue)
    latencies: dict[str, tuple[int, float]] = {}
    try:
        async with api(stack) as session:
            await start_consuming(session, queue, prefetch=cfg.consume_prefetch, replicas_wanted=1)
            try:
                async with session.delete("/api/messages/received", raise_for_status=False):
                    pass
                await run_batch(
                    session,
                    queue,
                    count,
                    concurrency=cfg.latency_window,
                    rate=cfg.latency_rate,
                    poll=0.25,
                )
                # The records are read once, after the run: polling the gateway for pages of
                # records during it made the gateway encode megabytes of JSON a second, on the
                # same two cores as the path being measured (p99 grew round after round).
                deadline = time.monotonic() + 30
                while await gateway_processed(session, queue) < count:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.5)  # the last batch of records follows the heartbeat
                async with session.get(
                    "/api/messages/received", params={"queue": queue, "limit": str(count)}
                ) as resp:
                    doc = await resp.json()
                for rec in doc.get("messages", []):
                    key = str(rec.get("message_id"))
                    ms = rec.get("latency_ms")
                    seq = (rec.get("headers") or {}).get("x-warren-seq")
                    if isinstance(ms, int | float) and key not in latencies:
                        latencies[key] = (int(seq) if isinstance(seq, int) else 0, ms)
            finally:
                await stop_consuming(session, queue)
    finally:
        await delete_queue(queue)
    if len(latencies) < count * 0.9:
        raise RuntimeError(f"only {len(latencies)}/{count} processed records carried a latency")
    in_send_order = [ms for _, ms in sorted(latencies.values())]
    return latency_figures(in_send_order[cfg.warmup_latency :], rate=cfg.latency_rate)


class RssSampler:
    """Samples the resident memory of the stack's processes in the background."""

    def __init__(self, stack: WarrenStack, *, interval: float) -> None:
        self.stack = stack
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        started = time.perf_counter()
        while True:
            now = time.perf_counter() - started
            for name, svc in self.stack.services().items():
                self.samples.setdefault(name, []).append((now, svc.rss_mb()))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def max_mb(self, name: str) -> float:
        return max((mb for _, mb in self.samples.get(name, [])), default=float("nan"))


async def memory_pass(stack: WarrenStack, cfg: BenchConfig) -> Figures:
    """RSS of every service while ``memory_count`` messages pass through all of them."""
    count = cfg.memory_count
    queue = unique_queue("w-memory")
    await declare_queue(queue)
    try:
        async with api(stack) as session:
            await start_consuming(session, queue, prefetch=cfg.consume_prefetch, replicas_wanted=1)
            try:
                with RssSampler(stack, interval=0.25) as sampler:
                    await run_batch(session, queue, count, concurrency=cfg.window, poll=0.25)
                    connection = await aiormq.connect(AMQP_URL)
                    try:
                        channel = await connection.channel()
                        await _until_no_ready(channel, queue, timeout=max(60.0, count / 100))
                    finally:
                        await connection.close()
            finally:
                await stop_consuming(session, queue)
        consumer = next(n for n in sampler.samples if n.startswith("consumer"))
        return {
            "gateway_rss_max_mb": sampler.max_mb("gateway"),
            "producer_rss_max_mb": sampler.max_mb("producer"),
            "consumer_rss_max_mb": sampler.max_mb(consumer),
            "count": float(count),
        }
    finally:
        await delete_queue(queue)


async def flat_memory(
    stack: WarrenStack, cfg: BenchConfig, progress: Callable[[str], None] | None = None
) -> tuple[Figures, list[list[float]]]:
    """One big batch; the producer's RSS over time. The queue keeps only the newest 1,000
    messages (a max-length policy: the broker drops the head, publishes are still confirmed),
    so a million messages do not fill the shared broker's memory or disk."""
    count = cfg.flat_count
    queue = unique_queue("w-flat")
    policy = f"{queue}-maxlen"
    auth = aiohttp.BasicAuth("guest", "guest")
    async with aiohttp.ClientSession(base_url=MANAGEMENT_URL, auth=auth) as mgmt:
        async with mgmt.put(
            f"/api/policies/%2F/{policy}",
            json={
                "pattern": f"^{queue}$",
                "definition": {"max-length": 1000},
                "apply-to": "queues",
                "priority": 100,
            },
            raise_for_status=True,
        ):
            pass
        try:
            await declare_queue(queue)
            async with api(stack) as session:
                with RssSampler(stack, interval=0.5) as sampler:
                    job, wall = await run_batch(
                        session, queue, count, concurrency=cfg.window, poll=0.5, progress=progress
                    )
        finally:
            await delete_queue(queue)
            async with mgmt.delete(f"/api/policies/%2F/{policy}"):
                pass
    series = sampler.samples.get("producer", [])
    values = [mb for _, mb in series]
    tenth = max(1, len(values) // 10)
    first = sorted(values[:tenth])[tenth // 2]
    last = sorted(values[-tenth:])[tenth // 2]
    figures = {
        "count": float(count),
        "confirmed": float(job.get("confirmed", 0)),
        "rate": float(job.get("confirmed", 0)) / wall,
        "rss_first_mb": first,
        "rss_last_mb": last,
        "rss_max_mb": max(values),
        "growth_mb": last - first,
    }
    return figures, [[round(t, 2), round(mb, 2)] for t, mb in series]
