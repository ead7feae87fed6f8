"""Helpers shared by the API modules."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from gateway import keys
from gateway.errors import HTTPError
from gateway.schemas import NAME
from gateway.state import State

log = logging.getLogger(__name__)

_NAME = re.compile(NAME)


def state_of(request: web.Request) -> State:
    state: State = request.app[keys.STATE]
    return state


def limit_param(
    request: web.Request, name: str = "limit", default: int = 100, cap: int = 1000
) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise HTTPError(400, f"{name} must be an integer", field=name) from exc
    if not 1 <= value <= cap:
        raise HTTPError(400, f"{name} must be between 1 and {cap}", field=name)
    return value


def name_param(request: web.Request, key: str = "name") -> str:
    """A queue or exchange name from the path: 400 unless the broker could take it."""
    value = request.match_info[key]
    if not value or len(value.encode("utf-8", "surrogatepass")) > 255:
        raise HTTPError(400, f"{key} must be 1 to 255 bytes", field=key)
    if not _NAME.fullmatch(value):
        raise HTTPError(
            400, f"{key} may only hold letters, digits, spaces and _.:@#,/+-", field=key
        )
    return value
