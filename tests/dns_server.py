"""A real DNS server on 127.0.0.1 (dnslib, UDP, a free port) serving TXT records the test
sets: `publish`, `withdraw`, and `fail` (SERVFAIL, a resolver in trouble)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class Zone(BaseResolver):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._txt: dict[str, list[str]] = {}
        self._failing: set[str] = set()
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def publish(self, name: str, value: str) -> None:
        with self._lock:
            self._txt.setdefault(name.lower(), []).append(value)

    def withdraw(self, name: str, value: str | None = None) -> None:
        with self._lock:
            values = self._txt.get(name.lower(), [])
            self._txt[name.lower()] = [v for v in values if value is not None and v != value]

    def fail(self, name: str, failing: bool = True) -> None:
        with self._lock:
            (self._failing.add if failing else self._failing.discard)(name.lower())

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        with self._lock:
            if qname in self._failing:
                reply.header.rcode = RCODE.SERVFAIL
            elif qname not in self._txt:
                reply.header.rcode = RCODE.NXDOMAIN
            elif request.q.qtype == QTYPE.TXT:
                for value in self._txt[qname]:
                    reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(value), ttl=0))
        return reply


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dns_server() -> Iterator[Zone]:
    zone = Zone()
    zone.port = _free_udp_port()
    server = DNSServer(zone, port=zone.port, address="127.0.0.1",
                       logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,"
                                        "-data", prefix=False))
    server.start_thread()
    try:
        yield zone
    finally:
        server.stop()
