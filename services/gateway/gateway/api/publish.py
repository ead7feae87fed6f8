"""Publishing: one message (answered once confirmed) and batches (jobs with progress)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.api.common import limit_param, state_of
from gateway.broker import BrokerUnavailable, PublishTimeout
from gateway.errors import HTTPError, read_json
from gateway.schemas import (
    PublishBatch,
    PublishMessage,
)
from gateway.state import State, fingerprint, job_json
from warren import telemetry
from warren.contracts import JobProgress, PublishJob

log = logging.getLogger(__name__)


routes = web.RouteTableDef()


def _job(spec: PublishMessage, *, batch: PublishBatch | None) -> PublishJob:
    exchange, routing_key = spec.resolved()
    is_text = isinstance(spec.body, str)
    return PublishJob(
        batch=batch is not None,
        exchange=exchange,
        routing_key=routing_key,
        body=spec.body,
        body_is_text=is_text,
        template=batch.template if batch is not None else False,
        count=batch.count if batch is not None else 1,
        concurrency=batch.concurrency if batch is not None else 1,
        rate=batch.rate if batch is not None else None,
        properties=spec.properties,
    )


def _idempotent(request: web.Request, raw: Any, job_id: str) -> tuple[str | None, str | None]:
    """(the job id of an earlier request with the same Idempotency-Key, the stored key).

    The same key with a different request answers 409. Keys are per path, so a message and a
    batch never share one.
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None, None
    if not 1 <= len(key) <= 255:
        raise HTTPError(400, "Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
    stored = f"{request.path}:{key}"
    digest = fingerprint(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())
    earlier = state_of(request).remember_key(stored, digest, job_id)
    if earlier is None:
        return None, stored
    if earlier[0] != digest:
        raise HTTPError(
            409,
            "Idempotency-Key reused with a different request",
            field="Idempotency-Key",
            job_id=earlier[1],
        )
    return earlier[1], stored


async def _send(request: web.Request, job: PublishJob, key: str | None) -> web.Response | None:
    """Hand the job to the producers; on failure, the answer (saying whether it may run)."""
    state = state_of(request)
    try:
        await request.app[keys.BROKER].send_job(job)
    except BrokerUnavailable:
        # Nothing reached the broker: forget the job and the key, so that a retry sends it.
        state.jobs.pop(job.job_id, None)
        if key is not None:
            state.idempotency.pop(key, None)
        raise
    except PublishTimeout as exc:
        # The job is written to the socket of a blocked broker: it may still run when the
        # broker unblocks. Keep it (and its key) so the client can follow it, not resend it.
        return web.json_response(
            {
                "status": "unconfirmed",
                "job_id": job.job_id,
                "error": f"{exc}; the job may still run once the broker recovers: "
                f"see GET /api/batches/{job.job_id}",
            },
            status=503,
            headers={"Retry-After": "5", "Location": f"/api/batches/{job.job_id}"},
        )
    return None


_STATUS_FOR_ERROR = {
    "unroutable": 404,
    "not_found": 404,
    "refused": 403,
    "timeout": 503,
    "blocked": 503,
    "connection": 503,
    "nacked": 503,
    "other": 500,
}


def _message_response(progress: JobProgress, state: State) -> web.Response:
    body = {
        "status": "confirmed" if progress.status == "done" else progress.status,
        "job_id": progress.job_id,
        "message_id": progress.message_id,
        "trace_id": progress.trace_id,
        "trace_url": state.trace_url(progress.trace_id),
        "exchange": progress.exchange,
        "routing_key": progress.routing_key,
        "producer": progress.producer,
        "retried": progress.retried,
        "elapsed_ms": round(progress.elapsed_s * 1000, 2),
    }
    if progress.status == "done" and progress.confirmed == 1:
        return web.json_response(body)
    body["status"] = "returned" if progress.error_kind == "unroutable" else "failed"
    body["error"] = progress.error or "not confirmed"
    code = _STATUS_FOR_ERROR.get(progress.error_kind or "other", 500)
    if progress.error_kind == "not_found":
        body["field"] = "exchange"
    elif progress.error_kind == "unroutable":
        body["field"] = "routing_key" if progress.exchange else "queue"
    headers = {"Retry-After": "5"} if code == 503 else None
    return web.json_response(body, status=code, headers=headers)


@routes.post("/api/messages")
async def publish_message(request: web.Request) -> web.Response:
    loop = asyncio.get_running_loop()
    settings = request.app[keys.SETTINGS]
    # One deadline for the whole request: a blocked broker must not cost it twice.
    deadline = loop.time() + settings.amqp.publish_timeout + 1
    raw_json = await read_json(request)
    spec = PublishMessage.model_validate(raw_json)
    state = state_of(request)
    job = _job(spec, batch=None)
    earlier, key = _idempotent(request, raw_json, job.job_id)
    entry = state.jobs.get(earlier) if earlier is not None else None
    if earlier is not None:
        job = job.model_copy(update={"job_id": earlier})
        if entry is None:  # forgotten since: it ran (or is queued); don't publish it twice
            return web.json_response(
                {"status": "pending", "job_id": earlier, "error": "job no longer tracked"},
                status=504,
            )
    if entry is None:
        entry = state.add_job(_queued(job, request))
        if (failed := await _send(request, job, key)) is not None:
            return failed
    try:
        await asyncio.wait_for(entry.done.wait(), max(0.0, deadline - loop.time()))
    except TimeoutError:
        return web.json_response(
            {
                "status": "pending",
                "job_id": job.job_id,
                "error": f"no confirmation from a producer within "
                f"{settings.amqp.publish_timeout + 1:g} s; the job stays queued and runs when a "
                f"producer takes it: see GET /api/batches/{job.job_id}",
            },
            status=504,
            headers={"Location": f"/api/batches/{job.job_id}"},
        )
    return _message_response(entry.progress, state)


def _queued(job: PublishJob, request: web.Request) -> JobProgress:
    return JobProgress(
        job_id=job.job_id,
        status="queued",
        batch=job.batch,
        producer="",
        count=job.count,
        message_id=None if job.batch else (job.properties.message_id or job.job_id),
        trace_id=telemetry.current_trace_id(),
        exchange=job.exchange,
        routing_key=job.routing_key,
    )


@routes.post("/api/batches")
async def publish_batch(request: web.Request) -> web.Response:
    raw_json = await read_json(request)
    spec = PublishBatch.model_validate(raw_json)
    settings = request.app[keys.SETTINGS].gateway
    if spec.count > settings.max_batch_count:
        raise HTTPError(422, f"count must be at most {settings.max_batch_count}", field="count")
    if spec.concurrency > settings.max_concurrency:
        raise HTTPError(
            422, f"concurrency must be at most {settings.max_concurrency}", field="concurrency"
        )
    state = state_of(request)
    job = _job(spec, batch=spec)
    earlier, key = _idempotent(request, raw_json, job.job_id)
    if earlier is not None:
        entry = state.jobs.get(earlier)
        progress = entry.progress if entry else None
        return web.json_response(
            {"job_id": earlier, "status": progress.status if progress else "queued"},
            status=202,
            headers={"Location": f"/api/batches/{earlier}"},
        )
    state.add_job(_queued(job, request))
    if (failed := await _send(request, job, key)) is not None:
        return failed
    return web.json_response(
        {"job_id": job.job_id, "status": "queued", "trace_id": telemetry.current_trace_id()},
        status=202,
        headers={"Location": f"/api/batches/{job.job_id}"},
    )


@routes.get("/api/batches")
async def list_batches(request: web.Request) -> web.Response:
    state = state_of(request)
    limit = limit_param(request)
    jobs = [job_json(e.progress, state) for e in reversed(state.jobs.values())][:limit]
    return web.json_response({"jobs": jobs})


def _job_entry(request: web.Request) -> Any:
    job_id = request.match_info["job_id"]
    if not job_id.isalnum() or len(job_id) > 64:
        raise HTTPError(400, "job ids are up to 64 letters and digits", field="job_id")
    entry = state_of(request).jobs.get(job_id)
    if entry is None:
        raise HTTPError(404, f"job {job_id!r} not found", field="job_id")
    return entry


@routes.get("/api/batches/{job_id}")
async def get_batch(request: web.Request) -> web.Response:
    entry = _job_entry(request)
    return web.json_response(job_json(entry.progress, state_of(request)))


@routes.delete("/api/batches/{job_id}")
async def cancel_batch(request: web.Request) -> web.Response:
    entry = _job_entry(request)
    if entry.done.is_set():
        raise HTTPError(409, f"job already {entry.progress.status}", field="job_id")
    await request.app[keys.BROKER].cancel_job(entry.progress.job_id)
    try:
        await asyncio.wait_for(entry.done.wait(), 5)
    except TimeoutError:
        return web.json_response(job_json(entry.progress, state_of(request)), status=202)
    return web.json_response(job_json(entry.progress, state_of(request)))
