"""Run services as subprocesses with captured logs, bounded waits and resource probes."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_TAIL_LINES = 60


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ServiceProcess:
    """A service run as ``python -m module`` with stdout and stderr going to one log file.

    The process is started by ``start()`` (or entering the context manager). Every wait is
    bounded. ``terminate()``/``kill()`` only ever signal this process by its pid.
    """

    def __init__(
        self,
        module: str,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        *,
        args: Sequence[str] = (),
        instrument: bool = False,
        log_dir: Path | None = None,
        inherit_env: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.module = module
        self.name = name or module
        self.args = list(args)
        self.instrument = instrument
        self.cwd = cwd
        self.env: dict[str, str] = dict(os.environ) if inherit_env else {}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            self.env.update(env)
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"warren-{self.name}-"))
        self.log_path = self.log_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None
        self._read_pos = 0

    @property
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", self.module, *self.args]
        if self.instrument:
            # The console script lives next to the interpreter in the venv.
            launcher = Path(sys.executable).with_name("opentelemetry-instrument")
            cmd = [str(launcher), *cmd]
        return cmd

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def _popen(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc

    def start(self) -> ServiceProcess:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        self._log_file = log_file
        self._proc = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.info("Started %s (pid %d), log %s", self.name, self._proc.pid, self.log_path)
        return self

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.dump_tail()
        self.terminate(timeout=10)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = _TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def dump_tail(self, lines: int = _TAIL_LINES) -> None:
        """Write the log tail to stderr (pytest shows it with the failure)."""
        sys.stderr.write(f"\n----- last {lines} lines of {self.name} ({self.log_path}) -----\n")
        sys.stderr.write(self.tail(lines) + "\n")

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, *, since_last: bool = False
    ) -> re.Match[str]:
        """Wait until the log matches ``pattern``; return the match.

        With ``since_last`` only output written after the previous successful match counts,
        so the same line is not matched twice. Raises ``TimeoutError`` (with the log tail) after
        ``timeout`` seconds, or ``RuntimeError`` at once if the process exited without a match.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            exited = self._popen.poll() is not None
            text = self.output()
            start = self._read_pos if since_last else 0
            match = regex.search(text, start)
            if match:
                self._read_pos = match.end()
                return match
            if exited:
                raise RuntimeError(
                    f"{self.name} exited with {self._popen.returncode} before logging "
                    f"{regex.pattern!r}; last lines:\n{self.tail()}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} did not log {regex.pattern!r} within {timeout}s; "
                    f"last lines:\n{self.tail()}"
                )
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; ``TimeoutError`` if it does not."""
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{self.name} still running after {timeout}s") from exc

    def send_signal(self, sig: int) -> None:
        if self._popen.poll() is None:
            self._popen.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to this process only; does not wait."""
        self.send_signal(sig)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code.

        A negative code is the signal that ended the process (``-9`` means it had to be
        killed). Safe to call more than once and on a process that never started.
        """
        if self._proc is None:
            return 0
        proc = self._proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.1fs; killing it", self.name, timeout)
                proc.kill()
                proc.wait(timeout=10)
        self._close_log()
        return proc.returncode

    def _close_log(self) -> None:
        log_file = self._log_file
        if log_file is not None:
            log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def rss_bytes(self) -> int:
        """Resident set size of the process (not its children), in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else f"pid {self._proc.pid}"
        return f"<ServiceProcess {self.name} {state}>"
