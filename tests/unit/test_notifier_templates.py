"""Examples of the notifier's message templates (`notifier.domain.templates`): the
default copy against checked-in snapshots, locale formatting, locale fallbacks, strict
variables, autoescaping, unsubscribe links, SMS segments and override validation.

Snapshots live in tests/unit/snapshots/notifier/, one file per event type, locale and
channel; `UPDATE_SNAPSHOTS=1 pytest tests/unit/test_notifier_templates.py` rewrites
them.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from notifier.domain.templates import (
    CHANNEL_PARTS,
    EVENT_KINDS,
    LOCALES,
    SAMPLE_VARIABLES,
    Rendered,
    TemplateError,
    default_templates,
    is_gsm7,
    render,
    resolve_locale,
    sms_segments,
    validate_override,
)

SNAPSHOTS = Path(__file__).parent / "snapshots" / "notifier"
NBSP = "\u00a0"
CASES = [
    (event_type, locale, channel)
    for event_type in EVENT_KINDS
    for locale in LOCALES
    for channel in CHANNEL_PARTS
]
MARKETING = [event for event, kind in EVENT_KINDS.items() if kind == "marketing"]
TRANSACTIONAL = [event for event, kind in EVENT_KINDS.items() if kind == "transactional"]


def sample(event_type: str, **changes: Any) -> dict[str, Any]:
    return {**SAMPLE_VARIABLES[event_type], **changes}


def snapshot_text(rendered: Rendered) -> str:
    if rendered.sms_segments is not None:
        return f"segments: {rendered.sms_segments}\n--- text ---\n{rendered.text}\n"
    return (
        f"subject: {rendered.subject}\n--- html ---\n{rendered.html}--- text ---\n{rendered.text}\n"
    )


# --- Default templates and snapshots -------------------------------------------------


# Emails greet by first name where the member gave one (SMS greet no one).
NAMED_CASES = [(event_type, locale) for event_type in EVENT_KINDS for locale in LOCALES]
GREETINGS = {"nb": "Hei, Kari!", "sv": "Hej Kari!", "da": "Hej Kari!", "en": "Hi Kari!"}


@pytest.mark.parametrize(("event_type", "locale", "channel"), CASES)
def test_default_template_matches_snapshot(event_type: str, locale: str, channel: str) -> None:
    rendered = render(event_type, channel, locale, SAMPLE_VARIABLES[event_type])
    assert rendered.locale == locale
    check_snapshot(rendered, SNAPSHOTS / f"{event_type}.{locale}.{channel}.txt")


@pytest.mark.parametrize(("event_type", "locale"), NAMED_CASES)
def test_email_greets_by_first_name(event_type: str, locale: str) -> None:
    rendered = render(event_type, "email", locale, sample(event_type, first_name="Kari"))
    assert rendered.text.startswith(GREETINGS[locale] + "\n")
    assert f"<p>{GREETINGS[locale]}</p>" in (rendered.html or "")
    check_snapshot(rendered, SNAPSHOTS / f"{event_type}.{locale}.email.first_name.txt")
    anonymous = render(event_type, "sms", locale, sample(event_type))
    assert render(event_type, "sms", locale, sample(event_type, first_name="Kari")) == anonymous


def test_a_first_name_is_escaped_in_html_and_blank_greets_no_one() -> None:
    rendered = render("PointsExpiring", "email", "en", sample("PointsExpiring", first_name="<b>"))
    assert "<p>Hi &lt;b&gt;!</p>" in (rendered.html or "")
    assert rendered.text.startswith("Hi <b>!")
    blank = render("PointsExpiring", "email", "en", sample("PointsExpiring", first_name=""))
    assert blank == render("PointsExpiring", "email", "en", sample("PointsExpiring"))


def check_snapshot(rendered: Rendered, path: Path) -> None:
    actual = snapshot_text(rendered)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"missing snapshot {path}; run with UPDATE_SNAPSHOTS=1"
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{path.name} (snapshot)",
                tofile=f"{path.name} (rendered)",
            )
        )
        pytest.fail(f"rendered output differs from the snapshot:\n{diff}", pytrace=False)


def test_every_snapshot_file_belongs_to_a_case() -> None:
    expected = {f"{event}.{locale}.{channel}.txt" for event, locale, channel in CASES}
    expected |= {f"{event}.{locale}.email.first_name.txt" for event, locale in NAMED_CASES}
    assert {path.name for path in SNAPSHOTS.iterdir()} == expected


@pytest.mark.parametrize("event_type", list(EVENT_KINDS))
@pytest.mark.parametrize("locale", LOCALES)
def test_every_branch_renders_and_sms_stays_short_gsm7(event_type: str, locale: str) -> None:
    """Each tier-change reason, coupon kind and reward trigger renders in every locale;
    the default SMS stays in GSM-7 and one segment with the sample values."""
    from notifier.domain.templates import _samples

    for variables in _samples(event_type):
        email = render(event_type, "email", locale, variables)
        assert email.subject and "\n" not in email.subject
        assert email.html is not None and email.html.startswith("<!DOCTYPE html>")
        assert email.text and email.sms_segments is None
        sms = render(event_type, "sms", locale, variables)
        assert sms.subject is None and sms.html is None
        assert is_gsm7(sms.text), sms.text
        assert sms.sms_segments == 1, sms.text
        assert sms.text.startswith("Nordlys Club: ")
        assert "  " not in sms.text


def test_tier_changed_copy_by_reason() -> None:
    qualified = render("TierChanged", "email", "nb", sample("TierChanged"))
    assert qualified.subject == "Gratulerer, du er nå Gold-medlem!"
    assert f"15{NBSP}000 kvalifiserende poeng" in qualified.text
    enrolled = render(
        "TierChanged",
        "sms",
        "en",
        sample("TierChanged", reason="enrolled", from_tier="", valid_until=None),
    )
    assert enrolled.text == "Nordlys Club: Welcome! Your membership tier is Gold."
    missed = render(
        "TierChanged",
        "email",
        "sv",
        sample("TierChanged", reason="requalification_missed", from_tier="Gold", to_tier="Silver"),
    )
    assert missed.subject == "Din medlemsnivå är nu Silver"
    assert "Fortsätt samla poäng" in missed.text


def test_offer_percent_and_english_plurals() -> None:
    variables = sample("OfferIssued", kind="percent", value="20", currency=None, points_cost=1)
    assert render("OfferIssued", "email", "nb", variables).subject == (
        f"Sommersalg: 20{NBSP}% rabatt til deg"
    )
    english = render("OfferIssued", "email", "en", variables)
    assert english.subject == "Sommersalg: 20% off, just for you"
    assert "Using the coupon costs 1 point." in english.text
    free = render("OfferIssued", "email", "en", sample("OfferIssued", points_cost=0))
    assert "costs" not in free.text


# --- Locale formatting ---------------------------------------------------------------


def filtered(source: str, locale: str, **variables: Any) -> str:
    """Render a one-off text template through the override path."""
    full = {**SAMPLE_VARIABLES["PointsExpiring"], **variables}
    return render("PointsExpiring", "email", locale, full, {"text": source}).text


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("nb", f"15{NBSP}000"), ("sv", f"15{NBSP}000"), ("da", "15.000"), ("en", "15,000")],
)
def test_number_filter(locale: str, expected: str) -> None:
    assert filtered("{{ points|number }}", locale, points=15000) == expected


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("nb", f"1{NBSP}234,50{NBSP}kr"),
        ("sv", f"1{NBSP}234,50{NBSP}Nkr"),
        ("da", f"1.234,50{NBSP}NOK"),
        ("en", "NOK1,234.50"),
    ],
)
def test_money_filter_nok(locale: str, expected: str) -> None:
    assert filtered('{{ "1234.5"|money("NOK") }}', locale) == expected


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("nb", f"20{NBSP}%"), ("sv", f"12,5{NBSP}%"), ("da", f"12,5{NBSP}%"), ("en", "12.5%")],
)
def test_percent_filter(locale: str, expected: str) -> None:
    value = "20" if locale == "nb" else "12.5"
    assert filtered("{{ v|percent }}", locale, v=value) == expected


def test_money_and_sms_use_plain_spaces_in_sms() -> None:
    rendered = render("PointsExpiring", "sms", "nb", sample("PointsExpiring", points=15000))
    assert rendered.text.startswith("Nordlys Club: 15 000 av poengene")
    assert NBSP not in rendered.text


def test_dates_in_member_time_zone() -> None:
    late_evening = datetime(2025, 3, 31, 22, 30, tzinfo=UTC)  # 00:30 on 1 April in Oslo
    assert filtered("{{ d|date }}", "nb", d=late_evening) == "1. apr. 2025"
    assert filtered("{{ d|date }}", "nb", d=late_evening, time_zone="UTC") == "31. mars 2025"
    assert filtered("{{ d|date }}", "en", d=late_evening, time_zone="America/New_York") == (
        "Mar 31, 2025"
    )
    assert filtered("{{ d|date }}", "sv", d="2025-03-31T22:30:00Z") == "1 apr. 2025"
    assert filtered("{{ d|date }}", "da", d=date(2025, 12, 24)) == "24. dec. 2025"
    assert filtered('{{ d|date("long") }}', "nb", d=late_evening) == "1. april 2025"


def test_default_templates_format_dates_in_time_zone() -> None:
    expiring = sample("PointsExpiring", expires_at=datetime(2025, 12, 31, 23, tzinfo=UTC))
    assert "1. jan. 2026" in render("PointsExpiring", "sms", "nb", expiring).text
    in_utc = {**expiring, "time_zone": "UTC"}
    assert "31. des. 2025" in render("PointsExpiring", "sms", "nb", in_utc).text


# --- Locales -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "program", "expected"),
    [
        ("sv", "nb", "sv"),
        ("nb-NO", "en", "nb"),
        ("nb_NO", "en", "nb"),
        ("no", "en", "nb"),
        ("NO", "en", "nb"),
        ("da-DK", "nb", "da"),
        ("en-GB", "nb", "en"),
        ("de-DE", "sv-SE", "sv"),
        (None, "da", "da"),
        ("", "nb-NO", "nb"),
        ("fr", "de", "en"),
        (None, "", "en"),
    ],
)
def test_resolve_locale(member: str | None, program: str, expected: str) -> None:
    assert resolve_locale(member, program) == expected


def test_render_accepts_region_tags_and_rejects_unsupported_locales() -> None:
    assert render("PointsExpiring", "sms", "nb-NO", SAMPLE_VARIABLES["PointsExpiring"]).locale == (
        "nb"
    )
    with pytest.raises(ValueError, match="unsupported locale"):
        render("PointsExpiring", "sms", "fr", SAMPLE_VARIABLES["PointsExpiring"])
    with pytest.raises(ValueError, match="unknown event type"):
        render("Nope", "sms", "nb", {})
    with pytest.raises(ValueError, match="unknown channel"):
        render("PointsExpiring", "push", "nb", SAMPLE_VARIABLES["PointsExpiring"])


# --- Strictness, escaping, unsubscribe -----------------------------------------------


def test_missing_variable_fails() -> None:
    variables = sample("TierChanged")
    del variables["to_tier"]
    with pytest.raises(TemplateError, match="to_tier") as raised:
        render("TierChanged", "email", "nb", variables)
    assert raised.value.field == "subject"
    with pytest.raises(TemplateError, match="time_zone"):
        render(
            "PointsExpiring",
            "sms",
            "nb",
            {k: v for k, v in SAMPLE_VARIABLES["PointsExpiring"].items() if k != "time_zone"},
        )


def test_html_is_autoescaped_subject_and_text_are_not() -> None:
    variables = sample("TierChanged", program_name="<b>", reason="enrolled")
    rendered = render("TierChanged", "email", "en", variables)
    assert rendered.html is not None
    assert "&lt;b&gt;" in rendered.html and "<b>" not in rendered.html
    assert rendered.subject == "Welcome to <b>!"
    assert "Welcome to <b>!" in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("event_type", MARKETING)
def test_marketing_messages_carry_the_unsubscribe_url(event_type: str, locale: str) -> None:
    url = "https://club.example/unsubscribe?m=1&t=x"
    variables = sample(event_type, unsubscribe_url=url)
    email = render(event_type, "email", locale, variables)
    assert email.html is not None and 'href="https://club.example/unsubscribe?m=1&amp;t=x"' in (
        email.html
    )
    assert email.text.endswith(url)
    sms = render(event_type, "sms", locale, variables)
    stop = "Stop" if locale in ("da", "en") else "Stopp"
    assert sms.text.endswith(f"\n{stop}: {url}")
    without = {k: v for k, v in variables.items() if k != "unsubscribe_url"}
    with pytest.raises(TemplateError, match="unsubscribe_url"):
        render(event_type, "sms", locale, without)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("event_type", TRANSACTIONAL)
def test_transactional_messages_have_no_unsubscribe_line(event_type: str, locale: str) -> None:
    url = "https://club.example/unsubscribe"
    for channel in CHANNEL_PARTS:
        sources = default_templates(event_type, channel, locale)
        assert all("unsubscribe_url" not in source for source in sources.values())
        rendered = render(event_type, channel, locale, sample(event_type, unsubscribe_url=url))
        assert url not in rendered.text and url not in (rendered.html or "")
        assert not re.search(r"\bStopp?:", rendered.text)


def test_sandbox_blocks_unsafe_attribute_access() -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        filtered("{{ program_name.__class__.__mro__ }}", "nb")


# --- SMS segments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments"), [(0, 1), (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3)]
)
def test_gsm7_segments(length: int, segments: int) -> None:
    assert sms_segments("a" * length) == segments


def test_nordic_letters_are_gsm7() -> None:
    text = "æøåÆØÅäöÄÖüÜéÉñÑàèùìòÇ"
    assert is_gsm7(text)
    assert sms_segments(text * 7) == 1  # 154 characters
    assert sms_segments(text * 8) == 2


def test_extension_characters_count_double() -> None:
    assert sms_segments("€" * 80) == 1
    assert sms_segments("€" + "a" * 159) == 2
    assert sms_segments("a" * 158 + "€") == 1
    for ch in "^{}\\[~]|€":
        assert sms_segments(ch + "a" * 158) == 1
        assert sms_segments(ch + "a" * 159) == 2
    # A two-septet character is not split across parts: 152 + [€] does not fit in 153.
    assert sms_segments("a" * 152 + "€" + "a" * 152) == 3


def test_one_non_gsm_character_switches_to_ucs2() -> None:
    assert sms_segments("a" * 70) == 1
    assert sms_segments("õ" + "a" * 69) == 1
    assert sms_segments("õ" + "a" * 70) == 2
    assert sms_segments("a" * 68 + "🎉") == 1  # the emoji is two UTF-16 code units
    assert sms_segments("a" * 69 + "🎉") == 2
    assert sms_segments("õ" * 134) == 2
    assert sms_segments("õ" * 135) == 3
    assert not is_gsm7("Gratulerer 🎉")


def test_rendered_sms_states_its_segment_count() -> None:
    long_name = "Nordlys Club " * 9
    variables = sample("PointsExpiring", program_name=long_name.strip())
    rendered = render("PointsExpiring", "sms", "nb", variables)
    assert rendered.sms_segments == sms_segments(rendered.text) == 2
    emoji = render("PointsExpiring", "sms", "nb", sample("PointsExpiring", program_name="Klubb🎉"))
    assert emoji.sms_segments == 2  # UCS-2: the 73 code units no longer fit in 70


# --- Overrides -----------------------------------------------------------------------


def test_good_override_passes_and_renders() -> None:
    source = "{{ program_name }}: {{ points|number }} poeng forsvinner {{ expires_at|date }}."
    validate_override("PointsExpiring", "sms", "text", source)
    rendered = render(
        "PointsExpiring", "sms", "nb", SAMPLE_VARIABLES["PointsExpiring"], {"text": source}
    )
    assert rendered.text == "Nordlys Club: 1 200 poeng forsvinner 1. jan. 2026."
    assert rendered.sms_segments == 1


def test_override_replaces_only_its_part() -> None:
    rendered = render(
        "TierChanged",
        "email",
        "da",
        SAMPLE_VARIABLES["TierChanged"],
        {"subject": "Nyt niveau: {{ to_tier }}"},
    )
    assert rendered.subject == "Nyt niveau: Gold"
    assert rendered.text.startswith("Hej!")


@pytest.mark.parametrize(
    ("part", "source", "message"),
    [
        ("subject", "Hei {{ to_tier ", "does not compile"),
        ("text", "{% if to_tier %}Hei", "does not compile"),
        ("html", "<p>{{ member_name }}</p>", "unknown variable 'member_name'"),
        ("text", "{% if reason == 'x' %}{{ nickname }}{% endif %}", "unknown variable"),
        ("subject", "{{ qualifying_points|shout }}", "unknown filter 'shout'"),
        ("subject", "{% if reason == 'x' %}{{ to_tier|shout }}{% endif %}", "unknown filter"),
        ("subject", "{% if to_tier is gold %}x{% endif %}", "unknown test 'gold'"),
        ("subject", "{{ to_tier|money }}", "does not render"),
        ("subject", "{{ valid_until.year // 0 }}", "does not render"),
        ("subject", "{% if reason == 'enrolled' %}{{ valid_until|date }}{% endif %}", "render"),
        ("subject", "   ", "renders empty"),
    ],
)
def test_broken_overrides_are_rejected(part: str, source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as raised:
        validate_override("TierChanged", "email", part, source)
    assert raised.value.field == part
    assert str(raised.value).startswith(part)


def test_syntax_error_reports_its_line() -> None:
    with pytest.raises(TemplateError) as raised:
        validate_override("PointsExpiring", "email", "text", "Hei!\n\n{{ points|number }\n")
    assert raised.value.field == "text"
    assert raised.value.line == 3


def test_override_part_must_belong_to_the_channel() -> None:
    with pytest.raises(TemplateError) as raised:
        validate_override("PointsExpiring", "sms", "subject", "Hei")
    assert raised.value.field == "subject"
    with pytest.raises(TemplateError) as raised:
        render("PointsExpiring", "sms", "nb", SAMPLE_VARIABLES["PointsExpiring"], {"html": "x"})
    assert raised.value.field == "html"


def test_marketing_override_must_keep_the_unsubscribe_link() -> None:
    with pytest.raises(TemplateError, match="unsubscribe") as raised:
        validate_override("OfferIssued", "sms", "text", "Kode: {{ code }}")
    assert raised.value.field == "text"
    validate_override(
        "OfferIssued", "sms", "text", "Kode: {{ code }}. Stopp: {{ unsubscribe_url }}"
    )
    validate_override("OfferIssued", "email", "subject", "{{ campaign_name }}")


def test_transactional_override_cannot_use_unsubscribe_url() -> None:
    with pytest.raises(TemplateError, match="unknown variable 'unsubscribe_url'"):
        validate_override("PointsExpiring", "email", "text", "{{ unsubscribe_url }}")


@pytest.mark.parametrize("event_type", list(EVENT_KINDS))
def test_default_templates_pass_their_own_validation(event_type: str) -> None:
    for locale in LOCALES:
        for channel, parts in CHANNEL_PARTS.items():
            sources = default_templates(event_type, channel, locale)
            assert set(sources) == set(parts)
            for part, source in sources.items():
                validate_override(event_type, channel, part, source)


def test_sample_variables_cover_every_event_type() -> None:
    assert set(SAMPLE_VARIABLES) == set(EVENT_KINDS)
    for event_type, variables in SAMPLE_VARIABLES.items():
        assert {"program_name", "time_zone"} <= set(variables)
        assert ("unsubscribe_url" in variables) == (EVENT_KINDS[event_type] == "marketing")
