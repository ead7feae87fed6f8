"""Contracts: frozen, versioned, tolerant of newer fields, and round-trip through JSON."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from warren.contracts import (
    SCHEMA_VERSION,
    CancelJob,
    ConsumeCommand,
    ControlMessage,
    Event,
    Heartbeat,
    JobProgress,
    MessageProperties,
    ProcessedRecord,
    PublishJob,
    RecordBatch,
    Topology,
    control_replica_key,
    heartbeat_key,
    job_key,
)


def _record() -> ProcessedRecord:
    now = datetime.now(UTC)
    return ProcessedRecord(
        message_id="m-1",
        queue="orders",
        worker="w-1",
        outcome="acked",
        received_at=now,
        processed_at=now,
        trace_id="0" * 31 + "1",
    )


@pytest.mark.parametrize(
    "model",
    [
        PublishJob(routing_key="orders", body={"a": 1}),
        JobProgress(job_id="j", status="running", producer="p", count=3),
        ConsumeCommand(action="start", queue="orders", prefetch=5),
        CancelJob(job_id="j"),
        Heartbeat(role="consumer", replica="r", host="h", pid=1, started_at=datetime.now(UTC)),
        RecordBatch(worker="w-1", records=[_record()]),
    ],
)
def test_every_contract_round_trips_and_is_versioned(model: object) -> None:
    cls = type(model)
    data = model.model_dump_json()  # type: ignore[attr-defined]
    again = cls.model_validate_json(data)  # type: ignore[attr-defined]
    assert again == model
    assert again.v == SCHEMA_VERSION  # type: ignore[attr-defined]


def test_contracts_are_frozen() -> None:
    job = PublishJob(routing_key="orders")
    with pytest.raises(ValidationError):
        job.routing_key = "other"  # type: ignore[misc]


def test_a_newer_writer_with_extra_fields_is_still_read() -> None:
    raw = '{"kind": "cancel_job", "job_id": "j", "v": 2, "reason": "added in v2"}'
    assert CancelJob.model_validate_json(raw).job_id == "j"


def test_unions_pick_the_model_by_kind() -> None:
    control = TypeAdapter[object](ControlMessage)
    assert isinstance(control.validate_json(CancelJob(job_id="x").model_dump_json()), CancelJob)
    events = TypeAdapter[object](Event)
    batch = RecordBatch(worker="w", records=[_record()])
    assert isinstance(events.validate_json(batch.model_dump_json()), RecordBatch)


def test_message_properties_are_bounded() -> None:
    with pytest.raises(ValidationError, match="priority"):
        MessageProperties(priority=256)
    with pytest.raises(ValidationError, match="expiration"):
        MessageProperties(expiration=-1)
    assert MessageProperties().delivery_mode == 2, "persistent by default"


def test_topology_names_live_under_the_namespace() -> None:
    topo = Topology("ns")
    assert topo.commands_exchange == "ns.commands"
    assert topo.control_exchange == "ns.control"
    assert topo.events_exchange == "ns.events"
    assert topo.jobs_queue == "ns.jobs"
    assert topo.is_internal(topo.control_queue("r1"))
    assert not topo.is_internal("orders")
    assert control_replica_key("r1") == "replica.r1"
    assert heartbeat_key("consumer", "r1") == "heartbeat.consumer.r1"
    assert job_key("j") == "job.j"
