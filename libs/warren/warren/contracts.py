"""Every message that crosses the broker between Warren's services, and where it flows.

One source of truth: services import these models and names, they never redefine them. Each
model is frozen and carries a schema version ``v``; readers ignore fields they do not know, so a
newer writer can add fields without breaking an older reader.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

SCHEMA_VERSION = 1

# Routing keys ------------------------------------------------------------------------------------
JOBS_ROUTING_KEY = "jobs.publish"
CONTROL_ALL_CONSUMERS = "consumers.all"
CONTROL_ALL_PRODUCERS = "producers.all"
EVENTS_ALL = "#"

# Header of a user's message: when the producer published it, integer microseconds since the
# epoch (an integer because pamqp encodes a float header as a 32-bit float).
PUBLISHED_US_HEADER = "x-warren-published-us"


def control_replica_key(replica: str) -> str:
    """Routing key of a control command meant for one replica."""
    return f"replica.{replica}"


def heartbeat_key(role: str, replica: str) -> str:
    return f"heartbeat.{role}.{replica}"


def job_key(job_id: str) -> str:
    return f"job.{job_id}"


def records_key(replica: str) -> str:
    return f"records.{replica}"


class Topology:
    """Names of Warren's own exchanges and queues under a namespace prefix."""

    def __init__(self, namespace: str = "warren") -> None:
        self.namespace = namespace

    @property
    def commands_exchange(self) -> str:
        """Direct exchange: gateway → producers (publish jobs)."""
        return f"{self.namespace}.commands"

    @property
    def control_exchange(self) -> str:
        """Topic exchange: gateway → consumers and producers (start/stop, cancel)."""
        return f"{self.namespace}.control"

    @property
    def events_exchange(self) -> str:
        """Topic exchange: producers, consumers → gateway (heartbeats, progress, records)."""
        return f"{self.namespace}.events"

    @property
    def jobs_queue(self) -> str:
        """Durable queue shared by every producer replica (competing consumers)."""
        return f"{self.namespace}.jobs"

    def control_queue(self, replica: str) -> str:
        return f"{self.namespace}.control.{replica}"

    def gateway_queue(self, instance: str) -> str:
        return f"{self.namespace}.gateway.{instance}"

    def is_internal(self, name: str) -> bool:
        """Whether a queue or exchange belongs to Warren itself rather than to users."""
        return name.startswith(f"{self.namespace}.")


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every cross-service message."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = Field(default=SCHEMA_VERSION, description="Schema version of this message.")


# Publish jobs: gateway → producer ----------------------------------------------------------------


class MessageProperties(BaseModel):
    """AMQP properties of a user's message, as a person writes them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content_type: str | None = Field(default=None, max_length=255)
    content_encoding: str | None = Field(default=None, max_length=255)
    delivery_mode: Literal[1, 2] = Field(default=2, description="2 = persistent (the default).")
    priority: int | None = Field(default=None, ge=0, le=255)
    expiration: int | None = Field(default=None, ge=0, le=2**31 - 1, description="TTL in ms.")
    headers: dict[str, JsonValue] = Field(default_factory=dict)
    message_id: str | None = Field(default=None, max_length=255)
    correlation_id: str | None = Field(default=None, max_length=255)
    reply_to: str | None = Field(default=None, max_length=255)
    type: str | None = Field(default=None, max_length=255)
    app_id: str | None = Field(default=None, max_length=255)
    user_id: str | None = Field(default=None, max_length=255)
    timestamp: bool = Field(default=True, description="Stamp the message with the send time.")


class PublishJob(Contract):
    """Publish one message or a batch of ``count`` messages to a queue or an exchange."""

    kind: Literal["publish"] = "publish"
    job_id: str = Field(default_factory=new_id)
    batch: bool = Field(default=False, description="A batch (progress reported) or one message.")
    exchange: str = Field(default="", description="Target exchange; '' is the default exchange.")
    routing_key: str = Field(default="", description="Routing key (the queue name for '').")
    body: JsonValue = Field(default=None, description="JSON body, or text when body_is_text.")
    body_is_text: bool = False
    template: bool = Field(
        default=False,
        description="Substitute {seq}, {uuid}, {now} in string values for each message.",
    )
    count: int = Field(default=1, ge=1)
    concurrency: int = Field(default=1, ge=1, description="Messages in flight at once.")
    rate: float | None = Field(
        default=None,
        gt=0,
        description="Messages per second at most, on a fixed schedule (a batch); None: as fast "
        "as the window allows.",
    )
    properties: MessageProperties = Field(default_factory=MessageProperties)
    requested_at: datetime = Field(default_factory=utcnow)
    deadline_s: float | None = Field(
        default=None, description="Give up on the job after this many seconds (single messages)."
    )


class CancelJob(Contract):
    kind: Literal["cancel_job"] = "cancel_job"
    job_id: str


JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class JobProgress(Contract):
    """Progress of a job, sent at least every 250 ms while it runs and once at the end."""

    kind: Literal["job_progress"] = "job_progress"
    job_id: str
    status: JobStatus
    final: bool = False
    batch: bool = False
    producer: str = Field(description="Replica running the job.")
    count: int
    published: int = 0
    confirmed: int = 0
    returned: int = 0
    nacked: int = 0
    failed: int = 0
    retried: int = Field(default=0, description="Publishes retried after a fault (may duplicate).")
    redelivered: bool = Field(
        default=False,
        description="The job was redelivered (a producer died or lost its connection while "
        "running it) and ran again from the start: earlier messages may be duplicated.",
    )
    elapsed_s: float = 0.0
    rate: float = Field(default=0.0, description="Confirmed messages per second.")
    error: str | None = None
    error_kind: (
        Literal[
            "unroutable",
            "not_found",
            "refused",
            "timeout",
            "blocked",
            "connection",
            "nacked",
            "other",
        ]
        | None
    ) = None
    message_id: str | None = Field(default=None, description="The message id (single messages).")
    trace_id: str | None = None
    exchange: str = ""
    routing_key: str = ""
    sent_at: datetime = Field(default_factory=utcnow)


# Control: gateway → consumers --------------------------------------------------------------------


class ConsumeCommand(Contract):
    """Start or stop consuming a queue; ``sync`` restates the whole desired set."""

    kind: Literal["consume"] = "consume"
    command_id: str = Field(default_factory=new_id)
    action: Literal["start", "stop"]
    queue: str
    prefetch: int = Field(default=10, ge=1, le=65535)
    delivery_limit: int | None = Field(
        default=None, ge=1, description="Deliveries a failing message gets before dead-lettering."
    )
    replica: str | None = Field(default=None, description="None means every consumer replica.")


ControlMessage = Annotated[ConsumeCommand | CancelJob, Field(discriminator="kind")]


# Events: producers, consumers → gateway ----------------------------------------------------------


class ConsumedQueue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    queue: str
    prefetch: int
    state: Literal["starting", "consuming", "waiting", "stopping"] = "consuming"
    delivery_limit: int | None = None
    processed: int = 0
    in_flight: int = 0
    scope: Literal["all", "replica"] = Field(
        default="all",
        description="'all': asked of every replica (the gateway relearns it after a restart); "
        "'replica': this replica only (its configuration, or a command naming it).",
    )


class Counters(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    processed: int = 0
    acked: int = 0
    failed: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    redelivered: int = 0
    duplicates: int = 0
    records_sent: int = 0
    records_sampled_out: int = 0
    jobs: int = 0
    published: int = 0
    confirmed: int = 0
    returned: int = 0


class Heartbeat(Contract):
    """A replica's status, sent every few seconds."""

    kind: Literal["heartbeat"] = "heartbeat"
    role: Literal["producer", "consumer"]
    replica: str
    host: str
    pid: int
    started_at: datetime
    sent_at: datetime = Field(default_factory=utcnow)
    interval_s: float = 2.0
    connection: Literal["connected", "reconnecting", "closed"] = "connected"
    queues: list[ConsumedQueue] = Field(default_factory=list)
    in_flight: int = 0
    counters: Counters = Field(default_factory=Counters)
    rate: float = Field(default=0.0, description="Messages per second over the last interval.")
    versions: dict[str, str] = Field(default_factory=dict)
    instrumentation: dict[str, bool] = Field(default_factory=dict)
    instrumentation_error: str | None = None
    stopping: bool = False


Outcome = Literal["acked", "failed", "requeued", "dead_lettered", "duplicate"]


class ProcessedRecord(BaseModel):
    """What a consumer did with one message."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    message_id: str | None
    queue: str
    exchange: str = ""
    routing_key: str = ""
    worker: str
    outcome: Outcome
    error: str | None = None
    redelivered: bool = False
    delivery_count: int = 1
    body: str = Field(default="", description="Body preview, decoded as text, truncated.")
    body_size: int = 0
    body_truncated: bool = False
    content_type: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, Any] = Field(default_factory=dict)
    published_at: datetime | None = None
    received_at: datetime
    processed_at: datetime
    latency_ms: float | None = Field(default=None, description="Publish → processed, when known.")
    processing_ms: float = 0.0
    trace_id: str | None = None
    span_id: str | None = None


class RecordBatch(Contract):
    """Processed records, batched so that reporting stays cheap at thousands per second."""

    kind: Literal["records"] = "records"
    worker: str
    records: list[ProcessedRecord]
    sampled_out: int = Field(default=0, description="Records dropped by sampling since the last.")


Event = Annotated[Heartbeat | JobProgress | RecordBatch, Field(discriminator="kind")]
