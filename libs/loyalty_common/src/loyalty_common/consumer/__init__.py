"""The consumer base for the services that follow Kafka topics (rules, notifier).

``EventConsumer`` applies each message once per consumer group: the handler runs in the
transaction that records the event id in ``consumer_inbox``, and the offset is committed
after that transaction. Failures retry per ``RetryPolicy``, then go to a dead-letter
topic, and the key's later events are held back (``consumer_blocked_keys``) until an
operator unblocks it; see ``loyalty_common.consumer.inbox`` for how.

    consumer = EventConsumer(pool=pool, handler=handle, topics=["loyalty.ledger.events.v1"],
                             group="rules-tiers", bootstrap=settings.kafka_bootstrap_servers)
    await consumer.run()     # until consumer.stop() from a signal handler or lifespan

Services add ``INBOX_DDL`` to their migrations.
"""

from loyalty_common.consumer.inbox import (
    INBOX_DDL,
    BlockedKey,
    blocked_keys,
    unblock,
)
from loyalty_common.consumer.policy import (
    FailureTally,
    Message,
    MissingEventIdError,
    RetryPolicy,
    dead_letter_headers,
    held_back_headers,
)
from loyalty_common.consumer.runner import EventConsumer, EventIdOf, Handler

__all__ = [
    "INBOX_DDL",
    "BlockedKey",
    "EventConsumer",
    "EventIdOf",
    "FailureTally",
    "Handler",
    "Message",
    "MissingEventIdError",
    "RetryPolicy",
    "blocked_keys",
    "dead_letter_headers",
    "held_back_headers",
    "unblock",
]
