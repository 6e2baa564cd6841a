"""The simulator: deterministic per seed, and the centre's extra streams are consistent with its contacts."""
from datetime import datetime

from streams.simulator import QueueModel, simulate, simulate_centre

QUEUES = [QueueModel("sales", "voice", 2, 0.5)]


def ts(ev: dict) -> float:
    return datetime.fromisoformat(ev["ts"]).timestamp()


def test_same_seed_same_events_and_time_order():
    a = list(simulate(3, QUEUES, 1_795_000_000.0, max_contacts=50))
    b = list(simulate(3, QUEUES, 1_795_000_000.0, max_contacts=50))
    assert a == b
    assert [ts(e) for e in a] == sorted(ts(e) for e in a)
    assert sum(e["type"] == "offered" for e in a) == 50
    # every contact either waits forever (none here: the run drains) or ends its wait exactly once
    outcomes = [e["contact_id"] for e in a if e["type"] in ("answered", "abandoned")]
    assert len(outcomes) == len(set(outcomes)) == 50


def test_centre_adds_agent_states_surveys_and_tickets_in_time_order():
    items = list(simulate_centre(3, QUEUES, 1_795_000_000.0, ticket_rate=0.05, max_contacts=50))
    contacts = [e for topic, _, e in items if topic == "contact-events"]
    assert contacts == list(simulate(3, QUEUES, 1_795_000_000.0, max_contacts=50))  # same contacts
    assert [ts(e) for _, _, e in items] == sorted(ts(e) for _, _, e in items)
    states = [e for topic, _, e in items if topic == "agent-events"]
    # 2 agents start available; each answered contact puts its agent on_contact
    assert [e["state"] for e in states[:2]] == ["available", "available"]
    answered = sum(e["type"] == "answered" for e in contacts)
    assert sum(e["state"] == "on_contact" for e in states) == answered
    for topic, key, e in items:  # keys follow the contract: contact_id, agent_id, ticket_id
        assert key == {"contact-events": e.get("contact_id"), "survey-events": e.get("contact_id"),
                       "agent-events": e.get("agent_id"), "ticket-events": e.get("ticket_id")}[topic]
    last_contact = max(ts(e) for e in contacts)
    assert max(ts(e) for _, _, e in items) == last_contact  # nothing is produced beyond the traffic's end
