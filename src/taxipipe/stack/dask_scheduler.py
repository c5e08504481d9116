"""The Dask scheduler of a listening stack (`stack up --listen`): TLS on ADDRESS:stack.dask_port,
where workers and clients must present a certificate the stack's CA signed; no dashboard, and
its HTTP routes on 127.0.0.1.

A stack on 127.0.0.1 has none: its runs start a local cluster when they train with Dask.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from taxipipe.stack import certificates, dask_roster
from taxipipe.stack.certificates import TlsFiles
from taxipipe.stack.services import LOOPBACK, Service, Stack

SERVICE = "dask-scheduler"


def address(stack: Stack) -> str:
    return f"tls://{stack.host}:{stack.ports.dask_port}"


def tls_files(stack: Stack) -> TlsFiles:
    """The stack's certificates, made for its address when missing."""
    return certificates.make(stack.paths.tls, stack.host)


def identity(scheduler: str, files: TlsFiles, timeout: float = 10) -> dict | None:
    """The scheduler's answer to an identity call (its workers among it) from a client presenting
    the certificate in `files`, or None when it does not answer or refuses the certificate."""
    from distributed import Security
    from distributed.comm import connect

    security = Security(tls_ca_file=str(files.ca), tls_client_cert=str(files.client_cert),
                        tls_client_key=str(files.client_key), require_encryption=True)

    async def call() -> dict | None:
        comm = await connect(scheduler, timeout=timeout, **security.get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            answer = await comm.read()
        finally:
            await comm.close()
        return answer if isinstance(answer, dict) and answer.get("type") == "Scheduler" else None

    try:
        return asyncio.run(call())
    except (OSError, asyncio.TimeoutError, RuntimeError):
        return None


def answers(scheduler: str, files: TlsFiles, timeout: float = 10) -> bool:
    """Whether the scheduler at `scheduler` answers an identity call from a client presenting
    the stack's client certificate."""
    return identity(scheduler, files, timeout) is not None


def shell_env(stack: Stack) -> dict[str, str]:
    """What a Dask client in a shell on this host needs: the scheduler and the stack's TLS files."""
    return {"TAXIPIPE_COMPUTE__DASK_SCHEDULER": address(stack), "TAXIPIPE_COMPUTE__DASK_TLS_DIR": str(stack.paths.tls)}


def service(stack: Stack) -> Service:
    files = TlsFiles(stack.paths.tls)
    command = [str(Path(sys.executable).parent / "dask"), "scheduler", "--protocol", "tls",
               "--host", stack.host, "--port", str(stack.ports.dask_port),
               # no dashboard; its other HTTP routes (health, metrics) on a free loopback port
               "--no-dashboard", "--dashboard-address", f"{LOOPBACK}:0",
               "--tls-ca-file", str(files.ca), "--tls-cert", str(files.scheduler_cert),
               "--tls-key", str(files.scheduler_key), "--preload", dask_roster.PRELOAD]

    def env() -> dict[str, str]:
        tls_files(stack)
        return {**stack.base_env(), dask_roster.ROSTER_ENV: str(stack.paths.dask_roster)}

    return Service(SERVICE, command, env, lambda: answers(address(stack), files), stack.ports.dask_port,
                   address(stack), "dask_port", host=stack.host)
