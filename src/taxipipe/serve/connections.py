"""Connections with deadlines: headers must arrive in time, and idle connections are closed.

uvicorn closes a keep-alive connection that stays idle after an answer, but it has no limit
for a request's headers and none for a new connection that sends nothing: such clients
would hold connections (and file descriptors) open for ever. `Guarded` is uvicorn's
httptools protocol with two timers more:

- from the connection's first byte (and each later request's), the headers must be complete
  within `header_timeout`, or the connection is answered 408 and closed;
- a new connection that sends nothing is closed after `timeout_keep_alive`, as uvicorn closes
  one that stays idle after an answer.

Bodies have their own deadline in the middleware (`edge`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ServeConfig(uvicorn.Config):
    """uvicorn's config with the header deadline; picklable, as `--workers` hands it to each worker."""

    def __init__(self, app: Any, header_timeout: float, **options: Any) -> None:
        super().__init__(app, http=Guarded, **options)
        self.header_timeout = header_timeout


class Guarded(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for headers and one for a silent new connection."""

    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._stop_header_timer()
        self.header_timer = self.loop.call_later(self.config.header_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        sentence = (f"the request headers did not arrive within {self.config.header_timeout:g} s "
                    "(serve.header_timeout_seconds)").encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(sentence)).encode() + b"\r\n\r\n"
                             + sentence)
        self.transport.close()
