"""Ticket events -> per-ticket records and per-window counts, one batch at a time (issue 3).

Pure of Faust, like streams/contacts.py. Key layout (partition first, see streams/state.py):
    "{p}|t|{ticket_id}"                                    the ticket's record
    "{p}|w|{kind}|{start}|{queue}|{channel}|{priority}"    counts for one window: i=interval, d=day, m=minute
    "{p}|s"                                                partition bookkeeping (same shape as contacts)

A ticket's numbers can change after they were counted: a reopened ticket is no longer solved, and an
earlier first reply can arrive after a later one. So the record keeps the *facts* it has put into windows
(created, first response, final resolution, each reopen). After every event the facts are worked out again
from the record alone (so arrival order never matters); facts that no longer hold are retracted from their
windows and new ones added. Every window carries the per-key offset watermark "o", so a replay after a
crash neither adds nor retracts anything twice.
"""
from __future__ import annotations

import time
from typing import Any, Callable, MutableMapping
from zoneinfo import ZoneInfo

from metrics.business_hours import business_seconds, parse_schedule
from metrics.distribution import dist_add, dist_remove, new_dist
from metrics.kpi import day_start, interval_start, minute_start
from streams.config import Settings
from streams.events import TicketEvent, parse_ticket
from streams.pipeline import BatchProcessor, BatchResult, Bookkeeping, Message
from streams.state import BatchView, add_expired, owned_entries
from streams.topics import TICKET_EVENTS

TOPIC = TICKET_EVENTS
# Write order inside a batch: windows before records before bookkeeping (see BatchView).
FLUSH_ORDER = ("w", "t", "s")
# Histogram bounds (seconds): first response from a minute to a week, resolution from an hour to 30 days.
FRT_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 259200, 604800)
RESOLUTION_BUCKETS = (3600, 14400, 28800, 86400, 172800, 259200, 604800, 1209600, 2592000)
SOLVED_BY = ("agent", "auto")
STATUSES = ("new", "open", "pending", "solved")
_SKIP = object()  # marks a window that already holds the current message's effect


def new_stats() -> dict:
    return {"o": -1, "wm": 0.0, "acc": {}, "rej": {}, "dup": 0, "rekey": 0, "queues": [], "expired": 0}


def new_window() -> dict:
    return {
        "o": -1,
        "cr": 0,  # tickets created
        "ro": 0,  # reopen events
        "fr": new_dist(len(FRT_BUCKETS)),  # first response times
        "fb": new_dist(len(FRT_BUCKETS)),  # the same in business seconds (empty without business_hours)
        "rs": {by: new_dist(len(RESOLUTION_BUCKETS)) for by in SOLVED_BY},  # resolution times by solver
        "rr": {by: 0 for by in SOLVED_BY},  # of those, tickets reopened at least once before the final solve
    }


def _last_lifecycle(rec: dict) -> tuple[float, int, str] | None:
    """The newest (by event time, then offset) of the ticket's solves, reopens and close."""
    marks = [(s[0], s[1], "solved") for s in rec.get("sv", ())]
    marks += [(r[0], r[1], "reopened") for r in rec.get("ro", ())]
    if "cl" in rec:
        marks.append((rec["cl"][0], rec["cl"][1], "closed"))
    return max(marks) if marks else None


def ticket_status(rec: dict) -> str | None:
    """The live status (one of STATUSES), or None when the ticket is closed or its `created` is unknown.

    new      created, no agent has touched it (no assignment, no agent message, not even a note)
    open     an agent has touched it and the customer is waiting for the agent
    pending  the newest public message since the last reopen is a human agent's: waiting on the customer
    solved   the newest solve/reopen/close is a solve
    """
    if "cr" not in rec:
        return None
    last = _last_lifecycle(rec)
    if last is not None and last[2] == "closed":
        return None
    if last is not None and last[2] == "solved":
        return "solved"
    if not rec.get("ag"):
        return "new"
    lm = rec.get("lm")
    if lm is not None and lm[2] == "agent" and (last is None or (lm[0], lm[1]) > last[:2]):
        return "pending"
    return "open"


def is_live(rec: dict) -> bool:
    """A ticket with a live status (created and not closed): the scrape's backlog."""
    return ticket_status(rec) is not None


def awaiting_first_response(rec: dict) -> bool:
    return "fr" not in rec and ticket_status(rec) in ("new", "open")


class TicketProcessor(BatchProcessor):
    flush_order = FLUSH_ORDER

    def __init__(self, settings: Settings, table: MutableMapping[str, Any], clock: Callable[[], float] = time.time):
        super().__init__(settings, table, clock)
        self.cap = settings.ticket_exact_values
        self.accuracy = settings.ticket_sketch_accuracy
        self.schedule = parse_schedule(settings.business_hours) if settings.business_hours else None
        self.business_tz = ZoneInfo(settings.business_timezone or settings.timezone)

    def _process(self, view: BatchView, msg: Message, now: float, result: BatchResult) -> None:
        p, o = msg.partition, msg.offset
        bk = Bookkeeping(view, msg, result, new_stats)
        ev = self.admitted(bk, parse_ticket, msg, now, TOPIC, "ticket_id", budget_queue=True)
        if ev is None:
            return

        def accept() -> None:
            bk.accept(ev.type)

        rkey = f"{p}|t|{ev.ticket_id}"
        rec = view.get(rkey)
        if rec is not None and o <= rec["o"]:
            # Reprocessing after a crash that wrote this record but not the stats: the record already holds
            # the message's effect (its windows were written before it). ids[event_id] is the offset that
            # applied it, so the same outcome is counted again and nothing else changes.
            bk.recount(rec, rec["ids"].get(ev.event_id) == o, ev.ts, accept)
            return
        if rec is None:
            rec = {"o": -1, "ids": {}, "last": 0.0, "facts": []}
        if ev.event_id in rec["ids"] or not self._apply(rec, ev, o):
            # The same event again, or a second `created`/`closed` under another id: the first one wins.
            bk.duplicate()
            return
        late = self._update_windows(view, p, o, rec, bk.stats["wm"])
        too_late = (f"a measure falls in an interval closed more than {self.s.allowed_lateness_seconds} s ago; "
                    f"the ticket's live state still uses it") if late else None
        bk.settle(rec, too_late, accept)
        bk.advance_watermark(ev.ts)
        rec["ids"][ev.event_id] = o
        rec["o"] = o
        rec["last"] = max(rec["last"], ev.ts)
        view.put(rkey, rec)

    # -- the record --------------------------------------------------------------------------------
    @staticmethod
    def _apply(rec: dict, ev: TicketEvent, o: int) -> bool:
        """Fold the event into the record; False (and no change) if it repeats a one-time step."""
        t, at, labels = ev.type, [ev.ts, o], [ev.queue, ev.channel, ev.priority]
        if t == "created":
            if "cr" in rec:
                return False
            rec["cr"] = [ev.ts] + labels
        elif t == "closed":
            if "cl" in rec:
                return False
            rec["cl"] = at
        elif t == "message":
            if ev.author_type == "agent":
                rec["ag"] = 1  # an internal note also means an agent has picked the ticket up
                if ev.public and ("fr" not in rec or at < rec["fr"][:2]):
                    rec["fr"] = at + labels  # the earliest human public reply, whatever the arrival order
            if ev.public and ev.author_type in ("agent", "customer") and ("lm" not in rec or at > rec["lm"][:2]):
                rec["lm"] = at + [ev.author_type]
        elif t == "assigned":
            rec["ag"] = 1
        elif t == "solved":
            rec.setdefault("sv", []).append(at + [ev.solved_by] + labels)
        elif t == "reopened":
            rec.setdefault("ro", []).append(at + labels + [ev.event_id])
        if "cur" not in rec or at >= rec["cur"][:2]:
            rec["cur"] = at + labels  # the newest labels: where the ticket sits now (live gauges)
        return True

    def facts(self, rec: dict) -> list[list]:
        """What the ticket contributes to windows, from the record alone:
            ["c", ts, queue, channel, priority]                               created
            ["f", ts, q, ch, pr, seconds(, business seconds)]                 first human public reply
            ["s", ts, q, ch, pr, solved_by, seconds, reopened 0|1]            final solve (not reopened since)
            ["r", ts, q, ch, pr, event_id]                                    each reopen
        Labels are those of the event that completes the measure (the reply, the solve, the reopen)."""
        out: list[list] = []
        cr = rec.get("cr")
        if cr is not None:
            out.append(["c"] + cr)
            fr = rec.get("fr")
            if fr is not None:
                # A reply stamped before its ticket (clock skew between systems) counts as an instant reply.
                fact = ["f", fr[0]] + fr[2:] + [round(max(0.0, fr[0] - cr[0]), 3)]
                if self.schedule is not None:
                    fact.append(round(business_seconds(cr[0], fr[0], self.schedule, self.business_tz), 3))
                out.append(fact)
            solves, reopens = rec.get("sv", []), rec.get("ro", [])
            if solves:
                final = max(solves, key=lambda s: (s[0], s[1]))
                reopened_after = [r for r in reopens if (r[0], r[1]) > (final[0], final[1])]
                if not reopened_after:
                    out.append(["s", final[0]] + final[3:] + [final[2], round(max(0.0, final[0] - cr[0]), 3),
                                                              int(bool(reopens))])
        for r in rec.get("ro", []):
            out.append(["r", r[0]] + r[2:])
        return out

    def _update_windows(self, view: BatchView, p: int, o: int, rec: dict, watermark: float) -> bool:
        """Retract facts that no longer hold, add new ones; True if a new fact was too late to count."""
        new = self.facts(rec)
        old = rec["facts"]
        cache: dict[str, Any] = {}
        for fact, counted in old:
            if counted and fact not in new:
                for w in self._windows(view, p, o, fact, cache, create=False):
                    self._add_fact(w, fact, -1)
        kept = [[fact, counted] for fact, counted in old if fact in new]
        known = [fact for fact, _ in old]
        late = False
        for fact in new:
            if fact in known:
                continue
            if self._is_late(fact[1], watermark):
                kept.append([fact, False])  # never counted, so never retracted
                late = True
                continue
            for w in self._windows(view, p, o, fact, cache, create=True):
                self._add_fact(w, fact, +1)
            kept.append([fact, True])
        rec["facts"] = kept
        return late

    def _add_fact(self, w: dict, fact: list, sign: int) -> None:
        kind = fact[0]
        if kind == "c":
            w["cr"] += sign
        elif kind == "r":
            w["ro"] += sign
        elif kind == "f":
            self._dist(w["fr"], fact[5], FRT_BUCKETS, sign)
            if len(fact) > 6:
                self._dist(w["fb"], fact[6], FRT_BUCKETS, sign)
        elif kind == "s":
            by = fact[5]
            self._dist(w["rs"][by], fact[6], RESOLUTION_BUCKETS, sign)
            w["rr"][by] += sign * fact[7]

    def _dist(self, d: dict, value: float, bounds: tuple, sign: int) -> None:
        if sign > 0:
            dist_add(d, value, bounds, self.cap, self.accuracy)
        else:
            dist_remove(d, value, bounds, self.accuracy)

    def _windows(self, view: BatchView, p: int, o: int, fact: list, cache: dict, create: bool) -> list[dict]:
        """The interval, day and minute windows of a fact that have not yet seen offset o.

        One message can retract from and add to the same window (an earlier first reply in the same
        interval), so the windows a message touched are remembered in `cache` for that message."""
        ts, labels = fact[1], "|".join(fact[2:5])
        out = []
        for kind, start in (("i", interval_start(ts, self.s.interval_seconds, self.tz)),
                            ("d", day_start(ts, self.tz)),
                            ("m", minute_start(ts))):
            key = f"{p}|w|{kind}|{int(start)}|{labels}"
            w = cache.get(key)
            if w is None:
                w = view.get(key)
                if w is None:
                    if not create:
                        continue  # nothing to retract from: the window has expired already
                    w = new_window()
                if o <= w["o"]:
                    w = _SKIP  # this window already holds this message's effect (written before a crash)
                else:
                    w["o"] = o
                    view.put(key, w)
                cache[key] = w
            if w is not _SKIP:
                out.append(w)
        return out

    def _is_late(self, ts: float, watermark: float) -> bool:
        end = interval_start(ts, self.s.interval_seconds, self.tz) + self.s.interval_seconds
        return end + self.s.allowed_lateness_seconds < watermark

    # -- housekeeping (called from a timer) --------------------------------------------------------
    def expire(self, partitions: set[int] | None, now: float | None = None, shard: tuple[int, int] = (0, 1)) -> int:
        """Drop windows nobody reads any more and tickets that are finished or silent for too long."""
        now = self.clock() if now is None else now
        s = self.s
        keep_windows = {
            "i": s.interval_seconds + s.allowed_lateness_seconds + s.interval_seconds,
            "d": 86400 + s.allowed_lateness_seconds + 86400,
            "m": s.trailing_seconds + s.allowed_lateness_seconds + 60,
        }
        removed = 0
        expired_by_partition: dict[int, int] = {}
        for key, p, kind, rest, value in owned_entries(self.table, ("w", "t"), partitions, shard):
            if kind == "w":
                if float(rest[1]) + keep_windows[rest[0]] < now:
                    del self.table[key]
                    removed += 1
            elif kind == "t":
                status = ticket_status(value)
                # Closed tickets and tickets whose `created` never arrived only need their ids for dedupe.
                horizon = s.max_open_ticket_seconds if status is not None else s.dedupe_horizon_seconds
                if value["last"] + horizon < now:
                    del self.table[key]
                    removed += 1
                    if status in ("new", "open", "pending"):
                        expired_by_partition[p] = expired_by_partition.get(p, 0) + 1
        add_expired(self.table, expired_by_partition, new_stats)
        return removed
