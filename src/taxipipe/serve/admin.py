"""Who may call the admin endpoints (`POST /admin/reload`).

On loopback (127.0.0.1, ::1, localhost) anyone on the machine may, as before, unless a token
is set. On any other address a token is required: `serve.admin_token` (a setting, so also
TAXIPIPE_SERVE__ADMIN_TOKEN) or `serve.admin_token_file` (a file holding it, as Docker and
Kubernetes secrets are mounted), sent as `Authorization: Bearer TOKEN`. Without one, admin
endpoints are refused. The token is never printed.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from taxipipe.config import Settings
from taxipipe.errors import ConfigError

OPEN_ENDPOINTS = "/predict, /predict/batch, /invocations, /ping, /version, /health, /metrics and /docs"
HOW_TO_SET = "serve.admin_token, serve.admin_token_file or TAXIPIPE_SERVE__ADMIN_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_token(settings: Settings) -> str | None:
    """The token from the setting or its file; a file that cannot be read or is empty is a ConfigError."""
    options = settings.serve
    if options.admin_token is not None:
        return options.admin_token.get_secret_value() or None
    if options.admin_token_file is None:
        return None
    try:
        token = options.admin_token_file.expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"serve.admin_token_file {options.admin_token_file} cannot be read: {exc.strerror}") \
            from None
    if not token:
        raise ConfigError(f"serve.admin_token_file {options.admin_token_file} is empty")
    return token


def exposure_warning(settings: Settings) -> str | None:
    """What a service on a non-loopback address exposes, when it has no admin token; else None."""
    host = settings.serve.host
    if is_loopback(host) or admin_token(settings):
        return None
    return (f"⚠️  {host} is not a loopback address: {OPEN_ENDPOINTS} answer anyone who can reach "
            f"port {settings.serve.port}; /admin/reload is refused until a token is set ({HOW_TO_SET})")


class AdminGuard:
    """Decides an admin request: None to let it through, or the status and sentence to refuse it with."""

    def __init__(self, settings: Settings) -> None:
        self.token = admin_token(settings)
        self.open = self.token is None and is_loopback(settings.serve.host)

    def refusal(self, headers: Any) -> tuple[int, str] | None:
        if self.open:
            return None
        if self.token is None:
            return 403, f"admin endpoints need a token when the service listens beyond loopback: set {HOW_TO_SET}"
        scheme, _, given = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return 401, "send the admin token as 'Authorization: Bearer TOKEN'"
        return None
