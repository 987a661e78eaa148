"""Prometheus metrics of the server (text format at GET /metrics).

Counters and gauges are read from the batcher's `BatcherStats` at scrape time (a custom
collector), plus HTTP responses by route and status. Cache figures are given in entries and bytes:
`live` counts the entries rows attend over, `allocated` the buffers (live + left padding +
evicted columns not compacted yet).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_COUNTERS = {
    "requests_finished": ("requests_done", "requests that finished (stop or length)"),
    "requests_failed": ("requests_failed", "requests that ended with a server error"),
    "requests_cancelled": ("requests_cancelled", "requests whose client went away"),
    "prompt_tokens": ("prompt_tokens", "prompt tokens admitted (before compression)"),
    "generated_tokens": ("generated_tokens", "tokens generated"),
    "pages_rendered": ("pages_rendered", "pages rendered and encoded (prompts + outputs)"),
    "decode_steps": ("steps", "batched decode steps"),
    "cache_compactions": ("compactions", "times the batch cache was compacted"),
}
_GAUGES = {
    "running_streams": ("running", "rows in the running batch"),
    "cache_live_entries": ("cache_live_entries", "KV entries the rows attend over"),
    "cache_allocated_entries": ("cache_allocated_entries", "KV entries the buffers hold"),
    "cache_peak_live_entries": ("peak_cache_live_entries", "peak of cache_live_entries"),
    "cache_peak_allocated_entries": (
        "peak_cache_allocated_entries",
        "peak of cache_allocated_entries",
    ),
}


class _BatcherCollector:
    def __init__(self, batcher) -> None:
        self.batcher = batcher

    def collect(self):
        stats, per_entry = self.batcher.stats, self.batcher.kv.bytes_per_entry
        for name, (attr, doc) in _COUNTERS.items():
            yield CounterMetricFamily(f"vist2_{name}", doc, value=getattr(stats, attr))
        for name, (attr, doc) in _GAUGES.items():
            yield GaugeMetricFamily(f"vist2_{name}", doc, value=getattr(stats, attr))
            if name.startswith("cache_"):
                bytes_name = f"vist2_{name.removesuffix('_entries')}_bytes"
                yield GaugeMetricFamily(
                    bytes_name, doc + " (bytes)", getattr(stats, attr) * per_entry
                )
        yield GaugeMetricFamily(
            "vist2_queue_length", "requests waiting for a row", value=self.batcher.queue_length
        )


class ServerMetrics:
    """The server's registry: batcher figures + HTTP responses by route and status."""

    def __init__(self, batcher) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_BatcherCollector(batcher))
        self._http = Counter(
            "vist2_http_responses",
            "HTTP responses by route and status",
            ["route", "status"],
            registry=self.registry,
        )

    def http(self, route: str, status: int) -> None:
        self._http.labels(route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
