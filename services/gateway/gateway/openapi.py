"""The OpenAPI 3.1 description of the JSON API, served at ``GET /api/openapi.json``.

Request bodies come from the pydantic models (``model_json_schema``), so the description cannot
drift from what the handlers validate; a test checks that every ``/api`` route is described.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from gateway import keys
from gateway.schemas import (
    NAME,
    BindingCreate,
    ConsumerStart,
    ExchangeCreate,
    PublishBatch,
    PublishMessage,
    QueueCreate,
)
from gateway.settings import GatewaySettings

REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in words."},
        "field": {"type": ["string", "null"], "description": "The input at fault, if one."},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

NAME_PARAM: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": NAME,
}
JOB_ID_PARAM: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    ok: int = 200
    body: type[BaseModel] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    public: bool = False
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)


def operations(settings: GatewaySettings) -> list[Op]:
    history = settings.gateway.history
    idem = {"Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": 255}}
    return [
        Op("get", "/api/health", "Liveness and broker connection (503 without it).", public=True,
           errors=(503,)),
        Op("get", "/api/status", "Broker, the gateway's connection, versions, every replica."),
        Op("get", "/api/openapi.json", "This description."),
        Op("post", "/api/connection/connect", "Connect the gateway to the broker.",
           errors=(415,)),
        Op("post", "/api/connection/disconnect", "Disconnect the gateway from the broker.",
           errors=(415,)),
        Op("get", "/api/queues", "Queues with stats (rates when the management API answers)."),
        Op("post", "/api/queues", "Declare a queue.", ok=201, body=QueueCreate,
           errors=(400, 403, 409, 413, 415, 422, 503)),
        Op("get", "/api/queues/{name}", "One queue's stats.", errors=(400, 404, 503)),
        Op("delete", "/api/queues/{name}", "Delete a queue.", errors=(400, 403, 404, 415, 503)),
        Op("post", "/api/queues/{name}/purge", "Purge a queue's ready messages.",
           errors=(400, 403, 404, 415, 503)),
        Op("get", "/api/exchanges", "Exchanges (user ones; Warren's own are hidden)."),
        Op("post", "/api/exchanges", "Declare an exchange.", ok=201, body=ExchangeCreate,
           errors=(400, 403, 409, 413, 415, 422, 503)),
        Op("post", "/api/bindings", "Bind a queue to an exchange.", ok=201, body=BindingCreate,
           errors=(400, 403, 404, 413, 415, 422, 503)),
        Op("post", "/api/messages", "Publish one message; answers once confirmed.",
           body=PublishMessage, errors=(400, 404, 409, 413, 415, 422, 503, 504), headers=idem),
        Op("post", "/api/batches", "Publish N messages as a job.", ok=202, body=PublishBatch,
           errors=(400, 409, 413, 415, 422, 503), headers=idem),
        Op("get", "/api/batches", "Recent jobs, newest first.",
           query={"limit": {"type": "integer", "minimum": 1, "maximum": 1000}}, errors=(400,)),
        Op("get", "/api/batches/{job_id}", "A job's progress and result.", errors=(400, 404)),
        Op("delete", "/api/batches/{job_id}", "Cancel a running job.",
           errors=(400, 404, 409, 415, 503)),
        Op("get", "/api/consumers", "What is consumed, by which replicas."),
        Op("post", "/api/consumers", "Start consuming a queue on every consumer replica.",
           ok=202, body=ConsumerStart, errors=(400, 404, 413, 415, 422, 503)),
        Op("delete", "/api/consumers/{queue}", "Stop consuming a queue (replicas drain).",
           ok=202, errors=(400, 404, 415, 422, 503)),
        Op("get", "/api/messages/received", "Recent processed records, newest first.",
           query={
               "limit": {"type": "integer", "minimum": 1, "maximum": history},
               "queue": {"type": "string", "maxLength": 255},
               "worker": {"type": "string", "maxLength": 255},
               "q": {"type": "string", "maxLength": 255},
           },
           errors=(400,)),
        Op("delete", "/api/messages/received", "Clear the record history.", errors=(415,)),
        Op("get", "/api/events",
           "The live stream (WebSocket): JSON arrays of {type, data} events, batched; types "
           "record, job, heartbeat, queues, rates. Send {\"pause\": true|false}. Browsers pass "
           "the token as ?token=.",
           ok=101, query={"token": {"type": "string"}}, errors=(400,)),
    ]  # fmt: skip


def _tighten(schema: dict[str, Any], settings: GatewaySettings) -> None:
    """The limits that come from settings rather than the models."""
    props = schema.get("properties", {})
    if "count" in props:
        props["count"]["maximum"] = settings.gateway.max_batch_count
    if "concurrency" in props:
        props["concurrency"]["maximum"] = settings.gateway.max_concurrency


def build(settings: GatewaySettings) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations(settings):
        operation: dict[str, Any] = {
            "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_')}".replace(
                "{", ""
            ).replace("}", ""),
            "summary": op.summary,
            "responses": {str(op.ok): {"description": "success", "content": _json_any()}},
        }
        params: list[dict[str, Any]] = []
        for segment in op.path.split("/"):
            if segment.startswith("{"):
                name = segment[1:-1]
                params.append(
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "schema": JOB_ID_PARAM if name == "job_id" else NAME_PARAM,
                    }
                )
        params += [{"name": n, "in": "query", "schema": s} for n, s in op.query.items()]
        params += [{"name": n, "in": "header", "schema": s} for n, s in op.headers.items()]
        if params:
            operation["parameters"] = params
        if op.body is not None:
            schema = op.body.model_json_schema(ref_template=REF)
            for name, sub in schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            _tighten(schema, settings)
            components[op.body.__name__] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
                },
            }
        errors = {401, *op.errors} - ({401} if op.public else set())
        for status in sorted(errors):
            operation["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "error"),
                "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
            }
        if op.public:
            operation["security"] = []
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Warren gateway",
            "version": "1",
            "description": "JSON in and out. Errors are {error, field?, details?} with a 4xx "
            "status; 503 means the broker is unavailable (retry after Retry-After seconds).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # With WARREN_GATEWAY__TOKEN set every call but /api/health needs the bearer token;
        # without it the API is open (and the gateway listens on 127.0.0.1 by default).
        "security": [{"bearer": []}, {}] if settings.gateway.token is None else [{"bearer": []}],
    }


def _json_any() -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object"}}}


_STATUS_TEXT = {
    400: "malformed request (JSON, path or query parameter)",
    401: "missing or wrong token",
    403: "the broker refused the operation to the gateway's user",
    404: "not found",
    409: "conflict (exists with other settings, or reused Idempotency-Key)",
    413: "request body over the limit",
    415: "not a JSON content type",
    422: "the body does not validate",
    503: "broker unavailable; Retry-After says when to retry",
    504: "no producer confirmed within the publish timeout; the job stays queued",
}


SPEC: web.AppKey[dict[str, Any]] = web.AppKey("openapi_spec")


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[SPEC])


def setup(app: web.Application) -> None:
    app[SPEC] = build(app[keys.SETTINGS])
    app.router.add_get("/api/openapi.json", openapi_json)
