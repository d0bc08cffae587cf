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


# What quoted-printable writes as "=XX" besides "=" itself: all but printable ASCII, tab,
# CR and LF (email.quoprimime's body map).
_ESCAPED = re.compile(rb"[^\t\n\r -~]")


def _escape(match: re.Match[bytes]) -> bytes:
    return b"=%02X" % match[0][0]


def _quoted_printable(text: str) -> bytes:
    """email.quoprimime.body_encode of the UTF-8 text (what Charset.body_encode calls),
    with the same output: its per-character translate was most of its cost; here "=" and
    the other bytes to escape are replaced by C code, then lines are cut as it cuts them
    (at 76 columns with a soft break "=", never inside an "=XX", a last space or tab
    escaped). Lines end in "\n" only (it splits at "\r" too), as the generator writes."""
    if not text:
        return b""
    body = _ESCAPED.sub(_escape, text.encode("utf-8").replace(b"=", b"=3D")).decode("ascii")
    lines = []
    for line in body.splitlines():
        start, laststart = 0, len(line) - 77
        while start <= laststart:
            stop = start + 75
            if line[stop - 2] == "=":
                lines.append(line[start:stop - 1])
                start = stop - 2
            elif line[stop - 1] == "=":
                lines.append(line[start:stop])
                start = stop - 1
            else:
                lines.append(line[start:stop] + "=")
                start = stop
        if line and line[-1] in " \t":
            room, quoted = start - laststart, f"={ord(line[-1]):02X}"
            end = quoted if room >= 3 else line[-1] + "=\n" if room == 2 else "=\n" + quoted
            lines.append(line[start:-1] + end)
        else:
            lines.append(line[start:])
    if body[-1] in "\r\n":
        lines.append("")
    return "\n".join(lines).encode("ascii")


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
