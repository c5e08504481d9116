"""An Airflow backfill on one worker host against two, on hosts made of network namespaces.

    sudo .venv/bin/python benchmarks/bench_hosts.py              # 12 training months each
    sudo .venv/bin/python benchmarks/bench_hosts.py --months 4

As root (tests/hosts.py): a server host runs `taxipipe stack up --listen`, a mirror host serves
TLC-layout months resampled from the real ones (make_scaled_tlc.py, 75,000 rides each), and
`taxipipe stack join` runs on one worker host, then on two (fresh homes each time). Each
configuration backfills its own run of consecutive training months (the first 2016-01..., the
second the months after), one DAG run at a time as the DAG allows, and the table gives the wall
time from `airflow backfill create` until every run succeeded, the bytes that crossed the server
host's network interface per month (the artifact proxy's files and every API call: TLC months
come from the mirror, not the server), and where the train tasks ran.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, SCALER, TLC, WORK

sys.path.insert(0, str(REPO))

from taxipipe.partition import Partition  # noqa: E402
from taxipipe.runners.airflow.adapter import logical_date_for  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.hosts import Host, Hosts, unavailable_reason  # noqa: E402
from taxipipe.stack.state import StackPaths  # noqa: E402
from tests.test_hosts import DAG_RUNS, MIRROR_PORT, Cluster, _joined  # noqa: E402

PY = sys.executable
WORKERS = ("worker-a", "worker-b")
FIRST_YEAR = 2016


def months(count: int, offset: int) -> list[Partition]:
    first = Partition("green", FIRST_YEAR, 1).shift(offset)
    return [first.shift(step) for step in range(count)]


def make_months(folder: Path, partitions: list[Partition]) -> None:
    """TLC-layout months for every training and validation month, resampled once."""
    sources = [str(path) for path in sorted(TLC.glob("green_tripdata_2021-0[1-5].parquet"))]
    folder.mkdir(parents=True, exist_ok=True)
    for seed, month in enumerate(partitions):
        target = folder / f"green_tripdata_{month.label}.parquet"
        if not target.exists():
            subprocess.run([PY, str(SCALER), str(target), *sources, "--rows", "75000", "--month", month.label,
                            "--schema", "green", "--seed", str(seed)], check=True, capture_output=True)


def interface_bytes(hosts: Hosts, host: Host) -> int:
    """Bytes received and sent by the host's eth0 so far."""
    stats = json.loads(subprocess.run(["ip", "-n", host.namespace, "-s", "-j", "link", "show", "eth0"],
                                      check=True, capture_output=True, text=True).stdout)[0]["stats64"]
    return stats["rx"]["bytes"] + stats["tx"]["bytes"]


def backfill(cluster: Cluster, training: list[Partition]) -> tuple[float, int, dict[str, int]]:
    """Backfill `training`; the wall seconds, the server's interface bytes, train tasks by host."""
    hosts, server = cluster.hosts, cluster.server
    first, last = (logical_date_for(month).date().isoformat() for month in (training[0], training[-1]))
    before, started = interface_bytes(hosts, server), time.perf_counter()
    created = cluster.on_server(
        "import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-m', 'airflow', 'backfill', 'create', "
        f"'--dag-id', 'taxi_duration_pipeline', '--from-date', '{first}', '--to-date', '{last}', "
        "'--max-active-runs', '1']).returncode)")
    assert created.returncode == 0, created.stderr
    runs_path = f"{DAG_RUNS}?run_type=backfill&logical_date_gte={first}T00:00:00Z&logical_date_lte={last}T00:00:00Z"

    def finished() -> list[dict] | None:
        runs = cluster.airflow("GET", runs_path)["dag_runs"]
        assert not [run for run in runs if run["state"] == "failed"], runs
        done = [run for run in runs if run["state"] == "success"]
        print(f"  {len(done)}/{len(training)} runs done after {time.perf_counter() - started:.0f} s", flush=True)
        return runs if len(done) == len(training) else None

    runs = wait_for(finished, "every backfill run succeeded", seconds=7200, interval=15)
    wait_for(lambda: all(item["completed_at"] for item in
                         cluster.airflow("GET", "/backfills?dag_id=taxi_duration_pipeline")["backfills"]),
             "the backfill marked complete (Airflow runs one backfill of a DAG at a time)", seconds=600, interval=5)
    wall, moved = time.perf_counter() - started, interface_bytes(hosts, server) - before
    hosts_of_train: dict[str, int] = {}
    for run in runs:
        train = cluster.airflow("GET", f"{DAG_RUNS}/{run['dag_run_id']}/taskInstances/train")
        hosts_of_train[train["hostname"]] = hosts_of_train.get(train["hostname"], 0) + 1
    return wall, moved, hosts_of_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=12, help="training months per configuration (default 12)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(reason)
    hosts = Hosts(["server", *WORKERS, "mirror"])
    server, mirror = hosts["server"], hosts["mirror"]
    make_months(mirror.folder / "tlc", months(2 * args.months + 1, 0))
    lines = ["| worker hosts | training months | wall s | s per month | server interface MB per month | train tasks by host |",
             "|---|---|---|---|---|---|"]
    try:
        hosts.start(mirror, [PY, "-m", "http.server", "--bind", mirror.address, "--directory",
                             str(mirror.folder / "tlc"), str(MIRROR_PORT)])
        template = f"http://{mirror.address}:{MIRROR_PORT}/" + "{color}_tripdata_{year}-{month:02d}.parquet"
        started = time.perf_counter()
        up = hosts.taxipipe(server, "stack", "up", "--listen", server.address, timeout=900,
                            env={**server.env(), "TAXIPIPE_DATA__URL_TEMPLATE": template})
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        print(f"stack up --listen in {time.perf_counter() - started:.0f} s", flush=True)
        join_file = Path(re.search(r"🔑 join file (\S+)", up.stdout).group(1))
        cluster = Cluster(hosts, join_file)
        for count in (1, 2):
            joined = []
            for name in WORKERS[:count]:
                shutil.rmtree(hosts[name].home, ignore_errors=True)
                joined.append(hosts.start(hosts[name], [PY, "-m", "taxipipe", "stack", "join",
                                                       str(cluster.copy_join_file(hosts[name]))]))
            wait_for(lambda: {(name, "airflow", "alive") for name in WORKERS[:count]} <= _joined(cluster.status()),
                     f"{count} Airflow worker(s) alive", seconds=300, interval=3)
            wall, moved, where = backfill(cluster, months(args.months, (count - 1) * args.months))
            lines.append(f"| {count} | {args.months} | {wall:.0f} | {wall / args.months:.1f} | "
                         f"{moved / args.months / 1e6:.1f} | {', '.join(f'{h} {n}' for h, n in sorted(where.items()))} |")
            print(lines[-1], flush=True)
            for process in joined:
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=120)
    finally:
        hosts.taxipipe(server, "stack", "down", timeout=300)
        hosts.close()
        shutil.rmtree(StackPaths.of(server.home).postgres, ignore_errors=True)
    WORK.mkdir(exist_ok=True)
    (WORK / "hosts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
