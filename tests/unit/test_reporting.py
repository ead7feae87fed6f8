"""Record sampling and batching, with no broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from consumer.reporting import RecordBatcher, RecordSampler
from warren.contracts import ProcessedRecord, RecordBatch


def record(n: int) -> ProcessedRecord:
    now = datetime.now(UTC)
    return ProcessedRecord(
        message_id=str(n), queue="q", worker="w", outcome="acked", received_at=now, processed_at=now
    )


def test_the_sampler_lets_the_rate_through_and_counts_the_rest() -> None:
    sampler = RecordSampler(50)
    allowed = sum(sampler.allow() for _ in range(1000))  # a burst: the bucket holds 50
    assert 50 <= allowed <= 55
    assert allowed + sampler.sampled_out == 1000


def test_a_zero_rate_samples_everything_out() -> None:
    sampler = RecordSampler(0)
    assert not any(sampler.allow() for _ in range(10))
    assert sampler.sampled_out == 10


async def test_the_batcher_sends_full_batches_and_reports_sampled_out() -> None:
    sent: list[RecordBatch] = []

    async def send(batch: RecordBatch) -> None:
        sent.append(batch)

    sampler = RecordSampler(1000)
    batcher = RecordBatcher(send, worker="w", batch_size=10, flush_interval=5, sampler=sampler)
    task = asyncio.create_task(batcher.run())
    for n in range(25):
        batcher.add(record(n))
        await asyncio.sleep(0)
    sampler.sampled_out = 7
    await batcher.flush()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [r.message_id for b in sent for r in b.records] == [str(n) for n in range(25)]
    assert len(sent) <= 4
    assert sum(b.sampled_out for b in sent) == 7
    assert batcher.sent == 25


async def test_records_are_kept_for_the_next_try_when_sending_fails() -> None:
    attempts: list[int] = []

    async def send(batch: RecordBatch) -> None:
        attempts.append(len(batch.records))
        if len(attempts) == 1:
            raise ConnectionError("broker gone")

    sampler = RecordSampler(1000)
    batcher = RecordBatcher(send, worker="w", batch_size=10, flush_interval=5, sampler=sampler)
    for n in range(3):
        batcher.add(record(n))
    await batcher.flush()
    await batcher.flush()
    assert attempts == [3, 3]
    assert batcher.sent == 3


@pytest.mark.parametrize("size", [1, 500])
async def test_flush_with_nothing_to_say_sends_nothing(size: int) -> None:
    sent: list[RecordBatch] = []

    async def send(batch: RecordBatch) -> None:
        sent.append(batch)

    batcher = RecordBatcher(
        send, worker="w", batch_size=size, flush_interval=5, sampler=RecordSampler(10)
    )
    await batcher.flush()
    assert sent == []
