"""A client this project did not write reads the ledger topic, and protoc decodes the
messages from proto/ alone (not from the generated Python classes)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.integration.conftest import Program, RelayProcess, RulesProcess, earn, enrol

ROOT = Path(__file__).resolve().parents[2]


def _protoc_decode(
    value: bytes,
    message: str = "loyalty.ledger.v1.Envelope",
    schema: str = "proto/loyalty/ledger/v1/events.proto",
) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--decode={message}",
            str(ROOT / schema),
        ],
        input=value,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout.decode()


def test_librdkafka_and_protoc_read_the_topic(program: Program, relay: RelayProcess) -> None:
    with program.client() as api:
        member = enrol(api)
        earned = earn(api, member, "499.90")
    # Direct assignment: the embedded broker's consumer groups do not speak librdkafka's
    # group protocol; against Apache Kafka a subscribing group reads the same messages.
    consumer = Consumer(
        {
            "bootstrap.servers": relay.bootstrap,
            "group.id": "second-opinion",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(relay.topic, timeout=10).topics[relay.topic].partitions
        consumer.assign([TopicPartition(relay.topic, p, OFFSET_BEGINNING) for p in partitions])
        decoded = ""
        deadline = time.monotonic() + 30
        while f'transaction_id: "{earned["transaction_id"]}"' not in decoded:
            assert time.monotonic() < deadline, "the earn never reached the topic"
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if message.key() == member.encode():
                decoded = _protoc_decode(message.value())
    finally:
        consumer.close()
    assert 'type: "PointsEarned"' in decoded
    assert f'stream_id: "{member}"' in decoded
    assert "stream_version: 2" in decoded
    assert 'amount: "499.90"' in decoded
    assert "points: 499" in decoded


def test_librdkafka_and_protoc_read_the_tier_topic(
    program: Program, rules: RulesProcess, kafka_bootstrap: str
) -> None:
    with program.client() as api:
        member = enrol(api)
        earn(api, member, "5000.00")
    # The rules service may be working through other tests' bursts of earns first.
    with httpx.Client(
        base_url=rules.url, timeout=30, headers={"Authorization": f"Bearer {program.admin_key}"}
    ) as rules_api:
        deadline = time.monotonic() + 180
        while (tier := rules_api.get(f"/v1/members/{member}/tier")).status_code != 200 or (
            tier.json()["tier"] != "Silver"
        ):
            assert time.monotonic() < deadline, f"the rules service never placed {member}"
            time.sleep(0.2)
    topic = "loyalty.tiers.events.v1"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "second-opinion-tiers"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        decoded = ""
        deadline = time.monotonic() + 60
        while 'to_tier: "Silver"' not in decoded:
            assert time.monotonic() < deadline, "the TierChanged never reached the topic"
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if message.key() == member.encode():
                decoded = _protoc_decode(
                    message.value(),
                    "loyalty.rules.v1.TierEvent",
                    "proto/loyalty/rules/v1/tiers.proto",
                )
                headers = dict(message.headers() or [])
                assert headers["event_id"].decode() in decoded
        assert 'type: "TierChanged"' in decoded
        assert 'from_tier: "Bronze"' in decoded
        assert f'member_id: "{member}"' in decoded
    finally:
        consumer.close()
