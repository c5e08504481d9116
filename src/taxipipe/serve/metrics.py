"""Prometheus metrics of the prediction service.

With several uvicorn workers each process writes its values to files in
$PROMETHEUS_MULTIPROC_DIR (set by `taxipipe serve --workers N`) and /metrics adds them up.
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

    from taxipipe.serve.champion import Champion

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
        self.model_registered = Gauge("taxipipe_serve_model_registered_timestamp_seconds",
                                      "When the served champion version was registered (0: none served)",
                                      registry=self.registry, multiprocess_mode="mostrecent")
        self.lookup_failing = Gauge("taxipipe_serve_champion_lookup_failing",
                                    "1 while the last lookup or load of the champion failed",
                                    registry=self.registry, multiprocess_mode="max")
        for textfile in self.textfiles:
            self.registry.register(textfile)

    def champion(self, champion: Champion, failed: bool = False) -> None:
        """The served version, when it was registered, and whether the last lookup failed."""
        loaded = champion.current
        self.model_version.set(loaded.version if loaded else 0)
        self.model_registered.set(loaded.registered_at if loaded else 0)
        self.lookup_failing.set(1 if failed or champion.lookup_error else 0)

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
