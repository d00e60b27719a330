"""Rewinding a consumer group: its committed offsets to the start of a topic."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata


async def rewind(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Commit the earliest offset of every partition of ``topic`` for ``group``.

    The group must have no running members (stop its consumers first): Kafka refuses
    commits from outside an active group. Returns the offset set per partition.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        earliest = await consumer.beginning_offsets(assigned)
        await consumer.commit(
            {tp: OffsetAndMetadata(offset, "") for tp, offset in earliest.items()}
        )
        return {tp.partition: offset for tp, offset in earliest.items()}
    finally:
        await consumer.stop()
