"""A structural check of email addresses (RFC 5321/5322 "dot-atom" form).

pydantic's EmailStr needs the email-validator package, which this project does not
install; this is the subset that real mail systems accept: an unquoted local part of
atext characters and single dots, a domain of at least two LDH labels (internationalised
domains are checked in their IDNA form), an alphabetic or punycode top-level domain, and
the RFC's length limits. No DNS lookup: deliverability is the mail system's business.
"""

from __future__ import annotations

import re

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")


def email_problem(email: str) -> str | None:
    """Why `email` (already trimmed) is not a usable address, or None if it is."""
    if not email:
        return "the email address is empty"
    if any(ch.isspace() for ch in email):
        return "it contains a space"
    if "@" not in email:
        return "it has no @"
    if email.count("@") > 1:
        return "it has more than one @"
    local, domain = email.split("@")
    if not local:
        return "nothing before the @"
    if not domain:
        return "nothing after the @"
    if len(email) > 254:
        return "it is longer than 254 characters"
    if len(local) > 64:
        return "the part before the @ is longer than 64 characters"
    if not _LOCAL.fullmatch(local):
        if not local.isascii():
            return "the part before the @ has non-ASCII characters"
        if local.startswith(".") or local.endswith(".") or ".." in local:
            return "the part before the @ starts or ends with a dot, or has two dots in a row"
        return "the part before the @ has characters an address cannot contain"
    if domain.isascii():
        ascii_domain = domain
    else:
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return f"the domain {domain!r} is not a valid internationalised domain"
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        return f"the domain {domain!r} has no dot (expected something like example.com)"
    for label in labels:
        if not _LABEL.fullmatch(label):
            if not label:
                return f"the domain {domain!r} has an empty part (two dots, or a dot at an end)"
            return f"the domain part {label!r} is not valid (letters, digits, inner hyphens)"
    if not _TLD.fullmatch(labels[-1]):
        return f"the top-level domain {labels[-1]!r} is not valid"
    return None
