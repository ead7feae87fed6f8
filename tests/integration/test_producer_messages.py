"""How the producer builds a job's messages (no broker needed: pure construction)."""

from __future__ import annotations

import json

import pytest

from producer.publisher import MessageFactory
from warren.contracts import MessageProperties, PublishJob


@pytest.mark.parametrize("ms", [0, 1, 999, 1234567, 2**31 - 1])
def test_expiration_reaches_the_wire_as_the_exact_milliseconds(ms: int) -> None:
    factory = MessageFactory(PublishJob(properties=MessageProperties(expiration=ms)))
    assert factory.build(0).properties.expiration == str(ms)


def test_a_body_without_placeholders_is_encoded_once() -> None:
    factory = MessageFactory(PublishJob(batch=True, template=True, count=3, body={"a": "b"}))
    assert not factory.templated
    first, second = factory.build(0), factory.build(1)
    assert first.body is second.body
    assert (first.message_id, second.message_id) != (None, None)
    assert first.message_id != second.message_id


def test_template_fills_every_placeholder_and_stays_valid_json() -> None:
    job = PublishJob(
        batch=True,
        template=True,
        count=2,
        body={"seq": "{seq}", "id": "{uuid}", "at": "{now}", "text": 'ünï "{seq}"', "n": [1]},
    )
    factory = MessageFactory(job)
    assert factory.templated
    one, two = (json.loads(factory.build(i).body) for i in (7, 8))
    assert (one["seq"], two["seq"]) == ("7", "8")
    assert one["id"] != two["id"]
    assert one["text"] == 'ünï "7"'
    assert one["n"] == [1]
    assert "{now}" not in one["at"]


def test_a_single_message_is_never_a_template_and_keeps_its_id() -> None:
    job = PublishJob(body="{seq}", body_is_text=True, properties=MessageProperties(message_id="m"))
    message = MessageFactory(job).build(0)
    assert (message.body, message.message_id) == (b"{seq}", "m")
    assert message.content_type == "text/plain"
    assert "x-warren-seq" not in (message.headers or {})


def test_untraced_batch_messages_carry_the_same_properties_as_traced_ones() -> None:
    """The quiet path (straight to aiormq) must put on the wire what aio-pika would."""
    props = MessageProperties(
        content_type="application/vnd.x+json",
        content_encoding="utf-8",
        delivery_mode=2,
        priority=7,
        expiration=1500,
        correlation_id="c",
        reply_to="r",
        type="t",
        app_id="a",
        user_id="guest",
        timestamp=True,
        headers={"tenant": "acme", "n": 3},
    )
    factory = MessageFactory(PublishJob(batch=True, count=5, body={"k": 1}, properties=props))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    factory.quiet({"traceparent": traceparent})
    via_aio_pika, quiet = factory.build(3).properties, factory.properties(3)
    for name in ("headers", "timestamp"):
        setattr(via_aio_pika, name, None)
    quiet_headers, quiet.headers, quiet.timestamp = dict(quiet.headers or {}), None, None
    assert quiet == via_aio_pika
    assert quiet_headers.pop("traceparent") == traceparent
    assert quiet_headers.pop("x-warren-published-us") > 0
    assert quiet_headers == {
        "tenant": "acme",
        "n": 3,
        "x-warren-job": factory.job.job_id,
        "x-warren-seq": 3,
    }
    assert factory.body(3) == factory.build(3).body
