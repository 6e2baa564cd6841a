"""Post-contact surveys (topic survey-events): CSAT and "was it resolved?", joined to the rated contact.

Survey events are keyed by contact_id with the same partition count as contact-events, so a survey lands
on the same partition number as the contact it rates and the same worker owns both (Faust assigns topics
with equal partition counts together). The rated contact's queue, channel and agent come from the survey
when it carries them, else from the contact's record in the contacts table ("{p}|c|{contact_id}", kept
until its interval has closed); a survey with neither is rejected as `unknown_contact`.
Key layout (partition first):
    "{p}|r|{contact_id}"                survey answers already counted for this contact (dedupe)
    "{p}|d|{day}|{queue}|{channel}"     counts for surveys answered that local day
    "{p}|g|{day}|{queue}|{agent}"       the same per agent (within max_agents)
    "{p}|s"                             bookkeeping
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, MutableMapping

from metrics.kpi import day_start
from streams.config import Settings
from streams.events import parse_survey
from streams.pipeline import BatchProcessor, BatchResult, Bookkeeping, Message
from streams.state import BatchView, owned_entries

TOPIC = "survey-events"
FLUSH_ORDER = ("d", "g", "r", "s")
SATISFIED = 4  # 4 or 5 of 5
OVERFLOW = "__overflow__"  # agent label past the max_agents budget (as in streams/agents.py)
KEEP_SECONDS = 8 * 86400  # the longest window (7 days) plus a day: a duplicate can never count twice in it


def new_stats() -> dict:
    return {"o": -1, "acc": {}, "rej": {}, "dup": 0, "rekey": 0, "queues": [], "agents": [], "agent_overflow": 0}


def new_counts() -> dict:
    # n: CSAT answers; sat: 4-5; score: sum of scores; rn: "resolved?" answers; ry: answered yes
    return {"o": -1, "n": 0, "sat": 0, "score": 0, "rn": 0, "ry": 0}


class SurveyProcessor(BatchProcessor):
    flush_order = FLUSH_ORDER

    def __init__(self, settings: Settings, table: MutableMapping[str, Any],
                 contacts: Mapping[str, Any] | None = None, clock: Callable[[], float] = time.time):
        super().__init__(settings, table, clock)
        self.contacts = contacts if contacts is not None else {}  # the contacts pipeline's table

    def _process(self, view: BatchView, msg: Message, now: float, result: BatchResult) -> None:
        p, o = msg.partition, msg.offset
        bk = Bookkeeping(view, msg, result, new_stats)
        # Keyed by contact: the join with the contact's record needs the contact's partition.
        ev = self.admitted(bk, parse_survey, msg, now, TOPIC, "contact_id")
        if ev is None:
            return
        rkey = f"{p}|r|{ev.contact_id}"
        rec = view.get(rkey)
        if rec is not None and o <= rec["o"]:
            bk.accept(ev.type)  # the record holds it already (written before a crash)
            return
        if rec is None:
            rec = {"o": -1, "ids": [], "csat": 0, "res": 0, "t": ev.ts}
        new_csat = ev.csat is not None and not rec["csat"]
        new_res = ev.resolved is not None and not rec["res"]
        if ev.event_id in rec["ids"] or not (new_csat or new_res):
            # Same event again, or another event answering only what was already answered: first wins.
            bk.duplicate()
            return
        queue, channel, agent = ev.queue, ev.channel, ev.agent_id
        if queue is None or agent is None:
            contact = self.contacts.get(f"{p}|c|{ev.contact_id}")
            if contact is None and queue is None:
                bk.reject("unknown_contact", "survey has no queue/channel and its contact is not (or no longer) known")
                return
            if queue is None:
                queue, channel = contact["q"], contact["ch"]
            if agent is None and contact is not None:
                agent = contact.get("agent")
        if not bk.admit_queue(queue, self.s.max_queues):
            return
        agent = bk.agent_label(agent, self.s.max_agents, OVERFLOW)
        day = int(day_start(ev.ts, self.tz))
        keys = [f"{p}|d|{day}|{queue}|{channel}"] + ([f"{p}|g|{day}|{queue}|{agent}"] if agent else [])
        for key in keys:
            counts = view.get(key) or new_counts()
            if o <= counts["o"]:
                continue  # holds this survey already (written before a crash)
            counts["o"] = o
            if new_csat:
                counts["n"] += 1
                counts["score"] += ev.csat
                if ev.csat >= SATISFIED:
                    counts["sat"] += 1
            if new_res:
                counts["rn"] += 1
                if ev.resolved:
                    counts["ry"] += 1
            view.put(key, counts)
        rec["csat"] = rec["csat"] or int(new_csat)
        rec["res"] = rec["res"] or int(new_res)
        rec["ids"].append(ev.event_id)
        rec["o"] = o
        rec["t"] = max(rec["t"], ev.ts)
        view.put(rkey, rec)
        bk.accept(ev.type)

    def expire(self, partitions: set[int] | None, now: float | None = None, shard: tuple[int, int] = (0, 1)) -> int:
        """Drop survey records and day counts older than the longest window (7 days) plus a day."""
        now = self.clock() if now is None else now
        removed = 0
        for key, _p, kind, rest, value in owned_entries(self.table, ("r", "d", "g"), partitions, shard):
            if kind == "r" and value["t"] + KEEP_SECONDS < now:
                del self.table[key]
                removed += 1
            elif kind in ("d", "g") and int(rest[0]) + 86400 + KEEP_SECONDS < now:
                del self.table[key]
                removed += 1
        return removed
