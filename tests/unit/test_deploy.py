"""The deploy files, checked without a container engine.

The static checks (.ci/static-checks) run the real tools: Compose v5 parses the compose file,
hadolint lints the Dockerfile, kubernetes-validate and jsonschema check the manifests. The rest
are the invariants that matter for running the stack: the consumer scales, every service has a
health check and the OTEL variables, the image's commands exist, .env and the settings agree,
and the broker users have the permissions their roles need and no more.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "producer", "consumer")
SETTINGS = {
    "gateway": "gateway.settings:GatewaySettings",
    "producer": "producer.settings:ProducerSettings",
    "consumer": "consumer.settings:ConsumerSettings",
}
WARREN_NAME = re.compile(r"^#?\s*(WARREN_[A-Z0-9_]+)=", re.M)


def _load_hash_password() -> Any:
    """deploy/rabbitmq/hash_password.py is a script, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location(
        "hash_password", ROOT / "deploy" / "rabbitmq" / "hash_password.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hash_password = _load_hash_password()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


@functools.cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose itself resolves it (anchors, .env interpolation)."""
    exe = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or "docker-compose"
    done = run(exe, "-f", "docker-compose.yml", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def settings_class(service: str) -> type[BaseSettings]:
    module, _, name = SETTINGS[service].partition(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def env_names(model: type[BaseModel], prefix: str, delimiter: str) -> Iterator[str]:
    """Every environment variable a settings class reads, nested groups included."""
    for name, field in model.model_fields.items():
        key = field.alias if isinstance(field.alias, str) else name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from env_names(annotation, f"{prefix}{key}{delimiter}".upper(), delimiter)
        else:
            yield f"{prefix}{key}".upper()


def accepted_names(service: str) -> set[str]:
    cls = settings_class(service)
    prefix = cls.model_config.get("env_prefix", "")
    delimiter = cls.model_config.get("env_nested_delimiter") or "__"
    return set(env_names(cls, prefix.upper(), delimiter))


# --- the real tools ---------------------------------------------------------------------------


@pytest.mark.parametrize("check", ["compose", "dockerfile", "k8s", "crds", "hashes"])
def test_static_check(check: str) -> None:
    done = run("bash", ".ci/static-checks", check)
    assert done.returncode == 0, done.stdout + done.stderr


# --- compose ----------------------------------------------------------------------------------


def test_consumer_scales() -> None:
    consumer = compose()["services"]["consumer"]
    assert "container_name" not in consumer
    assert not consumer.get("ports"), "host ports would clash between replicas"


@pytest.mark.parametrize("service", ["rabbitmq", "jaeger", *SERVICES])
def test_every_service_has_a_health_check_restart_policy_and_memory_limit(service: str) -> None:
    spec = compose()["services"][service]
    test = spec.get("healthcheck", {}).get("test")
    assert test, f"{service} has no health check"
    assert test[0] in ("CMD", "CMD-SHELL")
    assert spec.get("restart") in ("unless-stopped", "always", "on-failure")
    assert int(spec["deploy"]["resources"]["limits"]["memory"]) > 0


@pytest.mark.parametrize("service", SERVICES)
def test_services_trace_to_jaeger(service: str) -> None:
    env = compose()["services"][service]["environment"]
    assert env["OTEL_SERVICE_NAME"] == service
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_TRACES_SAMPLER"]


@pytest.mark.parametrize("service", SERVICES)
def test_services_wait_for_a_healthy_broker_and_use_their_own_user(service: str) -> None:
    spec = compose()["services"][service]
    assert spec["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert spec["environment"]["WARREN_AMQP__USERNAME"] == service
    assert "guest" not in spec["environment"]["WARREN_AMQP__URL"]


@pytest.mark.parametrize("service", SERVICES)
def test_service_commands_exist(service: str) -> None:
    """Each command runs `opentelemetry-instrument python -m <service>`, and both exist."""
    assert compose()["services"][service]["command"] == [
        "opentelemetry-instrument",
        "python",
        "-m",
        service,
    ]
    assert (ROOT / "services" / service / service / "__main__.py").is_file()
    assert entry_points(group="console_scripts", name="opentelemetry-instrument")


def test_consumer_stop_grace_outlasts_its_drain() -> None:
    consumer = compose()["services"]["consumer"]
    grace = float(consumer["stop_grace_period"].removesuffix("s"))
    drain = float(consumer["environment"]["WARREN_CONSUMER__DRAIN_TIMEOUT"])
    assert grace >= drain + 5, "Docker's SIGKILL would cut the drain short"


def test_gateway_listens_on_all_interfaces_and_is_checked_over_http() -> None:
    gateway = compose()["services"]["gateway"]
    assert gateway["environment"]["WARREN_GATEWAY__HOST"] == "0.0.0.0"
    assert [p["target"] for p in gateway["ports"]] == [8080]
    assert "http://127.0.0.1:8080/api/health" in gateway["healthcheck"]["test"]


def test_images_are_pinned() -> None:
    services = compose()["services"]
    assert re.fullmatch(r"rabbitmq:4\.\d+\.\d+-management", services["rabbitmq"]["image"])
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", services["jaeger"]["image"])
    assert any(v["target"] == "/var/lib/rabbitmq" for v in services["rabbitmq"]["volumes"])
    assert "rabbitmq-data" in compose()["volumes"]


# --- image ------------------------------------------------------------------------------------


def test_dockerfile_runs_the_locked_workspace_as_non_root() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in text
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user, "the image runs as root"
    assert not user[-1].startswith(("0", "root"))
    assert re.search(r'^\s+CMD \["python", "-m", "warren.healthcheck"\]', text, re.M)
    assert 'CMD ["opentelemetry-instrument", "python", "-m", "gateway"]' in text
    assert "org.opencontainers.image.source" in text
    # Every module the Dockerfile and compose run exists in the code.
    assert (ROOT / "libs" / "warren" / "warren" / "healthcheck.py").is_file()


# --- configuration names ----------------------------------------------------------------------


def test_env_names_are_settings() -> None:
    """Every WARREN_* name in .env (commented examples too) is read by some service."""
    names = set(WARREN_NAME.findall((ROOT / ".env").read_text()))
    accepted = set().union(*(accepted_names(s) for s in SERVICES))
    assert names, ".env has no WARREN_* names"
    assert names <= accepted, f"unknown to the settings: {sorted(names - accepted)}"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_environment_builds_the_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service's compose environment names only its settings, and the values parse."""
    env = compose()["services"][service]["environment"]
    names = {k for k in env if k.startswith("WARREN_")}
    unknown = names - accepted_names(service)
    assert not unknown, f"{service} does not read {sorted(unknown)}"
    for key in [k for k in os.environ if k.startswith("WARREN_")]:
        monkeypatch.delenv(key)
    for key in names:
        # A null value (`NAME:`) is passed on only when set: the settings default applies.
        if env[key] is not None:
            monkeypatch.setenv(key, env[key])
    settings: Any = settings_class(service)()
    assert settings.amqp.username == service
    assert settings.amqp.connection_url().startswith(f"amqp://{service}:")


def test_kubernetes_environment_names_are_settings() -> None:
    yaml = pytest.importorskip("yaml")
    docs = [
        d
        for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    shared = {k for k in config["data"] if k.startswith("WARREN_")}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        service = doc["spec"]["template"]["spec"]["containers"][0]["name"]
        own = {e["name"] for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
        names = shared | {n for n in own if n.startswith("WARREN_")}
        unknown = names - accepted_names(service)
        assert not unknown, f"{service} does not read {sorted(unknown)}"


# --- broker users -----------------------------------------------------------------------------


def test_password_hash_round_trip() -> None:
    hashed = hash_password.hash_password("s3cret", salt=b"\x90\x8d\x2f\x01")
    assert hash_password.verify_password("s3cret", hashed)
    assert not hash_password.verify_password("other", hashed)
    assert hashed != hash_password.hash_password("s3cret")  # a fresh salt each time
    assert not hash_password.verify_password("s3cret", "not base64!")


def test_definitions_store_no_clear_text_password() -> None:
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    for user in definitions["users"]:
        assert "password" not in user
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert not any(u["name"] == "guest" for u in definitions["users"])


@functools.cache
def permissions() -> dict[str, dict[str, re.Pattern[str]]]:
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    return {
        p["user"]: {kind: re.compile(p[kind]) for kind in ("configure", "write", "read")}
        for p in definitions["permissions"]
    }


def allowed(user: str, kind: str, resource: str) -> bool:
    """RabbitMQ matches the permission regex against the resource name (unanchored search)."""
    return permissions()[user][kind].search(resource) is not None


# (user, permission, resource, allowed): what each role needs, and what it must not have.
# Resource names: warren.* are Warren's; `orders` a user queue, `shop` a user exchange;
# amq.default is the default exchange.
MATRIX = [
    # gateway: control plane
    ("gateway", "configure", "orders", True),  # declare/delete user queues
    ("gateway", "configure", "shop", True),  # and exchanges
    ("gateway", "read", "orders", True),  # purge needs read
    ("gateway", "write", "warren.commands", True),  # publish jobs
    ("gateway", "write", "warren.control", True),  # start/stop consumers
    ("gateway", "configure", "warren.gateway.g1", True),  # its own event queue
    ("gateway", "read", "warren.gateway.g1", True),
    ("gateway", "read", "warren.events", True),  # bind its queue to events
    ("gateway", "read", "warren.jobs", False),  # cannot consume the work queue
    ("gateway", "configure", "warren.jobs", True),  # declares it before any producer runs
    ("gateway", "write", "warren.jobs", True),  # and binds it to warren.commands
    ("gateway", "read", "warren.control.c1", False),  # nor a worker's control queue
    ("gateway", "write", "warren.events", False),  # cannot forge events
    # producer: takes jobs, publishes user messages and events
    ("producer", "read", "warren.jobs", True),
    ("producer", "configure", "warren.jobs", True),
    ("producer", "write", "amq.default", True),
    ("producer", "write", "shop", True),
    ("producer", "write", "warren.events", True),
    ("producer", "configure", "warren.control.p1", True),
    ("producer", "read", "orders", False),  # cannot consume user queues
    ("producer", "configure", "orders", False),  # nor declare or delete them
    ("producer", "write", "warren.commands", False),  # nor send itself jobs
    ("producer", "write", "warren.control", False),
    ("producer", "read", "warren.gateway.g1", False),
    # consumer: consumes user queues, reports, dead-letters
    ("consumer", "read", "orders", True),
    ("consumer", "write", "warren.events", True),
    ("consumer", "write", "amq.default", True),  # republish to <queue>.dlq
    ("consumer", "configure", "warren.control.c1", True),  # its exclusive control queue
    ("consumer", "read", "warren.control", True),  # bind it
    ("consumer", "configure", "warren.control", False),  # cannot declare exchanges
    ("consumer", "configure", "warren.events", False),
    ("consumer", "configure", "warren.commands", False),
    ("consumer", "configure", "shop", False),
    ("consumer", "configure", "orders", False),  # nor declare/delete user queues
    ("consumer", "read", "warren.jobs", False),
    ("consumer", "read", "warren.gateway.g1", False),
    ("consumer", "write", "warren.commands", False),
    ("consumer", "write", "warren.control", False),
]


@pytest.mark.parametrize(("user", "kind", "resource", "expected"), MATRIX)
def test_least_privilege(user: str, kind: str, resource: str, expected: bool) -> None:
    assert allowed(user, kind, resource) is expected


# --- Make targets -----------------------------------------------------------------------------


def test_compose_make_targets_are_documented_and_phony() -> None:
    text = (ROOT / "deploy" / "compose.mk").read_text()
    targets = dict(re.findall(r"^([a-z][a-z-]*):.*## (.+)$", text, re.M))
    assert set(targets) >= {"up", "down", "ps", "logs", "scale", "restart", "build", "traces"}
    phony = set(re.findall(r"^\.PHONY: (.+)$", text, re.M))
    assert set(targets) <= {t for line in phony for t in line.split()}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_compose_make_targets_wrap_docker_compose(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"include {ROOT / 'deploy' / 'compose.mk'}\n")
    done = subprocess.run(
        ["make", "-n", "-f", str(makefile), "scale", "consumers=3", "logs", "service=consumer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "docker compose up -d --wait --no-recreate --scale consumer=3" in done.stdout
    assert "docker compose logs -f --tail=200 consumer" in done.stdout
