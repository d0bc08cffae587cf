"""What every response of the link handler carries, and the limit on invalid links.

The link in the URL is a bearer credential: pages are never cached, framed, sniffed or
sent as a Referer, and the Content-Security-Policy allows nothing but our own files (no
inline script or style: the pages have none). The server banner is switched off where
uvicorn is started (`--no-server-header`), as uvicorn adds it below the app.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

CSP = ("default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
       "object-src 'none'")
HSTS = "max-age=31536000"

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[..., Any]


class SecurityHeaders:
    """ASGI middleware: the headers above on every response, static files and errors too."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            *([(b"strict-transport-security", HSTS.encode())] if https else []),
        ]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        personal = scope["path"].startswith(("/i/", "/codec"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                ours = {name for name, _ in self.headers}
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in ours and k.lower() != b"server"]
                headers += self.headers
                if personal:  # personal pages and decoded payloads: never stored
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class BadLinkLimiter:
    """A token bucket per client address for links that fail their signature check:
    `burst` of them at once, refilled at `burst` per `per_seconds`. Past that, 429 with
    Retry-After, so guessing tokens costs a minute per `burst` guesses.

    In memory, per process: N link-handler processes allow N times the rate. Keyed by the
    address uvicorn reports (behind a proxy, run uvicorn with --proxy-headers and
    --forwarded-allow-ips so that it is the client's)."""

    MAX_CLIENTS = 10_000  # past this, the buckets that refilled are forgotten

    def __init__(self, burst: int = 20, per_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.clock = burst, burst / per_seconds, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def record_failure(self, client: str) -> int:
        """0 if this failure is within the limit; else the seconds to wait (Retry-After)."""
        now = self.clock()
        tokens, at = self.buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > self.MAX_CLIENTS:
            self._forget_refilled(now)
        return 0

    def _forget_refilled(self, now: float) -> None:
        full = self.burst / self.rate
        for client, (_tokens, at) in list(self.buckets.items()):
            if now - at >= full:
                del self.buckets[client]
