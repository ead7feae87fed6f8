"""A Jepsen-style ledger: every message the API accepted is accounted for at the end.

The ledger publishes messages with known ids through Warren's API (single messages with an
``Idempotency-Key`` and an explicit ``message_id``, retried through faults; batches, whose ids are
``<job_id>-<seq>``), and watches what the consumers did from the outside: a quorum queue of its
own, bound to ``<namespace>.events`` for ``records.#``, collects every processed-record batch
(quorum: the records survive a broker crash), and the work queue's ``.dlq`` holds what was
dead-lettered. :meth:`Ledger.drain` waits (bounded) until every confirmed id is processed or
dead-lettered, then :meth:`Ledger.result` counts published, confirmed, processed, dead-lettered,
duplicated and lost. Run the consumers with a high ``WARREN_CONSUMER__RECORDS_PER_SECOND`` so
no record is sampled out.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import pika
import pika.exceptions

from .stack import Stack

RETRY_CODES = {502, 503, 504}


@dataclass
class LedgerResult:
    """One fault's accounting (what the README table shows)."""

    fault: str
    published: int = 0  # messages the API accepted (200 singles, 202 batch counts)
    confirmed: int = 0  # of those, confirmed by the broker (as the API or job result said)
    processed: int = 0  # distinct ids acked by a consumer
    dead_lettered: int = 0  # distinct ids found in the dead-letter queue
    duplicates_dropped: int = 0  # redeliveries the consumers' de-duplication dropped
    duplicated: int = 0  # ids processed (acked) more than once: twice in effect
    lost: int = 0  # confirmed but neither processed nor dead-lettered
    refused: int = 0  # API answers 502/503/504 that the client retried
    server_errors: int = 0  # API answers 500 (a bug, always)
    seconds: float = 0.0
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Batch:
    job_id: str
    count: int
    status: str = "queued"
    confirmed: int = 0


@dataclass
class _Stats:
    codes: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class Ledger:
    """Publishes through ``stack``'s API into ``queue`` and accounts for every message."""

    def __init__(
        self,
        stack: Stack,
        amqp_url: str,
        queue: str,
        *,
        fault: str,
        vhost_url: str | None = None,
    ) -> None:
        self.stack = stack
        self.amqp_url = vhost_url or amqp_url
        self.queue = queue
        self.dlq = f"{queue}.dlq"
        self.fault = fault
        self.started = time.monotonic()
        self.singles: dict[str, bool] = {}  # message id -> confirmed
        self.batches: dict[str, Batch] = {}
        self.stats = _Stats()
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.dead: dict[str, dict[str, Any]] = {}
        self._threads: list[threading.Thread] = []
        self.timings: dict[str, float] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self.observer = f"{stack.namespace}.ledger.{uuid.uuid4().hex[:6]}"
        self._declare_observer()

    # Broker side ----------------------------------------------------------------------------

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        params = pika.URLParameters(self.amqp_url)
        params.connection_attempts = 20
        params.retry_delay = 0.5
        params.socket_timeout = 5
        conn = pika.BlockingConnection(params)
        return conn, conn.channel()

    def _declare_observer(self) -> None:
        conn, ch = self._channel()
        try:
            # Quorum: every record is written to disk, so a broker crash loses none.
            ch.queue_declare(self.observer, durable=True, arguments={"x-queue-type": "quorum"})
            ch.queue_bind(self.observer, f"{self.stack.namespace}.events", "records.#")
        finally:
            conn.close()

    def collect(self) -> None:
        """Move every record and dead letter seen so far into the ledger (bounded)."""
        conn, ch = self._channel()
        try:
            for _ in range(100_000):
                method, _props, body = ch.basic_get(self.observer, auto_ack=True)
                if method is None:
                    break
                batch = json.loads(body)
                for r in batch["records"]:
                    # A batch whose confirm timed out (an alarm) is sent again: the same
                    # delivery reported twice is one event, not a second processing.
                    key = (r["message_id"], r["worker"], r["received_at"], r["outcome"])
                    if r["queue"] == self.queue and key not in self._seen:
                        self._seen.add(key)
                        self.records.append(r)
            try:
                ch.queue_declare(self.dlq, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return
            for _ in range(100_000):
                method, props, _body = ch.basic_get(self.dlq, auto_ack=True)
                if method is None:
                    break
                headers = props.headers or {}
                mid = props.message_id or f"<no id {len(self.dead)}>"
                self.dead[mid] = {
                    "reason": _text(headers.get("x-warren-death-reason"))
                    or _text(headers.get("x-first-death-reason")),
                    "error": _text(headers.get("x-warren-error")),
                    "size": len(_body),
                }
        finally:
            if conn.is_open:
                conn.close()

    # API side ---------------------------------------------------------------------------------

    def send_one(
        self,
        client: httpx.Client,
        *,
        body: Any = None,
        headers: dict[str, Any] | None = None,
        deadline: float = 60.0,
        message_id: str | None = None,
    ) -> str | None:
        """POST one message, retried with the same key and id until confirmed or the deadline."""
        mid = message_id or f"m-{uuid.uuid4().hex[:16]}"
        payload = {
            "queue": self.queue,
            "body": body if body is not None else {"id": mid},
            "properties": {"message_id": mid, "headers": headers or {}},
        }
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                resp = client.post("/api/messages", json=payload, headers={"Idempotency-Key": mid})
            except httpx.HTTPError as exc:
                self._note(0, f"{type(exc).__name__}: {exc}")
                time.sleep(0.2)
                continue
            self._note(resp.status_code, resp.text[:200])
            if resp.status_code == 200:
                with self._lock:
                    self.singles[mid] = True
                return mid
            if resp.status_code not in RETRY_CODES:
                break
            if resp.status_code == 503:
                assert "Retry-After" in resp.headers, "a 503 always says when to retry"
            time.sleep(0.2)
        return None

    def send_batch(
        self,
        count: int,
        *,
        concurrency: int = 50,
        headers: dict[str, Any] | None = None,
        deadline: float = 60.0,
    ) -> str | None:
        """POST a batch (retried with the same Idempotency-Key); return its job id."""
        key = f"b-{uuid.uuid4().hex[:12]}"
        payload = {
            "queue": self.queue,
            "count": count,
            "concurrency": concurrency,
            "body": {"seq": "{seq}"},
            "properties": {"headers": headers or {}},
        }
        end = time.monotonic() + deadline
        with httpx.Client(base_url=self.stack.base_url, timeout=30) as client:
            while time.monotonic() < end:
                try:
                    resp = client.post(
                        "/api/batches", json=payload, headers={"Idempotency-Key": key}
                    )
                except httpx.HTTPError as exc:
                    self._note(0, f"{type(exc).__name__}: {exc}")
                    time.sleep(0.2)
                    continue
                self._note(resp.status_code, resp.text[:200])
                if resp.status_code == 202:
                    job_id = str(resp.json()["job_id"])
                    with self._lock:
                        self.batches[job_id] = Batch(job_id, count)
                    return job_id
                if resp.status_code not in RETRY_CODES:
                    break
                time.sleep(0.2)
        return None

    def _note(self, code: int, text: str) -> None:
        with self._lock:
            self.stats.codes[code] += 1
            if code >= 500 and code not in RETRY_CODES:
                self.stats.errors.append(f"{code}: {text}")

    def start_load(
        self,
        *,
        singles: int = 0,
        batches: Iterable[int] = (),
        workers: int = 4,
        pace: float = 0.0,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish in the background: batches first, then ``singles`` messages on ``workers``
        threads (``pace`` seconds between one thread's messages)."""

        def run() -> None:
            for count in batches:
                self.send_batch(count, headers=headers)

            def one(_: int) -> None:
                with httpx.Client(base_url=self.stack.base_url, timeout=30) as client:
                    self.send_one(client, headers=headers)
                if pace:
                    time.sleep(pace)

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(one, range(singles)))

        thread = threading.Thread(target=run, name="ledger-load", daemon=True)
        thread.start()
        self._threads.append(thread)

    def confirmed_so_far(self) -> int:
        with self._lock:
            return len(self.singles) + sum(b.count for b in self.batches.values())

    def wait_load(self, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
            assert not thread.is_alive(), "the load did not finish in time"

    def _poll_batches(self) -> bool:
        """Refresh job results; True when every batch is finished."""
        finished = True
        for batch in self.batches.values():
            if batch.status in ("done", "failed", "cancelled"):
                continue
            try:
                resp = self.stack.http.get(f"/api/batches/{batch.job_id}", timeout=5)
            except httpx.HTTPError:
                finished = False
                continue
            if resp.status_code == 200:
                body = resp.json()
                batch.status, batch.confirmed = body["status"], int(body["confirmed"])
            finished = finished and batch.status in ("done", "failed", "cancelled")
        return finished

    # Accounting -------------------------------------------------------------------------------

    def expected_ids(self) -> set[str]:
        ids = {m for m, ok in self.singles.items() if ok}
        for b in self.batches.values():
            if b.status == "done" or b.status not in ("failed", "cancelled"):
                ids.update(f"{b.job_id}-{seq}" for seq in range(b.count))
        return ids

    def acked_ids(self) -> Counter[str]:
        return Counter(
            r["message_id"] for r in self.records if r["outcome"] == "acked" and r["message_id"]
        )

    def missing(self) -> set[str]:
        return self.expected_ids() - set(self.acked_ids()) - set(self.dead)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until the load is done, every job finished and every expected id is accounted
        for (or the timeout); then collect what arrives for a moment longer (late duplicates)."""
        end = time.monotonic() + timeout
        began = time.monotonic()
        self.wait_load(timeout)
        self.timings["load"] = round(time.monotonic() - began, 1)
        while time.monotonic() < end:
            jobs_done = self._poll_batches()
            self.collect()
            if jobs_done and not self.missing():
                break
            time.sleep(0.5)
        self.timings["accounted"] = round(time.monotonic() - began, 1)
        # Late duplicates (a redelivery after the last record) show up within a record flush.
        quiet_until = time.monotonic() + 1.5
        while time.monotonic() < min(quiet_until, end + 5):
            time.sleep(0.3)
            self.collect()

    def result(self, notes: str = "") -> LedgerResult:
        acked = self.acked_ids()
        expected = self.expected_ids()
        published = len(self.singles) + sum(b.count for b in self.batches.values())
        confirmed = len(self.singles) + sum(
            b.confirmed if b.status in ("done", "failed", "cancelled") else b.count
            for b in self.batches.values()
        )
        codes = self.stats.codes
        return LedgerResult(
            fault=self.fault,
            published=published,
            confirmed=confirmed,
            processed=len(acked),
            dead_lettered=len(self.dead),
            duplicates_dropped=sum(1 for r in self.records if r["outcome"] == "duplicate"),
            duplicated=sum(1 for n in acked.values() if n > 1),
            lost=len(expected - set(acked) - set(self.dead)),
            refused=sum(codes[c] for c in RETRY_CODES) + codes[0],
            server_errors=sum(n for c, n in codes.items() if c >= 500 and c not in RETRY_CODES),
            seconds=round(time.monotonic() - self.started, 1),
            notes=notes,
        )

    def check(self, result: LedgerResult, *, allow_duplicates: bool = False) -> None:
        """The ledger's promise: nothing lost, nothing twice in effect, never a 500."""
        failed = [b for b in self.batches.values() if b.status != "done"]
        assert not failed, f"jobs not done: {failed}"
        assert result.server_errors == 0, self.stats.errors[:5]
        assert result.lost == 0, f"{result.lost} lost, e.g. {sorted(self.missing())[:5]}"
        assert result.confirmed == result.published, result
        assert result.processed + result.dead_lettered >= result.confirmed, result
        if not allow_duplicates:
            assert result.duplicated == 0, result


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)
