"""The monitor's own health: partitions owned, consumer lag, broker reachability, batches."""
from __future__ import annotations

from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class WorkerCollector(Collector):
    def __init__(self, app, topics: list[str], gc_full_collections=None):
        self.app = app
        self.gc = gc_full_collections  # streams/gc_policy.FullCollections, None under CPython's own policy
        self.topics = set(topics)
        self.batches = 0
        self.last_batch = 0.0  # wall-clock time the last batch was committed to the tables
        self.read_back = 0  # messages read back from Kafka to fill holes in Faust's delivery (streams/ordering.py)

    def collect(self) -> Iterable:
        assigned = GaugeMetricFamily("contactpulse_partitions_assigned", "Input partitions this worker owns.", labels=["topic"])
        lag = GaugeMetricFamily("contactpulse_consumer_lag_messages", "Messages in Kafka not yet processed (high watermark - position).", labels=["topic", "partition"])
        connected = GaugeMetricFamily("contactpulse_broker_connected", "1 when the worker's Kafka consumer has a live connection, else 0 (metrics may be stale).")
        batches = CounterMetricFamily("contactpulse_batches", "Batches processed by this worker process.")
        recovering = GaugeMetricFamily("contactpulse_recovering", "1 while the tables are being rebuilt from their changelogs (data series are absent until done).")
        last_batch = GaugeMetricFamily("contactpulse_last_batch_timestamp_seconds", "Wall-clock time of the last batch this worker processed (staleness: time() - this, with lag > 0).")
        per_topic = {t: 0 for t in self.topics}
        is_connected = 0
        try:
            consumer = self.app.consumer
            tps = [tp for tp in consumer.assignment() if tp.topic in self.topics]
            transport = consumer._thread._ensure_consumer() if hasattr(consumer, "_thread") else None
            for tp in tps:
                per_topic[tp.topic] += 1
                high = consumer.highwater(tp)
                pos = None
                if transport is not None:
                    try:
                        pos = transport._fetcher._subscriptions.subscription.assignment.state_value(tp).position
                    except Exception:
                        pos = None
                if high is not None and pos is not None:
                    lag.add_metric([tp.topic, str(tp.partition)], max(0, high - pos))
            if transport is not None:
                client = transport._client
                is_connected = int(any(conn.connected() for conn in client._conns.values()))
        except Exception:
            pass
        for topic, n in sorted(per_topic.items()):
            assigned.add_metric([topic], n)
        connected.add_metric([], is_connected)
        batches.add_metric([], self.batches)
        read_back = CounterMetricFamily("contactpulse_messages_read_back", "Input messages read back from Kafka because Faust skipped them or delivered them out of order (streams/ordering.py).")
        read_back.add_metric([], self.read_back)
        last_batch.add_metric([], self.last_batch)
        try:
            recovering.add_metric([], int(bool(self.app.in_recovery) or not self.app.tables.recovery.completed.is_set()))
        except Exception:
            recovering.add_metric([], 1)
        yield from (assigned, lag, connected, batches, last_batch, recovering, read_back)
        if self.gc is not None:
            yield CounterMetricFamily("contactpulse_gc_full_collections", "Full garbage collections the worker made on its schedule (gc_full_collect_seconds).", value=self.gc.count)
            yield CounterMetricFamily("contactpulse_gc_full_collection_seconds", "Time the worker was paused by those full collections.", value=self.gc.seconds)
