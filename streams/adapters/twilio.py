"""Twilio TaskRouter events -> contact and agent events.

Accepts both shapes Twilio sends:
  * the Workspace EventCallbackUrl POST (form fields or JSON): EventType, Sid, Timestamp (epoch s),
    TaskSid, TaskAttributes (JSON string), TaskQueueName, TaskQueueSid, TaskChannelUniqueName,
    WorkerSid, WorkerActivityName, TaskCanceledReason ...
  * an Event Streams CloudEvent: {"type": "com.twilio.taskrouter.<eventtype>", "data": {"payload":
    {snake_case fields}}} -- the payload keys are read as their PascalCase twins.

Mapping (one Task = one contact; contact_id = TaskSid):
    task.created (with a TaskQueue) / task-queue.entered -> offered   (same event_id for the same
                                                            task+queue, so a pair of them dedupes)
    reservation.accepted                                  -> answered (agent_id = WorkerSid)
    task.canceled                                         -> abandoned
    task.wrapup / reservation.wrapup                      -> nothing yet (its time is remembered)
    task.completed / reservation.completed                -> ended (one event_id for both) at the
                                                             remembered wrap-up time with wrapup_seconds =
                                                             completed - wrapup; at completion time and
                                                             without wrapup_seconds if not remembered;
                                                             agent = WorkerSid or the accepted reservation's
    worker.activity.update                                -> agent state (Available -> available,
                                                             Offline -> logged_out, else away)
    anything else                                         -> skipped ("not_mapped")
Channel from TaskChannelUniqueName (voice, chat, sms -> messaging, email), refined by the Flex task
attribute channelType (sms/whatsapp/messenger -> messaging, facebook/twitter/instagram -> social).
Customer from TaskAttributes from/caller/email.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Mapping

import orjson

from streams.adapters import (AdapterError, Emitted, Skip, classify_customer, contact, ident, label,
                              make_event_id, to_ms)

SOURCE = "twilio"
TASK_CHANNELS = {"voice": "voice", "chat": "chat", "sms": "messaging", "email": "email"}
FLEX_CHANNEL_TYPES = {"voice": "voice", "web": "chat", "chat": "chat", "sms": "messaging",
                      "whatsapp": "messaging", "messenger": "messaging", "gbm": "messaging",
                      "facebook": "social", "twitter": "social", "instagram": "social", "email": "email"}
DEFAULT_ACTIVITIES = {"available": "available", "idle": "available", "offline": "logged_out"}
UNKNOWN_QUEUE = "unassigned"


def _pascal(key: str) -> str:
    if key == "eventtype":
        return "EventType"
    return "".join(p[:1].upper() + p[1:] for p in key.split("_"))


def normalise(body: Any) -> dict:
    """The callback's fields in the classic PascalCase form, whichever shape arrived."""
    if not isinstance(body, Mapping):
        raise AdapterError("not_an_object", "a TaskRouter event is an object")
    if "EventType" in body:
        return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in body.items()}
    data = body.get("data")
    payload = data.get("payload") if isinstance(data, Mapping) else None
    if isinstance(payload, Mapping):
        fields = {_pascal(k): v for k, v in payload.items()}
        if "EventType" not in fields and isinstance(body.get("type"), str):
            fields["EventType"] = body["type"].rsplit("taskrouter.", 1)[-1]
        if "Sid" not in fields and isinstance(body.get("id"), str):
            fields["Sid"] = body["id"]
        return fields
    raise AdapterError("missing_field", "'EventType' (or a CloudEvent data.payload) is required")


class TwilioAdapter:
    """Stateless per event except one bounded memory: per task, its queue and its wrap-up start time.

    The memory only improves events (queue on task.canceled/completed when Twilio omits it, ACW on
    task.completed); losing it (restart, a second ingest replica) degrades to the documented fallbacks.
    """

    def __init__(self, *, activity_map: Mapping[str, str] | None = None,
                 channel_map: Mapping[str, str] | None = None, memory: int = 100_000):
        self.activity_map = {**DEFAULT_ACTIVITIES, **{k.lower(): v for k, v in (activity_map or {}).items()}}
        self.channel_map = {**TASK_CHANNELS, **(channel_map or {})}
        self._memory: OrderedDict[str, dict] = OrderedDict()
        self._limit = memory
        self._lock = threading.Lock()

    def _remember(self, task: str, **values: Any) -> dict:
        with self._lock:
            rec = self._memory.pop(task, {})
            rec.update(values)
            self._memory[task] = rec
            while len(self._memory) > self._limit:
                self._memory.popitem(last=False)
            return rec

    def _recall(self, task: str) -> dict:
        with self._lock:
            return dict(self._memory.get(task, {}))

    def _channel(self, f: Mapping, attrs: Mapping) -> str | None:
        flex = attrs.get("channelType")
        if isinstance(flex, str) and flex.lower() in FLEX_CHANNEL_TYPES:
            return FLEX_CHANNEL_TYPES[flex.lower()]
        name = f.get("TaskChannelUniqueName")
        if isinstance(name, str) and name.lower() in self.channel_map:
            return self.channel_map[name.lower()]
        if attrs.get("type") == "call" or attrs.get("call_sid") or attrs.get("callSid"):
            return "voice"
        return None

    def convert(self, body: Any) -> list[Emitted] | Skip:
        f = normalise(body)
        etype = f.get("EventType")
        if not isinstance(etype, str) or not etype:
            raise AdapterError("missing_field", "'EventType' is required")
        ts = to_ms(f.get("Timestamp"))
        if ts is None:
            raise AdapterError("bad_timestamp", "'Timestamp' must be epoch seconds or ISO 8601 with an offset")
        if etype == "worker.activity.update":
            return self._worker(f, ts)
        etype = {"reservation.wrapup": "task.wrapup", "reservation.completed": "task.completed"}.get(etype, etype)
        if etype not in ("task.created", "task-queue.entered", "reservation.accepted", "task.canceled",
                         "task.wrapup", "task.completed"):
            return Skip("not_mapped", etype[:60])
        task = f.get("TaskSid")
        if not isinstance(task, str) or not task:
            raise AdapterError("missing_field", f"'TaskSid' is required for {etype}")
        attrs = f.get("TaskAttributes") or {}
        if isinstance(attrs, str):
            try:
                attrs = orjson.loads(attrs)
            except orjson.JSONDecodeError:
                raise AdapterError("malformed_json", "'TaskAttributes' is not valid JSON") from None
        if not isinstance(attrs, Mapping):
            attrs = {}
        memo = self._recall(task)
        queue = label(f.get("TaskQueueName")) or memo.get("queue")
        channel = self._channel(f, attrs) or memo.get("channel")
        if channel is None:
            return Skip("unknown_channel", str(f.get("TaskChannelUniqueName"))[:40])
        cid = ident(task)
        if etype in ("task.created", "task-queue.entered"):
            if queue is None:
                self._remember(task, channel=channel)
                return Skip("no_queue_yet", "the task has not entered a TaskQueue")
            self._remember(task, queue=queue, channel=channel)
            customer = None
            for k in ("from", "caller", "email", "customerAddress", "customer_address"):
                customer = classify_customer(attrs.get(k))
                if customer:
                    break
            qkey = f.get("TaskQueueSid") or queue
            return [contact(make_event_id(SOURCE, task, "offered", qkey), "offered", ts, cid, queue, channel,
                            customer=customer)]
        queue = queue or UNKNOWN_QUEUE
        if etype == "reservation.accepted":
            worker = label(f.get("WorkerSid"))
            if worker is None:
                raise AdapterError("missing_field", "'WorkerSid' is required for reservation.accepted")
            self._remember(task, queue=queue, channel=channel, worker=worker)
            return [contact(make_event_id(SOURCE, task, "answered"), "answered", ts, cid, queue, channel,
                            agent_id=worker)]
        if etype == "task.canceled":
            return [contact(make_event_id(SOURCE, task, "abandoned"), "abandoned", ts, cid, queue, channel)]
        if etype == "task.wrapup":
            if "wrapup" not in memo:
                self._remember(task, wrapup=ts)
            return Skip("wrapup_remembered")
        # task.completed
        worker = label(f.get("WorkerSid")) or memo.get("worker")
        if worker is None:
            # task.completed carries no worker: without the memory, reservation.completed (same event_id) ends it
            return Skip("agent_unknown", "no WorkerSid and no remembered reservation for this task")
        wrapup_at = memo.get("wrapup")
        if wrapup_at is not None and wrapup_at <= ts:
            end, acw = wrapup_at, (ts - wrapup_at) / 1000.0
        else:
            end, acw = ts, None
        with self._lock:
            self._memory.pop(task, None)
        return [contact(make_event_id(SOURCE, task, "ended"), "ended", end, cid, queue, channel,
                        agent_id=worker, wrapup_seconds=acw)]

    def _worker(self, f: Mapping, ts: int) -> list[Emitted] | Skip:
        worker = label(f.get("WorkerSid"))
        if worker is None:
            raise AdapterError("missing_field", "'WorkerSid' is required for worker.activity.update")
        activity = f.get("WorkerActivityName")
        if not isinstance(activity, str) or not activity:
            raise AdapterError("missing_field", "'WorkerActivityName' is required")
        state = self.activity_map.get(activity.lower(), "away")
        sid = f.get("Sid") or f"{worker}|{ts}|{activity}"
        return [Emitted("agent", {"event_id": make_event_id(SOURCE, "activity", sid), "type": "state", "ts": ts,
                                  "agent_id": worker, "queues": [], "state": state})]
