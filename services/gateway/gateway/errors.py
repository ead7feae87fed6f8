"""Errors as JSON, never a 500 for a client's mistake, and the token check."""

from __future__ import annotations

import hmac
import json
import logging
import math
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


_JSON_TYPES = ("application/json",)
# What an HTML form can send cross-site without a CORS preflight (even with an empty body).
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json(ctype: str) -> bool:
    return ctype in _JSON_TYPES or (ctype.startswith("application/") and ctype.endswith("+json"))


@web.middleware
async def input_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Runs after the token check, so an unauthenticated client learns nothing but 401."""
    check_request(request)
    return await handler(request)


def check_request(request: web.Request) -> None:
    """Refuse before any handler runs: an announced body over the limit (413, without reading
    it: a lying Content-Length must not make us wait for bytes that never come), and a non-JSON
    body on a mutating call (415: also what stops a cross-site form post, which can only send
    form or text content types, even to endpoints that ignore their body)."""
    if not request.path.startswith("/api/"):
        return
    limit = request.app[keys.SETTINGS].gateway.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise HTTPError(413, f"request body over {limit} bytes", limit=limit)
    if request.method in _MUTATING:
        has_body = bool(length) or "chunked" in request.headers.get("Transfer-Encoding", "")
        ctype = request.content_type if "Content-Type" in request.headers else ""
        if (has_body and not _is_json(ctype)) or ctype in _FORM_TYPES:
            raise HTTPError(415, f"expected Content-Type application/json, got {ctype or 'none'!r}")


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
        limit = request.app[keys.SETTINGS].gateway.max_body_bytes
        return error(413, f"request body over {limit} bytes", limit=limit)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api"):
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return error(exc.status, _reason(request, exc), headers=headers)
        raise
    except Exception:
        # A bug of ours, not the client's: logged with its traceback, answered as JSON without
        # details (they could carry internals).
        log.exception("Unhandled error on %s %s", request.method, request.path[:200])
        return error(500, "internal error: see the gateway log")


def _reason(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such API path: {request.method} {request.path[:200]}"
    if exc.status == 405:
        return f"method {request.method} not allowed on {request.path[:200]}"
    return exc.reason


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[keys.SETTINGS].gateway.token
    if token is None or not request.path.startswith("/api") or request.path == "/api/health":
        return await handler(request)
    expected = token.get_secret_value()
    given = request.headers.get("Authorization", "")
    presented = given[7:] if given.startswith("Bearer ") else ""
    if not presented and request.path == "/api/events":
        # Browsers cannot set headers on a WebSocket: the event stream alone takes ?token=.
        presented = request.query.get("token", "")
    if not presented or not hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), expected.encode()
    ):
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
    if "Content-Type" not in request.headers or not _is_json(ctype):
        raise HTTPError(415, f"expected Content-Type application/json, got {ctype or 'none'!r}")
    raw = await request.read()
    if not raw:
        raise HTTPError(400, "the request body is empty: expected a JSON object")
    try:
        return json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise HTTPError(400, "JSON nested too deeply") from exc
    except ValueError as exc:
        # Integers over Python's digit limit, NaN/Infinity, floats that overflow.
        raise HTTPError(400, f"malformed JSON: {str(exc)[:200]}") from exc


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
