"""The event contract: bytes from Kafka -> a validated event, or a Rejection with a bounded reason.

Every topic shares one envelope (see README "Event schema"):
    event_id  str, unique per event (duplicates are detected by it)
    type      str, one of the topic's types
    ts        ISO 8601 with an offset ("2026-11-23T09:00:00+02:00", "...Z") or epoch milliseconds
    plus the topic's own fields.
Nothing here raises on bad input: parse_* always returns an event or a Rejection. Inside, the field
checks raise _Rejected, and @_returns_rejection turns it back into the Rejection the parser returns.
"""
from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any, Callable, NamedTuple, TypeVar

import orjson

CHANNELS = frozenset({"voice", "chat", "email", "messaging", "social"})
CONTACT_TYPES = frozenset(
    {"offered", "answered", "abandoned", "hold_started", "hold_ended", "transferred", "ended"}
)
# Queue and agent names become label values: keep them short and printable.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,63}$")
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


class Rejection(NamedTuple):
    reason: str  # bounded vocabulary: used as a metric label
    detail: str  # human detail for the dead-letter topic; never holds customer identifiers


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(reason)
        self.rejection = Rejection(reason, detail)


_Event = TypeVar("_Event")


def _returns_rejection(parse: Callable[..., _Event]) -> Callable[..., _Event | Rejection]:
    @functools.wraps(parse)
    def parse_or_reject(*args: Any, **kwargs: Any) -> _Event | Rejection:
        try:
            return parse(*args, **kwargs)
        except _Rejected as rejected:
            return rejected.rejection
    return parse_or_reject


class ContactEvent(NamedTuple):
    event_id: str
    type: str
    ts: float  # epoch seconds, event time
    contact_id: str
    queue: str
    channel: str
    agent_id: str | None
    wrapup_seconds: float | None  # on "ended": after-contact work
    resolved: bool | None  # on "ended": the agent's disposition
    customer: dict | None  # {"id"|"phone"|"email": ...}; only ever hashed downstream
    to_queue: str | None  # on "transferred"


def parse_ts(value: Any) -> float | None:
    """Epoch seconds from epoch milliseconds or ISO 8601 with an explicit offset; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if value != value or value < 0 or value > 1e14:  # NaN, negative, absurd
            return None
        return value / 1000.0
    if isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:  # a naive local time is ambiguous: refuse it
            return None
        return parsed.timestamp()
    return None


def decode_object(raw: bytes | None, max_bytes: int) -> dict | Rejection:
    """First stage shared by every topic: size, UTF-8, JSON, object."""
    if raw is None:
        return Rejection("empty", "message has no value")
    if len(raw) > max_bytes:
        return Rejection("oversize", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(raw)  # orjson rejects invalid UTF-8 itself
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("invalid_utf8", "value is not valid UTF-8")
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def check_envelope(obj: dict, types: frozenset[str], now: float, *, max_future: float, max_age: float
                   ) -> tuple[str, str, float] | Rejection:
    """Validate event_id, type and ts; returns (event_id, type, ts)."""
    for name in ("event_id", "type", "ts"):
        if name not in obj or obj[name] is None:
            return Rejection("missing_field", f"'{name}' is required")
    event_id, etype = obj["event_id"], obj["type"]
    if not isinstance(event_id, str) or not _ID.match(event_id):
        return Rejection("wrong_type", "'event_id' must be a non-empty printable string <= 128 chars")
    if not isinstance(etype, str):
        return Rejection("wrong_type", "'type' must be a string")
    if etype not in types:
        return Rejection("unknown_type", f"type '{etype[:40]}' is not one of {', '.join(sorted(types))}")
    ts = parse_ts(obj["ts"])
    if ts is None:
        return Rejection("bad_timestamp", "'ts' must be ISO 8601 with an offset or epoch milliseconds")
    if ts > now + max_future:
        return Rejection("future_timestamp", f"ts is {ts - now:.0f} s ahead of the worker's clock")
    if ts < now - max_age:
        return Rejection("too_old", f"ts is {now - ts:.0f} s in the past (limit {max_age:.0f} s)")
    return event_id, etype, ts


def _envelope(raw: bytes | None, types: frozenset[str], now: float, max_bytes: int, max_future: float,
              max_age: float) -> tuple[dict, str, str, float]:
    """decode_object() then check_envelope(): (obj, event_id, type, ts)."""
    obj = decode_object(raw, max_bytes)
    if isinstance(obj, Rejection):
        raise _Rejected(*obj)
    env = check_envelope(obj, types, now, max_future=max_future, max_age=max_age)
    if isinstance(env, Rejection):
        raise _Rejected(*env)
    return (obj, *env)


def _channel_field(obj: dict, required: bool) -> str | None:
    channel = obj.get("channel")
    if channel is None:
        if required:
            raise _Rejected("missing_field", "'channel' is required")
        return None
    if not isinstance(channel, str) or channel not in CHANNELS:  # a list/object is unhashable: check first
        raise _Rejected("unknown_channel", f"channel must be one of {', '.join(sorted(CHANNELS))}")
    return channel


def _str_field(obj: dict, name: str, pattern: re.Pattern, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Rejected("missing_field", f"'{name}' is required")
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise _Rejected("wrong_type", f"'{name}' must be a short printable string")
    return value


@_returns_rejection
def parse_contact(raw: bytes | None, now: float, *, max_bytes: int = 65536, max_future: float = 300,
                  max_age: float = 7 * 86400) -> ContactEvent | Rejection:
    obj, event_id, etype, ts = _envelope(raw, CONTACT_TYPES, now, max_bytes, max_future, max_age)
    contact_id = _str_field(obj, "contact_id", _ID, True)
    queue = _str_field(obj, "queue", _LABEL_VALUE, True)
    channel = _channel_field(obj, True)
    agent_id = _str_field(obj, "agent_id", _LABEL_VALUE, etype in ("answered", "ended"))
    wrapup = obj.get("wrapup_seconds")
    if wrapup is not None and (isinstance(wrapup, bool) or not isinstance(wrapup, (int, float))
                               or not 0 <= wrapup < 86400):
        raise _Rejected("wrong_type", "'wrapup_seconds' must be a number of seconds >= 0")
    resolved = obj.get("resolved")
    if resolved is not None and not isinstance(resolved, bool):
        raise _Rejected("wrong_type", "'resolved' must be true or false")
    customer = _customer_field(obj)
    to_queue = _str_field(obj, "to_queue", _LABEL_VALUE, False)
    return ContactEvent(event_id, etype, ts, contact_id, queue, channel, agent_id,
                        float(wrapup) if wrapup is not None else None, resolved, customer, to_queue)


# -- tickets (topic ticket-events, keyed by ticket_id) -------------------------------------------------
TICKET_TYPES = frozenset({"created", "message", "assigned", "solved", "reopened", "closed"})
PRIORITIES = frozenset({"low", "normal", "high", "urgent"})
AUTHOR_TYPES = frozenset({"customer", "agent", "bot", "system"})
SOLVED_BY = frozenset({"agent", "auto"})


class TicketEvent(NamedTuple):
    event_id: str
    type: str
    ts: float  # epoch seconds, event time
    ticket_id: str
    queue: str
    channel: str
    priority: str  # low|normal|high|urgent (default normal)
    author_type: str | None  # on "message": customer|agent|bot|system
    public: bool | None  # on "message": false = internal note
    agent_id: str | None  # on "assigned" (required) and agent messages
    solved_by: str | None  # on "solved": agent|auto
    customer: dict | None  # only ever hashed downstream


def _customer_field(obj: dict) -> dict | None:
    customer = obj.get("customer")
    if customer is not None and (not isinstance(customer, dict) or not all(
            k in ("id", "phone", "email") and isinstance(v, str) and len(v) <= 256 for k, v in customer.items())):
        raise _Rejected("wrong_type", "'customer' must be an object with string id/phone/email")
    return customer


def _enum_field(obj: dict, name: str, allowed: frozenset[str], required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Rejected("missing_field", f"'{name}' is required")
        return None
    if not isinstance(value, str) or value not in allowed:
        raise _Rejected("wrong_type", f"'{name}' must be one of {', '.join(sorted(allowed))}")
    return value


@_returns_rejection
def parse_ticket(raw: bytes | None, now: float, *, max_bytes: int = 65536, max_future: float = 300,
                 max_age: float = 7 * 86400) -> TicketEvent | Rejection:
    obj, event_id, etype, ts = _envelope(raw, TICKET_TYPES, now, max_bytes, max_future, max_age)
    ticket_id = _str_field(obj, "ticket_id", _ID, True)
    queue = _str_field(obj, "queue", _LABEL_VALUE, True)
    channel = _channel_field(obj, True)
    priority = _enum_field(obj, "priority", PRIORITIES, False)
    author_type = _enum_field(obj, "author_type", AUTHOR_TYPES, etype == "message")
    public = obj.get("public")
    if etype == "message" and public is None:
        raise _Rejected("missing_field", "'public' is required on a message (false = internal note)")
    if public is not None and not isinstance(public, bool):
        raise _Rejected("wrong_type", "'public' must be true or false")
    agent_id = _str_field(obj, "agent_id", _LABEL_VALUE, etype == "assigned")
    solved_by = _enum_field(obj, "solved_by", SOLVED_BY, etype == "solved")
    customer = _customer_field(obj)
    return TicketEvent(event_id, etype, ts, ticket_id, queue, channel, priority or "normal", author_type, public,
                       agent_id, solved_by, customer)


# -- agent states (topic agent-events, keyed by agent_id) ----------------------------------------------
AGENT_TYPES = frozenset({"state"})
AGENT_STATES = ("available", "on_contact", "after_contact_work", "away", "logged_out")


class AgentEvent(NamedTuple):
    event_id: str
    type: str  # "state"
    ts: float  # epoch seconds, event time: when the agent entered the state
    agent_id: str
    state: str  # one of AGENT_STATES
    queues: tuple[str, ...] | None  # the agent's queues/skills; None = not given (keeps the previous ones)
    reason: str | None  # e.g. the away reason code; informational, never a label


@_returns_rejection
def parse_agent_event(raw: bytes | None, now: float, *, max_bytes: int = 65536, max_future: float = 300,
                      max_age: float = 7 * 86400) -> AgentEvent | Rejection:
    obj, event_id, etype, ts = _envelope(raw, AGENT_TYPES, now, max_bytes, max_future, max_age)
    agent_id = _str_field(obj, "agent_id", _LABEL_VALUE, True)
    state = obj.get("state")
    if state is None:
        raise _Rejected("missing_field", "'state' is required")
    if state not in AGENT_STATES:  # same reason the ingest endpoint's check gives
        raise _Rejected("wrong_type", "state must be one of " + ", ".join(AGENT_STATES))
    queues = obj.get("queues")
    if queues is not None:
        if not isinstance(queues, list) or not all(isinstance(q, str) and _LABEL_VALUE.match(q) for q in queues):
            raise _Rejected("wrong_type", "'queues' must be a list of queue names")
        queues = tuple(dict.fromkeys(queues))  # drop repeats, keep the order
    reason = _str_field(obj, "reason", _LABEL_VALUE, False)
    return AgentEvent(event_id, etype, ts, agent_id, state, queues, reason)


parse_agent = parse_agent_event  # the name streams/adapters/contactpulse.py validates agent events with


# -- surveys (topic survey-events, keyed by contact_id) ------------------------------------------------
SURVEY_TYPES = frozenset({"survey"})


class SurveyEvent(NamedTuple):
    event_id: str
    type: str  # "survey"
    ts: float  # epoch seconds, when the customer answered
    contact_id: str  # the contact the survey rates
    csat: int | None  # 1-5; 4 and 5 are "satisfied"
    resolved: bool | None  # "was your issue resolved?"
    queue: str | None  # of the rated contact; when absent, read from the contact's record
    channel: str | None
    agent_id: str | None


@_returns_rejection
def parse_survey(raw: bytes | None, now: float, *, max_bytes: int = 65536, max_future: float = 300,
                 max_age: float = 7 * 86400) -> SurveyEvent | Rejection:
    obj, event_id, etype, ts = _envelope(raw, SURVEY_TYPES, now, max_bytes, max_future, max_age)
    contact_id = _str_field(obj, "contact_id", _ID, True)
    csat, resolved = obj.get("csat"), obj.get("resolved")
    if csat is None and resolved is None:
        raise _Rejected("missing_field", "a survey needs 'csat' (1-5) and/or 'resolved' (true/false)")
    if csat is not None and (isinstance(csat, bool) or not isinstance(csat, int) or not 1 <= csat <= 5):
        raise _Rejected("wrong_type", "'csat' must be a whole number from 1 to 5")
    if resolved is not None and not isinstance(resolved, bool):
        raise _Rejected("wrong_type", "'resolved' must be true or false")
    queue = _str_field(obj, "queue", _LABEL_VALUE, obj.get("channel") is not None)
    channel = _channel_field(obj, False)
    if channel is None and queue is not None:
        raise _Rejected("missing_field", "'channel' is required when 'queue' is given")
    agent_id = _str_field(obj, "agent_id", _LABEL_VALUE, False)
    return SurveyEvent(event_id, etype, ts, contact_id, csat, resolved, queue, channel, agent_id)
