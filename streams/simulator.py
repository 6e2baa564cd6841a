"""Traffic simulator: realistic contact-centre events, deterministic for a given seed.

Each queue is an M/M/c+M system: Poisson arrivals, c agents, exponential handle times and exponential
customer patience (a contact abandons when its wait would exceed its patience); FIFO service.
Events come out in timestamp order and are produced to Kafka keyed by contact_id.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

import orjson

DEFAULT_QUEUES = "sales:voice,support:voice,billing:voice,webchat:chat"


@dataclass
class QueueModel:
    name: str
    channel: str
    agents: int
    rate: float  # arrivals per second


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def simulate(seed: int, queues: list[QueueModel], start: float, *, mean_handle: float = 180.0,
             mean_patience: float = 60.0, mean_wrapup: float = 20.0, hold_probability: float = 0.2,
             resolved_probability: float = 0.75, customers: int = 5000,
             max_contacts: int | None = None) -> Iterator[dict]:
    """Yield contact events in time order, forever or until max_contacts contacts have arrived."""
    rng = random.Random(seed)
    pending: list[tuple[float, int, dict]] = []  # (ts, seq, event) min-heap
    seq = 0
    free_at = {q.name: [start] * q.agents for q in queues}
    next_arrival = [(start + rng.expovariate(q.rate), i) for i, q in enumerate(queues) if q.rate > 0]
    heapq.heapify(next_arrival)
    contact_no = 0

    def emit(ts: float, event: dict) -> None:
        nonlocal seq
        seq += 1
        event["ts"] = iso(ts)
        event["event_id"] = f"{event['contact_id']}-{seq}"
        heapq.heappush(pending, (ts, seq, event))

    while next_arrival and (max_contacts is None or contact_no < max_contacts):
        t, qi = heapq.heappop(next_arrival)
        q = queues[qi]
        heapq.heappush(next_arrival, (t + rng.expovariate(q.rate), qi))
        # Everything before this arrival is final: later arrivals only add later events.
        while pending and pending[0][0] <= t:
            yield heapq.heappop(pending)[2]
        contact_no += 1
        cid = f"sim-{seed}-{contact_no}"
        n = rng.randrange(customers)
        kind = rng.random()
        customer = ({"id": f"cust-{n}"} if kind < 0.5 else
                    {"phone": f"+3712{n:07d}"} if kind < 0.8 else {"email": f"customer{n}@example.com"})
        base = {"contact_id": cid, "queue": q.name, "channel": q.channel}
        emit(t, {**base, "type": "offered", "customer": customer})
        agents = free_at[q.name]
        earliest = min(range(len(agents)), key=agents.__getitem__)
        start_service = max(t, agents[earliest])
        patience = rng.expovariate(1 / mean_patience)
        handle = rng.expovariate(1 / mean_handle)
        wrapup = round(rng.expovariate(1 / mean_wrapup), 1)
        hold = rng.random() < hold_probability
        hold_len = rng.expovariate(1 / 30.0)
        resolved = rng.random() < resolved_probability
        if start_service - t > patience:
            emit(t + patience, {**base, "type": "abandoned"})
            continue
        agent = f"{q.name}-agent-{earliest + 1}"
        agents[earliest] = start_service + handle + wrapup
        emit(start_service, {**base, "type": "answered", "agent_id": agent})
        if hold:
            emit(start_service + handle * 0.3, {**base, "type": "hold_started", "agent_id": agent})
            emit(min(start_service + handle * 0.3 + hold_len, start_service + handle),
                 {**base, "type": "hold_ended", "agent_id": agent})
        emit(start_service + handle, {**base, "type": "ended", "agent_id": agent, "wrapup_seconds": wrapup,
                                      "resolved": resolved})
    while pending:
        yield heapq.heappop(pending)[2]


def simulate_centre(seed: int, queues: list[QueueModel], start: float, *, ticket_rate: float = 0.0,
                    survey_share: float = 0.3, **contact_options) -> Iterator[tuple[str, str, dict]]:
    """The whole centre as (topic, key, event) in time order: the contacts of simulate(), the agent state
    changes they imply, post-contact surveys, and e-mail tickets (a bot acknowledgement, then a human
    reply and a solve) arriving at `ticket_rate` per second.
    """
    rng = random.Random(seed + 1)  # its own stream: the contacts stay those of simulate(seed)
    pending: list[tuple[float, int, str, str, dict]] = []
    seq = 0

    def later(ts: float, topic: str, key: str, event: dict) -> None:
        nonlocal seq
        seq += 1
        event.setdefault("event_id", f"{topic[:1]}{seed}-{seq}")
        event["ts"] = iso(ts)
        heapq.heappush(pending, (ts, seq, topic, key, event))

    for q in queues:
        for i in range(q.agents):
            agent = f"{q.name}-agent-{i + 1}"
            later(start, "agent-events", agent, {"type": "state", "agent_id": agent, "state": "available",
                                                  "queues": [q.name]})
    next_ticket = start + rng.expovariate(ticket_rate) if ticket_rate > 0 else float("inf")
    ticket_no = 0
    last = start
    for ev in simulate(seed, queues, start, **contact_options):
        ts = datetime.fromisoformat(ev["ts"]).timestamp()
        while next_ticket <= ts:
            ticket_no += 1
            tid = f"tkt-{seed}-{ticket_no}"
            base = {"ticket_id": tid, "queue": "email-support", "channel": "email",
                    "priority": rng.choice(("normal", "normal", "normal", "high", "low"))}
            reply = next_ticket + rng.expovariate(1 / 1200.0)
            later(next_ticket, "ticket-events", tid, {**base, "type": "created",
                                                      "customer": {"email": f"customer{rng.randrange(5000)}@example.com"}})
            later(next_ticket + 2, "ticket-events", tid, {**base, "type": "message", "author_type": "bot", "public": True})
            later(reply, "ticket-events", tid, {**base, "type": "message", "author_type": "agent", "public": True,
                                                "agent_id": "email-agent-1"})
            later(reply + rng.expovariate(1 / 600.0), "ticket-events", tid,
                  {**base, "type": "solved", "solved_by": "agent" if rng.random() < 0.9 else "auto"})
            next_ticket += rng.expovariate(ticket_rate)
        while pending and pending[0][0] <= ts:
            _, _, topic, key, event = heapq.heappop(pending)
            yield topic, key, event
        yield "contact-events", ev["contact_id"], ev
        agent = ev.get("agent_id")
        if ev["type"] == "answered":
            later(ts, "agent-events", agent, {"type": "state", "agent_id": agent, "state": "on_contact",
                                              "queues": [ev["queue"]]})
        elif ev["type"] == "ended":
            wrapup = ev.get("wrapup_seconds") or 0.0
            later(ts, "agent-events", agent, {"type": "state", "agent_id": agent, "state": "after_contact_work",
                                              "queues": [ev["queue"]]})
            later(ts + wrapup, "agent-events", agent, {"type": "state", "agent_id": agent, "state": "available",
                                                       "queues": [ev["queue"]]})
            if rng.random() < survey_share:
                satisfied = ev.get("resolved") and rng.random() < 0.85
                later(ts + wrapup + 30, "survey-events", ev["contact_id"], {
                    "type": "survey", "contact_id": ev["contact_id"], "queue": ev["queue"],
                    "channel": ev["channel"], "agent_id": agent,
                    "csat": rng.choice((4, 5)) if satisfied else rng.choice((1, 2, 3, 4)),
                    "resolved": bool(ev.get("resolved"))})
        last = ts
    # The simulation ends with its last contact event: later tickets replies, surveys and agent changes
    # stay in the future (a backlog), as they would at the moment the traffic stops.
    while pending and pending[0][0] <= last:
        _, _, topic, key, event = heapq.heappop(pending)
        yield topic, key, event


def parse_queues(spec: str, total_rate: float, agents: int) -> list[QueueModel]:
    parts = [p.split(":") for p in spec.split(",") if p]
    n = len(parts)
    return [QueueModel(name, channel, max(1, agents // n), total_rate / n) for name, channel in parts]


async def produce(bootstrap: str, events: Iterator, *, realtime: bool, speed: float = 1.0,
                  topic: str = "contact-events", stop_after: float | None = None, prefix: str = "") -> int:
    """Produce contact event dicts to `topic`, or (topic, key, event) tuples to prefix + topic."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    sent = 0
    wall0 = time.time()
    sim0 = None
    try:
        pending = []
        for item in events:
            if isinstance(item, tuple):
                target, key, ev = prefix + item[0], item[1], item[2]
            else:
                target, key, ev = topic, item["contact_id"], item
            ts = datetime.fromisoformat(ev["ts"]).timestamp()
            if realtime:
                sim0 = ts if sim0 is None else sim0
                delay = (ts - sim0) / speed - (time.time() - wall0)
                if delay > 0:
                    if pending:
                        await asyncio.gather(*pending)
                        pending.clear()
                    await asyncio.sleep(delay)
            if stop_after is not None and time.time() - wall0 > stop_after:
                break
            pending.append(await producer.send(target, orjson.dumps(ev), key=key.encode()))
            sent += 1
            if len(pending) >= 10000:
                await asyncio.gather(*pending)
                pending.clear()
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="contactpulse simulate", description=__doc__)
    ap.add_argument("--broker", default=None, help="host:port (default: from CONTACTPULSE_BROKER)")
    ap.add_argument("--rate", type=float, default=2.0, help="total arrivals per second (all queues)")
    ap.add_argument("--agents", type=int, default=40, help="agents in total, split across queues")
    ap.add_argument("--queues", default=DEFAULT_QUEUES, help="name:channel,... (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--contacts", type=int, default=None, help="stop after this many contacts")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds (realtime)")
    ap.add_argument("--fast", action="store_true", help="produce as fast as possible, timestamps ending now")
    ap.add_argument("--speed", type=float, default=1.0, help="realtime multiplier (2 = twice as fast)")
    ap.add_argument("--mean-handle", type=float, default=180.0)
    ap.add_argument("--mean-patience", type=float, default=60.0)
    ap.add_argument("--ticket-rate", type=float, default=None,
                    help="e-mail tickets per second (default: a twentieth of --rate)")
    ap.add_argument("--contacts-only", action="store_true",
                    help="only contact events (no agent states, surveys or tickets)")
    args = ap.parse_args(argv)
    from streams.config import load_settings

    settings = load_settings()
    bootstrap = args.broker or settings.bootstrap_servers
    queues = parse_queues(args.queues, args.rate, args.agents)
    start = time.time()
    run = dict(mean_handle=args.mean_handle, mean_patience=args.mean_patience, max_contacts=args.contacts)
    if args.fast:
        if args.contacts is None:
            ap.error("--fast needs --contacts")
        # A dry run finds how long the traffic lasts, so the last event lands one second before now.
        last = 0.0
        for ev in simulate(args.seed, queues, 0.0, **run):
            last = ev["ts"]
        start -= datetime.fromisoformat(last).timestamp() + 1.0
    if args.contacts_only:
        events = simulate(args.seed, queues, start, **run)
    else:
        ticket_rate = args.rate / 20 if args.ticket_rate is None else args.ticket_rate
        events = simulate_centre(args.seed, queues, start, ticket_rate=ticket_rate, **run)
    sent = asyncio.run(produce(bootstrap, events, realtime=not args.fast, speed=args.speed,
                               topic=settings.topic_prefix + "contact-events", stop_after=args.duration,
                               prefix=settings.topic_prefix))
    print(f"produced {sent} events")
    return 0
