"""TXT lookups with dnspython against the configured resolver (INVITES_DNS_RESOLVER,
"host", "host:port" or "[IPv6]:port", a host name is looked up; unset: the system's
/etc/resolv.conf).

"No such name" and "no TXT record" are answers (an empty list); a resolver that does not
answer is `DnsUnavailable`, never "the record is gone": a DNS outage must not make every
verified domain lost.
"""

from __future__ import annotations

import ipaddress
import socket

import dns.exception
import dns.resolver

from config import Settings
from domains.errors import DnsUnavailable


def nameserver(configured: str) -> tuple[list[str], int | None]:
    """INVITES_DNS_RESOLVER as nameserver addresses and a port: "host", "host:port",
    "[v6]:port" or a bare IPv6 address; a host name is looked up (IPv4 first). A value we
    cannot use is DnsUnavailable naming the setting, never a traceback."""
    def bad(why: str) -> DnsUnavailable:
        return DnsUnavailable(f"INVITES_DNS_RESOLVER={configured!r} is not usable: {why} "
                              "(expected host, host:port or [IPv6]:port)")

    host, port = configured, ""
    if configured.startswith("["):
        host, closed, rest = configured[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise bad("a malformed [IPv6]:port")
        port = rest[1:]
        if rest == ":":
            raise bad("an empty port")
    elif configured.count(":") == 1:
        host, _, port = configured.partition(":")
    number: int | None = None
    if port or configured.endswith(":"):
        if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"the port {port!r} is not a number from 1 to 65535")
        number = int(port)
    if not host:
        raise bad("no host")
    try:
        ipaddress.ip_address(host)
        return [host], number
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise bad(f"the host {host!r} does not resolve ({exc})") from exc
    addresses = sorted({str(info[4][0]) for info in found},
                       key=lambda a: (ipaddress.ip_address(a).version, a))
    if not addresses:
        raise bad(f"the host {host!r} has no address")
    return addresses, number


def resolver_for(settings: Settings) -> dns.resolver.Resolver:
    configured = settings.dns_resolver.strip()
    resolver = dns.resolver.Resolver(configure=not configured)
    if configured:
        resolver.nameservers, port = nameserver(configured)  # type: ignore[assignment]
        if port is not None:
            resolver.port = port
    resolver.lifetime = settings.dns_timeout_seconds
    resolver.timeout = min(2.0, settings.dns_timeout_seconds)
    resolver.cache = None  # a re-check must see the record as it is now
    return resolver


def txt_values(settings: Settings, name: str) -> list[str]:
    """Every TXT string published at `name` (each record's strings joined, RFC 7208 3.3).
    Blocking: call it from a thread."""
    try:
        answer = resolver_for(settings).resolve(name, "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers,
            dns.resolver.LifetimeTimeout) as exc:
        raise DnsUnavailable(f"the DNS resolver {settings.dns_resolver or '(system)'} did not "
                             f"answer for {name}: {exc}") from exc
    if answer.rrset is None:
        return []
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset]
