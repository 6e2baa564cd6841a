"""Faust's delivery anomalies around rebalances, fuzzed: the in-order guard (streams/ordering.py) turns any
of them into the in-order result.

hypothesis drives a partition's delivery the way Faust misbehaves (faust-streaming #221, #216, #596):
messages skipped (and acknowledged, so never redelivered), a prefetched message handed over far ahead of
the position, seeks back that redeliver what was already applied, in batches of any size. Every batch
goes through InOrder.fill() (which reads holes back from "Kafka", here the partition's log) and the
contact processor; at the end the idle check InOrder.behind() picks up a skipped tail. The table must be
exactly the table of the plain in-order run. Without the guard the same deliveries lose events; the last
test shows one such case.
"""
from __future__ import annotations

import asyncio

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from streams.config import load_settings
from streams.contacts import ContactProcessor
from streams.ordering import InOrder
from streams.pipeline import Message

T0 = 1_795_000_100.0
NOW = T0 + 1000
TOPIC = "contact-events"


def log_of(n_contacts: int) -> list[Message]:
    out = []
    for n in range(n_contacts):
        cid = f"c{n}"
        for i, (etype, dt) in enumerate((("offered", n), ("answered", n + 7 + n % 13), ("ended", n + 60))):
            ev = {"event_id": f"{cid}-{i}", "type": etype, "ts": int((T0 + dt) * 1000), "contact_id": cid,
                  "queue": "sales", "channel": "voice", "agent_id": "a1"}
            out.append(Message(TOPIC, 0, len(out), cid.encode(), orjson.dumps(ev)))
    return out


class FakeKafka(InOrder):
    """InOrder reading holes from an in-memory partition log instead of a broker."""

    def __init__(self, table, log):
        super().__init__("unused:9092", table)
        self.log = log

    async def fetch(self, topic, partition, start, end):
        out = [m for m in self.log if start <= m.offset < end]
        self.filled += len(out)
        return out

    async def _log_start(self, topic, partition):
        return 0

    async def _end_offsets(self, topic, partitions):
        return {p: len(self.log) for p in partitions}


def deliveries(n: int):
    """A Faust-like delivery of offsets 0..n-1: next / skip k / prefetch ahead / seek back."""
    step = st.one_of(st.just(("next", 0)), st.tuples(st.just("skip"), st.integers(1, 6)),
                     st.tuples(st.just("ahead"), st.integers(2, 12)), st.tuples(st.just("back"), st.integers(1, 9)))

    @st.composite
    def build(draw):
        out, pos = [], 0
        for op, k in draw(st.lists(step, min_size=1, max_size=3 * n)):
            if pos >= n:
                break
            if op == "next":
                out.append(pos)
                pos += 1
            elif op == "skip":
                pos += k  # Faust skipped and acknowledged them: never delivered again
            elif op == "ahead" and pos + k < n:
                out.append(pos + k)  # a prefetched message, then the stream goes on from pos
            elif op == "back":
                pos = max(0, pos - k)  # a seek back: redelivery of what came before
        return out
    return build()


def run(log, offsets, batch_sizes, guard: bool = True) -> dict:
    table: dict = {}
    proc = ContactProcessor(load_settings(env={}), table, clock=lambda: NOW)
    in_order = FakeKafka(table, log)

    async def go():
        i, k = 0, 0
        while i < len(offsets):
            size = batch_sizes[k % len(batch_sizes)]
            batch = [log[o] for o in offsets[i:i + size]]
            i, k = i + size, k + 1
            proc.process_batch(await in_order.fill(batch) if guard else batch)
        if guard:
            while tail := await in_order.behind(TOPIC, {0}, limit=4):  # the idle check, until caught up
                proc.process_batch(tail)
    asyncio.run(go())
    return table


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_contacts=st.integers(1, 8), data=st.data())
def test_any_faust_delivery_anomaly_gives_the_in_order_result(n_contacts, data):
    log = log_of(n_contacts)
    offsets = data.draw(deliveries(len(log)))
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    assert run(log, offsets, sizes) == run(log, list(range(len(log))), [len(log)])


def test_without_the_guard_a_prefetched_message_loses_the_ones_before_it():
    # c0 and c1: offsets 0-5. Faust hands over offset 4 (c1 answered) first, then 0..5 after its seek
    # back. Unguarded, the partition's watermark is at 4 when 0-3 arrive: they look like replays and are
    # dropped -- c0 is never counted. Guarded, 0-3 are read back first and everything counts once.
    log = log_of(2)
    anomalous = [4, 0, 1, 2, 3, 4, 5]
    expected = run(log, list(range(6)), [6])
    unguarded = run(log, anomalous, [1], guard=False)
    assert unguarded != expected
    assert sum(unguarded["0|s"]["acc"].values()) == 2  # offsets 4 and 5 only; 0-3 lost
    assert run(log, anomalous, [1]) == expected
    assert sum(expected["0|s"]["acc"].values()) == 6
