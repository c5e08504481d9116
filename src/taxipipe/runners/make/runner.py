"""The make runner: build a target, running only the steps whose dependencies changed.

A step reruns exactly when, since its last successful run, an output is missing or no longer
holds what the step wrote, an input file's content changed, a config key the step declares
changed, the step's code changed, or an upstream step now has other output. Each decision is
explained (`--dry-run` prints them without running anything). What a step saw and made is
recorded in the partition's state file (see `taxipipe.runners.make.state`) only after it succeeded.

Two refinements, both from GNU Make:
- A step without upstream steps (extract) fetches source data: its outputs only need to
  exist. Their content is an input of the steps that read them, which rerun when it changes.
- Outputs a later step removed on purpose (cleanup) are intermediates: their absence is no
  reason to rebuild them, unless a step that reads them has to run.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from taxipipe import console
from taxipipe.config import Settings
from taxipipe.errors import PipelineStateError, StepFailed, TaxipipeError, UsageError
from taxipipe.fingerprint import essential, fingerprint, home_key
from taxipipe.hashing import FileHasher, FileState, value_fingerprint
from taxipipe.layout import Layout, remove
from taxipipe.runners.make.state import Entry, MakeState, lock_path
from taxipipe.safety.home_lock import hold_home
from taxipipe.pipeline import BY_NAME, STEPS, Step, chain, graph, run_step
from taxipipe.runners.session import Session, header
from taxipipe.steps import Record, StepContext

RUNNER = "make"
DEFAULT_TARGET = "deploy"
ALIASES = {"validate": "validate_model"}


def resolve_target(name: str, settings: Settings | None = None) -> str:
    """The step or node a target names (`validate` is the seed's name of `validate_model`)."""
    name = ALIASES.get(name, name)
    nodes = {node.name for node in graph(settings)} if settings is not None else set()
    if name not in BY_NAME and name not in nodes:
        raise UsageError(f"there is no target '{name}'; `taxipipe make --list` shows the targets")
    return name


def list_targets() -> None:
    """Each target, the steps it depends on and what it does."""
    console.say(f"📋 Targets of `taxipipe make [TARGET]` (default: {DEFAULT_TARGET})")
    console.say(f"  {'TARGET':<15} {'DEPENDS ON':<24} WHAT IT DOES")
    for step in STEPS:
        console.say(f"  {step.name:<15} {', '.join(step.upstream) or '-':<24} {step.description}")
    for alias, name in ALIASES.items():
        console.say(f"  {alias:<15} {name:<24} alias of {name}")


def clean(settings: Settings, wait_for_lock: bool = True) -> dict[Path, int]:
    """Remove the partition's downloads, intermediates, deployment record and lock file, and
    the files its recorded steps shared through the tracking server's artifact store.

    The MLflow store and the model registry stay as they are; the temporary files of killed
    writers anywhere in the home go too (see `hold_home`).
    """
    from taxipipe.tracking import shared_files

    layout = Layout(settings.home, settings.partition, settings.data.train_months)
    lock = lock_path(settings.home, settings.partition, settings.data.train_months)
    with hold_home(settings.home, f"`taxipipe make --clean`, {settings.partition}", wait_for_lock):
        remote = shared_files.remove(settings.tracking_uri(), shared_files.manifest_of(_records(settings, lock)))
        removed = remove([*layout.downloads(settings.months), layout.workdir, layout.deployment_record, lock])
    console.say(f"🧹 Cleaning {settings.partition} in {settings.home}")
    for path, size in removed.items():
        console.say(f"   removed {path.relative_to(settings.home)} ({size:,} bytes)")
    for where in remote:
        console.say(f"   removed {where} from the tracking server's artifact store")
    console.say(f"🧹 Removed {len(removed)} file(s), {sum(removed.values()):,} bytes"
                if removed else "🧹 Nothing to remove")
    return removed


def _records(settings: Settings, lock: Path) -> list[Record]:
    """The records of the partition's finished steps (none when its state file is unreadable:
    cleaning is how a user gets past that)."""
    try:
        state = MakeState.load(lock, settings.partition)
    except PipelineStateError:
        return []
    return [entry.record for entry in state.steps.values()]


@dataclass
class Check:
    """Why a step has to run, as far as its own inputs, outputs, config and code tell."""

    step: Step
    reasons: list[str]
    inputs: dict[str, FileState | None]
    config: dict[str, Any]
    code: str
    removed_by: str | None


class MakeRun:
    """One `taxipipe make` invocation on one partition."""

    session: Session  #: the run's session, from `build` on

    def __init__(self, settings: Settings, target: str = DEFAULT_TARGET, force: bool = False,
                 jobs: int = 1) -> None:
        if jobs < 1:
            raise UsageError(f"-j needs at least 1 job, not {jobs}")
        self.settings, self.target, self.force, self.jobs = settings, target, force, jobs
        self.chain = chain(resolve_target(target, settings), graph(settings))
        self.context = StepContext(settings, runner=RUNNER)
        self.home = settings.home
        self.state = MakeState.load(lock_path(self.home, settings.partition, settings.data.train_months),
                                   settings.partition)
        self.hasher = FileHasher(self.state.known_files())
        self.records: dict[str, Record] = {}
        self.fingerprints: dict[str, str] = {}
        self.ran: set[str] = set()

    # -- deciding ---------------------------------------------------------------------------

    def _key(self, path: Path) -> str:
        return home_key(self.home, path)

    def _removed_files(self) -> set[str]:
        return {key for entry in self.state.steps.values() if entry.removed_by for key in entry.outputs}

    def inspect(self, step: Step) -> Check:
        """The reasons `step` must run that its own dependencies give (upstream aside)."""
        entry = self.state.steps.get(step.name)
        printed = fingerprint(step, self.settings, {}, self.hasher)
        inputs = printed.inputs
        check = Check(step, ["--force"] if self.force else [], inputs, printed.config, printed.code, None)
        if entry is None:
            started = self.state.running.get(step.name, {}).get("started_at")
            check.reasons.append(f"it was interrupted (started {started})" if started else "it has never run")
            return check
        check.reasons += _config_changes(entry.config, check.config)
        if entry.code != check.code:
            check.reasons.append("its code changed")
        removed = self._removed_files()
        for key, state in inputs.items():
            if state is None and key not in removed:
                check.reasons.append(f"input {key} is missing")
            elif state is not None and (key not in entry.inputs or entry.inputs[key].sha256 != state.sha256):
                check.reasons.append(f"input {key} changed")
        for path in step.writes(self.context):
            key = self._key(path)
            state = self.hasher.state(key, path)
            if state is None and entry.removed_by:
                check.removed_by = entry.removed_by
            elif state is None:
                check.reasons.append(f"output {key} is missing")
            elif step.upstream and (key not in entry.outputs or entry.outputs[key].sha256 != state.sha256):
                check.reasons.append(f"output {key} no longer holds what the step wrote")
        return check

    def _upstream_changes(self, step: Step, fingerprints: dict[str, str]) -> list[str]:
        entry = self.state.steps[step.name]
        return [f"upstream '{name}' {'produced new output' if name in self.ran else 'changed since it last ran'}"
                for name in step.upstream if fingerprints.get(name) != entry.upstream.get(name)]

    def plan(self) -> dict[str, list[str]]:
        """Every step of the chain and the reasons it will run (none: up to date).

        This assumes that a step which runs changes its output; the build itself looks at
        the output a step actually produced, so it may run fewer steps than planned.
        """
        checks = {step.name: self.inspect(step) for step in self.chain}
        reasons = {name: list(check.reasons) for name, check in checks.items()}
        recorded = {name: entry.fingerprint for name, entry in self.state.steps.items()}
        changed = True
        while changed:
            changed = False
            for step in self.chain:
                if reasons[step.name]:
                    continue
                found = ([f"upstream '{name}' will run" for name in step.upstream if reasons[name]]
                         or self._upstream_changes(step, recorded))
                found += self._needed_by(step, checks[step.name].removed_by, reasons)
                if found:
                    reasons[step.name] = found
                    changed = True
        return reasons

    def _needed_by(self, step: Step, removed_by: str | None, reasons: dict[str, list[str]]) -> list[str]:
        """Why outputs removed on purpose must come back: a step that reads them will run."""
        if removed_by is None:
            return []
        written = set(step.writes(self.context))
        readers = [other.name for other in self.chain
                   if reasons[other.name] and written & set(other.reads(self.context))]
        return [f"'{readers[0]}' needs the outputs that '{removed_by}' removed"] if readers else []

    # -- dry run ----------------------------------------------------------------------------

    def dry_run(self) -> dict[str, list[str]]:
        """Print, for every step of the chain, "up to date" or why it would run; run nothing."""
        header(RUNNER, self.settings, self.target, self.force, dry_run=True)
        reasons = self.plan()
        for step in self.chain:
            if reasons[step.name]:
                console.say(f"🔨 Task '{step.name}' would run: {'; '.join(reasons[step.name])}")
            else:
                console.task_up_to_date(step.name)
        return reasons

    # -- building ---------------------------------------------------------------------------

    def build(self, session: Session) -> dict[str, Record]:
        """Bring the target up to date in `session`, which holds the home's run lock (see
        `make`); return every step's record (recorded or new)."""
        self.session = session
        session.begin(self.target, self.force)
        planned = self.plan()
        pending = list(self.chain)
        running: dict[Future[Record], tuple[Check, set[str]]] = {}
        failure: StepFailed | None = None
        with _executor(self.jobs) as pool:
            while pending or running:
                if failure is not None:
                    pending.clear()
                for step in [step for step in pending if all(name in self.records for name in step.upstream)]:
                    pending.remove(step)
                    check = self._decide(step, planned)
                    if check.reasons:
                        running[self._start(pool, check)] = (check, self._present_outputs())
                    else:
                        self._skip(step)
                if running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in [future for future in running if future in done]:
                        check, present = running.pop(future)
                        failure = self._finish(check, present, future) or failure
        if self.state.refresh(self.hasher.rehashed):
            self.state.save()
        if failure is not None:
            raise failure
        return session.finish(self.records)

    def _decide(self, step: Step, planned: dict[str, list[str]]) -> Check:
        check = self.inspect(step)
        if not check.reasons:
            check.reasons = self._upstream_changes(step, self.fingerprints)
        if not check.reasons and check.removed_by:
            check.reasons = self._needed_by(step, check.removed_by, planned)
        return check

    def _skip(self, step: Step) -> None:
        entry = self.state.steps[step.name]
        self.records[step.name] = entry.record
        self.fingerprints[step.name] = entry.fingerprint
        self.session.up_to_date(step.name, entry.record)

    def _start(self, pool: Any, check: Check) -> Future[Record]:
        step = check.step
        self.session.started_node(step.name, check.reasons)
        self.state.running[step.name] = {"started_at": _now(), "reasons": check.reasons}
        self.state.save()
        upstream = {name: self.records[name] for name in step.upstream}
        return pool.submit(run_step, step, self.context, upstream)

    def _finish(self, check: Check, present: set[str], future: Future[Record]) -> StepFailed | None:
        """Record a finished step; return the failure a user-facing error became."""
        step = check.step
        del self.state.running[step.name]
        try:
            record = future.result()
        except TaxipipeError as exc:
            self.state.save()
            return self.session.failed(step.name, str(exc))
        written = {self._key(path): self.hasher.state(self._key(path), path, trust_stat=False)
                   for path in step.writes(self.context)}
        outputs = {key: state for key, state in written.items() if state is not None}
        fingerprint = value_fingerprint({"outputs": {key: state.sha256 for key, state in outputs.items()},
                                         "record": essential(record, f"{self.home}{os.sep}")})
        self.state.steps[step.name] = Entry(
            finished_at=_now(), code=check.code, config=check.config,
            inputs={key: state for key, state in check.inputs.items() if state is not None},
            outputs=outputs, upstream={name: self.fingerprints[name] for name in step.upstream},
            fingerprint=fingerprint, record=record)
        for name in present - self._present_outputs():
            self.state.steps[name].removed_by = step.name
        self.state.save()
        self.records[step.name] = record
        self.fingerprints[step.name] = fingerprint
        self.ran.add(step.name)
        self.session.done(step.name, record)
        return None

    def _present_outputs(self) -> set[str]:
        """The steps whose recorded outputs all exist."""
        return {name for name, entry in self.state.steps.items()
                if entry.outputs and all((self.home / key).exists() for key in entry.outputs)}


def make(settings: Settings, target: str = DEFAULT_TARGET, force: bool = False, jobs: int = 1,
         wait_for_lock: bool = True) -> dict[str, Record]:
    """Build `target` for the configured partition, holding the home's run lock; record the wall
    time when train ran (from the lock taken)."""
    resolve_target(target, settings)
    owner = f"`taxipipe make` target {target}, {settings.partition}"
    with Session(settings, RUNNER, hold=owner, wait=wait_for_lock) as session:
        return MakeRun(settings, target, force, jobs).build(session)


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    unset = "<unset>"
    return [f"config {key} changed ({old.get(key, unset)!r} -> {new.get(key, unset)!r})"
            for key in sorted(old.keys() | new.keys()) if old.get(key, unset) != new.get(key, unset)]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class _Inline:
    """An executor that runs each job at once in this thread (for -j 1)."""

    def submit(self, fn: Callable[..., Record], *args: Any) -> Future[Record]:
        future: Future[Record] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _executor(jobs: int) -> Any:
    return _Inline() if jobs == 1 else ThreadPoolExecutor(jobs)
