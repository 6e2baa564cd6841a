"""Amazon Connect contact trace records (CTR) and agent event stream -> contact and agent events.

CTR (one JSON object per contact, delivered after the contact ends, e.g. by Kinesis Firehose):
    Queue.EnqueueTimestamp (or QueueInfo.EnqueueTimestamp)   -> offered
    Agent.ConnectedToAgentTimestamp (or AgentInfo....)       -> answered, agent_id = last part of Agent.ARN
    no agent: Queue.DequeueTimestamp, else DisconnectTimestamp -> abandoned
              (or transferred, when TransferCompletedTimestamp is set: it left the queue by a transfer)
    Agent.NumberOfHolds / Agent.CustomerHoldDuration         -> that many hold_started/hold_ended pairs
    TransferCompletedTimestamp (answered contact)            -> transferred
    DisconnectTimestamp                                      -> ended, wrapup_seconds = Agent.AfterContactWorkDuration
    Channel VOICE|CHAT|EMAIL -> voice|chat|email; TASK is skipped unless a channel map says otherwise.
    CustomerEndpoint.Address (TELEPHONE_NUMBER / EMAIL_ADDRESS) -> customer.
    Attributes[<resolved_attribute>] ("true"/"false") -> resolved on ended.
    A CTR that never queued (no enqueue time, e.g. IVR-only or outbound) is skipped ("not_queued").

A CTR records only the number and total duration of holds, not when they happened: the adapter places
N holds of equal length at equal spacing inside the talk time. Totals and counts are exact, the
placement is synthetic (docs/adapters.md).

Agent event stream (one JSON object per change, on Kinesis):
    EventType LOGIN / LOGOUT / STATE_CHANGE -> one agent "state" event from CurrentAgentSnapshot:
      LOGOUT, or AgentStatus.Type OFFLINE       -> logged_out
      a contact CONNECTED / CONNECTED_ONHOLD    -> on_contact
      a contact ENDED (after-contact work)      -> after_contact_work
      AgentStatus.Type ROUTABLE                 -> available
      AgentStatus.Type CUSTOM (Break, Lunch...) -> away
    HEART_BEAT -> skipped ("heartbeat"); queues = RoutingProfile.InboundQueues[].Name.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator, Mapping

import orjson

from streams.adapters import (AdapterError, Emitted, Skip, classify_customer, contact, ident, label,
                              make_event_id, parse_bool, to_ms)

SOURCE = "connect"
AGENT_SOURCE = "connect-agent"
CHANNELS = {"VOICE": "voice", "CHAT": "chat", "EMAIL": "email"}


def _obj(record: Mapping, *names: str) -> Mapping:
    for n in names:
        v = record.get(n)
        if isinstance(v, Mapping):
            return v
    return {}


def _ts(value: Any, field: str) -> int | None:
    if value in (None, ""):
        return None
    ms = to_ms(value)
    if ms is None:
        raise AdapterError("bad_timestamp", f"{field} is not an ISO 8601 time with an offset")
    return ms


def arn_tail(arn: Any) -> str | None:
    if not isinstance(arn, str) or not arn:
        return None
    return label(arn.rsplit("/", 1)[-1])


def convert_ctr(record: Any, *, channel_map: Mapping[str, str] | None = None,
                resolved_attribute: str = "resolved") -> list[Emitted] | Skip:
    """One contact trace record -> its contact events in time order."""
    if not isinstance(record, Mapping):
        raise AdapterError("not_an_object", "a contact trace record is a JSON object")
    contact_id = record.get("ContactId") or record.get("Id")
    if not isinstance(contact_id, str) or not contact_id:
        raise AdapterError("missing_field", "'ContactId' is required")
    raw_channel = record.get("Channel")
    if not isinstance(raw_channel, str):
        raise AdapterError("missing_field", "'Channel' is required")
    channel = {**CHANNELS, **(channel_map or {})}.get(raw_channel.upper())
    if channel is None:
        return Skip("unsupported_channel", raw_channel[:20])
    queue_obj = _obj(record, "Queue", "QueueInfo")
    agent_obj = _obj(record, "Agent", "AgentInfo")
    enqueue = _ts(queue_obj.get("EnqueueTimestamp"), "Queue.EnqueueTimestamp")
    dequeue = _ts(queue_obj.get("DequeueTimestamp"), "Queue.DequeueTimestamp")
    if enqueue is None and dequeue is not None and isinstance(queue_obj.get("Duration"), (int, float)):
        enqueue = dequeue - round(queue_obj["Duration"] * 1000)
    if enqueue is None:
        return Skip("not_queued", "no Queue.EnqueueTimestamp")
    queue = label(queue_obj.get("Name")) or arn_tail(queue_obj.get("ARN")) or label(queue_obj.get("Id"))
    if queue is None:
        raise AdapterError("missing_field", "'Queue.Name' (or Queue.ARN) is required for a queued contact")
    cid = ident(contact_id)
    disconnect = _ts(record.get("DisconnectTimestamp"), "DisconnectTimestamp")
    transfer = _ts(record.get("TransferCompletedTimestamp"), "TransferCompletedTimestamp")
    connected = _ts(agent_obj.get("ConnectedToAgentTimestamp"), "Agent.ConnectedToAgentTimestamp")
    endpoint = _obj(record, "CustomerEndpoint")
    customer = classify_customer(endpoint.get("Address"))

    def eid(out_type: str, n: int = 0) -> str:
        return make_event_id(SOURCE, contact_id, out_type, n)

    out = [contact(eid("offered"), "offered", enqueue, cid, queue, channel, customer=customer)]
    if connected is None:
        if transfer is not None:
            out.append(contact(eid("transferred"), "transferred", transfer, cid, queue, channel))
            return out
        left = dequeue if dequeue is not None else disconnect
        if left is None:
            raise AdapterError("missing_field", "an unanswered contact needs Queue.DequeueTimestamp or "
                                                "DisconnectTimestamp")
        out.append(contact(eid("abandoned"), "abandoned", left, cid, queue, channel))
        return out
    agent = arn_tail(agent_obj.get("ARN")) or label(agent_obj.get("Id"))
    if agent is None:
        raise AdapterError("missing_field", "'Agent.ARN' is required for an answered contact")
    out.append(contact(eid("answered"), "answered", connected, cid, queue, channel, agent_id=agent))
    acw_start = _ts(agent_obj.get("AfterContactWorkStartTimestamp"), "Agent.AfterContactWorkStartTimestamp")
    talk_end = acw_start or disconnect or connected
    holds = agent_obj.get("NumberOfHolds") or 0
    hold_s = agent_obj.get("CustomerHoldDuration") or 0
    if isinstance(holds, int) and not isinstance(holds, bool) and holds > 0 and isinstance(hold_s, (int, float)):
        span = max(0, talk_end - connected)
        each = min(round(hold_s * 1000 / holds), span // holds)  # never longer than the talk time allows
        for i in range(holds):
            start = connected + (span * i) // holds
            out.append(contact(eid("hold_started", i), "hold_started", start, cid, queue, channel,
                               agent_id=agent))
            out.append(contact(eid("hold_ended", i), "hold_ended", start + each, cid, queue, channel,
                               agent_id=agent))
    if transfer is not None:
        out.append(contact(eid("transferred"), "transferred", transfer, cid, queue, channel, agent_id=agent))
    if disconnect is None:
        return out  # still open (a CTR update before the end): the ended event comes with a later update
    acw = agent_obj.get("AfterContactWorkDuration")
    wrapup = float(acw) if isinstance(acw, (int, float)) and not isinstance(acw, bool) and acw >= 0 else None
    attrs = record.get("Attributes") if isinstance(record.get("Attributes"), Mapping) else {}
    out.append(contact(eid("ended"), "ended", disconnect, cid, queue, channel, agent_id=agent,
                       wrapup_seconds=wrapup, resolved=parse_bool(attrs.get(resolved_attribute)),
                       customer=customer))
    out.sort(key=lambda e: e.event["ts"])
    return out


ACTIVE = frozenset({"CONNECTED", "CONNECTED_ONHOLD"})


def convert_agent_event(record: Any) -> list[Emitted] | Skip:
    """One agent event stream record -> an agent state event."""
    if not isinstance(record, Mapping):
        raise AdapterError("not_an_object", "an agent event is a JSON object")
    etype = record.get("EventType")
    if etype == "HEART_BEAT":
        return Skip("heartbeat")
    if etype not in ("LOGIN", "LOGOUT", "STATE_CHANGE"):
        raise AdapterError("unknown_type", "EventType must be LOGIN, LOGOUT, STATE_CHANGE or HEART_BEAT")
    event_id = record.get("EventId")
    if not isinstance(event_id, str) or not event_id:
        raise AdapterError("missing_field", "'EventId' is required")
    ts = _ts(record.get("EventTimestamp"), "EventTimestamp")
    if ts is None:
        raise AdapterError("missing_field", "'EventTimestamp' is required")
    agent = arn_tail(record.get("AgentARN"))
    if agent is None:
        raise AdapterError("missing_field", "'AgentARN' is required")
    snap = _obj(record, "CurrentAgentSnapshot")
    status = _obj(snap, "AgentStatus")
    contacts = [c for c in snap.get("Contacts") or [] if isinstance(c, Mapping)]
    states = {str(c.get("State", "")).upper() for c in contacts}
    if etype == "LOGOUT" or str(status.get("Type", "")).upper() == "OFFLINE":
        state = "logged_out"
    elif states & ACTIVE:
        state = "on_contact"
    elif "ENDED" in states:
        state = "after_contact_work"
    elif str(status.get("Type", "")).upper() == "ROUTABLE":
        state = "available"
    else:
        state = "away"
    profile = _obj(_obj(snap, "Configuration"), "RoutingProfile")
    queues = []
    for q in profile.get("InboundQueues") or []:
        name = label(q.get("Name")) if isinstance(q, Mapping) else None
        if name and name not in queues:
            queues.append(name)
    return [Emitted("agent", {"event_id": make_event_id(AGENT_SOURCE, event_id), "type": "state", "ts": ts,
                              "agent_id": agent, "queues": queues, "state": state})]


def convert(record: Any, **options: Any) -> list[Emitted] | Skip:
    """A CTR or an agent event, told apart by their fields."""
    if isinstance(record, Mapping) and ("CurrentAgentSnapshot" in record or "AgentARN" in record):
        return convert_agent_event(record)
    return convert_ctr(record, **options)


def iter_json_objects(text: str) -> Iterator[Any]:
    """Objects of a JSON array, JSON lines, or objects written back to back ("}{", as Firehose does)."""
    s = text.strip()
    if s.startswith("["):
        yield from orjson.loads(s)
        return
    import json

    dec = json.JSONDecoder()
    i, n = 0, len(s)
    while i < n:
        while i < n and s[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        obj, i = dec.raw_decode(s, i)
        yield obj


def read_connect_file(path: str, stats: Counter | None = None, **options: Any) -> Iterator[Emitted]:
    """Every event of a file of CTRs and/or agent events (array, JSON lines or concatenated)."""
    with open(path, "r", encoding="utf-8") as fh:
        text = fh.read()
    yield from convert_records(iter_json_objects(text), stats, **options)


def convert_records(records: Iterable[Any], stats: Counter | None = None, **options: Any) -> Iterator[Emitted]:
    for rec in records:
        try:
            out = convert(rec, **options)
        except AdapterError as exc:
            if stats is not None:
                stats[exc.reason] += 1
            continue
        if isinstance(out, Skip):
            if stats is not None:
                stats[out.reason] += 1
            continue
        if stats is not None:
            stats["records_mapped"] += 1
        yield from out
