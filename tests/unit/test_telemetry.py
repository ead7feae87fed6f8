"""warren.telemetry without a broker: untraced internal traffic, log ids, span attributes and a
bounded shutdown. Each test uses its own TracerProvider (the global one is left alone)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from tests.support.procs import free_port
from warren import telemetry


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[trace.Tracer]:
    # The default sampler, parentbased_always_on.
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test")
    provider.shutdown()


def traceparent() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier["traceparent"]


def sampled(header: str) -> bool:
    return bool(int(header.rsplit("-", 1)[1], 16) & 1)


def test_untraced_publishes_a_not_sampled_context(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with telemetry.untraced():
        header = traceparent()
        # What an instrumentation does on either side: start a span under the context.
        with tracer.start_as_current_span("publish heartbeat") as span:
            assert not span.is_recording()
    assert header.endswith("-00")
    ctx = propagate.extract({"traceparent": header})
    with tracer.start_as_current_span("receive heartbeat", context=ctx) as span:
        assert not span.is_recording()
    assert exporter.get_finished_spans() == ()


def test_untraced_inside_a_trace_keeps_its_id_but_records_nothing(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("job") as job:
        with telemetry.untraced():
            header = traceparent()
            with tracer.start_as_current_span("progress") as span:
                assert not span.is_recording()
                assert span.get_span_context().trace_id == job.get_span_context().trace_id
        # Back to the job's sampled context afterwards.
        assert sampled(traceparent())
    assert header.split("-")[1] == format(job.get_span_context().trace_id, "032x")
    assert [s.name for s in exporter.get_finished_spans()] == ["job"]


async def test_internal_decorator_wraps_a_coroutine(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    @telemetry.internal
    async def send(value: int) -> tuple[int, str]:
        with tracer.start_as_current_span("send"):
            return value * 2, traceparent()

    result, header = await send(21)
    assert result == 42
    assert header.endswith("-00")
    assert exporter.get_finished_spans() == ()


def test_untraced_contexts_are_not_sampled_by_a_ratio_sampler_either(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.untraced():
        with provider.get_tracer("test").start_as_current_span("beat") as span:
            assert not span.is_recording()
    provider.shutdown()


def test_log_records_carry_ids_of_sampled_spans_only(tracer: trace.Tracer) -> None:
    flt = telemetry.TraceContextFilter()

    def ids() -> tuple[str, str]:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "msg", None, None)
        assert flt.filter(record)
        return record.otel_trace_id, record.otel_span_id

    assert ids() == ("-", "-")
    with tracer.start_as_current_span("work") as span:
        ctx = span.get_span_context()
        assert ids() == (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
        with telemetry.untraced(), tracer.start_as_current_span("beat"):
            assert ids() == ("-", "-")


def test_annotate_sets_attributes_and_error_on_recording_spans(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("job"):
        telemetry.annotate({"warren.outcome": "failed", "warren.count": 3}, error="boom")
    with telemetry.untraced(), tracer.start_as_current_span("quiet"):
        telemetry.annotate({"warren.outcome": "acked"}, error="ignored")  # a no-op
    [span] = exporter.get_finished_spans()
    assert span.attributes == {"warren.outcome": "failed", "warren.count": 3}
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.status.description == "boom"


def test_shutdown_exports_the_last_spans(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    with provider.get_tracer("test").start_as_current_span("last"):
        pass
    telemetry.shutdown(provider=provider)
    assert [s.name for s in exporter.get_finished_spans()] == ["last"]


def test_shutdown_is_bounded_when_the_collector_is_unreachable() -> None:
    """Without the bound the SDK retries with backoff for the exporter's whole timeout."""
    closed = f"http://127.0.0.1:{free_port()}/v1/traces"
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=closed, timeout=10), schedule_delay_millis=60_000
        )
    )
    with provider.get_tracer("test").start_as_current_span("lost"):
        pass
    started = time.monotonic()
    telemetry.shutdown(timeout=0.3, provider=provider)
    # A bound, not a benchmark: the unbounded SDK takes about 7 s here.
    assert time.monotonic() - started < 3


_OUT_OF_RANGE = """
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
# What an instrumentation release that predates aio-pika 10 declares (0.65b0 and older).
AioPikaInstrumentor.instrumentation_dependencies = lambda self: ("aio_pika < 10",)
from warren import telemetry
status = telemetry.setup("consumer")
print("STATUS", status.instrumentation, status.error)
"""


def test_setup_reports_an_instrumentation_that_excludes_the_installed_version() -> None:
    """The distro skips such an instrumentation silently; setup() tries it and reports it.

    In a subprocess: instrumenting and configuring the SDK are process-wide.
    """
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-c", _OUT_OF_RANGE],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "STATUS {'aio-pika': False} OpenTelemetry instrumentation not active: aio-pika" in (
        done.stdout
    )
    assert "instrumentation not active: aio-pika" in done.stderr  # the ERROR log line


@pytest.mark.parametrize(
    ("sampler", "drops"),
    [
        ("parentbased_always_on", (True, False)),  # the default
        ("parentbased_always_off", (True, True)),  # what Warren uses when nothing exports
        ("always_on", (False, False)),  # records under a not-sampled parent too
        ("parentbased_traceidratio", (True, False)),  # roots: some kept, some dropped
        ("traceidratio", (False, False)),
    ],
)
def test_the_sampler_is_asked_which_consume_spans_it_would_drop(
    sampler: str, drops: tuple[bool, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    assert telemetry._sampler_drops(_get_from_env_or_default()) == drops
    assert telemetry._sampler_drops(None) == (True, True)  # no SDK: nothing records
