"""streams/state.py send_batches() against the real broker: record batches per partition, in order, keyed
records where aiokafka's send() would put them, batches split when full, acknowledgements with offsets."""
import asyncio
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

import harness
from streams.state import acknowledged, send_batches


async def _send(topic: str, records, acked: list) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=harness.BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    # Batches of at most 1 kB, so 40 records of ~100 bytes need several per partition.
    producer = AIOKafkaProducer(bootstrap_servers=harness.BOOTSTRAP, acks="all", max_batch_size=1024)
    await producer.start()
    try:
        futures = await send_batches(producer, topic, records,
                                     lambda partition, items, base: acked.append((partition, items, base)))
        await acknowledged(futures)
        return len(futures)
    finally:
        await producer.stop()


def test_records_land_in_order_where_send_would_put_them(kafka):
    topic = f"sendbatch-{uuid.uuid4().hex[:8]}"
    records = [(None, f"k{i % 5}".encode(), b"v%02d-" % i + b"x" * 90) for i in range(40)]
    records.append((2, b"big", b"y" * 3000))  # larger than a batch: goes alone in one
    records.append((0, b"gone", None))  # a tombstone
    acked: list = []
    batches = asyncio.run(_send(topic, records, acked))

    partitioner = DefaultPartitioner()
    expected: dict[int, list] = {0: [], 1: [], 2: []}
    for partition, key, value in records:
        p = partitioner(key, [0, 1, 2], [0, 1, 2]) if partition is None else partition
        expected[p].append((key, value))
    got: dict[int, list] = {0: [], 1: [], 2: []}
    offsets: dict[tuple[int, int], tuple] = {}
    for m in harness.consume_all(topic, timeout=5.0):
        got[m.partition].append((m.key, m.value))
        offsets[(m.partition, m.offset)] = (m.key, m.value)
    assert got == expected
    assert sum(len(v) for v in got.values()) == 42
    # 40 records of ~100 bytes in 1 kB batches, over the partitions the keys hash to, and the big one alone:
    # more batches than partitions, one acknowledgement each, naming the offset of its first record.
    assert batches == len(acked) > 3
    for partition, items, base in acked:
        for i, item in enumerate(items):
            assert offsets[(partition, base + i)] == item
    assert sorted(len(items) for p, items, _ in acked if items[0][0] == b"big") == [1]
