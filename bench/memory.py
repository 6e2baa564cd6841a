"""Bytes of worker state per open contact and per tracked customer (issue 7's memory figure).

    python bench/memory.py [--contacts 20000] [--customers 5000]

Runs the real contact and repeat processors in-process on plain dicts (the memory store keeps exactly
these Python objects) and measures the heap with tracemalloc:
  * per open contact: contacts offered and still waiting (their records are what grows with load);
  * per tracked customer: the repeat pipeline's customer histories (one contact each, then three each).
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.config import load_settings  # noqa: E402
from streams.contacts import ContactProcessor  # noqa: E402
from streams.pipeline import Message  # noqa: E402
from streams.repeats import RepeatProcessor  # noqa: E402


def offered(i: int, now: float, customer: int) -> Message:
    ev = {"event_id": f"e{i}", "type": "offered", "ts": int((now - 60) * 1000), "contact_id": f"c{i}",
          "queue": f"q{i % 8}", "channel": "voice", "customer": {"phone": f"+3712{customer:07d}"}}
    return Message("contact-events", 0, i, f"c{i}".encode(), orjson.dumps(ev))


def measure(fn) -> int:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = fn()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return after - before


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=20000)
    ap.add_argument("--customers", type=int, default=5000)
    args = ap.parse_args()
    settings = load_settings(env={})
    now = time.time()

    def open_contacts():
        table: dict = {}
        proc = ContactProcessor(settings, table, clock=lambda: now)
        outputs = []
        for start in range(0, args.contacts, 2000):
            batch = [offered(i, now, i) for i in range(start, min(args.contacts, start + 2000))]
            outputs += proc.process_batch(batch).outputs
        return table, outputs

    contact_bytes = measure(lambda: open_contacts()[0])
    table, outputs = open_contacts()
    print(f"open contacts: {args.contacts}, state {contact_bytes / 2**20:.1f} MiB = "
          f"{contact_bytes / args.contacts:,.0f} bytes per open contact")

    def customers(per_customer: int):
        repeat_table: dict = {}
        proc = RepeatProcessor(settings, repeat_table, clock=lambda: now)
        msgs = []
        for i in range(args.customers * per_customer):
            rec = {"k": "start", "c": f"c{i}", "t": now - 3600 + i % 3600, "q": f"q{i % 8}", "ch": "voice"}
            msgs.append(Message("contactpulse-customer-contacts", 0, i, f"cust{i % args.customers}".encode(),
                                orjson.dumps(rec)))
        for start in range(0, len(msgs), 2000):
            proc.process_batch(msgs[start:start + 2000])
        return repeat_table

    for per_customer in (1, 3):
        b = measure(lambda: customers(per_customer))
        print(f"tracked customers: {args.customers} with {per_customer} contact(s) each, state "
              f"{b / 2**20:.1f} MiB = {b / args.customers:,.0f} bytes per tracked customer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
