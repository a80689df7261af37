"""Prometheus metrics of the service: one registry per app, names fixed here (the Grafana dashboard reads them).

- ``http_request_duration_seconds{route,method,status}``: every request, by route template (not raw path).
- ``rec_stage_duration_seconds{stage}``: ``history`` (store read), ``encode`` (ONNX), ``search`` (FAISS),
  ``text_embed`` (new-item text encoder), per request or per micro-batch as labelled.
- ``rec_batch_size``: requests served together by one encode + search call.
- ``rec_model_info{version,model_kind,embedding_mode}``: 1 for the version being served.
- ``rec_index_items``, ``rec_cold_items``: items searchable now, of which added after training.
- ``rec_reloads_total{result,reason}``, ``rec_unknown_items_total``: reloads by outcome (``reason`` of a failure:
  ``invalid`` artifact or ``unloadable`` files, empty for ``ok``), unknown ids seen in requests.
- ``rec_degraded_answers_total{route,reason}``: answers from the popularity fallback because the store failed
  (``reason``: ``timeout`` or ``unavailable``).
- With the history cache on (``service.histories``): ``rec_history_cache_lookups_total{result}`` (``hit`` or
  ``miss``), ``rec_history_cache_invalidations_total``, ``rec_history_cache_users`` (entries held) and
  ``rec_history_cache_live`` (1 while invalidations are received; at 0 every read goes to Redis).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.histories import HistoryCache

__all__ = ["LATENCY_BUCKETS", "STAGES", "ServiceMetrics"]

# fine below 10 ms, where the latency targets sit; steps of at most ~50% up to 50 ms, where a loaded p99 lands, so a
# p99 read from the histogram is within one such step of the clients' own
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
STAGES = ("history", "encode", "search", "text_embed")


class ServiceMetrics:
    """All metric objects of one app, registered on their own registry (tests build many apps)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route template, method and status code",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "rec_stage_duration_seconds",
            "Time spent per stage of the request path",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "rec_batch_size",
            "Requests served by one encode + search call (micro-batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.model_info = Gauge(
            "rec_model_info",
            "The artifact version being served (value 1)",
            ["version", "model_kind", "embedding_mode"],
            registry=r,
        )
        self.index_items = Gauge("rec_index_items", "Items searchable now", registry=r)
        self.cold_items = Gauge(
            "rec_cold_items", "Items added after training (POST /items)", registry=r
        )
        self.hidden_items = Gauge(
            "rec_hidden_items",
            "Items hidden now (POST /items/hide): never recommended until restored or expired",
            registry=r,
        )
        self.reloads = Counter(
            "rec_reloads",
            "Artifact reloads by result, and for failures why (invalid or unloadable)",
            ["result", "reason"],
            registry=r,
        )
        self.unknown_items = Counter(
            "rec_unknown_items",
            "Unknown item ids met in histories, candidates or events",
            registry=r,
        )
        self.degraded = Counter(
            "rec_degraded_answers",
            "Answers given without the store (popularity fallback), by route and store failure",
            ["route", "reason"],
            registry=r,
        )
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Create the labelled series that have data from the start (a dashboard's panel is never empty)."""
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for result, reason in (("ok", ""), ("failed", "invalid"), ("failed", "unloadable")):
            self.reloads.labels(result, reason)
        for route in (
            "/recommend",
            "/score",
        ):  # at 0 from the start: the dashboard's panel has data
            for reason in ("timeout", "unavailable"):
                self.degraded.labels(route, reason)

    def watch_history_cache(self, cache: HistoryCache) -> None:
        """Export the cache's counters, read at each scrape (the read path only adds to plain ints)."""
        self.registry.register(_HistoryCacheCollector(cache))

    def set_model(self, version: str, model_kind: str, embedding_mode: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version, model_kind, embedding_mode).set(1)


class _HistoryCacheCollector(Collector):
    def __init__(self, cache: HistoryCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        c = self.cache
        lookups = CounterMetricFamily(
            "rec_history_cache_lookups",
            "History reads by whether the cache had them",
            labels=["result"],
        )
        lookups.add_metric(["hit"], c.hits)
        lookups.add_metric(["miss"], c.misses)
        yield lookups
        yield CounterMetricFamily(
            "rec_history_cache_invalidations",
            "Users dropped from the history cache because their history changed",
            value=c.invalidations,
        )
        yield GaugeMetricFamily(
            "rec_history_cache_users", "Histories held in the cache", value=len(c)
        )
        yield GaugeMetricFamily(
            "rec_history_cache_live",
            "1 while Redis invalidations are received (else every read goes to Redis)",
            value=float(c.live),
        )
