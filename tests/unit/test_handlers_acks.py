"""Coalesced acknowledgements: a broker model checks that no ack covers unfinished work."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any

import pytest

from consumer.acks import AckWindow


class Broker:
    """What RabbitMQ does with acks on one channel: unknown or repeated tags are an error."""

    def __init__(self) -> None:
        self.unacked: set[int] = set()
        self.finished: set[int] = set()
        self.frames = 0

    def ack(self, tag: int, multiple: bool) -> None:
        self.frames += 1
        covered = {t for t in self.unacked if t <= tag} if multiple else {tag}
        assert covered <= self.unacked, f"PRECONDITION_FAILED unknown delivery tag {tag}"
        assert covered <= self.finished, f"acked unfinished work: {sorted(covered - self.finished)}"
        self.unacked -= covered


class Message:
    def __init__(self, broker: Broker, tag: int) -> None:
        self.broker, self.delivery_tag = broker, tag

    async def ack(self, multiple: bool = False) -> None:
        await asyncio.sleep(0)  # the drain of a real socket write
        self.broker.ack(self.delivery_tag, multiple)


async def settle(op: Awaitable[Any]) -> bool:
    await op
    return True


async def test_a_run_of_finished_deliveries_is_acked_with_one_frame() -> None:
    broker = Broker()
    window = AckWindow(settle)
    messages = [Message(broker, t) for t in range(1, 51)]
    for m in messages:
        broker.unacked.add(m.delivery_tag)
        window.received(m)  # type: ignore[arg-type]
    for m in messages:
        broker.finished.add(m.delivery_tag)
        window.ack_soon(m)  # type: ignore[arg-type]
    await window.flush()
    assert broker.unacked == set()
    assert broker.frames == 1
    assert len(window) == 0


async def test_a_slow_head_does_not_hold_back_the_others() -> None:
    broker = Broker()
    window = AckWindow(settle)
    head, *rest = [Message(broker, t) for t in range(1, 6)]
    for m in (head, *rest):
        broker.unacked.add(m.delivery_tag)
        window.received(m)  # type: ignore[arg-type]
    for m in rest:
        broker.finished.add(m.delivery_tag)
        window.ack_soon(m)  # type: ignore[arg-type]
    await window.flush()
    assert broker.unacked == {1}, "the others are acked at once, one by one"
    broker.finished.add(1)
    window.ack_soon(head)  # type: ignore[arg-type]
    await window.flush()
    assert broker.unacked == set()
    assert len(window) == 0


@pytest.mark.parametrize("seed", range(30))
async def test_random_completion_orders_never_ack_unfinished_work(seed: int) -> None:
    rng = random.Random(seed)
    broker = Broker()
    window = AckWindow(settle)
    messages = [Message(broker, t) for t in range(1, 41)]
    for m in messages:
        broker.unacked.add(m.delivery_tag)
        window.received(m)  # type: ignore[arg-type]

    async def finish(m: Message) -> None:
        await asyncio.sleep(rng.random() / 200)
        broker.finished.add(m.delivery_tag)
        if rng.random() < 0.2:  # settled on its own (a retry acks after republishing)
            await m.ack()
            window.settled(m)  # type: ignore[arg-type]
        else:
            window.ack_soon(m)  # type: ignore[arg-type]

    await asyncio.gather(*(finish(m) for m in messages))
    await window.flush()
    assert broker.unacked == set()
    assert len(window) == 0
    assert broker.frames <= 40
