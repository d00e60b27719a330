import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("event_id", "type", "program_id", "stream_id", "stream_version", "position", "occurred_at", "recorded_at", "correlation_id", "causation_id", "actor", "reason", "replay", "program_configured", "member_enrolled", "card_linked", "card_unlinked", "points_earned", "pending_points_activated", "points_redeemed", "points_adjusted", "earn_reversed", "redemption_reversed", "points_expired", "qualification_period_ended", "coupon_issued", "coupon_redeemed", "consents_changed", "member_profile_changed")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ENROLLED_FIELD_NUMBER: _ClassVar[int]
    CARD_LINKED_FIELD_NUMBER: _ClassVar[int]
    CARD_UNLINKED_FIELD_NUMBER: _ClassVar[int]
    POINTS_EARNED_FIELD_NUMBER: _ClassVar[int]
    PENDING_POINTS_ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    POINTS_REDEEMED_FIELD_NUMBER: _ClassVar[int]
    POINTS_ADJUSTED_FIELD_NUMBER: _ClassVar[int]
    EARN_REVERSED_FIELD_NUMBER: _ClassVar[int]
    REDEMPTION_REVERSED_FIELD_NUMBER: _ClassVar[int]
    POINTS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    QUALIFICATION_PERIOD_ENDED_FIELD_NUMBER: _ClassVar[int]
    COUPON_ISSUED_FIELD_NUMBER: _ClassVar[int]
    COUPON_REDEEMED_FIELD_NUMBER: _ClassVar[int]
    CONSENTS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    MEMBER_PROFILE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    program_id: str
    stream_id: str
    stream_version: int
    position: int
    occurred_at: _timestamp_pb2.Timestamp
    recorded_at: _timestamp_pb2.Timestamp
    correlation_id: str
    causation_id: str
    actor: str
    reason: str
    replay: bool
    program_configured: ProgramConfigured
    member_enrolled: MemberEnrolled
    card_linked: CardLinked
    card_unlinked: CardUnlinked
    points_earned: PointsEarned
    pending_points_activated: PendingPointsActivated
    points_redeemed: PointsRedeemed
    points_adjusted: PointsAdjusted
    earn_reversed: EarnReversed
    redemption_reversed: RedemptionReversed
    points_expired: PointsExpired
    qualification_period_ended: QualificationPeriodEnded
    coupon_issued: CouponIssued
    coupon_redeemed: CouponRedeemed
    consents_changed: ConsentsChanged
    member_profile_changed: MemberProfileChanged
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., program_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., stream_version: _Optional[int] = ..., position: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., replay: _Optional[bool] = ..., program_configured: _Optional[_Union[ProgramConfigured, _Mapping]] = ..., member_enrolled: _Optional[_Union[MemberEnrolled, _Mapping]] = ..., card_linked: _Optional[_Union[CardLinked, _Mapping]] = ..., card_unlinked: _Optional[_Union[CardUnlinked, _Mapping]] = ..., points_earned: _Optional[_Union[PointsEarned, _Mapping]] = ..., pending_points_activated: _Optional[_Union[PendingPointsActivated, _Mapping]] = ..., points_redeemed: _Optional[_Union[PointsRedeemed, _Mapping]] = ..., points_adjusted: _Optional[_Union[PointsAdjusted, _Mapping]] = ..., earn_reversed: _Optional[_Union[EarnReversed, _Mapping]] = ..., redemption_reversed: _Optional[_Union[RedemptionReversed, _Mapping]] = ..., points_expired: _Optional[_Union[PointsExpired, _Mapping]] = ..., qualification_period_ended: _Optional[_Union[QualificationPeriodEnded, _Mapping]] = ..., coupon_issued: _Optional[_Union[CouponIssued, _Mapping]] = ..., coupon_redeemed: _Optional[_Union[CouponRedeemed, _Mapping]] = ..., consents_changed: _Optional[_Union[ConsentsChanged, _Mapping]] = ..., member_profile_changed: _Optional[_Union[MemberProfileChanged, _Mapping]] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("lot_id", "points")
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    lot_id: str
    points: int
    def __init__(self, lot_id: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...

class BreakdownLine(_message.Message):
    __slots__ = ("rule", "points", "detail")
    RULE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    rule: str
    points: int
    detail: str
    def __init__(self, rule: _Optional[str] = ..., points: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class OrderLine(_message.Message):
    __slots__ = ("sku", "quantity", "amount", "category")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    amount: str
    category: str
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ..., amount: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class ProgramConfigured(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: str
    def __init__(self, config: _Optional[str] = ...) -> None: ...

class MemberEnrolled(_message.Message):
    __slots__ = ("member_id", "external_id", "enrolled_at", "email", "phone", "birthday", "locale", "time_zone", "consents", "referred_by", "first_name", "last_name")
    class ConsentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    BIRTHDAY_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    REFERRED_BY_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    external_id: str
    enrolled_at: _timestamp_pb2.Timestamp
    email: str
    phone: str
    birthday: str
    locale: str
    time_zone: str
    consents: _containers.ScalarMap[str, bool]
    referred_by: str
    first_name: str
    last_name: str
    def __init__(self, member_id: _Optional[str] = ..., external_id: _Optional[str] = ..., enrolled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., email: _Optional[str] = ..., phone: _Optional[str] = ..., birthday: _Optional[str] = ..., locale: _Optional[str] = ..., time_zone: _Optional[str] = ..., consents: _Optional[_Mapping[str, bool]] = ..., referred_by: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ...) -> None: ...

class CardLinked(_message.Message):
    __slots__ = ("card_token",)
    CARD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    card_token: str
    def __init__(self, card_token: _Optional[str] = ...) -> None: ...

class CardUnlinked(_message.Message):
    __slots__ = ("card_token",)
    CARD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    card_token: str
    def __init__(self, card_token: _Optional[str] = ...) -> None: ...

class PointsEarned(_message.Message):
    __slots__ = ("transaction_id", "lot_id", "kind", "points", "qualifying_points", "qualifying_month", "earned_at", "expires_at", "available_at", "debt_paid", "order_id", "amount", "currency", "channel", "store_id", "partner_id", "lines", "breakdown")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_POINTS_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_MONTH_FIELD_NUMBER: _ClassVar[int]
    EARNED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_AT_FIELD_NUMBER: _ClassVar[int]
    DEBT_PAID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    lot_id: str
    kind: str
    points: int
    qualifying_points: int
    qualifying_month: str
    earned_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    available_at: _timestamp_pb2.Timestamp
    debt_paid: int
    order_id: str
    amount: str
    currency: str
    channel: str
    store_id: str
    partner_id: str
    lines: _containers.RepeatedCompositeFieldContainer[OrderLine]
    breakdown: _containers.RepeatedCompositeFieldContainer[BreakdownLine]
    def __init__(self, transaction_id: _Optional[str] = ..., lot_id: _Optional[str] = ..., kind: _Optional[str] = ..., points: _Optional[int] = ..., qualifying_points: _Optional[int] = ..., qualifying_month: _Optional[str] = ..., earned_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., available_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., debt_paid: _Optional[int] = ..., order_id: _Optional[str] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., channel: _Optional[str] = ..., store_id: _Optional[str] = ..., partner_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[OrderLine, _Mapping]]] = ..., breakdown: _Optional[_Iterable[_Union[BreakdownLine, _Mapping]]] = ...) -> None: ...

class PendingPointsActivated(_message.Message):
    __slots__ = ("lot_id", "points", "activated_at", "debt_paid")
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEBT_PAID_FIELD_NUMBER: _ClassVar[int]
    lot_id: str
    points: int
    activated_at: _timestamp_pb2.Timestamp
    debt_paid: int
    def __init__(self, lot_id: _Optional[str] = ..., points: _Optional[int] = ..., activated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., debt_paid: _Optional[int] = ...) -> None: ...

class PointsRedeemed(_message.Message):
    __slots__ = ("transaction_id", "points", "allocations", "redeemed_at", "reward", "order_id")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    REDEEMED_AT_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    points: int
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    redeemed_at: _timestamp_pb2.Timestamp
    reward: str
    order_id: str
    def __init__(self, transaction_id: _Optional[str] = ..., points: _Optional[int] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., redeemed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reward: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class PointsAdjusted(_message.Message):
    __slots__ = ("transaction_id", "points", "adjusted_at", "lot_id", "expires_at", "allocations", "debt_paid")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_AT_FIELD_NUMBER: _ClassVar[int]
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    DEBT_PAID_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    points: int
    adjusted_at: _timestamp_pb2.Timestamp
    lot_id: str
    expires_at: _timestamp_pb2.Timestamp
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    debt_paid: int
    def __init__(self, transaction_id: _Optional[str] = ..., points: _Optional[int] = ..., adjusted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lot_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., debt_paid: _Optional[int] = ...) -> None: ...

class EarnReversed(_message.Message):
    __slots__ = ("transaction_id", "original_transaction_id", "points", "qualifying_points", "qualifying_month", "reversed_at", "allocations", "debt_recorded", "forgiven", "amount")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_POINTS_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_MONTH_FIELD_NUMBER: _ClassVar[int]
    REVERSED_AT_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    DEBT_RECORDED_FIELD_NUMBER: _ClassVar[int]
    FORGIVEN_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    original_transaction_id: str
    points: int
    qualifying_points: int
    qualifying_month: str
    reversed_at: _timestamp_pb2.Timestamp
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    debt_recorded: int
    forgiven: int
    amount: str
    def __init__(self, transaction_id: _Optional[str] = ..., original_transaction_id: _Optional[str] = ..., points: _Optional[int] = ..., qualifying_points: _Optional[int] = ..., qualifying_month: _Optional[str] = ..., reversed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., debt_recorded: _Optional[int] = ..., forgiven: _Optional[int] = ..., amount: _Optional[str] = ...) -> None: ...

class RedemptionReversed(_message.Message):
    __slots__ = ("transaction_id", "original_transaction_id", "points", "allocations", "reversed_at")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    REVERSED_AT_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    original_transaction_id: str
    points: int
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    reversed_at: _timestamp_pb2.Timestamp
    def __init__(self, transaction_id: _Optional[str] = ..., original_transaction_id: _Optional[str] = ..., points: _Optional[int] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., reversed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PointsExpired(_message.Message):
    __slots__ = ("lot_id", "points", "expired_at")
    LOT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_AT_FIELD_NUMBER: _ClassVar[int]
    lot_id: str
    points: int
    expired_at: _timestamp_pb2.Timestamp
    def __init__(self, lot_id: _Optional[str] = ..., points: _Optional[int] = ..., expired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class QualificationPeriodEnded(_message.Message):
    __slots__ = ("period_start", "period_end", "qualifying_points")
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    QUALIFYING_POINTS_FIELD_NUMBER: _ClassVar[int]
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    qualifying_points: int
    def __init__(self, period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., qualifying_points: _Optional[int] = ...) -> None: ...

class CouponIssued(_message.Message):
    __slots__ = ("coupon_id", "code", "kind", "value", "points_cost", "valid_from", "valid_until", "issued_at", "currency", "campaign_id")
    COUPON_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    POINTS_COST_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    coupon_id: str
    code: str
    kind: str
    value: str
    points_cost: int
    valid_from: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    issued_at: _timestamp_pb2.Timestamp
    currency: str
    campaign_id: str
    def __init__(self, coupon_id: _Optional[str] = ..., code: _Optional[str] = ..., kind: _Optional[str] = ..., value: _Optional[str] = ..., points_cost: _Optional[int] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., currency: _Optional[str] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class CouponRedeemed(_message.Message):
    __slots__ = ("coupon_id", "redeemed_at", "order_id", "order_amount", "currency", "transaction_id")
    COUPON_ID_FIELD_NUMBER: _ClassVar[int]
    REDEEMED_AT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    coupon_id: str
    redeemed_at: _timestamp_pb2.Timestamp
    order_id: str
    order_amount: str
    currency: str
    transaction_id: str
    def __init__(self, coupon_id: _Optional[str] = ..., redeemed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order_id: _Optional[str] = ..., order_amount: _Optional[str] = ..., currency: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class ConsentsChanged(_message.Message):
    __slots__ = ("consents", "changed_at", "source")
    class ConsentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.ScalarMap[str, bool]
    changed_at: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, consents: _Optional[_Mapping[str, bool]] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class MemberProfileChanged(_message.Message):
    __slots__ = ("changed_at", "email", "phone", "first_name", "last_name", "locale", "time_zone", "birthday", "cleared")
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    BIRTHDAY_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    changed_at: _timestamp_pb2.Timestamp
    email: str
    phone: str
    first_name: str
    last_name: str
    locale: str
    time_zone: str
    birthday: str
    cleared: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., email: _Optional[str] = ..., phone: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., locale: _Optional[str] = ..., time_zone: _Optional[str] = ..., birthday: _Optional[str] = ..., cleared: _Optional[_Iterable[str]] = ...) -> None: ...
