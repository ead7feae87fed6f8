"""RabbitMQ password hashes for ``definitions.json`` (``rabbit_password_hashing_sha256``).

The broker stores ``base64(salt + sha256(salt + utf8(password)))`` with a 4-byte random salt;
definitions may carry that instead of a clear-text password, so the committed file holds no
password at all. The passwords themselves are the ``BROKER_*_PASSWORD`` lines of ``.env``.

    python deploy/rabbitmq/hash_password.py 'a password'   # print one hash
    python deploy/rabbitmq/hash_password.py --check        # hashes match .env? (exit 1 if not)
    python deploy/rabbitmq/hash_password.py --sync         # rewrite the hashes that do not match

Stdlib only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFINITIONS = HERE / "definitions.json"
ENV_FILE = HERE.parent.parent / ".env"
ALGORITHM = "rabbit_password_hashing_sha256"

# broker user -> the .env variable holding its (development) password
PASSWORD_VARIABLES = {
    "admin": "BROKER_ADMIN_PASSWORD",
    "gateway": "BROKER_GATEWAY_PASSWORD",
    "producer": "BROKER_PRODUCER_PASSWORD",
    "consumer": "BROKER_CONSUMER_PASSWORD",
}


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The ``password_hash`` RabbitMQ expects for ``rabbit_password_hashing_sha256``."""
    salt = os.urandom(4) if salt is None else salt
    if len(salt) != 4:
        raise ValueError("RabbitMQ uses a 4-byte salt")
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password_hash`` is the hash of ``password`` (with its own salt)."""
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except ValueError:
        return False
    return len(raw) == 36 and hash_password(password, salt=raw[:4]) == password_hash


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a dotenv file (no interpolation; quotes stripped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def mismatches(definitions: Mapping[str, object], passwords: Mapping[str, str]) -> list[str]:
    """Users whose hash in ``definitions`` does not match their password (or who lack one)."""
    users = {u["name"]: u for u in definitions["users"]}  # type: ignore[attr-defined]
    wrong = []
    for user, variable in PASSWORD_VARIABLES.items():
        entry = users.get(user)
        password = passwords.get(variable)
        if entry is None or password is None:
            wrong.append(user)
        elif entry.get("hashing_algorithm") != ALGORITHM or not verify_password(
            password, entry["password_hash"]
        ):
            wrong.append(user)
    return wrong


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("password", nargs="?", help="print the hash of this password")
    mode.add_argument("--check", action="store_true", help="verify definitions.json against .env")
    mode.add_argument("--sync", action="store_true", help="rehash what does not match .env")
    parser.add_argument("--env-file", type=Path, default=ENV_FILE)
    parser.add_argument("--definitions", type=Path, default=DEFINITIONS)
    args = parser.parse_args(argv)

    if args.password is not None:
        sys.stdout.write(hash_password(args.password) + "\n")
        return 0

    # The process environment wins over .env, as it does for docker compose's interpolation.
    passwords = {**read_env(args.env_file), **os.environ}
    definitions = json.loads(args.definitions.read_text())
    wrong = mismatches(definitions, passwords)
    if args.check:
        if wrong:
            sys.stderr.write(
                f"password hashes out of date for {', '.join(wrong)}: run {sys.argv[0]} --sync\n"
            )
            return 1
        return 0
    for entry in definitions["users"]:
        if entry["name"] in wrong:
            variable = PASSWORD_VARIABLES[entry["name"]]
            if variable not in passwords:
                sys.stderr.write(f"{variable} is not set in {args.env_file}\n")
                return 1
            entry.pop("password", None)
            entry["password_hash"] = hash_password(passwords[variable])
            entry["hashing_algorithm"] = ALGORITHM
    args.definitions.write_text(json.dumps(definitions, indent=2) + "\n")
    sys.stdout.write(f"rehashed: {', '.join(wrong) or 'nothing'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
