"""Contact (call/chat) events -> per-contact records and per-window counts, one batch at a time.

Pure of Faust: it reads and writes a MutableMapping, so unit tests drive it with a dict and the worker
with a changelog-backed PartitionedTable. Key layout (partition first, see streams/state.py):
    "{p}|c|{contact_id}"                       the contact's record (lifecycle, dedupe ids)
    "{p}|w|{kind}|{start}|{queue}|{channel}"   counts for one window: kind i=interval, d=day, m=minute
    "{p}|s"                                    partition bookkeeping: watermark, accepted/rejected counts
A contact counts in the window where it *ended its wait* (answered or abandoned), by event time.
"""
from __future__ import annotations

import time
from typing import Any, Callable, MutableMapping

from metrics.kpi import bucket_index, day_start, interval_start, minute_start, wait_bucket_bounds
from streams.agents import add_agent_handle
from streams.config import Settings
from streams.events import ContactEvent, parse_contact
from streams.identity import customer_key
from streams.pipeline import BatchProcessor, BatchResult, Bookkeeping, Message
from streams.repeats import customer_contact_records
from streams.state import BatchView, add_expired, owned_entries

TOPIC = "contact-events"
# Write order inside a batch: windows before records before bookkeeping (see BatchView).
# "a"/"ab": per-agent windows and the agent budget (streams/agents.py), also before the records.
FLUSH_ORDER = ("w", "a", "ab", "c", "s")


def is_waiting(rec: dict) -> bool:
    """A contact offered to a queue and neither answered nor abandoned yet (waiting now)."""
    return "off" in rec and "ans" not in rec and "ab" not in rec


def new_stats() -> dict:
    return {"o": -1, "wm": 0.0, "acc": {}, "rej": {}, "dup": 0, "rekey": 0, "queues": [], "expired": 0}


def new_window(n_buckets: int) -> dict:
    return {
        "o": -1,
        "off": 0, "ans": 0, "aw": {}, "ab": 0, "abw": {}, "sab": 0,
        "wsum": 0.0, "wmax": 0.0, "asum": 0.0, "wh": [0] * (n_buckets + 1),
        "hnd": 0, "hsum": 0.0, "holdsum": 0.0, "holds": 0, "xfer": 0, "res": 0, "acwsum": 0.0,
    }


class ContactProcessor(BatchProcessor):
    flush_order = FLUSH_ORDER

    def __init__(self, settings: Settings, table: MutableMapping[str, Any], clock: Callable[[], float] = time.time):
        super().__init__(settings, table, clock)
        self.bounds = wait_bucket_bounds(settings.all_thresholds)
        self.thresholds = settings.all_thresholds

    def _process(self, view: BatchView, msg: Message, now: float, result: BatchResult) -> None:
        p, o = msg.partition, msg.offset
        self._touched: set[str] = set()  # windows this message has added to (see _windows)
        bk = Bookkeeping(view, msg, result, new_stats)
        ev = self.admitted(bk, parse_contact, msg, now, TOPIC, "contact_id", budget_queue=True)
        if ev is None:
            return

        def accept() -> None:
            bk.accept(ev.type)

        rkey = f"{p}|c|{ev.contact_id}"
        rec = view.get(rkey)
        if rec is not None and isinstance(rec["ids"], list):  # records written before ids kept offsets
            rec["ids"] = dict.fromkeys(rec["ids"], -1)
        if rec is not None and o <= rec["o"]:
            # Reprocessing after a crash that wrote this record but not the stats: the record already
            # holds the message's effect. Its ids say which outcome it had (ids[event_id] is the offset
            # that applied it), so the same outcome is counted again and nothing else changes.
            bk.recount(rec, rec["ids"].get(ev.event_id) == o, ev.ts, accept)
            return
        if rec is None:
            rec = {"o": -1, "q": ev.queue, "ch": ev.channel, "ids": {}, "holds": []}
        if ev.event_id in rec["ids"]:
            bk.duplicate()
            return
        outcome = self._apply(rec, ev)
        if outcome is not None:  # a second answer/abandon/offer for one contact: keep the first
            bk.duplicate()
            return
        if ev.customer and not rec.get("cust"):
            # Only the keyed hash is kept (streams/identity.py); "" = no usable identifier.
            rec["cust"] = customer_key(ev.customer, self.s.identity_secret, self.s.default_region) or ""
        late = self._count(view, p, o, rec, bk.stats["wm"])
        bk.settle(rec, late, accept)
        bk.advance_watermark(ev.ts)
        rec["ids"][ev.event_id] = o
        rec["o"] = o
        rec["last"] = max(rec.get("last", 0.0), ev.ts)
        view.put(rkey, rec)
        # Repeat contacts / FCR (streams/repeats.py): re-partitioned by customer, each record sent once.
        result.outputs.extend(customer_contact_records(rec, ev.contact_id))

    # -- lifecycle ---------------------------------------------------------------------------------
    @staticmethod
    def _apply(rec: dict, ev: ContactEvent) -> str | None:
        """Update the record; returns 'conflict' if the event repeats a one-time step."""
        t = ev.type
        if t == "offered":
            if "off" in rec:
                return "conflict"
            rec["off"] = ev.ts
            rec["q"], rec["ch"] = ev.queue, ev.channel  # the queue it waited in decides the SL bucket
        elif t == "answered":
            if "ans" in rec or "ab" in rec:
                return "conflict"
            rec["ans"] = ev.ts
            rec["agent"] = ev.agent_id
        elif t == "abandoned":
            if "ans" in rec or "ab" in rec:
                return "conflict"
            rec["ab"] = ev.ts
        elif t == "hold_started":
            rec["holds"].append([ev.ts, 1])
        elif t == "hold_ended":
            rec["holds"].append([ev.ts, -1])
        elif t == "transferred":
            rec["xfer"] = rec.get("xfer", 0) + 1
            rec["xfer_ts"] = ev.ts
        elif t == "ended":
            if "end" in rec:
                return "conflict"
            rec["end"] = ev.ts
            rec["acw"] = ev.wrapup_seconds or 0.0
            rec["res"] = ev.resolved
            rec["agent"] = ev.agent_id or rec.get("agent")
        return None

    def _windows(self, view: BatchView, p: int, ts: float, queue: str, channel: str, o: int) -> list[dict]:
        """The interval, day and minute windows containing ts that have not yet seen offset o."""
        starts = (("i", interval_start(ts, self.s.interval_seconds, self.tz)),
                  ("d", day_start(ts, self.tz)),
                  ("m", minute_start(ts)))
        out = []
        for kind, start in starts:
            key = f"{p}|w|{kind}|{int(start)}|{queue}|{channel}"
            w = view.get(key)
            if w is None:
                w = new_window(len(self.bounds))
            if key in self._touched:  # a second effect of the same message (an answer after its end)
                out.append(w)
                continue
            if o <= w["o"]:
                continue  # this window already holds the effect (written before a crash)
            w["o"] = o
            view.put(key, w)
            self._touched.add(key)
            out.append(w)
        return out

    def _is_late(self, ts: float, watermark: float) -> bool:
        end = interval_start(ts, self.s.interval_seconds, self.tz) + self.s.interval_seconds
        return end + self.s.allowed_lateness_seconds < watermark

    def _count(self, view: BatchView, p: int, o: int, rec: dict, watermark: float) -> str | None:
        """Add whatever this record newly completed to its windows; returns a reason if too late."""
        q, ch = rec["q"], rec["ch"]
        if "counted" not in rec and "off" in rec and ("ans" in rec or "ab" in rec):
            answered = "ans" in rec
            ended_wait = rec["ans"] if answered else rec["ab"]
            if self._is_late(ended_wait, watermark):
                rec["counted"] = "late"
                return f"wait ended in an interval closed more than {self.s.allowed_lateness_seconds} s ago"
            rec["counted"] = True
            wait = max(0.0, ended_wait - rec["off"])
            for w in self._windows(view, p, ended_wait, q, ch, o):
                if answered:
                    w["ans"] += 1
                    w["off"] += 1
                    w["wsum"] += wait
                    if wait > w["wmax"]:
                        w["wmax"] = wait
                    w["wh"][bucket_index(self.bounds, wait)] += 1
                    for t in self.thresholds:
                        if wait <= t:
                            w["aw"][str(t)] = w["aw"].get(str(t), 0) + 1
                elif wait <= self.s.short_abandon_seconds:
                    w["sab"] += 1
                else:
                    w["ab"] += 1
                    w["off"] += 1
                    w["asum"] += wait
                    for t in self.thresholds:
                        if wait <= t:
                            w["abw"][str(t)] = w["abw"].get(str(t), 0) + 1
        if "handled" not in rec and "end" in rec and "ans" in rec:
            if self._is_late(rec["end"], watermark):
                rec["handled"] = "late"
                return f"contact ended in an interval closed more than {self.s.allowed_lateness_seconds} s ago"
            rec["handled"] = True
            hold_sum, hold_count = hold_time(rec["holds"], rec["end"])
            rec["hc"] = [hold_sum, hold_count, rec.get("xfer", 0)]  # what the windows hold already
            handle = max(0.0, rec["end"] - rec["ans"]) + rec["acw"]
            for w in self._windows(view, p, rec["end"], q, ch, o):
                w["hnd"] += 1
                w["hsum"] += handle
                w["holdsum"] += hold_sum
                w["holds"] += hold_count
                w["acwsum"] += rec["acw"]
                w["xfer"] += rec.get("xfer", 0)
                if rec.get("res"):
                    w["res"] += 1
            add_agent_handle(self.s, view, p, o, rec, handle=handle, hold_sum=hold_sum, holds=hold_count,
                             transfers=rec.get("xfer", 0), acw=rec["acw"])
        elif rec.get("handled") is True and "hc" in rec:
            # A hold or transfer that arrives after its contact was counted as handled (out of order):
            # add what it changes to the same windows, so arrival order does not change the numbers.
            hold_sum, hold_count = hold_time(rec["holds"], rec["end"])
            xfer = rec.get("xfer", 0)
            before = rec["hc"]
            if [hold_sum, hold_count, xfer] != before:
                if self._is_late(rec["end"], watermark):
                    return f"contact ended in an interval closed more than {self.s.allowed_lateness_seconds} s ago"
                rec["hc"] = [hold_sum, hold_count, xfer]
                for w in self._windows(view, p, rec["end"], q, ch, o):
                    w["holdsum"] += hold_sum - before[0]
                    w["holds"] += hold_count - before[1]
                    w["xfer"] += xfer - before[2]
                add_agent_handle(self.s, view, p, o, rec, handled=0, hold_sum=hold_sum - before[0],
                                 holds=hold_count - before[1], transfers=xfer - before[2])
        return None

    # -- housekeeping (called from a timer) --------------------------------------------------------
    def expire(self, partitions: set[int] | None, now: float | None = None, shard: tuple[int, int] = (0, 1)) -> int:
        """Drop finished records and windows nobody reads any more; give up on contacts open too long."""
        now = self.clock() if now is None else now
        s = self.s
        keep_windows = {
            "i": s.interval_seconds + s.allowed_lateness_seconds + s.interval_seconds,
            "d": 86400 + s.allowed_lateness_seconds + 86400,
            "m": s.trailing_seconds + s.allowed_lateness_seconds + 60,
        }
        horizon_closed = s.interval_seconds + s.allowed_lateness_seconds
        removed = 0
        expired_by_partition: dict[int, int] = {}
        for key, p, kind, rest, value in owned_entries(self.table, ("w", "a", "c"), partitions, shard):
            if kind in ("w", "a"):  # "a": per-agent windows, same layout after the kind
                if float(rest[1]) + keep_windows[rest[0]] < now:
                    del self.table[key]
                    removed += 1
            elif kind == "c":
                finished = "ab" in value or "end" in value
                last = value.get("last", 0.0)
                if finished and last + horizon_closed < now:
                    del self.table[key]
                    removed += 1
                elif not finished and last + s.max_open_contact_seconds < now:
                    del self.table[key]
                    removed += 1
                    expired_by_partition[p] = expired_by_partition.get(p, 0) + 1
        add_expired(self.table, expired_by_partition, new_stats)
        return removed


def hold_time(marks: list[list[float]], end: float) -> tuple[float, int]:
    """Total hold seconds and hold count from start(+1)/end(-1) marks in any arrival order."""
    total, count, started = 0.0, 0, None
    for ts, kind in sorted(marks, key=lambda m: (m[0], -m[1])):
        if kind == 1 and started is None:
            started = ts
            count += 1
        elif kind == -1 and started is not None:
            total += ts - started
            started = None
    if started is not None:  # hold never ended: it lasted until the contact did
        total += max(0.0, end - started)
    return total, count
