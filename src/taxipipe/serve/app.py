"""The prediction service: FastAPI serving `models:/<model_name>@champion` from the configured store.

    POST /predict          one raw ride -> {"duration_minutes", "model_version", "run_id"}
    POST /predict/batch    {"rides": [...]} -> durations in order
    GET  /health           model name, version, alias, run id, loaded at
    GET  /metrics          Prometheus metrics
    POST /admin/reload     look the champion up now (it is also looked up every serve.reload_seconds)
    POST /invocations      MLflow's scoring protocol, as `mlflow models serve` answers it
    GET  /ping, /version   as `mlflow models serve` answers them

The hot path parses JSON into three numpy arrays and calls the pyfunc's python model on
them: no pandas DataFrame per request, no pydantic model per ride.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from taxipipe.config import Settings
from taxipipe.serve import invocations
from taxipipe.serve.champion import Champion
from taxipipe.serve.metrics import CONTENT_TYPE, ServeMetrics
from taxipipe.serve.rides import RideError, parse_batch, parse_ride

log = logging.getLogger("taxipipe.serve")
ENDPOINTS = frozenset({"/predict", "/predict/batch", "/health", "/metrics", "/admin/reload", "/invocations",
                       "/ping", "/version"})
RIDE_SCHEMA = {
    "type": "object",
    "required": ["PULocationID", "DOLocationID", "trip_distance"],
    "properties": {
        "PULocationID": {"type": "integer", "minimum": 1, "maximum": 265, "example": 74},
        "DOLocationID": {"type": "integer", "minimum": 1, "maximum": 265, "example": 168},
        "trip_distance": {"type": "number", "minimum": 0, "example": 2.5},
    },
}


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), status_code=status, media_type="application/json")


class _Timing:
    """ASGI middleware: count and time every request by endpoint and status."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            path = scope["path"]
            self.metrics.request(path if path in ENDPOINTS else "other", status, time.perf_counter() - started)


def create_app(settings: Settings) -> FastAPI:
    """The service for these settings; the champion is loaded at startup and rechecked in the background."""
    champion = Champion(settings)
    metrics = ServeMetrics()
    limit = settings.serve.batch_limit

    def refresh() -> dict[str, Any]:
        if champion.refresh():
            loaded = champion.current
            metrics.model_version.set(loaded.version)
            metrics.reloads.inc()
            log.info("serving %s version %s (run %s)", loaded.name, loaded.version, loaded.run_id)
        return champion.describe()

    async def watch() -> None:
        while True:
            await asyncio.sleep(settings.serve.reload_seconds)
            try:
                await asyncio.to_thread(refresh)
            except Exception as exc:  # a store hiccup must not stop the watcher or the service
                log.warning("champion lookup failed, keeping the current model: %s", exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(refresh)
        if champion.current is None:
            log.warning(champion.missing_sentence)
        watcher = asyncio.create_task(watch())
        yield
        watcher.cancel()

    app = FastAPI(title="taxipipe", summary="NYC taxi trip duration from the MLflow champion",
                  lifespan=lifespan)
    app.add_middleware(_Timing, metrics=metrics)

    async def read_json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            raise RideError("body", "must be valid JSON") from None
        except RecursionError:
            raise RideError("body", "must not nest arrays or objects this deeply") from None

    def unavailable() -> Response:
        return _json({"detail": champion.missing_sentence}, 503)

    @app.exception_handler(RideError)
    async def bad_ride(request: Request, exc: RideError) -> Response:
        return _json(exc.as_json(), exc.status)

    @app.post("/predict", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": RIDE_SCHEMA}}}})
    async def predict(request: Request) -> Response:
        """Predicted minutes of one ride."""
        loaded = champion.current
        if loaded is None:
            return unavailable()
        minutes = loaded.predict(*parse_ride(await read_json(request)))
        metrics.predicted(minutes)
        return _json({"duration_minutes": float(minutes[0]), "model_version": loaded.version,
                      "run_id": loaded.run_id})

    @app.post("/predict/batch", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["rides"], "properties": {
            "rides": {"type": "array", "items": RIDE_SCHEMA, "minItems": 1, "maxItems": limit}}}}}}})
    async def predict_batch(request: Request) -> Response:
        """Predicted minutes of up to serve.batch_limit rides, in order."""
        loaded = champion.current
        if loaded is None:
            return unavailable()
        minutes = loaded.predict(*parse_batch(await read_json(request), limit))
        metrics.predicted(minutes)
        return _json({"durations": minutes.tolist(), "rides": len(minutes), "model_version": loaded.version,
                      "run_id": loaded.run_id})

    @app.post("/invocations", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "example": {"dataframe_split": {
            "columns": list(RIDE_SCHEMA["required"]), "data": [[74, 168, 2.5]]}}}},
        "text/csv": {"schema": {"type": "string", "example": "PULocationID,DOLocationID,trip_distance\n74,168,2.5\n"}},
    }}})
    async def invoke(request: Request) -> Response:
        """MLflow's scoring protocol: dataframe_split, dataframe_records, inputs or instances JSON, or CSV."""
        loaded = champion.current
        if loaded is None:
            return _json({"error_code": "TEMPORARILY_UNAVAILABLE", "message": champion.missing_sentence}, 503)
        try:
            rides = invocations.parse(await request.body(), request.headers.get("content-type"), limit)
        except invocations.ScoringError as exc:
            return Response(exc.body(), status_code=exc.status, media_type=exc.media_type)
        minutes = loaded.predict(*rides)
        metrics.predicted(minutes)
        return _json({"predictions": minutes.tolist()})

    @app.get("/ping")
    async def ping() -> Response:
        """200 while a champion is loaded, as `mlflow models serve` answers; 503 and the reason otherwise."""
        if champion.current is None:
            return _json({"detail": champion.missing_sentence}, 503)
        return Response("\n", media_type="application/json")

    @app.get("/version")
    async def version() -> Response:
        """The MLflow version, as `mlflow models serve` answers."""
        from importlib.metadata import version as installed

        return Response(installed("mlflow"), media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        """The served model (or why there is none)."""
        return _json(champion.describe())

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Request counts and latencies, rides and minutes predicted, the served version."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.post("/admin/reload")
    async def reload() -> Response:
        """Look the champion up now and load it if the alias moved."""
        return _json(await asyncio.to_thread(refresh))

    return app


def app_from_environment() -> FastAPI:
    """The app of a uvicorn worker process: settings come as JSON in TAXIPIPE_SERVE_SETTINGS."""
    import os

    return create_app(Settings.model_validate_json(os.environ["TAXIPIPE_SERVE_SETTINGS"]))


def serve(settings: Settings) -> int:
    """Run the service with uvicorn until interrupted (one process, or `serve.workers` of them).

    XGBoost predicts with one OpenMP thread per process (OMP_NUM_THREADS=1 unless set): a
    process answers one request at a time, and on busy shared cores two OpenMP threads wait
    on each other (one ride took 58 ms with two threads, 1.3 ms with one, measured here).
    More cores are used with `--workers`.
    """
    import os
    import tempfile

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    options = settings.serve
    print(f"🚕 serving models:/{settings.mlflow.model_name}@champion from {settings.tracking_uri()} on "
          f"http://{options.host}:{options.port} (Ctrl-C stops it)", flush=True)
    common = {"host": options.host, "port": options.port, "log_level": "warning", "access_log": False}
    if options.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return 0
    with tempfile.TemporaryDirectory(prefix="taxipipe-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ["TAXIPIPE_SERVE_SETTINGS"] = settings.model_dump_json()
        uvicorn.run("taxipipe.serve.app:app_from_environment", factory=True, workers=options.workers, **common)
    return 0
