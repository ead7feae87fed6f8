"""Processed-message records, batched and rate-limited, and the replica's exact counters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from warren.contracts import ProcessedRecord, RecordBatch

log = logging.getLogger(__name__)


class RecordSampler:
    """A token bucket: up to ``per_second`` records pass each second, the rest are counted."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._tokens = float(per_second)
        self._last = time.monotonic()
        self.sampled_out = 0

    def allow(self) -> bool:
        if self.per_second <= 0:
            self.sampled_out += 1
            return False
        now = time.monotonic()
        self._tokens = min(
            float(self.per_second), self._tokens + (now - self._last) * self.per_second
        )
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.sampled_out += 1
        return False


class RecordBatcher:
    """Collects records and sends them in batches (by size or every ``flush_interval``)."""

    def __init__(
        self,
        send: Callable[[RecordBatch], Awaitable[None]],
        *,
        worker: str,
        batch_size: int,
        flush_interval: float,
        sampler: RecordSampler,
    ) -> None:
        self._send = send
        self._worker = worker
        self._batch_size = batch_size
        self._interval = flush_interval
        self._sampler = sampler
        self._buffer: list[ProcessedRecord] = []
        self._reported_sampled = 0
        self._full = asyncio.Event()
        self.sent = 0

    def add(self, record: ProcessedRecord) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self._batch_size:
            self._full.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._full.wait(), self._interval)
            except TimeoutError:
                pass
            await self.flush()

    async def flush(self) -> None:
        self._full.clear()
        sampled = self._sampler.sampled_out - self._reported_sampled
        if not self._buffer and not sampled:
            return
        records, self._buffer = self._buffer, []
        batch = RecordBatch(worker=self._worker, records=records, sampled_out=sampled)
        try:
            await self._send(batch)
        except Exception as exc:
            # Records are monitoring data: keep the newest ones for the next try, bounded.
            log.warning("Sending %d records failed: %s", len(records), exc)
            self._buffer = (records + self._buffer)[-self._batch_size * 4 :]
            return
        self._reported_sampled += sampled
        self.sent += len(records)
