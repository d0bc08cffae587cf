"""Endpoint URL checks, at registration and again before every delivery (SSRF): https, or
http only to hosts allowed in settings; the host is resolved and every address it
resolves to must be public, unless INVITES_WEBHOOK_ALLOW_PRIVATE allows loopback, private
and link-local ones (development, tests).

A delivery connects to the address that was checked (`pinned`), not to the name again, so a
name that resolves to a public address for the check and to a private one a moment later
(DNS rebinding) cannot steer it inward; the name still goes in the Host header and in TLS
(SNI and the certificate check). Redirects are never followed (a 3xx is a failed
delivery), so an endpoint cannot bounce us inward either.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from config import Settings
from webhooks.errors import InvalidWebhookUrl

MAX_URL_LENGTH = 2000
ALLOW_PRIVATE = "INVITES_WEBHOOK_ALLOW_PRIVATE=1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def http_hosts(settings: Settings) -> set[str]:
    return {h.strip().lower() for h in settings.webhook_http_hosts.split(",") if h.strip()}


def check_shape(url: str, settings: Settings) -> tuple[str, int]:
    """The URL's host and port, or InvalidWebhookUrl saying what is wrong with it."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"url must be 1 to {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"url {url!r} is not a valid URL: {exc}") from exc
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidWebhookUrl(f"url {url!r} must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("url must not carry credentials (user:password@)")
    if parts.fragment:
        raise InvalidWebhookUrl("url must not have a #fragment")
    if parts.scheme == "http" and host not in http_hosts(settings):
        raise InvalidWebhookUrl(
            f"url {url!r} uses plain http: use https (http is allowed only to the hosts "
            "in INVITES_WEBHOOK_HTTP_HOSTS)")
    return host, port or (443 if parts.scheme == "https" else 80)


def refused_reason(ip: IPAddress) -> str | None:
    """Why webhooks may not go to this address, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 (mapped, 6to4, Teredo) is judged as itself.
        for inner in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if inner is not None:
                reason = refused_reason(inner)
                if reason is not None:
                    return reason
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    for attr, what in (("is_loopback", "a loopback"), ("is_unspecified", "an unspecified"),
                       ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                       ("is_private", "a private"), ("is_reserved", "a reserved")):
        if getattr(ip, attr):
            return what
    if not ip.is_global:
        return "a non-public"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidWebhookUrl(f"url host {host!r} does not resolve: {exc}") from exc
    return sorted({ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos},
                  key=str)


@dataclass(frozen=True)
class Pinned:
    """Where to send a delivery: the checked address in the URL, the name beside it."""

    url: str  # the endpoint's URL with the host replaced by the checked address
    host_header: str  # the name (and port, when the URL has one), for the Host header
    sni_hostname: str | None  # https: the name TLS presents and verifies


def pinned(url: str, settings: Settings) -> Pinned:
    """Check the URL as `validate_url` does and pin the delivery to a checked address."""
    host, port = check_shape(url, settings)
    addresses = resolve(host, port)  # once: what is checked is what is connected to
    check_addresses(url, host, addresses, settings)
    ip = addresses[0]
    parts = urlsplit(url)
    literal = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    name = parts.hostname or host
    shown = f"[{name}]" if ":" in name else name  # an IPv6 literal keeps its brackets
    return Pinned(url=urlunsplit(parts._replace(netloc=netloc)),
                  host_header=f"{shown}:{parts.port}" if parts.port else shown,
                  sni_hostname=name if parts.scheme == "https" else None)


def validate_url(url: str, settings: Settings) -> str:
    """The URL if webhooks may be sent to it; else InvalidWebhookUrl (field "url") saying
    why. Resolves the host: every address must be public unless private ones are allowed."""
    host, port = check_shape(url, settings)
    check_addresses(url, host, resolve(host, port), settings)
    return url


def check_addresses(url: str, host: str, addresses: list[IPAddress],
                    settings: Settings) -> None:
    if not addresses:
        raise InvalidWebhookUrl(f"url host {host!r} resolves to no address")
    if settings.webhook_allow_private:
        return
    for ip in addresses:
        reason = refused_reason(ip)
        if reason is not None:
            raise InvalidWebhookUrl(
                f"url {url!r}: {host} resolves to {ip}, {reason} address; webhooks go to "
                f"public addresses only ({ALLOW_PRIVATE} allows others, for development)")
