"""`taxipipe stack up | down | status | env`: the services in order, each started only if missing.

PostgreSQL and MLflow are the stack's own; every other service belongs to an engine, which
declares it in its folder (`runners/NAME/services.py`); the caller passes the engines to run
(`runners/engines.py`).

With `stack.listen` (`up --listen ADDRESS`) the stack also runs a Dask scheduler, and `up`
ends by writing the join file a worker host needs (`stack/join_file.py`).

Every command first says which home's stack it speaks for. `up` records the running stack's
home (and the settings its runs get) outside any home, so `env`, `status` and `down` from a
shell without that home still find it; a shell whose own home has a stack speaks for that one
and names the running stack's home.
"""

from __future__ import annotations

import os
import shlex
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Sequence

from taxipipe.config import DEFAULT_URL_TEMPLATE, Settings
from taxipipe.errors import StackError
from taxipipe.stack import dask_scheduler, dask_worker, join_file, joining, postgres, processes, state
from taxipipe.stack.join_file import JoinFile, code_version
from taxipipe.stack.processes import PidRecord
from taxipipe.stack.services import MLFLOW_ADMIN, Engine, Service, Stack, auth_database
from taxipipe.stack.state import StackPaths
from taxipipe.stack.workers import JoinedWorker

_print_lock = threading.Lock()


def say(line: str) -> None:
    """One progress line (hidden by -q); services starting side by side print whole lines."""
    from taxipipe import console

    with _print_lock:
        console.say(line)


@dataclass(frozen=True)
class ServiceState:
    """One line of `stack status`."""

    name: str
    state: str
    url: str | None
    pid: int | None


@dataclass(frozen=True)
class Located:
    """The stack a command speaks for: its settings, its runs' settings, and the line saying so."""

    settings: Settings
    line: str
    runner_env: dict[str, str] = field(default_factory=dict)


def locate(settings: Settings) -> Located:
    """This shell's stack, or the running one when this shell's home has none.

    The running stack is the one the last `up` recorded (and `down` has not stopped): its
    home, ports, listen address and the settings its runs get, such as the URL template given
    to `up`. The listen address is the recorded one even for a shell with the stack's home.
    """
    home = settings.home
    record = state.read_running()
    if record is None:
        return Located(settings, f"🏠 stack home {home}")
    running_home = Path(record["home"])
    if running_home == home:
        listen = record.get("stack", {}).get("listen", "")
        same = settings.model_copy(update={"stack": settings.stack.model_copy(update={"listen": listen})})
        return Located(same, f"🏠 stack home {home}", record.get("runner_env", {}))
    if StackPaths.of(home).root.exists():
        return Located(settings, f"🏠 stack home {home} (the running stack's home is {running_home}: "
                                 f"--home {running_home} speaks for it)")
    ports = type(settings.stack).model_validate(record.get("stack", {}))
    running = settings.model_copy(update={"home": running_home, "stack": ports})
    return Located(running, f"🏠 stack home {running_home}, the running stack's (this shell's home {home} "
                            "has no stack)", record.get("runner_env", {}))


def _runs_env(settings: Settings, runner_env: Mapping[str, str]) -> dict[str, str]:
    """The settings the stack's runs get: `up`'s flags, and a URL template other than the default."""
    runs = dict(runner_env)
    if settings.data.url_template != DEFAULT_URL_TEMPLATE:
        runs.setdefault("TAXIPIPE_DATA__URL_TEMPLATE", settings.data.url_template)
    return runs


def _record_running(settings: Settings, runner_env: Mapping[str, str]) -> None:
    """What `locate` reads: the home, the ports and listen address, and the settings the runs get."""
    state.record_running(settings.home, {"stack": settings.stack.model_dump(mode="json"),
                                         "runner_env": _runs_env(settings, runner_env)})


def _running(paths: StackPaths, name: str) -> PidRecord | None:
    if name == postgres.SERVICE:
        return postgres.running(paths)
    record = processes.read_record(paths, name)
    return record if record is not None and record.leader_alive() else None


def service_names(engines: Sequence[Engine], listening: bool = False) -> tuple[str, ...]:
    """Every service of a stack running `engines`, in start order; a listening stack's
    (`stack.listen`) has a Dask scheduler but none of the engines' `local_only` services."""
    return (postgres.SERVICE, "mlflow",
            *(name for engine in engines for name in engine.service_names
              if not (listening and name in engine.local_only)),
            *((dask_scheduler.SERVICE,) if listening else ()))


def any_service_names(engines: Sequence[Engine]) -> tuple[str, ...]:
    """Every service a stack running `engines` may have, listening or not."""
    return tuple(dict.fromkeys(service_names(engines) + service_names(engines, listening=True)))


def _services(stack: Stack) -> dict[str, Service]:
    services = [stack.mlflow(), *(service for engine in stack.engines for service in engine.services(stack)
                                  if not (stack.listening and service.name in engine.local_only)),
                *([dask_scheduler.service(stack)] if stack.listening else [])]
    return {service.name: service for service in services}


def _start(stack: Stack, service: Service) -> None:
    """Start one service (after ending what a dead predecessor left) and wait until it is healthy."""
    started = time.monotonic()
    previous = processes.read_record(stack.paths, service.name)
    if previous is not None:
        processes.stop_members(previous, grace_seconds=10)
    record = processes.start(stack.paths, service.name, service.command, service.env(), cwd=service.cwd,
                             url=service.url, port=service.port)
    timeout = stack.settings.stack.start_timeout_seconds
    log = stack.paths.log(service.name)
    if not processes.wait_until(lambda: not record.leader_alive() or service.health(), timeout, 0.5):
        raise StackError(f"{service.name} did not become healthy within {timeout:.0f} s; see {log}")
    if not record.leader_alive():
        raise StackError(f"{service.name} exited while starting; see {log}")
    where = f" on {service.url}" if service.url else ""
    say(f"✅ {service.name} healthy in {time.monotonic() - started:.1f}s{where} (pid {record.pid})")


def start_together(stack: Stack, services: list[Service]) -> None:
    with ThreadPoolExecutor(len(services)) as pool:
        for future in [pool.submit(_start, stack, service) for service in services]:
            future.result()


def start_missing(stack: Stack, service: Service, missing: set[str]) -> None:
    if service.name in missing:
        _start(stack, service)


def up(settings: Settings, engines: Sequence[Engine], runner_env: Mapping[str, str],
       new_credentials: bool = False) -> None:
    """Start every missing service: PostgreSQL, then MLflow and each engine's side by side (and,
    with `stack.listen`, the Dask scheduler), then write a listening stack's join file.

    `new_credentials` (refused while a service runs) first makes every login, signing key and
    certificate anew, so join files written before stop working.
    """
    recorded = state.read_running()
    elsewhere = recorded is not None and Path(recorded["home"]) != settings.home
    say(f"🏠 stack home {settings.home}" + (f" (the running stack's home is {recorded['home']})" if elsewhere else ""))
    if new_credentials:
        _renew_credentials(Stack(settings, engines))
    stack = Stack(settings, engines, runner_env)
    paths = stack.paths
    _require_same_listen(stack, recorded)
    services = _services(stack)
    names = service_names(engines, stack.listening)
    missing = {name for name in names if _running(paths, name) is None}
    for name in names:
        record = _running(paths, name)
        if record is not None:
            say(f"⏭️  {name} already running (pid {record.pid})")
    if postgres.SERVICE in missing:
        processes.require_free_port(settings.stack.postgres_port, "PostgreSQL", "postgres_port")
    for name in missing - {postgres.SERVICE}:
        service = services[name]
        if service.port is not None:
            processes.require_free_port(service.port, name, service.setting or "", service.host)
    env = stack.base_env()
    postgres.preflight(paths, env)
    paths.create(engine.name for engine in engines)
    _record_running(settings, runner_env)

    started = time.monotonic()
    if not postgres.initialised(paths):
        postgres.init_cluster(paths, stack.secrets["postgres"], env)
    if postgres.SERVICE in missing:
        record = postgres.start(paths, settings.stack.postgres_port, env)
        say(f"✅ postgres healthy in {time.monotonic() - started:.1f}s on 127.0.0.1:"
            f"{settings.stack.postgres_port} (pid {record.pid})")
    databases = postgres.ensure_databases(settings.stack.postgres_port, stack.secrets, stack.databases)

    chains: list[Callable[[], None]] = [
        lambda: start_missing(stack, services["mlflow"], missing),
        *(partial(engine.start, stack, services, missing, databases) for engine in engines),
        *([lambda: start_missing(stack, services[dask_scheduler.SERVICE], missing)] if stack.listening else []),
    ]
    with ThreadPoolExecutor(len(chains)) as pool:
        futures = [pool.submit(chain) for chain in chains]
    errors = [future.exception() for future in futures if future.exception() is not None]
    if errors:
        raise errors[0]
    notes = [engine.ready_note(stack) for engine in engines if engine.ready_note is not None]
    say("; ".join([f"🟢 stack up in {time.monotonic() - started:.1f}s", *notes]))
    if stack.listening:
        say(f"🔑 join file {write_join_file(stack, _runs_env(settings, runner_env))} (a secret: copy it to "
            f"worker hosts only)")
    say('👉 eval "$(taxipipe stack env)" points this shell and its runners at the stack')


def _running_names(stack: Stack) -> list[str]:
    return [name for name in any_service_names(stack.engines) if _running(stack.paths, name)]


def _require_same_listen(stack: Stack, recorded: dict | None) -> None:
    """Refuse to change where a running stack listens: its servers would stay where they are."""
    if recorded is None or Path(recorded["home"]) != stack.settings.home:
        return
    listening = recorded.get("stack", {}).get("listen", "")
    if listening != stack.settings.stack.listen and _running_names(stack):
        where = f"on {listening}" if listening else "on 127.0.0.1 only"
        raise StackError(f"the running stack listens {where}: `taxipipe stack down` first to change --listen")


def _renew_credentials(stack: Stack) -> None:
    """Forget every login, signing key and certificate of a stopped stack (made anew on start)."""
    running = _running_names(stack)
    if running:
        verb = "runs" if len(running) == 1 else "run"
        raise StackError(f"--new-credentials needs a stopped stack, and {', '.join(running)} {verb}: "
                         "`taxipipe stack down` first")
    state.forget_secrets(stack.paths, stack.credentials)
    auth_database(stack.paths).unlink(missing_ok=True)
    shutil.rmtree(stack.paths.tls, ignore_errors=True)
    say("🔑 new credentials: join files written before no longer work")


def write_join_file(stack: Stack, runner_env: Mapping[str, str]) -> Path:
    """What a worker host needs to join the listening `stack`, in HOME/stack/join-<stack id>.json;
    MLflow's server is tagged with the stack's id, which a joining host checks."""
    assert stack.mlflow_auth is not None
    joining.publish_stack_id(stack.mlflow_url, stack.mlflow_auth, stack.secrets["stack_id"])
    files = dask_scheduler.tls_files(stack)
    engine_fields = {key: value for engine in stack.engines for key, value in engine.join(stack).items()}
    join = JoinFile(stack_id=stack.secrets["stack_id"], taxipipe_version=code_version(), address=stack.host,
                    mlflow_url=stack.mlflow_url, mlflow_username=MLFLOW_ADMIN,
                    mlflow_password=stack.secrets["mlflow_admin"], dask_scheduler=dask_scheduler.address(stack),
                    dask_ca_pem=files.ca.read_text(), dask_cert_pem=files.client_cert.read_text(),
                    dask_key_pem=files.client_key.read_text(), runner_env=dict(runner_env), **engine_fields)
    path = stack.paths.root / join.name()
    join_file.write(path, join)
    return path


def _stop(paths: StackPaths, name: str) -> None:
    started = time.monotonic()
    processes.stop(paths, name)
    say(f"⏹️  {name} stopped in {time.monotonic() - started:.1f}s")


def down(settings: Settings, engines: Sequence[Engine]) -> None:
    """Stop every service of the located stack side by side, then PostgreSQL (a fast shutdown,
    which loses nothing committed); then forget the record of the running stack.

    The workers and servers keep their state in PostgreSQL, so none has to outlive another.
    """
    located = locate(settings)
    say(located.line)
    settings = located.settings
    paths = StackPaths.of(settings.home)
    if not paths.root.exists():
        say(f"⏭️  no stack in {settings.home}")
        return
    present = [name for name in any_service_names(engines)
               if name != postgres.SERVICE and processes.read_record(paths, name)]
    with ThreadPoolExecutor(max(len(present), 1)) as pool:
        for future in [pool.submit(_stop, paths, name) for name in present]:
            future.result()
    stopped = len(present)
    if postgres.running(paths) is not None:
        started = time.monotonic()
        postgres.stop(paths, dict(os.environ))
        say(f"⏹️  postgres stopped in {time.monotonic() - started:.1f}s")
        stopped += 1
    state.forget_running(settings.home)
    if not stopped:
        say(f"⏭️  nothing of the stack in {settings.home} runs")


def _healthy(service: Service, attempts: int = 3) -> bool:
    """A health check that tolerates a busy moment: a few tries a second apart."""
    for attempt in range(attempts):
        if service.health():
            return True
        if attempt < attempts - 1:
            time.sleep(1)
    return False


def status(settings: Settings, engines: Sequence[Engine]) -> list[ServiceState]:
    """Each service of the stack `settings` names with its URL, pid and health (see `locate`)."""
    stack = Stack(settings, engines)
    services = _services(stack)
    states = []
    for name in service_names(engines, stack.listening):
        record = _running(stack.paths, name)
        if name == postgres.SERVICE:
            port = record.port if record else settings.stack.postgres_port
            healthy = record is not None and postgres.healthy(port)
            url = f"postgresql://127.0.0.1:{port}"
        else:
            service = services[name]
            healthy = record is not None and _healthy(service)
            url = record.url if record else service.url
        state = "healthy" if healthy else ("unhealthy" if record else "down")
        states.append(ServiceState(name, state, url, record.pid if record else None))
    return states


def joined(settings: Settings, engines: Sequence[Engine]) -> list[JoinedWorker]:
    """The workers other hosts run for a listening stack (`stack join`), by host and engine."""
    stack = Stack(settings, engines)
    if not stack.listening or not stack.paths.secrets.exists():
        return []
    kinds = [engine.worker for engine in engines if engine.worker is not None] + [dask_worker.WORKER]
    return sorted(worker for kind in kinds for worker in kind.joined(stack))


def environment(located: Located, engines: Sequence[Engine]) -> str:
    """`export` lines that point a shell (and every runner it starts) at the located stack, with
    the settings its runs get (the URL template given to `up`), after a comment naming its home."""
    stack = Stack(located.settings, engines)
    exported = {**located.runner_env, **stack.user_env(),
                **(dask_scheduler.shell_env(stack) if stack.listening else {})}
    return "\n".join([f"# {located.line}"] + [f"export {key}={shlex.quote(value)}" for key, value in exported.items()])
