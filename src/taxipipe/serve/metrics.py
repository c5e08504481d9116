"""Prometheus metrics of the prediction service.

With several uvicorn workers each process writes its values to files in
$PROMETHEUS_MULTIPROC_DIR (set by `taxipipe serve --workers N`) and /metrics adds them up;
`taxipipe_serve_worker_model_version` then has one series per worker (label `pid`).
/metrics also carries the metrics of text files written by other commands (the last verdict
of `taxipipe monitor`), read at each scrape.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("taxipipe.serve")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MINUTE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Textfile:
    """A collector of the metrics in a Prometheus text file (nothing while the file is missing or unreadable)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            families = list(text_string_to_metric_families(self.path.read_text()))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("skipping the metrics of %s: %s", self.path, exc)
            return
        yield from families


class ServeMetrics:
    """Requests and latency per endpoint and status, rides predicted, minutes predicted, model version,
    and the metrics of `textfiles`."""

    def __init__(self, textfiles: tuple[Path, ...] = ()) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.textfiles = [Textfile(path) for path in textfiles]
        self.registry = CollectorRegistry()
        self.requests = Counter("taxipipe_serve_requests", "HTTP requests answered",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("taxipipe_serve_request_seconds", "Time to answer a request",
                                 ["endpoint", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rides = Counter("taxipipe_serve_rides_predicted", "Rides given a predicted duration",
                             registry=self.registry)
        self.minutes = Histogram("taxipipe_serve_predicted_minutes", "Predicted trip durations",
                                 buckets=MINUTE_BUCKETS, registry=self.registry)
        self.model_version = Gauge("taxipipe_serve_model_version", "Registered version of the served champion",
                                   registry=self.registry, multiprocess_mode="mostrecent")
        self.reloads = Counter("taxipipe_serve_model_reloads", "Champion versions loaded",
                               registry=self.registry)
        self.reload_failures = Counter("taxipipe_serve_model_reload_failures",
                                       "Champion lookups or loads that failed (the served model stayed)",
                                       registry=self.registry)
        self.worker_version = Gauge("taxipipe_serve_worker_model_version",
                                    "Version each worker serves (0: none), one series per worker process",
                                    registry=self.registry, multiprocess_mode="liveall")
        self.loaded = Gauge("taxipipe_serve_model_loaded", "1 when every worker serves a champion, else 0",
                            registry=self.registry, multiprocess_mode="livemin")
        self.registry_version = Gauge("taxipipe_serve_registry_model_version",
                                      "Version the champion alias points to in the registry (0: none)",
                                      registry=self.registry, multiprocess_mode="mostrecent")
        self.registered_at = Gauge("taxipipe_serve_model_registered_timestamp_seconds",
                                   "When the oldest served version was registered (Unix time)",
                                   registry=self.registry, multiprocess_mode="livemin")
        self.lookup_failing = Gauge("taxipipe_serve_champion_lookup_failing",
                                    "1 while the last lookup or load of the champion failed",
                                    registry=self.registry, multiprocess_mode="max")
        for textfile in self.textfiles:
            self.registry.register(textfile)

    def served(self, version: int | None, registry_version: int | None, registered_at: float | None,
               failing: bool = False) -> None:
        """Record what this process serves, what the registry's alias says, and whether the last
        lookup or load failed."""
        self.lookup_failing.set(1 if failing else 0)
        self.worker_version.set(version or 0)
        self.loaded.set(1 if version else 0)
        self.registry_version.set(registry_version or 0)
        if version:
            self.model_version.set(version)
            self.registered_at.set(registered_at or 0)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        labels = (endpoint, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def predicted(self, minutes: np.ndarray) -> None:
        """Count the rides and add their minutes to the histogram in one pass per bucket.

        prometheus-client observes one value at a time; a 10,000-ride batch would spend
        milliseconds there, so the bucket counts come from numpy and are added to the
        histogram's (non-cumulative) bucket values directly.
        """
        import numpy as np

        self.rides.inc(len(minutes))
        if len(minutes) == 1:
            self.minutes.observe(float(minutes[0]))
            return
        bounds = np.asarray(self.minutes._upper_bounds)
        counts = np.bincount(np.searchsorted(bounds, minutes, side="left"), minlength=len(bounds))
        for bucket, count in zip(self.minutes._buckets, counts.tolist()):
            if count:
                bucket.inc(count)
        self.minutes._sum.inc(float(np.sum(minutes, dtype=np.float64)))

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        for textfile in self.textfiles:
            merged.register(textfile)
        return generate_latest(merged)
