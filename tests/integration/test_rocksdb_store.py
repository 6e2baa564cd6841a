"""store=rocksdb:// (issue 7, large state): the tables live in RocksDB on the worker's disk, so a restart
reads only the changelog records written after the local copy — proven here by deleting every changelog
record before the restart: the numbers must survive on the local database alone. A kill -9 afterwards must
still lose nothing and count nothing twice (the database never runs ahead of the changelog)."""
import asyncio
import shutil
import time

import pytest

import harness
from harness import Worker, create_topics, event, produce

pytestmark = pytest.mark.broker
pytest.importorskip("rocksdict", reason="store=rocksdb:// needs `pip install rocksdict`")

TABLES = ("contacts", "repeats", "surveys", "tickets", "agents")
# A killed worker's group membership ends after the session timeout; 6 s keeps the restart short.
FAST_REJOIN = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "0.5"}


async def _empty_changelogs(app_id: str, partitions: int) -> int:
    """Delete every record of the tables' changelogs; returns how many there were."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    tps = [TopicPartition(f"{app_id}-{t}-changelog", p) for t in TABLES for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=harness.BOOTSTRAP, group_id=None)
    await consumer.start()
    try:
        start, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=harness.BOOTSTRAP)
    await admin.start()
    try:  # Kafka deletes records of compacted topics only when "delete" is among the cleanup policies
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs={"cleanup.policy": "compact,delete"})
                                   for name in {tp.topic for tp in tps}])
        await admin.delete_records({tp: RecordsToDelete(end[tp]) for tp in tps if end[tp] > start[tp]})
    finally:
        await admin.close()
    return sum(end[tp] - start[tp] for tp in tps)


def numbers(m: harness.Metrics) -> dict:
    V = dict(queue="sales", channel="voice", window="today")
    return {"offered": m.get1("contactpulse_contacts_offered", **V),
            "within20": m.get1("contactpulse_contacts_answered_within", threshold="20", **V),
            "wait_sum": m.get1("contactpulse_answer_wait_seconds_sum", **V),
            "waiting": m.get1("contactpulse_contacts_waiting", queue="sales", channel="voice"),
            "accepted": sum(v for lv, v in m.series("contactpulse_events_accepted_total").items()
                            if dict(lv)["topic"] == "contact-events"),
            "duplicates": m.get1("contactpulse_events_duplicate_total", topic="contact-events")}


def test_rocksdb_state_survives_restart_without_changelog_and_a_kill(kafka):
    w = Worker(partitions=2, store="rocksdb://", **harness.quiet_clock())
    create_topics(w.prefix, 2)
    try:
        w.env.update(FAST_REJOIN)
        w.start(timeout=90)
        t0 = time.time() - 300
        # 6 contacts answered after 4, 8, ..., 24 s (within 20 s: the first 5), 2 still waiting.
        events = [e for i in range(6) for e in (event("offered", f"c{i}", t0 + i),
                                               event("answered", f"c{i}", t0 + i + 4 * (i + 1), agent_id="a1"))]
        events += [event("offered", "w1", t0 + 50), event("offered", "w2", t0 + 60)]
        produce(w.prefix + "contact-events", events)
        # By hand: offered 6, within 20 s 5, wait 4+8+12+16+20+24 = 84 s, waiting 2, accepted 12 + 2 = 14.
        first = {"offered": 6, "within20": 5, "wait_sum": 84, "waiting": 2, "accepted": 14, "duplicates": 0}
        w.wait_for(lambda m: numbers(m) == first, 30, f"{first}")
        w.stop()  # SIGTERM

        # Every changelog record gone: only the local RocksDB copy can bring the numbers back, and they are
        # there at the first scrape once the worker is ready (nothing was read back from the input topic).
        assert asyncio.run(_empty_changelogs(w.app_id, 2)) > 0
        w.start(timeout=90)
        m = w.metrics()
        assert numbers(m) == first
        assert m.get1("contactpulse_messages_read_back_total") in (None, 0)

        # Live on top of the restored state: w1 answered after 30 s, c0's answer delivered again.
        produce(w.prefix + "contact-events", [event("answered", "w1", t0 + 80, agent_id="a1"), events[1]])
        second = {"offered": 7, "within20": 5, "wait_sum": 114, "waiting": 1, "accepted": 15, "duplicates": 1}
        w.wait_for(lambda m: numbers(m) == second, 30, f"{second}")

        # kill -9 right after more events: nothing lost, nothing twice (w2 answered after 10 s, c9 offered).
        produce(w.prefix + "contact-events", [event("answered", "w2", t0 + 70, agent_id="a1"),
                                              event("offered", "c9", t0 + 90)])
        third = {"offered": 8, "within20": 6, "wait_sum": 124, "waiting": 1, "accepted": 17, "duplicates": 1}
        w.wait_for(lambda m: numbers(m) == third, 30, f"{third}")
        w.kill()
        w.start(timeout=90)
        assert numbers(w.wait_for(lambda m: numbers(m) == third, 20, f"{third} after kill -9")) == third
    finally:
        w.stop()
        shutil.rmtree(w.data_dir, ignore_errors=True)
