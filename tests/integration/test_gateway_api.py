"""The gateway's JSON API in-process (aiohttp test server) against the real local broker: the
OpenAPI description, queue administration, the management API fallback, token, bad input."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import httpx
import pytest
import schemathesis
from aio_pika.abc import AbstractRobustConnection
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from gateway import keys
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support.procs import free_port

pytestmark = [pytest.mark.broker]

MGMT = "http://127.0.0.1:15672"


def _cleanup_namespace(namespace: str, queues: list[str], exchanges: list[str]) -> None:
    with httpx.Client(base_url=MGMT, auth=("guest", "guest"), timeout=5) as mgmt:
        for name in queues:
            mgmt.delete(f"/api/queues/%2F/{name}")
        for name in exchanges:
            mgmt.delete(f"/api/exchanges/%2F/{name}")
        for q in mgmt.get("/api/queues/%2F", params={"columns": "name"}).json():
            if q["name"].startswith(f"{namespace}."):
                mgmt.delete(f"/api/queues/%2F/{q['name']}")
        for e in mgmt.get("/api/exchanges/%2F", params={"columns": "name"}).json():
            if e["name"].startswith(f"{namespace}."):
                mgmt.delete(f"/api/exchanges/%2F/{e['name']}")


class Gateway:
    def __init__(self, client: TestClient[web.Request, web.Application], namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.created: list[str] = []
        self.exchanges: list[str] = []

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[return-value]

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))


@pytest.fixture
async def gateway_factory(
    unique: Callable[[str], str],
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Gateway] = []

    async def make(*, ready: bool = True, **overrides: Any) -> Gateway:
        namespace = unique("tg")
        settings = GatewaySettings(namespace=namespace, **overrides)
        app = create_app(settings)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        gw = Gateway(client, namespace)
        made.append(gw)
        if ready:
            assert await app[keys.BROKER].wait_ready(timeout=15), "gateway connected"
        return gw

    yield make
    for gw in made:
        await gw.client.close()
        await asyncio.to_thread(_cleanup_namespace, gw.namespace, gw.created, gw.exchanges)


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any]) -> Gateway:
    gw: Gateway = await gateway_factory()
    return gw


async def depth(amqp: AbstractRobustConnection, name: str) -> int:
    async with amqp.channel() as ch:
        queue = await ch.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0


async def seeded_queue(gw: Gateway, amqp: AbstractRobustConnection, unique: Any) -> str:
    """A queue created through the API holding three messages."""
    name = unique("api")
    resp = await gw.client.post("/api/queues", json={"name": name, "dead_letter": True})
    assert resp.status == 201, await resp.text()
    gw.created += [name, f"{name}.dlq"]
    async with amqp.channel() as ch:
        for i in range(3):
            await ch.default_exchange.publish(aio_pika.Message(str(i).encode()), name)
    return name


# OpenAPI --------------------------------------------------------------------------------------


async def test_openapi_describes_every_route_and_validates(gateway: Gateway) -> None:
    resp = await gateway.client.get("/api/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    OPENAPI_31_VALIDATOR.validate(spec)
    schemathesis.openapi.from_dict(spec).validate()

    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {
        (r.method, r.resource.canonical)
        for r in gateway.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and r.method not in ("HEAD", "OPTIONS")
    }
    assert served == described
    # Bodies come from the pydantic models, settings-derived limits included.
    schemas = spec["components"]["schemas"]
    assert schemas["QueueCreate"]["properties"]["type"]["enum"] == ["classic", "quorum"]
    assert schemas["QueueCreate"]["additionalProperties"] is False
    assert schemas["PublishBatch"]["properties"]["count"]["maximum"] == 10_000_000


# Queues, exchanges, bindings ------------------------------------------------------------------


async def test_queue_lifecycle_with_conflict_purge_and_delete(
    gateway: Gateway, amqp: AbstractRobustConnection, unique: Callable[[str], str]
) -> None:
    c = gateway.client
    name = unique("life")
    gateway.created += [name, f"{name}.dlq"]
    spec = {
        "name": name,
        "type": "quorum",
        "dead_letter": True,
        "delivery_limit": 3,
        "message_ttl": 60000,
        "max_length": 1000,
    }
    resp = await c.post("/api/queues", json=spec)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["name"] == name
    assert body["type"] == "quorum"
    assert body["dead_letter_queue"] == f"{name}.dlq"
    assert body["arguments"]["x-max-length"] == 1000
    assert body["arguments"]["x-message-ttl"] == 60000
    assert body["messages_ready"] == 0
    assert "rates_available" in body

    # The same declaration again is fine; other arguments are a conflict, named.
    assert (await c.post("/api/queues", json=spec)).status == 201
    resp = await c.post("/api/queues", json={**spec, "max_length": 5})
    assert resp.status == 409
    err = await resp.json()
    assert err["field"] == "name"
    assert "x-max-length" in err["error"]
    # ... and the gateway's own channel is unharmed: it still answers and publishes.
    assert (await c.get("/api/health")).status == 200
    job = await c.post("/api/batches", json={"queue": name, "count": 1})
    assert job.status == 202, await job.text()

    async with amqp.channel() as ch:
        for i in range(4):
            await ch.default_exchange.publish(aio_pika.Message(str(i).encode()), name)

    async def ready() -> int:
        detail = await (await c.get(f"/api/queues/{name}")).json()
        return int(detail["messages_ready"])

    for _ in range(100):
        if await ready() == 4:
            break
        await asyncio.sleep(0.1)
    detail = await (await c.get(f"/api/queues/{name}")).json()
    assert {"messages_ready", "messages_unacked", "consumers", "rates"} <= detail.keys()

    resp = await c.post(f"/api/queues/{name}/purge")
    assert resp.status == 200
    assert (await resp.json())["purged"] == 4
    assert await depth(amqp, name) == 0

    resp = await c.delete(f"/api/queues/{name}")
    assert resp.status == 200
    assert (await c.get(f"/api/queues/{name}")).status == 404
    assert (await c.delete(f"/api/queues/{name}")).status == 404
    assert (await c.post(f"/api/queues/{name}/purge")).status == 404


async def test_exchanges_of_every_type_and_bindings(
    gateway: Gateway, amqp: AbstractRobustConnection, unique: Callable[[str], str]
) -> None:
    c = gateway.client
    queue = unique("bq")
    gateway.created.append(queue)
    assert (await c.post("/api/queues", json={"name": queue})).status == 201
    names = {}
    for kind in ("direct", "topic", "fanout", "headers"):
        names[kind] = unique(f"x-{kind}")
        gateway.exchanges.append(names[kind])
        resp = await c.post("/api/exchanges", json={"name": names[kind], "type": kind})
        assert resp.status == 201, await resp.text()
    resp = await c.post("/api/exchanges", json={"name": names["direct"], "type": "fanout"})
    assert resp.status == 409
    listed = await (await c.get("/api/exchanges")).json()
    assert "exchanges" in listed

    binds = [
        {"queue": queue, "exchange": names["topic"], "routing_key": "order.*"},
        {
            "queue": queue,
            "exchange": names["headers"],
            "arguments": {"x-match": "all", "kind": "a", "n": 2},
        },
    ]
    for bind in binds:
        resp = await c.post("/api/bindings", json=bind)
        assert resp.status == 201, await resp.text()
    async with amqp.channel() as ch:
        hx = await ch.get_exchange(names["headers"])
        await hx.publish(aio_pika.Message(b"yes", headers={"kind": "a", "n": 2}), "")
        await hx.publish(aio_pika.Message(b"no", headers={"kind": "b", "n": 2}), "")
        tx = await ch.get_exchange(names["topic"])
        await tx.publish(aio_pika.Message(b"topic"), "order.created")
    assert await depth(amqp, queue) == 2

    missing = {"queue": queue, "exchange": unique("nope")}
    assert (await c.post("/api/bindings", json=missing)).status == 404
    bad_match = {"queue": queue, "exchange": names["headers"], "arguments": {"x-match": "some"}}
    assert (await c.post("/api/bindings", json=bad_match)).status == 422
    assert (await c.get("/api/health")).status == 200


async def test_without_management_api_stats_come_from_passive_declares(
    gateway_factory: Callable[..., Any],
    amqp: AbstractRobustConnection,
    unique: Callable[[str], str],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    gw: Gateway = await gateway_factory(management={"url": closed, "timeout": 1})
    name = await seeded_queue(gw, amqp, unique)
    listed = await (await gw.client.get("/api/queues")).json()
    assert listed["rates_available"] is False
    mine = [q for q in listed["queues"] if q["name"] == name]
    assert mine
    assert mine[0]["messages_ready"] == 3
    assert mine[0]["rates"] is None
    detail = await (await gw.client.get(f"/api/queues/{name}")).json()
    assert detail["rates_available"] is False
    assert detail["messages_ready"] == 3
    status = await (await gw.client.get("/api/status")).json()
    assert status["rates_available"] is False
    assert status["gateway"]["management"]["available"] is False


async def test_a_management_api_that_never_answers_is_bounded_by_its_timeout(
    gateway_factory: Callable[..., Any],
    amqp: AbstractRobustConnection,
    unique: Callable[[str], str],
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw: Gateway = await gateway_factory(
            management={"url": f"http://127.0.0.1:{port}", "timeout": 0.5}
        )
        name = await seeded_queue(gw, amqp, unique)
        async with asyncio.timeout(10):  # a bound on the test, not a timing assertion
            listed = await (await gw.client.get("/api/queues")).json()
            status = await (await gw.client.get("/api/status")).json()
        assert accepted, "the gateway did try the management API"
        assert listed["rates_available"] is False
        assert name in [q["name"] for q in listed["queues"]]
        assert status["rates_available"] is False
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_status_hides_credentials_of_both_urls(
    gateway_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-pw-zz9"
    gw: Gateway = await gateway_factory(
        ready=False,
        amqp={"url": f"amqp://warren:{secret}@127.0.0.1:{free_port()}/"},
        management={"url": f"http://mgmt:{secret}@127.0.0.1:{free_port()}", "timeout": 1},
    )
    for path in ("/api/status", "/api/health", "/api/queues", "/api/openapi.json"):
        text = await (await gw.client.get(path)).text()
        assert secret not in text, path
    status = await (await gw.client.get("/api/status")).json()
    assert status["broker"]["url"].startswith("amqp://warren:***@")
    assert "@" not in status["gateway"]["management"]["url"]
    # Connection attempts to the closed port and the failed management call were logged ...
    for _ in range(50):
        if any("127.0.0.1" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    assert caplog.records
    # ... without either password.
    assert secret not in caplog.text


# Access ---------------------------------------------------------------------------------------


async def test_token_guards_every_call_and_the_event_stream(
    gateway_factory: Callable[..., Any],
) -> None:
    token = "tok-123"
    gw: Gateway = await gateway_factory(gateway={"token": token})
    c = gw.client
    spec = await (await c.get("/api/openapi.json", headers=_bearer(token))).json()
    for path, ops in spec["paths"].items():
        concrete = path.replace("{name}", "x").replace("{queue}", "x").replace("{job_id}", "x")
        for method in ops:
            for headers in ({}, _bearer("wrong"), {"Authorization": token}):
                resp = await c.request(method.upper(), concrete, headers=headers)
                if path == "/api/health":
                    assert resp.status == 200
                    continue
                assert resp.status == 401, (method, path, headers)
                assert resp.headers["WWW-Authenticate"] == "Bearer"
                assert "token" in (await resp.json())["error"]
    # The query token is for the event stream only (browsers cannot set WebSocket headers).
    assert (await c.get("/api/status", params={"token": token})).status == 401
    assert (await c.get("/api/status", headers=_bearer(token))).status == 200

    async with c.session.ws_connect(gw.url(f"/api/events?token={token}")) as ws:
        assert not ws.closed
    with pytest.raises(Exception, match="401"):
        await c.session.ws_connect(gw.url("/api/events"))
    # Static files and the page stay reachable: the page asks for the token itself.
    assert (await c.get("/")).status == 200


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Bad input ------------------------------------------------------------------------------------

BIG = 1 << 20  # the default body limit


def _bad_requests(queue: str, ns: str) -> list[tuple[str, str, dict[str, Any], int]]:
    deep = "[" * 5000 + "]" * 5000
    deep_body = '{"queue": "' + queue + '", "body": ' + deep + "}"
    inf_body = '{"queue": "' + queue + '", "body": 1e999}'
    nan_body = '{"queue": "' + queue + '", "body": NaN}'
    big_int = '{"name": "q", "max_length": ' + "9" * 5000 + "}"
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/api/queues", {"data": '{"name": ', "ct": "json"}, 400),
        ("POST", "/api/queues", {"data": "", "ct": "json"}, 400),
        ("POST", "/api/queues", {"data": "[1, 2]", "ct": "json"}, 422),
        ("POST", "/api/queues", {"json": {"name": 5}}, 422),
        ("POST", "/api/queues", {"json": {"name": queue, "durable": "yes please"}}, 422),
        ("POST", "/api/queues", {"json": {"name": queue, "bogus": 1}}, 422),
        ("POST", "/api/queues", {"json": {"name": queue, "max_length": 10**40}}, 422),
        ("POST", "/api/queues", {"json": {"name": queue, "message_ttl": -1}}, 422),
        ("POST", "/api/queues", {"json": {"name": "x" * 100_000}}, 422),
        ("POST", "/api/queues", {"json": {"name": "é" * 200}}, 422),
        ("POST", "/api/queues", {"json": {"name": "amq.mine"}}, 422),
        ("POST", "/api/queues", {"json": {"name": "a\u0000b"}}, 422),
        ("POST", "/api/queues", {"json": {"name": queue, "type": "stream"}}, 422),
        ("POST", "/api/queues", {"data": deep, "ct": "json"}, 400),
        (
            "POST",
            "/api/queues",
            {"data": big_int, "ct": "json"},
            400,
        ),
        (
            "POST",
            "/api/messages",
            {"data": inf_body, "ct": "json"},
            400,
        ),
        (
            "POST",
            "/api/messages",
            {"data": nan_body, "ct": "json"},
            400,
        ),
        ("POST", "/api/queues", {"data": b'{"name": "\xff\xfe"}', "ct": "json"}, 400),
        ("POST", "/api/queues", {"data": "x" * (BIG + 1), "ct": "json"}, 413),
        ("POST", "/api/queues", {"data": "name=x", "ct": "form"}, 415),
        ("POST", "/api/queues", {"data": '{"name": "x"}', "ct": "text"}, 415),
        ("POST", "/api/queues", {"data": '{"name": "x"}', "ct": None}, 415),
        ("POST", f"/api/queues/{queue}/purge", {"data": "confirm=1", "ct": "form"}, 415),
        ("DELETE", f"/api/queues/{queue}", {"data": "x", "ct": "text"}, 415),
        ("POST", "/api/connection/disconnect", {"data": "a=1", "ct": "form"}, 415),
        ("POST", "/api/messages", {"data": deep_body, "ct": "json"}, 400),
        ("POST", "/api/messages", {"json": {"body": 1}}, 422),
        ("POST", "/api/messages", {"json": {"queue": queue, "exchange": "x"}}, 422),
        (
            "POST",
            "/api/messages",
            {"json": {"queue": queue, "properties": {"priority": 10**9}}},
            422,
        ),
        ("POST", "/api/messages", {"data": "a" * (BIG + 10), "ct": "json"}, 413),
        # Found by the fuzz run: what the AMQP encoder in the producer cannot take.
        (
            "POST",
            "/api/messages",
            {"json": {"queue": queue, "properties": {"headers": {"n": 2**70}}}},
            422,
        ),
        (
            "POST",
            "/api/messages",
            {"json": {"queue": queue, "properties": {"content_type": "é" * 200}}},
            422,
        ),
        (
            "POST",
            "/api/messages",
            {"json": {"queue": queue, "properties": {"headers": {"k" * 129: 1}}}},
            422,
        ),
        ("POST", "/api/messages", {"data": "body=<script>", "ct": "form"}, 415),
        ("POST", "/api/batches", {"json": {"queue": queue, "count": 10**12}}, 422),
        ("POST", "/api/batches", {"json": {"queue": queue, "count": 0}}, 422),
        ("POST", "/api/batches", {"json": {"queue": queue, "count": 5, "concurrency": 10**9}}, 422),
        ("POST", "/api/batches", {"json": {"queue": queue, "count": "5"}}, 422),
        ("POST", "/api/exchanges", {"json": {"name": "e", "type": "x-delayed"}}, 422),
        ("POST", "/api/exchanges", {"json": {"name": ""}}, 422),
        ("POST", "/api/bindings", {"json": {"queue": queue}}, 422),
        (
            "POST",
            "/api/bindings",
            {"json": {"queue": queue, "exchange": "e", "arguments": {"a": {"b": 1}}}},
            422,
        ),  # noqa: E501
        ("POST", "/api/consumers", {"json": {"queue": queue, "prefetch": 0}}, 422),
        ("POST", "/api/consumers", {"json": {"queue": queue, "prefetch": 10**6}}, 422),
        # Warren's own names (the job queue, its exchanges) are not the user's to change.
        ("DELETE", f"/api/queues/{ns}.jobs", {}, 403),
        ("POST", f"/api/queues/{ns}.jobs/purge", {}, 403),
        ("POST", "/api/queues", {"json": {"name": f"{ns}.jobs", "max_length": 1}}, 403),
        ("POST", "/api/exchanges", {"json": {"name": f"{ns}.events", "type": "fanout"}}, 403),
        ("POST", "/api/bindings", {"json": {"queue": queue, "exchange": f"{ns}.events"}}, 403),
        ("GET", "/api/queues/..%2F..%2Fetc%2Fpasswd", {}, 404),
        ("GET", "/api/queues/" + "q" * 300, {}, 400),
        ("GET", "/api/queues/a%00b", {}, 400),
        ("DELETE", "/api/queues/..%2F" + queue, {}, 404),
        ("GET", "/api/batches/..%2F..%2Fsecret", {}, 400),
        ("GET", "/api/batches/' OR 1=1 --", {}, 400),
        ("GET", "/api/batches/" + "a" * 65, {}, 400),
        ("GET", "/api/batches/deadbeef", {}, 404),
        ("DELETE", "/api/batches/deadbeef", {}, 404),
        ("DELETE", "/api/consumers/never-consumed-xyz", {}, 404),
        ("GET", "/api/messages/received?limit=-1", {}, 400),
        ("GET", "/api/messages/received?limit=0", {}, 400),
        ("GET", "/api/messages/received?limit=99999999999999999999999", {}, 400),
        ("GET", "/api/messages/received?limit=1e3", {}, 400),
        ("GET", "/api/messages/received?limit=", {}, 400),
        ("GET", "/api/messages/received?queue=" + "q" * 1000, {}, 400),
        ("GET", "/api/batches?limit=NaN", {}, 400),
        ("GET", "/api/batches?limit=100000", {}, 400),
        ("GET", "/api/events", {}, 400),
        ("GET", "/api/nothing-here", {}, 404),
        ("GET", "/api/%2e%2e/%2e%2e/etc/passwd", {}, 404),
        ("GET", "/api/queues/%2e%2e", {}, 404),
        ("PUT", "/api/queues", {"json": {}}, 405),
        ("PATCH", f"/api/queues/{queue}", {"json": {}}, 405),
    ]
    return cases


CONTENT_TYPES = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "text": "text/plain",
    None: None,
}


async def test_bad_input_on_every_endpoint_is_a_named_4xx_and_changes_nothing(
    gateway: Gateway, amqp: AbstractRobustConnection, unique: Callable[[str], str]
) -> None:
    queue = await seeded_queue(gateway, amqp, unique)
    jobs = f"{gateway.namespace}.jobs"
    jobs_before = await depth(amqp, jobs)
    async with httpx.AsyncClient(base_url=gateway.url("/"), timeout=10) as http:
        for method, path, kw, expected in _bad_requests(queue, gateway.namespace):
            kwargs: dict[str, Any] = {}
            if "json" in kw:
                kwargs["json"] = kw["json"]
            if "data" in kw:
                data = kw["data"]
                kwargs["content"] = data if isinstance(data, bytes) else data.encode()
                ctype = CONTENT_TYPES[kw["ct"]]
                kwargs["headers"] = {"Content-Type": ctype} if ctype else {}
            resp = await http.request(method, path, **kwargs)
            what = f"{method} {path[:80]} {str(kw)[:80]}"
            assert resp.status_code == expected, f"{what}: {resp.status_code} {resp.text[:300]}"
            assert resp.headers["Content-Type"].startswith("application/json"), (what, resp.text)
            body = resp.json()
            assert isinstance(body["error"], str), what
            assert body["error"], what
            assert resp.headers["Content-Type"].startswith("application/json")
            assert await depth(amqp, queue) == 3, f"{what} changed the queue"
    assert await depth(amqp, jobs) == jobs_before, "a refused publish queued a job"
    for path in ("/static/..%2F..%2Fapp.py", "/static/%2e%2e/keys.py", "/static/../settings.py"):
        resp = await gateway.client.get(path)
        assert resp.status in (403, 404), path
        assert "AppKey" not in await resp.text()
    assert (await gateway.client.get("/api/health")).status == 200


def _raw_http(port: int, request: bytes, *, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in data:
                break
        return b"".join(chunks)


async def test_lying_content_length_and_chunked_bodies_over_the_limit_are_413(
    gateway: Gateway,
) -> None:
    port = gateway.client.port
    assert port is not None
    # Announces 100 MB, sends 20 bytes: refused at once, without waiting for the rest.
    lying = (
        b"POST /api/queues HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n" + b'{"name": "abcdefgh"}'
    )
    reply = await asyncio.to_thread(_raw_http, port, lying)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"error"' in reply

    # No Content-Length at all (chunked), going over the limit while it streams.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536

    async with httpx.AsyncClient(base_url=gateway.url("/"), timeout=10) as http:
        resp = await http.post(
            "/api/queues", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 413, resp.text
        assert "limit" in resp.json()
    assert (await gateway.client.get("/api/health")).status == 200


async def test_two_hundred_concurrent_submits(
    gateway: Gateway, amqp: AbstractRobustConnection, unique: Callable[[str], str]
) -> None:
    queue = await seeded_queue(gateway, amqp, unique)
    jobs = f"{gateway.namespace}.jobs"
    before = await depth(amqp, jobs)
    # aiohttp's client: the server and the client share this test's event loop, so the client
    # must be light for the server to be what is measured.
    http = gateway.client

    async def good(i: int) -> int:
        body = {"queue": queue, "count": 1, "body": {"i": i}}
        async with http.post("/api/batches", json=body) as resp:
            return resp.status

    async def bad(i: int) -> int:
        async with http.post("/api/batches", json={"queue": queue, "count": -i}) as resp:
            return resp.status

    codes = await asyncio.gather(*(good(i) for i in range(200)), *(bad(i) for i in range(200)))
    assert codes[:200] == [202] * 200
    assert codes[200:] == [422] * 200
    # Exactly the accepted jobs are queued for producers (none run here); the queue is untouched.
    assert await depth(amqp, jobs) == before + 200
    assert await depth(amqp, queue) == 3
    assert (await gateway.client.get("/api/health")).status == 200
    listed = await (await gateway.client.get("/api/batches?limit=1000")).json()
    assert len(listed["jobs"]) >= 200


# The event stream -----------------------------------------------------------------------------


async def test_event_stream_batches_and_pause(gateway: Gateway) -> None:
    from warren.contracts import ProcessedRecord

    state = gateway.app[keys.STATE]
    async with gateway.client.session.ws_connect(gateway.url("/api/events")) as ws:
        fields = ProcessedRecord.model_json_schema()["required"]
        assert "queue" in fields
        # Many events published at once arrive as few frames (batched), in order.
        for i in range(50):
            state.hub.publish("job", {"job_id": str(i)})
        seen: list[dict[str, Any]] = []
        frames = 0
        while len(seen) < 50:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == WSMsgType.TEXT
            frames += 1
            seen += [e for e in json.loads(msg.data) if e["type"] == "job"]
        assert [e["data"]["job_id"] for e in seen] == [str(i) for i in range(50)]
        assert frames < 50
        await ws.send_str(json.dumps({"pause": True}))
        await ws.send_str("not json")  # ignored, the stream stays open
        await ws.send_str(json.dumps({"pause": False}))
        state.hub.publish("job", {"job_id": "after"})
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert any(e["data"].get("job_id") == "after" for e in json.loads(msg.data))


async def test_a_client_that_falls_behind_is_told_what_it_missed(gateway: Gateway) -> None:
    state = gateway.app[keys.STATE]
    async with gateway.client.session.ws_connect(gateway.url("/api/events")) as ws:
        for _ in range(50):  # until the subscription exists
            if len(state.hub):
                break
            await asyncio.sleep(0.05)
        for i in range(12_000):  # more than a subscriber buffers (5,000), at once
            state.hub.publish("job", {"i": i})
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not any(e["data"].get("i") == 11_999 for e in events if e["type"] == "job"):
                events += json.loads((await ws.receive()).data)
        dropped = sum(e["data"]["count"] for e in events if e["type"] == "dropped")
        jobs = [e for e in events if e["type"] == "job"]
        assert dropped + len(jobs) == 12_000
        assert dropped >= 7_000
        # A client frame over the size limit ends that client's stream, nothing else.
        await ws.send_str("x" * 100_000)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert (await gateway.client.get("/api/health")).status == 200


def test_without_a_token_the_gateway_listens_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WARREN_GATEWAY__HOST", raising=False)
    monkeypatch.delenv("WARREN_GATEWAY__TOKEN", raising=False)
    settings = GatewaySettings()
    assert settings.gateway.token is None
    assert settings.gateway.host == "127.0.0.1"


def test_subscriber_buffer_is_bounded() -> None:
    from gateway.state import EventHub

    hub = EventHub(buffer=100)
    sub = hub.subscribe()
    for i in range(1000):
        hub.publish("job", {"i": i})
    events = sub.drain()
    assert len(events) == 100
    assert sub.dropped == 900
    assert events[-1]["data"]["i"] == 999
