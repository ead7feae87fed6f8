"""The producer replica: takes publish jobs from the shared job queue and reports on them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import TypeAdapter, ValidationError

from producer.publisher import JobState, Publisher
from producer.settings import ProducerSettings
from warren import amqp, telemetry
from warren.contracts import (
    CONTROL_ALL_PRODUCERS,
    CancelJob,
    ControlMessage,
    Counters,
    Heartbeat,
    JobProgress,
    PublishJob,
    Topology,
    heartbeat_key,
    job_key,
)
from warren.lifecycle import cancel_and_wait, close_quietly, touch_health_file

log = logging.getLogger(__name__)

_control = TypeAdapter[Any](ControlMessage)


class ProducerService:
    """Owns the connection, the job consumer, the running jobs and the heartbeat task."""

    def __init__(
        self, settings: ProducerSettings, *, telemetry_status: telemetry.TelemetryStatus
    ) -> None:
        self.settings = settings
        self.topology = Topology(settings.namespace)
        self.replica = settings.replica_id
        self.telemetry = telemetry_status
        self.started_at = datetime.now(UTC)
        self.connection: AbstractRobustConnection | None = None
        self._events_channel: AbstractChannel | None = None
        self._exchanges: amqp.Exchanges | None = None
        self._jobs_queue: AbstractQueue | None = None
        self._control_queue: AbstractQueue | None = None
        self._jobs_tag: str | None = None
        self._running: dict[str, JobState] = {}
        # Jobs cancelled before any replica took them: skipped when they arrive (bounded).
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._counters: dict[str, int] = dict.fromkeys(
            ("jobs", "published", "confirmed", "returned"), 0
        )
        self._publisher: Publisher | None = None

    async def start(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.connection = await amqp.connect(
            s.amqp, service="producer", replica=self.replica, stop=stop
        )
        self._publisher = Publisher(
            self.connection,
            publish_timeout=s.amqp.publish_timeout,
            retry_deadline=s.producer.retry_deadline,
            trace_first=s.producer.trace_first,
            trace_every=s.producer.trace_every,
            max_window=s.producer.max_concurrency,
        )
        self._events_channel = await self.connection.channel()
        self._exchanges = await amqp.declare_exchanges(self._events_channel, self.topology)

        self._control_queue = await amqp.consume_control(
            self.connection,
            self.topology,
            self._exchanges,
            replica=self.replica,
            broadcast_key=CONTROL_ALL_PRODUCERS,
            on_message=self._on_control,
        )

        jobs_channel = await self.connection.channel()
        await jobs_channel.set_qos(prefetch_count=s.producer.max_jobs)
        self._jobs_queue = await amqp.declare_jobs_queue(
            jobs_channel, self.topology, self._exchanges
        )
        self._jobs_tag = await self._jobs_queue.consume(self._on_job)
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="heartbeats")
        log.info("Producer %s taking jobs from %s", self.replica, self.topology.jobs_queue)

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Stop taking jobs, let running ones finish (bounded), then close."""
        if self._jobs_queue is not None and self._jobs_tag is not None:
            try:
                await asyncio.wait_for(self._jobs_queue.cancel(self._jobs_tag), 2)
            except Exception as exc:
                log.warning("Cancelling the job consumer failed: %s", exc)
        if self._tasks:
            log.info("Waiting for %d running job(s)", len(self._tasks))
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for state in self._running.values():
                state.interrupted = state.cancelled = True
            if pending:
                await asyncio.wait(pending, timeout=2)
        if self._publisher is not None:
            await self._publisher.close()
        await self._send_heartbeat(stopping=True)
        await cancel_and_wait(self._heartbeat_task)
        if self.connection is not None:
            await close_quietly(self.connection.close, what="connection", timeout=3)

    # Jobs -------------------------------------------------------------------------------------

    async def _on_job(self, message: AbstractIncomingMessage) -> None:
        try:
            job = amqp.decode(message, PublishJob)
        except ValidationError as exc:
            log.error("Rejecting a malformed job: %s", exc.errors()[:3])
            await message.reject(requeue=False)
            return
        if job.job_id in self._running:
            # The broker redelivered a job this replica is still running (its channel was
            # restored after a drop): the running copy reports; drop this one.
            log.warning("Job %s is already running here; dropping the redelivered copy", job.job_id)
            await message.ack()
            return
        if job.job_id in self._cancelled:
            log.info("Job %s was cancelled before it started; skipping it", job.job_id)
            skipped = JobState(job=job, producer=self.replica, status="cancelled")
            await self._send_progress(skipped.progress(final=True))
            await message.ack()
            return
        if message.redelivered:
            log.warning("Job %s redelivered: running it again (duplicates possible)", job.job_id)
        task = asyncio.create_task(
            self._run_job(job, message, redelivered=bool(message.redelivered)),
            name=f"job-{job.job_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Wait here so that the consumer span (and its trace context) covers the whole job.
        await asyncio.shield(task)

    async def _run_job(
        self, job: PublishJob, message: AbstractIncomingMessage, *, redelivered: bool
    ) -> None:
        assert self._publisher is not None
        state = JobState(job=job, producer=self.replica, redelivered=redelivered)
        self._running[job.job_id] = state
        self._counters["jobs"] += 1
        reporter: asyncio.Task[None] | None = None
        if job.batch:
            reporter = asyncio.create_task(self._report_progress(state), name="progress")
        try:
            await self._publisher.run(state)
        except Exception as exc:
            log.exception("Job %s failed", job.job_id)
            state.status, state.error, state.error_kind = "failed", repr(exc), "other"
        finally:
            await cancel_and_wait(reporter)
            self._running.pop(job.job_id, None)
            for key in ("published", "confirmed", "returned"):
                self._counters[key] += getattr(state, key)
        if state.interrupted and state.status == "cancelled":
            await self._hand_back(state, message)
            return
        final = state.progress(final=True)
        telemetry.annotate(
            {
                "messaging.destination.name": self.topology.jobs_queue,
                "warren.job_id": job.job_id,
                "warren.replica": self.replica,
                "warren.redelivered": redelivered,
                "warren.batch": job.batch,
                "warren.count": job.count,
                "warren.confirmed": final.confirmed,
                "warren.outcome": final.status,
            },
            error=final.error if final.status == "failed" else None,
        )
        log.info(
            "Job %s %s: %d/%d confirmed, %d returned, %d nacked, %d failed, %d retried, %.0f msg/s",
            job.job_id,
            final.status,
            final.confirmed,
            final.count,
            final.returned,
            final.nacked,
            final.failed,
            final.retried,
            final.rate,
        )
        await self._send_progress(final)
        try:
            await message.ack()
        except Exception as exc:
            # The channel went away: the job will be redelivered and run again; its messages
            # carry the same ids, so consumers can de-duplicate.
            log.warning("Could not ack job %s: %r", job.job_id, exc)

    async def _hand_back(self, state: JobState, message: AbstractIncomingMessage) -> None:
        """This replica stops mid-job: requeue the job so another replica runs it (again, from
        the start: it will say ``redelivered``), instead of reporting a cancel nobody asked for."""
        log.warning(
            "Stopping mid-job %s after %d/%d confirmed: handing it back to the queue",
            state.job.job_id,
            state.confirmed,
            state.job.count,
        )
        state.status = "queued"
        state.error = (
            f"producer {self.replica} stopped after {state.confirmed} confirmed; "
            "the job is queued again and will run from the start (duplicates possible)"
        )
        await self._send_progress(state.progress())
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # the broker requeues it anyway when the channel closes
            log.warning("Could not requeue job %s: %r", state.job.job_id, exc)

    async def _report_progress(self, state: JobState) -> None:
        """Report on a fixed grid, so a slow confirm of one report does not stretch the gap."""
        interval = self.settings.producer.progress_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._send_progress(state.progress())
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if next_at < loop.time() - interval:
                next_at = loop.time()

    @telemetry.internal
    async def _send_progress(self, progress: JobProgress) -> None:
        if self._exchanges is None:
            return
        try:
            await self._exchanges.events.publish(
                amqp.encode(progress),
                job_key(progress.job_id),
                timeout=self.settings.amqp.publish_timeout,
            )
        except Exception as exc:  # progress is advisory; the final result is retried
            if progress.final:
                log.warning("Final result of job %s not sent (%s); retrying", progress.job_id, exc)
                await asyncio.sleep(self.settings.amqp.reconnect_interval)
                try:
                    await self._exchanges.events.publish(
                        amqp.encode(progress), job_key(progress.job_id), timeout=5
                    )
                except Exception as exc2:
                    log.error("Final result of job %s lost: %s", progress.job_id, exc2)

    # Control ----------------------------------------------------------------------------------

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        try:
            command = amqp.decode_union(message, _control)
        except ValidationError:
            log.warning("Ignoring a malformed control message")
            return
        if isinstance(command, CancelJob):
            state = self._running.get(command.job_id)
            if state is not None:
                log.info("Cancelling job %s", command.job_id)
                state.cancelled = True
            else:
                self._cancelled[command.job_id] = None
                while len(self._cancelled) > 10_000:
                    self._cancelled.popitem(last=False)

    # Heartbeats -------------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await self._send_heartbeat()
            await asyncio.sleep(self.settings.heartbeat_interval)

    @telemetry.internal
    async def _send_heartbeat(self, *, stopping: bool = False) -> None:
        if self._exchanges is None:
            return
        running = list(self._running.values())
        counters = dict(self._counters)
        for state in running:
            for key in ("published", "confirmed", "returned"):
                counters[key] += getattr(state, key)
        beat = Heartbeat(
            role="producer",
            replica=self.replica,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            interval_s=self.settings.heartbeat_interval,
            connection=amqp.connection_state(self.connection),
            in_flight=len(running),
            counters=Counters(**counters),
            versions=telemetry.versions(),
            instrumentation=self.telemetry.instrumentation,
            instrumentation_error=self.telemetry.error,
            stopping=stopping,
        )
        try:
            await self._exchanges.events.publish(
                amqp.encode(beat), heartbeat_key("producer", self.replica), timeout=2
            )
        except Exception as exc:
            log.debug("Heartbeat not sent: %s", exc)
            return
        touch_health_file(self.settings.health_file)
