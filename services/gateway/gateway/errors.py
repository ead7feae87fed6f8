"""Errors as JSON, never a 500 for a client's mistake, and the token check."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateway import keys
from gateway.broker import BrokerUnavailable, PublishTimeout

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return web.json_response(body, status=status, headers=headers)


class HTTPError(Exception):
    """Raised by handlers to answer an error response."""

    def __init__(
        self, status: int, message: str, *, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra


def validation_error(exc: ValidationError) -> web.Response:
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        details.append({"field": loc, "message": err["msg"]})
    first = details[0] if details else {"field": None, "message": "invalid"}
    message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
    return error(422, message, field=first["field"] or None, details=details)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPError as exc:
        return error(exc.status, exc.message, field=exc.field, **exc.extra)
    except ValidationError as exc:
        return validation_error(exc)
    except BrokerUnavailable as exc:
        return error(503, str(exc), headers={"Retry-After": "2"})
    except PublishTimeout as exc:
        return error(503, str(exc), headers={"Retry-After": "5"})
    except web.HTTPRequestEntityTooLarge:
        return error(
            413, f"request body over {request.app[keys.SETTINGS].gateway.max_body_bytes} bytes"
        )
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api"):
            return error(exc.status, exc.reason)
        raise


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[keys.SETTINGS].gateway.token
    if token is None or not request.path.startswith("/api") or request.path == "/api/health":
        return await handler(request)
    expected = token.get_secret_value()
    given = request.headers.get("Authorization", "")
    presented = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        return error(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 415 unless it says it is JSON, 400 if it is not."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise HTTPError(415, f"expected Content-Type application/json, got {ctype or 'none'!r}")
    raw = await request.read()
    if not raw:
        raise HTTPError(400, "the request body is empty: expected a JSON object")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise HTTPError(400, "JSON nested too deeply") from exc
