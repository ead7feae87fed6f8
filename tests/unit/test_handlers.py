"""The pure handler: decoding and the demonstration knobs, with no broker."""

from __future__ import annotations

import random
from typing import Any

import pytest

from consumer import handlers
from consumer.handlers import Behaviour, DecodeError, Delivery, ProcessingError


def delivery(body: bytes, content_type: str | None = None, **headers: Any) -> Delivery:
    return Delivery(body=body, content_type=content_type, content_encoding=None, headers=headers)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"a": [1, 2]}', "application/json", {"a": [1, 2]}),
        (b'{"a": 1}', "application/vnd.api+json; charset=utf-8", {"a": 1}),
        (b"plain text", "text/plain", "plain text"),
        (b'{"a": 1}', None, '{"a": 1}'),
        ("héllo".encode(), None, "héllo"),
    ],
)
def test_decode_gives_json_for_json_types_and_text_otherwise(
    body: bytes, content_type: str | None, expected: object
) -> None:
    assert handlers.decode(delivery(body, content_type), max_body_bytes=1000) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "why"),
    [
        (b'{"a": ', "application/json", "invalid JSON"),
        (b"\xff\xfe", "application/octet-stream", "not utf-8"),
        (b"x" * 11, "text/plain", "exceeds 10"),
    ],
)
def test_undecodable_bodies_raise_decode_error(body: bytes, content_type: str, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        handlers.decode(delivery(body, content_type), max_body_bytes=10)


def test_an_unknown_content_encoding_is_undecodable() -> None:
    d = Delivery(body=b"x", content_type=None, content_encoding="klingon", headers={})
    with pytest.raises(DecodeError):
        handlers.decode(d, max_body_bytes=10)


@pytest.mark.parametrize("value", [True, "true", "1", b"yes", "ON"])
async def test_the_fail_header_fails_the_message(value: object) -> None:
    with pytest.raises(ProcessingError, match="x-warren-fail"):
        await handlers.process({}, delivery(b"{}", **{"x-warren-fail": value}), Behaviour())


@pytest.mark.parametrize("value", [False, "false", "0", "no"])
async def test_a_false_fail_header_does_not(value: object) -> None:
    await handlers.process({}, delivery(b"{}", **{"x-warren-fail": value}), Behaviour())


def test_work_ms_from_the_header_wins_and_is_bounded() -> None:
    b = Behaviour(work_ms=5)
    assert handlers.work_ms(delivery(b""), b) == 5
    assert handlers.work_ms(delivery(b"", **{"x-warren-work-ms": 200}), b) == 200
    assert handlers.work_ms(delivery(b"", **{"x-warren-work-ms": b"30"}), b) == 30
    assert handlers.work_ms(delivery(b"", **{"x-warren-work-ms": -4}), b) == 0
    assert handlers.work_ms(delivery(b"", **{"x-warren-work-ms": 10**9}), b) == 600_000
    assert handlers.work_ms(delivery(b"", **{"x-warren-work-ms": "soon"}), b) == 5


async def test_the_fail_rate_fails_about_that_share() -> None:
    rng = random.Random(7)
    b = Behaviour(fail_rate=0.3)
    failed = 0
    for _ in range(1000):
        try:
            await handlers.process("x", delivery(b"x"), b, rng=rng)
        except ProcessingError:
            failed += 1
    assert 240 < failed < 360
