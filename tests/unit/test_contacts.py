"""The contact processor on a plain dict: lifecycle, boundaries, dedupe, lateness, replay after a crash."""
import orjson
import pytest

from streams.config import load_settings
from streams.contacts import ContactProcessor, Message, hold_time

T0 = 1_795_000_100.0  # 2026-11-18T11:08:20Z: 500 s into a 15-minute interval (T0 % 900 == 500)
NOW = T0 + 1000


def settings(**kw):
    return load_settings(env={}, **kw)


class Feed:
    def __init__(self, **kw):
        self.table: dict = {}
        self.proc = ContactProcessor(settings(**kw), self.table, clock=lambda: NOW)
        self.offset = 0

    def msg(self, etype, cid, ts, partition=0, **fields):
        ev = {"event_id": fields.pop("event_id", f"{cid}-{etype}"), "type": etype, "ts": int(ts * 1000),
              "contact_id": cid, "queue": fields.pop("queue", "sales"), "channel": fields.pop("channel", "voice"),
              **fields}
        if etype in ("answered", "ended"):
            ev.setdefault("agent_id", "a1")
        self.offset += 1
        return Message("contact-events", partition, self.offset, cid.encode(), orjson.dumps(ev))

    def run(self, *msgs):
        return self.proc.process_batch(list(msgs))

    def window(self, kind, ts, queue="sales", channel="voice", partition=0):
        from metrics.kpi import day_start, interval_start, minute_start
        start = {"i": interval_start(ts, 900, self.proc.tz), "d": day_start(ts, self.proc.tz),
                 "m": minute_start(ts)}[kind]
        return self.table.get(f"{partition}|w|{kind}|{int(start)}|{queue}|{channel}")

    def stats(self, partition=0):
        return self.table[f"{partition}|s"]


def test_wait_of_exactly_20s_is_within_20_not_within_10():
    f = Feed()
    f.run(f.msg("offered", "c1", T0), f.msg("answered", "c1", T0 + 20))
    w = f.window("i", T0 + 20)
    assert (w["off"], w["ans"], w["aw"], w["wsum"], w["wmax"]) == (1, 1, {"20": 1}, 20.0, 20.0)


def test_abandon_at_exactly_the_short_threshold_is_excluded():
    f = Feed()
    f.run(f.msg("offered", "c1", T0), f.msg("abandoned", "c1", T0 + 5),
          f.msg("offered", "c2", T0), f.msg("abandoned", "c2", T0 + 5.001))
    w = f.window("i", T0)
    assert (w["sab"], w["ab"], w["off"], w["asum"]) == (1, 1, 1, pytest.approx(5.001))
    assert w["abw"] == {"10": 1, "20": 1}


def test_contact_counts_in_the_interval_where_its_wait_ended():
    f = Feed()
    boundary = T0 + 400  # = the next interval's start (T0 is 500 s into its interval)
    f.run(f.msg("offered", "c1", boundary - 10), f.msg("answered", "c1", boundary))
    assert f.window("i", boundary - 10) is None
    assert f.window("i", boundary)["ans"] == 1


def test_out_of_order_answer_before_offer_and_duplicates():
    f = Feed()
    f.run(f.msg("answered", "c1", T0 + 12))
    assert f.window("i", T0) is None  # nothing to count until the offer arrives
    f.run(f.msg("offered", "c1", T0), f.msg("answered", "c1", T0 + 12))  # the second answer: same event_id
    w = f.window("i", T0)
    assert (w["ans"], w["wsum"]) == (1, 12.0)
    assert f.stats()["dup"] == 1
    assert f.stats()["acc"] == {"answered": 1, "offered": 1}
    # A different event_id that answers again is a repeated one-time step: counted as duplicate too.
    f.run(f.msg("answered", "c1", T0 + 14, event_id="other"))
    assert f.stats()["dup"] == 2 and f.window("i", T0)["ans"] == 1


def test_late_event_goes_to_dead_letters():
    f = Feed(allowed_lateness_seconds=60)
    f.run(f.msg("offered", "new", T0 + 900))  # watermark moves to the next interval + 400 s
    result = f.run(f.msg("offered", "old", T0), f.msg("answered", "old", T0 + 3))
    assert [r.reason for _, r in result.dead_letters] == ["too_late"]
    assert f.stats()["rej"] == {"too_late": 1}
    assert f.window("i", T0) is None


def test_rejections_are_counted_by_reason():
    f = Feed()
    bad = [Message("contact-events", 0, 100, b"k", b"\xff\xfe"),
           Message("contact-events", 0, 101, b"k", b"[1]"),
           Message("contact-events", 0, 102, b"k", orjson.dumps({"event_id": "e", "type": "offered",
                   "ts": "2026-11-23T09:00:00", "contact_id": "k", "queue": "q", "channel": "voice"})),
           Message("contact-events", 0, 103, b"k", orjson.dumps({"event_id": "e", "type": "offered",
                   "ts": int((NOW + 3600) * 1000), "contact_id": "k", "queue": "q", "channel": "voice"})),
           Message("contact-events", 0, 104, b"k", orjson.dumps({"event_id": "e", "type": "offered",
                   "ts": int(T0 * 1000), "contact_id": "k", "queue": "q", "channel": "fax"})),
           Message("contact-events", 0, 105, b"k", b"x" * 70000)]
    result = f.run(*bad)
    assert [r.reason for _, r in result.dead_letters] == [
        "invalid_utf8", "not_an_object", "bad_timestamp", "future_timestamp", "unknown_channel", "oversize"]


def test_wrong_key_is_sent_again_with_the_contact_id():
    f = Feed()
    m = f.msg("offered", "c1", T0)
    result = f.run(m._replace(key=None))
    assert result.outputs == [("contact-events", b"c1", m.value)]
    assert f.stats()["rekey"] == 1 and f.stats()["acc"] == {}


def test_replay_after_crash_counts_nothing_twice():
    """Reprocessing messages whose effects were already written changes nothing."""
    f = Feed()
    batch = [f.msg("offered", "c1", T0), f.msg("answered", "c1", T0 + 8),
             f.msg("offered", "c2", T0 + 1), f.msg("abandoned", "c2", T0 + 40)]
    f.run(*batch)
    snapshot = orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS)
    f.run(*batch)  # the committed offset was older than the changelog: the same messages come again
    assert orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS) == snapshot


def test_replay_after_partial_write_completes_the_work_once():
    """Crash after the windows were written but before the records: the replay must not count again."""
    f = Feed()
    batch = [f.msg("offered", "c1", T0), f.msg("answered", "c1", T0 + 8)]
    view, _ = f.proc.apply(batch)
    for key in list(view.dirty):  # write only the windows, as a crash mid-flush would leave it
        if "|w|" in key:
            f.table[key] = view.values[key]
    f.run(*batch)
    w = f.window("i", T0)
    assert (w["ans"], w["wsum"]) == (1, 8.0)
    assert f.table["0|c|c1"]["counted"] is True
    assert f.stats()["acc"] == {"offered": 1, "answered": 1}


def test_hold_time_pairs_marks_in_any_order():
    assert hold_time([[50, -1], [30, 1], [70, 1], [80, -1]], end=100) == (30.0, 2)
    assert hold_time([[30, 1]], end=100) == (70.0, 1)  # never ended: held until the contact ended


def test_expire_drops_old_windows_and_finished_records():
    f = Feed()
    f.run(f.msg("offered", "c1", T0), f.msg("abandoned", "c1", T0 + 30), f.msg("offered", "c2", T0))
    # c1 finished: its record goes once its interval and the allowed lateness are over (30 min later).
    assert f.proc.expire(None, now=T0 + 30 + 900 + 900 + 1) == 1
    assert "0|c|c1" not in f.table and "0|c|c2" in f.table
    removed = f.proc.expire(None, now=T0 + 86400 + 1)  # c2 waited longer than max_open_contact_seconds
    assert "0|c|c2" not in f.table and f.stats()["expired"] == 1 and removed >= 1


def test_queue_budget():
    f = Feed(max_queues=2)
    result = f.run(f.msg("offered", "c1", T0, queue="q1"), f.msg("offered", "c2", T0, queue="q2"),
                   f.msg("offered", "c3", T0, queue="q3"))
    assert [r.reason for _, r in result.dead_letters] == ["queue_budget_exceeded"]


def test_contact_id_ending_like_the_stats_key_does_not_break_the_scrape():
    from metrics.exposition import ContactCollector

    f = Feed()
    f.run(f.msg("offered", "x|s", T0))  # record key "0|c|x|s" ends like the stats key "0|s"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in ContactCollector(f.proc.s, f.table, lambda: None, clock=lambda: NOW).collect()
               for s in fam.samples}
    assert samples[("contactpulse_events_accepted_total", (("topic", "contact-events"), ("type", "offered")))] == 1
    assert samples[("contactpulse_contacts_waiting", (("channel", "voice"), ("queue", "sales")))] == 1
