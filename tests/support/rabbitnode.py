"""A private RabbitMQ node for fault tests (never touch the shared broker on 5672).

Follows /work/shared/notes/PRIVATE-RABBITMQ-NODE.md: the real scripts in
``/usr/lib/rabbitmq/bin`` (the ``/usr/sbin`` wrappers switch user and cookie), a private
``HOME`` for the Erlang cookie, and every path, port and the node name unique to this run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from .procs import free_port, tail

log = logging.getLogger(__name__)

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
_counter = itertools.count(1)


class RabbitNodeError(RuntimeError):
    pass


class RabbitNode:
    """One private broker node: own node name, ports, data dir, logs and HOME.

    ``start()`` and ``stop()`` are bounded; ``stop()`` kills whatever is left of the node
    (only processes carrying this node's unique name), so nothing outlives a test run.
    """

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        name: str | None = None,
        ctl_timeout: float = 60.0,
        start_timeout: float = 90.0,
    ) -> None:
        self.name = name or f"warren-{os.getpid()}-{next(_counter)}"
        self.nodename = f"{self.name}@localhost"
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.ctl_timeout = ctl_timeout
        self.start_timeout = start_timeout
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.management_port = free_port()
        self.home = self.base_dir / "home"
        self.mnesia_dir = self.base_dir / "mnesia"
        self.log_dir = self.base_dir / "log"
        self.pid_file = self.base_dir / f"{self.name}.pid"
        self.start_seconds: list[float] = []
        self.stop_seconds: list[float] = []
        self._write_files()

    # -- configuration -------------------------------------------------------------------

    def _write_files(self) -> None:
        for path in (self.home, self.mnesia_dir, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            # Written before any Erlang VM runs so server and CLI agree on it from the start.
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (self.base_dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            # Faster stats so management API readings lag less in tests.
            "collect_statistics_interval = 1000\n"
            "loopback_users = none\n"
        )
        # Our own (empty) env file: the machine's /etc/rabbitmq/rabbitmq-env.conf sets NODENAME.
        (self.base_dir / "rabbitmq-env.conf").write_text("")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.mnesia_dir),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    # -- CLI -----------------------------------------------------------------------------

    def rabbitmqctl(self, *args: str, timeout: float | None = None, check: bool = True) -> str:
        """Run ``rabbitmqctl -n NODE *args``; return stdout. Bounded by ``timeout``."""
        return self._cli("rabbitmqctl", *args, timeout=timeout, check=check).stdout

    def _cli(
        self, tool: str, *args: str, timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(RABBIT_BIN / tool), "-n", self.nodename, *args]
        try:
            result = subprocess.run(
                cmd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout or self.ctl_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"{' '.join(cmd)} timed out after {exc.timeout}s") from exc
        if check and result.returncode != 0:
            raise RabbitNodeError(
                f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    # -- lifecycle -----------------------------------------------------------------------

    def pid(self) -> int | None:
        """The node's OS pid from its pid file, if that process is alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def start(self) -> RabbitNode:
        """Start the node detached (same data dir as before) and wait until it serves AMQP."""
        began = time.monotonic()
        deadline = began + self.start_timeout
        if self._own_processes():
            raise RabbitNodeError(f"{self.nodename} is already running")
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmq-server"), "-detached"],
            env=self.env,
            capture_output=True,
            timeout=30,
            check=True,
        )
        try:
            self._await_startup(deadline)
            self._await_port(self.amqp_port, deadline)
            self._await_port(self.management_port, deadline)
        except BaseException:
            log.error("Node %s failed to start; log tail:\n%s", self.nodename, self.log_tail())
            self._kill_leftovers()
            raise
        elapsed = time.monotonic() - began
        self.start_seconds.append(elapsed)
        log.info("Node %s up on %d in %.2fs", self.nodename, self.amqp_port, elapsed)
        return self

    def _await_startup(self, deadline: float) -> None:
        # Right after -detached (above all after kill -9) await_startup exits 69 until the
        # node has registered with epmd: retry until the deadline.
        last = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RabbitNodeError(f"{self.nodename} did not start in time: {last}")
            try:
                result = self._cli(
                    "rabbitmqctl",
                    "await_startup",
                    "--timeout",
                    str(max(1, int(remaining))),
                    timeout=remaining + 5,
                    check=False,
                )
            except RabbitNodeError as exc:
                raise RabbitNodeError(f"{self.nodename} did not start in time") from exc
            if result.returncode == 0:
                return
            last = (result.stdout + result.stderr).strip()[-500:]
            time.sleep(0.5)

    @staticmethod
    def _await_port(port: int, deadline: float) -> None:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if time.monotonic() >= deadline:
                    raise RabbitNodeError(f"port {port} not listening") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 30.0, *, clean: bool = True) -> None:
        """Stop the node (cleanly with ``rabbitmqctl stop`` unless ``clean=False``), then
        kill anything left of it. Never raises for a node that is already down."""
        began = time.monotonic()
        if clean and self._own_processes():
            try:
                self._cli("rabbitmqctl", "stop", str(self.pid_file), timeout=timeout, check=False)
            except RabbitNodeError as exc:
                log.warning("Clean stop of %s failed (%s); killing it", self.nodename, exc)
        self._kill_leftovers()
        self.stop_seconds.append(time.monotonic() - began)

    def kill9(self) -> None:
        """SIGKILL the node's VM (a crash); data dir stays, so ``start()`` brings it back."""
        pid = self.pid()
        if pid is None:
            raise RabbitNodeError(f"{self.nodename} has no live pid")
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=10)
        # erl_child_setup and friends die with the VM; make sure nothing stays behind.
        self._kill_leftovers()

    def cleanup(self, *, clean: bool = True) -> None:
        """Stop the node and remove its directory (when this object created it)."""
        self.stop(clean=clean)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _own_processes(self) -> list[psutil.Process]:
        """Processes that belong to this node: their command line names our unique node
        name or our private directory (never matched by anything else on the machine)."""
        marks = (self.name, str(self.base_dir))
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info.get("cmdline") or ())
            if proc.pid != os.getpid() and any(mark in cmdline for mark in marks):
                found.append(proc)
        return found

    def _kill_leftovers(self) -> None:
        procs = self._own_processes()
        pid = self.pid()
        if pid is not None and all(p.pid != pid for p in procs):
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        _, alive = psutil.wait_procs(procs, timeout=10)
        if alive:
            log.error("Could not kill %s processes: %s", self.nodename, alive)

    # -- faults and inspection -----------------------------------------------------------

    def close_all_connections(self, reason: str = "closed by test") -> None:
        self.rabbitmqctl("close_all_connections", reason)

    def stop_app(self) -> None:
        self.rabbitmqctl("stop_app")

    def start_app(self) -> None:
        self.rabbitmqctl("start_app")
        self._await_port(self.amqp_port, time.monotonic() + self.start_timeout)

    def alarms(self) -> str:
        """The node's current resource alarms as Erlang terms, e.g. ``[{{resource_limit,
        memory,'node@localhost'},[]}]``; ``[]`` when none."""
        return self.rabbitmqctl("eval", "rabbit_alarm:get_alarms().").strip()

    def memory_alarm(self, on: bool, *, timeout: float = 15.0) -> None:
        """Raise or clear the memory alarm (publishers block) and wait until it shows."""
        if on:
            self.rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1MB")
        else:
            self.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        self._await_alarm("memory", on, timeout)

    def disk_alarm(self, on: bool, *, timeout: float = 15.0) -> None:
        """Raise or clear the disk alarm (publishers block) and wait until it shows."""
        # Plain bytes: this rabbitmqctl rejects "1TB". 50 MB is the default limit.
        self.rabbitmqctl("set_disk_free_limit", str(10**15 if on else 50_000_000))
        self._await_alarm("disk", on, timeout)

    def _await_alarm(self, kind: str, on: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            active = f"resource_limit,{kind}" in self.alarms().replace(" ", "")
            if active == on:
                return
            if time.monotonic() >= deadline:
                raise RabbitNodeError(f"{kind} alarm still {'off' if on else 'on'}")
            time.sleep(0.2)

    def set_consumer_timeout(self, ms: int) -> None:
        """Set ``consumer_timeout``; channels opened afterwards use it. The broker checks
        it only about once a minute (measured), so a test waits that long."""
        self.rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {int(ms)}).")

    def delete_queue(self, name: str) -> None:
        self.rabbitmqctl("delete_queue", name)

    def list_queues(self) -> dict[str, tuple[int, int]]:
        """``{name: (ready, unacked)}`` for the default vhost, from ``rabbitmqctl``."""
        out = self.rabbitmqctl(
            "list_queues", "--formatter", "json", "name", "messages_ready",
            "messages_unacknowledged",
        )  # fmt: skip
        rows = json.loads(out or "[]")
        return {
            row["name"]: (int(row["messages_ready"]), int(row["messages_unacknowledged"]))
            for row in rows
        }

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.log_dir.glob("*.log"))
        return "\n".join(f"== {p.name}\n{tail(p, lines)}" for p in logs)

    def __repr__(self) -> str:
        return f"<RabbitNode {self.nodename} amqp={self.amqp_port} mgmt={self.management_port}>"
