"""Amazon Connect CTR and agent event stream adapter (fixtures written from the AWS data-model pages).

CTR fixture (tests/fixtures/adapters/connect_ctr.firehose, records back to back as Firehose writes them):
  1  VOICE, Queue Support enqueued 09:00:12, agent-0001 connected 09:00:30 (wait 18 s = Queue.Duration),
     2 holds totalling 40 s, ACW 09:05:30 -> 09:06:15 (45 s), disconnect 09:05:30, Attributes.resolved "true".
     Talk span 09:00:30 -> 09:05:30 = 300 s, so the holds are placed at 0 s and 150 s into it, 20 s each:
     09:00:30-09:00:50 and 09:03:00-09:03:20.
  2  CHAT, no EnqueueTimestamp but DequeueTimestamp 09:01:45 and Duration 45 -> enqueued 09:01:00;
     no agent -> abandoned at the dequeue time 09:01:45.
  3  VOICE, IVR only (Queue null) -> skipped "not_queued".
  4  TASK -> skipped "unsupported_channel".
  5  VOICE in the DescribeContact shape (QueueInfo/AgentInfo with Id only): queue "b1f1-billing",
     enqueued 09:07:05.500, agent-0002 connected 09:07:15.250, transfer completed and disconnect 09:10:00,
     no ACW field -> no wrapup_seconds.
"""
from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams import events as contract
from streams.adapters import AdapterError, Skip
from streams.adapters.connect import convert_agent_event, convert_ctr, read_connect_file
from streams.adapters.contactpulse import validate
from streams.ingest import connect_records

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "adapters"
T = 1772442000  # 2026-03-02T09:00:00Z
C1 = "c0ffee01-0000-4000-8000-000000000001"
C2 = "c0ffee01-0000-4000-8000-000000000002"
C5 = "c0ffee01-0000-4000-8000-000000000005"


def _s(ms: int) -> float:
    return (ms - T * 1000) / 1000


def test_ctr_fixture_maps_to_the_hand_listed_events():
    stats = Counter()
    got = [(e.event["type"], _s(e.event["ts"]), e.event["contact_id"], e.event["queue"], e.event["channel"],
            e.event.get("agent_id")) for e in read_connect_file(str(FIX / "connect_ctr.firehose"), stats)]
    assert got == [
        ("offered", 12, C1, "Support", "voice", None),
        ("answered", 30, C1, "Support", "voice", "agent-0001"),
        ("hold_started", 30, C1, "Support", "voice", "agent-0001"),
        ("hold_ended", 50, C1, "Support", "voice", "agent-0001"),
        ("hold_started", 180, C1, "Support", "voice", "agent-0001"),
        ("hold_ended", 200, C1, "Support", "voice", "agent-0001"),
        ("ended", 330, C1, "Support", "voice", "agent-0001"),
        ("offered", 60, C2, "Support", "chat", None),
        ("abandoned", 105, C2, "Support", "chat", None),
        ("offered", 425.5, C5, "b1f1-billing", "voice", None),
        ("answered", 435.25, C5, "b1f1-billing", "voice", "agent-0002"),
        ("transferred", 600, C5, "b1f1-billing", "voice", "agent-0002"),
        ("ended", 600, C5, "b1f1-billing", "voice", "agent-0002"),
    ]
    assert stats == Counter(records_mapped=3, not_queued=1, unsupported_channel=1)


def test_ctr_details_customer_wrapup_resolution_and_contract():
    events = list(read_connect_file(str(FIX / "connect_ctr.firehose")))
    ended1 = next(e.event for e in events if e.event["contact_id"] == C1 and e.event["type"] == "ended")
    assert ended1["wrapup_seconds"] == 45.0 and ended1["resolved"] is True
    assert ended1["customer"] == {"phone": "+37120000001"}
    ended5 = next(e.event for e in events if e.event["contact_id"] == C5 and e.event["type"] == "ended")
    assert "wrapup_seconds" not in ended5 and "resolved" not in ended5
    assert "customer" not in events[7].event  # the chat had no customer endpoint
    ids = [e.event["event_id"] for e in events]
    assert len(set(ids)) == len(ids) == 13
    assert ids == [e.event["event_id"] for e in read_connect_file(str(FIX / "connect_ctr.firehose"))]
    for em in events:
        assert validate("contact", em.event, now=T + 3600) is None, em.event
    # The worker's hold accounting over the synthetic holds gives back the CTR's totals exactly.
    from streams.contacts import hold_time

    marks = [[e.event["ts"] / 1000, 1 if e.event["type"] == "hold_started" else -1]
             for e in events if e.event["type"] in ("hold_started", "hold_ended")]
    assert hold_time(marks, end=T + 330) == (40.0, 2)


def test_ctr_edge_cases():
    base = {"ContactId": "x-1", "Channel": "VOICE",
            "Queue": {"Name": "Sales", "EnqueueTimestamp": "2026-03-02T09:00:00Z"},
            "Agent": {"ARN": "arn:aws:connect:r:1:instance/i/agent/ag-9",
                      "ConnectedToAgentTimestamp": "2026-03-02T09:00:10Z", "NumberOfHolds": 3,
                      "CustomerHoldDuration": 500},
            "DisconnectTimestamp": "2026-03-02T09:01:10Z"}
    out = convert_ctr(base)
    holds = [(e.event["type"], _s(e.event["ts"])) for e in out if e.event["type"].startswith("hold")]
    # 3 holds claimed to last 500 s inside a 60 s talk: clamped to 20 s slots, never overlapping.
    assert holds == [("hold_started", 10), ("hold_ended", 30), ("hold_started", 30), ("hold_ended", 50),
                     ("hold_started", 50), ("hold_ended", 70)]
    assert isinstance(convert_ctr({**base, "Channel": "TASK"}), Skip)
    mapped = convert_ctr({**base, "Channel": "TASK"}, channel_map={"TASK": "email"})
    assert {e.event["channel"] for e in mapped} == {"email"}
    # An update before the contact ended: no ended event yet.
    open_ = convert_ctr({**base, "DisconnectTimestamp": None})
    assert [e.event["type"] for e in open_][-1] != "ended"
    # Unanswered but transferred out of the queue: transferred, not abandoned.
    xfer = convert_ctr({**base, "Agent": None, "TransferCompletedTimestamp": "2026-03-02T09:00:40Z"})
    assert [e.event["type"] for e in xfer] == ["offered", "transferred"]
    for bad, reason in [({**base, "ContactId": None}, "missing_field"),
                        ({**base, "Channel": None}, "missing_field"),
                        ({**base, "Queue": {"Name": "S", "EnqueueTimestamp": "2026-03-02 09:00:00"}}, "bad_timestamp"),
                        ({**base, "Agent": {"ConnectedToAgentTimestamp": "2026-03-02T09:00:10Z"}}, "missing_field"),
                        ("not an object", "not_an_object")]:
        with pytest.raises(AdapterError) as info:
            convert_ctr(bad)
        assert info.value.reason == reason


def test_agent_event_stream_states():
    stats = Counter()
    got = [(e.kind, e.event["type"], _s(e.event["ts"]), e.event["agent_id"], e.event["state"], e.event["queues"])
           for e in read_connect_file(str(FIX / "connect_agent_events.jsonl"), stats)]
    q = ["Support", "Billing"]  # the agent's own queue has no Name and is left out
    assert got == [
        ("agent", "state", -60, "agent-0001", "available", q),           # LOGIN, ROUTABLE, no contact
        ("agent", "state", 30, "agent-0001", "on_contact", q),           # contact CONNECTED
        ("agent", "state", 330, "agent-0001", "after_contact_work", q),  # contact ENDED = ACW
        ("agent", "state", 375, "agent-0001", "away", q),                # CUSTOM status "Break"
        ("agent", "state", 600, "agent-0001", "logged_out", q),          # LOGOUT
    ]
    assert stats == Counter(records_mapped=5, heartbeat=1)
    with pytest.raises(AdapterError):
        convert_agent_event({"EventType": "STATE_CHANGE", "EventTimestamp": "2026-03-02T09:00:00Z"})
    with pytest.raises(AdapterError):
        convert_agent_event({"EventType": "SOMETHING", "EventId": "e"})


def test_firehose_http_delivery_envelope():
    text = (FIX / "connect_ctr.firehose").read_text()
    half = len(text) // 2
    cut = text.index('{"AWSAccountId"', half)  # split between two records
    body = {"requestId": "req-1", "timestamp": 1772442400000,
            "records": [{"data": base64.b64encode(text[:cut].encode()).decode()},
                        {"data": base64.b64encode(text[cut:].encode()).decode()}]}
    records = connect_records(body)
    assert [r["ContactId"][-1] for r in records] == ["1", "2", "3", "4", "5"]
    with pytest.raises(AdapterError):
        connect_records({"records": [{"data": "%%% not base64"}]})
    assert connect_records({"ContactId": "a"}) == [{"ContactId": "a"}]
    assert orjson.loads(orjson.dumps(records[0]))["Channel"] == "VOICE"
    assert isinstance(contract.parse_ts("2026-03-02T09:00:00Z"), float)
