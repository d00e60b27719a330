"""Domain errors. Each carries a stable code that the API reports as-is."""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    code = "ledger_error"
    status = 409

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InsufficientPointsError(LedgerError):
    code = "insufficient_points"


class ReversalExceedsOriginalError(LedgerError):
    code = "reversal_exceeds_original"


class NotReversibleError(LedgerError):
    code = "not_reversible"


class UnsupportedCurrencyError(LedgerError):
    code = "unsupported_currency"
    status = 422


class InvalidRequestError(LedgerError):
    code = "invalid_request"
    status = 422


class LinesExceedPurchaseError(InvalidRequestError):
    code = "lines_exceed_purchase"


class CardAlreadyLinkedError(LedgerError):
    code = "card_linked_to_other_member"


class CardNotLinkedError(LedgerError):
    code = "card_not_linked"
    status = 404


class CouponAlreadyRedeemedError(LedgerError):
    code = "coupon_already_redeemed"


class CouponNotValidError(LedgerError):
    code = "coupon_not_valid"
