"""Fault-suite fixtures: one private node for the session, a guard that leaves it healthy after
every test, Warren's stack pointed at it, and the results table written at the end."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ledger import LedgerResult
from tests.support.rabbitnode import RabbitNode, RabbitNodeError
from tests.support.stack import Stack

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).parent / "results"
DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
DEFAULT_TICK_MS = 60_000

# The knobs the suite sets (docs/faults.md explains each).
FAULT_ENV = {
    "WARREN_AMQP__HEARTBEAT": "2",
    "WARREN_AMQP__RECONNECT_INTERVAL": "0.5",
    "WARREN_AMQP__CONNECT_BACKOFF_MAX": "2",
    "WARREN_AMQP__PUBLISH_TIMEOUT": "3",
    "WARREN_CONSUMER__RECORDS_PER_SECOND": "1000000",
    "WARREN_CONSUMER__DRAIN_TIMEOUT": "10",
    "WARREN_CONSUMER__RETRY_BACKOFF": "0.2",
    "WARREN_PRODUCER__RETRY_DEADLINE": "60",
    "WARREN_GATEWAY__LOST_AFTER": "4",
}

_results: dict[str, LedgerResult] = {}


def restore(node: RabbitNode) -> None:
    """Bring the node back to normal whatever a test left behind (bounded)."""
    if node.pid() is None:
        node.start()
    # One CLI call (each costs a second or more): defaults back, and what is still wrong.
    state = node.rabbitmqctl(
        "eval",
        f"application:set_env(rabbit, consumer_timeout, {DEFAULT_CONSUMER_TIMEOUT_MS}), "
        f"application:set_env(rabbit, channel_tick_interval, {DEFAULT_TICK_MS}), "
        "{rabbit:is_running(), rabbit_alarm:get_alarms()}.",
    ).replace(" ", "")
    if "{false," in state:
        node.start_app()
    if "resource_limit,memory" in state:
        node.memory_alarm(False)
    if "resource_limit,disk" in state:
        node.disk_alarm(False)


@pytest.fixture
def node(rabbit_node: RabbitNode) -> Iterator[RabbitNode]:
    """The session's private node; always left running, alarm-free and with default settings."""
    try:
        restore(rabbit_node)
    except RabbitNodeError:
        rabbit_node.stop(clean=False)
        rabbit_node.start()
    try:
        yield rabbit_node
    finally:
        try:
            restore(rabbit_node)
        except RabbitNodeError:
            log.exception("Restoring the node failed; restarting it")
            rabbit_node.stop(clean=False)
            rabbit_node.start()


@pytest.fixture
def fault_stack(node: RabbitNode, stack_factory: Callable[..., Stack]) -> Callable[..., Stack]:
    """``fault_stack(consumers=2, env={...}, amqp_url=...)`` on the private node."""

    def make(*, env: dict[str, str] | None = None, **kw: Any) -> Stack:
        kw.setdefault("amqp_url", node.amqp_url)
        kw.setdefault("management_url", node.management_url)
        return stack_factory(env={**FAULT_ENV, **(env or {})}, **kw)

    return make


@pytest.fixture
def record() -> Callable[[LedgerResult], None]:
    """``record(result)``: add a fault's accounting to the results table."""

    def add(result: LedgerResult) -> None:
        _results[result.fault] = result

    return add


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _results:
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    # A partial run (one test) updates its own rows and keeps the others' last results.
    merged: dict[str, dict[str, Any]] = {}
    previous = RESULTS_DIR / "latest.json"
    if previous.exists():
        try:
            for row in json.loads(previous.read_text())["faults"]:
                merged[row["fault"]] = row
        except (ValueError, KeyError, TypeError):
            merged = {}
    for result in _results.values():
        merged[result.fault] = {**result.as_dict(), "run_at": stamp}
    rows = list(merged.values())
    (RESULTS_DIR / "latest.json").write_text(
        json.dumps({"run_at": stamp, "faults": rows}, indent=2) + "\n"
    )
    cols = [
        ("fault", "fault"),
        ("published", "published"),
        ("confirmed", "confirmed"),
        ("processed", "processed"),
        ("dead_lettered", "dead-lettered"),
        ("duplicates_dropped", "duplicates dropped"),
        ("duplicated", "processed twice"),
        ("lost", "lost"),
        ("refused", "API 503/504 (retried)"),
        ("server_errors", "API 500"),
        ("seconds", "s"),
        ("notes", "notes"),
    ]
    lines = [
        f"# Fault suite: last run ({stamp})",
        "",
        "Written by `uv run pytest -m faults` (tests/faults/conftest.py). One row per fault;",
        "a partial run updates its own rows.",
        "",
        "| " + " | ".join(title for _, title in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(row[key]) for key, _ in cols) + " |")
    (RESULTS_DIR / "latest.md").write_text("\n".join(lines) + "\n")
