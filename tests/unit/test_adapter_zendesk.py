"""Zendesk ticket event webhooks (fixture written from the Zendesk "Ticket events" webhook reference).

tests/fixtures/adapters/zendesk_webhooks.json, ticket 35436 (group 360001, priority HIGH, via email, requester 9001):
   1 09:00:00 ticket.created                          -> created
   2 09:00:00 comment by the requester (public)       -> message customer public
   3 09:00:02 comment by user -1 (auto-acknowledgement trigger) -> message system
   4 09:20:00 agent_assignment_changed to 7001        -> assigned 7001
   5 09:25:00 private note by staff 7001              -> message agent, public false
   6 09:30:00 public reply by staff 7001              -> message agent, public true (the first response)
   7 09:30:00 status OPEN -> SOLVED by 7001           -> solved by agent
   8 03-03 10:00 SOLVED -> OPEN by the requester      -> reopened
   9 03-03 10:30 OPEN -> PENDING                      -> skipped not_mapped
  10 03-07 10:30 PENDING -> SOLVED by -1 (automation) -> solved auto
  11 03-11 10:30 SOLVED -> CLOSED by -1               -> closed
  12 priority_changed                                 -> skipped not_mapped
  13 user.created                                     -> skipped not_mapped
  14 ticket 35437 created via native_messaging, no group, no priority -> queue unassigned, messaging, normal
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.adapters import AdapterError, Skip
from streams.adapters.contactpulse import validate
from streams.adapters.zendesk import ZendeskAdapter

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "adapters" / "zendesk_webhooks.json"


def _rows(adapter, bodies):
    out = []
    for body in bodies:
        got = adapter.convert(body)
        if isinstance(got, Skip):
            out.append(("skip", got.reason))
            continue
        (em,) = got
        e = em.event
        extra = {k: e[k] for k in ("author_type", "public", "agent_id", "solved_by") if k in e}
        out.append((e["type"], e["ts"] // 1000, e["ticket_id"], e["queue"], e["channel"], e["priority"], extra))
    return out


def test_fixture_maps_to_the_hand_listed_ticket_events():
    bodies = json.loads(FIX.read_text())
    q, ch, p = "group-360001", "email", "high"
    t0 = 1772442000  # 2026-03-02T09:00:00Z
    assert _rows(ZendeskAdapter(), bodies) == [
        ("created", t0, "35436", q, ch, p, {}),
        ("message", t0, "35436", q, ch, p, {"author_type": "customer", "public": True}),
        ("message", t0 + 2, "35436", q, ch, p, {"author_type": "system", "public": True}),
        ("assigned", t0 + 1200, "35436", q, ch, p, {"agent_id": "7001"}),
        ("message", t0 + 1500, "35436", q, ch, p, {"author_type": "agent", "public": False, "agent_id": "7001"}),
        ("message", t0 + 1800, "35436", q, ch, p, {"author_type": "agent", "public": True, "agent_id": "7001"}),
        ("solved", t0 + 1800, "35436", q, ch, p, {"solved_by": "agent"}),
        ("reopened", t0 + 86400 + 3600, "35436", q, ch, p, {}),
        ("skip", "not_mapped"),
        ("solved", t0 + 5 * 86400 + 5400, "35436", q, ch, p, {"solved_by": "auto"}),
        ("closed", t0 + 9 * 86400 + 5400, "35436", q, ch, p, {}),
        ("skip", "not_mapped"),
        ("skip", "not_mapped"),
        ("created", t0 + 2400, "35437", "unassigned", "messaging", "normal", {}),
    ]


def test_ids_customer_contract_and_options():
    bodies = json.loads(FIX.read_text())
    events = [em for b in bodies for em in (lambda r: [] if isinstance(r, Skip) else r)(ZendeskAdapter().convert(b))]
    assert all(em.kind == "ticket" and em.event["customer"] == {"id": "9001"} for em in events)
    ids = [em.event["event_id"] for em in events]
    assert len(set(ids)) == len(ids) == 11
    assert ids == [em.event["event_id"] for b in bodies
                   for em in (lambda r: [] if isinstance(r, Skip) else r)(ZendeskAdapter().convert(b))]
    for em in events:
        assert validate("ticket", em.event, now=1772442000 + 10 * 86400, max_age=30 * 86400) is None, em.event
    named = ZendeskAdapter(group_names={"360001": "Billing"}, bot_author_ids=frozenset({"9001"}))
    first_comment = named.convert(bodies[1])[0].event
    assert first_comment["queue"] == "Billing" and first_comment["author_type"] == "bot"


def test_errors_and_unassignment():
    a = ZendeskAdapter()
    body = json.loads(FIX.read_text())[0]
    for bad, reason in [({**body, "id": None}, "missing_field"), ({**body, "time": "2026-03-02 09:00"}, "bad_timestamp"),
                        ({**body, "detail": None}, "missing_field"), ({"id": "x"}, "missing_field"),
                        ({**body, "type": "zen:event-type:ticket.comment_added", "event": {}}, "missing_field")]:
        with pytest.raises(AdapterError) as info:
            a.convert(bad)
        assert info.value.reason == reason
    unassigned = {**body, "type": "zen:event-type:ticket.agent_assignment_changed",
                  "event": {"current": None, "previous": "7001"}}
    assert a.convert(unassigned) == Skip("unassigned")
