"""A rendered mail as the bytes sent: multipart/alternative of a plain-text part and an
HTML part, both UTF-8 quoted-printable (readable, 7-bit clean for any server).

Written directly, byte for byte what the classic email API writes for it (a MIMEMultipart
of two MIMEText, `Message.as_bytes()` under compat32): building that Message and
flattening it through the generator cost ~5x the CPU, which showed in the worker's
profile. tests/test_mail_bytes.py keeps that construction and checks the bytes are equal.
"""

from __future__ import annotations

import functools
import re
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32

UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")  # printable ASCII words, one space apart
# Our boundaries: "=_" never occurs in quoted-printable text ("=" is "=3D"), and with no
# space or separator in them, every one is folded into the Content-Type header alike.
_BOUNDARY = re.compile(r"=_[0-9a-f]{40}")
_SAMPLE_BOUNDARY = "=_" + "0" * 40


def header_value(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")  # RFC 2047 when needed


def header_line(name: str, value: str | Header) -> bytes:
    """The header as compat32 (Message.as_bytes) writes it: folded to 78 columns, RFC 2047
    for a Header. A short value of plain words comes out as given, without the folding
    machinery (its Header.encode was most of the CPU of writing a message)."""
    if isinstance(value, str) and len(name) + 2 + len(value) <= 78 and _PLAIN.fullmatch(value):
        return f"{name}: {value}\n".encode("ascii")
    return compat32.fold_binary(name, value)  # type: ignore[arg-type]  # (a Header too)


@functools.cache
def _part_head(subtype: str) -> bytes:
    """The header block (and blank line) of a UTF-8 quoted-printable text part."""
    return MIMEText("", subtype, UTF8_QP).as_bytes()  # type: ignore[arg-type]


@functools.cache
def _alternative_head() -> tuple[bytes, bytes]:
    """The Content-Type and MIME-Version lines of multipart/alternative, cut around the
    boundary."""
    msg = MIMEMultipart("alternative", boundary=_SAMPLE_BOUNDARY)
    before, _, after = b"".join(header_line(k, v) for k, v in msg.raw_items()).partition(
        _SAMPLE_BOUNDARY.encode())
    return before, after


def _quoted_printable(text: str) -> bytes:
    # Its lines end in "\n" only (it splits at "\r" too): as the generator writes them.
    return UTF8_QP.body_encode(text).encode("ascii")


def alternative(headers: list[tuple[str, str | Header]], boundary: str, text: str,
                html: str) -> bytes:
    """The message: Content-Type (multipart/alternative; `boundary`, "=_" and 40 lower-case
    hex digits) and MIME-Version, then `headers` in order; the text part, the HTML part."""
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"boundary {boundary!r}: expected '=_' and 40 hex digits")
    before, after = _alternative_head()
    mark = boundary.encode()
    delimiter = b"--" + mark + b"\n"
    return b"".join([before, mark, after, *(header_line(k, v) for k, v in headers), b"\n",
                     delimiter, _part_head("plain"), _quoted_printable(text), b"\n",
                     delimiter, _part_head("html"), _quoted_printable(html),
                     b"\n--" + mark + b"--\n"])
