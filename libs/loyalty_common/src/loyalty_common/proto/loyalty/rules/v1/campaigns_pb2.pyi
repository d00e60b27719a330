import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CampaignEvent(_message.Message):
    __slots__ = ("event_id", "type", "program_id", "member_id", "occurred_at", "recorded_at", "correlation_id", "causation_id", "replay", "bonus_campaign_scheduled", "bonus_campaign_cancelled", "offer_issued", "reward_granted", "points_expiring")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    BONUS_CAMPAIGN_SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    BONUS_CAMPAIGN_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    OFFER_ISSUED_FIELD_NUMBER: _ClassVar[int]
    REWARD_GRANTED_FIELD_NUMBER: _ClassVar[int]
    POINTS_EXPIRING_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    program_id: str
    member_id: str
    occurred_at: _timestamp_pb2.Timestamp
    recorded_at: _timestamp_pb2.Timestamp
    correlation_id: str
    causation_id: str
    replay: bool
    bonus_campaign_scheduled: BonusCampaignScheduled
    bonus_campaign_cancelled: BonusCampaignCancelled
    offer_issued: OfferIssued
    reward_granted: RewardGranted
    points_expiring: PointsExpiring
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., program_id: _Optional[str] = ..., member_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., replay: _Optional[bool] = ..., bonus_campaign_scheduled: _Optional[_Union[BonusCampaignScheduled, _Mapping]] = ..., bonus_campaign_cancelled: _Optional[_Union[BonusCampaignCancelled, _Mapping]] = ..., offer_issued: _Optional[_Union[OfferIssued, _Mapping]] = ..., reward_granted: _Optional[_Union[RewardGranted, _Mapping]] = ..., points_expiring: _Optional[_Union[PointsExpiring, _Mapping]] = ...) -> None: ...

class BonusCampaignScheduled(_message.Message):
    __slots__ = ("campaign_id", "name", "multiplier", "starts_at", "ends_at", "channels", "categories", "store_ids", "tiers")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    STORE_IDS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    name: str
    multiplier: str
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    channels: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    store_ids: _containers.RepeatedScalarFieldContainer[str]
    tiers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, campaign_id: _Optional[str] = ..., name: _Optional[str] = ..., multiplier: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., channels: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ..., store_ids: _Optional[_Iterable[str]] = ..., tiers: _Optional[_Iterable[str]] = ...) -> None: ...

class BonusCampaignCancelled(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class OfferIssued(_message.Message):
    __slots__ = ("campaign_id", "campaign_name", "coupon_id", "code", "kind", "value", "currency", "points_cost", "valid_from", "valid_until")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_NAME_FIELD_NUMBER: _ClassVar[int]
    COUPON_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    POINTS_COST_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    campaign_name: str
    coupon_id: str
    code: str
    kind: str
    value: str
    currency: str
    points_cost: int
    valid_from: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    def __init__(self, campaign_id: _Optional[str] = ..., campaign_name: _Optional[str] = ..., coupon_id: _Optional[str] = ..., code: _Optional[str] = ..., kind: _Optional[str] = ..., value: _Optional[str] = ..., currency: _Optional[str] = ..., points_cost: _Optional[int] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RewardGranted(_message.Message):
    __slots__ = ("trigger", "points", "coupon_id", "code", "detail")
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    COUPON_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    trigger: str
    points: int
    coupon_id: str
    code: str
    detail: str
    def __init__(self, trigger: _Optional[str] = ..., points: _Optional[int] = ..., coupon_id: _Optional[str] = ..., code: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class PointsExpiring(_message.Message):
    __slots__ = ("points", "expires_at")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    points: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, points: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
