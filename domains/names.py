"""Domain names as we store and compare them, and the ones nobody may claim.

`normalise_domain` is the one way in: strip, lower-case, drop a trailing dot, IDNA-encode
(so "Bücher.Example" and "xn--bcher-kva.example" are one claim), and refuse what is not a
registrable host name with a `DomainNameError` that says why.
"""

from __future__ import annotations

import re

# Mail providers anyone can sign up at: owning an address there proves nothing about a
# company. Kept here, reviewed with the code; lower-case, IDNA form.
PUBLIC_MAIL_DOMAINS: frozenset[str] = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk",
    "hotmail.fr", "live.com", "live.co.uk", "msn.com", "yahoo.com", "yahoo.co.uk",
    "yahoo.co.jp", "yahoo.fr", "yahoo.de", "ymail.com", "rocketmail.com", "aol.com",
    "icloud.com", "me.com", "mac.com", "proton.me", "protonmail.com", "protonmail.ch",
    "pm.me", "tutanota.com", "tuta.io", "gmx.com", "gmx.de", "gmx.net", "web.de",
    "mail.com", "mail.ru", "yandex.com", "yandex.ru", "zoho.com", "zohomail.com",
    "fastmail.com", "hey.com", "qq.com", "163.com", "126.com", "sina.com", "naver.com",
    "daum.net", "orange.fr", "free.fr", "laposte.net", "libero.it", "t-online.de",
    "comcast.net", "verizon.net", "att.net", "sbcglobal.net", "btinternet.com",
})

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^(xn--[a-z0-9-]+|[a-z]{2,63})$")


class DomainNameError(ValueError):
    """The name given is not one we can claim; the message says why."""


def normalise_domain(raw: str) -> str:
    """The stored form of `raw`, or DomainNameError."""
    name = raw.strip().lower().rstrip(".")
    if not name:
        raise DomainNameError("domain: empty name")
    if "@" in name or "/" in name or ":" in name or " " in name:
        raise DomainNameError(
            f"domain: {raw!r} is not a domain name (give the bare name, e.g. acme.com)")
    labels = name.split(".")
    if len(labels) < 2:
        raise DomainNameError(f"domain: {raw!r} has no top-level domain (e.g. acme.com)")
    if any(not label for label in labels):
        raise DomainNameError(f"domain: {raw!r} has an empty label (two dots in a row?)")
    try:
        labels = [label.encode("idna").decode("ascii") if not label.isascii() else label
                  for label in labels]
    except UnicodeError as exc:
        raise DomainNameError(f"domain: {raw!r} is not a valid international name ({exc})") \
            from None
    name = ".".join(labels)
    if len(name) > 253:
        raise DomainNameError(f"domain: {raw!r} is longer than 253 characters")
    bad = [label for label in labels if not _LABEL.match(label)]
    if bad:
        raise DomainNameError(
            f"domain: {raw!r} has an invalid label {bad[0]!r} (letters, digits and inner "
            "hyphens, 1 to 63 characters)")
    if not _TLD.match(labels[-1]):
        raise DomainNameError(f"domain: {raw!r} ends in an invalid top-level domain")
    return name


def claimable_domain(raw: str) -> str:
    """`normalise_domain(raw)`, refusing public mail providers too."""
    name = normalise_domain(raw)
    if name in PUBLIC_MAIL_DOMAINS:
        raise DomainNameError(
            f"domain: {name} is a public mail provider; anyone can have an address there, "
            "so it cannot be claimed by an account")
    return name


def email_domain(email: str) -> str | None:
    """The normalised domain of an email address, or None if it has none we can read."""
    _, at, host = email.strip().rpartition("@")
    if not at or not host:
        return None
    try:
        return normalise_domain(host)
    except DomainNameError:
        return None
