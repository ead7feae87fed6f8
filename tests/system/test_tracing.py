"""Tracing end to end: the three services as processes, the real OTLP/HTTP exporter, and an
OTLP receiver inside the test (``tests/support/otlp.py``) standing in for Jaeger.

``otlp_receiver`` is requested before ``stack_factory`` in every test: fixtures are torn down in
reverse, so the services stop (and flush) while the receiver still listens.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pika
import pytest

from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.procs import free_port
from tests.support.stack import LOCAL_AMQP, Stack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.broker, pytest.mark.timeout(90)]


def otlp_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **extra,
    }


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


def one(spans: list[ReceivedSpan], what: str, pred: Callable[[ReceivedSpan], bool]) -> ReceivedSpan:
    found = [s for s in spans if pred(s)]
    assert len(found) == 1, f"expected one {what}, got {[(s.service_name, s.name) for s in found]}"
    return found[0]


def describe(spans: list[ReceivedSpan]) -> list[tuple[Any, ...]]:
    return [(s.service_name, s.kind, s.name, s.parent_span_id) for s in spans]


@pytest.mark.parametrize("instrument", [True, False], ids=["opentelemetry-instrument", "plain"])
def test_one_trace_from_the_http_request_to_the_worker(
    otlp_receiver: OtlpReceiver,
    stack_factory: Callable[..., Stack],
    unique: Callable[[str], str],
    instrument: bool,
) -> None:
    stack = stack_factory(env=otlp_env(otlp_receiver.endpoint), instrument=instrument)
    queue = stack.create_queue(unique("traced"))
    stack.consume(queue)

    resp = stack.post("/api/messages", {"queue": queue, "body": {"order": 1}})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    trace_id, message_id = answer["trace_id"], answer["message_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)

    expected = {
        ("gateway", "SERVER"),
        ("gateway", "PRODUCER"),
        ("producer", "CONSUMER"),
        ("producer", "PRODUCER"),
        ("consumer", "CONSUMER"),
    }
    spans = otlp_receiver.wait_for(
        lambda got: expected <= {(s.service_name, s.kind) for s in got if s.trace_id == trace_id},
        timeout=20,
    )
    spans = [s for s in spans if s.trace_id == trace_id]
    assert {s.service_name for s in spans} == {"gateway", "producer", "consumer"}, describe(spans)

    # gateway: POST /api/messages (SERVER) -> publish of the job command (PRODUCER)
    server = one(spans, "HTTP server span", lambda s: s.kind == "SERVER")
    assert server.service_name == "gateway"
    assert server.parent_span_id is None
    assert server.name.endswith("/api/messages")
    command = one(
        spans, "job command publish", lambda s: s.kind == "PRODUCER" and s.service_name == "gateway"
    )
    assert command.parent_span_id == server.span_id
    assert f"{stack.namespace}.commands" in command.name
    # producer: processing of the job (CONSUMER) -> publish of the user's message (PRODUCER)
    job = one(
        spans, "job processing", lambda s: s.kind == "CONSUMER" and s.service_name == "producer"
    )
    assert job.parent_span_id == command.span_id
    assert job.attributes["warren.outcome"] == "done"
    assert job.attributes["warren.job_id"] == answer["job_id"]
    assert job.attributes["messaging.destination.name"] == f"{stack.namespace}.jobs"
    publish = one(
        spans,
        "user message publish",
        lambda s: s.kind == "PRODUCER" and s.service_name == "producer",
    )
    assert publish.parent_span_id == job.span_id
    assert publish.attributes["messaging.message.id"] == message_id
    assert queue in publish.name
    # consumer: processing of the message (CONSUMER), a child of that publish
    work = one(
        spans, "message processing", lambda s: s.kind == "CONSUMER" and s.service_name == "consumer"
    )
    assert work.parent_span_id == publish.span_id
    attrs = work.attributes
    assert attrs["messaging.destination.name"] == queue
    assert attrs["messaging.message.id"] == message_id
    assert attrs["messaging.rabbitmq.destination.routing_key"] == queue
    assert attrs["warren.exchange"] == ""
    assert attrs["warren.replica"] == "consumer-0"
    assert attrs["warren.redelivered"] is False
    assert attrs["warren.outcome"] == "acked"
    assert work.status_code != "ERROR"
    # Every span's parent is in the trace: nothing dangles, and no progress or heartbeat spans.
    ids = by_id(spans)
    assert all(s.parent_span_id is None or s.parent_span_id in ids for s in spans)
    assert not [s for s in spans if ".events" in s.name], describe(spans)

    # The processed record links to the same trace.
    records = wait_until(lambda: stack.received(queue), timeout=15, what="the processed record")
    assert records[0]["message_id"] == message_id
    assert records[0]["trace_id"] == trace_id
    assert records[0]["trace_url"].endswith(f"/trace/{trace_id}")

    # Log lines written while processing carry the trace and span ids.
    assert stack.producers[0].wait_for_log(rf"\[trace={trace_id} span=[0-9a-f]{{16}}\].*Job ")

    # The instrumentation is active, once: one publish span per message, no error reported.
    status = stack.http.get("/api/status").json()
    assert status["gateway"]["instrumentation"] == {"aio-pika": True, "aiohttp-server": True}
    assert status["gateway"]["instrumentation_error"] is None
    for replica in status["replicas"]:
        assert replica["heartbeat"]["instrumentation"] == {"aio-pika": True}
        assert replica["heartbeat"]["instrumentation_error"] is None


def test_a_failed_message_is_an_error_span_with_the_exception(
    otlp_receiver: OtlpReceiver, stack_factory: Callable[..., Stack], unique: Callable[[str], str]
) -> None:
    stack = stack_factory(env=otlp_env(otlp_receiver.endpoint), instrument=True)
    queue = stack.create_queue(unique("failing"), dead_letter=True, delivery_limit=1)
    stack.consume(queue)
    resp = stack.post(
        "/api/messages",
        {"queue": queue, "body": "boom", "properties": {"headers": {"x-warren-fail": "true"}}},
    )
    assert resp.status_code == 200, resp.text
    trace_id = resp.json()["trace_id"]
    [work] = otlp_receiver.wait_for_spans(
        lambda s: s.trace_id == trace_id and s.service_name == "consumer" and s.kind == "CONSUMER",
        timeout=20,
    )
    assert work.status_code == "ERROR"
    assert work.attributes["warren.outcome"] == "dead_lettered"
    assert [e for e in work.events if e.name == "exception"], work.events
    exception = next(e for e in work.events if e.name == "exception")
    assert exception.attributes["exception.type"]
    assert exception.attributes["exception.message"]


def test_internal_traffic_makes_no_traces(
    otlp_receiver: OtlpReceiver, stack_factory: Callable[..., Stack], unique: Callable[[str], str]
) -> None:
    """A minute of idle heartbeats (default interval 2 s: 30 per replica), in a few seconds."""
    stack = stack_factory(
        env=otlp_env(otlp_receiver.endpoint, WARREN_HEARTBEAT_INTERVAL="0.05"), instrument=True
    )
    # Count the heartbeats on the wire, and check they carry a "not sampled" trace context.
    connection = pika.BlockingConnection(pika.URLParameters(LOCAL_AMQP))
    try:
        channel = connection.channel()
        tap = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(tap, f"{stack.namespace}.events", "heartbeat.#")
        beats: dict[str, int] = {}
        flags: set[str] = set()
        deadline = time.monotonic() + 20
        while min(beats.get("producer", 0), beats.get("consumer", 0)) < 30:
            assert time.monotonic() < deadline, f"heartbeats seen: {beats}"
            method, props, _ = channel.basic_get(tap, auto_ack=True)
            if method is None:
                connection.sleep(0.05)
                continue
            role = method.routing_key.split(".")[1]
            beats[role] = beats.get(role, 0) + 1
            traceparent = (props.headers or {}).get("traceparent", "")
            flags.add(traceparent.rsplit("-", 1)[-1] if traceparent else "none")
    finally:
        connection.close()
    assert flags == {"00"}, flags

    # Then one user action, so that we know every exporter works and has flushed.
    queue = stack.create_queue(unique("after-idle"))
    stack.consume(queue)
    resp = stack.post("/api/messages", {"queue": queue, "body": "hello"})
    assert resp.status_code == 200, resp.text
    trace_id = resp.json()["trace_id"]
    done = {("gateway", "SERVER"), ("producer", "CONSUMER"), ("consumer", "CONSUMER")}
    spans = otlp_receiver.wait_for(
        lambda got: done <= {(s.service_name, s.kind) for s in got if s.trace_id == trace_id},
        timeout=20,
    )
    # Every trace is a user's HTTP request: its root is a gateway SERVER span.
    for tid, group in otlp_receiver.traces().items():
        roots = [s for s in group if s.parent_span_id is None]
        assert [(r.service_name, r.kind) for r in roots] == [("gateway", "SERVER")], (
            tid,
            describe(group),
        )
    # ...and none of them is the console's polling or Warren's own events.
    assert not [s for s in spans if "/api/status" in s.name or "/api/health" in s.name]
    assert not [s for s in spans if ".events" in s.name], describe(spans)


def test_a_batch_is_one_trace_with_a_sample_of_message_spans(
    otlp_receiver: OtlpReceiver, stack_factory: Callable[..., Stack], unique: Callable[[str], str]
) -> None:
    first, every, count = 5, 100, 1000
    env = otlp_env(
        otlp_receiver.endpoint,
        WARREN_PRODUCER__TRACE_FIRST=str(first),
        WARREN_PRODUCER__TRACE_EVERY=str(every),
        WARREN_CONSUMER__RECORDS_PER_SECOND="100000",
    )
    stack = stack_factory(env=env, instrument=True)
    queue = stack.create_queue(unique("batch"))
    stack.consume(queue, prefetch=100)
    resp = stack.post("/api/batches", {"queue": queue, "count": count, "body": {"n": "{seq}"}})
    assert resp.status_code == 202, resp.text
    job_id, trace_id = resp.json()["job_id"], resp.json()["trace_id"]
    result = stack.wait_batch(job_id, timeout=60)
    assert result["status"] == "done", result
    assert result["confirmed"] == count, result

    traced = sorted({*range(first), *range(0, count, every)})
    records = wait_until(
        lambda: (r := stack.received(queue, limit=count)) and len(r) >= count and r,
        timeout=30,
        what=f"{count} records",
    )
    # Every message's record carries the batch's trace id, traced individually or not.
    assert {r["trace_id"] for r in records} == {trace_id}

    spans = otlp_receiver.wait_for(
        lambda got: (
            sum(1 for s in got if s.trace_id == trace_id and s.service_name == "consumer")
            >= len(traced)
        ),
        timeout=20,
    )
    # The job's own spans end last (the producer acks the job after the final report).
    spans = otlp_receiver.wait_for(
        lambda got: any(
            s.trace_id == trace_id and s.service_name == "producer" and s.kind == "CONSUMER"
            for s in got
        ),
        timeout=10,
    )
    in_trace = [s for s in spans if s.trace_id == trace_id]
    # Nothing of the batch leaked into other traces (no root span per message).
    consumer_elsewhere = [s for s in spans if queue in s.name and s.trace_id != trace_id]
    assert not consumer_elsewhere, describe(consumer_elsewhere)

    job = one(
        in_trace, "job processing", lambda s: s.service_name == "producer" and s.kind == "CONSUMER"
    )
    assert job.attributes["warren.count"] == count
    assert job.attributes["warren.batch"] is True
    publishes = [s for s in in_trace if s.service_name == "producer" and s.kind == "PRODUCER"]
    works = [s for s in in_trace if s.service_name == "consumer"]
    assert all(p.parent_span_id == job.span_id for p in publishes)
    seqs = sorted(int(p.attributes["messaging.message.id"].rsplit("-", 1)[1]) for p in publishes)
    assert seqs == traced
    assert len(works) == len(traced)
    publish_ids = {p.span_id for p in publishes}
    assert all(w.parent_span_id in publish_ids for w in works)
    # The whole trace: request, command, job, and the sample; no progress events.
    assert len(in_trace) == 3 + 2 * len(traced), describe(in_trace)


def test_a_disabled_instrumentation_is_reported(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(
        env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "aio-pika"}, instrument=True
    )
    status = stack.http.get("/api/status").json()
    assert status["gateway"]["instrumentation"]["aio-pika"] is False
    assert "aio-pika" in status["gateway"]["instrumentation_error"]
    assert status["gateway"]["instrumentation"]["aiohttp-server"] is True
    for replica in status["replicas"]:
        beat = replica["heartbeat"]
        assert beat["instrumentation"] == {"aio-pika": False}, replica["role"]
        assert "aio-pika" in beat["instrumentation_error"]
    for proc in [stack.gateway, *stack.producers, *stack.consumers]:
        assert proc is not None
        proc.wait_for_log(r"ERROR .*instrumentation not active: aio-pika", timeout=5)


def _stop_times(stack: Stack) -> dict[str, float]:
    times = {}
    for proc in [*stack.consumers, *stack.producers, stack.gateway]:
        assert proc is not None
        started = time.monotonic()
        code = proc.terminate(timeout=15)
        times[proc.name] = time.monotonic() - started
        assert code == 0, (proc.name, code, proc.tail())
    return times


@pytest.mark.parametrize("collector", ["unreachable", "reachable"])
def test_services_stop_promptly_whatever_the_collector(
    otlp_receiver: OtlpReceiver,
    stack_factory: Callable[..., Stack],
    unique: Callable[[str], str],
    collector: str,
) -> None:
    endpoint = (
        otlp_receiver.endpoint if collector == "reachable" else f"http://127.0.0.1:{free_port()}"
    )
    stack = stack_factory(env=otlp_env(endpoint), instrument=True)
    queue = stack.create_queue(unique("stop"))
    stack.consume(queue)
    # The services work with the collector down, and have spans pending when they stop.
    resp = stack.post("/api/messages", {"queue": queue, "body": "x"})
    assert resp.status_code == 200, resp.text
    wait_until(lambda: stack.received(queue), timeout=15, what="the processed record")
    times = _stop_times(stack)
    print(f"stop times with the collector {collector}: {times}")  # noqa: T201
    assert max(times.values()) < 4.0, times
