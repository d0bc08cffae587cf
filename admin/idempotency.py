"""`Idempotency-Key` on the API's POSTs: a retry replays the first answer, it never acts twice.

Per account, a key is claimed by one INSERT on the unique (account_id, key) pair, before the
route runs: of concurrent identical requests one claims it and runs; the others find its
row and get a 409 problem while it runs, or its stored answer once done (with the header
`Idempotent-Replayed: true`). The same key with another body (method, path and JSON,
compared canonically) is a 422 problem. Answers below 500 are kept for
`api_idempotency_hours`; a 5xx releases the key, so the retry runs again (every start and
update it makes is itself idempotent: workflow ids derive from account and email). A claim
left by a process that died is taken over after STALE_CLAIM.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, delete, select, update

from admin.principal import Principal
from admin.problems import MEDIA_TYPE, FieldError, Problem, as_problem
from records.api_tables import IdempotencyRecord
from records.db import insert_for, write_transaction

KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
STALE_CLAIM = timedelta(minutes=5)
REPLAYED = "Idempotent-Replayed"
_table = IdempotencyRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claimed:
    record_id: int


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: Any
    headers: dict[str, str]


def request_hash(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True,
                               separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(f"{method} {path}\n".encode() + canonical).hexdigest()


def claim(engine: Engine, account_id: int, key: str, digest: str, ttl: timedelta
          ) -> Claimed | Replay:
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        conn.execute(delete(_table).where(_table.c.account_id == account_id,
                                          _table.c.expires_at < now))
        inserted = conn.execute(
            insert_for(conn, _table).values(
                account_id=account_id, key=key, request_hash=digest, state="in_progress",
                created_at=now, expires_at=now + ttl)
            .on_conflict_do_nothing(index_elements=["account_id", "key"])
            .returning(_table.c.id)).first()
        if inserted is not None:
            return Claimed(inserted[0])
        row = conn.execute(select(_table).where(_table.c.account_id == account_id,
                                                _table.c.key == key)).one()
        if row.request_hash != digest:
            raise Problem(422, "idempotency_key_reused", f"Idempotency-Key {key!r} was "
                          "already used with another request (method, path or body); use a "
                          "new key for a new request",
                          errors=[_field("Idempotency-Key", "idempotency_key_reused",
                                         "already used with another request")])
        if row.state == "done":
            stored = row.response or {}
            return Replay(row.status_code, stored.get("body"), stored.get("headers", {}))
        taken = conn.execute(
            update(_table).where(_table.c.id == row.id, _table.c.state == "in_progress",
                                 _table.c.created_at < now - STALE_CLAIM)
            .values(created_at=now, expires_at=now + ttl))
        if taken.rowcount == 1:
            return Claimed(row.id)
    raise Problem(409, "idempotency_key_in_progress", f"a request with Idempotency-Key "
                  f"{key!r} is still being processed; retry it in a moment to get its answer",
                  headers={"Retry-After": "1"})


def _field(field: str, code: str, detail: str) -> FieldError:
    return FieldError(field=field, code=code, detail=detail)


def finish(engine: Engine, record_id: int, response: Response) -> None:
    body = json.loads(bytes(response.body)) if response.body else None
    headers = {k: v for k, v in response.headers.items() if k.lower() == "location"}
    with write_transaction(engine) as conn:
        conn.execute(update(_table).where(_table.c.id == record_id).values(
            state="done", status_code=response.status_code,
            response={"body": body, "headers": headers}))


def release(engine: Engine, record_id: int) -> None:
    with write_transaction(engine) as conn:
        conn.execute(delete(_table).where(_table.c.id == record_id,
                                          _table.c.state == "in_progress"))


async def idempotent(request: Request, principal: Principal, key: str | None,
                     run: Callable[[], Awaitable[Response]]) -> Response:
    """Run the route (`run`) at most once per (account, key); without a key, just run it."""
    if key is None:
        return await run()
    if not KEY_RE.match(key):
        raise Problem(400, "invalid_idempotency_key", "the Idempotency-Key header must be 1 "
                      "to 255 printable ASCII characters without spaces (a UUID is fine)",
                      errors=[_field("Idempotency-Key", "invalid_idempotency_key",
                                     "1 to 255 printable ASCII characters")])
    state = request.app.state
    engine: Engine = state.engine
    hours = state.settings.api_idempotency_hours
    digest = request_hash(request.method, request.url.path, await request.body())
    got = await asyncio.to_thread(claim, engine, principal.account_id, key, digest,
                                  timedelta(hours=hours))
    if isinstance(got, Replay):
        return JSONResponse(got.body, status_code=got.status_code,
                            headers={**got.headers, REPLAYED: "true"},
                            media_type=_media_type(got.status_code))
    try:
        response = await run()
    except Exception as exc:  # noqa: BLE001 (answered as a problem, kept if below 500)
        response = as_problem(exc).response()
    except BaseException:
        await asyncio.shield(asyncio.to_thread(release, engine, got.record_id))
        raise
    if response.status_code < 500:
        await asyncio.to_thread(finish, engine, got.record_id, response)
    else:
        await asyncio.to_thread(release, engine, got.record_id)
    return response


def _media_type(status: int) -> str:
    return MEDIA_TYPE if status >= 400 else "application/json"
