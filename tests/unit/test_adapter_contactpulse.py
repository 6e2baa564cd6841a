"""Our own JSON format: kinds, validation shared with the ingest endpoint, and replay pacing."""
from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from streams import replay
from streams.adapters import AdapterError, Emitted
from streams.adapters import contactpulse as own

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "adapters" / "contactpulse.jsonl"
NOW = 1772442000 + 3600


def test_jsonl_fixture_kinds_and_skips():
    stats = Counter()
    got = [(e.kind, e.event["event_id"]) for e in own.read_jsonl(str(FIX), stats)]
    assert got == [("contact", "cp-1"), ("contact", "cp-2"), ("contact", "cp-3"), ("ticket", "cp-5"),
                   ("agent", "cp-6"), ("contact", "cp-7")]
    assert stats == Counter(unknown_channel=1, malformed_json=1)  # cp-4 has channel "fax"


def test_body_shapes_and_kind_errors():
    ev = {"event_id": "e", "type": "offered", "ts": 1772442000000, "contact_id": "c", "queue": "q", "channel": "voice"}
    assert own.convert(ev) == [Emitted("contact", ev)]
    assert own.convert([ev, ev]) == [Emitted("contact", ev)] * 2
    assert own.convert({"events": [ev]}) == [Emitted("contact", ev)]
    with pytest.raises(AdapterError) as info:
        own.convert({"event_id": "e", "type": "offered"})
    assert info.value.reason == "unknown_kind"
    with pytest.raises(AdapterError):
        own.convert([ev, "not an object"])


@pytest.mark.parametrize("kind,event,reason", [
    ("contact", {"event_id": "e", "type": "offered", "ts": 1772442000000, "queue": "q", "channel": "voice",
                 "contact_id": None}, "missing_field"),
    ("contact", {"event_id": "e", "type": "answered", "ts": 1772442000000, "contact_id": "c", "queue": "q",
                 "channel": "voice"}, "missing_field"),  # answered needs agent_id
    ("contact", {"event_id": "e", "type": "offered", "ts": "2026-03-02T09:00:00", "contact_id": "c", "queue": "q",
                 "channel": "voice"}, "bad_timestamp"),  # naive time
    ("contact", {"event_id": "e", "type": "offered", "ts": 1000, "contact_id": "c", "queue": "q",
                 "channel": "voice"}, "too_old"),
    ("ticket", {"event_id": "e", "type": "created", "ts": 1772442000000, "ticket_id": "t", "queue": "q",
                "channel": "email", "priority": "critical"}, "wrong_type"),
    ("ticket", {"event_id": "e", "type": "message", "ts": 1772442000000, "ticket_id": "t", "queue": "q",
                "channel": "email", "author_type": "robot", "public": True}, "wrong_type"),
    ("ticket", {"event_id": "e", "type": "solved", "ts": 1772442000000, "ticket_id": "t", "queue": "q",
                "channel": "email"}, "missing_field"),
    ("ticket", {"event_id": "e", "type": "solved", "ts": 1772442000000, "ticket_id": "t", "queue": "q",
                "channel": "email", "solved_by": "magic"}, "wrong_type"),
    ("ticket", {"event_id": "e", "type": "assigned", "ts": 1772442000000, "ticket_id": "t", "queue": "q",
                "channel": "email"}, "missing_field"),
    ("ticket", {"event_id": "e", "type": "merged", "ts": 1772442000000, "ticket_id": "t", "queue": "q",
                "channel": "email"}, "unknown_type"),
    ("agent", {"event_id": "e", "type": "state", "ts": 1772442000000, "agent_id": "a", "queues": [],
               "state": "sleeping"}, "wrong_type"),
    ("agent", {"event_id": "e", "type": "state", "ts": 1772442000000, "queues": [], "state": "away"},
     "missing_field"),
])
def test_validation_reasons(kind, event, reason, monkeypatch):
    rej = own.validate(kind, event, NOW)
    assert rej is not None and rej.reason == reason
    # The fallback check (used until streams/events.py has the kind's parser) gives the same reason.
    monkeypatch.delattr("streams.events.parse_ticket", raising=False)
    monkeypatch.delattr("streams.events.parse_agent", raising=False)
    rej = own.validate(kind, event, NOW)
    assert rej is not None and rej.reason == reason


def test_valid_events_pass():
    assert own.validate("ticket", {"event_id": "e", "type": "solved", "ts": 1772442000000, "ticket_id": "t",
                                   "queue": "q", "channel": "email", "solved_by": "auto"}, NOW) is None
    assert own.validate("agent", {"event_id": "e", "type": "state", "ts": "2026-03-02T09:00:00Z", "agent_id": "a",
                                  "queues": ["q"], "state": "away"}, NOW) is None


class FakeProducer:
    def __init__(self):
        self.sent = []

    async def send(self, topic, value, key=None):
        self.sent.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_replay_pacing_keys_topics_and_rebase():
    events = replay.read_events(str(FIX), "contactpulse")
    # Sorted by event time: cp-1 09:00:05, cp-2 09:00:17, cp-7 09:01:30, cp-5 09:02:00, cp-6 09:03:00, cp-3 09:05:00
    assert [e.event["event_id"] for e in events] == ["cp-1", "cp-2", "cp-7", "cp-5", "cp-6", "cp-3"]
    now = [0.0]
    sleeps = []

    async def fake_sleep(d):
        sleeps.append(round(d, 6))
        now[0] += d

    prod = FakeProducer()
    counts = await replay.replay_to_kafka(events, "unused:9092", speed=10, producer=prod, sleep=fake_sleep,
                                          clock=lambda: now[0], topics={"ticket": "tickets-x"})
    # Gaps 12, 73, 30, 60, 120 s at 10x real time.
    assert sleeps == [1.2, 7.3, 3.0, 6.0, 12.0]
    assert counts == Counter(contact=4, ticket=1, agent=1)
    assert [(t, k) for t, k, _ in prod.sent] == [("contact-events", b"c-1"), ("contact-events", b"c-1"),
                                                 ("contact-events", b"c-2"), ("tickets-x", b"t-1"),
                                                 ("agent-events", b"a-7"), ("contact-events", b"c-1")]
    # Rebase for a max-speed replay: the last event lands at `now`, gaps and ids unchanged.
    moved = replay.rebase(events, 1800000000.0, None)
    assert moved[-1].event["ts"] == 1800000000000 and moved[0].event["ts"] == 1800000000000 - 295000
    assert [e.event["event_id"] for e in moved] == [e.event["event_id"] for e in events]
    paced = replay.rebase(events, 1800000000.0, 2.0)
    assert paced[0].event["ts"] == 1800000000000
