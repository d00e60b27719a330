"""Stored events to and from their protobuf envelopes (proto/loyalty/ledger/v1/events.proto).

A row of the ``events`` table becomes an ``Envelope``. The event's data, the JSON that
``ledger.adapters.codec.encode_event`` stored, goes into the payload case named after its
type, field by field along the message's descriptor (json_format.ParseDict would do the
same at a tenth of the speed, which the relay cannot spare): the proto field names are the
dataclass field names, datetimes arrive as ISO 8601 text (parsed into Timestamps, an
offset required), decimals as text (kept as text), None as an absent field. An unknown
key or a value of the wrong kind is a ValueError, never silently dropped or rounded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import loyalty_common.proto.loyalty.ledger.v1.events_pb2 as events_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def _payload_cases() -> dict[str, str]:
    """Payload case name by event type name, e.g. "PointsEarned" -> "points_earned"."""
    cases: dict[str, str] = {}
    for field in events_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields:
        assert field.message_type is not None  # every case is a message named after its type
        cases[field.message_type.name] = field.name
    return cases


PAYLOAD_FIELDS = _payload_cases()


def _timestamp(value: datetime) -> Timestamp:
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r} in an event record")
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _fill(message: Message, data: Mapping[str, Any]) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        if value is None:
            continue
        field = fields.get(key)
        if field is None:
            raise ValueError(f"{message.DESCRIPTOR.name} has no field {key!r}")
        kind = field.message_type
        try:
            if kind is None:
                if field.is_repeated:
                    getattr(message, key).extend(value)
                else:
                    setattr(message, key, value)
            elif kind.full_name == "google.protobuf.Timestamp":
                getattr(message, key).CopyFrom(_timestamp(datetime.fromisoformat(value)))
            elif kind.GetOptions().map_entry:
                getattr(message, key).update(value)
            elif field.is_repeated:
                container = getattr(message, key)
                for item in value:
                    _fill(container.add(), item)
            else:
                _fill(getattr(message, key), value)
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"{message.DESCRIPTOR.name}.{key}: {exc}") from exc


def envelope(record: Mapping[str, Any], *, replay: bool = False) -> events_pb2.Envelope:
    """The envelope of one ``events`` row (as asyncpg returns it, or an equal mapping)."""
    event_type = record["type"]
    if event_type not in PAYLOAD_FIELDS:
        raise ValueError(f"no protobuf payload for event type {event_type!r}")
    env = events_pb2.Envelope(
        event_id=str(record["event_id"]),
        type=event_type,
        program_id=str(record["program_id"]),
        stream_id=record["stream_id"],
        stream_version=record["version"],
        position=record["position"],
        occurred_at=_timestamp(record["occurred_at"]),
        recorded_at=_timestamp(record["recorded_at"]),
        correlation_id=record["correlation_id"] or "",
        causation_id=record["causation_id"] or "",
        actor=record["actor"] or "",
        reason=record["reason"] or "",
        replay=replay,
    )
    data = record["data"]
    data = dict(json.loads(data) if isinstance(data, str | bytes) else data)
    if event_type == "ProgramConfigured":
        # JSON text, not a Struct: see the comment on ProgramConfigured.config. Keys
        # sorted, since jsonb does not keep their order: the same event, the same bytes.
        data["config"] = json.dumps(
            data["config"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    payload = getattr(env, PAYLOAD_FIELDS[event_type])
    payload.SetInParent()
    _fill(payload, data)
    return env


def envelope_bytes(record: Mapping[str, Any], *, replay: bool = False) -> bytes:
    """The serialized envelope of one ``events`` row: a Kafka message value."""
    data: bytes = envelope(record, replay=replay).SerializeToString(deterministic=True)
    return data


def decode(data: bytes) -> events_pb2.Envelope:
    """An envelope from a Kafka message value."""
    return events_pb2.Envelope.FromString(data)
