import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NotificationEvent(_message.Message):
    __slots__ = ("event_id", "type", "program_id", "member_id", "occurred_at", "recorded_at", "correlation_id", "causation_id", "replay", "message_sent", "message_suppressed", "message_failed")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_SENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FAILED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    program_id: str
    member_id: str
    occurred_at: _timestamp_pb2.Timestamp
    recorded_at: _timestamp_pb2.Timestamp
    correlation_id: str
    causation_id: str
    replay: bool
    message_sent: MessageSent
    message_suppressed: MessageSuppressed
    message_failed: MessageFailed
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., program_id: _Optional[str] = ..., member_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., replay: _Optional[bool] = ..., message_sent: _Optional[_Union[MessageSent, _Mapping]] = ..., message_suppressed: _Optional[_Union[MessageSuppressed, _Mapping]] = ..., message_failed: _Optional[_Union[MessageFailed, _Mapping]] = ...) -> None: ...

class MessageSent(_message.Message):
    __slots__ = ("message_id", "channel", "event_type", "locale", "segments", "provider_id", "campaign_id")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    channel: str
    event_type: str
    locale: str
    segments: int
    provider_id: str
    campaign_id: str
    def __init__(self, message_id: _Optional[str] = ..., channel: _Optional[str] = ..., event_type: _Optional[str] = ..., locale: _Optional[str] = ..., segments: _Optional[int] = ..., provider_id: _Optional[str] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class MessageSuppressed(_message.Message):
    __slots__ = ("message_id", "channel", "event_type", "reason", "campaign_id")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    channel: str
    event_type: str
    reason: str
    campaign_id: str
    def __init__(self, message_id: _Optional[str] = ..., channel: _Optional[str] = ..., event_type: _Optional[str] = ..., reason: _Optional[str] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class MessageFailed(_message.Message):
    __slots__ = ("message_id", "channel", "event_type", "reason", "attempts", "campaign_id")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    channel: str
    event_type: str
    reason: str
    attempts: int
    campaign_id: str
    def __init__(self, message_id: _Optional[str] = ..., channel: _Optional[str] = ..., event_type: _Optional[str] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ..., campaign_id: _Optional[str] = ...) -> None: ...
