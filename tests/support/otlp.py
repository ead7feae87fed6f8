"""A tiny OTLP/HTTP trace receiver for tests (no Collector or Jaeger binary exists here).

It accepts what the real ``OTLPSpanExporter`` (``opentelemetry-exporter-otlp-proto-http``)
sends to ``POST /v1/traces`` — protobuf, optionally gzip (aiohttp inflates the body itself) —
and keeps the spans as plain dataclasses that tests can filter and wait on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

_KINDS = {
    trace_pb2.Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    trace_pb2.Span.SPAN_KIND_INTERNAL: "INTERNAL",
    trace_pb2.Span.SPAN_KIND_SERVER: "SERVER",
    trace_pb2.Span.SPAN_KIND_CLIENT: "CLIENT",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "PRODUCER",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUSES = {
    trace_pb2.Status.STATUS_CODE_UNSET: "UNSET",
    trace_pb2.Status.STATUS_CODE_OK: "OK",
    trace_pb2.Status.STATUS_CODE_ERROR: "ERROR",
}


@dataclass(frozen=True)
class SpanEvent:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service_name: str | None
    attributes: dict[str, Any]
    status_code: str
    status_message: str
    events: tuple[SpanEvent, ...] = ()
    resource: dict[str, Any] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return getattr(v, which)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def decode(body: bytes) -> list[ReceivedSpan]:
    """Spans from a serialized ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attrs(resource_spans.resource.attributes)
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=_KINDS.get(span.kind, str(span.kind)),
                        service_name=service,
                        attributes=_attrs(span.attributes),
                        status_code=_STATUSES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        events=tuple(SpanEvent(e.name, _attrs(e.attributes)) for e in span.events),
                        resource=resource,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return spans


class OtlpReceiver:
    """An aiohttp OTLP/HTTP receiver on ``127.0.0.1`` in its own thread and loop.

    ``start()`` returns the endpoint (``http://127.0.0.1:PORT``) to put in
    ``OTEL_EXPORTER_OTLP_ENDPOINT``; the exporter appends ``/v1/traces`` itself (with
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` give ``traces_endpoint`` instead).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._spans: list[ReceivedSpan] = []
        self._cond = threading.Condition()
        self.requests = 0
        self.content_encodings: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def traces_endpoint(self) -> str:
        return f"{self.endpoint}/v1/traces"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/traces", self._handle_traces)
        return app

    async def _handle_traces(self, request: web.Request) -> web.Response:
        body = await request.read()  # already inflated when Content-Encoding is gzip
        try:
            spans = decode(body)
        except Exception as exc:  # protobuf raises DecodeError; answer like a collector
            return web.Response(status=400, text=f"bad ExportTraceServiceRequest: {exc}")
        with self._cond:
            self.requests += 1
            self.content_encodings.append(request.headers.get("Content-Encoding", "identity"))
            self._spans.extend(spans)
            self._cond.notify_all()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def start(self, timeout: float = 10.0) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

        async def serve() -> int:
            runner = web.AppRunner(self.make_app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._port)
            await site.start()
            self._runner = runner
            return int(runner.addresses[0][1])

        self._port = asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout)
        return self.endpoint

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._runner is not None:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spans(self, predicate: Callable[[ReceivedSpan], bool] | None = None) -> list[ReceivedSpan]:
        """A snapshot of the spans received so far (optionally filtered), in arrival order."""
        with self._cond:
            spans = list(self._spans)
        return [s for s in spans if predicate is None or predicate(s)]

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Spans grouped by trace id."""
        grouped: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans():
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait until ``predicate(all spans so far)`` is true; return those spans.

        Raises ``TimeoutError`` listing what did arrive.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                spans = list(self._spans)
                if predicate(spans):
                    return spans
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({f"{s.service_name}:{s.name}" for s in spans})
                    raise TimeoutError(
                        f"spans did not match within {timeout}s; got {len(spans)}: {names}"
                    )
                self._cond.wait(remaining)

    def wait_for_spans(
        self, predicate: Callable[[ReceivedSpan], bool], count: int = 1, timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans match ``predicate``; return the matching ones."""
        self.wait_for(lambda spans: sum(1 for s in spans if predicate(s)) >= count, timeout)
        return self.spans(predicate)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
