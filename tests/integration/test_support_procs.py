"""The subprocess helper against real child processes (no services needed)."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from tests.support.procs import ServiceProcess, free_port

FAKE_SERVICE = textwrap.dedent(
    """
    import signal, sys, threading
    stop = threading.Event()
    def on_term(signum, frame):
        print("draining", flush=True)
        stop.set()
    signal.signal(signal.SIGTERM, signal.SIG_IGN if "--stubborn" in sys.argv else on_term)
    print("ready pid", flush=True)
    if "--die" in sys.argv:
        print("boom", file=sys.stderr, flush=True)
        sys.exit(3)
    stop.wait(30)
    print("bye", flush=True)
    """
)


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "fake_service.py").write_text(FAKE_SERVICE)
    return {"PYTHONPATH": str(tmp_path)}


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_runs_module_logs_and_terminates(fake_env: dict[str, str], tmp_path: Path) -> None:
    with ServiceProcess("fake_service", fake_env, "fake", log_dir=tmp_path) as proc:
        proc.wait_for_log(r"ready pid", timeout=10)
        assert proc.is_running()
        assert proc.rss_bytes() > 1_000_000
        assert proc.terminate(timeout=5) == 0
        proc.wait_for_log(r"draining", timeout=1)
        proc.wait_for_log(r"bye", timeout=1)
    assert proc.log_path == tmp_path / "fake.log"


def test_since_last_only_matches_new_output(fake_env: dict[str, str], tmp_path: Path) -> None:
    with ServiceProcess("fake_service", fake_env, "fake", log_dir=tmp_path) as proc:
        proc.wait_for_log("ready", timeout=10, since_last=True)
        with pytest.raises(TimeoutError, match="ready"):
            proc.wait_for_log("ready", timeout=0.3, since_last=True)


def test_stubborn_process_is_killed(fake_env: dict[str, str], tmp_path: Path) -> None:
    proc = ServiceProcess(
        "fake_service", fake_env, "stubborn", args=["--stubborn"], log_dir=tmp_path
    )
    with proc:
        proc.wait_for_log("ready", timeout=10)
        assert proc.terminate(timeout=0.5) == -9


def test_exit_before_match_fails_fast_with_tail(fake_env: dict[str, str], tmp_path: Path) -> None:
    proc = ServiceProcess("fake_service", fake_env, "dies", args=["--die"], log_dir=tmp_path)
    with proc:
        with pytest.raises(RuntimeError, match=r"exited with 3[\s\S]*boom"):
            proc.wait_for_log("never printed", timeout=10)
        assert proc.returncode == 3


def test_wait_for_log_times_out(fake_env: dict[str, str], tmp_path: Path) -> None:
    with ServiceProcess("fake_service", fake_env, "slow", log_dir=tmp_path) as proc:
        with pytest.raises(TimeoutError, match="ready pid"):
            proc.wait_for_log("never printed", timeout=0.5)


def test_kill_sends_the_signal(fake_env: dict[str, str], tmp_path: Path) -> None:
    with ServiceProcess("fake_service", fake_env, "killed", log_dir=tmp_path) as proc:
        proc.wait_for_log("ready", timeout=10)
        proc.kill()
        assert proc.wait(timeout=5) == -9


def test_instrumented_launch(fake_env: dict[str, str], tmp_path: Path) -> None:
    env = {**fake_env, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none"}  # fmt: skip
    with ServiceProcess("fake_service", env, "instr", instrument=True, log_dir=tmp_path) as proc:
        assert proc.command[0].endswith("opentelemetry-instrument")
        proc.wait_for_log("ready", timeout=20)
        assert proc.terminate(timeout=5) == 0


def test_factory_fixture_terminates(service_factory, fake_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    proc = service_factory("fake_service", fake_env, "from-factory")
    proc.wait_for_log("ready", timeout=10)
    assert proc.pid > 0
