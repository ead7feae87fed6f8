"""Request bodies of the JSON API: validated, with limits, naming the field on error."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from warren.contracts import MessageProperties

# What the AMQP client library (pamqp) accepts for queue and exchange names; anything else
# fails inside it, so it is refused here first with a 422 naming the field.
NAME = r"^[A-Za-z0-9_.:@#,/+ -]{1,255}$"
EXCHANGE = r"^[A-Za-z0-9_.:@#,/+ -]{0,255}$"


def _fits_amqp(value: str) -> str:
    # AMQP short strings are 255 *bytes*: 255 characters of UTF-8 can be more.
    if len(value.encode("utf-8", "surrogatepass")) > 255:
        raise ValueError("names are at most 255 bytes in UTF-8")
    return value


Name = Annotated[str, Field(pattern=NAME), AfterValidator(_fits_amqp)]
"""A queue or exchange name as the broker takes it."""


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(Request):
    queue: str | None = Field(default=None, pattern=NAME, description="Publish to this queue.")
    exchange: str | None = Field(
        default=None, pattern=EXCHANGE, description="Or to this exchange ('' is the default)."
    )
    routing_key: str = Field(default="", max_length=255)

    @model_validator(mode="after")
    def _one_target(self) -> Target:
        if self.queue is None and self.exchange is None:
            raise ValueError("give a target: 'queue', or 'exchange' and 'routing_key'")
        if self.queue is not None and self.exchange is not None:
            raise ValueError("give either 'queue' or 'exchange', not both")
        return self

    def resolved(self) -> tuple[str, str]:
        if self.queue is not None:
            return "", self.queue
        return self.exchange or "", self.routing_key


class PublishMessage(Target):
    body: JsonValue = Field(default=None, description="JSON; a string is sent as text.")
    properties: MessageProperties = Field(default_factory=MessageProperties)

    @model_validator(mode="after")
    def _encodable(self) -> PublishMessage:
        _check_amqp_properties(self.properties)
        return self


_SHORTSTR_PROPERTIES = (
    "content_type",
    "content_encoding",
    "message_id",
    "correlation_id",
    "reply_to",
    "type",
    "app_id",
    "user_id",
)


def _check_amqp_properties(props: MessageProperties) -> None:
    """What the AMQP encoder would fail on in the producer (a 500 there, a 422 here)."""
    for name in _SHORTSTR_PROPERTIES:
        value = getattr(props, name)
        if value is not None and len(value.encode("utf-8", "surrogatepass")) > 255:
            raise ValueError(f"properties.{name}: at most 255 bytes in UTF-8")
    _check_table(props.headers, "properties.headers")


def _check_table(value: object, where: str, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError(f"{where}: headers nested more than 32 deep")
    if isinstance(value, bool) or value is None or isinstance(value, float | str):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{where}: integers in headers must fit in 64 bits")
    elif isinstance(value, dict):
        for key, item in value.items():
            if len(str(key).encode("utf-8", "surrogatepass")) > 128:
                raise ValueError(f"{where}: header names are at most 128 bytes")
            _check_table(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_table(item, f"{where}[{i}]", depth + 1)


class PublishBatch(PublishMessage):
    # Strict: "10" or true for a count is a client's mistake to report, not to guess at.
    count: int = Field(ge=1, strict=True, description="Messages to publish.")
    concurrency: int = Field(
        default=100, ge=1, strict=True, description="Messages in flight at once."
    )
    rate: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        strict=True,
        description="Publish at most this many messages per second, on a fixed schedule "
        "(steady load, latency measurements); omitted: as fast as the window allows.",
    )
    template: bool = Field(
        default=True, description="Replace {seq}, {uuid} and {now} in the body's strings."
    )


class QueueCreate(Request):
    name: Name
    durable: bool = True
    type: Literal["classic", "quorum"] = "classic"
    dead_letter: bool = Field(default=False, description="Give the queue a '<name>.dlq'.")
    delivery_limit: int | None = Field(default=None, ge=1, le=1000)
    message_ttl: int | None = Field(default=None, ge=0, le=2**31 - 1, description="ms")
    max_length: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _rules(self) -> QueueCreate:
        if self.name.startswith("amq."):
            raise ValueError("queue names starting with 'amq.' are reserved by the broker")
        if self.type == "quorum" and not self.durable:
            raise ValueError("quorum queues are always durable")
        return self


class ExchangeCreate(Request):
    name: Name
    type: Literal["direct", "topic", "fanout", "headers"] = "direct"
    durable: bool = True
    auto_delete: bool = False

    @model_validator(mode="after")
    def _rules(self) -> ExchangeCreate:
        if self.name.startswith("amq."):
            raise ValueError("exchange names starting with 'amq.' are reserved by the broker")
        return self


class BindingCreate(Request):
    queue: Name
    exchange: Name
    routing_key: Annotated[str, Field(max_length=255), AfterValidator(_fits_amqp)] = ""
    arguments: dict[
        Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_fits_amqp)],
        Annotated[str, Field(max_length=255)] | Annotated[int, Field(ge=-(2**63), lt=2**63)] | bool,
    ] = Field(
        default_factory=dict,
        max_length=32,
        description="Headers-exchange match arguments, e.g. {'x-match': 'all', 'kind': 'a'}.",
    )

    @model_validator(mode="after")
    def _rules(self) -> BindingCreate:
        match = self.arguments.get("x-match")
        if match is not None and match not in ("all", "any", "all-with-x", "any-with-x"):
            raise ValueError("arguments.x-match must be 'all', 'any', 'all-with-x' or 'any-with-x'")
        return self


class ConsumerStart(Request):
    queue: Name
    prefetch: int = Field(default=10, ge=1, le=65535)
    delivery_limit: int | None = Field(default=None, ge=1, le=1000)
    replica: str | None = Field(default=None, max_length=255, description="Only this replica.")
