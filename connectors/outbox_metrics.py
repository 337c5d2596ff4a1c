"""The outbox's metrics, read from the database at each scrape, so that they count what every
worker process on every host did: rows by status and channel, the oldest pending row's age,
delivery attempts by channel and outcome, and which channels are paused."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rules_engine import Store


class OutboxCollector(Collector):
    """Collects the outbox's state from ``store`` when scraped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        with self.store.read() as tx:
            by_status = tx.outbound.by_status()
            counts = tx.outbound.counts()
            oldest = tx.outbound.oldest_pending()
            paused = tx.outbound.pauses()
        rows = GaugeMetricFamily("rules_engine_outbox_rows", "Outbox rows, by status and "
                                 "channel (empty for rules' URLs)", labels=["status", "channel"])
        for status, channel, count in by_status:
            rows.add_metric([status, channel], count)
        yield rows
        age = GaugeMetricFamily("rules_engine_outbox_oldest_pending_seconds",
                                "Age of the oldest pending outbox row (0 when none)")
        age.add_metric([], (datetime.now(timezone.utc) - oldest).total_seconds() if oldest else 0)
        yield age
        attempts = CounterMetricFamily(
            "rules_engine_outbound_deliveries", "Delivery attempts by channel and outcome (sent, "
            "transient, rate_limited, permanent, auth, outside_window, suppressed), whichever "
            "worker made them", labels=["channel", "outcome"])
        for channel, outcome, count in counts:
            attempts.add_metric([channel, outcome], count)
        yield attempts
        pauses = GaugeMetricFamily("rules_engine_channel_paused", "1 while a channel is paused "
                                   "(its credential was refused)", labels=["channel"])
        for pause in paused:
            pauses.add_metric([pause["channel"]], 1)
        yield pauses
