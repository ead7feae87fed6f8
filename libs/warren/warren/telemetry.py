"""OpenTelemetry: setup through the standard ``OTEL_*`` variables, and the start-up check.

Under ``opentelemetry-instrument`` the distro has already configured the SDK and instrumented
aio-pika (and aiohttp on the gateway); run plainly (``python -m consumer``) we do the same here,
so traces work either way. An instrumentation whose declared version range excludes the
installed library is skipped *silently* by the distro, so :func:`setup` checks what is active
and reports it (logged as an error and carried in heartbeats).

Warren's own traffic (heartbeats, progress, records) is published :func:`untraced`, so that
Jaeger shows users' actions only; :func:`shutdown` bounds the last export, so that an
unreachable collector does not delay a stop. See ``docs/tracing.md``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ParamSpec, TypeVar

import wrapt
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, ConsumerTag
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# The exporter must not add seconds to every stop when the collector is unreachable.
_EXPORT_TIMEOUT_S = 2.0
# What flushing the last spans may add to a stop, at most.
SHUTDOWN_TIMEOUT_S = 1.0

# The console polls these (status every few seconds, the live stream, its static files): traced,
# they would bury the user's actions in Jaeger. A user's own OTEL_PYTHON_*_EXCLUDED_URLS wins.
POLLING_URLS = (
    r"^/$",
    r"^/static/",
    r"^/favicon",
    r"^/api/health$",
    r"^/api/status$",
    r"^/api/events",
)


@dataclass
class TelemetryStatus:
    """Which instrumentations are active; ``error`` explains a missing one."""

    instrumentation: dict[str, bool] = field(default_factory=dict)
    error: str | None = None


class TraceContextFilter(logging.Filter):
    """Adds ``otel_trace_id`` and ``otel_span_id`` to every log record.

    Only for a sampled span: the ids of an untraced message (heartbeats, the unsampled part of a
    batch) lead to nothing in Jaeger, so the line shows ``-`` instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        sampled = ctx.is_valid and ctx.trace_flags.sampled
        record.otel_trace_id = format(ctx.trace_id, "032x") if sampled else "-"
        record.otel_span_id = format(ctx.span_id, "016x") if sampled else "-"
        return True


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def not_sampled(trace_id: int, span_id: int | None = None, *, remote: bool = False) -> trace.Span:
    """A span that only carries ids, flagged *not sampled*: what is published or processed
    under it keeps the trace id, and a parent-based sampler records nothing for it."""
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=trace_id,
            span_id=span_id if span_id is not None else random.getrandbits(64) or 1,
            is_remote=remote,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
        )
    )


@contextmanager
def untraced() -> Iterator[None]:
    """Publish Warren's own traffic (heartbeats, progress, records) without spans, end to end.

    Messages published inside carry a ``traceparent`` flagged *not sampled*: the aio-pika
    instrumentation records no span for the publish, and the receiving service's parent-based
    sampler (the default ``parentbased_always_on``) records none for its processing either.
    Merely suppressing the instrumentation would not do: a message without ``traceparent``
    becomes a new root span on the consuming side, one trace per heartbeat.
    """
    current = trace.get_current_span().get_span_context()
    trace_id = current.trace_id if current.is_valid else random.getrandbits(128) or 1
    token = otel_context.attach(trace.set_span_in_context(not_sampled(trace_id)))
    try:
        yield
    finally:
        otel_context.detach(token)


def internal(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate a coroutine that publishes Warren's internal traffic: see :func:`untraced`."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with untraced():
            return await fn(*args, **kwargs)

    return wrapper


MessageCallback = Callable[[AbstractIncomingMessage], Awaitable[Any]]


class _SkipDroppedWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """Warren's replacement of the instrumentation's ``Queue.consume`` wrapper (below)."""


def _skip_dropped_consume_spans() -> bool:
    """Re-wrap ``aio_pika.Queue.consume`` so that a message the sampler would drop gets no span.

    The aio-pika instrumentation makes a span for every message it delivers, a non-recording
    one when the sampler drops it: for the untraced part of a batch (trace context flagged
    "not sampled"), or for every message when nothing exports (see :func:`_configure_sdk`).
    Building those was a fifth of the consumer's time per message (py-spy). When the
    configured sampler is seen to drop such a message whatever its trace id, the message gets
    its trace context only, so the ids still reach records, logs and republished copies;
    every other message goes through the instrumentation's own ``CallbackDecorator`` and gets
    the very same span as before. The instrumentation's wrapper is replaced, not stacked (a
    robust queue re-consumes through it after every reconnect), and ``uninstrument()`` still
    removes it. Returns whether it is in place.
    """
    from aio_pika import Queue

    current = Queue.__dict__.get("consume")
    if isinstance(current, _SkipDroppedWrapper):
        return True
    if not isinstance(current, wrapt.FunctionWrapper):
        return False  # not instrumented
    drops_unsampled, drops_roots = _sampler_drops(
        getattr(trace.get_tracer_provider(), "sampler", None)
    )
    if not (drops_unsampled or drops_roots):
        return False
    try:  # the instrumentation's internals, pinned in uv.lock; a new layout keeps its wrapper
        from opentelemetry.instrumentation.aio_pika.aio_pika_instrumentor import (
            _INSTRUMENTATION_MODULE_NAME,
        )
        from opentelemetry.instrumentation.aio_pika.callback_decorator import CallbackDecorator
        from opentelemetry.instrumentation.aio_pika.version import __version__
        from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    except ImportError as exc:
        log.warning("Cannot re-wrap the aio-pika instrumentation (%s): spans stay as they are", exc)
        return False

    tracer = trace.get_tracer(
        _INSTRUMENTATION_MODULE_NAME,
        __version__,
        schema_url="https://opentelemetry.io/schemas/1.11.0",
    )

    def decorate(queue: AbstractQueue, callback: MessageCallback) -> MessageCallback:
        traced = CallbackDecorator(tracer, queue).decorate(callback)  # type: ignore[arg-type]

        async def on_message(message: AbstractIncomingMessage) -> Any:
            if not is_instrumentation_enabled():
                return await callback(message)
            ctx = propagate.extract(message.headers) if message.headers else None
            parent = trace.get_current_span(ctx).get_span_context() if ctx is not None else None
            if parent is None or not parent.is_valid:
                dropped = drops_roots
            else:
                dropped = drops_unsampled and not parent.trace_flags.sampled
            if not dropped:
                return await traced(message)
            if ctx is None:
                return await callback(message)
            token = otel_context.attach(ctx)
            try:
                return await callback(message)
            finally:
                otel_context.detach(token)

        return on_message

    async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> ConsumerTag:
        async def consume(callback: MessageCallback, *fargs: Any, **fkwargs: Any) -> ConsumerTag:
            tag: ConsumerTag = await wrapped(decorate(instance, callback), *fargs, **fkwargs)
            return tag

        return await consume(*args, **kwargs)

    Queue.consume = _SkipDroppedWrapper(current.__wrapped__, wrapper)  # type: ignore[method-assign]
    return True


def _sampler_drops(sampler: Any) -> tuple[bool, bool]:
    """Whether ``sampler`` records nothing (a) under a not-sampled parent, as the default
    parent-based samplers do and ``always_on`` does not, and (b) for a message without a trace
    context (a new root). Asked of the sampler itself, for several trace ids."""
    if sampler is None:  # no SDK: nothing is ever recorded
        return True, True
    from opentelemetry.sdk.trace.sampling import Decision

    def drops(parent: trace.Span | None) -> bool:
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        for trace_id in (1, 1 << 64, (1 << 128) - 1, random.getrandbits(128) or 1):
            result = sampler.should_sample(ctx, trace_id, "probe", trace.SpanKind.CONSUMER)
            if result.decision != Decision.DROP:
                return False
        return True

    unsampled_parent = not_sampled(random.getrandbits(128) or 1, remote=True)
    return drops(unsampled_parent), drops(None)


def annotate(attributes: dict[str, AttributeValue], *, error: str | None = None) -> None:
    """Set attributes on the current span, if it records (untraced messages cost nothing);
    ``error`` marks the span as failed, so Jaeger shows it in red."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error))


def versions() -> dict[str, str]:
    """Versions of the libraries a person debugging Warren asks about first."""
    out: dict[str, str] = {}
    for dist in (
        "aio-pika",
        "aiormq",
        "aiohttp",
        "pydantic",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-aio-pika",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _sdk_configured() -> bool:
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(trace.get_tracer_provider(), TracerProvider)


def _configure_sdk(service: str) -> None:
    """Configure a TracerProvider like the distro would, from the ``OTEL_*`` variables."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, _get_from_env_or_default

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    resource = resource.merge(OTELResourceDetector().detect())
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    exporting = exporters == "otlp" or (exporters != "none" and bool(endpoint))
    if exporting or os.environ.get("OTEL_TRACES_SAMPLER"):
        sampler = _get_from_env_or_default()
    else:
        # Nothing exports: recording spans only to drop them cost a fifth of the consumer's
        # CPU (py-spy). Span contexts still propagate, so records keep their trace ids.
        sampler = ParentBased(ALWAYS_OFF)
    provider = TracerProvider(resource=resource, sampler=sampler)
    # Asked for explicitly ("otlp"), spans go to the endpoint or OTLP/HTTP's default,
    # localhost:4318; left unset, only to a configured endpoint (no warnings every few seconds
    # on a laptop without Jaeger). We get here too when the distro failed, e.g. because
    # OTEL_EXPORTER_OTLP_PROTOCOL defaulted to grpc and no gRPC exporter is installed.
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The user's OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT (seconds) wins, read by the exporter.
        configured = any(
            os.environ.get(name)
            for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        )
        exporter = OTLPSpanExporter(timeout=None if configured else _EXPORT_TIMEOUT_S)
        provider.add_span_processor(BatchSpanProcessor(exporter, export_timeout_millis=2000))
        log.info("Exporting traces over OTLP/HTTP to %s", exporter._endpoint)
    trace.set_tracer_provider(provider)


def setup(service: str, *, aiohttp_server: bool = False) -> TelemetryStatus:
    """Make sure tracing is configured and instrumented; report what is active."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return TelemetryStatus(error="OpenTelemetry disabled by OTEL_SDK_DISABLED")
    if not _sdk_configured():
        _configure_sdk(service)
    status = TelemetryStatus()
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    disabled = {
        name.strip()
        for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
        if name.strip()
    }
    aio_pika = AioPikaInstrumentor()
    if not aio_pika.is_instrumented_by_opentelemetry and "aio-pika" not in disabled:
        aio_pika.instrument()
    status.instrumentation["aio-pika"] = aio_pika.is_instrumented_by_opentelemetry
    if aio_pika.is_instrumented_by_opentelemetry and _skip_dropped_consume_spans():
        log.debug("Messages the sampler drops are consumed without a span")
    if aiohttp_server:
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        server = AioHttpServerInstrumentor()
        if not server.is_instrumented_by_opentelemetry and "aiohttp-server" not in disabled:
            server.instrument()
        status.instrumentation["aiohttp-server"] = server.is_instrumented_by_opentelemetry
        if server.is_instrumented_by_opentelemetry:
            _exclude_polling_urls()
    missing = sorted(name for name, active in status.instrumentation.items() if not active)
    if missing:
        status.error = f"OpenTelemetry instrumentation not active: {', '.join(missing)}"
        log.error("%s: traces will be incomplete", status.error)
    return status


def _exclude_polling_urls() -> None:
    """Leave the console's polling out of the traces unless the user chose what to exclude.

    The instrumentation reads its exclusion list once, when it instruments (under
    ``opentelemetry-instrument``, before our code runs), so the default is set on its module.
    """
    if os.environ.get("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS"
    ):
        return
    from opentelemetry.instrumentation import aiohttp_server
    from opentelemetry.util.http import ExcludeList

    aiohttp_server._excluded_urls = ExcludeList(list(POLLING_URLS))


def _exporters(provider: Any) -> list[Any]:
    """The span exporters behind the provider's batch processors (SDK internals, best effort)."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    found = []
    for processor in processors:
        exporter = getattr(processor, "span_exporter", None)
        if exporter is not None:
            found.append(exporter)
    return found


def shutdown(*, timeout: float = SHUTDOWN_TIMEOUT_S, provider: Any = None) -> None:
    """Export the last spans, waiting ``timeout`` seconds at most, then stop the SDK.

    The SDK's own shutdown waits for an export that retries with backoff for up to the
    exporter's timeout (10 s by default under ``opentelemetry-instrument``), and its
    ``force_flush`` ignores the timeout it is given: measured here, a process took about 8 s to
    exit with the collector down. So the flush runs in a daemon thread joined with a bound; when
    it overruns, the exporters are shut down, which ends their retry waits at once.
    """
    if provider is None:
        provider = trace.get_tracer_provider()
    if not hasattr(provider, "shutdown"):
        return
    # The provider's atexit hook would run the same unbounded shutdown again at exit.
    handler = getattr(provider, "_atexit_handler", None)
    if handler is not None:
        atexit.unregister(handler)
        provider._atexit_handler = None

    def flush_and_stop() -> None:
        try:
            provider.force_flush(int(timeout * 1000))
            provider.shutdown()
        except Exception as exc:  # telemetry must never fail a stop
            log.warning("OpenTelemetry shutdown failed: %s", exc)

    worker = threading.Thread(target=flush_and_stop, name="otel-shutdown", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        log.warning(
            "Trace collector not answering: last spans dropped after %.1f s to stop promptly",
            timeout,
        )
        for exporter in _exporters(provider):
            try:
                exporter.shutdown()
            except Exception as exc:
                log.debug("Exporter shutdown failed: %s", exc)
        worker.join(0.2)
