"""Encrypted payloads (issue #12): with INVITES_PAYLOAD_KEYS set, every process's client
(config.connect_temporal) encrypts what it hands Temporal, so the history the dev server
stores, read raw without the codec, holds no invitee email in any payload or failure
text; keys rotate; the codec endpoint decodes for whoever has its token, and only them."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from pydantic import SecretStr
from sqlalchemy import Engine
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config import Settings, connect_temporal, data_converter, secrets_to_mask
from invitations import InvitationsClient
from linkhandler.app import create_app
from messages.payloads import AcceptRequest, DeclineRequest, InvitationResult, InvitationStatus
from observability import RedactFilter
from payload_codec import ENCODING, KEY_ID, EncryptionCodec, PayloadKeyError, new_key_spec
from tests.conftest import new_worker
from tests.test_linkhandler import PAULA, seed

TOKEN = "codec-token-" + "t" * 32
UI = "http://127.0.0.1:8233"


def with_keys(settings: Settings, dev_env: WorkflowEnvironment, keys: str) -> Settings:
    return settings.model_copy(update={
        "payload_keys": SecretStr(keys), "codec_auth_token": SecretStr(TOKEN),
        "codec_cors_origins": UI,
        "temporal_address": dev_env.client.service_client.config.target_host})


def payloads_in(msg: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload anywhere in a history event, with the field path that leads to it."""
    if isinstance(msg, Payload):
        yield path, msg
        return
    for field, value in msg.ListFields():
        here = f"{path}.{field.name}"
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from payloads_in(item, f"{here}[{key}]")
        elif field.is_repeated:
            for item in value:
                yield from payloads_in(item, here)
        else:
            yield from payloads_in(value, here)


def clear_in(msg: Message, needle: str, path: str = "") -> Iterator[str]:
    """The field paths of every string or bytes field of `msg` that contains `needle`."""
    for field, value in msg.ListFields():
        here = f"{path}.{field.name}"
        if field.message_type is None:
            for item in (value if field.is_repeated else [value]):
                if needle.encode() in (item if isinstance(item, bytes) else str(item).encode()):
                    yield here
        elif field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from clear_in(item, needle, f"{here}[{key}]")
        else:
            for item in (value if field.is_repeated else [value]):
                yield from clear_in(item, needle, here)


async def raw_history(dev_env: WorkflowEnvironment, workflow_id: str) -> list[Any]:
    """Straight from the server's API: no data converter, no codec."""
    events: list[Any] = []
    token = b""
    while True:
        page = await dev_env.client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace="default", execution=WorkflowExecution(workflow_id=workflow_id),
                next_page_token=token))
        events.extend(page.history.events)
        token = page.next_page_token
        if not token:
            return events


async def test_the_stored_history_holds_no_email_in_clear(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    email = f"paula.{uuid.uuid4().hex[:8]}@example.com"
    org = seed(engine, settings, email, **PAULA)
    codec_settings = with_keys(settings, dev_env, new_key_spec("k1"))
    client = await connect_temporal(codec_settings)  # as the worker, starter, link handler
    invitations = InvitationsClient(client, codec_settings, engine)
    async with new_worker(client, codec_settings, engine):
        wid = (await invitations.invite(org, "admin@acme.test", email,
                                        message=f"Hello {email}")).invitation_id
        outcome = await invitations.accept(wid, AcceptRequest(
            refund_destination="account_credit"))
        assert outcome.outcome == "accepted"
        result = await client.get_workflow_handle(wid, result_type=InvitationResult).result()
    assert result.status == InvitationStatus.COMPLETED and result.progress.email == email
    events = await raw_history(dev_env, wid)
    assert len(events) > 20
    found = 0
    for event in events:
        for path, payload in payloads_in(event):
            if ".search_attributes" in path:
                continue  # indexed by the server, so in clear by design (README "Secrets")
            if "[patch-data]" in path or "[data]" in path:
                # SDK bookkeeping of markers (a patch id, a local activity's type and
                # attempt), written as is: never anything of ours.
                assert email.encode() not in payload.data, path
                continue
            found += 1
            assert payload.metadata["encoding"] == ENCODING, path
            assert payload.metadata[KEY_ID] == b"k1", path
            assert email.encode() not in payload.data, path
        # Anywhere else in clear (a failure message, a name...) fails this test.
        for place in clear_in(event, email):
            assert place.endswith(".workflow_id") or ".search_attributes." in place, place
    assert found > 20  # inputs, results, updates, summaries, markers...
    # The codec-less client sees ciphertext; the codec's client reads the progress.
    with pytest.raises(Exception, match="(?i)encoding|binary/encrypted|converter"):
        await dev_env.client.get_workflow_handle(wid).result()
    assert (await InvitationsClient(client, codec_settings, engine).status(wid)).status == \
        InvitationStatus.COMPLETED


async def test_keys_rotate_the_first_encrypts_and_every_one_decrypts() -> None:
    old, new = new_key_spec("old"), new_key_spec("new")
    before = data_converter(Settings(payload_keys=SecretStr(old)))
    after = data_converter(Settings(payload_keys=SecretStr(f"{new},{old}")))
    sealed = await before.encode([DeclineRequest(reason="from paula@example.com")])
    assert sealed[0].metadata[KEY_ID] == b"old" and b"paula" not in sealed[0].data
    assert await after.decode(sealed, [DeclineRequest]) == [
        DeclineRequest(reason="from paula@example.com")]
    assert (await after.encode(["x"]))[0].metadata[KEY_ID] == b"new"
    plain = await pydantic_data_converter.encode(["written before encryption"])
    assert await after.decode(plain, [str]) == ["written before encryption"]
    with pytest.raises(PayloadKeyError, match="'old', which is not in INVITES_PAYLOAD_KEYS"):
        await data_converter(Settings(payload_keys=SecretStr(new))).decode(sealed, [str])
    for bad, why in [("k1", "not 'id:base64key'"), ("k1:!!", "not base64"),
                     ("k1:" + base64.b64encode(b"short").decode(), "must be 32 bytes"),
                     (f"{new},{new}", "twice")]:
        with pytest.raises(PayloadKeyError, match=why):
            EncryptionCodec.from_spec(bad)
    assert data_converter(Settings()) is pydantic_data_converter  # no keys: plain JSON
    # The key id is authenticated: relabelled to another key we hold, it does not decrypt.
    relabelled = Payload()
    relabelled.CopyFrom(sealed[0])
    relabelled.metadata[KEY_ID] = b"new"
    with pytest.raises(PayloadKeyError, match="does not decrypt with key 'new'"):
        await after.decode([relabelled], [DeclineRequest])
    # Failure messages and stack traces travel encrypted too.
    failure = Failure()
    await after.encode_failure(ApplicationError("refused for paula@example.com"), failure)
    assert failure.message == "Encoded failure" and b"paula" not in failure.SerializeToString()
    decoded = await after.decode_failure(failure)
    assert "refused for paula@example.com" in str(decoded)


def test_logs_mask_the_codec_token_and_the_payload_keys(settings: Settings) -> None:
    keys = f"{new_key_spec('a')},{new_key_spec('b')}"
    masked = settings.model_copy(update={"payload_keys": SecretStr(keys),
                                         "codec_auth_token": SecretStr(TOKEN)})
    redact = RedactFilter(secrets_to_mask(masked)).redact
    key_b = keys.split(",")[1].split(":")[1]
    line = redact(f"POST /codec/{TOKEN}/decode 200; key {key_b}; {keys}; Bearer {TOKEN}")
    assert TOKEN not in line and key_b not in line and "/codec/<token>/decode" in line
    assert redact("POST /codec/decode 200") == "POST /codec/decode 200"


async def test_the_codec_endpoint_decodes_with_its_token_and_refuses_without(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
) -> None:
    old, new = new_key_spec("old"), new_key_spec("new")
    sealed = await data_converter(Settings(payload_keys=SecretStr(old))).encode(
        [{"email": "paula@example.com"}])
    body = {"payloads": [{"metadata": {k: base64.b64encode(v).decode()
                                       for k, v in p.metadata.items()},
                          "data": base64.b64encode(p.data).decode()} for p in sealed]}
    app = create_app(with_keys(settings, dev_env, f"{new},{old}"), dev_env.client, engine)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://links.test") as http:
        for headers, path in [({"Authorization": f"Bearer {TOKEN}"}, "/codec/decode"),
                              ({}, f"/codec/{TOKEN}/decode")]:
            r = await http.post(path, json=body, headers={**headers, "X-Namespace": "default"})
            assert r.status_code == 200, r.text
            [decoded] = r.json()["payloads"]
            assert json.loads(base64.b64decode(decoded["data"])) == {
                "email": "paula@example.com"}
            assert r.headers["cache-control"] == "no-store"
        for headers, path in [({}, "/codec/decode"),
                              ({"Authorization": "Bearer wrong"}, "/codec/decode"),
                              ({"Authorization": TOKEN}, "/codec/decode"),
                              ({}, "/codec/wrong/decode")]:
            r = await http.post(path, json=body, headers=headers)
            assert (r.status_code, r.json()["outcome"]) == (401, "unauthorized"), path
            assert "paula" not in r.text
        r = await http.post("/codec/encode", json={"payloads": [{"metadata": {
            "encoding": base64.b64encode(b"json/plain").decode()},
            "data": base64.b64encode(b'"x"').decode()}]},
            headers={"Authorization": f"Bearer {TOKEN}"})
        [enc] = r.json()["payloads"]
        assert base64.b64decode(enc["metadata"][KEY_ID]) == b"new"
        r = await http.post("/codec/decode", content=b"not json",
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert (r.status_code, r.json()["outcome"]) == (400, "invalid_payloads")
        # CORS: the Web UI's origin may call it from the browser; no other origin.
        pre = {"Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type,x-namespace"}
        ok = await http.options("/codec/x/decode", headers={"Origin": UI, **pre})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == UI
        evil = await http.options("/codec/x/decode", headers={"Origin": "https://evil.test",
                                                              **pre})
        assert "access-control-allow-origin" not in evil.headers
        assert "access-control-allow-origin" not in (await http.get(
            "/healthz", headers={"Origin": UI})).headers
    no_token = settings.model_copy(update={"payload_keys": SecretStr(new)})
    plain_app = create_app(no_token, dev_env.client, engine)
    async with plain_app.router.lifespan_context(plain_app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=plain_app), base_url="http://links.test") as http:
        assert (await http.post("/codec/decode", json=body)).status_code == 404

