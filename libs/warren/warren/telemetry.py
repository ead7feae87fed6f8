"""OpenTelemetry: setup through the standard ``OTEL_*`` variables, and the start-up check.

Under ``opentelemetry-instrument`` the distro has already configured the SDK and instrumented
aio-pika (and aiohttp on the gateway); run plainly (``python -m consumer``) we do the same here,
so traces work either way. An instrumentation whose declared version range excludes the
installed library is skipped *silently* by the distro, so :func:`setup` checks what is active
and reports it (logged as an error and carried in heartbeats).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import trace

log = logging.getLogger(__name__)

# The exporter must not add seconds to every stop when the collector is unreachable.
_EXPORT_TIMEOUT_S = 2.0


@dataclass
class TelemetryStatus:
    """Which instrumentations are active; ``error`` explains a missing one."""

    instrumentation: dict[str, bool] = field(default_factory=dict)
    error: str | None = None


class TraceContextFilter(logging.Filter):
    """Adds ``otel_trace_id`` and ``otel_span_id`` to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.otel_trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else "-"
        record.otel_span_id = format(ctx.span_id, "016x") if ctx.is_valid else "-"
        return True


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def current_span_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else None


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
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    resource = resource.merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource, sampler=_get_from_env_or_default())
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if exporters != "none" and endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        timeout = float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", _EXPORT_TIMEOUT_S))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(timeout=timeout), export_timeout_millis=2000)
        )
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
    if aiohttp_server:
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        server = AioHttpServerInstrumentor()
        if not server.is_instrumented_by_opentelemetry and "aiohttp-server" not in disabled:
            server.instrument()
        status.instrumentation["aiohttp-server"] = server.is_instrumented_by_opentelemetry
    missing = sorted(name for name, active in status.instrumentation.items() if not active)
    if missing:
        status.error = f"OpenTelemetry instrumentation not active: {', '.join(missing)}"
        log.error("%s: traces will be incomplete", status.error)
    return status


def shutdown() -> None:
    """Flush spans with a bound, so that an unreachable collector does not delay the stop."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(int(_EXPORT_TIMEOUT_S * 1000))
    stop = getattr(provider, "shutdown", None)
    if stop is not None:
        stop()
