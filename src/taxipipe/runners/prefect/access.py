"""How a client reaches the stack's Prefect server: its API's URL, its login, the work pool."""

from __future__ import annotations

from pathlib import Path

from taxipipe.stack.services import Stack

#: The user name of the auth string (Prefect checks the whole `user:password` string).
AUTH_USER = "taxipipe"


def api(stack: Stack) -> str:
    return f"http://{stack.host}:{stack.ports.prefect_port}/api"


def auth(stack: Stack) -> tuple[str, str] | None:
    """The basic-auth login a listening stack's server demands; None on 127.0.0.1."""
    if not stack.listening:
        return None
    return login(stack.secrets["prefect_auth"])


def login(auth_string: str) -> tuple[str, str]:
    """The basic-auth login of an auth string `user:password`."""
    user, _, password = auth_string.partition(":")
    return user, password


def pool(project: Path) -> str:
    """The work pool prefect.yaml deploys to."""
    import yaml

    declared = yaml.safe_load((project / "prefect.yaml").read_text())
    return declared["deployments"][0]["work_pool"]["name"]
