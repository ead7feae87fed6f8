"""`python -m warren.healthcheck`: the container health check of producer, consumer and gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from warren import healthcheck


def test_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    beat.touch()
    assert healthcheck.main(["--file", str(beat)]) == 0


def test_missing_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    assert healthcheck.main(["--file", str(tmp_path / "absent")]) == 1


def test_stale_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    beat.touch()
    old = beat.stat().st_mtime - 31
    os.utime(beat, (old, old))
    assert healthcheck.main(["--file", str(beat)]) == 1
    assert healthcheck.main(["--file", str(beat), "--max-age", "60"]) == 0


def test_health_file_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat = tmp_path / "beat"
    monkeypatch.setenv("WARREN_HEALTH_FILE", str(beat))
    assert healthcheck.main([]) == 1
    beat.touch()
    assert healthcheck.main([]) == 0


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(503 if self.path == "/down" else 200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the test output is not the place for access logs."""


@pytest.fixture
def health_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_url_check_follows_the_status(health_server: str) -> None:
    assert healthcheck.main(["--url", f"{health_server}/api/health"]) == 0
    assert healthcheck.main(["--url", f"{health_server}/down"]) == 1


def test_unreachable_url_is_unhealthy() -> None:
    # Port 9 (discard) on loopback: nothing listens there in a test environment.
    assert healthcheck.main(["--url", "http://127.0.0.1:9/api/health", "--timeout", "1"]) == 1


def test_runs_as_a_module(tmp_path: Path) -> None:
    """What the Dockerfile's HEALTHCHECK and the Kubernetes exec probes actually run."""
    beat = tmp_path / "beat"
    beat.touch()
    env = {**os.environ, "WARREN_HEALTH_FILE": str(beat)}
    done = subprocess.run(
        [sys.executable, "-m", "warren.healthcheck"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "healthy" in done.stdout
