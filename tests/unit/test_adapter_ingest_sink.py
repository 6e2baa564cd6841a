"""KafkaSink (streams/ingest.py) with a fake producer: when a retry re-sends and when it waits instead."""
from __future__ import annotations

import asyncio

import pytest

from streams.ingest import KafkaSink, KafkaUnavailable


class FakeProducer:
    def __init__(self, fail_start: bool = False):
        self.futures: list[asyncio.Future] = []
        self.fail_start = fail_start

    async def start(self):
        if self.fail_start:
            raise ConnectionError("refused")

    async def stop(self):
        pass

    async def send(self, topic, value, key=None):
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


def _item(eid: str):
    return [("t", b"k", b"{}", eid)]


async def test_pending_attempt_is_awaited_not_resent_and_failed_one_is_resent():
    prod = FakeProducer()
    sink = KafkaSink("x", producer_factory=lambda: prod)
    with pytest.raises(KafkaUnavailable, match="did not acknowledge"):
        await sink.deliver(_item("e1"), timeout=0.05)  # the broker does not answer in time
    assert sink.sends == 1
    with pytest.raises(KafkaUnavailable):
        await sink.deliver(_item("e1"), timeout=0.05)  # still pending: waits for it, sends nothing
    assert sink.sends == 1
    prod.futures[0].set_result("ack")  # the broker comes back and acknowledges the first attempt
    assert await sink.deliver(_item("e1"), timeout=0.05) == 0
    assert sink.sends == 1
    # A failed attempt (the producer gave up on it) is sent again by the next retry.
    task = asyncio.create_task(sink.deliver(_item("e2"), timeout=1))
    await asyncio.sleep(0.01)
    prod.futures[1].set_exception(RuntimeError("batch expired"))
    with pytest.raises(KafkaUnavailable, match="refused 1"):
        await task
    task = asyncio.create_task(sink.deliver(_item("e2"), timeout=1))
    await asyncio.sleep(0.01)
    prod.futures[2].set_result("ack")
    assert await task == 1 and sink.sends == 3


async def test_start_failure_is_unavailable_and_memory_is_bounded():
    sink = KafkaSink("x", producer_factory=lambda: FakeProducer(fail_start=True))
    with pytest.raises(KafkaUnavailable, match="cannot connect"):
        await sink.deliver(_item("e1"), timeout=0.5)
    prod = FakeProducer()
    sink = KafkaSink("x", producer_factory=lambda: prod, memory=3)
    for i in range(5):
        task = asyncio.create_task(sink.deliver(_item(f"e{i}"), timeout=1))
        await asyncio.sleep(0.01)
        prod.futures[-1].set_result("ack")
        await task
    assert list(sink._sent) == ["e2", "e3", "e4"]  # the oldest acknowledged ids are forgotten
    task = asyncio.create_task(sink.deliver(_item("e0"), timeout=1))  # forgotten: sent again
    await asyncio.sleep(0.01)
    prod.futures[-1].set_result("ack")
    assert await task == 1
