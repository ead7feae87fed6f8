"""A tiny run of the benchmark harness keeps it working (no timing assertions: benchmarks are
not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.broker


def test_smoke_run_writes_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "baselines", "--no-progress",
         "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr

    doc = json.loads((tmp_path / "latest.json").read_text())
    assert {"meta", "measurements", "checks", "memory", "flat_memory"} <= doc.keys()
    assert doc["meta"]["mode"] == "smoke"
    baselines = {k: v for k, v in doc["measurements"].items() if v["kind"] == "baseline"}
    assert {"pika_publish_sequential", "aiopika_publish_window", "aiormq_publish_window",
            "aiopika_consume_p100", "pika_consume_p100", "pika_io", "aiopika_pair",
            "aiopika_latency"} <= baselines.keys()  # fmt: skip
    for key, m in baselines.items():
        assert m["status"] == "ok", (key, m["errors"])
        if m["unit"] == "ms":
            assert 0 < m["median"]["p50_ms"] <= m["median"]["p99_ms"], key
        else:
            assert m["median"]["rate"] > 0, key
    assert (tmp_path / "latest.md").read_text().startswith("# Warren benchmark")
    assert (tmp_path / "throughput.png").stat().st_size > 0
