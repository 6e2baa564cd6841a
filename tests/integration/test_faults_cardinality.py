"""Issue 6: label cardinality is bounded by configuration; what overflows is counted, never exported."""
import time

import pytest

from harness import Worker, create_topics, event, produce

pytestmark = pytest.mark.broker


def test_queue_and_agent_budgets(worker_factory):
    # One partition, so the per-partition budgets are the whole budget: 2 queues, 2 agents.
    w: Worker = worker_factory(partitions=1, max_queues=2, max_agents=2, interval_seconds=3600)
    create_topics(w.prefix, 1)
    w.start()
    T = time.time() - 120

    def contact(cid, queue, agent, t):
        return [event("offered", cid, t, queue=queue), event("answered", cid, t + 4, queue=queue, agent_id=agent),
                event("ended", cid, t + 40, queue=queue, agent_id=agent, wrapup_seconds=5)]

    events = (contact("c1", "q1", "a1", T) + contact("c2", "q1", "a2", T + 1) + contact("c3", "q1", "a3", T + 2)
              + contact("c4", "q2", "a4", T + 3)  # q2 fits the queue budget; a4 does not fit the agent budget
              + contact("c5", "q3", "a1", T + 4) + contact("c6", "q4", "a1", T + 5))  # q3, q4: past max_queues
    produce(w.prefix + "contact-events", events)
    # 18 events: c1-c4 accepted (12); c5 and c6 rejected, all 3 events each (6).
    m = w.wait_for(lambda m: sum(m.series("contactpulse_events_accepted_total").values()) == 12
                   and sum(m.series("contactpulse_events_rejected_total").values()) == 6, what="18 events")
    assert m.get1("contactpulse_events_rejected_total", topic="contact-events", reason="queue_budget_exceeded") == 6
    # Counted: 6 events with a queue past the budget; 2 handled contacts (c3 by a3, c4 by a4) whose agent
    # was past it -- summed under agent="__overflow__".
    assert m.get1("contactpulse_label_overflow_total", topic="contact-events", label="queue") == 6
    assert m.get1("contactpulse_label_overflow_total", topic="contact-events", label="agent") == 2
    # Not exported: no series carries q3, q4, a3 or a4; queue and agent labels stay within the budgets.
    queues = {dict(labels)["queue"] for (_, labels) in m if "queue" in dict(labels)}
    agents = {dict(labels)["agent"] for (_, labels) in m if "agent" in dict(labels)}
    assert queues == {"q1", "q2"}
    assert agents == {"a1", "a2", "__overflow__"}
    # The overflow is still in the queue's numbers: q1 handled 3 contacts (a1, a2 and a3 under __overflow__).
    assert m.get1("contactpulse_contacts_handled", queue="q1", channel="voice", window="today") == 3
