"""The prediction service: FastAPI serving `models:/<model_name>@champion` from the configured store.

    POST /predict          one raw ride -> {"duration_minutes", "model_version", "run_id"}
    POST /predict/batch    {"rides": [...]} -> durations in order
    GET  /health           model name, version, alias, run id, loaded at
    GET  /metrics          Prometheus metrics
    POST /admin/reload     look the champion up now (it is also looked up every serve.reload_seconds)
    POST /invocations      MLflow's scoring protocol, as `mlflow models serve` answers it
    GET  /ping, /version   as `mlflow models serve` answers them
    GET  /docs             the API on one page that works offline (docs_page)

The hot path parses JSON into three numpy arrays and calls the pyfunc's python model on
them: no pandas DataFrame per request, no pydantic model per ride.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from taxipipe import __version__
from taxipipe.config import SERVE_SETTINGS_ENV, SERVE_SHARED_ENV, Settings
from taxipipe.errors import UsageError
from taxipipe.serve import invocations
from taxipipe.serve.admin import AdminGuard, admin_token, exposure_warning
from taxipipe.serve.champion import ServedChampion
from taxipipe.serve.edge import Edge, body_limit
from taxipipe.serve.metrics import CONTENT_TYPE, ServeMetrics
from taxipipe.serve.monitor import verdict_path
from taxipipe.serve.workers import POLL_SECONDS, Workers
from taxipipe.serve.rides import RideError, parse_batch, parse_ride

log = logging.getLogger("taxipipe.serve")
SETTINGS_ENV, SHARED_ENV = SERVE_SETTINGS_ENV, SERVE_SHARED_ENV
#: How long a reload asked of one worker waits for the others to load the new version.
RELOAD_WAIT_SECONDS = 120
ENDPOINTS = frozenset({"/predict", "/predict/batch", "/health", "/metrics", "/admin/reload", "/invocations",
                       "/ping", "/version", "/docs", "/openapi.json"})
RIDE_SCHEMA = {
    "type": "object",
    "required": ["PULocationID", "DOLocationID", "trip_distance"],
    "properties": {
        "PULocationID": {"type": "integer", "minimum": 1, "maximum": 265, "example": 74},
        "DOLocationID": {"type": "integer", "minimum": 1, "maximum": 265, "example": 168},
        "trip_distance": {"type": "number", "minimum": 0, "example": 2.5},
    },
    "example": {"PULocationID": 74, "DOLocationID": 168, "trip_distance": 2.5},
}


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), status_code=status, media_type="application/json")


def endpoint_name(path: str) -> str:
    """The `endpoint` label of a path: its own for the service's endpoints, "other" for the rest."""
    return path if path in ENDPOINTS else "other"


def create_app(settings: Settings, shared: Path | None = None) -> FastAPI:
    """The service for these settings; the champion is loaded at startup and rechecked in the background.

    `shared` is the directory the workers of one `serve --workers N` share (see `workers`);
    None for a single process.
    """
    champion = ServedChampion(settings)
    metrics = ServeMetrics(textfiles=(verdict_path(settings),))
    limit = settings.serve.batch_limit
    guard = AdminGuard(settings)
    workers = Workers(shared) if shared is not None else None

    refreshing = threading.Lock()

    def refresh(generation: int = 0) -> dict[str, Any]:
        """Refresh the champion and publish what is served (metrics, the workers' files); one at a time."""
        with refreshing:
            return _refresh(generation)

    def _refresh(generation: int) -> dict[str, Any]:
        problem_before = champion.problem
        if champion.refresh():
            loaded = champion.current
            metrics.reloads.inc()
            log.info("serving %s version %s (run %s)", loaded.name, loaded.version, loaded.run_id)
        loaded = champion.current
        metrics.served(loaded and loaded.version, champion.registry_version, loaded and loaded.registered_at,
                       failing=champion.problem is not None)
        if champion.problem:
            metrics.reload_failures.inc()
            if champion.problem != problem_before:
                log.warning("%s; %s", champion.problem,
                            f"still serving version {loaded.version}" if loaded else "nothing to serve yet")
        state = {**champion.describe(), "reload_error": champion.problem}
        if workers is not None:
            workers.report(generation, state)
        return state

    async def watch() -> None:
        """Look the alias up every serve.reload_seconds; with workers, follow a reload asked of another."""
        period = settings.serve.reload_seconds
        next_lookup = time.monotonic() + period
        while True:
            await asyncio.sleep(min(POLL_SECONDS, period) if workers else period)
            asked = workers.generation() if workers else 0
            if not (workers and asked > workers.seen) and time.monotonic() < next_lookup:
                continue
            try:
                await asyncio.to_thread(refresh, max(asked, workers.seen) if workers else 0)
            except Exception as exc:  # nothing the store does may stop the watcher or the service
                log.warning("champion lookup failed, keeping the current model: %s", exc)
            next_lookup = time.monotonic() + period

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(refresh, workers.seen if workers else 0)
        if champion.current is None and champion.problem is None:
            log.warning(champion.missing_sentence)
        watcher = asyncio.create_task(watch())
        yield
        watcher.cancel()
        if workers is not None:
            workers.leave()
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(title="taxipipe", summary="NYC taxi trip duration from the MLflow champion",
                  version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Edge, metrics=metrics, max_body=body_limit(limit),
                       body_seconds=settings.serve.body_timeout_seconds, endpoint=endpoint_name)

    async def read_json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RideError("body", "must be valid JSON") from None
        except ValueError:  # what else json.loads raises: a whole number past Python's digit limit
            raise RideError("body", invocations.TOO_MANY_DIGITS) from None
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
            "rides": {"type": "array", "items": RIDE_SCHEMA, "minItems": 1, "maxItems": limit}},
        "example": {"rides": [RIDE_SCHEMA["example"], {**RIDE_SCHEMA["example"], "trip_distance": 10.0}]}}}}}})
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
        """MLflow's scoring protocol: dataframe_split, dataframe_records, inputs or instances JSON, CSV or Parquet."""
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

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        from taxipipe.serve.docs_page import render

        return HTMLResponse(render(app.openapi()))

    @app.get("/health")
    async def health() -> Response:
        """The served model beside the registry's (or why there is none); with workers, each worker's."""
        info = champion.describe()
        if workers is not None:
            info["workers"] = await asyncio.to_thread(workers.states)
        return _json(info)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Request counts and latencies, rides and minutes predicted, the served version."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        """Look the champion up now and load it if the alias moved, in every worker; 502 if that failed."""
        refused = guard.refusal(request.headers)
        if refused is not None:
            status, sentence = refused
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return Response(json.dumps({"detail": sentence}), status, headers, media_type="application/json")
        if workers is None:
            state = await asyncio.to_thread(refresh)
            return _json(state, 502 if state["reload_error"] else 200)
        generation = workers.ask_all()
        state = await asyncio.to_thread(refresh, generation)
        states = await asyncio.to_thread(workers.wait_for, generation, RELOAD_WAIT_SECONDS)
        failed = state["reload_error"] or any(worker["reload_error"] or worker["generation"] < generation
                                              for worker in states)
        return _json({**state, "workers": states}, 502 if failed else 200)

    return app


def app_from_environment() -> FastAPI:
    """The app of a uvicorn worker process: settings come as JSON in TAXIPIPE_SERVE_SETTINGS."""
    return create_app(Settings.model_validate_json(os.environ[SETTINGS_ENV]), Path(os.environ[SHARED_ENV]))


def serve(settings: Settings) -> int:
    """Run the service with uvicorn until SIGTERM or Ctrl-C (one process, or `serve.workers` of them).

    The port is bound before anything is loaded, so a port in use is one sentence and exit 1.
    A stop signal is a normal end: the socket stops accepting, requests in flight are
    answered, and the command says goodbye and returns 0.

    XGBoost predicts with one OpenMP thread per process (OMP_NUM_THREADS=1 unless set): a
    process answers one request at a time, and on busy shared cores two OpenMP threads wait
    on each other (one ride took 58 ms with two threads, 1.3 ms with one, measured here).
    More cores are used with `--workers`.
    """
    import tempfile

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    options = settings.serve
    token = admin_token(settings)
    listener = bind(options.host, options.port)
    port = listener.getsockname()[1]  # the one the system chose for --port 0
    print(f"🚕 serving models:/{settings.mlflow.model_name}@champion from {settings.tracking_uri()} on "
          f"http://{options.host}:{port} (Ctrl-C stops it)", flush=True)
    warning = exposure_warning(settings)
    if warning:
        print(warning, flush=True)
    with listener, tempfile.TemporaryDirectory(prefix="taxipipe-serve-") as shared:
        stopped_by = _run_uvicorn(settings, token, listener, Path(shared))
    print(f"👋 stopped by {stopped_by}: stopped accepting and answered every request in flight", flush=True)
    return 0


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a TaxipipeError naming the address when it is taken or not ours."""
    import errno

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use by another program: stop it or choose another "
                             "port (--port or serve.port)") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.set_inheritable(True)
    return listener


def _run_uvicorn(settings: Settings, token: str | None, listener: socket.socket, shared: Path) -> str:
    """Serve on `listener` until a stop signal; the signal's name."""
    import signal

    import uvicorn

    from taxipipe.serve import workers
    from taxipipe.serve.connections import ServeConfig

    seen: list[int] = []
    common = {"log_level": "warning", "access_log": False, "header_timeout": settings.serve.header_timeout_seconds,
              "timeout_keep_alive": settings.serve.keep_alive_seconds}
    previous = {signum: signal.signal(signum, lambda signum, frame: seen.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.serve.workers == 1:
            server = uvicorn.Server(ServeConfig(create_app(settings), **common))
            server.run(sockets=[listener])
        else:
            metrics_dir = shared / "metrics"
            metrics_dir.mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            os.environ[SHARED_ENV] = str(shared)
            worker_settings = settings.model_dump(mode="json")
            worker_settings["serve"]["admin_token"] = token  # the dump masks it; a worker needs the token itself
            os.environ[SETTINGS_ENV] = json.dumps(worker_settings)
            config = ServeConfig("taxipipe.serve.app:app_from_environment", factory=True,
                                 workers=settings.serve.workers, **common)
            supervisor = workers.supervisor(config, [listener])
            supervisor.handle_term = lambda: (seen.append(signal.SIGTERM), supervisor.should_exit.set())
            supervisor.handle_int = lambda: (seen.append(signal.SIGINT), supervisor.should_exit.set())
            supervisor.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not seen:  # uvicorn gave up: a worker could not start
        raise UsageError("the service did not start; the messages above say why")
    return signal.Signals(seen[0]).name
