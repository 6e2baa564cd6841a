"""The wallboard's data model: snapshots built from the same samples as /metrics, colours, URL parameters,
and the Prometheus (cluster) mode's queries and fallback. The page itself: tests/integration/."""
import asyncio
import math

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from harness import Metrics, parse_metrics
from metrics.exposition import ContactCollector
from streams import wallboard
from streams.config import load_settings
from streams.contacts import ContactProcessor, Message
from streams.wallboard import BadRequest, Board, View, aggregate, parse_view, sl_status
from wallboard_expect import tile_from_metrics

T0 = 1_795_000_100.0  # 2026-11-18T11:08:20Z, 500 s into a 15-minute interval (T0 % 900 == 500)
NOW = T0 + 300  # still the same interval: 800 s into it


def settings(**kw):
    return load_settings(env={}, **kw)


def feed(s) -> dict:
    """A hand-made morning on a plain dict table (the worker's table without Kafka)."""
    table: dict = {}
    proc = ContactProcessor(s, table, clock=lambda: NOW)
    offset = 0
    msgs = []

    def ev(etype, cid, ts, queue, channel, partition=0):
        nonlocal offset
        offset += 1
        body = {"event_id": f"{cid}-{etype}", "type": etype, "ts": int(ts * 1000), "contact_id": cid,
                "queue": queue, "channel": channel}
        if etype == "answered":
            body["agent_id"] = "a1"
        msgs.append(Message("contact-events", partition, offset, cid.encode(), orjson.dumps(body)))

    # sales, two channels. voice: waits 10 (within 20, and within 10: inclusive) and 30; an abandon after
    # 40 s; c4 still waiting since T0+100.  chat: a wait of 15; c6 still waiting since T0+250.
    ev("offered", "c1", T0, "sales", "voice"), ev("answered", "c1", T0 + 10, "sales", "voice")
    ev("offered", "c2", T0, "sales", "voice"), ev("answered", "c2", T0 + 30, "sales", "voice")
    ev("offered", "c3", T0, "sales", "voice"), ev("abandoned", "c3", T0 + 40, "sales", "voice")
    ev("offered", "c4", T0 + 100, "sales", "voice")
    ev("offered", "c5", T0, "sales", "chat", partition=1), ev("answered", "c5", T0 + 15, "sales", "chat", partition=1)
    ev("offered", "c6", T0 + 250, "sales", "chat", partition=1)
    # support: one answered after 5 s, one abandoned after 3 s (a short abandon: excluded from SL).
    ev("offered", "s1", T0, "support", "voice"), ev("answered", "s1", T0 + 5, "support", "voice")
    ev("offered", "s2", T0, "support", "voice"), ev("abandoned", "s2", T0 + 3, "support", "voice")
    # billing: waits 2, 2, 2 and 25 -> 3 of 4 within 20 s = 75%, exactly 5 points under the 80% target.
    for i, wait in enumerate((2, 2, 2, 25)):
        ev("offered", f"b{i}", T0, "billing", "voice"), ev("answered", f"b{i}", T0 + wait, "billing", "voice")
    proc.process_batch(msgs)
    return table


def local_board(s, table):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ContactCollector(s, table, lambda: None, clock=lambda: NOW))
    return Board(s, registry, owned=lambda: {0, 1}, clock=lambda: NOW), registry


def test_sl_colour_boundaries_are_exact():
    # target 80%, amber band 5 points: 80% is green, 75% (exactly 5 under) amber, 74% red.
    assert sl_status(4, 5, 0.8, 5) == "green"
    assert sl_status(3, 4, 0.8, 5) == "amber"  # 0.8 - 0.05 in floats is 0.7500000000000001: would be red
    assert sl_status(74, 100, 0.8, 5) == "red"
    assert sl_status(9, 10, 0.9, 0) == "green" and sl_status(89, 100, 0.9, 0) == "red"  # no amber band
    assert sl_status(0, 0, 0.8, 5) == "none"  # nothing offered: no service level, no colour
    assert sl_status(1, 2, None, 5) == "none"  # no target configured at this threshold


def test_snapshot_from_the_worker_tables_by_hand_and_equal_to_metrics():
    s = settings()
    board, registry = local_board(s, feed(s))
    snap = asyncio.run(board.snapshot(View(None)))
    assert (snap["source"], snap["window"], snap["generated_at"]) == ("worker", "interval", NOW)
    assert snap["window_start"] == T0 - 500  # the interval started 500 s before T0
    assert snap["scope"] == "this worker: partitions 0, 1 of 4"
    tiles = {t["queue"]: t for t in snap["queues"]}
    assert list(tiles) == ["billing", "sales", "support"]  # no ?queues=: every queue, sorted
    sales = tiles["sales"]
    # voice + chat: offered 3 + 1 = 4 (answered 3, abandoned 1); within 20 s: c1 (10) and c5 (15) = 2
    assert (sales["offered"], sales["answered"], sales["abandoned"]) == (4, 3, 1)
    assert (sales["sl_numerator"], sales["sl_denominator"], sales["sl_threshold_seconds"]) == (2, 4, 20)
    assert (sales["service_level"], sales["service_level_percent"], sales["sl_status"]) == (0.5, 50, "red")
    assert sales["asa_seconds"] == pytest.approx(55 / 3)  # (10 + 30 + 15) / 3
    assert sales["abandon_ratio"] == 0.25  # 1 / 4
    assert sales["waiting"] == 2  # c4 (voice) and c6 (chat)
    assert sales["oldest_wait_seconds"] == 200.0  # c4: NOW - (T0 + 100); c6 has waited only 50 s
    assert (sales["agents_available"], sales["frt_backlog"]) == (None, None)  # no such series: "—"
    support = tiles["support"]
    # the 3-s abandon is short: excluded, so 1 of 1 answered within 20 s
    assert (support["offered"], support["sl_numerator"], support["sl_denominator"]) == (1, 1, 1)
    assert (support["service_level_percent"], support["sl_status"], support["asa_seconds"]) == (100, "green", 5.0)
    assert (support["abandon_ratio"], support["waiting"], support["oldest_wait_seconds"]) == (0.0, 0, 0.0)
    billing = tiles["billing"]
    assert (billing["sl_numerator"], billing["sl_denominator"], billing["sl_status"]) == (3, 4, "amber")
    assert billing["asa_seconds"] == 31 / 4  # (2 + 2 + 2 + 25) / 4
    # ... and every number equals what /metrics says, worked out independently from its text.
    m = Metrics(parse_metrics(generate_latest(registry).decode()))
    for queue, tile in tiles.items():
        expected = tile_from_metrics(m, queue)
        assert {k: tile[k] for k in expected} == expected, queue


def test_url_selects_queues_in_order_window_and_threshold():
    s = settings()
    board, _ = local_board(s, feed(s))
    view = parse_view({"queues": "support, sales,unknown,sales", "window": "today", "threshold": "10"}, s)
    assert view == View(("support", "sales", "unknown"), "today", 10)
    snap = asyncio.run(board.snapshot(view))
    assert [t["queue"] for t in snap["queues"]] == ["support", "sales", "unknown"]
    sales = snap["queues"][1]
    # within 10 s (inclusive): only c1 -> 1 of 4; the 10-s target is 90% -> red
    assert (sales["sl_threshold_seconds"], sales["sl_target"], sales["sl_numerator"]) == (10, 0.9, 1)
    assert (sales["service_level"], sales["sl_status"]) == (0.25, "red")
    assert snap["window_start"] == T0 - (11 * 3600 + 8 * 60 + 20)  # "today" starts at midnight UTC
    unknown = snap["queues"][2]  # asked for, never seen: a tile with no data rather than an error
    assert (unknown["offered"], unknown["service_level"], unknown["sl_status"], unknown["waiting"]) == (0, None, "none", 0)


def test_per_queue_targets_and_a_threshold_the_queue_has_no_target_for():
    s = settings(queue_targets="sales=30:0.5")
    board, _ = local_board(s, feed(s))
    tiles = {t["queue"]: t for t in asyncio.run(board.snapshot(View(None)))["queues"]}
    # sales' own target is 50% in 30 s: waits 10, 15, 30 are within 30 s -> 3 of 4 = 75% -> green
    assert (tiles["sales"]["sl_threshold_seconds"], tiles["sales"]["sl_numerator"], tiles["sales"]["sl_status"]) == (30, 3, "green")
    tiles = {t["queue"]: t for t in asyncio.run(board.snapshot(View(None, threshold=20)))["queues"]}
    # ?threshold=20: sales has no 20-s target -> the SL is shown (2 of 4) without a colour
    assert (tiles["sales"]["sl_target"], tiles["sales"]["service_level"], tiles["sales"]["sl_status"]) == (None, 0.5, "none")
    assert tiles["billing"]["sl_target"] == 0.8


@pytest.mark.parametrize("query, message", [
    ({"window": "week"}, "window: must be one of interval, trailing, today"),
    ({"threshold": "15"}, "threshold: 15 s is not a configured target (configured: 10, 20)"),
    ({"threshold": "abc"}, "threshold: expected whole seconds"),
    ({"queues": "sales,<script>"}, "queues: not a queue name"),
    ({"queues": ",".join(f"q{i}" for i in range(49))}, "queues: at most 48 queues on one board, got 49"),
])
def test_bad_url_parameters_are_refused_with_a_reason(query, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_view(query, settings())


def test_other_pipelines_series_are_summed_per_queue_when_present():
    s = settings()
    samples = [
        ("contactpulse_agents", {"queue": "sales", "state": "available"}, 3.0),
        ("contactpulse_agents", {"queue": "sales", "state": "on_contact"}, 7.0),  # not available: ignored
        ("contactpulse_tickets_awaiting_first_response", {"queue": "sales", "channel": "email", "priority": "high"}, 2.0),
        ("contactpulse_tickets_awaiting_first_response", {"queue": "sales", "channel": "social", "priority": "low"}, 5.0),
        ("contactpulse_agents", {"queue": "support", "state": "available"}, 0.0),  # present and zero: 0, not "—"
        ("contactpulse_oldest_waiting_age_seconds", {"queue": "sales", "channel": "voice"}, math.nan),  # skipped
    ]
    tiles = {t["queue"]: t for t in aggregate(samples, s, View(None))}
    assert (tiles["sales"]["agents_available"], tiles["sales"]["frt_backlog"]) == (3, 7)  # 2 + 5 tickets
    assert (tiles["support"]["agents_available"], tiles["support"]["frt_backlog"]) == (0, None)


def test_prometheus_queries_sum_over_workers_by_queue():
    q = wallboard.prometheus_queries('job="cp"')
    assert q["contactpulse_contacts_offered"] == 'sum by (queue, window) (contactpulse_contacts_offered{job="cp"})'
    assert q["contactpulse_contacts_sl_numerator"] == \
        'sum by (queue, window, threshold) (contactpulse_contacts_sl_numerator{job="cp"})'
    assert q["contactpulse_agents"] == 'sum by (queue, state) (contactpulse_agents{job="cp", state="available"})'
    o = 'contactpulse_oldest_waiting_age_seconds{job="cp"}'
    assert q["contactpulse_oldest_waiting_age_seconds"] == f"max by (queue) ({o} + (time() - timestamp({o})) * ({o} > bool 0))"
    assert len(q) == 10


def vector(*results):
    return orjson.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [NOW, str(v)]} for labels, v in results]}})


def test_cluster_mode_reads_prometheus_and_falls_back_to_the_worker_when_it_is_down():
    s = settings(wallboard_prometheus_url="http://prom.example:9090/")
    asked = []
    answers = {  # what Prometheus would return summed over two workers
        "contactpulse_contacts_offered": vector(({"queue": "sales", "window": "interval"}, 10), ({"queue": "sales", "window": "today"}, 50)),
        "contactpulse_contacts_answered": vector(({"queue": "sales", "window": "interval"}, 8)),
        "contactpulse_contacts_abandoned": vector(({"queue": "sales", "window": "interval"}, 2)),
        "contactpulse_contacts_sl_denominator": vector(({"queue": "sales", "window": "interval"}, 10)),
        "contactpulse_answer_wait_seconds_sum": vector(({"queue": "sales", "window": "interval"}, 96)),
        "contactpulse_contacts_sl_numerator": vector(({"queue": "sales", "window": "interval", "threshold": "20"}, 7),
                                                     ({"queue": "sales", "window": "interval", "threshold": "10"}, 4)),
        "contactpulse_contacts_waiting": vector(({"queue": "sales"}, 3)),
        "contactpulse_oldest_waiting_age_seconds": vector(({"queue": "sales"}, 42.5)),
        "contactpulse_agents": vector(),
        "contactpulse_tickets_awaiting_first_response": vector(({"queue": "sales"}, 4)),
    }
    by_query = {query: answers[name] for name, query in wallboard.prometheus_queries().items()}
    down = False

    async def fetch(url, params):
        asked.append((url, params["time"]))
        if down:
            raise ConnectionRefusedError("connection refused")
        return by_query[params["query"]]

    table = feed(s)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ContactCollector(s, table, lambda: None, clock=lambda: NOW))
    clock = [NOW]
    board = Board(s, registry, owned=lambda: {0}, clock=lambda: clock[0], fetch=fetch)
    snap = asyncio.run(board.snapshot(View(("sales",))))
    assert (snap["source"], snap["warning"], snap["scope"]) == ("prometheus", None, "cluster (all workers, via Prometheus)")
    # one instant for all ten queries, so the numbers belong together
    assert asked == [("http://prom.example:9090/api/v1/query", f"{NOW:.3f}")] * 10
    sales = snap["queues"][0]
    # 7 of 10 within 20 s = 70%: 10 points under 80% -> red; ASA 96 / 8 = 12 s; abandoned 2 / 10
    assert (sales["offered"], sales["sl_numerator"], sales["service_level"], sales["sl_status"]) == (10, 7, 0.7, "red")
    assert (sales["asa_seconds"], sales["abandon_ratio"], sales["waiting"], sales["oldest_wait_seconds"]) == (12.0, 0.2, 3, 42.5)
    assert (sales["agents_available"], sales["frt_backlog"]) == (None, 4)
    # Prometheus goes away: the board shows this worker's own numbers and says so.
    down = True
    clock[0] = NOW + 1
    snap = asyncio.run(board.snapshot(View(("sales",))))
    assert snap["source"] == "worker"
    assert snap["warning"].startswith("Prometheus unreachable (ConnectionRefusedError: connection refused)")
    assert snap["queues"][0]["offered"] == 4  # the hand-made table's sales (see the test above)


def test_samples_are_shared_between_clients_within_half_a_push_period():
    s = settings()
    calls = []

    class CountingRegistry:
        def collect(self, names=None):
            calls.append(1)
            return []

    clock = [NOW]
    board = Board(s, CountingRegistry(), clock=lambda: clock[0])
    asyncio.run(board.snapshot(View(None)))
    clock[0] = NOW + 0.4
    asyncio.run(board.snapshot(View(None, window="today")))  # another TV, another window: same samples
    assert len(calls) == 1
    clock[0] = NOW + 0.6
    asyncio.run(board.snapshot(View(None)))
    assert len(calls) == 2
