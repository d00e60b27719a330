"""Errors of the service layer, each with an HTTP status and a stable code."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFoundError(ServiceError):
    status = 404

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class IdempotencyKeyReusedError(ServiceError):
    status = 422
    code = "idempotency_key_reused"


class IdempotencyInProgressError(ServiceError):
    status = 409
    code = "idempotency_request_in_progress"


class DuplicateOrderError(ServiceError):
    status = 409
    code = "duplicate_order"


class MemberExistsError(ServiceError):
    status = 409
    code = "member_exists"


class ContentionError(ServiceError):
    status = 409
    code = "concurrent_update"


class AsOfInFutureError(ServiceError):
    status = 422
    code = "as_of_in_future"


class KnownAtInFutureError(ServiceError):
    status = 422
    code = "known_at_in_future"


class InvalidCursorError(ServiceError):
    status = 422
    code = "invalid_cursor"
