"""Crash at ANY point, recover from the changelog, replay from the committed offset: same state as no crash.

A model of what Kafka and Faust do, driven by hypothesis:
  * every table write is appended to a changelog (a list), in the order BatchView.flush() writes it;
  * a crash keeps an arbitrary prefix of the changelog (the writes the broker acknowledged) and, per input
    partition, a committed offset at some batch boundary whose writes are all in that prefix (the worker
    acknowledges a batch only after its changelog writes are acknowledged, see streams/app.py);
  * recovery rebuilds the table from the changelog prefix (last write per key wins), and the worker
    reprocesses every message after the committed offset, in partition order, in batches of any size.
The final table and the outcome counters must equal those of a run without crashes, and every message
must be accounted for exactly once: accepted + rejected + duplicate + rekeyed == consumed.
"""
from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import changelog_model as model
from changelog_model import outcome_totals
from streams.config import load_settings
from streams.contacts import ContactProcessor
from streams.pipeline import Message

T0 = 1_795_000_100.0  # 500 s into a 15-minute interval
NOW = T0 + 1900  # "far" events (T0+1800..1900) are then not in the future
TYPES = ("offered", "answered", "abandoned", "hold_started", "hold_ended", "transferred", "ended")


def contact_event(i: int, etype: str, cid: str, dt: float, event_id: str | None) -> dict:
    ev = {"event_id": event_id or f"{cid}-{etype}-{i}", "type": etype, "ts": int((T0 + dt) * 1000),
          "contact_id": cid, "queue": "sales" if cid < "c3" else "care", "channel": "voice"}
    if etype in ("answered", "ended"):
        ev["agent_id"] = "a1"
    return ev


# One message: a valid event of a few contacts (ids often repeated so duplicates happen), an event far
# enough back to be too late once the watermark moves on, a wrongly keyed one, or garbage.
message_spec = st.one_of(
    st.tuples(st.just("ok"), st.sampled_from(TYPES), st.sampled_from(["c0", "c1", "c3"]),
              st.integers(0, 300), st.sampled_from([None, "dup-a", "dup-b"])),
    st.tuples(st.just("old"), st.sampled_from(("offered", "answered", "abandoned")),
              st.sampled_from(["c5", "c6"]), st.integers(-3000, -2000), st.none()),
    st.tuples(st.just("far"), st.sampled_from(("offered",)), st.sampled_from(["c7"]),
              st.integers(1800, 1900), st.none()),  # moves the watermark past the old ones' lateness
    st.tuples(st.just("rekey"), st.sampled_from(("offered",)), st.sampled_from(["c8"]), st.integers(0, 9),
              st.none()),
    st.tuples(st.just("junk"), st.sampled_from([b"{", b"\xff", b"[]", b'{"type":"offered"}']), st.none(),
              st.none(), st.none()),
)


def build_messages(specs, partitions: int = 2) -> list[Message]:
    offsets = [0] * partitions
    out = []
    for i, (kind, a, cid, dt, eid) in enumerate(specs):
        if kind == "junk":
            p, key, value = i % partitions, b"junk", a
        else:
            ev = contact_event(i, a, cid, dt, eid)
            p = int(cid[1:]) % partitions  # the contact's partition, as Kafka's key hashing would pick
            key = b"wrong" if kind == "rekey" else cid.encode()
            value = orjson.dumps(ev)
        out.append(Message("contact-events", p, offsets[p], key, value))
        offsets[p] += 1
    return out


SETTINGS = load_settings(env={}, allowed_lateness_seconds=60)


def contact_processor(table) -> ContactProcessor:
    return ContactProcessor(SETTINGS, table, clock=lambda: NOW)


def run_clean(messages, sizes):
    return model.run_clean(contact_processor, messages, sizes)


def run_with_crashes(messages, sizes, crashes):
    return model.run_with_crashes(contact_processor, messages, sizes, crashes)


@hsettings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(message_spec, min_size=1, max_size=40),
       sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       crashes=st.lists(st.tuples(st.integers(0, 8), st.floats(0, 1), st.integers(0, 3)), min_size=1, max_size=3))
def test_any_crash_then_replay_equals_the_uninterrupted_run(specs, sizes, crashes):
    messages = build_messages(specs)
    clean, clean_dead = run_clean(messages, sizes)
    crashed, crashed_dead = run_with_crashes(messages, sizes, crashes)
    assert dict(crashed) == dict(clean)
    totals = outcome_totals(clean)
    assert sum(totals.values()) == len(messages)
    # Dead letters are at-least-once: a crash may send one again, never lose one. Consumers dedupe them by
    # (partition, offset), which identifies the rejected message.
    assert set(crashed_dead) == set(clean_dead)
    assert len(set(clean_dead)) == len(clean_dead) == totals["rejected"]


@st.composite
def contact_scripts(draw):
    """Whole contacts (offer, answer or abandon, holds, transfer, end) as spec tuples with unique ids."""
    specs = []
    for n in range(draw(st.integers(1, 6))):
        cid, t = f"c{n}", draw(st.integers(0, 200))
        steps = [("offered", t)]
        outcome = draw(st.sampled_from(["answered", "abandoned", None]))
        if outcome:
            t += draw(st.integers(0, 40))
            steps.append((outcome, t))
        if outcome == "answered":
            for _ in range(draw(st.integers(0, 2))):
                t += draw(st.integers(1, 20))
                steps.append(("hold_started", t))
                if draw(st.booleans()):
                    t += draw(st.integers(1, 20))
                    steps.append(("hold_ended", t))
            if draw(st.booleans()):
                steps.append(("transferred", t))
            if draw(st.booleans()):
                steps.append(("ended", t + draw(st.integers(1, 60))))
        specs += [("ok", etype, cid, dt, f"{cid}-{i}") for i, (etype, dt) in enumerate(steps)]
    return specs


def _approx_equal(a, b) -> bool:
    """Equal, with float sums compared to 1e-9: another arrival order adds the same numbers differently."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_approx_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_approx_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


@hsettings(max_examples=300, deadline=None)
@given(specs=contact_scripts(), sizes=st.lists(st.integers(1, 7), min_size=1, max_size=3), data=st.data())
def test_shuffled_and_duplicated_delivery_gives_the_same_windows(specs, sizes, data):
    """Within the allowed lateness, the window counts do not depend on arrival order (an answer before its
    offer, a hold or transfer after the end), and delivering everything a second time only adds
    duplicates. What IS order-dependent (documented in docs/reliability.md): which of two *conflicting*
    one-time steps wins (the first to arrive), and lateness (it depends on what arrived before)."""
    ordered = build_messages(specs, partitions=1)
    shuffled = data.draw(st.permutations(specs))
    twice = build_messages(list(shuffled) + list(specs), partitions=1)
    a, _ = run_clean(ordered, sizes)
    b, _ = run_clean(twice, sizes)
    windows = lambda t: {k: {f: v for f, v in w.items() if f != "o"} for k, w in t.items() if "|w|" in k}
    assert _approx_equal(windows(a), windows(b))
    ta, tb = outcome_totals(a), outcome_totals(b)
    assert ta == {"accepted": len(specs), "rejected": 0, "duplicate": 0, "rekeyed": 0}
    assert tb == {"accepted": len(specs), "rejected": 0, "duplicate": len(specs), "rekeyed": 0}

def _cut_after_records(messages):
    """Process one batch, keep its window and record writes but lose the stats write, replay it."""
    clean, clean_dead = run_clean(messages, [len(messages)])
    n_stats = sum(1 for key in {k for k, _ in clean.log} if key.endswith("|s"))
    kept = (len(clean.log) - n_stats) / len(clean.log)  # everything except the trailing stats writes
    crashed, crashed_dead = run_with_crashes(messages, [len(messages)], [(0, kept, 0)])
    return clean, crashed, clean_dead, crashed_dead


def test_replay_counts_a_duplicate_as_a_duplicate_again():
    # offered(id x) at offset 0, offered(id x) again at 1 (duplicate), answered at 2. The crash keeps the
    # windows and the contact record (o=2) and loses the stats; the replay must count 2 accepted and
    # 1 duplicate again, as the clean run did -- not 3 accepted because all three are <= the record's o.
    msgs = build_messages([("ok", "offered", "c0", 0, "x"), ("ok", "offered", "c0", 1, "x"),
                           ("ok", "answered", "c0", 5, None)], partitions=1)
    clean, crashed, _, _ = _cut_after_records(msgs)
    assert outcome_totals(clean) == {"accepted": 2, "rejected": 0, "duplicate": 1, "rekeyed": 0}
    assert outcome_totals(crashed) == outcome_totals(clean)
    assert dict(crashed) == dict(clean)


def test_replay_rejects_a_too_late_event_again_and_keeps_the_watermark():
    # c7 at T0+1800 moves the watermark to the interval after next; c5's offer and answer at T0-2000
    # belong to an interval that closed > 60 s (allowed lateness) before it: the answer completes the
    # wait in a closed interval -> too_late. The replay must reject it again (not count it accepted) and
    # must rebuild the watermark from the skipped c7 message.
    msgs = build_messages([("far", "offered", "c7", 1800, None), ("old", "offered", "c5", -2010, None),
                           ("old", "answered", "c5", -2000, None)], partitions=1)
    clean, crashed, clean_dead, crashed_dead = _cut_after_records(msgs)
    assert outcome_totals(clean) == {"accepted": 2, "rejected": 1, "duplicate": 0, "rekeyed": 0}
    assert [(o, r) for _, o, r in clean_dead] == [(2, "too_late")]
    assert dict(crashed) == dict(clean)
    assert set(crashed_dead) == set(clean_dead)
