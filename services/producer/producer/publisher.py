"""Runs publish jobs: confirms, ``mandatory``, a bounded in-flight window, retries through faults.

A job never reports a message as confirmed unless the broker confirmed it: a ``Basic.Return``
(unroutable) counts as *returned*, a ``Basic.Nack`` as *nacked*, a timeout as *failed*. When the
connection drops mid-job, publishes raise at once (aio-pika does not wait for the reconnect),
so each worker waits for the robust connection to come back and publishes again with the same
message id; the result counts these as *retried* (possible duplicates downstream).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq import spec
from aiormq.abc import ConfirmationFrameType, DeliveredMessage
from opentelemetry import propagate, trace

from warren import telemetry
from warren.amqp import CONNECTION_ERRORS
from warren.contracts import PUBLISHED_US_HEADER, JobProgress, JobStatus, PublishJob

log = logging.getLogger(__name__)

# Sends one message once; called again to resend it after a fault.
Send = Callable[[], Awaitable[ConfirmationFrameType | DeliveredMessage | None]]


class JobFailed(Exception):
    """The job cannot go on; ``kind`` says why in one word."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class JobState:
    """Counters of a running job; read by the progress reporter."""

    job: PublishJob
    producer: str
    started: float = field(default_factory=time.monotonic)
    published: int = 0
    confirmed: int = 0
    returned: int = 0
    nacked: int = 0
    failed: int = 0
    retried: int = 0
    status: JobStatus = "running"
    error: str | None = None
    error_kind: str | None = None
    message_id: str | None = None
    trace_id: str | None = None
    cancelled: bool = False
    redelivered: bool = False
    interrupted: bool = False  # stopped because this replica shuts down, not by the user
    last_answer: float = field(default_factory=time.monotonic)  # the broker's latest answer

    def progress(self, *, final: bool = False) -> JobProgress:
        elapsed = time.monotonic() - self.started
        return JobProgress(
            job_id=self.job.job_id,
            status=self.status,
            final=final,
            batch=self.job.batch,
            producer=self.producer,
            count=self.job.count,
            published=self.published,
            confirmed=self.confirmed,
            returned=self.returned,
            nacked=self.nacked,
            failed=self.failed,
            retried=self.retried,
            redelivered=self.redelivered,
            elapsed_s=round(elapsed, 4),
            rate=round(self.confirmed / elapsed, 1) if elapsed > 0 else 0.0,
            error=self.error,
            error_kind=self.error_kind,
            message_id=self.message_id,
            trace_id=self.trace_id,
            exchange=self.job.exchange,
            routing_key=self.job.routing_key,
        )


_PLACEHOLDERS = ("{seq}", "{uuid}", "{now}")


class MessageFactory:
    """Builds the job's messages one at a time, so that a million never sit in memory.

    The body is encoded once. A templated body is encoded once too, as text with its
    placeholders still in it, and each message only substitutes them (a placeholder never
    needs JSON escaping: digits, hex and an ISO timestamp).
    """

    def __init__(self, job: PublishJob) -> None:
        self.job = job
        props = job.properties
        text = job.body_is_text
        if text:
            encoded = str(job.body if job.body is not None else "")
        else:
            encoded = json.dumps(job.body, separators=(",", ":"), ensure_ascii=False)
        self._template: str | None = None
        self._static_body = encoded.encode()
        if job.template and any(p in encoded for p in _PLACEHOLDERS):
            self._template = encoded
            self._needs = tuple(p in encoded for p in _PLACEHOLDERS)
        self._headers: dict[str, Any] = {**props.headers, "x-warren-job": job.job_id}
        self._id_base = props.message_id or job.job_id
        self._stamp = props.timestamp
        # aio-pika turns seconds into whole milliseconds by truncation; the half millisecond
        # keeps a float like 1234.567 from becoming 1234566.
        expiration = (props.expiration + 0.5) / 1000 if props.expiration is not None else None
        self._kwargs: dict[str, Any] = {
            "content_type": props.content_type or ("text/plain" if text else "application/json"),
            "content_encoding": props.content_encoding or ("utf-8" if text else None),
            "delivery_mode": aio_pika.DeliveryMode(props.delivery_mode),
            "priority": props.priority,
            "expiration": expiration,
            "correlation_id": props.correlation_id,
            "reply_to": props.reply_to,
            "type": props.type,
            "app_id": props.app_id,
            "user_id": props.user_id,
        }
        # The job's fixed AMQP properties exactly as aio-pika encodes them, for the messages
        # published below aio-pika (see ``Publisher._send_quiet``).
        encoded_props = aio_pika.Message(b"", **self._kwargs).properties
        self._fixed = {
            name: value
            for name in spec.Basic.Properties.__slots__
            if name not in ("headers", "message_id", "timestamp")
            and (value := getattr(encoded_props, name)) is not None
        }
        self._quiet_headers = self._headers

    @property
    def templated(self) -> bool:
        return self._template is not None

    def _fill(self, seq: int) -> bytes:
        assert self._template is not None
        text = self._template
        seq_, uuid_, now_ = self._needs
        if seq_:
            text = text.replace("{seq}", str(seq))
        if uuid_:
            text = text.replace("{uuid}", uuid.uuid4().hex)
        if now_:
            text = text.replace("{now}", datetime.now(UTC).isoformat())
        return text.encode()

    def message_id(self, seq: int) -> str:
        if not self.job.batch:
            return self._id_base
        return f"{self._id_base}-{seq}"

    def quiet(self, trace_headers: dict[str, Any]) -> None:
        """Trace headers every untraced message of the job carries (see ``Publisher.run``)."""
        self._quiet_headers = {**self._headers, **trace_headers}

    def body(self, seq: int) -> bytes:
        return self._static_body if self._template is None else self._fill(seq)

    def _headers_for(self, seq: int, base: dict[str, Any]) -> dict[str, Any]:
        headers = base.copy()
        if self.job.batch:
            headers["x-warren-seq"] = seq
        # Microsecond publish time as an integer: the AMQP timestamp has whole seconds only,
        # and pamqp encodes a float header as a 32-bit float (about two minutes off today).
        headers[PUBLISHED_US_HEADER] = time.time_ns() // 1000
        return headers

    def build(self, seq: int) -> aio_pika.Message:
        """The message for aio-pika's (instrumented) ``Exchange.publish``."""
        return aio_pika.Message(
            self.body(seq),
            message_id=self.message_id(seq),
            timestamp=datetime.now(UTC) if self._stamp else None,
            headers=self._headers_for(seq, self._headers),
            **self._kwargs,
        )

    def properties(self, seq: int) -> spec.Basic.Properties:
        """The same properties as ``build(seq)``'s, made directly (a tenth of the cost), with
        the job's quiet trace headers instead of a publish span's."""
        return spec.Basic.Properties(
            message_id=self.message_id(seq),
            timestamp=datetime.now(UTC) if self._stamp else None,
            headers=self._headers_for(seq, self._quiet_headers),
            **self._fixed,
        )


_REFUSALS = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelLockedResource,
)


class Publisher:
    """Publishes a job's messages on its own confirm channel (one job's 404 stays its own)."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        publish_timeout: float,
        retry_deadline: float,
        trace_first: int,
        trace_every: int,
        max_window: int = 5000,
    ) -> None:
        self._connection = connection
        self._max_window = max_window
        self._closing: set[asyncio.Task[None]] = set()
        self._timeout = publish_timeout
        self._retry_deadline = retry_deadline
        self._trace_first = trace_first
        self._trace_every = trace_every
        self._tracer = trace.get_tracer(__name__)

    async def _target(self, channel: AbstractChannel, job: PublishJob) -> AbstractExchange:
        if not job.exchange:
            return channel.default_exchange
        # A passive check on a throwaway channel: a missing exchange closes the channel it is
        # asked on (404), and it must not be the job's publishing channel.
        probe = await self._open(publisher_confirms=False)
        try:
            await probe.declare_exchange(job.exchange, passive=True, timeout=self._timeout)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise JobFailed("not_found", f"exchange {job.exchange!r} does not exist") from exc
        except _REFUSALS as exc:
            raise JobFailed("refused", f"exchange {job.exchange!r} refused: {exc}") from exc
        except TimeoutError as exc:
            raise JobFailed("timeout", f"no answer within {self._timeout:g} s") from exc
        finally:
            self._close_later(probe)
        return await channel.get_exchange(job.exchange, ensure=False)

    async def _open(self, **options: Any) -> AbstractChannel:
        """A channel, or ``JobFailed``: a blocked broker does not even answer Channel.Open.

        A connection that drops while the channel opens (the broker closing connections, a
        restart) is waited out like a publish that raised: the job goes on once it is back.
        """
        outage_started: float | None = None
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._connection.channel(**options)
            except TimeoutError as exc:
                raise JobFailed(
                    "timeout",
                    f"could not open a channel within {self._timeout:g} s "
                    "(broker blocked by a resource alarm, or the network is partitioned)",
                ) from exc
            except asyncio.CancelledError as exc:
                # aiormq cancels pending RPCs with the close reason when the connection drops;
                # only a cancel of this task itself is a real cancellation.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                error: BaseException = exc
            except (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError) as exc:  # type: ignore[misc]
                error = exc
            now = time.monotonic()
            outage_started = outage_started or now
            remaining = self._retry_deadline - (now - outage_started)
            if remaining <= 0:
                raise JobFailed(
                    "connection", f"broker unreachable for {self._retry_deadline:g} s: {error!r}"
                ) from error
            log.info("Connection lost while opening a channel (%r); waiting for it", error)
            try:
                await asyncio.wait_for(self._connection.ready(), remaining)
            except TimeoutError:
                continue

    def _close_later(self, channel: AbstractChannel) -> None:
        """Close a channel without making the job's result wait for the broker's answer."""
        if channel.is_closed:
            return

        async def close() -> None:
            try:
                await asyncio.wait_for(channel.close(), 10)
            except Exception as exc:  # the job's outcome is already known
                log.debug("Closing a job channel failed: %s", exc)

        task = asyncio.create_task(close(), name="close-job-channel")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Let channel closes still in progress finish (bounded)."""
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=5)

    def _traced(self, seq: int) -> bool:
        if seq < self._trace_first:
            return True
        return self._trace_every > 0 and seq % self._trace_every == 0

    async def run(
        self,
        state: JobState,
        *,
        on_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Publish every message of the job; sets ``state.status`` and the counters."""
        job = state.job
        factory = MessageFactory(job)
        span_ctx = trace.get_current_span().get_span_context()
        state.trace_id = format(span_ctx.trace_id, "032x") if span_ctx.is_valid else None
        if not job.batch:
            state.message_id = factory.message_id(0)
        # Untraced messages of a batch still carry the job's trace id, but flagged "not
        # sampled": with the default parent-based sampler nothing downstream records a span for
        # them, so a batch of a million is one readable trace, not a million-span one. Their
        # trace headers are the same for the whole job, so they are made once, here.
        if span_ctx.is_valid:
            quiet_span = telemetry.not_sampled(span_ctx.trace_id, span_ctx.span_id)
            trace_headers: dict[str, Any] = {}
            propagate.inject(trace_headers, context=trace.set_span_in_context(quiet_span))
            factory.quiet(trace_headers)
        try:
            channel = await self._open(publisher_confirms=True, on_return_raises=False)
        except JobFailed as exc:
            state.status, state.error, state.error_kind = "failed", str(exc), exc.kind
            return
        try:
            exchange = await self._target(channel, job)
            if on_start is not None:
                await on_start()
            # One shared iterator and a fixed number of workers: the in-flight window is
            # bounded, no task is created per message, and a message exists only from the
            # moment a worker takes its number until the broker answers.
            sequence = iter(range(job.count))
            window = min(job.concurrency, job.count, self._max_window)

            loop = asyncio.get_running_loop()
            begin = loop.time()
            period = 1.0 / job.rate if job.rate else 0.0

            async def worker() -> None:
                for seq in sequence:
                    if state.cancelled:
                        return
                    if period:
                        # A fixed schedule, message n at begin + n / rate: a slow confirm
                        # delays only its own worker, and the others keep the offered rate.
                        delay = begin + seq * period - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                            if state.cancelled:
                                return
                    send: Send
                    if job.batch and not self._traced(seq):
                        props = factory.properties(seq)
                        send = partial(self._send_quiet, channel, job, factory.body(seq), props)
                    else:
                        send = partial(
                            exchange.publish,
                            factory.build(seq),
                            job.routing_key,
                            mandatory=True,
                            timeout=self._timeout,
                        )
                    await self._publish(state, channel, send)

            workers = [asyncio.create_task(worker()) for _ in range(window)]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        except JobFailed as exc:
            state.status = "failed"
            state.error, state.error_kind = str(exc), exc.kind
        finally:
            self._close_later(channel)
        if state.status == "running":
            state.status = "cancelled" if state.cancelled else "done"
            if not job.batch and state.confirmed != 1 and state.error is None:
                state.status, state.error, state.error_kind = "failed", "not confirmed", "other"

    async def _send_quiet(
        self, channel: AbstractChannel, job: PublishJob, body: bytes, props: spec.Basic.Properties
    ) -> ConfirmationFrameType | DeliveredMessage | None:
        """An untraced batch message, straight to aiormq: what aio-pika's ``Exchange.publish``
        does, without a ``Message`` object and a non-recording publish span per message (a
        third of the producer's time per message went there)."""
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        underlay = await channel.get_underlay_channel()
        return await underlay.basic_publish(
            body,
            exchange=job.exchange,
            routing_key=job.routing_key,
            properties=props,
            mandatory=True,
            timeout=self._timeout,
        )

    async def _publish(self, state: JobState, channel: AbstractChannel, send: Send) -> None:
        """Publish one message until the broker answers it; count what it answered.

        Only a ``Basic.Ack`` counts as confirmed. When the connection or channel is lost, the
        outcome of a pending publish is unknown: the same message (same message id) is sent
        again once the robust connection *and* this job's channel are restored, and counted
        once as retried (a possible duplicate).
        """
        job = state.job
        routing_key = job.routing_key
        outage_started: float | None = None
        retried = False
        timeouts = 0  # of this message: resent at most twice while the broker answers others
        while True:
            try:
                result = await send()
            except aio_pika.exceptions.DeliveryError:
                state.published += 1
                state.nacked += 1
                self._fail_single(state, "nacked", "the broker refused the message (nack)")
                return
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                raise JobFailed("not_found", f"exchange {job.exchange!r} does not exist") from exc
            except _REFUSALS as exc:
                # The broker closed the channel on purpose (e.g. 403: this user may not write
                # to the exchange): a retry would be refused the same way.
                state.failed += 1
                raise JobFailed("refused", f"the broker refused the publish: {exc}") from exc
            except TimeoutError as exc:
                timeouts += 1
                if timeouts < 3 and self._still_answering(state):
                    retried = self._count_retry(state, retried)
                    continue
                raise self._timed_out(state) from exc
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # a real cancellation of this worker
                # aiormq cancels a pending publish from inside when its own timeout fires or
                # when the channel goes away under it: which one decides what it means.
                if self._usable(channel):
                    timeouts += 1
                    if timeouts < 3 and self._still_answering(state):
                        retried = self._count_retry(state, retried)
                        continue
                    raise self._timed_out(state) from exc
                error: BaseException = exc
            except CONNECTION_ERRORS as exc:
                error = exc
            else:
                state.published += 1
                state.last_answer = time.monotonic()
                if isinstance(result, DeliveredMessage):
                    state.returned += 1
                    self._fail_single(
                        state,
                        "unroutable",
                        f"no queue bound for exchange {job.exchange or '(default)'!r} "
                        f"routing key {routing_key!r}: message returned",
                    )
                else:
                    state.confirmed += 1
                return
            # The connection or channel is gone: wait until both are back, then resend.
            now = time.monotonic()
            outage_started = outage_started or now
            remaining = self._retry_deadline - (now - outage_started)
            if state.cancelled:
                return
            if remaining <= 0 or not await self._wait_restored(channel, remaining):
                state.failed += 1
                raise JobFailed(
                    "connection",
                    f"broker unreachable for {self._retry_deadline:g} s: {error!r}",
                ) from error
            retried = self._count_retry(state, retried)

    @staticmethod
    def _count_retry(state: JobState, retried: bool) -> bool:
        if not retried:
            state.retried += 1
        return True

    def _still_answering(self, state: JobState) -> bool:
        """A batch message timed out, yet the broker answered others within the timeout: it
        was only slow (queued behind a wide window on a busy machine), so send it again. A
        blocked or partitioned broker answers nothing, and the job fails within two timeouts."""
        return (
            state.job.batch
            and not state.cancelled
            and time.monotonic() - state.last_answer < self._timeout
        )

    def _timed_out(self, state: JobState) -> JobFailed:
        state.failed += 1
        return JobFailed(
            "timeout",
            f"publish not confirmed within {self._timeout:g} s "
            "(broker blocked by a resource alarm, or the network is partitioned)",
        )

    def _usable(self, channel: AbstractChannel) -> bool:
        return (
            self._connection.connected.is_set()
            and not self._connection.is_closed
            and not channel.is_closed
        )

    @staticmethod
    def _fail_single(state: JobState, kind: str, error: str) -> None:
        if not state.job.batch:
            state.status, state.error, state.error_kind = "failed", error, kind
        elif state.error is None:
            state.error, state.error_kind = error, kind

    async def _wait_restored(self, channel: AbstractChannel, timeout: float) -> bool:
        """Wait until the robust connection and this channel are restored (False: gave up)."""
        ready = getattr(channel, "ready", None)  # RobustChannel: connection up + reopened
        try:
            if ready is not None:
                await asyncio.wait_for(ready(), timeout)
            else:
                await asyncio.wait_for(self._connection.ready(), timeout)
        except TimeoutError:
            return False
        # ready() can return just before the connection is seen to drop again; a short pause
        # keeps a burst of workers from spinning on a channel that is closing once more.
        if not self._usable(channel):
            await asyncio.sleep(0.05)
        return True
