"""The edge of the service (ASGI middleware): body limits, slow bodies, dropped clients, and accounting.

- A body whose Content-Length is over the limit is refused with 413 before a byte of it is
  read; a body sent without a length is cut off with 413 as soon as it passes the limit.
- A body that takes longer than the time allowed is answered 408 and the connection closed.
- A client that hangs up before its body arrived is nobody's error: nothing is answered, no
  traceback is logged, and it is counted with status 499 (as nginx does), not as a 500.
Every request is counted and timed by endpoint and status.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

from taxipipe.serve.metrics import ServeMetrics

#: A client that closed the connection before it got an answer (nginx's code; never sent).
CLIENT_CLOSED = 499
#: Bytes a ride may take in a request body: a ride of three fields is about 60 bytes of JSON,
#: and a client may send whole TLC rows (20 fields); the limit is serve.batch_limit rides of this size.
BYTES_PER_RIDE = 1024
#: Room for the envelope of a body (keys, an index, params) beside the rides.
ENVELOPE_BYTES = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_limit(batch_limit: int) -> int:
    """The most bytes a request body may hold for this serve.batch_limit."""
    return batch_limit * BYTES_PER_RIDE + ENVELOPE_BYTES


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class Edge:
    """ASGI middleware in front of the app; `endpoint` names a path for the metrics."""

    def __init__(self, app: Any, metrics: ServeMetrics, max_body: int, body_seconds: float,
                 endpoint: Callable[[str], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.body_seconds = body_seconds
        self.endpoint = endpoint

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import ClientDisconnect

        started = time.perf_counter()
        status: int | None = None

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["method"] in BODY_METHODS and self._declared_length(scope) > self.max_body:
                await self._refuse(scope, capture, 413, self._too_large())
            else:
                await self.app(scope, self._guarded(scope, receive), capture)
        except _TooLarge:
            if status is None:
                await self._refuse(scope, capture, 413, self._too_large())
        except _TooSlow:
            if status is None:
                await self._refuse(scope, capture, 408, f"the request body did not arrive within "
                                                        f"{self.body_seconds:g} s (serve.body_timeout_seconds)")
        except ClientDisconnect:
            status = status or CLIENT_CLOSED
        finally:
            self.metrics.request(self.endpoint(scope["path"]), status or 500, time.perf_counter() - started)

    def _declared_length(self, scope: dict[str, Any]) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    def _too_large(self) -> str:
        return (f"the request body is over {self.max_body:,} bytes, the limit for serve.batch_limit rides; "
                "send fewer rides per request")

    def _guarded(self, scope: dict[str, Any], receive: Any) -> Any:
        """`receive` with the size limit and the deadline of the body; after the body, as it was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_seconds
        received = 0
        complete = scope["method"] not in BODY_METHODS

        async def guarded() -> dict[str, Any]:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise _TooSlow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge()
                complete = not message.get("more_body", False)
            return message

        return guarded

    async def _refuse(self, scope: dict[str, Any], send: Any, status: int, sentence: str) -> None:
        """Answer with the sentence (MLflow's error shape on /invocations) and close the connection."""
        if scope["path"] == "/invocations":
            body = {"error_code": "BAD_REQUEST", "message": sentence}
        else:
            body = {"detail": sentence}
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
