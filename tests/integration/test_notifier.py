"""The notifier end to end: ledger → relay → rules → tier topic → notifier → SMTP and
SMS sinks, real processes on the embedded broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from loyalty_common.proto.loyalty.rules.v1 import tiers_pb2
from loyalty_common.testing import eventually

from tests.integration.conftest import NotifierProcess, Program, earn, enrol, new_program

pytestmark = pytest.mark.usefixtures("relay", "follow", "rules")

TIERS = "loyalty.tiers.events.v1"


@pytest.fixture
def club(database_url: str, ledger_url: str) -> Program:
    return new_program(database_url, ledger_url, "Dyrebutikken Klubb")


def log_of(program: Program, notifier: NotifierProcess, member: str) -> list[dict[str, Any]]:
    with httpx.Client(
        base_url=notifier.url, headers={"Authorization": f"Bearer {program.admin_key}"}
    ) as client:
        response = client.get("/v1/messages", params={"member_id": member})
        assert response.status_code == 200, response.text
        return list(response.json()["messages"])


def mails_to(notifier: NotifierProcess, address: str) -> list[dict[str, Any]]:
    return [m for m in notifier.smtp.messages() if address in m["rcpt_tos"]]


async def _tier_changes(bootstrap: str, member: str) -> list[tuple[bytes, list[Any]]]:
    consumer = AIOKafkaConsumer(
        TIERS,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=2000,
    )
    await consumer.start()
    found: list[tuple[bytes, list[Any]]] = []
    try:
        for _ in range(20):
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for m in messages:
                    event = tiers_pb2.TierEvent.FromString(m.value)
                    if event.member_id == member and event.type == "TierChanged":
                        found.append((m.value, list(m.headers)))
            if any(b"Silver" in value for value, _ in found):
                break
    finally:
        await consumer.stop()
    return found


async def _produce(bootstrap: str, key: str, value: bytes, headers: list[Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(TIERS, key=key.encode(), value=value, headers=headers)
    finally:
        await producer.stop()


def test_a_tier_upgrade_is_one_email_in_the_members_language_even_when_redelivered(
    club: Program, notifier: NotifierProcess, kafka_bootstrap: str
) -> None:
    address = f"kari-{uuid.uuid4().hex[:6]}@example.no"
    with club.client() as api:
        member = enrol(api, email=address, locale="nb", consents={"email": True})
        earn(api, member, "5000.00")
    mail = eventually(lambda: mails_to(notifier, address), what="the tier email")
    assert len(mail) == 1
    assert "Silver" in mail[0]["subject"]
    assert mail[0]["idempotency_key"]
    sent = [m for m in log_of(club, notifier, member) if m["status"] == "sent"]
    assert [(m["event_type"], m["channel"], m["locale"]) for m in sent] == [
        ("TierChanged", "email", "nb")
    ]

    # The same event again (a redelivery): no second message.
    changes = asyncio.run(_tier_changes(kafka_bootstrap, member))
    value, headers = next((v, h) for v, h in changes if b"Silver" in v)
    asyncio.run(_produce(kafka_bootstrap, member, value, headers))
    # The event replayed under a new id: recorded as not sent, because it is a replay.
    replayed = tiers_pb2.TierEvent.FromString(value)
    replayed.event_id, replayed.replay = str(uuid.uuid4()), True
    _send(kafka_bootstrap, replayed)
    suppressed = eventually(
        lambda: [m for m in log_of(club, notifier, member) if m["status"] == "suppressed"],
        what="the replay in the delivery log",
    )
    assert [m["reason"] for m in suppressed] == ["replay"]
    assert len(mails_to(notifier, address)) == 1


def test_consent_decides_marketing_and_sms_carries_its_segments(
    club: Program, notifier: NotifierProcess
) -> None:
    with httpx.Client(
        base_url=notifier.url, headers={"Authorization": f"Bearer {club.admin_key}"}
    ) as admin:

        def configure() -> bool:
            response = admin.put(
                "/v1/settings",
                json={"transactional_channels": ["email", "sms"], "marketing_per_week": 3},
            )
            return response.status_code == 200

        eventually(configure, what="the program at the notifier")
        phone = f"+4790{uuid.uuid4().int % 1_000_000:06d}"
        address = f"ola-{uuid.uuid4().hex[:6]}@example.no"
        with club.client() as api:
            member = enrol(
                api,
                email=address,
                phone=phone,
                locale="sv",
                consents={"email": False, "sms": True},
            )
            earn(api, member, "4600.00")  # 400 short of Silver: TierProgress (marketing)
            progress = eventually(
                lambda: (
                    (
                        done := [
                            m for m in log_of(club, notifier, member) if m["status"] != "pending"
                        ]
                    )
                    and len(done) == 2
                    and done
                ),
                what="the progress messages",
            )
            outcome = {(m["channel"], m["status"], m["reason"]) for m in progress}
            assert outcome == {("email", "suppressed", "no_consent"), ("sms", "sent", None)}
            sms = eventually(
                lambda: [s for s in notifier.sms.messages() if s["to"] == phone],
                what="the SMS",
            )
            assert len(sms) == 1 and sms[0]["segments"] >= 1

            stats = admin.get("/v1/messages/stats").json()
            assert stats["suppressed"].get("no_consent", 0) >= 1

            # The member stops SMS through the link in it: the ledger records it.
            link = next(word for word in sms[0]["text"].split() if "/u/" in word)
            assert httpx.get(link, timeout=10).status_code == 200
            consents = api.get(f"/v1/members/{member}").json()["consents"]
            assert consents == {"email": False, "sms": False}
            events = api.get(f"/v1/members/{member}/events").json()["events"]
            assert events[-1]["type"] == "ConsentsChanged"
            assert events[-1]["reason"] == "unsubscribe link"


def _tier_event(program_id: str, member: str, event_type: str) -> tiers_pb2.TierEvent:
    event = tiers_pb2.TierEvent(
        event_id=str(uuid.uuid4()),
        type=event_type,
        program_id=program_id,
        member_id=member,
        correlation_id="test",
    )
    event.occurred_at.GetCurrentTime()
    event.recorded_at.GetCurrentTime()
    return event


def _progress_event(program_id: str, member: str) -> tiers_pb2.TierEvent:
    event = _tier_event(program_id, member, "TierProgress")
    progress = event.tier_progress
    progress.current_tier, progress.next_tier = "Bronze", "Silver"
    progress.qualifying_points, progress.points_to_next = 4700, 300
    progress.period_end.FromDatetime(datetime(2027, 1, 1, tzinfo=UTC))
    return event


def _send(bootstrap: str, event: tiers_pb2.TierEvent) -> None:
    asyncio.run(
        _produce(
            bootstrap,
            event.member_id,
            event.SerializeToString(),
            [("event_id", event.event_id.encode())],
        )
    )


def test_quiet_hours_defer_and_the_cap_suppresses(
    club: Program, notifier: NotifierProcess, kafka_bootstrap: str
) -> None:
    now = datetime.now(UTC)
    quiet = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
    }
    with httpx.Client(
        base_url=notifier.url, headers={"Authorization": f"Bearer {club.admin_key}"}
    ) as admin:
        eventually(
            lambda: (
                admin.put(
                    "/v1/settings", json={"marketing_per_week": 1, "quiet_hours": quiet}
                ).status_code
                == 200
            ),
            what="the program at the notifier",
        )
        address = f"nils-{uuid.uuid4().hex[:6]}@example.dk"
        with club.client() as api:
            member = enrol(
                api, email=address, locale="da", time_zone="UTC", consents={"email": True}
            )
        for _ in range(2):
            event = _progress_event(club.program_id, member)
            _send(kafka_bootstrap, event)
        log = eventually(
            lambda: (entries := log_of(club, notifier, member)) and len(entries) == 2 and entries,
            what="both progress messages in the log",
        )
        outcomes = sorted((m["status"], m["reason"]) for m in log)
        assert outcomes == [("deferred", "quiet_hours"), ("suppressed", "frequency_cap")]
        deferred = next(m for m in log if m["status"] == "deferred")
        # It waits until the quiet hours end, in the member's zone (UTC here).
        quiet_end = (now + timedelta(hours=1)).replace(second=0, microsecond=0)
        assert datetime.fromisoformat(deferred["next_attempt_at"]) == quiet_end
        assert mails_to(notifier, address) == []
        stats = admin.get("/v1/messages/stats").json()
        assert stats["deferred"] >= 1 and stats["suppressed"]["frequency_cap"] >= 1


def test_sms_is_retried_through_provider_errors_and_a_refusal_is_dead_lettered(
    club: Program, notifier: NotifierProcess, kafka_bootstrap: str
) -> None:
    with httpx.Client(
        base_url=notifier.url, headers={"Authorization": f"Bearer {club.admin_key}"}
    ) as admin:
        eventually(
            lambda: (
                admin.put(
                    "/v1/settings", json={"marketing_per_week": None, "quiet_hours": None}
                ).status_code
                == 200
            ),
            what="the program at the notifier",
        )
    phones = [f"+4741{uuid.uuid4().int % 1_000_000:06d}" for _ in range(2)]
    with club.client() as api:
        members = [enrol(api, phone=p, consents={"sms": True}) for p in phones]
    notifier.sms.fail(500, 2)  # the provider is down for two attempts
    event = _progress_event(club.program_id, members[0])
    _send(kafka_bootstrap, event)
    arrived = eventually(
        lambda: [s for s in notifier.sms.messages() if s["to"] == phones[0]],
        timeout=120,
        what="the SMS after the provider recovered",
    )
    assert len(arrived) == 1
    sent = eventually(
        lambda: [m for m in log_of(club, notifier, members[0]) if m["status"] == "sent"],
        what="the SMS marked sent",
    )
    assert sent[0]["attempts"] == 3

    notifier.sms.fail(422, 1)  # refused for good: no retry
    event = _progress_event(club.program_id, members[1])
    _send(kafka_bootstrap, event)
    failed = eventually(
        lambda: [m for m in log_of(club, notifier, members[1]) if m["status"] == "failed"],
        what="the refused SMS dead-lettered",
    )
    assert "422" in failed[0]["reason"] and failed[0]["attempts"] == 1
    assert [s for s in notifier.sms.messages() if s["to"] == phones[1]] == []


def _tier_changed_event(program_id: str, member: str) -> tiers_pb2.TierEvent:
    event = _tier_event(program_id, member, "TierChanged")
    changed = event.tier_changed
    changed.from_tier, changed.to_tier, changed.reason = "Bronze", "Silver", "qualified"
    changed.qualifying_points = 5200
    changed.valid_until.FromDatetime(datetime(2028, 1, 1, tzinfo=UTC))
    return event


def test_a_programs_own_template_is_checked_when_saved_and_used_when_sent(
    club: Program, notifier: NotifierProcess, kafka_bootstrap: str
) -> None:
    path = "/v1/templates/TierChanged/email/en"
    with httpx.Client(
        base_url=notifier.url, headers={"Authorization": f"Bearer {club.admin_key}"}
    ) as admin:
        eventually(lambda: admin.get("/v1/settings").status_code == 200, what="the program")
        default = admin.get(path).json()
        assert default["overridden"] == [] and "to_tier" in default["variables"]
        assert set(default["parts"]) == {"subject", "html", "text"}

        # Refused when saved, naming the part: an unknown variable, a broken tag, an
        # unknown filter; and an SMS has no subject.
        for body, field in [
            ({"subject": "Welcome to {{ tier_name }}"}, "subject"),
            ({"subject": "Fine", "text": "{% if to_tier %}never closed"}, "text"),
            ({"html": "<p>{{ qualifying_points|shout }}</p>"}, "html"),
        ]:
            refused = admin.put(path, json=body)
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "invalid_template"
            assert refused.json()["field"] == field
        refused = admin.put("/v1/templates/TierChanged/sms/en", json={"subject": "x"})
        assert refused.status_code == 422 and refused.json()["field"] == "subject"
        # A marketing message must keep its unsubscribe link.
        refused = admin.put(
            "/v1/templates/TierProgress/sms/en", json={"text": "Only {{ points_to_next }}!"}
        )
        assert refused.status_code == 422 and "unsubscribe" in refused.json()["detail"]
        assert admin.get("/v1/templates").json()["templates"] == []

        subject = "{{ program_name }}: welcome to {{ to_tier }} ({{ qualifying_points|number }})"
        saved = admin.put(path, json={"subject": subject})
        assert saved.status_code == 200, saved.text
        assert saved.json()["overridden"] == ["subject"]
        assert saved.json()["parts"]["subject"] == subject
        assert saved.json()["parts"]["text"] == default["parts"]["text"]

    address = f"tove-{uuid.uuid4().hex[:6]}@example.com"
    with club.client() as api:
        member = enrol(api, email=address, locale="en", consents={"email": True})
    _send(kafka_bootstrap, _tier_changed_event(club.program_id, member))
    mail = eventually(lambda: mails_to(notifier, address), what="the tier email")
    assert mail[0]["subject"] == "Dyrebutikken Klubb: welcome to Silver (5,200)"

    with httpx.Client(
        base_url=notifier.url, headers={"Authorization": f"Bearer {club.admin_key}"}
    ) as admin:
        assert admin.delete(path).status_code == 204
        assert admin.get(path).json()["overridden"] == []


class _Receiver:
    """The program's own webhook endpoint: keeps each request; answers `statuses` in
    turn, then 204."""

    def __init__(self, statuses: list[int]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/loyalty"
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_programs_webhook_gets_each_event_once_signed_and_retried(
    club: Program, notifier: NotifierProcess, kafka_bootstrap: str
) -> None:
    import base64
    import json

    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
    receiver = _Receiver([503])  # down for the first try
    try:
        with httpx.Client(
            base_url=notifier.url, headers={"Authorization": f"Bearer {club.admin_key}"}
        ) as admin:
            eventually(lambda: admin.get("/v1/settings").status_code == 200, what="the program")
            hook = {"url": receiver.url, "events": ["TierChanged", "TierProgress"]}
            missing = admin.put("/v1/settings", json={"webhook": hook})
            assert missing.status_code == 422
            assert missing.json()["code"] == "webhook_secret_required"
            bad = admin.put("/v1/settings", json={"webhook": {**hook, "secret": "whsec_abc"}})
            assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
            saved = admin.put("/v1/settings", json={"webhook": {**hook, "secret": secret}})
            assert saved.status_code == 200, saved.text
            assert "secret" not in saved.json()["webhook"]
            assert "secret" not in admin.get("/v1/settings").json()["webhook"]
            # Changing the settings again keeps the secret.
            assert admin.put("/v1/settings", json={"webhook": hook}).status_code == 200

        with club.client() as api:
            # No address and no consent: the member gets nothing, the program's system
            # still hears of the tier change, with the consents to decide by.
            member = enrol(api, locale="sv", consents={"email": False})
        event = _tier_changed_event(club.program_id, member)
        _send(kafka_bootstrap, event)
        _send(kafka_bootstrap, event)  # redelivered
        delivered = eventually(
            lambda: [m for m in log_of(club, notifier, member) if m["status"] == "sent"],
            timeout=60,
            what="the webhook delivery after the endpoint recovered",
        )
        assert [(m["channel"], m["attempts"]) for m in delivered] == [("webhook", 2)]
        assert len(receiver.requests) == 2
        ids = {headers["webhook-id"] for headers, _ in receiver.requests}
        assert ids == {delivered[0]["message_id"]}  # one id through the retry
        headers, body = receiver.requests[-1]
        payload = Webhook(secret).verify(body, headers)
        assert payload == json.loads(body)
        assert payload["type"] == "TierChanged"
        data = payload["data"]
        assert (data["member_id"], data["event_id"], data["to_tier"]) == (
            member,
            event.event_id,
            "Silver",
        )
        assert (data["kind"], data["locale"], data["consents"]) == (
            "transactional",
            "sv",
            {"email": False},
        )
        with pytest.raises(Exception, match="signature"):
            Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(body, headers)
    finally:
        receiver.close()
