"""The Kubernetes manifests in deploy/k8s/: the invariants a schema cannot see.

Schema validity (core kinds with kubernetes-validate, the custom resources with jsonschema) is
.ci/static-checks' job, run by tests/unit/test_deploy.py; these tests check that the pieces fit:
names that refer to each other exist, probes point at what the services serve, the consumer
drains before it is killed and is scaled by KEDA, and the broker is a 3-node quorum cluster.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
SERVICES = ("gateway", "producer", "consumer")


@functools.cache
def documents() -> tuple[dict[str, Any], ...]:
    return tuple(
        doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(service: str) -> dict[str, Any]:
    pod = one("Deployment", f"warren-{service}")["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    assert only["name"] == service
    return dict(only)


def env_value(service: str, name: str) -> str:
    config = one("ConfigMap", "warren-config")["data"]
    own = {e["name"]: e.get("value") for e in container(service).get("env", [])}
    return str(own[name] if name in own else config[name])


def test_everything_lives_in_the_warren_namespace() -> None:
    one("Namespace", "warren")
    for doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "warren", doc["metadata"]["name"]


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_runs_the_service_under_opentelemetry(service: str) -> None:
    c = container(service)
    assert c["command"] == ["opentelemetry-instrument", "python", "-m", service]
    assert env_value(service, "OTEL_SERVICE_NAME") == service
    assert env_value(service, "OTEL_EXPORTER_OTLP_ENDPOINT").startswith("http")
    assert env_value(service, "OTEL_EXPORTER_OTLP_PROTOCOL") == "http/protobuf"
    assert env_value(service, "WARREN_AMQP__USERNAME") == service


@pytest.mark.parametrize("service", SERVICES)
def test_pods_run_locked_down(service: str) -> None:
    pod = one("Deployment", f"warren-{service}")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = container(service)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # The heartbeat file needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("service", SERVICES)
def test_secret_references_exist(service: str) -> None:
    secrets = {
        d["metadata"]["name"]: d.get("stringData", {}) | d.get("data", {})
        for d in documents()
        if d["kind"] == "Secret"
    }
    for e in container(service).get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and not ref.get("optional"):
            assert ref["key"] in secrets[ref["name"]], f"{ref['name']}/{ref['key']}"


def test_gateway_probes_use_the_health_endpoint() -> None:
    c = container("gateway")
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/health"
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    # Liveness must not follow the broker: a broker outage would restart every gateway.
    assert "httpGet" not in c["livenessProbe"]
    assert env_value("gateway", "WARREN_GATEWAY__HOST") == "0.0.0.0"
    assert {"name": "http", "containerPort": 8080} in c["ports"]


def test_gateway_service_selects_the_gateway_pods() -> None:
    service = one("Service", "warren-gateway")
    labels = one("Deployment", "warren-gateway")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_workers_are_probed_by_their_heartbeat(service: str) -> None:
    c = container(service)
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"] == ["python", "-m", "warren.healthcheck"]
    assert env_value(service, "WARREN_HEALTH_FILE").startswith("/tmp/")


def test_consumer_drains_before_it_is_killed() -> None:
    pod = one("Deployment", "warren-consumer")["spec"]["template"]["spec"]
    drain = float(env_value("consumer", "WARREN_CONSUMER__DRAIN_TIMEOUT"))
    assert pod["terminationGracePeriodSeconds"] >= drain + 5


def test_keda_scales_the_consumer_on_queue_depth() -> None:
    scaled = one("ScaledObject", "warren-consumer")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "warren-consumer"
    assert scaled["minReplicaCount"] >= 1
    assert scaled["maxReplicaCount"] > scaled["minReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["mode"] == "QueueLength"
    # hostFromEnv names a variable of the scale target's container.
    names = {e["name"] for e in container("consumer")["env"]}
    assert trigger["metadata"]["hostFromEnv"] in names


def test_broker_is_a_three_node_quorum_cluster() -> None:
    cluster = one("RabbitmqCluster", "warren-rabbitmq")["spec"]
    assert cluster["replicas"] == 3
    assert cluster["image"].startswith("rabbitmq:4.")
    config = cluster["rabbitmq"]["additionalConfig"]
    assert "default_queue_type = quorum" in config
    mount = "/etc/rabbitmq/definitions"
    assert f"load_definitions = {mount}/definitions.json" in config
    containers = cluster["override"]["statefulSet"]["spec"]["template"]["spec"]["containers"]
    assert any(m["mountPath"] == mount for c in containers for m in c["volumeMounts"])


def test_services_reach_the_cluster_service() -> None:
    # The operator names the client Service after the RabbitmqCluster.
    url = one("ConfigMap", "warren-config")["data"]["WARREN_AMQP__URL"]
    assert url.startswith("amqp://warren-rabbitmq.warren.svc:5672")
