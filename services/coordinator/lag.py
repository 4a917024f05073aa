"""Consumer lag per group and topic: the end offset minus the group's committed offset,
summed over partitions. Read with a plain consumer's ``committed()`` (it fetches a group's
offsets without joining the group), which works on any Kafka-compatible broker."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.platform.topics import Topics


#: Which group reads which topics (the services' ``consumer_options`` group ids).
def consumer_groups(topics: Topics) -> dict[str, list[str]]:
    return {
        "schoolmig-ingest": [topics.ingest],
        "schoolmig-transform": topics.raw_topics,
        "schoolmig-loader": topics.rows_topics,
        "schoolmig-loader-quarantine": [topics.quarantine],
        "schoolmig-validator": [topics.validate_commands],
        "schoolmig-coordinator": [topics.events],
        "schoolmig-coordinator-commands": [topics.operator_commands],
    }


async def consumer_lag(bootstrap: str, groups: dict[str, list[str]]) -> dict[tuple[str, str], int]:
    lag: dict[tuple[str, str], int] = {}
    for group, names in groups.items():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await _end_offsets(consumer, names)
            for tp in ends:
                committed = await consumer.committed(tp)
                lag[(group, tp.topic)] = lag.get((group, tp.topic), 0) + max(ends[tp] - (committed or 0), 0)
        finally:
            await consumer.stop()
    return lag


async def high_waters(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    """Each partition's end offset (high-water mark) of these topics, as the broker has them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return {(tp.topic, tp.partition): offset for tp, offset in (await _end_offsets(consumer, names)).items()}
    finally:
        await consumer.stop()


async def _end_offsets(consumer: AIOKafkaConsumer, names: list[str]) -> dict[TopicPartition, int]:
    """Each partition's end offset of these topics (those the broker has), by partition, in order."""
    await consumer.topics()  # metadata for every topic
    partitions = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
    return await consumer.end_offsets(partitions) if partitions else {}
