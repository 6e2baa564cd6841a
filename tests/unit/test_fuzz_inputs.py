"""Fuzz: malformed input never raises, and every message has exactly one outcome.

For the event contract (parse_contact) and for every pipeline's processor, hypothesis generates garbage
bytes, byte-level corruptions of valid events, and structurally valid JSON whose fields hold values of
any type. Properties:
  * nothing raises;
  * parse_contact returns a ContactEvent or a Rejection whose reason is in the bounded vocabulary (it is
    a metric label) and whose detail is short;
  * each message moves exactly one of the processor's counters (accepted, rejected, duplicate, rekeyed)
    by exactly one, and each rejection produces exactly one dead letter.
"""
from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from streams.config import load_settings
from streams.events import ContactEvent, Rejection, parse_contact
from streams.pipeline import Message

NOW = 1_795_000_000.0
CONTACT_REASONS = {"empty", "oversize", "invalid_utf8", "malformed_json", "not_an_object", "missing_field",
                   "wrong_type", "unknown_type", "unknown_channel", "bad_timestamp", "future_timestamp",
                   "too_old"}
FIELDS = ["event_id", "type", "ts", "contact_id", "ticket_id", "queue", "queues", "channel", "agent_id",
          "customer", "wrapup_seconds", "resolved", "to_queue", "priority", "author_type", "public",
          "solved_by", "state", "reason", "csat", "k", "c", "t", "q", "ch", "a", "r", "u"]
TYPES = ["offered", "answered", "abandoned", "hold_started", "hold_ended", "transferred", "ended", "created",
         "message", "assigned", "solved", "reopened", "closed", "state", "survey", "start", "handled"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.sampled_from(["", " ", "sales", "voice", "chat", "a1", "c1", "+37120000000",
                                           "x@example.com", "2026-11-18T08:00:00", "2026-11-18T08:00:00+02:00",
                                           "2026-11-18T08:00:00Z", "99999-01-01T00:00:00Z", "1e400", "NaN",
                                           "available", "agent", "auto", "low", "customer", "\u0000", "x" * 300]),
    st.sampled_from([int(NOW * 1000), int(NOW * 1000) - 5000, int((NOW + 3600) * 1000), 0, -1, 10**15]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.sampled_from(["id", "phone", "email", "x"]), inner, max_size=3)),
                           max_leaves=6)


def valid_contact(cid: str = "c1", etype: str = "answered") -> dict:
    return {"event_id": f"{cid}-{etype}", "type": etype, "ts": int((NOW - 30) * 1000), "contact_id": cid,
            "queue": "sales", "channel": "voice", "agent_id": "a1", "customer": {"phone": "+37120000000"}}


TS = int((NOW - 30) * 1000)
VALID = {  # one valid message per topic: the single-field mutations below start from these
    "contact-events": valid_contact(),
    "ticket-events": {"event_id": "t1-m", "type": "message", "ts": TS, "ticket_id": "t1", "queue": "sales",
                      "channel": "email", "priority": "high", "author_type": "agent", "public": True,
                      "agent_id": "a1", "customer": {"email": "x@example.com"}},
    "agent-events": {"event_id": "a1-s", "type": "state", "ts": TS, "agent_id": "a1", "state": "available",
                     "queues": ["sales"], "reason": "lunch"},
    "survey-events": {"event_id": "s1", "type": "survey", "ts": TS, "contact_id": "c1", "csat": 4,
                      "resolved": True, "queue": "sales", "channel": "voice", "agent_id": "a1"},
    "contactpulse-customer-contacts": {"k": "handled", "c": "c1", "t": NOW - 30, "q": "sales", "ch": "voice",
                                       "a": "a1", "r": True},
}


@st.composite
def single_field(draw, topic: str) -> bytes:
    """A valid message of the topic with one or two fields replaced by any value, or removed: reaches the
    deepest checks, where a value of an unexpected type is most likely to slip through."""
    obj = dict(VALID[topic])
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(sorted(obj) + ["extra"]))
        if draw(st.integers(0, 4)) == 0:
            obj.pop(name, None)
        else:
            obj[name] = draw(json_values)
    return json.dumps(obj).encode()


@st.composite
def structured(draw) -> bytes:
    """A JSON object with envelope-ish fields, each present or not, holding values of any type."""
    obj = {}
    if draw(st.booleans()):
        obj.update(valid_contact(draw(st.sampled_from(["c1", "c2", "c3"])), draw(st.sampled_from(TYPES))))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6)):
        if draw(st.booleans()) and name in obj:
            del obj[name]
        else:
            obj[name] = draw(st.one_of(json_values, st.sampled_from(TYPES)))
    return json.dumps(obj).encode()  # the standard library writes integers of any size


@st.composite
def corrupted(draw) -> bytes:
    """A valid event with bytes flipped, inserted, deleted or cut off."""
    raw = bytearray(orjson.dumps(valid_contact(etype=draw(st.sampled_from(TYPES)))))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if op == "flip":
            raw[i] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and len(raw) > 1:
            del raw[i]
        elif op == "cut":
            raw = raw[:i]
        if not raw:
            break
    return bytes(raw)


SPECIAL = {  # generated on demand so a failure report stays readable
    "deep list": lambda: b"[" * 5000 + b"]" * 5000,
    "deep object": lambda: b'{"a":' * 3000,
    "just over 64 KiB": lambda: orjson.dumps({**valid_contact(), "pad": "x" * 65_400}),
    "just under 64 KiB": lambda: orjson.dumps({**valid_contact(), "pad": "x" * 65_300}),
    "BOM": lambda: b"\xef\xbb\xbf" + orjson.dumps(valid_contact()),
    "UTF-16": lambda: json.dumps(valid_contact()).encode("utf-16"),
    "NUL": lambda: b"\x00",
    "empty": lambda: b"",
}
messages_bytes = st.one_of(st.binary(max_size=200), structured(), corrupted(),
                           st.sampled_from(sorted(SPECIAL)).map(lambda name: SPECIAL[name]()))


@hsettings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(messages_bytes, single_field("contact-events"), st.none()))
def test_parse_contact_never_raises_and_reasons_are_bounded(raw):
    out = parse_contact(raw, NOW)
    assert isinstance(out, (ContactEvent, Rejection))
    if isinstance(out, Rejection):
        assert out.reason in CONTACT_REASONS
        assert isinstance(out.detail, str) and len(out.detail) <= 300
    else:
        assert out.ts <= NOW + 300 and out.contact_id.isascii() and out.queue.isascii()


def _processors():
    """Every pipeline's processor on a plain dict (the app's PIPELINES, without starting Faust)."""
    from streams.agents import AgentProcessor
    from streams.contacts import ContactProcessor
    from streams.repeats import RepeatProcessor
    from streams.surveys import SurveyProcessor
    from streams.tickets import TicketProcessor

    return {"contact-events": ContactProcessor, "ticket-events": TicketProcessor, "agent-events": AgentProcessor,
            "survey-events": SurveyProcessor, "contactpulse-customer-contacts": RepeatProcessor}


def outcomes(table: dict) -> int:
    total = 0
    for key, stats in table.items():
        if key.endswith("|s") and stats is not None:
            total += sum(stats["acc"].values()) + sum(stats["rej"].values()) + stats["dup"] + stats.get("rekey", 0)
    return total


@pytest.mark.parametrize("topic", list(_processors()))
@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_message_has_exactly_one_outcome(topic, data):
    keys = st.sampled_from([b"c1", b"t1", b"a1", b"c2", b"", None, b"\xff"])
    values = st.one_of(messages_bytes, single_field(topic), single_field(topic), st.none())
    batch = data.draw(st.lists(st.tuples(keys, values), min_size=1, max_size=12))
    cls = _processors()[topic]
    table: dict = {}
    s = load_settings(env={})
    proc = cls(s, table, clock=lambda: NOW)
    for offset, (key, value) in enumerate(batch):
        before = outcomes(table)
        result = proc.process_batch([Message(topic, 0, offset, key, value)])
        assert outcomes(table) == before + 1, (key, value)
        assert len(result.dead_letters) <= 1
        for _msg, rejection in result.dead_letters:
            assert isinstance(rejection, Rejection) and rejection.reason.isidentifier()
    # Everything once more (a redelivery of the same offsets after a crash): nothing changes at all.
    snapshot = orjson.dumps(table, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    proc.process_batch([Message(topic, 0, offset, key, value) for offset, (key, value) in enumerate(batch)])
    assert orjson.dumps(table, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS) == snapshot
