"""Topic names and their creation with explicit partition counts.

Faust tables need their changelog to have as many partitions as the source topic, so every input topic
is created up front with settings.partitions partitions (never by auto-creation).
"""
from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

CONTACT_EVENTS = "contact-events"
TICKET_EVENTS = "ticket-events"
AGENT_EVENTS = "agent-events"
SURVEY_EVENTS = "survey-events"
DEAD_LETTERS = "contactpulse-dead-letters"
INPUT_TOPICS = (CONTACT_EVENTS, TICKET_EVENTS, AGENT_EVENTS, SURVEY_EVENTS)
# Written and read only by the worker (re-partitioned streams); partitioned like the inputs.
CUSTOMER_CONTACTS = "contactpulse-customer-contacts"  # contact records keyed by customer hash (FCR)
INTERNAL_TOPICS = (CUSTOMER_CONTACTS,)


def names(prefix: str = "") -> list[str]:
    return [prefix + n for n in INPUT_TOPICS + INTERNAL_TOPICS + (DEAD_LETTERS,)]


async def ensure_topics(bootstrap: str, partitions: int, prefix: str = "", replication: int = 1,
                        timeout: float = 30.0) -> list[str]:
    """Create missing topics; fail loudly if an existing input topic has the wrong partition count."""
    inputs = {prefix + n for n in INPUT_TOPICS + INTERNAL_TOPICS}  # all need settings.partitions
    names = sorted(inputs) + [prefix + DEAD_LETTERS]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(n, partitions, replication) for n in missing])
            except TopicAlreadyExistsError:
                pass
        described = await admin.describe_topics([n for n in names if n in existing])
        wrong = [f"{d['topic']} has {len(d['partitions'])} partitions, expected {partitions}"
                 for d in described if d["topic"] in inputs and len(d["partitions"]) != partitions]
        if wrong:
            raise RuntimeError("partition counts do not match settings.partitions: " + "; ".join(wrong))
        return missing
    finally:
        await admin.close()
