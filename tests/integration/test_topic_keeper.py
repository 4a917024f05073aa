"""Topics that vanish from a running broker (deleted, or lost with its data) are created
again by the services' periodic check, with the configured partitions, and the check is
harmless when every topic is there."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from shared.platform.kafka import ensure_topics, keep_topics
from shared.platform.settings import Settings
from shared.platform.topics import Topics


async def test_vanished_topics_are_created_again(settings: Settings) -> None:
    own = settings.model_copy(update={"topic_prefix": "it-keeper", "partitions": 2})
    topics = Topics.from_settings(own)
    await ensure_topics(own)
    admin = AIOKafkaAdminClient(bootstrap_servers=own.kafka_bootstrap_servers)
    await admin.start()
    try:
        gone = [topics.rows_topics[0], topics.quarantine]
        await admin.delete_topics(gone)
        assert not set(gone) & set(await admin.list_topics())
        await keep_topics(own)
        present = set(await admin.list_topics())
        assert set(topics.all()) <= present
        described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(gone)}
        assert described == dict.fromkeys(gone, 2)
        assert await ensure_topics(own) == []  # nothing missing: nothing created, nothing said
    finally:
        await admin.close()
