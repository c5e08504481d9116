"""The stack's PostgreSQL cluster: initdb, pg_ctl, one role and database per server.

The cluster lives in {home}/stack/postgres/data, listens on 127.0.0.1 only and takes
passwords (scram-sha-256). PostgreSQL refuses to run as root: as root, the server runs as
the `postgres` user (runuser), and the cluster lives where that user can reach it without
loosening the home's permissions (see `StackPaths.postgres`); anyone else runs it as themself.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import quote

import psutil

from taxipipe.errors import StackError
from taxipipe.stack.processes import PidRecord, port_is_free, require_free_port, write_record
from taxipipe.stack.state import RUN_AS_ROOT_USER, StackPaths

SUPERUSER = "postgres"
SERVICE = "postgres"
#: Where Debian's postgresql-N packages put their server programs (N/bin).
DEBIAN_SERVERS = Path("/usr/lib/postgresql")


def binary(name: str) -> str:
    """A PostgreSQL server program: on the PATH, or in Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = [Path(path) for path in glob.glob(f"{DEBIAN_SERVERS}/*/bin/{name}")]
    newest = max((path for path in versions if path.parts[-3].isdigit()), default=None,
                 key=lambda path: int(path.parts[-3]))
    if newest is not None:
        return str(newest)
    raise StackError(f"the PostgreSQL server program '{name}' is not installed: install the Debian "
                     "package postgresql (e.g. `apt-get install postgresql-15`) or put its bin directory on the PATH")


def _run_as() -> list[str]:
    """The prefix that runs a server program as the user owning the cluster."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(RUN_AS_ROOT_USER)
    except KeyError:
        raise StackError("PostgreSQL cannot run as root and there is no 'postgres' user to run it: "
                         "create one (`useradd postgres`) or run taxipipe stack as another user") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise StackError("PostgreSQL cannot run as root and `runuser` (Debian package util-linux) is not "
                         "on the PATH to run it as user 'postgres': put /usr/sbin on the PATH")
    return [runuser, "-u", RUN_AS_ROOT_USER, "--"]


def _owned_directory(path: Path) -> None:
    """A 0700 directory owned by the user the server runs as."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    if os.geteuid() == 0:
        account = pwd.getpwnam(RUN_AS_ROOT_USER)
        os.chown(path, account.pw_uid, account.pw_gid)


def _server(command: list[str], env: Mapping[str, str], paths: StackPaths, what: str) -> None:
    result = subprocess.run(_run_as() + command, env=dict(env), cwd=paths.postgres, text=True,
                            capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise StackError(f"{what} failed: {detail[-1] if detail else 'no output'} "
                         f"(server log: {log_path(paths)})")


def data_dir(paths: StackPaths) -> Path:
    return paths.postgres / "data"


def log_path(paths: StackPaths) -> Path:
    return paths.postgres / "postgres.log"


def initialised(paths: StackPaths) -> bool:
    return (data_dir(paths) / "PG_VERSION").exists()


def _check_reachable(directory: Path, env: Mapping[str, str]) -> None:
    """As root: the postgres user must pass through every directory above the cluster's."""
    for ancestor in [*reversed(directory.parents), directory]:
        if subprocess.run(_run_as() + ["test", "-x", str(ancestor)], env=dict(env)).returncode != 0:
            raise StackError(
                f"PostgreSQL runs as user '{RUN_AS_ROOT_USER}' under root, and that user cannot enter "
                f"{ancestor}: give it search permission (chmod o+x {ancestor}) or choose a home it can "
                "reach (--home or TAXIPIPE_HOME)")


def preflight(paths: StackPaths, env: Mapping[str, str]) -> None:
    """Every check that could refuse to create the cluster, made before anything is created:
    the server programs, and under root the user to run them as and its way to the cluster."""
    if initialised(paths):
        return
    binary("initdb")
    binary("pg_ctl")
    if os.geteuid() == 0:
        _run_as()
        _check_reachable(next(path for path in (paths.postgres, *paths.postgres.parents) if path.exists()), env)


def init_cluster(paths: StackPaths, password: str, env: Mapping[str, str]) -> None:
    """initdb with scram authentication and the superuser's password from a private file."""
    initdb = binary("initdb")
    _owned_directory(paths.postgres)
    password_file = paths.postgres / "initdb.pw"
    descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(password + "\n")
    if os.geteuid() == 0:
        account = pwd.getpwnam(RUN_AS_ROOT_USER)
        os.chown(password_file, account.pw_uid, account.pw_gid)
    try:
        _server([initdb, "-D", str(data_dir(paths)), "-U", SUPERUSER, "-A", "scram-sha-256",
                 "--pwfile", str(password_file), "-E", "UTF8", "--no-instructions"],
                env, paths, "initdb of the stack's PostgreSQL cluster")
    finally:
        password_file.unlink(missing_ok=True)
    with open(data_dir(paths) / "postgresql.conf", "a") as conf:
        conf.write("\n# taxipipe stack: local TCP only, socket inside the cluster's directory\n"
                   "listen_addresses = '127.0.0.1'\n"
                   f"unix_socket_directories = '{paths.postgres}'\n"
                   "password_encryption = 'scram-sha-256'\n")


def running(paths: StackPaths) -> PidRecord | None:
    """The postmaster of the cluster, if it runs (from postmaster.pid)."""
    pid_path = data_dir(paths) / "postmaster.pid"
    try:
        lines = pid_path.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return PidRecord(SERVICE, pid, process.create_time(), f"postgresql://127.0.0.1:{port}", port)
    except (OSError, IndexError, ValueError, psutil.Error):
        return None


def start(paths: StackPaths, port: int, env: Mapping[str, str]) -> PidRecord:
    """pg_ctl start on 127.0.0.1:port, waiting until it accepts connections."""
    require_free_port(port, "PostgreSQL", "postgres_port")
    _server([binary("pg_ctl"), "-D", str(data_dir(paths)), "-l", str(log_path(paths)),
             "-o", f"-p {port}", "-w", "-t", "120", "start"], env, paths, "starting PostgreSQL")
    record = running(paths)
    if record is None:
        raise StackError(f"PostgreSQL did not stay up; see {log_path(paths)}")
    write_record(paths, record)
    return record


def stop(paths: StackPaths, env: Mapping[str, str]) -> None:
    """pg_ctl stop (fast: open connections are closed, nothing is lost)."""
    if running(paths) is not None:
        _server([binary("pg_ctl"), "-D", str(data_dir(paths)), "-m", "fast", "-w", "-t", "60", "stop"],
                env, paths, "stopping PostgreSQL")
    (paths.run / f"{SERVICE}.json").unlink(missing_ok=True)


def url(database: str, password: str, port: int, driver: str) -> str:
    """A SQLAlchemy URL for a server's role on its database, e.g. driver 'psycopg2'."""
    return f"postgresql+{driver}://{database}:{quote(password, safe='')}@127.0.0.1:{port}/{database}"


def ensure_databases(port: int, secrets: Mapping[str, str], databases: Sequence[str]) -> dict[str, int]:
    """One role (with its password `db_NAME`) and one database it owns, per name in `databases`;
    kept if present.

    Returns each database's oid, which changes when the database is created anew.
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(host="127.0.0.1", port=port, user=SUPERUSER, password=secrets["postgres"],
                         dbname="postgres", autocommit=True, connect_timeout=10) as connection:
        # keep the statements that carry passwords out of the server log, even on an error
        connection.execute("SET log_statement = 'none'")
        connection.execute("SET log_min_error_statement = 'panic'")
        for name in databases:
            exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            connection.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(secrets[f"db_{name}"])))
            if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(name)))
        rows = connection.execute("SELECT datname, oid FROM pg_database WHERE datname = ANY(%s)",
                                  (list(databases),)).fetchall()
    return {name: int(oid) for name, oid in rows}


def healthy(port: int) -> bool:
    """Whether the server answers on 127.0.0.1:port (pg_isready needs no password)."""
    if port_is_free(port):
        return False
    result = subprocess.run([binary("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "3"],
                            capture_output=True)
    return result.returncode == 0
