"""Asterisk queue_log adapter, its live tailer, and the replay --report KPI table built from it.

Fixture tests/fixtures/adapters/queue_log.sample, T = 1772442000 = 2026-03-02 09:00:00 UTC. Calls:

  call  callid          queue    enter   wait ends (line)              wait  outcome
  A     1772442010.1    support  T+10    CONNECT T+25 SIP/201          15    answered, COMPLETEAGENT T+205
  B     1772442030.2    support  T+30    CONNECT T+70 SIP/202          40    answered (RINGNOANSWER T+45 ignored),
                                                                             COMPLETECALLER T+400
  C     1772442100.3    support  T+100   ABANDON T+103                  3    short abandon (<= 5 s)
  D     1772442200.4    support  T+200   ABANDON T+260                 60    abandoned
  I     1772442300.5    sales    T+300   CONNECT T+320 SIP/301         20    answered (exactly 20: within), COMPLETEAGENT T+500
  J     1772442400.6    sales    T+400   EXITEMPTY T+410               10    abandoned
  E     1772442880.7    support  T+880   CONNECT T+910 SIP/202         30    answered at 09:15:10, TRANSFER T+1000
  E'    1772442880.7    sales    T+1001  CONNECT T+1030 SIP/301        29    answered (2nd visit, own contact_id),
                                                                             COMPLETEAGENT T+1200
  F     1772442950.8    support  T+950   EXITWITHTIMEOUT T+1250       300    abandoned
  G     1772443000.9    support  T+1000  CONNECT T+1005 Local/201@... 5    answered, COMPLETEAGENT T+1100
  H     1772443010.10   support  T+1010  EXITWITHKEY T+1015             5    short abandon (exactly 5: excluded)
  plus QUEUESTART + ADDMEMBER (not_mapped), FOOBAR (unknown_event), one garbage line (malformed_line).

Per 15-minute interval where the wait ended (default: T = 20 s, short abandon 5 s):
  09:00 sales    offered 2 (I, J)        answered 1  within 1  SL 1/2 = 50.0  ASA 20/1 = 20.0
                 abandoned 1 -> 1/2 = 50.0   short 0
  09:00 support  offered 3 (A, B, D)     answered 2  within 1 (A)  SL 1/3 = 33.3  ASA (15+40)/2 = 27.5
                 abandoned 1 (D) -> 33.3   short 1 (C)
  09:15 sales    offered 1 (E')          answered 1  within 0  SL 0.0  ASA 29.0  abandoned 0 -> 0.0
  09:15 support  offered 3 (E, G, F)     answered 2  within 1 (G)  SL 33.3  ASA (30+5)/2 = 17.5
                 abandoned 1 (F) -> 33.3   short 1 (H)
"""
from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest

from streams import events as contract
from streams import replay
from streams.adapters import Skip, make_event_id
from streams.adapters.queue_log import convert_line, read_queue_log, tail_queue_log

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "adapters" / "queue_log.sample"
T = 1772442000


def test_event_id_derivation_is_pinned():
    # Changing the derivation changes every id and breaks dedupe across versions: keep it stable.
    assert make_event_id("ql", "1772442010.1", "support", "ENTERQUEUE", "1772442010", "offered") == \
        "ql-f7df50dfeb1e88682cfbfa73292ec2dd"


def test_fixture_maps_to_the_hand_listed_events():
    stats = Counter()
    got = [(e.event["type"], e.event["ts"] // 1000 - T, e.event["contact_id"], e.event["queue"],
            e.event.get("agent_id")) for e in read_queue_log(FIXTURE, stats)]
    assert got == [
        ("offered", 10, "1772442010.1@support", "support", None),
        ("answered", 25, "1772442010.1@support", "support", "SIP/201"),
        ("offered", 30, "1772442030.2@support", "support", None),
        ("answered", 70, "1772442030.2@support", "support", "SIP/202"),
        ("offered", 100, "1772442100.3@support", "support", None),
        ("abandoned", 103, "1772442100.3@support", "support", None),
        ("offered", 200, "1772442200.4@support", "support", None),
        ("ended", 205, "1772442010.1@support", "support", "SIP/201"),
        ("abandoned", 260, "1772442200.4@support", "support", None),
        ("offered", 300, "1772442300.5@sales", "sales", None),
        ("answered", 320, "1772442300.5@sales", "sales", "SIP/301"),
        ("ended", 400, "1772442030.2@support", "support", "SIP/202"),
        ("offered", 400, "1772442400.6@sales", "sales", None),
        ("abandoned", 410, "1772442400.6@sales", "sales", None),
        ("ended", 500, "1772442300.5@sales", "sales", "SIP/301"),
        ("offered", 880, "1772442880.7@support", "support", None),
        ("answered", 910, "1772442880.7@support", "support", "SIP/202"),
        ("offered", 950, "1772442950.8@support", "support", None),
        ("transferred", 1000, "1772442880.7@support", "support", "SIP/202"),
        ("ended", 1000, "1772442880.7@support", "support", "SIP/202"),
        ("offered", 1000, "1772443000.9@support", "support", None),
        ("offered", 1001, "1772442880.7@sales", "sales", None),
        ("answered", 1005, "1772443000.9@support", "support", "Local/201_from-queue/n"),
        ("offered", 1010, "1772443010.10@support", "support", None),
        ("abandoned", 1015, "1772443010.10@support", "support", None),
        ("answered", 1030, "1772442880.7@sales", "sales", "SIP/301"),
        ("ended", 1100, "1772443000.9@support", "support", "Local/201_from-queue/n"),
        ("ended", 1200, "1772442880.7@sales", "sales", "SIP/301"),
        ("abandoned", 1250, "1772442950.8@support", "support", None),
    ]
    assert stats == Counter(lines_mapped=28, not_mapped=2, ringnoanswer=1, unknown_event=1, malformed_line=1)


def test_every_event_is_accepted_by_the_worker_contract_and_ids_are_stable_and_unique():
    first = list(read_queue_log(FIXTURE))
    again = list(read_queue_log(FIXTURE))
    assert [e.event for e in first] == [e.event for e in again]
    ids = [e.event["event_id"] for e in first]
    assert len(set(ids)) == len(ids) == 29
    for em in first:
        parsed = contract.parse_contact(__import__("orjson").dumps(em.event), now=T + 3600)
        assert isinstance(parsed, contract.ContactEvent), (em.event, parsed)
        assert parsed.channel == "voice"
    assert all(e.event["ts"] % 1000 == 0 for e in first)


def test_single_lines():
    offered = convert_line("1772442010|1772442010.1|support|NONE|ENTERQUEUE||+37120000001|1\n")
    assert [e.event for e in offered] == [{
        "event_id": "ql-f7df50dfeb1e88682cfbfa73292ec2dd", "type": "offered", "ts": 1772442010000,
        "contact_id": "1772442010.1@support", "queue": "support", "channel": "voice",
        "customer": {"phone": "+37120000001"}}]
    # An anonymous caller id is no customer; a queue name with a space keeps it in the label, not the id.
    anon = convert_line("1772442010|77.1|Tier 2|NONE|ENTERQUEUE||anonymous")
    assert anon[0].event["queue"] == "Tier 2" and anon[0].event["contact_id"] == "77.1@Tier_2"
    assert "customer" not in anon[0].event
    transfer = convert_line("1772443000|77.1|support|SIP/202|BLINDTRANSFER|4000|from-queue|30|90|1")
    assert [(e.event["type"], e.event["agent_id"]) for e in transfer] == [("transferred", "SIP/202"),
                                                                          ("ended", "SIP/202")]
    assert transfer[0].event["event_id"] != transfer[1].event["event_id"]
    assert convert_line("1772443000|77.1|support|NONE|CONNECT|5|x|1") == Skip("no_agent", "CONNECT without an agent")
    assert convert_line("1772443000|77.1|support|SIP/1|RINGNOANSWER|1000") == Skip("ringnoanswer")
    assert convert_line("abc|77.1|support|SIP/1|CONNECT|5").reason == "malformed_line"
    assert convert_line("1772443000|77.1|support").reason == "malformed_line"
    assert convert_line("1772443000|NONE|support|SIP/1|PAUSE|").reason == "not_mapped"
    assert convert_line("1772443000|77.1|support|SIP/1|WHATEVER|").reason == "unknown_event"


# -- the tailer ----------------------------------------------------------------------------------------
ENTER = "{t}|{c}|support|NONE|ENTERQUEUE||+37120000001|1\n"
CONNECT = "{t}|{c}|support|SIP/201|CONNECT|5|x|1\n"
COMPLETE = "{t}|{c}|support|SIP/201|COMPLETEAGENT|5|60|1\n"


async def _collect(agen, out: asyncio.Queue):
    async for em in agen:
        await out.put((em.event["type"], em.event["contact_id"]))


async def _next(q: asyncio.Queue):
    return await asyncio.wait_for(q.get(), 5)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


async def test_tailer_follows_appends_partial_lines_rename_rotation_and_truncation(tmp_path):
    log = tmp_path / "queue_log"
    log.write_text(ENTER.format(t=T, c="old.1"))  # already there at start: tail starts at the end
    stats, stop, q = Counter(), asyncio.Event(), asyncio.Queue()
    task = asyncio.create_task(_collect(tail_queue_log(log, poll_interval=0.02, stats=stats, stop=stop), q))
    await asyncio.sleep(0.1)
    _append(log, ENTER.format(t=T + 1, c="a.1"))
    assert await _next(q) == ("offered", "a.1@support")
    # Half a line is not parsed until its newline arrives.
    line = CONNECT.format(t=T + 2, c="a.1")
    _append(log, line[:20])
    await asyncio.sleep(0.15)
    assert q.empty()
    _append(log, line[20:])
    assert await _next(q) == ("answered", "a.1@support")
    # logrotate-style rename: the writer finishes a line in the old file, then a new file appears.
    os.rename(log, tmp_path / "queue_log.1")
    await asyncio.sleep(0.1)
    _append(tmp_path / "queue_log.1", ENTER.format(t=T + 3, c="b.2"))
    log.write_text(COMPLETE.format(t=T + 4, c="a.1"))
    assert await _next(q) == ("offered", "b.2@support")  # the rest of the old file first
    assert await _next(q) == ("ended", "a.1@support")  # then the new file from its start
    # copytruncate-style: the same inode shrinks to nothing and starts again.
    with open(log, "w", encoding="utf-8"):
        pass
    await asyncio.sleep(0.1)
    _append(log, ENTER.format(t=T + 5, c="c.3"))
    assert await _next(q) == ("offered", "c.3@support")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert stats["rotations"] == 1 and stats["truncations"] == 1
    assert stats["lines_mapped"] == 5
    assert q.empty()


async def test_tailer_from_start_and_waiting_for_a_missing_file(tmp_path):
    log = tmp_path / "queue_log"
    stop, q = asyncio.Event(), asyncio.Queue()
    task = asyncio.create_task(_collect(tail_queue_log(log, poll_interval=0.02, from_start=True, stop=stop), q))
    await asyncio.sleep(0.1)  # no file yet: keeps polling
    log.write_text(ENTER.format(t=T, c="x.1") + "garbage\n" + CONNECT.format(t=T + 9, c="x.1"))
    assert await _next(q) == ("offered", "x.1@support")
    assert await _next(q) == ("answered", "x.1@support")
    stop.set()
    await asyncio.wait_for(task, 5)


# -- replay --report -----------------------------------------------------------------------------------
EXPECTED_CSV = """\
interval_start,queue,channel,offered,answered,answered_within_20s,sl_20s_pct,asa_s,abandoned,abandon_pct,short_abandoned
2026-03-02T09:00:00+00:00,sales,voice,2,1,1,50.0,20.0,1,50.0,0
2026-03-02T09:00:00+00:00,support,voice,3,2,1,33.3,27.5,1,33.3,1
2026-03-02T09:15:00+00:00,sales,voice,1,1,0,0.0,29.0,0,0.0,0
2026-03-02T09:15:00+00:00,support,voice,3,2,1,33.3,17.5,1,33.3,1
"""


def test_report_csv_matches_the_hand_computed_table(capsys):
    assert replay.main([str(FIXTURE), "--format", "queue_log", "--report", "--csv"]) == 0
    out = capsys.readouterr()
    assert out.out == EXPECTED_CSV
    assert "malformed_line=1, not_mapped=2, ringnoanswer=1, unknown_event=1" in out.err


def test_report_with_other_thresholds_and_short_abandon():
    # --short-abandon 2: C (3 s) and H (5 s) become real abandons; thresholds 10 and 30:
    #   09:00 sales   I 20, J ab 10          offered 2 ans 1  <=10: 0  <=30: 1 (I)     -> 0.0 / 50.0
    #   09:00 support A 15, B 40, C 3, D 60  offered 4 ans 2  <=10: 0  <=30: 1 (A)     -> 0.0 / 25.0, ab 2 = 50.0
    #   09:15 sales   E' 29                  offered 1 ans 1  <=10: 0  <=30: 1         -> 0.0 / 100.0
    #   09:15 support E 30, G 5, F 300, H 5  offered 4 ans 2  <=10: 1 (G) <=30: 2 (E=30) -> 25.0 / 50.0, ab 2 = 50.0
    events = replay.read_events(str(FIXTURE), "queue_log")
    rows = replay.compute_report(events, thresholds=(10, 30), short_abandon=2)
    lines = replay.report_lines(rows, thresholds=(10, 30))
    assert lines[0] == ["interval_start", "queue", "channel", "offered", "answered", "answered_within_10s",
                        "sl_10s_pct", "answered_within_30s", "sl_30s_pct", "asa_s", "abandoned", "abandon_pct",
                        "short_abandoned"]
    assert [line[1:] for line in lines[1:]] == [
        ["sales", "voice", "2", "1", "0", "0.0", "1", "50.0", "20.0", "1", "50.0", "0"],
        ["support", "voice", "4", "2", "0", "0.0", "1", "25.0", "27.5", "2", "50.0", "0"],
        ["sales", "voice", "1", "1", "0", "0.0", "1", "100.0", "29.0", "0", "0.0", "0"],
        ["support", "voice", "4", "2", "1", "25.0", "2", "50.0", "17.5", "2", "50.0", "0"],
    ]


def test_report_30_minute_intervals_in_a_local_time_zone(capsys):
    # Intervals align to the site's local clock. In Asia/Kathmandu (+05:45) the 30-minute intervals are
    # 14:30-15:00 and 15:00-15:30 local = 08:45-09:15 and 09:15-09:45 UTC: the same split as the 15-minute
    # table above, labelled in local time.
    assert replay.main([str(FIXTURE), "--format", "queue_log", "--report", "--csv", "--interval", "1800",
                        "--tz", "Asia/Kathmandu"]) == 0
    body = capsys.readouterr().out.splitlines()[1:]
    assert body == [
        "2026-03-02T14:30:00+05:45,sales,voice,2,1,1,50.0,20.0,1,50.0,0",
        "2026-03-02T14:30:00+05:45,support,voice,3,2,1,33.3,27.5,1,33.3,1",
        "2026-03-02T15:00:00+05:45,sales,voice,1,1,0,0.0,29.0,0,0.0,0",
        "2026-03-02T15:00:00+05:45,support,voice,3,2,1,33.3,17.5,1,33.3,1",
    ]
    # In UTC the same 30-minute intervals merge everything into 09:00-09:30:
    #   support offered 6 ans 4 within 2 (A, G) SL 33.3 ASA (15+40+30+5)/4 = 22.5 ab 2 = 33.3 short 2
    #   sales   offered 3 ans 2 within 1 (I)    SL 33.3 ASA (20+29)/2 = 24.5     ab 1 = 33.3 short 0
    assert replay.main([str(FIXTURE), "--format", "queue_log", "--report", "--csv", "--interval", "1800"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "2026-03-02T09:00:00+00:00,sales,voice,3,2,1,33.3,24.5,1,33.3,0",
        "2026-03-02T09:00:00+00:00,support,voice,6,4,2,33.3,22.5,2,33.3,2",
    ]


def test_report_readable_table_and_bad_arguments(capsys):
    assert replay.main([str(FIXTURE), "--format", "queue_log", "--report"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == EXPECTED_CSV.splitlines()[0].split(",")
    assert out[2].split() == ["2026-03-02T09:00:00+00:00", "sales", "voice", "2", "1", "1", "50.0", "20.0", "1",
                              "50.0", "0"]
    with pytest.raises(SystemExit):
        replay.main([str(FIXTURE), "--format", "queue_log", "--report", "--interval", "7"])
    with pytest.raises(SystemExit):
        replay.main([str(FIXTURE), "--format", "queue_log", "--speed", "0"])
    assert replay.main(["/nonexistent/queue_log", "--format", "queue_log", "--report"]) == 2
