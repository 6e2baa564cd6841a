"""Agent states and per-agent handle time.

Two parts, both pure of Faust (unit tests drive them with a dict):

1. AgentProcessor: topic `agent-events` (keyed by agent_id) -> each agent's state timeline and, per queue
   and window, the seconds agents spent in each state (occupancy = busy / (busy + available)).
   Key layout of the "agents" table (partition first, see streams/state.py):
       "{p}|w|{kind}|{start}|{queue}"   seconds per state in one window: kind i=interval, d=day, m=minute
       "{p}|a|{agent_id}"               the agent: recent state changes, dedupe ids (see new_agent_record)
       "{p}|s"                          partition bookkeeping: watermark, accepted/rejected counts, queues
   Time in a state is attributed when the state ends (the next change arrives); the still-open state
   is added at scrape time by metrics/agents.py, so the current interval moves with the clock.

2. add_agent_handle(): called by streams/contacts.py when a contact is handled; adds the contact's handle
   time, hold and transfers to per-agent windows in the contacts table, within the max_agents budget:
       "{p}|a|{kind}|{start}|{queue}|{agent}"   per-agent counts (agents past the budget: "__overflow__")
       "{p}|ab"                                 the agents admitted on this partition, overflow count
"""
from __future__ import annotations

import time
from bisect import bisect_right
from typing import Any, Callable, MutableMapping

from metrics.kpi import interval_start, split_by_window, window_start
from streams.config import Settings
from streams.events import AgentEvent, parse_agent_event
from streams.pipeline import BatchProcessor, BatchResult, Bookkeeping, Message
from streams.state import BatchView, owned_entries

TOPIC = "agent-events"
# Write order inside a batch: windows before agent records before bookkeeping (see BatchView).
FLUSH_ORDER = ("w", "a", "s")
TIMED_STATES = ("available", "on_contact", "after_contact_work", "away")  # logged-out time is not summed
BUSY_STATES = ("on_contact", "after_contact_work")
NO_QUEUE = "__none__"  # an agent whose events name no queues (cannot collide: real names start alphanumeric)
OVERFLOW = "__overflow__"  # label values past a cardinality budget
KINDS = ("i", "d", "m")


def keep_seconds(s: Settings) -> dict[str, int]:
    """How long after its start a window is kept (the same horizons as streams/contacts.py expire())."""
    return {
        "i": s.interval_seconds + s.allowed_lateness_seconds + s.interval_seconds,
        "d": 86400 + s.allowed_lateness_seconds + 86400,
        "m": s.trailing_seconds + s.allowed_lateness_seconds + 60,
    }


def new_stats() -> dict:
    return {"o": -1, "wm": 0.0, "acc": {}, "rej": {}, "dup": 0, "rekey": 0, "queues": [], "ovf": 0}


RECENT_IDS = 64  # event ids an agent record keeps whatever their age (see AgentProcessor._process)


def new_agent_record() -> dict:
    """An agent's record: its timeline, entry k holding from tt[k] to tt[k+1] in state ts[k] for the queues
    tq[k] (comma-joined: queue names cannot contain a comma), in event-time order; and the ids of the events
    it applied: ie[k] applied at input offset io[k], with event time it[k].

    Flat lists, not a list per entry: a record is copied with every batch that touches the agent, and each
    small list is an object the garbage collector must track; per-entry lists made a busy agent ~240 of
    them, whose churn triggered most of the worker's full collections (half its CPU, measured)."""
    return {"o": -1, "tt": [], "ts": [], "tq": [], "ie": [], "it": [], "io": []}


def agent_record(rec: dict) -> dict:
    """The record in the layout of new_agent_record(); one written by an earlier version had "tl" =
    [[ts, state, queues], ...] and "ids" = [[event_id, ts, offset], ...]: a converted copy of it."""
    if "tl" not in rec:
        return rec
    tl, ids = rec["tl"], rec["ids"]
    out = {k: v for k, v in rec.items() if k not in ("tl", "ids")}
    out.update(tt=[e[0] for e in tl], ts=[e[1] for e in tl], tq=[",".join(e[2]) for e in tl],
               ie=[i[0] for i in ids], it=[i[1] for i in ids], io=[i[2] for i in ids])
    return out


def queue_list(joined: str) -> list[str]:
    """The queues of a timeline entry (tq[k])."""
    return joined.split(",") if joined else []


class AgentProcessor(BatchProcessor):
    flush_order = FLUSH_ORDER

    def __init__(self, settings: Settings, table: MutableMapping[str, Any], clock: Callable[[], float] = time.time):
        super().__init__(settings, table, clock)
        self.keep = keep_seconds(settings)

    def cutoff(self, watermark: float) -> float:
        """Start of the earliest interval still open to late changes: time before it is final."""
        if not watermark:
            return float("-inf")
        return interval_start(watermark - self.s.allowed_lateness_seconds, self.s.interval_seconds, self.tz)

    def _process(self, view: BatchView, msg: Message, now: float, result: BatchResult) -> None:
        p, o = msg.partition, msg.offset
        bk = Bookkeeping(view, msg, result, new_stats)
        ev = self.admitted(bk, parse_agent_event, msg, now, TOPIC, "agent_id")  # the timeline's partition
        if ev is None:
            return
        queues, overflowed = self._budget_queues(ev.queues, bk.stats, bk.fresh)

        def accept() -> None:
            bk.accept(ev.type)
            if overflowed and bk.fresh:  # counted once per accepted event, like "accepted"
                bk.stats["ovf"] += 1

        rkey = f"{p}|a|{ev.agent_id}"
        rec = view.get(rkey)
        if rec is not None:
            rec = agent_record(rec)
        if rec is not None and o <= rec["o"]:
            # Reprocessing after a crash that wrote this record but not the stats: the record holds the
            # message's effect; its ids (event_id, offset) say whether it was applied, late or a repeat.
            ie = rec["ie"]
            applied = ev.event_id in ie and rec["io"][ie.index(ev.event_id)] == o
            bk.recount(rec, applied, ev.ts, accept)
            return
        if rec is None:
            rec = new_agent_record()
        if ev.event_id in rec["ie"]:
            bk.duplicate()
            return
        late = self._place(view, p, o, rec, ev, queues, self.cutoff(bk.stats["wm"]), now)
        bk.settle(rec, late, accept)
        bk.advance_watermark(ev.ts)
        tt = rec["tt"]
        newest = max(ev.ts, tt[-1]) if tt else ev.ts
        # A repeat of an event older than the oldest state the timeline keeps is rejected as too late
        # (_place: its successor is before the cutoff), so its id is no longer needed to spot it. Without
        # this, a busy agent's record carried a day of ids (~30 kB) into every read and changelog write.
        # The newest RECENT_IDS stay whatever their time: a replay after a crash recounts them exactly.
        keep_from = max(newest - self.s.dedupe_horizon_seconds, tt[0] if tt else newest)
        ie, it, io = rec["ie"], rec["it"], rec["io"]
        n = len(ie)
        if n > RECENT_IDS and min(it[:n - RECENT_IDS]) < keep_from:
            keep = [k for k in range(n) if it[k] >= keep_from or k >= n - RECENT_IDS]
            rec["ie"], rec["it"], rec["io"] = [ie[k] for k in keep], [it[k] for k in keep], [io[k] for k in keep]
            if "late" in rec:
                kept = set(rec["io"])
                rec["late"] = [x for x in rec["late"] if x in kept]
        rec["ie"].append(ev.event_id)
        rec["it"].append(ev.ts)
        rec["io"].append(o)
        rec["o"] = o
        view.put(rkey, rec)

    def _budget_queues(self, queues: tuple[str, ...] | None, stats: dict, fresh: bool
                       ) -> tuple[list[str] | None, bool]:
        """The event's queues within the max_queues budget (queues past it are summed under __overflow__),
        and whether any was past it."""
        if queues is None:
            return None, False
        out: list[str] = []
        overflowed = False
        for q in queues:
            if q not in stats["queues"]:
                if len(stats["queues"]) >= self.s.max_queues:
                    overflowed = True
                    q = OVERFLOW
                elif fresh:
                    stats["queues"].append(q)
            if q not in out:
                out.append(q)
        return out, overflowed

    # -- the timeline ------------------------------------------------------------------------------
    def _place(self, view: BatchView, p: int, o: int, rec: dict, ev: AgentEvent, queues: list[str] | None,
               cutoff: float, now: float) -> str | None:
        """Insert the state change into the agent's timeline and move time between states in the windows.

        The timeline (new_agent_record) is in event-time order; entry k holds from tt[k] to tt[k + 1].
        * newest event (the usual case): the previous state ends at ev.ts -> its time is added.
        * older event between two known changes: [ev.ts, next change) moves from the previous state to
          this one; only time at or after `cutoff` moves, since older intervals are final.
        Equal timestamps: the event that arrives later counts as the later change.
        """
        tt, states, tq = rec["tt"], rec["ts"], rec["tq"]
        k = bisect_right(tt, ev.ts)
        if queues is None:  # not given: the queues the agent had just before
            queues = queue_list(tq[k - 1]) if k else []
        deltas: dict[tuple[str, str], dict[str, float]] = {}  # (queue, kind|start) -> state -> seconds
        if k < len(tt):
            nxt = tt[k]
            if nxt <= cutoff:
                return (f"state change at {ev.ts:.0f} would only change intervals closed more than "
                        f"{self.s.allowed_lateness_seconds} s ago")
            start = max(ev.ts, cutoff)
            if k:
                self._spread(deltas, states[k - 1], queue_list(tq[k - 1]), start, nxt, -1.0, now)
            self._spread(deltas, ev.state, queues, start, nxt, 1.0, now)
        elif k:
            self._spread(deltas, states[k - 1], queue_list(tq[k - 1]), tt[k - 1], ev.ts, 1.0, now)
        tt.insert(k, ev.ts)
        states.insert(k, ev.state)
        tq.insert(k, ",".join(queues))
        # Entries whose successor started before the cutoff can never be a "previous state" again.
        drop = 0
        while len(tt) - drop >= 2 and tt[drop + 1] <= cutoff:
            drop += 1
        if drop:
            del tt[:drop], states[:drop], tq[:drop]
        self._write(view, p, o, deltas)
        return None

    def _spread(self, deltas: dict, state: str, queues: list[str], a: float, b: float, sign: float,
                now: float) -> None:
        """Add sign * the seconds of [a, b) in `state` to every window it overlaps, for each queue.

        Windows already past their keep horizon are skipped (they are expired, nobody reads them), so
        closing a state that lasted days touches a bounded number of keys."""
        if state not in TIMED_STATES or b <= a:
            return
        for kind in KINDS:
            oldest = window_start(kind, now - self.keep[kind], self.s.interval_seconds, self.tz)
            for start, seconds in split_by_window(max(a, oldest), b, kind, self.s.interval_seconds, self.tz):
                for q in queues or [NO_QUEUE]:
                    per_state = deltas.setdefault((q, f"{kind}|{int(start)}"), {})
                    per_state[state] = per_state.get(state, 0.0) + sign * seconds

    @staticmethod
    def _write(view: BatchView, p: int, o: int, deltas: dict) -> None:
        for (queue, kind_start), per_state in deltas.items():
            key = f"{p}|w|{kind_start}|{queue}"
            w = view.get(key) or {"o": -1, "t": {}}
            if o <= w["o"]:
                continue  # this window already holds the change (written before a crash)
            w["o"] = o
            for state, seconds in per_state.items():
                # milliseconds: event times are whole ms, and this keeps +x-x from leaving 1e-13 residues
                w["t"][state] = round(w["t"].get(state, 0.0) + seconds, 3)
            view.put(key, w)

    # -- housekeeping (called from a timer) --------------------------------------------------------
    def expire(self, partitions: set[int] | None, now: float | None = None, shard: tuple[int, int] = (0, 1)) -> int:
        """Drop windows nobody reads any more and agents with no event within max_event_age_seconds.

        An agent record is kept that long (also when logged out) so that no accepted event can be older
        than a forgotten agent's last change (that would bring back a stale state)."""
        now = self.clock() if now is None else now
        removed = 0
        for key, _p, kind, rest, value in owned_entries(self.table, ("w", "a"), partitions, shard):
            if kind == "w" and float(rest[1]) + self.keep[rest[0]] < now:
                del self.table[key]
                removed += 1
            elif kind == "a" and (tt := agent_record(value)["tt"]) and tt[-1] + self.s.max_event_age_seconds < now:
                del self.table[key]
                removed += 1
        return removed


# -- per-agent handle time (contacts table) ---------------------------------------------------------------
def new_agent_window() -> dict:
    return {"o": -1, "hnd": 0, "hsum": 0.0, "holdsum": 0.0, "holds": 0, "xfer": 0, "acwsum": 0.0}


def add_agent_handle(s: Settings, view: BatchView, p: int, o: int, rec: dict, *, handled: int = 1,
                     handle: float = 0.0, hold_sum: float = 0.0, holds: int = 0, transfers: int = 0,
                     acw: float = 0.0) -> None:
    """Add a handled contact (or a later correction of its holds/transfers) to its agent's windows.

    The agent is the one on `ended` (else the one who answered); the queue and the windows are those in
    which streams/contacts.py counts the contact. The agent label is decided once per contact and kept
    in rec["ha"], so a correction lands where the contact was counted. Agents past max_agents on this
    partition are summed under "__overflow__"; each such contact is counted in the "{p}|ab" record."""
    agent = rec.get("ha")
    if agent is None:
        agent = rec.get("agent") or NO_QUEUE  # cannot happen today: answered and ended require agent_id
        bkey = f"{p}|ab"
        budget = view.get(bkey) or {"o": -1, "agents": [], "ovf": 0}
        if agent not in budget["agents"]:
            if len(budget["agents"]) < s.max_agents:
                budget["agents"].append(agent)  # idempotent: a replay finds it there
                view.put(bkey, budget)
            else:
                agent = OVERFLOW
                if o > budget["o"]:  # written before the contact record: a replay does not count it again
                    budget["ovf"] += 1
                    budget["o"] = o
                    view.put(bkey, budget)
        rec["ha"] = agent
    tz = s.tz
    end = rec["end"]
    for kind in KINDS:
        start = int(window_start(kind, end, s.interval_seconds, tz))
        key = f"{p}|a|{kind}|{start}|{rec['q']}|{agent}"
        w = view.get(key) or new_agent_window()
        if o <= w["o"]:
            continue  # this window already holds the effect (written before a crash)
        w["o"] = o
        w["hnd"] += handled
        w["hsum"] += handle
        w["holdsum"] += hold_sum
        w["holds"] += holds
        w["xfer"] += transfers
        w["acwsum"] += acw
        view.put(key, w)
