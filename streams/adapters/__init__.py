"""Ingest adapters: real contact-centre formats -> the event contract (streams/events.py).

Every adapter is a pure function of its input (apart from the small bounded memories documented in
docs/adapters.md) and returns plain dicts ready for orjson. Each emitted event carries a deterministic
event_id derived from the source's own ids, so reading the same source twice produces the same ids and
the worker's dedupe (by event_id) drops the repeats.

Shared vocabulary:
    Emitted(kind, event)   kind is "contact" | "ticket" | "agent" (decides the topic and the key)
    Skip(reason, detail)   valid input that maps to nothing (counted, answered 2xx by the ingest)
    AdapterError           input that is not what the format promises (answered 400 by the ingest)
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, NamedTuple

KINDS = ("contact", "ticket", "agent")
KEY_FIELD = {"contact": "contact_id", "ticket": "ticket_id", "agent": "agent_id"}


class Emitted(NamedTuple):
    kind: str  # "contact" | "ticket" | "agent"
    event: dict

    @property
    def key(self) -> str:
        return self.event[KEY_FIELD[self.kind]]


class Skip(NamedTuple):
    reason: str  # bounded vocabulary (used as a counter key)
    detail: str = ""


class AdapterError(ValueError):
    """The input breaks the source format's own schema; reason is a bounded word, detail is for humans."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def make_event_id(source: str, *parts: Any) -> str:
    """Deterministic event id: '<source>-' + 32 hex chars of BLAKE2b over the source's own ids.

    Changing this function changes every id and defeats dedupe across versions: a unit test pins it.
    """
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x1f")
    return f"{source}-{h.hexdigest()}"


_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.:/ -]")
_ID_BAD = re.compile(r"[^\x21-\x7e]")


def label(value: Any, fallback: str | None = None) -> str | None:
    """A queue/agent name made safe for the contract's label pattern (^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,63}$).

    Disallowed characters become '_', a leading non-alphanumeric is dropped, the result is cut to 64.
    """
    if value is None:
        return fallback
    s = _LABEL_BAD.sub("_", str(value).strip())
    s = s.lstrip("_.:/ -")[:64].rstrip()
    return s or fallback


def ident(value: Any) -> str:
    """An id made safe for the contract's id pattern (printable ASCII without spaces, <= 128)."""
    return _ID_BAD.sub("_", str(value))[:128]


def to_ms(value: Any) -> int | None:
    """Epoch milliseconds from ISO 8601 (with an offset or 'Z'), epoch seconds or epoch milliseconds.

    Numbers above 1e11 are taken as milliseconds (1e11 s is the year 5138), smaller ones as seconds.
    Naive ISO times are refused (None): their zone is unknown.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        v = value.strip()
        if not v:
            return None
        try:
            num = float(v)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(v.replace("Z", "+00:00") if v.endswith("Z") else v)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                return None
            return round(parsed.timestamp() * 1000)
        value = num
    if isinstance(value, (int, float)):
        if value != value or value < 0:
            return None
        return round(value) if value > 1e11 else round(value * 1000)
    return None


def classify_customer(value: Any) -> dict | None:
    """{'email': ...} when it looks like an address, {'phone': ...} when it has digits, else None."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if not v or v.lower() in ("anonymous", "unknown", "restricted", "private", "none"):
        return None
    if v.lower().startswith(("tel:", "sip:", "client:", "whatsapp:")):
        v = v.split(":", 1)[1]
    if "@" in v and "." in v.split("@", 1)[1]:
        return {"email": v[:256]}
    if sum(c.isdigit() for c in v) >= 3:
        return {"phone": v[:256]}
    return None


def contact(event_id: str, etype: str, ts_ms: int, contact_id: str, queue: str, channel: str, *,
            agent_id: str | None = None, wrapup_seconds: float | None = None, resolved: bool | None = None,
            customer: dict | None = None, to_queue: str | None = None) -> Emitted:
    """A contact event in the contract's shape (optional fields only when known)."""
    ev: dict[str, Any] = {"event_id": event_id, "type": etype, "ts": ts_ms, "contact_id": contact_id,
                          "queue": queue, "channel": channel}
    if agent_id is not None:
        ev["agent_id"] = agent_id
    if wrapup_seconds is not None:
        ev["wrapup_seconds"] = wrapup_seconds
    if resolved is not None:
        ev["resolved"] = resolved
    if customer:
        ev["customer"] = customer
    if to_queue is not None:
        ev["to_queue"] = to_queue
    return Emitted("contact", ev)


def parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes", "y", "1", "resolved"):
            return True
        if v in ("false", "no", "n", "0", "unresolved", "not_resolved"):
            return False
    return None


SOURCES = ("queue_log", "connect", "twilio", "zendesk", "contactpulse")
