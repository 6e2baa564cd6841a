"""What keeps the worker's memory and pauses in check: right-sized JSON bytes (streams/state.py json_bytes)
and full garbage collections on the worker's schedule (streams/gc_policy.py)."""
import gc
import tracemalloc

import orjson

from streams import gc_policy
from streams.state import json_bytes


def held_bytes(make) -> int:
    """Bytes still allocated by what make() returns, per item of it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        return (tracemalloc.get_traced_memory()[0] - before) // len(kept)
    finally:
        tracemalloc.stop()


def test_json_bytes_are_orjson_bytes_of_their_own_length():
    key = "3|c|pbx1-88121"
    assert json_bytes(key) == orjson.dumps(key) == b'"3|c|pbx1-88121"'
    assert json_bytes({"o": 7, "q": "sales"}) == b'{"o":7,"q":"sales"}'
    # 10,000 keys, as an expiry sends them: each held as 16 bytes of JSON plus the bytes object (~33 bytes)
    # and the list slot, not as the working buffer orjson may hand back (4 KiB with orjson 3.12 and later).
    per_key = held_bytes(lambda: [json_bytes(f"3|c|contact-{i:06d}") for i in range(10_000)])
    assert per_key < 100, per_key


def test_the_worker_takes_over_full_collections_only_when_asked():
    before = gc.get_threshold()
    try:
        assert gc_policy.configure(0) is False
        assert gc.get_threshold() == before  # 0: CPython's own policy, untouched
        assert gc_policy.configure(3600) is True
        assert gc.get_threshold() == (5000, 20, gc_policy.NEVER)
    finally:
        gc.set_threshold(*before)


def test_a_full_collection_is_counted_timed_and_frees_cycles():
    class Node:
        pass

    runs = gc_policy.FullCollections()
    gc.collect()
    for _ in range(100):  # 100 two-object cycles nothing refers to: only the cyclic collector frees them
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    pause = runs.run()
    assert runs.count == 1 and runs.seconds == pause > 0
    assert runs.collected >= 200  # the 200 Nodes (and their __dict__s)
