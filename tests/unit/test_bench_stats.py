"""The harness's arithmetic: percentiles, medians, target verdicts (no I/O)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# bench/ is a top-level package of the repo, not an installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import body_document, payload, percentile
from bench.config import QUICK
from bench.report import evaluate
from bench.runner import MEASURES, Outcome, RunResult


def test_payload_is_one_kib_and_matches_the_batch_body() -> None:
    assert len(payload()) == 1024
    assert json.dumps(body_document()).encode() == payload()


@pytest.mark.parametrize(
    ("pct", "expected"), [(50, 50.0), (90, 90.0), (99, 99.0), (100, 100.0), (1, 1.0)]
)
def test_nearest_rank_percentile(pct: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, pct) == expected


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def _result(figures: dict[str, list[dict[str, float]]]) -> RunResult:
    outcomes = {m.key: Outcome(m) for m in MEASURES}
    for key, runs in figures.items():
        outcomes[key].runs.extend(runs)
    return RunResult(cfg=QUICK, outcomes=outcomes)


def test_verdicts_use_medians_and_ratios() -> None:
    result = _result(
        {
            "warren_batch": [{"rate": 3000.0}, {"rate": 4000.0}, {"rate": 5000.0}],
            "aiopika_publish_window": [{"rate": 4000.0}],
            "pika_publish_sequential": [{"rate": 2000.0}],
            "warren_latency": [{"p99_ms": 5.0}],
            "aiopika_latency": [{"p99_ms": 2.0}],
        }
    )
    rows = {r["check"]: r for r in evaluate(result)}
    window = rows["1. batch publish vs aio-pika window W"]
    assert window["warren"] == 4000.0
    assert window["ratio"] == pytest.approx(1.0)
    assert window["result"] == "pass"
    assert rows["1. batch publish vs pika sequential"]["result"] == "fail"
    assert rows["4. p99 latency at 500 msg/s vs aio-pika"]["result"] == "fail"
    assert rows["2. consume no-op vs aio-pika prefetch 100"]["result"].startswith("n/a")


def test_unavailable_contender_is_reported_not_failed() -> None:
    result = _result({"aiopika_consume_p100": [{"rate": 4000.0}]})
    result.outcomes["warren_consume"].unavailable = "services not runnable yet"
    row = next(r for r in evaluate(result) if r["check"].startswith("2. consume no-op vs aio"))
    assert row["result"] == "n/a: warren_consume unavailable"


def test_replicas_counts_only_live_ones_of_a_role() -> None:
    from bench.warren import replicas

    def entry(role: str, name: str, state: str) -> dict[str, object]:
        beat = {"role": role, "replica": name, "stopping": state == "stopped"}
        return {"role": role, "replica": name, "state": state, "heartbeat": beat}

    status = {
        "replicas": [
            entry("consumer", "c1", "alive"),
            entry("consumer", "c2", "stopped"),
            entry("consumer", "c3", "lost"),
            entry("producer", "p1", "alive"),
        ]
    }
    assert replicas(status, "consumer") == 1
    assert replicas(status, "producer") == 1
