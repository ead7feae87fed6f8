"""Consume spans with Warren's re-wrapped aio-pika instrumentation, on the real broker.

A message the sampler would drop gets no span (not even a non-recording one) but keeps its
trace context; every other message gets the instrumentation's own span. Run in a subprocess:
the tracer provider and the instrumentation are global to a process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

from tests.support.stack import LOCAL_AMQP

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys

    import aio_pika
    from aiormq import spec
    from opentelemetry import trace
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from warren import telemetry

    url, queue = sys.argv[1:3]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # the default sampler: parentbased_always_on
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    AioPikaInstrumentor().instrument()
    replaced = telemetry._skip_dropped_consume_spans()
    HEADERS = {
        "sampled": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        "quiet": {"traceparent": "00-" + "3" * 32 + "-" + "4" * 16 + "-00"},
        "bare": None,
    }

    async def main():
        seen = {}
        connection = await aio_pika.connect_robust(url)
        async with connection:
            channel = await connection.channel()
            q = await channel.declare_queue(queue, auto_delete=True)
            raw = await channel.get_underlay_channel()  # below the publish instrumentation
            for name, headers in HEADERS.items():
                props = spec.Basic.Properties(message_id=name, headers=headers)
                await raw.basic_publish(name.encode(), routing_key=queue, properties=props)
            done = asyncio.Event()

            async def on_message(message):
                span = trace.get_current_span()
                ctx = span.get_span_context()
                seen[message.message_id] = {
                    "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else None,
                    "span_id": format(ctx.span_id, "016x") if ctx.is_valid else None,
                    "recording": span.is_recording(),
                }
                await message.ack()
                if len(seen) == len(HEADERS):
                    done.set()

            await q.consume(on_message)
            await asyncio.wait_for(done.wait(), 10)
        return seen

    seen = asyncio.run(main())
    spans = [
        {
            "kind": span.kind.name,
            "trace_id": format(span.context.trace_id, "032x"),
            "parent": format(span.parent.span_id, "016x") if span.parent else None,
            "message_id": span.attributes.get("messaging.message.id"),
        }
        for span in exporter.get_finished_spans()
    ]
    AioPikaInstrumentor().uninstrument()
    after = type(aio_pika.Queue.__dict__["consume"]).__name__
    print(json.dumps({"replaced": replaced, "seen": seen, "spans": spans, "after": after}))
    """
)


def test_only_messages_the_sampler_keeps_get_a_consume_span() -> None:
    queue = f"consume-spans-{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, LOCAL_AMQP, queue],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replaced"] is True
    seen, spans = result["seen"], result["spans"]

    # Sampled parent: the instrumentation's CONSUMER span, a child of the publisher's span.
    assert seen["sampled"]["trace_id"] == "1" * 32
    assert seen["sampled"]["recording"] is True
    # Not sampled: no span at all (the current span is the publisher's, from the headers, not
    # a non-recording child made for the message), yet the handler runs inside its trace.
    assert seen["quiet"] == {"trace_id": "3" * 32, "span_id": "4" * 16, "recording": False}
    # No trace context: a new root, recorded, as the default sampler keeps roots.
    assert seen["bare"]["recording"] is True
    consumer_spans = {s["message_id"]: s for s in spans if s["kind"] == "CONSUMER"}
    assert set(consumer_spans) == {"sampled", "bare"}
    assert consumer_spans["sampled"]["trace_id"] == "1" * 32
    assert consumer_spans["sampled"]["parent"] == "2" * 16
    assert consumer_spans["bare"]["parent"] is None
    assert all(s["trace_id"] != "3" * 32 for s in spans)
    # uninstrument() still takes the wrapper away.
    assert result["after"] == "function"
