"""Repeat contacts and first contact resolution (FCR), one batch at a time.

streams/contacts.py writes one compact record per contact step to the internal topic
`contactpulse-customer-contacts`, keyed by the customer's keyed hash (streams/identity.py), so every
contact of one customer lands on one partition and one worker owns that customer's history whatever
partition, queue or channel the contacts came from. Records (JSON, built by customer_contact_records):
    {"k": "start",   "c": contact_id, "t": start, "q": queue, "ch": channel}          once offered
    {"k": "handled", "c": contact_id, "t": start, "q": queue, "ch": channel,
     "a": agent or null, "r": agent disposition (bool)}                               once handled
    {"k": "handled", ..., "u": true}   a handled contact without a usable identifier, keyed by contact_id
Every contact of the customer (answered, abandoned, still waiting) can be a repeat of an earlier one;
only handled contacts are FCR candidates. A candidate is a repeat-based first-contact resolution when
the customer's NEXT contact starts more than repeat_window_seconds after it (or never comes).

Key layout (partition first, see streams/state.py):
    "{p}|u|{customer}"                 the customer's recent contacts in (start, contact_id) order
    "{p}|n|{contact_id}"               a handled contact without identifier (dedupe only)
    "{p}|f|{hour}|{queue}|{channel}"   counts of candidates that STARTED in that local hour
    "{p}|g|{day}|{queue}|{agent}"      per-agent counts of candidates that started that local day
    "{p}|s"                            bookkeeping
Counts only ever change under a per-key offset watermark "o", so replays after a crash count nothing
twice; whether a count is provisional or final is decided at scrape time (metrics/fcr.py).
"""
from __future__ import annotations

import time
from bisect import bisect_right
from typing import Any, Callable, MutableMapping

from metrics.kpi import day_start, interval_start
from streams.config import Settings
from streams.events import CHANNELS, Rejection, decode_object
from streams.pipeline import BatchProcessor, BatchResult, Bookkeeping, Message
from streams.state import BatchView, json_bytes, owned_entries
from streams.topics import CUSTOMER_CONTACTS

TOPIC = CUSTOMER_CONTACTS
# Write order inside a batch: counts, then the records that decide what was counted, then bookkeeping.
FLUSH_ORDER = ("f", "g", "u", "n", "s")
# A customer's history keeps at most this many contacts (a robot dialler must not grow one key forever);
# the oldest drop out first, with their counts left as they were.
MAX_CUSTOMER_CONTACTS = 100
HOUR = 3600
OVERFLOW = "__overflow__"  # agent label past the max_agents budget (as in streams/agents.py)
KINDS = ("start", "handled")


def customer_contact_records(rec: dict, contact_id: str) -> list[tuple[str, bytes, bytes]]:
    """Records for the repeat pipeline that this contact record newly qualifies for (called by contacts.py).

    Flags in the record ("fs", "fh") make each record go out once: they are written with the contact
    record, so a replay re-sends only what was never written (and the consumer drops duplicates anyway).
    """
    out = []
    customer = rec.get("cust")
    if customer and "off" in rec and "fs" not in rec:
        rec["fs"] = 1
        out.append((TOPIC, customer.encode(), json_bytes(
            {"k": "start", "c": contact_id, "t": rec["off"], "q": rec["q"], "ch": rec["ch"]})))
    # Only once the offer is in too: it usually carries the customer, and an end that arrives first
    # (out of order) would otherwise go out as "unknown customer" for good.
    if rec.get("handled") is True and "fh" not in rec and "off" in rec:
        rec["fh"] = 1
        value = {"k": "handled", "c": contact_id, "t": rec.get("off", rec["ans"]), "q": rec["q"],
                 "ch": rec["ch"], "a": rec.get("agent"), "r": bool(rec.get("res"))}
        if not customer:
            value["u"] = True  # counted as unknown customer, never matched
        out.append((TOPIC, (customer or contact_id).encode(), json_bytes(value)))
    return out


def parse_record(raw: bytes | None, key: bytes | None, max_bytes: int) -> dict | Rejection:
    """The internal record, validated like any input: the topic is ours, but a bug must not crash the worker."""
    obj = decode_object(raw, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    if not key or len(key) > 128:
        return Rejection("missing_field", "record must be keyed by the customer hash or contact_id")
    if obj.get("k") not in KINDS:
        return Rejection("unknown_type", f"'k' must be one of {', '.join(KINDS)}")
    for name in ("c", "q"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            return Rejection("missing_field", f"'{name}' is required")
    if not isinstance(obj.get("ch"), str) or obj["ch"] not in CHANNELS:
        return Rejection("unknown_channel", "'ch' must be a known channel")
    t = obj.get("t")
    # The bound parse_ts puts on event times (1e14 ms): past it a local date is out of datetime's range.
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1e11:
        return Rejection("bad_timestamp", "'t' must be epoch seconds")
    if obj.get("a") is not None and not isinstance(obj["a"], str):
        return Rejection("wrong_type", "'a' must be a string or null")
    return obj


def new_stats() -> dict:
    return {"o": -1, "acc": {}, "rej": {}, "dup": 0, "agents": [], "agent_overflow": 0}


def new_bucket() -> dict:
    # n: candidates; rep: followed by a repeat; ares: agent marked resolved; ares_rep: marked resolved
    # and repeated anyway; unk: handled without identifier; pairs: "from>to" channel -> repeats
    return {"o": -1, "n": 0, "rep": 0, "ares": 0, "ares_rep": 0, "unk": 0, "pairs": {}}


class _Touched:
    """Buckets touched by one message: each is checked against the offset once and then reused, so two
    changes to one bucket from one message both land (and a replay of that message lands neither)."""

    def __init__(self, view: BatchView, offset: int):
        self.view, self.offset, self.seen = view, offset, {}

    def get(self, key: str) -> dict | None:
        if key in self.seen:
            return self.seen[key]
        bucket = self.view.get(key) or new_bucket()
        if self.offset <= bucket["o"]:
            self.seen[key] = None  # already holds this message's effect (written before a crash)
            return None
        bucket["o"] = self.offset
        self.view.put(key, bucket)
        self.seen[key] = bucket
        return bucket


class RepeatProcessor(BatchProcessor):
    flush_order = FLUSH_ORDER

    def __init__(self, settings: Settings, table: MutableMapping[str, Any], clock: Callable[[], float] = time.time):
        super().__init__(settings, table, clock)
        self.window = settings.repeat_window_seconds

    def _process(self, view: BatchView, msg: Message, now: float, result: BatchResult) -> None:
        # `now` is unused: records carry their contact's event time and are never too late or too old.
        p, o = msg.partition, msg.offset
        bk = Bookkeeping(view, msg, result, new_stats)
        rec = parse_record(msg.value, msg.key, self.s.max_message_bytes)
        if isinstance(rec, Rejection):
            bk.reject(*rec)
            return
        key = msg.key.decode("utf-8", "replace")
        touched = _Touched(view, o)
        if rec.get("u"):
            outcome = self._unknown(view, p, o, rec, touched)
        else:
            outcome = self._customer(view, p, o, key, rec, touched, bk)
        if outcome == "dup":
            bk.duplicate()
        else:
            bk.accept(rec["k"])

    # -- customers without identifier --------------------------------------------------------------
    def _unknown(self, view: BatchView, p: int, o: int, rec: dict, touched: _Touched) -> str:
        nkey = f"{p}|n|{rec['c']}"
        seen = view.get(nkey)
        if seen is not None:
            return "done" if o <= seen["o"] else "dup"
        bucket = touched.get(self._hour_key(p, rec["t"], rec["q"], rec["ch"]))
        if bucket is not None:
            bucket["unk"] += 1
        view.put(nkey, {"o": o, "t": rec["t"]})
        return "new"

    # -- a customer's history ----------------------------------------------------------------------
    def _customer(self, view: BatchView, p: int, o: int, key: str, rec: dict, touched: _Touched,
                  bk: Bookkeeping) -> str:
        hkey = f"{p}|u|{key}"
        hist = view.get(hkey)
        if hist is not None and o <= hist["o"]:
            return "done"  # applied before a restart; its counts were written before the history
        if hist is None:
            hist = {"o": -1, "h": []}
        entry = next((e for e in hist["h"] if e["c"] == rec["c"]), None)
        if rec["k"] == "start":
            if entry is not None and entry.get("s"):
                return "dup"
            if entry is None:
                self._insert(hist, {"c": rec["c"], "t": rec["t"], "q": rec["q"], "ch": rec["ch"], "s": 1}, p, touched)
            else:  # its handled record came first and placed it already: nothing left to change
                entry["s"] = 1
        else:
            if entry is not None and entry.get("h"):
                return "dup"
            if entry is None:  # handled without a start record (identifier known only at the end)
                entry = {"c": rec["c"], "t": rec["t"], "q": rec["q"], "ch": rec["ch"]}
                self._insert(hist, entry, p, touched)
            entry["h"] = 1
            entry["a"] = bk.agent_label(rec.get("a"), self.s.max_agents, OVERFLOW)
            entry["r"] = bool(rec.get("r"))
            self._count_candidate(entry, p, touched)
        hist["o"] = o
        view.put(hkey, hist)
        return "new"

    def _insert(self, hist: dict, entry: dict, p: int, touched: _Touched) -> None:
        """Put the contact in (start, contact_id) order and link it to its neighbours.

        Invariant: an entry's "nx" is its immediate successor [start, channel, contact_id] when that starts
        within the repeat window (inclusive), else absent. A new entry can only change its predecessor's
        successor, so out-of-order arrival (a repeat seen before the contact it repeats) ends the same.
        """
        entries = hist["h"]
        order = [(e["t"], e["c"]) for e in entries]
        i = bisect_right(order, (entry["t"], entry["c"]))
        entries.insert(i, entry)
        if i + 1 < len(entries):
            nxt = entries[i + 1]
            if nxt["t"] - entry["t"] <= self.window:
                entry["nx"] = [nxt["t"], nxt["ch"], nxt["c"]]
        if i > 0:
            prev = entries[i - 1]
            if entry["t"] - prev["t"] <= self.window:
                before = prev.get("nx")
                prev["nx"] = [entry["t"], entry["ch"], entry["c"]]
                if prev.get("h"):
                    self._repeat_changed(prev, before, p, touched)
        while len(entries) > MAX_CUSTOMER_CONTACTS:
            entries.pop(0)

    # -- counts ------------------------------------------------------------------------------------
    def _hour_key(self, p: int, start: float, queue: str, channel: str) -> str:
        return f"{p}|f|{int(interval_start(start, HOUR, self.tz))}|{queue}|{channel}"

    def _buckets(self, entry: dict, p: int, touched: _Touched) -> list[dict]:
        """The queue/channel hour bucket and, within the agent budget, the agent day bucket of a candidate."""
        out = [touched.get(self._hour_key(p, entry["t"], entry["q"], entry["ch"]))]
        agent = entry.get("a")
        if agent is not None:
            out.append(touched.get(f"{p}|g|{int(day_start(entry['t'], self.tz))}|{entry['q']}|{agent}"))
        return [b for b in out if b is not None]

    def _count_candidate(self, entry: dict, p: int, touched: _Touched) -> None:
        for b in self._buckets(entry, p, touched):
            b["n"] += 1
            if entry["r"]:
                b["ares"] += 1
        if entry.get("nx"):
            self._repeat_changed(entry, None, p, touched)

    def _repeat_changed(self, entry: dict, before: list | None, p: int, touched: _Touched) -> None:
        """A candidate's next contact appeared (before None) or moved earlier (another channel, maybe)."""
        after = entry["nx"]
        for b in self._buckets(entry, p, touched):
            pairs = b.setdefault("pairs", {})
            if before is None:
                b["rep"] += 1
                if entry["r"]:
                    b["ares_rep"] += 1
            else:
                old = f"{entry['ch']}>{before[1]}"
                pairs[old] = pairs.get(old, 0) - 1
            new = f"{entry['ch']}>{after[1]}"
            pairs[new] = pairs.get(new, 0) + 1

    # -- housekeeping (called from a timer) --------------------------------------------------------
    def expire(self, partitions: set[int] | None, now: float | None = None, shard: tuple[int, int] = (0, 1)) -> int:
        """Forget contacts no later contact can repeat any more, and buckets older than the longest window.

        A contact can still be repeated while start + window + grace >= now (grace = allowed lateness,
        for contacts that reach us late); buckets are kept for the 7-day window plus one day.
        """
        now = self.clock() if now is None else now
        horizon = now - self.window - self.s.allowed_lateness_seconds
        keep_buckets = now - 8 * 86400
        removed = 0
        for key, _p, kind, rest, value in owned_entries(self.table, ("u", "n", "f", "g"), partitions, shard):
            if kind == "u":
                kept = [e for e in value["h"] if e["t"] >= horizon]
                if not kept:
                    del self.table[key]
                    removed += 1
                elif len(kept) < len(value["h"]):
                    removed += len(value["h"]) - len(kept)
                    self.table[key] = {**value, "h": kept}
            elif kind == "n":
                if value["t"] < horizon:
                    del self.table[key]
                    removed += 1
            elif kind in ("f", "g"):
                start = int(rest[0])
                if start + (HOUR if kind == "f" else 86400) < keep_buckets:
                    del self.table[key]
                    removed += 1
        return removed
