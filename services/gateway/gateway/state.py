"""What the gateway knows, all of it rebuildable from the broker: replicas (from heartbeats),
jobs (from progress events), recent processed records, and the live event hub."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from warren.contracts import Heartbeat, JobProgress, ProcessedRecord

log = logging.getLogger(__name__)


@dataclass
class Replica:
    beat: Heartbeat
    seen: float = field(default_factory=time.monotonic)

    def state(self, lost_after: float) -> str:
        if self.beat.stopping:
            return "stopped"
        age = time.monotonic() - self.seen
        return "lost" if age > self.beat.interval_s * lost_after else "alive"

    def to_json(self, lost_after: float) -> dict[str, Any]:
        return {
            "role": self.beat.role,
            "replica": self.beat.replica,
            "host": self.beat.host,
            "pid": self.beat.pid,
            "state": self.state(lost_after),
            "last_seen_s": round(time.monotonic() - self.seen, 2),
            "heartbeat": self.beat.model_dump(mode="json"),
        }


@dataclass
class Desired:
    """A queue every consumer replica should consume."""

    queue: str
    prefetch: int
    delivery_limit: int | None = None


class EventHub:
    """Fans events out to live subscribers (WebSocket clients), each with a bounded buffer."""

    def __init__(self, *, buffer: int = 5000) -> None:
        self._buffer = buffer
        self._subscribers: weakref.WeakSet[Subscriber] = weakref.WeakSet()

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self._buffer)
        self._subscribers.add(sub)
        return sub

    def publish(self, kind: str, data: Any) -> None:
        if not self._subscribers:
            return
        event = {"type": kind, "data": data}
        for sub in list(self._subscribers):
            sub.put(event)

    def __len__(self) -> int:
        return len(self._subscribers)


class Subscriber:
    """One client's pending events; when it falls behind the oldest are dropped."""

    def __init__(self, size: int) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=size)
        self.ready = asyncio.Event()
        self.paused = False
        self.dropped = 0

    def put(self, event: dict[str, Any]) -> None:
        if self.paused and event["type"] == "record":
            return
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append(event)
        self.ready.set()

    def drain(self) -> list[dict[str, Any]]:
        out = list(self.events)
        self.events.clear()
        self.ready.clear()
        return out


@dataclass
class JobEntry:
    progress: JobProgress
    done: asyncio.Event = field(default_factory=asyncio.Event)


class State:
    def __init__(self, *, history: int, jobs_kept: int, lost_after: float, jaeger_url: str) -> None:
        self.records: deque[dict[str, Any]] = deque(maxlen=history)
        self.replicas: dict[str, Replica] = {}
        self.jobs: OrderedDict[str, JobEntry] = OrderedDict()
        self.jobs_kept = jobs_kept
        self.lost_after = lost_after
        self.jaeger_url = jaeger_url.rstrip("/")
        self.desired: dict[str, Desired] = {}
        self.stopped_at: dict[str, float] = {}
        self.hub = EventHub()
        self.idempotency: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.sampled_out = 0

    # Records ----------------------------------------------------------------------------------

    def trace_url(self, trace_id: str | None) -> str | None:
        return f"{self.jaeger_url}/trace/{trace_id}" if trace_id else None

    def add_records(self, records: list[ProcessedRecord], sampled_out: int) -> None:
        self.sampled_out += sampled_out
        for record in records:
            data = record.model_dump(mode="json")
            data["trace_url"] = self.trace_url(record.trace_id)
            self.records.appendleft(data)
            self.hub.publish("record", data)

    def query_records(
        self, *, limit: int, queue: str | None, worker: str | None, text: str | None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        needle = text.lower() if text else None
        for rec in self.records:
            if queue and rec["queue"] != queue:
                continue
            if worker and rec["worker"] != worker:
                continue
            if needle and needle not in (rec["body"] + " " + (rec["message_id"] or "")).lower():
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out

    # Replicas ---------------------------------------------------------------------------------

    def on_heartbeat(self, beat: Heartbeat) -> Replica:
        replica = self.replicas.get(beat.replica)
        if replica is None:
            log.info("New %s replica %s", beat.role, beat.replica)
            replica = self.replicas[beat.replica] = Replica(beat)
        else:
            replica.beat, replica.seen = beat, time.monotonic()
        if beat.role == "consumer" and not beat.stopping:
            # Relearn what is consumed after a gateway restart (unless just stopped here).
            for q in beat.queues:
                # Stopped by this gateway: a replica still consuming it missed the stop.
                stopped_here = q.queue in self.stopped_at
                if (
                    q.scope == "all"
                    and q.state != "stopping"
                    and q.queue not in self.desired
                    and not stopped_here
                ):
                    self.desired[q.queue] = Desired(q.queue, q.prefetch, q.delivery_limit)
        self.hub.publish("heartbeat", replica.to_json(self.lost_after))
        return replica

    def replica_list(self, role: str | None = None) -> list[dict[str, Any]]:
        return [
            r.to_json(self.lost_after)
            for r in sorted(self.replicas.values(), key=lambda r: (r.beat.role, r.beat.replica))
            if role is None or r.beat.role == role
        ]

    def alive_consumers(self) -> list[Replica]:
        return [
            r
            for r in self.replicas.values()
            if r.beat.role == "consumer" and r.state(self.lost_after) == "alive"
        ]

    def forget_stale(self, older_than: float = 300.0) -> None:
        now = time.monotonic()
        for name in [n for n, r in self.replicas.items() if now - r.seen > older_than]:
            del self.replicas[name]

    # Jobs -------------------------------------------------------------------------------------

    def add_job(self, progress: JobProgress) -> JobEntry:
        entry = self.jobs[progress.job_id] = JobEntry(progress)
        while len(self.jobs) > self.jobs_kept:
            oldest = next(iter(self.jobs))
            if not self.jobs[oldest].done.is_set() and len(self.jobs) < self.jobs_kept * 2:
                break
            self.jobs.popitem(last=False)
        return entry

    def on_progress(self, progress: JobProgress) -> None:
        entry = self.jobs.get(progress.job_id)
        if entry is None:
            entry = self.add_job(progress)
        elif entry.done.is_set() and not progress.final:
            return  # a late progress report must not reopen a finished job
        entry.progress = progress
        if progress.final:
            entry.done.set()
        self.hub.publish("job", job_json(progress, self))

    def remember_key(self, key: str, fingerprint: str, job_id: str) -> tuple[str, str] | None:
        """Returns the earlier (fingerprint, job id) for an Idempotency-Key, else records it."""
        earlier = self.idempotency.get(key)
        if earlier is not None:
            return earlier
        self.idempotency[key] = (fingerprint, job_id)
        while len(self.idempotency) > 10_000:
            self.idempotency.popitem(last=False)
        return None


def fingerprint(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def job_json(progress: JobProgress, state: State) -> dict[str, Any]:
    data = progress.model_dump(mode="json", exclude={"v", "kind"})
    data["trace_url"] = state.trace_url(progress.trace_id)
    return data
