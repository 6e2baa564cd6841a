"""Repeat contacts and FCR: contact events -> ContactProcessor -> internal records -> RepeatProcessor ->
RepeatCollector, all in memory on plain dicts. Every number is worked out by hand in the comments."""
import orjson

from metrics.fcr import RepeatCollector
from metrics.kpi import interval_start
from streams.config import load_settings
from streams.contacts import ContactProcessor
from streams.identity import keyed_hash
from streams.pipeline import Message
from streams.repeats import TOPIC, RepeatProcessor

W = 72 * 3600  # the default repeat window
T0 = 1_795_000_100.0  # 2026-11-18T11:08:20Z, 500 s into its UTC hour (hour ends at T0 + 3100)
SECRET = "test-secret"


class Flow:
    """contact-events -> ContactProcessor -> internal topic (one partition) -> RepeatProcessor."""

    def __init__(self, now: float = T0 + W + 3600, **kw):
        self.now = now
        self.s = load_settings(env={}, identity_secret=SECRET, **kw)
        self.contacts_table: dict = {}
        self.table: dict = {}
        self.contacts = ContactProcessor(self.s, self.contacts_table, clock=lambda: self.now)
        self.repeats = RepeatProcessor(self.s, self.table, clock=lambda: self.now)
        self.offset = 0
        self.internal_offset = 0
        self.sent: list[Message] = []  # everything produced to the internal topic

    def _msg(self, etype, cid, ts, queue, channel, partition, **fields):
        ev = {"event_id": f"{cid}-{etype}", "type": etype, "ts": int(round(ts * 1000)), "contact_id": cid,
              "queue": queue, "channel": channel, **{k: v for k, v in fields.items() if v is not None}}
        self.offset += 1
        return Message("contact-events", partition, self.offset, cid.encode(), orjson.dumps(ev))

    def contact(self, cid, start, channel="voice", queue="sales", customer=None, outcome="handled",
                agent="a1", resolved=None, partition=0) -> list[Message]:
        msgs = [self._msg("offered", cid, start, queue, channel, partition, customer=customer)]
        if outcome == "handled":
            msgs += [self._msg("answered", cid, start + 10, queue, channel, partition, agent_id=agent),
                     self._msg("ended", cid, start + 70, queue, channel, partition, agent_id=agent,
                               resolved=resolved)]
        elif outcome == "abandoned":
            msgs.append(self._msg("abandoned", cid, start + 30, queue, channel, partition))
        return msgs

    def run(self, *contacts: list[Message], deliver: bool = True) -> list[Message]:
        """Process contact events; returns the internal messages they produced (delivered unless told)."""
        result = self.contacts.process_batch([m for c in contacts for m in c])
        internal = []
        for topic, key, value in result.outputs:
            assert topic == TOPIC
            self.internal_offset += 1
            internal.append(Message(TOPIC, 0, self.internal_offset, key, value))
        self.sent += internal
        if deliver and internal:
            self.repeats.process_batch(internal)
        return internal

    def record(self, key: str, **value) -> Message:
        """An internal record made by hand (to deliver in an order the contacts pipeline would not)."""
        self.internal_offset += 1
        return Message(TOPIC, 0, self.internal_offset, key.encode(), orjson.dumps(value))

    def bucket(self, start, queue="sales", channel="voice") -> dict | None:
        return self.table.get(f"0|f|{int(interval_start(start, 3600, self.s.tz))}|{queue}|{channel}")

    def metrics(self, now: float | None = None) -> dict:
        collector = RepeatCollector(self.s, self.table, lambda: None, clock=lambda: now or self.now)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in collector.collect() for s in fam.samples}


def get(m: dict, name: str, **labels) -> float | None:
    return m.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


def phone_key(e164: str) -> bytes:
    return keyed_hash(SECRET, "phone", e164).encode()


def test_repeat_exactly_at_the_window_is_a_repeat_one_ms_later_is_not():
    f = Flow()
    f.run(f.contact("A", T0, customer={"id": "cust-1"}),
          f.contact("C", T0, customer={"id": "cust-2"}))
    f.run(f.contact("B", T0 + W, channel="chat", customer={"id": "cust-1"}, outcome="abandoned"),  # = 72 h
          f.contact("D", T0 + W + 0.001, channel="chat", customer={"id": "cust-2"}, outcome="abandoned"))
    # A and C are handled (candidates) in sales/voice, hour of T0. B starts exactly 72 h after A: within
    # the window (inclusive), so A is repeated. D starts 1 ms past C's window: C is resolved. B and D
    # were abandoned, so they are repeats but not candidates themselves.
    b = f.bucket(T0)
    assert (b["n"], b["rep"], b["pairs"], b["unk"]) == (2, 1, {"voice>chat": 1}, 0)
    assert f.bucket(T0 + W, channel="chat") is None
    # Scraped at T0 + 75 h (2026-11-21): T0's day is 3 days back, so only in last_7_days. Its hour ends at
    # T0 + 3100; final needs hour end + 72 h + 900 s allowed lateness = T0 + W + 4000 <= now.
    m = f.metrics(now=T0 + W + 3999)
    L = dict(queue="sales", channel="voice", window="last_7_days")
    assert get(m, "contactpulse_fcr_contacts", status="provisional", **L) == 2
    assert get(m, "contactpulse_fcr_resolved", status="provisional", **L) == 1
    assert get(m, "contactpulse_fcr_contacts", status="final", **L) == 0
    assert get(m, "contactpulse_fcr_contacts", status="provisional", queue="sales", channel="voice",
               window="today") is None
    m = f.metrics(now=T0 + W + 4000)
    assert get(m, "contactpulse_fcr_contacts", status="final", **L) == 2
    assert get(m, "contactpulse_fcr_resolved", status="final", **L) == 1
    assert get(m, "contactpulse_fcr_contacts", status="provisional", **L) == 0
    assert get(m, "contactpulse_repeat_contacts", queue="sales", from_channel="voice", to_channel="chat",
               window="last_7_days") == 1


def test_cross_channel_repeat_by_phone_in_two_formats():
    f = Flow(default_region="LV")
    sent = f.run(f.contact("A", T0, customer={"phone": "+371 21234567"}))
    sent += f.run(f.contact("B", T0 + 3600, channel="chat", queue="support", customer={"phone": "21234567"}))
    # A (sales/voice) is followed 1 h later by B (support/chat): one repeat, on A's queue, voice -> chat.
    a, b = f.bucket(T0), f.bucket(T0 + 3600, queue="support", channel="chat")
    assert (a["n"], a["rep"], a["pairs"]) == (1, 1, {"voice>chat": 1})
    assert (b["n"], b["rep"], b["pairs"]) == (1, 0, {})
    # Each contact sent a start (at the offer) and a handled record, all keyed by the same keyed hash.
    assert [orjson.loads(m.value)["k"] for m in sent] == ["start", "handled", "start", "handled"]
    assert {m.key for m in sent} == {phone_key("+37121234567")}
    assert all(b"2123" not in m.value for m in sent)  # the number itself never leaves the contacts pipeline
    assert all("2123" not in repr(v) for v in f.contacts_table.values())
    assert not any("2123" in k for k in list(f.table) + list(f.contacts_table))


def test_repeat_by_email_in_different_case():
    f = Flow()
    f.run(f.contact("A", T0, channel="email", customer={"email": "Anna.Berzina@Example.LV"}))
    f.run(f.contact("B", T0 + 60, channel="messaging", customer={"email": " anna.berzina@example.lv"}))
    a = f.bucket(T0, channel="email")
    assert (a["n"], a["rep"], a["pairs"]) == (1, 1, {"email>messaging": 1})
    assert f.bucket(T0 + 60, channel="messaging")["rep"] == 0


def test_customer_without_identifier_is_counted_as_unknown_and_never_matched():
    f = Flow()
    sent = f.run(f.contact("A", T0),
                 f.contact("B", T0 + 60, customer={"phone": "anonymous"}),
                 f.contact("C", T0 + 120),
                 f.contact("X", T0 + 130, outcome="abandoned"))
    # Three handled contacts with no usable identifier: 3 unknown, 0 candidates, nothing to repeat.
    # The abandoned one without identifier sends nothing (not a candidate, cannot be a repeat).
    b = f.bucket(T0)
    assert (b["unk"], b["n"], b["rep"]) == (3, 0, 0)
    assert [(m.key, orjson.loads(m.value).get("u")) for m in sent] == [(b"A", True), (b"B", True), (b"C", True)]
    assert get(f.metrics(), "contactpulse_fcr_unknown_customer", queue="sales", channel="voice",
               window="last_7_days") == 3
    assert get(f.metrics(), "contactpulse_fcr_contacts", queue="sales", channel="voice",
               window="last_7_days", status="provisional") == 0


def test_window_expiry_forgets_the_customer_after_window_plus_lateness():
    f = Flow()
    f.run(f.contact("A", T0, customer={"id": "cust-1"}))
    key = f"0|u|{keyed_hash(SECRET, 'id', 'cust-1')}"
    # A could still be repeated by a contact starting up to T0 + W, reaching us up to 900 s late.
    assert f.repeats.expire(None, now=T0 + W + 900) == 0 and key in f.table
    assert f.repeats.expire(None, now=T0 + W + 901) == 1 and key not in f.table
    # The counts stay (the bucket is kept for the 7-day window), the history is gone: a contact of the
    # same customer arriving now starts a new history and repeats nothing.
    f.run(f.contact("B", T0 + W + 600, customer={"id": "cust-1"}, outcome="abandoned"))
    assert (f.bucket(T0)["n"], f.bucket(T0)["rep"]) == (1, 0)
    assert [e["c"] for e in f.table[key]["h"]] == ["B"]
    # Buckets go when the 7-day window (plus a day) has passed: hour end T0 + 3100 + 8 days.
    hour_key = f"0|f|{int(T0 - 500)}|sales|voice"
    f.repeats.expire(None, now=T0 + 3100 + 8 * 86400)  # (drops B's history: it is past its window too)
    assert hour_key in f.table and key not in f.table
    f.repeats.expire(None, now=T0 + 3100 + 8 * 86400 + 1)
    assert hour_key not in f.table


def test_out_of_order_records_end_the_same_and_the_next_contact_decides_the_pair():
    f = Flow()
    k = keyed_hash(SECRET, "id", "c1")
    # The repeat's start record arrives before the contact it repeats (records from two partitions).
    f.repeats.process_batch([
        f.record(k, k="start", c="B", t=T0 + 7200, q="sales", ch="chat"),
        f.record(k, k="start", c="A", t=T0, q="sales", ch="voice"),
        f.record(k, k="handled", c="A", t=T0, q="sales", ch="voice", a="a1", r=True),
    ])
    assert (f.bucket(T0)["n"], f.bucket(T0)["rep"], f.bucket(T0)["pairs"]) == (1, 1, {"voice>chat": 1})
    # A contact M between them arrives last: M, not B, is A's next contact. Still one repeat for A.
    f.repeats.process_batch([f.record(k, k="start", c="M", t=T0 + 1800, q="sales", ch="email")])
    b = f.bucket(T0)
    assert (b["n"], b["rep"], b["ares"], b["ares_rep"]) == (1, 1, 1, 1)
    assert b["pairs"] == {"voice>chat": 0, "voice>email": 1}
    assert [e["c"] for e in f.table[f"0|u|{k}"]["h"]] == ["A", "M", "B"]
    m = f.metrics()
    pairs = {dict(lv)["to_channel"]: v for (n, lv), v in m.items() if n == "contactpulse_repeat_contacts"}
    assert pairs == {"email": 1}  # the zeroed voice -> chat pair is not exported


def test_replayed_and_re_sent_records_count_once():
    f = Flow()
    batch = f.contact("A", T0, customer={"id": "c1"}) + f.contact("B", T0 + 60, customer={"id": "c1"})
    sent = f.run(batch)
    assert len(sent) == 4
    # The contact events again at the same offsets (a restart before the commit): the records say their
    # internal records went out, nothing is sent twice.
    f.offset -= len(batch)
    assert f.run(batch) == []
    snapshot = orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS)
    f.repeats.process_batch(sent)  # the same internal messages again: already applied
    assert orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS) == snapshot
    # Re-sent under new offsets (a crash between producing and writing the contact record): duplicates.
    f.repeats.process_batch([m._replace(offset=m.offset + 100) for m in sent])
    b = f.bucket(T0)
    assert (b["n"], b["rep"]) == (2, 1)
    assert f.table["0|s"]["dup"] == 4 and f.table["0|s"]["acc"] == {"start": 2, "handled": 2}


def test_crash_after_counts_written_before_history_counts_once():
    f = Flow()
    k = keyed_hash(SECRET, "id", "c1")
    batch = [f.record(k, k="start", c="A", t=T0, q="sales", ch="voice"),
             f.record(k, k="handled", c="A", t=T0, q="sales", ch="voice", a="a1", r=False),
             f.record(k, k="start", c="B", t=T0 + 60, q="sales", ch="chat")]
    view, _ = f.repeats.apply(batch)
    for key in list(view.dirty):  # a crash mid-flush: the counts were written, the history was not
        if "|f|" in key or "|g|" in key:
            f.table[key] = view.values[key]
    f.repeats.process_batch(batch)
    b = f.bucket(T0)
    assert (b["n"], b["rep"], b["pairs"]) == (1, 1, {"voice>chat": 1})
    g = f.table[f"0|g|{int(T0 - 40100)}|sales|a1"]  # T0 is 40100 s after UTC midnight
    assert (g["n"], g["rep"]) == (1, 1)


def test_agent_marked_fcr_side_by_side_with_repeat_based():
    f = Flow()
    f.run(f.contact("A", T0, customer={"id": "c1"}, resolved=True, agent="a1"),
          f.contact("B", T0 + 5, customer={"id": "c2"}, resolved=True, agent="a1"),
          f.contact("C", T0 + 9, customer={"id": "c3"}, resolved=False, agent="a2"),
          f.contact("A2", T0 + 600, channel="chat", customer={"id": "c1"}, outcome="waiting"))
    # Agents marked A and B resolved (2 of 3); c1 came back (A2, still waiting), so repeat-based FCR is
    # B and C (2 of 3) and one "resolved" mark (A's) was contradicted by the repeat.
    m = f.metrics()
    L = dict(queue="sales", channel="voice", window="last_7_days")
    assert get(m, "contactpulse_fcr_contacts", status="provisional", **L) == 3
    assert get(m, "contactpulse_fcr_resolved", status="provisional", **L) == 2
    assert get(m, "contactpulse_fcr_agent_marked_resolved", **L) == 2
    assert get(m, "contactpulse_fcr_agent_marked_resolved_repeated", **L) == 1
    # Per agent of the FIRST contact: a1 had A (repeated) and B; a2 had C. The agent's day (2026-11-18)
    # is final when its end + 72 h + 900 s has passed: T0 - 40100 + 86400 + W + 900 > now = T0 + W + 3600.
    A = dict(queue="sales", window="last_7_days", status="provisional")
    assert get(m, "contactpulse_agent_fcr_contacts", agent="a1", **A) == 2
    assert get(m, "contactpulse_agent_fcr_resolved", agent="a1", **A) == 1
    assert get(m, "contactpulse_agent_fcr_marked_resolved", agent="a1", **A) == 2
    assert get(m, "contactpulse_agent_fcr_contacts", agent="a2", **A) == 1
    assert get(m, "contactpulse_agent_fcr_resolved", agent="a2", **A) == 1


def test_agent_label_budget():
    f = Flow(max_agents=1)
    f.run(f.contact("A", T0, customer={"id": "c1"}, agent="a1"),
          f.contact("B", T0 + 5, customer={"id": "c2"}, agent="a2"))
    # Both count per queue; only the first agent gets its own series, the other is summed under
    # "__overflow__" (so the agents still add up to the queue) and counted as a label overflow.
    assert f.bucket(T0)["n"] == 2
    m = f.metrics()
    agents = {dict(lv)["agent"]: v for (n, lv), v in m.items() if n == "contactpulse_agent_fcr_contacts"}
    assert agents == {"a1": 1, "__overflow__": 1}
    assert get(m, "contactpulse_label_overflow_total", topic="contactpulse-customer-contacts", label="agent") == 1


def test_today_and_yesterday_windows_and_the_chain_of_repeats():
    # Scrape on 2026-11-20 at 12:00 UTC. Contacts of one customer: yesterday 10:00 (voice), today 09:00
    # (chat), today 11:00 (voice). Each contact's outcome depends on the NEXT one: yesterday's is repeated
    # by today's 09:00 (23 h later), 09:00 by 11:00, and 11:00 has no repeat yet.
    day = T0 - 40100 + 2 * 86400  # 2026-11-20 00:00 UTC
    f = Flow(now=day + 12 * 3600)
    f.run(f.contact("Y", day - 14 * 3600, customer={"id": "c1"}))
    f.run(f.contact("T1", day + 9 * 3600, channel="chat", customer={"id": "c1"}))
    f.run(f.contact("T2", day + 11 * 3600, customer={"id": "c1"}))
    m = f.metrics()
    P = dict(status="provisional")
    assert get(m, "contactpulse_fcr_contacts", queue="sales", channel="voice", window="yesterday", **P) == 1
    assert get(m, "contactpulse_fcr_resolved", queue="sales", channel="voice", window="yesterday", **P) == 0
    assert get(m, "contactpulse_fcr_contacts", queue="sales", channel="voice", window="today", **P) == 1
    assert get(m, "contactpulse_fcr_resolved", queue="sales", channel="voice", window="today", **P) == 1
    assert get(m, "contactpulse_fcr_contacts", queue="sales", channel="chat", window="today", **P) == 1
    assert get(m, "contactpulse_fcr_resolved", queue="sales", channel="chat", window="today", **P) == 0
    # last_7_days holds all three: 3 contacts, 1 resolved so far; repeats voice->chat and chat->voice.
    assert get(m, "contactpulse_fcr_contacts", queue="sales", channel="voice", window="last_7_days", **P) == 2
    assert get(m, "contactpulse_fcr_resolved", queue="sales", channel="voice", window="last_7_days", **P) == 1
    assert get(m, "contactpulse_repeat_contacts", queue="sales", from_channel="voice", to_channel="chat",
               window="yesterday") == 1
    assert get(m, "contactpulse_repeat_contacts", queue="sales", from_channel="chat", to_channel="voice",
               window="today") == 1
    assert get(m, "contactpulse_fcr_repeat_window_seconds") == W


def test_bad_internal_records_are_rejected_not_fatal():
    f = Flow()
    result = f.repeats.process_batch([
        Message(TOPIC, 0, 1, b"k", b"{nope"),
        Message(TOPIC, 0, 2, b"k", orjson.dumps({"k": "teleport", "c": "A", "t": T0, "q": "s", "ch": "voice"})),
        Message(TOPIC, 0, 3, None, orjson.dumps({"k": "start", "c": "A", "t": T0, "q": "s", "ch": "voice"})),
        Message(TOPIC, 0, 4, b"k", orjson.dumps({"k": "start", "c": "A", "t": T0, "q": "s", "ch": "fax"})),
    ])
    assert [r.reason for _, r in result.dead_letters] == [
        "malformed_json", "unknown_type", "missing_field", "unknown_channel"]
    assert f.table["0|s"]["rej"] == {"malformed_json": 1, "unknown_type": 1, "missing_field": 1,
                                     "unknown_channel": 1}


# -- properties: arrival order and crashes never change the counts -------------------------------------
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

import streams.repeats as repeats_module  # noqa: E402  (its FLUSH_ORDER is the write order under test)

CHANNELS = ("voice", "chat", "email")
contact_st = st.tuples(st.integers(0, 2),  # customer
                       st.integers(0, 8),  # start, in units of W/4: neighbours 0..8 units apart
                       st.integers(0, 2),  # channel
                       st.booleans())  # handled (a candidate) or not


def expected_counts(contacts) -> tuple[int, int, dict]:
    """Brute force from the definition: per customer, order by (start, id); a handled contact is repeated
    when the next contact starts within W (inclusive); the pair is its channel -> the next one's."""
    n = rep = 0
    pairs: dict = {}
    for cust in {c[1] for c in contacts}:
        mine = sorted((c for c in contacts if c[1] == cust), key=lambda c: (c[2], c[0]))
        for i, (cid, _, t, ch, handled) in enumerate(mine):
            if not handled:
                continue
            n += 1
            if i + 1 < len(mine) and mine[i + 1][2] - t <= W:
                rep += 1
                pair = f"{ch}>{mine[i + 1][3]}"
                pairs[pair] = pairs.get(pair, 0) + 1
    return n, rep, pairs


def totals(table) -> tuple[int, int, dict]:
    n = rep = 0
    pairs: dict = {}
    for key, b in table.items():
        if "|f|" in key:
            n, rep = n + b["n"], rep + b["rep"]
            for k, v in b["pairs"].items():
                if v:
                    pairs[k] = pairs.get(k, 0) + v
    return n, rep, pairs


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(contact_st, min_size=1, max_size=10), st.randoms(use_true_random=False),
       st.integers(0, 40), st.integers(1, 6))
def test_any_arrival_order_and_any_crash_point_give_the_definition(raw, rnd, crash_after, batch):
    contacts = [(f"c{i}", cust, T0 + units * W / 4, CHANNELS[ch], handled)
                for i, (cust, units, ch, handled) in enumerate(raw)]
    f = Flow()
    records = []
    for cid, cust, t, ch, handled in contacts:
        key = keyed_hash(SECRET, "id", f"cust-{cust}")
        records.append((key, dict(k="start", c=cid, t=t, q="sales", ch=ch)))
        if handled:
            records.append((key, dict(k="handled", c=cid, t=t, q="sales", ch=ch, a="a1", r=True)))
    rnd.shuffle(records)  # records of one customer come from many contact partitions: any order
    msgs = [f.record(key, **value) for key, value in records]
    msgs += [m._replace(offset=m.offset + 1000) for m in rnd.sample(msgs, len(msgs) // 3)]  # re-sent copies
    msgs.sort(key=lambda m: m.offset)
    # Run in batches; crash once after `crash_after` table writes (the rest of that flush is lost), recover
    # the table from its changelog, and replay from the start of that batch (the last committed offset).
    f.table = f.repeats.table = Changelogged()
    written = 0
    i = 0
    crashed = False
    while i < len(msgs):
        chunk = msgs[i:i + batch]
        view, _ = f.repeats.apply(chunk)
        if not crashed and written + len(view.dirty) > crash_after:
            keys = [k for kind in repeats_module.FLUSH_ORDER for k in view.dirty if k.split("|", 2)[1] == kind]
            for key in keys[:crash_after - written]:
                f.table[key] = view.values[key]
            f.table = f.repeats.table = f.table.recovered()
            crashed = True
            continue  # the same chunk again
        written += f.repeats.commit(view)
        i += batch
    assert totals(f.table) == expected_counts(contacts)
    # Every message accounted for exactly once: the records applied, the re-sent copies as duplicates.
    stats = f.table["0|s"]
    assert sum(stats["acc"].values()) == len(records) and stats["dup"] == len(msgs) - len(records)


class Changelogged(dict):
    """A table whose changelog holds each value as serialized when written; recovered() rebuilds from it
    (the in-memory objects a crashed process had changed in place are lost with it)."""

    def __init__(self):
        super().__init__()
        self.log: dict = {}

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.log[key] = orjson.dumps(value)

    def __delitem__(self, key):
        super().__delitem__(key)
        self.log.pop(key, None)

    def recovered(self) -> "Changelogged":
        fresh = Changelogged()
        for key, raw in self.log.items():
            fresh[key] = orjson.loads(raw)
        return fresh


def test_contact_ids_that_look_like_key_parts_do_not_break_the_scrape():
    # Contact ids may hold "|": "x|s" and "y|f|1|q|voice" must not be read as bookkeeping or a bucket.
    f = Flow()
    f.run(f.contact("x|s", T0), f.contact("y|f|1|q|voice", T0 + 1))
    m = f.metrics()
    assert get(m, "contactpulse_fcr_unknown_customer", queue="sales", channel="voice", window="last_7_days") == 2
    assert get(m, "contactpulse_customer_contact_records_total", topic=TOPIC, type="handled") == 2
