"""Reading an invitation CSV: a header row naming the columns (email, first_name,
last_name, user_type; only email is required, any order, case and spaces ignored), then
one invitee per line. Blank lines are skipped; an empty user_type takes the command's.

A file that cannot be read as a whole (no email column, an unknown column, not UTF-8)
raises CsvFormatError and nothing is invited. A bad line becomes a per-row error with
its line number, and the other lines go on.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from invitations.errors import CsvFormatError, InvalidRow
from invitations.models import ErrorInfo, InviteRequest, Outcome, RowResult

COLUMNS = ("email", "first_name", "last_name", "user_type")


@dataclass
class CsvRows:
    requests: list[InviteRequest] = field(default_factory=list)
    errors: list[RowResult] = field(default_factory=list)  # lines that could not be parsed


def _column(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def read_invite_csv(
    path: Path, *, account_id: int, invited_by: str, user_type: str = "basic",
    message: str | None = None, group: str | None = None, expires_in_days: int | None = None,
) -> CsvRows:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # Excel writes a BOM
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from exc
    except OSError as exc:
        raise CsvFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError(f"{path} is empty; expected a header row: {','.join(COLUMNS)}") \
            from None
    except csv.Error as exc:
        raise CsvFormatError(f"{path} line 1: {exc}") from exc
    columns = [_column(h) for h in header]
    unknown = [h for h, c in zip(header, columns, strict=True) if c not in COLUMNS]
    if unknown or "email" not in columns or len(set(columns)) != len(columns):
        raise CsvFormatError(
            f"{path} line 1: the header must name the columns {', '.join(COLUMNS)} (email "
            f"required, each once); found {', '.join(repr(h) for h in header)}")

    rows = CsvRows()
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = reader.line_num
            rows.errors.append(_error(start, "", InvalidRow(f"unreadable line: {exc}")))
            continue
        end = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            rows.errors.append(_error(start, cells[0].strip(), InvalidRow(
                f"{len(cells)} fields where the header has {len(columns)}")))
            continue
        values = dict(zip(columns, (c.strip() for c in cells), strict=False))
        rows.requests.append(InviteRequest(
            account_id=account_id, invited_by=invited_by, email=values.get("email", ""),
            first_name=values.get("first_name", ""), last_name=values.get("last_name", ""),
            user_type=values.get("user_type") or user_type, group=group, message=message,
            expires_in_days=expires_in_days, line=start,
        ))
    return rows


def _error(line: int, email: str, exc: InvalidRow) -> RowResult:
    return RowResult(line=line, email=email, outcome=Outcome.ERROR,
                     error=ErrorInfo(code=exc.code, field=exc.field, message=exc.message))
