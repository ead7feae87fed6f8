"""Processing: pure functions of a delivery, with no AMQP in them.

The worker decodes, calls :func:`process`, and acks or dead-letters depending on what it
returns or raises. For demonstrations a message can ask to misbehave: header ``x-warren-fail:
true`` makes it fail, ``x-warren-work-ms: N`` makes it take N ms; the replica-wide
``work_ms``/``fail_rate`` settings do the same for every message.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

FAIL_HEADER = "x-warren-fail"
WORK_HEADER = "x-warren-work-ms"


class DecodeError(Exception):
    """The body cannot be decoded: retrying will not help, it goes straight to the DLQ."""


class ProcessingError(Exception):
    """Processing failed; the message may succeed on a later delivery."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a handler sees of a message."""

    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Replica-wide simulated behaviour (from settings)."""

    work_ms: float = 0.0
    fail_rate: float = 0.0
    max_body_bytes: int = 8 << 20


def decode(delivery: Delivery, *, max_body_bytes: int) -> JsonValue:
    """JSON for ``application/json`` (or ``+json``), text for the rest; raise DecodeError."""
    if len(delivery.body) > max_body_bytes:
        raise DecodeError(f"body of {len(delivery.body)} bytes exceeds {max_body_bytes}")
    encoding = delivery.content_encoding or "utf-8"
    try:
        text = delivery.body.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise DecodeError(f"body is not {encoding} text: {exc}") from exc
    ctype = (delivery.content_type or "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            value: JsonValue = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON: {exc}") from exc
        return value
    return text


def _truthy(value: Any) -> bool:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def work_ms(delivery: Delivery, behaviour: Behaviour) -> float:
    raw = delivery.headers.get(WORK_HEADER)
    if raw is None:
        return behaviour.work_ms
    try:
        return max(0.0, min(float(raw.decode() if isinstance(raw, bytes) else raw), 600_000.0))
    except (TypeError, ValueError):
        return behaviour.work_ms


async def process(
    payload: JsonValue,
    delivery: Delivery,
    behaviour: Behaviour,
    *,
    rng: random.Random = random._inst,  # noqa: SLF001 - the module's shared generator
) -> None:
    """Handle one decoded message; raise :class:`ProcessingError` to fail it."""
    delay = work_ms(delivery, behaviour)
    if delay:
        await asyncio.sleep(delay / 1000)
    if _truthy(delivery.headers.get(FAIL_HEADER, False)):
        raise ProcessingError("failure requested by the x-warren-fail header")
    if behaviour.fail_rate and rng.random() < behaviour.fail_rate:
        raise ProcessingError(f"simulated failure (fail rate {behaviour.fail_rate:g})")
