import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TierEvent(_message.Message):
    __slots__ = ("event_id", "type", "program_id", "member_id", "occurred_at", "recorded_at", "correlation_id", "causation_id", "replay", "tier_changed", "tier_progress", "tier_downgrade_warning")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    TIER_CHANGED_FIELD_NUMBER: _ClassVar[int]
    TIER_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TIER_DOWNGRADE_WARNING_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    program_id: str
    member_id: str
    occurred_at: _timestamp_pb2.Timestamp
    recorded_at: _timestamp_pb2.Timestamp
    correlation_id: str
    causation_id: str
    replay: bool
    tier_changed: TierChanged
    tier_progress: TierProgress
    tier_downgrade_warning: TierDowngradeWarning
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., program_id: _Optional[str] = ..., member_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., replay: _Optional[bool] = ..., tier_changed: _Optional[_Union[TierChanged, _Mapping]] = ..., tier_progress: _Optional[_Union[TierProgress, _Mapping]] = ..., tier_downgrade_warning: _Optional[_Union[TierDowngradeWarning, _Mapping]] = ...) -> None: ...

class TierChanged(_message.Message):
    __slots__ = ("from_tier", "to_tier", "reason", "valid_until", "qualifying_points")
    FROM_TIER_FIELD_NUMBER: _ClassVar[int]
    TO_TIER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_POINTS_FIELD_NUMBER: _ClassVar[int]
    from_tier: str
    to_tier: str
    reason: str
    valid_until: _timestamp_pb2.Timestamp
    qualifying_points: int
    def __init__(self, from_tier: _Optional[str] = ..., to_tier: _Optional[str] = ..., reason: _Optional[str] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., qualifying_points: _Optional[int] = ...) -> None: ...

class TierProgress(_message.Message):
    __slots__ = ("current_tier", "next_tier", "qualifying_points", "points_to_next", "period_end")
    CURRENT_TIER_FIELD_NUMBER: _ClassVar[int]
    NEXT_TIER_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_POINTS_FIELD_NUMBER: _ClassVar[int]
    POINTS_TO_NEXT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    current_tier: str
    next_tier: str
    qualifying_points: int
    points_to_next: int
    period_end: _timestamp_pb2.Timestamp
    def __init__(self, current_tier: _Optional[str] = ..., next_tier: _Optional[str] = ..., qualifying_points: _Optional[int] = ..., points_to_next: _Optional[int] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TierDowngradeWarning(_message.Message):
    __slots__ = ("current_tier", "expected_tier", "qualifying_points", "points_needed", "period_end", "downgrade_at")
    CURRENT_TIER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_TIER_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_POINTS_FIELD_NUMBER: _ClassVar[int]
    POINTS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    DOWNGRADE_AT_FIELD_NUMBER: _ClassVar[int]
    current_tier: str
    expected_tier: str
    qualifying_points: int
    points_needed: int
    period_end: _timestamp_pb2.Timestamp
    downgrade_at: _timestamp_pb2.Timestamp
    def __init__(self, current_tier: _Optional[str] = ..., expected_tier: _Optional[str] = ..., qualifying_points: _Optional[int] = ..., points_needed: _Optional[int] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., downgrade_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
