"""Settings: defaults that work on a developer machine, WARREN_ env names, secrets kept secret."""

from __future__ import annotations

import pytest

from consumer.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from producer.settings import ProducerSettings
from warren.settings import AmqpSettings, WarrenSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WARREN_"):
            monkeypatch.delenv(name)


def test_defaults_need_no_configuration() -> None:
    s = GatewaySettings()
    assert s.amqp.connection_url() == "amqp://guest:guest@localhost:5672/"
    assert s.amqp.heartbeat == 20
    assert s.amqp.reconnect_interval == 1
    assert s.amqp.publish_timeout == 10
    assert s.namespace == "warren"
    assert s.management.url == "http://localhost:15672"
    assert (s.gateway.host, s.gateway.port) == ("127.0.0.1", 8080)
    assert s.gateway.token is None
    assert s.gateway.jaeger_url == "http://localhost:16686"
    c = ConsumerSettings().consumer
    assert (c.queues, c.prefetch, c.drain_timeout, c.records_per_second) == ([], 10, 10, 1000)


def test_environment_names_are_prefixed_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARREN_AMQP__URL", "amqp://u:p@broker:5673/vh")
    monkeypatch.setenv("WARREN_AMQP__HEARTBEAT", "5")
    monkeypatch.setenv("WARREN_NAMESPACE", "test1")
    monkeypatch.setenv("WARREN_CONSUMER__QUEUES", "orders, invoices")
    monkeypatch.setenv("WARREN_CONSUMER__PREFETCH", "50")
    monkeypatch.setenv("WARREN_PRODUCER__MAX_JOBS", "2")
    monkeypatch.setenv("WARREN_GATEWAY__TOKEN", "s3cret")
    consumer = ConsumerSettings()
    assert consumer.amqp.heartbeat == 5
    assert consumer.namespace == "test1"
    assert consumer.consumer.queues == ["orders", "invoices"]
    assert consumer.consumer.prefetch == 50
    assert ProducerSettings().producer.max_jobs == 2
    token = GatewaySettings().gateway.token
    assert token is not None
    assert token.get_secret_value() == "s3cret"


def test_the_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARREN_AMQP__URL", "amqp://app:hunter2@broker:5672/")
    s = WarrenSettings()
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())
    assert "hunter2" not in s.amqp.display_url()
    assert s.amqp.display_url() == "amqp://app:***@broker:5672/"
    assert "hunter2" in s.amqp.connection_url()


def test_credentials_can_be_given_apart_from_the_url() -> None:
    amqp = AmqpSettings(url="amqp://broker:5672/", username="svc", password="p@ss/word")  # type: ignore[arg-type]
    assert amqp.connection_url() == "amqp://svc:p%40ss%2Fword@broker:5672/"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARREN_CONSUMER__PREFETCH", "0")
    with pytest.raises(ValueError, match="prefetch"):
        ConsumerSettings()


def test_tests_can_pass_init_kwargs() -> None:
    s = ConsumerSettings(namespace="kw", consumer={"prefetch": 3})  # type: ignore[arg-type]
    assert (s.namespace, s.consumer.prefetch) == ("kw", 3)
