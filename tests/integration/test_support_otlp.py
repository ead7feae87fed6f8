"""The OTLP receiver against the real OTLP/HTTP exporter."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.support.otlp import OtlpReceiver


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_receives_spans_from_the_real_exporter(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{compression}"}))
    exporter = OTLPSpanExporter(endpoint=otlp_receiver.traces_endpoint, timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
    tracer = provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("GET /api", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.status_code", 200)
            with tracer.start_as_current_span("orders publish", kind=SpanKind.PRODUCER) as pub:
                pub.add_event("confirmed", {"delivery_tag": 7})
                pub.set_attribute("tags", ["a", "b"])
            with tracer.start_as_current_span("boom") as failed:
                failed.set_status(Status(StatusCode.ERROR, "broken"))
        spans = otlp_receiver.wait_for(lambda got: len(got) >= 3, timeout=10)
    finally:
        provider.shutdown()

    by_name = {s.name: s for s in spans}
    root_span, pub_span = by_name["GET /api"], by_name["orders publish"]
    failed_span = by_name["boom"]
    assert root_span.parent_span_id is None
    assert root_span.kind == "SERVER"
    assert root_span.attributes == {"http.status_code": 200}
    assert root_span.service_name == f"svc-{compression}"
    assert len(root_span.trace_id) == 32
    assert len(root_span.span_id) == 16
    assert pub_span.trace_id == root_span.trace_id
    assert pub_span.parent_span_id == root_span.span_id
    assert pub_span.kind == "PRODUCER"
    assert pub_span.attributes["tags"] == ["a", "b"]
    assert [(e.name, e.attributes) for e in pub_span.events] == [("confirmed", {"delivery_tag": 7})]
    assert failed_span.kind == "INTERNAL"
    assert (failed_span.status_code, failed_span.status_message) == ("ERROR", "broken")
    assert root_span.status_code == "UNSET"
    assert root_span.duration_s >= 0
    expected = "gzip" if compression == "gzip" else "identity"
    assert set(otlp_receiver.content_encodings) == {expected}
    assert list(otlp_receiver.traces()) == [root_span.trace_id]

    otlp_receiver.clear()
    assert otlp_receiver.spans() == []


def test_wait_for_times_out_with_what_arrived(otlp_receiver: OtlpReceiver) -> None:
    with pytest.raises(TimeoutError, match="got 0"):
        otlp_receiver.wait_for(lambda spans: bool(spans), timeout=0.2)


def test_rejects_garbage() -> None:
    import urllib.error
    import urllib.request

    with OtlpReceiver() as receiver:
        req = urllib.request.Request(
            receiver.traces_endpoint,
            data=b"\xff\xff not protobuf",
            headers={"Content-Type": "application/x-protobuf"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 400
