"""Our own JSON (the event contract itself): routing by kind and validation before anything is produced.

A body or file holds one event object, a JSON array of them, {"events": [...]}, or (files) JSON lines.
Kind: "contact_id" -> contact, "ticket_id" -> ticket, type "state" with "agent_id" -> agent.

validate() is also applied by the ingest endpoint to every event an adapter produced, so nothing the
worker would reject is acknowledged. Contact events use streams.events.parse_contact (the worker's own
parser). Ticket and agent events use streams.events.parse_ticket / parse_agent when those exist and a
minimal check of the documented fields otherwise.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable, Iterator, Mapping

import orjson

from streams import events as contract
from streams.adapters import AdapterError, Emitted

TICKET_TYPES = frozenset({"created", "message", "assigned", "solved", "reopened", "closed"})
AGENT_STATES = frozenset({"available", "on_contact", "after_contact_work", "away", "logged_out"})
PRIORITIES = frozenset({"low", "normal", "high", "urgent"})
AUTHOR_TYPES = frozenset({"customer", "agent", "bot", "system"})
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,63}$")
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def kind_of(obj: Mapping) -> str:
    if "contact_id" in obj:
        return "contact"
    if "ticket_id" in obj:
        return "ticket"
    if obj.get("type") == "state" or "state" in obj:
        return "agent"
    raise AdapterError("unknown_kind", "an event needs contact_id, ticket_id, or agent_id with type 'state'")


def _check_ticket(obj: Mapping, now: float, max_future: float, max_age: float) -> contract.Rejection | None:
    env = contract.check_envelope(dict(obj), TICKET_TYPES, now, max_future=max_future, max_age=max_age)
    if isinstance(env, contract.Rejection):
        return env
    tid = obj.get("ticket_id")
    if not isinstance(tid, str) or not _ID.match(tid):
        return contract.Rejection("missing_field" if tid is None else "wrong_type", "'ticket_id' is required")
    for name in ("queue",):
        v = obj.get(name)
        if not isinstance(v, str) or not _LABEL.match(v):
            return contract.Rejection("missing_field" if v is None else "wrong_type", f"'{name}' is required")
    if obj.get("channel") not in contract.CHANNELS:
        return contract.Rejection("unknown_channel", "channel must be one of " + ", ".join(sorted(contract.CHANNELS)))
    if obj.get("priority") is not None and obj["priority"] not in PRIORITIES:
        return contract.Rejection("wrong_type", "priority must be low, normal, high or urgent")
    if obj["type"] == "message":
        if obj.get("author_type") is None or obj.get("public") is None:
            return contract.Rejection("missing_field", "'author_type' and 'public' are required on a message")
        if obj["author_type"] not in AUTHOR_TYPES:
            return contract.Rejection("wrong_type", "author_type must be customer, agent, bot or system")
        if not isinstance(obj["public"], bool):
            return contract.Rejection("wrong_type", "'public' must be true or false")
    if obj["type"] == "solved" and obj.get("solved_by") is None:
        return contract.Rejection("missing_field", "'solved_by' is required on solved")
    if obj.get("solved_by") is not None and obj["solved_by"] not in ("agent", "auto"):
        return contract.Rejection("wrong_type", "solved_by must be agent or auto")
    if obj["type"] == "assigned" and obj.get("agent_id") is None:
        return contract.Rejection("missing_field", "'agent_id' is required on assigned")
    agent = obj.get("agent_id")
    if agent is not None and (not isinstance(agent, str) or not _LABEL.match(agent)):
        return contract.Rejection("wrong_type", "'agent_id' must be a short printable string")
    return None


def _check_agent(obj: Mapping, now: float, max_future: float, max_age: float) -> contract.Rejection | None:
    env = contract.check_envelope(dict(obj), frozenset({"state"}), now, max_future=max_future, max_age=max_age)
    if isinstance(env, contract.Rejection):
        return env
    agent = obj.get("agent_id")
    if not isinstance(agent, str) or not _LABEL.match(agent):
        return contract.Rejection("missing_field" if agent is None else "wrong_type", "'agent_id' is required")
    if obj.get("state") not in AGENT_STATES:
        return contract.Rejection("wrong_type", "state must be one of " + ", ".join(sorted(AGENT_STATES)))
    queues = obj.get("queues", [])
    if not isinstance(queues, list) or not all(isinstance(q, str) and _LABEL.match(q) for q in queues):
        return contract.Rejection("wrong_type", "'queues' must be a list of queue names")
    return None


def validate(kind: str, obj: Mapping, now: float, *, max_bytes: int = 65536, max_future: float = 300,
             max_age: float = 7 * 86400) -> contract.Rejection | None:
    """None when the worker would accept the event, else the worker's own Rejection."""
    if kind == "contact":
        got = contract.parse_contact(orjson.dumps(obj), now, max_bytes=max_bytes, max_future=max_future,
                                     max_age=max_age)
        return got if isinstance(got, contract.Rejection) else None
    parser = getattr(contract, "parse_ticket" if kind == "ticket" else "parse_agent", None)
    if parser is not None:  # the worker's own parser, once streams/events.py has it
        got = parser(orjson.dumps(obj), now, max_bytes=max_bytes, max_future=max_future, max_age=max_age)
        return got if isinstance(got, contract.Rejection) else None
    check = _check_ticket if kind == "ticket" else _check_agent
    return check(obj, now, max_future, max_age)


def convert(body: Any) -> list[Emitted]:
    """A body of our own JSON -> the events in it (not yet validated: see validate)."""
    if isinstance(body, Mapping) and isinstance(body.get("events"), list):
        body = body["events"]
    items = body if isinstance(body, list) else [body]
    out = []
    for obj in items:
        if not isinstance(obj, Mapping):
            raise AdapterError("not_an_object", "every event must be a JSON object")
        out.append(Emitted(kind_of(obj), dict(obj)))
    return out


def read_jsonl(path: str, stats: Counter | None = None, *, max_age: float = 1e12) -> Iterator[Emitted]:
    """Events of a JSON-lines file of our own format, each validated (no age limit by default)."""
    with open(path, "rb") as fh:
        yield from convert_lines(fh, stats, max_age=max_age)


def convert_lines(lines: Iterable[bytes], stats: Counter | None = None, *, max_age: float = 1e12
                  ) -> Iterator[Emitted]:
    import time

    now = time.time()
    for raw in lines:
        if not raw.strip():
            continue
        try:
            for em in convert(orjson.loads(raw)):
                rej = validate(em.kind, em.event, now, max_age=max_age, max_future=1e12)
                if rej is not None:
                    if stats is not None:
                        stats[rej.reason] += 1
                    continue
                yield em
        except (orjson.JSONDecodeError, AdapterError) as exc:
            if stats is not None:
                stats[getattr(exc, "reason", "malformed_json")] += 1
