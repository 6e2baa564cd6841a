"""The Faust floor: a Faust agent that takes batches of events and does nothing with them.

    python bench/faust_floor.py TOPIC[,TOPIC...] COUNT BOOTSTRAP PORT worker

Run by bench/run.py as a second baseline: it is what any Faust agent pays per message before doing any
work, so it bounds what contactpulse can reach on one worker process. Prints one line of figures.
"""
import resource
import sys
import time

import faust

TOPICS, COUNT, BOOTSTRAP, PORT = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sys.argv = [sys.argv[0], *sys.argv[5:]]

app = faust.App(f"faust-floor-{time.time_ns()}", broker=f"kafka://{BOOTSTRAP}", store="memory://",
                web_port=PORT, consumer_auto_offset_reset="earliest", stream_buffer_maxsize=10000)
topic = app.topic(*TOPICS, key_serializer="raw", value_serializer="raw")
seen = {"n": 0, "start": None}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@app.agent(topic)
async def drain(stream):
    async for events in stream.take_events(5000, within=0.05):
        if seen["start"] is None:
            seen["start"] = (time.perf_counter(), cpu())
        seen["n"] += len(events)
        if seen["n"] >= COUNT:
            wall, cpu_s = time.perf_counter() - seen["start"][0], cpu() - seen["start"][1]
            print(f"FLOOR {seen['n'] / wall:.0f} {seen['n'] / cpu_s:.0f}", flush=True)  # bench/run.py stops us


if __name__ == "__main__":
    app.main()
