"""Asterisk / FreePBX `queue_log` -> contact events.

A line is `epoch|callid|queuename|agent|event|data1|data2|...` (Asterisk "Queue Logs" documentation):

    ENTERQUEUE(url|callerid)                               -> offered
    CONNECT(holdtime|bridgedchanneluniqueid|ringtime)      -> answered (agent = the agent field)
    ABANDON(position|origposition|waittime)                -> abandoned
    EXITWITHTIMEOUT(position|origposition|waittime)        -> abandoned
    EXITWITHKEY(key|position|origposition|waittime)        -> abandoned
    EXITEMPTY(position|origposition|waittime)              -> abandoned
    COMPLETEAGENT / COMPLETECALLER(holdtime|calltime|origposition)   -> ended
    TRANSFER / BLINDTRANSFER / ATTENDEDTRANSFER(...)       -> transferred + ended
    RINGNOANSWER(ringtime)                                 -> nothing, counted as "ringnoanswer"
    other documented events (ADDMEMBER, PAUSE, ...)        -> nothing, counted as "not_mapped"
    anything else                                          -> nothing, counted as "unknown_event"

The worker computes waits from event times (answered.ts - offered.ts), which is what Asterisk's own
holdtime/waittime fields measure, so the data fields are not needed. ts is the line's epoch in ms.
contact_id is `<callid>@<queue>`: one queue visit (a caller transferred to a second queue keeps its
Asterisk uniqueid, and the worker allows one offered/answered per contact). See docs/adapters.md.
"""
from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import AsyncIterator, Iterable, Iterator

from streams.adapters import Emitted, Skip, classify_customer, contact, ident, label, make_event_id

SOURCE = "ql"
ABANDON_EVENTS = frozenset({"ABANDON", "EXITWITHTIMEOUT", "EXITWITHKEY", "EXITEMPTY"})
COMPLETE_EVENTS = frozenset({"COMPLETEAGENT", "COMPLETECALLER"})
TRANSFER_EVENTS = frozenset({"TRANSFER", "BLINDTRANSFER", "ATTENDEDTRANSFER"})
# Documented queue_log events that carry nothing the contact contract needs.
KNOWN_IGNORED = frozenset({
    "RINGCANCELED", "AGENTDUMP", "AGENTLOGIN", "AGENTLOGOFF", "AGENTCALLBACKLOGIN", "AGENTCALLBACKLOGOFF",
    "ADDMEMBER", "REMOVEMEMBER", "PAUSE", "UNPAUSE", "PAUSEALL", "UNPAUSEALL", "PAUSECUSTOM",
    "CONFIGRELOAD", "QUEUESTART", "DID", "INFO", "JOINEMPTY", "JOINUNAVAIL", "SYSCOMPAT",
    "ENTERQUEUE_TIMEOUT", "ADDMEMBERPENALTY", "REMOVEMEMBERPENALTY",
})
CHANNEL = "voice"


def convert_line(line: str) -> list[Emitted] | Skip:
    """One queue_log line -> its contact events, or a Skip with a bounded reason."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return Skip("blank_line")
    fields = line.split("|")
    if len(fields) < 5:
        return Skip("malformed_line", "fewer than 5 '|'-separated fields")
    epoch_s, callid, queue_raw, agent_raw, event = (f.strip() for f in fields[:5])
    data = fields[5:]
    try:
        epoch = float(epoch_s)
    except ValueError:
        return Skip("malformed_line", "first field is not a UNIX timestamp")
    if not 0 < epoch < 1e11:
        return Skip("malformed_line", "timestamp out of range")
    ts = round(epoch * 1000)
    event = event.upper()
    if event == "RINGNOANSWER":
        return Skip("ringnoanswer")
    if event in KNOWN_IGNORED:
        return Skip("not_mapped", event)
    if event not in ABANDON_EVENTS | COMPLETE_EVENTS | TRANSFER_EVENTS | {"ENTERQUEUE", "CONNECT"}:
        return Skip("unknown_event", event[:40])
    if callid in ("", "NONE", "REALTIME") or queue_raw in ("", "NONE"):
        return Skip("malformed_line", f"{event} without a call id or queue")
    queue = label(queue_raw)
    if queue is None:
        return Skip("malformed_line", "queue name has no usable characters")
    contact_id = ident(f"{callid}@{queue.replace(' ', '_')}")

    def eid(out_type: str) -> str:
        return make_event_id(SOURCE, callid, queue_raw, event, epoch_s, out_type)

    if event == "ENTERQUEUE":
        callerid = data[1].strip() if len(data) > 1 else ""
        return [contact(eid("offered"), "offered", ts, contact_id, queue, CHANNEL,
                        customer=classify_customer(callerid))]
    agent = label(agent_raw) if agent_raw not in ("", "NONE") else None
    if event in ABANDON_EVENTS:
        return [contact(eid("abandoned"), "abandoned", ts, contact_id, queue, CHANNEL)]
    if agent is None:
        return Skip("no_agent", f"{event} without an agent")
    if event == "CONNECT":
        return [contact(eid("answered"), "answered", ts, contact_id, queue, CHANNEL, agent_id=agent)]
    if event in COMPLETE_EVENTS:
        return [contact(eid("ended"), "ended", ts, contact_id, queue, CHANNEL, agent_id=agent)]
    # TRANSFER family: the queue call is over for this queue (no COMPLETE* line follows).
    return [contact(eid("transferred"), "transferred", ts, contact_id, queue, CHANNEL, agent_id=agent),
            contact(eid("ended"), "ended", ts, contact_id, queue, CHANNEL, agent_id=agent)]


def convert_lines(lines: Iterable[str], stats: Counter | None = None) -> Iterator[Emitted]:
    """Events of many lines in order; skipped lines are counted in stats by reason."""
    for line in lines:
        out = convert_line(line)
        if isinstance(out, Skip):
            if stats is not None and out.reason != "blank_line":
                stats[out.reason] += 1
            continue
        if stats is not None:
            stats["lines_mapped"] += 1
        yield from out


def read_queue_log(path: str | os.PathLike, stats: Counter | None = None) -> Iterator[Emitted]:
    """Every event of a whole queue_log file (read as UTF-8, undecodable bytes replaced)."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as fh:
        yield from convert_lines(fh, stats)


async def tail_queue_log(path: str | os.PathLike, *, poll_interval: float = 0.5, from_start: bool = False,
                         stats: Counter | None = None, stop: asyncio.Event | None = None
                         ) -> AsyncIterator[Emitted]:
    """Follow a live queue_log like `tail -F`, yielding events as whole lines arrive.

    Survives rotation: when the path points to a new file (inode change, e.g. logrotate's rename) the
    rest of the old file is read first, then the new one from its start; when the file shrinks
    (copytruncate) reading restarts at 0; while the path is missing the old handle is still drained.
    A line is only parsed once its newline has arrived. Stops when `stop` is set or on cancellation.
    Starts at the end of the existing file unless from_start (with deterministic event ids a re-read
    from the start is harmless: the worker drops the repeats).
    """
    fh = None
    ident_ = None
    buf = b""
    first_open = True

    def handle(raw: bytes):
        out = convert_line(raw.decode("utf-8", errors="replace"))
        if isinstance(out, Skip):
            if stats is not None and out.reason != "blank_line":
                stats[out.reason] += 1
            return ()
        if stats is not None:
            stats["lines_mapped"] += 1
        return out

    try:
        while stop is None or not stop.is_set():
            if fh is None:
                try:
                    fh = open(path, "rb")
                except FileNotFoundError:
                    fh = None
                else:
                    st = os.fstat(fh.fileno())
                    ident_ = (st.st_dev, st.st_ino)
                    if first_open and not from_start:
                        fh.seek(0, os.SEEK_END)
                    first_open = False
                    buf = b""
            if fh is not None:
                while True:
                    chunk = fh.read(65536)
                    if not chunk:
                        break
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        for ev in handle(raw):
                            yield ev
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    st = None  # rotated away, the new file is not there yet: keep draining the old one
                if st is not None and (st.st_dev, st.st_ino) != ident_:
                    rest = fh.read()  # whatever the writer added before it switched files
                    buf += rest
                    *lines, buf = buf.split(b"\n")
                    if buf:
                        lines.append(buf)  # the old file is finished: its last line is complete
                    buf = b""
                    fh.close()
                    fh = None
                    for raw in lines:
                        for ev in handle(raw):
                            yield ev
                    if stats is not None:
                        stats["rotations"] += 1
                    continue  # open the new file at once
                if st is not None and st.st_size < fh.tell():
                    fh.seek(0)
                    buf = b""
                    if stats is not None:
                        stats["truncations"] += 1
                    continue
            if stop is not None:
                try:
                    await asyncio.wait_for(stop.wait(), poll_interval)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(poll_interval)
    finally:
        if fh is not None:
            fh.close()
