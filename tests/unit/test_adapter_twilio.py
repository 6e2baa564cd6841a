"""Twilio TaskRouter adapter (fixture written from the TaskRouter Events reference and Event Streams).

tests/fixtures/adapters/twilio_taskrouter.json, T = 1772442000 (2026-03-02T09:00:00Z), in order:
  EV01 T-10  worker.activity.update WK0001 Available      -> agent available
  EV02 T     task.created WT0001 (voice, no queue yet)    -> skipped "no_queue_yet"
  EV03 T+1   task-queue.entered WT0001 Support            -> offered (customer from attributes.from)
  EV04 T+5   reservation.created                          -> skipped "not_mapped"
  EV05 T+13  reservation.accepted WT0001 by WK0001        -> answered (wait 12 s)
  EV06 T+60  worker.activity.update WK0002 Break          -> agent away
  EV07 T+100 task.created WT0002 chat/whatsapp in Support -> offered, channel messaging
  EV08 T+100 task-queue.entered WT0002 Support            -> offered with the SAME event_id as EV07
  EV09 T+160 task.canceled WT0002 (no queue in payload)   -> abandoned in the remembered queue Support
  EV10 T+200 task.wrapup WT0001                           -> skipped (wrap-up start remembered)
  EV11 T+230 task.completed WT0001                        -> ended at T+200, wrapup_seconds 30, agent WK0001
  EV12 T+900 worker.activity.update WK0001 Offline        -> agent logged_out
  EV13 09:05 CloudEvent task-queue.entered WT0003 Sales   -> offered at T+300
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest

from streams.adapters import AdapterError, Skip
from streams.adapters.contactpulse import validate
from streams.adapters.twilio import TwilioAdapter

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "adapters" / "twilio_taskrouter.json"
T = 1772442000


def _run(adapter, bodies):
    out = []
    for body in bodies:
        got = adapter.convert(body)
        if isinstance(got, Skip):
            out.append(("skip", got.reason))
        else:
            for em in got:
                e = em.event
                out.append((em.kind, e["type"], e["ts"] / 1000 - T,
                            e.get("contact_id") or e.get("agent_id"), e.get("queue") or e.get("state"),
                            e.get("channel"), e.get("agent_id") if em.kind == "contact" else None))
    return out


def test_fixture_maps_to_the_hand_listed_events():
    bodies = json.loads(FIX.read_text())
    assert _run(TwilioAdapter(), bodies) == [
        ("agent", "state", -10, "WK0001", "available", None, None),
        ("skip", "no_queue_yet"),
        ("contact", "offered", 1, "WT0001", "Support", "voice", None),
        ("skip", "not_mapped"),
        ("contact", "answered", 13, "WT0001", "Support", "voice", "WK0001"),
        ("agent", "state", 60, "WK0002", "away", None, None),
        ("contact", "offered", 100, "WT0002", "Support", "messaging", None),
        ("contact", "offered", 100, "WT0002", "Support", "messaging", None),
        ("contact", "abandoned", 160, "WT0002", "Support", "messaging", None),
        ("skip", "wrapup_remembered"),
        ("contact", "ended", 200, "WT0001", "Support", "voice", "WK0001"),
        ("agent", "state", 900, "WK0001", "logged_out", None, None),
        ("contact", "offered", 300, "WT0003", "Sales", "voice", None),
    ]


def test_ids_wrapup_customer_and_contract():
    bodies = json.loads(FIX.read_text())
    a = TwilioAdapter()
    results = [a.convert(b) for b in bodies]
    ev07, ev08 = results[6][0].event, results[7][0].event
    assert ev07["event_id"] == ev08["event_id"]  # the worker keeps one offered for the pair
    assert ev07["customer"] == {"phone": "+37120000012"}
    ended = results[10][0].event
    assert ended["wrapup_seconds"] == 30.0
    # A second adapter (a re-read, or a retry after a restart) produces the same ids.
    second = TwilioAdapter()
    again = [second.convert(b) for b in bodies]
    ids = [em.event["event_id"] for r in results if not isinstance(r, Skip) for em in r]
    ids_again = [em.event["event_id"] for r in again if not isinstance(r, Skip) for em in r]
    assert ids == ids_again and len(set(ids)) == len(ids) - 1  # minus the EV07/EV08 pair
    for r in results:
        if not isinstance(r, Skip):
            for em in r:
                assert validate(em.kind, em.event, now=T + 3600) is None, em.event


def test_without_memory_the_completion_degrades_as_documented():
    bodies = json.loads(FIX.read_text())
    fresh = TwilioAdapter()
    completed = bodies[10]
    assert fresh.convert(completed) == Skip("agent_unknown", "no WorkerSid and no remembered reservation for "
                                                             "this task")
    # reservation.completed names the worker: ended at completion time, same event_id as the remembered path.
    res_completed = {**completed, "EventType": "reservation.completed", "WorkerSid": "WK0001"}
    got = fresh.convert(res_completed)[0].event
    assert (got["type"], got["ts"], got["agent_id"], got["queue"]) == ("ended", (T + 230) * 1000, "WK0001",
                                                                       "unassigned")
    assert "wrapup_seconds" not in got
    remembered = TwilioAdapter()
    for b in bodies[:11]:
        last = remembered.convert(b)
    assert last[0].event["event_id"] == got["event_id"]


def test_form_encoded_callback_and_errors():
    body = json.loads(FIX.read_text())[4]  # reservation.accepted
    form = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(urlencode(body)).items()}
    got = TwilioAdapter().convert(form)
    assert got[0].event["type"] == "answered" and got[0].event["agent_id"] == "WK0001"
    a = TwilioAdapter()
    with pytest.raises(AdapterError) as info:
        a.convert({"EventType": "task.canceled", "Timestamp": str(T)})
    assert info.value.reason == "missing_field"
    with pytest.raises(AdapterError) as info:
        a.convert({"EventType": "task.canceled", "Timestamp": "yesterday", "TaskSid": "WT9"})
    assert info.value.reason == "bad_timestamp"
    with pytest.raises(AdapterError) as info:
        a.convert({"EventType": "task.canceled", "Timestamp": str(T), "TaskSid": "WT9",
                   "TaskChannelUniqueName": "voice", "TaskAttributes": "{not json"})
    assert info.value.reason == "malformed_json"
    assert a.convert({"EventType": "task.canceled", "Timestamp": str(T), "TaskSid": "WT9",
                      "TaskChannelUniqueName": "default"}).reason == "unknown_channel"
    with pytest.raises(AdapterError):
        a.convert(["not", "an", "object"])
    mapped = TwilioAdapter(activity_map={"Lunch": "away", "On a call": "on_contact"})
    got = mapped.convert({"EventType": "worker.activity.update", "Timestamp": str(T), "Sid": "EVx",
                          "WorkerSid": "WK9", "WorkerActivityName": "On a call"})
    assert got[0].event["state"] == "on_contact"
