"""Processed-message records and the live event stream (WebSocket)."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType, web

from gateway import keys
from gateway.api.common import limit_param, state_of
from gateway.errors import HTTPError

log = logging.getLogger(__name__)


routes = web.RouteTableDef()


@routes.get("/api/messages/received")
async def received(request: web.Request) -> web.Response:
    q = request.query
    for name in ("queue", "worker", "q"):
        if len(q.get(name, "")) > 255:
            raise HTTPError(400, f"{name} is too long", field=name)
    messages = state_of(request).query_records(
        limit=limit_param(request, default=100, cap=state_of(request).records.maxlen or 1000),
        queue=q.get("queue") or None,
        worker=q.get("worker") or None,
        text=q.get("q") or None,
    )
    return web.json_response({"messages": messages, "count": len(messages)})


@routes.delete("/api/messages/received")
async def clear_received(request: web.Request) -> web.Response:
    state = state_of(request)
    cleared = len(state.records)
    state.records.clear()
    return web.json_response({"cleared": cleared})


@routes.get("/api/events")
async def events(request: web.Request) -> web.WebSocketResponse:
    # Clients only send small commands ({"pause": ...}): a big frame is refused by aiohttp.
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        raise HTTPError(400, "this is a WebSocket endpoint: connect with 'Upgrade: websocket'")
    await ws.prepare(request)
    sockets = request.app[keys.SOCKETS]
    sockets.add(ws)
    sub = state_of(request).hub.subscribe()

    async def sender() -> None:
        while not ws.closed:
            await sub.ready.wait()
            batch = sub.drain()
            if sub.dropped:
                # The client fell behind and its oldest events were dropped: say so, once.
                batch.insert(0, {"type": "dropped", "data": {"count": sub.dropped}})
                sub.dropped = 0
            if batch:
                await ws.send_str(json.dumps(batch))
            # Batch events: at most ~10 frames a second per client, whatever the record rate.
            await asyncio.sleep(0.1)

    task = asyncio.create_task(sender(), name="ws-sender")
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    command = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                if isinstance(command, dict) and "pause" in command:
                    sub.paused = bool(command["pause"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sockets.discard(ws)
    return ws
