"""The ledger's REST API (v1)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, cast
from uuid import UUID

import asyncpg
import orjson
import structlog
from fastapi import Depends, FastAPI, Query, Request, Response, params
from fastapi._compat import ModelField, Undefined, is_scalar_field
from fastapi.dependencies.utils import (
    _validate_value_with_model_field,
    get_typed_return_annotation,
)
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loyalty_common.db import create_pool
from loyalty_common.embedded import resolve_database_url
from loyalty_common.health import readiness
from loyalty_common.logs import configure_logging
from loyalty_common.problems import (
    JSONResponse,
    ProblemError,
    install_problem_handlers,
    problem_response,
)
from loyalty_common.telemetry import (
    TELEMETRY,
    bind_correlation,
    instrument,
    metrics_response,
    setup_tracing,
)
from pydantic import AwareDatetime, Json, TypeAdapter, ValidationError
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uuid_utils import uuid4

from ledger.config import LedgerSettings
from ledger.domain.account import Purchase
from ledger.domain.errors import LedgerError
from ledger.domain.events import OrderLine
from ledger.entrypoints.schemas import (
    LOOKUP_KEYS,
    AdjustRequest,
    CardRequest,
    ConsentsRequest,
    CouponRedeemRequest,
    CouponRequest,
    EarnRequest,
    EnrolRequest,
    ProfileRequest,
    ReadHeaders,
    RedeemRequest,
    ReverseRequest,
    WriteHeaders,
)
from ledger.service_layer.auth import ApiKey, KeyRing
from ledger.service_layer.errors import ServiceError
from ledger.service_layer.ledger import Ledger, Outcome, RequestContext
from ledger.service_layer.program_document import ProgramDocument
from ledger.service_layer.programs import configure_program, read_program

log = structlog.get_logger("ledger")


class BodyLimit:
    """Refuses bodies over the limit with a problem+json 413, before anything reads them.

    (FastAPI's own ``max_body_size`` answers in plain text, outside the error contract.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise ProblemError(
                    413, "body_too_large", f"the body exceeds {self.max_bytes} bytes"
                )
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "body_too_large", f"the body exceeds {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


GC_THRESHOLDS = (50_000, 50, 100)  # the cycle collector's; CPython's are (700, 10, 10)
CLOCK_LOCK = 0x6C6F79616C7479  # an advisory lock id: one scheduled clock run at a time


async def _clock_loop(ledger: Ledger, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            # Workers and replicas all schedule runs; the lock lets one run at a time
            # (a second run would find nothing due, but would read for nothing).
            async with ledger.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", CLOCK_LOCK):
                    continue
                result = await ledger.run_clock(datetime.now(UTC))
            if result["members"]:
                log.info("clock_ran", **result)
        except Exception:
            log.exception("clock_failed")


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    settings = settings or LedgerSettings()
    configure_logging(settings.log_level)
    setup_tracing("ledger")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dsn = await asyncio.to_thread(
            resolve_database_url, settings.database_url, settings.data_dir, "loyalty"
        )
        pool = await create_pool(
            dsn, min_size=min(2, settings.pool_size), max_size=settings.pool_size
        )
        app.state.ledger = Ledger(pool, allow_future_as_of=settings.allow_future_as_of)
        app.state.keys = KeyRing(pool)
        # A request allocates thousands of objects that reference counting frees; at
        # the default thresholds the cycle collector ran every 700 allocations, over
        # everything the worker loaded at start as well (ADR 0013).
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        clock = None
        if settings.clock_interval_seconds > 0:
            clock = asyncio.create_task(
                _clock_loop(app.state.ledger, settings.clock_interval_seconds)
            )
        try:
            yield
        finally:
            if clock is not None:
                clock.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await clock
            await pool.close()

    app = FastAPI(
        title="Loyalty ledger",
        version="1",
        description="Points ledger: earn, redeem, reverse, balances and the event store.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        telemetry=TELEMETRY,
    )
    instrument(app)
    install_problem_handlers(app)
    document_callers(app)

    async def on_ledger_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, LedgerError | ServiceError)
        return problem_response(exc.status, exc.code, exc.detail, **exc.extra)

    app.add_exception_handler(LedgerError, on_ledger_error)
    app.add_exception_handler(ServiceError, on_ledger_error)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _routes(app)
    # A request is matched against the routes in order: the checkout's come first, ahead
    # of FastAPI's documentation routes too (no path of theirs overlaps another's).
    app.router.routes.sort(key=lambda route: not isinstance(route, CheckoutRoute))
    return app


# -- dependencies -----------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer lk_...`")


async def _authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None, scope: str | None
) -> ApiKey:
    """The caller's key, scoped to one program (``scope`` None: any scope will do)."""
    if credentials is None:
        raise ProblemError(401, "unauthorized", "an API key is required (Bearer)")
    keys: KeyRing = request.app.state.keys
    key = await keys.authenticate(credentials.credentials)
    if key is None:
        raise ProblemError(401, "unauthorized", "unknown or revoked API key")
    if scope is not None and scope not in key.scopes:
        raise ProblemError(403, "forbidden", f"the API key lacks the {scope} scope")
    if key.program_id is None:
        # A service key acts for the program the request names (ADR 0009).
        named = request.headers.get("X-Loyalty-Program")
        try:
            program_id = UUID(named or "")
        except ValueError:
            raise ProblemError(
                400,
                "program_required",
                "a service key names the program in the X-Loyalty-Program header",
                field="X-Loyalty-Program",
            ) from None
        key = ApiKey(key.key_id, program_id, key.scopes)
    return key


async def _request_hash(request: Request) -> bytes:
    raw = await request.body()
    try:
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS) if raw else b""
    except orjson.JSONDecodeError:
        canonical = raw
    digest = hashlib.sha256()
    # The ASGI scope's own path and query (request.url would build a whole URL first).
    scope = request.scope
    for part in (
        scope["method"].encode(),
        scope["path"].encode(),
        scope["query_string"],
        canonical,
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.digest()


@dataclass(frozen=True)
class Caller:
    """Who calls, through which ledger; for writes also the idempotency facts."""

    key: ApiKey
    ledger: Ledger
    correlation_id: str
    idempotency_key: str | None = None
    request_hash: bytes | None = None

    causation_id: str | None = None

    @property
    def program_id(self) -> UUID:
        assert self.key.program_id is not None  # _authenticate resolved it
        return self.key.program_id

    def context(self, reason: str | None = None) -> RequestContext:
        return RequestContext(
            program_id=self.program_id,
            actor=self.key.key_id,
            correlation_id=self.correlation_id,
            idempotency_key=self.idempotency_key,
            request_hash=self.request_hash,
            reason=reason,
            causation_id=self.causation_id,
        )


class CallerDependency:
    """Who calls, from the request's own headers: the API key (Bearer), and the
    correlation, idempotency and causation headers that ``headers`` declares.

    FastAPI would solve each header as a parameter of its own and the Bearer scheme
    as a dependency of its own; on the earn path that machinery cost more CPU than
    the domain's decision (ADR 0013). So the dependency takes the request alone,
    validates the headers in one pydantic call, and ``document_callers`` puts them and
    the security scheme into the OpenAPI document as if FastAPI had solved them.
    """

    def __init__(self, scope: str | None, headers: type[ReadHeaders | WriteHeaders]) -> None:
        self.scope, self.headers = scope, headers
        self._names = [field.alias or name for name, field in headers.model_fields.items()]

    async def __call__(self, request: Request) -> Caller:
        raw = request.headers
        try:
            headers = self.headers.model_validate(
                {name: value for name in self._names if (value := raw.get(name)) is not None}
            )
        except ValidationError as exc:
            raise RequestValidationError(
                [{**error, "loc": ("header", *error["loc"])} for error in exc.errors()]
            ) from None
        correlation_id = headers.correlation_id or str(uuid4())
        bind_correlation(correlation_id)
        key = await _authenticate(request, await _bearer(request), self.scope)
        if not isinstance(headers, WriteHeaders):
            return Caller(key, request.app.state.ledger, correlation_id)
        return Caller(
            key,
            request.app.state.ledger,
            correlation_id,
            headers.idempotency_key,
            await _request_hash(request),
            headers.causation_id or None,
        )

    def parameters(self) -> list[dict[str, Any]]:
        """The headers as OpenAPI parameters, in FastAPI's own form."""
        schema = self.headers.model_json_schema(by_alias=True)
        required = set(schema.get("required", ()))
        parameters = []
        for name in self._names:
            field = {**schema["properties"][name], "title": name}
            field.pop("default", None)
            parameter: dict[str, Any] = {
                "name": name,
                "in": "header",
                "required": name in required,
                "schema": field,
            }
            if "description" in field:
                parameter["description"] = field["description"]
            parameters.append(parameter)
        return parameters


class CheckoutRoute(APIRoute):
    """A route whose requests skip FastAPI's per-request machinery (ADR 0016).

    FastAPI reads the endpoint's declaration as for any route: matching and the OpenAPI
    document are its own. The route's ASGI app is a lean one, though: the path and
    query parameters validated by FastAPI's own fields, a JSON body by pydantic straight
    from the bytes, the ``CallerDependency`` called with the request, the endpoint
    awaited and its response sent. An exception goes to the app's exception handlers as
    from any route. Anything that does not validate on that way goes to FastAPI's own
    app for the route, so errors keep FastAPI's form and precedence.

    For endpoints of that shape alone (plain path and query parameters, at most one
    JSON body, one ``CallerDependency``, a Response returned); any other is refused at
    start-up.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.app = self._checkout_app(standard=self.app)

    def _checkout_app(self, standard: ASGIApp) -> ASGIApp:
        dependant, endpoint = self.dependant, self.endpoint
        returns = get_typed_return_annotation(endpoint)
        caller = dependant.dependencies[0] if len(dependant.dependencies) == 1 else None
        if (
            caller is None
            or not isinstance(caller.call, CallerDependency)
            or caller.name is None
            or dependant.header_params
            or dependant.cookie_params
            or len(dependant.body_params) > 1
            or dependant.request_param_name
            or not all(map(_plain_param, dependant.path_params + dependant.query_params))
            or not (isinstance(returns, type) and issubclass(returns, Response))
        ):
            raise TypeError(f"{self.path}: not an endpoint of CheckoutRoute's shape")
        call, caller_name = caller.call, caller.name
        path_params = [_Param(field) for field in dependant.path_params]
        query_params = [_Param(field) for field in dependant.query_params]
        body_name, body_type, body_required = "", None, False
        if dependant.body_params:
            (body,) = dependant.body_params
            assert body.field_info.annotation is not None
            body_name, body_required = body.name, body.field_info.is_required()
            body_type = TypeAdapter(body.field_info.annotation)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive, send)
            raw: bytes | None = None
            try:
                values: dict[str, Any] = {}
                valid = all(param.take(scope["path_params"], values) for param in path_params)
                if valid and query_params:
                    query = request.query_params
                    valid = all(param.take(query, values) for param in query_params)
                if valid and body_type is not None:
                    raw = await request.body()
                    content_type = request.headers.get("content-type", "")
                    if raw and (
                        content_type == "application/json"
                        or content_type.startswith("application/json;")
                    ):
                        try:
                            values[body_name] = body_type.validate_json(raw)
                        except ValidationError:
                            valid = False
                    elif raw or body_required:
                        valid = False
                if valid:
                    values[caller_name] = await call(request)
                    response: Response = await endpoint(**values)
            except Exception as exc:
                await wrap_app_handling_exceptions(_raising(exc), request)(scope, receive, send)
                return
            if not valid:  # FastAPI's own app says what is wrong
                await standard(scope, receive if raw is None else _replaying(raw, receive), send)
                return
            await response(scope, receive, send)

        return app


def _plain_param(field: ModelField) -> bool:
    """A path or query parameter of one value under its one name: no model, no list,
    no JSON, no alternative names."""
    info = field.field_info
    return (
        is_scalar_field(field)
        and info.validation_alias is None
        and not any(type(item) is Json for item in info.metadata)
    )


class _Param:
    """A plain parameter validated by its FastAPI field, as ``request_params_to_args``
    does for such a parameter; a value it would refuse is left to FastAPI to report."""

    def __init__(self, field: ModelField) -> None:
        self.field, self.name, self.alias = field, field.name, field.alias
        self.loc = (cast(params.Param, field.field_info).in_.value, field.alias)

    def take(self, received: Mapping[str, Any], values: dict[str, Any]) -> bool:
        raw = received.get(self.alias)
        value, errors = _validate_value_with_model_field(
            field=self.field,
            value=Undefined if raw is None else raw,
            values=values,
            loc=self.loc,
        )
        if errors:
            return False
        values[self.name] = value
        return True


def _raising(exc: Exception) -> ASGIApp:
    async def app(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise exc

    return app


def _replaying(body: bytes, receive: Receive) -> Receive:
    """The request's body once more, for FastAPI's app after the lean way read it; then
    the connection's own messages (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def checkout_route(
    app: FastAPI, method: str, path: str, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declares a route of the checkout's hot path, served through ``CheckoutRoute``."""

    def declare(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        app.router.add_api_route(
            path, endpoint, methods=[method], route_class_override=CheckoutRoute, **options
        )
        return endpoint

    return declare


def reader(scope: str | None) -> CallerDependency:
    return CallerDependency(scope, ReadHeaders)


def writer(scope: str) -> CallerDependency:
    """One dependency per write: the key, the Idempotency-Key and the request's hash."""
    return CallerDependency(scope, WriteHeaders)


_VALIDATION_ERROR = {
    "description": "Validation Error",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
    },
}


def document_callers(app: FastAPI) -> None:
    """The OpenAPI document with what ``CallerDependency`` reads: its headers and the
    Bearer scheme, on every route that depends on one."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for dependency in route.dependant.dependencies:
                if not isinstance(dependency.call, CallerDependency):
                    continue
                for method in route.methods or ():
                    operation = document["paths"][route.path_format][method.lower()]
                    operation["security"] = [{_bearer.scheme_name: []}]
                    operation["parameters"] = [
                        *operation.get("parameters", ()),
                        *dependency.call.parameters(),
                    ]
                    operation["responses"].setdefault("422", _VALIDATION_ERROR)
        document.setdefault("components", {}).setdefault("securitySchemes", {})[
            _bearer.scheme_name
        ] = _bearer.model.model_dump(mode="json", by_alias=True, exclude_none=True)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _respond(outcome: Outcome) -> JSONResponse:
    status, body = outcome
    return JSONResponse(body, status_code=status)


def _purchase(body: EarnRequest) -> Purchase:
    assert body.order_id and body.amount is not None and body.currency and body.occurred_at
    assert body.channel is not None
    return Purchase(
        order_id=body.order_id,
        amount=Decimal(body.amount),
        currency=body.currency,
        occurred_at=body.occurred_at,
        channel=body.channel,
        store_id=body.store_id,
        partner_id=body.partner_id,
        lines=tuple(
            OrderLine(
                sku=line.sku,
                quantity=line.quantity,
                amount=Decimal(line.amount),
                category=line.category,
            )
            for line in body.lines
        ),
    )


def _lookup(request: Request) -> tuple[str, str]:
    """The one look-up key of ``GET /v1/members`` and its value, validated and
    normalised as on input (a phone to E.164)."""
    query = request.query_params
    unknown = [name for name in query if name not in LOOKUP_KEYS]
    given = [(name, value) for name in LOOKUP_KEYS for value in query.getlist(name)]
    if unknown or len(given) != 1:
        names = ", ".join(LOOKUP_KEYS)
        problems = [("extra_forbidden", name, "unknown query parameter") for name in unknown]
        if len(given) != 1:
            wrong = [name for name, _ in given] or list(LOOKUP_KEYS)
            problems += [("one_required", name, f"give exactly one of {names}") for name in wrong]
        raise RequestValidationError(
            [{"type": kind, "loc": ("query", name), "msg": msg} for kind, name, msg in problems]
        )
    ((key, value),) = given
    try:
        return key, LOOKUP_KEYS[key].validate_python(value)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("query", key)} for error in exc.errors()]
        ) from None


PointsWriter = Annotated[Caller, Depends(writer("points:write"))]
MembersWriter = Annotated[Caller, Depends(writer("members:write"))]
OpsWriter = Annotated[Caller, Depends(writer("ops"))]
AdminWriter = Annotated[Caller, Depends(writer("admin"))]
PointsReader = Annotated[Caller, Depends(reader("points:read"))]
OpsReader = Annotated[Caller, Depends(reader("ops"))]
AdminReader = Annotated[Caller, Depends(reader("admin"))]
AnyReader = Annotated[Caller, Depends(reader(None))]
FeedCursor = Annotated[str | None, Query(description="a previous page's next_cursor")]
VersionCursor = Annotated[
    int, Query(ge=0, le=2**31 - 1, description="a previous page's next_cursor")
]
Limit = Annotated[int, Query(ge=1, le=1000)]
LookupValue = Annotated[
    str | None, Query(description="exactly one of external_id, card_token, email, phone")
]


# -- routes -----------------------------------------------------------------------------


def _routes(app: FastAPI) -> None:
    async def _earn(body: EarnRequest, caller: Caller, **target: Any) -> JSONResponse:
        if body.points is not None:
            if "ops" not in caller.key.scopes:
                raise ProblemError(403, "forbidden", "bonus points need the ops scope")
            return _respond(
                await caller.ledger.earn_bonus(
                    caller.context(body.reason),
                    points=body.points,
                    qualifying=body.qualifying,
                    occurred_at=body.occurred_at,
                    **target,
                )
            )
        return _respond(
            await caller.ledger.earn(caller.context(body.reason), _purchase(body), **target)
        )

    @checkout_route(app, "POST", "/v1/members/{member_id}/earn", status_code=201, tags=["points"])
    async def earn(member_id: UUID, body: EarnRequest, caller: PointsWriter) -> JSONResponse:
        return await _earn(body, caller, member_id=member_id)

    @checkout_route(app, "POST", "/v1/cards/{card_token}/earn", status_code=201, tags=["points"])
    async def earn_by_card(
        card_token: str, body: EarnRequest, caller: PointsWriter
    ) -> JSONResponse:
        return await _earn(body, caller, card_token=card_token)

    @checkout_route(app, "POST", "/v1/members/{member_id}/redeem", status_code=201, tags=["points"])
    async def redeem(member_id: UUID, body: RedeemRequest, caller: PointsWriter) -> JSONResponse:
        return _respond(
            await caller.ledger.redeem(
                caller.context(body.reward),
                member_id,
                points=body.points,
                reward=body.reward,
                order_id=body.order_id,
            )
        )

    @checkout_route(
        app, "POST", "/v1/transactions/{transaction_id}/reverse", status_code=201, tags=["points"]
    )
    async def reverse(
        transaction_id: UUID, caller: PointsWriter, body: ReverseRequest | None = None
    ) -> JSONResponse:
        body = body or ReverseRequest()
        return _respond(
            await caller.ledger.reverse(
                caller.context(body.reason),
                transaction_id,
                points=body.points,
                amount=Decimal(body.amount) if body.amount is not None else None,
            )
        )

    @checkout_route(app, "GET", "/v1/members/{member_id}/balance", tags=["points"])
    async def balance(
        member_id: UUID,
        caller: PointsReader,
        as_of: AwareDatetime | None = None,
        known_at: AwareDatetime | None = None,
    ) -> JSONResponse:
        return JSONResponse(
            await caller.ledger.balance(caller.program_id, member_id, as_of, known_at)
        )

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Ready: the database answers. (The ledger does not need Kafka to take writes:
        the relay publishes them when the broker is back.)"""
        return await readiness(request.app.state.ledger.pool)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return metrics_response()

    @app.get("/v1/keys/self", tags=["program"])
    async def key_self(caller: AnyReader) -> JSONResponse:
        """The calling key: its id, program and scopes (other services check keys here)."""
        key = caller.key
        return JSONResponse(
            {"key_id": key.key_id, "program_id": str(key.program_id), "scopes": sorted(key.scopes)}
        )

    @app.get("/v1/program", tags=["program"])
    async def get_program(caller: AdminReader) -> JSONResponse:
        async with caller.ledger.pool.acquire() as conn:
            return JSONResponse(await read_program(conn, caller.program_id))

    @app.put("/v1/program", tags=["program"])
    async def put_program(document: ProgramDocument, caller: AdminWriter) -> JSONResponse:
        assert caller.idempotency_key is not None and caller.request_hash is not None
        for _ in range(2):
            async with caller.ledger.pool.acquire() as conn:
                stored = await conn.fetchrow(
                    "SELECT encode(request_hash, 'hex') AS hash, status_code, response"
                    " FROM idempotency_keys WHERE program_id = $1 AND key = $2",
                    caller.program_id,
                    caller.idempotency_key,
                )
                if stored is not None:
                    if stored["hash"] != caller.request_hash.hex():
                        raise ProblemError(
                            422,
                            "idempotency_key_reused",
                            "this Idempotency-Key was used with a different request",
                        )
                    return JSONResponse(stored["response"], status_code=stored["status_code"])
                try:
                    return JSONResponse(
                        await configure_program(
                            conn,
                            caller.program_id,
                            document,
                            actor=caller.key.key_id,
                            correlation_id=caller.correlation_id,
                            idempotency=(caller.idempotency_key, caller.request_hash),
                        )
                    )
                except asyncpg.UniqueViolationError:
                    continue  # a twin committed first: its record answers this request
        raise ProblemError(409, "concurrent_update", "the program changed concurrently; retry")

    @app.post("/v1/members", status_code=201, tags=["members"])
    async def enrol(body: EnrolRequest, caller: MembersWriter) -> JSONResponse:
        profile = body.model_dump(exclude={"external_id"})
        profile["referred_by"] = str(body.referred_by) if body.referred_by else None
        return _respond(
            await caller.ledger.enrol(
                caller.context(), external_id=body.external_id, profile=profile
            )
        )

    @app.get("/v1/members", tags=["members"])
    async def find_members(
        request: Request,
        caller: PointsReader,
        external_id: LookupValue = None,
        card_token: LookupValue = None,
        email: LookupValue = None,
        phone: LookupValue = None,
    ) -> JSONResponse:
        """The key's program's members with the given external id, card token, email
        (case-insensitive) or phone: exactly one of them."""
        key, value = _lookup(request)
        return JSONResponse(await caller.ledger.find_members(caller.program_id, key, value))

    @app.get("/v1/members/{member_id}", tags=["members"])
    async def get_member(member_id: UUID, caller: PointsReader) -> JSONResponse:
        return JSONResponse(await caller.ledger.member(caller.program_id, member_id))

    @app.patch("/v1/members/{member_id}", tags=["members"])
    async def change_profile(
        member_id: UUID, body: ProfileRequest, caller: MembersWriter
    ) -> JSONResponse:
        """A JSON merge patch of the profile: fields left out keep their values, fields
        set to null lose them."""
        return _respond(
            await caller.ledger.change_profile(caller.context(), member_id, body.changes())
        )

    @app.post("/v1/members/{member_id}/consents", tags=["members"])
    async def change_consents(
        member_id: UUID, body: ConsentsRequest, caller: MembersWriter
    ) -> JSONResponse:
        return _respond(
            await caller.ledger.change_consents(
                caller.context(body.source),
                member_id,
                {str(k): v for k, v in body.consents.items()},
            )
        )

    @app.post("/v1/members/{member_id}/cards", status_code=201, tags=["members"])
    async def link_card(member_id: UUID, body: CardRequest, caller: MembersWriter) -> JSONResponse:
        return _respond(await caller.ledger.link_card(caller.context(), member_id, body.card_token))

    @app.delete("/v1/members/{member_id}/cards/{card_token}", tags=["members"])
    async def unlink_card(member_id: UUID, card_token: str, caller: MembersWriter) -> JSONResponse:
        return _respond(await caller.ledger.unlink_card(caller.context(), member_id, card_token))

    @app.get("/v1/transactions/{transaction_id}", tags=["points"])
    async def get_transaction(transaction_id: UUID, caller: PointsReader) -> JSONResponse:
        return JSONResponse(await caller.ledger.transaction(caller.program_id, transaction_id))

    @app.post("/v1/members/{member_id}/adjust", status_code=201, tags=["ops"])
    async def adjust(member_id: UUID, body: AdjustRequest, caller: OpsWriter) -> JSONResponse:
        return _respond(
            await caller.ledger.adjust(caller.context(body.reason), member_id, points=body.points)
        )

    @app.post("/v1/members/{member_id}/coupons", status_code=201, tags=["coupons"])
    async def issue_coupon(member_id: UUID, body: CouponRequest, caller: OpsWriter) -> JSONResponse:
        spec = {
            "kind": body.kind,
            "value": Decimal(body.value),
            "currency": body.currency,
            "points_cost": body.points_cost,
            "valid_from": body.valid_from,
            "valid_until": body.valid_until,
            "campaign_id": str(body.campaign_id) if body.campaign_id else None,
        }
        return _respond(
            await caller.ledger.issue_coupon(caller.context(body.reason), member_id, spec)
        )

    @app.get("/v1/members/{member_id}/coupons", tags=["coupons"])
    async def member_coupons(member_id: UUID, caller: PointsReader) -> JSONResponse:
        return JSONResponse(await caller.ledger.coupons(caller.program_id, member_id))

    @app.post("/v1/coupons/{code}/redeem", tags=["coupons"])
    async def redeem_coupon(
        code: str, caller: PointsWriter, body: CouponRedeemRequest | None = None
    ) -> JSONResponse:
        body = body or CouponRedeemRequest()
        return _respond(
            await caller.ledger.redeem_coupon(
                caller.context(f"coupon {code}"),
                code,
                order_id=body.order_id,
                order_amount=Decimal(body.order_amount) if body.order_amount else None,
                currency=body.currency,
            )
        )

    @app.get("/v1/members/{member_id}/events", tags=["events"])
    async def member_events(
        member_id: UUID, caller: PointsReader, cursor: VersionCursor = 0, limit: Limit = 100
    ) -> JSONResponse:
        return JSONResponse(
            await caller.ledger.member_events(
                caller.program_id, member_id, after=cursor, limit=limit
            )
        )

    @app.get("/v1/events", tags=["events"])
    async def feed(
        caller: OpsReader, cursor: FeedCursor = None, limit: Limit = 100
    ) -> JSONResponse:
        return JSONResponse(await caller.ledger.feed(caller.program_id, cursor=cursor, limit=limit))

    @app.post("/v1/ops/clock", tags=["ops"])
    async def clock(caller: OpsReader, as_of: AwareDatetime | None = None) -> JSONResponse:
        # Time-driven processing is idempotent by as_of; it takes no Idempotency-Key.
        at = caller.ledger.check_as_of(as_of)
        return JSONResponse(
            await caller.ledger.run_clock(
                at,
                caller.program_id,
                actor=caller.key.key_id,
                correlation_id=caller.correlation_id,
            )
        )
