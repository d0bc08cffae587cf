"""TXT lookups with dnspython against the configured resolver (INVITES_DNS_RESOLVER,
"host" or "host:port"; unset: the system's /etc/resolv.conf).

"No such name" and "no TXT record" are answers (an empty list); a resolver that does not
answer is `DnsUnavailable`, never "the record is gone": a DNS outage must not make every
verified domain lost.
"""

from __future__ import annotations

import dns.exception
import dns.resolver

from config import Settings
from domains.errors import DnsUnavailable


def resolver_for(settings: Settings) -> dns.resolver.Resolver:
    configured = settings.dns_resolver.strip()
    resolver = dns.resolver.Resolver(configure=not configured)
    if configured:
        host, _, port = configured.rpartition(":") if configured.count(":") == 1 \
            else (configured, "", "")
        resolver.nameservers = [host]
        if port:
            resolver.port = int(port)
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
