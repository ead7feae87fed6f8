"""Container health check for the Warren services (stdlib only, so it costs ~30 ms to run).

``python -m warren.healthcheck`` exits 0 when the service's heartbeat file was touched within the
last ``--max-age`` seconds (default 30), 1 otherwise. The file is ``$WARREN_HEALTH_FILE``
(default ``/tmp/warren-heartbeat``); the producer and consumer touch it while they run.

``python -m warren.healthcheck --url http://127.0.0.1:8080/api/health`` instead exits 0 when the
URL answers 200: the gateway's check, since it has an HTTP health endpoint.

It deliberately imports nothing from Warren or third parties: Docker and Kubernetes run it every
few seconds, and a health check that pulls in the service's dependencies is slow and can fail for
reasons that say nothing about the service.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

DEFAULT_HEALTH_FILE = "/tmp/warren-heartbeat"
DEFAULT_MAX_AGE = 30.0


def heartbeat_age(path: Path, *, now: float | None = None) -> float | None:
    """Seconds since ``path`` was last modified, or ``None`` when it does not exist."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - mtime


def check_file(path: Path, *, max_age: float, now: float | None = None) -> tuple[bool, str]:
    """Whether the heartbeat file is fresh, with a one-line reason."""
    age = heartbeat_age(path, now=now)
    if age is None:
        return False, f"unhealthy: heartbeat file {path} does not exist"
    if age > max_age:
        return False, f"unhealthy: heartbeat file {path} is {age:.1f}s old (max {max_age:g}s)"
    return True, f"healthy: heartbeat {age:.1f}s old"


def check_url(url: str, *, timeout: float) -> tuple[bool, str]:
    """Whether ``url`` answers 200 within ``timeout`` seconds, with a one-line reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return False, f"unhealthy: {url} unreachable ({exc})"
    if status != 200:
        return False, f"unhealthy: {url} answered {status}"
    return True, f"healthy: {url} answered 200"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warren.healthcheck", description=__doc__)
    parser.add_argument(
        "--file",
        type=Path,
        default=Path(os.environ.get("WARREN_HEALTH_FILE") or DEFAULT_HEALTH_FILE),
        help="heartbeat file (default: $WARREN_HEALTH_FILE or %(default)s)",
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_AGE,
        help="seconds after which the heartbeat is stale (default: %(default)s)",
    )
    parser.add_argument("--url", help="check this URL for a 200 instead of the heartbeat file")
    parser.add_argument("--timeout", type=float, default=3.0, help="HTTP timeout, seconds")
    args = parser.parse_args(argv)

    if args.url:
        ok, reason = check_url(args.url, timeout=args.timeout)
    else:
        ok, reason = check_file(args.file, max_age=args.max_age)
    # Docker keeps the last output of a health check in `docker inspect`: say why.
    (sys.stdout if ok else sys.stderr).write(reason + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
