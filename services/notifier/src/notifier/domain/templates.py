"""Message templates of the notifier: the default copy for every event type, locale
and channel, the sandboxed Jinja2 environment that renders it (and admins' overrides),
and SMS segment counting.

Event types and their kind (`EVENT_KINDS`): marketing messages (TierProgress,
OfferIssued, RewardGranted) carry an unsubscribe link (`unsubscribe_url`: a link in the
HTML email, the URL in the text email, a short "Stopp: <url>" line in the SMS);
transactional ones (TierChanged, TierDowngradeWarning, PointsExpiring) have none.

Channels and parts: `email` has `subject`, `html` and `text`; `sms` has `text`.
`render` returns a `Rendered`; an SMS states its segment count in
`Rendered.sms_segments` (see `sms_segments`: GSM-7 with its extension table, 160
characters single / 153 per part, else UCS-2, 70 / 67 UTF-16 code units). No-break
spaces that Babel puts in numbers, money and percentages are plain spaces in an SMS, so
that a formatted number does not force UCS-2.

Variables: the event's payload fields (see `SAMPLE_VARIABLES` for the full set of each
type), `program_name`, `time_zone` (the member's IANA zone; dates are formatted in
it), `first_name` (None when the member gave none: emails then greet as they would
anyone) and, for marketing, `unsubscribe_url`. `locale` is set by `render`. Missing
variables fail (`StrictUndefined`); HTML is autoescaped, subject and text are not.

Filters, all formatted for the render locale with Babel: `number` (15000 -> "15 000"
in nb), `date` (medium date in `time_zone`, e.g. "1. jan. 2026"), `money(currency)`
("100,00 kr"), `percent` (a percentage as text, "20" -> "20 %"), `last_day` (the day
before an exclusive end such as `valid_until`, formatted like `date`).

`validate_override` is how a template saved through the admin API is checked: it must
compile, use only the event type's variables and known filters, and render for every
locale against the samples (`TemplateError` otherwise, with `.field` naming the part).

Pure code: no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import jinja2
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import nodes, pass_context
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "CHANNEL_PARTS",
    "EVENT_KINDS",
    "LOCALES",
    "SAMPLE_VARIABLES",
    "Rendered",
    "TemplateError",
    "default_templates",
    "is_gsm7",
    "render",
    "resolve_locale",
    "sms_segments",
    "validate_override",
]

LOCALES: Final = ("nb", "sv", "da", "en")

EventKind = Literal["marketing", "transactional"]

EVENT_KINDS: Final[Mapping[str, EventKind]] = {
    "TierChanged": "transactional",
    "TierProgress": "marketing",
    "TierDowngradeWarning": "transactional",
    "OfferIssued": "marketing",
    "PointsExpiring": "transactional",
    "RewardGranted": "marketing",
}

CHANNEL_PARTS: Final[Mapping[str, tuple[str, ...]]] = {
    "email": ("subject", "html", "text"),
    "sms": ("text",),
}

_LOCALE_ALIASES: Final = {"no": "nb", "nn": "nb"}


class TemplateError(Exception):
    """A template that does not compile or render; `field` names the part ("subject",
    "html" or "text"), `line` the template line when known."""

    def __init__(self, field: str, message: str, line: int | None = None) -> None:
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"{field}{where}: {message}")
        self.field = field
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Rendered:
    """A rendered message. Email: `subject`, `html` and `text`; SMS: `text` and its
    segment count `sms_segments` (`subject` and `html` are None)."""

    subject: str | None
    html: str | None
    text: str
    sms_segments: int | None
    locale: str


# --- Locales -----------------------------------------------------------------------


def _supported(locale: str | None) -> str | None:
    if not locale:
        return None
    language = locale.strip().replace("_", "-").split("-", 1)[0].lower()
    language = _LOCALE_ALIASES.get(language, language)
    return language if language in LOCALES else None


def resolve_locale(member_locale: str | None, program_default: str) -> str:
    """The member's locale if supported ("nb-NO" -> "nb", "no" -> "nb"), else the
    program's default if supported, else "en"."""
    return _supported(member_locale) or _supported(program_default) or "en"


# --- SMS segments ------------------------------------------------------------------

_GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM-7 basic or extension table."""
    return all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in text)


def _pack(costs: list[int], single: int, per_part: int) -> int:
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:  # a character (escape pair, surrogate pair) is never split
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def sms_segments(text: str) -> int:
    """The number of SMS segments `text` is sent in (an empty text still costs one).

    GSM-7 when every character is in the GSM-7 tables (extension characters
    ``^{}\\[~]|€`` take two septets): 160 septets in one SMS, 153 per part when
    concatenated. Otherwise UCS-2: 70 UTF-16 code units in one SMS, 67 per part.
    """
    if is_gsm7(text):
        costs = [2 if ch in _GSM7_EXTENSION else 1 for ch in text]
        return _pack(costs, 160, 153)
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return _pack(costs, 70, 67)


# --- Filters -----------------------------------------------------------------------


def _check_defined(value: object) -> None:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()


def _decimal(value: object, what: str) -> Decimal:
    _check_defined(value)
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected a number, got a bool")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float | str):
        try:
            return Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{what}: {value!r} is not a number") from None
    raise TypeError(f"{what}: expected a number, got {type(value).__name__}")


def _render_locale(ctx: Context) -> str:
    locale = ctx.get("locale")
    if not isinstance(locale, str):
        raise jinja2.UndefinedError("'locale' is undefined")
    return locale


@pass_context
def _number(ctx: Context, value: object) -> str:
    return format_decimal(_decimal(value, "number"), locale=_render_locale(ctx))


@pass_context
def _money(ctx: Context, value: object, currency: object) -> str:
    _check_defined(currency)
    if not isinstance(currency, str) or not currency:
        raise ValueError(f"money: a currency code is required, got {currency!r}")
    return format_currency(_decimal(value, "money"), currency, locale=_render_locale(ctx))


@pass_context
def _percent(ctx: Context, value: object) -> str:
    share = _decimal(value, "percent") / 100
    return format_percent(share, locale=_render_locale(ctx), decimal_quantization=False)


def _iso(value: object, what: str) -> object:
    """A date or datetime given as ISO 8601 text, parsed; other values as they are."""
    _check_defined(value)
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not an ISO 8601 date") from None


@pass_context
def _date(ctx: Context, value: object, format: str = "medium") -> str:
    value = _iso(value, "date")
    if isinstance(value, datetime):
        zone = ctx.get("time_zone")
        if not isinstance(zone, str) or not zone:
            raise jinja2.UndefinedError("'time_zone' is undefined")
        if value.tzinfo is None:  # timestamps are UTC
            value = value.replace(tzinfo=UTC)
        day = value.astimezone(ZoneInfo(zone)).date()
    elif isinstance(value, date):
        day = value
    else:
        raise TypeError(f"date: expected a date or datetime, got {type(value).__name__}")
    return format_date(day, format=format, locale=_render_locale(ctx))


@pass_context
def _last_day(ctx: Context, value: object, format: str = "medium") -> str:
    """The last day before an exclusive end (a tier that holds "until" the start of
    2027 holds through 31 December 2026)."""
    value = _iso(value, "last_day")
    if isinstance(value, datetime):
        value = value - timedelta(microseconds=1)
    elif isinstance(value, date):
        value = value - timedelta(days=1)
    return _date(ctx, value, format)


_FILTERS: Final[Mapping[str, Callable[..., str]]] = {
    "number": _number,
    "money": _money,
    "percent": _percent,
    "date": _date,
    "last_day": _last_day,
}


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=autoescape, undefined=jinja2.StrictUndefined, keep_trailing_newline=False
    )
    env.filters.update(_FILTERS)
    return env


_TEXT_ENV: Final = _environment(autoescape=False)
_HTML_ENV: Final = _environment(autoescape=True)


@functools.lru_cache(maxsize=1024)
def _compile(source: str, html: bool) -> jinja2.Template:
    return (_HTML_ENV if html else _TEXT_ENV).from_string(source)


# --- Sample variables --------------------------------------------------------------


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


_COMMON_SAMPLE: Final[Mapping[str, object]] = {
    "program_name": "Nordlys Club",
    "time_zone": "Europe/Oslo",
    "first_name": None,  # unknown for many members; the greeting then names no one
}
_UNSUBSCRIBE_SAMPLE: Final = "https://nordlys.example/u/7f3c9a2e"

SAMPLE_VARIABLES: Final[Mapping[str, Mapping[str, object]]] = {
    "TierChanged": {
        **_COMMON_SAMPLE,
        "from_tier": "Silver",
        "to_tier": "Gold",
        "reason": "qualified",
        "valid_until": _utc(2026, 12, 31, 23),
        "qualifying_points": 15000,
    },
    "TierProgress": {
        **_COMMON_SAMPLE,
        "current_tier": "Silver",
        "next_tier": "Gold",
        "qualifying_points": 12500,
        "points_to_next": 2500,
        "period_end": _utc(2025, 12, 31, 23),
        "unsubscribe_url": _UNSUBSCRIBE_SAMPLE,
    },
    "TierDowngradeWarning": {
        **_COMMON_SAMPLE,
        "current_tier": "Gold",
        "expected_tier": "Silver",
        "qualifying_points": 9200,
        "points_needed": 5800,
        "period_end": _utc(2025, 12, 31, 23),
        "downgrade_at": _utc(2026, 3, 31, 22),
    },
    "OfferIssued": {
        **_COMMON_SAMPLE,
        "campaign_name": "Sommersalg",
        "code": "SOMMER-7K2Q",
        "kind": "amount",
        "value": "100.00",
        "currency": "NOK",
        "points_cost": 500,
        "valid_from": _utc(2025, 5, 31, 22),
        "valid_until": _utc(2025, 6, 30, 21, 59, 59),
        "unsubscribe_url": _UNSUBSCRIBE_SAMPLE,
    },
    "PointsExpiring": {
        **_COMMON_SAMPLE,
        "points": 1200,
        "expires_at": _utc(2025, 12, 31, 23),
    },
    "RewardGranted": {
        **_COMMON_SAMPLE,
        "trigger": "birthday",
        "points": 0,
        "code": "BURSDAG-4F9X",
        "detail": "birthday 2025",
        "unsubscribe_url": _UNSUBSCRIBE_SAMPLE,
    },
}
"""A complete, realistic variable set per event type: the payload fields (datetimes
aware, optional fields present, possibly None), program name, time zone and, for
marketing, the unsubscribe URL. The keys are the variables a template may use (plus
`locale`)."""

# Further values for the branches the samples above do not take; overrides are
# rendered against these too.
_SAMPLE_CHANGES: Final[Mapping[str, tuple[Mapping[str, object], ...]]] = {
    "TierChanged": (
        {"reason": "enrolled", "from_tier": "", "to_tier": "Bronze", "valid_until": None},
        {"reason": "requalification_missed", "from_tier": "Gold", "to_tier": "Silver"},
        {"reason": "reevaluated", "qualifying_points": 1},
    ),
    "TierProgress": ({"points_to_next": 1},),
    "TierDowngradeWarning": ({"points_needed": 1},),
    "OfferIssued": (
        {"kind": "percent", "value": "12.5", "currency": None, "points_cost": 0},
        {"value": "49.5", "currency": "SEK", "points_cost": 1},
    ),
    "PointsExpiring": ({"points": 1},),
    "RewardGranted": (
        {"trigger": "welcome", "points": 500, "code": None},
        {"trigger": "referral", "points": 1, "code": None},
        {"trigger": "punch_card", "points": 0, "code": "KAFFE-2M8T"},
        {"trigger": "anniversary", "points": 100, "code": None},
    ),
}


def _samples(event_type: str) -> list[dict[str, object]]:
    base = dict(SAMPLE_VARIABLES[event_type])
    changes = (*_SAMPLE_CHANGES.get(event_type, ()), {"first_name": "Kari"})
    return [base] + [{**base, **change} for change in changes]


# --- Default copy ------------------------------------------------------------------

Paragraph = str | tuple[str, str]  # text, or (condition, text) shown only when true


@dataclass(frozen=True)
class _Copy:
    subject: str
    body: tuple[Paragraph, ...]
    sms: str


@dataclass(frozen=True)
class _Chrome:
    greeting: str
    signoff: str  # "\n" is a line break
    member_note: str
    unsubscribe_question: str
    unsubscribe_link: str
    unsubscribe_label: str
    sms_stop: str


def _switch(variable: str, cases: Mapping[str, str], default: str) -> str:
    """An if/elif/else chain on `variable == "value"`."""
    out = []
    for i, (value, text) in enumerate(cases.items()):
        out.append(f'{{% {"elif" if i else "if"} {variable} == "{value}" %}}{text}')
    out.append(f"{{% else %}}{default}{{% endif %}}")
    return "".join(out)


def _when(condition: str, text: str) -> str:
    return f"{{% if {condition} %}}{text}{{% endif %}}"


def _greeting(named: str, anonymous: str) -> str:
    """By first name where the member gave one; otherwise the greeting names no one."""
    return f"{{% if first_name %}}{named}{{% else %}}{anonymous}{{% endif %}}"


def _s(variable: str) -> str:
    """English plural "s" unless `variable` is 1."""
    return f'{{{{ "" if {variable} == 1 else "s" }}}}'


_OFFER: Final = (
    '{% if kind == "percent" %}{{ value|percent }}{% else %}{{ value|money(currency) }}{% endif %}'
)
_QP: Final = "{{ qualifying_points|number }}"

_CHROME: Final[Mapping[str, _Chrome]] = {
    "nb": _Chrome(
        greeting=_greeting("Hei, {{ first_name }}!", "Hei!"),
        signoff="Vennlig hilsen\n{{ program_name }}",
        member_note="Du får denne e-posten fordi du er medlem i {{ program_name }}.",
        unsubscribe_question="Vil du ikke lenger få slike e-poster?",
        unsubscribe_link="Meld deg av her",
        unsubscribe_label="Meld deg av",
        sms_stop="Stopp",
    ),
    "sv": _Chrome(
        greeting=_greeting("Hej {{ first_name }}!", "Hej!"),
        signoff="Vänliga hälsningar\n{{ program_name }}",
        member_note="Du får det här mejlet eftersom du är medlem i {{ program_name }}.",
        unsubscribe_question="Vill du inte längre få sådana mejl?",
        unsubscribe_link="Avregistrera dig här",
        unsubscribe_label="Avregistrera dig",
        sms_stop="Stopp",
    ),
    "da": _Chrome(
        greeting=_greeting("Hej {{ first_name }}!", "Hej!"),
        signoff="Venlig hilsen\n{{ program_name }}",
        member_note="Du modtager denne e-mail, fordi du er medlem af {{ program_name }}.",
        unsubscribe_question="Vil du ikke længere modtage den slags e-mails?",
        unsubscribe_link="Afmeld dig her",
        unsubscribe_label="Afmeld",
        sms_stop="Stop",
    ),
    "en": _Chrome(
        greeting=_greeting("Hi {{ first_name }}!", "Hi!"),
        signoff="Best regards,\n{{ program_name }}",
        member_note="You're receiving this email because you're a member of {{ program_name }}.",
        unsubscribe_question="Don't want emails like this any more?",
        unsubscribe_link="Unsubscribe here",
        unsubscribe_label="Unsubscribe",
        sms_stop="Stop",
    ),
}


def _tier_changed() -> dict[str, _Copy]:
    def subject(enrolled: str, qualified: str, other: str) -> str:
        return _switch("reason", {"enrolled": enrolled, "qualified": qualified}, other)

    def story(enrolled: str, qualified: str, missed: str, other: str) -> str:
        return _switch(
            "reason",
            {"enrolled": enrolled, "qualified": qualified, "requalification_missed": missed},
            other,
        )

    missed = 'reason == "requalification_missed"'
    return {
        "nb": _Copy(
            subject=subject(
                "Velkommen til {{ program_name }}, {{ to_tier }}-medlem!",
                "Gratulerer, du er nå {{ to_tier }}-medlem!",
                "Medlemsnivået ditt er nå {{ to_tier }}",
            ),
            body=(
                story(
                    "Velkommen til {{ program_name }}! Du starter som {{ to_tier }}-medlem.",
                    f"Du har samlet {_QP} kvalifiserende poeng og har rykket opp til "
                    "{{ to_tier }}. Takk for at du handler hos oss!",
                    f"Du samlet {_QP} kvalifiserende poeng i perioden, og det var ikke nok "
                    "til å beholde {{ from_tier }}. Nå er du {{ to_tier }}-medlem.",
                    f"Vi har regnet gjennom poengene dine på nytt. Med {_QP} kvalifiserende "
                    "poeng er du nå {{ to_tier }}-medlem.",
                ),
                ("valid_until", "Nivået ditt gjelder minst til {{ valid_until|last_day }}."),
                (missed, "Fortsett å samle poeng, så kan du rykke opp igjen."),
            ),
            sms="{{ program_name }}: "
            + subject(
                "Velkommen! Du er {{ to_tier }}-medlem.",
                "Gratulerer, du er nå {{ to_tier }}-medlem!",
                "Medlemsnivået ditt er nå {{ to_tier }}.",
            )
            + _when("valid_until", " Gjelder minst til {{ valid_until|last_day }}."),
        ),
        "sv": _Copy(
            subject=subject(
                "Välkommen till {{ program_name }}, {{ to_tier }}-medlem!",
                "Grattis, du är nu {{ to_tier }}-medlem!",
                "Din medlemsnivå är nu {{ to_tier }}",
            ),
            body=(
                story(
                    "Välkommen till {{ program_name }}! Du börjar som {{ to_tier }}-medlem.",
                    f"Du har samlat {_QP} kvalificerande poäng och har gått upp till "
                    "{{ to_tier }}. Tack för att du handlar hos oss!",
                    f"Du samlade {_QP} kvalificerande poäng under perioden, och det räckte "
                    "inte för att behålla {{ from_tier }}. Nu är du {{ to_tier }}-medlem.",
                    f"Vi har räknat om dina poäng. Med {_QP} kvalificerande poäng är du nu "
                    "{{ to_tier }}-medlem.",
                ),
                ("valid_until", "Din nivå gäller minst till {{ valid_until|last_day }}."),
                (missed, "Fortsätt samla poäng, så kan du gå upp igen."),
            ),
            sms="{{ program_name }}: "
            + subject(
                "Välkommen! Du är {{ to_tier }}-medlem.",
                "Grattis, du är nu {{ to_tier }}-medlem!",
                "Din medlemsnivå är nu {{ to_tier }}.",
            )
            + _when("valid_until", " Gäller minst till {{ valid_until|last_day }}."),
        ),
        "da": _Copy(
            subject=subject(
                "Velkommen til {{ program_name }}, {{ to_tier }}-medlem!",
                "Tillykke, du er nu {{ to_tier }}-medlem!",
                "Dit medlemsniveau er nu {{ to_tier }}",
            ),
            body=(
                story(
                    "Velkommen til {{ program_name }}! Du starter som {{ to_tier }}-medlem.",
                    f"Du har samlet {_QP} kvalificerende point og er rykket op til "
                    "{{ to_tier }}. Tak, fordi du handler hos os!",
                    f"Du samlede {_QP} kvalificerende point i perioden, og det var ikke nok "
                    "til at beholde {{ from_tier }}. Nu er du {{ to_tier }}-medlem.",
                    f"Vi har gennemgået dine point igen. Med {_QP} kvalificerende point er du "
                    "nu {{ to_tier }}-medlem.",
                ),
                ("valid_until", "Dit niveau gælder mindst til {{ valid_until|last_day }}."),
                (missed, "Bliv ved med at samle point, så kan du rykke op igen."),
            ),
            sms="{{ program_name }}: "
            + subject(
                "Velkommen! Du er {{ to_tier }}-medlem.",
                "Tillykke, du er nu {{ to_tier }}-medlem!",
                "Dit medlemsniveau er nu {{ to_tier }}.",
            )
            + _when("valid_until", " Gælder mindst til {{ valid_until|last_day }}."),
        ),
        "en": _Copy(
            subject=subject(
                "Welcome to {{ program_name }}!",
                "Congratulations, you've reached {{ to_tier }}!",
                "Your membership tier is now {{ to_tier }}",
            ),
            body=(
                story(
                    "Welcome to {{ program_name }}! Your membership tier is {{ to_tier }}.",
                    f"You've collected {_QP} qualifying points and moved up to "
                    "{{ to_tier }}. Thank you for shopping with us!",
                    f"You collected {_QP} qualifying points this period, which wasn't quite "
                    "enough to keep {{ from_tier }}. Your tier is now {{ to_tier }}.",
                    f"We've recalculated your points. With {_QP} qualifying "
                    f"point{_s('qualifying_points')}, your tier is now {{{{ to_tier }}}}.",
                ),
                ("valid_until", "Your tier is valid until at least {{ valid_until|last_day }}."),
                (missed, "Keep collecting points and you can move up again."),
            ),
            sms="{{ program_name }}: "
            + subject(
                "Welcome! Your membership tier is {{ to_tier }}.",
                "Congratulations, you've reached {{ to_tier }}!",
                "Your membership tier is now {{ to_tier }}.",
            )
            + _when("valid_until", " Valid until at least {{ valid_until|last_day }}."),
        ),
    }


def _tier_progress() -> dict[str, _Copy]:
    ptn = "{{ points_to_next|number }}"
    end = "{{ period_end|date }}"
    return {
        "nb": _Copy(
            subject="Du er nesten {{ next_tier }}-medlem!",
            body=(
                f"Du har {_QP} kvalifiserende poeng. Bare {ptn} poeng til, så blir du "
                "{{ next_tier }}-medlem.",
                f"Poengene må samles før {end}.",
            ),
            sms=f"{{{{ program_name }}}}: Bare {ptn} poeng igjen til {{{{ next_tier }}}}! "
            f"Samle dem før {end}.",
        ),
        "sv": _Copy(
            subject="Du är nästan {{ next_tier }}-medlem!",
            body=(
                f"Du har {_QP} kvalificerande poäng. Bara {ptn} poäng till, så blir du "
                "{{ next_tier }}-medlem.",
                f"Poängen behöver samlas före {end}.",
            ),
            sms=f"{{{{ program_name }}}}: Bara {ptn} poäng kvar till {{{{ next_tier }}}}! "
            f"Samla dem före {end}.",
        ),
        "da": _Copy(
            subject="Du er næsten {{ next_tier }}-medlem!",
            body=(
                f"Du har {_QP} kvalificerende point. Kun {ptn} point mere, så bliver du "
                "{{ next_tier }}-medlem.",
                f"Pointene skal optjenes inden {end}.",
            ),
            sms=f"{{{{ program_name }}}}: Kun {ptn} point mere til {{{{ next_tier }}}}! "
            f"Saml dem inden {end}.",
        ),
        "en": _Copy(
            subject="You're almost at {{ next_tier }}!",
            body=(
                f"You have {_QP} qualifying points. Just {ptn} more and you'll reach "
                "{{ next_tier }}.",
                f"Collect them before {end}.",
            ),
            sms=f"{{{{ program_name }}}}: Just {ptn} more point{_s('points_to_next')} to "
            f"{{{{ next_tier }}}}! Collect them before {end}.",
        ),
    }


def _tier_downgrade_warning() -> dict[str, _Copy]:
    pn = "{{ points_needed|number }}"
    end = "{{ period_end|date }}"
    at = "{{ downgrade_at|date }}"
    return {
        "nb": _Copy(
            subject=f"Du trenger {pn} poeng til for å beholde {{{{ current_tier }}}}",
            body=(
                f"Du har {_QP} kvalifiserende poeng i denne perioden. For å beholde "
                f"{{{{ current_tier }}}}-nivået trenger du {pn} poeng til før {end}.",
                f"Hvis ikke, blir du {{{{ expected_tier }}}}-medlem fra {at}.",
            ),
            sms=f"{{{{ program_name }}}}: Samle {pn} poeng til før {end} for å beholde "
            f"{{{{ current_tier }}}}. Ellers blir du {{{{ expected_tier }}}}-medlem fra {at}.",
        ),
        "sv": _Copy(
            subject=f"Du behöver {pn} poäng till för att behålla {{{{ current_tier }}}}",
            body=(
                f"Du har {_QP} kvalificerande poäng den här perioden. För att behålla "
                f"{{{{ current_tier }}}} behöver du {pn} poäng till före {end}.",
                f"Annars blir du {{{{ expected_tier }}}}-medlem från och med {at}.",
            ),
            sms=f"{{{{ program_name }}}}: Samla {pn} poäng till före {end} för att behålla "
            f"{{{{ current_tier }}}}. Annars blir du {{{{ expected_tier }}}}-medlem från {at}.",
        ),
        "da": _Copy(
            subject=f"Du mangler {pn} point for at beholde {{{{ current_tier }}}}",
            body=(
                f"Du har {_QP} kvalificerende point i denne periode. For at beholde "
                f"{{{{ current_tier }}}} skal du bruge {pn} point mere inden {end}.",
                f"Ellers bliver du {{{{ expected_tier }}}}-medlem fra {at}.",
            ),
            sms=f"{{{{ program_name }}}}: Saml {pn} point mere inden {end} for at beholde "
            f"{{{{ current_tier }}}}. Ellers bliver du {{{{ expected_tier }}}}-medlem fra {at}.",
        ),
        "en": _Copy(
            subject=f"You need {pn} more point{_s('points_needed')} to keep {{{{ current_tier }}}}",
            body=(
                f"You have {_QP} qualifying points this period. To keep {{{{ current_tier }}}}, "
                f"you need {pn} more point{_s('points_needed')} before {end}.",
                f"Otherwise your tier will change to {{{{ expected_tier }}}} on {at}.",
            ),
            sms=f"{{{{ program_name }}}}: Collect {pn} more point{_s('points_needed')} before "
            f"{end} to keep {{{{ current_tier }}}}. Otherwise your tier changes to "
            f"{{{{ expected_tier }}}} on {at}.",
        ),
    }


def _offer_issued() -> dict[str, _Copy]:
    pc = "{{ points_cost|number }}"
    start = "{{ valid_from|date }}"
    until = "{{ valid_until|date }}"
    return {
        "nb": _Copy(
            subject=f"{{{{ campaign_name }}}}: {_OFFER} rabatt til deg",
            body=(
                f"Vi har en kupong til deg: {_OFFER} rabatt!",
                "Koden din er {{ code }}. Vis den i kassen når du handler.",
                ("points_cost", f"Kupongen koster {pc} poeng når du bruker den."),
                f"Kupongen gjelder fra {start} til {until}.",
            ),
            sms=f"{{{{ program_name }}}}: {_OFFER} rabatt til deg! Kode: {{{{ code }}}}. "
            f"Gjelder til {until}." + _when("points_cost", f" Koster {pc} poeng."),
        ),
        "sv": _Copy(
            subject=f"{{{{ campaign_name }}}}: {_OFFER} rabatt till dig",
            body=(
                f"Vi har en kupong till dig: {_OFFER} rabatt!",
                "Din kod är {{ code }}. Visa den i kassan när du handlar.",
                ("points_cost", f"Kupongen kostar {pc} poäng när du använder den."),
                f"Kupongen gäller från {start} till {until}.",
            ),
            sms=f"{{{{ program_name }}}}: {_OFFER} rabatt till dig! Kod: {{{{ code }}}}. "
            f"Gäller till {until}." + _when("points_cost", f" Kostar {pc} poäng."),
        ),
        "da": _Copy(
            subject=f"{{{{ campaign_name }}}}: {_OFFER} rabat til dig",
            body=(
                f"Vi har en kupon til dig: {_OFFER} rabat!",
                "Din kode er {{ code }}. Vis den ved kassen, når du handler.",
                ("points_cost", f"Kuponen koster {pc} point, når du bruger den."),
                f"Kuponen gælder fra {start} til {until}.",
            ),
            sms=f"{{{{ program_name }}}}: {_OFFER} rabat til dig! Kode: {{{{ code }}}}. "
            f"Gælder til {until}." + _when("points_cost", f" Koster {pc} point."),
        ),
        "en": _Copy(
            subject=f"{{{{ campaign_name }}}}: {_OFFER} off, just for you",
            body=(
                f"We've got a coupon for you: {_OFFER} off!",
                "Your code is {{ code }}. Show it at the till when you shop.",
                ("points_cost", f"Using the coupon costs {pc} point{_s('points_cost')}."),
                f"The coupon is valid from {start} to {until}.",
            ),
            sms=f"{{{{ program_name }}}}: {_OFFER} off, just for you! Code: {{{{ code }}}}. "
            f"Valid until {until}."
            + _when("points_cost", f" Costs {pc} point{_s('points_cost')}."),
        ),
    }


def _points_expiring() -> dict[str, _Copy]:
    points = "{{ points|number }}"
    at = "{{ expires_at|date }}"
    return {
        "nb": _Copy(
            subject=f"{points} poeng utløper snart",
            body=(
                f"{points} av poengene dine utløper {at}.",
                "Bruk dem før den tid, så går de ikke tapt.",
            ),
            sms=f"{{{{ program_name }}}}: {points} av poengene dine utløper {at}. "
            "Bruk dem før det!",
        ),
        "sv": _Copy(
            subject=f"{points} poäng går snart ut",
            body=(
                f"{points} av dina poäng går ut den {at}.",
                "Använd dem innan dess så att de inte går förlorade.",
            ),
            sms=f"{{{{ program_name }}}}: {points} av dina poäng går ut den {at}. "
            "Använd dem innan dess!",
        ),
        "da": _Copy(
            subject=f"{points} point udløber snart",
            body=(
                f"{points} af dine point udløber den {at}.",
                "Brug dem inden da, så de ikke går tabt.",
            ),
            sms=f"{{{{ program_name }}}}: {points} af dine point udløber den {at}. "
            "Brug dem inden da!",
        ),
        "en": _Copy(
            subject=f"{points} point{_s('points')} expiring soon",
            body=(
                f"{points} point{_s('points')} in your account will expire on {at}.",
                "Use them before then so they don't go to waste.",
            ),
            sms=f"{{{{ program_name }}}}: {points} point{_s('points')} will expire on {at}. "
            "Use them before then!",
        ),
    }


def _reward_granted() -> dict[str, _Copy]:
    points = "{{ points|number }}"

    def by_trigger(welcome: str, birthday: str, referral: str, punch: str, other: str) -> str:
        cases = {"welcome": welcome, "birthday": birthday, "referral": referral}
        return _switch("trigger", {**cases, "punch_card": punch}, other)

    copy: dict[str, _Copy] = {}
    texts = {
        "nb": (
            ("Velkommen som medlem!", "Gratulerer med dagen!", "Takk for at du vervet en venn!",
             "Stempelkortet ditt er fullt!", "En belønning til deg!"),
            ("Velkommen som medlem i {{ program_name }}! Her er en velkomstgave fra oss.",
             "Gratulerer med dagen! Vi feirer deg med en liten gave.",
             "Takk for at du har vervet en venn til {{ program_name }}! Her er belønningen din.",
             "Du har fylt opp stempelkortet ditt. Her er belønningen din!",
             "Her er en belønning fra oss."),
            f"Vi har lagt {points} bonuspoeng inn på kontoen din.",
            "Koden din er {{ code }}. Vis den i kassen når du handler.",
            f" Du har fått {points} bonuspoeng.",
            " Koden din: {{ code }}.",
        ),
        "sv": (
            ("Välkommen som medlem!", "Grattis på födelsedagen!",
             "Tack för att du värvade en vän!", "Ditt stämpelkort är fullt!",
             "En belöning till dig!"),
            ("Välkommen som medlem i {{ program_name }}! Här är en välkomstgåva från oss.",
             "Grattis på födelsedagen! Vi firar dig med en liten present.",
             "Tack för att du har värvat en vän till {{ program_name }}! Här är din belöning.",
             "Du har fyllt ditt stämpelkort. Här är din belöning!",
             "Här är en belöning från oss."),
            f"Vi har satt in {points} bonuspoäng på ditt konto.",
            "Din kod är {{ code }}. Visa den i kassan när du handlar.",
            f" Du har fått {points} bonuspoäng.",
            " Din kod: {{ code }}.",
        ),
        "da": (
            ("Velkommen som medlem!", "Tillykke med fødselsdagen!",
             "Tak, fordi du anbefalede os til en ven!", "Dit stempelkort er fyldt!",
             "En belønning til dig!"),
            ("Velkommen som medlem af {{ program_name }}! Her er en velkomstgave fra os.",
             "Tillykke med fødselsdagen! Vi fejrer dig med en lille gave.",
             "Tak, fordi du har anbefalet {{ program_name }} til en ven! "
             "Her er din belønning.",
             "Du har fyldt dit stempelkort. Her er din belønning!",
             "Her er en belønning fra os."),
            f"Vi har sat {points} bonuspoint ind på din konto.",
            "Din kode er {{ code }}. Vis den ved kassen, når du handler.",
            f" Du har fået {points} bonuspoint.",
            " Din kode: {{ code }}.",
        ),
        "en": (
            ("Welcome aboard!", "Happy birthday!", "Thanks for referring a friend!",
             "Your punch card is full!", "A reward for you!"),
            ("Welcome to {{ program_name }}! Here's a welcome gift from us.",
             "Happy birthday! We're celebrating you with a little gift.",
             "Thanks for referring a friend to {{ program_name }}! Here's your reward.",
             "You've filled your punch card. Here's your reward!",
             "Here's a reward from us."),
            f"We've added {points} bonus point{_s('points')} to your account.",
            "Your code is {{ code }}. Show it at the till when you shop.",
            f" You've got {points} bonus point{_s('points')}.",
            " Your code: {{ code }}.",
        ),
    }  # fmt: skip
    for locale, (short, intro, points_line, code_line, sms_points, sms_code) in texts.items():
        copy[locale] = _Copy(
            subject=by_trigger(*short),
            body=(by_trigger(*intro), ("points", points_line), ("code", code_line)),
            sms="{{ program_name }}: "
            + by_trigger(*short)
            + _when("points", sms_points)
            + _when("code", sms_code),
        )
    return copy


def _html_paragraph(text: str) -> str:
    return "<p>" + text.replace("\n", "<br>\n") + "</p>\n"


def _email_html(locale: str, copy: _Copy, marketing: bool) -> str:
    chrome = _CHROME[locale]
    out = [
        "<!DOCTYPE html>\n",
        f'<html lang="{locale}">\n',
        '<head>\n<meta charset="utf-8">\n<title>{{ program_name }}</title>\n</head>\n',
        "<body>\n",
        _html_paragraph(chrome.greeting),
    ]
    for paragraph in copy.body:
        if isinstance(paragraph, tuple):
            condition, text = paragraph
            out.append(_when(condition, _html_paragraph(text)))
        else:
            out.append(_html_paragraph(paragraph))
    out.append(_html_paragraph(chrome.signoff))
    out.append("<hr>\n")
    out.append(f"<p><small>{chrome.member_note}")
    if marketing:
        out.append(
            f' {chrome.unsubscribe_question} <a href="{{{{ unsubscribe_url }}}}">'
            f"{chrome.unsubscribe_link}</a>."
        )
    out.append("</small></p>\n</body>\n</html>\n")
    return "".join(out)


def _email_text(locale: str, copy: _Copy, marketing: bool) -> str:
    chrome = _CHROME[locale]
    out = [chrome.greeting + "\n\n"]
    for paragraph in copy.body:
        if isinstance(paragraph, tuple):
            condition, text = paragraph
            out.append(_when(condition, text + "\n\n"))
        else:
            out.append(paragraph + "\n\n")
    out.append(chrome.signoff + "\n\n--\n" + chrome.member_note + "\n")
    if marketing:
        out.append(
            f"{chrome.unsubscribe_question} {chrome.unsubscribe_label}: {{{{ unsubscribe_url }}}}\n"
        )
    return "".join(out)


def _sms_text(locale: str, copy: _Copy, marketing: bool) -> str:
    if marketing:
        return copy.sms + f"\n{_CHROME[locale].sms_stop}: {{{{ unsubscribe_url }}}}"
    return copy.sms


_COPY: Final[Mapping[str, Mapping[str, _Copy]]] = {
    "TierChanged": _tier_changed(),
    "TierProgress": _tier_progress(),
    "TierDowngradeWarning": _tier_downgrade_warning(),
    "OfferIssued": _offer_issued(),
    "PointsExpiring": _points_expiring(),
    "RewardGranted": _reward_granted(),
}


def _build_defaults() -> dict[tuple[str, str, str], dict[str, str]]:
    defaults: dict[tuple[str, str, str], dict[str, str]] = {}
    for event_type, by_locale in _COPY.items():
        marketing = EVENT_KINDS[event_type] == "marketing"
        for locale in LOCALES:
            copy = by_locale[locale]
            defaults[(event_type, "email", locale)] = {
                "subject": copy.subject,
                "html": _email_html(locale, copy, marketing),
                "text": _email_text(locale, copy, marketing),
            }
            defaults[(event_type, "sms", locale)] = {"text": _sms_text(locale, copy, marketing)}
    return defaults


_DEFAULTS: Final = _build_defaults()


def default_templates(event_type: str, channel: str, locale: str) -> dict[str, str]:
    """The default template sources of (event type, channel, locale), by part."""
    _check_target(event_type, channel)
    return dict(_DEFAULTS[(event_type, channel, _locale(locale))])


# --- Rendering ---------------------------------------------------------------------


def _check_target(event_type: str, channel: str) -> None:
    if event_type not in EVENT_KINDS:
        raise ValueError(f"unknown event type {event_type!r}")
    if channel not in CHANNEL_PARTS:
        raise ValueError(f"unknown channel {channel!r}; expected email or sms")


def _check_part(channel: str, part: str) -> None:
    if part not in CHANNEL_PARTS[channel]:
        expected = ", ".join(CHANNEL_PARTS[channel])
        raise TemplateError(part, f"{channel} has no part {part!r}; expected {expected}")


def _locale(locale: str) -> str:
    supported = _supported(locale)
    if supported is None:
        raise ValueError(f"unsupported locale {locale!r}; expected one of {LOCALES}")
    return supported


def _line(error: BaseException) -> int | None:
    return error.lineno if isinstance(error, jinja2.TemplateSyntaxError) else None


def _template(part: str, source: str) -> jinja2.Template:
    try:
        return _compile(source, part == "html")
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(part, f"does not compile: {error.message}", error.lineno) from None


_SPACES: Final = re.compile(r"[ \t]+")
_WHITESPACE: Final = re.compile(r"[ \t\r\n\f\v]+")
_NO_BREAK_SPACES: Final = str.maketrans({"\u00a0": " ", "\u202f": " "})


def _finish(part: str, channel: str, output: str) -> str:
    if part == "subject":  # one line; no-break spaces (Babel's) are kept
        return _WHITESPACE.sub(" ", output).strip(" ")
    if channel == "sms":
        lines = _SPACES.sub(" ", output.translate(_NO_BREAK_SPACES)).split("\n")
        return "\n".join(line.strip() for line in lines).strip()
    return output.strip() + ("\n" if part == "html" else "")


def _render_part(
    part: str, channel: str, source: str, locale: str, variables: Mapping[str, Any]
) -> str:
    template = _template(part, source)
    try:
        output = template.render({**variables, "locale": locale})
    except jinja2.UndefinedError as error:
        raise TemplateError(part, f"undefined variable: {error.message}") from None
    except jinja2.TemplateError as error:
        raise TemplateError(part, f"does not render: {error.message}", _line(error)) from None
    except Exception as error:  # a template is user code: any failure is its failure
        raise TemplateError(part, f"does not render: {error}") from None
    return _finish(part, channel, output)


def render(
    event_type: str,
    channel: str,
    locale: str,
    variables: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
) -> Rendered:
    """Render the (event type, channel, locale) message with `variables`; `overrides`
    maps part names to template sources that replace the defaults. Raises
    `TemplateError` when a part fails (e.g. a missing variable), `ValueError` for an
    unknown event type, channel or locale."""
    _check_target(event_type, channel)
    locale = _locale(locale)
    sources = dict(_DEFAULTS[(event_type, channel, locale)])
    for part, source in (overrides or {}).items():
        _check_part(channel, part)
        sources[part] = source
    parts = {
        part: _render_part(part, channel, source, locale, variables)
        for part, source in sources.items()
    }
    if channel == "sms":
        text = parts["text"]
        return Rendered(None, None, text, sms_segments(text), locale)
    return Rendered(parts["subject"], parts["html"], parts["text"], None, locale)


# --- Override validation -----------------------------------------------------------


def _check_names(event_type: str, part: str, source: str) -> None:
    env = _HTML_ENV if part == "html" else _TEXT_ENV
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(part, f"does not compile: {error.message}", error.lineno) from None
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        assert isinstance(node, nodes.Filter | nodes.Test)
        known = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateError(part, f"unknown {kind} {node.name!r}", node.lineno)
    try:
        undeclared = find_undeclared_variables(ast)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(part, f"does not compile: {error.message}", error.lineno) from None
    allowed = set(SAMPLE_VARIABLES[event_type]) | {"locale"} | set(env.globals)
    unknown = sorted(undeclared - allowed)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        available = ", ".join(sorted(allowed - set(env.globals)))
        raise TemplateError(
            part, f"unknown variable {names} for {event_type}; available: {available}"
        )


def validate_override(event_type: str, channel: str, part: str, source: str) -> None:
    """Check an override before it is saved: it must compile, use only the event
    type's variables (`SAMPLE_VARIABLES[event_type]` and `locale`) and known filters,
    and render in every locale against the samples (including the branches the samples
    select: each tier-change reason, both coupon kinds, each reward trigger). A marketing
    message's HTML and text must show the unsubscribe URL; subject and text must not be
    empty. Raises `TemplateError` with `.field` set to `part`."""
    _check_target(event_type, channel)
    _check_part(channel, part)
    _check_names(event_type, part, source)
    marketing = EVENT_KINDS[event_type] == "marketing"
    for variables in _samples(event_type):
        for locale in LOCALES:
            output = _render_part(part, channel, source, locale, variables)
            if part != "html" and not output:
                raise TemplateError(part, f"renders empty (locale {locale})")
            url = variables.get("unsubscribe_url")
            if marketing and part != "subject" and isinstance(url, str) and url not in output:
                raise TemplateError(
                    part,
                    "a marketing message must include the unsubscribe link ({{ unsubscribe_url }})",
                )
