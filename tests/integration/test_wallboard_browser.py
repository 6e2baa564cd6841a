"""Issue 9: the wallboard page in a real headless Chromium, against a real worker fed over Kafka.

Scripted events first (every number checked by hand), then the traffic simulator in real time (the page
must follow without a reload), then a worker restart (the page must keep ticking and come back live).
At every stage: what the page renders == the snapshot it rendered == /metrics. Screenshots in artifacts/.
"""
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from harness import ARTIFACTS, ROOT, Worker, create_topics, event, one_window, produce, quiet_clock
from wallboard_expect import DASH, METRICS_SHOWN, duration, shown, tile_from_metrics

pytestmark = pytest.mark.broker

QUEUES = ("sales", "support", "billing", "webchat", "callback", "vip")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
COUNTS = ("offered", "answered", "abandoned", "sl_numerator", "sl_denominator", "service_level",
          "service_level_percent", "waiting", "asa_seconds", "abandon_ratio", "agents_available", "frt_backlog")


def in_thread(fn, *args):
    """Run an asyncio-based helper away from Playwright's own event loop."""
    out = {}
    t = threading.Thread(target=lambda: out.update(result=fn(*args)))
    t.start()
    t.join()
    return out.get("result")


def agent(agent_id: str, state: str, ts: float, queues: list[str]) -> tuple:
    ev = {"event_id": f"{agent_id}-{state}-{int(ts)}", "type": "state", "ts": int(ts * 1000), "agent_id": agent_id,
          "state": state, "queues": queues}
    return (agent_id.encode(), orjson.dumps(ev), None)


def ticket(etype: str, ticket_id: str, ts: float, queue: str, **fields) -> tuple:
    ev = {"event_id": f"{ticket_id}-{etype}", "type": etype, "ts": int(ts * 1000), "ticket_id": ticket_id,
          "queue": queue, "channel": "email", "priority": "normal", **fields}
    return (ticket_id.encode(), orjson.dumps(ev), None)


def scripted_contacts(T: float) -> list:
    sv, sc, su, bi = (dict(queue="sales", channel="voice"), dict(queue="sales", channel="chat"),
                      dict(queue="support", channel="chat"), dict(queue="billing", channel="voice"))
    return [
        event("offered", "w1", T, **sv), event("answered", "w1", T + 8, agent_id="x1", **sv),
        event("offered", "w2", T, **sv), event("answered", "w2", T + 25, agent_id="x1", **sv),
        event("offered", "w3", T + 5, **sv), event("abandoned", "w3", T + 35, **sv),
        event("offered", "w4", T + 40, **sv),  # still waiting: the oldest in sales
        event("offered", "w5", T, **sc), event("answered", "w5", T + 12, agent_id="x2", **sc),
        event("offered", "w6", T + 50, **sc),  # still waiting, newer
        *[e for i, wait in enumerate((4, 6, 9, 30)) for e in (
            event("offered", f"w{7 + i}", T, **su), event("answered", f"w{7 + i}", T + wait, agent_id="x2", **su))],
        event("offered", "w11", T, **bi), event("answered", "w11", T + 3, agent_id="x5", **bi),
    ]


def scripted_others(T: float) -> tuple[list, list]:
    agents = [agent("x1", "available", T, ["sales"]), agent("x2", "available", T, ["sales", "support"]),
              agent("x3", "on_contact", T, ["sales"]), agent("x4", "available", T, ["support"]),
              agent("x4", "away", T + 10, ["support"])]
    tickets = [ticket("created", "k1", T, "sales"), ticket("created", "k2", T + 1, "sales"),
               ticket("created", "k3", T, "support"),
               ticket("message", "k3", T + 20, "support", author_type="agent", public=True, agent_id="x4")]
    return agents, tickets


# Worked out by hand from the scripted events (SL target 80% in 20 s, short abandons <= 5 s excluded):
HAND = {
    # sales: voice waits 8, 25 + an abandon after 30 s, chat wait 12 -> offered 4, answered 3;
    # within 20 s: 8 and 12 -> 2 of 4 = 50% (red); ASA (8 + 25 + 12) / 3 = 15 s; abandoned 1 / 4;
    # w4 and w6 wait; agents available x1, x2 (x3 is on a contact); tickets k1, k2 await a first reply.
    "sales": dict(offered=4, answered=3, abandoned=1, sl_numerator=2, sl_denominator=4, service_level=0.5,
                  service_level_percent=50, sl_status="red", waiting=2, asa_seconds=15.0, abandon_ratio=0.25,
                  agents_available=2, frt_backlog=2),
    # support: waits 4, 6, 9, 30 -> 3 of 4 = 75%, exactly 5 points under target (amber); ASA 49 / 4;
    # available: x2 (x4 went away); k3 had its first reply -> 0 awaiting (shown as 0: the queue is known).
    "support": dict(offered=4, answered=4, abandoned=0, sl_numerator=3, sl_denominator=4, service_level=0.75,
                    service_level_percent=75, sl_status="amber", waiting=0, asa_seconds=12.25, abandon_ratio=0.0,
                    agents_available=1, frt_backlog=0),
    # billing: one answered after 3 s -> 100% (green); no agents or tickets known there -> "—".
    "billing": dict(offered=1, answered=1, abandoned=0, sl_numerator=1, sl_denominator=1, service_level=1.0,
                    service_level_percent=100, sl_status="green", waiting=0, asa_seconds=3.0, abandon_ratio=0.0,
                    agents_available=None, frt_backlog=None),
    # vip: on the URL, never seen: a tile without data.
    "vip": dict(offered=0, answered=0, abandoned=0, sl_numerator=0, sl_denominator=0, service_level=None,
                service_level_percent=None, sl_status="none", waiting=0, asa_seconds=None, abandon_ratio=None,
                agents_available=None, frt_backlog=None),
}
HAND_TEXT = {  # what the page must print for those
    "sales": {"service_level": "50%", "waiting": "2", "asa_seconds": "15 s", "abandon_ratio": "25.0%",
              "agents_available": "2", "frt_backlog": "2"},
    "support": {"service_level": "75%", "waiting": "0", "oldest_wait_seconds": DASH, "asa_seconds": "12 s",
                "abandon_ratio": "0.0%", "agents_available": "1", "frt_backlog": "0"},
    "billing": {"service_level": "100%", "asa_seconds": "3 s", "agents_available": DASH, "frt_backlog": DASH},
    "vip": {"service_level": DASH, "waiting": "0", "oldest_wait_seconds": DASH, "asa_seconds": DASH,
            "abandon_ratio": DASH, "agents_available": DASH, "frt_backlog": DASH},
}

READ_PAGE = """() => {
  const tiles = {};
  for (const t of document.querySelectorAll('.tile')) {
    const m = {};
    for (const e of t.querySelectorAll('[data-metric]'))
      m[e.dataset.metric] = {text: e.textContent, value: JSON.parse(e.dataset.value), ticked: e.dataset.ticked};
    tiles[t.dataset.queue] = {status: t.dataset.status, metrics: m};
  }
  return {tiles, order: Array.from(document.querySelectorAll('.tile')).map(t => t.dataset.queue),
          snapshot: window.wallboard.snapshot, connection: document.getElementById('conn').dataset.state,
          reloadMarker: window.__notReloaded === true};
}"""


def check_page_renders_its_snapshot(page_state) -> dict:
    """Every rendered number is the snapshot's, formatted by the page's rules; returns the snapshot's tiles."""
    snap = {t["queue"]: t for t in page_state["snapshot"]["queues"]}
    assert page_state["order"] == list(QUEUES) == list(snap)  # the URL's order
    for queue, tile in snap.items():
        rendered = page_state["tiles"][queue]
        assert rendered["status"] == tile["sl_status"], queue
        for metric in METRICS_SHOWN:
            r = rendered["metrics"][metric]
            if metric == "oldest_wait_seconds":
                assert r["value"] == tile["oldest_wait_seconds"]
                if tile["waiting"]:  # ticking: the snapshot's age plus the time since it arrived
                    ticked = float(r["ticked"])
                    assert tile["oldest_wait_seconds"] <= ticked < tile["oldest_wait_seconds"] + 2.5, queue
                    assert r["text"] == duration(ticked, False), (queue, r)
                else:
                    assert r["text"] == DASH
                continue
            assert r["value"] == tile[metric], (queue, metric)
            assert r["text"] == shown(metric, tile), (queue, metric, r["text"])
    return snap


def check_snapshot_equals_metrics(snap: dict, generated: float, w: Worker) -> None:
    """The snapshot's numbers == the ones worked out from /metrics text (counts exactly, ages by the clock)."""
    before = time.time()
    m = w.metrics()
    after = time.time()
    for queue, tile in snap.items():
        expected = tile_from_metrics(m, queue)
        assert {k: tile[k] for k in COUNTS} == {k: expected[k] for k in COUNTS}, queue
        if tile["waiting"]:
            # /metrics was read later than the snapshot: the ages differ by the time in between
            gap = expected["oldest_wait_seconds"] - tile["oldest_wait_seconds"]
            assert before - generated - 0.2 <= gap <= after - generated + 0.2, (queue, gap)


def wait_until(fn, timeout: float, what: str, interval: float = 0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def page_and_metrics_agree(page, w: Worker, after: float) -> dict:
    """Wait for a page snapshot newer than `after`, check DOM == snapshot == /metrics; return the tiles."""
    state = wait_until(lambda: (s := page.evaluate(READ_PAGE))["snapshot"]
                       and s["snapshot"]["generated_at"] > after and s["connection"] == "live" and s,
                       60, "a fresh live snapshot on the page")
    tiles = check_page_renders_its_snapshot(state)
    check_snapshot_equals_metrics(tiles, state["snapshot"]["generated_at"], w)
    return tiles, state["snapshot"]["generated_at"]


def check_hand_numbers(tiles: dict, generated: float, T: float) -> None:
    for queue, numbers in HAND.items():
        assert {k: tiles[queue][k] for k in numbers} == numbers, queue
    # oldest in sales: w4, offered at T+40 (w6 at T+50 is newer); nothing waits elsewhere
    age = tiles["sales"]["oldest_wait_seconds"]
    assert generated - (T + 40) - 0.01 <= age <= generated - (T + 40) + 0.5
    assert [tiles[q]["oldest_wait_seconds"] for q in ("support", "billing", "vip")] == [0.0, 0.0, 0.0]


def check_hand_text(state: dict) -> None:
    for queue, texts in HAND_TEXT.items():
        got = {metric: state["tiles"][queue]["metrics"][metric]["text"] for metric in texts}
        assert got == texts, queue


def test_wallboard_page_in_chromium(worker_factory):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (./dev setup installs it: apt-get install chromium)"
    # An hour interval with "now" >= 15 min from its edges (quiet_clock): the events (60 s back), the
    # simulator's traffic and the restart all fall in one interval, without waiting for a boundary.
    clock = quiet_clock()
    w: Worker = worker_factory(partitions=2, **clock)
    create_topics(w.prefix, 2)
    w.start()
    now = time.time()
    T = float(int(now) - 60)  # whole seconds: event times survive the millisecond encoding exactly
    assert one_window(clock, T, now + 300), clock
    agents, tickets = scripted_others(T)
    in_thread(produce, w.prefix + "contact-events", scripted_contacts(T))
    in_thread(produce, w.prefix + "agent-events", agents)
    in_thread(produce, w.prefix + "ticket-events", tickets)
    w.wait_for(lambda m: m.get1("contactpulse_contacts_offered", queue="billing", channel="voice", window="interval") == 1
               and m.get1("contactpulse_agents", queue="support", state="away") == 1
               and m.get1("contactpulse_tickets_awaiting_first_response", queue="support", channel="email",
                          priority="normal") == 0
               and m.get1("contactpulse_contacts_waiting", queue="sales", channel="chat") == 1, timeout=60,
               what="the scripted contacts, agents and tickets")

    ARTIFACTS.mkdir(exist_ok=True)
    url = f"{w.url}/wallboard?queues={','.join(QUEUES)}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        requests = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(url)
        page.evaluate("window.__notReloaded = true")  # gone if the page ever reloads

        # --- 1. scripted data: the page, its snapshot and /metrics agree, and match the hand numbers --
        t_loaded = time.time()
        tiles, generated = page_and_metrics_agree(page, w, after=t_loaded)
        check_hand_numbers(tiles, generated, T)
        state = page.evaluate(READ_PAGE)
        check_hand_text(state)
        assert state["snapshot"]["source"] == "worker" and state["snapshot"]["window"] == "interval"
        assert state["snapshot"]["scope"] == "this worker: partitions 0, 1 of 2"
        # the hour interval began on the site clock's (not UTC's) last full hour
        site_hour = datetime.fromtimestamp(T, ZoneInfo(clock["timezone"])).strftime("%H:00")
        assert page.text_content("#window") == f"Interval since {site_hour}"
        # the server's snapshot.json says the same as the page's
        served = httpx.get(f"{w.url}/wallboard/snapshot.json", params={"queues": ",".join(QUEUES)}).json()
        assert [{k: t[k] for k in COUNTS} for t in served["queues"]] == \
               [{k: tiles[q][k] for k in COUNTS} for q in QUEUES]

        # the oldest wait ticks every second, by itself
        first = page.evaluate(READ_PAGE)["tiles"]["sales"]["metrics"]["oldest_wait_seconds"]
        time.sleep(2.2)
        second = page.evaluate(READ_PAGE)["tiles"]["sales"]["metrics"]["oldest_wait_seconds"]
        assert 1.7 <= float(second["ticked"]) - float(first["ticked"]) <= 3.5
        assert second["text"] != first["text"]

        # --- 2. live traffic from the simulator: the numbers move without a reload ---------------------
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "simulate", "--rate", "3", "--agents", "4",
                                 "--queues", "webchat:chat,callback:voice", "--seed", "9", "--duration", "10"],
                                env=w.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen_waiting = set()
        while proc.poll() is None:
            s = page.evaluate(READ_PAGE)
            seen_waiting.add(s["snapshot"]["queues"][3]["waiting"] + s["snapshot"]["queues"][4]["waiting"])
            time.sleep(0.5)
        out = proc.stdout.read()
        assert proc.returncode == 0, out
        produced = int(re.search(r"produced (\d+) events", out).group(1))
        assert produced >= 15, out  # ~3 arrivals/s for 10 s, plus their answers
        assert len(seen_waiting) >= 3, f"the page did not follow the traffic: {sorted(seen_waiting)}"
        # every simulated event is in (contacts, agent states, surveys and tickets, on top of the scripted
        # 20 contact, 5 agent and 4 ticket events), none rejected; then the page agrees with /metrics again
        inputs = ("contact-events", "agent-events", "ticket-events", "survey-events")
        w.wait_for(lambda m: sum(v for k, v in m.series("contactpulse_events_accepted_total").items()
                                 if dict(k)["topic"] in inputs) == 29 + produced
                   and sum(m.series("contactpulse_events_rejected_total").values()) == 0, timeout=60,
                   what=f"{produced} simulated events")
        tiles, generated = page_and_metrics_agree(page, w, after=time.time())
        check_hand_numbers(tiles, generated, T)  # the simulator's queues are others: the scripted ones are untouched
        assert tiles["webchat"]["waiting"] + tiles["callback"]["waiting"] > 0
        assert page.evaluate("window.__notReloaded") is True
        page.screenshot(path=str(ARTIFACTS / "wallboard.png"))

        # --- 3. the worker restarts: the page keeps ticking, says so, and comes back by itself ---------
        before_restart = {q: {k: tiles[q][k] for k in COUNTS} for q in tiles}
        t0 = time.time()
        w.stop()
        stop_seconds = time.time() - t0
        assert w.proc.returncode == 0 and stop_seconds < 20, \
            f"open wallboard streams must not hold the worker's shutdown ({stop_seconds:.1f} s, rc {w.proc.returncode})"
        wait_until(lambda: page.evaluate(READ_PAGE)["connection"] == "reconnecting", 15, "the page to notice")
        first = page.evaluate(READ_PAGE)["tiles"]["sales"]["metrics"]["oldest_wait_seconds"]
        time.sleep(2.2)
        second = page.evaluate(READ_PAGE)["tiles"]["sales"]["metrics"]["oldest_wait_seconds"]
        assert 1.7 <= float(second["ticked"]) - float(first["ticked"]) <= 3.5, "the oldest wait must tick offline"
        page.screenshot(path=str(ARTIFACTS / "wallboard-reconnecting.png"))
        w.start()
        tiles, generated = page_and_metrics_agree(page, w, after=time.time())
        # state came back from the changelog: the same counts, nothing lost or counted twice
        assert {q: {k: tiles[q][k] for k in before_restart[q]} for q in tiles} == before_restart
        check_hand_numbers(tiles, generated, T)
        assert page.evaluate("window.__notReloaded") is True, "the page must come back without a reload"
        page.screenshot(path=str(ARTIFACTS / "wallboard-after-restart.png"))
        browser.close()

    assert errors == [], errors
    # everything the page loaded came from the worker: no CDN, no fonts or scripts from elsewhere
    assert requests and all(r.startswith(w.url + "/") for r in requests), sorted(set(requests))
