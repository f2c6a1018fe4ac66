"""Connections the server will hold, and for how long: uvicorn's HTTP protocol with a header
timeout and connection limits, which uvicorn itself does not have.

uvicorn arms no timer on a new connection, and every byte a client trickles cancels its keep-alive
timer, so a client that sends a request's headers one byte at a time holds a connection for ever;
a thousand such clients take every file descriptor, and the server answers nobody. Here:

- a request's headers must be complete within `header_timeout` seconds of the connection opening
  (or of the previous response, on a kept-alive connection), else the connection is closed;
- at most `max_connections` connections are open in all, and `max_per_client` from one address;
  a connection past either limit is closed as soon as it is accepted.

The body has its own deadline in the application (`serve.read_body`), and idle kept-alive
connections uvicorn's own `timeout_keep_alive`.
"""

from __future__ import annotations

import logging
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("mnistlab.serve")


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the limits in the module docstring (set by `guarded`)."""

    header_timeout = 10.0  # seconds
    max_connections = 1000
    max_per_client = 64
    _header_timer = None
    _headers_due = None  # loop time by which the pending request's headers must be complete

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        from_host = sum(1 for c in self.connections if c.client and c.client[0] == host) if host else 0
        if len(self.connections) > self.max_connections or from_host > self.max_per_client:
            logger.info("refused a connection from %s: %d open in all, %d from it (limits %d, %d)", host,
                        len(self.connections), from_host, self.max_connections, self.max_per_client)
            transport.close()
            return
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        # When the request was read: a handler that gets to it much later sheds it (serve.py).
        self.scope.setdefault("state", {})["received"] = time.monotonic()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers are due within the same time

    def _start_asgi_task(self, cycle, app) -> None:
        self._running = cycle  # uvicorn keeps only the newest cycle, which is not this one when pipelined
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self._header_timer is not None:
            self._header_timer.cancel()
        # A client that pipelines requests and leaves: uvicorn marks only the newest request's cycle
        # as disconnected, so the one being answered wrote to a closed transport (a traceback in the
        # log); every cycle of the connection is told instead.
        for cycle in (getattr(self, "_running", None), *(c for c, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)

    # One timer per connection, re-armed only when it fires: arming and cancelling one per request
    # fills the event loop's timer heap with cancelled handles (measured: /api/health's p99 went
    # from 31 to 144 ms at 50 keep-alive clients).
    def _arm(self) -> None:
        self._headers_due = self.loop.time() + self.header_timeout
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(self._headers_due, self._check_headers)

    def _disarm(self) -> None:
        self._headers_due = None

    def _check_headers(self) -> None:
        self._header_timer = None
        due = self._headers_due
        if due is None or self.transport.is_closing():
            return
        if self.loop.time() < due:  # re-armed since this timer was set
            self._header_timer = self.loop.call_at(due, self._check_headers)
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and not self.pipeline:
            logger.info("closed a connection from %s: no complete request headers within %.0f s",
                        self.client[0] if self.client else "?", self.header_timeout)
            self.transport.close()


def guarded(header_timeout: float, max_connections: int, max_per_client: int) -> type[GuardedProtocol]:
    """A GuardedProtocol class with these limits, for `uvicorn.Config(http=...)`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"header_timeout": header_timeout,
                                                         "max_connections": max_connections,
                                                         "max_per_client": max_per_client})
