"""A property-based fuzz run of the whole API from its OpenAPI description (schemathesis):
valid and invalid requests to every operation, against the three services on a private broker
node (a fuzzed DELETE /api/queues/{name} must never reach the shared one). No 5xx allowed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from tests.support.rabbitnode import RabbitNode
from tests.support.stack import Stack

pytestmark = [pytest.mark.system, pytest.mark.broker]

TOKEN = "fuzz-token-41"
# Per operation and mode: small enough for the whole run to stay well under a minute.
EXAMPLES = 25
# Disconnecting the gateway makes every later call an honest 503 (not a client's mistake).
SKIP = {("POST", "/api/connection/disconnect")}


def test_fuzz_whole_api_finds_no_server_error(
    stack_factory: Callable[..., Stack], rabbit_node: RabbitNode
) -> None:
    stack = stack_factory(
        wait=False,
        consumers=1,
        amqp_url=rabbit_node.amqp_url,
        management_url=rabbit_node.management_url,
        env={
            "WARREN_GATEWAY__TOKEN": TOKEN,
            "WARREN_GATEWAY__MAX_BATCH_COUNT": "20",
            "WARREN_GATEWAY__MAX_CONCURRENCY": "5",
            "WARREN_AMQP__PUBLISH_TIMEOUT": "5",
        },
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    stack.http.headers.update(auth)
    stack.wait_ready()
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/api/openapi.json", headers=auth)
    schema.validate()

    failures: list[str] = []
    calls = 0
    session = requests.Session()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,  # the same examples every run: a failure reproduces
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                resp = case.call(base_url=stack.base_url, session=session, headers=auth, timeout=20)
                if resp.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} query={case.query!r} "
                        f"body={str(case.body)[:300]!r} -> {resp.status_code} {resp.text[:300]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): positive mode covered it.
                assert mode is GenerationMode.NEGATIVE, operation.path
    elapsed = time.monotonic() - started
    print(f"fuzz: {calls} requests in {elapsed:.1f} s")  # noqa: T201
    assert calls > 200
    assert not failures, "\n".join(failures[:20])
    # The gateway still serves, and logged no unhandled error.
    assert stack.health() == 200
    assert stack.http.get("/api/status").status_code == 200
    assert stack.gateway is not None
    assert "Unhandled error" not in stack.gateway.output()
