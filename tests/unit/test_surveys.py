"""Surveys: CSAT and "was it resolved?" joined to the rated contact, on plain dicts."""
import orjson

from metrics.fcr import SurveyCollector
from streams.config import load_settings
from streams.contacts import ContactProcessor
from streams.pipeline import Message
from streams.surveys import SurveyProcessor

T0 = 1_795_000_100.0  # 2026-11-18T11:08:20Z (40100 s after UTC midnight)
NOW = T0 + 3600


class Feed:
    def __init__(self, **kw):
        self.s = load_settings(env={}, **kw)
        self.contacts_table: dict = {}
        self.table: dict = {}
        self.contacts = ContactProcessor(self.s, self.contacts_table, clock=lambda: NOW)
        self.proc = SurveyProcessor(self.s, self.table, contacts=self.contacts_table, clock=lambda: NOW)
        self.offset = 0

    def contact(self, cid, queue="support", channel="chat", agent="a7"):
        evs = [{"event_id": f"{cid}-o", "type": "offered", "ts": int(T0 * 1000), "contact_id": cid,
                "queue": queue, "channel": channel},
               {"event_id": f"{cid}-a", "type": "answered", "ts": int((T0 + 5) * 1000), "contact_id": cid,
                "queue": queue, "channel": channel, "agent_id": agent}]
        self.contacts.process_batch([Message("contact-events", 0, i, cid.encode(), orjson.dumps(e))
                                     for i, e in enumerate(evs, start=len(self.contacts_table) * 10)])

    def survey(self, cid, ts=T0 + 600, key=None, **fields):
        self.offset += 1
        ev = {"event_id": fields.pop("event_id", f"{cid}-s{self.offset}"), "type": "survey",
              "ts": int(ts * 1000), "contact_id": cid, **fields}
        return Message("survey-events", 0, self.offset, cid.encode() if key is None else key, orjson.dumps(ev))

    def run(self, *msgs):
        return self.proc.process_batch(list(msgs))

    def day(self, queue="sales", channel="voice", ts=T0):
        return self.table.get(f"0|d|{int(ts - 40100)}|{queue}|{channel}")


def test_csat_satisfied_is_4_or_5_and_resolved_answers_count_apart():
    f = Feed()
    f.run(f.survey("c1", csat=5, queue="sales", channel="voice", agent_id="a1"),
          f.survey("c2", csat=4, resolved=True, queue="sales", channel="voice", agent_id="a1"),
          f.survey("c3", csat=3, resolved=False, queue="sales", channel="voice", agent_id="a2"),
          f.survey("c4", resolved=True, queue="sales", channel="voice"))
    # CSAT answers 5, 4, 3: 3 responses, 2 satisfied, score sum 12; resolved answers yes, no, yes: 3, 2 yes.
    d = f.day()
    assert (d["n"], d["sat"], d["score"], d["rn"], d["ry"]) == (3, 2, 12, 3, 2)
    a1 = f.table[f"0|g|{int(T0 - 40100)}|sales|a1"]
    assert (a1["n"], a1["sat"], a1["rn"], a1["ry"]) == (2, 2, 1, 1)
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for fam in SurveyCollector(f.s, f.table, lambda: None, clock=lambda: NOW).collect() for s in fam.samples}
    L = (("channel", "voice"), ("queue", "sales"), ("window", "today"))
    assert m[("contactpulse_csat_responses", L)] == 3
    assert m[("contactpulse_csat_satisfied", L)] == 2
    assert m[("contactpulse_csat_points", L)] == 12
    assert m[("contactpulse_survey_resolved_responses", L)] == 3
    assert m[("contactpulse_survey_resolved_yes", L)] == 2
    assert m[("contactpulse_agent_csat_satisfied", (("agent", "a2"), ("queue", "sales"), ("window", "today")))] == 0
    assert m[("contactpulse_events_accepted_total", (("topic", "survey-events"), ("type", "survey")))] == 4


def test_survey_without_queue_is_joined_to_its_contact_record():
    f = Feed()
    f.contact("c1", queue="support", channel="chat", agent="a7")
    result = f.run(f.survey("c1", csat=2), f.survey("ghost", csat=5))
    d = f.day(queue="support", channel="chat")
    assert (d["n"], d["sat"], d["score"]) == (1, 0, 2)
    assert f.table[f"0|g|{int(T0 - 40100)}|support|a7"]["n"] == 1
    # No queue and no contact record to take it from: rejected, not guessed.
    assert [r.reason for _, r in result.dead_letters] == ["unknown_contact"]


def test_duplicates_count_once_and_each_answer_once_per_contact():
    f = Feed()
    first = f.survey("c1", csat=5, queue="sales", channel="voice", event_id="s-1")
    again = first._replace(offset=2)  # the same event delivered again
    f.offset = 2
    f.run(first)
    f.run(again)
    f.run(f.survey("c1", csat=1, queue="sales", channel="voice"))  # a second CSAT answer: first wins
    f.run(f.survey("c1", csat=2, resolved=False, queue="sales", channel="voice"))  # only 'resolved' is new
    d = f.day()
    assert (d["n"], d["sat"], d["score"], d["rn"], d["ry"]) == (1, 1, 5, 1, 0)
    assert f.table["0|s"]["dup"] == 2 and f.table["0|s"]["acc"] == {"survey": 2}
    snapshot = orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS)
    f.run(first, again)  # replayed after a restart: offsets already applied change nothing
    assert orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS) == snapshot


def test_bad_surveys_are_rejected_with_reasons_and_wrong_keys_sent_again():
    f = Feed()
    result = f.run(f.survey("c1", csat=6, queue="sales", channel="voice"),
                   f.survey("c1", csat=True, queue="sales", channel="voice"),
                   f.survey("c1", queue="sales", channel="voice"),
                   f.survey("c1", csat=4, queue="sales"),
                   f.survey("c1", csat=4, queue="sales", channel="fax"),
                   f.survey("c1", csat=4, resolved="yes", queue="sales", channel="voice"))
    assert [r.reason for _, r in result.dead_letters] == [
        "wrong_type", "wrong_type", "missing_field", "missing_field", "unknown_channel", "wrong_type"]
    m = f.survey("c1", csat=4, queue="sales", channel="voice", key=b"other")
    result = f.run(m)
    assert result.outputs == [("survey-events", b"c1", m.value)] and f.day() is None


def test_agent_budget_sums_the_rest_under_overflow():
    f = Feed(max_agents=1)
    f.run(f.survey("c1", csat=5, queue="sales", channel="voice", agent_id="a1"),
          f.survey("c2", csat=2, queue="sales", channel="voice", agent_id="a2"),
          f.survey("c3", csat=4, queue="sales", channel="voice", agent_id="a3"))
    # a1 fits the budget of 1; a2 and a3 are summed under "__overflow__": 2 answers, 1 satisfied (the 4).
    day = int(T0 - 40100)
    assert (f.table[f"0|g|{day}|sales|a1"]["n"], f.table[f"0|g|{day}|sales|__overflow__"]["n"]) == (1, 2)
    assert f.table[f"0|g|{day}|sales|__overflow__"]["sat"] == 1
    assert f.table["0|s"]["agent_overflow"] == 2


def test_queue_budget_and_expiry():
    f = Feed(max_queues=1)
    result = f.run(f.survey("c1", csat=4, queue="q1", channel="voice"),
                   f.survey("c2", csat=4, queue="q2", channel="voice"))
    assert [r.reason for _, r in result.dead_letters] == ["queue_budget_exceeded"]
    # Day counts and survey records are kept for the 7-day window plus a day (8 days after their day).
    # c1's record (answered T0 + 600) goes 8 days later; the q1 day bucket when its day (which ends at
    # T0 + 46300) is 8 days over.
    assert f.proc.expire(None, now=T0 + 600 + 8 * 86400) == 0
    assert f.proc.expire(None, now=T0 + 600 + 8 * 86400 + 1) == 1 and "0|r|c1" not in f.table
    assert f.proc.expire(None, now=T0 + 46300 + 8 * 86400) == 0
    assert f.proc.expire(None, now=T0 + 46300 + 8 * 86400 + 1) == 1 and f.day(queue="q1") is None


def test_contact_id_ending_like_the_stats_key_does_not_break_the_scrape():
    f = Feed()
    f.run(f.survey("c|s", csat=5, queue="sales", channel="voice"))
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for fam in SurveyCollector(f.s, f.table, lambda: None, clock=lambda: NOW).collect() for s in fam.samples}
    assert m[("contactpulse_csat_responses", (("channel", "voice"), ("queue", "sales"), ("window", "today")))] == 1
    assert m[("contactpulse_events_accepted_total", (("topic", "survey-events"), ("type", "survey")))] == 1
