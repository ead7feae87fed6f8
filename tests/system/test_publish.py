"""Publishing through the gateway's API, with the gateway and producers as real processes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from tests.support.stack import LOCAL_AMQP, Stack, running_stack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.broker]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One gateway and one producer for the module's API tests (no consumer: queues keep
    what is published, so the tests read it back)."""
    with running_stack(tmp_path_factory.mktemp("publish-stack"), consumers=0) as s:
        yield s


class Broker:
    """Reads queues of the local broker back with pika (its own connection, this thread)."""

    def __init__(self, url: str = LOCAL_AMQP) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

    def depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def get(self, queue: str) -> tuple[Any, bytes]:
        method, props, body = self.channel.basic_get(queue, auto_ack=True)
        assert method is not None, f"no message in {queue}"
        return props, body

    def wait_depth(self, queue: str, at_least: int, timeout: float = 30) -> int:
        return int(
            wait_until(
                lambda: (d := self.depth(queue)) >= at_least and d,
                timeout=timeout,
                what=f"{at_least} messages in {queue}",
            )
        )


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.connection.close()


def batch(stack: Stack, body: dict[str, Any], **headers: str) -> str:
    resp = stack.post("/api/batches", body, headers=headers)
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["job_id"]
    return job_id


# What reaches the queue ---------------------------------------------------------------------------


def test_properties_reach_the_message(stack: Stack, broker: Broker) -> None:
    queue = stack.create_queue()
    props = {
        "content_type": "application/vnd.acme+json",
        "content_encoding": "utf-8",
        "priority": 5,
        "expiration": 120000,
        "headers": {"tenant": "acme"},
        "message_id": f"id-{uuid.uuid4().hex}",
        "correlation_id": "corr-1",
        "type": "order.created",
        "app_id": "shop",
    }
    resp = stack.post("/api/messages", {"queue": queue, "body": {"n": 1}, "properties": props})
    assert resp.status_code == 200, resp.text
    sent = resp.json()
    assert sent["status"] == "confirmed"
    assert sent["message_id"] == props["message_id"]
    assert len(sent["trace_id"]) == 32

    got, body = broker.get(queue)
    assert json.loads(body) == {"n": 1}
    assert got.content_type == "application/vnd.acme+json"
    assert got.content_encoding == "utf-8"
    assert got.delivery_mode == 2
    assert got.priority == 5
    assert got.expiration == "120000"
    assert got.headers["tenant"] == "acme"
    assert got.message_id == props["message_id"]
    assert got.correlation_id == "corr-1"
    assert got.type == "order.created"
    assert got.app_id == "shop"
    assert got.timestamp is not None
    assert abs(got.timestamp - time.time()) < 60


def test_defaults_json_and_text_bodies(stack: Stack, broker: Broker) -> None:
    queue = stack.create_queue()
    as_json = stack.post("/api/messages", {"queue": queue, "body": {"a": [1, 2]}})
    as_text = stack.post("/api/messages", {"queue": queue, "body": "plain words"})
    assert as_json.status_code == as_text.status_code == 200, (as_json.text, as_text.text)
    first, first_body = broker.get(queue)
    second, second_body = broker.get(queue)
    assert (first.content_type, json.loads(first_body)) == ("application/json", {"a": [1, 2]})
    assert (second.content_type, second_body) == ("text/plain", b"plain words")
    for props, sent in ((first, as_json), (second, as_text)):
        assert props.delivery_mode == 2, "persistent by default"
        assert props.timestamp is not None, "stamped by default"
        assert props.message_id == sent.json()["message_id"], "generated when absent"
    assert first.message_id != second.message_id


def test_batch_template_makes_messages_differ(stack: Stack, broker: Broker) -> None:
    queue = stack.create_queue()
    job_id = batch(
        stack,
        {
            "queue": queue,
            "count": 30,
            "concurrency": 7,
            "body": {"seq": "{seq}", "id": "{uuid}", "at": "{now}"},
        },
    )
    result = stack.wait_batch(job_id, timeout=30)
    assert (result["status"], result["confirmed"]) == ("done", 30)
    bodies = [json.loads(broker.get(queue)[1]) for _ in range(30)]
    assert sorted(int(b["seq"]) for b in bodies) == list(range(30))
    assert len({b["id"] for b in bodies}) == 30
    assert all(b["at"].startswith("20") for b in bodies)


# Where it cannot go ------------------------------------------------------------------------------


def test_unroutable_message_is_404_returned(stack: Stack) -> None:
    missing = f"no-such-queue-{uuid.uuid4().hex[:8]}"
    resp = stack.post("/api/messages", {"queue": missing, "body": 1})
    assert resp.status_code == 404, resp.text
    body = resp.json()
    assert (body["status"], body["field"]) == ("returned", "queue")
    job = stack.http.get(f"/api/batches/{body['job_id']}").json()
    assert (job["confirmed"], job["returned"]) == (0, 1)
    via_exchange = stack.post("/api/messages", {"exchange": "amq.direct", "routing_key": missing})
    assert via_exchange.status_code == 404, via_exchange.text
    assert (via_exchange.json()["status"], via_exchange.json()["field"]) == (
        "returned",
        "routing_key",
    )


def test_unknown_exchange_is_404_and_spares_a_running_batch(stack: Stack, broker: Broker) -> None:
    queue = stack.create_queue()
    good = batch(stack, {"queue": queue, "count": 2000, "concurrency": 100, "body": "x"})
    bad = stack.post(
        "/api/batches",
        {"exchange": f"no-ex-{uuid.uuid4().hex[:8]}", "routing_key": "k", "count": 100},
    )
    assert bad.status_code == 202, bad.text
    single = stack.post(
        "/api/messages", {"exchange": f"no-ex-{uuid.uuid4().hex[:8]}", "routing_key": "k"}
    )
    assert single.status_code == 404, single.text
    assert single.json()["field"] == "exchange"
    failed = stack.wait_batch(bad.json()["job_id"], timeout=30)
    assert (failed["status"], failed["error_kind"], failed["confirmed"]) == (
        "failed",
        "not_found",
        0,
    )
    result = stack.wait_batch(good, timeout=60)
    assert (result["status"], result["confirmed"]) == ("done", 2000)
    assert broker.wait_depth(queue, 2000) == 2000


# Bad input ---------------------------------------------------------------------------------------

BAD: list[tuple[str, str, Any, int, str | None]] = [
    ("missing target", "/api/messages", {"body": 1}, 422, None),
    ("queue and exchange", "/api/messages", {"queue": "Q", "exchange": "e"}, 422, None),
    ("count zero", "/api/batches", {"queue": "Q", "count": 0}, 422, "count"),
    ("count too big", "/api/batches", {"queue": "Q", "count": 10**9}, 422, "count"),
    ("count as text", "/api/batches", {"queue": "Q", "count": "ten"}, 422, "count"),
    ("count as bool", "/api/batches", {"queue": "Q", "count": True}, 422, "count"),
    ("concurrency zero", "/api/batches", {"queue": "Q", "count": 5, "concurrency": 0}, 422,
     "concurrency"),
    ("concurrency too big", "/api/batches", {"queue": "Q", "count": 5, "concurrency": 10**6},
     422, "concurrency"),
    ("priority over 255", "/api/messages", {"queue": "Q", "properties": {"priority": 256}}, 422,
     "properties.priority"),
    ("priority negative", "/api/messages", {"queue": "Q", "properties": {"priority": -1}}, 422,
     "properties.priority"),
    ("negative ttl", "/api/messages", {"queue": "Q", "properties": {"expiration": -5}}, 422,
     "properties.expiration"),
    ("headers not an object", "/api/messages", {"queue": "Q", "properties": {"headers": [1]}},
     422, "properties.headers"),
    ("delivery mode 3", "/api/messages", {"queue": "Q", "properties": {"delivery_mode": 3}},
     422, "properties.delivery_mode"),
    ("unknown field", "/api/messages", {"queue": "Q", "bodyy": 1}, 422, "bodyy"),
    ("unknown property", "/api/messages", {"queue": "Q", "properties": {"ttl": 5}}, 422,
     "properties.ttl"),
    ("queue not a string", "/api/messages", {"queue": 5}, 422, "queue"),
    ("not an object", "/api/batches", [1, 2], 422, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "payload", "status", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_bad_input_is_refused_and_nothing_is_published(
    stack: Stack, broker: Broker, path: str, payload: Any, status: int, field: str | None
) -> None:
    queue = stack.create_queue()
    payload = json.loads(json.dumps(payload).replace('"Q"', json.dumps(queue)))
    resp = stack.post(path, payload)
    assert resp.status_code == status, resp.text
    error = resp.json()
    assert error["error"]
    if field is not None:
        assert error["field"] == field, error
    assert broker.depth(queue) == 0


def test_invalid_json_oversized_body_and_wrong_content_type(stack: Stack, broker: Broker) -> None:
    queue = stack.create_queue()
    for path in ("/api/messages", "/api/batches"):
        resp = stack.http.post(
            path, content=b'{"queue": "' + queue.encode() + b'", ', headers=_json_type()
        )
        assert resp.status_code == 400, resp.text
        assert "JSON" in resp.json()["error"]
        big = json.dumps({"queue": queue, "body": "x" * (2 << 20)}).encode()
        resp = stack.http.post(path, content=big, headers=_json_type())
        assert resp.status_code == 413, resp.text
        resp = stack.http.post(path, content=b"queue=" + queue.encode())
        assert resp.status_code == 415, resp.text
    assert broker.depth(queue) == 0


def _json_type() -> dict[str, str]:
    return {"Content-Type": "application/json"}


# Idempotency -------------------------------------------------------------------------------------


def test_idempotency_key_returns_the_same_job_and_refuses_a_different_body(
    stack: Stack, broker: Broker
) -> None:
    queue = stack.create_queue()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = stack.post("/api/messages", {"queue": queue, "body": {"a": 1}}, headers=key)
    again = stack.post("/api/messages", {"body": {"a": 1}, "queue": queue}, headers=key)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["job_id"] == again.json()["job_id"]
    assert first.json()["message_id"] == again.json()["message_id"]
    other = stack.post("/api/messages", {"queue": queue, "body": {"a": 2}}, headers=key)
    assert other.status_code == 409, other.text
    assert other.json()["field"] == "Idempotency-Key"

    spec = {"queue": queue, "count": 10, "body": "b"}
    job = batch(stack, spec, **key)  # the same key on another path is another request
    assert batch(stack, spec, **key) == job
    assert stack.post("/api/batches", {**spec, "count": 11}, headers=key).status_code == 409
    assert stack.wait_batch(job, timeout=30)["confirmed"] == 10
    wait_until(lambda: broker.depth(queue) == 11, timeout=10, what="1 + 10 messages")
    time.sleep(0.5)  # nothing else may arrive: a second publish would be here by now
    assert broker.depth(queue) == 11


# Batches -----------------------------------------------------------------------------------------


def test_batch_reports_progress_while_running_and_a_full_result(stack: Stack) -> None:
    queue = stack.create_queue()
    count = 20_000
    job_id = batch(stack, {"queue": queue, "count": count, "concurrency": 100, "body": {"n": 1}})
    seen: list[int] = []

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = stack.http.get(f"/api/batches/{job_id}").json()
        if job["status"] == "running":
            seen.append(job["confirmed"])
        return job if job["status"] not in ("queued", "running") else None

    result = wait_until(finished, timeout=120, interval=0.1, what="the batch to finish")
    steps = sorted(set(seen) - {0})
    assert len(steps) >= 3, f"progress grew in steps while running: {steps}"
    assert seen == sorted(seen), "confirmed never goes back"
    assert result["status"] == "done"
    assert result["final"] is True
    assert result["confirmed"] == result["published"] == result["count"] == count
    assert (result["returned"], result["nacked"], result["failed"]) == (0, 0, 0)
    assert result["retried"] == 0
    assert result["redelivered"] is False
    assert result["elapsed_s"] > 0
    assert result["rate"] > 0


def test_delete_cancels_a_running_batch(stack: Stack, broker: Broker) -> None:
    queue = stack.create_queue()
    job_id = batch(stack, {"queue": queue, "count": 5_000_000, "concurrency": 50, "body": "c"})
    wait_until(
        lambda: stack.http.get(f"/api/batches/{job_id}").json()["confirmed"] > 100,
        timeout=20,
        what="the batch to be under way",
    )
    resp = stack.http.delete(f"/api/batches/{job_id}")
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["status"] == "cancelled"
    assert 100 < result["confirmed"] < 5_000_000
    assert broker.wait_depth(queue, result["confirmed"]) == result["confirmed"]
    assert stack.http.delete(f"/api/batches/{job_id}").status_code == 409


def test_large_batch_all_arrive_in_flat_producer_memory(stack: Stack, broker: Broker) -> None:
    """50,000 messages arrive; the producer's RSS does not grow with the count (a million
    runs in `make bench`)."""
    queue = stack.create_queue()
    producer = stack.producers[0]
    baseline = producer.rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], producer.rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    count = 50_000
    try:
        job_id = batch(stack, {"queue": queue, "count": count, "concurrency": 500, "body": "m"})
        result = stack.wait_batch(job_id, timeout=150)
    finally:
        done.set()
        sampler.join(5)
    assert (result["status"], result["confirmed"]) == ("done", count)
    assert broker.wait_depth(queue, count) == count
    growth = peak[0] - baseline
    # Held messages would cost well over 1 KiB each (>50 MB); the window alone, a few MB.
    assert growth < 40 * 2**20, f"producer RSS grew {growth / 2**20:.1f} MiB"
    stack.http.delete(f"/api/queues/{queue}")


# Jobs without, or with more than one, producer ---------------------------------------------------


def test_timeout_answers_504_with_the_job_that_runs_later(
    stack_factory: Callable[..., Stack], broker: Broker
) -> None:
    stack = stack_factory(consumers=0, producers=0, env={"WARREN_AMQP__PUBLISH_TIMEOUT": "1"})
    queue = stack.create_queue()
    began = time.monotonic()
    resp = stack.post("/api/messages", {"queue": queue, "body": "later"})
    assert resp.status_code == 504, resp.text
    assert time.monotonic() - began < 10
    pending = resp.json()
    assert pending["status"] == "pending"
    job_id = pending["job_id"]
    assert stack.http.get(f"/api/batches/{job_id}").json()["status"] == "queued"
    stack.add_producer("late-producer")
    job = wait_until(
        lambda: (j := stack.http.get(f"/api/batches/{job_id}").json())["status"] == "done" and j,
        timeout=30,
        what="the queued job to run once a producer starts",
    )
    assert job["confirmed"] == 1
    assert broker.depth(queue) == 1


def test_replicas_share_jobs_and_each_runs_on_exactly_one(
    stack_factory: Callable[..., Stack], broker: Broker
) -> None:
    stack = stack_factory(consumers=0, producers=0)
    for name in ("p-a", "p-b"):
        stack.add_producer(name, env={"WARREN_REPLICA_ID": name})
    wait_until(lambda: len(stack.replicas("producer")) == 2, timeout=30, what="two producers")
    queue = stack.create_queue()
    jobs = [
        batch(stack, {"queue": queue, "count": 500, "concurrency": 20, "body": "{seq}"})
        for _ in range(20)
    ]
    results = [stack.wait_batch(j, timeout=60) for j in jobs]
    assert all(r["status"] == "done" and r["confirmed"] == 500 for r in results)
    assert all(r["redelivered"] is False for r in results)
    by_producer = {name: [r for r in results if r["producer"] == name] for name in ("p-a", "p-b")}
    assert all(by_producer.values()), {k: len(v) for k, v in by_producer.items()}
    assert broker.wait_depth(queue, 20 * 500) == 20 * 500, "each job ran exactly once"


def test_a_job_whose_producer_dies_runs_again_and_says_so(
    stack_factory: Callable[..., Stack], broker: Broker
) -> None:
    stack = stack_factory(consumers=0, producers=0)
    procs = {
        name: stack.add_producer(name, env={"WARREN_REPLICA_ID": name})
        for name in ("p-one", "p-two")
    }
    wait_until(lambda: len(stack.replicas("producer")) == 2, timeout=30, what="two producers")
    queue = stack.create_queue()
    count = 4000
    # A narrow window keeps the job running long enough to kill its producer mid-way.
    job_id = batch(stack, {"queue": queue, "count": count, "concurrency": 2, "body": "d"})
    running = wait_until(
        lambda: (j := stack.http.get(f"/api/batches/{job_id}").json())["confirmed"] > 200 and j,
        timeout=30,
        what="the batch to be under way",
    )
    victim = running["producer"]
    procs[victim].kill()
    result = stack.wait_batch(job_id, timeout=120)
    assert result["status"] == "done"
    assert result["producer"] != victim
    assert result["redelivered"] is True
    assert result["confirmed"] == count
    assert broker.wait_depth(queue, count) >= count


def test_a_job_cancelled_while_queued_never_runs(
    stack_factory: Callable[..., Stack], broker: Broker
) -> None:
    stack = stack_factory(consumers=0, producers=1, env={"WARREN_PRODUCER__MAX_JOBS": "1"})
    queue = stack.create_queue()
    busy = batch(stack, {"queue": queue, "count": 5_000_000, "concurrency": 10, "body": "b"})
    wait_until(
        lambda: stack.http.get(f"/api/batches/{busy}").json()["status"] == "running",
        timeout=20,
        what="the first job to run",
    )
    waiting = batch(stack, {"queue": queue, "count": 10, "body": "never"})
    assert stack.http.get(f"/api/batches/{waiting}").json()["status"] == "queued"
    assert stack.http.delete(f"/api/batches/{waiting}").status_code in (200, 202)
    stopped = stack.http.delete(f"/api/batches/{busy}")
    assert stopped.status_code == 200, stopped.text
    result = stack.wait_batch(waiting, timeout=30)
    assert (result["status"], result["confirmed"], result["published"]) == ("cancelled", 0, 0)
    assert broker.depth(queue) == stopped.json()["confirmed"]


def test_a_producer_stopping_mid_job_hands_it_to_another(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(consumers=0, producers=0)
    procs = {
        name: stack.add_producer(name, env={"WARREN_REPLICA_ID": name})
        for name in ("p-one", "p-two")
    }
    wait_until(lambda: len(stack.replicas("producer")) == 2, timeout=30, what="two producers")
    queue = stack.create_queue()
    job_id = batch(stack, {"queue": queue, "count": 5_000_000, "concurrency": 2, "body": "s"})
    running = wait_until(
        lambda: (j := stack.http.get(f"/api/batches/{job_id}").json())["confirmed"] > 100 and j,
        timeout=30,
        what="the batch to be under way",
    )
    victim = running["producer"]
    assert procs[victim].terminate(timeout=30) == 0
    taken_over = wait_until(
        lambda: (
            (j := stack.http.get(f"/api/batches/{job_id}").json())["producer"] != victim
            and j["status"] == "running"
            and j
        ),
        timeout=30,
        what="the other producer to run the job",
    )
    assert taken_over["redelivered"] is True
    stopped = stack.http.delete(f"/api/batches/{job_id}")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "cancelled"
