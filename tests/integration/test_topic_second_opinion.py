"""A client this project did not write reads the ledger topic, and protoc decodes the
messages from proto/ alone (not from the generated Python classes)."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.integration.conftest import Program, RelayProcess, earn, enrol, protoc_decode


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
                decoded = protoc_decode(message.value())
    finally:
        consumer.close()
    assert 'type: "PointsEarned"' in decoded
    assert f'stream_id: "{member}"' in decoded
    assert "stream_version: 2" in decoded
    assert 'amount: "499.90"' in decoded
    assert "points: 499" in decoded
